//! Client settings, shared by the async and the blocking driver.

use std::time::Duration;

use rdlock_core::{EngineConfig, LockOptions};

/// Whether waiters on keys shared with foreign clients can rely on the server's keyspace
/// notifications (`__keyspace@<db>__:<key>`, events `del` and `expired`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyspaceNotifications {
    /// Ask the server at connect (`CONFIG GET notify-keyspace-events`: the flags must include
    /// `K`, and `g` and `x` or `A`); a user without the right to ask gets [`Off`](Self::Off).
    #[default]
    Detect,
    /// The server publishes them (configured by its operator, who did not grant `CONFIG`).
    On,
    /// Do not use them: waiters on shared keys poll at most every courtesy delay.
    Off,
}

impl KeyspaceNotifications {
    /// Whether the `notify-keyspace-events` flags publish deletions and expiries on the
    /// keyspace channels.
    pub fn covered_by(flags: &str) -> bool {
        let has = |c: char| flags.contains(c);
        has('K') && (has('A') || (has('g') && has('x')))
    }
}

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
    /// Whether the server publishes keyspace notifications of deletions and expiries, which
    /// wake waiters on keys shared with foreign clients
    /// ([`Sharing::Foreign`](crate::Sharing::Foreign)) as soon as a foreign holder's key
    /// goes. Detected at connect by default.
    pub keyspace_notifications: KeyspaceNotifications,
    /// With sentinels: how often the primary is looked up even when nothing suggests a
    /// change (a `+switch-master` message, a `READONLY` reply or a lost link trigger a
    /// lookup at once). Each lookup also refreshes the replicas the sentinels list, which
    /// [`Confirm::All`](crate::Confirm) and `Majority` count. Ignored without sentinels.
    pub topology_refresh: Duration,
    /// The value of the `client` label on this client's metrics (feature `metrics`;
    /// docs/observability.md), to tell several clients of one process apart. No label
    /// when `None`.
    pub metrics_label: Option<String>,
    /// Certificates for TLS connections (`rediss://`, `rediss+sentinel://`,
    /// `rediss+cluster://`): a CA to trust instead of the operating system's roots, and a
    /// client certificate for mutual TLS. Every connection of the client takes them: through
    /// sentinels both the sentinels' and the data nodes', in a cluster every node's. With a
    /// plain URL they are refused ([`TlsError::NotTls`](crate::TlsError::NotTls)).
    pub tls: Option<crate::TlsConfig>,
    /// Use what the server offers beyond the scripts where it costs the server less, found
    /// at connect: renewals by `SET ... IFEQ` (Valkey 8.1+, Redis 8.4+; about half the
    /// server CPU of `extend.lua`, docs/performance.md). The guarantees are the same either
    /// way (docs/protocol.md, Renewal). On by default; off, every renewal runs the script.
    pub newer_commands: bool,
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
            keyspace_notifications: KeyspaceNotifications::Detect,
            topology_refresh: Duration::from_secs(1),
            metrics_label: None,
            tls: None,
            newer_commands: true,
            engine: EngineConfig::default(),
        }
    }
}
