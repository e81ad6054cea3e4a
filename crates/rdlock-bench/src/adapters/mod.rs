//! What the scenarios need from a lock implementation ([`Locker`]) and from the executor it runs
//! on ([`Exec`]), and the table of adapters ([`ADAPTERS`]). Adding an adapter is an entry in
//! that table, plus an `Exec` when it brings a new executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::scenario::{self, Rig, Scenario, Settings};
pub use rdlock_driver::Resource;

pub mod blocking;
pub mod by_hand;
pub mod grant;
pub mod notify;
pub mod raw;
pub mod rdlock;
pub mod relay;
pub mod route;
pub mod scripts;
pub mod scripts_blocking;

/// A spawned task's result.
pub type Join<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Waits on `exec` for every spawned task, in order.
pub fn join_all<E: Exec, T>(exec: &E, tasks: Vec<Join<T>>) -> Vec<T> {
    exec.block_on(async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    })
}

/// The executor a scenario runs on.
pub trait Exec: Clone + Send + Sync + 'static {
    /// Most tasks alive at once (threads are costly: each maps a stack and a signal stack, and
    /// 10,000 of them exhaust the kernel's map count here).
    const MAX_TASKS: usize = usize::MAX;

    /// Runs a future to completion on the calling thread.
    fn block_on<F: Future>(&self, future: F) -> F::Output;
    /// Runs a future in the background (a task, or a thread for blocking adapters).
    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T>;
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// Lease options of one acquisition.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub ttl: Duration,
    pub auto_renew: bool,
}

impl Default for Spec {
    /// The library default, and the TTL of peers.md: 10 s, renewed while held.
    fn default() -> Self {
        Self { ttl: Duration::from_secs(10), auto_renew: true }
    }
}

/// One lock client with its own connection(s). Shared by the tasks of one client.
pub trait Locker: Sized + Send + Sync + 'static {
    /// A held lock.
    type Guard: Send + 'static;
    /// Commands the client sends itself (lower case, as in `INFO commandstats`); every other
    /// command the server counts ran inside its scripts.
    const REQUESTS: &'static [&'static str];
    /// The same for the counted resources (S6, S7), when they use other commands.
    const COUNTED_REQUESTS: &'static [&'static str] = Self::REQUESTS;
    /// Whether it renews held leases by itself (S4).
    const RENEWS: bool;
    /// Whether its waiters queue, first come first served (S10 checks the order).
    const QUEUES: bool = false;

    fn connect(url: &str) -> impl Future<Output = Result<Self, BoxError>> + Send;
    /// Waits until `key` is held.
    fn lock(&self, key: &str, spec: Spec) -> impl Future<Output = Result<Self::Guard, BoxError>> + Send;
    /// Waits until a share of `key` is held: a semaphore's permit, or an RwLock's read or
    /// write share (S6, S7); [`Resource::Lock`] is [`Locker::lock`].
    fn acquire(
        &self,
        key: &str,
        resource: Resource,
        spec: Spec,
    ) -> impl Future<Output = Result<Self::Guard, BoxError>> + Send;
    /// Releases; `true` if it was still held.
    fn release(&self, guard: Self::Guard) -> impl Future<Output = Result<bool, BoxError>> + Send;
    /// Whether the lease is still valid (as far as the client knows).
    fn is_valid(&self, guard: &Self::Guard) -> bool;

    /// The counter scenarios (S8, S9): takes `key`'s lock and reads the `u64` kept with it,
    /// holds for `hold`, and writes the value plus one back as it releases. A baseline that
    /// keeps no counter says so.
    fn increment(
        &self,
        key: &str,
        spec: Spec,
        hold: Option<Duration>,
    ) -> impl Future<Output = Result<Increment, BoxError>> + Send {
        let _ = (key, spec, hold);
        async { Err("this baseline keeps no counter".into()) }
    }
    /// The counter's value now (taken under its lock, after the run's last snapshot).
    fn counter(&self, key: &str) -> impl Future<Output = Result<u64, BoxError>> + Send {
        let _ = key;
        async { Err("this baseline keeps no counter".into()) }
    }
    /// Commands of S8 and S9 the server counts as requests, as [`Locker::REQUESTS`].
    const COUNTER_REQUESTS: &'static [&'static str] = Self::REQUESTS;
    /// Requests of S8 and S9 this client counted itself: commands its scripts also run, so
    /// that the server's count cannot tell them apart (the `GET` and `SET` of a counter kept
    /// by hand).
    fn own_requests(&self) -> u64 {
        0
    }
    /// Messages on subscribed channels this client has handled so far, when it counts them
    /// (S5 sets them against the server's count of messages published: the backlog).
    fn messages(&self) -> Option<u64> {
        None
    }
    /// Hand-offs to this client's own waiters read from its release's reply so far, when it
    /// counts them (S10: its waiters are its releasers' neighbours).
    fn replied(&self) -> Option<u64> {
        None
    }
}

/// One increment (S8, S9), as the client saw it. Its hold runs from the value in hand to the
/// write called, so that reading and writing the value count as hand-off, not as hold, for
/// the mutex and a counter kept by hand alike.
#[derive(Clone, Copy, Debug)]
pub struct Increment {
    /// The lock was held and the value read.
    pub acquired: Instant,
    /// The write (with the release, or just before it) was called.
    pub release_called: Instant,
    /// Whether the lock was still ours at the release: the write landed.
    pub held: bool,
}

/// One adapter: a name for `--adapters`, and what sets up one scenario run of it (a fresh
/// server, its executor, its clients).
#[derive(Clone, Copy, Debug)]
pub struct Adapter {
    pub name: &'static str,
    pub rig: MakeRig,
    /// The scenarios it runs in (None: all).
    pub only: Option<&'static [Scenario]>,
}

impl Adapter {
    /// Whether it runs in scenario `s`.
    pub fn runs(&self, s: Scenario) -> bool {
        // The baseline follows no failover: its connections stay with the old primary.
        let follows = self.name != crate::report::RAW || !Scenario::FAILOVER.contains(&s);
        follows && self.only.is_none_or(|only| only.contains(&s))
    }

    /// The row whose lock S8 and S9 compare this adapter's counter with (S1, S2).
    pub fn lock_row(name: &str) -> &str {
        name.strip_suffix(BY_HAND).unwrap_or(name)
    }
}

/// Suffix of the rows that keep S8's and S9's counter by hand beside an rdlock lock.
pub const BY_HAND: &str = "-by-hand";

/// The notified baseline's name on tokio; on the other executors it is suffixed with theirs.
pub const NOTIFY_TOKIO: &str = "notify";

/// The scenarios the notified baseline runs in: the hand-offs.
const NOTIFY_SCENARIOS: &[Scenario] = &[Scenario::S2, Scenario::S10];

/// The notified baseline on the executor of rdlock's adapter `adapter` (`None` for a
/// baseline or an adapter with no such row).
pub fn notify_row(adapter: &str) -> Option<&'static str> {
    match adapter {
        "tokio" => Some(NOTIFY_TOKIO),
        "async-std" => Some("notify-async-std"),
        "blocking" => Some("notify-blocking"),
        _ => None,
    }
}

/// Whether `adapter` is a notified baseline's row.
pub fn is_notify(adapter: &str) -> bool {
    adapter.starts_with(NOTIFY_TOKIO)
}

/// The granting baseline's name on tokio (`grant.rs`); on the other executors it is suffixed
/// with theirs. S2 only, and only when named.
pub const GRANT_TOKIO: &str = "grant";

/// The granting baseline on the executor of rdlock's adapter `adapter`.
pub fn grant_row(adapter: &str) -> Option<&'static str> {
    match adapter {
        "tokio" => Some(GRANT_TOKIO),
        "async-std" => Some("grant-async-std"),
        "blocking" => Some("grant-blocking"),
        _ => None,
    }
}

/// The granting baseline through rdlock's own scripts on the executor of rdlock's adapter
/// `adapter` (`grant.rs`, `Checked`).
pub fn grant_scripts_row(adapter: &str) -> Option<&'static str> {
    match adapter {
        "tokio" => Some("grant-scripts"),
        "async-std" => Some("grant-scripts-async-std"),
        "blocking" => Some("grant-scripts-blocking"),
        _ => None,
    }
}

/// The scripts' granting baseline with its messages relayed by a reader, on the executor of
/// rdlock's adapter `adapter` (`relay.rs`).
pub fn grant_relay_row(adapter: &str) -> Option<&'static str> {
    match adapter {
        "tokio" => Some("grant-relay"),
        "async-std" => Some("grant-relay-async-std"),
        "blocking" => Some("grant-relay-blocking"),
        _ => None,
    }
}

/// Whether `adapter` is a granting baseline's row (any kind).
pub fn is_grant(adapter: &str) -> bool {
    adapter.starts_with(GRANT_TOKIO)
}

/// Sets up one scenario run of an adapter.
pub type MakeRig = fn(Scenario, &Settings) -> Result<Box<dyn Rig>, BoxError>;

/// Every adapter, `raw` (the baseline) first.
pub const ADAPTERS: &[Adapter] = &[
    Adapter { name: "raw", rig: |s, set| scenario::rig::<raw::Raw, _>(TokioExec::new()?, s, set), only: None },
    // The floor of rdlock's protocol: raw's client sending rdlock's acquire and release
    // scripts, uncontended scenarios only (`scripts.rs`).
    Adapter {
        name: crate::report::FLOOR,
        rig: |s, set| scenario::rig::<scripts::Scripts, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S1, Scenario::S3, Scenario::C1, Scenario::C3]),
    },
    // The protocol's own floor: the same client sending the cheapest scripts that run
    // rdlock's six commands (`scripts.rs`, `Commands`); only when named.
    Adapter {
        name: crate::report::FLOOR_COMMANDS,
        rig: |s, set| scenario::rig::<scripts::Commands, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S1, Scenario::S3]),
    },
    // The same commands behind rdlock's own argument checks (`Commands<true>`); only when named.
    Adapter {
        name: crate::report::FLOOR_CHECKED,
        rig: |s, set| scenario::rig::<scripts::Commands<true>, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S1, Scenario::S3]),
    },
    Adapter {
        name: "tokio",
        rig: |s, set| scenario::rig::<rdlock::Rd<rdlock_tokio::Tokio>, _>(TokioExec::new()?, s, set),
        only: None,
    },
    // S8 and S9 only: the tokio client's lock with the counter read and written by hand
    // (`GET`, `SET`): what the mutex saves.
    Adapter {
        name: "tokio-by-hand",
        rig: |s, set| scenario::rig::<by_hand::ByHand<rdlock_tokio::Tokio>, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S8, Scenario::S9]),
    },
    // Under smol's executor (async-std's reactor is the same async-io); clients are made
    // outside any tokio runtime, so the redis crate uses async-io for them.
    Adapter {
        name: "async-std",
        rig: |s, set| scenario::rig::<rdlock::Rd<rdlock_async_std::AsyncStd>, _>(SmolExec, s, set),
        only: None,
    },
    // The same floor on smol's executor and async-io (the redis crate's smol path, no
    // response timeout: no timer per request): what async-io's I/O path costs beside tokio's,
    // which `async-std` cannot go below.
    Adapter {
        name: crate::report::FLOOR_SMOL,
        rig: |s, set| scenario::rig::<scripts::Scripts<true>, _>(SmolExec, s, set),
        only: Some(&[Scenario::S1, Scenario::S3]),
    },
    // Plain threads: one per client (and per waiter in S5).
    Adapter { name: "blocking", rig: |s, set| scenario::rig::<blocking::Blocking, _>(ThreadExec, s, set), only: None },
    // The same floor on threads: the redis crate's synchronous connection, one per client
    // thread (`scripts_blocking.rs`), what `blocking` cannot go below.
    Adapter {
        name: crate::report::FLOOR_BLOCKING,
        rig: |s, set| scenario::rig::<scripts_blocking::ScriptsBlocking, _>(ThreadExec, s, set),
        only: Some(&[Scenario::S1, Scenario::S3]),
    },
    // The floor of a notified hand-off, no lock logic (`notify.rs`): `SET NX`, a message on
    // release, every woken client tries again; S2 and S10 only, one per executor above.
    Adapter {
        name: NOTIFY_TOKIO,
        rig: |s, set| scenario::rig::<notify::Notify, _>(TokioExec::new()?, s, set),
        only: Some(NOTIFY_SCENARIOS),
    },
    Adapter {
        name: "notify-async-std",
        rig: |s, set| scenario::rig::<notify::Notify, _>(SmolExec, s, set),
        only: Some(NOTIFY_SCENARIOS),
    },
    Adapter {
        name: "notify-blocking",
        rig: |s, set| scenario::rig::<notify::NotifyBlocking, _>(ThreadExec, s, set),
        only: Some(NOTIFY_SCENARIOS),
    },
    // The floor of a hand-off whose message carries the grant, first come first served, with
    // no other lock logic (`grant.rs`); S2 only, one per executor above, only when named.
    Adapter {
        name: GRANT_TOKIO,
        rig: |s, set| scenario::rig::<grant::Grant, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S2]),
    },
    Adapter {
        name: "grant-async-std",
        rig: |s, set| scenario::rig::<grant::Grant, _>(SmolExec, s, set),
        only: Some(&[Scenario::S2]),
    },
    Adapter {
        name: "grant-blocking",
        rig: |s, set| scenario::rig::<grant::GrantBlocking, _>(ThreadExec, s, set),
        only: Some(&[Scenario::S2]),
    },
    // The same hand-off through rdlock's own scripts (`grant.rs`, `Checked`): what they cost
    // a hand-off, and what rdlock's client adds to them.
    Adapter {
        name: "grant-scripts",
        rig: |s, set| scenario::rig::<grant::Grant<grant::Checked>, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S2]),
    },
    Adapter {
        name: "grant-scripts-async-std",
        rig: |s, set| scenario::rig::<grant::Grant<grant::Checked>, _>(SmolExec, s, set),
        only: Some(&[Scenario::S2]),
    },
    Adapter {
        name: "grant-scripts-blocking",
        rig: |s, set| scenario::rig::<grant::GrantBlocking<grant::Checked>, _>(ThreadExec, s, set),
        only: Some(&[Scenario::S2]),
    },
    // The same with the messages relayed by a reader per client, as a client whose waiters
    // share one pub/sub connection must (`relay.rs`): what the relay's hop costs.
    Adapter {
        name: "grant-relay",
        rig: |s, set| scenario::rig::<grant::Grant<grant::Checked, relay::Relayed>, _>(TokioExec::new()?, s, set),
        only: Some(&[Scenario::S2]),
    },
    Adapter {
        name: "grant-relay-async-std",
        rig: |s, set| scenario::rig::<grant::Grant<grant::Checked, relay::Relayed>, _>(SmolExec, s, set),
        only: Some(&[Scenario::S2]),
    },
    Adapter {
        name: "grant-relay-blocking",
        rig: |s, set| {
            scenario::rig::<grant::GrantBlocking<grant::Checked, relay::RelayedThreads>, _>(ThreadExec, s, set)
        },
        only: Some(&[Scenario::S2]),
    },
    // A new adapter: implement `Locker` (see `rdlock.rs`, `blocking.rs`), add an `Exec` if it
    // brings an executor of its own, and add a line here.
];

/// Worker threads of the tokio runtimes: 0 for a current-thread runtime; by default
/// (`usize::MAX`) one per core, tokio's own default.
pub static TOKIO_WORKERS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// `--no-newer-commands`: rdlock's clients renew by script even where the server offers
/// `SET ... IFEQ` (`ClientConfig::newer_commands`), to measure the two side by side.
pub static NEWER_COMMANDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `--no-release-ping`: rdlock's contended releases go alone, not behind a `PING`
/// (`EngineConfig::release_behind_ping`), to count the commands without it.
pub static RELEASE_PING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The configuration rdlock's adapters connect with to a single server (`Client::connect`)
/// instead of `Client::open`'s defaults, when the run asks for one: only with
/// `--no-newer-commands` or `--no-release-ping`, and never for sentinels or a cluster, which
/// those flags do not cover.
pub fn client_config(url: &str) -> Option<rdlock_driver::ClientConfig> {
    let (newer, ping) = (NEWER_COMMANDS.load(Ordering::Relaxed), RELEASE_PING.load(Ordering::Relaxed));
    ((!newer || !ping) && url.starts_with("redis://")).then(|| {
        let mut config = rdlock_driver::ClientConfig { newer_commands: newer, ..Default::default() };
        config.engine.release_behind_ping = ping;
        config
    })
}

/// A tokio runtime (multi-threaded unless `--tokio-workers 0`), made afresh per scenario run.
#[derive(Clone, Debug)]
pub struct TokioExec(Arc<tokio::runtime::Runtime>);

impl TokioExec {
    pub fn new() -> Result<Self, BoxError> {
        let rt = match TOKIO_WORKERS.load(Ordering::Relaxed) {
            0 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            usize::MAX => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
            n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
        };
        Ok(Self(Arc::new(rt)))
    }
}

impl Exec for TokioExec {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }

    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T> {
        let handle = self.0.spawn(future);
        Box::pin(async move {
            match handle.await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// smol's global executor (the one the redis crate's smol support and rdlock-async-std spawn
/// their tasks on; `SMOL_THREADS` threads, 1 by default), timers of async-io.
#[derive(Clone, Copy, Debug)]
pub struct SmolExec;

impl Exec for SmolExec {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        smol::block_on(future)
    }

    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T> {
        Box::pin(smol::spawn(future))
    }

    async fn sleep(&self, d: Duration) {
        smol::Timer::after(d).await;
    }
}

/// One thread per task, for blocking adapters: `sleep` blocks the calling thread, which is
/// that task's own.
#[derive(Clone, Copy, Debug)]
pub struct ThreadExec;

impl Exec for ThreadExec {
    const MAX_TASKS: usize = 2_000;

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T> {
        let thread = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || futures_lite::future::block_on(future))
            .unwrap_or_else(|e| panic!("cannot start a thread: {e}"));
        // Joining blocks the awaiting thread: only the scenario's main thread awaits these.
        Box::pin(async move { thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) })
    }

    async fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
