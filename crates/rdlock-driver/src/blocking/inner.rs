//! The blocking side of the shared cell: each lock's slot (with a condition variable its
//! waiter sleeps on), the connection pools, the workers, and how requests run on the
//! caller's thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdlock_core::{Class, Command, Event, LockId, Node, OpId, Reply, Request, RequestId, Route, TransportError};
use redis::Connection;

use crate::cell::{self, Cell, Side};
use crate::cluster;
use crate::common;
use crate::config::ClientConfig;
use crate::convert;
use crate::error::Error;
use crate::exchange::Exchange;
use crate::loaded::Server;

use super::pool::{MAX_WORKERS, Taken};

/// A worker idle this long ends.
const WORKER_IDLE: Duration = Duration::from_secs(10);
/// Shortest read timeout set on a connection (a zero timeout would mean none).
const MIN_WAIT: Duration = Duration::from_millis(10);

/// A lock's waiter: the condition variable its callers' threads sleep on (paired with the
/// state mutex) in [`Inner::next_event`], and how many sleep on it now.
#[derive(Debug, Default)]
pub(super) struct Sleepers {
    cond: Arc<Condvar>,
    /// Counted by each thread before it sleeps and uncounted once awake, both under the
    /// state mutex: the events, and so every read of the count, are behind that mutex too.
    sleeping: usize,
    /// Notifications sent, for the tests to see that none is sent when nobody sleeps.
    #[cfg(test)]
    notified: usize,
}

/// Every event of a lock wakes the threads that sleep on it, and only when one does: a
/// notification with none is a system call that wakes no one, once per request (issue #16).
/// No wake-up is lost: the count is read under the state mutex, after the event is in the
/// slot; a thread that looked for its event before that, and did not find it, counted itself
/// under the same mutex and released it only by sleeping on the condition variable (the wait
/// queues it first), so it is counted, and asleep or about to be when the notification comes
/// after the mutex is released: a condition variable's waiter queued before a notification
/// gets it, whenever the notifier took the mutex. A thread that looks after finds the event
/// and never sleeps.
impl common::Waiter for Sleepers {
    type Wakeup = Arc<Condvar>;

    fn wakeup(&mut self) -> Option<Arc<Condvar>> {
        if self.sleeping == 0 {
            return None;
        }
        #[cfg(test)]
        {
            self.notified += 1;
        }
        Some(self.cond.clone())
    }
}

impl common::Wakeup for Arc<Condvar> {
    fn wake(self) {
        self.notify_all();
    }
}

/// The read timeout for an exchange allowed `limit`, `elapsed` of it gone: what is left,
/// rounded down to whole milliseconds (at least [`MIN_WAIT`]). Rounded, it is the same from
/// one request to the next (the microseconds spent before it no longer change it), so a
/// pooled connection's timeout is set again only when it changes: unrounded, a
/// `setsockopt` on nearly every request (issue #16). It then fires at most 1 ms early, never
/// late: nothing against a response timeout or a caller's deadline.
fn read_limit(limit: Duration, elapsed: Duration) -> Duration {
    let left = limit.saturating_sub(elapsed);
    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)).max(MIN_WAIT)
}

/// A synchronous connection, the read timeout it is set to, and the epoch of the primary
/// it was made to.
struct Pooled {
    conn: Connection,
    read_timeout: Duration,
    epoch: u64,
}

/// The pools hold [`Pooled`] connections.
type Pool = super::pool::Pool<Pooled>;

/// Requests from the background threads, and the workers sending them.
#[derive(Default)]
struct Work {
    queue: VecDeque<Request>,
    workers: usize,
    idle: usize,
}

/// The blocking side: the condition variables its threads sleep on, the pools, and the
/// workers.
pub(super) struct Threads {
    /// Wakes the timer thread (paired with the state mutex).
    timer_cond: Condvar,
    commands: Pool,
    confirm: Pool,
    /// In a cluster: each node's pool of each class.
    nodes: cluster::PerNode<Pool>,
    work: Mutex<Work>,
    work_cond: Condvar,
    /// Wakes the pub/sub thread (paired with the pub/sub queue's mutex).
    pubsub_cond: Condvar,
}

impl Side for Threads {
    type Waiter = Sleepers;

    fn wake_timers(cell: &Cell<Self>) {
        cell.side.timer_cond.notify_one();
    }

    fn wake_pubsub(cell: &Cell<Self>) {
        cell.side.pubsub_cond.notify_one();
    }

    fn wake_all(cell: &Cell<Self>) {
        // Notify under each mutex, so that a thread between its check and its wait still
        // sees the flag.
        let st = cell.state();
        cell.side.timer_cond.notify_all();
        drop(st);
        let queue = cell.pubsub();
        cell.side.pubsub_cond.notify_all();
        drop(queue);
        let work = cell.work();
        cell.side.work_cond.notify_all();
        drop(work);
    }

    fn send_background(cell: &Arc<Cell<Self>>, requests: Vec<Request>) {
        cell.run_background(requests);
    }
}

impl Threads {
    /// A cluster node's pool of `class`.
    fn node(&self, node: &(String, u16), class: Class) -> Arc<Pool> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.entry((node.clone(), class)).or_default().clone()
    }
}

pub(super) type Inner = Cell<Threads>;

impl Cell<Threads> {
    /// A client's state, before its first connection and its threads.
    pub(super) fn with_threads(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
        let threads = Threads {
            timer_cond: Condvar::new(),
            commands: Pool::default(),
            confirm: Pool::default(),
            nodes: Mutex::default(),
            work: Mutex::new(Work::default()),
            work_cond: Condvar::new(),
            pubsub_cond: Condvar::new(),
        };
        Cell::new(redis, config, threads)
    }

    /// Makes the first command connection, so that a wrong address fails early.
    pub(super) fn connect(&self) -> Result<(), Error> {
        let mut conn = self.open()?;
        // A server that wants credentials accepts the connection but no command: ask once.
        redis::cmd("PING").query::<()>(&mut conn.conn)?;
        // A user without the right to INFO cannot be checked; that is no reason to refuse.
        if let Ok(info) = redis::cmd("INFO").arg("memory").query::<String>(&mut conn.conn) {
            common::check_eviction(&info, &self.config)?;
        }
        let flags = self.keyspace_query().map(|cmd| cmd.query(&mut conn.conn));
        self.set_keyspace(flags);
        self.set_capabilities(Self::capability_query().query(&mut conn.conn));
        self.side.commands.adopt(conn.epoch, conn);
        Ok(())
    }

    fn open(&self) -> redis::RedisResult<Pooled> {
        self.open_within(self.config.response_timeout, None)
    }

    /// A new connection whose set-up (scripts loaded) takes at most about `limit`: to
    /// `node` in a cluster (its connections never age: epoch 0), else to the primary.
    fn open_within(&self, limit: Duration, node: Option<&redis::Client>) -> redis::RedisResult<Pooled> {
        let started = Instant::now();
        let limit = limit.max(MIN_WAIT);
        // Measured: against a frozen server the redis crate's set-up waits its timeout once
        // per set-up reply (twice), so it gets half of what is allowed.
        let connect = self.config.connection_timeout.min(limit) / 2;
        let (client, epoch) = match node {
            Some(c) => (c.clone(), 0),
            None => self.target(),
        };
        let mut conn = client.get_connection_with_timeout(connect)?;
        crate::metrics::connected(&self.config);
        // The hand-shake may have used most of the time: the scripts get what is left.
        let left = limit.saturating_sub(started.elapsed());
        if left < MIN_WAIT {
            return Err(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connection set-up took the whole limit").into()
            );
        }
        conn.set_write_timeout(Some(left))?;
        conn.set_read_timeout(Some(left))?;
        let server = Server::of(node, epoch);
        if self.scripts.first(&server)
            && let Err(e) = convert::load_scripts().query::<()>(&mut conn)
        {
            self.scripts.failed(&server);
            if convert::is_fatal(&e) {
                // A late reply would answer the next request: never reuse this connection.
                return Err(e);
            }
        }
        Ok(Pooled { conn, read_timeout: left, epoch })
    }

    /// Blocks until the answer to `op` of lock `id` is in.
    pub(super) fn next_event(&self, id: LockId, op: OpId) -> Option<Event> {
        let mut st = self.state();
        loop {
            let slot = st.slots.get_mut(&id)?;
            if let Some(e) = slot.events.take(op) {
                return Some(e);
            }
            // Counted before it sleeps, under the mutex (see `Sleepers`).
            slot.waiter.sleeping += 1;
            let cond = slot.waiter.cond.clone();
            st = cond.wait(st).unwrap_or_else(|e| e.into_inner());
            // The slot may be gone meanwhile (the count with it).
            if let Some(slot) = st.slots.get_mut(&id)
                && Arc::ptr_eq(&slot.waiter.cond, &cond)
            {
                slot.waiter.sleeping -= 1;
            }
        }
    }

    /// Sends requests (of the background) one after another on this thread, feeding each
    /// reply back and sending what follows.
    fn run(&self, requests: Vec<Request>) {
        let mut queue = VecDeque::from(requests);
        while let Some(req) = queue.pop_front() {
            queue.extend(self.execute(req, None, true));
        }
    }

    /// Sends `requests` on this thread until the caller's answer (the event of `id` that
    /// carries `op`) is in, each exchange cut short at `deadline`; then hands what is
    /// left (clean-ups, retries, other locks' requests) to the workers and returns the
    /// answer. So a caller waits at most until its deadline, or one response timeout
    /// without one.
    pub(super) fn run_until(
        self: &Arc<Self>,
        requests: Vec<Request>,
        id: LockId,
        op: OpId,
        deadline: Option<Instant>,
    ) -> Option<Event> {
        let mut queue = VecDeque::from(requests);
        while let Some(req) = queue.pop_front() {
            if self.state().slots.get(&id).is_none_or(|s| s.events.has(op)) {
                queue.push_front(req);
                break;
            }
            queue.extend(self.execute(req, deadline, false));
        }
        self.run_background(queue.into());
        self.next_event(id, op)
    }

    /// Sends the first of `requests` on this thread (for a dropped guard: one response
    /// timeout at most) and hands the rest, and what follows, to the workers.
    pub(super) fn run_first(self: &Arc<Self>, requests: Vec<Request>) {
        let mut queue = VecDeque::from(requests);
        if let Some(req) = queue.pop_front() {
            queue.extend(self.execute(req, None, false));
        }
        self.run_background(queue.into());
    }

    /// Hands requests made on a background thread (timers, pub/sub) to the workers, so that
    /// a slow exchange (a stalled link, a `WAIT`) never holds up timers or messages.
    pub(super) fn run_background(self: &Arc<Self>, requests: Vec<Request>) {
        if requests.is_empty() {
            return;
        }
        let mut work = self.work();
        work.queue.extend(requests);
        if work.idle > 0 {
            self.side.work_cond.notify_all();
        }
        if work.queue.len() <= work.idle || work.workers >= MAX_WORKERS {
            return;
        }
        work.workers += 1;
        drop(work);
        let inner = self.clone();
        if std::thread::Builder::new().name("rdlock-worker".into()).spawn(move || inner.work_loop()).is_err() {
            let mut work = self.work();
            work.workers -= 1;
            if work.workers == 0 {
                // No worker at all: send them from here rather than never.
                let queued: Vec<Request> = work.queue.drain(..).collect();
                drop(work);
                self.run(queued);
            }
        }
    }

    /// A worker: sends queued requests (and what follows each) until it has been idle for a
    /// while, or the client is closed and nothing is left.
    fn work_loop(&self) {
        let mut work = self.work();
        loop {
            if let Some(req) = work.queue.pop_front() {
                drop(work);
                self.run(vec![req]);
                work = self.work();
                continue;
            }
            if self.is_closed() {
                break;
            }
            work.idle += 1;
            let (next, waited) = self.side.work_cond.wait_timeout(work, WORKER_IDLE).unwrap_or_else(|e| e.into_inner());
            work = next;
            work.idle -= 1;
            if waited.timed_out() && work.queue.is_empty() {
                break;
            }
        }
        work.workers -= 1;
    }

    /// One command outside every lock's life (an operator's inspection or forced release),
    /// on the caller's thread: the engine has nothing to decide about it.
    pub(super) fn direct(&self, key: &str, command: Command) -> Result<Option<Reply>, TransportError> {
        self.exchange(None, self.route_of(key), std::slice::from_ref(&command), None, false)
            .map(|r| r.into_iter().next())
    }

    fn work(&self) -> MutexGuard<'_, Work> {
        self.side.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request and its reply; `background` for the workers' (their connections are
    /// beyond the callers' bound).
    fn execute(&self, req: Request, deadline: Option<Instant>, background: bool) -> Vec<Request> {
        self.sending(&req);
        let exchange = || self.exchange(Some(req.id), req.route, &req.commands, deadline, background);
        let reply = cell::exchange_span(&req).in_scope(exchange);
        self.replied(req.id, reply)
    }

    /// One request on a pooled connection of its route. A connection that timed out or
    /// failed is closed rather than returned: a late reply must never answer the next request.
    fn exchange(
        &self,
        id: Option<RequestId>,
        route: Route,
        commands: &[Command],
        deadline: Option<Instant>,
        background: bool,
    ) -> Result<Vec<Reply>, TransportError> {
        let (Some(topology), Node::Slot(slot)) = (self.cluster.get(), route.node) else {
            // One server: the connection class picks the pool.
            let pool = match route.class {
                Class::Commands => &self.side.commands,
                Class::Confirm => &self.side.confirm,
            };
            return self.exchange_on(id, pool, None, Exchange::new(commands), deadline, background);
        };
        // The slot's primary, following redirections; `TRYAGAIN` is retried for one
        // response timeout, within the caller's deadline.
        let until = Instant::now() + self.config.response_timeout;
        let mut walk = cluster::Walk::new(topology, slot, deadline.map_or(until, |d| d.min(until)));
        let mut replies = cluster::Walk::unserved(slot);
        while let Some(try_) = walk.next(commands) {
            let (node, client, exchange) = match try_ {
                Ok(t) => t,
                Err(unsent) => return unsent,
            };
            let pool = self.side.node(&node, route.class);
            replies = self.exchange_on(id, &pool, Some(&client), exchange, deadline, background);
            match walk.answered(&replies) {
                None => break,
                Some(pause) => std::thread::sleep(pause),
            }
        }
        replies
    }

    /// One exchange on a connection of `pool` (of `node` in a cluster, else of the primary),
    /// for request `id` of the engine's, if it is one.
    fn exchange_on(
        &self,
        id: Option<RequestId>,
        pool: &Pool,
        node: Option<&redis::Client>,
        mut exchange: Exchange<'_>,
        deadline: Option<Instant>,
        background: bool,
    ) -> Result<Vec<Reply>, TransportError> {
        let epoch = if node.is_some() { 0 } else { self.epoch() };
        // Waiting for a connection counts against the caller's deadline only: the exchange's
        // own timeouts count from its turn. Nothing was sent if the deadline passes first.
        let Some((taken, waited)) = pool.take(epoch, background, deadline) else {
            return Err(TransportError::Timeout);
        };
        // What the request asks of the server counts from here once it had to wait for its
        // turn (`Engine::handle_leaving`), as on the async side.
        if let (true, Some(id)) = (waited, id) {
            self.state().engine.handle_leaving(id, Instant::now());
        }
        // A caller's deadline cuts the exchange short (its outcome is then unknown to the
        // engine).
        let started = Instant::now();
        let mut limit = exchange.limit(&self.config);
        if let Some(d) = deadline {
            limit = limit.min(d.saturating_duration_since(started).max(MIN_WAIT));
        }
        let conn = match taken {
            Taken::Idle(c) => Ok(c),
            Taken::New => self.open_within(limit, node),
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                pool.discard(background);
                return exchange.unsent(&e);
            }
        };
        let limit = read_limit(limit, started.elapsed());
        if conn.read_timeout != limit {
            if let Err(e) = conn.conn.set_read_timeout(Some(limit)) {
                pool.discard(background);
                return exchange.unsent(&e);
            }
            conn.read_timeout = limit;
        }
        loop {
            let answer = exchange.query(&mut conn.conn);
            if let Some(done) = exchange.answer(answer) {
                if done.reusable {
                    pool.put(conn.epoch, conn, background);
                } else {
                    pool.discard(background);
                }
                return done.replies;
            }
        }
    }

    // ------------------------------------------------------------ for the threads

    /// Runs due timers; returns the requests they produced.
    pub(super) fn fire_timers(&self) -> Vec<Request> {
        self.with_engine(|s, now| s.engine.handle_timeout(now)).1
    }

    /// Blocks until a timer is due (`true`), or the client is closed and every lock settled.
    pub(super) fn wait_for_timer(&self) -> bool {
        let mut st = self.state();
        loop {
            if self.is_closed() && st.engine.is_empty() {
                return false;
            }
            let now = Instant::now();
            // Idle, still plan a wake-up (see the async driver).
            let next = st.engine.poll_timeout().unwrap_or(now + std::time::Duration::from_secs(1));
            st.timer_wake = Some(next);
            if next <= now {
                return true;
            }
            st = self.side.timer_cond.wait_timeout(st, next - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Blocks until an (un)subscription is queued (`true`) or the client closes (`false`).
    pub(super) fn wait_pubsub(&self) -> bool {
        let queue = self.pubsub();
        let queue = self.side.pubsub_cond.wait_while(queue, |q| q.is_empty() && !self.is_closed());
        drop(queue);
        !self.is_closed()
    }

    /// Sleeps for `pause`, unless the client closes meanwhile.
    pub(super) fn pause(&self, pause: Duration) {
        let queue = self.pubsub();
        let waited = self.side.pubsub_cond.wait_timeout_while(queue, pause, |_| !self.is_closed());
        drop(waited);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdlock_core::{Event, LockId, OpId};

    use super::{Inner, MIN_WAIT, read_limit};
    use crate::common::Slot;

    /// A client's state with no server behind it (nothing here sends).
    fn inner() -> Inner {
        let redis = redis::Client::open("redis://127.0.0.1:1/").expect("an address");
        Inner::with_threads(redis, crate::ClientConfig::default()).expect("a client's state")
    }

    /// Blocks until `n` threads sleep on lock `id` (no timing: each counts itself under the
    /// state mutex just before it sleeps).
    fn until_sleeping(inner: &Inner, id: LockId, n: usize) {
        while inner.state().slots.get(&id).map_or(0, |s| s.waiter.sleeping) < n {
            std::thread::yield_now();
        }
    }

    /// An event for a lock nobody sleeps on notifies nobody (a system call per request that
    /// woke no one; fails before: one notification); callers asleep on their lock, one or
    /// two at once, each get their own event when another thread delivers it (were the wake
    /// skipped while one sleeps, it would sleep for ever: the test would hang).
    #[test]
    fn only_a_sleeping_caller_is_woken_and_it_always_is() {
        let inner = &inner();
        let (id, a, b) = (LockId(1), OpId(1), OpId(2));
        let notified = || inner.state().slots.get(&id).map(|s| s.waiter.notified);
        let deliver = |op, event| {
            let wakeup = inner.state().slots.get_mut(&id).expect("the slot").deliver(Some(op), event);
            // Sent once the mutex is released, as the drain's are.
            if let Some(w) = wakeup {
                crate::common::Wakeup::wake(w);
            }
        };
        let mut slot = Slot::default();
        slot.events.expect(a);
        inner.state().slots.insert(id, slot);
        // Nobody sleeps: the answer waits in the slot, nobody is notified.
        deliver(a, Event::Downgraded);
        assert_eq!(notified(), Some(0), "notified with nobody asleep");
        assert_eq!(inner.next_event(id, a), Some(Event::Downgraded));
        std::thread::scope(|s| {
            // One caller asleep.
            inner.state().slots.get_mut(&id).expect("the slot").events.expect(a);
            let caller = s.spawn(move || inner.next_event(id, a));
            until_sleeping(inner, id, 1);
            deliver(a, Event::TimedOut);
            assert_eq!(caller.join().expect("the caller"), Some(Event::TimedOut));
            // Two callers asleep on one lock: the second's event wakes both, and the first,
            // whether or not it is asleep again when its own comes, gets it.
            let mut st = inner.state();
            let events = &mut st.slots.get_mut(&id).expect("the slot").events;
            events.expect(a);
            events.expect(b);
            drop(st);
            let first = s.spawn(move || inner.next_event(id, a));
            let second = s.spawn(move || inner.next_event(id, b));
            until_sleeping(inner, id, 2);
            deliver(b, Event::Stored);
            assert_eq!(second.join().expect("the second caller"), Some(Event::Stored));
            deliver(a, Event::Downgraded);
            assert_eq!(first.join().expect("the first caller"), Some(Event::Downgraded));
        });
        assert_eq!(inner.state().slots.get(&id).map(|s| s.waiter.sleeping), Some(0));
        assert!(notified().is_some_and(|n| n >= 2));
    }

    /// The read timeout left to an exchange is the same whatever microseconds went before it,
    /// so that it is not set again on every request; never above what is left, never below
    /// the shortest wait. Fails unrounded: 1,999.997 ms against 1,999.960 ms.
    #[test]
    fn the_read_timeout_is_whole_milliseconds_never_more_than_left() {
        let limit = Duration::from_secs(2);
        let us = Duration::from_micros;
        assert_eq!(read_limit(limit, us(3)), read_limit(limit, us(40)));
        assert_eq!(read_limit(limit, us(3)), Duration::from_millis(1999));
        assert_eq!(read_limit(limit, Duration::ZERO), limit);
        assert_eq!(read_limit(limit, us(1_000)), Duration::from_millis(1999));
        assert_eq!(read_limit(limit, us(1_001)), Duration::from_millis(1998));
        for elapsed in [0, 1, 999, 1_000, 1_500, 1_999_000] {
            let left = limit - us(elapsed);
            let got = read_limit(limit, us(elapsed));
            assert!(got <= left.max(MIN_WAIT) && left.max(MIN_WAIT) - got < Duration::from_millis(1), "{elapsed} µs");
        }
        // Nothing or little left: the shortest wait (a zero timeout would be none).
        assert_eq!(read_limit(limit, limit), MIN_WAIT);
        assert_eq!(read_limit(limit, Duration::from_secs(5)), MIN_WAIT);
        assert_eq!(read_limit(Duration::from_micros(10_500), Duration::ZERO), MIN_WAIT);
        // Out of range: no panic.
        assert!(read_limit(Duration::MAX, Duration::ZERO) >= Duration::from_secs(u64::MAX / 1_000 - 1));
    }
}
