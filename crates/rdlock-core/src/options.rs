//! What a caller can ask of a lock, and the checks that turn bad requests into typed errors.

use std::time::{Duration, Instant};

use crate::error::InvalidInput;

/// Shortest lease accepted: below it the clock-drift allowance leaves no validity.
pub const MIN_TTL: Duration = Duration::from_millis(10);
/// Longest lease accepted: a crashed holder blocks its lock for up to this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest poll cap accepted (a lost hand-off message costs a waiter up to the poll cap).
pub const MAX_POLL_CAP: Duration = Duration::from_secs(600);

/// How many replicas must hold the lock before the caller is told it has it (`WAIT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Confirm {
    /// Do not wait for replicas.
    #[default]
    None,
    /// Every replica the primary has: the most replicas the client has seen connected (a
    /// replica whose link is down still counts; the count never drops). State the
    /// deployment's size with [`Confirm::AtLeast`] to hold from the first lock on.
    All {
        /// Longest wait for the acknowledgements.
        timeout: Duration,
    },
    /// More than half of the primary's replicas (counted as for [`Confirm::All`]).
    Majority {
        /// Longest wait for the acknowledgements.
        timeout: Duration,
    },
    /// At least this many replicas.
    AtLeast {
        /// Replicas that must acknowledge.
        replicas: u32,
        /// Longest wait for the acknowledgements.
        timeout: Duration,
    },
}

impl Confirm {
    /// The `WAIT` timeout, if any confirmation is asked for.
    pub fn timeout(self) -> Option<Duration> {
        match self {
            Confirm::None => None,
            Confirm::All { timeout } | Confirm::Majority { timeout } | Confirm::AtLeast { timeout, .. } => {
                Some(timeout)
            }
        }
    }

    /// Replicas wanted, given how many the primary has (`None` when unknown and needed).
    pub fn wanted(self, replicas: Option<u32>) -> Option<u32> {
        match self {
            Confirm::None => Some(0),
            Confirm::AtLeast { replicas: n, .. } => Some(n),
            Confirm::All { .. } => replicas,
            Confirm::Majority { .. } => replicas.map(|n| if n == 0 { 0 } else { n / 2 + 1 }),
        }
    }

    /// Whether the replica count has to be known first.
    pub fn needs_replica_count(self) -> bool {
        matches!(self, Confirm::All { .. } | Confirm::Majority { .. })
    }
}

/// Options of one lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOptions {
    /// Lease length: the key's expiry on the server.
    pub ttl: Duration,
    /// Renew the lease at about a third of the TTL for as long as the lock is held.
    pub auto_renew: bool,
    /// Replication confirmation for acquisitions and renewals.
    pub confirm: Confirm,
    /// Longest sleep of a waiter between polls, so that a lost hand-off message costs at
    /// most this long.
    pub poll_cap: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            auto_renew: true,
            confirm: Confirm::None,
            poll_cap: Duration::from_millis(200),
        }
    }
}

impl LockOptions {
    /// The Redlock clock-drift allowance: ttl/100 + 2 ms.
    pub fn drift(&self) -> Duration {
        self.ttl / 100 + Duration::from_millis(2)
    }

    /// The validity of a lease whose request was sent at `sent_at`.
    pub fn valid_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.ttl - self.drift()
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(InvalidInput::TtlOutOfRange { ttl: self.ttl, min: MIN_TTL, max: MAX_TTL });
        }
        if self.poll_cap.is_zero() {
            return Err(InvalidInput::PollCapZero);
        }
        if self.poll_cap > MAX_POLL_CAP {
            return Err(InvalidInput::PollCapTooLong { poll_cap: self.poll_cap, max: MAX_POLL_CAP });
        }
        match self.confirm {
            Confirm::AtLeast { replicas: 0, .. } => return Err(InvalidInput::ConfirmNoReplicas),
            c if c.timeout().is_some_and(|t| t.as_millis() == 0) => {
                return Err(InvalidInput::ConfirmTimeoutZero);
            }
            c if c.timeout().is_some_and(|t| t >= self.ttl) => {
                return Err(InvalidInput::ConfirmTimeoutTooLong {
                    timeout: c.timeout().unwrap_or_default(),
                    ttl: self.ttl,
                });
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }
}

/// How an acquisition waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// One attempt: report [`crate::Event::Busy`] when someone else holds the lock.
    Try,
    /// Wait in the queue until acquired, or until the deadline if one is given.
    Wait {
        /// Give up at this instant ([`crate::Event::TimedOut`]).
        deadline: Option<Instant>,
    },
}
