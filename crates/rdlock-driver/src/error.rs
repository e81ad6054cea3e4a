//! The error of the lock API, shared by every adapter.

use rdlock_core::{EntropyUnavailable, InvalidInput, LockError};

impl From<LockError> for Error {
    /// A server's `NOPERM` refusal is [`Error::NoPermission`]; every other failure stays a
    /// [`Error::Lock`].
    fn from(e: LockError) -> Self {
        match e {
            LockError::Server(s) if s.code == "NOPERM" => Error::NoPermission(s),
            e => Error::Lock(e),
        }
    }
}

/// Why a lock operation did not succeed. The inner types ([`InvalidInput`], [`LockError`],
/// and through it `ServerError` and `TransportError`) are re-exported by every adapter.
///
/// ```
/// use rdlock_driver::{Error, InvalidInput, LockError};
///
/// fn advice(e: &Error) -> &'static str {
///     match e {
///         Error::TimedOut => "busy: try later",
///         Error::InvalidInput(InvalidInput::TtlOutOfRange { .. }) => "pick a ttl from 10 ms to 24 h",
///         Error::Lock(LockError::Server(s)) if s.code == "WRONGTYPE" => "the key holds another type",
///         Error::Lock(e) if e.is_retryable() => "try again",
///         _ => "give up",
///     }
/// }
/// assert_eq!(advice(&Error::TimedOut), "busy: try later");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was invalid (empty key, TTL out of range, ...); nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// The deadline passed before the lock was acquired.
    #[error("timed out waiting for the lock")]
    TimedOut,
    /// Too few replicas acknowledged the acquisition; the lock was released again.
    #[error("only {acked} of {wanted} replicas acknowledged the lock; it was released")]
    ReplicationShortfall {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas wanted.
        wanted: u32,
    },
    /// The lease was lost (another owner holds the key, or validity ran out).
    #[error("the lock was lost: {0:?}")]
    Lost(rdlock_core::LostReason),
    /// The operation failed on the server or on the way to it.
    #[error(transparent)]
    Lock(LockError),
    /// The server's ACL does not let this user touch the key (or a name beside it, or its
    /// hand-off channel), or run a command rdlock needs (`NOPERM`). Nothing was written.
    /// docs/security.md gives the rule a user needs ([`acl_rule`](crate::acl_rule)).
    #[error("the server's ACL refused: {0}")]
    NoPermission(rdlock_core::ServerError),
    /// The sentinels could not name a primary to connect to (at connect only: afterwards
    /// sentinel trouble is logged, and the client keeps the primary it knows).
    #[error(transparent)]
    Sentinel(#[from] crate::SentinelError),
    /// The cluster URL is malformed, or no node gave the slot map.
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    /// TLS refused the connection (the server's certificate, or the client's), or the TLS
    /// settings could not be used.
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
    /// A connection could not be made.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The operating system could not supply the random bits a client's owner tokens are
    /// drawn from; no client was made.
    #[error(transparent)]
    Entropy(#[from] EntropyUnavailable),
    /// The server may evict keys (its `maxmemory-policy`), and the client was told to refuse
    /// such a server ([`ClientConfig::refuse_evicting_server`](crate::ClientConfig)).
    #[error("the server's maxmemory-policy {policy} may evict a held lock; only noeviction is safe")]
    EvictingServer {
        /// The server's policy.
        policy: String,
    },
    /// A mutex's stored value could not be decoded (written by another program, another
    /// version of the type, or by hand). The lock was released again and the stored bytes
    /// were left as they are.
    #[error("the value of mutex {key:?} could not be decoded: {source}")]
    Decode {
        /// The mutex's key.
        key: String,
        /// The codec's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A mutex's value could not be encoded; nothing was written.
    #[error("the value of mutex {key:?} could not be encoded: {source}")]
    Encode {
        /// The mutex's key.
        key: String,
        /// The codec's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The key (or one of the keys beside it) holds a value of a type no rdlock lock uses:
    /// it is not an rdlock lock, and was left as it is.
    #[error("{key:?} is not an rdlock lock (the key holds another type of value)")]
    NotALock {
        /// The key.
        key: String,
    },
    /// The client shut down.
    #[error("the client is closed")]
    Closed,
}
