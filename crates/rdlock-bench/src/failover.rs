//! The cost of following a failover (F1-F4): from the switch (a kill -9 of the primary, or a
//! planned failover asked for) to the client's first acquisition on the new primary, split into
//! the topology's own part and the client's.
//!
//! Each run starts a fresh topology: a primary with one replica watched by three sentinels
//! (F1, F2), or a cluster of three primaries with one replica each (F3, F4; the keys all in
//! one slot, whose primary is switched). The replica that will take over is known in advance
//! (the only one of that primary). A client acquires and releases fresh keys in a loop; then
//! the switch. Beside it, a probe thread of plain connections polls every 2 ms:
//!
//! - *promoted*: the replica answers `ROLE` with `master`;
//! - *announced*: the topology tells clients so: two of the three sentinels name the replica
//!   (`SENTINEL GET-MASTER-ADDR-BY-NAME`), or every other live node's `CLUSTER SLOTS` gives it
//!   the slot.
//!
//! An acquisition counts as the first on the new primary when its `lock()` was called after
//! the switch, returned after the probe saw the promotion, and its key is then found on the
//! replica while that replica says it is a primary (the loop checks every acquisition so).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdlock_testkit::{Cluster, MASTER_NAME, RedisServer, Replicated, Sentinels};
use redis::Value;

use crate::BoxError;
use crate::adapters::{Exec, Locker, Spec};
use crate::scenario::{Metrics, Rig, Scenario, ms};

/// Hang guard of one run: no switch here takes more than a few seconds.
const DEADLINE: Duration = Duration::from_secs(30);
/// The probe's poll interval: the promotion is seen at most this late.
const PROBE_EVERY: Duration = Duration::from_millis(2);
/// Acquisitions before the switch, so that the client is warm and its loop running.
const WARM: Duration = Duration::from_millis(300);
/// Read timeout of the probe's and the check's connections.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// The leases of the loop: long enough for any switch, released at once.
const SPEC: Spec = Spec { ttl: Duration::from_secs(10), auto_renew: false };

/// The topology of one run and how it is switched.
enum Topology {
    Sentinel {
        data: Box<Replicated>,
        sentinels: Sentinels,
    },
    /// `pair`: the indexes in `cluster.nodes()` of the slot's primary and of its replica.
    Cluster {
        cluster: Cluster,
        slot: u16,
        pair: (usize, usize),
    },
}

impl Topology {
    fn start(scenario: Scenario) -> Result<Self, BoxError> {
        Ok(match scenario {
            Scenario::F1 | Scenario::F2 => {
                let data = Box::new(Replicated::start(1)?);
                let sentinels = Sentinels::start(&*data, 3)?;
                Topology::Sentinel { data, sentinels }
            }
            _ => {
                let cluster = Cluster::start(3, 1)?;
                let slot = rdlock_testkit::key_slot(KEY_TAG);
                let primary = cluster.node_for_slot(slot)?;
                let replica = *cluster.replicas_of(primary)?.first().ok_or("the slot's primary has no replica")?;
                let index = |n: &RedisServer| cluster.nodes().iter().position(|m| m.port() == n.port());
                let pair = index(primary).zip(index(replica)).ok_or("the slot's nodes are not the cluster's")?;
                Topology::Cluster { cluster, slot, pair }
            }
        })
    }

    fn url(&self) -> String {
        match self {
            Topology::Sentinel { sentinels, .. } => {
                let hosts: Vec<String> = sentinels.addrs().iter().map(|a| a.to_string()).collect();
                format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
            }
            Topology::Cluster { cluster, .. } => {
                let seeds: Vec<String> = cluster.nodes().iter().map(|n| format!("{}:{}", n.host(), n.port())).collect();
                format!("redis+cluster://{}", seeds.join(","))
            }
        }
    }

    /// The primary the switch replaces, and the replica that takes over.
    fn pair(&self) -> Result<(&RedisServer, &RedisServer), BoxError> {
        match self {
            Topology::Sentinel { data, .. } => Ok((data.primary(), data.replica(0))),
            Topology::Cluster { cluster, pair: (p, r), .. } => Ok((&cluster.nodes()[*p], &cluster.nodes()[*r])),
        }
    }

    /// Makes the switch; returns once it has been asked for (kill -9 and `SENTINEL FAILOVER`)
    /// or done (`CLUSTER FAILOVER`: the test kit waits until the cluster agrees).
    fn switch(&self, scenario: Scenario) -> Result<(), BoxError> {
        let (primary, replica) = self.pair()?;
        match (self, scenario) {
            (Topology::Sentinel { sentinels, .. }, Scenario::F2) => sentinels.failover()?,
            (Topology::Cluster { cluster, .. }, Scenario::F4) => cluster.failover(replica)?,
            _ => primary.kill()?,
        }
        Ok(())
    }

    /// Whether the topology names `replica` as the primary, as clients are told.
    fn announces(&self, replica: &RedisServer, askers: &mut [Asker]) -> bool {
        match self {
            Topology::Sentinel { .. } => {
                let mut ask = redis::cmd("SENTINEL");
                ask.arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME);
                let named = askers
                    .iter_mut()
                    .map(|a| a.query::<Option<(String, u16)>>(&ask))
                    .filter(|reply| matches!(reply, Some(Some((_, port))) if *port == replica.port()))
                    .count();
                named * 2 > askers.len()
            }
            Topology::Cluster { slot, .. } => askers.iter_mut().all(|a| {
                let map = a.query::<Value>(redis::cmd("CLUSTER").arg("SLOTS"));
                let owner = map.and_then(|m| crate::adapters::route::parse_slots(m).ok()).and_then(|ranges| {
                    ranges.into_iter().find(|(first, last, _)| (*first..=*last).contains(slot)).map(|r| r.2)
                });
                owner.is_some_and(|addr| addr.ends_with(&format!(":{}", replica.port())))
            }),
        }
    }

    /// The sentinels' log lines about failovers, to tell why a promotion did not come.
    fn failover_log(&self) -> String {
        let Topology::Sentinel { sentinels, .. } = self else { return String::new() };
        let lines: Vec<String> = sentinels
            .sentinels()
            .iter()
            .flat_map(|s| {
                let port = s.port();
                let tail = s.log_tail(200);
                let picked: Vec<String> = tail
                    .lines()
                    .filter(|l| l.contains("failover") || l.contains("abort") || l.contains("switch-master"))
                    .map(|l| format!("\n    sentinel {port}: {}", l.trim()))
                    .collect();
                picked
            })
            .collect();
        lines.concat()
    }

    /// Connections to what [`announces`](Self::announces) asks: the sentinels, or every node
    /// but the two switched.
    fn announcers(&self) -> Result<Vec<Asker>, BoxError> {
        let (primary, replica) = self.pair()?;
        let nodes: Vec<&RedisServer> = match self {
            Topology::Sentinel { sentinels, .. } => sentinels.sentinels().iter().collect(),
            Topology::Cluster { cluster, .. } => {
                cluster.nodes().iter().filter(|n| n.port() != primary.port() && n.port() != replica.port()).collect()
            }
        };
        Ok(nodes.into_iter().map(Asker::new).collect())
    }
}

/// The hash tag of the loop's keys: all in one slot on a cluster.
const KEY_TAG: &str = "bench:follow";

/// Plain queries to one server that give up quickly, on a connection made again after any
/// error: a promotion by the sentinels kills the promoted server's normal clients.
struct Asker {
    client: redis::Client,
    conn: Option<redis::Connection>,
}

impl Asker {
    fn new(node: &RedisServer) -> Self {
        Self { client: node.client(), conn: None }
    }

    /// The reply, or None on any error (the next query reconnects).
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Option<T> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(QUERY_TIMEOUT).ok()?;
            conn.set_read_timeout(Some(QUERY_TIMEOUT)).ok()?;
            conn.set_write_timeout(Some(QUERY_TIMEOUT)).ok()?;
            self.conn = Some(conn);
        }
        let reply = cmd.query(self.conn.as_mut()?);
        if reply.is_err() {
            self.conn = None;
        }
        reply.ok()
    }

    /// Whether the server says it is a primary (`ROLE`).
    fn is_primary(&mut self) -> bool {
        match self.query::<Value>(&redis::cmd("ROLE")) {
            Some(Value::Array(fields)) => matches!(fields.first(), Some(Value::BulkString(role)) if role == b"master"),
            _ => false,
        }
    }
}

/// Instants the run is measured by, shared by the main thread, the probe and the client loop.
#[derive(Debug, Default)]
struct Marks {
    switch: Option<Instant>,
    promoted: Option<Instant>,
    announced: Option<Instant>,
}

type Shared = Arc<Mutex<Marks>>;

fn read(marks: &Shared) -> std::sync::MutexGuard<'_, Marks> {
    marks.lock().unwrap_or_else(|e| e.into_inner())
}

/// F1-F4 for adapter `L` on executor `E`: the whole run happens in [`Rig::finish`].
pub struct FollowRig<L, E> {
    exec: E,
    scenario: Scenario,
    _locker: PhantomData<fn() -> L>,
}

impl<L, E> FollowRig<L, E> {
    pub fn new(exec: E, scenario: Scenario) -> Self {
        Self { exec, scenario, _locker: PhantomData }
    }
}

impl<L: Locker, E: Exec> Rig for FollowRig<L, E> {
    fn slice(&mut self, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Metrics, BoxError> {
        let topology = Arc::new(Topology::start(self.scenario)?);
        let exec = &self.exec;
        let locker = Arc::new(exec.block_on(L::connect(&topology.url()))?);
        let marks: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));

        let probe = {
            let (topology, marks, stop) = (topology.clone(), marks.clone(), stop.clone());
            std::thread::spawn(move || probe(&topology, &marks, &stop))
        };
        let (_, replica) = topology.pair()?;
        let check = Asker::new(replica);
        let task = exec.spawn(client_loop(locker, exec.clone(), check, marks.clone(), stop.clone()));
        std::thread::sleep(WARM);
        read(&marks).switch = Some(Instant::now());
        let switched = topology.switch(self.scenario);
        if switched.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let outcome = exec.block_on(task);
        // The probe goes on after an acquisition until the topology has announced the new
        // primary too (the client may be first); it stops at once only when the client failed.
        if outcome.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let probed = probe.join().map_err(|_| "the probe thread panicked")?;
        switched?;
        probed?;
        let run = outcome.map_err(|e| format!("{e}{}", topology.failover_log()))?;

        let m = read(&marks);
        let (Some(switch), Some(promoted), Some(announced)) = (m.switch, m.promoted, m.announced) else {
            return Err(format!("the probe saw no promotion or no announcement within {DEADLINE:?}").into());
        };
        let since = |a: Instant, b: Instant| ms(b.saturating_duration_since(a));
        // Negative when the client got there first: in a cluster the demoted primary's `MOVED`
        // may lead it to the new one before every other node has the news.
        let signed = |a: Instant, b: Instant| since(a, b) - since(b, a);
        Ok(Metrics::from([
            ("total_ms", since(switch, run.acquired)),
            ("promoted_ms", since(switch, promoted)),
            ("announced_ms", since(promoted, announced)),
            ("after_announce_ms", signed(announced, run.acquired)),
            ("client_ms", since(promoted, run.acquired)),
            ("before_switch", run.before as f64),
            ("errors", run.errors as f64),
        ]))
    }
}

/// Polls the replica's `ROLE` and the announcers until both marks are set, or `stop`.
fn probe(topology: &Topology, marks: &Shared, stop: &AtomicBool) -> Result<(), BoxError> {
    let (_, replica) = topology.pair()?;
    let mut role = Asker::new(replica);
    let mut announcers = topology.announcers()?;
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < DEADLINE {
        let switched = read(marks).switch.is_some();
        if switched {
            let (promoted, announced) = {
                let m = read(marks);
                (m.promoted.is_some(), m.announced.is_some())
            };
            if !promoted && role.is_primary() {
                read(marks).promoted = Some(Instant::now());
            }
            if promoted && !announced && topology.announces(replica, &mut announcers) {
                read(marks).announced = Some(Instant::now());
            }
            if promoted && announced {
                return Ok(());
            }
        }
        std::thread::sleep(PROBE_EVERY);
    }
    Ok(())
}

/// What the client loop saw.
struct Run {
    /// Its first acquisition on the new primary.
    acquired: Instant,
    /// Acquisitions before the switch.
    before: u64,
    /// Failed `lock()` calls.
    errors: u64,
}

async fn client_loop<L: Locker, E: Exec>(
    locker: Arc<L>,
    exec: E,
    mut check: Asker,
    marks: Shared,
    stop: Arc<AtomicBool>,
) -> Result<Run, BoxError> {
    let started = Instant::now();
    let (mut before, mut after, mut errors) = (0, 0, 0);
    for n in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            return Err("stopped: the switch failed".into());
        }
        if started.elapsed() > DEADLINE {
            let promoted = read(&marks).promoted.is_some();
            return Err(format!(
                "no acquisition on the new primary within {DEADLINE:?}: {after} after the switch elsewhere, \
                 {errors} failed, promotion seen: {promoted}"
            )
            .into());
        }
        let key = format!("{{{KEY_TAG}}}:{n}");
        let called = Instant::now();
        let guard = match locker.lock(&key, SPEC).await {
            Ok(g) => g,
            Err(_) => {
                errors += 1;
                exec.sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let acquired = Instant::now();
        let (switch, promoted) = {
            let m = read(&marks);
            (m.switch, m.promoted)
        };
        let counts = switch.is_some_and(|s| called >= s) && promoted.is_some_and(|p| acquired >= p);
        // On the new primary: the replica holds the key and says it is a primary.
        let found = counts && check.query::<i64>(redis::cmd("EXISTS").arg(&key)) == Some(1);
        let on_new = found && check.is_primary();
        // A release that fails (its primary killed) leaves a 10 s lease on a fresh key: harmless.
        let _ = locker.release(guard).await;
        if on_new {
            return Ok(Run { acquired, before, errors });
        }
        if switch.is_none() {
            before += 1;
        } else {
            after += 1;
        }
    }
    Err("the loop ended".into())
}
