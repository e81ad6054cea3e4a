//! The async lock API, generic over the runtime; adapters name the runtime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, Event, LockId, LockOptions, LostReason, ReleaseOutcome};
use tracing::Instrument;

use crate::common::{self, LockRequest, builder_setters};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::shared::{Inner, Slot};
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
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::connect(redis::Client::open(url)?, ClientConfig::default()).await
    }

    /// A client over an existing `redis::Client`, with settings.
    pub async fn connect(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
        let inner = Arc::new(Inner::new(redis, config));
        inner.connect().await?;
        R::spawn(tasks::driver(inner.clone()));
        R::spawn(tasks::pubsub(inner.clone()));
        Ok(Self { _life: Arc::new(Lifetime(inner.clone())), inner })
    }

    /// Options for one lock, starting from the client's defaults.
    pub fn lock_builder(&self, key: &str) -> LockBuilder<'_, R> {
        LockBuilder { client: self, key: key.to_owned(), request: LockRequest::new(self.inner.config.defaults) }
    }

    /// Waits until the lock is acquired.
    pub async fn lock(&self, key: &str) -> Result<Guard<R>, Error> {
        // Straight to `acquire`: every layer of futures adds to what each waiter keeps.
        let how = Acquire::Wait { deadline: None };
        self.acquire(key, self.inner.config.defaults, how).await?.ok_or(Error::Closed)
    }

    /// Waits until the lock is acquired, or `timeout` passes ([`Error::TimedOut`]).
    pub async fn lock_timeout(&self, key: &str, timeout: Duration) -> Result<Guard<R>, Error> {
        self.lock_builder(key).timeout(timeout).lock().await
    }

    /// One attempt: `None` when someone else holds the lock.
    pub async fn try_lock(&self, key: &str) -> Result<Option<Guard<R>>, Error> {
        self.acquire(key, self.inner.config.defaults, Acquire::Try).await
    }

    /// Acquires `key` with explicit options: the general form of the methods above.
    pub async fn acquire(&self, key: &str, options: LockOptions, how: Acquire) -> Result<Option<Guard<R>>, Error> {
        let span = tracing::debug_span!("rdlock.acquire", key);
        async {
            let inner = &self.inner;
            let (id, requests) = inner.with_engine(|s, now| {
                let id = s.engine.acquire(key, options, how, now)?;
                s.slots.insert(id, Slot::default());
                Ok::<_, Error>(id)
            });
            let mut waiting = Abandon { inner, id: Some(id?) };
            let id = waiting.id.unwrap_or(LockId(0));
            let event = inner
                .run_until(requests, id, Event::ends_acquire)
                .instrument(tracing::debug_span!("rdlock.wait"))
                .await;
            let Some((fence, valid_until)) = common::acquired(event)? else { return Ok(None) };
            waiting.id = None;
            Ok(Some(Guard { client: self.clone(), id, key: key.to_owned(), fence, valid_until, done: false }))
        }
        .instrument(span)
        .await
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

/// Options for one acquisition.
#[derive(Debug)]
pub struct LockBuilder<'a, R: Runtime> {
    client: &'a Client<R>,
    key: String,
    request: LockRequest,
}

impl<R: Runtime> LockBuilder<'_, R> {
    builder_setters!();

    /// Waits until acquired (or the deadline).
    pub async fn lock(self) -> Result<Guard<R>, Error> {
        let deadline = self.request.deadline(R::now());
        self.client.acquire(&self.key, self.request.options, Acquire::Wait { deadline }).await?.ok_or(Error::Closed)
    }

    /// One attempt.
    pub async fn try_lock(self) -> Result<Option<Guard<R>>, Error> {
        self.client.acquire(&self.key, self.request.options, Acquire::Try).await
    }
}

/// A held lock. Dropping it releases the lock in the background (never blocking);
/// [`Guard::release`] releases it and reports whether it was still ours.
pub struct Guard<R: Runtime> {
    client: Client<R>,
    id: LockId,
    key: String,
    fence: u64,
    valid_until: Instant,
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

    /// The fencing token: strictly increasing across the lock's holders. Pass it to the
    /// storage you protect, so that it can refuse a stale holder.
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
    /// beside the work the lock protects.
    pub async fn lost(&self) -> LostReason {
        self.client.inner.lost(self.id).await
    }

    /// Renews the lease now; returns the new end of validity.
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
