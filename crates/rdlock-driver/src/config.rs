//! Client settings, shared by the async and the blocking driver.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use rdlock_core::{EngineConfig, LockOptions};

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Options of locks taken without explicit ones.
    pub defaults: LockOptions,
    /// Longest wait for a reply (plus any `WAIT` time) before the outcome counts as unknown.
    pub response_timeout: Duration,
    /// Longest wait for a connection.
    pub connection_timeout: Duration,
    /// Engine settings; the seed is drawn afresh for each client.
    pub engine: EngineConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            defaults: LockOptions::default(),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            engine: EngineConfig { seed: random_seed(), ..EngineConfig::default() },
        }
    }
}

/// A seed for owner tokens, different in every process and every call.
pub fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}
