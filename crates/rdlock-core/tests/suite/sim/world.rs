//! The world: clients with their engines, the network between them and the fake server,
//! faults, and the loop that steps to the next earliest thing that happens (a delivery, an
//! engine timer, a scripted action). The invariants are checked after every step.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use rdlock_core::{
    Class, Command, Engine, EngineConfig, LockEvent, LockId, Node, OpId, Reply, Request, RequestId, Route, ServerError,
    Transmit, TransportError, slot,
};

use super::checker::{Checker, Stats};
use super::dice::Dice;
use super::fake::{Bug, Effects, Fake};
use super::scenario::{Fault, Scenario};
use super::workload::{OpKind, Worker};
use super::{MS, at, ns};

/// Something delivered to a client; held in its inbox while the client is paused.
#[derive(Debug)]
pub(super) enum Item {
    Reply {
        id: RequestId,
        replies: Vec<Reply>,
    },
    /// The driver's response timeout for a request.
    Timeout {
        id: RequestId,
    },
    Message {
        conn_epoch: u64,
        channel: String,
        payload: String,
    },
    Subscribed {
        conn_epoch: u64,
        channel: String,
    },
    /// The answer to a `PING` sent at `sent` on the pub/sub connection, in order with its
    /// messages.
    PingAnswered {
        conn_epoch: u64,
        sent: u64,
    },
    SubscriptionsLost,
    /// A cluster's server ended one sharded subscription on its own (`sunsubscribe`).
    ShardUnsubscribed(String),
    /// A cluster slot's primary changed (the one fake node stays the server).
    SlotMoved(u16),
    /// A scripted step of one of the client's workers.
    Act {
        worker: usize,
        nonce: u64,
    },
}

#[derive(Debug)]
enum Ev {
    /// A request reaches the server on connection `route`.
    Arrive {
        client: usize,
        route: usize,
        req: Request,
        lose_reply: bool,
    },
    /// A `WAIT` on this connection returns.
    WaitDone {
        client: usize,
        route: usize,
    },
    /// A `PING` sent at `sent` on the pub/sub connection reaches the server.
    Ping {
        client: usize,
        conn_epoch: u64,
        sent: u64,
    },
    /// A (un)subscribe reaches the server.
    PubSub {
        client: usize,
        conn_epoch: u64,
        channel: String,
        subscribe: bool,
    },
    Deliver {
        client: usize,
        item: Item,
    },
    /// The engine's timer.
    Wake {
        client: usize,
    },
    Fault(Fault),
    Unpause {
        client: usize,
    },
}

#[derive(Debug)]
struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The server's side of one client connection: requests run in order, and a `WAIT` blocks
/// the ones behind it.
#[derive(Debug, Default)]
struct ServerConn {
    queue: VecDeque<(Request, bool)>,
    /// Replies so far to the head request's commands.
    done: Vec<Reply>,
    blocked: bool,
    /// Replication offset of this connection's latest write (what `WAIT` counts).
    woff: u64,
}

/// Connection indexes: commands, confirm, pub/sub. Link `2i` goes up, `2i + 1` down.
const PUBSUB: usize = 2;

impl World {
    /// A cluster engine names every request's slot (its key's) and runs the sharded scripts;
    /// any other names the primary and runs the plain ones.
    fn check_route(&mut self, c: usize, req: &Request) {
        let cluster = self.clients[c].cluster;
        // A `PING` only leads a release, off a cluster (an `ASKING` would apply to it), and
        // never a mutex's store (whose reply already orders the server's writes).
        let pinged = req.commands.iter().position(|cmd| *cmd == Command::Ping);
        if let Some(at) = pinged {
            let release = matches!(req.commands.get(1), Some(Command::Script { script, .. })
                if matches!(script.base(), rdlock_core::Script::Release | rdlock_core::Script::ReleaseBatch | rdlock_core::Script::PermitRelease | rdlock_core::Script::ReleaseShared));
            if at != 0 || !release || cluster || req.commands.len() != 2 {
                self.checker.fail(self.now, format!("client {c}: a PING out of place: {req:?}"));
            }
        }
        for cmd in &req.commands {
            let (Command::Script { script, keys, .. } | Command::ScriptWithValue { script, keys, .. }) = cmd else {
                continue;
            };
            let want = match (cluster, keys.first()) {
                (true, Some(key)) => Node::Slot(slot(key)),
                _ => Node::Primary,
            };
            if req.route.node != want || script.is_sharded() != (cluster && script.sharded() != script.base()) {
                self.checker.fail(self.now, format!("client {c}: {script:?} on {:?} (cluster: {cluster})", req.route));
            }
        }
        if cluster != matches!(req.route.node, Node::Slot(_)) {
            self.checker.fail(self.now, format!("client {c}: {:?} (cluster: {cluster})", req.route));
        }
    }

    /// A sharded channel is subscribed on its own slot's primary.
    fn check_slot(&mut self, c: usize, channel: &str, shard: u16) {
        if !self.clients[c].cluster || slot(channel) != shard {
            self.checker.fail(self.now, format!("client {c}: channel {channel} subscribed on slot {shard}"));
        }
    }
}

fn route_ix(r: Route) -> usize {
    match r.class {
        Class::Commands => 0,
        Class::Confirm => 1,
    }
}

#[derive(Debug)]
pub(super) struct Client {
    pub engine: Engine,
    pub alive: bool,
    pub paused: bool,
    inbox: VecDeque<Item>,
    wake: Option<u64>,
    outstanding: BTreeMap<RequestId, Request>,
    pub workers: Vec<Worker>,
    /// The client's live engine lock per key (at most one each).
    pub live: BTreeMap<String, LockId>,
    /// The caller actions the engine still owes an answer, with their lock.
    pub owed: BTreeMap<OpId, (LockId, OpKind)>,
    /// Ops whose answers the engine has emitted and the world has not handled yet: a release
    /// called meanwhile does not take them back.
    pub emitted: BTreeSet<OpId>,
    /// Pub/sub connection generation, bumped when it drops.
    conn_epoch: u64,
    /// The server's subscriptions for this client's pub/sub connection.
    channels: BTreeSet<String>,
    /// The engine routes by slot and shards its channels.
    cluster: bool,
    /// Latest arrival per link, so that each direction of a connection stays in order.
    links: [u64; 6],
    /// When the driver may next `PING` its pub/sub connection.
    next_ping: u64,
}

#[derive(Debug)]
pub struct World {
    pub sc: Scenario,
    pub now: u64,
    pub(super) dice: Dice,
    pub fake: Fake,
    pub(super) clients: Vec<Client>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    conns: BTreeMap<(usize, usize), ServerConn>,
    pub checker: Checker,
    trace: Option<Vec<String>>,
}

impl World {
    pub fn new(sc: Scenario, trace: bool) -> Self {
        let mut dice = Dice::new(sc.seed);
        let mut fake = Fake::new(sc.bug, sc.epoch_us);
        for r in &sc.replicas {
            fake.add_replica(r.lag, r.stalls.clone());
        }
        if sc.wrongtype {
            fake.put_list(super::scenario::WRONGTYPE_KEY);
        }
        let clients = (0..sc.clients)
            .map(|i| {
                let seed = sc.seed.wrapping_mul(31).wrapping_add(i as u64);
                let cluster = dice.chance(0.3);
                let config = EngineConfig {
                    cluster,
                    subscription_linger: Duration::from_millis(dice.range(10, 500)),
                    max_renew_batch: dice.range(1, 4) as usize,
                    replica_count_max_age: Duration::from_millis(dice.range(50, 1000)),
                    // Half the clients renew by `SET ... IFEQ`, as on Valkey 8.1+ / Redis 8.4+
                    // (from the seed: the scenario's dice draw as before).
                    set_ifeq: seed % 2 == 1,
                    ..EngineConfig::default()
                };
                Client {
                    engine: Engine::with_test_seed(config, seed),
                    alive: true,
                    paused: false,
                    inbox: VecDeque::new(),
                    wake: None,
                    outstanding: BTreeMap::new(),
                    workers: (0..sc.workers).map(|_| Worker::default()).collect(),
                    live: BTreeMap::new(),
                    owed: BTreeMap::new(),
                    emitted: BTreeSet::new(),
                    conn_epoch: 0,
                    channels: BTreeSet::new(),
                    cluster,
                    links: [0; 6],
                    next_ping: 0,
                }
            })
            .collect();
        // Slack for an outcome past its deadline: a release that undoes a late acquisition
        // may take every attempt's response timeout.
        let deadline_slack = 3 * sc.response_timeout + 2 * sc.max_delay() + MS;
        let liveness_slack = 4 * sc.max_delay() + 5 * MS;
        let checker = Checker::new(sc.clients, deadline_slack, liveness_slack, sc.response_timeout);
        let mut w = Self {
            sc,
            now: 0,
            dice,
            fake,
            clients,
            queue: BinaryHeap::new(),
            seq: 0,
            conns: BTreeMap::new(),
            checker,
            trace: trace.then(Vec::new),
        };
        for (t, f) in w.sc.faults.clone() {
            w.schedule(t, Ev::Fault(f));
        }
        for c in 0..w.sc.clients {
            for wk in 0..w.sc.workers {
                let first = w.dice.range(0, 30) * MS;
                w.plan(c, wk, first);
            }
        }
        w
    }

    /// Steps until the world is quiet after its active phase, or a violation.
    pub fn run(&mut self) -> Stats {
        let limit = self.sc.active + 30_000 * MS;
        loop {
            let Some(Reverse(q)) = self.queue.pop() else {
                if self.clients.iter().all(|c| !c.alive) {
                    // Every client vanished (waiters, then the last one crashed).
                    break;
                }
                self.checker.fail(self.now, "nothing left to happen, yet the world is not quiet");
                break;
            };
            if q.at > limit {
                self.checker.fail(self.now, "the world did not quiesce within 30 s of its active phase");
                break;
            }
            self.now = q.at;
            self.handle(q.ev);
            self.checker.check_step(self.now, &self.fake);
            if self.checker.violation.is_some() {
                break;
            }
            if self.now >= self.sc.active && self.quiet() {
                self.check_answered();
                self.checker.check_quiesced(self.now, &self.fake);
                break;
            }
        }
        self.checker.stats
    }

    pub fn trace(&self) -> Option<&[String]> {
        self.trace.as_deref()
    }

    pub(super) fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>10.3}ms {}", self.now as f64 / 1e6, super::virtualize(&line())));
        }
    }

    fn quiet(&self) -> bool {
        self.clients.iter().filter(|c| c.alive).all(|c| {
            !c.paused
                && c.inbox.is_empty()
                && c.outstanding.is_empty()
                && c.engine.is_empty()
                && c.workers.iter().all(Worker::is_idle)
        })
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq: self.seq, ev }));
    }

    /// When something sent now on `link` of client `c` arrives (each link stays in order).
    fn hop(&mut self, c: usize, link: usize) -> u64 {
        let (lo, hi) = self.sc.delay;
        let mut d = self.dice.range(lo, hi);
        if self.dice.chance(self.sc.spike.0) {
            d += self.dice.range(0, self.sc.spike.1);
        }
        let arrive = (self.now + d).max(self.clients[c].links[link]);
        self.clients[c].links[link] = arrive;
        arrive
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive { client, route, req, lose_reply } => {
                // As late as a driver could say the request left (its turn came): the server
                // has not run it yet. The leases it gives must hold from here too.
                let cl = &mut self.clients[client];
                if cl.alive && !cl.paused {
                    cl.engine.handle_leaving(req.id, at(self.now));
                }
                let conn = self.conns.entry((client, route)).or_default();
                conn.queue.push_back((req, lose_reply));
                self.run_conn((client, route));
            }
            Ev::WaitDone { client, route } => {
                let (now, fake) = (self.now, &self.fake);
                if let Some(conn) = self.conns.get_mut(&(client, route)) {
                    conn.blocked = false;
                    conn.done.push(Reply::Int(i64::from(fake.acked(conn.woff, now))));
                }
                self.run_conn((client, route));
            }
            Ev::PubSub { client, conn_epoch, channel, subscribe } => {
                if self.clients[client].conn_epoch != conn_epoch {
                    return;
                }
                if subscribe {
                    self.clients[client].channels.insert(channel.clone());
                    let at = self.hop(client, 2 * PUBSUB + 1);
                    self.schedule(at, Ev::Deliver { client, item: Item::Subscribed { conn_epoch, channel } });
                } else {
                    self.clients[client].channels.remove(&channel);
                }
            }
            Ev::Ping { client, conn_epoch, sent } => {
                if self.clients[client].conn_epoch != conn_epoch {
                    return;
                }
                // Answered behind every message published before it, on the same link.
                let at = match self.sc.bug {
                    Bug::PingOvertakesMessages => self.now,
                    _ => self.hop(client, 2 * PUBSUB + 1),
                };
                self.schedule(at, Ev::Deliver { client, item: Item::PingAnswered { conn_epoch, sent } });
            }
            Ev::Deliver { client, item } => self.deliver(client, item),
            Ev::Wake { client } => {
                let cl = &mut self.clients[client];
                if !cl.alive || cl.paused || cl.wake.is_none_or(|t| t > self.now) {
                    return;
                }
                cl.wake = None;
                self.fire_timers(client);
                self.after_engine(client);
            }
            Ev::Fault(f) => self.fault(f),
            Ev::Unpause { client } => self.unpause(client),
        }
    }

    // ------------------------------------------------------------ the server side

    fn run_conn(&mut self, key: (usize, usize)) {
        loop {
            let Some(conn) = self.conns.get_mut(&key) else { return };
            if conn.blocked {
                return;
            }
            let Some((req, _)) = conn.queue.front() else { return };
            let ix = conn.done.len();
            let Some(cmd) = req.commands.get(ix).cloned() else {
                let (req, lose) = conn.queue.pop_front().expect("head request");
                let replies = std::mem::take(&mut conn.done);
                self.reply(key, req, replies, lose);
                continue;
            };
            // A script's value of bytes (a mutex's store) is its last ARGV.
            let (cmd, value) = match cmd {
                Command::ScriptWithValue { script, keys, args, value } => {
                    (Command::Script { script, keys, args }, Some(value))
                }
                cmd => (cmd, None),
            };
            match cmd {
                Command::Script { script, keys, args } => {
                    if !self.clients[key.0].alive
                        && let Some(k) = keys.first().filter(|_| script.base() == rdlock_core::Script::Acquire)
                    {
                        self.checker.on_dead_request(k);
                    }
                    let before = self.fake.offset();
                    // The server's view: a crashed client's connections are closed, a paused
                    // one's are still open.
                    let clients = &self.clients;
                    let listeners =
                        |channel: &str| clients.iter().filter(|c| c.alive && c.channels.contains(channel)).count();
                    let (reply, fx) = self.fake.run_script_with_value(
                        script,
                        &keys.to_vec(),
                        &args.to_vec(),
                        value.as_deref(),
                        self.now,
                        &mut self.dice,
                        &listeners,
                    );
                    let fx = fx.detach();
                    let after = self.fake.offset();
                    let conn = self.conns.get_mut(&key).expect("connection");
                    if after != before {
                        conn.woff = after;
                    }
                    conn.done.push(reply);
                    self.effects(fx);
                }
                Command::Role => conn.done.push(self.fake.role(self.now)),
                Command::Ping => conn.done.push(Reply::Data(b"PONG".to_vec())),
                Command::SetIfEq { key: k, value, ttl_ms } => {
                    let before = self.fake.offset();
                    let reply = self.fake.run_set_ifeq(&k, &value, ttl_ms, self.now, &mut self.dice);
                    let after = self.fake.offset();
                    let conn = self.conns.get_mut(&key).expect("connection");
                    if after != before {
                        conn.woff = after;
                    }
                    conn.done.push(reply);
                }
                Command::ScriptWithValue { .. } => unreachable!("read as a script above"),
                // The fake keeps no append-only file: it answers as a server with it off.
                Command::WaitAof { .. } => conn.done.push(Reply::Error(ServerError::new(
                    "ERR",
                    "WAITAOF cannot be used when numlocal is set but appendonly is disabled.",
                ))),
                Command::Wait { replicas, timeout_ms } => {
                    match self.fake.wait_done(conn.woff, replicas, self.now, timeout_ms) {
                        Some(t) if t <= self.now => {
                            conn.done.push(Reply::Int(i64::from(self.fake.acked(conn.woff, self.now))))
                        }
                        Some(t) => {
                            conn.blocked = true;
                            self.schedule(t, Ev::WaitDone { client: key.0, route: key.1 });
                            return;
                        }
                        None => {
                            conn.blocked = true;
                            return;
                        }
                    }
                }
            }
        }
    }

    fn reply(&mut self, (c, route): (usize, usize), req: Request, replies: Vec<Reply>, lose: bool) {
        if !self.clients[c].alive {
            return;
        }
        if lose {
            self.log(|| format!("c{c} reply to {:?} lost", req.id));
            self.checker.on_loss(c, &req, self.now);
            return;
        }
        let at = self.hop(c, 2 * route + 1);
        self.schedule(at, Ev::Deliver { client: c, item: Item::Reply { id: req.id, replies } });
    }

    fn effects(&mut self, fx: Effects) {
        // A downgrade makes room before the script serves the queue with it.
        for token in &fx.downgrades {
            self.checker.on_downgrade(token, self.now);
        }
        for g in &fx.grants {
            self.checker.on_grant(g, self.now, self.fake.restarts);
        }
        for r in &fx.reads {
            self.checker.on_value_read(r, self.now);
        }
        for s in &fx.stores {
            self.checker.on_store_run(s, self.now);
        }
        for (channel, payload) in fx.publishes {
            for c in 0..self.clients.len() {
                let cl = &self.clients[c];
                if !cl.alive || !cl.channels.contains(&channel) {
                    continue;
                }
                let conn_epoch = cl.conn_epoch;
                if self.now < self.sc.active && self.dice.chance(self.sc.msg_loss) {
                    continue;
                }
                let at = self.hop(c, 2 * PUBSUB + 1);
                let item = Item::Message { conn_epoch, channel: channel.clone(), payload: payload.clone() };
                self.schedule(at, Ev::Deliver { client: c, item });
            }
        }
    }

    // ------------------------------------------------------------ the client side

    fn deliver(&mut self, c: usize, item: Item) {
        let cl = &mut self.clients[c];
        if !cl.alive {
            return;
        }
        if cl.paused {
            cl.inbox.push_back(item);
        } else {
            self.process(c, item);
        }
    }

    fn process(&mut self, c: usize, item: Item) {
        let t = at(self.now);
        match item {
            Item::Reply { id, replies } => {
                let Some(req) = self.clients[c].outstanding.remove(&id) else { return };
                self.log(|| format!("c{c} <- {id:?} {replies:?}"));
                self.checker.on_reply(c, &req, Ok(&replies), self.now);
                if let Err(e) = self.clients[c].engine.handle_reply(id, Ok(replies), t) {
                    self.checker.fail(self.now, format!("client {c}: reply to its own request refused: {e}"));
                }
            }
            Item::Timeout { id } => {
                let Some(req) = self.clients[c].outstanding.remove(&id) else { return };
                self.log(|| format!("c{c} <- {id:?} timeout"));
                self.checker.on_reply(c, &req, Err(()), self.now);
                if let Err(e) = self.clients[c].engine.handle_reply(id, Err(TransportError::Timeout), t) {
                    self.checker.fail(self.now, format!("client {c}: timeout of its own request refused: {e}"));
                }
            }
            Item::Message { conn_epoch, channel, payload } => {
                if conn_epoch != self.clients[c].conn_epoch {
                    return;
                }
                self.log(|| format!("c{c} <- message {channel} {payload}"));
                self.checker.on_message(c, &payload);
                self.clients[c].engine.handle_message(&channel, payload.as_bytes(), t);
            }
            Item::Subscribed { conn_epoch, channel } => {
                if conn_epoch != self.clients[c].conn_epoch {
                    return;
                }
                self.log(|| format!("c{c} <- subscribed {channel}"));
                self.clients[c].engine.handle_subscribed(&channel, t);
            }
            Item::PingAnswered { conn_epoch, sent } => {
                if conn_epoch != self.clients[c].conn_epoch {
                    return;
                }
                self.log(|| format!("c{c} <- pong (sent {sent})"));
                self.clients[c].engine.handle_pubsub_answer(at(sent));
            }
            Item::SubscriptionsLost => {
                self.log(|| format!("c{c} <- pub/sub connection lost"));
                self.clients[c].engine.handle_subscriptions_lost(t);
            }
            Item::ShardUnsubscribed(channel) => {
                self.log(|| format!("c{c} <- sunsubscribe {channel}"));
                self.clients[c].engine.handle_shard_unsubscribed(&channel, t);
            }
            Item::SlotMoved(slot) => {
                self.log(|| format!("c{c} <- slot {slot} moved"));
                self.clients[c].engine.handle_slot_moved(slot, None, t);
            }
            Item::Act { worker, nonce } => self.act(c, worker, nonce),
        }
        self.after_engine(c);
    }

    fn fire_timers(&mut self, c: usize) {
        let engine = &mut self.clients[c].engine;
        engine.handle_timeout(at(self.now));
        if let Some(next) = engine.poll_timeout().map(ns)
            && next <= self.now
        {
            self.checker.fail(self.now, format!("client {c}: a timer at {next} is still due after handle_timeout"));
        }
    }

    /// Drains what the engine has to send and to say, until it has nothing more; then
    /// re-arms its timer.
    pub(super) fn after_engine(&mut self, c: usize) {
        loop {
            let mut reqs = Vec::new();
            let mut subs = Vec::new();
            while let Some(tx) = self.clients[c].engine.poll_transmit() {
                match tx {
                    Transmit::Request(r) => reqs.push(r),
                    Transmit::Subscribe(ch) => subs.push((ch, true)),
                    Transmit::Unsubscribe(ch) => subs.push((ch, false)),
                    // One fake node serves every slot: a sharded subscription is on its primary.
                    Transmit::SubscribeShard { channel, slot } => {
                        self.check_slot(c, &channel, slot);
                        subs.push((channel, true))
                    }
                    Transmit::UnsubscribeShard { channel, slot } => {
                        self.check_slot(c, &channel, slot);
                        subs.push((channel, false))
                    }
                }
            }
            // Channel operations may come in hash order; their order across channels does
            // not matter, and sorting keeps runs reproducible.
            subs.sort_by(|a, b| a.0.cmp(&b.0));
            for r in reqs {
                self.send(c, r);
            }
            for (channel, subscribe) in subs {
                self.log(|| format!("c{c} -> subscribe={subscribe} {channel}"));
                let at = self.hop(c, 2 * PUBSUB);
                let conn_epoch = self.clients[c].conn_epoch;
                self.schedule(at, Ev::PubSub { client: c, conn_epoch, channel, subscribe });
            }
            // While locks wait, the driver PINGs its pub/sub connection now and then: a
            // message read after the answer was published after the PING's send.
            if let Some(every) = self.sc.ping_every
                && self.clients[c].engine.wants_pubsub_ping()
                && self.now >= self.clients[c].next_ping
            {
                self.clients[c].next_ping = self.now + every;
                let (sent, conn_epoch) = (self.now, self.clients[c].conn_epoch);
                self.log(|| format!("c{c} -> ping"));
                let at = self.hop(c, 2 * PUBSUB);
                self.schedule(at, Ev::Ping { client: c, conn_epoch, sent });
            }
            // A scenario's locks all share their keys or none does: no shared key has a queue.
            if let Some(w) = self.clients[c].engine.poll_warning() {
                self.checker.fail(self.now, format!("client {c}: {w:?}"));
            }
            let mut events = Vec::new();
            while let Some(e) = self.clients[c].engine.poll_event() {
                events.push(e);
            }
            if events.is_empty() {
                break;
            }
            self.clients[c].emitted = events.iter().filter_map(|e| e.op).collect();
            for LockEvent { lock: id, op, event: ev } in events {
                if let Some(op) = op {
                    self.clients[c].emitted.remove(&op);
                }
                // The trace line leaves the op out: it reads as before ops existed.
                self.log(|| format!("c{c} event {id:?} {ev:?}"));
                let kind = self.on_answer(c, id, op, &ev);
                self.checker.on_event(c, id, &ev, kind, self.now, &self.fake);
                self.on_lock_event(c, id, ev);
            }
        }
        let cl = &mut self.clients[c];
        let engine = &cl.engine;
        cl.live.retain(|_, id| engine.lock_info(*id).is_some());
        let next = cl.engine.poll_timeout().map(ns);
        if next != cl.wake {
            cl.wake = next;
            if let Some(t) = next {
                self.schedule(t.max(self.now), Ev::Wake { client: c });
            }
        }
    }

    fn send(&mut self, c: usize, req: Request) {
        self.log(|| format!("c{c} -> {:?} {:?} {:?}", req.id, req.route, req.commands));
        self.check_route(c, &req);
        let live = &self.clients[c].live;
        self.checker.on_transmit(c, &req, |k| live.get(k).copied(), self.now);
        let (id, route) = (req.id, route_ix(req.route));
        self.schedule(self.now + self.sc.response_timeout, Ev::Deliver { client: c, item: Item::Timeout { id } });
        self.clients[c].outstanding.insert(id, req.clone());
        let lossy = self.now < self.sc.active;
        if lossy && self.dice.chance(self.sc.req_loss) {
            self.log(|| format!("c{c} request {id:?} lost"));
            self.checker.on_loss(c, &req, self.now);
            return;
        }
        let lose_reply = lossy && self.dice.chance(self.sc.reply_loss);
        let at = self.hop(c, 2 * route);
        self.schedule(at, Ev::Arrive { client: c, route, req, lose_reply });
    }

    // ------------------------------------------------------------ faults

    fn fault(&mut self, f: Fault) {
        self.log(|| format!("fault {f:?}"));
        match f {
            Fault::Pause { client, ns } => {
                let cl = &mut self.clients[client];
                if cl.alive && !cl.paused {
                    cl.paused = true;
                    self.checker.on_pause(client, self.now);
                    self.schedule(self.now + ns, Ev::Unpause { client });
                }
            }
            Fault::Crash { client } => self.crash(client),
            Fault::VanishWaiters { count } => {
                let waiting: Vec<usize> = (0..self.clients.len())
                    .filter(|&c| {
                        let cl = &self.clients[c];
                        cl.alive
                            && cl
                                .workers
                                .iter()
                                .filter_map(Worker::acquiring)
                                .any(|id| self.checker.rec(c, id).is_some_and(|r| !r.try_only && r.token.is_some()))
                    })
                    .collect();
                if waiting.is_empty() {
                    if self.now < self.sc.active {
                        self.schedule(self.now + 20 * MS, Ev::Fault(Fault::VanishWaiters { count }));
                    }
                    return;
                }
                // Someone stays alive, to be owed the lock.
                let alive = self.clients.iter().filter(|c| c.alive).count();
                for c in waiting.into_iter().take(count.min(alive - 1)) {
                    self.log(|| format!("c{c} vanishes while waiting"));
                    self.crash(c);
                }
            }
            Fault::DropPubSub { client } => self.drop_pubsub(client),
            Fault::Restart { loading } => {
                self.fake.restart(self.now, loading);
                self.checker.on_restart();
                if self.sc.wrongtype {
                    // The application writes its data again.
                    self.fake.put_list(super::scenario::WRONGTYPE_KEY);
                }
                for c in 0..self.clients.len() {
                    self.drop_pubsub(c);
                }
            }
        }
    }

    /// The client stops for good: nothing reaches it and it sends nothing more (its requests
    /// already on the way still run on the server).
    fn crash(&mut self, client: usize) {
        let cl = &mut self.clients[client];
        if cl.alive {
            cl.alive = false;
            cl.conn_epoch += 1;
            cl.channels.clear();
            cl.outstanding.clear();
            cl.inbox.clear();
            self.checker.on_crash(client, self.now, &self.fake);
        }
    }

    fn drop_pubsub(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        if cl.alive && cl.cluster {
            // In a cluster the server ends sharded subscriptions one by one, as their slots
            // move: every channel is told apart, and every slot in use moves.
            let channels = std::mem::take(&mut cl.channels);
            let slots: BTreeSet<u16> = cl.live.keys().map(|k| slot(k)).collect();
            for channel in channels {
                self.deliver(c, Item::ShardUnsubscribed(channel));
            }
            for s in slots {
                self.deliver(c, Item::SlotMoved(s));
            }
            return;
        }
        if cl.alive {
            cl.conn_epoch += 1;
            cl.channels.clear();
            self.deliver(c, Item::SubscriptionsLost);
        }
    }

    fn unpause(&mut self, c: usize) {
        if !self.clients[c].alive {
            return;
        }
        self.log(|| format!("c{c} resumes"));
        self.clients[c].paused = false;
        self.checker.on_resume(c, self.now);
        // The driver's sleep returns first, then it reads what piled up on its sockets.
        self.clients[c].wake = None;
        self.fire_timers(c);
        self.after_engine(c);
        while let Some(item) = self.clients[c].inbox.pop_front() {
            self.process(c, item);
        }
    }

    /// Schedules worker `w`'s next step `after` from now; earlier plans are void.
    pub(super) fn plan(&mut self, c: usize, w: usize, after: u64) {
        let nonce = self.clients[c].workers[w].bump();
        self.schedule(self.now + after, Ev::Deliver { client: c, item: Item::Act { worker: w, nonce } });
    }
}
