//! What a caller can ask of a lock, and the checks that turn bad requests into typed errors.

use std::time::{Duration, Instant};

use crate::command::Command;
use crate::error::InvalidInput;

/// Shortest lease accepted: below it the clock-drift allowance leaves no validity.
pub const MIN_TTL: Duration = Duration::from_millis(10);
/// Longest lease accepted: a crashed holder blocks its lock for up to this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest TTL a mutex's value may be given (a year: it is the user's state, which
/// usually has none).
pub const MAX_VALUE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest poll cap accepted (a lost hand-off message costs a waiter up to the poll cap).
pub const MAX_POLL_CAP: Duration = Duration::from_secs(600);

/// How many replicas must hold the lock before the caller is told it has it (`WAIT`), or, in
/// the durable form, how many copies must be on disk (`WAITAOF`).
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
    /// On disk: the primary's append-only file is fsynced, and so are those of at least
    /// `replicas` replicas (`WAITAOF 1 replicas timeout`; Redis 7.2+, Valkey). A lock then
    /// survives a restart of its primary as well as a failover. The server needs the command
    /// and `appendonly yes`: a client that found either missing at connect refuses the lock
    /// before anything is written ([`InvalidInput::NotDurable`]), and a server that answers
    /// the command with an error makes the acquisition fail with
    /// [`LockError::NotDurable`](crate::LockError::NotDurable), the lock released. Shortfalls
    /// count copies: `wanted` is `replicas + 1` (the primary's own fsync is one).
    Durable {
        /// Replicas whose append-only file must hold the write (0: the primary's alone).
        replicas: u32,
        /// Longest wait for the fsyncs.
        timeout: Duration,
    },
}

impl Confirm {
    /// The `WAIT` timeout, if any confirmation is asked for.
    pub fn timeout(self) -> Option<Duration> {
        match self {
            Confirm::None => None,
            Confirm::All { timeout }
            | Confirm::Majority { timeout }
            | Confirm::AtLeast { timeout, .. }
            | Confirm::Durable { timeout, .. } => Some(timeout),
        }
    }

    /// Replicas wanted, given how many the primary has (`None` when unknown and needed).
    pub fn wanted(self, replicas: Option<u32>) -> Option<u32> {
        match self {
            Confirm::None => Some(0),
            Confirm::AtLeast { replicas: n, .. } => Some(n),
            // The primary's own fsync is one of the copies.
            Confirm::Durable { replicas: n, .. } => Some(n.saturating_add(1)),
            Confirm::All { .. } => replicas,
            Confirm::Majority { .. } => replicas.map(|n| if n == 0 { 0 } else { n / 2 + 1 }),
        }
    }

    /// Whether this is the durable form ([`Confirm::Durable`], `WAITAOF`).
    pub fn is_durable(self) -> bool {
        matches!(self, Confirm::Durable { .. })
    }

    /// The command pipelined behind a write when `wanted` acknowledgements are wanted
    /// ([`Confirm::wanted`]): `WAIT`, or `WAITAOF` in the durable form.
    pub(crate) fn command(self, wanted: u32) -> Option<Command> {
        let timeout_ms = self.timeout()?.as_millis().max(1) as u64;
        match self {
            Confirm::Durable { replicas, .. } => Some(Command::WaitAof { replicas, timeout_ms }),
            _ if wanted > 0 => Some(Command::Wait { replicas: wanted, timeout_ms }),
            _ => None,
        }
    }

    /// Whether the replica count has to be known first.
    pub fn needs_replica_count(self) -> bool {
        matches!(self, Confirm::All { .. } | Confirm::Majority { .. })
    }
}

/// What a server offers for [`Confirm::Durable`], as a driver finds it at connect and tells
/// the engine ([`crate::Engine::set_durability`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durability {
    /// The server has `WAITAOF` (Redis 7.2+, Valkey).
    pub waitaof: bool,
    /// Its append-only file is on (`appendonly yes`): `WAITAOF 1 ...` fails without it.
    pub aof: bool,
}

impl Durability {
    /// Why this server cannot confirm durable writes, if it cannot.
    pub fn check(self) -> Result<(), crate::error::NotDurable> {
        match self {
            Durability { waitaof: false, .. } => Err(crate::error::NotDurable::NoCommand),
            Durability { aof: false, .. } => Err(crate::error::NotDurable::AppendOnlyOff),
            _ => Ok(()),
        }
    }
}

/// Who else takes the lock key, which decides how waiters wait for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sharing {
    /// Only rdlock clients in queue mode take the key: waiters queue on the server and a
    /// release hands the key straight to the first of them (first come, first served). A
    /// client that polls with `SET NX` instead (a lock of another library) is never handed
    /// the key while rdlock waiters are queued.
    #[default]
    Queue,
    /// Clients of other libraries (redis-py's `Lock`, redsync, node-redlock: `SET K token NX
    /// PX ttl` and a compare-and-delete) take the key too. Nobody queues: a waiter retries
    /// `SET NX`; a release frees the key and announces it; waiters also wake on the key's
    /// keyspace notifications (deleted, expired) where the server sends them, and otherwise
    /// poll at most every `courtesy`. After each wake-up a waiter first sleeps a random time
    /// in `[0, courtesy]`, so that a foreign client polling every `courtesy` has a fair chance
    /// at the free key. Set `courtesy` to the foreign clients' poll period (redis-py's `sleep`,
    /// 100 ms by default). Every client of a key must use this mode: see `docs/protocol.md`.
    Foreign {
        /// The longest courtesy delay after a wake-up, and the longest poll without
        /// keyspace notifications.
        courtesy: Duration,
    },
}

impl Sharing {
    /// Shared with foreign clients that poll every 100 ms (redis-py's `Lock` default).
    pub const FOREIGN: Sharing = Sharing::Foreign { courtesy: Duration::from_millis(100) };

    /// The courtesy delay bound, for a key shared with foreign clients.
    pub fn courtesy(self) -> Option<Duration> {
        match self {
            Sharing::Queue => None,
            Sharing::Foreign { courtesy } => Some(courtesy),
        }
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
    /// Whether clients of other libraries take the key too ([`Sharing::Foreign`]).
    pub sharing: Sharing,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            auto_renew: true,
            confirm: Confirm::None,
            poll_cap: Duration::from_millis(200),
            sharing: Sharing::Queue,
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
        if let Some(courtesy) = self.sharing.courtesy()
            && (courtesy.is_zero() || courtesy > MAX_POLL_CAP)
        {
            return Err(InvalidInput::CourtesyOutOfRange { courtesy, max: MAX_POLL_CAP });
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

/// What an acquisition takes: a lock, or a share of a counted resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// An exclusive lock: the key holds the owner's token (the layout other libraries share).
    Lock,
    /// One permit of a semaphore with `capacity` permits: at most `capacity` holders at once,
    /// served in arrival order.
    Permit {
        /// How many permits the semaphore has (1 to [`crate::MAX_CAPACITY`]).
        capacity: u32,
    },
    /// `count` permits of a semaphore with `capacity` permits, taken and released together.
    /// Strict FIFO: a request that does not fit yet stops the queue, so smaller requests
    /// behind it wait too (it is never starved; they may wait longer).
    Permits {
        /// How many permits the semaphore has.
        capacity: u32,
        /// How many this share takes (1 to `capacity`).
        count: u32,
    },
    /// A read share of a read-write lock: readers hold together, a writer alone; a queued
    /// writer makes later readers queue behind it (task-fair).
    Read,
    /// The write share of a read-write lock.
    Write,
    /// An exclusive lock with a value kept beside it (a mutex): every grant returns the
    /// value, and the holder writes it back with an owner-checked store
    /// ([`crate::Engine::store`], [`crate::Engine::release_storing`]).
    Mutex {
        /// The largest value accepted, in bytes (1 to [`crate::MAX_VALUE_LIMIT`]; usually
        /// [`crate::DEFAULT_MAX_VALUE`]).
        max_value: u32,
        /// How long the value lives after each write; `None` (the usual choice): it outlives
        /// the lock, as the user's state.
        value_ttl: Option<Duration>,
    },
}

impl Resource {
    /// A mutex with the default value limit ([`crate::DEFAULT_MAX_VALUE`]) whose value
    /// outlives the lock.
    pub const fn mutex() -> Self {
        Resource::Mutex { max_value: crate::script::DEFAULT_MAX_VALUE, value_ttl: None }
    }

    /// For a counted resource, its capacity and this share's weight: a permit weighs 1 of
    /// its semaphore's capacity; a reader 1 and a writer all of [`crate::MAX_CAPACITY`].
    pub fn share(self) -> Option<(u32, u32)> {
        let max = crate::script::MAX_CAPACITY;
        match self {
            Resource::Lock | Resource::Mutex { .. } => None,
            Resource::Permit { capacity } => Some((capacity, 1)),
            Resource::Permits { capacity, count } => Some((capacity, count)),
            Resource::Read => Some((max, 1)),
            Resource::Write => Some((max, max)),
        }
    }

    /// Checks what the resource can be used with.
    pub(crate) fn validate(self, opts: &LockOptions) -> Result<(), InvalidInput> {
        let max = crate::script::MAX_CAPACITY;
        if let Resource::Permit { capacity } | Resource::Permits { capacity, .. } = self
            && !(1..=max).contains(&capacity)
        {
            return Err(InvalidInput::CapacityOutOfRange { capacity, max });
        }
        if let Resource::Permits { capacity, count } = self
            && !(1..=capacity).contains(&count)
        {
            return Err(InvalidInput::PermitCountOutOfRange { count, capacity });
        }
        if let Resource::Mutex { max_value, value_ttl } = self {
            let limit = crate::script::MAX_VALUE_LIMIT;
            if !(1..=limit).contains(&max_value) {
                return Err(InvalidInput::ValueLimitOutOfRange { max_value, limit });
            }
            if let Some(ttl) = value_ttl
                && !(MIN_TTL..=MAX_VALUE_TTL).contains(&ttl)
            {
                return Err(InvalidInput::ValueTtlOutOfRange { ttl, min: MIN_TTL, max: MAX_VALUE_TTL });
            }
        }
        if self != Resource::Lock && opts.sharing != Sharing::Queue {
            return Err(InvalidInput::SharedModeIsForLocks);
        }
        Ok(())
    }
}
