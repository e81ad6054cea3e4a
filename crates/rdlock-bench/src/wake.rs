//! `--wake`: what a notified hand-off's hops cost on each executor, with no lock at all
//! (issue #16: the floor under S2's and S10's gap). One fresh server; a publisher sleeps 1 ms
//! (S2's hold, on the shared timer thread), then `PUBLISH`es a sample's number; a subscriber
//! waits for it, as a waiter of the notified baseline (`adapters/notify.rs`) does:
//!
//! - *direct*: the subscriber reads its pub/sub connection itself (tasks: it is woken by the
//!   redis crate's connection task; threads: it blocks in the socket's read);
//! - *one hop more*: a reader task or thread reads the connection and wakes a second, waiting
//!   task or thread (a waker; a condition variable), as rdlock's pub/sub worker wakes the lock's
//!   waiter.
//!
//! Per sample, from `PUBLISH` sent: its reply at the publisher, the message at the reader, and
//! the waiter running; the hop alone is waiter minus reader. Cores are idle between samples,
//! as in S2's hold, so each wake-up may find its thread parked.

use std::fmt::Write as _;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;

use crate::BoxError;
use crate::adapters::{Exec, SmolExec, TokioExec};
use crate::scenario::{hold_until, percentile, us};
use crate::server::Server;

const CHANNEL: &str = "bench:wake";
/// The pause before each `PUBLISH`: S2's hold.
const PAUSE: Duration = Duration::from_millis(1);

/// One sample's times from its `PUBLISH` sent, in µs.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    reply: f64,
    reader: f64,
    /// The waiter's (the reader's own in the direct path).
    waiter: f64,
}

/// The samples of one path, by their number.
type Samples = Arc<Mutex<Vec<Sample>>>;

fn record(samples: &Samples, i: usize, f: impl FnOnce(&mut Sample)) {
    if let Some(s) = samples.lock().unwrap_or_else(PoisonError::into_inner).get_mut(i) {
        f(s);
    }
}

/// When each sample's `PUBLISH` was sent.
type Sent = Arc<Mutex<Vec<Option<Instant>>>>;

fn since(sent: &Sent, i: usize, at: Instant) -> f64 {
    let t0 = sent.lock().unwrap_or_else(PoisonError::into_inner).get(i).copied().flatten();
    t0.map_or(f64::NAN, |t0| us(at.saturating_duration_since(t0)))
}

/// The sample number a message carries.
fn number(payload: &[u8]) -> Option<usize> {
    std::str::from_utf8(payload).ok()?.parse().ok()
}

/// Set by one task, awaited by another (as the driver's own wake-up flag).
#[derive(Debug, Default)]
struct Signal(Mutex<(Option<usize>, Option<Waker>)>);

impl Signal {
    fn notify(&self, i: usize) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.0 = Some(i);
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    async fn wait(&self) -> usize {
        poll_fn(|cx| {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            match s.0.take() {
                Some(i) => Poll::Ready(i),
                None => {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// One path on an async executor: `n` samples.
async fn on_tasks<E: Exec>(exec: &E, url: &str, n: usize, hop: bool) -> Result<Vec<Sample>, BoxError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut stream = pubsub.into_on_message();
    let samples: Samples = Arc::new(Mutex::new(vec![Sample::default(); n]));
    let sent: Sent = Arc::new(Mutex::new(vec![None; n]));
    let signal = Arc::new(Signal::default());
    let reader = {
        let (samples, sent, signal) = (samples.clone(), sent.clone(), signal.clone());
        exec.spawn(async move {
            while let Some(msg) = stream.next().await {
                let at = Instant::now();
                let Some(i) = number(msg.get_payload_bytes()) else { continue };
                let t = since(&sent, i, at);
                record(&samples, i, |s| s.reader = t);
                if hop {
                    signal.notify(i);
                } else {
                    record(&samples, i, |s| s.waiter = t);
                }
                if i + 1 == n {
                    break;
                }
            }
        })
    };
    let waiter = {
        let (samples, sent, signal) = (samples.clone(), sent.clone(), signal.clone());
        exec.spawn(async move {
            if !hop {
                return;
            }
            loop {
                let i = signal.wait().await;
                let t = since(&sent, i, Instant::now());
                record(&samples, i, |s| s.waiter = t);
                if i + 1 == n {
                    break;
                }
            }
        })
    };
    for i in 0..n {
        hold_until(Instant::now() + PAUSE).await;
        let t0 = Instant::now();
        sent.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(t0);
        let heard: u64 = redis::cmd("PUBLISH").arg(CHANNEL).arg(i).query_async(&mut conn).await?;
        let t = us(t0.elapsed());
        record(&samples, i, |s| s.reply = t);
        if heard != 1 {
            return Err(format!("PUBLISH reached {heard} subscribers, not 1").into());
        }
    }
    reader.await;
    waiter.await;
    let out = samples.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(out)
}

/// The same on plain threads.
fn on_threads(server: &Server, n: usize, hop: bool) -> Result<Vec<Sample>, BoxError> {
    let mut conn = server.connection()?;
    let mut sub = server.connection()?;
    {
        let mut view = sub.as_pubsub();
        view.subscribe(CHANNEL)?;
        // Forgotten, not dropped (dropping it unsubscribes); it caches nothing here.
        std::mem::forget(view);
    }
    let samples: Samples = Arc::new(Mutex::new(vec![Sample::default(); n]));
    let sent: Sent = Arc::new(Mutex::new(vec![None; n]));
    let slot = Arc::new((Mutex::new(None::<usize>), Condvar::new()));
    let reader = {
        let (samples, sent, slot) = (samples.clone(), sent.clone(), slot.clone());
        std::thread::spawn(move || -> Result<(), String> {
            loop {
                let mut view = sub.as_pubsub();
                let msg = view.get_message();
                std::mem::forget(view);
                let at = Instant::now();
                let msg = msg.map_err(|e| e.to_string())?;
                let Some(i) = number(msg.get_payload_bytes()) else { continue };
                let t = since(&sent, i, at);
                record(&samples, i, |s| s.reader = t);
                if hop {
                    *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(i);
                    slot.1.notify_one();
                } else {
                    record(&samples, i, |s| s.waiter = t);
                }
                if i + 1 == n {
                    return Ok(());
                }
            }
        })
    };
    let waiter = {
        let (samples, sent, slot) = (samples.clone(), sent.clone(), slot.clone());
        std::thread::spawn(move || {
            if !hop {
                return;
            }
            loop {
                let mut got = slot.0.lock().unwrap_or_else(PoisonError::into_inner);
                while got.is_none() {
                    got = slot.1.wait(got).unwrap_or_else(PoisonError::into_inner);
                }
                let at = Instant::now();
                let i = got.take().unwrap_or_default();
                drop(got);
                let t = since(&sent, i, at);
                record(&samples, i, |s| s.waiter = t);
                if i + 1 == n {
                    return;
                }
            }
        })
    };
    for i in 0..n {
        futures_lite::future::block_on(hold_until(Instant::now() + PAUSE));
        let t0 = Instant::now();
        sent.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(t0);
        let heard: u64 = redis::cmd("PUBLISH").arg(CHANNEL).arg(i).query(&mut conn)?;
        let t = us(t0.elapsed());
        record(&samples, i, |s| s.reply = t);
        if heard != 1 {
            return Err(format!("PUBLISH reached {heard} subscribers, not 1").into());
        }
    }
    reader.join().map_err(|_| "the reader thread panicked")??;
    waiter.join().map_err(|_| "the waiter thread panicked")?;
    let out = samples.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(out)
}

/// p50 and p99 of one field, as `p50 / p99`.
fn spread(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(f).filter(|x| !x.is_nan()).collect();
    (percentile(&mut v, 0.5), percentile(&mut v, 0.99))
}

/// One row of the table: an executor and a path, medians of p50 (and of p99) over runs.
#[derive(Debug)]
struct Row {
    executor: &'static str,
    hop: bool,
    /// Per run: (reply, reader, waiter, waiter - reader) as (p50, p99).
    runs: Vec<[(f64, f64); 4]>,
}

fn summarize(samples: &[Sample]) -> [(f64, f64); 4] {
    [
        spread(samples, |s| s.reply),
        spread(samples, |s| s.reader),
        spread(samples, |s| s.waiter),
        spread(samples, |s| s.waiter - s.reader),
    ]
}

/// Median over runs of one column's p50 and p99.
fn median(runs: &[[(f64, f64); 4]], col: usize) -> (f64, f64) {
    let mut p50: Vec<f64> = runs.iter().map(|r| r[col].0).collect();
    let mut p99: Vec<f64> = runs.iter().map(|r| r[col].1).collect();
    (percentile(&mut p50, 0.5), percentile(&mut p99, 0.5))
}

/// What one invocation measured: every path's runs.
#[derive(Debug)]
pub struct Wake {
    rows: Vec<Row>,
    runs: usize,
    samples: usize,
}

/// Measures every path, `runs` times each, taking turns.
pub fn measure(quick: bool, runs: usize) -> Result<Wake, BoxError> {
    let n = if quick { 200 } else { 2_000 };
    let runs = runs.max(1);
    let server = Server::start()?;
    let url = server.url();
    let mut rows: Vec<Row> = Vec::new();
    for executor in ["tokio", "async-std", "threads"] {
        for hop in [false, true] {
            rows.push(Row { executor, hop, runs: Vec::new() });
        }
    }
    for run in 0..runs {
        // The paths take turns, in an order that alternates between runs.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (executor, hop) = (rows[i].executor, rows[i].hop);
            eprintln!("run {}/{runs}: wake, {executor}, {}", run + 1, if hop { "one hop more" } else { "direct" });
            let samples = match executor {
                "tokio" => {
                    let exec = TokioExec::new()?;
                    exec.block_on(on_tasks(&exec, &url, n, hop))?
                }
                "async-std" => SmolExec.block_on(on_tasks(&SmolExec, &url, n, hop))?,
                _ => on_threads(&server, n, hop)?,
            };
            rows[i].runs.push(summarize(&samples));
        }
    }
    Ok(Wake { rows, runs, samples: n })
}

pub fn run(quick: bool, runs: usize) -> Result<String, BoxError> {
    Ok(measure(quick, runs)?.table())
}

impl Wake {
    /// The wake floor under each adapter's hand-off gap (S2, S10): from `PUBLISH` sent to a
    /// parked waiter running, woken as rdlock's waiters are (one hop past the connection's
    /// reader), median over runs of the p50. By adapter name.
    pub fn floors(&self) -> crate::report::WakeFloors {
        let adapter = |executor| match executor {
            "threads" => "blocking",
            e => e,
        };
        self.rows.iter().filter(|r| r.hop).map(|r| (adapter(r.executor), median(&r.runs, 2).0)).collect()
    }

    pub fn table(&self) -> String {
        let (runs, n) = (self.runs, self.samples);
        let mut out = format!(
            "## rdlock-bench --wake: a message's hops (median of {runs} run{}, {n} samples each, p50 / p99, µs from PUBLISH sent)\n\n",
            if runs > 1 { "s" } else { "" }
        );
        out.push_str(
            "| executor | waiter woken by | PUBLISH reply | message read | waiter running | the hop (waiter − reader) |\n",
        );
        out.push_str("|---|---|--:|--:|--:|--:|\n");
        let cell = |(p50, p99): (f64, f64)| format!("{p50:.0} / {p99:.0}");
        for r in &self.rows {
            let by = match (r.executor, r.hop) {
                ("threads", false) => "its own socket read",
                ("threads", true) => "a reader thread's condition variable",
                (_, false) => "the redis crate's pub/sub task",
                (_, true) => "a reader task's waker",
            };
            let hop = if r.hop { cell(median(&r.runs, 3)) } else { "–".into() };
            let _ = writeln!(
                out,
                "| {} | {by} | {} | {} | {} | {hop} |",
                r.executor,
                cell(median(&r.runs, 0)),
                cell(median(&r.runs, 1)),
                cell(median(&r.runs, 2))
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_number_is_read_from_its_message_and_nothing_else() {
        assert_eq!(number(b"17"), Some(17));
        assert_eq!(number(b"x"), None);
        assert_eq!(number(&[0xff]), None);
    }

    #[test]
    fn the_hop_is_the_waiter_minus_the_reader_per_sample() {
        let s = |reader, waiter| Sample { reply: 10.0, reader, waiter };
        let samples = [s(100.0, 130.0), s(120.0, 140.0), s(f64::NAN, 150.0)];
        let sum = summarize(&samples);
        assert_eq!(sum[3].0, 20.0);
        assert_eq!(sum[1].0, 100.0);
        assert_eq!(sum[2], (140.0, 150.0));
    }
}
