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

mod inner;
mod threads;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, Event, LockId, LockOptions, LostReason, ReleaseOutcome};

use crate::attempt::TryLock;
use crate::common::{self, Answer, LockRequest, builder_setters};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use inner::Inner;

/// Closes the client when the last handle goes (guards keep it alive): the background
/// threads then end once every lock is settled.
struct Lifetime(Arc<Inner>);

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.0.close();
    }
}

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
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _life: Arc<Lifetime>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("server", &self.inner.redis.get_connection_info().addr()).finish()
    }
}

impl Client {
    /// Connects to the server at `url` (`redis://[user:password@]host:port/db`, or
    /// `rediss://` for TLS when the redis crate's TLS feature is on).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] for a malformed URL, a server that cannot be reached or refuses the
    /// credentials, or when the background threads cannot be started; [`Error::Entropy`] if
    /// the operating system supplies no random bits.
    pub fn open(url: &str) -> Result<Self, Error> {
        Self::connect(redis::Client::open(url)?, ClientConfig::default())
    }

    /// A client over an existing `redis::Client`, with settings. Makes the first command
    /// connection before returning, so that a wrong address fails here.
    ///
    /// # Errors
    ///
    /// As [`Client::open`].
    pub fn connect(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
        let inner = Arc::new(Inner::new(redis, config)?);
        inner.connect()?;
        threads::start(&inner)?;
        Ok(Self { _life: Arc::new(Lifetime(inner.clone())), inner })
    }

    /// Options for one lock, starting from the client's defaults.
    pub fn lock_builder(&self, key: &str) -> LockBuilder<'_> {
        LockBuilder { client: self, key: key.to_owned(), request: LockRequest::new(self.inner.config.defaults) }
    }

    /// Blocks until the lock is acquired, in turn with other waiters (first come, first
    /// served).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a bad key or options (nothing is sent);
    /// [`Error::ReplicationShortfall`] when a confirmation asked for by the client's default
    /// options fails; [`Error::Lock`] when the server refuses (a key of another type,
    /// scripts disabled) or cannot be reached; [`Error::Closed`] if the client shut down.
    pub fn lock(&self, key: &str) -> Result<Guard, Error> {
        self.lock_builder(key).lock()
    }

    /// Blocks until the lock is acquired, or `timeout` passes. A zero timeout makes one
    /// attempt, like [`Client::try_lock`], answering [`Error::TimedOut`] when the lock is busy.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when the timeout passes first; otherwise as [`Client::lock`].
    pub fn lock_timeout(&self, key: &str, timeout: Duration) -> Result<Guard, Error> {
        self.lock_builder(key).timeout(timeout).lock()
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
    pub fn try_lock(&self, key: &str) -> Result<Option<Guard>, Error> {
        self.lock_builder(key).try_lock()
    }

    /// One attempt, reporting the holder's remaining lease when the lock is busy, so that
    /// the caller can back off accordingly.
    ///
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
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub fn try_lock_report(&self, key: &str) -> Result<TryLock<Guard>, Error> {
        self.lock_builder(key).try_lock_report()
    }

    /// Acquires `key` with explicit options: the general form of the methods above. `None`
    /// when a single attempt ([`Acquire::Try`]) finds the lock busy. A wait whose deadline
    /// has already passed makes one attempt and answers [`Error::TimedOut`] when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock_timeout`].
    pub fn acquire(&self, key: &str, options: LockOptions, how: Acquire) -> Result<Option<Guard>, Error> {
        Ok(self.acquire_report(key, options, how)?.acquired())
    }

    /// [`Client::acquire`], reporting the holder's remaining lease when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock_timeout`].
    pub fn acquire_report(&self, key: &str, options: LockOptions, how: Acquire) -> Result<TryLock<Guard>, Error> {
        let _span = tracing::debug_span!("rdlock.acquire", key).entered();
        let inner = &self.inner;
        let (how, timed) = common::attempt(how, Instant::now());
        let (started, requests) = inner.with_engine(|s, now| s.start_acquire(key, options, how, now));
        let started = started?;
        let id = started.id;
        // Gives the lock up unless a guard takes it over.
        let mut waiting = Abandon { inner, id: Some(id) };
        let deadline = match how {
            Acquire::Wait { deadline } => deadline,
            Acquire::Try => None,
        };
        let event = {
            let _wait = tracing::debug_span!("rdlock.wait").entered();
            inner.run_until(requests, Some(id), Event::ends_acquire, deadline)
        };
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

    /// The underlying `redis::Client` (the `redis` crate is re-exported by every adapter).
    pub fn redis(&self) -> &redis::Client {
        &self.inner.redis
    }

    /// Locks this client is tracking (held, waiting, or being released).
    pub fn tracked_locks(&self) -> usize {
        self.inner.state().engine.len()
    }
}

/// Gives up a lock whose handle went away (a failed acquisition), on this thread.
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

fn abandon(inner: &Arc<Inner>, id: LockId) {
    let (_, requests) = inner.with_engine(|s, now| {
        s.slots.remove(&id);
        s.engine.abandon(id, now);
    });
    // The first request here, bounded by the response timeout; any retry in the background.
    inner.run_until(requests, None, common::ends_release, None);
}

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
#[derive(Debug)]
pub struct LockBuilder<'a> {
    client: &'a Client,
    key: String,
    request: LockRequest,
}

impl LockBuilder<'_> {
    builder_setters!();

    /// Blocks until acquired (or the deadline). A deadline already passed, or a zero
    /// timeout, makes one attempt, answering [`Error::TimedOut`] when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock_timeout`].
    pub fn lock(self) -> Result<Guard, Error> {
        let deadline = self.request.deadline(Instant::now());
        self.client.acquire(&self.key, self.request.options, Acquire::Wait { deadline })?.ok_or(Error::Closed)
    }

    /// One attempt: `None` when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub fn try_lock(self) -> Result<Option<Guard>, Error> {
        self.client.acquire(&self.key, self.request.options, Acquire::Try)
    }

    /// One attempt, reporting the holder's remaining lease when busy.
    ///
    /// # Errors
    ///
    /// As [`Client::lock`].
    pub fn try_lock_report(self) -> Result<TryLock<Guard>, Error> {
        self.client.acquire_report(&self.key, self.request.options, Acquire::Try)
    }
}

/// A held lock. Dropping it releases the lock on the dropping thread (one round trip, more
/// only while retrying a failed release; it never panics); [`Guard::release`] does the same
/// and reports whether the lock was still ours.
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
/// assert!(guard.release()?.was_held(), "the lock was still ours");
/// # Ok(()) }
/// ```
pub struct Guard {
    client: Client,
    id: LockId,
    key: String,
    token: String,
    fence: u64,
    valid_until: Instant,
    loss: Arc<LossCell>,
    done: bool,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").field("key", &self.key).field("fence", &self.fence).finish()
    }
}

impl Guard {
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
        common::lease(&self.client.inner.state().engine, self.id, self.valid_until, Instant::now()).0
    }

    /// Whether the lease is still valid now: cheap, no round trip.
    pub fn is_valid(&self) -> bool {
        common::lease(&self.client.inner.state().engine, self.id, self.valid_until, Instant::now()).1
    }

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

    /// An owned, cloneable loss signal for this lock, to move into another thread: it fires
    /// when the lease is lost, and ends (with `None`) once the lock is released.
    pub fn loss_signal(&self) -> LossSignal {
        LossSignal::new(self.loss.clone())
    }

    /// Renews the lease now; returns the new end of validity.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the lease is already lost or the renewal finds it gone;
    /// [`Error::Closed`] if the client shut down.
    pub fn extend(&self) -> Result<Instant, Error> {
        let inner = &self.client.inner;
        let (res, requests) =
            inner.with_engine(|s, now| common::start_extend(&mut s.engine, &mut s.slots, self.id, now));
        res?;
        common::extended(inner.run_until(requests, Some(self.id), common::ends_extend, None))
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
    pub fn release(mut self) -> Result<ReleaseOutcome, Error> {
        let _span = tracing::debug_span!("rdlock.release", key = %self.key, fence = self.fence).entered();
        let inner = self.client.inner.clone();
        let (res, requests) = inner.with_engine(|s, now| s.engine.release(self.id, now));
        res.map_err(|_| Error::Closed)?;
        let event = inner.run_until(requests, Some(self.id), common::ends_release, None);
        self.done = true;
        inner.state().slots.remove(&self.id);
        common::released(event)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            let _span = tracing::debug_span!("rdlock.release", key = %self.key, fence = self.fence).entered();
            abandon(&self.client.inner, self.id);
        }
    }
}
