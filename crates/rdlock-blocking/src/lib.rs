//! # rdlock-blocking: Redis locks for plain threads
//!
//! ```no_run
//! # fn demo() -> Result<(), rdlock_blocking::Error> {
//! use std::time::Duration;
//!
//! let client = rdlock_blocking::Client::open("redis://127.0.0.1:6379/")?;
//! let guard = client.lock("orders")?;
//! // Pass the fencing token to the storage you protect; it can refuse stale holders.
//! println!("holding orders with fence {}", guard.fence());
//! for _step in 0..3 {
//!     // Check the lease between pieces of work (or run `guard.lost()` on a watcher thread).
//!     if let Some(reason) = guard.wait_lost(Duration::from_millis(10)) {
//!         println!("lease lost ({reason:?}): stop");
//!         break;
//!     }
//! }
//! assert!(guard.release()?.was_held(), "the lock was ours to the end");
//!
//! // Waiting with a limit, and a single attempt:
//! let guard = client.lock_builder("orders").ttl(Duration::from_secs(5)).timeout(Duration::from_secs(1)).lock()?;
//! assert!(client.try_lock("orders")?.is_none(), "held by the guard above");
//! drop(guard); // releases the lock on this thread
//! # Ok(()) }
//! ```
//!
//! One [`Client`] keeps a small pool of synchronous command connections (threads locking at
//! once do not queue behind each other), one pub/sub connection shared by all of its waits,
//! and connections for replica confirmations when one is asked for. Two background threads
//! per client run the timers (renewals, polls, deadlines, lost-lease signals) and the pub/sub
//! connection, with up to four worker threads, started when needed, for the requests they
//! make; a caller's own requests run on the caller's thread. Dropping a [`Guard`] releases the lock
//! on the dropping thread (one round trip). The lock logic itself lives in `rdlock-core`;
//! this crate needs no async runtime.

#![warn(missing_docs)]

pub use rdlock_driver::blocking::{Client, Guard, LockBuilder, RwLock, Semaphore};
pub use rdlock_driver::blocking::{Hold, Owner, Scope};
// A fenced lock over a quorum of independent primaries (docs/protocol.md).
pub use rdlock_driver::blocking::{QuorumClient, QuorumGuard};
// Everything a caller names: options, errors (to match them without depending on the
// core), the loss signal, and the `redis` crate that `Client::redis` and `Client::connect` use.
pub use rdlock_driver::{
    Acquire, ClientConfig, Confirm, EntropyUnavailable, Error, InvalidInput, KeyspaceNotifications, LockError,
    LockOptions, LossSignal, LostReason, MAX_CAPACITY, MAX_TTL, MIN_TTL, ReleaseOutcome, Resource, ServerError,
    Sharing, TransportError, redis,
};
// Operators' tools: `Client::inspect` and `Client::force_release`.
pub use rdlock_driver::{ForceReleaseReply, Holder, Inspection, LockKind, Waiter};
// Least-privilege ACL users (docs/security.md).
pub use rdlock_driver::{ACL_COMMANDS, acl_rule};
// Connecting through sentinels (`Client::connect_sentinel`, or a `redis+sentinel://` URL).
/// TLS settings (`ClientConfig::tls`) and the typed error of a refused certificate; connecting
/// with TLS needs this crate's `tls` feature.
pub use rdlock_driver::{ClientIdentity, TlsConfig, TlsError};
pub use rdlock_driver::{Credentials, DEFAULT_SENTINEL_PORT, SentinelConfig, SentinelError};

/// The answer to a single attempt on plain threads ([`Client::try_lock_report`]).
pub type TryLock = rdlock_driver::TryLock<Guard>;

// A mutex: a lock whose value lives beside it (typed values with the `serde` feature).
#[cfg(feature = "serde")]
pub use rdlock_driver::Json;
/// Describes rdlock's metrics to the installed recorder (feature `metrics`).
#[cfg(feature = "metrics")]
pub use rdlock_driver::describe_metrics;
pub use rdlock_driver::{Bytes, Codec, DEFAULT_MAX_VALUE, MAX_VALUE_LIMIT, MAX_VALUE_TTL};
/// A mutex on plain threads: a lock whose value `T`, encoded by `C` (JSON by default), lives beside it
/// ([`Client::mutex`]).
#[cfg(feature = "serde")]
pub type Mutex<T, C = Json> = rdlock_driver::blocking::Mutex<T, C>;
/// A mutex on plain threads: a lock whose value `T`, encoded by `C`, lives beside it
/// ([`Client::mutex_with`], [`Client::mutex_bytes`]).
#[cfg(not(feature = "serde"))]
pub type Mutex<T, C> = rdlock_driver::blocking::Mutex<T, C>;
/// A held mutex and its value on plain threads ([`Mutex::lock`]).
#[cfg(feature = "serde")]
pub type MutexGuard<T, C = Json> = rdlock_driver::blocking::MutexGuard<T, C>;
/// A held mutex and its value on plain threads ([`Mutex::lock`]).
#[cfg(not(feature = "serde"))]
pub type MutexGuard<T, C> = rdlock_driver::blocking::MutexGuard<T, C>;
/// Options for one acquisition of a mutex on plain threads ([`Mutex::builder`]).
#[cfg(feature = "serde")]
pub type MutexBuilder<'a, T, C = Json> = rdlock_driver::blocking::MutexBuilder<'a, T, C>;
/// Options for one acquisition of a mutex on plain threads ([`Mutex::builder`]).
#[cfg(not(feature = "serde"))]
pub type MutexBuilder<'a, T, C> = rdlock_driver::blocking::MutexBuilder<'a, T, C>;
