//! The baseline: `SET key token NX PX ttl` to take, an `EVAL` compare-and-delete to release,
//! and contended callers retry at once (a spin lock), on the redis crate's multiplexed
//! connection. Not a lock library: the floor the others are measured against.
//!
//! Its semaphore and read-write lock (S6, S7) are what a user without a lock library writes:
//! a counter bumped by a tiny script when there is room, retried every millisecond, and
//! released by `DECR` / `DEL`. Unfair (whoever polls first wins) and unsafe (no owner, no
//! fence, no expiry: a crashed holder's permit is gone for good) on purpose.
//!
//! Its counter (S8, S9) is a user's by hand: the lock above, `GET` the value key, `SET` it
//! plus one, release: four round trips uncontended, and nothing stops a holder whose lease
//! lapsed from writing.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::route::Route;
use super::{Increment, Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

/// The release: `DEL` if the key still holds the caller's token.
pub(crate) const COMPARE_AND_DELETE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// A permit: `KEYS[1]` counts the holders, `ARGV[1]` is the capacity.
static PERMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if tonumber(redis.call('GET', KEYS[1]) or 0) < tonumber(ARGV[1]) then \
         redis.call('INCR', KEYS[1]) return 1 end return 0",
    )
});
/// A read share: `KEYS[1]` the writer flag, `KEYS[2]` the readers' count.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new("if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('INCR', KEYS[2]) return 1 end return 0")
});
/// The write share: no writer and no reader.
static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 0 and tonumber(redis.call('GET', KEYS[2]) or 0) == 0 then \
         redis.call('SET', KEYS[1], 1) return 1 end return 0",
    )
});

/// Pause between a counted resource's attempts (peers.md's polling libraries wait a few ms).
const RETRY: Duration = Duration::from_millis(1);

/// One client: one multiplexed connection (one per primary on a cluster).
#[derive(Debug)]
pub struct Raw {
    route: Route,
    seed: u64,
    next: AtomicU64,
    /// `GET`s of the counter sent (the release script runs `GET` too).
    gets: AtomicU64,
}

/// A lock, permit or share taken by [`Raw`].
#[derive(Debug)]
pub struct RawGuard {
    key: String,
    undo: Undo,
}

/// How a [`RawGuard`] is released.
#[derive(Debug)]
enum Undo {
    /// A lock: delete the key if it still holds this token.
    CompareAndDelete(String),
    /// A permit or a read share: one holder fewer.
    Decr,
    /// The write share: drop the writer flag.
    Del,
}

impl Raw {
    /// Runs `script` on `keys` until it answers 1, pausing [`RETRY`] between attempts.
    async fn spin(&self, script: &redis::Script, keys: &[&str], arg: Option<u32>) -> Result<(), BoxError> {
        let mut conn = self.route.conn(keys.first().copied().unwrap_or_default())?;
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(*k);
        }
        if let Some(a) = arg {
            call.arg(a);
        }
        loop {
            let got: i64 = call.invoke_async(&mut conn).await?;
            if got == 1 {
                return Ok(());
            }
            hold_until(Instant::now() + RETRY).await;
        }
    }
}

impl Locker for Raw {
    type Guard = RawGuard;
    const REQUESTS: &'static [&'static str] = &["set", "eval"];
    // The counted resources' scripts go by hash (`redis::Script`, as users call them); their
    // `SET` runs inside a script, and the releases are plain `DECR` / `DEL`.
    const COUNTED_REQUESTS: &'static [&'static str] = &["evalsha", "eval", "decr", "del"];
    // `SET NX`, the counter's `SET` and the release's `EVAL`; the `GET`s are counted here.
    const COUNTER_REQUESTS: &'static [&'static str] = &["set", "eval"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let route = Route::connect(url).await?;
        // A per-client prefix from the OS, so that two clients never share a token.
        Ok(Self { route, seed: getrandom::u64()?, next: AtomicU64::new(0), gets: AtomicU64::new(0) })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<RawGuard, BoxError> {
        let token = format!("{:016x}{:016x}", self.seed, self.next.fetch_add(1, Ordering::Relaxed));
        let ttl = spec.ttl.as_millis() as u64;
        let mut conn = self.route.conn(key)?;
        loop {
            let set: Option<String> =
                redis::cmd("SET").arg(key).arg(&token).arg("NX").arg("PX").arg(ttl).query_async(&mut conn).await?;
            if set.is_some() {
                return Ok(RawGuard { key: key.to_owned(), undo: Undo::CompareAndDelete(token) });
            }
        }
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<RawGuard, BoxError> {
        let (writer, readers) = (format!("{key}:writer"), format!("{key}:readers"));
        match resource {
            Resource::Lock => self.lock(key, spec).await,
            Resource::Permit { capacity } => {
                self.spin(&PERMIT, &[key], Some(capacity)).await?;
                Ok(RawGuard { key: key.to_owned(), undo: Undo::Decr })
            }
            Resource::Permits { .. } => Err("the scenarios take one permit at a time".into()),
            Resource::Mutex { .. } => Err("the raw baseline keeps no value".into()),
            Resource::Read => {
                self.spin(&READ, &[&writer, &readers], None).await?;
                Ok(RawGuard { key: readers, undo: Undo::Decr })
            }
            Resource::Write => {
                self.spin(&WRITE, &[&writer, &readers], None).await?;
                Ok(RawGuard { key: writer, undo: Undo::Del })
            }
        }
    }

    async fn release(&self, guard: RawGuard) -> Result<bool, BoxError> {
        let mut conn = self.route.conn(&guard.key)?;
        Ok(match guard.undo {
            Undo::CompareAndDelete(token) => {
                let n: i64 = redis::cmd("EVAL")
                    .arg(COMPARE_AND_DELETE)
                    .arg(1)
                    .arg(&guard.key)
                    .arg(&token)
                    .query_async(&mut conn)
                    .await?;
                n == 1
            }
            // Nothing to check: a raw counter has no owners.
            Undo::Decr => redis::cmd("DECR").arg(&guard.key).query_async::<i64>(&mut conn).await? >= 0,
            Undo::Del => redis::cmd("DEL").arg(&guard.key).query_async::<i64>(&mut conn).await? == 1,
        })
    }

    fn is_valid(&self, _guard: &RawGuard) -> bool {
        true
    }

    async fn increment(&self, key: &str, spec: Spec, hold: Option<Duration>) -> Result<Increment, BoxError> {
        let guard = self.lock(key, spec).await?;
        let value_key = format!("{key}:value");
        let mut conn = self.route.conn(&value_key)?;
        let value: Option<u64> = redis::cmd("GET").arg(&value_key).query_async(&mut conn).await?;
        self.gets.fetch_add(1, Ordering::Relaxed);
        // The work runs once the value is in hand, and the write follows it, as the mutex's.
        let acquired = Instant::now();
        if let Some(h) = hold {
            hold_until(acquired + h).await;
        }
        let release_called = Instant::now();
        redis::cmd("SET").arg(&value_key).arg(value.unwrap_or(0) + 1).exec_async(&mut conn).await?;
        let held = self.release(guard).await?;
        Ok(Increment { acquired, release_called, held })
    }

    async fn counter(&self, key: &str) -> Result<u64, BoxError> {
        let value_key = format!("{key}:value");
        let value: Option<u64> =
            redis::cmd("GET").arg(&value_key).query_async(&mut self.route.conn(&value_key)?).await?;
        Ok(value.unwrap_or(0))
    }

    fn own_requests(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
}
