//! Client settings, shared by the async and the blocking driver.

use std::time::Duration;

use rdlock_core::{EngineConfig, LockOptions};

/// Settings of a client. It holds no randomness, so one configuration (or copies of it) can
/// build any number of clients; each draws its own owner tokens.
///
/// ```
/// use std::time::Duration;
/// use rdlock_driver::{ClientConfig, LockOptions};
///
/// let config = ClientConfig {
///     // Locks taken without explicit options: a 10 s lease, renewed while held.
///     defaults: LockOptions { ttl: Duration::from_secs(10), ..LockOptions::default() },
///     response_timeout: Duration::from_secs(1),
///     ..ClientConfig::default()
/// };
/// // With an adapter: `rdlock_tokio::Client::connect(redis::Client::open(url)?, config.clone())`.
/// assert_eq!(config.defaults.ttl, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Options of locks taken without explicit ones.
    pub defaults: LockOptions,
    /// Longest wait for a reply (plus any `WAIT` time) before the outcome counts as unknown.
    pub response_timeout: Duration,
    /// Longest wait for a connection.
    pub connection_timeout: Duration,
    /// Refuse (at connect, [`Error::EvictingServer`](crate::Error::EvictingServer)) a
    /// server whose `maxmemory-policy` may evict keys: it can drop a held lock (two holders)
    /// or a wait queue. Off by default: such a server is accepted with a warning in the log.
    pub refuse_evicting_server: bool,
    /// Engine settings. They hold no randomness: each client's engine seeds its owner
    /// tokens from the operating system when the client is made, so clients built from
    /// copies of one configuration never share tokens.
    pub engine: EngineConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            defaults: LockOptions::default(),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            refuse_evicting_server: false,
            engine: EngineConfig::default(),
        }
    }
}
