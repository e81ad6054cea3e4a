//! The async side of the shared cell: each lock's slot (with the waker of the task awaiting
//! it), the connections, and how requests run on a caller's task and finish in the
//! background.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Instant;

use rdlock_core::{Class, Command, Event, LockId, Node, OpId, Reply, Request, RequestId, Route, TransportError};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tracing::Instrument;

use super::deadlines::Deadlines;
use super::permits::Permits;
use super::signal::Signal;
use crate::cell::{self, Cell, Side};
use crate::cluster;
use crate::common;
use crate::config::ClientConfig;
use crate::convert;
use crate::exchange::Exchange;
use crate::loaded::Server;
use crate::runtime::{Runtime, timeout};

/// The tasks awaiting answers on one lock: calls on one guard from several tasks at once
/// (extensions, say) each get woken. The first waker is inline, so that a waiting lock
/// allocates nothing for it; a cancelled caller's waker is woken once more, at the next event.
/// Lost-lease waiters wait on the slot's loss signal instead.
#[derive(Debug, Default)]
pub(super) struct Wakers {
    first: Option<Waker>,
    /// Boxed: every waiting lock carries the field (a pointer, not a vector's three words),
    /// few use it.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<Waker>>>,
}

impl common::Waiter for Wakers {
    type Wakeup = Self;

    fn wakeup(&mut self) -> Option<Self> {
        (self.first.is_some() || self.more.is_some()).then(|| std::mem::take(self))
    }
}

impl common::Wakeup for Wakers {
    fn wake(self) {
        let more = self.more.map(|m| *m).unwrap_or_default();
        for w in self.first.into_iter().chain(more) {
            w.wake();
        }
    }
}

impl Wakers {
    fn register(&mut self, waker: &Waker) {
        let more = self.more.as_deref().map_or(&[][..], Vec::as_slice);
        if self.first.iter().chain(more).any(|w| w.will_wake(waker)) {
            return;
        }
        match self.first {
            None => self.first = Some(waker.clone()),
            Some(_) => self.more.get_or_insert_default().push(waker.clone()),
        }
    }

    /// Takes out `waker` (and anything that wakes the same task).
    fn unregister(&mut self, waker: &Waker) {
        if let Some(more) = &mut self.more {
            more.retain(|w| !w.will_wake(waker));
        }
        if self.first.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.first = self.more.as_mut().and_then(|m| m.pop());
        }
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
    }
}

/// Requests in flight at once on one connection. The rest wait their turn before they are
/// sent, so that a response timeout counts from the send: 100,000 requests made at once (a
/// mass release) would otherwise all be on the wire together, the last answered after the
/// server ran every one before it, and past its timeout. A few hundred keep the server busy
/// (pipelined) while bounding each request's queue on the server to milliseconds.
const IN_FLIGHT: usize = 256;

/// One lazily made connection to the primary of its epoch, replaced after a failure or
/// when the primary changes.
pub(super) struct Conn {
    /// The connection, the epoch it was made for, and its number (which one a failure ends).
    current: Mutex<Option<(u64, u64, MultiplexedConnection)>>,
    /// One connection is made at a time: tasks that find none wait for it rather than each
    /// making one (a connect storm when 100,000 requests found the connection reset).
    connecting: Permits,
    /// Connections made and attempts failed so far: a task that waited through a failed
    /// attempt fails too, rather than trying again in line.
    made: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    window: Permits,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            current: Mutex::new(None),
            connecting: Permits::new(1),
            made: Default::default(),
            failed: Default::default(),
            window: Permits::new(IN_FLIGHT),
        }
    }
}

impl Conn {
    fn current(&self, epoch: u64) -> Option<(u64, MultiplexedConnection)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|(e, _, _)| *e == epoch).map(|(_, id, c)| (*id, c.clone()))
    }

    /// The connection in place for `node` (or the primary), if there is one: the usual case,
    /// which needs no timer.
    fn ready<D: Side>(&self, cell: &Cell<D>, node: Option<&redis::Client>) -> Option<(u64, MultiplexedConnection)> {
        self.current(if node.is_some() { 0 } else { cell.epoch() })
    }

    /// The connection and its number, made anew when there is none or it was made for an
    /// older primary (the client is cloned only then).
    /// In a cluster, `node` is the node's client: its connection never ages (epoch 0).
    async fn get<D: Side>(
        &self,
        cell: &Cell<D>,
        node: Option<&redis::Client>,
    ) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        use std::sync::atomic::Ordering::SeqCst;
        let current = if node.is_some() { 0 } else { cell.epoch() };
        if let Some(c) = self.current(current) {
            return Ok(c);
        }
        let failed = self.failed.load(SeqCst);
        let _turn = self.connecting.acquire().await;
        if let Some(c) = self.current(current) {
            return Ok(c);
        }
        if self.failed.load(SeqCst) != failed {
            return Err(std::io::Error::other("connecting failed while this request waited").into());
        }
        let (client, epoch) = match node {
            Some(c) => (c.clone(), 0),
            None => cell.target(),
        };
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cell.config.connection_timeout))
            .set_response_timeout(None);
        let mut c = match client.get_multiplexed_async_connection_with_config(&cfg).await {
            Ok(c) => c,
            Err(e) => {
                self.failed.fetch_add(1, SeqCst);
                return Err(e);
            }
        };
        crate::metrics::connected(&cell.config);
        let server = Server::of(node, epoch);
        if cell.scripts.first(&server) && convert::load_scripts().query_async::<()>(&mut c).await.is_err() {
            cell.scripts.failed(&server);
        }
        let id = self.made.fetch_add(1, SeqCst);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((epoch, id, c.clone()));
        Ok((id, c))
    }

    /// Connection `id` failed: the next request makes a new one. Requests that were on it
    /// and fail later leave its successor alone.
    fn reset(&self, id: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(_, i, _)| *i == id) {
            current.take();
        }
    }
}

/// The async side: its connections, the driver task's hand-overs, and the signals that wake
/// its two tasks.
pub(super) struct Tasks<R> {
    commands: Conn,
    confirm: Conn,
    /// In a cluster: each node's connection of each class.
    nodes: cluster::PerNode<Conn>,
    pub(super) pubsub_signal: Signal,
    background: Mutex<Vec<Request>>,
    detached: Mutex<Vec<Detached>>,
    pub(super) driver_signal: Signal,
    /// The response deadlines of the exchanges in flight, watched by the client's watch task.
    pub(super) deadlines: Deadlines,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> Side for Tasks<R> {
    type Waiter = Wakers;

    fn now() -> Instant {
        R::now()
    }

    fn wake_timers(cell: &Cell<Self>) {
        cell.side.driver_signal.notify();
    }

    fn wake_pubsub(cell: &Cell<Self>) {
        cell.side.pubsub_signal.notify();
    }

    fn wake_all(cell: &Cell<Self>) {
        cell.side.driver_signal.notify();
        cell.side.pubsub_signal.notify();
        cell.side.deadlines.signal.notify();
    }

    fn send_background(cell: &Arc<Cell<Self>>, requests: Vec<Request>) {
        cell.run_in_background(requests);
    }
}

impl<R> Tasks<R> {
    /// A cluster node's connection of `class`.
    fn node(&self, node: &(String, u16), class: Class) -> Arc<Conn> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.entry((node.clone(), class)).or_default().clone()
    }
}

pub(super) type Inner<R> = Cell<Tasks<R>>;

impl<R: Runtime> Cell<Tasks<R>> {
    /// A client's state, before it connects.
    pub(super) fn with_tasks(redis: redis::Client, config: ClientConfig) -> Result<Self, crate::Error> {
        let tasks = Tasks {
            commands: Conn::default(),
            confirm: Conn::default(),
            nodes: Mutex::default(),
            pubsub_signal: Signal::default(),
            background: Mutex::new(Vec::new()),
            detached: Mutex::new(Vec::new()),
            driver_signal: Signal::default(),
            deadlines: Deadlines::default(),
            _runtime: PhantomData,
        };
        Cell::new(redis, config, tasks)
    }

    /// Makes sure the command connection can be made.
    pub(super) async fn connect(&self) -> Result<(), crate::Error> {
        let (_, mut c) = self.side.commands.get(self, None).await?;
        // A server that wants credentials accepts the connection but no command: ask once.
        redis::cmd("PING").query_async::<()>(&mut c).await?;
        // A user without the right to INFO cannot be checked; that is no reason to refuse.
        if let Ok(info) = redis::cmd("INFO").arg("memory").query_async::<String>(&mut c).await {
            common::check_eviction(&info, &self.config)?;
        }
        let flags = match self.keyspace_query() {
            Some(cmd) => Some(cmd.query_async(&mut c).await),
            None => None,
        };
        self.set_keyspace(flags);
        self.set_capabilities(Self::capability_query().query_async(&mut c).await);
        Ok(())
    }

    /// Sends requests one after another, feeding each reply back and sending what follows.
    /// Requests not yet sent when the future is dropped go to the background: a request made
    /// for one lock (say a wait started by another caller's `ROLE` reply) is never lost
    /// because this caller was cancelled.
    pub(super) async fn run(&self, requests: Vec<Request>) {
        let mut queue = Leftovers { inner: self, queue: VecDeque::from(requests) };
        while let Some(req) = queue.queue.pop_front() {
            let more = self.execute(req).await;
            queue.queue.extend(more);
        }
    }

    /// Sends `requests` on the caller's task until the caller's answer (the event of `id`
    /// that carries `op`) is in, and returns it: at the deadline, or as soon as the
    /// engine answers, even while an exchange is still in flight. What is left of the
    /// exchange then goes on in the background, so that the caller never waits on a stalled
    /// server past its deadline, nor on clean-ups and other locks' requests. The deadline
    /// needs no cutting here: the engine's timer answers it, and the exchange is left behind.
    pub(super) fn run_until(
        self: &Arc<Self>,
        requests: Vec<Request>,
        id: LockId,
        op: OpId,
        _deadline: Option<Instant>,
    ) -> impl Future<Output = Option<Event>> + '_ {
        // Not an `async fn`: its future would keep the unused deadline, in every waiter.
        self.answer(requests, id, op)
    }

    async fn answer(self: &Arc<Self>, requests: Vec<Request>, id: LockId, op: OpId) -> Option<Event> {
        let mut running = Running {
            inner: self,
            awaiting: Some((id, op)),
            future: (!requests.is_empty()).then(|| {
                let inner = self.clone();
                Box::pin(async move { inner.run(requests).await }) as Detached
            }),
        };
        let event = poll_fn(|cx| self.poll_answer(id, op, &mut running.future, cx)).await;
        running.awaiting = None;
        if let Some(rest) = running.future.take() {
            R::spawn(rest);
        }
        event
    }

    /// Drives the exchange a caller started (`running`, dropped once it ends) and looks for
    /// the answer to `op` of lock `id`; registers the caller's waker while there is none.
    /// `None` once the lock is gone.
    pub(super) fn poll_answer(
        &self,
        id: LockId,
        op: OpId,
        running: &mut Option<Detached>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Event>> {
        if let Some(r) = running {
            // The exchange driven here may bring the answer, and its arrival wakes the
            // lock's waiters: this task, which is polling already. Such a wake-up polls it
            // once more for nothing, and on a multi-threaded runtime wakes a parked worker
            // thread to do it (measured: one futex wake-up and one context switch per
            // request, ~30 µs of client CPU per S1 cycle). Out while it runs; registered
            // again below if the answer is not in.
            if let Some(slot) = self.state().slots.get_mut(&id) {
                slot.waiter.unregister(cx.waker());
            }
            if r.as_mut().poll(cx).is_ready() {
                *running = None;
            }
        }
        let mut st = self.state();
        let Some(slot) = st.slots.get_mut(&id) else { return Poll::Ready(None) };
        if let Some(e) = slot.events.take(op) {
            return Poll::Ready(Some(e));
        }
        slot.waiter.register(cx.waker());
        Poll::Pending
    }

    /// Hands a started exchange to the driver task, which finishes it (from inside the
    /// runtime, whatever thread dropped its caller).
    pub(super) fn detach(&self, future: Detached) {
        self.side.detached.lock().unwrap_or_else(|e| e.into_inner()).push(future);
        self.side.driver_signal.notify();
    }

    pub(super) fn take_detached(&self) -> Vec<Detached> {
        std::mem::take(&mut *self.side.detached.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands requests to the driver task: for callers that cannot await (a guard's drop).
    pub(super) fn run_in_background(&self, requests: Vec<Request>) {
        if !requests.is_empty() {
            self.side.background.lock().unwrap_or_else(|e| e.into_inner()).extend(requests);
            self.side.driver_signal.notify();
        }
    }

    pub(super) fn take_background(&self) -> Vec<Request> {
        std::mem::take(&mut *self.side.background.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One command outside every lock's life (an operator's inspection or forced release),
    /// on the caller's task: the engine has nothing to decide about it.
    pub(super) async fn direct(&self, key: &str, command: Command) -> Result<Option<Reply>, TransportError> {
        self.exchange(None, self.route_of(key), std::slice::from_ref(&command)).await.map(|r| r.into_iter().next())
    }

    async fn execute(&self, req: Request) -> Vec<Request> {
        // If the caller stops awaiting, the engine still learns the request's fate (unknown).
        let mut in_flight = InFlight { inner: self, id: req.id, done: false };
        self.sending(&req);
        let reply = self.exchange(Some(req.id), req.route, &req.commands).instrument(cell::exchange_span(&req)).await;
        in_flight.done = true;
        self.replied(req.id, reply)
    }

    /// `id`: the engine's request, told when it leaves after waiting for its turn.
    async fn exchange(
        &self,
        id: Option<RequestId>,
        route: Route,
        commands: &[Command],
    ) -> Result<Vec<Reply>, TransportError> {
        let (Some(topology), Node::Slot(slot)) = (self.cluster.get(), route.node) else {
            // One server: the connection class picks the connection.
            let conn = match route.class {
                Class::Commands => &self.side.commands,
                Class::Confirm => &self.side.confirm,
            };
            return self.exchange_on(id, conn, None, Exchange::new(commands)).await;
        };
        // The slot's primary, following redirections; `TRYAGAIN` is retried for one
        // response timeout (a caller's own deadline is the engine's to answer).
        let until = Instant::now() + self.config.response_timeout;
        let mut walk = cluster::Walk::new(topology, slot, until);
        let mut replies = cluster::Walk::unserved(slot);
        while let Some(try_) = walk.next(commands) {
            let (node, client, exchange) = match try_ {
                Ok(t) => t,
                Err(unsent) => return unsent,
            };
            let conn = self.side.node(&node, route.class);
            replies = self.exchange_on(id, &conn, Some(&client), exchange).await;
            match walk.answered(&replies) {
                None => break,
                Some(pause) if !pause.is_zero() => R::sleep_until(R::now() + pause).await,
                Some(_) => {}
            }
        }
        replies
    }

    /// One exchange on `conn` (of `node` in a cluster, else of the primary).
    async fn exchange_on(
        &self,
        id: Option<RequestId>,
        conn: &Conn,
        node: Option<&redis::Client>,
        mut exchange: Exchange<'_>,
    ) -> Result<Vec<Reply>, TransportError> {
        // Its turn first: the bounds count from there, and so does what the request asks of
        // the server once it had to wait for it (`Engine::handle_leaving`).
        let turn = conn.window.acquire().await;
        if let (true, Some(id)) = (turn.waited(), id) {
            self.state().engine.handle_leaving(id, R::now());
        }
        // A new connection (made once for every request that finds none) gets the connection
        // timeout, not what is left of one request's response timeout: cut short by the
        // first request's bound, a connection slower to set up than that was abandoned and
        // made again by the next request, and the next (measured: 1,583 connections for one
        // burst of 20,000 requests under load).
        let ready = conn.ready(self, node);
        let (id, mut c) = match ready {
            Some(c) => c,
            // Boxed: making a connection is a future of several KiB (the redis crate's
            // connect and the script load), which every request's future would carry, and
            // copy into its box, if it were inline here; it is needed once per connection.
            None => match timeout::<R, _>(self.config.connection_timeout, Box::pin(conn.get(self, node))).await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return exchange.unsent(&e),
                None => return Err(TransportError::Timeout),
            },
        };
        // The response timeout: watched by the client's watch task, not a runtime timer each.
        let deadline = R::now() + exchange.limit(&self.config);
        let deadlines = &self.side.deadlines;
        loop {
            let answer = {
                let query = std::pin::pin!(exchange.query_async(&mut c));
                deadlines.bound::<R, _>(deadline, query).await
            };
            let Some(answer) = answer else {
                // A silent link: do not wait on it again.
                conn.reset(id);
                return Err(TransportError::Timeout);
            };
            if let Some(done) = exchange.answer(answer) {
                if !done.reusable {
                    conn.reset(id);
                }
                return done.replies;
            }
        }
    }
}

/// An exchange started on a caller's task.
pub(super) type Detached = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The exchange a caller of [`Inner::run_until`] started, and the op it awaits: if the caller
/// is cancelled (a timeout, a `select!`), the exchange is not cut off but finished in the
/// background, so the engine learns its real outcome and what it produced for other locks is
/// sent; and the op's answer is not kept for nobody.
struct Running<'a, R: Runtime> {
    inner: &'a Inner<R>,
    future: Option<Detached>,
    /// The lock and op awaited, until the answer is in.
    awaiting: Option<(LockId, OpId)>,
}

impl<R: Runtime> Drop for Running<'_, R> {
    fn drop(&mut self) {
        if let Some(f) = self.future.take() {
            self.inner.detach(f);
        }
        if let Some((id, op)) = self.awaiting
            && let Some(slot) = self.inner.state().slots.get_mut(&id)
        {
            slot.events.forget(op);
        }
    }
}

/// Requests a dropped [`Inner::run`] did not send: they go to the background.
struct Leftovers<'a, R: Runtime> {
    inner: &'a Inner<R>,
    queue: VecDeque<Request>,
}

impl<R: Runtime> Drop for Leftovers<'_, R> {
    fn drop(&mut self) {
        if !self.queue.is_empty() {
            self.inner.run_in_background(self.queue.drain(..).collect());
        }
    }
}

/// Reports a request whose sender stopped awaiting it, so that the engine does not wait for
/// its reply for ever (it treats the outcome as unknown and recovers).
struct InFlight<'a, R: Runtime> {
    inner: &'a Inner<R>,
    id: rdlock_core::RequestId,
    done: bool,
}

impl<R: Runtime> Drop for InFlight<'_, R> {
    fn drop(&mut self) {
        if !self.done {
            let cancelled = Err(TransportError::Disconnected("the caller stopped waiting".into()));
            let (_, more) = self.inner.with_engine(|s, now| s.engine.handle_reply(self.id, cancelled, now));
            self.inner.run_in_background(more);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that never runs anything: the futures are only built, to be measured.
    struct Inert;

    impl Runtime for Inert {
        fn spawn<F>(_future: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
        }

        fn sleep_until(_deadline: Instant) -> impl Future<Output = ()> + Send {
            std::future::pending()
        }
    }

    /// Regression (issue #16): a request's future carried the connect future inline (the
    /// redis crate's connect and the script load, once per connection): 8.6 KiB that every
    /// request's exchange allocated and copied into its box. Boxed apart: 2.8 KiB.
    #[test]
    fn a_request_future_carries_no_connect() {
        let redis = redis::Client::open("redis://127.0.0.1/").expect("a valid URL");
        let inner = Arc::new(Inner::<Inert>::with_tasks(redis, ClientConfig::default()).expect("a client"));
        let size = std::mem::size_of_val(&inner.run(Vec::new()));
        assert!(size <= 4096, "a request's future takes {size} bytes");
    }

    /// A task's wake-ups, counted.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Issue #16: an event wakes the tasks awaiting its lock only when the wake-up taken with
    /// it is sent, which the drain's caller does once the state mutex is released (a task
    /// woken under it, on another thread, would find it held); each task once. With no task
    /// registered, nothing is taken.
    #[test]
    fn an_event_wakes_its_tasks_only_once_its_wake_up_is_sent() {
        use crate::common::{Slot, Wakeup};
        let tasks = [Arc::new(Count::default()), Arc::new(Count::default())];
        let woken = || tasks.iter().map(|t| t.0.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>();
        let mut slot = Slot::<Wakers>::default();
        for t in &tasks {
            slot.waiter.register(&Waker::from(t.clone()));
        }
        let wakeup = slot.deliver(None, Event::Downgraded);
        assert_eq!(woken(), [0, 0], "woken as the event was delivered");
        wakeup.expect("a wake-up for the registered tasks").wake();
        assert_eq!(woken(), [1, 1]);
        assert!(slot.deliver(None, Event::Downgraded).is_none(), "a wake-up with no task registered");
    }
}
