//! S8 and S9 with an rdlock lock and the counter kept by hand: lock, `GET` the value key,
//! `SET` it plus one, release. Four round trips uncontended where the mutex takes two (its
//! grant brings the value, its release writes it), and the write is not fenced: a holder
//! whose lease lapsed still writes. The other scenarios are the plain client's ([`Rd`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdlock_driver::Runtime;
use redis::aio::MultiplexedConnection;

use super::rdlock::Rd;
use super::{Increment, Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

/// An rdlock client and a connection of the user's own for the value.
#[derive(Debug)]
pub struct ByHand<R: Runtime> {
    lock: Rd<R>,
    conn: MultiplexedConnection,
    /// `GET`s and `SET`s sent: the lock's scripts run both, so the server's count cannot
    /// tell them apart.
    sent: AtomicU64,
}

impl<R: Runtime> Locker for ByHand<R> {
    type Guard = <Rd<R> as Locker>::Guard;
    const REQUESTS: &'static [&'static str] = super::rdlock::REQUESTS;
    const RENEWS: bool = true;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        Ok(Self { lock: Rd::connect(url).await?, conn, sent: AtomicU64::new(0) })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<Self::Guard, BoxError> {
        self.lock.lock(key, spec).await
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<Self::Guard, BoxError> {
        self.lock.acquire(key, resource, spec).await
    }

    async fn release(&self, guard: Self::Guard) -> Result<bool, BoxError> {
        self.lock.release(guard).await
    }

    fn is_valid(&self, guard: &Self::Guard) -> bool {
        self.lock.is_valid(guard)
    }

    async fn increment(&self, key: &str, spec: Spec, hold: Option<Duration>) -> Result<Increment, BoxError> {
        let guard = self.lock.lock(key, spec).await?;
        let value_key = format!("{key}:value");
        let mut conn = self.conn.clone();
        let value: Option<u64> = redis::cmd("GET").arg(&value_key).query_async(&mut conn).await?;
        // The work runs once the value is in hand, and the write follows it, as the mutex's.
        let acquired = Instant::now();
        if let Some(h) = hold {
            hold_until(acquired + h).await;
        }
        let release_called = Instant::now();
        redis::cmd("SET").arg(&value_key).arg(value.unwrap_or(0) + 1).exec_async(&mut conn).await?;
        self.sent.fetch_add(2, Ordering::Relaxed);
        let held = self.lock.release(guard).await?;
        Ok(Increment { acquired, release_called, held })
    }

    async fn counter(&self, key: &str) -> Result<u64, BoxError> {
        let value: Option<u64> =
            redis::cmd("GET").arg(format!("{key}:value")).query_async(&mut self.conn.clone()).await?;
        Ok(value.unwrap_or(0))
    }

    fn own_requests(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
