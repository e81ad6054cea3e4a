//! The async lock API, generic over the runtime; adapters name the runtime. The types are
//! written once, in [`crate::api`]; this side says how it waits (`await`), makes a client
//! (two background tasks) and gives up a lock (in the background).

mod acquisition;
mod deadlines;
mod inner;
mod permits;
mod signal;
mod tasks;

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
use crate::runtime::Runtime;
use inner::Inner;

/// Waits by awaiting.
/// What a method that acquires returns: a future ([`acquisition::Acquisition`]).
macro_rules! acquiring {
    ($l:lifetime, $t:ty) => {
        impl std::future::Future<Output = Result<$t, Error>> + Send + $l
    };
}

/// An acquisition of `key` (a `Cow`), answered through `map`: started at its first poll.
macro_rules! acquire {
    ($client:expr, $key:expr, $resource:expr, $options:expr, $how:expr, $timeout:expr, $map:expr) => {
        acquisition::Acquisition::new($client, $key, ($resource, $options, $how, $timeout), $map)
    };
}

/// After a release that handed the lock over (`$handed`): the runtime's yield, so that a
/// waiter of this process woken with the release's reply runs before the caller goes on.
macro_rules! after_release {
    ($handed:expr) => {
        if $handed {
            R::yield_now().await;
        }
    };
}

macro_rules! wait {
    ($e:expr) => {
        $e.await
    };
    ($e:expr, $span:expr) => {
        tracing::Instrument::instrument($e, $span).await
    };
}

// Reentrant owners and scoped locks, over the types below (they read their fields).
mod owner;
mod quorum;
mod scoped;
pub use owner::{Hold, Owner};
pub use quorum::{QuorumClient, QuorumGuard};
pub use scoped::Scope;

lock_api! {
    asyncness: [async],
    generics: [R: Runtime],
    args: [R],
    inner: Inner<R>,
    now: R::now,
    waits: "Waits",
    task: "task",
    client: {
        /// A lock client: one command connection, one pub/sub connection shared by all of its waits,
        /// one connection for replica confirmations (made when first needed), one background task
        /// for timers and one for the requests' response deadlines. Cheap to clone; clones share
        /// everything.
        ///
        /// Each client draws its own owner tokens (seeded from the operating system when it is
        /// made), so two clients never confirm each other's locks, even when built from copies of one
        /// [`ClientConfig`].
        ///
        /// Adapters name the runtime (`rdlock_tokio::Client` is `Client<Tokio>`):
        ///
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>() -> Result<(), rdlock_driver::Error> {
        /// use std::time::Duration;
        ///
        /// let client = rdlock_driver::Client::<R>::open("redis://127.0.0.1:6379/").await?;
        /// let guard = client.lock_timeout("orders", Duration::from_secs(5)).await?;
        /// println!("fence {}", guard.fence());
        /// guard.release().await?;
        /// # Ok(()) }
        /// ```
    },
    open_errors: {
        /// [`Error::Redis`] for a malformed URL, a server that cannot be reached or refuses the
        /// credentials; [`Error::Entropy`] if the operating system supplies no random bits.
    },
    connect: {
        /// A client over an existing `redis::Client`, with settings.
    },
    lock: {
        ///
        /// Dropping the returned future (a `select!` branch that lost, a timeout around it) is
        /// safe: the wait is given up and, if the lock was granted meanwhile, it is released in
        /// the background.
    },
    try_lock_report: {
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// use rdlock_driver::TryLock;
        ///
        /// match client.try_lock_report("orders").await? {
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
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// use std::time::Duration;
        /// use rdlock_driver::Confirm;
        ///
        /// let guard = client
        ///     .lock_builder("payments")
        ///     .ttl(Duration::from_secs(5))
        ///     .confirm(Confirm::All { timeout: Duration::from_millis(100) })
        ///     .timeout(Duration::from_secs(2))
        ///     .lock()
        ///     .await?;
        /// guard.release().await?;
        /// # Ok(()) }
        /// ```
    },
    guard: {
        /// A held lock. Dropping it releases the lock in the background (never blocking);
        /// [`Guard::release`] releases it and reports what is known of it ([`ReleaseOutcome`]).
        ///
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// let guard = client.lock("orders").await?;
        /// // Hand the fence to the storage you protect, and watch the lease from another task.
        /// let fence = guard.fence();
        /// let signal = guard.loss_signal();
        /// R::spawn(async move {
        ///     if let Some(reason) = signal.lost().await {
        ///         eprintln!("lease lost ({reason:?}): stop writing with fence {fence}");
        ///     }
        /// });
        /// assert!(guard.release().await?.was_held(), "the lock was ours to the end");
        /// # Ok(()) }
        /// ```
    },
    guard_lost: {
        /// Completes when the lease is lost (renewal refused, or validity ran out): select on it
        /// beside the work the lock protects. Each pending future keeps one waker, so polling
        /// it in a loop costs no memory. To watch from another task, see [`Guard::loss_signal`].
        pub async fn lost(&self) -> LostReason {
            match self.loss.lost().await {
                Some(reason) => reason,
                // Ends only once the lock is released, which takes the guard: never here.
                None => std::future::pending().await,
            }
        }

        #[doc(hidden)]
        /// Wakers kept for pending lost-lease futures (for the tests that bound them).
        pub fn lost_waker_count(&self) -> usize {
            self.loss.waiting()
        }
    }
}

mutex_api! {
    asyncness: [async],
    generics: [R: Runtime],
    args: [R],
    now: R::now,
    waits: "Waits",
    mutex: {
        /// A lock whose data lives with it, at one key (`Client::mutex` with the `serde` feature,
        /// [`Client::mutex_bytes`], [`Client::mutex_with`]): each holder reads the value its
        /// predecessor wrote, and writes it back before letting go. The value is kept beside the lock key and outlives it (unless
        /// given a TTL, [`MutexBuilder::value_ttl`]).
        ///
        /// Adapters name the runtime (`rdlock_tokio::Mutex<T>` is `Mutex<T, Json, Tokio>`).
        ///
        /// ```no_run
        /// # #[cfg(feature = "serde")]
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// let counter = client.mutex::<u64>("visits");
        /// let mut guard = counter.lock().await?;
        /// *guard += 1;
        /// println!("visit {} (the last one by fence {:?})", *guard, guard.written_by());
        /// guard.release().await?; // writes the value back, then releases
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
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// let queue = client.mutex::<Vec<String>>("jobs");
        /// let mut jobs = queue.lock().await?;
        /// jobs.push("resize 42.png".to_owned());
        /// jobs.release().await?;
        /// # Ok(()) }
        /// ```
    },
    builder: {
        /// Options for one acquisition of a mutex, from [`Mutex::builder`].
        ///
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// use std::time::Duration;
        ///
        /// let mut session = client
        ///     .mutex_bytes("session:7")
        ///     .builder()
        ///     .ttl(Duration::from_secs(5))
        ///     .max_value(64 * 1024)
        ///     .value_ttl(Duration::from_secs(3600))
        ///     .timeout(Duration::from_secs(2))
        ///     .lock()
        ///     .await?;
        /// session.extend_from_slice(b"seen");
        /// session.release().await?;
        /// # Ok(()) }
        /// ```
    },
    guard: {
        /// A held mutex and its value: read it through `Deref`, change it through `DerefMut`
        /// (which marks it modified), write it with [`MutexGuard::store`] mid-hold or
        /// [`MutexGuard::release`] at the end.
        ///
        /// Dropping the guard releases the lock in the background and does **not** write the
        /// value: a write nobody asked for could store half-done work. Release explicitly to
        /// keep a change; [`MutexGuard::discard`] says so for a change to drop.
        ///
        /// ```no_run
        /// # #[cfg(feature = "serde")]
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// let mut balance = client.mutex::<i64>("balance").lock().await?;
        /// *balance -= 30;
        /// if *balance < 0 {
        ///     balance.discard().await?; // nothing written
        /// } else {
        ///     balance.release().await?; // written, then released
        /// }
        /// # Ok(()) }
        /// ```
    }
}

/// Makes a client: its state, a checked command connection, and its three background tasks.
async fn start<R: Runtime>(redis: redis::Client, config: ClientConfig) -> Result<Arc<Inner<R>>, Error> {
    let inner = Arc::new(Inner::with_tasks(redis, config)?);
    inner.connect().await.map_err(crate::tls::typed)?;
    R::spawn(tasks::driver(inner.clone()));
    R::spawn(tasks::pubsub(inner.clone()));
    R::spawn(tasks::deadlines(inner.clone()));
    Ok(inner)
}

/// Makes a client of the primary the sentinels name (looked up off this task), and has it
/// follow their failovers.
async fn start_sentinel<R: Runtime>(
    sentinel: crate::SentinelConfig,
    config: ClientConfig,
) -> Result<Arc<Inner<R>>, Error> {
    let sentinels = crate::sentinel::Sentinels::new(sentinel, &config)?;
    let primary = crate::sentinel::resolve_off_thread(sentinels.clone()).await?;
    let settings = config.clone();
    let inner = start(sentinels.data_client(&primary)?, config).await?;
    crate::sentinel::follow(&inner, sentinels, primary, &settings)?;
    Ok(inner)
}

/// Makes a client of a cluster: reads its slot map (off this task) and has it follow it.
async fn start_cluster<R: Runtime>(
    cluster: crate::ClusterConfig,
    config: ClientConfig,
) -> Result<Arc<Inner<R>>, Error> {
    let settings = config.clone();
    let topology =
        crate::sentinel::off_thread("rdlock-cluster", move || crate::cluster::Topology::connect(cluster, &settings))
            .await??;
    let (seed, config) = crate::cluster::settings(&topology, config)?;
    let inner = start(seed, config).await?;
    crate::cluster::follow(&inner, Arc::new(topology))?;
    Ok(inner)
}

/// Gives up a lock: the driver task sends what that takes.
fn abandon<R: Runtime>(inner: &Inner<R>, id: LockId) {
    let (_, requests) = inner.with_engine(|s, now| {
        s.slots.remove(&id);
        s.engine.abandon(id, now);
    });
    inner.run_in_background(requests);
}

// A dropped guard never blocks its task: the release goes to the driver task.
impl<R: Runtime> Drop for Guard<R> {
    fn drop(&mut self) {
        if !self.done {
            abandon(&self.client.inner, self.id);
        }
    }
}
