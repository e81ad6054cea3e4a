//! What a client's handles, guards and background workers share, whichever way they wait:
//! the engine and each lock's slot behind one mutex (never held across a wait), the queue of
//! (un)subscriptions for the pub/sub worker, and the closed flag. How a side wakes its
//! workers, and what it keeps to send and wait with, is its [`Side`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use rdlock_core::{Command, Reply, Request, RequestId, Script, Transmit, TransportError};

use crate::cluster::Topology;
use crate::common::{self, Shared, Waiter};
use crate::config::{ClientConfig, KeyspaceNotifications};
use crate::error::Error;
use crate::loaded::Loaded;
use crate::sentinel::Watch;

/// A driver's way of waiting: how a lock's waiter and the workers are woken, and its clock.
pub(crate) trait Side: Sized {
    /// How a lock's waiter is woken.
    type Waiter: Waiter;

    /// The current time.
    fn now() -> Instant {
        Instant::now()
    }

    /// The engine's next timer may be sooner than the timer worker planned, or nothing is
    /// left for it to time on a closed client: wake it.
    fn wake_timers(cell: &Cell<Self>);

    /// (Un)subscriptions were queued: wake the pub/sub worker.
    fn wake_pubsub(cell: &Cell<Self>);

    /// The client closed: wake every worker, so that each sees the flag.
    fn wake_all(cell: &Cell<Self>);

    /// Sends requests made outside any caller (the sentinel watcher's) in the background.
    fn send_background(cell: &Arc<Cell<Self>>, requests: Vec<Request>);
}

/// The shared state of one client, and its side's own part.
pub(crate) struct Cell<D: Side> {
    /// The client given at connect (with sentinels: of the primary found then).
    pub(crate) redis: redis::Client,
    /// The primary connections are made to now, and its epoch: a connection made for an
    /// older epoch is not used again (the primary changed since).
    target: Mutex<(redis::Client, u64)>,
    /// The target's epoch, read without the lock on every exchange.
    epoch: AtomicU64,
    /// The sentinels' watch, when the client connected through them.
    pub(crate) watch: OnceLock<Arc<Watch>>,
    /// The slot map, when the client connected to a cluster.
    pub(crate) cluster: OnceLock<Arc<Topology>>,
    /// The servers the scripts were loaded on: a new connection to one of them skips it.
    pub(crate) scripts: Loaded,
    pub(crate) config: ClientConfig,
    state: Mutex<Shared<D::Waiter>>,
    pubsub: Mutex<VecDeque<Transmit>>,
    closed: AtomicBool,
    /// What the side keeps to send and wait with.
    pub(crate) side: D,
}

impl<D: Side> Cell<D> {
    /// A fresh engine (seeded from the operating system) and nothing queued.
    pub(crate) fn new(redis: redis::Client, config: ClientConfig, side: D) -> Result<Self, Error> {
        let redis = crate::tls::apply(config.tls.as_ref(), redis)?;
        Ok(Self {
            target: Mutex::new((redis.clone(), 0)),
            epoch: AtomicU64::new(0),
            watch: OnceLock::new(),
            cluster: OnceLock::new(),
            scripts: Loaded::default(),
            redis,
            state: Mutex::new(Shared::new(&config)?),
            config,
            pubsub: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            side,
        })
    }

    /// The primary's client and epoch, to connect to (a clone: only to make a connection).
    pub(crate) fn target(&self) -> (redis::Client, u64) {
        self.target.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The epoch of the primary in use: it changes when the client follows a failover.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The client now talks to another primary: connections are made anew (the pub/sub
    /// worker's too, which then subscribes again), and the engine verifies every held lease
    /// there at once. Returns the requests that follow.
    pub(crate) fn primary_changed(&self, redis: redis::Client, known_replicas: Option<u32>) -> Vec<Request> {
        {
            let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
            target.0 = redis;
            target.1 += 1;
            self.epoch.store(target.1, Ordering::Release);
        }
        let (_, requests) = self.with_engine(|s, now| s.engine.handle_primary_changed(known_replicas, now));
        D::wake_pubsub(self);
        requests
    }

    /// Where a one-off command about `key` goes (an inspection, a forced release): the
    /// primary, or in a cluster the primary of the key's slot.
    pub(crate) fn route_of(&self, key: &str) -> rdlock_core::Route {
        let node = match self.cluster.get() {
            Some(_) => rdlock_core::Node::Slot(rdlock_core::slot(key)),
            None => rdlock_core::Node::Primary,
        };
        rdlock_core::Route { node, class: rdlock_core::Class::Commands }
    }

    /// In a cluster: these slots' primary changed (with the replicas the map lists for
    /// each). The engine verifies their leases there at once; it also learns the replica
    /// counts of used slots the map changed. Returns the requests that follow.
    pub(crate) fn slots_moved(&self, slots: &[(u16, u32)]) -> Vec<Request> {
        let floors = self.cluster.get().map(|t| t.take_floors()).unwrap_or_default();
        if slots.is_empty() && floors.is_empty() {
            return Vec::new();
        }
        self.with_engine(|s, now| {
            for (slot, n) in floors {
                s.engine.set_slot_replicas(slot, n);
            }
            for &(slot, n) in slots {
                s.engine.handle_slot_moved(slot, Some(n), now);
            }
        })
        .1
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, Shared<D::Waiter>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queued (un)subscriptions, for the pub/sub worker.
    pub(crate) fn pubsub(&self) -> MutexGuard<'_, VecDeque<Transmit>> {
        self.pubsub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds one input to the engine, then drains its outputs in the same critical section:
    /// events go to their locks' slots, (un)subscriptions to the pub/sub worker, and the
    /// requests come back to the caller, who sends them. The waiters of the events are woken
    /// once the mutex is released.
    pub(crate) fn with_engine<T>(&self, f: impl FnOnce(&mut Shared<D::Waiter>, Instant) -> T) -> (T, Vec<Request>) {
        let now = D::now();
        let (out, drained, settled, queued) = {
            let mut st = self.state();
            let out = f(&mut st, now);
            let mut drained = st.drain();
            // The timer worker checks both under this mutex before it sleeps, so a wake-up
            // sent after it is released is not lost.
            let settled = self.is_closed() && st.engine.is_empty();
            // Sharded (un)subscriptions go to their nodes' connections, the rest to the
            // pub/sub worker's queue, still under this mutex: the worker keeps the last word
            // on each channel, so words of two drains must reach it in the engine's order.
            let (sharded, pubsub): (Vec<_>, Vec<_>) = std::mem::take(&mut drained.pubsub)
                .into_iter()
                .partition(|t| matches!(t, Transmit::SubscribeShard { .. } | Transmit::UnsubscribeShard { .. }));
            let queued = !pubsub.is_empty();
            if queued {
                self.pubsub().extend(pubsub);
            }
            drained.pubsub = sharded;
            (out, drained, settled, queued)
        };
        let common::Drained { requests, pubsub: sharded, sooner, wakeups } = drained;
        // First: a waiter woken is a caller answered.
        wakeups.into_iter().for_each(common::Wakeup::wake);
        if sooner || settled {
            D::wake_timers(self);
        }
        if let (false, Some(topology)) = (sharded.is_empty(), self.cluster.get()) {
            topology.hub.route(topology, sharded);
        }
        if queued {
            D::wake_pubsub(self);
        }
        (out, requests)
    }

    /// `CONFIG GET notify-keyspace-events`, to send at connect when the client is to detect
    /// whether the server publishes keyspace notifications.
    pub(crate) fn keyspace_query(&self) -> Option<redis::Cmd> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("notify-keyspace-events");
        (self.config.keyspace_notifications == KeyspaceNotifications::Detect).then_some(cmd)
    }

    /// The connect-time probe of what the server offers: for durable confirmation, `COMMAND
    /// INFO WAITAOF` (an empty entry without the command) and `INFO persistence`; for
    /// renewals, `COMMAND DOCS SET` (whose arguments name `IFEQ` where it exists).
    pub(crate) fn capability_query() -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("COMMAND").arg("INFO").arg("WAITAOF").cmd("INFO").arg("persistence");
        pipe.cmd("COMMAND").arg("DOCS").arg("SET");
        pipe
    }

    /// Tells the engine what the server offers, from the reply to [`Cell::capability_query`]
    /// (an error: durability unknown, and the server's answers decide; renewals by script).
    pub(crate) fn set_capabilities(&self, reply: redis::RedisResult<Vec<redis::Value>>) {
        let replies = reply.unwrap_or_default();
        let durability = common::durability(&replies);
        let ifeq = self.config.newer_commands && replies.get(2).is_some_and(common::offers_ifeq);
        let mut st = self.state();
        st.engine.set_durability(durability);
        st.engine.set_ifeq(ifeq);
    }

    /// Sets the database whose keyspace notifications waiters on shared keys may rely on, from
    /// the setting and the reply to [`Cell::keyspace_query`] (`None`: not asked).
    pub(crate) fn set_keyspace(&self, reply: Option<redis::RedisResult<Vec<String>>>) {
        let flags = reply.and_then(common::keyspace_flags);
        let db = common::keyspace_db(&self.redis, self.config.keyspace_notifications, flags.as_deref());
        self.state().engine.set_keyspace_db(db);
    }

    /// A request goes out now (traced, with the primary's epoch: a history then shows which
    /// requests a failover caught in flight).
    pub(crate) fn sending(&self, req: &Request) {
        tracing::trace!(request = ?req.id, route = ?req.route.node, epoch = self.epoch(), commands = %names(&req.commands), "send");
    }

    /// Feeds an exchange's outcome back; returns the requests that follow.
    pub(crate) fn replied(&self, id: RequestId, reply: Result<Vec<Reply>, TransportError>) -> Vec<Request> {
        match &reply {
            Ok(r) => {
                tracing::trace!(request = ?id, epoch = self.epoch(), replies = ?r.iter().map(outline).collect::<Vec<_>>(), "reply")
            }
            Err(e) => tracing::trace!(request = ?id, epoch = self.epoch(), error = %e, "no reply"),
        }
        // A lost link or a demoted primary: ask the sentinels now, not at the next refresh.
        if let Some(watch) = self.watch.get()
            && reply.as_ref().map_or(true, |r| r.iter().any(|r| matches!(r, Reply::Error(e) if e.code == "READONLY")))
        {
            watch.poke();
        }
        // A lost link to a node may be a failover: read the slot map now.
        let (moved, floors) = match self.cluster.get() {
            Some(topology) => {
                if reply.is_err() {
                    topology.poke();
                }
                (topology.take_moved(), topology.take_floors())
            }
            None => (Vec::new(), Vec::new()),
        };
        let (misuse, more) = self.with_engine(|s, now| {
            // Before the reply: a `ROLE` count of a slot is floored by the map's replicas.
            for (slot, n) in floors {
                s.engine.set_slot_replicas(slot, n);
            }
            let misuse = s.engine.handle_reply(id, reply, now);
            // After the reply: the slot's leases are then verified where it lives now.
            for slot in moved {
                s.engine.handle_slot_moved(slot, None, now);
            }
            misuse
        });
        if let Err(e) = misuse {
            tracing::warn!(error = %e, "reply not accepted by the engine");
        }
        more
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        D::wake_all(self);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The span an exchange runs in: renewals are worth seeing, other requests have their
/// caller's span.
pub(crate) fn exchange_span(req: &Request) -> tracing::Span {
    let renewals = req.commands.iter().find_map(|c| match c {
        Command::Script { script: Script::Extend, keys, .. } => Some(keys.len()),
        // One `SET ... IFEQ` per lock: the batch is their count.
        Command::SetIfEq { .. } => Some(req.commands.iter().filter(|c| matches!(c, Command::SetIfEq { .. })).count()),
        // A share renews with three keys.
        Command::Script { script: Script::PermitExtend, keys, .. } => Some(keys.len() / 3),
        _ => None,
    });
    match renewals {
        Some(n) => tracing::debug_span!("rdlock.renew", locks = n),
        None => tracing::Span::none(),
    }
}

/// The commands of a request, by name, for traces.
fn names(commands: &[Command]) -> String {
    let name = |c: &Command| match c {
        Command::Script { script, .. } | Command::ScriptWithValue { script, .. } => format!("{script:?}"),
        Command::Wait { replicas, timeout_ms } => format!("WAIT {replicas} {timeout_ms}"),
        Command::WaitAof { replicas, timeout_ms } => format!("WAITAOF {replicas} {timeout_ms}"),
        Command::Role => "ROLE".to_owned(),
        Command::Ping => "PING".to_owned(),
        Command::SetIfEq { ttl_ms, .. } => format!("SET IFEQ PX {ttl_ms}"),
    };
    commands.iter().map(name).collect::<Vec<_>>().join(",")
}

/// A reply, shortened for traces: errors in full, integers, and the shape of the rest.
fn outline(reply: &Reply) -> String {
    match reply {
        Reply::Nil => "nil".to_owned(),
        Reply::Int(n) => n.to_string(),
        Reply::Data(d) => format!("{}b", d.len()),
        Reply::Array(a) => format!("[{}]", a.iter().map(outline).collect::<Vec<_>>().join(" ")),
        Reply::Error(e) => format!("{} {}", e.code, e.message),
    }
}
