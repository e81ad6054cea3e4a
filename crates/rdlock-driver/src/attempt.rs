//! The answer to a single attempt.

use std::time::Duration;

/// The answer to a single attempt (`try_lock_report`): the guard, or how long the current
/// holder's lease has left, to decide when to try again.
///
/// ```
/// use std::time::Duration;
/// use rdlock_driver::TryLock;
///
/// fn back_off<G>(attempt: TryLock<G>) -> Option<Duration> {
///     match attempt {
///         TryLock::Acquired(_guard) => None,
///         // Try again once the holder's lease would have run out.
///         TryLock::Busy { holder_ttl } => Some(holder_ttl.unwrap_or(Duration::from_millis(100))),
///     }
/// }
/// assert_eq!(back_off::<()>(TryLock::Busy { holder_ttl: Some(Duration::from_secs(1)) }), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug)]
#[must_use = "dropping an acquired guard releases the lock at once"]
pub enum TryLock<G> {
    /// The lock is ours.
    Acquired(G),
    /// Someone else holds the lock (or others are queued for it).
    Busy {
        /// The holder's remaining lease as the server reported it. A holder that renews
        /// keeps it topped up, so it is a hint for backing off, not a promise. `None` when
        /// the server reported none (the key holds no expiry).
        holder_ttl: Option<Duration>,
    },
}

impl<G> TryLock<G> {
    /// The guard, if the lock was acquired.
    pub fn acquired(self) -> Option<G> {
        match self {
            TryLock::Acquired(g) => Some(g),
            TryLock::Busy { .. } => None,
        }
    }

    /// Whether the lock was acquired.
    pub fn is_acquired(&self) -> bool {
        matches!(self, TryLock::Acquired(_))
    }

    /// The holder's remaining lease, when busy.
    pub fn holder_ttl(&self) -> Option<Duration> {
        match self {
            TryLock::Acquired(_) => None,
            TryLock::Busy { holder_ttl } => *holder_ttl,
        }
    }
}
