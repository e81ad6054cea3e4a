//! The Lua scripts the lock runs on the server: per script its source (`*.lua`, beside this
//! file), the typed arguments that build its call, and the reader of its reply (`*.rs`).
//! Each script's contract (KEYS, ARGV, reply) is stated once, in its `.lua` header; the
//! builders and readers here follow it, and `docs/protocol.md` explains it.

mod acquire;
mod confirm;
mod extend;
mod inspect;
mod permit;
mod quorum;
mod release;
mod store;

pub(crate) use acquire::AcquireRest;
pub use acquire::{AcquireArgs, AcquireReply, Mode};
pub use confirm::{ConfirmArgs, ConfirmReply, Confirmed};
pub use extend::{ExtendArgs, ExtendReply};
pub use inspect::{ForceReleaseArgs, ForceReleaseReply, Holder, Inspection, LockKind, Waiter};
pub use permit::{MAX_CAPACITY, PermitArgs, PermitChangeArgs, PermitExtendArgs, PermitKeys, PermitReleaseArgs};
pub use quorum::{QuorumFenceArgs, QuorumFenceReply, QuorumTakeArgs, QuorumTakeReply};
pub(crate) use release::ReleaseRest;
pub use release::{ReleaseArgs, ReleaseBatchArgs, ReleaseReply, SharedReleaseArgs};
pub use store::{DEFAULT_MAX_VALUE, MAX_VALUE_LIMIT, StoreArgs, StoreReply, StoredValue, value_key};

/// One of rdlock's server-side scripts. The core builds their arguments and reads their
/// replies; a driver only has to run them (`EVALSHA`, falling back to `EVAL` on `NOSCRIPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Script {
    /// Take the lock, confirm an earlier take, or join the wait queue.
    Acquire,
    /// Owner-checked release that hands the lock to the next waiter.
    Release,
    /// [`Script::Release`] of many locks in one call (releases made at the same moment).
    ReleaseBatch,
    /// The confirmation of heard hand-offs, one or many locks in one call: owner-checked
    /// expiry and the fence.
    Confirm,
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
    /// [`Script::Acquire`] for a cluster: hand-offs announced with `SPUBLISH`.
    ShardedAcquire,
    /// [`Script::Release`] for a cluster: hand-offs announced with `SPUBLISH`.
    ShardedRelease,
    /// [`Script::ReleaseBatch`] for a cluster: hand-offs announced with `SPUBLISH`.
    ShardedReleaseBatch,
    /// [`Script::ReleaseShared`] for a cluster: the free notice sent with `SPUBLISH`.
    ShardedReleaseShared,
    /// [`Script::PermitAcquire`] for a cluster: hand-offs announced with `SPUBLISH`.
    ShardedPermitAcquire,
    /// [`Script::PermitRelease`] for a cluster: hand-offs announced with `SPUBLISH`.
    ShardedPermitRelease,
    /// [`Script::PermitChange`] for a cluster: hand-offs announced with `SPUBLISH`.
    ShardedPermitChange,
    /// A read-only view of one lock, for operators (no lock operation uses it).
    Inspect,
    /// An operator's delete of a lock, whoever holds it, handing it to its waiters.
    ForceRelease,
    /// A quorum acquisition's first phase on one member: take the key, read the counter.
    QuorumTake,
    /// A quorum acquisition's second phase on one member: raise the counter to the fence.
    QuorumFence,
}

/// The scripts that announce something, with their cluster variants.
const SHARDED: [(Script, Script); 7] = [
    (Script::Acquire, Script::ShardedAcquire),
    (Script::Release, Script::ShardedRelease),
    (Script::ReleaseBatch, Script::ShardedReleaseBatch),
    (Script::ReleaseShared, Script::ShardedReleaseShared),
    (Script::PermitAcquire, Script::ShardedPermitAcquire),
    (Script::PermitRelease, Script::ShardedPermitRelease),
    (Script::PermitChange, Script::ShardedPermitChange),
];

impl Script {
    /// Every script, for drivers that load them up front.
    pub const ALL: [Script; 22] = [
        Script::Acquire,
        Script::Release,
        Script::ReleaseBatch,
        Script::Confirm,
        Script::Extend,
        Script::ReleaseShared,
        Script::PermitAcquire,
        Script::PermitRelease,
        Script::PermitExtend,
        Script::PermitChange,
        Script::Store,
        Script::ShardedAcquire,
        Script::ShardedRelease,
        Script::ShardedReleaseBatch,
        Script::ShardedReleaseShared,
        Script::ShardedPermitAcquire,
        Script::ShardedPermitRelease,
        Script::ShardedPermitChange,
        Script::Inspect,
        Script::ForceRelease,
        Script::QuorumTake,
        Script::QuorumFence,
    ];

    /// The script a cluster runs in this one's place: the same script with every announcement
    /// made by `SPUBLISH` (sharded pub/sub: counted on, and delivered from, the key's shard),
    /// or this one when it announces nothing.
    pub fn sharded(self) -> Script {
        SHARDED.iter().find(|(base, _)| *base == self).map_or(self, |&(_, sharded)| sharded)
    }

    /// The script a cluster variant was made from (itself for any other).
    pub fn base(self) -> Script {
        SHARDED.iter().find(|(_, sharded)| *sharded == self).map_or(self, |&(base, _)| base)
    }

    /// Whether this is a cluster variant (it announces with `SPUBLISH`).
    pub fn is_sharded(self) -> bool {
        self.base() != self
    }

    /// The Lua source (the fence prelude, `fence.lua`, is prepended to the scripts that grant
    /// a lock).
    pub fn source(self) -> &'static str {
        match self {
            Script::Acquire => concat!(
                include_str!("announce.lua"),
                include_str!("attempt_valid.lua"),
                include_str!("acquire_fast.lua"),
                include_str!("fence.lua"),
                include_str!("attempt.lua"),
                include_str!("acquire.lua")
            ),
            Script::Release => concat!(
                include_str!("announce.lua"),
                include_str!("release_fast.lua"),
                include_str!("fence.lua"),
                include_str!("release_one.lua"),
                include_str!("release.lua")
            ),
            Script::ReleaseBatch => concat!(
                include_str!("announce.lua"),
                include_str!("fence.lua"),
                include_str!("release_one.lua"),
                include_str!("release_batch.lua")
            ),
            Script::Confirm => {
                concat!(include_str!("announce.lua"), include_str!("fence.lua"), include_str!("confirm.lua"))
            }
            Script::Extend => include_str!("extend.lua"),
            Script::ReleaseShared => concat!(include_str!("announce.lua"), include_str!("release_shared.lua")),
            Script::PermitAcquire => {
                concat!(
                    include_str!("announce.lua"),
                    include_str!("fence.lua"),
                    include_str!("permit.lua"),
                    include_str!("attempt_valid.lua"),
                    include_str!("attempt.lua"),
                    include_str!("permit_acquire.lua")
                )
            }
            Script::PermitRelease => {
                concat!(
                    include_str!("announce.lua"),
                    include_str!("fence.lua"),
                    include_str!("permit.lua"),
                    include_str!("permit_release.lua")
                )
            }
            Script::PermitExtend => include_str!("permit_extend.lua"),
            Script::PermitChange => {
                concat!(
                    include_str!("announce.lua"),
                    include_str!("fence.lua"),
                    include_str!("permit.lua"),
                    include_str!("permit_change.lua")
                )
            }
            Script::Store => {
                concat!(include_str!("announce.lua"), include_str!("fence.lua"), include_str!("store.lua"))
            }
            Script::Inspect => include_str!("inspect.lua"),
            Script::ForceRelease => {
                concat!(
                    include_str!("announce.lua"),
                    include_str!("fence.lua"),
                    include_str!("permit.lua"),
                    include_str!("force_release.lua")
                )
            }
            Script::QuorumTake => {
                concat!(include_str!("announce.lua"), include_str!("fence.lua"), include_str!("quorum_take.lua"))
            }
            Script::QuorumFence => {
                concat!(include_str!("announce.lua"), include_str!("fence.lua"), include_str!("quorum_fence.lua"))
            }
            sharded => sharded_source(sharded),
        }
    }

    /// A short name for logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            Script::Acquire => "acquire",
            Script::Release => "release",
            Script::ReleaseBatch => "release-batch",
            Script::Confirm => "confirm",
            Script::Extend => "extend",
            Script::ReleaseShared => "release-shared",
            Script::PermitAcquire => "permit-acquire",
            Script::PermitRelease => "permit-release",
            Script::PermitExtend => "permit-extend",
            Script::PermitChange => "permit-change",
            Script::Store => "store",
            Script::ShardedAcquire => "sharded-acquire",
            Script::ShardedRelease => "sharded-release",
            Script::ShardedReleaseBatch => "sharded-release-batch",
            Script::ShardedReleaseShared => "sharded-release-shared",
            Script::ShardedPermitAcquire => "sharded-permit-acquire",
            Script::ShardedPermitRelease => "sharded-permit-release",
            Script::ShardedPermitChange => "sharded-permit-change",
            Script::Inspect => "inspect",
            Script::ForceRelease => "force-release",
            Script::QuorumTake => "quorum-take",
            Script::QuorumFence => "quorum-fence",
        }
    }
}

/// How a script announces: its `publish` function, defined by the first part of its source.
const ANNOUNCE_PRELUDE: &str = include_str!("announce.lua");
/// The same function for a cluster variant, with `SPUBLISH`.
const SHARDED_PRELUDE: &str = include_str!("sharded.lua");

/// A cluster variant's source: its base's with [`SHARDED_PRELUDE`] in place of
/// [`ANNOUNCE_PRELUDE`] (derived, so the two cannot drift apart; built once). Arguments and
/// replies are the base's.
fn sharded_source(script: Script) -> &'static str {
    static SOURCES: std::sync::OnceLock<Vec<(Script, String)>> = std::sync::OnceLock::new();
    let sources = SOURCES.get_or_init(|| {
        SHARDED
            .iter()
            .map(|&(base, sharded)| (sharded, base.source().replacen(ANNOUNCE_PRELUDE, SHARDED_PRELUDE, 1)))
            .collect()
    });
    sources.iter().find(|(s, _)| *s == script).map_or("", |(_, source)| source.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_variants_differ_from_their_base_only_in_how_they_announce() {
        for (base, sharded) in SHARDED {
            assert_eq!((base.sharded(), sharded.base(), sharded.sharded()), (sharded, base, sharded));
            assert!(sharded.is_sharded() && !base.is_sharded());
            let (b, s) = (base.source(), sharded.source());
            let body = b.strip_prefix(ANNOUNCE_PRELUDE).expect("the announcement prelude first");
            assert_eq!(s.strip_prefix(SHARDED_PRELUDE), Some(body), "{base:?}");
            // Every announcement goes through the prelude's guarded `publish`.
            assert!(!body.contains("'PUBLISH'") && !body.contains("SPUBLISH"), "{base:?}");
            assert!(body.contains("publish("), "{base:?}");
        }
        // The operators' force release has no cluster variant yet: in a cluster its hand-off is
        // an unheard claim, which the waiter confirms at its next poll (liveness only).
        for script in [
            Script::Extend,
            Script::Confirm,
            Script::PermitExtend,
            Script::Store,
            Script::Inspect,
            Script::ForceRelease,
            Script::QuorumTake,
            Script::QuorumFence,
        ] {
            assert_eq!(script.sharded(), script);
        }
        // Store carries the prelude's `hand_off` but never calls it: it announces nothing.
        assert!(!Script::Extend.source().contains("publish") && !Script::PermitExtend.source().contains("publish"));
        assert!(!include_str!("store.lua").contains("hand_off") && !include_str!("store.lua").contains("PUBLISH"));
        assert_eq!(Script::ALL.len(), 22);
    }
}
