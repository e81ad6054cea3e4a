//! A read-write lock's write share becomes a read share, atomically: the writer keeps
//! holding (as a reader, with its fence and lease), and the readers queued behind it are
//! served in the same script.

use std::time::Instant;

use super::lock::Phase;
use super::{Engine, FENCE_TTL, HANDOFF_CLAIM, LockId, OpId, Pending};
use crate::error::{LockError, Misuse};
use crate::event::{Event, LostReason};
use crate::options::Resource;
use crate::reply::{Reply, TransportError};
use crate::script::{PermitChangeArgs, PermitKeys};
use crate::token::hex;

impl Engine {
    /// Turns a held write share into a read share. The returned op is answered by
    /// [`Event::Downgraded`], [`Event::Lost`] (the share was gone, or the lease was lost
    /// meanwhile) or [`Event::Failed`] (no answer: the share may be either; it is released as
    /// usual either way); not at all if the lock is released or abandoned first.
    ///
    /// # Errors
    ///
    /// [`Misuse::NotAWriter`] for anything but a held [`Resource::Write`];
    /// [`Misuse::NotHeld`] when it is not held or its lease is lost.
    pub fn downgrade(&mut self, id: LockId, _now: Instant) -> Result<OpId, Misuse> {
        let lock = self.locks.get_mut(&id).ok_or(Misuse::UnknownLock(id))?;
        if lock.resource != Resource::Write {
            return Err(Misuse::NotAWriter(id));
        }
        let Some(lease) = lock.lease() else { return Err(Misuse::NotHeld(id)) };
        if lease.lost.is_some() {
            return Err(Misuse::NotHeld(id));
        }
        let capacity = Resource::Write.share().map_or(1, |(c, _)| c);
        let token = hex(lock.token);
        let args = PermitChangeArgs { token: &token, weight: 1, fence_ttl: FENCE_TTL, claim: HANDOFF_CLAIM, capacity };
        let command = args.command(&PermitKeys::derive(&lock.key));
        let route = lock.route;
        let op = self.next_op();
        self.request(route, vec![command], Pending::Downgrade(id, op));
        Ok(op)
    }

    pub(super) fn on_downgrade_reply(
        &mut self,
        id: LockId,
        op: OpId,
        reply: Result<Vec<Reply>, TransportError>,
        _now: Instant,
    ) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        // Released or given up meanwhile: nobody waits for the answer.
        if !matches!(lock.phase, Phase::Held(_)) {
            return;
        }
        let outcome = reply.map_err(LockError::from).and_then(|r| match r.first() {
            Some(Reply::Int(1)) => Ok(true),
            Some(Reply::Int(0)) => Ok(false),
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            other => Err(LockError::UnexpectedReply(format!("permit change: {other:?}"))),
        });
        let event = match outcome {
            Ok(true) => {
                // Its entries (a release's) now carry a reader's weight.
                lock.resource = Resource::Read;
                Event::Downgraded
            }
            Ok(false) => match lock.lease().and_then(|l| l.lost) {
                // Lost already (validity ran out meanwhile): the answer says so.
                Some(reason) => Event::Lost { reason },
                None => {
                    // The share is gone. The answer tells the loss; extensions waiting for a
                    // renewal are answered with it too.
                    self.answer(id, op, Event::Lost { reason: LostReason::NotOwner });
                    self.lose(id, LostReason::NotOwner, true);
                    self.reschedule(id);
                    return;
                }
            },
            Err(e) => Event::Failed(e),
        };
        self.answer(id, op, event);
        self.reschedule(id);
    }
}
