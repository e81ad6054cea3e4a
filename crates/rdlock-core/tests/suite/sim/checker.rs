//! The invariants, checked against what the clients were told and against the fake's
//! ground truth. The world reports every input it feeds and every output it drains; the
//! checker records the first violation. A mutex's value is modelled as a register written by
//! the stores the server applied, in their order: a write only while the lock key holds its
//! writer's token, writer fences never falling, no write over a value its writer did not
//! read, each grant reading the last write, and the holder handed exactly what its grant read.

use std::collections::{BTreeMap, BTreeSet};

use rdlock_core::{
    Command, Confirm, Event, HANDOFF_CLAIM, LockError, LockId, LockOptions, ReleaseOutcome, Reply, Request, Resource,
    Script, StoredValue,
};

use super::fake::{Fake, Grant, StoreRun, ValueRead};
use super::scenario::WRONGTYPE_KEY;
use super::workload::OpKind;

/// One holder's lease at a time: a lock, or a mutex (a lock with a value).
fn exclusive_lock(r: Resource) -> bool {
    matches!(r, Resource::Lock | Resource::Mutex { .. })
}

/// A mutex's value as the checker models it: the stores the server applied, in the order it
/// applied them (the fake's ground truth, whatever their callers were told).
#[derive(Debug, Default)]
struct Register {
    /// The latest write: its writer's token and fence, the bytes, when they expire.
    value: Option<(String, u64, Vec<u8>, Option<u64>)>,
    /// The highest writer fence ever recorded with the value (kept across restarts: fences
    /// are seeded from the server clock, so they grow across restarts too).
    high: u64,
}

impl Register {
    /// The value live at `now`: `(writer token, fence, bytes)`.
    fn live(&self, now: u64) -> Option<(&str, u64, &[u8])> {
        let (t, f, v, exp) = self.value.as_ref()?;
        exp.is_none_or(|x| x > now).then_some((t.as_str(), *f, v.as_slice()))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct HeldView {
    pub fence: u64,
    pub valid_until: u64,
    pub lost: bool,
}

/// What the checker knows about one lock of one client.
#[derive(Debug)]
pub struct Rec {
    pub key: String,
    /// A lock, or a share of a counted resource.
    pub resource: Resource,
    pub opts: LockOptions,
    pub try_only: bool,
    pub deadline: Option<u64>,
    pub started: u64,
    pub token: Option<String>,
    /// The acquisition has its outcome.
    pub ended: bool,
    pub held: Option<HeldView>,
    /// The caller called `release` or `abandon`: it no longer acts on the lock.
    pub released: bool,
    pub abandoned: bool,
    /// A release script naming this lock has been sent.
    pub release_sent: bool,
    /// A downgrade was sent and not yet answered: a `Failed` event is its answer.
    pub downgrading: bool,
    /// Fences this lock was offered: `[1, fence]` acquire replies and hand-off messages.
    pub evidence: Vec<u64>,
    /// Fences offered only by hand-off messages.
    pub handed: Vec<u64>,
    /// A lost request or reply delays this lock's next attempt until then (the response
    /// timeout, then the retry backoff).
    pub delayed_until: u64,
    /// The latest release attempt got no answer (the key may stay until its TTL).
    pub release_failed: bool,
    /// A mutex: the value (writer fence, bytes) the latest grant read for this token; `None`
    /// before any grant read one, `Some(None)` when the grant found no value.
    pub read: Option<Option<(u64, Vec<u8>)>>,
    /// Stores of this lock the server applied, and `Stored` answers heard.
    pub stores_applied: u32,
    pub stored_answers: u32,
    /// Whether the latest store of this lock that ran wrote.
    pub last_store_applied: Option<bool>,
}

#[derive(Debug, Default, Clone)]
pub struct ClientView {
    pub alive: bool,
    pub paused: bool,
    /// `(start, end)` of finished pauses.
    pub pauses: Vec<(u64, u64)>,
    pub paused_since: u64,
}

impl ClientView {
    /// Whether the client was paused at any time in `[from, to]`.
    fn paused_within(&self, from: u64, to: u64) -> bool {
        (self.paused && self.paused_since <= to) || self.pauses.iter().any(|&(s, e)| s <= to && e >= from)
    }

    /// From when an outcome due at `d` may take its slack: the end of the latest pause that
    /// ended after `d` (a pause stops the timers, and the retries that follow them).
    fn fires_at(&self, d: u64) -> u64 {
        self.pauses.iter().filter(|&&(_, e)| e > d).map(|&(_, e)| e).max().unwrap_or(d)
    }
}

/// A crashed holder's key, or a claim handed to a waiter that vanished while queued:
/// someone must get it soon after it expires.
#[derive(Debug)]
struct Obligation {
    key: String,
    crashed_at: u64,
    expires: u64,
    restarts: u32,
    done: bool,
    /// A claim of a vanished waiter (else a crashed holder's lease).
    ghost: bool,
    /// A crashed holder's share of a counted resource that it held alone (else a lock key).
    share: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub steps: u64,
    pub acquired: u64,
    /// Acquisitions of semaphore permits and read-write lock shares (among `acquired`).
    pub shares: u64,
    pub downgrades: u64,
    pub handed_off: u64,
    pub renewed: u64,
    pub lost: u64,
    pub busy: u64,
    pub timed_out: u64,
    pub shortfalls: u64,
    pub failed: u64,
    pub crash_checks: u64,
    /// Hand-offs to waiters that had vanished, each checked to reach a live waiter in time.
    pub ghost_checks: u64,
    /// Mutex values read by grants (each checked against the last write applied), stores
    /// applied and refused (each checked: by the key's owner, fences never falling, no lost
    /// update), and values handed to holders (each checked against their grant's read).
    pub value_reads: u64,
    pub stores: u64,
    pub stores_refused: u64,
    pub values_taken: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.acquired += o.acquired;
        self.shares += o.shares;
        self.downgrades += o.downgrades;
        self.handed_off += o.handed_off;
        self.renewed += o.renewed;
        self.lost += o.lost;
        self.busy += o.busy;
        self.timed_out += o.timed_out;
        self.shortfalls += o.shortfalls;
        self.failed += o.failed;
        self.crash_checks += o.crash_checks;
        self.ghost_checks += o.ghost_checks;
        self.value_reads += o.value_reads;
        self.stores += o.stores;
        self.stores_refused += o.stores_refused;
        self.values_taken += o.values_taken;
    }
}

#[derive(Debug)]
pub struct Checker {
    recs: BTreeMap<(usize, LockId), Rec>,
    by_token: BTreeMap<String, (usize, LockId)>,
    held: BTreeSet<(usize, LockId)>,
    deadlines: BTreeSet<(usize, LockId)>,
    /// Per key, the fence of the latest holder not invalidated by a restart.
    last_fence: BTreeMap<String, u64>,
    /// Per key, the latest fence the server issued.
    issued: BTreeMap<String, i64>,
    obligations: Vec<Obligation>,
    /// Per mutex (its lock key), its value.
    registers: BTreeMap<String, Register>,
    /// Mutexes' value keys: they have no TTL when their value outlives the lock.
    value_keys: BTreeSet<String>,
    pub clients: Vec<ClientView>,
    /// Allowed lateness of a wait's outcome past its deadline.
    deadline_slack: u64,
    /// Allowed lateness of a waiter taking a crashed holder's lock, past TTL + poll cap.
    liveness_slack: u64,
    response_timeout: u64,
    pub violation: Option<String>,
    pub stats: Stats,
}

/// The engine's longest backoff after a failed attempt.
const RETRY_BACKOFF: u64 = 50 * super::MS;

fn fmt_ms(t: u64) -> String {
    format!("{:.3}ms", t as f64 / 1e6)
}

impl Checker {
    pub fn new(clients: usize, deadline_slack: u64, liveness_slack: u64, response_timeout: u64) -> Self {
        Self {
            recs: BTreeMap::new(),
            by_token: BTreeMap::new(),
            held: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            last_fence: BTreeMap::new(),
            issued: BTreeMap::new(),
            obligations: Vec::new(),
            registers: BTreeMap::new(),
            value_keys: BTreeSet::new(),
            clients: vec![ClientView { alive: true, ..ClientView::default() }; clients],
            deadline_slack,
            liveness_slack,
            response_timeout,
            violation: None,
            stats: Stats::default(),
        }
    }

    pub fn fail(&mut self, now: u64, msg: impl Into<String>) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {}: {}", fmt_ms(now), msg.into()));
        }
    }

    pub fn rec(&self, c: usize, id: LockId) -> Option<&Rec> {
        self.recs.get(&(c, id))
    }

    /// The record of a token's lock, if its client is alive.
    fn live_token(&self, token: &str) -> Option<&Rec> {
        let &(c, id) = self.by_token.get(token)?;
        self.clients[c].alive.then(|| &self.recs[&(c, id)])
    }

    fn tainted(rec: &Rec, fake: &Fake) -> bool {
        rec.token.as_deref().and_then(|t| fake.grant_epoch(t)).is_none_or(|e| e < fake.restarts)
    }

    // ------------------------------------------------------------ caller actions

    #[allow(clippy::too_many_arguments)]
    pub fn on_acquire(
        &mut self,
        c: usize,
        id: LockId,
        key: &str,
        resource: Resource,
        opts: LockOptions,
        deadline: Option<Option<u64>>,
        now: u64,
    ) {
        let rec = Rec {
            key: key.to_owned(),
            resource,
            opts,
            try_only: deadline.is_none(),
            deadline: deadline.flatten(),
            started: now,
            token: None,
            ended: false,
            held: None,
            released: false,
            abandoned: false,
            release_sent: false,
            downgrading: false,
            evidence: Vec::new(),
            handed: Vec::new(),
            delayed_until: 0,
            release_failed: false,
            read: None,
            stores_applied: 0,
            stored_answers: 0,
            last_store_applied: None,
        };
        if matches!(resource, Resource::Mutex { .. }) {
            self.value_keys.insert(rdlock_core::value_key(key));
        }
        if rec.deadline.is_some() {
            self.deadlines.insert((c, id));
        }
        if self.recs.insert((c, id), rec).is_some() {
            self.fail(now, format!("client {c}: lock id {id:?} reused"));
        }
    }

    pub fn on_release_called(&mut self, c: usize, id: LockId, abandon: bool) {
        if let Some(r) = self.recs.get_mut(&(c, id)) {
            r.released = true;
            r.abandoned |= abandon;
        }
        self.held.remove(&(c, id));
        if abandon {
            self.deadlines.remove(&(c, id));
        }
    }

    /// `extend` may refuse only a lock whose lease is lost.
    pub fn on_extend(&mut self, c: usize, id: LockId, ok: bool, now: u64) {
        let lost = self.recs.get(&(c, id)).and_then(|r| r.held).is_none_or(|h| h.lost);
        if ok == lost {
            self.fail(now, format!("client {c}: extend of {id:?} returned ok={ok} for a lock with lost={lost}"));
        }
    }

    // ------------------------------------------------------------ traffic

    /// A request left client `c`; `live` finds the client's live lock on a key.
    pub fn on_transmit(&mut self, c: usize, req: &Request, live: impl Fn(&str) -> Option<LockId>, now: u64) {
        for cmd in &req.commands {
            if let Command::ScriptWithValue { script: Script::Store, keys, args, .. } = cmd {
                self.store_sent(c, &keys.to_vec(), &args.to_vec(), &live, now);
                continue;
            }
            if let Command::SetIfEq { key, value, .. } = cmd {
                self.renewal_sent(c, std::iter::once((key, value)), now);
                continue;
            }
            let Command::Script { script, keys, args } = cmd else { continue };
            let (keys, args) = (&keys.to_vec(), &args.to_vec());
            let script = &script.base();
            match script {
                Script::Acquire
                | Script::Release
                | Script::ReleaseShared
                | Script::PermitAcquire
                | Script::PermitRelease
                | Script::PermitChange => {
                    let (Some(key), Some(token)) = (keys.first(), args.first()) else {
                        self.fail(now, format!("client {c}: malformed {script:?} script: {keys:?} {args:?}"));
                        continue;
                    };
                    self.lock_script_sent(c, *script, key, token, &live, now);
                }
                // Per lock what a release is: its three keys and its token and entry.
                Script::ReleaseBatch => {
                    for (key, token) in keys.iter().step_by(3).zip(args.iter().skip(2).step_by(2)) {
                        self.lock_script_sent(c, Script::Release, key, token, &live, now);
                    }
                }
                // Per lock what an attempt that confirms is: its key and fence, token and ttl.
                Script::Confirm => {
                    for (key, token) in keys.iter().step_by(3).zip(args) {
                        self.lock_script_sent(c, Script::Acquire, key, token, &live, now);
                    }
                }
                Script::Store => self.fail(now, format!("client {c}: a store sent without its value apart")),
                Script::ShardedAcquire
                | Script::ShardedRelease
                | Script::ShardedReleaseBatch
                | Script::ShardedReleaseShared
                | Script::ShardedPermitAcquire
                | Script::ShardedPermitRelease
                | Script::ShardedPermitChange => {
                    let sharded = script;
                    self.fail(now, format!("client {c}: {sharded:?} is no base script"));
                }
                // Operators' scripts and the quorum's: the engine never sends them.
                Script::Inspect | Script::ForceRelease | Script::QuorumTake | Script::QuorumFence => {}
                Script::Extend | Script::PermitExtend => {
                    // A share renews with three keys: its holder set (the user's key) first.
                    let per = if *script == Script::Extend { 1 } else { 3 };
                    self.renewal_sent(c, keys.iter().step_by(per).zip(args), now);
                }
            }
        }
    }

    /// A lock's script left client `c` (an attempt or a release) for `key` with `token`.
    fn lock_script_sent(
        &mut self,
        c: usize,
        script: Script,
        key: &String,
        token: &String,
        live: &impl Fn(&str) -> Option<LockId>,
        now: u64,
    ) {
        let script = &script;
        // A release sent again to a new primary (the engine remembers its releases
        // for a TTL when the primary may change): a finished lock's, owner-checked.
        let resent = matches!(script, Script::Release | Script::ReleaseShared | Script::PermitRelease)
            && self.by_token.get(token).is_some_and(|&(owner, was)| owner == c && live(key) != Some(was));
        if resent {
            return;
        }
        let Some(id) = live(key) else {
            self.fail(now, format!("client {c}: {script:?} for {key} without a live lock"));
            return;
        };
        let Some(rec) = self.recs.get_mut(&(c, id)) else { return };
        match &rec.token {
            None => {
                rec.token = Some(token.clone());
                self.by_token.insert(token.clone(), (c, id));
            }
            Some(t) if t != token => {
                let msg = format!("client {c}: {id:?} sent token {token} after {t}");
                self.fail(now, msg);
            }
            Some(_) => {}
        }
        if matches!(script, Script::Release | Script::ReleaseShared | Script::PermitRelease) {
            self.recs.entry((c, id)).and_modify(|r| r.release_sent = true);
        }
        if *script == Script::PermitChange {
            self.recs.entry((c, id)).and_modify(|r| r.downgrading = true);
        }
    }

    /// Renewals left client `c`, as (key, token) pairs: each for a lock of its own, held (or
    /// granted) and not released.
    fn renewal_sent<'a>(&mut self, c: usize, pairs: impl Iterator<Item = (&'a String, &'a String)>, now: u64) {
        for (key, token) in pairs {
            let Some(&(owner, id)) = self.by_token.get(token) else {
                self.fail(now, format!("client {c}: renewal of {key} with an unknown token"));
                continue;
            };
            let rec = &self.recs[&(owner, id)];
            let problem = if owner != c || rec.key != *key {
                Some("names another lock's token")
            } else if rec.release_sent {
                Some("was sent after the lock's release")
            } else if rec.held.is_none() && rec.evidence.is_empty() {
                // With a grant seen, its `Acquired` may still be queued behind this
                // renewal: a grant from a replaced primary is checked at once.
                Some("is for a lock never acquired")
            } else {
                None
            };
            if let Some(p) = problem {
                self.fail(now, format!("client {c}: renewal of {key} ({id:?}) {p}"));
            }
        }
    }

    /// A store left client `c`: for its live lock on the key, with its token and fence.
    fn store_sent(
        &mut self,
        c: usize,
        keys: &[String],
        args: &[String],
        live: impl Fn(&str) -> Option<LockId>,
        now: u64,
    ) {
        let (Some(key), Some(token), Some(fence)) = (keys.first(), args.first(), args.get(1)) else {
            return self.fail(now, format!("client {c}: malformed store: {keys:?} {args:?}"));
        };
        let rec = live(key).and_then(|id| self.recs.get(&(c, id)));
        let problem = match rec {
            None => Some("without a live lock".to_owned()),
            Some(r) if !matches!(r.resource, Resource::Mutex { .. }) => Some(format!("of a {:?}", r.resource)),
            Some(r) if r.token.as_deref() != Some(token) => Some(format!("with token {token}, not {:?}", r.token)),
            Some(r) if r.held.is_none_or(|h| h.fence.to_string() != *fence) => {
                Some(format!("with fence {fence} while held {:?}", r.held))
            }
            Some(_) => None,
        };
        if let Some(p) = problem {
            self.fail(now, format!("client {c}: store of {key} {p}"));
        }
    }

    /// A reply (or `Err` for a transport failure) is about to be fed to client `c`.
    pub fn on_reply(&mut self, c: usize, req: &Request, reply: Result<&[Reply], ()>, now: u64) {
        for (i, cmd) in req.commands.iter().enumerate() {
            let Command::Script { script, args, .. } = cmd else { continue };
            if *script == Script::Confirm {
                self.on_confirm_reply(c, args, reply.map(|r| r.get(i)), now);
                continue;
            }
            let Some(&(owner, id)) = args.first().and_then(|t| self.by_token.get(t)) else { continue };
            if owner != c {
                continue;
            }
            let Some(rec) = self.recs.get_mut(&(c, id)) else { return };
            let script = &script.base();
            match (script, reply) {
                (_, Err(())) => rec.delayed_until = rec.delayed_until.max(now + RETRY_BACKOFF),
                (Script::Acquire | Script::PermitAcquire, Ok(replies)) => {
                    let pair = replies.get(i).and_then(Reply::as_array);
                    if let Some([flag, fence, ..]) = pair
                        && flag.as_int() == Some(1)
                        && let Some(f) = fence.as_int().and_then(|f| u64::try_from(f).ok())
                    {
                        rec.evidence.push(f);
                    }
                }
                _ => {}
            }
            if matches!(script, Script::Release | Script::ReleaseShared | Script::PermitRelease) {
                rec.release_failed = !matches!(reply, Ok(r) if matches!(r.get(i), Some(Reply::Int(_))));
            }
        }
    }

    /// A `confirm.lua` batch answered: per lock (its token is the i-th argument) a fence above
    /// 0 is the server's grant of it, as an acquire's `[1, fence]` (a heard hand-off confirmed,
    /// or a claim nobody heard found by the re-check that follows a subscription).
    fn on_confirm_reply(&mut self, c: usize, args: &rdlock_core::Args, reply: Result<Option<&Reply>, ()>, now: u64) {
        let items: &[Reply] = reply.ok().flatten().and_then(Reply::as_array).unwrap_or(&[]);
        let n = args.len() / 3;
        for (i, token) in args.iter().take(n).enumerate() {
            let Some(&(owner, id)) = self.by_token.get(token) else { continue };
            let Some(rec) = self.recs.get_mut(&(c, id)).filter(|_| owner == c) else { continue };
            if reply.is_err() {
                rec.delayed_until = rec.delayed_until.max(now + RETRY_BACKOFF);
            }
            if let Some(f) = items.get(i).and_then(Reply::as_int).filter(|&f| f > 0).and_then(|f| u64::try_from(f).ok())
            {
                rec.evidence.push(f);
            }
        }
    }

    /// The network dropped a request of client `c` or its reply: a transport failure will be
    /// reported, but the delay starts now.
    pub fn on_loss(&mut self, c: usize, req: &Request, now: u64) {
        for cmd in &req.commands {
            let Command::Script { args, .. } = cmd else { continue };
            if let Some(&(owner, id)) = args.first().and_then(|t| self.by_token.get(t))
                && owner == c
                && let Some(rec) = self.recs.get_mut(&(c, id))
            {
                rec.delayed_until = rec.delayed_until.max(now + self.response_timeout + RETRY_BACKOFF);
            }
        }
    }

    /// A pub/sub message is about to be fed to client `c`.
    pub fn on_message(&mut self, c: usize, payload: &str) {
        let Some((token, fence)) = payload.split_once(':') else { return };
        let (Some(&(owner, id)), Ok(fence)) = (self.by_token.get(token), fence.parse::<u64>()) else { return };
        if owner == c
            && let Some(rec) = self.recs.get_mut(&(c, id))
        {
            rec.evidence.push(fence);
            rec.handed.push(fence);
        }
    }

    // ------------------------------------------------------------ outcomes

    /// An event for client `c`'s lock `id`, answering an op of `kind` (`None`: a notice).
    pub fn on_event(&mut self, c: usize, id: LockId, ev: &Event, kind: Option<OpKind>, now: u64, fake: &Fake) {
        let Some(rec) = self.recs.get_mut(&(c, id)) else {
            self.fail(now, format!("client {c}: event {ev:?} for unknown lock {id:?}"));
            return;
        };
        let who = format!("client {c} {id:?} on {}", rec.key);
        if rec.abandoned {
            return self.fail(now, format!("{who}: {ev:?} after abandon"));
        }
        // A failure answers the downgrade in flight, if any, else the acquisition.
        let downgrade_failed = matches!(ev, Event::Failed(_)) && std::mem::take(&mut rec.downgrading);
        // A store's answer (alone or with the release) is not the acquisition's outcome.
        let value_op = matches!(kind, Some(OpKind::Store | OpKind::ReleaseStoring));
        let ending = !value_op
            && (matches!(
                ev,
                Event::Acquired { .. } | Event::Busy { .. } | Event::TimedOut | Event::ReplicationShortfall { .. }
            ) || (matches!(ev, Event::Failed(_)) && !rec.released && !downgrade_failed));
        if ending && rec.ended {
            return self.fail(now, format!("{who}: a second outcome {ev:?}"));
        }
        let wrongtype = rec.key == WRONGTYPE_KEY;
        let mut problem: Option<String> = None;
        match ev {
            Event::Acquired { fence, valid_until } => {
                self.stats.acquired += 1;
                self.stats.shares += u64::from(!exclusive_lock(rec.resource));
                if matches!(rec.resource, Resource::Mutex { .. }) && rec.read.is_none() && !Self::tainted(rec, fake) {
                    // A hand-off grants without a round trip: a mutex confirms it, to read the value.
                    problem = Some("a mutex acquired without a grant that read its value".into());
                }
                let valid_until = super::ns(*valid_until);
                if wrongtype {
                    problem = Some("acquired a key of the wrong type".into());
                } else if !rec.evidence.contains(fence) {
                    problem = Some(format!("acquired with fence {fence} but was offered only {:?}", rec.evidence));
                } else if valid_until <= now {
                    problem = Some(format!("acquired with validity already over ({})", fmt_ms(valid_until)));
                }
                if rec.handed.contains(fence) {
                    self.stats.handed_off += 1;
                }
                rec.held = Some(HeldView { fence: *fence, valid_until, lost: false });
                self.held.insert((c, id));
                // Exclusive holders (locks, writers) hold in fence order; shares of a counted
                // resource overlap, so only the server's issue order (`on_grant`) binds them.
                let exclusive = exclusive_lock(rec.resource) || rec.resource == Resource::Write;
                if exclusive && !Self::tainted(rec, fake) {
                    let last = self.last_fence.insert(rec.key.clone(), *fence);
                    if last.is_some_and(|l| l >= *fence) {
                        problem = Some(format!("fence {fence} does not exceed the previous holder's {last:?}"));
                    }
                }
            }
            Event::Busy { .. } => {
                self.stats.busy += 1;
                if !rec.try_only || wrongtype {
                    problem = Some("Busy for a wait or a wrong-type key".into());
                }
            }
            Event::TimedOut => {
                self.stats.timed_out += 1;
                if rec.deadline.is_none_or(|d| now < d) {
                    problem = Some(format!("timed out before its deadline {:?}", rec.deadline.map(fmt_ms)));
                }
            }
            Event::ReplicationShortfall { acked, wanted } => {
                self.stats.shortfalls += 1;
                if rec.opts.confirm == Confirm::None || acked >= wanted {
                    problem = Some("a shortfall without confirmation asked or with enough acks".into());
                } else if value_op && rec.last_store_applied != Some(true) {
                    problem = Some("a store's shortfall, but the store did not write".into());
                }
            }
            Event::Failed(e) => {
                self.stats.failed += 1;
                if let LockError::Server(s) = e
                    && !matches!(s.code.as_str(), "WRONGTYPE" | "LOADING")
                {
                    problem = Some(format!("failed with an unexpected server error {s}"));
                } else if matches!(e, LockError::UnexpectedReply(_)) {
                    problem = Some(format!("failed on a reply the fake never gives: {e}"));
                }
            }
            Event::Renewed { valid_until } => {
                self.stats.renewed += 1;
                let valid_until = super::ns(*valid_until);
                match &mut rec.held {
                    Some(h) if !h.lost && !rec.released && valid_until >= h.valid_until => h.valid_until = valid_until,
                    h => {
                        problem =
                            Some(format!("renewed to {} while {h:?}, released={}", fmt_ms(valid_until), rec.released))
                    }
                }
            }
            Event::Lost { .. } => {
                self.stats.lost += 1;
                match &mut rec.held {
                    Some(h) if !h.lost && !rec.released => h.lost = true,
                    // An extension or a store is answered with the loss, even when the lease
                    // was lost already (the caller may have released it since the answer).
                    Some(h) if matches!(kind, Some(OpKind::Store | OpKind::Extend)) => h.lost = true,
                    h => problem = Some(format!("lost while {h:?}, released={}", rec.released)),
                }
            }
            Event::Released { outcome } => {
                if !rec.released || rec.held.is_none() {
                    problem = Some("released without a release call on a held lock".into());
                } else if kind == Some(OpKind::ReleaseStoring)
                    && *outcome == ReleaseOutcome::Released
                    && rec.last_store_applied != Some(true)
                {
                    problem = Some("released (value written) but its store did not write".into());
                }
            }
            Event::Stored => {
                rec.stored_answers += 1;
                if kind != Some(OpKind::Store) || rec.stored_answers > rec.stores_applied {
                    problem = Some(format!(
                        "Stored for {kind:?}, {} answers for {} stores applied",
                        rec.stored_answers, rec.stores_applied
                    ));
                }
            }
            Event::Downgraded => {
                self.stats.downgrades += 1;
                rec.downgrading = false;
                // The server's change already made it a reader (`on_downgrade`).
                if rec.resource != Resource::Read || rec.held.is_none() {
                    problem = Some(format!("downgraded while {:?}, held {:?}", rec.resource, rec.held));
                }
            }
        }
        if ending {
            rec.ended = true;
            self.deadlines.remove(&(c, id));
        }
        if let Some(p) = problem {
            self.fail(now, format!("{who}: {p}"));
        }
    }

    /// The server gave a key to a new owner.
    /// The server shrank a write share to a reader's: from now on it is a reader.
    pub fn on_downgrade(&mut self, token: &str, now: u64) {
        let Some(&key) = self.by_token.get(token) else { return };
        let rec = self.recs.get_mut(&key).expect("a recorded lock");
        if rec.resource == Resource::Write {
            rec.resource = Resource::Read;
        } else {
            let what = rec.resource;
            self.fail(now, format!("a downgrade of a {what:?} share"));
        }
    }

    pub fn on_grant(&mut self, g: &Grant, now: u64, restarts: u32) {
        if g.ahead > 0 {
            self.fail(now, format!("{} granted to {} past {} queued waiter(s)", g.key, g.token, g.ahead));
        }
        if let Some(&last) = self.issued.get(&g.key)
            && last >= g.fence
        {
            self.fail(now, format!("server issued fence {} for {} after {last}", g.fence, g.key));
        }
        self.issued.insert(g.key.clone(), g.fence);
        if self.live_token(&g.token).is_some() {
            for ob in self.obligations.iter_mut().filter(|o| o.key == g.key) {
                ob.done = true;
            }
        } else if let Some(&(c, id)) = self.by_token.get(&g.token)
            && g.handoff
            // A share's waiters may also wait for other live holders: the bound is the lock's.
            && exclusive_lock(self.recs[&(c, id)].resource)
        {
            // Handed to a waiter that vanished while queued: the lock has moved on (earlier
            // obligations are met), and it must reach a live waiter within one claim (the
            // waiter's TTL when shorter) plus a poll, not a lease.
            for ob in self.obligations.iter_mut().filter(|o| o.key == g.key) {
                ob.done = true;
            }
            let claim = HANDOFF_CLAIM.min(self.recs[&(c, id)].opts.ttl).as_nanos() as u64;
            self.stats.ghost_checks += 1;
            self.obligations.push(Obligation {
                key: g.key.clone(),
                crashed_at: now,
                expires: now + claim,
                restarts,
                done: false,
                ghost: true,
                share: false,
            });
        }
    }

    // ------------------------------------------------------------ a mutex's value

    /// A grant read a mutex's value (and returns it): it is the last write the server
    /// applied, by an earlier holder.
    pub fn on_value_read(&mut self, read: &ValueRead, now: u64) {
        self.stats.value_reads += 1;
        let reg = self.registers.entry(read.key.clone()).or_default();
        let model = reg.live(now);
        let want = model.map(|(_, f, v)| (f.to_string().into_bytes(), v.to_vec()));
        let mut problem = None;
        if read.value != want {
            problem = Some(format!("{} read {:?}, but the last write applied is {want:?}", read.token, read.value));
        } else if let Some((writer, f, _)) = model
            && writer != read.token
            && f >= read.fence as u64
        {
            problem = Some(format!("{} (fence {}) read a value written under fence {f}", read.token, read.fence));
        }
        let value = model.map(|(_, f, v)| (f, v.to_vec()));
        if let Some(&(c, id)) = self.by_token.get(&read.token)
            && let Some(rec) = self.recs.get_mut(&(c, id))
        {
            rec.read = Some(value);
        }
        if let Some(p) = problem {
            self.fail(now, format!("{}: {p}", read.key));
        }
    }

    /// A store ran: when it wrote, its writer held the lock key at the server, its fence is
    /// not below any recorded before, and nobody else wrote since its grant read the value.
    pub fn on_store_run(&mut self, run: &StoreRun, now: u64) {
        let by = self.by_token.get(&run.token).copied();
        let read = by.and_then(|k| self.recs.get(&k)).and_then(|r| r.read.clone());
        if let Some(rec) = by.and_then(|k| self.recs.get_mut(&k)) {
            rec.last_store_applied = Some(run.written.is_some());
            rec.stores_applied += u32::from(run.written.is_some());
        }
        let Some(bytes) = &run.written else {
            self.stats.stores_refused += 1;
            return;
        };
        self.stats.stores += 1;
        let reg = self.registers.entry(run.key.clone()).or_default();
        let mut problem = None;
        if run.holder.as_deref() != Some(run.token.as_str()) {
            problem = Some(format!("written by {} while the lock key holds {:?}", run.token, run.holder));
        } else if run.fence < reg.high {
            problem = Some(format!("written under fence {} after fence {}", run.fence, reg.high));
        } else {
            let current = reg.live(now);
            let own = current.is_some_and(|(w, _, _)| w == run.token);
            let read = read.map(|r| r.map(|(_, v)| v));
            if !own && read.as_ref().map(Option::as_deref) != Some(current.map(|(_, _, v)| v)) {
                problem = Some(format!(
                    "{} wrote over {current:?}, which it never read (it read {read:?}): a lost update",
                    run.token
                ));
            }
        }
        reg.high = reg.high.max(run.fence);
        reg.value = Some((run.token.clone(), run.fence, bytes.clone(), run.expires));
        if let Some(p) = problem {
            self.fail(now, format!("the value of {}: {p}", run.key));
        }
    }

    /// The holder took its mutex's value after `Acquired`: what its grant read, once.
    pub fn on_value_taken(&mut self, c: usize, id: LockId, first: Option<&StoredValue>, again: bool, now: u64) {
        self.stats.values_taken += 1;
        let Some(rec) = self.recs.get(&(c, id)) else { return };
        let read = rec.read.clone().flatten();
        let taken = first.map(|v| (v.written_by.unwrap_or(0), v.bytes.clone()));
        if again {
            self.fail(now, format!("client {c} {id:?}: its value was handed out twice"));
        } else if rec.read.is_some() && taken != read {
            self.fail(now, format!("client {c} {id:?} took {taken:?}, but its grant read {read:?}"));
        }
    }

    /// A restart without persistence loses the values with the locks: from then on a grant
    /// must read none until a holder writes one, as after the first use. This is what the
    /// fences get too: holders granted before the restart no longer count for exclusion or
    /// fence order (`tainted`), yet every fence issued, and every writer fence recorded with a
    /// value (`Register::high`), must still exceed those before the restart (the counter is
    /// re-seeded from the server clock).
    pub fn on_restart(&mut self) {
        for reg in self.registers.values_mut() {
            reg.value = None;
        }
    }

    // ------------------------------------------------------------ faults

    pub fn on_crash(&mut self, c: usize, now: u64, fake: &Fake) {
        self.clients[c].alive = false;
        self.held.retain(|&(h, _)| h != c);
        self.deadlines.retain(|&(h, _)| h != c);
        let keys: Vec<String> = self
            .recs
            .range((c, LockId(0))..=(c, LockId(u64::MAX)))
            .filter(|(_, r)| r.token.is_some() && fake.string(&r.key, now) == r.token.as_deref())
            .map(|(_, r)| r.key.clone())
            .collect();
        for key in keys {
            let expires = fake.expiry(&key, now).unwrap_or(now);
            self.stats.crash_checks += 1;
            self.obligations.push(Obligation {
                key,
                crashed_at: now,
                expires,
                restarts: fake.restarts,
                done: false,
                ghost: false,
                share: false,
            });
        }
        // Shares: when the dead client held every live share of a key, the key is free once
        // they end, and a waiter must get it within a poll cap, as for a lock. (Beside other
        // live holders, the waiters may wait for those too: no bound is checked there.)
        let shared: BTreeSet<String> = self
            .recs
            .range((c, LockId(0))..=(c, LockId(u64::MAX)))
            .filter(|(_, r)| !exclusive_lock(r.resource))
            .map(|(_, r)| r.key.clone())
            .collect();
        for key in shared {
            let shares = fake.share_deadlines(&key, now);
            let dead = |t: &str| self.by_token.get(t).is_some_and(|&(o, _)| o == c);
            if shares.is_empty() || !shares.iter().all(|(t, _)| dead(t)) {
                continue;
            }
            let expires = shares.iter().map(|&(_, at)| at).max().unwrap_or(now);
            self.stats.crash_checks += 1;
            self.obligations.push(Obligation {
                key,
                crashed_at: now,
                expires,
                restarts: fake.restarts,
                done: false,
                ghost: false,
                share: true,
            });
        }
    }

    /// A request client `c` sent before it vanished runs on the server now: it may confirm a
    /// claim on `key`, which then counts as a crashed holder's lease.
    pub fn on_dead_request(&mut self, key: &str) {
        for ob in self.obligations.iter_mut().filter(|o| o.key == key && !o.done) {
            ob.ghost = false;
        }
    }

    pub fn on_pause(&mut self, c: usize, now: u64) {
        self.clients[c].paused = true;
        self.clients[c].paused_since = now;
    }

    pub fn on_resume(&mut self, c: usize, now: u64) {
        let v = &mut self.clients[c];
        v.paused = false;
        v.pauses.push((v.paused_since, now));
    }

    // ------------------------------------------------------------ invariants

    pub fn check_step(&mut self, now: u64, fake: &Fake) {
        self.stats.steps += 1;
        self.mutual_exclusion(now, fake);
        let persistent = |k: &str| k == WRONGTYPE_KEY || self.value_keys.contains(k);
        if let Some(k) = fake.keys_without_ttl(now).find(|k| !persistent(k)) {
            let k = k.to_owned();
            self.fail(now, format!("key {k} has no TTL"));
        }
        self.deadlines_kept(now);
        self.crashed_holders_replaced(now, fake);
    }

    /// Per key, by each holder's own validity: a lock has at most one holder; a semaphore at
    /// most its capacity; a read-write lock at most one writer, never beside a reader. And
    /// the server agrees each holder holds: the key is its token, or its share is live.
    fn mutual_exclusion(&mut self, now: u64, fake: &Fake) {
        let mut holders: BTreeMap<&str, Vec<(usize, &Rec)>> = BTreeMap::new();
        for &(c, id) in &self.held {
            let r = &self.recs[&(c, id)];
            let Some(h) = r.held else { continue };
            if !h.lost && !r.released && h.valid_until > now && !Self::tainted(r, fake) {
                holders.entry(r.key.as_str()).or_default().push((c, r));
            }
        }
        let mut problem = None;
        for (key, hs) in &holders {
            let who = || {
                let who: Vec<String> = hs
                    .iter()
                    .map(|(c, r)| {
                        format!(
                            "client {c} {:?} (fence {:?}, token {:?})",
                            r.resource,
                            r.held.map(|h| h.fence),
                            r.token
                        )
                    })
                    .collect();
                who.join(" and ")
            };
            let count = |f: fn(Resource) -> bool| hs.iter().filter(|(_, r)| f(r.resource)).count();
            let locks = count(exclusive_lock);
            let writers = count(|r| r == Resource::Write);
            let readers = count(|r| r == Resource::Read);
            let permits = hs.iter().filter_map(|(_, r)| match r.resource {
                Resource::Permit { capacity } => Some((capacity, 1)),
                Resource::Permits { capacity, count } => Some((capacity, count)),
                _ => None,
            });
            let capacity = permits.clone().map(|(c, _)| c).min();
            let in_use: u32 = permits.map(|(_, n)| n).sum();
            if locks > 1 || (locks == 1 && hs.len() > 1) {
                problem = Some(format!("two holders of {key}: {}", who()));
            } else if writers > 1 || (writers == 1 && readers > 0) {
                problem = Some(format!("a writer beside another holder of {key}: {}", who()));
            } else if capacity.is_some_and(|cap| in_use > cap) {
                problem = Some(format!("more permits of {key} than its capacity {capacity:?}: {}", who()));
            }
            for (c, r) in hs {
                let known = match r.resource {
                    Resource::Lock | Resource::Mutex { .. } => fake.string(key, now) == r.token.as_deref(),
                    _ => r.token.as_deref().is_some_and(|t| fake.share_live(key, t, now)),
                };
                if !known {
                    problem = Some(format!(
                        "client {c} holds {key} ({:?}) until {} but the server does not know it: {:?}, token {:?}",
                        r.resource,
                        fmt_ms(r.held.map_or(0, |h| h.valid_until)),
                        fake.string(key, now),
                        r.token
                    ));
                }
                // Nor does a lock's holder trust it past the key's expiry: a lease counts from an
                // instant before the server set that expiry (clocks here run at one rate).
                let until = r.held.map_or(0, |h| h.valid_until);
                let expires = fake.expiry(key, now);
                if known
                    && matches!(r.resource, Resource::Lock | Resource::Mutex { .. })
                    && expires.is_some_and(|e| until > e)
                {
                    problem = Some(format!(
                        "client {c} trusts {key} until {}, past its expiry at {}",
                        fmt_ms(until),
                        fmt_ms(expires.unwrap_or(0))
                    ));
                }
            }
        }
        if let Some(p) = problem {
            self.fail(now, p);
        }
    }

    /// Every wait with a deadline has its outcome by then (plus slack).
    fn deadlines_kept(&mut self, now: u64) {
        let mut late = None;
        for &(c, id) in &self.deadlines {
            let v = &self.clients[c];
            let Some(d) = self.recs[&(c, id)].deadline else { continue };
            if v.alive && !v.paused && now > v.fires_at(d) + self.deadline_slack {
                late = Some(format!("client {c} {id:?}: no outcome by deadline {} (+slack)", fmt_ms(d)));
            }
        }
        if let Some(p) = late {
            self.fail(now, p);
        }
    }

    /// A crashed holder's key goes to someone within TTL + poll cap (+ network slack), as
    /// long as a waiter that nothing else delayed is there to take it.
    fn crashed_holders_replaced(&mut self, now: u64, fake: &Fake) {
        let mut problem = None;
        for ob in self.obligations.iter_mut().filter(|o| !o.done) {
            if fake.restarts != ob.restarts {
                ob.done = true;
                continue;
            }
            // Requests the dead client sent before crashing still run (a renewal, or an
            // acquisition granting it the key again): the wait starts when its lease ends.
            // A vanished waiter's claim is extended only by such a request (its confirmation).
            let dead = |t: &str| self.by_token.get(t).is_some_and(|&(c, _)| !self.clients[c].alive);
            if !ob.ghost && fake.string(&ob.key, now).is_some_and(dead) {
                ob.expires = fake.expiry(&ob.key, now).unwrap_or(now);
            }
            if ob.share {
                // A renewal the dead client sent before crashing may still extend its share.
                let dead_until =
                    fake.share_deadlines(&ob.key, now).into_iter().filter(|(t, _)| dead(t)).map(|(_, at)| at).max();
                ob.expires = ob.expires.max(dead_until.unwrap_or(0));
            }
            for (&(c, id), r) in &self.recs {
                let v = &self.clients[c];
                let limit = ob.expires.max(r.delayed_until) + r.opts.poll_cap.as_nanos() as u64 + self.liveness_slack;
                let qualifies = r.key == ob.key
                    && v.alive
                    && !r.try_only
                    && !r.ended
                    && !r.released
                    && r.started <= ob.expires
                    && r.opts.confirm == Confirm::None
                    && r.deadline.is_none_or(|d| d > limit)
                    && !v.paused_within(ob.crashed_at, now);
                if qualifies && now > limit {
                    let whose = if ob.ghost { "a vanished waiter's claim" } else { "a crashed holder's lease" };
                    problem = Some(format!(
                        "{} held by {whose} until {}; waiter client {c} {id:?} still waits",
                        ob.key,
                        fmt_ms(ob.expires)
                    ));
                    ob.done = true;
                }
            }
        }
        if let Some(p) = problem {
            self.fail(now, p);
        }
    }

    /// After quiescing: no queue entry and no lock key of a finished lock of a live client.
    pub fn check_quiesced(&mut self, now: u64, fake: &Fake) {
        let mut problems = Vec::new();
        for (queue, entry) in fake.list_entries(now) {
            let token = entry.split(':').next().unwrap_or_default();
            if self.live_token(token).is_some_and(|r| !r.release_failed) {
                problems.push(format!("queue {queue} still holds {entry}"));
            }
        }
        for (key, value) in fake.strings(now) {
            if self.live_token(&value).is_some_and(|r| !r.release_failed) {
                problems.push(format!("{key} still holds the token of a finished lock"));
            }
        }
        for (key, member, _) in fake.zset_entries(now) {
            if self.live_token(&member).is_some_and(|r| !r.release_failed) && fake.share_live(&key, &member, now) {
                problems.push(format!("{key} still holds a share of a finished lock"));
            }
        }
        for (&(c, id), r) in &self.recs {
            if self.clients[c].alive && !r.ended && !r.abandoned {
                problems.push(format!("client {c} {id:?} on {} never got an outcome", r.key));
            }
        }
        if let Some(p) = problems.first() {
            let p = format!("after quiescing: {p}");
            self.fail(now, p);
        }
    }
}
