//! Sharded pub/sub in a cluster: each waiter's inbox is subscribed (`SSUBSCRIBE`) on its
//! slot's primary, through at most one connection per primary, which all of a client's waits
//! on that node share.
//!
//! The [`Hub`] routes the engine's [`Transmit::SubscribeShard`] and
//! [`Transmit::UnsubscribeShard`] to a node by the slot map, and one thread per node with
//! channels to hold serves that node's connection. The same code serves both sides: the
//! redis crate's async pub/sub type has no `SSUBSCRIBE`, and it takes the server's
//! unsolicited `sunsubscribe` (sent when a slot moves away) as the confirmation of whatever
//! it sent last, so a node's connection is a plain one in RESP3 (every pub/sub frame a
//! push, apart from replies), driven directly.
//!
//! A subscription counts as confirmed ([`rdlock_core::Engine::handle_subscribed`]) only once
//! the node is proven to be its slot's primary: the map says so, and the node itself answers
//! `ROLE` `master` on that very connection, after the `SSUBSCRIBE`. A replica accepts a
//! shard's `SSUBSCRIBE` too, and a listener there would hear hand-offs the primary counted as
//! nobody's: such a subscription is dropped, the map read again, and the channel routed anew.
//! A server-sent `sunsubscribe` goes to [`rdlock_core::Engine::handle_shard_unsubscribed`],
//! whose new `SubscribeShard` is routed by the refreshed map; a lost connection ends each of
//! its subscriptions the same way, and the node's thread connects again, backing off. Until
//! a subscription is confirmed, waits are bounded by the engine's poll.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use rdlock_core::{ServerError, Transmit};
use redis::{Connection, Msg, PushInfo, PushKind, RedisResult, Value};

use crate::cell::{Cell, Side};
use crate::cluster::{NodeAddr, Topology};
use crate::convert;
use crate::pubsub::{MESSAGES_AT_ONCE, Refusals, backoff};

/// How long a node's thread blocks on its socket before it looks for queued
/// (un)subscriptions: the most a new subscription waits for its turn.
const POLL: Duration = Duration::from_millis(20);

/// How long a node's thread with nothing to hold waits for work before it closes its
/// connection and ends.
const IDLE: Duration = Duration::from_secs(1);

/// Starts a node's thread; `false` when it could not be started.
type Spawner = Box<dyn Fn(NodeAddr) -> bool + Send + Sync>;

/// Where each wanted sharded channel is subscribed, and each node's queue.
#[derive(Default)]
pub(crate) struct Hub {
    routes: Mutex<Routes>,
    /// Wakes the nodes' threads (paired with `routes`).
    work: Condvar,
    spawner: OnceLock<Spawner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Routes {
    /// Each wanted channel's node, and its slot.
    homes: HashMap<String, (NodeAddr, u16)>,
    /// Wanted channels no node may hold now (no primary in the map, or the one it names
    /// proved not to be): routed again after the next map read.
    unrouted: HashMap<String, u16>,
    nodes: HashMap<NodeAddr, Queue>,
}

/// Channels to subscribe on a node (with their slots), and channels to drop there.
type Work = (Vec<(String, u16)>, Vec<String>);

/// What a node's thread is to do.
#[derive(Default)]
struct Queue {
    subscribe: Vec<(String, u16)>,
    unsubscribe: Vec<String>,
    /// The node has a thread.
    running: bool,
}

impl Routes {
    fn queue(&mut self, node: &NodeAddr) -> &mut Queue {
        self.nodes.entry(node.clone()).or_default()
    }

    /// `channel` is to be held by `node`: dropped where it was, subscribed there (again,
    /// even if it is there already: the engine asks only after a reset).
    fn assign(&mut self, channel: String, slot: u16, node: NodeAddr) {
        self.unrouted.remove(&channel);
        if let Some((old, _)) = self.homes.insert(channel.clone(), (node.clone(), slot))
            && old != node
        {
            let q = self.queue(&old);
            q.subscribe.retain(|(c, _)| *c != channel);
            q.unsubscribe.push(channel.clone());
        }
        let q = self.queue(&node);
        q.unsubscribe.retain(|c| *c != channel);
        q.subscribe.retain(|(c, _)| *c != channel);
        q.subscribe.push((channel, slot));
    }

    /// `channel` is no longer wanted.
    fn forget(&mut self, channel: &str) {
        self.unrouted.remove(channel);
        if let Some((old, _)) = self.homes.remove(channel) {
            let q = self.queue(&old);
            q.subscribe.retain(|(c, _)| c != channel);
            q.unsubscribe.push(channel.to_owned());
        }
    }

    fn route(&mut self, topology: &Topology, channel: String, slot: u16) {
        match topology.primary(slot) {
            Some(node) => self.assign(channel, slot, node),
            None => {
                self.forget(&channel);
                self.unrouted.insert(channel, slot);
                topology.poke();
            }
        }
    }
}

impl Hub {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how a node's thread is started (once, when the client starts following the map).
    pub(crate) fn set_spawner(&self, spawner: Spawner) {
        let _ = self.spawner.set(spawner);
    }

    /// Routes the engine's sharded (un)subscriptions to their nodes, starting the threads
    /// that are needed.
    pub(crate) fn route(&self, topology: &Topology, transmits: Vec<Transmit>) {
        let mut routes = self.routes();
        for t in transmits {
            match t {
                Transmit::SubscribeShard { channel, slot } => routes.route(topology, channel, slot),
                Transmit::UnsubscribeShard { channel, .. } => routes.forget(&channel),
                Transmit::Request(_) | Transmit::Subscribe(_) | Transmit::Unsubscribe(_) => {}
            }
        }
        self.start_threads(&mut routes);
    }

    /// After a map read: channels that had no node are routed again.
    pub(crate) fn reroute(&self, topology: &Topology) {
        let mut routes = self.routes();
        if routes.unrouted.is_empty() {
            return;
        }
        for (channel, slot) in std::mem::take(&mut routes.unrouted) {
            routes.route(topology, channel, slot);
        }
        self.start_threads(&mut routes);
    }

    fn start_threads(&self, routes: &mut Routes) {
        for (node, q) in &mut routes.nodes {
            if q.running || (q.subscribe.is_empty() && q.unsubscribe.is_empty()) {
                continue;
            }
            // Nothing to hold there yet: an unsubscription needs no connection.
            if q.subscribe.is_empty() {
                q.unsubscribe.clear();
                continue;
            }
            q.running = self.spawner.get().is_some_and(|spawn| spawn(node.clone()));
        }
        self.work.notify_all();
    }

    /// Takes what `node`'s thread is to do, waiting up to `wait` for something; `None` when
    /// the node has nothing to hold and nothing came (its thread then ends).
    fn take(&self, node: &NodeAddr, held: bool, wait: Duration) -> Option<Work> {
        let mut routes = self.routes();
        let empty = |r: &Routes| r.nodes.get(node).is_none_or(|q| q.subscribe.is_empty() && q.unsubscribe.is_empty());
        if empty(&routes) && !wait.is_zero() {
            routes = self.work.wait_timeout_while(routes, wait, |r| empty(r)).unwrap_or_else(|e| e.into_inner()).0;
        }
        let has_home = routes.homes.values().any(|(n, _)| n == node);
        let q = routes.queue(node);
        let work = (std::mem::take(&mut q.subscribe), std::mem::take(&mut q.unsubscribe));
        if !held && !has_home && work.0.is_empty() {
            q.running = false;
            return None;
        }
        Some(work)
    }

    /// `channel` proved not to be held on its slot's primary at `node`: routed again after
    /// the next map read (unless it went elsewhere meanwhile).
    fn misrouted(&self, node: &NodeAddr, channel: &str, slot: u16) {
        let mut routes = self.routes();
        if routes.homes.get(channel).is_some_and(|(n, _)| n == node) {
            routes.homes.remove(channel);
            routes.unrouted.insert(channel.to_owned(), slot);
        }
    }

    /// Whether `node` is still where `channel` is wanted.
    fn is_home(&self, node: &NodeAddr, channel: &str) -> bool {
        self.routes().homes.get(channel).is_some_and(|(n, _)| n == node)
    }

    /// The node's thread ends (the client closed).
    fn stopped(&self, node: &NodeAddr) {
        self.routes().queue(node).running = false;
    }

    /// `channel` is no longer held at `node` (its connection or the server ended it): the
    /// engine says next whether it is still wanted, and where.
    fn ended(&self, node: &NodeAddr, channel: &str) {
        let mut routes = self.routes();
        if routes.homes.get(channel).is_some_and(|(n, _)| n == node) {
            routes.homes.remove(channel);
        }
    }

    /// Sleeps for `pause`, unless work for `node` comes first.
    fn pause(&self, pause: Duration) {
        let routes = self.routes();
        drop(self.work.wait_timeout(routes, pause));
    }
}

/// Has `topology`'s hub start one thread per node for `cell` (the thread holds no strong
/// reference between its rounds, and ends with the client).
pub(crate) fn start<D>(cell: &Arc<Cell<D>>, topology: &Arc<Topology>)
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    let weak = Arc::downgrade(cell);
    let topo = Arc::downgrade(topology);
    topology.hub.set_spawner(Box::new(move |node: NodeAddr| {
        let (weak, topo) = (weak.clone(), topo.clone());
        let name = format!("rdlock-shard-{}", node.1);
        std::thread::Builder::new().name(name).spawn(move || serve(&weak, &topo, &node)).is_ok()
    }));
}

/// A node's thread: connects, serves the node's subscriptions until the connection fails
/// (then every channel it held is subscribed again, after a backoff) or nothing is left.
fn serve<D>(cell: &Weak<Cell<D>>, topology: &Weak<Topology>, node: &NodeAddr)
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    let mut failures = 0u32;
    let mut refusals = Refusals::default();
    loop {
        let (Some(cell), Some(topology)) = (cell.upgrade().filter(|c| !c.is_closed()), topology.upgrade()) else {
            if let Some(t) = topology.upgrade() {
                t.hub.stopped(node);
            }
            return;
        };
        if failures > 0 {
            topology.hub.pause(backoff(failures));
        }
        let mut session = Session {
            cell: &cell,
            topology: &topology,
            node,
            held: HashSet::new(),
            asked: HashMap::new(),
            refusals: &mut refusals,
        };
        match session.run(&mut failures) {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, node = %format!("{}:{}", node.0, node.1), "sharded pub/sub session ended");
                session.lost();
            }
        }
    }
}

/// One connection to a node, and the channels it holds.
struct Session<'a, D: Side> {
    cell: &'a Arc<Cell<D>>,
    topology: &'a Topology,
    node: &'a NodeAddr,
    /// Confirmed here, on the slot's primary.
    held: HashSet<String>,
    /// Asked here and not yet answered or checked, with their slots.
    asked: HashMap<String, u16>,
    refusals: &'a mut Refusals,
}

/// What answered one `SSUBSCRIBE` batch.
#[derive(Default)]
struct Answers {
    accepted: Vec<String>,
    refused: Vec<(String, ServerError)>,
    /// The node said `ROLE` `master`.
    master: Option<bool>,
}

impl<D> Session<'_, D>
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    /// Serves the connection until it fails (`Err`), or the thread is to end (`Ok`: nothing
    /// left to hold, or the client closed).
    fn run(&mut self, failures: &mut u32) -> RedisResult<()> {
        let config = &self.cell.config;
        let hub = &self.topology.hub;
        let Some((mut subscribe, mut unsubscribe)) = hub.take(self.node, false, IDLE) else { return Ok(()) };
        // Asked from now on: a failed connection subscribes them again.
        self.asked.extend(subscribe.iter().cloned());
        let client = self.topology.pubsub_client(self.node)?;
        let mut conn = client.get_connection_with_timeout(config.connection_timeout)?;
        let (pushes, rx) = std::sync::mpsc::channel();
        conn.set_push_sender(pushes);
        conn.set_write_timeout(Some(config.response_timeout))?;
        loop {
            if self.cell.is_closed() {
                hub.stopped(self.node);
                return Ok(());
            }
            for channel in unsubscribe.drain(..) {
                // The server confirms even a channel it does not hold: the answer is not waited for.
                self.held.remove(&channel);
                self.asked.remove(&channel);
                conn.send_packed_command(&redis::cmd("SUNSUBSCRIBE").arg(&channel).get_packed_command())?;
            }
            if !subscribe.is_empty() {
                self.subscribe(&mut conn, &rx, std::mem::take(&mut subscribe), failures)?;
            }
            conn.set_read_timeout(Some(POLL))?;
            // Read through the crate's pub/sub view: a timed-out read there leaves nothing to
            // skip (a *response* read that times out would make the connection skip the next
            // reply). Every push it reads is also sent to `rx`, in order; it is forgotten, not
            // dropped, since dropping it unsubscribes everything.
            let mut view = conn.as_pubsub();
            let read = view.get_message();
            std::mem::forget(view);
            match read {
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                // A stray error reply (say to an unsubscription): nobody's.
                Err(e) if convert::refusal(&e).is_some() => {}
                Err(e) => return Err(e),
            }
            self.drain(&rx, None)?;
            let Some(work) = hub.take(self.node, !self.held.is_empty() || !self.asked.is_empty(), Duration::ZERO)
            else {
                return Ok(());
            };
            (subscribe, unsubscribe) = work;
        }
    }

    /// `SSUBSCRIBE`s each channel (one command each: channels of different slots cannot
    /// share one), then asks `ROLE`, on the same connection; confirms to the engine those the
    /// node holds as their slot's primary, and routes the others again.
    fn subscribe(
        &mut self,
        conn: &mut Connection,
        rx: &Receiver<PushInfo>,
        channels: Vec<(String, u16)>,
        failures: &mut u32,
    ) -> RedisResult<()> {
        let mut packed = Vec::new();
        for (channel, slot) in &channels {
            self.asked.insert(channel.clone(), *slot);
            packed.extend(redis::cmd("SSUBSCRIBE").arg(channel).get_packed_command());
        }
        packed.extend(redis::cmd("ROLE").get_packed_command());
        conn.set_read_timeout(Some(self.cell.config.response_timeout))?;
        conn.send_packed_command(&packed)?;
        let mut answers = Answers::default();
        let mut unanswered: Vec<String> = channels.iter().map(|(c, _)| c.clone()).collect();
        while answers.master.is_none() {
            match conn.recv_response() {
                // Pushes are read from `rx`, in order.
                Ok(Value::Push { .. }) => {}
                Ok(role) => answers.master = Some(is_master(&role)),
                Err(e) => {
                    let Some(refusal) = convert::refusal(&e) else { return Err(e) };
                    // Confirmations before it are in `rx`: the refusal answers the first
                    // channel still unanswered after them (or `ROLE`).
                    self.drain(rx, Some((&mut answers, &mut unanswered)))?;
                    if unanswered.is_empty() {
                        answers.master = Some(false);
                    } else {
                        answers.refused.push((unanswered.remove(0), refusal));
                    }
                }
            }
            self.drain(rx, Some((&mut answers, &mut unanswered)))?;
        }
        let master = answers.master == Some(true);
        let mut confirmed = Vec::new();
        for channel in answers.accepted {
            let Some(slot) = self.asked.remove(&channel) else { continue };
            let primary = self.topology.primary(slot).is_some_and(|p| p == *self.node);
            if master && primary && self.topology.hub.is_home(self.node, &channel) {
                self.held.insert(channel.clone());
                confirmed.push(channel);
            } else {
                // A replica, or a node the slot left: never trusted with a wait.
                self.held.remove(&channel);
                conn.send_packed_command(&redis::cmd("SUNSUBSCRIBE").arg(&channel).get_packed_command())?;
                self.misrouted(&channel, slot);
            }
        }
        if !confirmed.is_empty() {
            *failures = 0;
            let requests = self.cell.subscribed(self.refusals, &confirmed);
            D::send_background(self.cell, requests);
        }
        for (channel, refusal) in answers.refused {
            let Some(slot) = self.asked.remove(&channel) else { continue };
            if matches!(refusal.code.as_str(), "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN") {
                // The map is behind the cluster: read it, then route the channel again.
                self.misrouted(&channel, slot);
            } else if let Some(requests) = self.cell.refused(self.refusals, &channel, refusal) {
                D::send_background(self.cell, requests);
            } else {
                // Tried again later, on a new connection.
                self.misrouted(&channel, slot);
                *failures += 1;
            }
        }
        Ok(())
    }

    fn misrouted(&self, channel: &str, slot: u16) {
        self.topology.hub.misrouted(self.node, channel, slot);
        self.topology.poke();
    }

    /// Handles the pushes read so far: messages go to the engine, confirmations to
    /// `batch` (while one is being answered), and a `sunsubscribe` for a channel held here
    /// is the server ending it (its slot moved).
    fn drain(
        &mut self,
        rx: &Receiver<PushInfo>,
        mut batch: Option<(&mut Answers, &mut Vec<String>)>,
    ) -> RedisResult<()> {
        // Messages go to the engine in passes, each before what follows them touches it.
        let mut msgs = Vec::new();
        let result = loop {
            let push = match rx.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Empty) => break Ok(()),
                Err(TryRecvError::Disconnected) => {
                    break Err(std::io::Error::other("the connection's pushes ended").into());
                }
            };
            let channel = push.data.first().and_then(text);
            match (push.kind.clone(), channel) {
                (PushKind::Disconnection, _) => break Err(std::io::Error::other("the connection closed").into()),
                (PushKind::SMessage, _) => {
                    msgs.extend(Msg::from_push_info(push));
                    if msgs.len() >= MESSAGES_AT_ONCE {
                        self.hand(&mut msgs);
                    }
                }
                (PushKind::SSubscribe, Some(channel)) => {
                    if let Some((answers, unanswered)) = batch.as_mut()
                        && let Some(i) = unanswered.iter().position(|c| *c == channel)
                    {
                        unanswered.remove(i);
                        answers.accepted.push(channel);
                    }
                }
                // One this session did not drop itself: the server ended it.
                (PushKind::SUnsubscribe, Some(channel)) if self.held.contains(&channel) => {
                    self.hand(&mut msgs);
                    self.held.remove(&channel);
                    self.unsubscribed_by_server(&channel);
                }
                _ => {}
            }
        };
        self.hand(&mut msgs);
        result
    }

    /// Hands the messages read so far to the engine, in one pass.
    fn hand(&self, msgs: &mut Vec<Msg>) {
        if !msgs.is_empty() {
            let requests = self.cell.messages(msgs);
            msgs.clear();
            D::send_background(self.cell, requests);
        }
    }

    /// The server ended `channel`'s subscription: the engine subscribes it again, routed by
    /// a fresh map.
    fn unsubscribed_by_server(&self, channel: &str) {
        tracing::debug!(channel, "the server ended a sharded subscription (its slot moved)");
        self.topology.poke();
        self.topology.hub.ended(self.node, channel);
        let requests = self.cell.with_engine(|s, now| s.engine.handle_shard_unsubscribed(channel, now)).1;
        D::send_background(self.cell, requests);
    }

    /// The connection failed: each channel it held or was asked is subscribed again (the
    /// engine's session-lost path, for this node's channels only).
    fn lost(&mut self) {
        self.topology.poke();
        let channels: Vec<String> = self.held.drain().chain(self.asked.drain().map(|(c, _)| c)).collect();
        if channels.is_empty() {
            return;
        }
        for channel in &channels {
            self.topology.hub.ended(self.node, channel);
        }
        let requests = self
            .cell
            .with_engine(|s, now| {
                for channel in &channels {
                    s.engine.handle_shard_unsubscribed(channel, now);
                }
            })
            .1;
        D::send_background(self.cell, requests);
    }
}

/// Whether a `ROLE` reply says `master`.
fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(items) => items.first().and_then(text).is_some_and(|r| r == "master"),
        _ => false,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_read() {
        let role = |r: &str| Value::Array(vec![Value::BulkString(r.into()), Value::Int(0), Value::Array(vec![])]);
        assert!(is_master(&role("master")));
        assert!(!is_master(&role("slave")));
        assert!(!is_master(&Value::Nil));
    }

    #[test]
    fn a_channel_moves_between_nodes() {
        let (a, b) = (("a".to_owned(), 1), ("b".to_owned(), 2));
        let mut r = Routes::default();
        r.assign("ch".into(), 7, a.clone());
        r.assign("ch".into(), 7, b.clone());
        assert_eq!(r.queue(&a).unsubscribe, ["ch"]);
        assert!(r.queue(&a).subscribe.is_empty());
        assert_eq!(r.queue(&b).subscribe, [("ch".to_owned(), 7)]);
        r.forget("ch");
        assert_eq!(r.queue(&b).unsubscribe, ["ch"]);
        assert!(r.homes.is_empty());
    }
}
