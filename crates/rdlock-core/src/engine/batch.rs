//! Batches: releases, and confirmations of heard hand-offs, leave as one script call per
//! route (in a cluster a route is one slot) for as many locks as are waiting to go, the way
//! renewals do. A release or confirmation leaves at once, alone, as it always did, while fewer
//! than [`IN_FLIGHT`] of its kind are in flight on its route; beyond that it waits, in the open
//! batch with every other lock that comes meanwhile, for one of them to be answered. A mass
//! release (every guard of a client let go at once, or as many hand-offs heard at once) so
//! costs one request per few hundred locks instead of one per lock, and a lone one costs what
//! it did. Nothing else waits for a batch: other requests leave as they are made (a lock with
//! a release waiting sends nothing else).
//!
//! A route that answers nothing (a stalled server answers only at its response timeout) must
//! not hold a caller's release back for that long: once the route has been silent for its
//! [`Flights::patience`] (no answer, and no batch sent past the two), one held-back batch
//! leaves, and then one per patience while the silence lasts. A busy route is not a silent
//! one: its patience is twice its latest batch's round trip, so batches that each take the
//! server milliseconds wait their turn instead of piling up on the connection, where the last
//! would wait past its response timeout behind the rest.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use super::acquiring::Attempt;
use super::lock::{InFlight, Phase, Step};
use super::releasing::release_command;
use super::{Engine, FENCE_TTL, HANDOFF_CLAIM, LockId, Pending, TimerKey};
use crate::command::{Command, RequestId, Route};
use crate::error::LockError;
use crate::ids::IdHasher;
use crate::machine::Then;
use crate::reply::{Reply, TransportError};
use crate::script::{ConfirmArgs, ConfirmReply, Confirmed, Mode, ReleaseBatchArgs};

/// What a batch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    /// Queue-mode releases of plain locks (`release.lua`, or `release_batch.lua` for many).
    Release,
    /// Confirmations of heard hand-offs (`confirm.lua`).
    Confirm,
}

/// One kind of batch on one route: batches of a lane wait for that lane's answers alone.
pub(super) type Lane = (Kind, Route);

/// Requests of one kind in flight on one route beyond which the next waits, batched: a
/// round trip's worth of locks then leaves in one call.
const IN_FLIGHT: u32 = 2;

/// The least silence after which a held-back batch leaves anyway: a caller's release is never
/// held back by a stalled route's response timeout.
const WAIT: Duration = Duration::from_millis(1);

/// The most: a route whose batches took long to answer is still not waited on for longer.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// The batches of every lane, indexed by lane: a mass release over a cluster's 16,384 slots
/// has as many lanes, and each answer looks at its own.
#[derive(Debug, Default)]
pub(super) struct Batches {
    /// Per lane, the batches not sent yet, oldest first.
    open: LaneMap<VecDeque<Open>>,
    /// Per lane with batches in flight: how many, and how fast the route answers them.
    flights: LaneMap<Flights>,
    /// Lanes whose open batches may leave at the next flush (one opened, or one answered),
    /// in the order they became so; and the same as a set.
    ready: Vec<Lane>,
    readied: HashSet<Lane, BuildHasherDefault<IdHasher>>,
}

/// Looked up a few times per release, never iterated (so their order is nobody's): hashed
/// as the engine's ids are, where ordered maps cost ~800 instructions per lone release.
type LaneMap<V> = HashMap<Lane, V, BuildHasherDefault<IdHasher>>;

/// A batch not sent yet; its request id is given when it opens, so that its locks can name it.
#[derive(Debug)]
struct Open {
    req: RequestId,
    locks: Vec<LockId>,
    opened: Instant,
    /// Whether it was held back behind the batches in flight.
    held: bool,
}

/// One lane's batches in flight.
#[derive(Debug, Default)]
struct Flights {
    n: u32,
    /// The latest answer, or batch sent past [`IN_FLIGHT`]: where the route's silence starts.
    stirred: Option<Instant>,
    /// The latest answered batch's round trip (from when it left to its answer).
    round_trip: Option<Duration>,
    /// When the lane's timer is set for, while its batches are held back.
    timer: Option<Instant>,
}

impl Flights {
    /// How long the route may be silent before a held-back batch leaves anyway.
    fn patience(&self) -> Duration {
        self.round_trip.map_or(WAIT, |rt| rt.saturating_mul(2).clamp(WAIT, MAX_WAIT))
    }

    /// When a batch opened at `opened` leaves if the route stays silent.
    fn leaves_at(&self, opened: Instant) -> Instant {
        self.stirred.map_or(opened, |s| s.max(opened)) + self.patience()
    }
}

impl Batches {
    /// Whether `lane`'s timer set for `at` is still wanted.
    pub(super) fn timer_live(&self, lane: &Lane, at: Instant) -> bool {
        self.flights.get(lane).is_some_and(|f| f.timer == Some(at))
    }

    fn ready(&mut self, lane: Lane) {
        if self.readied.insert(lane) {
            self.ready.push(lane);
        }
    }
}

impl Engine {
    /// Adds `id` to the open batch of `lane` (opening one when there is none with room);
    /// returns the batch's request.
    fn batched(&mut self, lane: Lane, id: LockId, now: Instant) -> RequestId {
        let max = self.config.max_renew_batch.max(1);
        let queue = self.batches.open.entry(lane).or_default();
        if let Some(b) = queue.back_mut().filter(|b| b.locks.len() < max) {
            b.locks.push(id);
            return b.req;
        }
        let req = RequestId(self.next_req);
        self.next_req += 1;
        queue.push_back(Open { req, locks: vec![id], opened: now, held: false });
        self.batches.ready(lane);
        req
    }

    /// Queues the requests of the open batches that may leave: those of lanes with fewer
    /// than [`IN_FLIGHT`] in flight. One lock's release is `release.lua` as it always was,
    /// more are one `release_batch.lua` call.
    pub(super) fn flush_batches(&mut self) {
        // Asked at every poll that finds nothing queued: most find no lane ready either.
        if self.batches.ready.is_empty() {
            return;
        }
        self.batches.readied.clear();
        for lane in std::mem::take(&mut self.batches.ready) {
            self.flush_lane(lane, None);
        }
    }

    /// `lane`'s timer: one held-back batch leaves if the route has been silent for its
    /// patience.
    pub(super) fn batch_timer(&mut self, lane: Lane, now: Instant) {
        if let Some(f) = self.batches.flights.get_mut(&lane) {
            f.timer = None;
        }
        self.flush_lane(lane, Some(now));
    }

    /// Sends `lane`'s open batches while it has room in flight and, at its timer (`now`), one
    /// more if the route has been silent for its patience; sets the timer for the rest.
    fn flush_lane(&mut self, lane: Lane, now: Option<Instant>) {
        loop {
            let Some(opened) = self.batches.open.get(&lane).and_then(|q| q.front()).map(|b| b.opened) else {
                self.batches.open.remove(&lane);
                return;
            };
            if let Some(flights) = self.batches.flights.get_mut(&lane)
                && flights.n >= IN_FLIGHT
            {
                let at = flights.leaves_at(opened);
                match now {
                    Some(now) if at <= now => {
                        // Silent that long: one leaves, and the silence starts again.
                        flights.stirred = Some(now);
                    }
                    _ => {
                        // Held back: they leave at the next answer, or at `at` if the route
                        // stays silent. (A batch that leaves at once sets no timer: a lone
                        // release wakes nothing.)
                        if flights.timer.is_none_or(|t| at < t) {
                            flights.timer = Some(at);
                            self.timers.push(Reverse((at, TimerKey::Batch(lane))));
                        }
                        for b in self.batches.open.get_mut(&lane).into_iter().flatten() {
                            b.held = true;
                        }
                        return;
                    }
                }
            }
            let Some(b) = self.batches.open.get_mut(&lane).and_then(VecDeque::pop_front) else { return };
            if self.send_batch(lane, b) {
                self.batches.flights.entry(lane).or_default().n += 1;
            }
            if now.is_some() {
                // A timer lets one go; the rest wait their turn.
                self.flush_lane(lane, None);
                return;
            }
        }
    }

    /// Sends batch `b` of `lane`, unless every lock of it is gone.
    fn send_batch(&mut self, (kind, route): Lane, b: Open) -> bool {
        let locks: Vec<LockId> = b.locks.into_iter().filter(|id| self.locks.contains_key(id)).collect();
        let n = locks.len();
        let behind_ping =
            kind == Kind::Release && self.release_behind_ping(route, locks.iter().map(|id| &*self.locks[id]));
        let command = match (kind, locks.as_slice()) {
            (_, []) => return false,
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
                    batch.push(&lock.key, lock.token, lock.opts.ttl_ms(), self.client);
                }
                batch.command()
            }
        };
        if kind == Kind::Confirm && b.held {
            // Held back: its leases count from when it leaves (still before the server
            // runs it), not from when each lock joined: behind a backlog of batches they
            // would start spent, and fail as acquired too late.
            self.leaving(&locks, b.req);
        }
        let left = self.latest.map_or(b.opened, |t| t.max(b.opened));
        let pending = match kind {
            Kind::Release => Pending::Releases { locks, route, left, behind_ping },
            Kind::Confirm => Pending::Confirm { locks, route, left },
        };
        let commands = if behind_ping { vec![Command::Ping, command] } else { vec![command] };
        self.request_as(b.req, route, commands, pending);
        true
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

    /// A batch's request, sent at `left`, is answered (or failed) at `now`: the next of its
    /// lane may leave, and the lane's patience follows its round trip.
    pub(super) fn batch_answered(&mut self, kind: Kind, route: Route, left: Instant, now: Instant) {
        let lane = (kind, route);
        let Some(f) = self.batches.flights.get_mut(&lane) else { return };
        f.n = f.n.saturating_sub(1);
        f.stirred = f.stirred.max(Some(now));
        f.round_trip = Some(now.saturating_duration_since(left));
        if f.n == 0 {
            // Nothing is held back on a lane with nothing in flight: forget it.
            self.batches.flights.remove(&lane);
        }
        if self.batches.open.contains_key(&lane) {
            self.batches.ready(lane);
        }
    }

    /// Sends the release of `id` in the open batch of its route.
    pub(super) fn batch_release(&mut self, id: LockId, now: Instant) {
        let Some(route) = self.locks.get(&id).map(|l| l.route) else { return };
        let req = self.batched((Kind::Release, route), id, now);
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
        let req = self.batched((Kind::Confirm, route), id, now);
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
    /// whose key was another's while its entry stayed queued takes the counter as a retry's
    /// report (the anchor, the fence seen, a hand-off heard meanwhile) and waits on; any other
    /// attempts as usual (its claim lapsed, or it was passed on).
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
                    Confirmed::Ours(f) if f <= a.waiter.seen_fence => Err(LockError::UnexpectedReply(format!(
                        "confirm: fence {f} is not above {}, one already seen",
                        a.waiter.seen_fence
                    ))),
                    Confirmed::Ours(fence) => Ok(Attempt::Taken { fence, acked: 0 }),
                    Confirmed::Other(fence) => Ok(Attempt::HeldByOther { holder_ttl: None, fence: Some(fence) }),
                    Confirmed::Unknown if a.abandoned => {
                        self.send_release(id, Then::Silent, now);
                        continue;
                    }
                    Confirmed::Unknown => {
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
