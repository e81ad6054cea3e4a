//! Releasing: the owner-checked release (or clean-up), its retries and repeats.

use std::time::{Duration, Instant};

use super::lock::{Lock, Phase};
use super::{Engine, FENCE_TTL, HANDOFF_CLAIM, LockId, Pending};
use crate::command::{Command, Node, RequestId, Route};
use crate::event::Warning;
use crate::keys::LockKeys;
use crate::machine::{Release, Then};
use crate::options::Sharing;
use crate::reply::{Reply, TransportError};
use crate::script::{
    PermitArgs, PermitKeys, PermitReleaseArgs, ReleaseArgs, ReleaseReply, ReleaseRest, Script, SharedReleaseArgs,
};
use crate::token::hex;

impl Engine {
    /// Starts releasing (or cleaning up) a lock; `then` says what to tell the caller.
    pub(super) fn send_release(&mut self, id: LockId, then: Then, now: Instant) {
        self.drop_subscription(id, now);
        let Some(lock) = self.locks.get(&id) else { return };
        let valid_at_start = match &lock.phase {
            Phase::Held(l) => {
                self.renewals.remove(&(l.renew_before, id));
                l.is_valid(now)
            }
            _ => false,
        };
        let give_up = now.checked_add(lock.opts.ttl).unwrap_or(now);
        let release = Release::new(valid_at_start, then, give_up, lock.unsure);
        self.set_phase(id, Phase::Releasing(release));
        self.resend_release(id, now);
    }

    /// Sends the release script (again).
    pub(super) fn resend_release(&mut self, id: LockId, now: Instant) {
        let Some(lock) = self.locks.get(&id) else { return };
        if super::batch::batches_release(lock) {
            self.batch_release(id, now);
            return;
        }
        let command = release_command(lock, self.client, self.release_fold(lock));
        let route = lock.route;
        let behind_ping = self.release_behind_ping(route, [&**lock]);
        // A mutex's value goes first, on the same connection: the store runs while the key is
        // still ours, and its confirmation before the lock is handed on.
        let mut commands = Vec::with_capacity(3);
        if behind_ping {
            commands.push(Command::Ping);
        }
        if let Some(write) = lock.write_back.as_deref() {
            commands.push(self.store_command(id, write));
            commands.extend(lock.opts.confirm.command(write.wanted));
        }
        commands.push(command);
        let req = self.request(route, commands, Pending::Release { lock: id, behind_ping });
        if let Some(Phase::Releasing(r)) = self.locks.get_mut(&id).map(|l| &mut l.phase) {
            r.sent(req);
        }
        self.reschedule(id);
    }

    pub(super) fn on_release_reply(
        &mut self,
        id: LockId,
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Releasing(r) = &mut lock.phase else { return };
        if r.req != Some(req) {
            return;
        }
        let script = match (lock.resource.share(), lock.opts.sharing) {
            (Some(_), _) => Script::PermitRelease,
            (None, Sharing::Queue) => Script::Release,
            (None, Sharing::Foreign { .. }) => Script::ReleaseShared,
        };
        // The release's reply is behind the store and its WAIT, if they were sent: read by its
        // place, so that a reply short is no answer rather than the store's read as one.
        let at =
            lock.write_back.as_deref().map_or(0, |w| 1 + usize::from(lock.opts.confirm.command(w.wanted).is_some()));
        let outcome = reply.as_ref().map_err(|e| e.clone().into()).and_then(|r| ReleaseReply::parse(script, r.get(at)));
        self.stats.handoffs += u64::from(outcome == Ok(ReleaseReply::HandedOff));
        if outcome == Ok(ReleaseReply::ReleasedBesideQueue) {
            self.warnings.push_back(Warning::MixedSharing { key: lock.key.clone() });
        }
        let (event, again) = r.answered(&outcome, now);
        if let Some((op, mut e)) = event {
            if let (Some(write), Ok(replies)) = (lock.write_back.as_deref(), &reply) {
                e = Self::write_back_outcome(write, replies, e);
            }
            self.answer(id, op, e);
        }
        match again {
            Some(_) => self.reschedule(id),
            None => self.finish(id, now),
        }
        // Handed to a waiter of this engine: its grant is here, whichever of the reply and the
        // message comes first (a release behind a PING has the message written first).
        let announced = reply
            .as_ref()
            .ok()
            .filter(|_| script == Script::Release)
            .and_then(|r| ReleaseReply::announcement(r.get(at)));
        if let Some((channel, message)) = announced
            && self.on_announced(channel, message, None, now)
        {
            self.stats.handoffs_replied += 1;
        }
    }
}

impl Engine {
    /// Whether a release request on `route` for `locks` goes behind a [`Command::Ping`], so
    /// that the server writes a hand-off's message before the release's reply
    /// (`docs/protocol.md`, *A release behind a `PING`*): when one of them will likely hand
    /// its lock on, being held when its release began after an attempt of it found another
    /// holder; on a standalone server (in a cluster an `ASKING` in front would apply to the
    /// `PING`). Not for a mutex's release that stores its value: the store in front orders the
    /// server's replies as a `PING` would (its reply puts the releaser among the pending clients
    /// before the script; under a confirm policy the `WAIT` between them may let the release
    /// run in a later pass: not covered).
    pub(super) fn release_behind_ping<'a>(&self, route: Route, locks: impl IntoIterator<Item = &'a Lock>) -> bool {
        self.config.release_behind_ping
            && route.node == Node::Primary
            && locks.into_iter().any(|l| {
                l.contended && l.write_back.is_none() && matches!(&l.phase, Phase::Releasing(r) if r.valid_at_start())
            })
    }

    /// The queue TTL that asks a queue-mode release to fold its owner check into the hand-off's
    /// `SET ... IFEQ` (`release_folded` in `release_one.lua`): on a server that offers `IFEQ`,
    /// for a lock whose lease was valid when its release began. Any other release (a waiter
    /// leaving, a lease already lost) would mostly find the key not its own, which the fold
    /// pays for with writes it takes back.
    pub(super) fn release_fold(&self, lock: &Lock) -> Option<Duration> {
        let held = matches!(&lock.phase, Phase::Releasing(r) if r.valid_at_start());
        (self.config.set_ifeq && held).then(|| super::acquiring::queue_ttl(self.poll_interval(&lock.opts)))
    }
}

/// The release script's command for `lock` (a mutex's write-back is not part of it):
/// owner-checked, it deletes (or hands on) the key only while it holds the lock's token, and
/// removes the lock's own queue entry otherwise, so that it may be sent again at any time.
/// `fold`: [`Engine::release_fold`].
pub(super) fn release_command(lock: &Lock, client: u64, fold: Option<Duration>) -> Command {
    let (fence_ttl, claim) = (FENCE_TTL, HANDOFF_CLAIM);
    match (lock.resource.share(), lock.opts.sharing) {
        (Some((capacity, weight)), _) => {
            let token = hex(lock.token);
            let inbox = LockKeys::inbox_suffix(&lock.key, client);
            let entry = PermitArgs::entry(&token, lock.opts.ttl_ms(), &inbox, weight);
            PermitReleaseArgs { token: &token, entry: &entry, fence_ttl, claim, capacity }
                .command(&PermitKeys::derive(&lock.key))
        }
        (None, Sharing::Queue) => {
            let rest = ReleaseRest { fence_ttl, claim, fold };
            ReleaseArgs::for_lock(&lock.key, lock.token, lock.opts.ttl_ms(), client, rest)
        }
        (None, Sharing::Foreign { .. }) => {
            SharedReleaseArgs { token: &hex(lock.token) }.command(&LockKeys::derive(&lock.key))
        }
    }
}
