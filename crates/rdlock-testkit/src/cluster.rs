//! A cluster of primaries with replicas, built and reshaped over the test-kit's own
//! connections (TLS ones for a TLS cluster).

use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::ports::free_port;
use crate::server::{HOST, RedisServer, ServerBuilder, info_field};

/// Number of hash slots of a cluster.
pub const SLOTS: u16 = 16384;

/// Short, so that a killed primary is noticed and replaced within a few seconds.
const NODE_TIMEOUT_MS: u64 = 1000;
/// How long [`Cluster::start`] waits for the cluster to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a forming cluster's nodes are met again while some do not know each other.
const REMEET_INTERVAL: Duration = Duration::from_secs(2);
/// How long a failover or a slot migration may take to be agreed on.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of readiness queries, so a node that hangs is reported, not waited on.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Keys moved per `MIGRATE`.
const MIGRATE_BATCH: usize = 100;
const MIGRATE_TIMEOUT_MS: u64 = 5000;
/// Fresh bus ports tried when the picked one turns out to be taken.
const BUS_PORT_ATTEMPTS: usize = 4;

/// A cluster of `redis-server` processes (`--cluster-enabled yes`), stopped when dropped.
///
/// Every node is a [`RedisServer`] with its own temporary directory (holding
/// its `nodes.conf`), so it can also be paused, killed or restarted directly; a
/// restarted node keeps its node id and rejoins. Nodes run with test timings:
/// `cluster-node-timeout 1000` and `cluster-replica-validity-factor 0`, so a
/// replica of a failed primary always stands for election and a failure is
/// repaired within a few seconds; replicas do not migrate between primaries on
/// their own. Automatic promotion needs a majority of primaries alive, so at
/// least three primaries.
///
/// The topology methods ([`primaries`](Self::primaries),
/// [`node_for_slot`](Self::node_for_slot), ...) ask a live node for its view
/// (`CLUSTER NODES`); after [`wait_ok`](Self::wait_ok) or any of the
/// reshaping methods, every live node has the same view.
///
/// When the cluster is dropped while the thread panics, the node ids are
/// printed to stderr, followed by the last lines of every node's log.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<RedisServer>,
    /// Node id of `nodes[i]`.
    ids: Vec<String>,
}

impl Cluster {
    /// Starts `primaries` primaries, splitting the slots evenly between them,
    /// each with `replicas_per_primary` replicas.
    ///
    /// Returns once every node reports `cluster_state:ok`, every node has the
    /// same slot map and roles, and every replica's link to its primary is up.
    /// That takes about 2 s: a primary reports `ok` at the earliest 2 s after
    /// its process started (also after a restart).
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Result<Cluster> {
        Self::start_with(primaries, replicas_per_primary, RedisServer::builder())
    }

    /// Like [`start`](Self::start), with every node configured from `base`,
    /// e.g. `RedisServer::builder().enable_debug(true)`. The cluster settings
    /// come after `base`'s arguments, so they win over them. With
    /// [`ServerBuilder::tls`] every node serves TLS only, on its bus too
    /// (`--tls-cluster yes`), and the slot map names the TLS ports.
    pub fn start_with(primaries: usize, replicas_per_primary: usize, base: ServerBuilder) -> Result<Cluster> {
        if primaries == 0 || primaries > usize::from(SLOTS) {
            return Err(TestkitError::InvalidArgument(format!(
                "a cluster needs between 1 and {SLOTS} primaries, not {primaries}"
            )));
        }
        let count = primaries * (1 + replicas_per_primary);
        let mut nodes = Vec::with_capacity(count);
        let mut bus_ports = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let (node, bus_port) = start_node(&base)?;
            let mut conn = node.admin_connection()?;
            ids.push(redis::cmd("CLUSTER").arg("MYID").query::<String>(&mut conn)?);
            nodes.push(node);
            bus_ports.push(bus_port);
        }
        let cluster = Cluster { nodes, ids };

        for (i, node) in cluster.nodes[..primaries].iter().enumerate() {
            let first = i * usize::from(SLOTS) / primaries;
            let last = (i + 1) * usize::from(SLOTS) / primaries - 1;
            let mut conn = node.admin_connection()?;
            // Distinct epochs from the start, as a failover needs them, instead
            // of waiting for the nodes to resolve the collision of all-zero epochs.
            redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1).query::<()>(&mut conn)?;
            redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(first).arg(last).query::<()>(&mut conn)?;
        }
        cluster.meet(&bus_ports)?;
        // A replica can only follow a primary it already knows.
        cluster.wait_until_all_known(&bus_ports)?;
        for (i, replica) in cluster.nodes[primaries..].iter().enumerate() {
            let primary = &cluster.ids[i / replicas_per_primary];
            let mut conn = replica.admin_connection()?;
            redis::cmd("CLUSTER").arg("REPLICATE").arg(primary).query::<()>(&mut conn)?;
        }
        cluster
            .wait_for(READY_TIMEOUT, "the new cluster to be ok", |_| true)
            .map_err(|err| cluster.start_timeout(err))?;
        Ok(cluster)
    }

    /// Every node, primaries and replicas, in start order: first the
    /// primaries, then the replicas of the first primary, of the second, ...
    /// (roles change with failovers; this order does not).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The URLs of every node, `redis://127.0.0.1:PORT/`, as seeds for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster's node id of `node`.
    pub fn node_id(&self, node: &RedisServer) -> Result<&str> {
        self.index_of(node).map(|i| self.ids[i].as_str())
    }

    /// The running nodes that the cluster sees as primaries, in [`nodes`](Self::nodes) order.
    pub fn primaries(&self) -> Result<Vec<&RedisServer>> {
        let view = self.view()?;
        Ok(self.running_where(|id| view.iter().any(|e| e.id == id && e.is_primary())))
    }

    /// The running replicas of `primary`, in [`nodes`](Self::nodes) order.
    pub fn replicas_of(&self, primary: &RedisServer) -> Result<Vec<&RedisServer>> {
        let primary_id = self.node_id(primary)?;
        let view = self.view()?;
        Ok(self.running_where(|id| view.iter().any(|e| e.id == id && e.primary.as_deref() == Some(primary_id))))
    }

    /// The primary that owns `slot`.
    pub fn node_for_slot(&self, slot: u16) -> Result<&RedisServer> {
        check_slot(slot)?;
        let view = self.view()?;
        let owner = view
            .iter()
            .find(|e| e.owns(slot))
            .ok_or_else(|| TestkitError::InvalidArgument(format!("no node owns slot {slot}")))?;
        self.by_id(&owner.id)
    }

    /// The primary that owns the slot of `key` (see [`key_slot`]).
    pub fn primary_for_key(&self, key: impl AsRef<[u8]>) -> Result<&RedisServer> {
        self.node_for_slot(key_slot(key))
    }

    /// Kills `node` with SIGKILL; see [`RedisServer::kill`].
    pub fn kill(&self, node: &RedisServer) -> Result<()> {
        self.index_of(node)?;
        node.kill()
    }

    /// Freezes `node` with SIGSTOP; see [`RedisServer::pause`].
    pub fn pause(&self, node: &RedisServer) -> Result<()> {
        self.index_of(node)?;
        node.pause()
    }

    /// Lets a paused `node` go on; see [`RedisServer::resume`].
    pub fn resume(&self, node: &RedisServer) -> Result<()> {
        self.index_of(node)?;
        node.resume()
    }

    /// Waits until every running, unpaused node reports `cluster_state:ok`,
    /// sees no other such node as failing, has the same slot map and roles as
    /// the others, has no slot migration open, and — for a replica — has its
    /// link to its primary up.
    pub fn wait_ok(&self, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, "the cluster to be ok", |_| true).map(drop)
    }

    /// A manual failover (`CLUSTER FAILOVER`) of `replica`'s primary: returns
    /// once `replica` is a primary and the cluster is ok again (see
    /// [`wait_ok`](Self::wait_ok)). The old primary becomes its replica.
    pub fn failover(&self, replica: &RedisServer) -> Result<()> {
        let id = self.node_id(replica)?.to_owned();
        let mut conn = replica.admin_connection()?;
        redis::cmd("CLUSTER").arg("FAILOVER").query::<()>(&mut conn)?;
        let what = format!("{} to take over from its primary", replica.describe());
        self.wait_for(CHANGE_TIMEOUT, &what, |view| view.iter().any(|e| e.id == id && e.is_primary())).map(drop)
    }

    /// Kills `primary` with SIGKILL, waits until the cluster has promoted one
    /// of its replicas and is ok again (see [`wait_ok`](Self::wait_ok)), and
    /// returns the new primary.
    pub fn kill_primary_and_wait_for_promotion(&self, primary: &RedisServer) -> Result<&RedisServer> {
        let primary_id = self.node_id(primary)?.to_owned();
        let replicas: Vec<String> = self
            .view()?
            .into_iter()
            .filter(|e| e.primary.as_deref() == Some(primary_id.as_str()))
            .map(|e| e.id)
            .collect();
        if replicas.is_empty() {
            return Err(TestkitError::InvalidArgument(format!("{} has no replica to promote", primary.describe())));
        }
        primary.kill()?;
        let what = format!("a replica of the killed {} to be promoted", primary.describe());
        let promoted = |view: &[NodeEntry]| {
            view.iter()
                .find(|e| replicas.contains(&e.id) && e.is_primary() && !e.slots.is_empty())
                .map(|e| e.id.clone())
        };
        let view = self.wait_for(CHANGE_TIMEOUT, &what, |view| promoted(view).is_some())?;
        let id = promoted(&view).ok_or_else(|| TestkitError::Timeout { what, timeout: CHANGE_TIMEOUT })?;
        self.by_id(&id)
    }

    /// Moves `slot` and its keys from the primary `from` to the primary `to`:
    /// marks it importing on `to` and migrating on `from`, moves the keys in
    /// batches (`CLUSTER GETKEYSINSLOT`, `MIGRATE`), assigns the slot to `to`
    /// on every reachable primary, and waits until every node agrees.
    ///
    /// Clients that still send the slot's keys to `from` get `MOVED` to `to`.
    pub fn migrate_slot(&self, slot: u16, from: &RedisServer, to: &RedisServer) -> Result<()> {
        check_slot(slot)?;
        let (from_id, to_id) = (self.node_id(from)?.to_owned(), self.node_id(to)?.to_owned());
        if from_id == to_id {
            return Err(TestkitError::InvalidArgument(format!("slot {slot}: source and target are the same node")));
        }
        let owner = self.node_for_slot(slot)?;
        if owner.port() != from.port() {
            return Err(TestkitError::InvalidArgument(format!(
                "slot {slot} is owned by {}, not {}",
                owner.describe(),
                from.describe()
            )));
        }
        let mut source = from.admin_connection()?;
        let mut target = to.admin_connection()?;
        setslot(&mut target, slot, "IMPORTING", &from_id)?;
        setslot(&mut source, slot, "MIGRATING", &to_id)?;
        loop {
            let keys: Vec<Vec<u8>> =
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(MIGRATE_BATCH).query(&mut source)?;
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg(HOST)
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut source)?;
        }
        // The target first, so that it serves the slot before the source
        // starts redirecting clients to it.
        setslot(&mut target, slot, "NODE", &to_id)?;
        setslot(&mut source, slot, "NODE", &to_id)?;
        let view = self.view()?;
        for other in
            self.running_where(|id| id != from_id && id != to_id && view.iter().any(|e| e.id == id && e.is_primary()))
        {
            if !other.is_paused() {
                setslot(&mut other.admin_connection()?, slot, "NODE", &to_id)?;
            }
        }
        let what = format!("slot {slot} to move to {}", to.describe());
        self.wait_for(CHANGE_TIMEOUT, &what, |view| view.iter().any(|e| e.id == to_id && e.owns(slot))).map(drop)
    }

    fn index_of(&self, node: &RedisServer) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.port() == node.port())
            .ok_or_else(|| TestkitError::InvalidArgument(format!("{} is not a node of this cluster", node.describe())))
    }

    fn by_id(&self, id: &str) -> Result<&RedisServer> {
        self.ids
            .iter()
            .position(|known| known == id)
            .map(|i| &self.nodes[i])
            .ok_or_else(|| TestkitError::InvalidArgument(format!("no node of this cluster has id {id}")))
    }

    fn running_where(&self, keep: impl Fn(&str) -> bool) -> Vec<&RedisServer> {
        self.nodes.iter().zip(&self.ids).filter(|(n, id)| keep(id) && n.is_running()).map(|(n, _)| n).collect()
    }

    fn reachable(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running() && !n.is_paused())
    }

    /// The view of the first reachable node that answers.
    fn view(&self) -> Result<Vec<NodeEntry>> {
        let mut last_err = None;
        for node in self.reachable() {
            match query_conn(node)
                .and_then(|mut conn| Ok(redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut conn)?))
            {
                Ok(text) => {
                    return parse_cluster_nodes(&text)
                        .map_err(|detail| TestkitError::UnexpectedReply { what: node.describe(), detail });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::NotRunning { what: "every node of the cluster".into() }))
    }

    /// Waits until every node knows every other one, handshakes done.
    /// The first node meets every other (a node it already knows is met again harmlessly).
    fn meet(&self, bus_ports: &[u16]) -> Result<()> {
        let mut conn = self.nodes[0].admin_connection()?;
        for (node, bus_port) in self.nodes.iter().zip(bus_ports).skip(1) {
            redis::cmd("CLUSTER").arg("MEET").arg(HOST).arg(node.port()).arg(*bus_port).query::<()>(&mut conn)?;
        }
        Ok(())
    }

    /// Waits until every node knows every other. A handshake that times out (a loaded
    /// machine) is dropped by the nodes and never retried: the meeting is repeated every
    /// couple of seconds until it takes.
    fn wait_until_all_known(&self, bus_ports: &[u16]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut meet_again = Instant::now() + REMEET_INTERVAL;
        loop {
            let mut lagging = None;
            for node in &self.nodes {
                let known = query_conn(node)
                    .and_then(|mut conn| Ok(redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut conn)?))
                    .ok()
                    .and_then(|text| parse_cluster_nodes(&text).ok())
                    .is_some_and(|view| {
                        view.len() == self.nodes.len() && view.iter().all(|e| !e.has_flag("handshake") && e.port != 0)
                    });
                if !known {
                    lagging = Some(node);
                    break;
                }
            }
            let Some(lagging) = lagging else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                let err = TestkitError::Timeout {
                    what: format!("{} to know all {} nodes", lagging.describe(), self.nodes.len()),
                    timeout: READY_TIMEOUT,
                };
                return Err(self.start_timeout(err));
            }
            if Instant::now() >= meet_again {
                // Best effort: the wait's own deadline reports a cluster that never forms.
                let _ = self.meet(bus_ports);
                meet_again = Instant::now() + REMEET_INTERVAL;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Polls until the cluster is ok (see [`wait_ok`](Self::wait_ok)) and the
    /// agreed view satisfies `done`; returns that view.
    fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[NodeEntry]) -> bool,
    ) -> Result<Vec<NodeEntry>> {
        let deadline = Instant::now() + timeout;
        loop {
            let reason = match self.agreed_view() {
                Ok(view) if done(&view) => return Ok(view),
                Ok(_) => "the nodes agree, on the old state".to_owned(),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout { what: format!("{what} (last: {reason})"), timeout });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The view every reachable node shares, or why there is none.
    fn agreed_view(&self) -> Result<Vec<NodeEntry>, String> {
        let mut agreed: Option<(u16, Vec<NodeEntry>, Vec<Role>)> = None;
        for node in self.reachable() {
            let port = node.port();
            let fail = |detail: String| format!("port {port}: {detail}");
            let mut conn = query_conn(node).map_err(|e| fail(e.to_string()))?;
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).map_err(|e| fail(e.to_string()))?;
            let state = info_field(&info, "cluster_state").unwrap_or("?");
            if state != "ok" {
                return Err(fail(format!("cluster_state:{state}")));
            }
            let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn).map_err(|e| fail(e.to_string()))?;
            let view = parse_cluster_nodes(&text).map_err(fail)?;
            if view.len() != self.nodes.len() {
                return Err(fail(format!("knows {} of {} nodes", view.len(), self.nodes.len())));
            }
            for entry in &view {
                if entry.open_migration {
                    return Err(fail(format!("a slot migration is open on node {}", entry.port)));
                }
                let live = self.by_id(&entry.id).is_ok_and(|n| n.is_running() && !n.is_paused());
                if let Some(flag) = entry.flags.iter().find(|f| BAD_FLAGS.contains(&f.as_str()))
                    && live
                {
                    return Err(fail(format!("sees node {} as {flag}", entry.port)));
                }
            }
            if view.iter().any(|e| e.has_flag("myself") && e.has_flag("slave")) {
                let info: String =
                    redis::cmd("INFO").arg("replication").query(&mut conn).map_err(|e| fail(e.to_string()))?;
                let link = info_field(&info, "master_link_status").unwrap_or("?");
                if link != "up" {
                    return Err(fail(format!("master_link_status:{link}")));
                }
            }
            let roles = roles(&view);
            match &agreed {
                None => agreed = Some((port, view, roles)),
                Some((first, _, first_roles)) if *first_roles != roles => {
                    return Err(format!("ports {first} and {port} disagree on the slot map or the roles"));
                }
                Some(_) => {}
            }
        }
        agreed.map(|(_, view, _)| view).ok_or_else(|| "no node is reachable".to_owned())
    }

    /// A start-up failure, with every node's log tail (the nodes are dropped
    /// without a panic, so they print nothing themselves).
    fn start_timeout(&self, err: TestkitError) -> TestkitError {
        let log_tail = self
            .nodes
            .iter()
            .zip(&self.ids)
            .map(|(n, id)| format!("--- {} (node {id}) ---\n{}", n.describe(), n.log_tail(10)))
            .collect::<Vec<_>>()
            .join("\n");
        TestkitError::StartTimeout { what: format!("cluster: {err}"), timeout: READY_TIMEOUT, log_tail }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The nodes print their own log tails when dropped right after this.
        if std::thread::panicking() {
            let nodes: Vec<String> =
                self.nodes.iter().zip(&self.ids).map(|(n, id)| format!("port {} = node {id}", n.port())).collect();
            eprintln!("--- cluster of {} nodes: {} ---", self.nodes.len(), nodes.join(", "));
        }
    }
}

/// Flags under which a node counts as not (yet) part of a healthy cluster.
const BAD_FLAGS: [&str; 4] = ["fail", "fail?", "handshake", "noaddr"];

/// The hash slot of `key`: CRC16 of the key, or of its hash tag (the part
/// between the first `{` and the next `}`, when not empty), modulo [`SLOTS`].
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    let key = key.as_ref();
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&len| len > 0).map(|len| &rest[..len])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC16-CCITT (XMODEM), the checksum the cluster hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

fn check_slot(slot: u16) -> Result<()> {
    if slot < SLOTS { Ok(()) } else { Err(TestkitError::InvalidArgument(format!("slot {slot} is not below {SLOTS}"))) }
}

fn setslot(conn: &mut redis::Connection, slot: u16, state: &str, node_id: &str) -> Result<()> {
    redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(node_id).query::<()>(conn)?;
    Ok(())
}

/// Starts one cluster node on a free port, with a free port for its bus:
/// the default (port + 10000) may be taken or out of range.
fn start_node(base: &ServerBuilder) -> Result<(RedisServer, u16)> {
    let mut last_err = None;
    for _ in 0..BUS_PORT_ATTEMPTS {
        let bus_port = free_port();
        // A TLS node talks TLS on its bus too, and announces its TLS port (a server built
        // without TLS may not know the setting: only named when wanted).
        let bus_tls: &[&str] = if base.has_tls() { &["--tls-cluster", "yes"] } else { &[] };
        let started = base
            .clone()
            .args(["--cluster-enabled", "yes", "--cluster-port", &bus_port.to_string()])
            .args(bus_tls)
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--cluster-replica-validity-factor", "0", "--cluster-allow-replica-migration", "no"])
            .start();
        match started {
            Ok(node) => return Ok((node, bus_port)),
            // Also what a taken bus port looks like.
            Err(err @ TestkitError::Exited { .. }) => last_err = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_err.unwrap_or_else(|| TestkitError::InvalidArgument("no bus port attempt was made".into())))
}

/// A connection for readiness queries: a hanging node fails it quickly.
fn query_conn(node: &RedisServer) -> Result<redis::Connection> {
    let conn = node.client().get_connection_with_timeout(QUERY_TIMEOUT)?;
    conn.set_read_timeout(Some(QUERY_TIMEOUT))?;
    conn.set_write_timeout(Some(QUERY_TIMEOUT))?;
    Ok(conn)
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeEntry {
    id: String,
    /// 0 for a node whose address is not known yet.
    port: u16,
    flags: Vec<String>,
    /// The primary's id, for a replica.
    primary: Option<String>,
    /// Inclusive slot ranges.
    slots: Vec<(u16, u16)>,
    /// A slot of this node is being imported or migrated.
    open_migration: bool,
}

impl NodeEntry {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_primary(&self) -> bool {
        self.has_flag("master")
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// What every node must agree on: each node's role, primary and slots.
type Role = (String, bool, Option<String>, Vec<(u16, u16)>);

fn roles(view: &[NodeEntry]) -> Vec<Role> {
    let mut roles: Vec<Role> =
        view.iter().map(|e| (e.id.clone(), e.is_primary(), e.primary.clone(), e.slots.clone())).collect();
    roles.sort();
    roles
}

/// Parses a `CLUSTER NODES` reply:
/// `<id> <ip:port@bus[,host]> <flags> <primary|-> <ping> <pong> <epoch> <link> <slot>...`.
fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeEntry>, String> {
    text.lines().filter(|line| !line.trim().is_empty()).map(parse_node_line).collect()
}

fn parse_node_line(line: &str) -> Result<NodeEntry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(format!("short CLUSTER NODES line: {line:?}"));
    }
    let addr = fields[1].split(',').next().unwrap_or_default();
    let port = addr
        .split('@')
        .next()
        .and_then(|host_port| host_port.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("bad address in CLUSTER NODES line: {line:?}"))?;
    let mut slots = Vec::new();
    let mut open_migration = false;
    for token in &fields[8..] {
        if token.starts_with('[') {
            open_migration = true;
            continue;
        }
        let (first, last) = token.split_once('-').unwrap_or((token, token));
        match (first.parse(), last.parse()) {
            (Ok(first), Ok(last)) => slots.push((first, last)),
            _ => return Err(format!("bad slot range {token:?} in CLUSTER NODES line: {line:?}")),
        }
    }
    Ok(NodeEntry {
        id: fields[0].to_owned(),
        port,
        flags: fields[2].split(',').map(str::to_owned).collect(),
        primary: Some(fields[3]).filter(|p| *p != "-").map(str::to_owned),
        slots,
        open_migration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_the_cluster_specification() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}".as_bytes()));
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
    }

    #[test]
    fn cluster_nodes_lines_are_parsed() -> Result<(), String> {
        let text = "\
            07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238317239 4 connected\n\
            67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 myself,master - 0 0 2 connected 5461-10922 12000 [12001->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]\n\
            e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :0@0 master,fail?,noaddr - 1426238316232 0 3 disconnected\n";
        let view = parse_cluster_nodes(text)?;
        assert_eq!(view.len(), 3);
        assert_eq!(view[0].port, 30004);
        assert_eq!(view[0].primary.as_deref(), Some("67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1"));
        assert!(!view[0].is_primary());
        assert!(view[1].is_primary() && view[1].has_flag("myself"));
        assert_eq!(view[1].slots, [(5461, 10922), (12000, 12000)]);
        assert!(view[1].owns(12000) && !view[1].owns(12001));
        assert!(view[1].open_migration);
        assert_eq!(view[2].port, 0);
        assert!(view[2].has_flag("noaddr"));
        assert!(parse_cluster_nodes("abc 127.0.0.1:1@2 master").is_err());
        Ok(())
    }
}
