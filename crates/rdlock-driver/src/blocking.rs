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

use crate::common::{self, LockRequest, builder_setters};
use crate::config::ClientConfig;
use crate::error::Error;
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
    pub fn open(url: &str) -> Result<Self, Error> {
        Self::connect(redis::Client::open(url)?, ClientConfig::default())
    }

    /// A client over an existing `redis::Client`, with settings. Makes the first command
    /// connection before returning, so that a wrong address fails here.
    pub fn connect(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
        let inner = Arc::new(Inner::new(redis, config));
        inner.connect()?;
        threads::start(&inner)?;
        Ok(Self { _life: Arc::new(Lifetime(inner.clone())), inner })
    }

    /// Options for one lock, starting from the client's defaults.
    pub fn lock_builder(&self, key: &str) -> LockBuilder<'_> {
        LockBuilder { client: self, key: key.to_owned(), request: LockRequest::new(self.inner.config.defaults) }
    }

    /// Blocks until the lock is acquired.
    pub fn lock(&self, key: &str) -> Result<Guard, Error> {
        self.lock_builder(key).lock()
    }

    /// Blocks until the lock is acquired, or `timeout` passes ([`Error::TimedOut`]).
    pub fn lock_timeout(&self, key: &str, timeout: Duration) -> Result<Guard, Error> {
        self.lock_builder(key).timeout(timeout).lock()
    }

    /// One attempt: `None` when someone else holds the lock.
    pub fn try_lock(&self, key: &str) -> Result<Option<Guard>, Error> {
        self.lock_builder(key).try_lock()
    }

    /// Acquires `key` with explicit options: the general form of the methods above.
    pub fn acquire(&self, key: &str, options: LockOptions, how: Acquire) -> Result<Option<Guard>, Error> {
        let _span = tracing::debug_span!("rdlock.acquire", key).entered();
        let inner = &self.inner;
        let (id, requests) = inner.with_engine(|s, now| {
            let id = s.engine.acquire(key, options, how, now)?;
            s.slots.insert(id, inner::Slot::default());
            Ok::<_, Error>(id)
        });
        let id = id?;
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
        let Some((fence, valid_until)) = common::acquired(event)? else { return Ok(None) };
        waiting.id = None;
        Ok(Some(Guard { client: self.clone(), id, key: key.to_owned(), fence, valid_until, done: false }))
    }

    /// The underlying `redis::Client`.
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

/// Options for one acquisition.
#[derive(Debug)]
pub struct LockBuilder<'a> {
    client: &'a Client,
    key: String,
    request: LockRequest,
}

impl LockBuilder<'_> {
    builder_setters!();

    /// Blocks until acquired (or the deadline).
    pub fn lock(self) -> Result<Guard, Error> {
        let deadline = self.request.deadline(Instant::now());
        self.client.acquire(&self.key, self.request.options, Acquire::Wait { deadline })?.ok_or(Error::Closed)
    }

    /// One attempt.
    pub fn try_lock(self) -> Result<Option<Guard>, Error> {
        self.client.acquire(&self.key, self.request.options, Acquire::Try)
    }
}

/// A held lock. Dropping it releases the lock on the dropping thread (one round trip, more
/// only while retrying a failed release; it never panics); [`Guard::release`] does the same
/// and reports whether the lock was still ours.
pub struct Guard {
    client: Client,
    id: LockId,
    key: String,
    fence: u64,
    valid_until: Instant,
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

    /// The fencing token: strictly increasing across the lock's holders. Pass it to the
    /// storage you protect, so that it can refuse a stale holder.
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
    /// watcher thread, or poll with [`Guard::wait_lost`] between pieces of work.
    pub fn lost(&self) -> LostReason {
        // Without a limit, the wait ends only with a reason: the guard keeps its slot.
        self.client.inner.wait_lost(self.id, None).unwrap_or(LostReason::Expired)
    }

    /// Waits up to `timeout` for the lease to be lost: `None` if it is still held then.
    pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
        self.client.inner.wait_lost(self.id, Some(Instant::now() + timeout))
    }

    /// Renews the lease now; returns the new end of validity.
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
