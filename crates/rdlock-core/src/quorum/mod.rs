//! A fenced lock over a quorum of independent primaries, sans-IO like [`crate::Engine`]:
//! inputs take `now`, requests leave as [`Transmit`]s naming [`Node::Member`], outcomes as
//! [`LockEvent`]s. Each acquisition attempt takes the key on every member (phase 1), then
//! raises the counters of a majority to one fence (phase 2); see `docs/protocol.md`,
//! "Quorum lock over independent primaries", for the scripts and the proof that fences
//! strictly increase across any two majorities.
//!
//! Channels to (un)subscribe come as [`Transmit::Subscribe`] / [`Transmit::Unsubscribe`]
//! without a member: a driver subscribes them on every member, since any member may carry a
//! release's announcement.

mod attempt;
mod tally;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::command::{Class, Command, Node, Request, RequestId, Route, Transmit};
use crate::engine::{FENCE_TTL, LeaseView, LockId, OpId};
use crate::error::{InvalidInput, LockError, Misuse};
use crate::event::{Event, LockEvent, LostReason, ReleaseOutcome};
use crate::ids::IdMap;
use crate::keys::LockKeys;
use crate::options::{Acquire, MAX_POLL_CAP, MAX_TTL, MIN_TTL};
use crate::reply::{Reply, TransportError};
use crate::script::{
    ExtendArgs, ExtendReply, QuorumFenceArgs, QuorumFenceReply, QuorumTakeArgs, QuorumTakeReply, ReleaseReply, Script,
    SharedReleaseArgs,
};
use crate::token::Rng;

use attempt::{Attempt, Failure, Step};
use tally::{Answer, Tally};

/// The most members a quorum may have.
pub const MAX_MEMBERS: usize = 15;

/// Options of one quorum lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumOptions {
    /// Lease length: the key's expiry on each member.
    pub ttl: Duration,
    /// The clock-drift allowance taken off validity; `None`: ttl/100 + 2 ms (Redlock's).
    pub drift: Option<Duration>,
    /// Renew the lease at about a third of the TTL for as long as the lock is held.
    pub auto_renew: bool,
    /// Longest sleep of a waiter between attempts (an announcement wakes it sooner).
    pub poll_cap: Duration,
    /// Each wait between attempts gets a random extra in `[0, jitter]`, so that contenders
    /// woken together do not split the members between them again.
    pub jitter: Duration,
}

impl Default for QuorumOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            drift: None,
            auto_renew: true,
            poll_cap: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
        }
    }
}

impl QuorumOptions {
    /// The clock-drift allowance.
    pub fn drift(&self) -> Duration {
        self.drift.unwrap_or(self.ttl / 100 + Duration::from_millis(2))
    }

    /// The validity of a lease whose requests were sent at `sent_at`.
    pub fn valid_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.ttl.saturating_sub(self.drift())
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(InvalidInput::TtlOutOfRange { ttl: self.ttl, min: MIN_TTL, max: MAX_TTL });
        }
        if self.drift() >= self.ttl {
            return Err(InvalidInput::DriftTooLong { drift: self.drift(), ttl: self.ttl });
        }
        if self.poll_cap.is_zero() {
            return Err(InvalidInput::PollCapZero);
        }
        if self.poll_cap > MAX_POLL_CAP || self.jitter > MAX_POLL_CAP {
            return Err(InvalidInput::PollCapTooLong { poll_cap: self.poll_cap.max(self.jitter), max: MAX_POLL_CAP });
        }
        Ok(())
    }
}

/// What a request in flight is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    Take {
        attempt: u64,
        member: usize,
    },
    Fence {
        attempt: u64,
        member: usize,
    },
    Renew {
        round: u64,
        member: usize,
    },
    Release {
        member: usize,
    },
    /// Freeing what a failed attempt or a lost lease left: nobody waits for it.
    Cleanup,
    /// Freeing what an attempt left before its caller hears that it failed.
    Settle {
        member: usize,
    },
}

/// An attempt's phase 1 requests still unanswered, and the token they carry: a grant that
/// arrives after its attempt ended (failed, abandoned, lost, released) is released again
/// from its own reply, so that the release reaches the member after the grant did even when
/// the one sent when the attempt ended overtook it.
#[derive(Debug)]
struct Takes {
    lock: LockId,
    keys: LockKeys,
    token: String,
    pending: usize,
}

#[derive(Debug)]
struct Trying {
    id: u64,
    token: String,
    sent_at: Instant,
    fold: Attempt,
}

#[derive(Debug)]
enum Acquiring {
    Attempt(Trying),
    Sleeping { until: Instant },
}

#[derive(Debug)]
struct Renewal {
    round: u64,
    sent_at: Instant,
    tally: Tally,
    ops: Vec<OpId>,
}

#[derive(Debug)]
struct Held {
    token: String,
    fence: u64,
    valid_until: Instant,
    renewal: Option<Renewal>,
    next_renew: Option<Instant>,
}

#[derive(Debug)]
enum Phase {
    Acquiring { op: OpId, mode: Acquire, step: Acquiring },
    Held(Held),
    Lost { fence: u64, valid_until: Instant, token: String },
    Releasing { op: OpId, tally: Tally },
    Settling { op: OpId, event: Event, waiting: usize },
}

#[derive(Debug)]
struct QLock {
    keys: LockKeys,
    opts: QuorumOptions,
    phase: Phase,
    subscribed: bool,
}

/// All quorum locks of one client over the same members. The run loop is
/// [`crate::Engine`]'s: feed inputs, then drain [`Quorum::poll_transmit`],
/// [`Quorum::poll_event`] and [`Quorum::poll_timeout`].
#[derive(Debug)]
pub struct Quorum {
    members: usize,
    rng: Rng,
    locks: IdMap<LockId, QLock>,
    requests: IdMap<RequestId, (LockId, Purpose)>,
    takes: IdMap<u64, Takes>,
    channels: HashMap<String, usize>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<LockEvent>,
    next: u64,
}

impl Quorum {
    /// A quorum of `members` independent primaries (odd, 1 to [`MAX_MEMBERS`]). Tokens and
    /// jitter come from `rng` ([`Rng::from_os`] in production, a test seed in simulations).
    pub fn new(members: usize, rng: Rng) -> Result<Self, InvalidInput> {
        if members > MAX_MEMBERS || members.is_multiple_of(2) {
            return Err(InvalidInput::QuorumSize { members, max: MAX_MEMBERS });
        }
        Ok(Self {
            members,
            rng,
            locks: IdMap::default(),
            requests: IdMap::default(),
            takes: IdMap::default(),
            channels: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next: 0,
        })
    }

    /// How many members.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The majority: how many members must agree.
    pub fn majority(&self) -> usize {
        self.members / 2 + 1
    }

    /// Locks in this quorum (acquiring, held, lost or releasing).
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no lock is left.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Requests still waiting for a reply (cleanups included).
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Starts acquiring `key`; answered by `Acquired`, `Busy` (try), `TimedOut` (wait with a
    /// deadline) or `Failed`.
    pub fn acquire(
        &mut self,
        key: &str,
        opts: QuorumOptions,
        mode: Acquire,
        now: Instant,
    ) -> Result<(LockId, OpId), InvalidInput> {
        opts.validate()?;
        let keys = LockKeys::new(key)?;
        if let Acquire::Wait { deadline: Some(d) } = mode
            && d <= now
        {
            return Err(InvalidInput::DeadlinePassed);
        }
        let (id, op) = (LockId(self.id()), OpId(self.id()));
        let step = Acquiring::Sleeping { until: now };
        self.locks.insert(id, QLock { keys, opts, phase: Phase::Acquiring { op, mode, step }, subscribed: false });
        self.start_attempt(id, now);
        Ok((id, op))
    }

    /// Releases a held (or lost) lock on every member; answered by `Released`.
    pub fn release(&mut self, id: LockId, _now: Instant) -> Result<OpId, Misuse> {
        let lock = self.locks.get(&id).ok_or(Misuse::UnknownLock(id))?;
        let token = match &lock.phase {
            Phase::Held(h) => h.token.clone(),
            Phase::Lost { token, .. } => token.clone(),
            _ => return Err(Misuse::NotHeld(id)),
        };
        let cmd = SharedReleaseArgs { token: &token }.command(&lock.keys);
        let op = OpId(self.id());
        for member in 0..self.members {
            self.send(id, Purpose::Release { member }, cmd.clone());
        }
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.phase = Phase::Releasing { op, tally: Tally::new(self.members) };
        }
        Ok(op)
    }

    /// Renews a held lock now; answered by `Renewed`, `Lost` or `Failed` (no majority
    /// answered either way). A renewal in flight answers it.
    pub fn extend(&mut self, id: LockId, now: Instant) -> Result<OpId, Misuse> {
        let lock = self.locks.get_mut(&id).ok_or(Misuse::UnknownLock(id))?;
        let Phase::Held(held) = &mut lock.phase else { return Err(Misuse::NotHeld(id)) };
        self.next += 1;
        let op = OpId(self.next);
        match &mut held.renewal {
            Some(r) => r.ops.push(op),
            None => self.renew(id, Some(op), now),
        }
        Ok(op)
    }

    /// Forgets a lock without answering anything more; whatever it holds or may hold is
    /// released on every member.
    pub fn abandon(&mut self, id: LockId, _now: Instant) {
        let Some(lock) = self.locks.remove(&id) else { return };
        let token = match lock.phase {
            Phase::Acquiring { step: Acquiring::Attempt(t), .. } => Some(t.token),
            Phase::Held(h) => Some(h.token),
            Phase::Lost { token, .. } => Some(token),
            _ => None,
        };
        if let Some(token) = token {
            self.cleanup(&lock.keys, &token);
        }
        if lock.subscribed {
            self.unsubscribe(&lock.keys.channel);
        }
    }

    /// A held lease as its holder sees it at `now`.
    pub fn lease(&self, id: LockId, now: Instant) -> Option<LeaseView> {
        match &self.locks.get(&id)?.phase {
            Phase::Held(h) => {
                Some(LeaseView { fence: h.fence, valid_until: h.valid_until, valid: now < h.valid_until })
            }
            Phase::Lost { fence, valid_until, .. } => {
                Some(LeaseView { fence: *fence, valid_until: *valid_until, valid: false })
            }
            _ => None,
        }
    }

    /// The owner token a held lock has on its members (for tests and operators).
    pub fn owner_token(&self, id: LockId) -> Option<&str> {
        match &self.locks.get(&id)?.phase {
            Phase::Held(h) => Some(&h.token),
            Phase::Acquiring { step: Acquiring::Attempt(t), .. } => Some(&t.token),
            _ => None,
        }
    }

    /// The reply to a request (or the transport failure that left it unanswered).
    pub fn handle_reply(
        &mut self,
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) -> Result<(), Misuse> {
        let (id, purpose) = self.requests.remove(&req).ok_or(Misuse::UnknownRequest(req))?;
        let first = reply.map_err(LockError::Transport).map(|r| r.into_iter().next());
        match purpose {
            Purpose::Cleanup => {}
            Purpose::Settle { .. } => {
                if let Some(QLock { phase: Phase::Settling { waiting, .. }, .. }) = self.locks.get_mut(&id) {
                    *waiting -= 1;
                }
                self.settled(id);
            }
            Purpose::Take { attempt, member } => {
                let answer = first.and_then(|r| QuorumTakeReply::parse(r.as_ref()));
                let maybe_ours = !matches!(answer, Ok(QuorumTakeReply::Busy { .. }));
                if let Some(late) = self.late_take(attempt, maybe_ours) {
                    let cmd = SharedReleaseArgs { token: &late.1 }.command(&late.0);
                    match self.locks.get_mut(&id) {
                        Some(QLock { phase: Phase::Settling { waiting, .. }, .. }) => {
                            *waiting += 1;
                            self.send_to(member, id, Purpose::Settle { member }, cmd);
                        }
                        _ => self.send_to(member, LockId(0), Purpose::Cleanup, cmd),
                    }
                }
                self.on_attempt(id, attempt, now, |fold| fold.on_take(member, answer));
                self.settled(id);
            }
            Purpose::Fence { attempt, member } => {
                let answer = first.and_then(|r| QuorumFenceReply::parse(r.as_ref()));
                self.on_attempt(id, attempt, now, |fold| fold.on_fence(member, answer));
            }
            Purpose::Renew { round, member } => {
                let answer = match first.map(|r| ExtendReply::parse(r.as_ref(), 1)) {
                    Ok(Some(v)) if v == [true] => Answer::Yes,
                    Ok(Some(_)) => Answer::No,
                    _ => Answer::Failed,
                };
                self.on_renewal(id, round, member, answer, now);
            }
            Purpose::Release { member } => {
                let answer = match first.and_then(|r| ReleaseReply::parse(Script::ReleaseShared, r.as_ref())) {
                    Ok(r) if r.was_held() => Answer::Yes,
                    Ok(_) => Answer::No,
                    Err(_) => Answer::Failed,
                };
                self.on_release(id, member, answer);
            }
        }
        Ok(())
    }

    /// A message on a subscribed channel, from any member: a release was announced, so the
    /// waiters of that key try again soon (after a jitter).
    pub fn handle_message(&mut self, channel: &str, now: Instant) {
        let ids: Vec<LockId> =
            self.locks.iter().filter(|(_, l)| l.keys.channel == channel).map(|(id, _)| *id).collect();
        for id in ids {
            let extra = self.jitter(id);
            if let Some(QLock { phase: Phase::Acquiring { step: Acquiring::Sleeping { until }, .. }, .. }) =
                self.locks.get_mut(&id)
            {
                *until = (*until).min(now + extra);
            }
        }
    }

    /// Time passed: attempts start, validity ends, renewals go out.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<LockId> =
            self.locks.iter().filter(|(_, l)| wake_at(l).is_some_and(|t| t <= now)).map(|(id, _)| *id).collect();
        for id in due {
            self.on_timer(id, now);
        }
    }

    /// The next request or (un)subscription to carry out.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next outcome.
    pub fn poll_event(&mut self) -> Option<LockEvent> {
        self.events.pop_front()
    }

    /// When to call [`Quorum::handle_timeout`] next (an early call is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.locks.values().filter_map(wake_at).min()
    }

    /// Counts one phase 1 answer of `attempt`; when the attempt has ended and the answer may
    /// have left the key ours (a grant, or an unknown outcome), the names and token to
    /// release it with on that member.
    fn late_take(&mut self, attempt: u64, maybe_ours: bool) -> Option<(LockKeys, String)> {
        let takes = self.takes.get_mut(&attempt)?;
        takes.pending -= 1;
        let lock = self.locks.get(&takes.lock);
        let live = match lock.map(|l| &l.phase) {
            Some(Phase::Acquiring { step: Acquiring::Attempt(t), .. }) => t.id == attempt,
            Some(Phase::Held(h)) => h.token == takes.token,
            _ => false,
        };
        let out = (!live && maybe_ours).then(|| (takes.keys.clone(), takes.token.clone()));
        if takes.pending == 0 {
            self.takes.remove(&attempt);
        }
        out
    }

    fn send(&mut self, id: LockId, purpose: Purpose, command: Command) {
        let member = match purpose {
            Purpose::Take { member, .. }
            | Purpose::Fence { member, .. }
            | Purpose::Renew { member, .. }
            | Purpose::Release { member }
            | Purpose::Settle { member } => member,
            Purpose::Cleanup => 0,
        };
        self.send_to(member, id, purpose, command);
    }

    fn send_to(&mut self, member: usize, id: LockId, purpose: Purpose, command: Command) {
        let req = RequestId(self.id());
        self.requests.insert(req, (id, purpose));
        // Members are at most MAX_MEMBERS (15): the index fits.
        let node = Node::Member(member as u8);
        self.transmits.push_back(Transmit::Request(Request {
            id: req,
            route: Route { node, class: Class::Commands },
            commands: vec![command],
        }));
    }

    /// Owner-checked release of `token` on every member, answered to nobody.
    fn cleanup(&mut self, keys: &LockKeys, token: &str) {
        let cmd = SharedReleaseArgs { token }.command(keys);
        for member in 0..self.members {
            self.send_to(member, LockId(0), Purpose::Cleanup, cmd.clone());
        }
    }

    fn emit(&mut self, lock: LockId, op: Option<OpId>, event: Event) {
        self.events.push_back(LockEvent { lock, op, event });
    }

    fn jitter(&mut self, id: LockId) -> Duration {
        let max = self.locks.get(&id).map_or(Duration::ZERO, |l| l.opts.jitter);
        Duration::from_micros(self.rng.between(0, max.as_micros() as u64))
    }

    fn start_attempt(&mut self, id: LockId, now: Instant) {
        let attempt = self.id();
        let token = self.rng.token();
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let cmd = QuorumTakeArgs { token: &token, ttl: lock.opts.ttl }.command(&lock.keys);
        let Phase::Acquiring { step, .. } = &mut lock.phase else { return };
        let takes = Takes { lock: id, keys: lock.keys.clone(), token: token.clone(), pending: self.members };
        *step = Acquiring::Attempt(Trying { id: attempt, token, sent_at: now, fold: Attempt::new(self.members) });
        self.takes.insert(attempt, takes);
        for member in 0..self.members {
            self.send(id, Purpose::Take { attempt, member }, cmd.clone());
        }
    }

    fn on_attempt(&mut self, id: LockId, attempt: u64, now: Instant, f: impl FnOnce(&mut Attempt) -> Step) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Acquiring { step: Acquiring::Attempt(t), .. } = &mut lock.phase else { return };
        if t.id != attempt {
            return; // an earlier attempt's late answer: its grant was released with it
        }
        match f(&mut t.fold) {
            Step::Wait => {}
            Step::Fence(fence, members) => {
                let cmd = QuorumFenceArgs { token: &t.token, fence, fence_ttl: FENCE_TTL }.command(&lock.keys);
                for member in members {
                    self.send(id, Purpose::Fence { attempt, member }, cmd.clone());
                }
            }
            Step::Counted(fence) => self.counted(id, fence, now),
            Step::Failed(why) => self.attempt_failed(id, why, now),
        }
    }

    fn counted(&mut self, id: LockId, fence: u64, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Acquiring { op, step: Acquiring::Attempt(t), .. } = &mut lock.phase else { return };
        let (op, token, sent_at) = (*op, std::mem::take(&mut t.token), t.sent_at);
        let valid_until = lock.opts.valid_until(sent_at);
        if valid_until <= now {
            let (keys, unreached) = (lock.keys.clone(), t.fold.unreached());
            return self.settle(id, op, (&keys, &token), &unreached, Event::Failed(LockError::NoValidityLeft));
        }
        let next_renew = lock.opts.auto_renew.then(|| sent_at + lock.opts.ttl / 3);
        lock.phase = Phase::Held(Held { token, fence, valid_until, renewal: None, next_renew });
        if lock.subscribed {
            lock.subscribed = false;
            let channel = lock.keys.channel.clone();
            self.unsubscribe(&channel);
        }
        self.emit(id, Some(op), Event::Acquired { fence, valid_until });
    }

    /// Ends an acquisition that failed with an error for its caller once nothing of it can be
    /// left on a member that answered phase 1: the owner-checked release goes to every member,
    /// and the error is answered when each of those has answered it and every phase 1 request
    /// of the lock is answered too (a grant that comes after is released from its reply, and
    /// that awaited; `Phase::Settling` counts the releases unanswered). Members whose phase 1
    /// failed (`unreached`) are released without waiting: a frozen one would hold the answer
    /// for a connection timeout or two more.
    fn settle(&mut self, id: LockId, op: OpId, (keys, token): (&LockKeys, &str), unreached: &[bool], event: Event) {
        let cmd = SharedReleaseArgs { token }.command(keys);
        let mut waiting = 0;
        for member in 0..self.members {
            if unreached.get(member).copied().unwrap_or(false) {
                self.send_to(member, LockId(0), Purpose::Cleanup, cmd.clone());
            } else {
                waiting += 1;
                self.send(id, Purpose::Settle { member }, cmd.clone());
            }
        }
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.phase = Phase::Settling { op, event, waiting };
        }
        self.settled(id);
    }

    /// Answers a settling acquisition once nothing it waits for is outstanding.
    fn settled(&mut self, id: LockId) {
        let Some(QLock { phase: Phase::Settling { op, event, waiting: 0 }, .. }) = self.locks.get(&id) else { return };
        if self.takes.values().any(|t| t.lock == id) {
            return;
        }
        let (op, event) = (*op, event.clone());
        self.finish_acquire(id, op, event);
    }

    /// Ends an acquisition that did not succeed: answers it and forgets the lock.
    fn finish_acquire(&mut self, id: LockId, op: OpId, event: Event) {
        if let Some(lock) = self.locks.remove(&id)
            && lock.subscribed
        {
            self.unsubscribe(&lock.keys.channel);
        }
        self.emit(id, Some(op), event);
    }

    fn attempt_failed(&mut self, id: LockId, why: Failure, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Acquiring { op, mode, step: Acquiring::Attempt(t) } = &mut lock.phase else { return };
        let (op, mode, token, unreached) = (*op, *mode, std::mem::take(&mut t.token), t.fold.unreached());
        let (keys, opts) = (lock.keys.clone(), lock.opts);
        let holder_ttl = match (why, mode) {
            (Failure::Error(LockError::NoValidityLeft), Acquire::Wait { .. }) => None,
            (Failure::Error(e), _) => return self.settle(id, op, (&keys, &token), &unreached, Event::Failed(e)),
            (Failure::Busy(holder_ttl), Acquire::Try) => {
                self.cleanup(&keys, &token);
                return self.finish_acquire(id, op, Event::Busy { holder_ttl });
            }
            (Failure::Busy(holder_ttl), Acquire::Wait { .. }) => holder_ttl,
        };
        self.cleanup(&keys, &token);
        let Acquire::Wait { deadline } = mode else { return };
        if deadline.is_some_and(|d| d <= now) {
            return self.finish_acquire(id, op, Event::TimedOut);
        }
        let pause = holder_ttl.map_or(opts.poll_cap, |t| t.min(opts.poll_cap)) + self.jitter(id);
        let until = deadline.map_or(now + pause, |d| d.min(now + pause));
        let Some(lock) = self.locks.get_mut(&id) else { return };
        lock.phase = Phase::Acquiring { op, mode, step: Acquiring::Sleeping { until } };
        if !lock.subscribed {
            lock.subscribed = true;
            let channel = lock.keys.channel.clone();
            self.subscribe(channel);
        }
    }

    fn renew(&mut self, id: LockId, op: Option<OpId>, now: Instant) {
        let round = self.id();
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Held(held) = &mut lock.phase else { return };
        let mut args = ExtendArgs::with_capacity(1);
        args.push_text(&lock.keys.lock, &held.token, lock.opts.ttl.as_millis() as u64);
        let cmd = args.command();
        held.renewal =
            Some(Renewal { round, sent_at: now, tally: Tally::new(self.members), ops: op.into_iter().collect() });
        held.next_renew = None;
        for member in 0..self.members {
            self.send(id, Purpose::Renew { round, member }, cmd.clone());
        }
    }

    fn on_renewal(&mut self, id: LockId, round: u64, member: usize, answer: Answer, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Held(held) = &mut lock.phase else { return };
        let Some(r) = held.renewal.as_mut().filter(|r| r.round == round) else { return };
        r.tally.record(member, answer);
        let opts = lock.opts;
        if r.tally.won() {
            let (sent_at, ops) = (r.sent_at, std::mem::take(&mut r.ops));
            held.renewal = None;
            held.valid_until = held.valid_until.max(opts.valid_until(sent_at));
            held.next_renew = opts.auto_renew.then(|| sent_at + opts.ttl / 3);
            let valid_until = held.valid_until;
            self.answer(id, ops, Event::Renewed { valid_until });
        } else if r.tally.refused() {
            let ops = std::mem::take(&mut r.ops);
            self.lose(id, ops, LostReason::NotOwner);
        } else if r.tally.complete() {
            let failed = r.tally.count(Answer::Failed);
            let (members, needed) = (r.tally.members(), r.tally.needed());
            let ops = std::mem::take(&mut r.ops);
            held.renewal = None;
            // Validity still counts down; an automatic renewal tries again soon.
            held.next_renew = opts.auto_renew.then(|| now + (opts.ttl / 10).min(opts.poll_cap));
            let event = Event::Failed(LockError::NoQuorum { failed, members, needed });
            for op in ops {
                self.emit(id, Some(op), event.clone());
            }
        }
    }

    /// Answers the ops waiting on a lease, or tells the holder unasked when none waits.
    fn answer(&mut self, id: LockId, ops: Vec<OpId>, event: Event) {
        if ops.is_empty() {
            return self.emit(id, None, event);
        }
        for op in ops {
            self.emit(id, Some(op), event.clone());
        }
    }

    fn lose(&mut self, id: LockId, ops: Vec<OpId>, reason: LostReason) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Held(held) = &mut lock.phase else { return };
        let token = std::mem::take(&mut held.token);
        let (fence, valid_until) = (held.fence, held.valid_until);
        lock.phase = Phase::Lost { fence, valid_until, token: token.clone() };
        let keys = lock.keys.clone();
        self.cleanup(&keys, &token);
        self.answer(id, ops, Event::Lost { reason });
    }

    fn on_release(&mut self, id: LockId, member: usize, answer: Answer) {
        let Some(QLock { phase: Phase::Releasing { op, tally }, .. }) = self.locks.get_mut(&id) else { return };
        tally.record(member, answer);
        if !tally.complete() {
            return;
        }
        let outcome = if tally.won() {
            ReleaseOutcome::Released
        } else if tally.count(Answer::Failed) == 0 {
            ReleaseOutcome::NotHeld
        } else {
            ReleaseOutcome::Unknown
        };
        let op = *op;
        self.locks.remove(&id);
        self.emit(id, Some(op), Event::Released { outcome });
    }

    fn on_timer(&mut self, id: LockId, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let opts = lock.opts;
        match &mut lock.phase {
            Phase::Acquiring { op, mode, step: Acquiring::Sleeping { until } } if *until <= now => {
                if let Acquire::Wait { deadline: Some(d) } = mode
                    && *d <= now
                {
                    let op = *op;
                    return self.finish_acquire(id, op, Event::TimedOut);
                }
                self.start_attempt(id, now);
            }
            Phase::Acquiring { step: Acquiring::Attempt(t), .. } if opts.valid_until(t.sent_at) <= now => {
                let why = t.fold.give_up();
                self.attempt_failed(id, why, now);
            }
            Phase::Held(held) if held.valid_until <= now => {
                let ops = held.renewal.take().map(|r| r.ops).unwrap_or_default();
                self.lose(id, ops, LostReason::Expired);
            }
            Phase::Held(held) if held.renewal.is_none() && held.next_renew.is_some_and(|t| t <= now) => {
                self.renew(id, None, now);
            }
            _ => {}
        }
    }

    fn subscribe(&mut self, channel: String) {
        let n = self.channels.entry(channel.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.transmits.push_back(Transmit::Subscribe(channel));
        }
    }

    fn unsubscribe(&mut self, channel: &str) {
        if let Some(n) = self.channels.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                self.channels.remove(channel);
                self.transmits.push_back(Transmit::Unsubscribe(channel.to_owned()));
            }
        }
    }
}

/// When a lock's timer is due, derived from its state.
fn wake_at(lock: &QLock) -> Option<Instant> {
    match &lock.phase {
        Phase::Acquiring { step: Acquiring::Sleeping { until }, .. } => Some(*until),
        Phase::Acquiring { step: Acquiring::Attempt(t), .. } => Some(lock.opts.valid_until(t.sent_at)),
        Phase::Held(h) => {
            let renew = if h.renewal.is_none() { h.next_renew } else { None };
            Some(renew.map_or(h.valid_until, |r| r.min(h.valid_until)))
        }
        Phase::Lost { .. } | Phase::Releasing { .. } | Phase::Settling { .. } => None,
    }
}
