//! The async lock API, generic over the runtime; adapters name the runtime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, Confirm, Event, LockId, LockOptions, LostReason, Misuse};
use tracing::Instrument;

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
        LockBuilder {
            client: self,
            key: key.to_owned(),
            options: self.inner.config.defaults,
            deadline: None,
            timeout: None,
        }
    }

    /// Waits until the lock is acquired.
    pub async fn lock(&self, key: &str) -> Result<Guard<R>, Error> {
        self.lock_builder(key).lock().await
    }

    /// Waits until the lock is acquired, or `timeout` passes ([`Error::TimedOut`]).
    pub async fn lock_timeout(&self, key: &str, timeout: Duration) -> Result<Guard<R>, Error> {
        self.lock_builder(key).timeout(timeout).lock().await
    }

    /// One attempt: `None` when someone else holds the lock.
    pub async fn try_lock(&self, key: &str) -> Result<Option<Guard<R>>, Error> {
        self.lock_builder(key).try_lock().await
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
            // Boxed: a waiting lock keeps only its small wait future, not the exchange's.
            Box::pin(inner.run(requests)).await;
            let event = inner.next_event(id, Event::ends_acquire).instrument(tracing::debug_span!("rdlock.wait")).await;
            match event {
                Some(Event::Acquired { fence, valid_until }) => {
                    waiting.id = None;
                    tracing::debug!(fence, "acquired");
                    Ok(Some(Guard { client: self.clone(), id, key: key.to_owned(), fence, valid_until, done: false }))
                }
                Some(Event::Busy { .. }) => Ok(None),
                Some(Event::TimedOut) => Err(Error::TimedOut),
                Some(Event::ReplicationShortfall { acked, wanted }) => {
                    Err(Error::ReplicationShortfall { acked, wanted })
                }
                Some(Event::Failed(e)) => Err(Error::Lock(e)),
                _ => Err(Error::Closed),
            }
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
    options: LockOptions,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
}

impl<R: Runtime> LockBuilder<'_, R> {
    /// Lease length (the key's expiry).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// Renew the lease at about a third of the TTL while held (on by default).
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.options.auto_renew = on;
        self
    }

    /// Wait for replicas to hold the lock before reporting it acquired.
    pub fn confirm(mut self, confirm: Confirm) -> Self {
        self.options.confirm = confirm;
        self
    }

    /// Longest sleep between polls while waiting.
    pub fn poll_cap(mut self, cap: Duration) -> Self {
        self.options.poll_cap = cap;
        self
    }

    /// Give up at this instant.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Give up after this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Waits until acquired (or the deadline).
    pub async fn lock(self) -> Result<Guard<R>, Error> {
        let deadline = self.deadline.or_else(|| self.timeout.map(|t| R::now() + t));
        self.client.acquire(&self.key, self.options, Acquire::Wait { deadline }).await?.ok_or(Error::Closed)
    }

    /// One attempt.
    pub async fn try_lock(self) -> Result<Option<Guard<R>>, Error> {
        self.client.acquire(&self.key, self.options, Acquire::Try).await
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
        self.client.inner.state().engine.lock_info(self.id).and_then(|i| i.valid_until).unwrap_or(self.valid_until)
    }

    /// Whether the lease is still valid now: cheap, no round trip.
    pub fn is_valid(&self) -> bool {
        let st = self.client.inner.state();
        match st.engine.lock_info(self.id) {
            Some(info) => info.lost.is_none() && info.valid_until.is_some_and(|v| R::now() < v),
            None => false,
        }
    }

    /// Completes when the lease is lost (renewal refused, or validity ran out): select on it
    /// beside the work the lock protects.
    pub async fn lost(&self) -> LostReason {
        self.client.inner.lost(self.id).await
    }

    /// Renews the lease now; returns the new end of validity.
    pub async fn extend(&self) -> Result<Instant, Error> {
        let inner = &self.client.inner;
        let (res, requests) = inner.with_engine(|s, now| {
            if let Some(slot) = s.slots.get_mut(&self.id) {
                slot.lost.map_or(Ok(()), |r| Err(Error::Lost(r)))?;
            }
            s.engine.extend(self.id, now).map_err(|_: Misuse| Error::Lost(LostReason::Expired))
        });
        res?;
        inner.run(requests).await;
        match inner.next_event(self.id, |e| matches!(e, Event::Renewed { .. } | Event::Lost { .. })).await {
            Some(Event::Renewed { valid_until }) => Ok(valid_until),
            Some(Event::Lost { reason }) => Err(Error::Lost(reason)),
            _ => Err(Error::Closed),
        }
    }

    /// Releases the lock: `Ok(true)` if it was still ours, `Ok(false)` if the lease had been
    /// lost to expiry or to another owner.
    pub async fn release(mut self) -> Result<bool, Error> {
        let span = tracing::debug_span!("rdlock.release", key = %self.key, fence = self.fence);
        async {
            let inner = self.client.inner.clone();
            let (res, requests) = inner.with_engine(|s, now| s.engine.release(self.id, now));
            res.map_err(|_| Error::Closed)?;
            inner.run(requests).await;
            let event = inner.next_event(self.id, |e| matches!(e, Event::Released { .. } | Event::Failed(_))).await;
            self.done = true;
            inner.state().slots.remove(&self.id);
            match event {
                Some(Event::Released { held }) => Ok(held),
                Some(Event::Failed(e)) => Err(Error::Lock(e)),
                _ => Err(Error::Closed),
            }
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
