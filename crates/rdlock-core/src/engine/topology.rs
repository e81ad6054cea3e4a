//! When a primary changes (a failover the driver followed, or, in a cluster, a slot that
//! moved): the leases it held are checked on the new primary, waiters look again, and
//! releases are sent again.

use std::time::Instant;

use super::lock::{Phase, Step};
use super::{Engine, LockId};
use crate::command::Node;
use crate::script::Mode;

impl Engine {
    /// The driver now talks to a new primary (it followed a failover). Whatever the old one
    /// granted may be missing on the new one, so, before anything else is trusted:
    /// - every held lease is renewed at once, owner-checked: one the new primary lacks is
    ///   reported [`crate::Event::Lost`] (`NotOwner`) at the renewal's answer, not at its next
    ///   scheduled renewal; an answer still due from the old primary is ignored;
    /// - a grant still in flight is checked the same way as soon as it arrives;
    /// - every waiter attempts again (its queue entry may be gone), and every release is sent
    ///   again (the old primary's answer does not say what the new one holds);
    /// - so is every release the old primary acknowledged within its lock's TTL, when the
    ///   driver asked for it ([`Engine::remember_releases`]): the failover may have lost it,
    ///   leaving the key held by nobody, or a queue entry that is no one's at the head;
    /// - replicas are counted again, on the new primary, never below `known_replicas` (the
    ///   replicas the topology reports, e.g. the sentinels' list, connected or not).
    ///
    /// The driver also re-subscribes its channels ([`Engine::handle_subscriptions_lost`]).
    /// In a cluster it applies to every slot at once; [`Engine::handle_slot_moved`] is the
    /// same for one slot.
    pub fn handle_primary_changed(&mut self, known_replicas: Option<u32>, now: Instant) {
        self.primary = self.primary.wrapping_add(1);
        for shard in self.shards.values_mut() {
            shard.replicas = None;
        }
        self.shard(Node::Primary).floor = known_replicas.unwrap_or(0);
        let ids: Vec<LockId> = self.locks.keys().copied().collect();
        self.check_again(&ids, now);
        self.send_recent_releases(None, now);
    }

    /// In a cluster: the primary that serves `slot` changed (a `MOVED` reply, a failover or
    /// a migration the driver learned of from the topology). As
    /// [`Engine::handle_primary_changed`], for the locks of that slot only: their leases are
    /// checked on the new primary at once (owner-checked), their grants in flight checked
    /// when they arrive, their waiters attempt again, their releases are sent again, and the
    /// slot's replicas are counted again, never below `known_replicas`; the releases its
    /// old primary acknowledged within their locks' TTL are sent again. Its channels are
    /// subscribed again where the slot now lives ([`crate::Transmit::SubscribeShard`]);
    /// until the server confirms one, a hand-off heard on it is only a hint, confirmed by an
    /// attempt. Every script is idempotent, so resending what the old primary may have run
    /// is safe.
    pub fn handle_slot_moved(&mut self, slot: u16, known_replicas: Option<u32>, now: Instant) {
        let node = Node::Slot(slot);
        let shard = self.shard(node);
        shard.moved = shard.moved.wrapping_add(1);
        shard.replicas = None;
        shard.floor = known_replicas.unwrap_or(0);
        let mut out = Vec::new();
        self.subs.reset_slot(slot, &mut out);
        self.transmits.extend(out);
        let ids: Vec<LockId> = self.locks.iter().filter(|(_, l)| l.route.node == node).map(|(&id, _)| id).collect();
        self.check_again(&ids, now);
        self.send_recent_releases(Some(node), now);
    }

    /// In a cluster: the server ended the subscription to `channel` on its own (a
    /// `sunsubscribe` nobody asked for: its slot moved or its node stepped down). It is
    /// subscribed again, on the primary that now serves the slot, and its waiters check
    /// their locks once the server confirms ([`Engine::handle_subscribed`]); their polls
    /// bound the wait meanwhile. A hand-off heard on it before then is only a hint.
    pub fn handle_shard_unsubscribed(&mut self, channel: &str, _now: Instant) {
        let mut out = Vec::new();
        self.subs.reset_channel(channel, &mut out);
        self.transmits.extend(out);
    }

    /// Every lease of `ids` is checked at once, every waiter attempts again, every release is
    /// sent again (see [`Engine::handle_primary_changed`]).
    fn check_again(&mut self, ids: &[LockId], now: Instant) {
        for &id in ids {
            let Some(lock) = self.locks.get_mut(&id) else { continue };
            match &mut lock.phase {
                Phase::Held(l) if l.lost.is_none() => {
                    // An answer still due comes from the old primary: it proves nothing now.
                    l.renewing = None;
                    self.renewal_due_now(id, now);
                }
                Phase::Held(_) => {}
                Phase::Acquiring(a) => {
                    if matches!(a.step, Step::Idle { .. }) && !a.abandoned {
                        let mode = if a.try_only { Mode::Try } else { Mode::Retry };
                        self.send_attempt(id, mode, now);
                    }
                }
                Phase::Releasing(_) => self.resend_release(id, now),
            }
        }
        // One batch for them all (one per slot in a cluster).
        self.renew_due(now);
    }

    /// The floor of every replica count of the primary: replicas the topology knows of,
    /// connected or not (see [`Engine::handle_primary_changed`]).
    pub fn set_known_replicas(&mut self, known_replicas: u32) {
        self.shard(Node::Primary).floor = known_replicas;
    }

    /// In a cluster: the floor of `slot`'s replica counts, the replicas the slot map lists
    /// for its shard (`CLUSTER SLOTS`: those not marked failed, their links up or down).
    /// As [`Engine::set_known_replicas`], for one slot; [`Engine::handle_slot_moved`] sets
    /// it too when the primary changes.
    pub fn set_slot_replicas(&mut self, slot: u16, known_replicas: u32) {
        self.shard(Node::Slot(slot)).floor = known_replicas;
    }

    /// Renews a held lease now (batched with any others due).
    pub(super) fn renew_now(&mut self, id: LockId, now: Instant) {
        self.renewal_due_now(id, now);
        self.renew_due(now);
    }

    /// Makes a held lease's renewal due now, to go with the next batch.
    fn renewal_due_now(&mut self, id: LockId, now: Instant) {
        let Some(l) = self.locks.get_mut(&id).and_then(|l| l.lease()) else { return };
        if l.lost.is_none() {
            self.renewals.remove(&(l.renew_before, id));
            (l.renew_after, l.renew_before) = (now, now);
            self.renewals.insert((now, id));
        }
    }
}
