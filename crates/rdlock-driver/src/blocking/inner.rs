//! State shared by a blocking client's handles, guards and threads: the engine behind one
//! mutex, each lock's event slot (with a condition variable its waiter sleeps on), and the
//! connection pools.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdlock_core::{Command, Event, LockId, Reply, Request, Route, Script, Transmit, TransportError};
use redis::{Connection, Value};

use crate::common::{self, Events};
use crate::config::ClientConfig;
use crate::convert::{self, Eval};
use crate::error::Error;

/// Idle connections kept per pool; more are closed when returned.
const MAX_IDLE: usize = 8;
/// Most worker threads sending background requests at once.
const MAX_WORKERS: usize = 4;
/// A worker idle this long ends.
const WORKER_IDLE: Duration = Duration::from_secs(10);
/// Shortest read timeout set on a connection (a zero timeout would mean none).
const MIN_WAIT: Duration = Duration::from_millis(10);

/// A lock's events and the condition variable its waiter sleeps on.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) events: Events,
    /// Woken on every event of this lock (paired with the state mutex).
    cond: Arc<Condvar>,
}

impl common::Slot for Slot {
    fn events(&mut self) -> &mut Events {
        &mut self.events
    }

    fn wake(&mut self) {
        self.cond.notify_all();
    }
}

pub(super) type Shared = common::Shared<Slot>;

/// A synchronous connection and the read timeout it is set to.
struct Pooled {
    conn: Connection,
    read_timeout: Duration,
}

/// Idle connections of one route. A thread takes one for a request and puts it back after,
/// so that threads locking at once do not queue behind each other.
#[derive(Default)]
struct Pool(Mutex<Vec<Pooled>>);

impl Pool {
    fn take(&self) -> Option<Pooled> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put(&self, conn: Pooled) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Requests from the background threads, and the workers sending them.
#[derive(Default)]
struct Work {
    queue: VecDeque<Request>,
    workers: usize,
    idle: usize,
}

pub(super) struct Inner {
    pub(super) redis: redis::Client,
    pub(super) config: ClientConfig,
    state: Mutex<Shared>,
    /// Wakes the timer thread (paired with `state`).
    timer_cond: Condvar,
    commands: Pool,
    confirm: Pool,
    work: Mutex<Work>,
    work_cond: Condvar,
    /// (Un)subscriptions for the pub/sub thread.
    pubsub: Mutex<VecDeque<Transmit>>,
    pubsub_cond: Condvar,
    closed: AtomicBool,
}

impl Inner {
    pub(super) fn new(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
        Ok(Self {
            redis,
            state: Mutex::new(Shared::new(&config)?),
            config,
            timer_cond: Condvar::new(),
            commands: Pool::default(),
            confirm: Pool::default(),
            work: Mutex::new(Work::default()),
            work_cond: Condvar::new(),
            pubsub: Mutex::new(VecDeque::new()),
            pubsub_cond: Condvar::new(),
            closed: AtomicBool::new(false),
        })
    }

    pub(super) fn state(&self) -> MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        let setting = self.config.keyspace_notifications;
        let flags = match setting {
            crate::KeyspaceNotifications::Detect => common::keyspace_flags(
                redis::cmd("CONFIG").arg("GET").arg("notify-keyspace-events").query(&mut conn.conn),
            ),
            _ => None,
        };
        let db = common::keyspace_db(&self.redis, setting, flags.as_deref());
        self.state().engine.set_keyspace_db(db);
        self.commands.put(conn);
        Ok(())
    }

    fn open(&self) -> redis::RedisResult<Pooled> {
        self.open_within(self.config.response_timeout)
    }

    /// A new connection whose set-up (scripts loaded) takes at most about `limit`.
    fn open_within(&self, limit: Duration) -> redis::RedisResult<Pooled> {
        let started = Instant::now();
        let limit = limit.max(MIN_WAIT);
        // Measured: against a frozen server the redis crate's set-up waits its timeout once
        // per set-up reply (twice), so it gets half of what is allowed.
        let connect = self.config.connection_timeout.min(limit) / 2;
        let mut conn = self.redis.get_connection_with_timeout(connect)?;
        // The hand-shake may have used most of the time: the scripts get what is left.
        let left = limit.saturating_sub(started.elapsed());
        if left < MIN_WAIT {
            return Err(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connection set-up took the whole limit").into()
            );
        }
        conn.set_write_timeout(Some(left))?;
        conn.set_read_timeout(Some(left))?;
        if let Err(e) = convert::load_scripts().query::<()>(&mut conn)
            && convert::is_fatal(&e)
        {
            // A late reply would answer the next request: never reuse this connection.
            return Err(e);
        }
        Ok(Pooled { conn, read_timeout: left })
    }

    /// Feeds one input to the engine, then drains its outputs in the same critical section:
    /// events go to their locks' slots (waking their waiters), (un)subscriptions to the
    /// pub/sub thread, and the requests come back to the caller, who sends them.
    pub(super) fn with_engine<T>(&self, f: impl FnOnce(&mut Shared, Instant) -> T) -> (T, Vec<Request>) {
        let now = Instant::now();
        let (out, pubsub, requests) = {
            let mut st = self.state();
            let out = f(&mut st, now);
            let (requests, pubsub, sooner) = st.drain();
            if sooner || (self.is_closed() && st.engine.is_empty()) {
                self.timer_cond.notify_one();
            }
            (out, pubsub, requests)
        };
        if !pubsub.is_empty() {
            self.pubsub.lock().unwrap_or_else(|e| e.into_inner()).extend(pubsub);
            self.pubsub_cond.notify_one();
        }
        (out, requests)
    }

    /// Blocks until the next event of `id` that `wanted` accepts, dropping others.
    pub(super) fn next_event(&self, id: LockId, wanted: impl Fn(&Event) -> bool) -> Option<Event> {
        let mut st = self.state();
        loop {
            let slot = st.slots.get_mut(&id)?;
            if let Some(e) = slot.events.take(&wanted) {
                return Some(e);
            }
            let cond = slot.cond.clone();
            st = cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sends requests one after another on this thread, feeding each reply back and sending
    /// what follows.
    pub(super) fn run(&self, requests: Vec<Request>) {
        let mut queue = VecDeque::from(requests);
        while let Some(req) = queue.pop_front() {
            queue.extend(self.execute(req, None));
        }
    }

    /// Sends `requests` on this thread until the caller's answer (an event of `id` that
    /// `wanted` accepts) is in, each exchange cut short at `deadline`; then hands what is
    /// left (clean-ups, retries, other locks' requests) to the workers and returns the
    /// answer. Without an `id` (a dropped guard) only the first request runs here. So a
    /// caller waits at most until its deadline, or one response timeout without one.
    pub(super) fn run_until(
        self: &Arc<Self>,
        requests: Vec<Request>,
        id: Option<LockId>,
        wanted: fn(&Event) -> bool,
        deadline: Option<Instant>,
    ) -> Option<Event> {
        let mut queue = VecDeque::from(requests);
        let mut sent = 0;
        while let Some(req) = queue.pop_front() {
            let answered = match id {
                Some(id) => self.state().slots.get(&id).is_none_or(|s| s.events.has(wanted)),
                None => sent > 0,
            };
            if answered {
                queue.push_front(req);
                break;
            }
            queue.extend(self.execute(req, deadline));
            sent += 1;
        }
        self.run_background(queue.into());
        self.next_event(id?, wanted)
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
            self.work_cond.notify_all();
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
            let (next, waited) = self.work_cond.wait_timeout(work, WORKER_IDLE).unwrap_or_else(|e| e.into_inner());
            work = next;
            work.idle -= 1;
            if waited.timed_out() && work.queue.is_empty() {
                break;
            }
        }
        work.workers -= 1;
    }

    fn work(&self) -> MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn execute(&self, req: Request, deadline: Option<Instant>) -> Vec<Request> {
        let renewals = req.commands.iter().find_map(|c| match c {
            Command::Script { script: Script::Extend, keys, .. } => Some(keys.len()),
            _ => None,
        });
        let span = match renewals {
            Some(n) => tracing::debug_span!("rdlock.renew", locks = n),
            None => tracing::Span::none(),
        };
        let reply = span.in_scope(|| self.exchange(req.route, &req.commands, deadline));
        let (misuse, more) = self.with_engine(|s, now| s.engine.handle_reply(req.id, reply, now));
        if let Err(e) = misuse {
            tracing::warn!(error = %e, "reply not accepted by the engine");
        }
        more
    }

    /// One request on a pooled connection of its route. A connection that timed out or
    /// failed is closed rather than returned: a late reply must never answer the next request.
    fn exchange(
        &self,
        route: Route,
        commands: &[Command],
        deadline: Option<Instant>,
    ) -> Result<Vec<Reply>, TransportError> {
        let pool = match route {
            Route::Commands => &self.commands,
            Route::Confirm => &self.confirm,
        };
        // WAIT blocks on purpose: allow for it on top of the response timeout. A caller's
        // deadline cuts the exchange short (its outcome is then unknown to the engine).
        let started = Instant::now();
        let mut limit = self.config.response_timeout + convert::blocking_time(commands);
        if let Some(d) = deadline {
            limit = limit.min(d.saturating_duration_since(started).max(MIN_WAIT));
        }
        let mut conn = match pool.take().map_or_else(|| self.open_within(limit), Ok) {
            Ok(c) => c,
            Err(e) => return convert::failure(&e, commands.len()),
        };
        let limit = limit.saturating_sub(started.elapsed()).max(MIN_WAIT);
        if conn.read_timeout != limit {
            if let Err(e) = conn.conn.set_read_timeout(Some(limit)) {
                return convert::failure(&e, commands.len());
            }
            conn.read_timeout = limit;
        }
        let mut eval = Eval::Sha;
        loop {
            match convert::pipeline(commands, eval).query::<Vec<Value>>(&mut conn.conn) {
                Ok(values) if eval == Eval::Sha && convert::needs_source(&values) => eval = Eval::Source,
                Ok(values) => {
                    pool.put(conn);
                    return Ok(values.into_iter().map(convert::reply).collect());
                }
                Err(e) => {
                    if !convert::is_fatal(&e) {
                        pool.put(conn);
                    }
                    return convert::failure(&e, commands.len());
                }
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
            st = self.timer_cond.wait_timeout(st, next - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Takes every queued (un)subscription.
    pub(super) fn take_pubsub(&self) -> Vec<Transmit> {
        self.pubsub.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect()
    }

    /// Blocks until an (un)subscription is queued (`true`) or the client closes (`false`).
    pub(super) fn wait_pubsub(&self) -> bool {
        let queue = self.pubsub.lock().unwrap_or_else(|e| e.into_inner());
        let queue = self.pubsub_cond.wait_while(queue, |q| q.is_empty() && !self.is_closed());
        drop(queue);
        !self.is_closed()
    }

    /// Sleeps for `pause`, unless the client closes meanwhile.
    pub(super) fn pause(&self, pause: Duration) {
        let queue = self.pubsub.lock().unwrap_or_else(|e| e.into_inner());
        let waited = self.pubsub_cond.wait_timeout_while(queue, pause, |_| !self.is_closed());
        drop(waited);
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Notify under each mutex, so that a thread between its check and its wait still
        // sees the flag.
        let st = self.state();
        self.timer_cond.notify_all();
        drop(st);
        let queue = self.pubsub.lock().unwrap_or_else(|e| e.into_inner());
        self.pubsub_cond.notify_all();
        drop(queue);
        let work = self.work();
        self.work_cond.notify_all();
        drop(work);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
