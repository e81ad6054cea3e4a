//! The async lock API, generic over the runtime; adapters name the runtime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, Event, LockId, LockOptions, LostReason, ReleaseOutcome};
use tracing::Instrument;

use crate::attempt::TryLock;
use crate::common::{self, Answer, LockRequest, builder_setters};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use crate::runtime::Runtime;
use crate::shared::Inner;
use crate::tasks;

/// Closes the client when the last handle goes (guards keep it alive).
struct Lifetime<R: Runtime>(Arc<Inner<R>>);

impl<R: Runtime> Drop for Lifetime<R> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A lock client: one command connection, one pub/sub connection shared by all of its waits,
/// one connection for replica confirmations (made when first needed), and one background task
/// for timers. Cheap to clone; clones share everything.
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
pub struct Client<R: Runtime> {
    inner: Arc<Inner<R>>,
    _life: Arc<Lifetime<R>>,
}

impl<R: Runtime> Clone for Client<R> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _life: self._life.clone() }
    }
}

impl<R: Runtime> fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("server", &self.inner.redis.get_connection_info().addr()).finish()
    }
}

impl<R: Runtime> Client<R> {
    /// Connects to the server at `url` (`redis://[user:password@]host:port/db`, or
    /// `rediss://` for TLS when the redis crate's TLS feature is on).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] for a malformed URL, a server that cannot be reached or refuses the
    /// credentials; [`Error::Entropy`] if the operating system supplies no random bits.
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::connect(redis::Client::open(url)?, ClientConfig::default()).await
    }

    /// A client over an existing `redis::Client`, with settings.
    ///
    /// # Errors
    ///
    /// As [`Client::open`].
    pub async fn connect(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
        let inner = Arc::new(Inner::new(redis, config)?);
        inner.connect().await?;
        R::spawn(tasks::driver(inner.clone()));
        R::spawn(tasks::pubsub(inner.clone()));
        Ok(Self { _life: Arc::new(Lifetime(inner.clone())), inner })
    }

    /// Options for one lock, starting from the client's defaults.
    pub fn lock_builder(&self, key: &str) -> LockBuilder<'_, R> {
        LockBuilder { client: self, key: key.to_owned(), request: LockRequest::new(self.inner.config.defaults) }
    }

    /// Waits until the lock is acquired, in turn with other waiters (first come, first
    /// served).
    ///
    /// Dropping the returned future (a `select!` branch that lost, a timeout around it) is
    /// safe: the wait is given up and, if the lock was granted meanwhile, it is released in
    /// the background.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key or options (nothing is sent);
    /// [`Error::ReplicationShortfall`] when a confirmation asked for by the client's default
    /// options fails; [`Error::Lock`] when the server refuses (a key of another type,
    /// scripts disabled) or cannot be reached; [`Error::Closed`] if the client shut down.
    pub async fn lock(&self, key: &str) -> Result<Guard<R>, Error> {
        // Straight to `acquire`: every layer of futures adds to what each waiter keeps.
        let how = Acquire::Wait { deadline: None };
        self.acquire(key, self.inner.config.defaults, how).await?.ok_or(Error::Closed)
    }

    /// Waits until the lock is acquired, or `timeout` passes. A zero timeout makes one
    /// attempt, like [`Client::try_lock`], answering [`Error::TimedOut`] when the lock is busy.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when the timeout passes first; otherwise as [`Client::lock`].
    pub async fn lock_timeout(&self, key: &str, timeout: Duration) -> Result<Guard<R>, Error> {
        self.lock_builder(key).timeout(timeout).lock().await
    }

    /// One attempt: `None` when someone else holds the lock. [`Client::try_lock_report`]
    /// also tells how long the holder's lease has left.
    ///
    /// A release hands the lock straight to the first queued waiter, so an attempt never
    /// takes it from waiters at a release (fair hand-off); only a lock whose holder vanished
    /// and whose key expired goes to whoever asks first.
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub async fn try_lock(&self, key: &str) -> Result<Option<Guard<R>>, Error> {
        self.acquire(key, self.inner.config.defaults, Acquire::Try).await
    }

    /// One attempt, reporting the holder's remaining lease when the lock is busy, so that
    /// the caller can back off accordingly.
    ///
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
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub async fn try_lock_report(&self, key: &str) -> Result<TryLock<Guard<R>>, Error> {
        self.acquire_report(key, self.inner.config.defaults, Acquire::Try).await
    }

    /// Acquires `key` with explicit options: the general form of the methods above. `None`
    /// when a single attempt ([`Acquire::Try`]) finds the lock busy. A wait whose deadline
    /// has already passed makes one attempt and answers [`Error::TimedOut`] when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock_timeout`].
    pub async fn acquire(&self, key: &str, options: LockOptions, how: Acquire) -> Result<Option<Guard<R>>, Error> {
        Ok(self.acquire_report(key, options, how).await?.acquired())
    }

    /// [`Client::acquire`], reporting the holder's remaining lease when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock_timeout`].
    pub async fn acquire_report(
        &self,
        key: &str,
        options: LockOptions,
        how: Acquire,
    ) -> Result<TryLock<Guard<R>>, Error> {
        let span = tracing::debug_span!("rdlock.acquire", key);
        async {
            let inner = &self.inner;
            let (how, timed) = common::attempt(how, R::now());
            let (started, requests) = inner.with_engine(|s, now| s.start_acquire(key, options, how, now));
            let started = started?;
            let id = started.id;
            let mut waiting = Abandon { inner, id: Some(id) };
            let event = inner
                .run_until(requests, id, Event::ends_acquire)
                .instrument(tracing::debug_span!("rdlock.wait"))
                .await;
            let (fence, valid_until) = match common::acquired(event, timed)? {
                Answer::Acquired { fence, valid_until } => (fence, valid_until),
                Answer::Busy { holder_ttl } => return Ok(TryLock::Busy { holder_ttl }),
            };
            waiting.id = None;
            Ok(TryLock::Acquired(Guard {
                client: self.clone(),
                id,
                key: key.to_owned(),
                token: started.token,
                fence,
                valid_until,
                loss: started.loss,
                done: false,
            }))
        }
        .instrument(span)
        .await
    }

    /// The underlying `redis::Client` (the `redis` crate is re-exported by every adapter).
    pub fn redis(&self) -> &redis::Client {
        &self.inner.redis
    }

    /// Locks this client is tracking (held, waiting, or being released).
    pub fn tracked_locks(&self) -> usize {
        self.inner.state().engine.len()
    }
}

/// Gives up a lock whose handle went away: a cancelled wait, or a failed acquisition.
struct Abandon<'a, R: Runtime> {
    inner: &'a Inner<R>,
    id: Option<LockId>,
}

impl<R: Runtime> Drop for Abandon<'_, R> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            abandon(self.inner, id);
        }
    }
}

fn abandon<R: Runtime>(inner: &Inner<R>, id: LockId) {
    let (_, requests) = inner.with_engine(|s, now| {
        s.slots.remove(&id);
        s.engine.abandon(id, now);
    });
    inner.run_in_background(requests);
}

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
#[derive(Debug)]
pub struct LockBuilder<'a, R: Runtime> {
    client: &'a Client<R>,
    key: String,
    request: LockRequest,
}

impl<R: Runtime> LockBuilder<'_, R> {
    builder_setters!();

    /// Waits until acquired (or the deadline). A deadline already passed, or a zero timeout,
    /// makes one attempt, answering [`Error::TimedOut`] when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock_timeout`].
    pub async fn lock(self) -> Result<Guard<R>, Error> {
        let deadline = self.request.deadline(R::now());
        self.client.acquire(&self.key, self.request.options, Acquire::Wait { deadline }).await?.ok_or(Error::Closed)
    }

    /// One attempt: `None` when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub async fn try_lock(self) -> Result<Option<Guard<R>>, Error> {
        self.client.acquire(&self.key, self.request.options, Acquire::Try).await
    }

    /// One attempt, reporting the holder's remaining lease when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub async fn try_lock_report(self) -> Result<TryLock<Guard<R>>, Error> {
        self.client.acquire_report(&self.key, self.request.options, Acquire::Try).await
    }
}

/// A held lock. Dropping it releases the lock in the background (never blocking);
/// [`Guard::release`] releases it and reports whether it was still ours.
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
/// assert!(guard.release().await?.was_held(), "the lock was still ours");
/// # Ok(()) }
/// ```
pub struct Guard<R: Runtime> {
    client: Client<R>,
    id: LockId,
    key: String,
    token: String,
    fence: u64,
    valid_until: Instant,
    loss: Arc<LossCell>,
    done: bool,
}

impl<R: Runtime> fmt::Debug for Guard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").field("key", &self.key).field("fence", &self.fence).finish()
    }
}

impl<R: Runtime> Guard<R> {
    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The owner token: the value stored in the lock key while this guard holds it (32
    /// lowercase hex digits, 128 random bits), so that an operator can map a key's value to
    /// its holder. Read-only: release and renewal compare it on the server.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The fencing token: strictly increasing across the lock's holders. Pass it to the
    /// storage you protect, so that it can refuse a stale holder.
    ///
    /// The first fence of a lock (or the first after its counter was lost, e.g. a restart
    /// without persistence) is the server's clock in microseconds since the Unix epoch; each
    /// later holder gets one more. So fences are large numbers that keep rising across
    /// restarts, not a count from 1.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Nothing may trust the lock past this instant (later after each renewal).
    pub fn valid_until(&self) -> Instant {
        common::lease(&self.client.inner.state().engine, self.id, self.valid_until, R::now()).0
    }

    /// Whether the lease is still valid now: cheap, no round trip.
    pub fn is_valid(&self) -> bool {
        common::lease(&self.client.inner.state().engine, self.id, self.valid_until, R::now()).1
    }

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

    /// An owned, cloneable loss signal for this lock, to move into another task: it fires
    /// when the lease is lost, and ends (with `None`) once the lock is released.
    pub fn loss_signal(&self) -> LossSignal {
        LossSignal::new(self.loss.clone())
    }

    #[doc(hidden)]
    /// Wakers kept for pending lost-lease futures (for the tests that bound them).
    pub fn lost_waker_count(&self) -> usize {
        self.loss.waiting()
    }

    /// Renews the lease now; returns the new end of validity.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the lease is already lost or the renewal finds it gone;
    /// [`Error::Closed`] if the client shut down.
    pub async fn extend(&self) -> Result<Instant, Error> {
        let inner = &self.client.inner;
        let (res, requests) =
            inner.with_engine(|s, now| common::start_extend(&mut s.engine, &mut s.slots, self.id, now));
        res?;
        common::extended(inner.run_until(requests, self.id, common::ends_extend).await)
    }

    /// Releases the lock and says what is known of it: [`ReleaseOutcome::Released`] when the
    /// lease was valid to the end and the owner-checked delete ran, `NotHeld` when the lease
    /// had been lost (expired, or the key was not ours), `Unknown` when the server did not
    /// answer in time (the release goes on in the background). Returns within the client's
    /// response timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Lock`] when the server refused the release (the key then expires at the end
    /// of its TTL); [`Error::Closed`] if the client shut down.
    pub async fn release(mut self) -> Result<ReleaseOutcome, Error> {
        let span = tracing::debug_span!("rdlock.release", key = %self.key, fence = self.fence);
        async {
            let inner = self.client.inner.clone();
            let (res, requests) = inner.with_engine(|s, now| s.engine.release(self.id, now));
            res.map_err(|_| Error::Closed)?;
            let event = inner.run_until(requests, self.id, common::ends_release).await;
            self.done = true;
            inner.state().slots.remove(&self.id);
            common::released(event)
        }
        .instrument(span)
        .await
    }
}

impl<R: Runtime> Drop for Guard<R> {
    fn drop(&mut self) {
        if !self.done {
            abandon(&self.client.inner, self.id);
        }
    }
}
