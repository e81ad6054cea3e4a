//! rdlock-blocking: the synchronous client. Every task of the scenarios runs on a thread of
//! its own ([`super::ThreadExec`]), so the "async" methods here simply block.

use std::time::{Duration, Instant};

use super::{Increment, Locker, Resource, Spec};
use crate::BoxError;
use crate::scenario::hold_until;

/// One blocking rdlock client.
#[derive(Debug)]
pub struct Blocking(rdlock_blocking::Client);

impl Locker for Blocking {
    type Guard = rdlock_blocking::Guard;
    const REQUESTS: &'static [&'static str] = super::rdlock::REQUESTS;
    const RENEWS: bool = true;
    const QUEUES: bool = true;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        Ok(Self(match super::client_config(url) {
            Some(config) => rdlock_blocking::Client::connect(redis::Client::open(url)?, config)?,
            None => rdlock_blocking::Client::open(url)?,
        }))
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<rdlock_blocking::Guard, BoxError> {
        Ok(self.0.lock_builder(key).ttl(spec.ttl).auto_renew(spec.auto_renew).lock()?)
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<rdlock_blocking::Guard, BoxError> {
        let builder = self.0.lock_builder(key).resource(resource);
        Ok(builder.ttl(spec.ttl).auto_renew(spec.auto_renew).lock()?)
    }

    async fn release(&self, guard: rdlock_blocking::Guard) -> Result<bool, BoxError> {
        Ok(guard.release()?.was_held())
    }

    fn is_valid(&self, guard: &rdlock_blocking::Guard) -> bool {
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
        let mut value = mutex.builder().ttl(spec.ttl).auto_renew(spec.auto_renew).lock()?;
        let acquired = Instant::now();
        *value += 1;
        if let Some(h) = hold {
            hold_until(acquired + h).await;
        }
        let release_called = Instant::now();
        let held = value.release()?.was_held();
        Ok(Increment { acquired, release_called, held })
    }

    async fn counter(&self, key: &str) -> Result<u64, BoxError> {
        let value = self.0.mutex::<u64>(key).lock()?;
        let n = *value;
        value.discard()?;
        Ok(n)
    }
}
