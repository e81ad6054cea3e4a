//! Connecting to a Redis Cluster, and following its slot map.
//!
//! The client keeps its own slot → primary map (read with `CLUSTER SLOTS` from any node it
//! knows, with each shard's replica count) and its own connections per node: each script
//! and its `WAIT` go in one pipeline to the key's primary, on that node's connection of the
//! request's class, so that `WAIT` counts only that shard's replicas and blocks nothing else.
//!
//! A `MOVED` reply updates the map and the request is sent again where it now lives (every
//! script is idempotent); the engine is then told the slot moved
//! ([`rdlock_core::Engine::handle_slot_moved`]), so that the slot's leases are verified
//! there at once. An `ASK` reply sends that one request again to the named node, preceded
//! by `ASKING`; a `TRYAGAIN` answer there (a multi-key script on a slot half-way through a
//! migration: it ran nothing) sends it again from the slot's primary after a short pause,
//! within the request's bound. One helper thread per client (as for sentinels) reads the map
//! again every [`ClientConfig::topology_refresh`](crate::ClientConfig::topology_refresh), and
//! at once after a lost link to a node; a slot whose primary changed is reported to the
//! engine with the replicas the map lists for it, and the replica counts of the slots in
//! use floor the engine's `ROLE` counts ([`rdlock_core::Engine::set_slot_replicas`]).
//!
//! Hand-offs are announced over sharded pub/sub, subscribed on each slot's proven primary
//! only, never on a replica (`sharded`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdlock_core::{Command, Reply, TransportError};
use redis::{IntoConnectionInfo, RedisConnectionInfo, Value};

use crate::cell::{Cell, Side};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::exchange::Exchange;
use crate::sentinel::{Credentials, decode, parse_host};
use crate::sharded::Hub;
use crate::tls::NodeTls;

/// The number of hash slots.
const SLOTS: usize = 16384;

/// The port a node listens on when the URL names none.
const DEFAULT_PORT: u16 = 6379;

/// How often the watcher looks for a poke: the most a map read asked for by a failed
/// request waits for its turn.
const TICK: Duration = Duration::from_millis(100);

/// A node's `host` and `port`.
pub(crate) type NodeAddr = (String, u16);

/// A driver's connections (or pools) per cluster node and class.
pub(crate) type PerNode<T> = Mutex<HashMap<(NodeAddr, rdlock_core::Class), Arc<T>>>;

/// Redirections followed for one request before its last reply is taken as it is.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Where the cluster's seed nodes are: for `Client::connect_cluster`, or parsed from a
/// `redis+cluster://` URL by [`ClusterConfig::from_url`] (which `Client::open` does).
///
/// ```
/// use rdlock_driver::ClusterConfig;
///
/// let config = ClusterConfig::from_url("redis+cluster://app:secret@10.0.0.1:7000,10.0.0.2").unwrap();
/// assert_eq!(config.seeds, [("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 6379)]);
/// assert_eq!(config.credentials.username.as_deref(), Some("app"));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Nodes to read the slot map from, asked in this order (any node of the cluster will
    /// do, primary or replica).
    pub seeds: Vec<(String, u16)>,
    /// Credentials for every node.
    pub credentials: Credentials,
    /// TLS to every node, with [`ClientConfig::tls`]' certificates (needs the adapter's
    /// `tls` feature).
    pub tls: bool,
    /// Longest wait for one node's slot map (connecting included).
    pub query_timeout: Duration,
}

impl ClusterConfig {
    /// Seed nodes at `seeds`, without credentials or TLS.
    pub fn new(seeds: impl IntoIterator<Item = (String, u16)>) -> Self {
        Self {
            seeds: seeds.into_iter().collect(),
            credentials: Credentials::default(),
            tls: false,
            query_timeout: Duration::from_millis(500),
        }
    }

    /// Parses `redis+cluster://[user:password@]host[:port][,host[:port]...][/]`
    /// (`rediss+cluster://` for TLS). A host without a port means port 6379; IPv6 hosts go
    /// in brackets. Percent-encoding is decoded. There is no database: a cluster has one.
    ///
    /// # Errors
    ///
    /// [`ClusterError::BadUrl`] for another scheme, no host, a bad port, a path or a query.
    pub fn from_url(url: &str) -> Result<Self, ClusterError> {
        let bad = |why: &str| ClusterError::BadUrl(why.to_owned());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            (true, rest)
        } else {
            return Err(bad("the scheme must be redis+cluster:// or rediss+cluster://"));
        };
        let (authority, path) = rest.split_once(['/', '?']).unwrap_or((rest, ""));
        if !path.is_empty() || rest.contains('?') {
            return Err(bad("a cluster URL takes no path nor query"));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut config = Self::new(Vec::new());
        config.tls = tls;
        if let Some(userinfo) = userinfo {
            let (user, pass) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
            let user = decode(user).ok_or_else(|| bad("bad percent-encoding in the user"))?;
            config.credentials.username = Some(user).filter(|u| !u.is_empty());
            config.credentials.password =
                pass.map(|p| decode(p).ok_or_else(|| bad("bad percent-encoding in the password"))).transpose()?;
        }
        for host in hosts.split(',') {
            config
                .seeds
                .push(parse_host(host, DEFAULT_PORT).ok_or_else(|| bad(&format!("bad node address {host:?}")))?);
        }
        Ok(config)
    }

    /// A client of the node at `host:port` speaking `protocol`, reached as `tls` says.
    fn client_with(
        &self,
        tls: &NodeTls,
        host: &str,
        port: u16,
        protocol: redis::ProtocolVersion,
    ) -> redis::RedisResult<redis::Client> {
        let addr = tls.addr(host, port);
        let mut settings = RedisConnectionInfo::default().set_protocol(protocol);
        if let Some(user) = &self.credentials.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.credentials.password {
            settings = settings.set_password(password);
        }
        redis::Client::open(addr.into_connection_info()?.set_redis_settings(settings))
    }

    /// The slot ranges and their primaries, from the first of `nodes` that answers. When
    /// none answers and TLS refused one of them, the error is that refusal ([`Error::Tls`]).
    fn read(&self, tls: &NodeTls, nodes: &[(String, u16)]) -> Result<Vec<Range>, Error> {
        let mut last = String::from("no node to ask");
        let mut refused = None;
        for (host, port) in nodes {
            let asked = || -> redis::RedisResult<Vec<Range>> {
                let client = self.client_with(tls, host, *port, redis::ProtocolVersion::RESP2)?;
                let mut conn = client.get_connection_with_timeout(self.query_timeout)?;
                conn.set_read_timeout(Some(self.query_timeout))?;
                conn.set_write_timeout(Some(self.query_timeout))?;
                let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
                Ok(ranges(&slots, host))
            };
            match asked() {
                Ok(r) if !r.is_empty() => return Ok(r),
                Ok(_) => last = format!("{host}:{port} serves no slot map"),
                Err(e) => {
                    refused = refused.or_else(|| crate::tls::refusal(&e));
                    last = format!("{host}:{port}: {e}");
                }
            }
        }
        match refused {
            Some(t) => Err(Error::Tls(t)),
            None => Err(ClusterError::NoSlotMap { last }.into()),
        }
    }
}

/// Why the cluster's slot map could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The cluster URL is malformed.
    #[error("bad cluster URL: {0}")]
    BadUrl(String),
    /// No node gave a slot map.
    #[error("no cluster node gave a slot map (last: {last})")]
    NoSlotMap {
        /// The last node's error.
        last: String,
    },
}

/// Slots `start..=end`, their primary, and how many replicas the map lists for them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    start: u16,
    end: u16,
    primary: (String, u16),
    replicas: u32,
}

/// Reads a `CLUSTER SLOTS` reply (`[start, end, [host, port, ...], replicas...]` each); an
/// empty host means the node asked (`asked`).
fn ranges(reply: &Value, asked: &str) -> Vec<Range> {
    let Value::Array(items) = reply else { return Vec::new() };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else { return None };
            let Value::Array(node) = parts.get(2)? else { return None };
            let host = text(node.first()?)?;
            let host = if host.is_empty() || host == "?" { asked.to_owned() } else { host };
            let port = int(node.get(1)?)?;
            let replicas = u32::try_from(parts.len().saturating_sub(3)).unwrap_or(u32::MAX);
            Some(Range { start: int(parts.first()?)?, end: int(parts.get(1)?)?, primary: (host, port), replicas })
        })
        .filter(|r| r.start <= r.end && usize::from(r.end) < SLOTS)
        .collect()
}

/// A redirection in a request's replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// The slot lives at this node now.
    Moved { slot: u16, node: (String, u16) },
    /// Ask this node, this once (a slot being migrated).
    Ask { node: (String, u16) },
}

/// The first `MOVED` or `ASK` in `replies` (`MOVED <slot> <host>:<port>`).
pub(crate) fn redirect(replies: &Result<Vec<Reply>, TransportError>) -> Option<Redirect> {
    let replies = replies.as_ref().ok()?;
    replies.iter().find_map(|r| {
        let Reply::Error(e) = r else { return None };
        if e.code != "MOVED" && e.code != "ASK" {
            return None;
        }
        let mut words = e.message.split_whitespace();
        let slot: u16 = words.next()?.parse().ok()?;
        let node = parse_host(words.next()?, DEFAULT_PORT)?;
        Some(if e.code == "MOVED" { Redirect::Moved { slot, node } } else { Redirect::Ask { node } })
    })
}

/// Whether any reply is `TRYAGAIN`: a multi-key script on a slot being migrated, sent on by
/// `ASK` to a node that lacks some of its keys yet. It ran nothing.
fn try_again(replies: &Result<Vec<Reply>, TransportError>) -> bool {
    replies.as_ref().is_ok_and(|r| r.iter().any(|r| matches!(r, Reply::Error(e) if e.code == "TRYAGAIN")))
}

/// The pause before a request answered `TRYAGAIN` is sent again: short, since a slot's keys
/// move in a few round trips, growing so that a long migration is not hammered.
fn try_again_pause(waits: u32) -> Duration {
    Duration::from_millis((10u64 << waits.min(4)).min(100))
}

/// One request's way to its slot's primary, following `MOVED` and `ASK` (at most
/// [`MAX_REDIRECTS`] tries in a row), and sending it again after `TRYAGAIN` until `until`:
/// both sides walk it, each sending on its own connections and sleeping its own way.
pub(crate) struct Walk<'t> {
    topology: &'t Topology,
    slot: u16,
    next: Option<NodeAddr>,
    asking: bool,
    tries: usize,
    /// `TRYAGAIN` answers so far, and the last instant another try may start after one.
    waits: u32,
    until: Instant,
}

/// One try of a [`Walk`]: the node, its client, and what to send there.
pub(crate) type Try<'a> = (NodeAddr, redis::Client, Exchange<'a>);

impl<'t> Walk<'t> {
    /// Starts at the primary the map names for `slot`; a `TRYAGAIN` is retried until `until`
    /// (the request's own bound).
    pub(crate) fn new(topology: &'t Topology, slot: u16, until: Instant) -> Self {
        topology.used(slot);
        Self { next: topology.primary(slot), topology, slot, asking: false, tries: 0, waits: 0, until }
    }

    /// The answer when no try was made: no node serves the slot.
    pub(crate) fn unserved(slot: u16) -> Result<Vec<Reply>, TransportError> {
        Err(TransportError::Disconnected(format!("no node serves slot {slot}")))
    }

    /// The next try; `None` when the walk is over; `Some(Err(answer))` when the node's client
    /// cannot be made (the request is then unsent).
    pub(crate) fn next<'a>(
        &mut self,
        commands: &'a [Command],
    ) -> Option<Result<Try<'a>, Result<Vec<Reply>, TransportError>>> {
        if self.tries == MAX_REDIRECTS {
            return None;
        }
        self.tries += 1;
        let Some(node) = self.next.take() else {
            // The map has no primary for the slot: have the watcher read it again.
            self.topology.poke();
            return None;
        };
        let exchange = if self.asking { Exchange::asking(commands) } else { Exchange::new(commands) };
        Some(match self.topology.client(&node) {
            Ok(client) => Ok((node, client, exchange)),
            Err(e) => Err(exchange.unsent(&e)),
        })
    }

    /// The replies of the last try: `None` when they are the answer, else the pause before
    /// the next try (none after a redirection; a short one after `TRYAGAIN`, which starts
    /// the walk again from the map's primary).
    pub(crate) fn answered(&mut self, replies: &Result<Vec<Reply>, TransportError>) -> Option<Duration> {
        match redirect(replies) {
            Some(Redirect::Moved { slot, node }) => {
                self.topology.moved(slot, &node);
                (self.next, self.asking) = (Some(node), false);
                Some(Duration::ZERO)
            }
            Some(Redirect::Ask { node }) => {
                (self.next, self.asking) = (Some(node), true);
                Some(Duration::ZERO)
            }
            None if try_again(replies) => {
                let pause = try_again_pause(self.waits);
                if Instant::now() + pause >= self.until {
                    return None;
                }
                self.waits += 1;
                (self.next, self.asking, self.tries) = (self.topology.primary(self.slot), false, 0);
                Some(pause)
            }
            None => None,
        }
    }
}

/// The slot map a cluster client keeps, the nodes' clients, and what the watcher is asked.
#[derive(Debug)]
pub(crate) struct Topology {
    config: ClusterConfig,
    /// How every node is reached: in the clear, or over TLS with the client's certificates.
    tls: NodeTls,
    refresh: Duration,
    map: Mutex<Map>,
    /// Slots that moved since the engine was last told (by a `MOVED` a request followed).
    moved: Mutex<Vec<u16>>,
    /// Replica counts of slots the engine is yet to be told ([`Topology::take_floors`]).
    floors: Mutex<Vec<(u16, u32)>>,
    poked: AtomicBool,
    /// The sharded pub/sub connections, one per primary.
    pub(crate) hub: Hub,
}

#[derive(Debug)]
struct Map {
    /// Each slot's primary, an index into `nodes` (`None`: no node serves it).
    slots: Box<[Option<u16>]>,
    /// Each slot's replicas as the map lists them.
    replicas: Box<[u8]>,
    /// Slots a request was routed to: their replica counts matter to the engine.
    used: Box<[bool]>,
    nodes: Vec<(String, u16)>,
    clients: HashMap<(String, u16), redis::Client>,
}

impl Map {
    fn node(&mut self, node: &(String, u16)) -> u16 {
        if let Some(i) = self.nodes.iter().position(|n| n == node) {
            return u16::try_from(i).unwrap_or(u16::MAX);
        }
        self.nodes.push(node.clone());
        u16::try_from(self.nodes.len() - 1).unwrap_or(u16::MAX)
    }
}

impl Topology {
    /// Reads the slot map from the seeds, reached with `settings`' TLS certificates when
    /// the URL said TLS (TLS settings for a plain URL are refused: [`crate::TlsError::NotTls`]).
    pub(crate) fn connect(config: ClusterConfig, settings: &ClientConfig) -> Result<Self, Error> {
        let tls = NodeTls::new(config.tls, settings.tls.as_ref())?;
        let ranges = config.read(&tls, &config.seeds)?;
        let topology = Self::new(config, tls, settings);
        topology.replace(&ranges);
        Ok(topology)
    }

    /// An empty map.
    fn new(config: ClusterConfig, tls: NodeTls, settings: &ClientConfig) -> Self {
        Self {
            config,
            tls,
            refresh: settings.topology_refresh.max(TICK),
            map: Mutex::new(Map {
                slots: vec![None; SLOTS].into_boxed_slice(),
                replicas: vec![0; SLOTS].into_boxed_slice(),
                used: vec![false; SLOTS].into_boxed_slice(),
                nodes: Vec::new(),
                clients: HashMap::new(),
            }),
            moved: Mutex::new(Vec::new()),
            floors: Mutex::new(Vec::new()),
            poked: AtomicBool::new(false),
            hub: Hub::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The primary that serves `slot` (`None`: no node serves it, as far as the map says).
    pub(crate) fn primary(&self, slot: u16) -> Option<(String, u16)> {
        let map = self.map();
        let i = (*map.slots.get(usize::from(slot))?)?;
        map.nodes.get(usize::from(i)).cloned()
    }

    /// A request is routed to `slot`: the engine is to learn its shard's replica count.
    fn used(&self, slot: u16) {
        let mut map = self.map();
        let Some(used) = map.used.get_mut(usize::from(slot)) else { return };
        if !std::mem::replace(used, true) {
            let n = u32::from(map.replicas[usize::from(slot)]);
            drop(map);
            self.floors.lock().unwrap_or_else(|e| e.into_inner()).push((slot, n));
        }
    }

    /// Replica counts of used slots that the engine has not been told yet: it counts no
    /// fewer replicas for them (a replica whose link is down is still one).
    pub(crate) fn take_floors(&self) -> Vec<(u16, u32)> {
        std::mem::take(&mut *self.floors.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A RESP3 client of `node`, for its sharded pub/sub connection.
    pub(crate) fn pubsub_client(&self, node: &(String, u16)) -> redis::RedisResult<redis::Client> {
        self.config.client_with(&self.tls, &node.0, node.1, redis::ProtocolVersion::RESP3)
    }

    /// A client of `node` (made once).
    pub(crate) fn client(&self, node: &(String, u16)) -> redis::RedisResult<redis::Client> {
        if let Some(c) = self.map().clients.get(node) {
            return Ok(c.clone());
        }
        let client = self.config.client_with(&self.tls, &node.0, node.1, redis::ProtocolVersion::RESP2)?;
        self.map().clients.insert(node.clone(), client.clone());
        Ok(client)
    }

    /// A `MOVED` reply: `slot` lives at `node` now; the engine is told after the request's
    /// reply ([`Topology::take_moved`]).
    pub(crate) fn moved(&self, slot: u16, node: &(String, u16)) {
        let mut map = self.map();
        let i = map.node(node);
        if let Some(s) = map.slots.get_mut(usize::from(slot)) {
            *s = Some(i);
        }
        drop(map);
        self.moved.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
        // Other slots may have gone with it.
        self.poke();
    }

    /// The slots that moved since the last call.
    pub(crate) fn take_moved(&self) -> Vec<u16> {
        std::mem::take(&mut *self.moved.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A link to a node failed: read the map now.
    pub(crate) fn poke(&self) {
        self.poked.store(true, Ordering::Release);
    }

    /// Installs a new map; returns the slots whose primary changed, with their replica
    /// counts. A used slot whose replica count alone changed is queued for the engine.
    fn replace(&self, ranges: &[Range]) -> Vec<(u16, u32)> {
        let mut map = self.map();
        let mut fresh = vec![None; SLOTS];
        let mut replicas = vec![0u8; SLOTS];
        for r in ranges {
            let i = map.node(&r.primary);
            for s in r.start..=r.end {
                fresh[usize::from(s)] = Some(i);
                replicas[usize::from(s)] = u8::try_from(r.replicas).unwrap_or(u8::MAX);
            }
        }
        let mut changed = Vec::new();
        let mut floors = Vec::new();
        for (s, slot) in (0..SLOTS).zip(0u16..) {
            let n = u32::from(replicas[s]);
            if fresh[s] != map.slots[s] {
                changed.push((slot, n));
            } else if replicas[s] != map.replicas[s] && map.used[s] {
                floors.push((slot, n));
            }
        }
        map.slots = fresh.into_boxed_slice();
        map.replicas = replicas.into_boxed_slice();
        drop(map);
        self.floors.lock().unwrap_or_else(|e| e.into_inner()).extend(floors);
        changed
    }

    /// Reads the map again from the nodes it names, then the seeds; returns the slots whose
    /// primary changed, with their replica counts.
    fn reread(&self) -> Result<Vec<(u16, u32)>, Error> {
        let mut nodes = self.map().nodes.clone();
        nodes.extend(self.config.seeds.iter().cloned());
        let ranges = self.config.read(&self.tls, &nodes)?;
        Ok(self.replace(&ranges))
    }
}

/// The client a cluster client starts with (the primary of slot 0: connect-time checks go
/// there), and its settings: a cluster engine, without keyspace notifications (they stay
/// on the key's node).
pub(crate) fn settings(topology: &Topology, mut config: ClientConfig) -> Result<(redis::Client, ClientConfig), Error> {
    let node = topology.primary(0).or_else(|| topology.config.seeds.first().cloned());
    let node = node.ok_or_else(|| ClusterError::NoSlotMap { last: "no seed node".into() })?;
    config.engine.cluster = true;
    config.keyspace_notifications = crate::KeyspaceNotifications::Off;
    Ok((topology.client(&node)?, config))
}

/// Makes `cell` follow the cluster's slot map: keeps `topology` in it and starts the
/// watcher thread, which ends with the client.
pub(crate) fn follow<D>(cell: &Arc<Cell<D>>, topology: Arc<Topology>) -> Result<(), Error>
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    let _ = cell.cluster.set(topology.clone());
    crate::sharded::start(cell, &topology);
    let weak = Arc::downgrade(cell);
    std::thread::Builder::new()
        .name("rdlock-cluster".into())
        .spawn(move || watch_loop(&topology, &weak))
        .map(drop)
        .map_err(|e| Error::Redis(e.into()))
}

fn watch_loop<D>(topology: &Topology, cell: &Weak<Cell<D>>)
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    let mut due = Instant::now() + topology.refresh;
    let mut failing = false;
    loop {
        std::thread::sleep(TICK);
        let Some(cell) = cell.upgrade().filter(|c| !c.is_closed()) else { return };
        let poked = topology.poked.swap(false, Ordering::AcqRel);
        let now = Instant::now();
        if !poked && now < due {
            continue;
        }
        due = now + topology.refresh;
        match topology.reread() {
            Ok(changed) => {
                failing = false;
                if !changed.is_empty() {
                    tracing::info!(slots = changed.len(), "the cluster's slot map changed: following it");
                }
                // Also the replica counts of slots whose primary stayed.
                let requests = cell.slots_moved(&changed);
                D::send_background(&cell, requests);
                // Channels that had no node to go to.
                topology.hub.reroute(topology);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "reading the cluster's slot map failed; keeping the one in use");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdlock_core::ServerError;

    use super::*;

    #[test]
    fn urls_parse() {
        let c = ClusterConfig::from_url("redis+cluster://:p%40@h1,h2:7001,[::1]:5/").expect("parses");
        assert_eq!(c.seeds, [("h1".to_owned(), 6379), ("h2".to_owned(), 7001), ("::1".to_owned(), 5)]);
        assert_eq!(c.credentials.username, None);
        assert_eq!(c.credentials.password.as_deref(), Some("p@"));
        assert!(ClusterConfig::from_url("rediss+cluster://h").expect("parses").tls);
        for bad in
            ["redis://h", "redis+cluster://", "redis+cluster://h:x", "redis+cluster://h/0", "redis+cluster://h?db=1"]
        {
            assert!(ClusterConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_are_read() {
        let e = |code: &str, msg: &str| Ok(vec![Reply::Error(ServerError::new(code, msg)), Reply::Nil]);
        assert_eq!(
            redirect(&e("MOVED", "3999 127.0.0.1:6381")),
            Some(Redirect::Moved { slot: 3999, node: ("127.0.0.1".to_owned(), 6381) })
        );
        assert_eq!(redirect(&e("ASK", "3999 h:7")), Some(Redirect::Ask { node: ("h".to_owned(), 7) }));
        assert_eq!(redirect(&e("ERR", "3999 h:7")), None);
    }

    #[test]
    fn try_again_is_read_and_paced() {
        let e = |code: &str| {
            Ok(vec![Reply::Error(ServerError::new(code, "Multiple keys request during rehashing of slot"))])
        };
        assert!(try_again(&e("TRYAGAIN")));
        assert!(!try_again(&e("ERR")));
        assert!(!try_again(&Err(TransportError::Timeout)));
        assert_eq!(try_again_pause(0), Duration::from_millis(10));
        assert_eq!(try_again_pause(9), Duration::from_millis(100));
    }

    #[test]
    fn replica_counts_reach_the_engine_for_used_slots_only() {
        let tls = NodeTls::new(false, None).expect("in the clear");
        let t = Topology::new(ClusterConfig::new([]), tls, &ClientConfig::default());
        let range = |primary: u16, replicas| Range { start: 0, end: 99, primary: ("p".to_owned(), primary), replicas };
        assert_eq!(t.replace(&[range(1, 2)]).len(), 100, "every slot found a primary");
        assert!(t.take_floors().is_empty(), "no slot used yet");
        let _ = Walk::new(&t, 7, Instant::now());
        let _ = Walk::new(&t, 7, Instant::now());
        assert_eq!(t.take_floors(), [(7, 2)], "once, at its first use");
        // One replica fewer in the map: the used slot's floor follows; a new primary comes
        // with its count, as a move.
        assert!(t.replace(&[range(1, 1)]).is_empty());
        assert_eq!(t.take_floors(), [(7, 1)]);
        let moved = t.replace(&[range(2, 3)]);
        assert_eq!((moved.len(), moved[7]), (100, (7, 3)));
        assert!(t.take_floors().is_empty());
    }

    #[test]
    fn slot_maps_are_read() {
        let node = |h: &str, p: i64| Value::Array(vec![Value::BulkString(h.into()), Value::Int(p), Value::Nil]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("10.0.0.1", 7000), node("10.0.0.4", 7003)]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let r = ranges(&reply, "seed");
        assert_eq!(r[0], Range { start: 0, end: 5460, primary: ("10.0.0.1".to_owned(), 7000), replicas: 1 });
        assert_eq!(r[1], Range { start: 5461, end: 16383, primary: ("seed".to_owned(), 7001), replicas: 0 });
    }
}
