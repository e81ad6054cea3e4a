//! rdlock's async adapters: every one of them is `rdlock_driver::Client<R>` for its runtime
//! `R`, so one wrapper serves them all.

use rdlock_driver::{Client, Guard, Runtime};

use std::time::{Duration, Instant};

use super::{Increment, Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

/// What rdlock's clients send themselves: scripts by hash (by source after `NOSCRIPT`),
/// replica confirmation, pub/sub.
pub const REQUESTS: &[&str] = &["evalsha", "eval", "wait", "role", "subscribe", "unsubscribe"];

/// One rdlock client (its own command and pub/sub connections) on runtime `R`.
#[derive(Debug)]
pub struct Rd<R: Runtime>(Client<R>);

impl<R: Runtime> Locker for Rd<R> {
    type Guard = Guard<R>;
    const REQUESTS: &'static [&'static str] = REQUESTS;
    const RENEWS: bool = true;
    const QUEUES: bool = true;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        Ok(Self(match super::client_config(url) {
            Some(config) => Client::<R>::connect(redis::Client::open(url)?, config).await?,
            None => Client::<R>::open(url).await?,
        }))
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<Guard<R>, BoxError> {
        Ok(self.0.lock_builder(key).ttl(spec.ttl).auto_renew(spec.auto_renew).lock().await?)
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<Guard<R>, BoxError> {
        let builder = self.0.lock_builder(key).resource(resource);
        Ok(builder.ttl(spec.ttl).auto_renew(spec.auto_renew).lock().await?)
    }

    async fn release(&self, guard: Guard<R>) -> Result<bool, BoxError> {
        Ok(guard.release().await?.was_held())
    }

    fn is_valid(&self, guard: &Guard<R>) -> bool {
        guard.is_valid()
    }

    fn messages(&self) -> Option<u64> {
        Some(self.0.stats().messages)
    }

    fn replied(&self) -> Option<u64> {
        Some(self.0.stats().handoffs_replied)
    }

    async fn increment(&self, key: &str, spec: Spec, hold: Option<Duration>) -> Result<Increment, BoxError> {
        let mutex = self.0.mutex::<u64>(key);
        let mut value = mutex.builder().ttl(spec.ttl).auto_renew(spec.auto_renew).lock().await?;
        let acquired = Instant::now();
        *value += 1;
        if let Some(h) = hold {
            hold_until(acquired + h).await;
        }
        let release_called = Instant::now();
        let held = value.release().await?.was_held();
        Ok(Increment { acquired, release_called, held })
    }

    async fn counter(&self, key: &str) -> Result<u64, BoxError> {
        let value = self.0.mutex::<u64>(key).lock().await?;
        let n = *value;
        value.discard().await?;
        Ok(n)
    }
}
