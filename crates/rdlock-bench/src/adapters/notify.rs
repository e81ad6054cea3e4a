//! A floor measurement, not a lock: the cheapest "sleep until told" lock on the redis crate,
//! to set S2's and S10's hand-off gap against (issue #16). Take = `SET key token NX PX ttl`; a
//! caller that fails waits for a message on the key's channel (one pub/sub connection per
//! client, each channel subscribed once), with a 200 ms fallback, then tries again; release =
//! one `EVAL` that deletes the key if it holds the caller's token and `PUBLISH`es on its
//! channel. Every woken client retries its `SET NX` (a herd): no queue, no fence, no renewal,
//! no owner check beyond the token, nothing that survives a lost message but the fallback.
//!
//! Its gap is therefore what a notified hand-off costs with no lock logic: the release's round
//! trip, the message's delivery, the waiter's wake-up (one task or thread hop: the caller that
//! waits reads the pub/sub connection itself) and one more round trip for the `SET NX` that the
//! message only invites. rdlock's hand-off carries the grant in the message (no second round
//! trip) but crosses more hops on the waiter's side ([`Notify`]'s doc says which).
//!
//! Two rules keep its gaps comparable with rdlock's: a waiter reads the messages itself when no
//! other caller of its client does (the fewest hops the redis crate allows; the others of the
//! same client sleep until a message or the reader's leaving), and a client does not take back
//! a key it has just released before it heard another release after its own (or the fallback
//! ran out): the releaser's task is running when its release returns, so otherwise it would
//! win nearly every race against the woken waiters, and S2's gaps (hand-offs to another
//! client) would be the few races a waiter won, not a hand-off's cost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};

use super::{Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

/// How long a waiter sleeps with no message before it tries again (a lost message, or a
/// release that came before its subscription).
pub const FALLBACK: Duration = Duration::from_millis(200);

/// The release: delete the key if it holds the caller's token, and say so on the key's channel
/// (the token as the message, so that the releaser can tell its own release).
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) \
     redis.call('PUBLISH', ARGV[2], ARGV[1]) return 1 else return 0 end";

/// The channel a key's releases are published on.
pub fn channel(key: &str) -> String {
    format!("{key}:released")
}

/// What one client remembers between calls: its token prefix, and the keys it released last
/// (with the token released), so that its next `lock()` of that key waits for another
/// client's release first.
#[derive(Debug)]
pub struct Memory {
    seed: u64,
    next: AtomicU64,
    released: Mutex<HashMap<String, String>>,
}

/// How one `lock()` call starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Start {
    /// The token it will set.
    pub token: String,
    /// This client released the key last with this token: wait for a release that is not this
    /// one before trying.
    pub yield_to: Option<String>,
}

impl Memory {
    pub fn new(seed: u64) -> Self {
        Self { seed, next: AtomicU64::new(0), released: Mutex::new(HashMap::new()) }
    }

    /// A new token, and whether to let another client go first.
    pub fn start(&self, key: &str) -> Start {
        let token = format!("{:016x}{:016x}", self.seed, self.next.fetch_add(1, Ordering::Relaxed));
        let yield_to = self.released.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        Start { token, yield_to }
    }

    /// `key` was released with `token` by this client.
    pub fn released(&self, key: &str, token: &str) {
        self.released.lock().unwrap_or_else(PoisonError::into_inner).insert(key.to_owned(), token.to_owned());
    }

    /// Whether a message wakes a caller that yields to others after its release of `yield_to`:
    /// every message does for a caller that does not yield; for one that does, only a message
    /// read after its own release's (`passed` says whether that one was read: the messages
    /// before it, left unread while this client held the key, are stale).
    pub fn wakes(payload: &[u8], yield_to: Option<&str>, passed: &mut bool) -> bool {
        let Some(own) = yield_to else { return true };
        if payload == own.as_bytes() {
            *passed = true;
            return false;
        }
        *passed
    }
}

/// A held key.
#[derive(Debug)]
pub struct NotifyGuard {
    key: String,
    token: String,
}

/// One async client on the redis crate (tokio or async-io, whichever it finds): a multiplexed
/// connection for commands and a pub/sub connection. The hops from the message to the waiting
/// caller: the redis crate's pub/sub task reads it and sends it on a channel, the caller that
/// reads the messages is woken by that channel (one hop). rdlock's: the same pub/sub task, then
/// rdlock's own pub/sub task (the engine), then the waiting caller (two hops).
pub struct Notify {
    links: Links,
    /// Messages read so far (bumped by the reader): a caller that saw it change tries again.
    heard: AtomicU64,
    /// Wakes one caller to take the reader's place.
    reader_left: tokio::sync::Notify,
    memory: Memory,
}

impl Notify {
    /// Until a message arrives after `heard` was read (with `yield_to`: one after that
    /// release's own, [`Memory::wakes`]), or the fallback runs out.
    async fn wait(&self, heard: u64, yield_to: Option<&str>) -> Result<(), BoxError> {
        let deadline = Instant::now() + FALLBACK;
        let mut passed = false;
        loop {
            let left = self.reader_left.notified();
            if self.heard.load(Ordering::SeqCst) != heard && yield_to.is_none() {
                return Ok(());
            }
            let Ok(mut stream) = self.links.stream.try_lock() else {
                // Another caller reads: sleep until it leaves, or the fallback.
                let woke = futures_lite::future::or(
                    async {
                        left.await;
                        true
                    },
                    async {
                        hold_until(deadline).await;
                        false
                    },
                )
                .await;
                if !woke {
                    return Ok(());
                }
                continue;
            };
            let got = futures_lite::future::or(async { Some(stream.next().await) }, async {
                hold_until(deadline).await;
                None
            })
            .await;
            drop(stream);
            // Whoever sleeps takes the reader's place (one, not all: no herd inside a client).
            self.reader_left.notify_one();
            match got {
                Some(Some(msg)) => {
                    self.heard.fetch_add(1, Ordering::SeqCst);
                    if Memory::wakes(msg.get_payload_bytes(), yield_to, &mut passed) {
                        return Ok(());
                    }
                }
                Some(None) => return Err("the pub/sub connection closed".into()),
                None => return Ok(()),
            }
        }
    }
}

/// A baseline's async connections (the redis crate's, on tokio or async-io, whichever it
/// finds): one multiplexed connection for commands, one pub/sub connection.
pub struct Links {
    pub conn: MultiplexedConnection,
    sink: PubSubSink,
    /// Held by the one caller of the client that reads the messages.
    pub stream: tokio::sync::Mutex<PubSubStream>,
    /// Channels subscribed (held while a subscription is sent: one each, once).
    subscribed: tokio::sync::Mutex<HashSet<String>>,
}

impl Links {
    pub async fn open(url: &str) -> Result<Self, BoxError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        let (sink, stream) = client.get_async_pubsub().await?.split();
        Ok(Self {
            conn,
            sink,
            stream: tokio::sync::Mutex::new(stream),
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
        })
    }

    /// Subscribes to `ch` unless done; `true` if it did now.
    pub async fn subscribe(&self, ch: &str) -> Result<bool, BoxError> {
        let mut subscribed = self.subscribed.lock().await;
        if subscribed.contains(ch) {
            return Ok(false);
        }
        self.sink.clone().subscribe(ch).await?;
        subscribed.insert(ch.to_owned());
        Ok(true)
    }
}

/// The same on the redis crate's blocking connections: one for commands, one for pub/sub with
/// its subscribed channels.
pub struct BlockingLinks {
    pub conn: Mutex<redis::Connection>,
    /// Held by the caller that reads.
    pub pubsub: Mutex<(redis::Connection, HashSet<String>)>,
}

impl BlockingLinks {
    pub fn open(url: &str) -> Result<Self, BoxError> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            conn: Mutex::new(client.get_connection()?),
            pubsub: Mutex::new((client.get_connection()?, HashSet::new())),
        })
    }

    /// Runs `cmd` on the command connection.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BoxError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(cmd.query(&mut *conn)?)
    }
}

/// Subscribes `ps`'s connection to `ch` unless done; `true` if it did now.
pub fn subscribe_on(ps: &mut (redis::Connection, HashSet<String>), ch: &str) -> Result<bool, BoxError> {
    if ps.1.contains(ch) {
        return Ok(false);
    }
    ps.0.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Through the crate's pub/sub view, forgotten rather than dropped (dropping it unsubscribes
    // every channel; it caches nothing here).
    let mut view = ps.0.as_pubsub();
    let done = view.subscribe(ch);
    std::mem::forget(view);
    done?;
    ps.1.insert(ch.to_owned());
    Ok(true)
}

/// The next message's payload on `conn`, or `None` after `wait`.
pub fn next_message(conn: &mut redis::Connection, wait: Duration) -> Result<Option<Vec<u8>>, BoxError> {
    if wait.is_zero() {
        return Ok(None);
    }
    conn.set_read_timeout(Some(wait))?;
    let mut view = conn.as_pubsub();
    let msg = view.get_message();
    std::mem::forget(view);
    match msg {
        Ok(m) => Ok(Some(m.get_payload_bytes().to_vec())),
        Err(e) if e.is_timeout() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Only plain locks: the baselines keep no counted resources.
pub fn plain(resource: Resource) -> Result<(), BoxError> {
    match resource {
        Resource::Lock => Ok(()),
        _ => Err("the baseline takes plain locks only".into()),
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify").field("heard", &self.heard).finish_non_exhaustive()
    }
}

impl Locker for Notify {
    type Guard = NotifyGuard;
    const REQUESTS: &'static [&'static str] = &["set", "eval", "subscribe"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        Ok(Self {
            links: Links::open(url).await?,
            heard: AtomicU64::new(0),
            reader_left: tokio::sync::Notify::new(),
            memory: Memory::new(getrandom::u64()?),
        })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<NotifyGuard, BoxError> {
        let Start { token, mut yield_to } = self.memory.start(key);
        let ttl = u64::try_from(spec.ttl.as_millis())?;
        let mut conn = self.links.conn.clone();
        if yield_to.is_some() {
            // Subscribed now if it never waited (its own release then goes unheard).
            self.links.subscribe(&channel(key)).await?;
            self.wait(self.heard.load(Ordering::SeqCst), yield_to.as_deref()).await?;
            yield_to = None;
        }
        loop {
            let heard = self.heard.load(Ordering::SeqCst);
            let set: Option<String> =
                redis::cmd("SET").arg(key).arg(&token).arg("NX").arg("PX").arg(ttl).query_async(&mut conn).await?;
            if set.is_some() {
                return Ok(NotifyGuard { key: key.to_owned(), token });
            }
            // A release before the subscription went unheard: try again once subscribed.
            if !self.links.subscribe(&channel(key)).await? {
                self.wait(heard, yield_to.as_deref()).await?;
            }
        }
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<NotifyGuard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: NotifyGuard) -> Result<bool, BoxError> {
        self.memory.released(&guard.key, &guard.token);
        let n: i64 = release_cmd(&guard).query_async(&mut self.links.conn.clone()).await?;
        Ok(n == 1)
    }

    fn is_valid(&self, _guard: &NotifyGuard) -> bool {
        true
    }
}

/// The release: compare-and-delete and the message, in one `EVAL`.
fn release_cmd(guard: &NotifyGuard) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RELEASE).arg(1).arg(&guard.key).arg(&guard.token).arg(channel(&guard.key));
    cmd
}

/// The same on plain threads (the redis crate's blocking connections): the caller that reads
/// the messages blocks in the pub/sub socket's read itself (one thread wake-up from the
/// message); the others of its client sleep on a condition variable. rdlock-blocking's: its
/// pub/sub thread reads, then wakes the waiting thread's condition variable (two).
pub struct NotifyBlocking {
    links: BlockingLinks,
    /// Messages read so far, and whether a caller reads.
    heard: Mutex<(u64, bool)>,
    changed: Condvar,
    memory: Memory,
}

impl NotifyBlocking {
    fn heard(&self) -> std::sync::MutexGuard<'_, (u64, bool)> {
        self.heard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// As [`Notify::wait`].
    fn wait(&self, heard: u64, yield_to: Option<&str>) -> Result<(), BoxError> {
        let deadline = Instant::now() + FALLBACK;
        let mut passed = false;
        loop {
            let mut h = self.heard();
            if h.0 != heard && yield_to.is_none() {
                return Ok(());
            }
            if h.1 {
                // Another caller reads: sleep until a message or its leaving, or the fallback.
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                drop(self.changed.wait_timeout(h, left).unwrap_or_else(PoisonError::into_inner));
                continue;
            }
            h.1 = true;
            drop(h);
            let got = self.read(deadline);
            let mut h = self.heard();
            h.1 = false;
            let wakes = match &got {
                Ok(Some(payload)) => {
                    h.0 += 1;
                    Memory::wakes(payload, yield_to, &mut passed)
                }
                _ => true,
            };
            drop(h);
            // One sleeper takes the reader's place (not all: no herd inside a client).
            self.changed.notify_one();
            match got {
                Err(e) => return Err(e),
                Ok(None) => return Ok(()),
                Ok(Some(_)) if wakes => return Ok(()),
                Ok(Some(_)) => {}
            }
        }
    }

    /// The next message's payload, or `None` at `deadline`.
    fn read(&self, deadline: Instant) -> Result<Option<Vec<u8>>, BoxError> {
        let mut ps = self.links.pubsub.lock().unwrap_or_else(PoisonError::into_inner);
        next_message(&mut ps.0, deadline.saturating_duration_since(Instant::now()))
    }
}

impl std::fmt::Debug for NotifyBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyBlocking").field("heard", &self.heard).finish_non_exhaustive()
    }
}

impl Locker for NotifyBlocking {
    type Guard = NotifyGuard;
    const REQUESTS: &'static [&'static str] = Notify::REQUESTS;
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        Ok(Self {
            links: BlockingLinks::open(url)?,
            heard: Mutex::new((0, false)),
            changed: Condvar::new(),
            memory: Memory::new(getrandom::u64()?),
        })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<NotifyGuard, BoxError> {
        let Start { token, mut yield_to } = self.memory.start(key);
        let ttl = u64::try_from(spec.ttl.as_millis())?;
        let subscribe =
            || subscribe_on(&mut self.links.pubsub.lock().unwrap_or_else(PoisonError::into_inner), &channel(key));
        if yield_to.is_some() {
            subscribe()?;
            // Read apart: the guard of a temporary in the call would live through `wait`.
            let heard = self.heard().0;
            self.wait(heard, yield_to.as_deref())?;
            yield_to = None;
        }
        loop {
            let heard = self.heard().0;
            let set: Option<String> =
                self.links.query(redis::cmd("SET").arg(key).arg(&token).arg("NX").arg("PX").arg(ttl))?;
            if set.is_some() {
                return Ok(NotifyGuard { key: key.to_owned(), token });
            }
            if !subscribe()? {
                self.wait(heard, yield_to.as_deref())?;
            }
        }
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<NotifyGuard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: NotifyGuard) -> Result<bool, BoxError> {
        self.memory.released(&guard.key, &guard.token);
        let n: i64 = self.links.query(&release_cmd(&guard))?;
        Ok(n == 1)
    }

    fn is_valid(&self, _guard: &NotifyGuard) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_yields_a_key_it_released_last_once() {
        let m = Memory::new(7);
        let first = m.start("k");
        assert_eq!(first.yield_to, None);
        assert!(first.token.starts_with("0000000000000007"));
        m.released("k", &first.token);
        // Another key is not affected; the released one yields once, to its own release.
        assert_eq!(m.start("other").yield_to, None);
        let second = m.start("k");
        assert_eq!(second.yield_to.as_deref(), Some(first.token.as_str()));
        assert_ne!(second.token, first.token);
        assert_eq!(m.start("k").yield_to, None);
    }

    #[test]
    fn a_yielding_caller_wakes_only_for_a_release_after_its_own() {
        let mut passed = false;
        assert!(Memory::wakes(b"abc", None, &mut passed));
        // Stale: released by another client before this one's release.
        assert!(!Memory::wakes(b"old", Some("abc"), &mut passed));
        assert!(!Memory::wakes(b"abc", Some("abc"), &mut passed));
        assert!(passed);
        assert!(Memory::wakes(b"abd", Some("abc"), &mut passed));
    }
}
