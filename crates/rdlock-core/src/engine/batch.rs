//! Batches: releases, and confirmations of heard hand-offs, leave as one script call per
//! route (in a cluster a route is one slot) for as many locks as are waiting to go, the way
//! renewals do. A release or confirmation leaves at once, alone, as it always did, while fewer
//! than [`IN_FLIGHT`] of its kind are in flight on its route; beyond that it waits for one of
//! them to be answered, or [`WAIT`] at most (a stalled server answers nothing until its
//! response timeout), in the open batch, with every other lock that comes meanwhile. A mass
//! release (every guard of a client let go at once, or as many hand-offs heard at once) so
//! costs one request per few hundred locks instead of one per lock, and a lone one costs what
//! it did. Nothing else waits for a batch: other requests leave as they are made (a lock with
//! a release waiting sends nothing else).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::acquiring::Attempt;
use super::lock::{InFlight, Phase, Step};
use super::releasing::release_command;
use super::{Engine, FENCE_TTL, HANDOFF_CLAIM, LockId, Pending, TimerKey};
use crate::command::{RequestId, Route};
use crate::error::LockError;
use crate::machine::Then;
use crate::reply::{Reply, TransportError};
use crate::script::{ConfirmArgs, ConfirmReply, Mode, ReleaseBatchArgs};

/// What a batch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Queue-mode releases of plain locks (`release.lua`, or `release_batch.lua` for many).
    Release,
    /// Confirmations of heard hand-offs (`confirm.lua`).
    Confirm,
}

/// Requests of one kind in flight on one route beyond which the next waits, batched: a
/// round trip's worth of locks then leaves in one call.
const IN_FLIGHT: u32 = 2;

/// The longest a batch waits for a request in flight to be answered: a caller's release is
/// never held back by a stalled one's response timeout.
const WAIT: Duration = Duration::from_millis(1);

/// A batch not sent yet; its request id is given when it opens, so that its locks can name it.
#[derive(Debug)]
pub(super) struct Open {
    kind: Kind,
    route: Route,
    req: RequestId,
    locks: Vec<LockId>,
    /// When it opened; whether its wait's timer is set (only once it is held back).
    opened: Instant,
    timed: bool,
}

impl Engine {
    /// Adds `id` to the open batch of `kind` on `route` (opening one when there is none with
    /// room); returns the batch's request.
    fn batched(&mut self, kind: Kind, route: Route, id: LockId, now: Instant) -> RequestId {
        let max = self.config.max_renew_batch.max(1);
        if let Some(b) = self.open.iter_mut().rev().find(|b| b.kind == kind && b.route == route && b.locks.len() < max)
        {
            b.locks.push(id);
            return b.req;
        }
        let req = RequestId(self.next_req);
        self.next_req += 1;
        self.open.push(Open { kind, route, req, locks: vec![id], opened: now, timed: false });
        req
    }

    /// Queues the requests of the open batches that may leave (`all`: every one, their wait
    /// is over): one lock's release is `release.lua` as it always was, more are one
    /// `release_batch.lua` call.
    pub(super) fn flush_batches(&mut self, all: bool) {
        if self.open.is_empty() {
            return;
        }
        for mut b in std::mem::take(&mut self.open) {
            if !all && self.batches_in_flight(b.kind, b.route) >= IN_FLIGHT {
                // Held back: it leaves at the next answer, or when its wait is over. (A
                // batch that leaves at once sets no timer: a lone release wakes nothing.)
                if !std::mem::replace(&mut b.timed, true) {
                    self.timers.push(Reverse((b.opened + WAIT, TimerKey::Batches)));
                }
                self.open.push(b);
                continue;
            }
            let locks: Vec<LockId> = b.locks.into_iter().filter(|id| self.locks.contains_key(id)).collect();
            let (route, n) = (b.route, locks.len());
            let command = match (b.kind, locks.as_slice()) {
                (_, []) => continue,
                (Kind::Release, [id]) => {
                    let lock = &self.locks[id];
                    release_command(lock, self.client, self.release_fold(lock))
                }
                (Kind::Release, _) => {
                    let mut batch = ReleaseBatchArgs::new(n, FENCE_TTL, HANDOFF_CLAIM);
                    // One fold for the batch: the longest queue TTL of its held locks, if any.
                    let fold = locks.iter().filter_map(|id| self.release_fold(&self.locks[id])).max();
                    batch.fold(fold);
                    for id in &locks {
                        let lock = &self.locks[id];
                        batch.push_lock(&lock.key, lock.token, lock.opts.ttl_ms(), self.client);
                    }
                    batch.command()
                }
                (Kind::Confirm, _) => {
                    let mut batch = ConfirmArgs::with_capacity(n);
                    for id in &locks {
                        let lock = &self.locks[id];
                        batch.push(&lock.key, lock.token, lock.opts.ttl_ms());
                    }
                    batch.command()
                }
            };
            if b.kind == Kind::Confirm && b.timed {
                // Held back: its leases count from when it leaves (still before the server
                // runs it), not from when each lock joined: behind a backlog of batches they
                // would start spent, and fail as acquired too late.
                self.leaving(&locks, b.req);
            }
            let pending = match b.kind {
                Kind::Release => Pending::Releases { locks, route },
                Kind::Confirm => Pending::Confirm { locks, route },
            };
            *self.in_flight_entry(b.kind, route) += 1;
            self.request_as(b.req, route, vec![command], pending);
        }
    }

    /// The confirmations of batch `req` leave now (the latest reply or timer handled).
    fn leaving(&mut self, locks: &[LockId], req: RequestId) {
        let Some(now) = self.latest else { return };
        for id in locks {
            if let Some(Step::InFlight(sent)) =
                self.locks.get_mut(id).and_then(|l| l.acquisition()).map(|a| &mut a.step)
                && sent.req == req
            {
                sent.sent_at = sent.sent_at.max(now);
            }
        }
    }

    fn batches_in_flight(&self, kind: Kind, route: Route) -> u32 {
        self.in_flight.iter().find(|(k, _)| *k == (kind, route)).map_or(0, |(_, n)| *n)
    }

    fn in_flight_entry(&mut self, kind: Kind, route: Route) -> &mut u32 {
        let i = match self.in_flight.iter().position(|(k, _)| *k == (kind, route)) {
            Some(i) => i,
            None => {
                self.in_flight.push(((kind, route), 0));
                self.in_flight.len() - 1
            }
        };
        &mut self.in_flight[i].1
    }

    /// A batch's request is answered (or failed): the next may leave.
    pub(super) fn batch_answered(&mut self, kind: Kind, route: Route) {
        let n = self.in_flight_entry(kind, route);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.in_flight.retain(|(k, _)| *k != (kind, route));
        }
    }

    /// Sends the release of `id` in the open batch of its route.
    pub(super) fn batch_release(&mut self, id: LockId, now: Instant) {
        let Some(route) = self.locks.get(&id).map(|l| l.route) else { return };
        let req = self.batched(Kind::Release, route, id, now);
        if let Some(Phase::Releasing(r)) = self.locks.get_mut(&id).map(|l| &mut l.phase) {
            r.sent(req);
        }
        self.reschedule(id);
    }

    /// Sends the confirmation of the heard hand-off of `id` in the open batch of its route:
    /// in flight like an attempt, its lease counts from now, or from when its batch leaves if
    /// it is held back (`docs/protocol.md`, *Validity*).
    pub(super) fn send_confirm(&mut self, id: LockId, now: Instant) {
        let Some(route) = self.locks.get(&id).map(|l| l.route) else { return };
        let req = self.batched(Kind::Confirm, route, id, now);
        let primary = self.epoch(route.node);
        self.set_step(id, Step::InFlight(InFlight { req, sent_at: now, sent_subscribed: true, wanted: 0, primary }));
    }

    /// A batch of releases answered: each lock reads its own reply as it would read
    /// `release.lua`'s.
    pub(super) fn on_releases_reply(
        &mut self,
        ids: &[LockId],
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        if let [id] = ids {
            // One lock's `release.lua`, read as ever.
            self.on_release_reply(*id, req, reply, now);
            return;
        }
        let replies = reply.map(|r| ReleaseBatchArgs::split(r.first(), ids.len()));
        for (i, &id) in ids.iter().enumerate() {
            let one = match &replies {
                Ok(r) => Ok(r[i].iter().cloned().collect()),
                Err(e) => Err(e.clone()),
            };
            self.on_release_reply(id, req, one, now);
        }
    }

    /// A batch of confirmations answered: a lock whose key was its own holds it from the
    /// batch's send time with the counter's fence, as after an attempt that found it so; one
    /// whose key was not attempts as usual (its claim lapsed, or it was passed on).
    pub(super) fn on_confirm_reply(
        &mut self,
        ids: &[LockId],
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let results = reply.map_err(LockError::from).and_then(|r| match r.first() {
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            first => ConfirmReply::parse(first, ids.len())
                .ok_or_else(|| LockError::UnexpectedReply(format!("confirm: {first:?}"))),
        });
        for (i, &id) in ids.iter().enumerate() {
            let Some(a) = self.locks.get_mut(&id).and_then(|l| l.acquisition()) else { continue };
            let Step::InFlight(sent) = a.step else { continue };
            if sent.req != req {
                continue;
            }
            let outcome = match &results {
                Err(e) => Err(e.clone()),
                // The counter goes only forward: a fence at or below one seen is a server the
                // protocol cannot trust, as for an attempt.
                Ok(r) => match r[i] {
                    Some(f) if f <= a.waiter.seen_fence => Err(LockError::UnexpectedReply(format!(
                        "confirm: fence {f} is not above {}, one already seen",
                        a.waiter.seen_fence
                    ))),
                    Some(fence) => Ok(Attempt::Taken { fence, acked: 0 }),
                    None if a.abandoned => {
                        self.send_release(id, Then::Silent, now);
                        continue;
                    }
                    None => {
                        self.send_attempt(id, Mode::Retry, now);
                        continue;
                    }
                },
            };
            self.attempt_answered(id, sent, outcome, None, now);
        }
    }
}

/// Whether a lock's release can go in a batch: a plain queue-mode lock with no value to
/// store first (its release is one `release.lua` call, nothing else).
pub(super) fn batches_release(lock: &super::lock::Lock) -> bool {
    lock.write_back.is_none() && lock.resource.share().is_none() && lock.opts.sharing == crate::options::Sharing::Queue
}
