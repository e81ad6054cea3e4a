//! The blocking driver: the lock API on plain threads, over synchronous connections.
//!
//! The same engine and the same translation as the async driver, and the same semantics:
//! a [`Client`] keeps a small pool of command connections (so that threads locking at once
//! do not queue behind each other), a pool for replica confirmations (`WAIT` blocks its
//! connection), one pub/sub connection shared by all of its waits, and two background
//! threads: one for timers (renewals, polls, deadlines, lost leases) and one for the pub/sub
//! connection. Callers run their own requests on their own thread; what the background
//! threads decide to send goes to a few worker threads (started when needed, ended when
//! idle), so that a slow exchange never delays a timer. Dropping a [`Guard`] releases the
//! lock on the dropping thread.

// The types are written once, in `crate::api`; this side says how it waits (on this thread),
// makes a client (its threads) and gives up a lock (on the dropping thread).

mod inner;
mod pool;
mod threads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, LockId, LockOptions, LostReason, ReleaseOutcome, Resource};

use crate::api::lock_api;
use crate::attempt::TryLock;
use crate::common::{self, LockRequest};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use crate::mutex::mutex_api;
use inner::Inner;

/// Waits by blocking: the expression already did.
/// What a method that acquires returns: the answer, once in.
macro_rules! acquiring {
    ($l:lifetime, $t:ty) => {
        Result<$t, Error>
    };
}

/// An acquisition of `key` (a `Cow`) on this thread, answered through `map`.
macro_rules! acquire {
    ($client:expr, $key:expr, $resource:expr, $options:expr, $how:expr, $timeout:expr, $map:expr) => {
        $client.acquire_here($key, ($resource, $options, $how, $timeout)).and_then($map)
    };
}

/// After a release that handed the lock over: nothing. A thread's yield measured no
/// difference (`docs/performance.md`, *S2 against a granting floor, and the yield after a
/// hand-off*).
macro_rules! after_release {
    ($handed:expr) => {
        let _ = $handed;
    };
}

macro_rules! wait {
    ($e:expr) => {
        $e
    };
    ($e:expr, $span:expr) => {{
        let _entered = $span.entered();
        $e
    }};
}

// Reentrant owners and scoped locks, over the types below (they read their fields).
mod owner;
mod quorum;
mod scoped;
pub use owner::{Hold, Owner};
pub use quorum::{QuorumClient, QuorumGuard};
pub use scoped::Scope;

lock_api! {
    asyncness: [],
    generics: [],
    args: [],
    inner: Inner,
    now: Instant::now,
    waits: "Blocks",
    task: "thread",
    client: {
        /// A blocking lock client. Cheap to clone; clones share connections, locks and threads.
        ///
        /// Each client draws its own owner tokens (seeded from the operating system when it is
        /// made), so two clients never confirm each other's locks, even when built from copies of one
        /// [`ClientConfig`].
        ///
        /// ```no_run
        /// # fn demo() -> Result<(), rdlock_driver::Error> {
        /// use std::time::Duration;
        ///
        /// let client = rdlock_driver::blocking::Client::open("redis://127.0.0.1:6379/")?;
        /// let guard = client.lock_timeout("orders", Duration::from_secs(5))?;
        /// println!("fence {}", guard.fence());
        /// guard.release()?;
        /// # Ok(()) }
        /// ```
    },
    open_errors: {
        /// [`Error::Redis`] for a malformed URL, a server that cannot be reached or refuses the
        /// credentials, or when the background threads cannot be started; [`Error::Entropy`] if
        /// the operating system supplies no random bits.
    },
    connect: {
        /// A client over an existing `redis::Client`, with settings. Makes the first command
        /// connection before returning, so that a wrong address fails here.
    },
    lock: {},
    try_lock_report: {
        /// ```no_run
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// use rdlock_driver::TryLock;
        ///
        /// match client.try_lock_report("orders")? {
        ///     TryLock::Acquired(guard) => drop(guard),
        ///     TryLock::Busy { holder_ttl } => println!("busy; the holder's lease ends in {holder_ttl:?}"),
        /// }
        /// # Ok(()) }
        /// ```
    },
    builder: {
        /// Options for one acquisition, from [`Client::lock_builder`].
        ///
        /// ```no_run
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// use std::time::Duration;
        /// use rdlock_driver::Confirm;
        ///
        /// let guard = client
        ///     .lock_builder("payments")
        ///     .ttl(Duration::from_secs(5))
        ///     .confirm(Confirm::All { timeout: Duration::from_millis(100) })
        ///     .timeout(Duration::from_secs(2))
        ///     .lock()?;
        /// guard.release()?;
        /// # Ok(()) }
        /// ```
    },
    guard: {
        /// A held lock. Dropping it releases the lock on the dropping thread (one round trip, more
        /// only while retrying a failed release; it never panics); [`Guard::release`] does the same
        /// and reports what is known of it ([`ReleaseOutcome`]).
        ///
        /// ```no_run
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// let guard = client.lock("orders")?;
        /// // Hand the fence to the storage you protect, and watch the lease from another thread.
        /// let fence = guard.fence();
        /// let signal = guard.loss_signal();
        /// std::thread::spawn(move || {
        ///     if let Some(reason) = signal.wait_forever() {
        ///         eprintln!("lease lost ({reason:?}): stop writing with fence {fence}");
        ///     }
        /// });
        /// assert!(guard.release()?.was_held(), "the lock was ours to the end");
        /// # Ok(()) }
        /// ```
    },
    guard_lost: {
        /// Blocks until the lease is lost (renewal refused, or validity ran out). Run it on a
        /// watcher thread (see [`Guard::loss_signal`]), or poll with [`Guard::wait_lost`]
        /// between pieces of work.
        pub fn lost(&self) -> LostReason {
            // Ends without a reason only once the lock is released, which takes the guard.
            self.loss.wait(None).unwrap_or(LostReason::Expired)
        }

        /// Waits up to `timeout` for the lease to be lost: `None` if it is still held then.
        pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
            self.loss.wait(Some(Instant::now() + timeout))
        }
    }
}

mutex_api! {
    asyncness: [],
    generics: [],
    args: [],
    now: Instant::now,
    waits: "Blocks",
    mutex: {
        /// A lock whose data lives with it, at one key (`Client::mutex` with the `serde` feature,
        /// [`Client::mutex_bytes`], [`Client::mutex_with`]): each holder reads the value its
        /// predecessor wrote, and writes it back before letting go. The value is kept beside the lock key and outlives it (unless
        /// given a TTL, [`MutexBuilder::value_ttl`]).
        ///
        /// ```no_run
        /// # #[cfg(feature = "serde")]
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// let counter = client.mutex::<u64>("visits");
        /// let mut guard = counter.lock()?;
        /// *guard += 1;
        /// println!("visit {} (the last one by fence {:?})", *guard, guard.written_by());
        /// guard.release()?; // writes the value back, then releases
        /// # Ok(()) }
        /// ```
    },
    json: {
        /// The mutex at `key` whose value is a `T` stored as JSON ([`Json`](crate::Json), the
        /// `serde` feature). Until a value is first written (or after a value TTL ran out), a
        /// holder finds `T::default()`; `Option<T>` suits types without a natural default.
        ///
        /// ```no_run
        /// # #[cfg(feature = "serde")]
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// let queue = client.mutex::<Vec<String>>("jobs");
        /// let mut jobs = queue.lock()?;
        /// jobs.push("resize 42.png".to_owned());
        /// jobs.release()?;
        /// # Ok(()) }
        /// ```
    },
    builder: {
        /// Options for one acquisition of a mutex, from [`Mutex::builder`].
        ///
        /// ```no_run
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// use std::time::Duration;
        ///
        /// let mut session = client
        ///     .mutex_bytes("session:7")
        ///     .builder()
        ///     .ttl(Duration::from_secs(5))
        ///     .max_value(64 * 1024)
        ///     .value_ttl(Duration::from_secs(3600))
        ///     .timeout(Duration::from_secs(2))
        ///     .lock()?;
        /// session.extend_from_slice(b"seen");
        /// session.release()?;
        /// # Ok(()) }
        /// ```
    },
    guard: {
        /// A held mutex and its value: read it through `Deref`, change it through `DerefMut`
        /// (which marks it modified), write it with [`MutexGuard::store`] mid-hold or
        /// [`MutexGuard::release`] at the end.
        ///
        /// Dropping the guard releases the lock on the dropping thread and does **not** write
        /// the value: a write nobody asked for could store half-done work. Release explicitly
        /// to keep a change; [`MutexGuard::discard`] says so for a change to drop.
        ///
        /// ```no_run
        /// # #[cfg(feature = "serde")]
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// let mut balance = client.mutex::<i64>("balance").lock()?;
        /// *balance -= 30;
        /// if *balance < 0 {
        ///     balance.discard()?; // nothing written
        /// } else {
        ///     balance.release()?; // written, then released
        /// }
        /// # Ok(()) }
        /// ```
    }
}

impl<T, C> MutexGuard<T, C> {
    /// Waits up to `timeout` for the lease to be lost: `None` if it is still held then (as
    /// [`Guard::wait_lost`]).
    pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
        self.guard.wait_lost(timeout)
    }
}

/// Makes a client: its state, a checked first command connection, and its threads.
fn start(redis: redis::Client, config: ClientConfig) -> Result<Arc<Inner>, Error> {
    let inner = Arc::new(Inner::with_threads(redis, config)?);
    inner.connect().map_err(crate::tls::typed)?;
    threads::start(&inner)?;
    Ok(inner)
}

/// Makes a client of the primary the sentinels name, and has it follow their failovers.
fn start_sentinel(sentinel: crate::SentinelConfig, config: ClientConfig) -> Result<Arc<Inner>, Error> {
    let sentinels = crate::sentinel::Sentinels::new(sentinel, &config)?;
    let primary = crate::sentinel::resolve(&sentinels, None)?;
    let settings = config.clone();
    let inner = start(sentinels.data_client(&primary)?, config)?;
    crate::sentinel::follow(&inner, sentinels, primary, &settings)?;
    Ok(inner)
}

/// Makes a client of a cluster: reads its slot map and has it follow it.
fn start_cluster(cluster: crate::ClusterConfig, config: ClientConfig) -> Result<Arc<Inner>, Error> {
    let topology = crate::cluster::Topology::connect(cluster, &config)?;
    let (seed, config) = crate::cluster::settings(&topology, config)?;
    let inner = start(seed, config)?;
    crate::cluster::follow(&inner, Arc::new(topology))?;
    Ok(inner)
}

impl Client {
    /// An acquisition on this thread: its requests sent and its answer awaited here; the
    /// lock is given up unless a guard takes it over.
    fn acquire_here(
        &self,
        key: std::borrow::Cow<'_, str>,
        (resource, options, how, timeout): (Resource, LockOptions, Acquire, Option<Duration>),
    ) -> Result<TryLock<Guard>, Error> {
        let _span = tracing::debug_span!("rdlock.acquire", key = &*key).entered();
        let (begun, requests) = self.begin(&key, resource, options, how, timeout)?;
        let mut waiting = Abandon { inner: &self.inner, id: Some(begun.id) };
        let event = tracing::debug_span!("rdlock.wait")
            .in_scope(|| self.inner.run_until(requests, begun.id, begun.op, begun.deadline));
        let answer = self.finish(key, &begun, event)?;
        if let TryLock::Acquired(_) = answer {
            waiting.id = None;
        }
        Ok(answer)
    }
}

/// Gives up a lock whose acquisition failed, or was busy, on the way out.
struct Abandon<'a> {
    inner: &'a Arc<Inner>,
    id: Option<LockId>,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            abandon(self.inner, id);
        }
    }
}

/// Gives up a lock on this thread: the first request here, bounded by the response
/// timeout; any retry in the background.
fn abandon(inner: &Arc<Inner>, id: LockId) {
    let (_, requests) = inner.with_engine(|s, now| {
        s.slots.remove(&id);
        s.engine.abandon(id, now);
    });
    inner.run_first(requests);
}

// A dropped guard releases on the dropping thread, in the release's span.
impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let _span = tracing::debug_span!("rdlock.release", key = %self.key, fence = self.fence).entered();
            abandon(&self.client.inner, self.id);
        }
    }
}
