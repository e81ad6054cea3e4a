//! A fault-suite worker: contends for one rdlock lock and, while holding it, writes to the
//! ledger (a fenced increment, then an unfenced `GET`/`SET` increment); or increments a
//! counter kept in a `Mutex<u64>` at the same key. Reads commands on stdin, logs JSON-line
//! records on stdout; see `rdlock_faults::harness` for the commands.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdlock_faults::clock::{mono_of, mono_us, wall_of};
use rdlock_faults::ledger;
use rdlock_faults::record::{Event, FailKind, Record, WriteBack};
use rdlock_faults::seed::Rng;
use rdlock_faults::trace::Notes;
use rdlock_tokio::{
    Client, ClientConfig, Confirm, Error, Guard, LockOptions, MutexGuard, ReleaseOutcome, SentinelConfig,
};
use redis::aio::MultiplexedConnection;
use tokio::io::AsyncBufReadExt;

#[derive(Debug)]
struct Opts {
    name: String,
    lock_url: String,
    ledger_url: String,
    key: String,
    ttl: Duration,
    poll_cap: Duration,
    auto_renew: bool,
    confirm: Confirm,
    timeout: Option<Duration>,
    gap: Duration,
    /// The client's response timeout (`None`: the configuration's default).
    response_timeout: Option<Duration>,
    /// The client's connection timeout (`None`: the configuration's default).
    connection_timeout: Option<Duration>,
}

fn parse_confirm(s: &str) -> Result<Confirm, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let ms = |p: &str| p.parse::<u64>().map(Duration::from_millis).map_err(|e| format!("--confirm {s}: {e}"));
    match parts.as_slice() {
        ["none"] => Ok(Confirm::None),
        ["all", t] => Ok(Confirm::All { timeout: ms(t)? }),
        ["majority", t] => Ok(Confirm::Majority { timeout: ms(t)? }),
        ["atleast", n, t] => {
            Ok(Confirm::AtLeast { replicas: n.parse().map_err(|e| format!("--confirm {s}: {e}"))?, timeout: ms(t)? })
        }
        _ => Err(format!("--confirm {s}: expected none, all:MS, majority:MS or atleast:N:MS")),
    }
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        name: String::new(),
        lock_url: String::new(),
        ledger_url: String::new(),
        key: "fault:lock".into(),
        ttl: Duration::from_secs(1),
        poll_cap: Duration::from_millis(200),
        auto_renew: true,
        confirm: Confirm::None,
        timeout: None,
        gap: Duration::from_millis(3),
        response_timeout: None,
        connection_timeout: None,
    };
    for arg in std::env::args().skip(1) {
        let (k, v) = arg.split_once('=').ok_or_else(|| format!("expected --name=value, got {arg}"))?;
        let ms = || v.parse::<u64>().map(Duration::from_millis).map_err(|e| format!("{k}: {e}"));
        match k {
            "--name" => o.name = v.to_owned(),
            "--lock-url" => o.lock_url = v.to_owned(),
            "--ledger-url" => o.ledger_url = v.to_owned(),
            "--key" => o.key = v.to_owned(),
            "--ttl-ms" => o.ttl = ms()?,
            "--poll-cap-ms" => o.poll_cap = ms()?,
            "--auto-renew" => o.auto_renew = v.parse().map_err(|e| format!("{k}: {e}"))?,
            "--confirm" => o.confirm = parse_confirm(v)?,
            "--timeout-ms" => o.timeout = Some(ms()?),
            "--gap-ms" => o.gap = ms()?,
            "--response-timeout-ms" => o.response_timeout = Some(ms()?),
            "--connection-timeout-ms" => o.connection_timeout = Some(ms()?),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if o.name.is_empty() || o.lock_url.is_empty() || o.ledger_url.is_empty() {
        return Err("--name, --lock-url and --ledger-url are required".into());
    }
    Ok(o)
}

/// Notes each stretch of at least [`STALL`] in which this process did not run though nobody
/// froze it (a loaded machine: every process waits, the harness too), so that the checker
/// holds a bound on time only while the worker could act. A thread of its own sees it as
/// sleeping much longer than it asked; a freeze by the harness shows the same way, which the
/// checker already knows of.
fn watch_stalls(log: &Log) {
    const TICK: Duration = Duration::from_millis(5);
    let stall = i64::try_from((TICK + STALL).as_micros()).unwrap_or(i64::MAX);
    let mut last = mono_us();
    loop {
        std::thread::sleep(TICK);
        let now = mono_us();
        if now - last >= stall {
            log.emit(Event::Stalled { from: last, to: now });
        }
        last = now;
    }
}

/// The shortest stall worth noting: well below the checker's slack.
const STALL: Duration = Duration::from_millis(100);

/// Writes records to stdout, one line each, flushed at once.
#[derive(Debug)]
struct Log {
    name: String,
    out: Mutex<std::io::Stdout>,
}

impl Log {
    fn emit(&self, event: Event) {
        let line = Record::now(&self.name, event).to_line();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed stdout means the harness is gone; nothing to report to.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A held lock: of one server (or a Sentinel- or Cluster-served one), or of a quorum.
enum Hold {
    Single(Arc<Guard>),
    Quorum(Arc<rdlock_blocking::QuorumGuard>),
}

impl Hold {
    fn is_valid(&self) -> bool {
        match self {
            Hold::Single(g) => g.is_valid(),
            Hold::Quorum(g) => g.lost().is_none(),
        }
    }
}

struct Held {
    guard: Hold,
    fence: u64,
    watcher: tokio::task::JoinHandle<()>,
    lost_logged: Arc<AtomicBool>,
    /// The ledger refused a write under this fence: a newer holder exists.
    stale: bool,
}

struct Worker {
    opts: Opts,
    log: Arc<Log>,
    client: Client,
    /// With a `redis+quorum://` lock URL: the quorum's client (the single-server client is
    /// then made for the first member and used for nothing else).
    quorum: Option<Arc<rdlock_blocking::QuorumClient>>,
    ledger: MultiplexedConnection,
    script: redis::Script,
    held: Option<Held>,
    rng: Rng,
}

fn fail_kind(e: &Error) -> FailKind {
    match e {
        Error::TimedOut => FailKind::TimedOut,
        Error::ReplicationShortfall { .. } => FailKind::ReplicationShortfall,
        Error::Lock(rdlock_core::LockError::NoValidityLeft) => FailKind::NoValidityLeft,
        Error::Lock(rdlock_core::LockError::NoQuorum { .. }) => FailKind::NoQuorum,
        _ => FailKind::Other,
    }
}

/// Logs renewals and the lost signal of a quorum hold, polling the guard (it has no future).
async fn watch_quorum(
    guard: Arc<rdlock_blocking::QuorumGuard>,
    fence: u64,
    log: Arc<Log>,
    lost_logged: Arc<AtomicBool>,
) {
    let mut last = guard.valid_until();
    loop {
        if let Some(reason) = guard.lost() {
            log.emit(Event::Lost { fence, reason: format!("{reason:?}") });
            lost_logged.store(true, Ordering::SeqCst);
            return;
        }
        let v = guard.valid_until();
        if v != last {
            last = v;
            if let Some(v) = v {
                log.emit(Event::Renewed { fence, valid_until: mono_of(v) });
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Logs renewals (by watching `valid_until`) and the lost signal of one hold.
async fn watch(guard: Arc<Guard>, fence: u64, log: Arc<Log>, lost_logged: Arc<AtomicBool>) {
    let mut last = guard.valid_until();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            biased;
            reason = guard.lost() => {
                log.emit(Event::Lost { fence, reason: format!("{reason:?}") });
                lost_logged.store(true, Ordering::SeqCst);
                return;
            }
            _ = tick.tick() => {
                let v = guard.valid_until();
                if v != last {
                    last = v;
                    log.emit(Event::Renewed { fence, valid_until: mono_of(v) });
                }
            }
        }
    }
}

impl Worker {
    /// The earlier of `deadline` and the worker's timeout from now.
    fn deadline(&self, deadline: Option<Instant>) -> Option<Instant> {
        match (deadline, self.opts.timeout) {
            (Some(d), Some(t)) => Some(d.min(Instant::now() + t)),
            (d, t) => d.or_else(|| t.map(|t| Instant::now() + t)),
        }
    }

    async fn acquire(&mut self, deadline: Option<Instant>) -> bool {
        if self.held.is_some() {
            self.log.emit(Event::Error { what: "acquire while holding".into() });
            return false;
        }
        let start = mono_us();
        self.log.emit(Event::Attempt);
        if let Some(q) = self.quorum.clone() {
            return self.acquire_quorum(q, start, deadline).await;
        }
        let mut b = self
            .client
            .lock_builder(&self.opts.key)
            .ttl(self.opts.ttl)
            .poll_cap(self.opts.poll_cap)
            .auto_renew(self.opts.auto_renew)
            .confirm(self.opts.confirm);
        if let Some(d) = self.deadline(deadline) {
            b = b.deadline(d);
        }
        match b.lock().await {
            Ok(guard) => {
                let fence = guard.fence();
                let v = guard.valid_until();
                self.log.emit(Event::Acquired { fence, start, valid_until: mono_of(v), valid_until_wall: wall_of(v) });
                let guard = Arc::new(guard);
                let lost_logged = Arc::new(AtomicBool::new(false));
                let watcher = tokio::spawn(watch(guard.clone(), fence, self.log.clone(), lost_logged.clone()));
                self.held = Some(Held { guard: Hold::Single(guard), fence, watcher, lost_logged, stale: false });
                true
            }
            Err(e) => {
                self.log.emit(Event::AcquireFailed { kind: fail_kind(&e), error: e.to_string() });
                false
            }
        }
    }

    /// [`Worker::acquire`] on a quorum: the blocking client's call on the blocking pool.
    async fn acquire_quorum(
        &mut self,
        q: Arc<rdlock_blocking::QuorumClient>,
        start: i64,
        deadline: Option<Instant>,
    ) -> bool {
        let opts = LockOptions {
            ttl: self.opts.ttl,
            poll_cap: self.opts.poll_cap,
            auto_renew: self.opts.auto_renew,
            confirm: self.opts.confirm,
            ..LockOptions::default()
        };
        let (key, timeout) = (self.opts.key.clone(), self.deadline(deadline).map(|d| d - Instant::now()));
        let got = tokio::task::spawn_blocking(move || q.lock_with(&key, &opts, timeout)).await;
        match got {
            Ok(Ok(guard)) => {
                let fence = guard.fence();
                let v = guard.valid_until().unwrap_or_else(Instant::now);
                self.log.emit(Event::Acquired { fence, start, valid_until: mono_of(v), valid_until_wall: wall_of(v) });
                let guard = Arc::new(guard);
                let lost_logged = Arc::new(AtomicBool::new(false));
                let watcher = tokio::spawn(watch_quorum(guard.clone(), fence, self.log.clone(), lost_logged.clone()));
                self.held = Some(Held { guard: Hold::Quorum(guard), fence, watcher, lost_logged, stale: false });
                true
            }
            Ok(Err(e)) => {
                self.log.emit(Event::AcquireFailed { kind: fail_kind(&e), error: e.to_string() });
                false
            }
            Err(e) => {
                self.log.emit(Event::Error { what: format!("quorum acquire: {e}") });
                false
            }
        }
    }

    /// One fenced write and, if accepted, one unfenced increment. False once writing should stop.
    async fn write(&mut self, check: bool) -> bool {
        let Some(h) = &mut self.held else {
            self.log.emit(Event::WriteSkipped { fence: 0, why: "not holding".into() });
            return false;
        };
        let fence = h.fence;
        if h.stale {
            self.log.emit(Event::WriteSkipped { fence, why: "a newer holder wrote".into() });
            return false;
        }
        if check && !h.guard.is_valid() {
            self.log.emit(Event::WriteSkipped { fence, why: "lease not valid".into() });
            return false;
        }
        let mut inv = self.script.prepare_invoke();
        for k in ledger::FENCED_KEYS {
            inv.key(k);
        }
        inv.arg(fence).arg(&self.opts.name);
        match inv.invoke_async::<u64>(&mut self.ledger).await {
            Ok(0) => {
                self.log.emit(Event::Write { fence, accepted: false });
                h.stale = true;
                return false;
            }
            Ok(_) => self.log.emit(Event::Write { fence, accepted: true }),
            Err(e) => {
                self.log.emit(Event::Error { what: format!("ledger: {e}") });
                return false;
            }
        }
        let read: redis::RedisResult<Option<u64>> =
            redis::cmd("GET").arg(ledger::UNSAFE).query_async(&mut self.ledger).await;
        let read = match read {
            Ok(v) => v.unwrap_or(0),
            Err(e) => {
                self.log.emit(Event::Error { what: format!("ledger: {e}") });
                return false;
            }
        };
        tokio::time::sleep(self.opts.gap).await;
        if !h.guard.is_valid() {
            self.log.emit(Event::UnsafeAborted { fence });
            return false;
        }
        let set: redis::RedisResult<()> =
            redis::cmd("SET").arg(ledger::UNSAFE).arg(read + 1).query_async(&mut self.ledger).await;
        match set {
            Ok(()) => {
                self.log.emit(Event::Unsafe { fence, read });
                true
            }
            Err(e) => {
                self.log.emit(Event::Error { what: format!("ledger: {e}") });
                false
            }
        }
    }

    async fn release(&mut self) {
        let Some(Held { guard, fence, watcher, lost_logged, .. }) = self.held.take() else {
            self.log.emit(Event::Error { what: "release while not holding".into() });
            return;
        };
        watcher.abort();
        let _ = watcher.await;
        let guard = match guard {
            Hold::Single(g) => g,
            Hold::Quorum(g) => return self.release_quorum(g, fence, &lost_logged).await,
        };
        let guard = match Arc::try_unwrap(guard) {
            Ok(g) => g,
            Err(_) => {
                self.log.emit(Event::Error { what: "guard still shared".into() });
                return;
            }
        };
        if !lost_logged.load(Ordering::SeqCst)
            && let Ok(reason) = tokio::time::timeout(Duration::ZERO, guard.lost()).await
        {
            self.log.emit(Event::Lost { fence, reason: format!("{reason:?}") });
        }
        self.log.emit(Event::Releasing { fence });
        match guard.release().await {
            Ok(outcome) => self.log.emit(Event::Released { fence, held: outcome.was_held() }),
            Err(e) => self.log.emit(Event::ReleaseFailed { fence, error: e.to_string() }),
        }
    }

    async fn release_quorum(&self, guard: Arc<rdlock_blocking::QuorumGuard>, fence: u64, lost_logged: &AtomicBool) {
        let Ok(guard) = Arc::try_unwrap(guard) else {
            self.log.emit(Event::Error { what: "guard still shared".into() });
            return;
        };
        if !lost_logged.load(Ordering::SeqCst)
            && let Some(reason) = guard.lost()
        {
            self.log.emit(Event::Lost { fence, reason: format!("{reason:?}") });
        }
        self.log.emit(Event::Releasing { fence });
        match tokio::task::spawn_blocking(move || guard.release()).await {
            Ok(Ok(outcome)) => self.log.emit(Event::Released { fence, held: outcome.was_held() }),
            Ok(Err(e)) => self.log.emit(Event::ReleaseFailed { fence, error: e.to_string() }),
            Err(e) => self.log.emit(Event::ReleaseFailed { fence, error: e.to_string() }),
        }
    }

    async fn stall(&mut self, pause: Duration, check_again: bool) {
        let Some(h) = &self.held else {
            self.log.emit(Event::WriteSkipped { fence: 0, why: "not holding".into() });
            return;
        };
        if !h.guard.is_valid() {
            self.log.emit(Event::WriteSkipped { fence: h.fence, why: "lease not valid".into() });
            return;
        }
        self.log.emit(Event::PausePoint { fence: h.fence });
        tokio::time::sleep(pause).await;
        self.write(check_again).await;
    }

    async fn run_loop(&mut self, total: Duration, hold: Duration, writes: u32) {
        let end = Instant::now() + total;
        while Instant::now() < end {
            if self.acquire(Some(end)).await {
                let each = hold / writes.max(1);
                for _ in 0..writes {
                    if !self.write(true).await {
                        break;
                    }
                    tokio::time::sleep(each).await;
                }
                self.release().await;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.between(0, 3))).await;
        }
    }

    /// Waits for the mutex and logs the value its grant brought.
    async fn mutex_lock(&mut self, deadline: Option<Instant>) -> Option<MutexGuard<u64>> {
        if self.held.is_some() {
            self.log.emit(Event::Error { what: "mutex lock while holding the lock".into() });
            return None;
        }
        let start = mono_us();
        self.log.emit(Event::Attempt);
        let mutex = self.client.mutex::<u64>(&self.opts.key);
        let mut b = mutex
            .builder()
            .ttl(self.opts.ttl)
            .poll_cap(self.opts.poll_cap)
            .auto_renew(self.opts.auto_renew)
            .confirm(self.opts.confirm);
        if let Some(d) = self.deadline(deadline) {
            b = b.deadline(d);
        }
        match b.lock().await {
            Ok(g) => {
                let (fence, v) = (g.fence(), g.valid_until());
                self.log.emit(Event::Acquired { fence, start, valid_until: mono_of(v), valid_until_wall: wall_of(v) });
                self.log.emit(Event::MutexRead { fence, value: *g, written_by: g.written_by() });
                Some(g)
            }
            Err(e) => {
                self.log.emit(Event::AcquireFailed { kind: fail_kind(&e), error: e.to_string() });
                None
            }
        }
    }

    /// Keeps the mutex until `end`, logging renewals and the lost signal as the lock's watcher
    /// does (the guard lends its value mutably, so it cannot be shared with a watcher task).
    async fn mutex_hold(&self, g: &MutexGuard<u64>, end: tokio::time::Instant, lost_logged: &mut bool) {
        let (fence, signal) = (g.fence(), g.loss_signal());
        let mut last = g.valid_until();
        loop {
            let tick = tokio::time::sleep_until(end.min(tokio::time::Instant::now() + Duration::from_millis(10)));
            tokio::select! {
                biased;
                Some(reason) = signal.lost(), if !*lost_logged => {
                    self.log.emit(Event::Lost { fence, reason: format!("{reason:?}") });
                    *lost_logged = true;
                }
                () = tick => {}
            }
            let v = g.valid_until();
            if v != last {
                last = v;
                self.log.emit(Event::Renewed { fence, valid_until: mono_of(v) });
            }
            if tokio::time::Instant::now() >= end {
                return;
            }
        }
    }

    /// Releases the mutex, writing the value back when it was modified, and logs the outcome.
    async fn mutex_release(&self, g: MutexGuard<u64>, lost_logged: bool) {
        let (fence, value, modified) = (g.fence(), *g, g.is_modified());
        if !lost_logged && let Some(reason) = g.loss_signal().reason() {
            self.log.emit(Event::Lost { fence, reason: format!("{reason:?}") });
        }
        self.log.emit(Event::Releasing { fence });
        let (released, outcome) = match g.release().await {
            Ok(ReleaseOutcome::Released) => (Ok(true), WriteBack::Written),
            Ok(other) => (Ok(other.was_held()), WriteBack::Unknown),
            Err(Error::Lost(_)) => (Ok(false), WriteBack::Refused),
            Err(e) => (Err(e.to_string()), WriteBack::Unknown),
        };
        if modified {
            self.log.emit(Event::MutexWrite { fence, value, outcome });
        }
        match released {
            Ok(held) => self.log.emit(Event::Released { fence, held }),
            Err(error) => self.log.emit(Event::ReleaseFailed { fence, error }),
        }
    }

    /// One increment of the mutex counter: lock, +1, keep it `hold` (after a pause point when
    /// `pause_point`), release writing back.
    async fn mutex_incr(&mut self, hold: Duration, pause_point: bool, deadline: Option<Instant>) {
        let Some(mut g) = self.mutex_lock(deadline).await else { return };
        *g += 1;
        // Fixed before the pause point, so that a freeze right after it counts against the hold.
        let end = tokio::time::Instant::now() + hold;
        if pause_point {
            self.log.emit(Event::PausePoint { fence: g.fence() });
        }
        let mut lost_logged = false;
        self.mutex_hold(&g, end, &mut lost_logged).await;
        self.mutex_release(g, lost_logged).await;
    }

    async fn mutex_loop(&mut self, total: Duration, hold_ms: u64) {
        let end = Instant::now() + total;
        while Instant::now() < end {
            let hold = Duration::from_millis(self.rng.between(0, hold_ms));
            self.mutex_incr(hold, false, Some(end)).await;
            tokio::time::sleep(Duration::from_millis(self.rng.between(0, 3))).await;
        }
    }

    /// Runs one command line; false on `quit`.
    async fn run(&mut self, line: &str) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        match (words.first().copied(), num(1), num(2), num(3)) {
            (Some("quit"), ..) => return false,
            (Some("acquire"), ..) => {
                self.acquire(None).await;
            }
            (Some("write"), n, ..) => {
                for _ in 0..n.unwrap_or(1) {
                    if !self.write(true).await {
                        break;
                    }
                }
            }
            (Some("hold"), Some(ms), ..) => tokio::time::sleep(Duration::from_millis(ms)).await,
            (Some("stall"), Some(ms), ..) => self.stall(Duration::from_millis(ms), false).await,
            (Some("stall_checked"), Some(ms), ..) => self.stall(Duration::from_millis(ms), true).await,
            (Some("release"), ..) => self.release().await,
            (Some("mincr"), ..) => self.mutex_incr(Duration::ZERO, false, None).await,
            (Some("mstall"), Some(ms), ..) => self.mutex_incr(Duration::from_millis(ms), true, None).await,
            (Some("mloop"), Some(total), Some(hold), ..) => self.mutex_loop(Duration::from_millis(total), hold).await,
            (Some("mread"), ..) => {
                if let Some(g) = self.mutex_lock(None).await {
                    self.mutex_release(g, false).await;
                }
            }
            (Some("loop"), Some(total), Some(hold), Some(writes)) => {
                let writes = u32::try_from(writes).unwrap_or(1);
                self.run_loop(Duration::from_millis(total), Duration::from_millis(hold), writes).await;
            }
            _ => self.log.emit(Event::Error { what: format!("unknown command: {line}") }),
        }
        self.log.emit(Event::Done { cmd: line.to_owned() });
        true
    }
}

async fn start(opts: Opts, log: Arc<Log>) -> Result<Worker, String> {
    let defaults = LockOptions {
        ttl: opts.ttl,
        auto_renew: opts.auto_renew,
        confirm: opts.confirm,
        poll_cap: opts.poll_cap,
        ..LockOptions::default()
    };
    let mut config = ClientConfig { defaults, ..ClientConfig::default() };
    if let Some(t) = opts.response_timeout {
        config.response_timeout = t;
    }
    if let Some(t) = opts.connection_timeout {
        config.connection_timeout = t;
    }
    // A sentinel URL names the sentinels, and the client follows the primary they name; a
    // cluster URL names seed nodes, and the client follows the slot map (every lock option the
    // worker uses is set per lock, so the default settings do).
    // A quorum URL names its members: `redis+quorum://host:port,host:port,...`.
    let mut quorum = None;
    let mut lock_url = opts.lock_url.clone();
    if let Some(members) = opts.lock_url.strip_prefix("redis+quorum://") {
        let urls: Vec<String> = members.trim_end_matches('/').split(',').map(|m| format!("redis://{m}/")).collect();
        let q =
            rdlock_blocking::QuorumClient::with_config(&urls, config.clone()).map_err(|e| format!("quorum: {e}"))?;
        quorum = Some(Arc::new(q));
        lock_url = urls[0].clone();
    }
    let client = if lock_url.starts_with("redis+sentinel://") {
        let sentinel = SentinelConfig::from_url(&opts.lock_url).map_err(|e| e.to_string())?;
        Client::connect_sentinel(sentinel, config).await
    } else if opts.lock_url.starts_with("redis+cluster://") {
        Client::open(&opts.lock_url).await
    } else {
        let redis_client = redis::Client::open(lock_url.as_str()).map_err(|e| e.to_string())?;
        Client::connect(redis_client, config).await
    };
    let client = client.map_err(|e| format!("lock server: {e}"))?;
    let ledger = redis::Client::open(opts.ledger_url.as_str())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("ledger: {e}"))?;
    let rng = Rng::new(u64::from(std::process::id()) ^ mono_us().unsigned_abs());
    Ok(Worker { opts, log, client, quorum, ledger, script: ledger::script(), held: None, rng })
}

/// Notes each server the client talks to, as it changes (a followed failover): the history
/// then shows when each worker moved.
async fn follow_server(client: Client, log: Arc<Log>) {
    let mut last = format!("{client:?}");
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = format!("{client:?}");
        if now != last {
            log.emit(Event::Note { what: format!("client now {now}") });
            last = now;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fault-worker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let log = Arc::new(Log { name: opts.name.clone(), out: Mutex::new(std::io::stdout()) });
    let notes = log.clone();
    if let Some(traces) = Notes::from_env(move |what| notes.emit(Event::Note { what })) {
        // Only this process's subscriber: nothing else sets one.
        let _ = tracing::subscriber::set_global_default(traces);
    }
    let mut worker = match start(opts, log.clone()).await {
        Ok(w) => w,
        Err(e) => {
            log.emit(Event::Error { what: e });
            return std::process::ExitCode::from(1);
        }
    };
    log.emit(Event::Ready { pid: std::process::id() });
    tokio::spawn(follow_server(worker.client.clone(), log.clone()));
    let stalls = log.clone();
    // Detached: it ends with the process.
    let _ = std::thread::Builder::new().name("stalls".into()).spawn(move || watch_stalls(&stalls));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if worker.run(line.trim()).await => {}
            Ok(_) => break,
            // A read cut short (the worker frozen and let go on mid-read) is read again: a
            // worker that quit on it fell silent in the middle of its case.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log.emit(Event::Error { what: format!("reading commands: {e}") });
                break;
            }
        }
    }
    // A service that shuts down lets its client finish what it started in the background (the
    // clean-up of a wait that timed out, a dropped guard's release) before the process goes: a
    // wait given up a moment ago may have been handed the lock meanwhile, and only its clean-up
    // passes it on. A killed worker cannot; that is the crash rows' subject, bounded by the TTL.
    let flushed = Instant::now() + Duration::from_secs(2);
    while worker.client.tracked_locks() > usize::from(worker.held.is_some()) && Instant::now() < flushed {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Do not wait for the blocking stdin reader on the way out.
    std::process::exit(0)
}
