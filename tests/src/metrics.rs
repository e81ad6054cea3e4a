//! The metrics case: a recorder installed for the whole test process counts what one client
//! (told apart by its `client` label) did in a known workload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use rdlock_driver::{ClientConfig, Error, LostReason};

use crate::harness::Harness;
use crate::support::{admin, server};

/// Every metric recorded in this process, by name and sorted labels (`name{k=v,...}`).
#[derive(Default)]
struct Recorded {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(value);
    }
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

fn cell<T: Default>(map: &Mutex<HashMap<String, Arc<T>>>, key: &Key) -> Arc<T> {
    map.lock().unwrap_or_else(|e| e.into_inner()).entry(name(key)).or_default().clone()
}

impl Recorder for &'static Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(cell(&self.counters, key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cell(&self.gauges, key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(cell(&self.histograms, key))
    }
}

/// The process's recorder, installed by the first case that asks.
fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let r: &'static Recorded = Box::leak(Box::default());
        metrics::set_global_recorder(r).expect("the only recorder of this process");
        r
    })
}

impl Recorded {
    fn counter(&self, full: &str) -> u64 {
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).get(full).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn gauge(&self, full: &str) -> f64 {
        let g = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        g.get(full).map_or(0.0, |g| f64::from_bits(g.load(Ordering::Relaxed)))
    }

    fn samples(&self, full: &str) -> Vec<f64> {
        let h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        h.get(full).map(|s| s.0.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }
}

/// A known workload on one labelled client is counted exactly: acquisitions by outcome, the
/// wait and hold times, a renewal, a heard hand-off, a lease lost by reason, releases by
/// outcome, the held-locks gauge back to zero.
pub async fn metrics_count_a_known_workload<H: Harness>() {
    const KEY: &str = "rdlock-test:metrics";
    const OTHER: &str = "rdlock-test:metrics:other";
    let rec = recorded();
    let server = server();
    let mut conn = admin(&server);
    let label = format!("client={}", H::NAME);
    let m = |name: &str, labels: &[&str]| {
        let mut all: Vec<String> = labels.iter().map(|s| (*s).to_owned()).collect();
        all.push(label.clone());
        all.sort();
        format!("{name}{{{}}}", all.join(","))
    };
    let config = ClientConfig { metrics_label: Some(H::NAME.to_owned()), ..ClientConfig::default() };
    let client = H::connect_with(&server.url(), config).await.expect("connect");

    let held = H::lock(&client, KEY).await.expect("lock");
    assert_eq!(rec.gauge(&m("rdlock_locks_held", &[])), 1.0);
    assert!(H::try_lock(&client, KEY).await.expect("try_lock").is_none());
    H::extend(&held).await.expect("extend");

    // A waiter of the same client, queued before the release: the release hands it on.
    let waiter = {
        let client = client.clone();
        H::spawn(async move { H::lock(&client, KEY).await.expect("lock after the hand-off") })
    };
    let started = Instant::now();
    while H::inspect(&client, KEY).await.expect("inspect").waiters.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the waiter never queued");
        H::sleep(Duration::from_millis(5)).await;
    }
    assert!(H::release(held).await.expect("release").was_held());
    let next = waiter.await;
    assert_eq!(rec.counter(&m("rdlock_handoffs_total", &[])), 1);
    // Heard, or found by the waiter's re-check if the release came while that was in flight;
    // heard from the release's own reply (the waiter is this client's) or from the message.
    let heard = rec.counter(&m("rdlock_handoffs_heard_total", &[]));
    assert!(heard <= 1);
    assert!(rec.counter(&m("rdlock_handoffs_replied_total", &[])) <= heard);

    // Deleted under its holder: the next extension finds it gone.
    redis::cmd("DEL").arg(KEY).query::<()>(&mut conn).expect("DEL");
    assert!(matches!(H::extend(&next).await, Err(Error::Lost(LostReason::NotOwner))));
    let _ = H::release(next).await;

    // A wait that runs out of time, on another key (its queue entry is removed in the
    // background, and the release after may hand the lock to it first).
    let other = H::lock(&client, OTHER).await.expect("lock");
    let late = H::lock_timeout(&client, OTHER, Duration::from_millis(50)).await;
    assert!(matches!(late, Err(Error::TimedOut)), "{late:?}");
    assert!(H::release(other).await.expect("release").was_held());

    assert_eq!(rec.counter(&m("rdlock_acquisitions_total", &["outcome=acquired"])), 3);
    assert_eq!(rec.counter(&m("rdlock_acquisitions_total", &["outcome=busy"])), 1);
    assert_eq!(rec.counter(&m("rdlock_acquisitions_total", &["outcome=timed_out"])), 1);
    assert_eq!(rec.counter(&m("rdlock_renewals_total", &[])), 1);
    assert_eq!(rec.counter(&m("rdlock_leases_lost_total", &["reason=not_owner"])), 1);
    assert_eq!(rec.counter(&m("rdlock_releases_total", &["outcome=released"])), 2);
    assert_eq!(rec.samples(&m("rdlock_acquire_wait_seconds", &[])).len(), 3);
    assert_eq!(rec.samples(&m("rdlock_hold_seconds", &[])).len(), 3, "two released leases and a lost one");
    assert_eq!(rec.gauge(&m("rdlock_locks_held", &[])), 0.0);
    assert!(rec.counter(&m("rdlock_connections_opened_total", &[])) >= 1);
    assert_eq!(rec.counter(&m("rdlock_requests_unanswered_total", &[])), 0);
}
