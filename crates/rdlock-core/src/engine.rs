//! The engine: every lock of one client, as one state machine each, plus what they share
//! (request ids, the pub/sub channels, batched renewals, the replica count and the timers).
//!
//! A lock's life:
//!
//! ```text
//!            acquire               hand-off message (confirm the claim) / poll
//!   (new) ──────────► Acquiring ◄───────────────────────────┐
//!                       │  │  └─ held by another ─► Waiting ─┘── deadline ──► (leave) ──► Done
//!                       │  └─ too few replicas / no validity ─► Releasing ──► Done
//!                       ▼
//!                     Held ◄──► renewing (batched)      ── not owner / validity over ──► Held(lost)
//!                       │
//!                       └─ release / drop ─► Releasing ──► Done
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::command::{Command, Request, RequestId, Route, Transmit};
use crate::error::{EntropyUnavailable, InvalidInput, LockError, Misuse};
use crate::event::{Event, LostReason, ReleaseOutcome, Warning};
use crate::keys::{LockKeys, slot};
use crate::options::{Acquire, Confirm, LockOptions, Sharing};
use crate::reply::{Reply, ServerError, TransportError};
use crate::script::{AcquireReply, Script};
use crate::subscriptions::Subscriptions;
use crate::token::{Rng, hex, parse_hex};

/// How long a fence counter lives after it is seeded. Losing it is harmless: a missing
/// counter is re-seeded from the server clock, which is ahead of every token issued before.
pub const FENCE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest pause between the retries of a release that got no answer.
const RELEASE_BACKOFF_CAP: Duration = Duration::from_secs(5);
/// After a release is answered, when an attempt of unknown outcome may still run on the
/// server (it was sent on a link that stalled), the release is repeated this long after it.
const RECHECKS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(2)];
/// How long a hand-off that nobody heard waits for its waiter. The release (or an attempt that
/// finds the lock free behind a queue) publishes the hand-off on the queue head's inbox; when
/// no connection receives it (the waiter's client crashed, was dropped, or is not subscribed
/// yet), the key holds the head's token for this long only (or the head's TTL, when
/// shorter), and the waiter owns the lock only once it confirms. A waiter that has died or
/// gone away so holds up the others for one claim, not for its TTL. Far above a round trip,
/// and above the default poll cap, so that a live waiter that was not subscribed still
/// confirms at its next attempt.
pub const HANDOFF_CLAIM: Duration = Duration::from_millis(250);

/// Identifies one lock within an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(pub u64);

/// Settings shared by every lock of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The server is a cluster: batched renewals only group keys of one hash slot.
    pub cluster: bool,
    /// How long an idle channel stays subscribed.
    pub subscription_linger: Duration,
    /// Most locks renewed by one script call.
    pub max_renew_batch: usize,
    /// How long a replica count (for `Confirm::All` and `Confirm::Majority`) is trusted.
    pub replica_count_max_age: Duration,
    /// Most polls per second the engine's waiters make together: with many waiters, each
    /// one's poll interval stretches beyond its poll cap so that waiting stays cheap for the
    /// server (hand-off messages, not polls, are what wake them).
    pub polls_per_second: u32,
    /// The database whose keyspace notifications for deletions and expiries the server
    /// publishes (`notify-keyspace-events` with `K`, `g` and `x`), if it does: waiters on
    /// keys shared with foreign clients then wake when a foreign holder's key goes, instead
    /// of at their next poll. Drivers detect it at connect ([`Engine::set_keyspace_db`]).
    /// Not used in a cluster, where notifications stay on the key's node.
    pub keyspace_db: Option<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cluster: false,
            subscription_linger: Duration::from_secs(5),
            max_renew_batch: 512,
            replica_count_max_age: Duration::from_secs(1),
            polls_per_second: 1000,
            keyspace_db: None,
        }
    }
}

/// A read-only view of a lock, for guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The fencing token, once acquired.
    pub fence: Option<u64>,
    /// The end of validity, once acquired.
    pub valid_until: Option<Instant>,
    /// Set once the lease is lost.
    pub lost: Option<LostReason>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `try_lock`: do not queue.
    Try,
    /// The first attempt of a wait: queue on failure.
    First,
    /// A later attempt (or a confirmation): idempotent, queues only if not queued.
    Retry,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Try => "try",
            Mode::First => "first",
            Mode::Retry => "retry",
        }
    }
}

/// What to tell the caller once a release completes.
#[derive(Debug)]
enum Then {
    /// The caller asked to release: report [`Event::Released`].
    Report,
    /// Report this instead (an acquisition undone).
    Emit(Event),
    /// Nobody is listening (a dropped guard, an abandoned wait).
    Silent,
}

#[derive(Debug)]
struct Held {
    fence: u64,
    valid_until: Instant,
    /// Renewal window: a batch may take the lock from `renew_after`; it is due at `renew_before`.
    renew_after: Instant,
    renew_before: Instant,
    renewing: Option<RequestId>,
    lost: Option<LostReason>,
}

#[derive(Debug)]
enum State {
    /// Waiting for the replica count before the first attempt.
    Counting,
    Acquiring {
        req: RequestId,
        sent_at: Instant,
        /// The channel was subscribed when the attempt was sent: no hand-off can be missed.
        sent_subscribed: bool,
        wanted: u32,
    },
    Waiting {
        retry_at: Instant,
    },
    Held(Held),
    Releasing(Release),
}

/// An owner-checked release (also the clean-up of an abandoned or failed acquisition) until
/// the server has answered it, and after that while an attempt of unknown outcome may still
/// take the key.
#[derive(Debug)]
struct Release {
    /// The request in flight; `None` while waiting for `retry_at`.
    req: Option<RequestId>,
    retry_at: Option<Instant>,
    attempts: u32,
    /// The lease was valid when the release began: only then can it report `Released`.
    valid_at_start: bool,
    then: Then,
    /// Retries stop here: by then every key our requests could have set has expired.
    give_up: Instant,
    /// Repeats still due after an answer (see [`RECHECKS`]).
    rechecks_left: usize,
}

#[derive(Debug)]
struct Lock {
    /// The user's key; the other names are derived when needed (a waiting lock stays small).
    key: String,
    token: u128,
    opts: LockOptions,
    route: Route,
    try_only: bool,
    deadline: Option<Instant>,
    state: State,
    /// Holds a reference on its channel.
    subscribed: bool,
    /// A hand-off announced while an attempt was in flight, with its fence.
    granted: Option<u64>,
    /// When the latest attempt that found the lock held by another was sent: a hand-off
    /// announced after it set the key after that instant, so the lease counts from it.
    anchor: Option<Instant>,
    /// The highest fence a retry saw held by someone else: a hand-off at or below it is stale.
    seen_fence: u64,
    /// The caller gave up while a request was in flight: clean up when it returns.
    abandoned: bool,
    /// An attempt was sent: the server may have queued the lock, or handed it the key.
    attempted: bool,
    /// An attempt got no answer: it may still run on the server, even after a release.
    unsure: bool,
    /// Shared mode: the key was announced free while an attempt was in flight.
    freed: bool,
    timer: Option<Instant>,
}

#[derive(Debug)]
enum Pending {
    Attempt(LockId),
    Release(LockId),
    Renew { locks: Vec<LockId>, sent_at: Instant, wanted: u32 },
    Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Lock(LockId),
    Linger,
}

/// All locks of one client. See the crate documentation for the run loop.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rng: Rng,
    /// This client's id in its waiters' inboxes: hand-offs reach it alone.
    client: u64,
    next_lock: u64,
    next_req: u64,
    /// Boxed: a map slot then costs a pointer, not a whole lock, for every spare bucket.
    locks: HashMap<LockId, Box<Lock>>,
    by_token: HashMap<u128, LockId>,
    pending: HashMap<RequestId, Pending>,
    subs: Subscriptions,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    /// Auto-renewing held locks by the start of their renewal window.
    renewals: BTreeSet<(Instant, LockId)>,
    /// Locks that wait (subscribed to their channel): they share the poll budget.
    waiting: usize,
    replicas: Option<(u32, Instant)>,
    role_req: Option<RequestId>,
    role_waiters: Vec<LockId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(LockId, Event)>,
    warnings: VecDeque<Warning>,
}

impl Engine {
    /// A new engine with no locks, its owner tokens drawn from a generator seeded with 256
    /// bits from the operating system now: every engine has its own token sequence, whatever
    /// configuration it was made from.
    ///
    /// # Errors
    ///
    /// [`EntropyUnavailable`] when the operating system cannot supply random bytes.
    pub fn new(config: EngineConfig) -> Result<Self, EntropyUnavailable> {
        Ok(Self::with_rng(config, Rng::from_os()?))
    }

    /// FOR TESTS ONLY: an engine whose owner tokens and jitter come from `seed`, so that a
    /// test or simulation replays exactly. Engines with the same seed draw the same tokens
    /// and would confirm each other's locks: never use it against a shared server.
    pub fn with_test_seed(config: EngineConfig, seed: u64) -> Self {
        Self::with_rng(config, Rng::from_test_seed(seed))
    }

    fn with_rng(config: EngineConfig, mut rng: Rng) -> Self {
        Self {
            client: rng.token_bits() as u64,
            rng,
            subs: Subscriptions::new(config.subscription_linger),
            config,
            next_lock: 0,
            next_req: 0,
            locks: HashMap::new(),
            by_token: HashMap::new(),
            pending: HashMap::new(),
            timers: BinaryHeap::new(),
            renewals: BTreeSet::new(),
            waiting: 0,
            replicas: None,
            role_req: None,
            role_waiters: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            warnings: VecDeque::new(),
        }
    }

    // ---------------------------------------------------------------- caller actions

    /// Starts acquiring `key`. The outcome arrives as an event for the returned id:
    /// [`Event::Acquired`], [`Event::Busy`], [`Event::TimedOut`],
    /// [`Event::ReplicationShortfall`] or [`Event::Failed`].
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] for a key or options that cannot be valid (empty, reserved or too
    /// long key; TTL, poll cap or confirmation out of range); nothing is sent.
    pub fn acquire(
        &mut self,
        key: &str,
        opts: LockOptions,
        how: Acquire,
        now: Instant,
    ) -> Result<LockId, InvalidInput> {
        opts.validate()?;
        let keys = LockKeys::new(key)?;
        let (try_only, deadline) = match how {
            Acquire::Try => (true, None),
            Acquire::Wait { deadline } => (false, deadline),
        };
        if deadline.is_some_and(|d| d <= now) {
            return Err(InvalidInput::DeadlinePassed);
        }
        let id = LockId(self.next_lock);
        self.next_lock += 1;
        let token = self.rng.token_bits();
        let route = if opts.confirm == Confirm::None { Route::Commands } else { Route::Confirm };
        self.by_token.insert(token, id);
        self.locks.insert(
            id,
            Box::new(Lock {
                key: keys.lock,
                token,
                opts,
                route,
                try_only,
                deadline,
                state: State::Counting,
                subscribed: false,
                granted: None,
                anchor: None,
                seen_fence: 0,
                abandoned: false,
                attempted: false,
                unsure: false,
                freed: false,
                timer: None,
            }),
        );
        self.send_attempt(id, if try_only { Mode::Try } else { Mode::First }, now);
        Ok(id)
    }

    /// Releases a held lock (also one whose lease was lost: the key may still be ours).
    /// The outcome arrives as [`Event::Released`] or [`Event::Failed`].
    ///
    /// # Errors
    ///
    /// [`Misuse`] when the lock is unknown or not held (still acquiring, or already
    /// releasing); nothing changes.
    pub fn release(&mut self, id: LockId, now: Instant) -> Result<(), Misuse> {
        let lock = self.locks.get(&id).ok_or(Misuse::UnknownLock(id))?;
        if !matches!(lock.state, State::Held(_)) {
            return Err(Misuse::NotHeld(id));
        }
        self.send_release(id, Then::Report, now);
        Ok(())
    }

    /// Renews a held lock now (batched with any other lock whose renewal window is open).
    /// The outcome arrives as [`Event::Renewed`] or [`Event::Lost`].
    ///
    /// # Errors
    ///
    /// [`Misuse`] when the lock is unknown, not held, or its lease is already lost.
    pub fn extend(&mut self, id: LockId, now: Instant) -> Result<(), Misuse> {
        let lock = self.locks.get_mut(&id).ok_or(Misuse::UnknownLock(id))?;
        let State::Held(held) = &mut lock.state else { return Err(Misuse::NotHeld(id)) };
        if held.lost.is_some() {
            return Err(Misuse::NotHeld(id));
        }
        if held.renewing.is_none() {
            self.renewals.remove(&(held.renew_after, id));
            held.renew_after = now;
            held.renew_before = now;
            self.renewals.insert((now, id));
            self.renew_due(now);
        }
        Ok(())
    }

    /// The caller no longer cares about this lock (a dropped guard or a cancelled wait): it is
    /// released or leaves the queue in the background, and no further event is reported.
    pub fn abandon(&mut self, id: LockId, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        match &mut lock.state {
            State::Counting => self.leave_counting(id, now),
            State::Acquiring { .. } => lock.abandoned = true,
            State::Waiting { .. } | State::Held(_) => self.send_release(id, Then::Silent, now),
            State::Releasing(r) => r.then = Then::Silent,
        }
    }

    /// A view of the lock, for guards.
    pub fn lock_info(&self, id: LockId) -> Option<LockInfo> {
        let lock = self.locks.get(&id)?;
        Some(match &lock.state {
            State::Held(h) => LockInfo { fence: Some(h.fence), valid_until: Some(h.valid_until), lost: h.lost },
            _ => LockInfo { fence: None, valid_until: None, lost: None },
        })
    }

    /// The lock's owner token as stored in its key (32 lowercase hex digits), so that an
    /// operator can map a key's value to its holder.
    pub fn owner_token(&self, id: LockId) -> Option<String> {
        self.locks.get(&id).map(|l| hex(l.token))
    }

    /// Locks the engine is tracking (held, waiting, or being released).
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether the engine tracks no lock.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Pub/sub channels subscribed or lingering.
    pub fn channels(&self) -> usize {
        self.subs.len()
    }

    // ---------------------------------------------------------------- inputs

    /// A reply to request `id`: one [`Reply`] per command of the request, or the transport
    /// failure that left it unanswered.
    ///
    /// # Errors
    ///
    /// [`Misuse::UnknownRequest`] for a request the engine did not make or has already had
    /// answered; nothing changes.
    pub fn handle_reply(
        &mut self,
        id: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) -> Result<(), Misuse> {
        let pending = self.pending.remove(&id).ok_or(Misuse::UnknownRequest(id))?;
        match pending {
            Pending::Attempt(lock) => self.on_attempt_reply(lock, id, reply, now),
            Pending::Release(lock) => self.on_release_reply(lock, id, reply, now),
            Pending::Renew { locks, sent_at, wanted } => self.on_renew_reply(&locks, id, sent_at, wanted, reply, now),
            Pending::Role => self.on_role_reply(reply, now),
        }
        Ok(())
    }

    /// A message arrived on a subscribed channel.
    pub fn handle_message(&mut self, channel: &str, payload: &[u8], now: Instant) {
        if self.on_free_notice(channel, payload, now) {
            return;
        }
        let Some((token, fence)) = std::str::from_utf8(payload).ok().and_then(|p| p.split_once(':')) else { return };
        let Some(token) = parse_hex(token) else { return };
        let (Some(&id), Ok(fence)) = (self.by_token.get(&token), fence.parse::<u64>()) else { return };
        let client = self.client;
        let Some(lock) = self.locks.get_mut(&id) else { return };
        if lock.opts.sharing != Sharing::Queue
            || !LockKeys::is_inbox_of(&lock.key, &LockKeys::inbox_suffix(&lock.key, client), channel)
        {
            return;
        }
        match lock.state {
            State::Acquiring { .. } => lock.granted = Some(fence),
            // A fence at or below one a retry saw held by someone else: an old, lost hand-off.
            State::Waiting { .. } if fence > lock.seen_fence => self.on_handoff(id, fence, now),
            // Counting: not queued yet. Held: a duplicate. Releasing: the release covers it.
            _ => {}
        }
    }

    /// The server confirmed a subscription. Waiters on the channel check the lock again,
    /// since a hand-off may have been announced before the subscription took effect.
    pub fn handle_subscribed(&mut self, channel: &str, now: Instant) {
        for id in self.subs.confirmed(channel) {
            if matches!(self.locks.get(&id).map(|l| &l.state), Some(State::Waiting { .. })) {
                self.send_attempt(id, Mode::Retry, now);
            }
        }
    }

    /// The pub/sub connection was lost (or replaced): every wanted channel is subscribed
    /// again, and each waiter checks its lock once the subscription is back.
    pub fn handle_subscriptions_lost(&mut self, _now: Instant) {
        let mut out = Vec::new();
        self.subs.reset(&mut out);
        self.transmits.extend(out);
    }

    /// The server refuses to subscribe to `channel` (an ACL without the channel's rights:
    /// `NOPERM`), and the driver has stopped retrying: every wait on it fails with the
    /// server's error and leaves the queue. A wait cannot be trusted to poll forever in its
    /// place: a lost message would then cost a poll every time, unnoticed.
    pub fn handle_subscription_refused(&mut self, channel: &str, error: ServerError, now: Instant) {
        if LockKeys::is_keyspace_channel(channel) {
            self.keyspace_refused(channel, now);
            return;
        }
        for id in self.subs.waiters(channel) {
            let Some(lock) = self.locks.get_mut(&id) else { continue };
            let failed = Event::Failed(LockError::Server(error.clone()));
            match lock.state {
                State::Waiting { .. } => {
                    self.events.push_back((id, failed));
                    self.send_release(id, Then::Silent, now);
                }
                State::Acquiring { .. } if !lock.abandoned => {
                    lock.abandoned = true;
                    self.events.push_back((id, failed));
                    self.drop_subscription(id, now);
                    self.reschedule(id);
                }
                _ => {}
            }
        }
    }

    /// Time has reached `now`: fire every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Linger => {
                    let mut out = Vec::new();
                    self.subs.expire(now, &mut out);
                    self.transmits.extend(out);
                }
                TimerKey::Lock(id) => {
                    let Some(lock) = self.locks.get_mut(&id) else { continue };
                    if lock.timer != Some(at) {
                        continue;
                    }
                    lock.timer = None;
                    self.on_lock_timer(id, now);
                    self.reschedule(id);
                }
            }
        }
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next outcome to report.
    pub fn poll_event(&mut self) -> Option<(LockId, Event)> {
        self.events.pop_front()
    }

    /// The next thing to log about how keys are used.
    pub fn poll_warning(&mut self) -> Option<Warning> {
        self.warnings.pop_front()
    }

    /// When [`Engine::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            let live = match key {
                TimerKey::Linger => true,
                TimerKey::Lock(id) => self.locks.get(&id).is_some_and(|l| l.timer == Some(at)),
            };
            if live {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    // ---------------------------------------------------------------- acquiring

    fn send_attempt(&mut self, id: LockId, mode: Mode, now: Instant) {
        let Some(lock) = self.locks.get(&id) else { return };
        let confirm = lock.opts.confirm;
        let fresh = self.replicas.filter(|&(_, at)| now < at + self.config.replica_count_max_age);
        if confirm.needs_replica_count() && fresh.is_none() {
            if self.role_req.is_none() {
                let req = self.request(lock.route, vec![Command::Role], Pending::Role);
                self.role_req = Some(req);
            }
            self.role_waiters.push(id);
            self.set_state(id, State::Counting);
            return;
        }
        let wanted = confirm.wanted(fresh.map(|(n, _)| n)).unwrap_or(0);
        // A shared key has no queue: every attempt is a plain `SET NX` (the `try` mode).
        let mode = if lock.opts.sharing == Sharing::Queue { mode } else { Mode::Try };
        let keys = LockKeys::derive(&lock.key);
        let mut commands = vec![Command::Script {
            script: Script::Acquire,
            keys: vec![keys.lock, keys.fence, keys.queue],
            args: vec![
                hex(lock.token),
                lock.opts.ttl_ms().to_string(),
                mode.arg().to_owned(),
                queue_ttl(self.poll_interval(&lock.opts)).as_millis().to_string(),
                FENCE_TTL.as_millis().to_string(),
                HANDOFF_CLAIM.as_millis().to_string(),
                LockKeys::inbox_suffix(&lock.key, self.client),
            ],
        }];
        if let (true, Some(timeout)) = (wanted > 0, confirm.timeout()) {
            commands.push(Command::Wait { replicas: wanted, timeout_ms: timeout.as_millis().max(1) as u64 });
        }
        let sent_subscribed = self.subs.is_active(&Self::wait_channel(self.client, &lock.key, lock.opts.sharing));
        let route = lock.route;
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.attempted = true;
        }
        let req = self.request(route, commands, Pending::Attempt(id));
        self.set_state(id, State::Acquiring { req, sent_at: now, sent_subscribed, wanted });
    }

    fn on_attempt_reply(
        &mut self,
        id: LockId,
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let State::Acquiring { req: expected, sent_at, sent_subscribed, wanted } = lock.state else { return };
        if expected != req {
            return;
        }
        lock.unsure |= reply.is_err();
        let outcome = reply.map_err(LockError::from).and_then(|r| parse_attempt(&r, wanted, lock.seen_fence));
        let (try_only, abandoned, opts) = (lock.try_only, lock.abandoned, lock.opts);
        match outcome {
            Err(e) => {
                let transient = e.is_retryable();
                if abandoned {
                    self.send_release(id, Then::Silent, now);
                } else if transient && !try_only {
                    let retry_at = now + self.backoff(&opts);
                    self.set_state(id, State::Waiting { retry_at });
                } else {
                    // The attempt may have run, failed half-way (a script error does not undo
                    // the writes before it), or been answered by a server we cannot read: its
                    // outcome is unknown, so leave nothing behind. The release is owner-checked.
                    self.events.push_back((id, Event::Failed(e)));
                    self.send_release(id, Then::Silent, now);
                }
            }
            Ok(Attempt::Taken { fence, acked }) => {
                let valid_until = opts.valid_until(sent_at);
                if abandoned {
                    self.send_release(id, Then::Silent, now);
                } else if acked < wanted {
                    self.send_release(id, Then::Emit(Event::ReplicationShortfall { acked, wanted }), now);
                } else if valid_until <= now {
                    self.send_release(id, Then::Emit(Event::Failed(LockError::NoValidityLeft)), now);
                } else {
                    self.become_held(id, fence, sent_at, valid_until, now);
                }
            }
            Ok(Attempt::HeldByOther { holder_ttl, fence }) => {
                lock.seen_fence = lock.seen_fence.max(fence.unwrap_or(0));
                // The lease of a hand-off we hear counts from here: every hand-off to this
                // lock pops an entry that one of its attempts pushed, so it comes after the
                // first attempt (when no earlier one may have run unanswered), and after a
                // retry whose reported fence is below the hand-off's (a message at or below
                // `seen_fence` is ignored). A retry that saw no counter tells nothing.
                if fence.is_some() || (lock.anchor.is_none() && !lock.unsure) {
                    lock.anchor = Some(sent_at);
                }
                let granted = lock.granted.take().filter(|&g| g > lock.seen_fence);
                if abandoned {
                    if try_only { self.finish(id, now) } else { self.send_release(id, Then::Silent, now) }
                } else if try_only {
                    self.events.push_back((id, Event::Busy { holder_ttl }));
                    self.finish(id, now);
                } else if opts.sharing != Sharing::Queue {
                    self.wait_shared(id, holder_ttl, sent_subscribed, now);
                } else if let Some(fence) = granted {
                    // A hand-off was announced while this attempt was in flight, with a fence
                    // above the one this attempt saw: it came after the attempt ran.
                    self.on_handoff(id, fence, now);
                } else {
                    let inbox = Self::wait_channel(self.client, &lock.key, Sharing::Queue);
                    if !lock.subscribed {
                        lock.subscribed = true;
                        self.waiting += 1;
                        let mut out = Vec::new();
                        self.subs.add(&inbox, id, &mut out);
                        self.transmits.extend(out);
                    }
                    let channel_live = self.subs.is_active(&inbox);
                    if !sent_subscribed && channel_live {
                        // Subscribed while the attempt was in flight: a hand-off may have
                        // slipped between the two, so check once more.
                        self.send_attempt(id, Mode::Retry, now);
                    } else {
                        let cap = self.poll_interval(&opts).as_millis() as u64;
                        let jittered = self.rng.between(cap / 2, cap);
                        let wait = match holder_ttl {
                            Some(t) => (t + Duration::from_millis(1)).min(Duration::from_millis(jittered)),
                            None => Duration::from_millis(jittered),
                        };
                        self.set_state(id, State::Waiting { retry_at: now + wait });
                    }
                }
            }
        }
    }

    /// The lock was handed to us while we waited, and we heard it: the release found our
    /// inbox subscribed and set the key to our token for our whole TTL, after our latest
    /// attempt that saw another holder was sent (the anchor). So we hold it at once, valid
    /// from the anchor, with no round trip. A confirmation (the idempotent attempt, which
    /// finds the key ours and extends it) is sent instead when a confirm policy needs its
    /// `WAIT` behind a write of ours, or when less than half the TTL would be left (a wait
    /// with no fresh anchor): its validity counts from its own send time.
    fn on_handoff(&mut self, id: LockId, fence: u64, now: Instant) {
        if let Some(lock) = self.locks.get(&id)
            && lock.opts.confirm == Confirm::None
            && let Some(anchor) = lock.anchor
        {
            let valid_until = lock.opts.valid_until(anchor);
            if valid_until > now + lock.opts.ttl / 2 {
                self.become_held(id, fence, anchor, valid_until, now);
                return;
            }
        }
        self.send_attempt(id, Mode::Retry, now);
    }

    fn become_held(&mut self, id: LockId, fence: u64, from: Instant, valid_until: Instant, now: Instant) {
        self.drop_subscription(id, now);
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let (renew_after, renew_before) = renew_window(&lock.opts, from);
        if lock.opts.auto_renew {
            self.renewals.insert((renew_after, id));
        }
        lock.granted = None;
        self.set_state(
            id,
            State::Held(Held { fence, valid_until, renew_after, renew_before, renewing: None, lost: None }),
        );
        self.events.push_back((id, Event::Acquired { fence, valid_until }));
    }

    fn on_role_reply(&mut self, reply: Result<Vec<Reply>, TransportError>, now: Instant) {
        self.role_req = None;
        let waiters = std::mem::take(&mut self.role_waiters);
        match reply.map_err(LockError::from).and_then(|r| parse_role(&r)) {
            Ok(n) => {
                // `ROLE` lists only connected replicas. A replica whose link is down can still
                // be promoted, so "all" means every replica this engine has seen: the count
                // never drops, and a lock cannot be confirmed while a known replica is away.
                let n = n.max(self.replicas.map_or(0, |(m, _)| m));
                self.replicas = Some((n, now));
                for id in waiters {
                    // A try-lock must not queue: only waits use the idempotent queuing mode.
                    let try_only = self.locks.get(&id).is_some_and(|l| l.try_only);
                    self.send_attempt(id, if try_only { Mode::Try } else { Mode::Retry }, now);
                }
            }
            Err(e) => {
                for id in waiters {
                    self.events.push_back((id, Event::Failed(e.clone())));
                    self.leave_counting(id, now);
                }
            }
        }
    }

    // ---------------------------------------------------------------- holding

    fn on_lock_timer(&mut self, id: LockId, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let past_deadline = lock.deadline.is_some_and(|d| now >= d);
        match &mut lock.state {
            State::Counting if past_deadline => {
                self.events.push_back((id, Event::TimedOut));
                self.leave_counting(id, now);
            }
            State::Acquiring { .. } if past_deadline && !lock.abandoned => {
                lock.abandoned = true;
                self.events.push_back((id, Event::TimedOut));
            }
            State::Waiting { .. } if past_deadline => {
                self.events.push_back((id, Event::TimedOut));
                self.send_release(id, Then::Silent, now);
            }
            State::Waiting { retry_at } if now >= *retry_at => self.send_attempt(id, Mode::Retry, now),
            State::Held(h) if h.lost.is_none() && now >= h.valid_until => {
                h.lost = Some(LostReason::Expired);
                self.renewals.remove(&(h.renew_after, id));
                self.events.push_back((id, Event::Lost { reason: LostReason::Expired }));
            }
            State::Held(h) if h.lost.is_none() && h.renewing.is_none() && now >= h.renew_before => self.renew_due(now),
            State::Releasing(r) if r.retry_at.is_some_and(|at| now >= at) => self.resend_release(id),
            _ => {}
        }
    }

    /// Renews, in batches, every auto-renewing lock whose renewal window has opened.
    fn renew_due(&mut self, now: Instant) {
        let due: Vec<(Instant, LockId)> = self.renewals.range(..=(now, LockId(u64::MAX))).copied().collect();
        let mut groups: HashMap<(Route, u16, u32), Vec<LockId>> = HashMap::new();
        for entry in due {
            self.renewals.remove(&entry);
            let id = entry.1;
            let Some(lock) = self.locks.get(&id) else { continue };
            let State::Held(h) = &lock.state else { continue };
            if h.lost.is_some() || h.renewing.is_some() {
                continue;
            }
            let slot = if self.config.cluster { slot(&lock.key) } else { 0 };
            let wanted = lock.opts.confirm.wanted(self.replicas.map(|(n, _)| n)).unwrap_or(0);
            groups.entry((lock.route, slot, wanted)).or_default().push(id);
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by_key(|(_, ids)| ids[0]);
        for ((route, _, wanted), ids) in groups {
            for chunk in ids.chunks(self.config.max_renew_batch.max(1)) {
                self.send_renewal(route, wanted, chunk, now);
            }
        }
    }

    fn send_renewal(&mut self, route: Route, wanted: u32, ids: &[LockId], now: Instant) {
        let mut keys = Vec::with_capacity(ids.len());
        let mut args = Vec::with_capacity(ids.len() * 2);
        let mut ttls = Vec::with_capacity(ids.len());
        let mut confirm_timeout = None;
        for id in ids {
            let lock = &self.locks[id];
            keys.push(lock.key.clone());
            args.push(hex(lock.token));
            ttls.push(lock.opts.ttl_ms().to_string());
            confirm_timeout = confirm_timeout.or(lock.opts.confirm.timeout());
        }
        args.extend(ttls);
        let mut commands = vec![Command::Script { script: Script::Extend, keys, args }];
        if let (true, Some(timeout)) = (wanted > 0, confirm_timeout) {
            commands.push(Command::Wait { replicas: wanted, timeout_ms: timeout.as_millis().max(1) as u64 });
        }
        let req = self.request(route, commands, Pending::Renew { locks: ids.to_vec(), sent_at: now, wanted });
        for &id in ids {
            if let Some(State::Held(h)) = self.locks.get_mut(&id).map(|l| &mut l.state) {
                h.renewing = Some(req);
            }
            self.reschedule(id);
        }
    }

    fn on_renew_reply(
        &mut self,
        ids: &[LockId],
        req: RequestId,
        sent_at: Instant,
        wanted: u32,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let results = reply.ok().and_then(|r| parse_renewal(&r, ids.len(), wanted));
        for (i, &id) in ids.iter().enumerate() {
            let Some(lock) = self.locks.get_mut(&id) else { continue };
            let State::Held(h) = &mut lock.state else { continue };
            if h.renewing != Some(req) {
                continue;
            }
            h.renewing = None;
            if h.lost.is_some() {
                continue;
            }
            match results.as_ref().map(|r| r[i]) {
                Some(true) => {
                    h.valid_until = h.valid_until.max(lock.opts.valid_until(sent_at));
                    (h.renew_after, h.renew_before) = renew_window(&lock.opts, sent_at);
                    if lock.opts.auto_renew {
                        self.renewals.insert((h.renew_after, id));
                    }
                    self.events.push_back((id, Event::Renewed { valid_until: h.valid_until }));
                }
                Some(false) => {
                    h.lost = Some(LostReason::NotOwner);
                    self.events.push_back((id, Event::Lost { reason: LostReason::NotOwner }));
                }
                None => {
                    // Unknown outcome: try again soon; validity running out ends it.
                    let cap = (lock.opts.ttl / 10).min(Duration::from_secs(1)).as_millis() as u64;
                    let retry = now + Duration::from_millis(self.rng.between(cap / 2, cap.max(5)));
                    (h.renew_after, h.renew_before) = (retry, retry);
                    self.renewals.insert((retry, id));
                }
            }
            self.reschedule(id);
        }
    }

    // ---------------------------------------------------------------- releasing

    /// Starts releasing (or cleaning up) a lock; `then` says what to tell the caller.
    fn send_release(&mut self, id: LockId, then: Then, now: Instant) {
        self.drop_subscription(id, now);
        let Some(lock) = self.locks.get(&id) else { return };
        let valid_at_start = match &lock.state {
            State::Held(h) => {
                self.renewals.remove(&(h.renew_after, id));
                h.lost.is_none() && now < h.valid_until
            }
            _ => false,
        };
        let give_up = now.checked_add(lock.opts.ttl).unwrap_or(now);
        let rechecks_left = if lock.unsure { RECHECKS.len() } else { 0 };
        let release = Release { req: None, retry_at: None, attempts: 0, valid_at_start, then, give_up, rechecks_left };
        self.set_state(id, State::Releasing(release));
        self.resend_release(id);
    }

    /// Sends the release script (again).
    fn resend_release(&mut self, id: LockId) {
        let Some(lock) = self.locks.get(&id) else { return };
        let keys = LockKeys::derive(&lock.key);
        let entry =
            format!("{}:{}:{}", hex(lock.token), lock.opts.ttl_ms(), LockKeys::inbox_suffix(&lock.key, self.client));
        let commands = vec![match lock.opts.sharing {
            Sharing::Queue => Command::Script {
                script: Script::Release,
                keys: vec![keys.lock, keys.fence, keys.queue],
                args: vec![
                    hex(lock.token),
                    entry,
                    FENCE_TTL.as_millis().to_string(),
                    HANDOFF_CLAIM.as_millis().to_string(),
                ],
            },
            Sharing::Foreign { .. } => Command::Script {
                script: Script::ReleaseShared,
                keys: vec![keys.lock, keys.queue],
                args: vec![hex(lock.token), keys.channel],
            },
        }];
        let route = lock.route;
        let req = self.request(route, commands, Pending::Release(id));
        if let Some(State::Releasing(r)) = self.locks.get_mut(&id).map(|l| &mut l.state) {
            r.req = Some(req);
            r.retry_at = None;
            r.attempts += 1;
        }
        self.reschedule(id);
    }

    fn on_release_reply(
        &mut self,
        id: LockId,
        req: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let State::Releasing(r) = &mut lock.state else { return };
        if r.req != Some(req) {
            return;
        }
        r.req = None;
        let outcome = reply.map_err(LockError::from).and_then(|r| match r.first() {
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            Some(Reply::Int(v @ 0..=2)) => Ok(*v),
            Some(r) => Err(LockError::UnexpectedReply(format!("release: {r:?}"))),
            None => Err(LockError::UnexpectedReply("release: empty".into())),
        });
        if outcome == Ok(2) && lock.opts.sharing != Sharing::Queue {
            self.warnings.push_back(Warning::MixedSharing { key: lock.key.clone() });
        }
        // The caller hears at the first answer or the first failure; the rest is silent.
        let known = |held: bool| if held { ReleaseOutcome::Released } else { ReleaseOutcome::NotHeld };
        let event = match (&outcome, std::mem::replace(&mut r.then, Then::Silent)) {
            (_, Then::Silent) => None,
            (_, Then::Emit(e)) => Some(e),
            // Only the first attempt's answer tells: after a lost one, "not ours" may be our
            // own earlier delete, or an expiry, or a restart.
            (Ok(v), Then::Report) if r.attempts == 1 => {
                Some(Event::Released { outcome: known(r.valid_at_start && *v > 0) })
            }
            (Ok(_), Then::Report) => Some(Event::Released { outcome: ReleaseOutcome::Unknown }),
            (Err(e), Then::Report) if e.is_retryable() => Some(Event::Released {
                outcome: if r.valid_at_start { ReleaseOutcome::Unknown } else { ReleaseOutcome::NotHeld },
            }),
            (Err(e), Then::Report) => Some(Event::Failed(e.clone())),
        };
        if let Some(e) = event {
            self.events.push_back((id, e));
        }
        match outcome {
            Err(e) if e.is_retryable() && now < r.give_up => {
                let pause = RELEASE_BACKOFF_CAP.min(Duration::from_millis(50) * 2u32.pow(r.attempts.min(10)));
                r.retry_at = Some(now + pause);
                self.reschedule(id);
            }
            // Answered: repeat it while an attempt of ours may still take the key.
            Ok(_) if r.rechecks_left > 0 => {
                let delay = RECHECKS[RECHECKS.len() - r.rechecks_left];
                r.rechecks_left -= 1;
                r.retry_at = Some(now + delay);
                self.reschedule(id);
            }
            _ => self.finish(id, now),
        }
    }

    // ---------------------------------------------------------------- plumbing

    fn request(&mut self, route: Route, commands: Vec<Command>, pending: Pending) -> RequestId {
        let id = RequestId(self.next_req);
        self.next_req += 1;
        self.pending.insert(id, pending);
        self.transmits.push_back(Transmit::Request(Request { id, route, commands }));
        id
    }

    fn set_state(&mut self, id: LockId, state: State) {
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.state = state;
            self.reschedule(id);
        }
    }

    /// Sets the lock's timer to its state's next wake-up.
    fn reschedule(&mut self, id: LockId) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let deadline = lock.deadline;
        let wake = match &lock.state {
            State::Counting => deadline,
            State::Acquiring { .. } if !lock.abandoned => deadline,
            State::Acquiring { .. } => None,
            State::Releasing(r) => r.retry_at,
            State::Waiting { retry_at } => Some(deadline.map_or(*retry_at, |d| d.min(*retry_at))),
            State::Held(h) if h.lost.is_some() => None,
            State::Held(h) if h.renewing.is_none() && self.renewals.contains(&(h.renew_after, id)) => {
                Some(h.valid_until.min(h.renew_before))
            }
            State::Held(h) => Some(h.valid_until),
        };
        if wake != lock.timer {
            lock.timer = wake;
            if let Some(at) = wake {
                self.timers.push(Reverse((at, TimerKey::Lock(id))));
            }
        }
    }

    fn drop_subscription(&mut self, id: LockId, now: Instant) {
        let client = self.client;
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let was_waiting = std::mem::take(&mut lock.subscribed);
        self.waiting -= usize::from(was_waiting);
        let channel = Self::wait_channel(client, &lock.key, lock.opts.sharing);
        if was_waiting && let Some(at) = self.subs.remove(&channel, id, now) {
            self.timers.push(Reverse((at, TimerKey::Linger)));
        }
        if was_waiting
            && let Some(channel) = self.keyspace_channel(id)
            && let Some(at) = self.subs.remove(&channel, id, now)
        {
            self.timers.push(Reverse((at, TimerKey::Linger)));
        }
    }

    /// Ends a lock that is counting replicas. A wait counts again when its count grows
    /// stale, after attempts that may have queued it or even been handed the key: such a
    /// lock leaves through the release script, or its queue entry (or key) is left behind.
    fn leave_counting(&mut self, id: LockId, now: Instant) {
        self.role_waiters.retain(|&w| w != id);
        if self.locks.get(&id).is_some_and(|l| l.attempted) {
            self.send_release(id, Then::Silent, now);
        } else {
            self.finish(id, now);
        }
    }

    fn finish(&mut self, id: LockId, now: Instant) {
        self.drop_subscription(id, now);
        if let Some(lock) = self.locks.remove(&id) {
            self.by_token.remove(&lock.token);
            if let State::Held(h) = &lock.state {
                self.renewals.remove(&(h.renew_after, id));
            }
        }
    }

    /// The channel a wait on `key` listens to: in queue mode this client's inbox for the key
    /// (hand-offs), for a shared key the key's channel (its free notices).
    fn wait_channel(client: u64, key: &str, sharing: Sharing) -> String {
        match sharing {
            Sharing::Queue => LockKeys::inbox_of(key, &LockKeys::inbox_suffix(key, client)),
            Sharing::Foreign { .. } => LockKeys::channel_of(key),
        }
    }

    /// The channel hand-offs to this client's waiters on `key` are published on (tests and
    /// tools that watch hand-offs subscribe to it).
    pub fn inbox_of(&self, key: &str) -> Result<String, InvalidInput> {
        let keys = LockKeys::new(key)?;
        Ok(Self::wait_channel(self.client, &keys.lock, Sharing::Queue))
    }

    /// The lock's poll cap, stretched when many locks share the engine's poll budget.
    /// Only waiting locks share the budget: held ones do not poll.
    fn poll_interval(&self, opts: &LockOptions) -> Duration {
        let budget = u64::from(self.config.polls_per_second.max(1));
        let share = Duration::from_micros((self.waiting as u64).saturating_mul(1_000_000) / budget);
        opts.poll_cap.max(share)
    }

    fn backoff(&mut self, opts: &LockOptions) -> Duration {
        let cap = (opts.poll_cap.as_millis() as u64).clamp(1, 50);
        Duration::from_millis(self.rng.between(cap / 5, cap))
    }
}

// ---------------------------------------------------------------- shared mode

/// The payload a shared-mode release publishes on the lock's channel.
const FREE: &[u8] = b"free";

impl Engine {
    /// Sets [`EngineConfig::keyspace_db`]: drivers call it once they know whether the server
    /// publishes keyspace notifications, before the first lock.
    pub fn set_keyspace_db(&mut self, db: Option<u32>) {
        self.config.keyspace_db = db;
    }

    /// The keyspace notification channel a waiter on this shared key listens to, if any.
    fn keyspace_channel(&self, id: LockId) -> Option<String> {
        let lock = self.locks.get(&id)?;
        let db = self.config.keyspace_db.filter(|_| !self.config.cluster)?;
        (lock.opts.sharing != Sharing::Queue).then(|| LockKeys::keyspace_channel_of(&lock.key, db))
    }

    /// A shared-mode attempt found the key held: wait, listening for the key to be freed.
    fn wait_shared(&mut self, id: LockId, holder_ttl: Option<Duration>, sent_subscribed: bool, now: Instant) {
        let keyspace = self.keyspace_channel(id);
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Some(courtesy) = lock.opts.sharing.courtesy() else { return };
        let channel = LockKeys::channel_of(&lock.key);
        let freed = std::mem::take(&mut lock.freed);
        let mut opts = lock.opts;
        if !lock.subscribed {
            lock.subscribed = true;
            self.waiting += 1;
            let mut out = Vec::new();
            self.subs.add(&channel, id, &mut out);
            if let Some(ks) = &keyspace {
                self.subs.add(ks, id, &mut out);
            }
            self.transmits.extend(out);
        }
        let live = self.subs.is_active(&channel) && keyspace.as_ref().is_none_or(|k| self.subs.is_active(k));
        let wait = if freed || (!sent_subscribed && live) {
            // Freed while the attempt was in flight, or subscribed meanwhile (a notice may
            // have slipped between the two): try again, after the courtesy delay.
            self.courtesy_delay(courtesy)
        } else {
            // Without keyspace notifications a foreign release is seen only by polling: poll
            // as often as a foreign client does.
            if keyspace.is_none() {
                opts.poll_cap = opts.poll_cap.min(courtesy);
            }
            let cap = self.poll_interval(&opts).as_millis() as u64;
            let jittered = Duration::from_millis(self.rng.between(cap / 2, cap));
            holder_ttl.map_or(jittered, |t| (t + Duration::from_millis(1)).min(jittered))
        };
        self.set_state(id, State::Waiting { retry_at: now + wait });
    }

    /// A shared key was announced free by a shared-mode release, or deleted or expired (a
    /// keyspace notification): its waiters try again after a courtesy delay each, so that a
    /// foreign client polling every `courtesy` has about the same chance at the key as each
    /// of them. Returns whether the message was such a notice (or another keyspace event).
    fn on_free_notice(&mut self, channel: &str, payload: &[u8], now: Instant) -> bool {
        let keyspace = LockKeys::is_keyspace_channel(channel);
        let freed = if keyspace { matches!(payload, b"del" | b"expired" | b"evicted") } else { payload == FREE };
        if !freed {
            return keyspace;
        }
        for id in self.subs.waiters(channel) {
            let Some(lock) = self.locks.get_mut(&id) else { continue };
            let Some(courtesy) = lock.opts.sharing.courtesy() else { continue };
            match lock.state {
                State::Acquiring { .. } => lock.freed = true,
                // A wait already due within a courtesy delay is kept: a second notice of the
                // same release (channel and keyspace) must not draw a second, earlier delay.
                State::Waiting { retry_at } if retry_at > now + courtesy => {
                    let at = now + self.courtesy_delay(courtesy);
                    self.set_state(id, State::Waiting { retry_at: at });
                }
                _ => {}
            }
        }
        true
    }

    /// The server refuses the keyspace channel (an ACL without it): stop using keyspace
    /// notifications; shared waits poll instead.
    fn keyspace_refused(&mut self, channel: &str, now: Instant) {
        for id in self.subs.waiters(channel) {
            if let Some(at) = self.subs.remove(channel, id, now) {
                self.timers.push(Reverse((at, TimerKey::Linger)));
            }
        }
        self.config.keyspace_db = None;
    }

    fn courtesy_delay(&mut self, courtesy: Duration) -> Duration {
        Duration::from_micros(self.rng.between(0, courtesy.as_micros().min(u128::from(u64::MAX)) as u64))
    }
}

/// The renewal window of a lease that started at `from`: about a third of the TTL in.
fn renew_window(opts: &LockOptions, from: Instant) -> (Instant, Instant) {
    (from + opts.ttl / 4, from + opts.ttl / 3)
}

/// How long the wait queue outlives its last push: waiters refresh it on every poll.
/// Tied to the poll interval actually used (stretched or not), so the queue cannot expire
/// between a waiter's polls.
fn queue_ttl(poll_interval: Duration) -> Duration {
    poll_interval.saturating_mul(4).max(Duration::from_secs(60))
}

enum Attempt {
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
                    Some(Reply::Error(e)) => return Err(LockError::Server(e.clone())),
                    Some(Reply::Int(n)) => (*n).clamp(0, i64::from(u32::MAX)) as u32,
                    Some(r) => return Err(bad(r)),
                    None => return Err(LockError::UnexpectedReply("acquire: no WAIT reply".into())),
                }
            };
            Ok(Attempt::Taken { fence, acked })
        }
        AcquireReply::Held { holder_ttl, fence } => Ok(Attempt::HeldByOther { holder_ttl, fence }),
    }
}

/// Per lock: extended (true) or not ours (false). `None` when the outcome is unknown.
fn parse_renewal(replies: &[Reply], n: usize, wanted: u32) -> Option<Vec<bool>> {
    let results: Vec<bool> = replies.first()?.as_array()?.iter().map(|r| r.as_int() == Some(1)).collect();
    if results.len() != n {
        return None;
    }
    if wanted > 0 && replies.get(1)?.as_int()? < i64::from(wanted) {
        // The extension is not known to be on enough replicas: treat it as not done.
        return None;
    }
    Some(results)
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
        _ => Err(LockError::Server(crate::reply::ServerError::new(
            "READONLY",
            "connected to a replica: locks need the primary",
        ))),
    }
}
