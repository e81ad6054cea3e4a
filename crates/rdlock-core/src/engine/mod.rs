//! The engine: a dispatcher over every lock of one client. It owns what the locks share —
//! request ids and what each request is for, the outbox, the timer heap, the pub/sub
//! channels, the batched renewals and the replica count — and moves each lock through its
//! phases, built from the sub-machines in [`crate::machine`].
//!
//! A lock's life:
//!
//! ```text
//!            acquire           poll / confirm a claim or, under Confirm, a hand-off
//!   (new) ──────────► Acquiring ◄──────────────────────────────────┐
//!                       │  │  └─ held by another ─► waiting ───────┘── deadline ──► (leave) ──► Done
//!                       │  └─ too few replicas / no validity ─► Releasing ──► Done
//!                       ▼
//!   hand-off heard ──► Held ◄──► renewing (batched)      ── not owner / validity over ──► Held(lost)
//!                       │
//!                       └─ release / drop ─► Releasing ──► Done
//! ```
//!
//! The transitions live by phase: `acquiring.rs` (attempts, waits, hand-offs), `holding.rs`
//! (renewals), `releasing.rs`, and `shared.rs` (keys shared with foreign clients).

mod acquiring;
mod batch;
mod downgrade;
mod holding;
mod lock;
mod recent;
mod releasing;
mod shared;
mod timers;
mod topology;
mod value;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::command::{Class, Command, Node, Request, RequestId, Route, Transmit};
use crate::error::{EntropyUnavailable, InvalidInput, LockError, Misuse};
use crate::event::{Event, LockEvent, LostReason, Warning};
use crate::ids::IdMap;
use crate::keys::{LockKeys, slot};
use crate::machine::{Then, Waiter};
use crate::options::{Acquire, Confirm, LockOptions, Resource, Sharing};
use crate::reply::{Reply, ServerError, TransportError};
use crate::script::Mode;
use crate::stats::Stats;
use crate::subscriptions::Subscriptions;
use crate::token::{OwnerToken, Rng, parse_hex};

use lock::{Acquisition, Lock, Phase, Step};

/// How long a fence counter lives after it is seeded. Losing it is harmless: a missing
/// counter is re-seeded from the server clock, which is ahead of every token issued before.
pub const FENCE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a hand-off that nobody heard waits for its waiter. The release (or an attempt that
/// finds the lock free behind a queue) publishes the hand-off on the queue head's inbox; when
/// no connection receives it (the waiter's client crashed, was dropped, or is not subscribed
/// yet), the key holds the head's token for this long only (or the head's TTL, when
/// shorter), and the waiter owns the lock only once it confirms. A waiter that has died or
/// gone away so holds up the others for one claim, not for its TTL. Far above a round trip,
/// and above the default poll cap, so that a live waiter that was not subscribed still
/// confirms at its next attempt.
pub const HANDOFF_CLAIM: Duration = Duration::from_millis(250);

/// How often a driver sends `PING` on its pub/sub connection while locks wait
/// ([`Engine::wants_pubsub_ping`], [`Engine::handle_pubsub_answer`]): a heard hand-off then
/// counts from at most about this long (plus the drivers' wake-up and a round trip) before
/// it, so a waiter whose half TTL is well above this (the default 10 s TTL's is) holds it
/// with no confirmation however long it waited.
pub const PUBSUB_PING_EVERY: Duration = Duration::from_secs(1);

/// Identifies one lock within an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(pub u64);

/// Identifies one caller action within an [`Engine`] (an acquisition, a release, an
/// extension, a downgrade): the event that answers it carries it ([`LockEvent::op`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Settings shared by every lock of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The server is a cluster: every request about a key is routed to its slot's primary
    /// ([`Node::Slot`]), batched renewals group keys of one slot, replicas are counted per
    /// slot, and hand-offs use sharded pub/sub ([`Transmit::SubscribeShard`]).
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
    /// What the server offers for [`Confirm::Durable`], if known ([`Engine::set_durability`]).
    pub durability: Option<crate::Durability>,
    /// Whether the server offers `SET ... IFEQ` (Valkey 8.1+, Redis 8.4+): locks then renew
    /// with one [`Command::SetIfEq`] each instead of `extend.lua` (about half the server CPU
    /// per renewal; docs/performance.md). Drivers detect it at connect ([`Engine::set_ifeq`]);
    /// a refusal of the command turns it off.
    pub set_ifeq: bool,
    /// Whether the release of a lock held when its release began, after an attempt of it
    /// found another holder (so that it will likely hand the lock on), goes behind a
    /// [`Command::Ping`] in one pipeline: the server then writes the hand-off's message before
    /// the release's reply, one command more per contended release (`docs/protocol.md`, *A
    /// release behind a `PING`*). Never in a cluster, nor for a mutex's release that stores
    /// its value (the store in front orders the replies already).
    pub release_behind_ping: bool,
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
            durability: None,
            set_ifeq: false,
            release_behind_ping: true,
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

/// A held lease as its holder sees it at one instant ([`Engine::lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The fencing token.
    pub fence: u64,
    /// The end of validity (later after each renewal).
    pub valid_until: Instant,
    /// Whether the holder may trust the lock at the instant asked: not lost, not past
    /// `valid_until`.
    pub valid: bool,
}

/// What a request in flight is for.
#[derive(Debug)]
enum Pending {
    Attempt(LockId),
    Release {
        lock: LockId,
        /// Sent behind a `PING` (`Engine::release_behind_ping`), whose reply comes first.
        behind_ping: bool,
    },
    /// Releases of one lock (`release.lua`) or many (`release_batch.lua`), batched.
    Releases {
        locks: Vec<LockId>,
        route: Route,
        /// When it was sent (the engine's latest time then).
        left: Instant,
        /// Sent behind a `PING` (`Engine::release_behind_ping`), whose reply comes first.
        behind_ping: bool,
    },
    /// Confirmations of heard hand-offs in one `confirm.lua` call.
    Confirm {
        locks: Vec<LockId>,
        route: Route,
        /// When it was sent (the engine's latest time then).
        left: Instant,
    },
    Renew {
        locks: Vec<LockId>,
        sent_at: Instant,
        wanted: u32,
        by_set: bool,
    },
    Role(Node),
    Downgrade(LockId, OpId),
    Store {
        lock: LockId,
        op: OpId,
        wanted: u32,
    },
    Resent,
}

/// What the engine knows of one node's primary (a cluster's per slot): its replica count and
/// how often it was replaced.
#[derive(Debug, Default)]
struct Shard {
    /// The last count of its replicas, and when it was made.
    replicas: Option<(u32, Instant)>,
    /// Replicas the topology knows of (the sentinels' list, a cluster's nodes), counted even
    /// while unconnected: no count goes below it.
    floor: u32,
    /// The `ROLE` request in flight, and the locks waiting for its count.
    role_req: Option<RequestId>,
    role_waiters: Vec<LockId>,
    /// How many times this node's primary changed on its own ([`Engine::handle_slot_moved`]).
    moved: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Lock(LockId),
    Linger,
    /// A renewal batch in flight: the first end of validity among its leases.
    Renewal(RequestId),
    /// A lane's held-back batches stop waiting for an answer (`batch.rs`).
    Batch(batch::Lane),
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
    next_op: u64,
    /// Boxed: a map slot then costs a pointer, not a whole lock, for every spare bucket.
    locks: IdMap<LockId, Box<Lock>>,
    by_token: IdMap<u128, LockId>,
    pending: IdMap<RequestId, Pending>,
    subs: Subscriptions,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    /// Auto-renewing held locks by the end of their renewal window (`renew_before`): the
    /// first one's is when the engine must next renew. A lease in this queue (or in a batch
    /// in flight) has no timer of its own: 100,000 leases renewed every second would
    /// otherwise push and pop 200,000 timers a second.
    renewals: BTreeSet<(Instant, LockId)>,
    /// Locks that wait (subscribed to their channel): they share the poll budget.
    waiting: usize,
    /// Every message handed in from now on was published after this instant: the send time
    /// of the latest command whose answer was read on the pub/sub connection, with every
    /// message read before that answer already handed in ([`Engine::handle_pubsub_answer`]).
    /// A heard hand-off's lease counts from it when it is later than the waiter's anchor.
    /// None on a new connection, and always in a cluster (its sharded readers say nothing).
    pubsub_floor: Option<Instant>,
    /// Per node (standalone: [`Node::Primary`]; a cluster: per slot) its replica count and
    /// its changes of primary.
    shards: HashMap<Node, Shard>,
    /// How many times every primary has changed at once ([`Engine::handle_primary_changed`]).
    primary: u32,
    /// Releases a primary acknowledged lately, while a failover could still lose them (only
    /// when the driver follows failovers: [`Engine::remember_releases`]).
    recent: Option<recent::Recent>,
    transmits: VecDeque<Transmit>,
    /// Releases and confirmations batched by route, sent and not (`batch.rs`).
    batches: batch::Batches,
    /// The latest time a reply or a timer was handled: a batch held back leaves after one of
    /// them, and its confirmations count their leases from then (`batch.rs`).
    latest: Option<Instant>,
    events: VecDeque<LockEvent>,
    warnings: VecDeque<Warning>,
    /// A name being looked up (an attempt's inbox), kept so that a lookup makes no string.
    scratch: String,
    /// Running totals for a driver's metrics.
    stats: Stats,
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
        // A cluster's slots change primary by design.
        let recent = config.cluster.then(recent::Recent::default);
        Self {
            client: rng.token_bits() as u64,
            rng,
            subs: match config.cluster {
                true => Subscriptions::sharded(config.subscription_linger),
                false => Subscriptions::new(config.subscription_linger),
            },
            config,
            next_lock: 0,
            next_req: 0,
            next_op: 0,
            locks: IdMap::default(),
            by_token: IdMap::default(),
            pending: IdMap::default(),
            timers: BinaryHeap::new(),
            renewals: BTreeSet::new(),
            waiting: 0,
            pubsub_floor: None,
            shards: HashMap::new(),
            primary: 0,
            recent,
            transmits: VecDeque::new(),
            batches: batch::Batches::default(),
            latest: None,
            events: VecDeque::new(),
            warnings: VecDeque::new(),
            scratch: String::new(),
            stats: Stats::default(),
        }
    }

    // ---------------------------------------------------------------- caller actions

    /// Starts acquiring `key`: returns the new lock and the op its outcome answers, one of
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
    ) -> Result<(LockId, OpId), InvalidInput> {
        self.acquire_resource(key, Resource::Lock, opts, how, now)
    }

    /// Starts acquiring a share of the counted resource at `key` (a semaphore's permit, a
    /// read-write lock's read or write share), or the lock at `key` ([`Resource::Lock`], as
    /// [`Engine::acquire`]). Everything else — events, release, renewal, abandon, validity —
    /// is the same as for a lock: a share is a lease.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] as for [`Engine::acquire`], and for a capacity out of range or shared
    /// mode with a counted resource; nothing is sent.
    pub fn acquire_resource(
        &mut self,
        key: &str,
        resource: Resource,
        opts: LockOptions,
        how: Acquire,
        now: Instant,
    ) -> Result<(LockId, OpId), InvalidInput> {
        opts.validate()?;
        resource.validate(&opts)?;
        if opts.confirm.is_durable()
            && let Some(d) = self.config.durability
        {
            d.check().map_err(InvalidInput::NotDurable)?;
        }
        let key = LockKeys::checked(key)?;
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
        let class = if opts.confirm == Confirm::None { Class::Commands } else { Class::Confirm };
        // In a cluster, to the key's own primary: its script and `WAIT` go there together.
        let node = if self.config.cluster { Node::Slot(slot(&key)) } else { Node::Primary };
        let route = Route { node, class };
        self.by_token.insert(token, id);
        let op = self.next_op();
        let acquisition =
            Acquisition { op, try_only, deadline, step: Step::Counting, waiter: Waiter::default(), abandoned: false };
        self.locks.insert(
            id,
            Box::new(Lock {
                key,
                token,
                opts,
                resource,
                route,
                phase: Phase::Acquiring(acquisition),
                attempted: false,
                unsure: false,
                contended: false,
                timer: None,
                fetched: None,
                write_back: None,
            }),
        );
        self.send_attempt(id, if try_only { Mode::Try } else { Mode::First }, now);
        Ok((id, op))
    }

    /// Releases a held lock (also one whose lease was lost: the key may still be ours).
    /// The returned op is answered by [`Event::Released`] or [`Event::Failed`]; an extension
    /// or a downgrade still pending is never answered.
    ///
    /// # Errors
    ///
    /// [`Misuse`] when the lock is unknown or not held (still acquiring, or already
    /// releasing); nothing changes.
    pub fn release(&mut self, id: LockId, now: Instant) -> Result<OpId, Misuse> {
        let lock = self.locks.get(&id).ok_or(Misuse::UnknownLock(id))?;
        if !matches!(lock.phase, Phase::Held(_)) {
            return Err(Misuse::NotHeld(id));
        }
        let op = self.next_op();
        self.send_release(id, Then::Report(op), now);
        Ok(op)
    }

    /// Renews a held lock now (batched with any other lock whose renewal window is open).
    /// The returned op is answered by [`Event::Renewed`] or [`Event::Lost`]. While a renewal
    /// is in flight, nothing more is sent: its answer answers this op too (its validity counts
    /// from its own send time, before this call: a conservative end).
    ///
    /// # Errors
    ///
    /// [`Misuse`] when the lock is unknown, not held, or its lease is already lost.
    pub fn extend(&mut self, id: LockId, now: Instant) -> Result<OpId, Misuse> {
        let op = OpId(self.next_op);
        let lock = self.locks.get_mut(&id).ok_or(Misuse::UnknownLock(id))?;
        let Some(lease) = lock.lease() else { return Err(Misuse::NotHeld(id)) };
        if lease.lost.is_some() {
            return Err(Misuse::NotHeld(id));
        }
        self.next_op += 1;
        lease.extends.push(op);
        if lease.renewing.is_none() {
            self.renew_now(id, now);
        }
        Ok(op)
    }

    /// The caller no longer cares about this lock (a dropped guard or a cancelled wait): it is
    /// released or leaves the queue in the background, and no further event is reported.
    pub fn abandon(&mut self, id: LockId, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        match &mut lock.phase {
            Phase::Acquiring(a) => match a.step {
                Step::Counting => self.leave_counting(id, now),
                Step::InFlight(_) => a.abandoned = true,
                Step::Idle { .. } => self.send_release(id, Then::Silent, now),
            },
            Phase::Held(_) => self.send_release(id, Then::Silent, now),
            Phase::Releasing(r) => r.then = Then::Silent,
        }
    }

    /// Running totals of what this engine has done that its events do not say (for metrics).
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A view of the lock, for guards.
    pub fn lock_info(&self, id: LockId) -> Option<LockInfo> {
        let lock = self.locks.get(&id)?;
        Some(match &lock.phase {
            Phase::Held(l) => LockInfo { fence: Some(l.fence), valid_until: Some(l.valid_until), lost: l.lost },
            _ => LockInfo { fence: None, valid_until: None, lost: None },
        })
    }

    /// The lease of a held lock as of `now`; `None` unless it is held. Validity is decided
    /// here, so that every driver and guard tells the same.
    pub fn lease(&self, id: LockId, now: Instant) -> Option<LeaseView> {
        match &self.locks.get(&id)?.phase {
            Phase::Held(l) => Some(LeaseView { fence: l.fence, valid_until: l.valid_until, valid: l.is_valid(now) }),
            _ => None,
        }
    }

    /// The lock's owner token as stored in its key (32 lowercase hex digits), so that an
    /// operator can map a key's value to its holder.
    pub fn owner_token(&self, id: LockId) -> Option<OwnerToken> {
        self.locks.get(&id).map(|l| OwnerToken::new(l.token))
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

    /// The channel hand-offs to this client's waiters on `key` are published on (tests and
    /// tools that watch hand-offs subscribe to it).
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] for a key that cannot name a lock.
    pub fn inbox_of(&self, key: &str) -> Result<String, InvalidInput> {
        let keys = LockKeys::new(key)?;
        Ok(Self::wait_channel(self.client, &keys.lock, Sharing::Queue))
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
        self.latest = Some(self.latest.map_or(now, |t| t.max(now)));
        self.stats.requests_unanswered += u64::from(reply.is_err());
        match pending {
            Pending::Attempt(lock) => self.on_attempt_reply(lock, id, reply, now),
            Pending::Release { lock, behind_ping } => {
                self.on_release_reply(lock, id, without_ping(reply, behind_ping), now)
            }
            Pending::Releases { locks, route, left, behind_ping } => {
                self.batch_answered(batch::Kind::Release, route, left, now);
                self.on_releases_reply(&locks, id, without_ping(reply, behind_ping), now)
            }
            Pending::Confirm { locks, route, left } => {
                self.batch_answered(batch::Kind::Confirm, route, left, now);
                self.on_confirm_reply(&locks, id, reply, now)
            }
            Pending::Renew { locks, sent_at, wanted, by_set } => {
                self.on_renew_reply(&locks, id, (sent_at, wanted, by_set), reply, now)
            }
            Pending::Role(node) => self.on_role_reply(node, reply, now),
            Pending::Downgrade(lock, op) => self.on_downgrade_reply(lock, op, reply, now),
            Pending::Store { lock, op, wanted } => self.on_store_reply(lock, op, wanted, reply, now),
            // Releases sent again to a new primary (`recent`): their replies change nothing.
            Pending::Resent => {}
        }
        Ok(())
    }

    /// Request `id` leaves now: it waited for its turn on its connection (the driver bounds
    /// the requests in flight on one) after the engine made it. What it asks of the server
    /// counts from now, not from when it was made, as a batch held back in the engine does
    /// (`docs/protocol.md`, *Validity*): an attempt's lease and its anchor, a confirmation's
    /// lease, a renewal's new lease. Each still counts from before the server can run it.
    /// Without it, requests made faster than the server answers them start spent behind the
    /// queue, and the acquisitions among them fail as acquired too late. Unknown or already
    /// answered requests, and other kinds, change nothing.
    pub fn handle_leaving(&mut self, id: RequestId, now: Instant) {
        let locks = match self.pending.get_mut(&id) {
            Some(Pending::Attempt(lock)) => std::slice::from_ref(lock),
            Some(Pending::Confirm { locks, .. }) => locks.as_slice(),
            Some(Pending::Renew { sent_at, .. }) => {
                *sent_at = (*sent_at).max(now);
                return;
            }
            _ => return,
        };
        for lock in locks {
            if let Some(Step::InFlight(sent)) =
                self.locks.get_mut(lock).and_then(|l| l.acquisition()).map(|a| &mut a.step)
                && sent.req == id
            {
                sent.sent_at = sent.sent_at.max(now);
            }
        }
    }

    /// A message arrived on a subscribed channel.
    pub fn handle_message(&mut self, channel: &str, payload: &[u8], now: Instant) {
        self.stats.messages += 1;
        if self.on_free_notice(channel, payload, now) {
            return;
        }
        self.on_announced(channel, payload, self.pubsub_floor, now);
    }

    /// A hand-off announced on `channel` as `token:fence`: by its message, or by the reply of
    /// the release that made it, when that release was this engine's (the same words, read
    /// from either connection, whichever comes first; the other then finds the lock held).
    /// `true` when it handed a waiting lock of this engine its hand-off now (`on_handoff`);
    /// one whose attempt is in flight keeps the fence for that attempt's reply.
    /// `floor`, for a message read on the pub/sub connection: an instant its `PUBLISH` came
    /// after (`pubsub_floor`); none for a release's reply, which another connection carried.
    pub(super) fn on_announced(&mut self, channel: &str, payload: &[u8], floor: Option<Instant>, now: Instant) -> bool {
        let Some((token, fence)) = std::str::from_utf8(payload).ok().and_then(|p| p.split_once(':')) else {
            return false;
        };
        let Some(token) = parse_hex(token) else { return false };
        let (Some(&id), Ok(fence)) = (self.by_token.get(&token), fence.parse::<u64>()) else { return false };
        let client = self.client;
        let trusted = !self.config.cluster || self.subs.is_active(channel);
        let Some(lock) = self.locks.get_mut(&id) else { return false };
        if lock.opts.sharing != Sharing::Queue || !LockKeys::is_client_inbox_of(&lock.key, client, channel) {
            return false;
        }
        // Counting: not queued yet. Held: a duplicate. Releasing: the release covers it.
        let Some(a) = lock.acquisition() else { return false };
        if !trusted {
            // Heard on a subscription not confirmed on the slot's current primary (one the
            // slot moved away from): the count that decided the key's TTL may not include it.
            // A hint only: confirm by an attempt (or, in flight, at the next poll).
            if matches!(a.step, Step::Idle { .. }) && a.waiter.is_fresh(fence) {
                self.send_attempt(id, Mode::Retry, now);
            }
            return false;
        }
        match a.step {
            Step::InFlight(_) => a.waiter.granted = Some(fence),
            // A fence at or below one a retry saw held by someone else: an old, lost hand-off.
            Step::Idle { .. } if a.waiter.is_fresh(fence) => {
                self.on_handoff(id, fence, floor, now);
                return true;
            }
            _ => {}
        }
        false
    }

    /// The server confirmed a subscription. Waiters on the channel check the lock again,
    /// since a hand-off may have been announced before the subscription took effect.
    pub fn handle_subscribed(&mut self, channel: &str, now: Instant) {
        for id in self.subs.confirmed(channel) {
            if self
                .locks
                .get_mut(&id)
                .and_then(|l| l.acquisition())
                .is_some_and(|a| matches!(a.step, Step::Idle { .. }))
            {
                self.recheck(id, now);
            }
        }
    }

    /// A command sent at `sent_at` on the pub/sub connection (a `PING`; the driver sends one
    /// while locks wait) was answered, and every message read before its answer has been
    /// handed in. One connection's answers and messages come in the order the server made
    /// them, so every message read after this answer was published after `sent_at`: a
    /// hand-off heard from now on counts from `sent_at` when that is later than the waiter's
    /// anchor (`docs/protocol.md`, *Validity*), and a waiter that waited long holds it with no
    /// confirmation. Ignored in a cluster, whose sharded subscriptions span connections.
    pub fn handle_pubsub_answer(&mut self, sent_at: Instant) {
        if !self.config.cluster {
            self.pubsub_floor = self.pubsub_floor.max(Some(sent_at));
        }
    }

    /// Whether a `PING` on the pub/sub connection could let a heard hand-off skip its
    /// confirmation: some lock waits. The driver sends one at most every
    /// [`PUBSUB_PING_EVERY`] while this holds.
    pub fn wants_pubsub_ping(&self) -> bool {
        !self.config.cluster && self.waiting > 0
    }

    /// The pub/sub connection was lost (or replaced): every wanted channel is subscribed
    /// again, and each waiter checks its lock once the subscription is back.
    pub fn handle_subscriptions_lost(&mut self, _now: Instant) {
        self.pubsub_floor = None;
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
            let Some(a) = self.locks.get_mut(&id).and_then(|l| l.acquisition()) else { continue };
            let failed = Event::Failed(LockError::Server(error.clone()));
            let op = a.op;
            match a.step {
                Step::Idle { .. } => {
                    self.answer(id, op, failed);
                    self.send_release(id, Then::Silent, now);
                }
                Step::InFlight(_) if !a.abandoned => {
                    a.abandoned = true;
                    self.answer(id, op, failed);
                    self.drop_subscription(id, now);
                    self.reschedule(id);
                }
                _ => {}
            }
        }
    }

    // ---------------------------------------------------------------- outputs

    /// The next thing to send. Releases and hand-off confirmations leave batched, one request
    /// per route, after what was queued before them (`batch.rs`).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.transmits.is_empty() {
            self.flush_batches();
        }
        self.transmits.pop_front()
    }

    /// The next event to report: the answer to a caller action, or a notice.
    pub fn poll_event(&mut self) -> Option<LockEvent> {
        self.events.pop_front()
    }

    /// The next thing to log about how keys are used.
    pub fn poll_warning(&mut self) -> Option<Warning> {
        self.warnings.pop_front()
    }

    // ---------------------------------------------------------------- plumbing

    fn next_op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op - 1)
    }

    /// Answers the caller action `op` of lock `id`.
    fn answer(&mut self, id: LockId, op: OpId, event: Event) {
        self.events.push_back(LockEvent { lock: id, op: Some(op), event });
    }

    /// Tells news nobody asked for.
    fn notify(&mut self, id: LockId, event: Event) {
        self.events.push_back(LockEvent { lock: id, op: None, event });
    }

    fn request(&mut self, route: Route, commands: Vec<Command>, pending: Pending) -> RequestId {
        let id = RequestId(self.next_req);
        self.next_req += 1;
        self.request_as(id, route, commands, pending);
        id
    }

    /// [`Engine::request`] under an id taken from `next_req` beforehand (a renewal batch marks
    /// its leases as they join it; a release batch is filed before it leaves).
    fn request_as(&mut self, id: RequestId, route: Route, mut commands: Vec<Command>, pending: Pending) {
        if self.config.cluster {
            // A cluster's scripts announce on sharded channels.
            for command in &mut commands {
                if let Command::Script { script, .. } | Command::ScriptWithValue { script, .. } = command {
                    *script = script.sharded();
                }
            }
        }
        self.pending.insert(id, pending);
        self.transmits.push_back(Transmit::Request(Request { id, route, commands }));
    }

    /// What the engine knows of `node`'s primary.
    fn shard(&mut self, node: Node) -> &mut Shard {
        self.shards.entry(node).or_default()
    }

    /// Changes with every change of `node`'s primary: a grant made under another epoch is
    /// checked again.
    fn epoch(&self, node: Node) -> u32 {
        self.primary.wrapping_add(self.shards.get(&node).map_or(0, |s| s.moved))
    }

    /// `node`'s last replica count, however old.
    fn replicas(&self, node: Node) -> Option<u32> {
        self.shards.get(&node).and_then(|s| s.replicas).map(|(n, _)| n)
    }

    fn set_phase(&mut self, id: LockId, phase: Phase) {
        if let Some(lock) = self.locks.get_mut(&id) {
            lock.phase = phase;
            self.reschedule(id);
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

    /// Drops the lock's hold on its channels, if it has one (a wait that ends).
    fn drop_subscription(&mut self, id: LockId, now: Instant) {
        let client = self.client;
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let sharing = lock.opts.sharing;
        let Some(a) = lock.acquisition() else { return };
        if !std::mem::take(&mut a.waiter.subscribed) {
            return;
        }
        self.waiting -= 1;
        let channel = Self::wait_channel(client, &lock.key, sharing);
        if let Some(at) = self.subs.remove(&channel, id, now) {
            self.timers.push(Reverse((at, TimerKey::Linger)));
        }
        if let Some(channel) = self.keyspace_channel(id)
            && let Some(at) = self.subs.remove(&channel, id, now)
        {
            self.timers.push(Reverse((at, TimerKey::Linger)));
        }
    }

    fn finish(&mut self, id: LockId, now: Instant) {
        self.drop_subscription(id, now);
        if let Some(lock) = self.locks.remove(&id) {
            self.by_token.remove(&lock.token);
            if let (Phase::Releasing(_), Some(recent)) = (&lock.phase, &mut self.recent) {
                recent.remember(&lock, self.client, now);
            }
            if let Phase::Held(l) = &lock.phase {
                self.renewals.remove(&(l.renew_before, id));
            }
        }
    }
}

/// A release's replies without the `PING`'s in front of them (`behind_ping`): that reply is
/// nobody's, and a refused `PING` does not fail the release.
fn without_ping(reply: Result<Vec<Reply>, TransportError>, behind_ping: bool) -> Result<Vec<Reply>, TransportError> {
    reply.map(|mut r| {
        if behind_ping && !r.is_empty() {
            r.remove(0);
        }
        r
    })
}
