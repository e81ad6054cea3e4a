//! # rdlock-async-std: Redis locks for async-std and smol
//!
//! ```no_run
//! # async fn demo() -> Result<(), rdlock_async_std::Error> {
//! use futures_lite::FutureExt;
//!
//! let client = rdlock_async_std::Client::open("redis://127.0.0.1:6379/").await?;
//! let guard = client.lock("orders").await?;
//! // Pass the fencing token to the storage you protect; it can refuse stale holders.
//! println!("holding orders with fence {}", guard.fence());
//! let work = async {
//!     async_io::Timer::after(std::time::Duration::from_millis(10)).await;
//!     None
//! };
//! if let Some(reason) = async { Some(guard.lost().await) }.or(work).await {
//!     println!("lease lost ({reason:?}): stop");
//! }
//! assert!(guard.release().await?.was_held(), "the lock was ours to the end");
//! # Ok(()) }
//! ```
//!
//! The same API and behaviour as `rdlock-tokio`, on the `async-io` reactor and timers. That
//! reactor is the one async-std runs on, and smol's, so this crate works under either
//! executor (and any other that can wait on futures): it needs no async-std itself.
//! async-std is discontinued upstream (RUSTSEC-2025-0052); new code can use smol with this
//! crate unchanged.
//!
//! One [`Client`] holds a multiplexed command connection, one pub/sub connection shared by
//! all of its waits, and a connection for replica confirmations when one is asked for.
//! Renewals, polls and lost-lease signals run on one background task per client. Dropping a
//! [`Guard`] releases the lock from that task, never blocking. The lock logic itself lives
//! in `rdlock-core`; this crate only names the runtime.
//!
//! If one program also enables the redis crate's tokio support, the redis crate uses tokio
//! for connections made inside a tokio runtime and async-io elsewhere: create these clients
//! outside any tokio runtime.

#![warn(missing_docs)]

use std::future::Future;
use std::time::Instant;

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

/// The async-io runtime (async-std, smol), as the driver sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStd;

impl rdlock_driver::Runtime for AsyncStd {
    /// Background tasks go to smol's global executor: the redis crate already runs its
    /// connection tasks there, it starts its own thread on first use, and so it works the same
    /// whether the caller sits in `async_std::task::block_on`, `smol::block_on`, or on no
    /// executor at all. Nothing here depends on (discontinued) async-std.
    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        let timer = async_io::Timer::at(deadline);
        async move {
            timer.await;
        }
    }
}

/// A lock client on async-io (async-std, smol).
pub type Client = rdlock_driver::Client<AsyncStd>;
/// A held lock on async-io (async-std, smol).
pub type Guard = rdlock_driver::Guard<AsyncStd>;
/// Options for one acquisition on async-io (async-std, smol).
pub type LockBuilder<'a> = rdlock_driver::LockBuilder<'a, AsyncStd>;
/// A semaphore at one key ([`Client::semaphore`]).
pub type Semaphore = rdlock_driver::Semaphore<AsyncStd>;
/// A read-write lock at one key ([`Client::rwlock`]).
pub type RwLock = rdlock_driver::RwLock<AsyncStd>;
/// An owner whose locks are reentrant for it ([`Client::owner`]).
pub type Owner = rdlock_driver::Owner<AsyncStd>;
/// One hold of an owner's lease ([`Owner::lock`]).
pub type Hold = rdlock_driver::Hold<AsyncStd>;
/// What the work of [`Client::with_lock`] sees of its lock.
pub type Scope = rdlock_driver::Scope<AsyncStd>;
/// A client of a quorum of independent primaries: a fenced lock (`docs/protocol.md`).
pub type QuorumClient = rdlock_driver::QuorumClient<AsyncStd>;
/// A held quorum lock.
pub type QuorumGuard = rdlock_driver::QuorumGuard<AsyncStd>;
/// The answer to a single attempt on async-io (async-std, smol) ([`Client::try_lock_report`]).
pub type TryLock = rdlock_driver::TryLock<Guard>;

// A mutex: a lock whose value lives beside it (typed values with the `serde` feature).
#[cfg(feature = "serde")]
pub use rdlock_driver::Json;
/// Describes rdlock's metrics to the installed recorder (feature `metrics`).
#[cfg(feature = "metrics")]
pub use rdlock_driver::describe_metrics;
pub use rdlock_driver::{Bytes, Codec, DEFAULT_MAX_VALUE, MAX_VALUE_LIMIT, MAX_VALUE_TTL};
/// A mutex on async-io (async-std, smol): a lock whose value `T`, encoded by `C` (JSON by default), lives beside it
/// ([`Client::mutex`]).
#[cfg(feature = "serde")]
pub type Mutex<T, C = Json> = rdlock_driver::Mutex<T, C, AsyncStd>;
/// A mutex on async-io (async-std, smol): a lock whose value `T`, encoded by `C`, lives beside it
/// ([`Client::mutex_with`], [`Client::mutex_bytes`]).
#[cfg(not(feature = "serde"))]
pub type Mutex<T, C> = rdlock_driver::Mutex<T, C, AsyncStd>;
/// A held mutex and its value on async-io (async-std, smol) ([`Mutex::lock`]).
#[cfg(feature = "serde")]
pub type MutexGuard<T, C = Json> = rdlock_driver::MutexGuard<T, C, AsyncStd>;
/// A held mutex and its value on async-io (async-std, smol) ([`Mutex::lock`]).
#[cfg(not(feature = "serde"))]
pub type MutexGuard<T, C> = rdlock_driver::MutexGuard<T, C, AsyncStd>;
/// Options for one acquisition of a mutex on async-io (async-std, smol) ([`Mutex::builder`]).
#[cfg(feature = "serde")]
pub type MutexBuilder<'a, T, C = Json> = rdlock_driver::MutexBuilder<'a, T, C, AsyncStd>;
/// Options for one acquisition of a mutex on async-io (async-std, smol) ([`Mutex::builder`]).
#[cfg(not(feature = "serde"))]
pub type MutexBuilder<'a, T, C> = rdlock_driver::MutexBuilder<'a, T, C, AsyncStd>;
