//! The scenarios of `shared/peers.md` (S1-S3) and of the benchmark brief (S4, S5; S6 and S7,
//! the semaphore and the read-write lock, are in `counted.rs`; S8 and S9, a `Mutex<u64>`
//! counter, are S1's and S2's loops with an increment for a cycle; C1-C3 are S1-S3 on a cluster;
//! F1-F4, following a failover, are in `failover.rs`), generic over the adapter and its
//! executor. Each run gets a fresh server (or cluster) and returns named figures.

use crate::adapters::join_all;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::adapters::{Exec, Locker, Spec};
use crate::alloc;
use crate::server::{Delta, Server, Snapshot};

/// Figures of one scenario run, by name (see `report.rs` for the units).
pub type Metrics = BTreeMap<&'static str, f64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// Uncontended: 1 client, 1 key, acquire -> release.
    S1,
    /// Contended hand-off: 8 clients, 1 key, acquire -> hold 1 ms -> release.
    S2,
    /// Many locks: 8 clients, a key each, acquire -> release.
    S3,
    /// 10,000 locks held with auto-renew by one client.
    S4,
    /// 10,000 waiters on 10,000 keys in one client.
    S5,
    /// Semaphore: 8 clients, 1 key, 3 permits, acquire -> hold 1 ms -> release.
    S6,
    /// RwLock, read-heavy: 8 clients, 1 key, 90 % reads, acquire -> hold 1 ms -> release.
    S7,
    /// A counter in a `Mutex<u64>`, uncontended as S1: 1 client, lock -> += 1 -> release.
    S8,
    /// The counter contended as S2: 8 clients, lock -> += 1 -> hold 1 ms -> release.
    S9,
    /// 1,000 waiters on one key in one client, served in queue order (`one_key.rs`).
    S10,
    /// S1 on a cluster of 3 primaries.
    C1,
    /// S2 on a cluster of 3 primaries.
    C2,
    /// S3 on a cluster of 3 primaries, the 8 keys spread 3/3/2 over the shards.
    C3,
    /// Following a failover: Sentinel, kill -9 of the primary.
    F1,
    /// Following a failover: Sentinel, `SENTINEL FAILOVER`.
    F2,
    /// Following a failover: cluster, kill -9 of a slot's primary.
    F3,
    /// Following a failover: cluster, `CLUSTER FAILOVER` of the slot's replica.
    F4,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::S1,
        Scenario::S2,
        Scenario::S3,
        Scenario::S4,
        Scenario::S5,
        Scenario::S6,
        Scenario::S7,
        Scenario::S8,
        Scenario::S9,
        Scenario::S10,
    ];

    /// S1-S3 on a cluster (not in the default list: `--scenario C1,C2,C3`; `--quick` adds C3).
    pub const CLUSTER: [Scenario; 3] = [Scenario::C1, Scenario::C2, Scenario::C3];

    /// The failover-follow costs (not in the default list: `--scenario F1,F2,F3,F4`).
    pub const FAILOVER: [Scenario; 4] = [Scenario::F1, Scenario::F2, Scenario::F3, Scenario::F4];

    /// Whether it runs on a cluster.
    pub fn on_cluster(self) -> bool {
        Scenario::CLUSTER.contains(&self)
    }

    /// Duration of the loop of S1-S3 and S6-S9 (None for S4 and S5, which run whole).
    pub fn duration(self, set: &Settings) -> Option<Duration> {
        match self {
            Scenario::S1 | Scenario::C1 => Some(set.s1),
            Scenario::S2 | Scenario::C2 => Some(set.s2),
            Scenario::S3 | Scenario::C3 => Some(set.s3),
            Scenario::S6 => Some(set.s6),
            Scenario::S7 => Some(set.s7),
            Scenario::S8 => Some(set.s8),
            Scenario::S9 => Some(set.s9),
            Scenario::S4 | Scenario::S5 | Scenario::S10 | Scenario::F1 | Scenario::F2 | Scenario::F3 | Scenario::F4 => {
                None
            }
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::S1 => "S1 uncontended (1 client, 1 key)",
            Scenario::S2 => "S2 contended hand-off (8 clients, 1 key, hold 1 ms)",
            Scenario::S3 => "S3 many locks (8 clients, a key each)",
            Scenario::S4 => "S4 locks held with auto-renew (one client)",
            Scenario::S5 => "S5 waiters on distinct keys (one client)",
            Scenario::S6 => "S6 semaphore (8 clients, 1 key, 3 permits, hold 1 ms)",
            Scenario::S7 => "S7 read-write lock, read-heavy (8 clients, 1 key, 90 % reads, hold 1 ms)",
            Scenario::S8 => "S8 Mutex<u64> counter, uncontended (1 client, 1 key, lock -> += 1 -> release)",
            Scenario::S9 => "S9 Mutex<u64> counter, contended (8 clients, 1 key, += 1 and hold 1 ms)",
            Scenario::S10 => "S10 waiters on ONE key (one client, 1,000 waiters, hold 1 ms, FIFO)",
            Scenario::C1 => "C1 = S1 on a cluster of 3 primaries (1 client, 1 key)",
            Scenario::C2 => "C2 = S2 on a cluster of 3 primaries (8 clients, 1 key, hold 1 ms)",
            Scenario::C3 => "C3 = S3 on a cluster of 3 primaries (8 clients, a key each, 3/3/2 per shard)",
            Scenario::F1 => "F1 following a Sentinel failover: kill -9 of the primary",
            Scenario::F2 => "F2 following a Sentinel failover: SENTINEL FAILOVER",
            Scenario::F3 => "F3 following a cluster failover: kill -9 of the slot's primary",
            Scenario::F4 => "F4 following a cluster failover: CLUSTER FAILOVER",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .chain(Scenario::CLUSTER)
            .chain(Scenario::FAILOVER)
            .find(|c| c.to_string().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown scenario {s:?} (S1..S10, C1..C3, F1..F4)"))
    }
}

/// Durations and sizes.
#[derive(Clone, Debug)]
pub struct Settings {
    pub s1: Duration,
    pub s2: Duration,
    pub s3: Duration,
    pub s6: Duration,
    pub s7: Duration,
    pub s8: Duration,
    pub s9: Duration,
    /// Permits of S6's semaphore.
    pub permits: u32,
    /// Share of S7's acquisitions that are reads.
    pub read_share: f64,
    pub clients: usize,
    pub hold: Duration,
    pub s4_locks: usize,
    pub s4_ttl: Duration,
    pub s4_hold: Duration,
    /// Length of the plain `SET` loop that S4's renewal cost is compared with.
    pub set_loop: Duration,
    /// Idle time measured before S4, to see the server's own background CPU.
    pub idle: Duration,
    pub s5_waiters: usize,
    /// Time left to the waiters to settle (subscribe, re-check).
    pub s5_settle: Duration,
    /// The window over which waiting's cost to the server is measured: longer than a
    /// waiter's poll interval, so that polls show.
    pub s5_wait: Duration,
    /// Whether S5's waiters auto-renew the locks they are granted (the library's default).
    pub s5_renew: bool,
    /// The TTL of S5's waiters (rdlock's default unless `--s5-ttl`).
    pub s5_ttl: Duration,
    /// Waiters of S10's one key.
    pub s10_waiters: usize,
    /// S1-S3 run in this many slices per adapter, the adapters taking turns.
    pub slices: u32,
}

impl Settings {
    /// The durations of peers.md and the brief.
    pub fn full() -> Self {
        Self {
            s1: Duration::from_secs(3),
            s2: Duration::from_secs(5),
            s3: Duration::from_secs(3),
            // As S2, which they extend to counted resources.
            s6: Duration::from_secs(5),
            s7: Duration::from_secs(5),
            // As S1 and S2, which they are beside.
            s8: Duration::from_secs(3),
            s9: Duration::from_secs(5),
            permits: 3,
            read_share: 0.9,
            clients: 8,
            hold: Duration::from_millis(1),
            s4_locks: 10_000,
            s4_ttl: Duration::from_secs(3),
            s4_hold: Duration::from_secs(10),
            set_loop: Duration::from_secs(2),
            idle: Duration::from_secs(1),
            s5_waiters: 10_000,
            s5_settle: Duration::from_millis(500),
            s5_wait: Duration::from_secs(10),
            s5_renew: true,
            s5_ttl: Spec::default().ttl,
            s10_waiters: 1_000,
            slices: 10,
        }
    }

    /// A smoke test: about a second per scenario (all adapters together).
    pub fn quick() -> Self {
        Self {
            s1: Duration::from_millis(250),
            s2: Duration::from_millis(250),
            s3: Duration::from_millis(250),
            s6: Duration::from_millis(250),
            s7: Duration::from_millis(250),
            s8: Duration::from_millis(150),
            s9: Duration::from_millis(150),
            permits: 3,
            read_share: 0.9,
            clients: 8,
            hold: Duration::from_millis(1),
            s4_locks: 1_000,
            s4_ttl: Duration::from_secs(1),
            s4_hold: Duration::from_millis(400),
            set_loop: Duration::from_millis(100),
            idle: Duration::from_millis(50),
            s5_waiters: 1_000,
            s5_settle: Duration::from_millis(100),
            s5_wait: Duration::from_millis(200),
            s5_renew: true,
            s5_ttl: Spec::default().ttl,
            s10_waiters: 100,
            slices: 2,
        }
    }
}

/// One adapter's part of a scenario run: its own fresh server and connected clients.
/// S1-S3 run in slices, interleaved with the other adapters' rigs, so that every adapter sees
/// the same load from the rest of the machine; S4 and S5 run whole in [`Rig::finish`].
pub trait Rig {
    /// Runs the scenario's loop for `duration` (S1-S3, S6, S7; nothing for S4 and S5).
    fn slice(&mut self, duration: Duration) -> Result<(), BoxError>;
    /// The figures (running S4 and S5 here).
    fn finish(self: Box<Self>) -> Result<Metrics, BoxError>;
}

/// Starts a fresh server for one scenario run of adapter `L` on executor `E`.
pub fn rig<L: Locker, E: Exec>(exec: E, scenario: Scenario, set: &Settings) -> Result<Box<dyn Rig>, BoxError> {
    let server = || if scenario.on_cluster() { Server::start_cluster(CLUSTER_PRIMARIES) } else { Server::start() };
    let cycles = |clients, shared_key, hold, counter| -> Result<Box<dyn Rig>, BoxError> {
        Ok(Box::new(CycleRig::<L, E>::new(exec.clone(), server()?, clients, shared_key, hold, counter)?))
    };
    let n = set.clients;
    match scenario {
        Scenario::S1 | Scenario::C1 => cycles(1, true, None, false),
        Scenario::S2 | Scenario::C2 => cycles(n, true, Some(set.hold), false),
        Scenario::S3 | Scenario::C3 => cycles(n, false, None, false),
        Scenario::S8 => cycles(1, true, None, true),
        Scenario::S9 => cycles(n, true, Some(set.hold), true),
        Scenario::S6 | Scenario::S7 => {
            Ok(Box::new(crate::counted::CountedRig::<L, E>::new(exec.clone(), server()?, scenario, set)?))
        }
        Scenario::S4 | Scenario::S5 => {
            let (server, set) = (server()?, set.clone());
            Ok(Box::new(WholeRig::<L, E> { exec, server, scenario, set, _locker: PhantomData }))
        }
        Scenario::S10 => {
            let (server, set) = (server()?, set.clone());
            Ok(Box::new(crate::one_key::OneKeyRig::<L, E> { exec, server, set, _locker: PhantomData }))
        }
        Scenario::F1 | Scenario::F2 | Scenario::F3 | Scenario::F4 => {
            Ok(Box::new(crate::failover::FollowRig::<L, E>::new(exec, scenario)))
        }
    }
}

/// Primaries of the C scenarios' cluster (no replicas: the scenarios confirm nothing).
const CLUSTER_PRIMARIES: usize = 3;

struct WholeRig<L, E> {
    exec: E,
    server: Server,
    scenario: Scenario,
    set: Settings,
    _locker: PhantomData<fn() -> L>,
}

impl<L: Locker, E: Exec> Rig for WholeRig<L, E> {
    fn slice(&mut self, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Metrics, BoxError> {
        let (exec, server, set) = (&self.exec, &self.server, &self.set);
        match self.scenario {
            Scenario::S5 => exec.block_on(waiters::<L, E>(exec, server, set)),
            _ => renewals::<L, E>(exec, server, set),
        }
    }
}

// ------------------------------------------------------------------------- S1-S3: cycles

/// One acquire -> (hold) -> release, as the client saw it.
#[derive(Clone, Copy, Debug)]
struct Cycle {
    client: usize,
    key: usize,
    /// `lock()` called.
    wait_start: Instant,
    /// `lock()` returned: the holder runs.
    acquired: Instant,
    /// `release()` called.
    release_called: Instant,
    /// `release()` returned.
    released: Instant,
    /// S8, S9: the increment's write landed.
    written: bool,
}

#[derive(Debug, Default)]
struct ClientLog {
    cycles: Vec<Cycle>,
    errors: u64,
    first_error: Option<String>,
    /// Releases that found the lock no longer ours.
    not_held: u64,
}

struct CycleRig<L: Locker, E: Exec> {
    exec: E,
    server: Server,
    lockers: Vec<Arc<L>>,
    /// The lock keys: one per client, or the first one shared.
    keys: Vec<String>,
    shared_key: bool,
    hold: Option<Duration>,
    /// S8, S9: each cycle increments the counter kept with the lock.
    counter: bool,
    logs: Vec<ClientLog>,
    /// Time inside slices, from each slice's start to its last release.
    busy: Duration,
    /// CPU time of this process inside slices: the client side of the adapter.
    client_cpu: Duration,
    /// Allocation calls of this process inside the slices.
    allocs: u64,
    first: Option<Snapshot>,
    /// The clients' own count of their requests at the first slice ([`Locker::own_requests`]).
    own_requests: u64,
}

impl<L: Locker, E: Exec> CycleRig<L, E> {
    fn new(
        exec: E,
        server: Server,
        clients: usize,
        shared_key: bool,
        hold: Option<Duration>,
        counter: bool,
    ) -> Result<Self, BoxError> {
        let url = server.url();
        let keys = server.lock_keys(clients)?;
        let lockers = exec.block_on(async {
            let mut lockers = Vec::with_capacity(clients);
            for i in 0..clients {
                let locker = Arc::new(L::connect(&url).await?);
                // Warm up: connection, script cache, fence counter, on a key of its own in the
                // slot of the one it will use (on a cluster: on the node it will use).
                let key = format!("{{{}}}:warmup", keys[if shared_key { 0 } else { i }]);
                if counter {
                    locker.increment(&key, Spec::default(), None).await?;
                } else {
                    let g = locker.lock(&key, Spec::default()).await?;
                    locker.release(g).await?;
                }
                lockers.push(locker);
            }
            Ok::<_, BoxError>(lockers)
        })?;
        let logs = (0..clients).map(|_| ClientLog::default()).collect();
        Ok(Self {
            exec,
            server,
            lockers,
            keys,
            shared_key,
            hold,
            counter,
            logs,
            busy: Duration::ZERO,
            client_cpu: Duration::ZERO,
            allocs: 0,
            first: None,
            own_requests: 0,
        })
    }
}

impl<L: Locker, E: Exec> Rig for CycleRig<L, E> {
    fn slice(&mut self, duration: Duration) -> Result<(), BoxError> {
        if self.first.is_none() {
            self.first = Some(self.server.snapshot()?);
            self.own_requests = self.lockers.iter().map(|l| l.own_requests()).sum();
        }
        let exec = &self.exec;
        let (cpu0, allocs0) = (alloc::process_cpu(), alloc::calls());
        let start = Instant::now() + Duration::from_millis(10);
        let deadline = start + duration;
        let tasks: Vec<_> = self
            .lockers
            .iter()
            .enumerate()
            .map(|(i, locker)| {
                let key = if self.shared_key { 0 } else { i };
                let name = self.keys[key].clone();
                let run = Loop { client: i, key, name, hold: self.hold, counter: self.counter, start, deadline };
                exec.spawn(client_loop(locker.clone(), exec.clone(), run))
            })
            .collect();
        let logs = join_all(exec, tasks);
        let end = logs.iter().filter_map(|l| l.cycles.last()).map(|c| c.released).max().unwrap_or(deadline);
        self.busy += end.saturating_duration_since(start);
        self.client_cpu += alloc::process_cpu().saturating_sub(cpu0);
        self.allocs += alloc::calls() - allocs0;
        for (acc, log) in self.logs.iter_mut().zip(logs) {
            acc.cycles.extend(log.cycles);
            acc.errors += log.errors;
            acc.not_held += log.not_held;
            if acc.first_error.is_none() {
                acc.first_error = log.first_error;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Metrics, BoxError> {
        let first = match self.first {
            Some(s) => s,
            None => return Err("no slice ran".into()),
        };
        let delta = first.until(&self.server.snapshot()?);
        let own = self.lockers.iter().map(|l| l.own_requests()).sum::<u64>() - self.own_requests;
        let requests = if self.counter { L::COUNTER_REQUESTS } else { L::REQUESTS };
        let mut m = analyze_cycles(&self.logs, self.busy, &delta, requests, own);
        let n = m["acquisitions"];
        m.insert("client_cpu_us_per_acq", self.client_cpu.as_secs_f64() * 1e6 / n);
        m.insert("allocs_per_acq", self.allocs as f64 / n);
        if self.counter {
            // Every increment that returned wrote exactly once under the lock (a release that
            // found the lock lost wrote nothing), so the counter must equal their number: a
            // lost or doubled write is an exclusion bug (`report::exclusion_violations`).
            let written = self.logs.iter().flat_map(|l| &l.cycles).filter(|c| c.written).count() as f64;
            let locker = &self.lockers[0];
            let value = self.exec.block_on(locker.counter(&self.keys[0]))? as f64;
            m.insert("increments", written);
            m.insert("counter", value);
            m.insert("counter_mismatch", (value - written).abs());
        }
        Ok(m)
    }
}

/// `--cycles N`: each client's loop in a slice of S1-S3 and S8-S9 runs exactly N cycles
/// rather than for the slice's duration (0: by duration), so that instruction counts of two
/// runs with different N subtract to a cost per cycle (`docs/performance.md`).
pub static CYCLES: AtomicUsize = AtomicUsize::new(0);

/// One client's part of a slice.
#[derive(Clone, Debug)]
struct Loop {
    client: usize,
    key: usize,
    /// The `key`-th lock key (S8 and S9: the counter's mutex).
    name: String,
    hold: Option<Duration>,
    counter: bool,
    start: Instant,
    deadline: Instant,
}

async fn client_loop<L: Locker, E: Exec>(locker: Arc<L>, exec: E, run: Loop) -> ClientLog {
    let Loop { client, key, name, hold, counter, start, deadline } = run;
    let spec = Spec::default();
    let mut log = ClientLog { cycles: Vec::with_capacity(4 * 1024), ..ClientLog::default() };
    exec.sleep(start.saturating_duration_since(Instant::now())).await;
    let limit = CYCLES.load(Ordering::Relaxed);
    while if limit > 0 { log.cycles.len() + (log.errors as usize) < limit } else { Instant::now() < deadline } {
        let wait_start = Instant::now();
        if counter {
            match locker.increment(&name, spec, hold).await {
                Ok(inc) => {
                    log.not_held += u64::from(!inc.held);
                    let (acquired, release_called, released) = (inc.acquired, inc.release_called, Instant::now());
                    let written = inc.held;
                    log.cycles.push(Cycle { client, key, wait_start, acquired, release_called, released, written });
                }
                Err(e) => {
                    log.errors += 1;
                    log.first_error.get_or_insert_with(|| e.to_string());
                    if log.errors > 100 {
                        break;
                    }
                }
            }
            continue;
        }
        let guard = match locker.lock(&name, spec).await {
            Ok(g) => g,
            Err(e) => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| e.to_string());
                if log.errors > 100 {
                    break;
                }
                continue;
            }
        };
        let acquired = Instant::now();
        if let Some(h) = hold {
            hold_until(acquired + h).await;
        }
        let release_called = Instant::now();
        match locker.release(guard).await {
            Ok(true) => {}
            Ok(false) => log.not_held += 1,
            Err(e) => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        let released = Instant::now();
        log.cycles.push(Cycle { client, key, wait_start, acquired, release_called, released, written: false });
    }
    log
}

/// The figures of one run; `requests` are the commands the clients send themselves, and
/// `own` the requests they counted themselves ([`Locker::own_requests`]).
fn analyze_cycles(logs: &[ClientLog], busy: Duration, delta: &Delta, requests: &[&str], own: u64) -> Metrics {
    let mut m = Metrics::new();
    let all: Vec<Cycle> = logs.iter().flat_map(|l| l.cycles.iter().copied()).collect();
    let n = all.len() as f64;
    m.insert("acquisitions", n);
    m.insert("acq_per_s", n / busy.as_secs_f64().max(1e-9));

    let mut cycle_us: Vec<f64> = all.iter().map(|c| us(c.released - c.wait_start)).collect();
    m.insert("cycle_p50_us", percentile(&mut cycle_us, 0.50));
    m.insert("cycle_p99_us", percentile(&mut cycle_us, 0.99));
    let per_client: Vec<f64> = logs.iter().map(|l| l.cycles.len() as f64).collect();
    m.insert("client_min", per_client.iter().copied().fold(f64::INFINITY, f64::min));
    m.insert("client_max", per_client.iter().copied().fold(0.0, f64::max));
    m.insert("client_mean", n / per_client.len().max(1) as f64);
    // `release()` called -> returned: the releaser's side of a hand-off (the message that
    // wakes the next holder leaves the server with this reply).
    let mut release_us: Vec<f64> = all.iter().map(|c| us(c.released - c.release_called)).collect();
    m.insert("release_p50_us", percentile(&mut release_us, 0.50));
    let mut hold_us: Vec<f64> = all.iter().map(|c| us(c.release_called - c.acquired)).collect();
    let hold_mean = hold_us.iter().sum::<f64>() / n.max(1.0);
    m.insert("hold_p50_us", percentile(&mut hold_us, 0.50));
    // One key shared (S2): acquisitions are serial, so the time per acquisition beyond the
    // hold is what the lock costs, whatever the executor's timer makes of the 1 ms hold.
    m.insert("beyond_hold_us", busy.as_secs_f64() * 1e6 / n.max(1.0) - hold_mean);
    m.insert("longest_wait_ms", all.iter().map(|c| ms(c.acquired - c.wait_start)).fold(0.0, f64::max));

    // Merge every client's holds of each key in the order they began: the hand-offs, the
    // releaser taking the lock straight back, and overlapping holds.
    let mut by_key: BTreeMap<usize, Vec<Cycle>> = BTreeMap::new();
    for c in &all {
        by_key.entry(c.key).or_default().push(*c);
    }
    let (mut gaps, mut same, mut pairs, mut overlaps) = (Vec::new(), 0u64, 0u64, 0u64);
    for holds in by_key.values_mut() {
        holds.sort_by_key(|c| c.acquired);
        let mut busy_until: Option<Instant> = None;
        for w in holds.windows(2) {
            let (a, b) = (w[0], w[1]);
            pairs += 1;
            if b.client == a.client {
                same += 1;
            } else {
                gaps.push(us(b.acquired.saturating_duration_since(a.release_called)));
            }
        }
        for c in holds.iter() {
            if busy_until.is_some_and(|t| c.acquired < t) {
                overlaps += 1;
            }
            busy_until = Some(busy_until.map_or(c.release_called, |t| t.max(c.release_called)));
        }
    }
    m.insert("gap_p50_us", percentile(&mut gaps, 0.50));
    m.insert("gap_p99_us", percentile(&mut gaps, 0.99));
    m.insert("self_share", if pairs == 0 { 0.0 } else { same as f64 / pairs as f64 });
    m.insert("overlaps", overlaps as f64);

    let per = |x: f64| if n > 0.0 { x / n } else { f64::NAN };
    m.insert("cmds_per_acq", per(delta.total() as f64));
    m.insert("requests_per_acq", per((delta.requests(requests) + own) as f64));
    m.insert("round_trips_per_acq", per(delta.reads as f64));
    m.insert("server_cmd_us_per_acq", per(delta.request_usec(requests) as f64));
    // Per command, for the JSON file: which commands make up `cmds_per_acq`.
    for (name, &(calls, _)) in &delta.calls {
        m.insert(command_key(name), per(calls as f64));
    }
    m.insert("cpu_ms_per_1k", per(delta.proc_cpu.as_secs_f64() * 1e6));
    m.insert("cpu_ms_per_1k_rusage", per(delta.rusage.as_secs_f64() * 1e6));
    m.insert("errors", logs.iter().map(|l| l.errors).sum::<u64>() as f64);
    m.insert("not_held", logs.iter().map(|l| l.not_held).sum::<u64>() as f64);
    if let Some(e) = logs.iter().find_map(|l| l.first_error.as_deref()) {
        eprintln!("    first error: {e}");
    }
    m
}

// ------------------------------------------------------------------------- S4: renewals

fn renewals<L: Locker, E: Exec>(exec: &E, server: &Server, set: &Settings) -> Result<Metrics, BoxError> {
    let mut m = Metrics::new();
    // What the server burns idle, then what one plain SET costs it (8 clients in a loop).
    let idle = server.snapshot()?;
    std::thread::sleep(set.idle);
    let idle = idle.until(&server.snapshot()?);
    let idle_rate = idle.rusage.as_secs_f64() / idle.elapsed.as_secs_f64();
    m.insert("idle_cpu_pct", idle_rate * 100.0);
    let (sets, set_delta) = set_loop(server, set.clients, set.set_loop)?;
    m.insert("set_ops", sets as f64);
    m.insert("set_cpu_us", set_delta.rusage.as_secs_f64() * 1e6 / sets.max(1) as f64);
    if !L::RENEWS {
        return Ok(m);
    }
    exec.block_on(async {
        let locker = Arc::new(L::connect(&server.url()).await?);
        let spec = Spec { ttl: set.s4_ttl, auto_renew: true };
        let keys: Vec<String> = (0..set.s4_locks).map(|i| format!("bench:held:{i}")).collect();
        let t0 = Instant::now();
        let guards = acquire_all(exec, &locker, &keys, spec).await?;
        m.insert("locks", guards.len() as f64);
        m.insert("acquire_all_ms", ms(t0.elapsed()));
        let (before, cpu0, allocs0) = (server.snapshot()?, alloc::process_cpu(), alloc::calls());
        exec.sleep(set.s4_hold).await;
        let (d, cpu1, allocs1) = (before.until(&server.snapshot()?), alloc::process_cpu(), alloc::calls());
        let lost = guards.iter().filter(|g| !locker.is_valid(g)).count();
        // No acquisition happens in the window: every request in it is a renewal.
        // A renewal is the script's `PEXPIRE`, or a `SET ... IFEQ` where the server has it (a
        // pipeline of them per batch: its requests are the server's reads).
        let by_set = d.calls("set");
        let requests = if by_set > 0 { d.reads } else { d.requests(L::REQUESTS) } as f64;
        let renewals = (d.calls("pexpire") + by_set) as f64;
        let cpu = d.rusage.as_secs_f64();
        let net = (cpu - idle_rate * d.elapsed.as_secs_f64()).max(0.0);
        m.insert("held_s", d.elapsed.as_secs_f64());
        m.insert("renew_requests", requests);
        m.insert("renewals", renewals);
        m.insert("renewals_per_lock", renewals / set.s4_locks as f64);
        m.insert("keys_per_request", if requests > 0.0 { renewals / requests } else { f64::NAN });
        m.insert("cmds_per_renewal", d.total() as f64 / renewals);
        m.insert("renew_cpu_us", cpu * 1e6 / renewals);
        m.insert("renew_cpu_net_us", net * 1e6 / renewals);
        m.insert("renew_cpu_ms_proc", d.proc_cpu.as_secs_f64() * 1e3);
        // This process while it holds: the holder's renewals (the benchmark itself sleeps).
        let client = (cpu1 - cpu0).as_secs_f64();
        m.insert("client_cpu_pct", client / d.elapsed.as_secs_f64() * 100.0);
        m.insert("client_renew_us", client * 1e6 / renewals);
        m.insert("allocs_per_renewal", (allocs1 - allocs0) as f64 / renewals);
        m.insert("renewals_per_s", renewals / d.elapsed.as_secs_f64());
        m.insert("lost", lost as f64);
        let not_held = release_all(exec, &locker, guards).await?;
        m.insert("not_held", not_held as f64);
        Ok::<_, BoxError>(())
    })?;
    let ratio = m["renew_cpu_us"] / m["set_cpu_us"];
    m.insert("renew_vs_set", ratio);
    Ok(m)
}

/// `clients` threads, each with its own connection, `SET key value PX 3000` in a loop for
/// `duration`: the server's cost of one plain request. Returns the count and the delta.
fn set_loop(server: &Server, clients: usize, duration: Duration) -> Result<(u64, Delta), BoxError> {
    let conns = (0..clients).map(|_| server.connection()).collect::<Result<Vec<_>, _>>()?;
    let before = server.snapshot()?;
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(t, mut conn)| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let key = format!("bench:set:{t}:{}", n % 1024);
                    if redis::cmd("SET").arg(key).arg("0123456789abcdef").arg("PX").arg(3000).exec(&mut conn).is_err() {
                        break;
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let sets = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let delta = before.until(&server.snapshot()?);
    Ok((sets, delta))
}

/// Most acquisitions in flight at once: 300,000 made at once would each count their lease
/// from their call, and the last ones would be answered after a 3 s TTL had run out.
const ACQUIRE_AT_ONCE: usize = 1_000;

/// Acquires every key, at most `E::MAX_TASKS` (and [`ACQUIRE_AT_ONCE`]) at a time.
async fn acquire_all<L: Locker, E: Exec>(
    exec: &E,
    locker: &Arc<L>,
    keys: &[String],
    spec: Spec,
) -> Result<Vec<L::Guard>, BoxError> {
    let mut guards = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(E::MAX_TASKS.clamp(1, ACQUIRE_AT_ONCE)) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (locker, k) = (locker.clone(), k.clone());
                exec.spawn(async move { locker.lock(&k, spec).await })
            })
            .collect();
        for t in tasks {
            guards.push(t.await?);
        }
    }
    Ok(guards)
}

/// Releases every guard, at most `E::MAX_TASKS` at a time; returns how many were no longer
/// held.
async fn release_all<L: Locker, E: Exec>(exec: &E, locker: &Arc<L>, guards: Vec<L::Guard>) -> Result<u64, BoxError> {
    let mut not_held = 0;
    let mut guards = guards.into_iter().peekable();
    while guards.peek().is_some() {
        let tasks: Vec<_> = guards
            .by_ref()
            .take(E::MAX_TASKS.max(1))
            .map(|g| {
                let locker = locker.clone();
                exec.spawn(async move { locker.release(g).await })
            })
            .collect();
        for t in tasks {
            not_held += u64::from(!t.await?);
        }
    }
    Ok(not_held)
}

// ------------------------------------------------------------------------- S5: waiters

async fn waiters<L: Locker, E: Exec>(exec: &E, server: &Server, set: &Settings) -> Result<Metrics, BoxError> {
    let mut m = Metrics::new();
    // Every waiter is a task alive at once: as many as the executor can have.
    let n = set.s5_waiters.min(E::MAX_TASKS);
    let url = server.url();
    let keys: Vec<String> = (0..n).map(|i| format!("bench:wait:{i}")).collect();
    // The holders: another client, holding every key for longer than the scenario.
    let holder = Arc::new(L::connect(&url).await?);
    let held = acquire_all(exec, &holder, &keys, Spec { ttl: Duration::from_secs(120), auto_renew: false }).await?;
    let waiter = Arc::new(L::connect(&url).await?);
    let spec = Spec { ttl: set.s5_ttl, auto_renew: set.s5_renew };
    m.insert("lock_future_bytes", std::mem::size_of_val(&waiter.lock("bench:probe", spec)) as f64);

    // The waiting tasks are spawned behind a gate first: what the caller's side costs (the
    // task and the future it awaits); then they call `lock()`.
    let gate = Arc::new(Gate::default());
    let rss0 = alloc::rss_bytes();
    let mem0 = alloc::live_bytes();
    let tasks: Vec<_> = keys
        .iter()
        .map(|k| {
            let (w, k, gate) = (waiter.clone(), k.clone(), gate.clone());
            exec.spawn(async move {
                gate.wait().await;
                let g = w.lock(&k, spec).await;
                (Instant::now(), g)
            })
        })
        .collect();
    exec.sleep(Duration::from_millis(50)).await;
    let mem_tasks = alloc::live_bytes();
    let before = server.snapshot()?;
    gate.open();
    // Every waiter has asked once...
    let t0 = Instant::now();
    loop {
        let d = before.until(&server.snapshot()?);
        if d.requests(L::REQUESTS) >= n as u64 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("only {} of {n} waiters asked within 60 s", d.requests(L::REQUESTS)).into());
        }
        exec.sleep(Duration::from_millis(5)).await;
    }
    m.insert("queue_all_ms", ms(t0.elapsed()));
    // ...then settles (subscriptions, re-checks); then what waiting costs, over a window.
    exec.sleep(set.s5_settle).await;
    let mid = server.snapshot()?;
    exec.sleep(set.s5_wait).await;
    let wait = mid.until(&server.snapshot()?);
    let mem1 = alloc::live_bytes();
    let rss1 = alloc::rss_bytes();
    let (conns, subs) = server.pubsub()?;
    m.insert("waiters", n as f64);
    m.insert("bytes_per_waiter", (mem1 - mem0) as f64 / n as f64);
    m.insert("task_bytes_per_waiter", (mem_tasks - mem0) as f64 / n as f64);
    m.insert("state_bytes_per_waiter", (mem1 - mem_tasks) as f64 / n as f64);
    m.insert("rss_per_waiter", (rss1 - rss0) as f64 / n as f64);
    m.insert("pubsub_conns", conns as f64);
    m.insert("subscriptions", subs as f64);
    let secs = wait.elapsed.as_secs_f64();
    m.insert("wait_window_s", secs);
    m.insert("wait_cmds_per_s", wait.total() as f64 / secs);
    m.insert("wait_requests_per_s", wait.requests(L::REQUESTS) as f64 / secs);
    m.insert("wait_cpu_pct", wait.rusage.as_secs_f64() / secs * 100.0);

    // A profiler attached now sees the release window alone (docs/performance.md, *Rerun*).
    if let Some(pause) = std::env::var("RDLOCK_BENCH_MARK_MS").ok().and_then(|v| v.parse().ok()) {
        eprintln!("S5 at {n} waiters: releasing in {pause} ms (RDLOCK_BENCH_MARK_MS)");
        exec.sleep(Duration::from_millis(pause)).await;
    }
    // The holders let go, all at once; every waiter must get its key.
    let counter = waiter.clone();
    let trace = std::env::var_os("RDLOCK_BENCH_MARK_MS").is_some();
    let backlog = crate::backlog::Backlog::start(server.connection()?, move || counter.messages(), trace);
    let (cpu0, srv0, allocs0) = (alloc::process_cpu(), server.snapshot()?, alloc::calls());
    let released = Instant::now();
    let not_held = release_all(exec, &holder, held).await?;
    m.insert("holders_released_ms", ms(released.elapsed()));
    m.insert("holder_not_held", not_held as f64);
    if not_held > 0 {
        // Each was held to the end: one not confirmed was answered after its response timeout.
        eprintln!("S5 at {n} waiters: {not_held} of the holder's releases not confirmed held");
    }
    let mut after_ms = Vec::with_capacity(n);
    let mut guards = Vec::with_capacity(n);
    let mut errors = 0;
    let mut kinds: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for t in tasks {
        match t.await {
            (at, Ok(g)) => {
                after_ms.push(ms(at.saturating_duration_since(released)));
                guards.push(g);
            }
            (_, Err(e)) => {
                errors += 1;
                *kinds.entry(e.to_string()).or_default() += 1;
            }
        }
    }
    if let Some(seen) = backlog.map(crate::backlog::Backlog::stop) {
        // Hand-offs published but not yet read by the waiting client, at worst.
        m.insert("msg_backlog_max", seen.max as f64);
        m.insert("msg_backlog_max_at_ms", seen.at_ms);
    }
    // Which errors, so that a failed wait can be told from another.
    for (kind, count) in &kinds {
        eprintln!("S5 at {n} waiters: {count} wait(s) failed: {kind}");
    }
    // CPU of the hand-off storm, per hand-off: this process (holder and waiter clients) and
    // the server (up to the last waiter's acquisition, plus a few ms of waking the tasks).
    let (cpu1, srv1, allocs1) = (alloc::process_cpu(), server.snapshot()?, alloc::calls());
    let storm = srv0.until(&srv1);
    m.insert("handoff_client_cpu_us", (cpu1 - cpu0).as_secs_f64() * 1e6 / n as f64);
    m.insert("handoff_allocs", (allocs1 - allocs0) as f64 / n as f64);
    m.insert("handoff_redis_cpu_us", storm.rusage.as_secs_f64() * 1e6 / n as f64);
    let all_ms = after_ms.iter().copied().fold(0.0, f64::max);
    m.insert("all_acquired_ms", all_ms);
    m.insert("handoff_us_per_waiter", all_ms * 1e3 / n as f64);
    m.insert("acquired_p50_ms", percentile(&mut after_ms, 0.5));
    m.insert("errors", errors as f64);
    m.insert("not_held", (not_held + release_all(exec, &waiter, guards).await?) as f64);
    Ok(m)
}

/// Completes at `deadline`, woken by one timer thread shared by every executor: the hold of
/// S2 lasts the same for all adapters (executors' own timers differ: tokio's rounds a 1 ms
/// sleep up to about 2 ms, async-io's and a thread's sleep about 1.05 ms).
pub(crate) fn hold_until(deadline: Instant) -> impl Future<Output = ()> + Send {
    static TIMER: OnceLock<Mutex<mpsc::Sender<(Instant, Waker)>>> = OnceLock::new();
    let mut registered = false;
    std::future::poll_fn(move |cx| {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        if !registered {
            registered = true;
            let timer = TIMER.get_or_init(|| {
                let (tx, rx) = mpsc::channel::<(Instant, Waker)>();
                std::thread::spawn(move || timer_thread(&rx));
                Mutex::new(tx)
            });
            let sent = timer.lock().unwrap_or_else(|e| e.into_inner()).send((deadline, cx.waker().clone()));
            if sent.is_err() {
                // No timer thread: poll again at once (spins, but ends).
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
}

fn timer_thread(rx: &mpsc::Receiver<(Instant, Waker)>) {
    let mut due: Vec<(Instant, Waker)> = Vec::new();
    loop {
        let next = due.iter().map(|(at, _)| *at).min();
        let got = match next {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(entry) => due.push(entry),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        due.retain(|(at, w)| {
            let fire = *at <= now;
            if fire {
                w.wake_by_ref();
            }
            !fire
        });
    }
}

/// Holds tasks back until opened; runtime-independent.
#[derive(Debug, Default)]
struct Gate {
    open: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Gate {
    fn open(&self) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        self.open.store(true, Ordering::SeqCst);
        // Drained, not dropped: the vector's memory stays counted with the tasks.
        for w in wakers.drain(..) {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

// ------------------------------------------------------------------------- helpers

/// `cmd:NAME` as a metric name; each distinct name is leaked once (a few dozen at most).
pub(crate) fn command_key(name: &str) -> &'static str {
    static KEYS: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    keys.entry(name.to_owned()).or_insert_with(|| Box::leak(format!("cmd:{name}").into_boxed_str()))
}

pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile; NaN for no data.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn scenarios_parse() {
        assert_eq!("s2".parse::<Scenario>(), Ok(Scenario::S2));
        assert_eq!("S9".parse::<Scenario>(), Ok(Scenario::S9));
        assert_eq!("c3".parse::<Scenario>(), Ok(Scenario::C3));
        assert_eq!("F4".parse::<Scenario>(), Ok(Scenario::F4));
        assert_eq!("s10".parse::<Scenario>(), Ok(Scenario::S10));
        assert!("S11".parse::<Scenario>().is_err());
        assert!("C4".parse::<Scenario>().is_err());
    }

    fn cycle(client: usize, at_us: u64, hold_us: u64, base: Instant) -> Cycle {
        let t = |us| base + Duration::from_micros(us);
        Cycle {
            client,
            key: 0,
            wait_start: t(at_us),
            acquired: t(at_us),
            release_called: t(at_us + hold_us),
            released: t(at_us + hold_us + 10),
            written: false,
        }
    }

    #[test]
    fn holds_are_merged_into_hand_offs_and_overlaps() {
        let base = Instant::now();
        let log = |cycles| ClientLog { cycles, ..ClientLog::default() };
        // Client 0 holds 0-100 µs and 300-400 µs, client 1 holds 150-250 µs and 380-450 µs
        // (overlapping client 0's second hold).
        let logs = vec![
            log(vec![cycle(0, 0, 100, base), cycle(0, 300, 100, base)]),
            log(vec![cycle(1, 150, 100, base), cycle(1, 380, 70, base)]),
        ];
        let delta = Delta {
            elapsed: Duration::from_secs(1),
            calls: BTreeMap::new(),
            reads: 0,
            proc_cpu: Duration::ZERO,
            rusage: Duration::ZERO,
        };
        let m = analyze_cycles(&logs, Duration::from_millis(1), &delta, &["set", "eval"], 0);
        assert_eq!(m["acquisitions"], 4.0);
        assert_eq!(m["overlaps"], 1.0);
        assert_eq!(m["self_share"], 0.0);
        // Gaps: 100 -> 150, 250 -> 300, 400 -> 380 (overlap, clamped to 0).
        assert_eq!(m["gap_p50_us"].round(), 50.0);
        assert_eq!(m["client_min"], 2.0);
        // Every release in the test returns 10 µs after it is called.
        assert_eq!(m["release_p50_us"].round(), 10.0);
    }
}
