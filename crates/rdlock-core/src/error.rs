//! The three kinds of trouble: bad input, caller misuse, and a lock operation that failed.

use std::time::Duration;

use crate::command::RequestId;
use crate::engine::LockId;
use crate::reply::{ServerError, TransportError};

/// A request that cannot be valid, refused before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// The key is empty.
    #[error("the lock key is empty")]
    EmptyKey,
    /// The key is longer than rdlock accepts.
    #[error("the lock key is {len} bytes; the limit is {max}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key contains `#rdl`, which marks the names rdlock derives from lock keys: such a
    /// key could be, or be mistaken for, another lock's fence counter, queue or channel.
    #[error("the lock key {0:?} contains \"#rdl\", which is reserved for rdlock's auxiliary key and channel names")]
    KeyReserved(String),
    /// The TTL is zero, too short to leave any validity, or absurdly long.
    #[error("ttl {ttl:?} is outside {min:?}..={max:?}")]
    TtlOutOfRange {
        /// The TTL asked for.
        ttl: Duration,
        /// The shortest accepted.
        min: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// The poll cap is zero.
    #[error("the poll cap must be above zero")]
    PollCapZero,
    /// The poll cap is longer than rdlock accepts.
    #[error("the poll cap {poll_cap:?} is over the limit {max:?}")]
    PollCapTooLong {
        /// The poll cap asked for.
        poll_cap: Duration,
        /// The limit.
        max: Duration,
    },
    /// The courtesy delay of a key shared with foreign clients is zero (it would give them
    /// no chance at a free key) or longer than the longest poll cap.
    #[error("the courtesy delay {courtesy:?} must be above zero and at most {max:?}")]
    CourtesyOutOfRange {
        /// The courtesy delay asked for.
        courtesy: Duration,
        /// The limit.
        max: Duration,
    },
    /// [`Confirm::Durable`](crate::Confirm::Durable) was asked of a server that cannot
    /// confirm durable writes (as found at connect); nothing was sent.
    #[error("durable confirmation: {0}")]
    NotDurable(NotDurable),
    /// Confirmation by zero replicas was asked for.
    #[error("a replica confirmation needs at least one replica")]
    ConfirmNoReplicas,
    /// A `WAIT` timeout of zero would block for ever.
    #[error("the replica confirmation timeout must be above zero (WAIT 0 blocks for ever)")]
    ConfirmTimeoutZero,
    /// A confirmation that may outlast the lease it confirms.
    #[error("the replica confirmation timeout {timeout:?} must be shorter than the ttl {ttl:?}")]
    ConfirmTimeoutTooLong {
        /// The timeout asked for.
        timeout: Duration,
        /// The lock's TTL.
        ttl: Duration,
    },
    /// The deadline has already passed.
    #[error("the deadline has already passed")]
    DeadlinePassed,
    /// A semaphore's capacity is zero or above the limit.
    #[error("the capacity {capacity} is outside 1..={max}")]
    CapacityOutOfRange {
        /// The capacity asked for.
        capacity: u32,
        /// The limit.
        max: u32,
    },
    /// Shared mode (keys that foreign clients take too) is for plain locks: a semaphore, a
    /// read-write lock or a mutex has no layout other libraries share.
    #[error("shared mode is for plain locks; a semaphore, read-write lock or mutex always queues")]
    SharedModeIsForLocks,
    /// A mutex's value limit is zero or above [`crate::MAX_VALUE_LIMIT`].
    #[error("the value limit {max_value} bytes is outside 1..={limit}")]
    ValueLimitOutOfRange {
        /// The limit asked for.
        max_value: u32,
        /// The largest limit accepted.
        limit: u32,
    },
    /// A mutex's value TTL is too short or absurdly long.
    #[error("value ttl {ttl:?} is outside {min:?}..={max:?}")]
    ValueTtlOutOfRange {
        /// The TTL asked for.
        ttl: Duration,
        /// The shortest accepted.
        min: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// A value larger than its mutex accepts; nothing was sent.
    #[error("the value is {len} bytes; the mutex accepts at most {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The mutex's limit.
        max: u32,
    },
    /// More permits asked at once than the semaphore has, or none.
    #[error("{count} permits asked of a semaphore of {capacity}")]
    PermitCountOutOfRange {
        /// Permits asked.
        count: u32,
        /// The semaphore's capacity.
        capacity: u32,
    },
    /// A downgrade of a guard that is not a read-write lock's write share.
    #[error("only a read-write lock's write share can be downgraded")]
    NotAWriter,
    /// The clock-drift allowance leaves no validity.
    #[error("a drift allowance of {drift:?} leaves no validity in a ttl of {ttl:?}")]
    DriftTooLong {
        /// The allowance.
        drift: Duration,
        /// The ttl.
        ttl: Duration,
    },
    /// A quorum needs an odd number of members, from 1 to [`crate::MAX_MEMBERS`].
    #[error("a quorum needs an odd number of members from 1 to {max}, not {members}")]
    QuorumSize {
        /// The members given.
        members: usize,
        /// The limit.
        max: usize,
    },
    /// A quorum names one server twice (the same host and port): a majority counting it
    /// twice is no majority, and two clients could hold the lock at once.
    #[error("a quorum member is named twice: {0}")]
    RepeatedMember(String),
    /// Something a quorum of independent primaries cannot offer (see `docs/protocol.md`,
    /// "What a quorum client supports").
    #[error("not available on a quorum of independent primaries: {0}")]
    NotForQuorum(&'static str),
}

/// The caller broke the engine's contract; the lock's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Misuse {
    /// No such lock (never created, or already finished).
    #[error("unknown lock {0:?}")]
    UnknownLock(LockId),
    /// A reply to a request the engine did not make, or already answered.
    #[error("unknown request {0:?}")]
    UnknownRequest(RequestId),
    /// Release or extend of a lock that is not held.
    #[error("lock {0:?} is not held")]
    NotHeld(LockId),
    /// A downgrade of something other than a read-write lock's write share.
    #[error("lock {0:?} is not a read-write lock's write share")]
    NotAWriter(LockId),
    /// A store of a value for something other than a mutex.
    #[error("lock {0:?} is not a mutex")]
    NotAMutex(LockId),
    /// Input refused for this lock (a value larger than its mutex accepts).
    #[error("lock {0:?}: {1}")]
    Invalid(LockId, InvalidInput),
}

/// A lock operation that could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The server refused (for example `WRONGTYPE`: the key holds another type of value;
    /// `NOPERM`; or scripting is disabled).
    #[error("the server refused: {0}")]
    Server(#[from] ServerError),
    /// The connection failed and retries did not get through in time.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A reply of an unexpected shape (a server that is not Redis-compatible?).
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The server refused the durable confirmation (`WAITAOF`) of a write it had made; the
    /// lock was released (a renewal counts as not done).
    #[error("durable confirmation: {0}")]
    NotDurable(NotDurable),
    /// The acquisition took so long that no validity was left (a slow link, or a caller
    /// that ran only after its lease was over); the lock was released.
    #[error("acquired too late: no validity left (the link or the caller too slow for this ttl)")]
    NoValidityLeft,
    /// Too many members of a quorum failed (unreachable, or refusing with an error) for a
    /// majority to be reached; whatever was taken was released.
    #[error("no quorum: {failed} of {members} members failed ({needed} needed)")]
    NoQuorum {
        /// Members that failed.
        failed: usize,
        /// Members in all.
        members: usize,
        /// The majority.
        needed: usize,
    },
}

impl LockError {
    /// Whether trying again may succeed: the outcome is unknown (transport), or the server is
    /// in a passing state (loading, failing over).
    pub fn is_retryable(&self) -> bool {
        match self {
            LockError::Transport(_) | LockError::NoQuorum { .. } => true,
            LockError::Server(s) => s.is_transient(),
            _ => false,
        }
    }
}

/// Why a server cannot confirm durable writes ([`Confirm::Durable`](crate::Confirm::Durable)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotDurable {
    /// The server has no `WAITAOF` (Redis before 7.2).
    #[error("the server has no WAITAOF (Redis 7.2+ or Valkey needed)")]
    NoCommand,
    /// The server's append-only file is off (`appendonly no`), so nothing is fsynced.
    #[error("the server's append-only file is off (appendonly no)")]
    AppendOnlyOff,
}

impl NotDurable {
    /// The reason behind a server's error reply to `WAITAOF`, if it is one of these.
    pub fn from_reply(e: &ServerError) -> Option<NotDurable> {
        let text = e.message.to_ascii_lowercase();
        if text.contains("appendonly") {
            Some(NotDurable::AppendOnlyOff)
        } else if text.contains("unknown command") {
            Some(NotDurable::NoCommand)
        } else {
            None
        }
    }
}

/// The operating system could not supply the random bits an engine seeds its owner tokens
/// with; no engine is made without them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct EntropyUnavailable(pub String);
