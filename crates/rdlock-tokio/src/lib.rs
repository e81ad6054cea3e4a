//! # rdlock-tokio: Redis locks for tokio
//!
//! ```no_run
//! # async fn demo() -> Result<(), rdlock_tokio::Error> {
//! let client = rdlock_tokio::Client::open("redis://127.0.0.1:6379/").await?;
//! let guard = client.lock("orders").await?;
//! // Pass the fencing token to the storage you protect; it can refuse stale holders.
//! println!("holding orders with fence {}", guard.fence());
//! tokio::select! {
//!     reason = guard.lost() => println!("lease lost ({reason:?}): stop"),
//!     _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
//! }
//! assert!(guard.release().await?.was_held(), "the lock was ours to the end");
//! # Ok(()) }
//! ```
//!
//! One [`Client`] holds a multiplexed command connection, one pub/sub connection shared by
//! all of its waits, and a connection for replica confirmations when one is asked for.
//! Renewals, polls and lost-lease signals run on one background task per client. Dropping a
//! [`Guard`] releases the lock from that task, never blocking. The lock logic itself lives
//! in `rdlock-core`; this crate only names the runtime.

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

/// The tokio runtime, as the driver sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl rdlock_driver::Runtime for Tokio {
    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(deadline.into())
    }

    /// None: on tokio both the default yield (a self-woken task goes to the back of its
    /// worker's queue) and tokio's own (after a poll of the I/O driver) made S2's hand-off gap
    /// longer against raw's, in every pair of runs measured (`docs/performance.md`, *S2 against
    /// a granting floor, and the yield after a hand-off*).
    fn yield_now() -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// The redis crate's pub/sub stream is a tokio channel, whose receive returns `Pending`
    /// once the task's budget is spent, messages queued or not.
    fn unconstrained<F: Future + Send>(future: F) -> impl Future<Output = F::Output> + Send {
        tokio::task::unconstrained(future)
    }
}

/// A lock client on tokio.
pub type Client = rdlock_driver::Client<Tokio>;
/// A held lock on tokio.
pub type Guard = rdlock_driver::Guard<Tokio>;
/// Options for one acquisition on tokio.
pub type LockBuilder<'a> = rdlock_driver::LockBuilder<'a, Tokio>;
/// A semaphore at one key ([`Client::semaphore`]).
pub type Semaphore = rdlock_driver::Semaphore<Tokio>;
/// A read-write lock at one key ([`Client::rwlock`]).
pub type RwLock = rdlock_driver::RwLock<Tokio>;
/// An owner whose locks are reentrant for it ([`Client::owner`]).
pub type Owner = rdlock_driver::Owner<Tokio>;
/// One hold of an owner's lease ([`Owner::lock`]).
pub type Hold = rdlock_driver::Hold<Tokio>;
/// What the work of [`Client::with_lock`] sees of its lock.
pub type Scope = rdlock_driver::Scope<Tokio>;
/// The answer to a single attempt on tokio ([`Client::try_lock_report`]).
pub type TryLock = rdlock_driver::TryLock<Guard>;
/// A client of a quorum of independent primaries: a fenced lock (`docs/protocol.md`).
pub type QuorumClient = rdlock_driver::QuorumClient<Tokio>;
/// A held quorum lock.
pub type QuorumGuard = rdlock_driver::QuorumGuard<Tokio>;

// A mutex: a lock whose value lives beside it (typed values with the `serde` feature).
#[cfg(feature = "serde")]
pub use rdlock_driver::Json;
/// Describes rdlock's metrics to the installed recorder (feature `metrics`).
#[cfg(feature = "metrics")]
pub use rdlock_driver::describe_metrics;
pub use rdlock_driver::{Bytes, Codec, DEFAULT_MAX_VALUE, MAX_VALUE_LIMIT, MAX_VALUE_TTL};
/// A mutex on tokio: a lock whose value `T`, encoded by `C` (JSON by default), lives beside it
/// ([`Client::mutex`]).
#[cfg(feature = "serde")]
pub type Mutex<T, C = Json> = rdlock_driver::Mutex<T, C, Tokio>;
/// A mutex on tokio: a lock whose value `T`, encoded by `C`, lives beside it
/// ([`Client::mutex_with`], [`Client::mutex_bytes`]).
#[cfg(not(feature = "serde"))]
pub type Mutex<T, C> = rdlock_driver::Mutex<T, C, Tokio>;
/// A held mutex and its value on tokio ([`Mutex::lock`]).
#[cfg(feature = "serde")]
pub type MutexGuard<T, C = Json> = rdlock_driver::MutexGuard<T, C, Tokio>;
/// A held mutex and its value on tokio ([`Mutex::lock`]).
#[cfg(not(feature = "serde"))]
pub type MutexGuard<T, C> = rdlock_driver::MutexGuard<T, C, Tokio>;
/// Options for one acquisition of a mutex on tokio ([`Mutex::builder`]).
#[cfg(feature = "serde")]
pub type MutexBuilder<'a, T, C = Json> = rdlock_driver::MutexBuilder<'a, T, C, Tokio>;
/// Options for one acquisition of a mutex on tokio ([`Mutex::builder`]).
#[cfg(not(feature = "serde"))]
pub type MutexBuilder<'a, T, C> = rdlock_driver::MutexBuilder<'a, T, C, Tokio>;

/// The workspace README's tour, compiled with the doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeTour;

#[cfg(test)]
mod tests {
    use super::{Client, Tokio};

    /// The pub/sub task hands in every message read before a `PING`'s answer by reading its
    /// stream (a tokio channel) until a poll finds it empty; within tokio's cooperative budget
    /// a poll answers `Pending` after 128, messages queued or not. `unconstrained` lifts it.
    #[tokio::test(flavor = "current_thread")]
    async fn unconstrained_reads_a_channel_to_its_end() {
        use rdlock_driver::Runtime;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000 {
            tx.send(i).expect("an open channel");
        }
        let drain = std::future::poll_fn(move |cx| {
            let mut n = 0;
            while let std::task::Poll::Ready(Some(_)) = rx.poll_recv(cx) {
                n += 1;
            }
            std::task::Poll::Ready(n)
        });
        assert_eq!(Tokio::unconstrained(drain).await, 1000);
    }

    /// The size of what `f` returns, without calling it.
    fn returned<'a, A, T>(_: &impl Fn(&'a Client, A) -> T) -> usize {
        std::mem::size_of::<T>()
    }

    /// A waiting task keeps its lock future for the whole wait, and a client may have
    /// 100,000 of them (issue #16: at most 2 KiB per waiter in all). Nested `async fn`s kept
    /// every layer's arguments, twice: 856 bytes here (unoptimised) before the acquisition
    /// became one future of its own, 216 after.
    #[test]
    fn a_lock_future_stays_small() {
        let lock = returned(&|c: &Client, key: &str| c.lock(key));
        let built = returned(&|c: &Client, key: &str| c.lock_builder(key).lock());
        let timed = returned(&|c: &Client, key: &str| c.lock_timeout(key, std::time::Duration::from_secs(1)));
        for (what, size) in [("lock", lock), ("lock_builder(..).lock", built), ("lock_timeout", timed)] {
            assert!(size <= 320, "{what}: a future of {size} bytes");
        }
    }
}
