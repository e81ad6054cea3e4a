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
//! S2 only: a client's callers take turns (one waits at a time), as in S2's loop, so that the
//! waiter can read the connection without a reader task; a second waiter of one client is an
//! error rather than a slower path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_lite::StreamExt;

use super::notify::{BlockingLinks, FALLBACK, Links, next_message, plain, subscribe_on};
use super::{Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

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

/// A held key.
#[derive(Debug)]
pub struct GrantGuard {
    key: String,
    token: String,
    ttl: u64,
}

/// What a client's calls share: its tokens and its inbox channel.
#[derive(Debug)]
struct Ids {
    seed: u64,
    next: AtomicU64,
}

impl Ids {
    fn new() -> Result<Self, BoxError> {
        Ok(Self { seed: getrandom::u64()?, next: AtomicU64::new(0) })
    }

    fn token(&self) -> String {
        format!("{:016x}{:016x}", self.seed, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The client's inbox for `key`: its hand-offs only.
    fn inbox(&self, key: &str) -> String {
        format!("{key}:granted:{:016x}", self.seed)
    }
}

fn queue(key: &str) -> String {
    format!("{key}:q")
}

fn acquire_cmd(key: &str, token: &str, ttl: u64, inbox: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(ACQUIRE).arg(2).arg(key).arg(queue(key)).arg(token).arg(ttl).arg(inbox);
    cmd
}

fn release_cmd(guard: &GrantGuard) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RELEASE).arg(2).arg(&guard.key).arg(queue(&guard.key)).arg(&guard.token).arg(guard.ttl);
    cmd
}

fn ttl_ms(spec: Spec) -> Result<u64, BoxError> {
    Ok(u64::try_from(spec.ttl.as_millis())?)
}

const ONE_WAITER: &str = "the grant baseline lets one caller of a client wait at a time (S2 only)";

/// One async client on the redis crate (tokio or async-io, whichever it finds): a multiplexed
/// connection for commands and a pub/sub connection, which the waiting caller reads itself
/// (one hop from the redis crate's pub/sub task; rdlock's: two, through its pub/sub task).
pub struct Grant {
    links: Links,
    ids: Ids,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl Locker for Grant {
    type Guard = GrantGuard;
    // Its release reads the key by `GET` inside the script: the fallback's own `GET` is rare.
    const REQUESTS: &'static [&'static str] = &["eval", "subscribe"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        Ok(Self { links: Links::open(url).await?, ids: Ids::new()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<GrantGuard, BoxError> {
        let (token, ttl, inbox) = (self.ids.token(), ttl_ms(spec)?, self.ids.inbox(key));
        // Subscribed before it can be queued: a hand-off is never published unheard.
        self.links.subscribe(&inbox).await?;
        let mut stream = self.links.stream.try_lock().map_err(|_| ONE_WAITER)?;
        let mut conn = self.links.conn.clone();
        let held: i64 = acquire_cmd(key, &token, ttl, &inbox).query_async(&mut conn).await?;
        let guard = GrantGuard { key: key.to_owned(), token, ttl };
        if held == 1 {
            return Ok(guard);
        }
        loop {
            let deadline = Instant::now() + FALLBACK;
            let got = futures_lite::future::or(async { Some(stream.next().await) }, async {
                hold_until(deadline).await;
                None
            })
            .await;
            match got {
                // A grant of an earlier wait that the fallback settled is stale.
                Some(Some(msg)) if msg.get_payload_bytes() == guard.token.as_bytes() => return Ok(guard),
                Some(Some(_)) => {}
                Some(None) => return Err("the pub/sub connection closed".into()),
                None => {
                    let owner: Option<String> = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
                    if owner.as_deref() == Some(guard.token.as_str()) {
                        return Ok(guard);
                    }
                }
            }
        }
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<GrantGuard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: GrantGuard) -> Result<bool, BoxError> {
        let n: i64 = release_cmd(&guard).query_async(&mut self.links.conn.clone()).await?;
        Ok(n > 0)
    }

    fn is_valid(&self, _guard: &GrantGuard) -> bool {
        true
    }
}

/// The same on plain threads (the redis crate's blocking connections): the waiting thread
/// blocks in its pub/sub socket's read itself (rdlock-blocking's is woken by its client's
/// pub/sub thread).
pub struct GrantBlocking {
    links: BlockingLinks,
    ids: Ids,
}

impl std::fmt::Debug for GrantBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantBlocking").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl Locker for GrantBlocking {
    type Guard = GrantGuard;
    const REQUESTS: &'static [&'static str] = Grant::REQUESTS;
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        Ok(Self { links: BlockingLinks::open(url)?, ids: Ids::new()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<GrantGuard, BoxError> {
        let (token, ttl, inbox) = (self.ids.token(), ttl_ms(spec)?, self.ids.inbox(key));
        let mut ps = self.links.pubsub.try_lock().map_err(|_| ONE_WAITER)?;
        subscribe_on(&mut ps, &inbox)?;
        let held: i64 = self.links.query(&acquire_cmd(key, &token, ttl, &inbox))?;
        let guard = GrantGuard { key: key.to_owned(), token, ttl };
        if held == 1 {
            return Ok(guard);
        }
        loop {
            match next_message(&mut ps.0, FALLBACK)? {
                Some(payload) if payload == guard.token.as_bytes() => return Ok(guard),
                Some(_) => {}
                None => {
                    let owner: Option<String> = self.links.query(redis::cmd("GET").arg(key))?;
                    if owner.as_deref() == Some(guard.token.as_str()) {
                        return Ok(guard);
                    }
                }
            }
        }
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<GrantGuard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: GrantGuard) -> Result<bool, BoxError> {
        let n: i64 = self.links.query(&release_cmd(&guard))?;
        Ok(n > 0)
    }

    fn is_valid(&self, _guard: &GrantGuard) -> bool {
        true
    }
}
