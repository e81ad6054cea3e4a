//! When the primary changes (a failover the driver followed): every lease is checked on the
//! new primary, waiters look again, and releases are sent again.

use std::time::Instant;

use super::lock::{Phase, Step};
use super::{Engine, LockId};
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
    /// - replicas are counted again, on the new primary, never below `known_replicas` (the
    ///   replicas the topology reports, e.g. the sentinels' list, connected or not).
    ///
    /// The driver also re-subscribes its channels ([`Engine::handle_subscriptions_lost`]).
    pub fn handle_primary_changed(&mut self, known_replicas: Option<u32>, now: Instant) {
        self.primary = self.primary.wrapping_add(1);
        self.replicas = None;
        self.replica_floor = known_replicas.unwrap_or(0);
        let ids: Vec<LockId> = self.locks.keys().copied().collect();
        for id in ids {
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
                Phase::Releasing(_) => self.resend_release(id),
            }
        }
        // One batch for them all.
        self.renew_due(now);
    }

    /// The floor of every replica count: replicas the topology knows of, connected or not
    /// (see [`Engine::handle_primary_changed`]).
    pub fn set_known_replicas(&mut self, known_replicas: u32) {
        self.replica_floor = known_replicas;
    }

    /// Renews a held lease now (batched with the others due).
    pub(super) fn renew_now(&mut self, id: LockId, now: Instant) {
        self.renewal_due_now(id, now);
        self.renew_due(now);
    }

    /// Makes a held lease's renewal due now, to go with the next batch.
    fn renewal_due_now(&mut self, id: LockId, now: Instant) {
        let Some(l) = self.locks.get_mut(&id).and_then(|l| l.lease()) else { return };
        if l.lost.is_none() {
            self.renewals.remove(&(l.renew_after, id));
            (l.renew_after, l.renew_before) = (now, now);
            self.renewals.insert((now, id));
        }
    }
}
