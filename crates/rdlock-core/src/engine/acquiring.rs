//! Acquiring: attempts, the wait between them, hand-offs, and the replica count.

use std::time::{Duration, Instant};

use super::lock::{InFlight, Phase, Step};
use super::{Engine, FENCE_TTL, HANDOFF_CLAIM, LockId, Pending};
use crate::command::{Command, Node, RequestId};
use crate::error::LockError;
use crate::event::Event;
use crate::machine::{Lease, Then};
use crate::options::{Confirm, LockOptions, Resource, Sharing};
use crate::reply::{Reply, ServerError, TransportError, acknowledged, confirm_error};
use crate::script::{AcquireArgs, AcquireReply, AcquireRest, Mode, PermitArgs, StoredValue};

impl Engine {
    pub(super) fn send_attempt(&mut self, id: LockId, mode: Mode, now: Instant) {
        let Some(lock) = self.locks.get(&id) else { return };
        let confirm = lock.opts.confirm;
        let route = lock.route;
        let max_age = self.config.replica_count_max_age;
        let fresh = self.shards.get(&route.node).and_then(|s| s.replicas).filter(|&(_, at)| now < at + max_age);
        if confirm.needs_replica_count() && fresh.is_none() {
            // Replicas are the key's primary's own (a cluster's: its shard's), counted there.
            if self.shard(route.node).role_req.is_none() {
                let req = self.request(route, vec![Command::Role], Pending::Role(route.node));
                self.shard(route.node).role_req = Some(req);
            }
            self.shard(route.node).role_waiters.push(id);
            self.set_step(id, Step::Counting);
            return;
        }
        let wanted = confirm.wanted(fresh.map(|(n, _)| n)).unwrap_or(0);
        // A shared key has no queue: every attempt is a plain `SET NX` (the `try` mode).
        let mode = if lock.opts.sharing == Sharing::Queue { mode } else { Mode::Try };
        let queue_ttl = queue_ttl(self.poll_interval(&lock.opts));
        let (fence_ttl, claim, ttl_ms) = (FENCE_TTL, HANDOFF_CLAIM, lock.opts.ttl_ms());
        let rest = AcquireRest { ttl_ms, mode, queue_ttl, fence_ttl, claim };
        let (key, token, client) = (lock.key.as_str(), lock.token, self.client);
        let attempt = match lock.resource.share() {
            None => {
                let with_value = matches!(lock.resource, Resource::Mutex { .. });
                AcquireArgs::for_lock(key, token, client, rest, with_value)
            }
            Some(share) => PermitArgs::for_lock(key, token, client, rest, share),
        };
        let mut commands = Vec::with_capacity(2);
        commands.push(attempt);
        commands.extend(confirm.command(wanted));
        let sent_subscribed = match lock.opts.sharing {
            // The inbox is only looked up: written into the engine's scratch name.
            Sharing::Queue => {
                let mut name = std::mem::take(&mut self.scratch);
                name.clear();
                crate::keys::write_inbox(&mut name, key, client);
                let active = self.subs.is_active(&name);
                self.scratch = name;
                active
            }
            Sharing::Foreign { .. } => self.subs.is_active(&Self::wait_channel(client, key, lock.opts.sharing)),
        };
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.attempted = true;
        }
        let req = self.request(route, commands, Pending::Attempt(id));
        let primary = self.epoch(route.node);
        self.set_step(id, Step::InFlight(InFlight { req, sent_at: now, sent_subscribed, wanted, primary }));
    }

    pub(super) fn on_attempt_reply(
        &mut self,
        id: LockId,
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Acquiring(a) = &mut lock.phase else { return };
        let Step::InFlight(sent) = a.step else { return };
        if sent.req != req {
            return;
        }
        lock.unsure |= reply.is_err();
        let value = match (&reply, lock.resource) {
            (Ok(r), Resource::Mutex { .. }) => r.first().and_then(StoredValue::from_grant).map(Box::new),
            _ => None,
        };
        let outcome = reply.map_err(LockError::from).and_then(|r| parse_attempt(&r, sent.wanted, a.waiter.seen_fence));
        self.attempt_answered(id, sent, outcome, value, now);
    }

    /// What an answered attempt (or a batched confirmation, `batch.rs`) does to the lock.
    pub(super) fn attempt_answered(
        &mut self,
        id: LockId,
        sent: InFlight,
        outcome: Result<Attempt, LockError>,
        value: Option<Box<StoredValue>>,
        now: Instant,
    ) {
        let InFlight { sent_at, sent_subscribed, wanted, primary, .. } = sent;
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Phase::Acquiring(a) = &mut lock.phase else { return };
        let (op, try_only, abandoned, opts, lock_node) = (a.op, a.try_only, a.abandoned, lock.opts, lock.route.node);
        match outcome {
            Err(e) => {
                let transient = e.is_retryable();
                if abandoned {
                    self.send_release(id, Then::Silent, now);
                } else if transient && !try_only {
                    let retry_at = now + self.backoff(&opts);
                    self.set_step(id, Step::Idle { retry_at });
                } else {
                    // The attempt may have run, failed half-way (a script error does not undo
                    // the writes before it), or been answered by a server we cannot read: its
                    // outcome is unknown, so leave nothing behind. The release is owner-checked.
                    self.answer(id, op, Event::Failed(e));
                    self.send_release(id, Then::Silent, now);
                }
            }
            Ok(Attempt::Taken { fence, acked }) => {
                let valid_until = opts.valid_until(sent_at);
                if abandoned {
                    self.send_release(id, Then::Silent, now);
                } else if acked < wanted {
                    self.send_release(id, Then::Emit(op, Event::ReplicationShortfall { acked, wanted }), now);
                } else if valid_until <= now {
                    self.send_release(id, Then::Emit(op, Event::Failed(LockError::NoValidityLeft)), now);
                } else {
                    lock.fetched = value;
                    self.become_held(id, fence, sent_at, valid_until, now);
                    if primary != self.epoch(lock_node) {
                        // Granted by a primary that has since been replaced: check the new one.
                        self.renew_now(id, now);
                    }
                }
            }
            Ok(Attempt::HeldByOther { holder_ttl, fence }) => {
                let granted = a.waiter.saw_holder(fence, sent_at, lock.unsure);
                // Whatever follows, a grant now comes after another holder's: its release
                // will likely hand the lock on.
                lock.contended = true;
                if abandoned {
                    if try_only { self.finish(id, now) } else { self.send_release(id, Then::Silent, now) }
                } else if try_only {
                    self.answer(id, op, Event::Busy { holder_ttl });
                    self.finish(id, now);
                } else if opts.sharing != Sharing::Queue {
                    self.wait_shared(id, holder_ttl, sent_subscribed, now);
                } else if let Some(fence) = granted {
                    // A hand-off was announced while this attempt was in flight, with a fence
                    // above the one this attempt saw: it came after the attempt ran.
                    self.on_handoff(id, fence, None, now);
                } else {
                    self.wait_queued(id, holder_ttl, sent_subscribed, now);
                }
            }
        }
    }

    /// A queued attempt found another holder: wait for a hand-off on our inbox, or poll.
    fn wait_queued(&mut self, id: LockId, holder_ttl: Option<Duration>, sent_subscribed: bool, now: Instant) {
        let client = self.client;
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let inbox = Self::wait_channel(client, &lock.key, Sharing::Queue);
        let opts = lock.opts;
        let Some(a) = lock.acquisition() else { return };
        if !a.waiter.subscribed {
            a.waiter.subscribed = true;
            self.waiting += 1;
            let mut out = Vec::new();
            self.subs.add(&inbox, id, &mut out);
            self.transmits.extend(out);
        }
        if !sent_subscribed && self.subs.is_active(&inbox) {
            // Subscribed while the attempt was in flight: a hand-off may have slipped between
            // the two (a claim nobody heard), so check once more.
            self.recheck(id, now);
        } else {
            let cap = self.poll_interval(&opts).as_millis() as u64;
            let jittered = self.rng.between(cap / 2, cap);
            let wait = match holder_ttl {
                Some(t) => (t + Duration::from_millis(1)).min(Duration::from_millis(jittered)),
                None => Duration::from_millis(jittered),
            };
            self.set_step(id, Step::Idle { retry_at: now + wait });
        }
    }

    /// The lock was handed to us while we waited, and we heard it: the release found our
    /// inbox subscribed and set the key to our token for our whole TTL, after our anchor was
    /// sent, and after `floor` when there is one (an instant the message was published after:
    /// it was read on the pub/sub connection after a `PING`'s answer,
    /// `Engine::handle_pubsub_answer`). So we hold it at once, valid from the later of the two,
    /// with no round trip. A confirmation (the idempotent attempt, which finds the key ours and
    /// extends it) is sent instead when a confirm policy needs its `WAIT` behind a write of
    /// ours, when less than half the TTL would be left (its validity counts from its own send
    /// time), or for a mutex (its grant returns the value).
    pub(super) fn on_handoff(&mut self, id: LockId, fence: u64, floor: Option<Instant>, now: Instant) {
        self.stats.handoffs_heard += 1;
        let held_at_once = self.locks.get_mut(&id).and_then(|lock| {
            let (opts, resource) = (lock.opts, lock.resource);
            let waiter = &lock.acquisition()?.waiter;
            let (from, valid_until) = waiter.heard_valid_until(&opts, floor, now)?;
            // A mutex's value comes with a grant: its holder confirms, which reads it.
            let reads_value = matches!(resource, Resource::Mutex { .. });
            (opts.confirm == Confirm::None && !reads_value).then_some((from, valid_until))
        });
        match held_at_once {
            Some((anchor, valid_until)) => self.become_held(id, fence, anchor, valid_until, now),
            None if self.confirms_by_batch(id) => self.send_confirm(id, now),
            None => self.send_attempt(id, Mode::Retry, now),
        }
    }

    /// The re-check of a waiter whose subscription became active after its attempt was sent:
    /// a hand-off made in between was nobody's to hear. A plain lock checks with `confirm.lua`,
    /// batched with the others (300,000 waiters subscribing at once are ~600 calls, not
    /// 300,000 attempts): it holds the key if the key is its own (a claim nobody heard),
    /// reports the counter as a retry does if the key is another's and its entry is still
    /// queued, and attempts as usual otherwise (`docs/protocol.md`, *Waiting*). Others retry.
    pub(super) fn recheck(&mut self, id: LockId, now: Instant) {
        self.stats.rechecks += 1;
        if self.confirms_by_batch(id) {
            self.send_confirm(id, now);
        } else {
            self.send_attempt(id, Mode::Retry, now);
        }
    }

    /// Whether a heard hand-off of `id` is confirmed by `confirm.lua` (batched with the others
    /// heard at the same moment) rather than by a whole attempt: a plain lock, with no `WAIT`
    /// to send behind a write and no value to read.
    fn confirms_by_batch(&self, id: LockId) -> bool {
        self.locks.get(&id).is_some_and(|l| {
            matches!(l.resource, Resource::Lock) && l.opts.confirm == Confirm::None && l.opts.sharing == Sharing::Queue
        })
    }

    pub(super) fn become_held(&mut self, id: LockId, fence: u64, from: Instant, valid_until: Instant, now: Instant) {
        self.drop_subscription(id, now);
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Some(op) = lock.acquisition().map(|a| a.op) else { return };
        let lease = Lease::new(&lock.opts, fence, from, valid_until);
        if lock.opts.auto_renew {
            self.renewals.insert((lease.renew_before, id));
        }
        self.set_phase(id, Phase::Held(lease));
        self.answer(id, op, Event::Acquired { fence, valid_until });
    }

    pub(super) fn on_role_reply(&mut self, node: Node, reply: Result<Vec<Reply>, TransportError>, now: Instant) {
        let shard = self.shard(node);
        shard.role_req = None;
        let waiters = std::mem::take(&mut shard.role_waiters);
        match reply.map_err(LockError::from).and_then(|r| parse_role(&r)) {
            Ok(n) => {
                // `ROLE` lists only connected replicas. A replica whose link is down can still
                // be promoted, so "all" means every replica this engine has seen: the count
                // never drops, and a lock cannot be confirmed while a known replica is away.
                let shard = self.shard(node);
                let n = n.max(shard.replicas.map_or(0, |(m, _)| m)).max(shard.floor);
                shard.replicas = Some((n, now));
                for id in waiters {
                    // A try-lock must not queue: only waits use the idempotent queuing mode.
                    let try_only = self.locks.get_mut(&id).and_then(|l| l.acquisition()).is_some_and(|a| a.try_only);
                    self.send_attempt(id, if try_only { Mode::Try } else { Mode::Retry }, now);
                }
            }
            Err(e) => {
                for id in waiters {
                    let Some(lock) = self.locks.get_mut(&id) else { continue };
                    let opts = lock.opts;
                    let Some(a) = lock.acquisition() else { continue };
                    if e.is_retryable() && !a.try_only {
                        // A primary that is failing over, restarting or unreachable for a moment:
                        // a wait counts again later, as its attempts retry, within its deadline.
                        let retry_at = now + self.backoff(&opts);
                        self.set_step(id, Step::Idle { retry_at });
                        continue;
                    }
                    let op = a.op;
                    self.answer(id, op, Event::Failed(e.clone()));
                    self.leave_counting(id, now);
                }
            }
        }
    }

    /// Ends a lock that is counting replicas. A wait counts again when its count grows
    /// stale, after attempts that may have queued it or even been handed the key: such a
    /// lock leaves through the release script, or its queue entry (or key) is left behind.
    pub(super) fn leave_counting(&mut self, id: LockId, now: Instant) {
        if let Some(node) = self.locks.get(&id).map(|l| l.route.node) {
            self.shard(node).role_waiters.retain(|&w| w != id);
        }
        if self.locks.get(&id).is_some_and(|l| l.attempted) {
            self.send_release(id, Then::Silent, now);
        } else {
            self.finish(id, now);
        }
    }

    /// Moves an acquiring lock to its next step.
    pub(super) fn set_step(&mut self, id: LockId, step: Step) {
        if let Some(a) = self.locks.get_mut(&id).and_then(|l| l.acquisition()) {
            a.step = step;
            self.reschedule(id);
        }
    }

    /// The lock's poll cap, stretched when many locks share the engine's poll budget.
    /// Only waiting locks share the budget: held ones do not poll.
    pub(super) fn poll_interval(&self, opts: &LockOptions) -> Duration {
        let budget = u64::from(self.config.polls_per_second.max(1));
        let share = Duration::from_micros((self.waiting as u64).saturating_mul(1_000_000) / budget);
        opts.poll_cap.max(share)
    }

    fn backoff(&mut self, opts: &LockOptions) -> Duration {
        let cap = (opts.poll_cap.as_millis() as u64).clamp(1, 50);
        Duration::from_millis(self.rng.between(cap / 5, cap))
    }
}

/// How long the wait queue outlives its last push: waiters refresh it on every poll.
/// Tied to the poll interval actually used (stretched or not), so the queue cannot expire
/// between a waiter's polls.
pub(super) fn queue_ttl(poll_interval: Duration) -> Duration {
    poll_interval.saturating_mul(4).max(Duration::from_secs(60))
}

pub(super) enum Attempt {
    Taken { fence: u64, acked: u32 },
    HeldByOther { holder_ttl: Option<Duration>, fence: Option<u64> },
}

/// Reads an attempt's replies strictly ([`AcquireReply::parse`]); a grant must also carry a
/// fence above every fence this lock has seen (`floor`): a fence that goes backwards is a
/// server the protocol cannot trust, never a grant.
fn parse_attempt(replies: &[Reply], wanted: u32, floor: u64) -> Result<Attempt, LockError> {
    let bad = |what: &Reply| LockError::UnexpectedReply(format!("acquire: {what:?}"));
    let first = replies.first().ok_or_else(|| LockError::UnexpectedReply("acquire: empty".into()))?;
    if let Reply::Error(e) = first {
        return Err(LockError::Server(e.clone()));
    }
    match AcquireReply::parse(first).ok_or_else(|| bad(first))? {
        AcquireReply::Granted { fence } if fence <= floor => {
            Err(LockError::UnexpectedReply(format!("acquire: fence {fence} is not above {floor}, one already seen")))
        }
        AcquireReply::Granted { fence } => {
            let acked = if wanted == 0 {
                0
            } else {
                match replies.get(1) {
                    Some(Reply::Error(e)) => return Err(confirm_error(e)),
                    Some(r) => acknowledged(r, wanted).ok_or_else(|| bad(r))?,
                    None => return Err(LockError::UnexpectedReply("acquire: no WAIT reply".into())),
                }
            };
            Ok(Attempt::Taken { fence, acked })
        }
        AcquireReply::Held { holder_ttl, fence } => Ok(Attempt::HeldByOther { holder_ttl, fence }),
    }
}

fn parse_role(replies: &[Reply]) -> Result<u32, LockError> {
    let first = replies.first().ok_or_else(|| LockError::UnexpectedReply("role: empty".into()))?;
    if let Reply::Error(e) = first {
        return Err(LockError::Server(e.clone()));
    }
    let role = first.as_array().ok_or_else(|| LockError::UnexpectedReply(format!("role: {first:?}")))?;
    match role.first() {
        Some(Reply::Data(d)) if d == b"master" => {
            Ok(role.get(2).and_then(Reply::as_array).map_or(0, |r| r.len() as u32))
        }
        _ => Err(LockError::Server(ServerError::new("READONLY", "connected to a replica: locks need the primary"))),
    }
}
