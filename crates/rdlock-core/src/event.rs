//! What the engine tells its driver about a lock.

use std::time::{Duration, Instant};

use crate::engine::{LockId, OpId};
use crate::error::LockError;

/// Why a held lock was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The server says another owner (or nobody) holds the key.
    NotOwner,
    /// Validity ran out before a renewal got through.
    Expired,
}

/// What a release could establish about the lease it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The lease was valid when the release was sent and the owner-checked delete ran: the
    /// lock was ours to the end.
    Released,
    /// The lease had been lost before the release (validity ran out, or another owner or
    /// nobody held the key when the owner-checked delete ran).
    NotHeld,
    /// The server did not answer in time, or a retry after a lost answer found the key gone
    /// (our first release, or an expiry or a restart, may have removed it): whether the lock
    /// was ours to the end cannot be known. The clean-up goes on in the background.
    Unknown,
}

impl ReleaseOutcome {
    /// Whether the lock is known to have been ours until the release.
    pub fn was_held(self) -> bool {
        self == ReleaseOutcome::Released
    }
}

/// Something a driver should log: it concerns how a key is used, not one lock's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// A release in shared mode ([`crate::Sharing::Foreign`]) found queue-mode waiters
    /// queued on the key: some rdlock client of the key does not use shared mode. Exclusion
    /// holds, but those waiters get the key only by their polls, and their hand-offs keep
    /// foreign clients out.
    MixedSharing {
        /// The lock key.
        key: String,
    },
}

/// An outcome for one lock, drained with [`crate::Engine::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The lock is held, with this fencing token, until `valid_until` unless renewed.
    Acquired {
        /// Strictly increasing across the lock's holders.
        fence: u64,
        /// Nothing may trust the lock past this instant.
        valid_until: Instant,
    },
    /// A single attempt found the lock held by someone else.
    Busy {
        /// The holder's remaining lease, when the server reported it.
        holder_ttl: Option<Duration>,
    },
    /// The deadline passed before the lock was acquired (the queue entry is being removed).
    TimedOut,
    /// Too few replicas acknowledged the acquisition; the lock was released again.
    ReplicationShortfall {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas wanted.
        wanted: u32,
    },
    /// A renewal succeeded.
    Renewed {
        /// The new end of validity.
        valid_until: Instant,
    },
    /// The lease is gone; the holder must stop acting on it.
    Lost {
        /// Why.
        reason: LostReason,
    },
    /// A write share became a read share ([`crate::Engine::downgrade`]); it keeps its fence
    /// and its lease.
    Downgraded,
    /// A mutex's value was written ([`crate::Engine::store`]), and confirmed by replicas when
    /// the lock's options ask for it.
    Stored,
    /// A release completed, or got as far as the caller can be told.
    Released {
        /// What is known of it.
        outcome: ReleaseOutcome,
    },
    /// The operation failed.
    Failed(LockError),
}

/// One output of [`crate::Engine::poll_event`]: an event of one lock, and the caller action it
/// answers.
///
/// Every caller action ([`crate::Engine::acquire`], [`crate::Engine::release`],
/// [`crate::Engine::extend`], [`crate::Engine::downgrade`]) returns an [`OpId`]; exactly one
/// event carries it, unless the caller abandons the lock (or releases it while an extension or
/// a downgrade is pending) first. News nobody asked for is a *notice*, with no op: an automatic
/// renewal's [`Event::Renewed`], and [`Event::Lost`] when validity runs out or a renewal finds
/// the key gone with no extension pending. A [`Event::Lost`] that answers an op means the lease
/// is lost all the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEvent {
    /// The lock it concerns.
    pub lock: LockId,
    /// The caller action it answers; `None` for a notice.
    pub op: Option<OpId>,
    /// What happened.
    pub event: Event,
}
