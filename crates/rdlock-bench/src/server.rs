//! The redis-server(s) of one scenario run, and what the benchmark reads from them: command
//! counts (`INFO commandstats`, which in Redis 7 also counts the commands run inside scripts),
//! CPU time, and pub/sub clients; for a cluster, summed over its nodes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdlock_testkit::{Cluster, RedisServer};

use crate::BoxError;

/// Commands the benchmark itself sends (or that connection set-up sends): never counted.
fn is_admin(name: &str) -> bool {
    name == "info"
        || name == "hello"
        || name == "select"
        || name.starts_with("client")
        || name.starts_with("config")
        || name.starts_with("command")
}

/// The processes of one run, killed on drop.
#[derive(Debug)]
enum Processes {
    Single(Box<RedisServer>),
    Cluster(Cluster),
}

/// One node as the benchmark reads it: its process and its own (admin) connection.
struct Node {
    pid: u32,
    admin: Mutex<redis::Connection>,
}

/// A fresh `redis-server --save '' --appendonly no` on a free loopback port, or a fresh cluster
/// of such servers (the C scenarios), killed on drop.
pub struct Server {
    processes: Processes,
    nodes: Vec<Node>,
}

impl Server {
    /// Starts a server and opens the benchmark's own (admin) connection to it.
    pub fn start() -> Result<Self, BoxError> {
        let process = RedisServer::start()?;
        let nodes = vec![Node { pid: process.pid(), admin: Mutex::new(process.connection()?) }];
        Ok(Self { processes: Processes::Single(Box::new(process)), nodes })
    }

    /// Starts a cluster of `primaries` primaries without replicas (the slots split evenly)
    /// and opens an admin connection to every node.
    pub fn start_cluster(primaries: usize) -> Result<Self, BoxError> {
        let cluster = Cluster::start(primaries, 0)?;
        let nodes = cluster
            .nodes()
            .iter()
            .map(|n| Ok(Node { pid: n.pid(), admin: Mutex::new(n.connection()?) }))
            .collect::<Result<Vec<_>, BoxError>>()?;
        Ok(Self { processes: Processes::Cluster(cluster), nodes })
    }

    /// `redis://127.0.0.1:PORT/`, or `redis+cluster://127.0.0.1:PORT,...` with every node a seed.
    pub fn url(&self) -> String {
        match &self.processes {
            Processes::Single(p) => p.url(),
            Processes::Cluster(c) => {
                let seeds: Vec<String> = c.nodes().iter().map(|n| format!("{}:{}", n.host(), n.port())).collect();
                format!("redis+cluster://{}", seeds.join(","))
            }
        }
    }

    /// `n` lock keys: `bench:lock:I` on a single server; in a cluster, keys whose shards take
    /// turns (key `i` on the `i % primaries`-th primary), so that 8 keys lie 3/3/2 on 3 shards.
    pub fn lock_keys(&self, n: usize) -> Result<Vec<String>, BoxError> {
        let Processes::Cluster(cluster) = &self.processes else {
            return Ok((0..n).map(|i| format!("bench:lock:{i}")).collect());
        };
        let primaries: Vec<u16> = cluster.primaries()?.iter().map(|p| p.port()).collect();
        let shard = |key: &str| -> Result<usize, BoxError> {
            let port = cluster.primary_for_key(key)?.port();
            primaries.iter().position(|&p| p == port).ok_or_else(|| format!("{key}: no primary owns it").into())
        };
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let want = i % primaries.len();
            let key = (0..)
                .map(|k| format!("bench:lock:{i}:{k}"))
                .map(|key| shard(&key).map(|s| (s == want).then_some(key)))
                .find_map(Result::transpose)
                .ok_or("no key found")??;
            keys.push(key);
        }
        Ok(keys)
    }

    /// A synchronous connection (for the plain `SET` loop) to the first node.
    pub fn connection(&self) -> Result<redis::Connection, BoxError> {
        Ok(match &self.processes {
            Processes::Single(p) => p.connection()?,
            Processes::Cluster(c) => c.nodes()[0].connection()?,
        })
    }

    fn query(node: &Node, cmd: &redis::Cmd) -> Result<String, BoxError> {
        let mut conn = node.admin.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cmd.query::<String>(&mut *conn)?)
    }

    /// The server's version, from `INFO server` (of the first node).
    pub fn version(&self) -> Result<String, BoxError> {
        let info = Self::query(&self.nodes[0], redis::cmd("INFO").arg("server"))?;
        Ok(field(&info, "redis_version").unwrap_or("?").to_owned())
    }

    /// Command counts, read events and CPU time now, summed over the nodes.
    pub fn snapshot(&self) -> Result<Snapshot, BoxError> {
        let mut snap = Snapshot {
            at: Instant::now(),
            calls: BTreeMap::new(),
            reads: 0,
            proc_cpu: Duration::ZERO,
            rusage: Duration::ZERO,
            admin_reads: 0,
        };
        for node in &self.nodes {
            let info = Self::query(node, redis::cmd("INFO").arg("commandstats").arg("cpu").arg("stats"))?;
            for line in info.lines() {
                let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
                let Some((name, stats)) = rest.split_once(':') else { continue };
                let stat = |key: &str| {
                    stats
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(key))
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let sum = snap.calls.entry(name.to_owned()).or_insert((0, 0));
                sum.0 += stat("calls=");
                sum.1 += stat("usec=");
            }
            let secs = |k: &str| field(&info, k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            snap.rusage += Duration::from_secs_f64(secs("used_cpu_sys") + secs("used_cpu_user"));
            snap.reads += field(&info, "total_reads_processed").and_then(|v| v.parse().ok()).unwrap_or(0);
            snap.proc_cpu += proc_cpu(node.pid);
            snap.admin_reads += 1;
        }
        Ok(snap)
    }

    /// Pub/sub connections (`CLIENT LIST TYPE pubsub`) and their channel subscriptions.
    pub fn pubsub(&self) -> Result<(u64, u64), BoxError> {
        let mut conns = 0;
        let mut subs = 0;
        for node in &self.nodes {
            let list = Self::query(node, redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"))?;
            for line in list.lines().filter(|l| !l.trim().is_empty()) {
                conns += 1;
                subs += line
                    .split(' ')
                    .find_map(|kv| kv.strip_prefix("sub="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok((conns, subs))
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("url", &self.url()).finish()
    }
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

/// utime + stime of the whole server process, from `/proc/PID/stat` (clock ticks of 10 ms).
fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // The command name (field 2) may contain spaces: count fields after its closing paren.
    let Some((_, rest)) = stat.rsplit_once(')') else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let tick = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((tick(14) + tick(15)) * 1000 / CLOCK_TICKS_PER_SEC)
}

/// `getconf CLK_TCK` on Linux: 100 on every architecture the benchmark runs on.
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// Counters at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    /// Calls and microseconds spent, per command.
    calls: BTreeMap<String, (u64, u64)>,
    /// Read events the server processed, this snapshot's `INFO` included.
    reads: u64,
    /// From `/proc/PID/stat`: 10 ms resolution.
    proc_cpu: Duration,
    /// From `INFO cpu` (the server's getrusage): microsecond resolution.
    rusage: Duration,
    /// `INFO` reads this snapshot took: one per node.
    admin_reads: u64,
}

impl Snapshot {
    /// What happened between `self` and a later snapshot.
    pub fn until(&self, later: &Snapshot) -> Delta {
        let calls = later
            .calls
            .iter()
            .map(|(k, &(n, us))| {
                let (n0, us0) = self.calls.get(k).copied().unwrap_or((0, 0));
                (k.clone(), (n.saturating_sub(n0), us.saturating_sub(us0)))
            })
            .filter(|(k, (n, _))| *n > 0 && !is_admin(k))
            .collect();
        Delta {
            elapsed: later.at.duration_since(self.at),
            calls,
            // The later snapshot's own `INFO`s are the admin reads in between.
            reads: later.reads.saturating_sub(self.reads).saturating_sub(later.admin_reads),
            proc_cpu: later.proc_cpu.saturating_sub(self.proc_cpu),
            rusage: later.rusage.saturating_sub(self.rusage),
        }
    }
}

/// Commands and CPU between two snapshots.
#[derive(Clone, Debug)]
pub struct Delta {
    pub elapsed: Duration,
    /// Calls and microseconds per command (lower-case name; subcommands as `name|sub`),
    /// admin ones left out.
    pub calls: BTreeMap<String, (u64, u64)>,
    /// Read events of the clients' connections: their round trips, each reading a request
    /// or a pipeline of them, when a connection has one in flight at a time.
    pub reads: u64,
    pub proc_cpu: Duration,
    pub rusage: Duration,
}

impl Delta {
    /// Calls of one command.
    pub fn calls(&self, name: &str) -> u64 {
        self.calls.get(name).map_or(0, |c| c.0)
    }

    /// All counted commands, including those run inside scripts.
    pub fn total(&self) -> u64 {
        self.calls.values().map(|c| c.0).sum()
    }

    /// Server time in the commands a client sent itself, by the server's own clock
    /// (a script's time includes the commands it ran).
    pub fn request_usec(&self, top_level: &[&str]) -> u64 {
        top_level.iter().map(|c| self.calls.get(*c).map_or(0, |c| c.1)).sum()
    }

    /// Calls of the commands a client sends itself (the rest ran inside its scripts).
    pub fn requests(&self, top_level: &[&str]) -> u64 {
        top_level.iter().map(|c| self.calls(c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::route::Route;

    /// The C scenarios' keys lie 3/3/2 on the three shards, and the raw baseline sends each to
    /// its slot's primary (a wrong node would answer `MOVED`, an error here).
    #[test]
    fn cluster_keys_are_spread_and_raw_routes_them_to_their_primaries() -> Result<(), BoxError> {
        let server = Server::start_cluster(3)?;
        let Processes::Cluster(cluster) = &server.processes else { return Err("not a cluster".into()) };
        let keys = server.lock_keys(8)?;
        let mut per_shard = BTreeMap::new();
        for key in &keys {
            *per_shard.entry(cluster.primary_for_key(key)?.port()).or_insert(0) += 1;
        }
        let mut counts: Vec<i32> = per_shard.into_values().collect();
        counts.sort_unstable();
        assert_eq!(counts, [2, 3, 3]);

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let route = Route::connect(&server.url()).await?;
            for key in &keys {
                redis::cmd("SET").arg(key).arg(1).exec_async(&mut route.conn(key)?).await?;
            }
            Ok::<_, BoxError>(())
        })?;
        for key in &keys {
            let mut conn = cluster.primary_for_key(key)?.connection()?;
            assert_eq!(redis::cmd("EXISTS").arg(key).query::<i64>(&mut conn)?, 1, "{key}");
        }
        Ok(())
    }
}
