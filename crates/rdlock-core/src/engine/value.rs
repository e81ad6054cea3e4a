//! A mutex's value: fetched with each grant, written back by an owner-checked store, alone
//! or in front of the release.
//!
//! The value lives in its own key, beside the lock and in its slot. A grant returns it (the
//! acquire script reads it); a hand-off, which grants without a round trip, is confirmed
//! first, so that the new holder reads it. A store writes it only while the lock key holds
//! the caller's token and no later fence has written it, so a holder whose lease was lost
//! (expired, taken over, lost in a failover) never overwrites a later holder's value.

use std::sync::Arc;
use std::time::Instant;

use super::lock::Phase;
use super::{Engine, LockId, OpId, Pending};
use crate::command::Command;
use crate::error::{InvalidInput, LockError, Misuse};
use crate::event::{Event, LostReason, ReleaseOutcome};
use crate::options::Resource;
use crate::reply::{Reply, TransportError, acknowledged};
use crate::script::{StoreArgs, StoreReply, StoredValue};
use crate::token::hex;

/// A value to write back in front of a release, kept for the release's resends.
#[derive(Clone, Debug)]
pub(crate) struct WriteBack {
    pub fence: u64,
    pub value: Arc<[u8]>,
    /// Replicas that must confirm the store.
    pub wanted: u32,
}

impl Engine {
    /// The value the grant of a mutex returned, once: `None` for other locks, after the
    /// first call, or when the mutex had no value (its first use, or its value expired).
    /// Read it after [`Event::Acquired`].
    pub fn take_value(&mut self, id: LockId) -> Option<StoredValue> {
        self.locks.get_mut(&id)?.fetched.take().map(|v| *v)
    }

    /// Writes a held mutex's value, recording the holder's fence with it. The returned op is
    /// answered by [`Event::Stored`]; [`Event::Lost`] when the lease is lost (already, or the
    /// store finds the key not ours or a later holder's value): nothing was written;
    /// [`Event::ReplicationShortfall`] when the lock's confirmation policy is not met (the
    /// value is written on the primary only); [`Event::Failed`] when the server refused or did
    /// not answer (written or not: unknown). Not answered if the lock is released first.
    ///
    /// # Errors
    ///
    /// [`Misuse::NotAMutex`], [`Misuse::NotHeld`], or [`Misuse::Invalid`] with
    /// [`InvalidInput::ValueTooLarge`]; nothing is sent.
    pub fn store(&mut self, id: LockId, value: Arc<[u8]>, now: Instant) -> Result<OpId, Misuse> {
        let write = self.write_back(id, value, now)?;
        let op = self.next_op();
        let Some(write) = write else {
            let reason = self.lost_reason(id);
            self.answer(id, op, Event::Lost { reason });
            // Told now: the lease counts as lost, so that its expiry is not told again.
            self.lose(id, reason, true);
            self.reschedule(id);
            return Ok(op);
        };
        let lock = &self.locks[&id];
        let mut commands = vec![self.store_command(id, &write)];
        commands.extend(lock.opts.confirm.command(write.wanted));
        let route = lock.route;
        self.request(route, commands, Pending::Store { lock: id, op, wanted: write.wanted });
        Ok(op)
    }

    /// Releases a held mutex, writing its value back first, in the same round trip (the store,
    /// its confirmation when the options ask for one, then the release). The returned op is
    /// answered as [`Engine::release`]'s is: [`Event::Released`] with `Released` when the value
    /// was written and the lock released, `NotHeld` when the lease was lost (nothing written),
    /// `Unknown` when the server did not answer in time; or [`Event::ReplicationShortfall`]
    /// when the value was written and the lock released but too few replicas confirmed the
    /// write. A lease already lost or past its validity writes nothing.
    ///
    /// # Errors
    ///
    /// As [`Engine::store`].
    pub fn release_storing(&mut self, id: LockId, value: Arc<[u8]>, now: Instant) -> Result<OpId, Misuse> {
        let write = self.write_back(id, value, now)?;
        let op = self.next_op();
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.write_back = write.map(Box::new);
        }
        self.send_release(id, super::Then::Report(op), now);
        Ok(op)
    }

    /// Checks a store of `value` by `id`: `None` when the lease cannot be trusted now (lost, or
    /// past its validity), so nothing is to be written.
    fn write_back(&self, id: LockId, value: Arc<[u8]>, now: Instant) -> Result<Option<WriteBack>, Misuse> {
        let lock = self.locks.get(&id).ok_or(Misuse::UnknownLock(id))?;
        let Resource::Mutex { max_value, .. } = lock.resource else { return Err(Misuse::NotAMutex(id)) };
        let Phase::Held(lease) = &lock.phase else { return Err(Misuse::NotHeld(id)) };
        if value.len() > max_value as usize {
            return Err(Misuse::Invalid(id, InvalidInput::ValueTooLarge { len: value.len(), max: max_value }));
        }
        let wanted = lock.opts.confirm.wanted(self.replicas(lock.route.node)).unwrap_or(0);
        Ok(lease.is_valid(now).then_some(WriteBack { fence: lease.fence, value, wanted }))
    }

    fn lost_reason(&self, id: LockId) -> LostReason {
        match &self.locks.get(&id).map(|l| &l.phase) {
            Some(Phase::Held(l)) => l.lost.unwrap_or(LostReason::Expired),
            _ => LostReason::Expired,
        }
    }

    /// The store script call for `write` by lock `id`.
    pub(super) fn store_command(&self, id: LockId, write: &WriteBack) -> Command {
        let lock = &self.locks[&id];
        let Resource::Mutex { max_value, value_ttl } = lock.resource else { unreachable!("a mutex's write") };
        let token = hex(lock.token);
        StoreArgs { token: &token, fence: write.fence, max_value, value_ttl, value: write.value.clone() }
            .command(&lock.key)
    }

    pub(super) fn on_store_reply(
        &mut self,
        id: LockId,
        op: OpId,
        wanted: u32,
        reply: Result<Vec<Reply>, TransportError>,
        _now: Instant,
    ) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        // Released or given up meanwhile: nobody waits for the answer.
        if !matches!(lock.phase, Phase::Held(_)) {
            return;
        }
        let outcome =
            reply.map_err(LockError::from).and_then(|r| Ok((StoreReply::parse(r.first())?, acked(&r, wanted))));
        let event = match outcome {
            Ok((StoreReply::Written, Some(acked))) if acked < wanted => Event::ReplicationShortfall { acked, wanted },
            Ok((StoreReply::Written, Some(_))) => Event::Stored,
            Ok((StoreReply::Written, None)) => Event::Failed(LockError::UnexpectedReply("store: no WAIT reply".into())),
            Ok((StoreReply::NotOwner | StoreReply::Superseded, _)) => {
                // Not ours any more: the answer tells the loss; extensions waiting for a
                // renewal are answered with it too.
                let reason = lock.lease().and_then(|l| l.lost).unwrap_or(LostReason::NotOwner);
                self.answer(id, op, Event::Lost { reason });
                self.lose(id, reason, true);
                self.reschedule(id);
                return;
            }
            Err(e) => Event::Failed(e),
        };
        self.answer(id, op, event);
    }

    /// What a release's answer becomes when a value was written back in front of it. Only a
    /// `Released` answer (the first attempt's, the lease valid to the end) can change: a store
    /// that was refused means nothing was written, so the lease counts as lost (`NotHeld`);
    /// a store the server refused with an error fails the call (the lock is released all the
    /// same); a write too few replicas confirmed is a shortfall.
    pub(super) fn write_back_outcome(write: &WriteBack, replies: &[Reply], event: Event) -> Event {
        let released = Event::Released { outcome: ReleaseOutcome::Released };
        if event != released {
            return event;
        }
        match StoreReply::parse(replies.first()) {
            Ok(StoreReply::NotOwner | StoreReply::Superseded) => Event::Released { outcome: ReleaseOutcome::NotHeld },
            Ok(StoreReply::Written) => match acked(replies, write.wanted) {
                Some(acked) if acked < write.wanted => Event::ReplicationShortfall { acked, wanted: write.wanted },
                _ => released,
            },
            Err(e) => Event::Failed(e),
        }
    }
}

/// Replicas that acknowledged: the `WAIT` reply behind the store when one was wanted
/// (`None` when it is missing), else 0.
fn acked(replies: &[Reply], wanted: u32) -> Option<u32> {
    if wanted == 0 {
        return Some(0);
    }
    acknowledged(replies.get(1)?, wanted)
}
