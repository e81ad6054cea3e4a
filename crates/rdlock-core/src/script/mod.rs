//! The Lua scripts the lock runs on the server: per script its source (`*.lua`, beside this
//! file), the typed arguments that build its call, and the reader of its reply (`*.rs`).
//! Each script's contract (KEYS, ARGV, reply) is stated once, in its `.lua` header; the
//! builders and readers here follow it, and `docs/protocol.md` explains it.

mod acquire;
mod extend;
mod inspect;
mod permit;
mod release;
mod store;

pub use acquire::{AcquireArgs, AcquireReply, Mode};
pub use extend::{ExtendArgs, ExtendReply};
pub use inspect::{ForceReleaseArgs, ForceReleaseReply, Holder, Inspection, LockKind, Waiter};
pub use permit::{MAX_CAPACITY, PermitArgs, PermitChangeArgs, PermitExtendArgs, PermitKeys, PermitReleaseArgs};
pub use release::{ReleaseArgs, ReleaseReply, SharedReleaseArgs};
pub use store::{DEFAULT_MAX_VALUE, MAX_VALUE_LIMIT, StoreArgs, StoreReply, StoredValue, value_key};

/// One of rdlock's server-side scripts. The core builds their arguments and reads their
/// replies; a driver only has to run them (`EVALSHA`, falling back to `EVAL` on `NOSCRIPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Script {
    /// Take the lock, confirm an earlier take, or join the wait queue.
    Acquire,
    /// Owner-checked release that hands the lock to the next waiter.
    Release,
    /// Owner-checked renewal of one or many locks.
    Extend,
    /// Owner-checked delete of a key shared with foreign clients, announced on the lock's
    /// channel (no hand-off: nobody queues).
    ReleaseShared,
    /// Take a share of a counted resource (a permit), confirm one, or join its queue.
    PermitAcquire,
    /// Owner-checked release of a share, handing the room to the queue's head.
    PermitRelease,
    /// Owner-checked renewal of many shares.
    PermitExtend,
    /// Owner-checked shrink of a held share (an RwLock's downgrade), serving the queue.
    PermitChange,
    /// Owner-checked write of a mutex's value.
    Store,
    /// A read-only view of one lock, for operators (no lock operation uses it).
    Inspect,
    /// An operator's delete of a lock, whoever holds it, handing it to its waiters.
    ForceRelease,
}

impl Script {
    /// Every script, for drivers that load them up front.
    pub const ALL: [Script; 11] = [
        Script::Acquire,
        Script::Release,
        Script::Extend,
        Script::ReleaseShared,
        Script::PermitAcquire,
        Script::PermitRelease,
        Script::PermitExtend,
        Script::PermitChange,
        Script::Store,
        Script::Inspect,
        Script::ForceRelease,
    ];

    /// The Lua source (the fence prelude, `fence.lua`, is prepended to the scripts that grant
    /// a lock).
    pub fn source(self) -> &'static str {
        match self {
            Script::Acquire => concat!(include_str!("fence.lua"), include_str!("acquire.lua")),
            Script::Release => concat!(include_str!("fence.lua"), include_str!("release.lua")),
            Script::Extend => include_str!("extend.lua"),
            Script::ReleaseShared => include_str!("release_shared.lua"),
            Script::PermitAcquire => {
                concat!(include_str!("fence.lua"), include_str!("permit.lua"), include_str!("permit_acquire.lua"))
            }
            Script::PermitRelease => {
                concat!(include_str!("fence.lua"), include_str!("permit.lua"), include_str!("permit_release.lua"))
            }
            Script::PermitExtend => include_str!("permit_extend.lua"),
            Script::PermitChange => {
                concat!(include_str!("fence.lua"), include_str!("permit.lua"), include_str!("permit_change.lua"))
            }
            Script::Store => concat!(include_str!("fence.lua"), include_str!("store.lua")),
            Script::Inspect => include_str!("inspect.lua"),
            Script::ForceRelease => {
                concat!(include_str!("fence.lua"), include_str!("permit.lua"), include_str!("force_release.lua"))
            }
        }
    }

    /// A short name for logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            Script::Acquire => "acquire",
            Script::Release => "release",
            Script::Extend => "extend",
            Script::ReleaseShared => "release-shared",
            Script::PermitAcquire => "permit-acquire",
            Script::PermitRelease => "permit-release",
            Script::PermitExtend => "permit-extend",
            Script::PermitChange => "permit-change",
            Script::Store => "store",
            Script::Inspect => "inspect",
            Script::ForceRelease => "force-release",
        }
    }
}
