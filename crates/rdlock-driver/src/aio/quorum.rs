//! A fenced lock over a quorum of independent primaries, on an async runtime: each request
//! runs on its own task over its member's multiplexed connection (by [`Exchange`], as every
//! other connection of this driver), one pub/sub task per member wakes waiters on any
//! member's release, and a timer task runs the machine's timers. The state and what its
//! answers mean are shared with the blocking side ([`crate::quorum`]).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use rdlock_core::{Acquire, Event, LockId, LockOptions, LostReason, OpId, Quorum, Reply, Request, Rng, TransportError};
use redis::aio::MultiplexedConnection;

use super::permits::Permits;
use super::signal::Signal;
use crate::config::ClientConfig;
use crate::error::Error;
use crate::exchange::Exchange;
use crate::quorum::{self, IDLE, QuorumState};
use crate::runtime::{Runtime, timeout};

/// How often a pub/sub task looks for subscription changes and the closed flag.
const PUBSUB_POLL: Duration = Duration::from_millis(50);

struct Member {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// One connection is made at a time.
    connecting: Permits,
}

impl Member {
    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reset(&self) {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct Shared {
    state: Mutex<QuorumState>,
    /// Tasks waiting for an answer or a loss: woken after every input.
    wakers: Mutex<Vec<Waker>>,
    timers: Signal,
    members: Vec<Member>,
    config: ClientConfig,
    closed: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, QuorumState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
        self.timers.notify();
    }

    /// Feeds the machine one input at `now`, then sends what it asks and wakes the waiters.
    fn feed<R: Runtime, T>(self: &Arc<Self>, f: impl FnOnce(&mut QuorumState, Instant) -> T) -> T {
        let (out, requests) = {
            let mut st = self.state();
            let out = f(&mut st, R::now());
            (out, st.drain())
        };
        for req in requests {
            let shared = self.clone();
            R::spawn(async move { shared.execute::<R>(req).await });
        }
        self.wake();
        out
    }

    async fn execute<R: Runtime>(self: &Arc<Self>, req: Request) {
        let rdlock_core::Node::Member(m) = req.route.node else { return };
        let reply = match self.members.get(m as usize) {
            Some(member) => self.exchange::<R>(member, &req).await,
            None => Err(TransportError::Disconnected("no such member".into())),
        };
        self.feed::<R, _>(|st, now| {
            let _ = st.q.handle_reply(req.id, reply, now);
        });
    }

    async fn exchange<R: Runtime>(&self, member: &Member, req: &Request) -> Result<Vec<Reply>, TransportError> {
        let mut exchange = Exchange::new(&req.commands);
        let conn = {
            let _turn = member.connecting.acquire().await;
            match member.current() {
                Some(c) => c,
                None => {
                    let cfg = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.config.connection_timeout))
                        .set_response_timeout(None);
                    let made = timeout::<R, _>(
                        self.config.connection_timeout,
                        member.client.get_multiplexed_async_connection_with_config(&cfg),
                    )
                    .await;
                    match made {
                        Some(Ok(c)) => {
                            *member.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                            c
                        }
                        Some(Err(e)) => return exchange.unsent(&e),
                        None => return Err(TransportError::Timeout),
                    }
                }
            }
        };
        let mut c = conn;
        let deadline = R::now() + exchange.limit(&self.config);
        loop {
            let left = deadline.saturating_duration_since(R::now());
            let Some(answer) = timeout::<R, _>(left, exchange.query_async(&mut c)).await else {
                member.reset();
                return Err(TransportError::Timeout);
            };
            if let Some(done) = exchange.answer(answer) {
                if !done.reusable {
                    member.reset();
                }
                return done.replies;
            }
        }
    }

    /// Waits for the answer to `op` (the machine answers every op).
    async fn wait(&self, op: OpId) -> Result<Event, Error> {
        poll_fn(|cx| {
            if let Some(e) = self.state().take(op) {
                return Poll::Ready(Ok(e));
            }
            if self.closed.load(Ordering::SeqCst) {
                return Poll::Ready(Err(Error::Closed));
            }
            self.wakers.lock().unwrap_or_else(|e| e.into_inner()).push(cx.waker().clone());
            // An answer fed between the check and the registration must not be missed.
            match self.state().take(op) {
                Some(e) => Poll::Ready(Ok(e)),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// A client of a quorum of independent primaries (odd count, at most
/// [`rdlock_core::MAX_MEMBERS`]), on runtime `R`. Locks only: see `docs/protocol.md`, "What
/// a quorum client supports", for what it refuses.
pub struct QuorumClient<R: Runtime> {
    shared: Arc<Shared>,
    _runtime: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime> std::fmt::Debug for QuorumClient<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumClient").field("members", &self.shared.members.len()).finish_non_exhaustive()
    }
}

impl<R: Runtime> QuorumClient<R> {
    /// Connects to the members at `urls` with the default configuration.
    pub fn open<S: AsRef<str>>(urls: &[S]) -> Result<Self, Error> {
        Self::with_config(urls, ClientConfig::default())
    }

    /// A client of the members at `urls`; connections are made at the first request, and
    /// made again after a failure: a majority is what each operation needs.
    pub fn with_config<S: AsRef<str>>(urls: &[S], config: ClientConfig) -> Result<Self, Error> {
        let q = Quorum::new(urls.len(), Rng::from_os()?)?;
        let members = quorum::member_clients(urls, &config)?
            .into_iter()
            .map(|client| Member { client, conn: Mutex::new(None), connecting: Permits::new(1) })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(QuorumState::new(q)),
            wakers: Mutex::new(Vec::new()),
            timers: Signal::default(),
            members,
            config,
            closed: AtomicBool::new(false),
        });
        for i in 0..shared.members.len() {
            let s = shared.clone();
            R::spawn(async move { pubsub::<R>(s, i).await });
        }
        let s = shared.clone();
        R::spawn(async move { timers::<R>(s).await });
        Ok(Self { shared, _runtime: std::marker::PhantomData })
    }

    /// How many members.
    pub fn members(&self) -> usize {
        self.shared.members.len()
    }

    /// Waits for the lock with the client's default options.
    pub async fn lock(&self, key: &str) -> Result<QuorumGuard<R>, Error> {
        self.lock_with(key, &self.shared.config.defaults, None).await
    }

    /// Waits for the lock, at most `timeout` when given ([`Error::TimedOut`]).
    pub async fn lock_with(
        &self,
        key: &str,
        opts: &LockOptions,
        timeout: Option<Duration>,
    ) -> Result<QuorumGuard<R>, Error> {
        let deadline = timeout.map(|t| R::now() + t);
        self.acquire(key, opts, Acquire::Wait { deadline }).await?.ok_or(Error::TimedOut)
    }

    /// One attempt: `None` when others hold the lock.
    pub async fn try_lock(&self, key: &str) -> Result<Option<QuorumGuard<R>>, Error> {
        self.try_lock_with(key, &self.shared.config.defaults).await
    }

    /// One attempt with these options.
    pub async fn try_lock_with(&self, key: &str, opts: &LockOptions) -> Result<Option<QuorumGuard<R>>, Error> {
        self.acquire(key, opts, Acquire::Try).await
    }

    async fn acquire(&self, key: &str, opts: &LockOptions, mode: Acquire) -> Result<Option<QuorumGuard<R>>, Error> {
        let qopts = quorum::quorum_options(opts)?;
        let (id, op) = self.shared.feed::<R, _>(|st, now| st.q.acquire(key, qopts, mode, now))?;
        let Some((fence, _)) = quorum::acquired(self.shared.wait(op).await?)? else { return Ok(None) };
        let guard =
            QuorumGuard { shared: self.shared.clone(), id, fence, released: false, _runtime: std::marker::PhantomData };
        let valid = self.shared.state().q.lease(id, R::now()).is_some_and(|l| l.valid);
        quorum::handed(guard, valid)
    }
}

impl<R: Runtime> Drop for QuorumClient<R> {
    fn drop(&mut self) {
        // Tasks see the flag within a poll; requests in flight finish on their own.
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

/// A held quorum lock. Dropping it releases the lock in the background.
pub struct QuorumGuard<R: Runtime> {
    shared: Arc<Shared>,
    id: LockId,
    fence: u64,
    released: bool,
    _runtime: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime> std::fmt::Debug for QuorumGuard<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumGuard").field("lock", &self.id).field("fence", &self.fence).finish_non_exhaustive()
    }
}

impl<R: Runtime> QuorumGuard<R> {
    /// The fencing token: strictly increasing across holders whose majorities share a member
    /// (every two do). Hand it to the storage you protect.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether the lease is lost (a renewal found the majority gone, or validity ran out).
    pub fn lost(&self) -> Option<LostReason> {
        let st = self.shared.state();
        st.lost(self.id).or_else(|| st.q.lease(self.id, R::now()).filter(|l| !l.valid).map(|_| LostReason::Expired))
    }

    /// The end of validity as of now.
    pub fn valid_until(&self) -> Option<Instant> {
        self.shared.state().q.lease(self.id, R::now()).map(|l| l.valid_until)
    }

    /// Renews the lease on every member now; a majority must extend it.
    pub async fn extend(&self) -> Result<Instant, Error> {
        let op = self.shared.feed::<R, _>(|st, now| st.q.extend(self.id, now));
        let op = op.map_err(|_| Error::Lost(LostReason::Expired))?;
        quorum::extended(self.shared.wait(op).await?)
    }

    /// Releases the lock on every member.
    pub async fn release(mut self) -> Result<rdlock_core::ReleaseOutcome, Error> {
        self.released = true;
        let op = self.shared.feed::<R, _>(|st, now| st.q.release(self.id, now));
        let op = op.map_err(|_| Error::Lost(LostReason::Expired))?;
        let outcome = quorum::released(self.shared.wait(op).await?);
        self.shared.state().forget(self.id);
        outcome
    }
}

impl<R: Runtime> Drop for QuorumGuard<R> {
    fn drop(&mut self) {
        if !self.released {
            self.shared.feed::<R, _>(|st, now| {
                if let Ok(op) = st.q.release(self.id, now) {
                    st.orphan(op);
                }
                st.forget(self.id);
            });
        }
    }
}

/// The machine's timers: attempts that ran out, waits between attempts, renewals, validity.
async fn timers<R: Runtime>(shared: Arc<Shared>) {
    while !shared.closed.load(Ordering::SeqCst) {
        let next = shared.state().q.poll_timeout();
        let now = R::now();
        match next {
            Some(t) if t <= now => shared.feed::<R, _>(|st, now| st.q.handle_timeout(now)),
            _ => {
                let until = next.map_or(now + IDLE, |t| t.min(now + IDLE));
                futures_lite::future::or(R::sleep_until(until), shared.timers.wait()).await;
            }
        }
    }
}

/// One member's pub/sub connection: subscribed to every channel the machine asks for, and
/// handing each message (a release's announcement) to the machine.
async fn pubsub<R: Runtime>(shared: Arc<Shared>, member: usize) {
    let client = shared.members[member].client.clone();
    while !shared.closed.load(Ordering::SeqCst) {
        let conn = timeout::<R, _>(shared.config.connection_timeout, client.get_async_pubsub()).await;
        let Some(Ok(conn)) = conn else {
            R::sleep_until(R::now() + PUBSUB_POLL * 4).await;
            continue;
        };
        let (mut sink, mut stream) = conn.split();
        let mut subscribed = std::collections::BTreeSet::new();
        loop {
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            let wanted = shared.state().channels.clone();
            let add: Vec<String> = wanted.difference(&subscribed).cloned().collect();
            let drop: Vec<String> = subscribed.difference(&wanted).cloned().collect();
            if (!add.is_empty() && sink.subscribe(&add).await.is_err())
                || (!drop.is_empty() && sink.unsubscribe(&drop).await.is_err())
            {
                break;
            }
            subscribed = wanted;
            match timeout::<R, _>(PUBSUB_POLL, stream.next()).await {
                Some(Some(msg)) => {
                    let channel = msg.get_channel_name().to_owned();
                    shared.feed::<R, _>(|st, now| st.q.handle_message(&channel, now));
                }
                Some(None) => break,
                None => {}
            }
        }
        // A session that ended (a dropped link, a refused channel) is made again after a
        // pause, not at once: a refusal would otherwise spin. Waiters poll meanwhile.
        R::sleep_until(R::now() + PUBSUB_POLL * 4).await;
    }
}
