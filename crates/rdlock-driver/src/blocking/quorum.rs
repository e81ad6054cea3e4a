//! A fenced lock over a quorum of independent primaries, on plain threads: one worker thread
//! per member carries that member's requests (by [`Exchange`], as every other connection of
//! this driver), one pub/sub thread per member wakes waiters on any member's release, and a
//! timer thread runs the machine's timers (attempts, renewals, validity).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, LockId, LockOptions, LostReason, OpId, Quorum, Reply, Request, Rng, TransportError};
use redis::Connection;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::exchange::Exchange;
use crate::quorum::{self, IDLE, Outputs, QuorumState};

/// How often a pub/sub thread looks for subscription changes and the closed flag.
const PUBSUB_POLL: Duration = Duration::from_millis(50);

/// A member worker's inbox: requests with the instant they were queued.
type Mailbox = Mutex<Option<Sender<(Request, Instant)>>>;

struct Shared {
    state: Mutex<QuorumState>,
    /// Notified whenever an answer may have come in, or the machine's timers changed.
    changed: Condvar,
    /// Each member's worker; emptied when the client closes, which ends the workers.
    members: Vec<Mailbox>,
    config: ClientConfig,
    closed: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, QuorumState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the machine one input at `now`, then sends what it asks and wakes the waiters.
    fn feed<T>(&self, f: impl FnOnce(&mut QuorumState, Instant) -> T) -> T {
        let out = {
            let mut st = self.state();
            let out = f(&mut st, Instant::now());
            // Queued before the lock is let go: each member gets its requests in the order the
            // machine made them, whichever thread fed it.
            self.send(st.drain());
            out
        };
        self.changed.notify_all();
        out
    }

    fn send(&self, requests: Outputs) {
        for r in requests {
            let rdlock_core::Node::Member(m) = r.route.node else { continue };
            let Some(tx) = self.members.get(m as usize) else { continue };
            if let Some(tx) = tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = tx.send((r, Instant::now()));
            }
        }
    }

    /// Waits for the answer to `op` (the machine answers every op: its timers and the
    /// members' response timeouts bound the wait).
    fn wait(&self, op: OpId) -> Result<rdlock_core::Event, Error> {
        let mut st = self.state();
        loop {
            if let Some(e) = st.take(op) {
                return Ok(e);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            st = self.changed.wait_timeout(st, IDLE).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// A client of a quorum of independent primaries (odd count, at most
/// [`rdlock_core::MAX_MEMBERS`]). Locks only: see `docs/protocol.md`, "What a quorum client
/// supports", for what it refuses.
pub struct QuorumClient {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl QuorumClient {
    /// Connects to the members at `urls` with the default configuration.
    pub fn open<S: AsRef<str>>(urls: &[S]) -> Result<Self, Error> {
        Self::with_config(urls, ClientConfig::default())
    }

    /// Connects to the members at `urls`. Members that cannot be reached now are tried
    /// again at every request: a majority is what each operation needs.
    pub fn with_config<S: AsRef<str>>(urls: &[S], config: ClientConfig) -> Result<Self, Error> {
        let q = Quorum::new(urls.len(), Rng::from_os()?)?;
        let clients = quorum::member_clients(urls, &config)?;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in &clients {
            let (tx, rx) = channel();
            senders.push(Mutex::new(Some(tx)));
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(QuorumState::new(q)),
            changed: Condvar::new(),
            members: senders,
            config,
            closed: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for (i, (client, rx)) in clients.into_iter().zip(receivers).enumerate() {
            let s = shared.clone();
            let c = client.clone();
            threads.push(spawn(&format!("rdlock-quorum-{i}"), move || member(&s, &c, &rx)));
            let s = shared.clone();
            threads.push(spawn(&format!("rdlock-quorum-sub-{i}"), move || pubsub(&s, &client)));
        }
        let s = shared.clone();
        threads.push(spawn("rdlock-quorum-timers", move || timers(&s)));
        Ok(Self { shared, threads })
    }

    /// How many members.
    pub fn members(&self) -> usize {
        self.shared.state().q.members()
    }

    /// Waits for the lock with the client's default options.
    pub fn lock(&self, key: &str) -> Result<QuorumGuard, Error> {
        self.lock_with(key, &self.shared.config.defaults, None)
    }

    /// Waits for the lock, at most `timeout` when given ([`Error::TimedOut`]).
    pub fn lock_with(&self, key: &str, opts: &LockOptions, timeout: Option<Duration>) -> Result<QuorumGuard, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let guard = self.acquire(key, opts, Acquire::Wait { deadline })?;
        guard.ok_or(Error::TimedOut)
    }

    /// One attempt: `None` when others hold the lock.
    pub fn try_lock(&self, key: &str) -> Result<Option<QuorumGuard>, Error> {
        self.try_lock_with(key, &self.shared.config.defaults)
    }

    /// One attempt with these options.
    pub fn try_lock_with(&self, key: &str, opts: &LockOptions) -> Result<Option<QuorumGuard>, Error> {
        self.acquire(key, opts, Acquire::Try)
    }

    fn acquire(&self, key: &str, opts: &LockOptions, mode: Acquire) -> Result<Option<QuorumGuard>, Error> {
        let qopts = quorum::quorum_options(opts)?;
        let (id, op) = self.shared.feed(|st, now| st.q.acquire(key, qopts, mode, now))?;
        let Some((fence, _)) = quorum::acquired(self.shared.wait(op)?)? else { return Ok(None) };
        let guard = QuorumGuard { shared: self.shared.clone(), id, fence, released: false };
        let valid = self.shared.state().q.lease(id, Instant::now()).is_some_and(|l| l.valid);
        quorum::handed(guard, valid)
    }
}

impl std::fmt::Debug for QuorumClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumClient").field("members", &self.shared.members.len()).finish_non_exhaustive()
    }
}

impl Drop for QuorumClient {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for tx in &self.shared.members {
            tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        self.shared.changed.notify_all();
        // Every thread ends by itself (its channel closed, or the flag seen within a poll);
        // a worker may be in an exchange with a silent member: do not wait for it.
        self.threads.clear();
    }
}

/// A held quorum lock. Dropping it releases the lock in the background.
pub struct QuorumGuard {
    shared: Arc<Shared>,
    id: LockId,
    fence: u64,
    released: bool,
}

impl QuorumGuard {
    /// The fencing token: strictly increasing across holders whose majorities share a member
    /// (every two do). Hand it to the storage you protect.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether the lease is lost (a renewal found the majority gone, or validity ran out).
    pub fn lost(&self) -> Option<LostReason> {
        let st = self.shared.state();
        st.lost(self.id)
            .or_else(|| st.q.lease(self.id, Instant::now()).filter(|l| !l.valid).map(|_| LostReason::Expired))
    }

    /// Waits up to `timeout` for the lease to be lost.
    pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(r) = self.lost() {
                return Some(r);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let st = self.shared.state();
            let _ = self.shared.changed.wait_timeout(st, left.min(IDLE));
        }
    }

    /// The end of validity as of now.
    pub fn valid_until(&self) -> Option<Instant> {
        self.shared.state().q.lease(self.id, Instant::now()).map(|l| l.valid_until)
    }

    /// Renews the lease on every member now; a majority must extend it.
    pub fn extend(&self) -> Result<Instant, Error> {
        let op = self.shared.feed(|st, now| st.q.extend(self.id, now)).map_err(|_| Error::Lost(LostReason::Expired))?;
        quorum::extended(self.shared.wait(op)?)
    }

    /// Releases the lock on every member.
    pub fn release(mut self) -> Result<rdlock_core::ReleaseOutcome, Error> {
        self.released = true;
        let op = self.shared.feed(|st, now| st.q.release(self.id, now));
        let op = op.map_err(|_| Error::Lost(LostReason::Expired))?;
        let outcome = quorum::released(self.shared.wait(op)?);
        self.shared.state().forget(self.id);
        outcome
    }
}

impl std::fmt::Debug for QuorumGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumGuard").field("lock", &self.id).field("fence", &self.fence).finish_non_exhaustive()
    }
}

impl Drop for QuorumGuard {
    fn drop(&mut self) {
        if !self.released {
            self.shared.feed(|st, now| {
                if let Ok(op) = st.q.release(self.id, now) {
                    st.orphan(op);
                }
                st.forget(self.id);
            });
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).unwrap_or_else(|e| panic!("spawning {name}: {e}"))
}

/// One member's requests, one at a time on one connection (made again after a failure).
fn member(shared: &Shared, client: &redis::Client, rx: &Receiver<(Request, Instant)>) {
    let mut conn: Option<Connection> = None;
    while let Ok((req, queued)) = rx.recv() {
        let limit = shared.config.response_timeout;
        // A request that waited its whole response timeout behind a silent member's earlier
        // ones is answered as timed out without being sent: the majority does not wait.
        let reply = if queued.elapsed() >= limit {
            Err(TransportError::Timeout)
        } else {
            exchange(shared, client, &mut conn, &req)
        };
        shared.feed(|st, now| {
            let _ = st.q.handle_reply(req.id, reply, now);
        });
    }
}

fn exchange(
    shared: &Shared,
    client: &redis::Client,
    conn: &mut Option<Connection>,
    req: &Request,
) -> Result<Vec<Reply>, TransportError> {
    let mut exchange = Exchange::new(&req.commands);
    if conn.is_none() {
        match client.get_connection_with_timeout(shared.config.connection_timeout) {
            Ok(c) => *conn = Some(c),
            Err(e) => return exchange.unsent(&e),
        }
    }
    let Some(c) = conn.as_mut() else { return Err(TransportError::Timeout) };
    if let Err(e) = c.set_read_timeout(Some(exchange.limit(&shared.config))) {
        *conn = None;
        return exchange.unsent(&e);
    }
    loop {
        let answer = exchange.query(c);
        if let Some(done) = exchange.answer(answer) {
            if !done.reusable {
                *conn = None;
            }
            return done.replies;
        }
    }
}

/// One member's pub/sub connection: subscribed to every channel the machine asks for, and
/// handing each message (a release's announcement) to the machine.
fn pubsub(shared: &Shared, client: &redis::Client) {
    while !shared.closed.load(Ordering::SeqCst) {
        let Ok(mut conn) = client.get_connection_with_timeout(shared.config.connection_timeout) else {
            std::thread::sleep(PUBSUB_POLL * 4);
            continue;
        };
        let mut ps = conn.as_pubsub();
        let mut subscribed = std::collections::BTreeSet::new();
        if ps.set_read_timeout(Some(PUBSUB_POLL)).is_err() {
            std::thread::sleep(PUBSUB_POLL * 4);
            continue;
        }
        loop {
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            let wanted = shared.state().channels.clone();
            let add: Vec<&String> = wanted.difference(&subscribed).collect();
            let drop: Vec<String> = subscribed.difference(&wanted).cloned().collect();
            if (!add.is_empty() && ps.subscribe(&add).is_err()) || (!drop.is_empty() && ps.unsubscribe(&drop).is_err())
            {
                break;
            }
            subscribed = wanted;
            match ps.get_message() {
                Ok(msg) => {
                    let channel = msg.get_channel_name().to_owned();
                    shared.feed(|st, now| st.q.handle_message(&channel, now));
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
        // A session that ended (a dropped link, a refused channel) is made again after a
        // pause, not at once: a refusal would otherwise spin. Waiters poll meanwhile.
        std::thread::sleep(PUBSUB_POLL * 4);
    }
}

/// The machine's timers: attempts that ran out, waits between attempts, renewals, validity.
fn timers(shared: &Shared) {
    while !shared.closed.load(Ordering::SeqCst) {
        let next = shared.state().q.poll_timeout();
        let now = Instant::now();
        match next {
            Some(t) if t <= now => shared.feed(|st, now| st.q.handle_timeout(now)),
            _ => {
                let wait = next.map_or(IDLE, |t| (t - now).min(IDLE));
                let st = shared.state();
                let _ = shared.changed.wait_timeout(st, wait);
            }
        }
    }
}
