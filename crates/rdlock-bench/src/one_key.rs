//! S10: many waiters on ONE key in one client (issue #16: "1,000 waiters on ONE key served in
//! FIFO order with the gap target"). One client takes the key, then 1,000 tasks of the same
//! client wait on it (one pub/sub connection, one inbox channel for all of them), each holding
//! briefly and releasing in turn. The waiters are started one at a time, each once the one
//! before is in the server's queue (its length read between them), so the queue's order is
//! the tasks' index order, known without luck; the grants must come in that order, with no
//! two holds overlapping. The baseline (raw) has no queue: its 1,000 tasks spin on the key
//! together, and only its gaps and overlaps are measured. rdlock's releases announce each
//! hand-off in their reply as well as by message, and the waiter is this client's: the count
//! of hand-offs granted from the reply (ahead of their message) is reported.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{LockKeys, Role};

use crate::BoxError;
use crate::adapters::{Exec, Locker, Spec};
use crate::scenario::{Metrics, Rig, Settings, hold_until, percentile, us};
use crate::server::Server;

/// The longest the scenario waits for one waiter to be queued (a hang guard, never a
/// measurement).
const QUEUED_WITHIN: Duration = Duration::from_secs(30);

/// S10 on one adapter: its own fresh server and client.
pub struct OneKeyRig<L, E> {
    pub exec: E,
    pub server: Server,
    pub set: Settings,
    pub _locker: PhantomData<fn() -> L>,
}

impl<L: Locker, E: Exec> Rig for OneKeyRig<L, E> {
    fn slice(&mut self, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Metrics, BoxError> {
        self.exec.block_on(run::<L, E>(&self.exec, &self.server, &self.set))
    }
}

/// One waiter's turn, as it saw it.
#[derive(Clone, Copy, Debug)]
struct Turn {
    /// Its place in the queue (0: the first waiter queued).
    index: usize,
    acquired: Instant,
    release_called: Instant,
    held: bool,
}

async fn turn<L: Locker>(locker: Arc<L>, key: String, index: usize, hold: Duration) -> Result<Turn, String> {
    let guard = locker.lock(&key, Spec::default()).await.map_err(|e| e.to_string())?;
    let acquired = Instant::now();
    hold_until(acquired + hold).await;
    let release_called = Instant::now();
    let held = locker.release(guard).await.map_err(|e| e.to_string())?;
    Ok(Turn { index, acquired, release_called, held })
}

async fn run<L: Locker, E: Exec>(exec: &E, server: &Server, set: &Settings) -> Result<Metrics, BoxError> {
    let mut m = Metrics::new();
    let n = set.s10_waiters.min(E::MAX_TASKS);
    let key = server.lock_keys(1)?.remove(0);
    let locker = Arc::new(L::connect(&server.url()).await?);
    let first = locker.lock(&key, Spec::default()).await?;
    let queue = LockKeys::name(&key, Role::Queue)?;
    let mut conn = server.connection()?;
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for index in 0..n {
        tasks.push(exec.spawn(turn(locker.clone(), key.clone(), index, set.hold)));
        if !L::QUEUES {
            continue;
        }
        // Its entry is in the queue before the next waiter asks: the queue is in index order.
        let asked = Instant::now();
        loop {
            let len: usize = redis::cmd("LLEN").arg(&queue).query(&mut conn)?;
            if len > index {
                break;
            }
            if asked.elapsed() > QUEUED_WITHIN {
                return Err(format!("waiter {index} not queued within {QUEUED_WITHIN:?}").into());
            }
            exec.sleep(Duration::from_micros(200)).await;
        }
    }
    if !L::QUEUES {
        // The spinners all try at once for a while before the holder lets go.
        exec.sleep(Duration::from_millis(50)).await;
    }
    m.insert("queue_all_ms", t0.elapsed().as_secs_f64() * 1e3);
    let (conns, subs) = server.pubsub()?;
    m.insert("pubsub_conns", conns as f64);
    m.insert("subscriptions", subs as f64);
    let replied = locker.replied();
    let released = Instant::now();
    locker.release(first).await?;
    let (mut turns, mut errors) = (Vec::with_capacity(n), 0u64);
    for t in tasks {
        match t.await {
            Ok(turn) => turns.push(turn),
            Err(e) => {
                errors += 1;
                eprintln!("S10: a wait failed: {e}");
            }
        }
    }
    turns.sort_by_key(|t| t.acquired);
    // The holder's release, then each grant from the release before it.
    let mut gaps = Vec::with_capacity(n);
    let (mut overlaps, mut out_of_order) = (0u64, 0u64);
    let mut busy_until = released;
    for (k, t) in turns.iter().enumerate() {
        gaps.push(us(t.acquired.saturating_duration_since(busy_until)));
        overlaps += u64::from(t.acquired < busy_until);
        busy_until = busy_until.max(t.release_called);
        out_of_order += u64::from(L::QUEUES && t.index != k);
    }
    let served = turns.last().map_or(Duration::ZERO, |t| t.acquired.saturating_duration_since(released));
    m.insert("waiters", n as f64);
    m.insert("acquisitions", turns.len() as f64);
    m.insert("gap_p50_us", percentile(&mut gaps, 0.50));
    m.insert("gap_p99_us", percentile(&mut gaps, 0.99));
    m.insert("gap_max_us", percentile(&mut gaps, 1.0));
    m.insert("served_ms", served.as_secs_f64() * 1e3);
    m.insert("handoffs_per_s", turns.len() as f64 / served.as_secs_f64().max(1e-9));
    m.insert("overlaps", overlaps as f64);
    m.insert("out_of_order", if L::QUEUES { out_of_order as f64 } else { f64::NAN });
    m.insert("not_held", turns.iter().filter(|t| !t.held).count() as f64);
    m.insert("errors", errors as f64);
    let replied = locker.replied().zip(replied).map_or(f64::NAN, |(now, was)| (now - was) as f64);
    m.insert("from_reply", replied);
    Ok(m)
}
