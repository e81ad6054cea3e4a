//! What the async and the blocking driver share beyond the translation: each lock's slot
//! with the answers its callers await, how the engine's outputs are drained after an input,
//! what answers mean to the caller, the lock builder's options, and the connect-time checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{
    Acquire, Engine, Event, IdMap, LockEvent, LockId, LockOptions, LostReason, Misuse, OpId, OwnerToken,
    ReleaseOutcome, Request, Resource, Transmit,
};

use crate::error::Error;
use crate::loss::LossCell;
use crate::metrics::{Meter, Timing};

/// Ops awaited beside the first, each with its answer once in.
type Answers = Vec<(OpId, Option<Event>)>;

/// The answers one lock's callers await, by the op the engine gave each call, and the
/// lock's loss signal.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// The op a caller awaits, and its answer once in: inline, so that a waiting lock
    /// allocates nothing for it, and an answer costs one box (not a list of answers: two
    /// allocations per request, when nearly every lock has one caller at a time).
    first: Option<(OpId, Option<Box<Event>>)>,
    /// More ops awaited at once (calls on one guard from several tasks or threads), each
    /// with its answer once in.
    /// Boxed: every lock's slot carries the field (a pointer, not a vector's three words),
    /// and it is empty while the lock waits.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Answers>>,
    /// The lock's loss signal, shared with its guard and the guard's `LossSignal`s; it
    /// ends when this slot goes (the lock released or its guard dropped). Made when the
    /// guard is (or a loss comes first): a waiting lock needs none.
    loss: Option<Arc<LossCell>>,
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(loss) = &self.loss {
            loss.end();
        }
    }
}

impl Events {
    /// The lock's loss signal.
    pub(crate) fn loss(&mut self) -> &Arc<LossCell> {
        self.loss.get_or_insert_default()
    }

    /// A caller will await the answer to `op`.
    pub(crate) fn expect(&mut self, op: OpId) {
        match self.first {
            None => self.first = Some((op, None)),
            Some(_) => self.rest.get_or_insert_default().push((op, None)),
        }
    }

    /// Records an event: a loss (answer or notice) fires the loss signal; an answer goes to
    /// the caller awaiting its op. Other notices (automatic renewals), and answers nobody
    /// awaits any more, have nobody to go to.
    fn push(&mut self, op: Option<OpId>, event: Event) {
        if let Event::Lost { reason } = event {
            self.loss().set_lost(reason);
        }
        let Some(op) = op else { return };
        match &mut self.first {
            Some((first, answer)) if *first == op => *answer = Some(Box::new(event)),
            _ => {
                if let Some(entry) = self.rest.iter_mut().flat_map(|r| r.iter_mut()).find(|(o, _)| *o == op) {
                    entry.1 = Some(event);
                }
            }
        }
    }

    /// The answer to `op`, once it is in.
    pub(crate) fn take(&mut self, op: OpId) -> Option<Event> {
        if let Some((first, answer)) = &mut self.first
            && *first == op
        {
            let event = answer.take()?;
            self.first = None;
            return Some(*event);
        }
        let rest = self.rest.as_mut()?;
        let i = rest.iter().position(|(o, e)| *o == op && e.is_some())?;
        let (_, event) = rest.swap_remove(i);
        self.forget(op);
        event
    }

    /// Whether the answer to `op` is in.
    pub(crate) fn has(&self, op: OpId) -> bool {
        matches!(&self.first, Some((o, Some(_))) if *o == op)
            || self.rest.iter().flat_map(|r| r.iter()).any(|(o, e)| *o == op && e.is_some())
    }

    /// `op` is no longer awaited (answered, or its caller stopped waiting): nothing of it is
    /// kept.
    pub(crate) fn forget(&mut self, op: OpId) {
        if self.first.as_ref().is_some_and(|(o, _)| *o == op) {
            self.first = None;
        }
        if let Some(rest) = &mut self.rest {
            rest.retain(|(o, _)| *o != op);
            if rest.is_empty() {
                self.rest = None;
            }
        }
    }
}

/// How a lock's waiter is woken: a task's waker, or a condition variable a thread sleeps on.
/// What wakes it is taken out under the state mutex, with the event (so no wake-up is lost),
/// and used once the mutex is released: a waiter woken under it would find it held, and
/// wait for it once more (issue #16).
pub(crate) trait Waiter: Default {
    /// What wakes this lock's waiter, taken out of it.
    type Wakeup: Wakeup;

    /// An event arrived: what wakes whoever waits for the next one (`None`: nobody waits).
    fn wakeup(&mut self) -> Option<Self::Wakeup>;
}

/// A wake-up taken out of a [`Waiter`], to send once the state mutex is released.
pub(crate) trait Wakeup {
    /// Wakes whoever it was taken from.
    fn wake(self);
}

/// A lock's slot in a driver: its events, and how its waiter is woken.
#[derive(Debug, Default)]
pub(crate) struct Slot<W> {
    pub(crate) events: Events,
    pub(crate) waiter: W,
    timing: Timing,
}

impl<W: Waiter> Slot<W> {
    /// Records an event (see [`Events::push`]); returns what wakes the lock's waiter, to send
    /// once the state mutex is released.
    #[must_use]
    pub(crate) fn deliver(&mut self, op: Option<OpId>, event: Event) -> Option<W::Wakeup> {
        self.events.push(op, event);
        self.waiter.wakeup()
    }
}

/// What an engine's drain leaves to do once the state mutex is released.
#[must_use]
pub(crate) struct Drained<W: Waiter> {
    /// Requests to send.
    pub(crate) requests: Vec<Request>,
    /// (Un)subscriptions for the pub/sub worker.
    pub(crate) pubsub: Vec<Transmit>,
    /// The timer must wake sooner than it planned.
    pub(crate) sooner: bool,
    /// The waiters of the locks that had events.
    pub(crate) wakeups: Vec<W::Wakeup>,
}

/// What a driver keeps behind its one mutex: the engine and each lock's slot.
#[derive(Debug)]
pub(crate) struct Shared<W> {
    pub(crate) engine: Engine,
    pub(crate) slots: IdMap<LockId, Slot<W>>,
    /// When the timer task or thread means to wake next; an earlier timer must wake it.
    pub(crate) timer_wake: Option<Instant>,
    meter: Meter,
}

impl<W: Waiter> Shared<W> {
    /// A fresh engine, seeded from the operating system (never from the configuration).
    pub(crate) fn new(config: &crate::ClientConfig) -> Result<Self, Error> {
        Ok(Self {
            engine: Engine::new(config.engine.clone())?,
            slots: IdMap::default(),
            timer_wake: None,
            meter: Meter::new(config),
        })
    }

    /// Starts acquiring `key` and gives the lock a slot for its events: the lock and the op
    /// that answers the caller.
    pub(crate) fn start_acquire(
        &mut self,
        key: &str,
        resource: Resource,
        options: LockOptions,
        how: Acquire,
        now: Instant,
    ) -> Result<(LockId, OpId), Error> {
        let (id, op) = self.engine.acquire_resource(key, resource, options, how, now)?;
        let mut slot = Slot::default();
        slot.events.expect(op);
        slot.timing.start();
        self.slots.insert(id, slot);
        Ok((id, op))
    }

    /// What a guard of an acquired lock keeps: its owner token, as stored in the lock key,
    /// and its loss signal (both taken only once acquired, so that a waiting lock holds
    /// neither). Refused when the lease is no longer valid at `now`, as the caller takes it:
    /// the engine checked the grant when its answer came, but the caller may run much later
    /// (a paused process, a starved task), and a guard is never handed over already expired
    /// or lost: [`LockError::NoValidityLeft`], whether or not the engine's timer has marked it
    /// yet. The caller then gives the lock up, as for any failed acquisition.
    ///
    /// [`LockError::NoValidityLeft`]: rdlock_core::LockError::NoValidityLeft
    pub(crate) fn guard_parts(&mut self, id: LockId, now: Instant) -> Result<(OwnerToken, Arc<LossCell>), Error> {
        if !self.engine.lease(id, now).is_some_and(|l| l.valid) {
            return Err(Error::Lock(rdlock_core::LockError::NoValidityLeft));
        }
        let token = self.engine.owner_token(id).unwrap_or(OwnerToken::new(0));
        let loss = self.slots.get_mut(&id).map_or_else(Default::default, |s| s.events.loss().clone());
        Ok((token, loss))
    }

    /// A caller action on a lock started (as `op`): its caller will await the answer, which
    /// the drain after this input may already bring.
    pub(crate) fn expect(&mut self, id: LockId, op: Result<OpId, Misuse>) -> Result<OpId, Misuse> {
        if let (Ok(op), Some(slot)) = (&op, self.slots.get_mut(&id)) {
            slot.events.expect(*op);
        }
        op
    }

    /// Drains the engine after an input: events go to their locks' slots; requests,
    /// (un)subscriptions and the waiters to wake are returned for the caller, who sends and
    /// wakes them once the mutex is released. Also says whether the timer must wake sooner
    /// than it planned.
    pub(crate) fn drain(&mut self) -> Drained<W> {
        let mut drained = drain(&mut self.engine, &mut self.slots, &mut self.meter);
        drained.sooner = self.engine.poll_timeout().is_some_and(|n| self.timer_wake.is_none_or(|w| n < w));
        drained
    }
}

/// An acquisition under way: its lock, the op that answers it, and its terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Begun {
    pub(crate) id: LockId,
    pub(crate) op: OpId,
    /// A wait out of time, made as one attempt: busy is then [`Error::TimedOut`].
    pub(crate) timed: bool,
    pub(crate) deadline: Option<Instant>,
}

/// Checks the server's eviction policy from its `INFO memory` text: every policy but
/// `noeviction` may evict a lock key (TTL'd keys first under `volatile-*`) or a queue, which
/// breaks exclusion or drops hand-offs like a restart does. Warns, or refuses when asked.
pub(crate) fn check_eviction(info: &str, config: &crate::ClientConfig) -> Result<(), Error> {
    let Some(policy) = info.lines().find_map(|l| l.strip_prefix("maxmemory_policy:")).map(str::trim) else {
        return Ok(());
    };
    if policy == "noeviction" {
        return Ok(());
    }
    if config.refuse_evicting_server {
        return Err(Error::EvictingServer { policy: policy.to_owned() });
    }
    tracing::warn!(policy, "the server may evict keys: a held lock or a wait queue can vanish under memory pressure");
    Ok(())
}

/// What the server offers for durable confirmation, from the replies to `COMMAND INFO
/// WAITAOF` and `INFO persistence` (`None` when either is unreadable, say refused by ACLs).
pub(crate) fn durability(replies: &[redis::Value]) -> Option<rdlock_core::Durability> {
    use redis::Value;
    let waitaof = match replies.first()? {
        Value::Array(entries) => entries.first().is_some_and(|e| !matches!(e, Value::Nil)),
        _ => return None,
    };
    let info: String = redis::from_redis_value(replies.get(1)?.clone()).ok()?;
    let aof = info.lines().find_map(|l| l.strip_prefix("aof_enabled:"))?.trim() == "1";
    Some(rdlock_core::Durability { waitaof, aof })
}

/// Whether `COMMAND DOCS SET` names the `IFEQ` argument (Valkey 8.1+, Redis 8.4+): its
/// tokens are where the server lists what it parses, never its version string.
pub(crate) fn offers_ifeq(docs: &redis::Value) -> bool {
    use redis::Value;
    match docs {
        Value::BulkString(b) => b.eq_ignore_ascii_case(b"IFEQ"),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => s.eq_ignore_ascii_case("IFEQ"),
        Value::Array(items) | Value::Set(items) => items.iter().any(offers_ifeq),
        Value::Map(pairs) => pairs.iter().any(|(k, v)| offers_ifeq(k) || offers_ifeq(v)),
        _ => false,
    }
}

/// The database whose keyspace notifications waiters on shared keys may rely on, from the
/// setting and, when it says to detect, the server's `notify-keyspace-events` flags
/// (`None`: not readable).
pub(crate) fn keyspace_db(
    redis: &redis::Client,
    setting: crate::KeyspaceNotifications,
    flags: Option<&str>,
) -> Option<u32> {
    let on = match setting {
        crate::KeyspaceNotifications::On => true,
        crate::KeyspaceNotifications::Off => false,
        crate::KeyspaceNotifications::Detect => flags.is_some_and(crate::KeyspaceNotifications::covered_by),
    };
    let db = u32::try_from(redis.get_connection_info().redis_settings().db()).ok();
    db.filter(|_| on)
}

/// `CONFIG GET notify-keyspace-events` as a pair, read as its flags.
pub(crate) fn keyspace_flags(reply: redis::RedisResult<Vec<String>>) -> Option<String> {
    reply.ok().and_then(|v| v.into_iter().nth(1))
}

fn drain<W: Waiter>(engine: &mut Engine, slots: &mut IdMap<LockId, Slot<W>>, meter: &mut Meter) -> Drained<W> {
    let mut requests = Vec::new();
    let mut pubsub = Vec::new();
    let mut wakeups = Vec::new();
    while let Some(t) = engine.poll_transmit() {
        match t {
            Transmit::Request(r) => requests.push(r),
            other => pubsub.push(other),
        }
    }
    while let Some(warning) = engine.poll_warning() {
        match warning {
            rdlock_core::Warning::MixedSharing { key } => tracing::warn!(
                key,
                "a shared-mode release found queue-mode waiters on its key: every rdlock client of a key shared \
                 with foreign clients must use Sharing::Foreign"
            ),
            other => tracing::warn!(?other, "rdlock"),
        }
    }
    // A lock without a slot was given up: nobody is told.
    while let Some(LockEvent { lock, op, event }) = engine.poll_event() {
        // A notice other than a loss (an automatic renewal) has nobody to go to: skipped
        // before the look-up, as 100,000 held locks make 100,000 of them every few seconds.
        if op.is_none() && !matches!(event, Event::Lost { .. }) {
            continue;
        }
        if let Some(slot) = slots.get_mut(&lock) {
            meter.event(&mut slot.timing, &event);
            wakeups.extend(slot.deliver(op, event));
        }
    }
    meter.stats(engine.stats());
    Drained { requests, pubsub, sooner: false, wakeups }
}

/// How to make an acquisition: a wait whose deadline has already come is one attempt
/// (`true`: a busy lock then answers [`Error::TimedOut`]), like `try_lock`.
pub(crate) fn attempt(how: Acquire, now: Instant) -> (Acquire, bool) {
    match how {
        Acquire::Wait { deadline: Some(d) } if d <= now => (Acquire::Try, true),
        how => (how, false),
    }
}

/// A successful acquisition's answer: held with this fence and validity, or busy.
pub(crate) enum Answer {
    Acquired { fence: u64, valid_until: Instant },
    Busy { holder_ttl: Option<Duration> },
}

/// The answer to an acquisition, or why it failed; `timed` (a wait out of time, made as one
/// attempt) turns busy into [`Error::TimedOut`].
pub(crate) fn acquired(event: Option<Event>, timed: bool) -> Result<Answer, Error> {
    match event {
        Some(Event::Acquired { fence, valid_until }) => {
            tracing::debug!(fence, "acquired");
            Ok(Answer::Acquired { fence, valid_until })
        }
        Some(Event::Busy { .. }) if timed => Err(Error::TimedOut),
        Some(Event::Busy { holder_ttl }) => Ok(Answer::Busy { holder_ttl }),
        Some(Event::TimedOut) => Err(Error::TimedOut),
        Some(Event::ReplicationShortfall { acked, wanted }) => Err(Error::ReplicationShortfall { acked, wanted }),
        Some(Event::Failed(e)) => Err(Error::from(e)),
        _ => Err(Error::Closed),
    }
}

/// An acquisition's guard (a wait answers busy only on a closed client).
pub(crate) fn guard<G>(answer: crate::attempt::TryLock<G>) -> Result<G, Error> {
    answer.acquired().ok_or(Error::Closed)
}

/// An acquisition's guard, or `None` when busy.
#[allow(clippy::unnecessary_wraps)] // a map of every acquisition: one signature for all
pub(crate) fn maybe<G>(answer: crate::attempt::TryLock<G>) -> Result<Option<G>, Error> {
    Ok(answer.acquired())
}

/// Starts lock `id`'s release (`start`: a plain one, or a mutex's write and release), and
/// reads the engine's count of hand-offs (`Stats::handoffs`) for [`forget_released`].
pub(crate) fn begin_release<W: Waiter, T>(shared: &mut Shared<W>, start: impl FnOnce(&mut Shared<W>) -> T) -> (u64, T) {
    (shared.engine.stats().handoffs, start(shared))
}

/// Forgets lock `id` once its release is answered, and says whether the caller should yield
/// once: a release of this client's engine handed a lock over since `before`
/// ([`begin_release`]'s count), so a waiter of this process may have been woken with the
/// reply. Nearly always this release's own hand-off; another task's on the same client in the
/// same moment costs only that one extra poll.
pub(crate) fn forget_released<W: Waiter>(shared: &mut Shared<W>, id: LockId, before: u64) -> bool {
    shared.slots.remove(&id);
    shared.engine.stats().handoffs > before
}

/// The answer to a release: what is known of it.
pub(crate) fn released(event: Option<Event>) -> Result<ReleaseOutcome, Error> {
    match event {
        Some(Event::Released { outcome }) => Ok(outcome),
        Some(Event::Failed(e)) => Err(Error::from(e)),
        _ => Err(Error::Closed),
    }
}

/// The answer to a downgrade.
pub(crate) fn downgraded(event: Option<Event>) -> Result<(), Error> {
    match event {
        Some(Event::Downgraded) => Ok(()),
        Some(Event::Lost { reason }) => Err(Error::Lost(reason)),
        Some(Event::Failed(e)) => Err(Error::from(e)),
        _ => Err(Error::Closed),
    }
}

/// Starts a downgrade; returns the op its answer carries. A typed error for a guard that is
/// not a write share, `Lost` for one whose lease is gone.
pub(crate) fn start_downgrade<W: Waiter>(shared: &mut Shared<W>, id: LockId, now: Instant) -> Result<OpId, Error> {
    let op = shared.engine.downgrade(id, now);
    match shared.expect(id, op) {
        Ok(op) => Ok(op),
        Err(Misuse::NotAWriter(_)) => Err(Error::InvalidInput(rdlock_core::InvalidInput::NotAWriter)),
        Err(_) => Err(lost(&shared.engine, id)),
    }
}

/// A lease the engine no longer holds: lost, for the reason the engine knows.
fn lost(engine: &Engine, id: LockId) -> Error {
    Error::Lost(engine.lock_info(id).and_then(|i| i.lost).unwrap_or(LostReason::Expired))
}

/// The answer to an extension: the new end of validity.
pub(crate) fn extended(event: Option<Event>) -> Result<Instant, Error> {
    match event {
        Some(Event::Renewed { valid_until }) => Ok(valid_until),
        Some(Event::Lost { reason }) => Err(Error::Lost(reason)),
        _ => Err(Error::Closed),
    }
}

/// Starts an extension; returns the op its answer carries. Refused (`Lost`) when the
/// engine no longer holds the lease.
pub(crate) fn start_extend<W: Waiter>(shared: &mut Shared<W>, id: LockId, now: Instant) -> Result<OpId, Error> {
    let op = shared.engine.extend(id, now);
    shared.expect(id, op).map_err(|_| lost(&shared.engine, id))
}

/// Starts a release; returns the op its answer carries.
pub(crate) fn start_release<W: Waiter>(shared: &mut Shared<W>, id: LockId, now: Instant) -> Result<OpId, Error> {
    let op = shared.engine.release(id, now);
    shared.expect(id, op).map_err(|_| Error::Closed)
}

/// A guard's view of its lease, as the engine decides it: the end of validity, and whether
/// it holds at `now` (a lock the engine no longer holds: `fallback`, and not valid).
pub(crate) fn lease(engine: &Engine, id: LockId, fallback: Instant, now: Instant) -> (Instant, bool) {
    engine.lease(id, now).map_or((fallback, false), |l| (l.valid_until, l.valid))
}

/// One acquisition's options, before the builder is told to lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LockRequest {
    pub(crate) options: LockOptions,
    pub(crate) deadline: Option<Instant>,
    pub(crate) timeout: Option<Duration>,
}

impl LockRequest {
    pub(crate) fn new(options: LockOptions) -> Self {
        Self { options, deadline: None, timeout: None }
    }

    /// The deadline, from an explicit one or a timeout counted from `now`.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        // A timeout too long to count is no deadline.
        self.deadline.or_else(|| self.timeout.and_then(|t| now.checked_add(t)))
    }
}

/// A script's refusal of a key of another type is [`Error::NotALock`]; other failures stay.
pub(crate) fn not_a_lock(key: &str, e: rdlock_core::LockError) -> Error {
    match e {
        // The scripts say WRONGTYPE for the lock key, RDLOCK for the keys beside it.
        rdlock_core::LockError::Server(s)
            if s.code == "WRONGTYPE" || (s.code == "RDLOCK" && s.message.contains("holds another type")) =>
        {
            Error::NotALock { key: key.to_owned() }
        }
        e => Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use rdlock_core::Durability;
    use redis::Value;

    /// Answers reach the op they answer, whichever op awaited first and in whatever order
    /// they come; an answer nobody awaits is dropped.
    #[test]
    fn answers_go_to_their_ops() {
        use rdlock_core::{Event, OpId};
        let mut events = super::Events::default();
        let (a, b, c) = (OpId(1), OpId(2), OpId(3));
        events.expect(a);
        events.expect(b);
        events.push(Some(b), Event::Downgraded);
        events.push(Some(c), Event::Stored);
        assert!(events.has(b) && !events.has(a) && !events.has(c));
        assert_eq!(events.take(a), None);
        events.push(Some(a), Event::TimedOut);
        assert_eq!(events.take(a), Some(Event::TimedOut));
        assert_eq!(events.take(b), Some(Event::Downgraded));
        assert!(!events.has(a) && !events.has(b) && events.first.is_none() && events.rest.is_none());
        // Forgotten before its answer came: nothing of it is kept.
        events.expect(c);
        events.forget(c);
        events.push(Some(c), Event::Stored);
        assert_eq!(events.take(c), None);
    }

    fn info(aof: &str) -> Value {
        Value::BulkString(format!("# Persistence\r\nloading:0\r\naof_enabled:{aof}\r\n").into_bytes())
    }

    #[test]
    fn durability_reads_the_command_entry_and_the_aof_flag() {
        let entry = Value::Array(vec![Value::Array(vec![Value::BulkString(b"waitaof".to_vec())])]);
        let missing = Value::Array(vec![Value::Nil]);
        let read = |cmd: &Value, aof| super::durability(&[cmd.clone(), info(aof)]);
        assert_eq!(read(&entry, "1"), Some(Durability { waitaof: true, aof: true }));
        assert_eq!(read(&entry, "0"), Some(Durability { waitaof: true, aof: false }));
        assert_eq!(read(&missing, "0"), Some(Durability { waitaof: false, aof: false }));
        // Unreadable (refused by ACLs, or odd): unknown, and the server's answers decide.
        assert_eq!(super::durability(&[Value::Nil, info("1")]), None);
        assert_eq!(super::durability(&[entry.clone(), Value::Int(3)]), None);
        assert_eq!(super::durability(&[entry]), None);
    }

    #[test]
    fn ifeq_is_read_from_the_set_commands_arguments() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let arg = |token: &str| Value::Array(vec![bulk("name"), bulk("x"), bulk("token"), bulk(token)]);
        let docs = |token: &str| {
            Value::Array(vec![
                bulk("set"),
                Value::Array(vec![bulk("arguments"), Value::Array(vec![arg("NX"), arg(token)])]),
            ])
        };
        assert!(super::offers_ifeq(&docs("IFEQ")));
        assert!(!super::offers_ifeq(&docs("XX")));
        // RESP3 answers with maps; a summary that mentions the word is no argument.
        let map =
            Value::Map(vec![(bulk("set"), Value::Map(vec![(bulk("arguments"), Value::Array(vec![arg("IFEQ")]))]))]);
        assert!(super::offers_ifeq(&map));
        assert!(!super::offers_ifeq(&bulk("Sets the key's value only if IFEQ matches")));
        // Refused (no `COMMAND` right) or unknown: no.
        assert!(!super::offers_ifeq(&Value::Nil));
    }
}
