//! The baseline: `SET key token NX PX ttl` to take, an `EVAL` compare-and-delete to release,
//! and contended callers retry at once (a spin lock), on the redis crate's multiplexed
//! connection. Not a lock library: the floor the others are measured against.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::MultiplexedConnection;

use super::{Locker, Spec};
use crate::BoxError;

const COMPARE_AND_DELETE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// One client: one multiplexed connection.
#[derive(Debug)]
pub struct Raw {
    conn: MultiplexedConnection,
    seed: u64,
    next: AtomicU64,
}

/// A lock taken by [`Raw`].
#[derive(Debug)]
pub struct RawGuard {
    key: String,
    token: String,
}

impl Locker for Raw {
    type Guard = RawGuard;
    const REQUESTS: &'static [&'static str] = &["set", "eval"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        // A per-client prefix from the OS, so that two clients never share a token.
        Ok(Self { conn, seed: getrandom::u64()?, next: AtomicU64::new(0) })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<RawGuard, BoxError> {
        let token = format!("{:016x}{:016x}", self.seed, self.next.fetch_add(1, Ordering::Relaxed));
        let ttl = spec.ttl.as_millis() as u64;
        let mut conn = self.conn.clone();
        loop {
            let set: Option<String> =
                redis::cmd("SET").arg(key).arg(&token).arg("NX").arg("PX").arg(ttl).query_async(&mut conn).await?;
            if set.is_some() {
                return Ok(RawGuard { key: key.to_owned(), token });
            }
        }
    }

    async fn release(&self, guard: RawGuard) -> Result<bool, BoxError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("EVAL")
            .arg(COMPARE_AND_DELETE)
            .arg(1)
            .arg(&guard.key)
            .arg(&guard.token)
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    fn is_valid(&self, _guard: &RawGuard) -> bool {
        true
    }
}
