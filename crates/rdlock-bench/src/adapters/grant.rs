//! A floor measurement, not a lock: the cheapest first-come-first-served hand-off whose
//! message carries the grant, on the redis crate, to set S2's gap against (issue #16). It is
//! rdlock's hand-off with nothing else: no fence, no argument checks, no renewal, no claim or
//! anchor, no engine, no pub/sub worker.
//!
//! Take = one `EVAL`: `SET key token NX PX ttl`, else `RPUSH` the caller's token and inbox
//! channel on the key's queue. Release = one `EVAL`: if the key holds the caller's token, `LPOP`
//! the queue's head; for a head, `SET` the key to its token and `PUBLISH` the token on its inbox
//! (the hand-off); for none, `DEL`. A waiter reads its client's pub/sub connection itself
//! (the fewest hops the redis crate allows) until the message names its token; a 200 ms
//! fallback reads the key, for a message lost.
//!
//! The same client sending rdlock's own acquire and release scripts instead (`grant-scripts`,
//! and `-async-std`, `-blocking`: [`Checked`]): `EVALSHA` with the arguments rdlock-core's
//! builders make, the hand-off announced as `token:fence` on the waiter's inbox, a fallback
//! that sends the wait's next attempt. Its gap against the bare floor's is what rdlock's
//! scripts cost a hand-off (the fence, the checks, the queue entries); rdlock's gap against
//! it, what rdlock's client adds (the engine, its pub/sub worker, the release's `PING`).
//!
//! Either client's waiter reads its inbox as a [`Reading`] says: itself ([`Direct`]), or
//! through a reader per client (`relay.rs`, the `grant-relay*` rows).
//!
//! S2 only: a client's callers take turns (one waits at a time), as in S2's loop, so that the
//! waiter can read the connection without a reader task; a second waiter of one client is an
//! error rather than a slower path.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_lite::StreamExt;
use rdlock_driver::convert;

use super::notify::{BlockingLinks, FALLBACK, Links, next_message, plain, subscribe_on};
use super::scripts::{self, ScriptsGuard};
use super::{Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

/// What a granting floor sends: the two scripts of a take and a release, the message that
/// hands a waiter the lock, and the fallback's check for a message lost.
pub trait Protocol: Send + Sync + 'static {
    /// A client's names: its tokens and inboxes.
    type Ids: Send + Sync + std::fmt::Debug;
    /// A held lock.
    type Guard: Send + std::fmt::Debug;
    /// The commands counted per acquisition.
    const REQUESTS: &'static [&'static str];
    /// A new client's names.
    fn ids() -> Result<Self::Ids, BoxError>;
    /// Scripts to cache on the server at connect.
    fn load() -> Option<redis::Pipeline>;
    /// The take's call, the inbox its hand-off comes on, and the guard it grants.
    fn take(ids: &Self::Ids, key: &str, spec: Spec) -> Result<(redis::Cmd, String, Self::Guard), BoxError>;
    /// Whether the take's reply `value` granted the lock.
    fn taken(value: redis::Value) -> Result<bool, BoxError>;
    /// Whether a message on the inbox hands `guard` the lock.
    fn handed(guard: &Self::Guard, payload: &[u8]) -> bool;
    /// The fallback's call, for a message lost.
    fn check(guard: &Self::Guard) -> Result<redis::Cmd, BoxError>;
    /// Whether the fallback's reply `value` says the lock is `guard`'s.
    fn checked(guard: &Self::Guard, value: redis::Value) -> Result<bool, BoxError>;
    /// The release's call.
    fn release(guard: &Self::Guard) -> Result<redis::Cmd, BoxError>;
    /// Whether the release's reply `value` says the lock was held.
    fn released(value: redis::Value) -> Result<bool, BoxError>;
}

/// The floor's own two scripts (above).
#[derive(Debug)]
pub struct Bare;

/// rdlock's scripts, as the engine sends them to a server whose `SET` has no `IFEQ` (Redis 7.0,
/// this benchmark's server: the release is never folded into `SET ... IFEQ`).
#[derive(Debug)]
pub struct Checked;

/// Take, or queue behind the holder (`1`: held; `0`: queued).
const ACQUIRE: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
     redis.call('RPUSH', KEYS[2], ARGV[1] .. '|' .. ARGV[3]) return 0";

/// Release, handing the key to the queue's head (`2`), or freeing it (`1`); `0`: not held.
/// The head gets the releaser's TTL (S2's clients all ask the same); a hand-off message lost
/// with the key expired before the waiter's fallback would leave it waiting (never in S2).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
     local head = redis.call('LPOP', KEYS[2]) \
     if head then local token, inbox = string.match(head, '^([^|]*)|(.*)$') \
       redis.call('SET', KEYS[1], token, 'PX', ARGV[2]) redis.call('PUBLISH', inbox, token) return 2 end \
     redis.call('DEL', KEYS[1]) return 1";

/// A key held through the bare floor.
#[derive(Debug)]
pub struct GrantGuard {
    key: String,
    token: String,
    ttl: u64,
}

/// What a client's calls share: its tokens and its inbox channel.
#[derive(Debug)]
pub struct Ids {
    seed: u64,
    next: AtomicU64,
}

fn queue(key: &str) -> String {
    format!("{key}:q")
}

impl Protocol for Bare {
    type Ids = Ids;
    type Guard = GrantGuard;
    // Its release reads the key by `GET` inside the script: the fallback's own `GET` is rare.
    const REQUESTS: &'static [&'static str] = &["eval", "subscribe"];

    fn ids() -> Result<Ids, BoxError> {
        Ok(Ids { seed: getrandom::u64()?, next: AtomicU64::new(0) })
    }

    fn load() -> Option<redis::Pipeline> {
        None
    }

    fn take(ids: &Ids, key: &str, spec: Spec) -> Result<(redis::Cmd, String, GrantGuard), BoxError> {
        let token = format!("{:016x}{:016x}", ids.seed, ids.next.fetch_add(1, Ordering::Relaxed));
        // The client's inbox for `key`: its hand-offs only.
        let inbox = format!("{key}:granted:{:016x}", ids.seed);
        let ttl = u64::try_from(spec.ttl.as_millis())?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ACQUIRE).arg(2).arg(key).arg(queue(key)).arg(&token).arg(ttl).arg(&inbox);
        Ok((cmd, inbox, GrantGuard { key: key.to_owned(), token, ttl }))
    }

    fn taken(value: redis::Value) -> Result<bool, BoxError> {
        Ok(redis::from_redis_value::<i64>(value)? == 1)
    }

    fn handed(guard: &GrantGuard, payload: &[u8]) -> bool {
        payload == guard.token.as_bytes()
    }

    fn check(guard: &GrantGuard) -> Result<redis::Cmd, BoxError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(&guard.key);
        Ok(cmd)
    }

    fn checked(guard: &GrantGuard, value: redis::Value) -> Result<bool, BoxError> {
        let owner: Option<String> = redis::from_redis_value(value)?;
        Ok(owner.as_deref() == Some(guard.token.as_str()))
    }

    fn release(guard: &GrantGuard) -> Result<redis::Cmd, BoxError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE).arg(2).arg(&guard.key).arg(queue(&guard.key)).arg(&guard.token).arg(guard.ttl);
        Ok(cmd)
    }

    fn released(value: redis::Value) -> Result<bool, BoxError> {
        Ok(redis::from_redis_value::<i64>(value)? > 0)
    }
}

impl Protocol for Checked {
    type Ids = scripts::Ids;
    type Guard = ScriptsGuard;
    const REQUESTS: &'static [&'static str] = &["evalsha", "eval", "subscribe"];

    fn ids() -> Result<scripts::Ids, BoxError> {
        scripts::Ids::new()
    }

    fn load() -> Option<redis::Pipeline> {
        Some(convert::load_scripts())
    }

    fn take(ids: &scripts::Ids, key: &str, spec: Spec) -> Result<(redis::Cmd, String, ScriptsGuard), BoxError> {
        let (cmd, guard) = ids.acquire(key, spec)?;
        Ok((cmd, guard.inbox(), guard))
    }

    fn taken(value: redis::Value) -> Result<bool, BoxError> {
        scripts::holds(value)
    }

    fn handed(guard: &ScriptsGuard, payload: &[u8]) -> bool {
        guard.is_handed(payload)
    }

    fn check(guard: &ScriptsGuard) -> Result<redis::Cmd, BoxError> {
        scripts::retry(guard)
    }

    fn checked(_guard: &ScriptsGuard, value: redis::Value) -> Result<bool, BoxError> {
        scripts::holds(value)
    }

    fn release(guard: &ScriptsGuard) -> Result<redis::Cmd, BoxError> {
        scripts::release(guard)
    }

    fn released(value: redis::Value) -> Result<bool, BoxError> {
        scripts::released(value)
    }
}

pub(super) const ONE_WAITER: &str = "the grant baseline lets one caller of a client wait at a time (S2 only)";

/// A message as a waiter reads it: from the pub/sub connection, or relayed.
pub(super) trait Payload {
    fn payload(&self) -> &[u8];
}

impl Payload for redis::Msg {
    fn payload(&self) -> &[u8] {
        self.get_payload_bytes()
    }
}

impl Payload for Vec<u8> {
    fn payload(&self) -> &[u8] {
        self
    }
}

/// Sends the take on `links`; when queued, waits for the message that hands `guard` the lock
/// among the inbox's `messages` (their end: the link closed), with the fallback's check after
/// [`FALLBACK`] with none.
pub(super) async fn take_or_wait<P: Protocol, M: Payload>(
    links: &Links,
    take: redis::Cmd,
    guard: P::Guard,
    mut messages: impl futures_lite::Stream<Item = M> + Unpin,
) -> Result<P::Guard, BoxError> {
    let mut conn = links.conn.clone();
    if P::taken(conn.send_packed_command(&take).await?)? {
        return Ok(guard);
    }
    loop {
        let deadline = Instant::now() + FALLBACK;
        let got = futures_lite::future::or(async { Some(messages.next().await) }, async {
            hold_until(deadline).await;
            None
        })
        .await;
        match got {
            // A grant of an earlier wait that the fallback settled is stale.
            Some(Some(msg)) if P::handed(&guard, msg.payload()) => return Ok(guard),
            Some(Some(_)) => {}
            Some(None) => return Err("the pub/sub link closed".into()),
            None => {
                let answer = conn.send_packed_command(&P::check(&guard)?).await?;
                if P::checked(&guard, answer)? {
                    return Ok(guard);
                }
            }
        }
    }
}

/// The same on threads: `next` reads the inbox's next payload for at most its argument
/// (`None`: none came).
pub(super) fn take_or_wait_blocking<P: Protocol>(
    links: &BlockingLinks,
    take: &redis::Cmd,
    guard: P::Guard,
    mut next: impl FnMut(std::time::Duration) -> Result<Option<Vec<u8>>, BoxError>,
) -> Result<P::Guard, BoxError> {
    if P::taken(links.query::<redis::Value>(take)?)? {
        return Ok(guard);
    }
    loop {
        match next(FALLBACK)? {
            Some(payload) if P::handed(&guard, &payload) => return Ok(guard),
            Some(_) => {}
            None => {
                let answer = links.query::<redis::Value>(&P::check(&guard)?)?;
                if P::checked(&guard, answer)? {
                    return Ok(guard);
                }
            }
        }
    }
}

/// How a client's waiting caller reads its inbox on the async executors: the pub/sub
/// connection's stream itself ([`Direct`]), or through a reader (`relay.rs`).
pub trait Reading: Send + Sync + 'static {
    /// Made at connect, beside the client's links.
    fn start(links: &Arc<Links>) -> Self;
    /// Sends the take and, when queued, waits for `guard`'s hand-off (its inbox subscribed).
    fn take_or_wait<P: Protocol>(
        &self,
        links: &Links,
        take: redis::Cmd,
        guard: P::Guard,
    ) -> impl Future<Output = Result<P::Guard, BoxError>> + Send;
}

/// The same on plain threads.
pub trait BlockingReading: Send + Sync + 'static {
    /// Made at connect, for the server at `url`.
    fn start(url: &str) -> Self;
    /// Sends the take and, when queued, waits for `guard`'s hand-off on `inbox`.
    fn take_or_wait<P: Protocol>(
        &self,
        links: &BlockingLinks,
        take: &redis::Cmd,
        inbox: &str,
        guard: P::Guard,
    ) -> Result<P::Guard, BoxError>;
}

/// The waiting caller reads its client's pub/sub connection itself: one hop from the redis
/// crate's pub/sub task, or none on threads (it blocks in the socket's read).
#[derive(Debug)]
pub struct Direct;

impl Reading for Direct {
    fn start(_links: &Arc<Links>) -> Self {
        Self
    }

    async fn take_or_wait<P: Protocol>(
        &self,
        links: &Links,
        take: redis::Cmd,
        guard: P::Guard,
    ) -> Result<P::Guard, BoxError> {
        let mut stream = links.stream.try_lock().map_err(|_| ONE_WAITER)?;
        take_or_wait::<P, _>(links, take, guard, &mut *stream).await
    }
}

impl BlockingReading for Direct {
    fn start(_url: &str) -> Self {
        Self
    }

    fn take_or_wait<P: Protocol>(
        &self,
        links: &BlockingLinks,
        take: &redis::Cmd,
        inbox: &str,
        guard: P::Guard,
    ) -> Result<P::Guard, BoxError> {
        let mut ps = links.pubsub.try_lock().map_err(|_| ONE_WAITER)?;
        subscribe_on(&mut ps, inbox)?;
        take_or_wait_blocking::<P>(links, take, guard, |wait| next_message(&mut ps.0, wait))
    }
}

/// One async client on the redis crate (tokio or async-io, whichever it finds): a multiplexed
/// connection for commands and a pub/sub connection, which the waiting caller reads as `R`
/// says (rdlock's: two hops from the redis crate's pub/sub task, through its pub/sub task).
pub struct Grant<P: Protocol = Bare, R: Reading = Direct> {
    links: Arc<Links>,
    reading: R,
    ids: P::Ids,
}

impl<P: Protocol, R: Reading> std::fmt::Debug for Grant<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl<P: Protocol, R: Reading> Locker for Grant<P, R> {
    type Guard = P::Guard;
    const REQUESTS: &'static [&'static str] = P::REQUESTS;
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let links = Arc::new(Links::open(url).await?);
        if let Some(load) = P::load() {
            load.query_async::<()>(&mut links.conn.clone()).await?;
        }
        let reading = R::start(&links);
        Ok(Self { links, reading, ids: P::ids()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<P::Guard, BoxError> {
        let (take, inbox, guard) = P::take(&self.ids, key, spec)?;
        // Subscribed before it can be queued: a hand-off is never published unheard.
        self.links.subscribe(&inbox).await?;
        self.reading.take_or_wait::<P>(&self.links, take, guard).await
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<P::Guard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: P::Guard) -> Result<bool, BoxError> {
        P::released(self.links.conn.clone().send_packed_command(&P::release(&guard)?).await?)
    }

    fn is_valid(&self, _guard: &P::Guard) -> bool {
        true
    }
}

/// The same on plain threads (the redis crate's blocking connections), the inbox read as `R`
/// says (rdlock-blocking's waiter is woken by its client's pub/sub thread).
pub struct GrantBlocking<P: Protocol = Bare, R: BlockingReading = Direct> {
    links: BlockingLinks,
    reading: R,
    ids: P::Ids,
}

impl<P: Protocol, R: BlockingReading> std::fmt::Debug for GrantBlocking<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantBlocking").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl<P: Protocol, R: BlockingReading> Locker for GrantBlocking<P, R> {
    type Guard = P::Guard;
    const REQUESTS: &'static [&'static str] = P::REQUESTS;
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let links = BlockingLinks::open(url)?;
        if let Some(load) = P::load() {
            load.query::<()>(&mut *links.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner))?;
        }
        Ok(Self { links, reading: R::start(url), ids: P::ids()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<P::Guard, BoxError> {
        let (take, inbox, guard) = P::take(&self.ids, key, spec)?;
        self.reading.take_or_wait::<P>(&self.links, &take, &inbox, guard)
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<P::Guard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: P::Guard) -> Result<bool, BoxError> {
        P::released(self.links.query::<redis::Value>(&P::release(&guard)?)?)
    }

    fn is_valid(&self, _guard: &P::Guard) -> bool {
        true
    }
}
