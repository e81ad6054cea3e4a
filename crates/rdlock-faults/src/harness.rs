//! Worker processes under a test's control.
//!
//! A [`Harness`] spawns `fault-worker` processes, sends them commands (one line each on
//! stdin), collects their JSON-line records from stdout into one history, and injects
//! process faults (freeze, resume, kill), logging each into the same history. Dropping the
//! harness kills every worker it started, also when the test panics (and then prints the end
//! of the history).
//!
//! Worker commands:
//!
//! | command | what the worker does |
//! |---|---|
//! | `acquire` | waits for the lock (with the worker's timeout, if any) |
//! | `write N` | N fenced writes, each followed by an unfenced increment, while the lease is valid |
//! | `hold MS` | keeps the lock MS ms (renewals and `lost()` are logged meanwhile) |
//! | `stall MS` | checks the lease, logs a pause point, sleeps MS, then writes without checking again |
//! | `stall_checked MS` | the same, but checks the lease again before writing |
//! | `release` | releases the lock |
//! | `loop MS HOLD_MS WRITES` | for MS ms: acquire, write WRITES times over HOLD_MS, release |
//! | `mincr` | locks the `Mutex<u64>` at the worker's key, logs the value read, adds 1, releases writing it back, logs the outcome |
//! | `mstall MS` | the same, but logs a pause point after adding 1 and keeps the mutex MS ms before the write-back |
//! | `mloop MS HOLD_MS` | for MS ms: `mincr`, keeping the mutex 0 to HOLD_MS ms each time |
//! | `mread` | locks the mutex, logs the value read, releases without writing |
//! | `quit` | exits |
//!
//! Each command ends with a `done` record.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::record::{Event, HARNESS, Record};

/// How long a worker may take to connect and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// History lines printed when a test panics.
const PANIC_TAIL: usize = 80;

/// How to start one worker.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Its name in the history (and in the ledger's log).
    pub name: String,
    /// The lock server (directly or through a proxy), or the sentinels naming it
    /// (`redis+sentinel://host:port,host:port/master`: the worker follows failovers), or a
    /// cluster's seed nodes (`redis+cluster://host:port,host:port`: it follows the slot map).
    pub lock_url: String,
    /// The ledger server.
    pub ledger_url: String,
    /// The lock's key.
    pub key: String,
    /// Lock TTL.
    pub ttl: Duration,
    /// Waiters' poll cap.
    pub poll_cap: Duration,
    /// Renew while held.
    pub auto_renew: bool,
    /// Replica confirmation: `none`, `all:MS`, `majority:MS` or `atleast:N:MS`.
    pub confirm: String,
    /// Deadline of each `acquire`.
    pub timeout: Option<Duration>,
    /// Sleep between the `GET` and the `SET` of an unfenced increment.
    pub gap: Duration,
    /// The client's response timeout (`None`: the client's default): how long a frozen
    /// server keeps a request unanswered.
    pub response_timeout: Option<Duration>,
    /// The client's connection timeout (`None`: the client's default).
    pub connection_timeout: Option<Duration>,
}

impl WorkerSpec {
    /// A worker with TTL 1 s, poll cap 200 ms, auto-renew, no confirmation, no timeout and a
    /// 3 ms unfenced gap.
    pub fn new(name: &str, lock_url: &str, ledger_url: &str, key: &str) -> Self {
        Self {
            name: name.to_owned(),
            lock_url: lock_url.to_owned(),
            ledger_url: ledger_url.to_owned(),
            key: key.to_owned(),
            ttl: Duration::from_secs(1),
            poll_cap: Duration::from_millis(200),
            auto_renew: true,
            confirm: "none".to_owned(),
            timeout: None,
            gap: Duration::from_millis(3),
            response_timeout: None,
            connection_timeout: None,
        }
    }

    /// The same worker under another name (and maybe another server).
    pub fn renamed(&self, name: &str, lock_url: &str) -> Self {
        Self { name: name.to_owned(), lock_url: lock_url.to_owned(), ..self.clone() }
    }

    /// The client's response and connection timeouts: how long a frozen server keeps a
    /// request, or a new connection, unanswered.
    pub fn timeouts(&mut self, t: Duration) {
        self.response_timeout = Some(t);
        self.connection_timeout = Some(t);
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--name={}", self.name),
            format!("--lock-url={}", self.lock_url),
            format!("--ledger-url={}", self.ledger_url),
            format!("--key={}", self.key),
            format!("--ttl-ms={}", self.ttl.as_millis()),
            format!("--poll-cap-ms={}", self.poll_cap.as_millis()),
            format!("--auto-renew={}", self.auto_renew),
            format!("--confirm={}", self.confirm),
            format!("--gap-ms={}", self.gap.as_millis()),
        ];
        if let Some(t) = self.timeout {
            a.push(format!("--timeout-ms={}", t.as_millis()));
        }
        if let Some(t) = self.response_timeout {
            a.push(format!("--response-timeout-ms={}", t.as_millis()));
        }
        if let Some(t) = self.connection_timeout {
            a.push(format!("--connection-timeout-ms={}", t.as_millis()));
        }
        a
    }
}

/// What can go wrong driving workers.
#[derive(Debug)]
pub enum HarnessError {
    /// Spawning, writing to or signalling a worker failed.
    Io(std::io::Error),
    /// No worker of that name runs.
    NoWorker(String),
    /// A wait timed out; `tail` is the end of the history.
    Timeout {
        /// What was awaited.
        what: String,
        /// The last records.
        tail: String,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Io(e) => write!(f, "worker i/o: {e}"),
            HarnessError::NoWorker(w) => write!(f, "no worker named {w}"),
            HarnessError::Timeout { what, tail } => write!(f, "timed out waiting for {what}; history ends:\n{tail}"),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        HarnessError::Io(e)
    }
}

impl From<nix::Error> for HarnessError {
    fn from(e: nix::Error) -> Self {
        HarnessError::Io(e.into())
    }
}

#[derive(Debug, Default)]
struct Shared {
    records: Mutex<Vec<Record>>,
    changed: Condvar,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, r: Record) {
        self.records().push(r);
        self.changed.notify_all();
    }
}

#[derive(Debug)]
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
}

/// Worker processes and their merged history.
#[derive(Debug)]
pub struct Harness {
    bin: PathBuf,
    shared: Arc<Shared>,
    workers: BTreeMap<String, Proc>,
}

impl Harness {
    /// A harness running the worker binary at `bin` (in tests:
    /// `env!("CARGO_BIN_EXE_fault-worker")`).
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { bin: bin.into(), shared: Arc::default(), workers: BTreeMap::new() }
    }

    /// Starts a worker and waits until it is connected.
    pub fn spawn(&mut self, spec: &WorkerSpec) -> Result<(), HarnessError> {
        let mark = self.mark();
        let mut child = Command::new(&self.bin)
            .args(spec.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let shared = self.shared.clone();
        let name = spec.name.clone();
        let pid = child.id();
        let reader = std::thread::Builder::new().name(format!("fault-worker-{name}")).spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let record = Record::from_line(&line)
                    .unwrap_or_else(|_| Record::now(&name, Event::Error { what: format!("unparsed output: {line}") }));
                shared.push(record);
            }
            // Said in the history, so that a worker that fell silent can be told from one
            // that is slow, with its wait status (`exit code << 8 | signal`) while it is a
            // zombie not yet reaped (the last field of its stat).
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let status = stat.split_whitespace().last().unwrap_or("unknown");
            let what = format!("{name}'s output ended (wait status {status})");
            shared.push(Record::now(HARNESS, Event::Note { what }));
        })?;
        self.workers.insert(spec.name.clone(), Proc { child, stdin, reader: Some(reader) });
        self.wait_record(mark, &spec.name, READY_TIMEOUT, |e| matches!(e, Event::Ready { .. }))?;
        Ok(())
    }

    /// Sends one command line to a worker.
    pub fn send(&mut self, worker: &str, cmd: &str) -> Result<(), HarnessError> {
        let proc = self.workers.get_mut(worker).ok_or_else(|| HarnessError::NoWorker(worker.to_owned()))?;
        let stdin = proc.stdin.as_mut().ok_or_else(|| HarnessError::NoWorker(worker.to_owned()))?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends a command and waits until the worker reports it done.
    pub fn command(&mut self, worker: &str, cmd: &str, timeout: Duration) -> Result<(), HarnessError> {
        let mark = self.mark();
        self.send(worker, cmd)?;
        self.wait_record(mark, worker, timeout, |e| matches!(e, Event::Done { cmd: c } if c == cmd))?;
        Ok(())
    }

    /// The number of records so far: pass it to [`Harness::wait_record`] to wait for later ones.
    pub fn mark(&self) -> usize {
        self.shared.records().len()
    }

    /// Waits for a record of `worker` (at index `since` or later) whose event matches.
    pub fn wait_record(
        &self,
        since: usize,
        worker: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Record, HarnessError> {
        let found = self.wait_until(&format!("a record of {worker}"), timeout, |records| {
            records.iter().skip(since).find(|r| r.worker == worker && pred(&r.event)).cloned()
        })?;
        Ok(found)
    }

    /// Waits until `pred` returns something for the history so far.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Record]) -> Option<T>,
    ) -> Result<T, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut records = self.shared.records();
        loop {
            if let Some(t) = pred(&records) {
                return Ok(t);
            }
            let now = Instant::now();
            if now >= deadline {
                let tail = tail(&records, 30);
                return Err(HarnessError::Timeout { what: what.to_owned(), tail });
            }
            records = self.shared.changed.wait_timeout(records, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Logs a harness event into the history.
    pub fn log(&self, event: Event) -> Record {
        let r = Record::now(HARNESS, event);
        self.shared.push(r.clone());
        r
    }

    /// A note in the history.
    pub fn note(&self, what: impl Into<String>) {
        self.log(Event::Note { what: what.into() });
    }

    /// The process id of a worker.
    pub fn pid(&self, worker: &str) -> Option<u32> {
        self.workers.get(worker).map(|p| p.child.id())
    }

    fn signal(&self, worker: &str, sig: Signal) -> Result<(), HarnessError> {
        let pid = self.pid(worker).ok_or_else(|| HarnessError::NoWorker(worker.to_owned()))?;
        let raw = i32::try_from(pid).map_err(|_| HarnessError::NoWorker(worker.to_owned()))?;
        kill(Pid::from_raw(raw), sig)?;
        Ok(())
    }

    /// Freezes a worker (SIGSTOP) and logs it.
    pub fn pause(&self, worker: &str) -> Result<Record, HarnessError> {
        self.signal(worker, Signal::SIGSTOP)?;
        Ok(self.log(Event::Paused { target: worker.to_owned() }))
    }

    /// Lets a frozen worker go on (SIGCONT) and logs it.
    pub fn resume(&self, worker: &str) -> Result<Record, HarnessError> {
        let r = self.log(Event::Resumed { target: worker.to_owned() });
        self.signal(worker, Signal::SIGCONT)?;
        Ok(r)
    }

    /// Kills a worker (SIGKILL), reaps it and logs it.
    pub fn kill(&mut self, worker: &str) -> Result<Record, HarnessError> {
        let mut proc = self.workers.remove(worker).ok_or_else(|| HarnessError::NoWorker(worker.to_owned()))?;
        let _ = proc.child.kill();
        let r = self.log(Event::Killed { target: worker.to_owned() });
        let _ = proc.child.wait();
        if let Some(reader) = proc.reader.take() {
            let _ = reader.join();
        }
        Ok(r)
    }

    /// Asks every worker to quit, waits up to `timeout` for them to exit, and kills the rest.
    pub fn quit_all(&mut self, timeout: Duration) {
        let names: Vec<String> = self.workers.keys().cloned().collect();
        for name in &names {
            let _ = self.send(name, "quit");
        }
        let deadline = Instant::now() + timeout;
        for (_, mut proc) in std::mem::take(&mut self.workers) {
            proc.stdin.take();
            while Instant::now() < deadline && matches!(proc.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = proc.child.kill();
            let _ = proc.child.wait();
            if let Some(reader) = proc.reader.take() {
                let _ = reader.join();
            }
        }
    }

    /// A copy of the history so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared.records().clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (_, mut proc) in std::mem::take(&mut self.workers) {
            // SIGKILL also ends a frozen process.
            let _ = proc.child.kill();
            let _ = proc.child.wait();
            if let Some(reader) = proc.reader.take() {
                let _ = reader.join();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- last {PANIC_TAIL} records ---\n{}", tail(&self.shared.records(), PANIC_TAIL));
        }
    }
}

/// The last `n` records, one JSON line each.
pub fn tail(records: &[Record], n: usize) -> String {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| r.mono);
    sorted[sorted.len().saturating_sub(n)..].iter().map(|r| r.to_line()).collect::<Vec<_>>().join("\n")
}
