//! A group of sentinels watching one primary.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::replicated::Replicated;
use crate::server::{RedisServer, ServerBuilder, info_field};

/// Name under which the sentinels monitor the primary.
pub const MASTER_NAME: &str = "mymaster";

/// How long [`Sentinels::start`] waits for the sentinels to find each other and the replicas.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Sentinels::failover`] retries while no replica is eligible yet.
const FAILOVER_RETRY: Duration = Duration::from_secs(5);
/// How long [`Sentinels::wait_for_failover`] gives a failover it asked for before it looks
/// for one given up.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Read timeout of queries to sentinels, so one paused sentinel is skipped quickly.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The sentinels' ping period (see [`Sentinels::start`]).
const PING_PERIOD_MS: u64 = 300;
/// The sentinels' info period (see [`Sentinels::start`]).
const INFO_PERIOD_MS: u64 = 500;

/// What the sentinels monitor: the primary's address and how many replicas
/// they must have discovered before they count as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentinelTarget {
    /// Address of the primary.
    pub primary: SocketAddr,
    /// Number of replicas every sentinel must know about before start returns.
    pub replicas: usize,
}

impl From<&Replicated> for SentinelTarget {
    fn from(replicated: &Replicated) -> Self {
        SentinelTarget { primary: replicated.primary().addr(), replicas: replicated.replicas().len() }
    }
}

impl From<&RedisServer> for SentinelTarget {
    fn from(primary: &RedisServer) -> Self {
        SentinelTarget { primary: primary.addr(), replicas: 0 }
    }
}

impl From<SocketAddr> for SentinelTarget {
    fn from(primary: SocketAddr) -> Self {
        SentinelTarget { primary, replicas: 0 }
    }
}

/// Sentinel processes monitoring one primary as [`MASTER_NAME`], stopped when dropped.
///
/// They run with test timings: quorum 2 (1 for a single sentinel),
/// `down-after-milliseconds 2000`, `failover-timeout 2000`, an info period of
/// 500 ms, a hello period of 1 s and a ping period of 300 ms, so failures are noticed
/// within about two seconds, and a TILT period of 2 s.
/// Each sentinel is a [`RedisServer`] in sentinel mode, so it can be paused,
/// killed or restarted like any server.
#[derive(Debug)]
pub struct Sentinels {
    sentinels: Vec<RedisServer>,
    /// The sentinel that took the last [`Sentinels::failover`]: the one that runs it.
    leader: Mutex<Option<usize>>,
}

impl Sentinels {
    /// Starts `count` sentinels monitoring `target` — a [`&Replicated`](Replicated),
    /// a [`&RedisServer`](RedisServer) or a primary's [`SocketAddr`] — and waits
    /// until every sentinel knows the primary, its replicas and the other sentinels.
    pub fn start(target: impl Into<SentinelTarget>, count: usize) -> Result<Sentinels> {
        Self::start_with(target, count, RedisServer::builder())
    }

    /// Like [`start`](Self::start), with every sentinel configured from `base`. With
    /// [`ServerBuilder::tls`] the sentinels serve TLS only and reach the primary, its
    /// replicas and each other over TLS (`--tls-replication yes`): the data nodes must then
    /// be TLS servers of the same CA.
    pub fn start_with(target: impl Into<SentinelTarget>, count: usize, base: ServerBuilder) -> Result<Sentinels> {
        let target = target.into();
        if count == 0 {
            return Err(TestkitError::InvalidArgument("at least one sentinel is needed".into()));
        }
        let quorum = count.min(2);
        let (ip, port) = (target.primary.ip(), target.primary.port());
        let config = format!(
            "sentinel monitor {MASTER_NAME} {ip} {port} {quorum}\n\
             sentinel down-after-milliseconds {MASTER_NAME} 2000\n\
             sentinel failover-timeout {MASTER_NAME} 2000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n"
        );
        let sentinels =
            (0..count).map(|_| base.clone().sentinel_config(config.clone()).start()).collect::<Result<Vec<_>>>()?;
        for sentinel in &sentinels {
            // Faster INFO polling and hello messages make discovery and
            // failover quick. The ping period must stay well below
            // down-after-milliseconds: a sentinel that switches to a new
            // primary starts its down-timer at once but sends the first PING
            // only one ping period later, so with the 1 s default a loaded
            // machine saw the new primary "down" a second after the switch and
            // failed over again. A stall of the whole machine (more than 2 s
            // between two of a sentinel's ticks) puts it in TILT mode, where it
            // does nothing: 2 s instead of 30 before it acts again.
            // Nor may the ping period be too short: once the primary is down, a replica is
            // eligible for promotion only if its last INFO reply is at most five ping periods
            // old, and the sentinels then send INFO to replicas once a second whatever the
            // info period. With 200 ms pings that was a coin flip: the election's winner found
            // "no good slave" (`-failover-abort-no-good-slave`) and the next attempt came only
            // twice the failover timeout (4 s) later, twice in one CI run (10 s to follow a
            // kill). 300 ms leaves 500 ms for the INFO reply.
            // Down-after is 2 s, not 1: with TLS on a loaded machine (4 cases at a time beside
            // other builds), a sentinel's first reply from a just-promoted primary once took
            // 1.6 s, the primary was "down", and a second failover undid the first.
            // The publish period is 1 s, not 200 ms: a sentinel that sees a replica report
            // itself primary turns it back into a replica after four publish periods unless
            // the new configuration reached it first, while the failover's leader learns of
            // the promotion only from its INFO to the replica, sent once a second during a
            // failover, and announces the switch after that. At 200 ms (0.8 s) a non-leader
            // turned the just-promoted primary back into a replica 30 ms before the leader's
            // configuration reached it (CI, TLS sentinels): the primary then reported itself a
            // replica, was "down", and a second failover undid the first. At 1 s the wait is
            // 4 s, against about 2 s for the leader's INFO and its announcement.
            // The info period is 500 ms, not 200: while a failover is under way the sentinels
            // send INFO to replicas only once a second, yet a failover asked for (the primary
            // is not down) takes a replica only if its last INFO reply is at most three info
            // periods old. At 200 ms (0.6 s) that held only right after the request: when a
            // stall put the leader in TILT before it chose (CI, all three sentinels stalled
            // 3.4 s), the INFO it had was older and it gave up with "no good slave". Three
            // periods of 500 ms (1.5 s) cover the once-a-second INFO, as five pings do when
            // the primary is down.
            let mut conn = sentinel.admin_connection()?;
            redis::cmd("SENTINEL")
                .arg("DEBUG")
                .arg("info-period")
                .arg(INFO_PERIOD_MS)
                .arg("publish-period")
                .arg(1000)
                .arg("ping-period")
                .arg(PING_PERIOD_MS)
                .arg("tilt-period")
                .arg(2000)
                .query::<()>(&mut conn)?;
        }
        let sentinels = Sentinels { sentinels, leader: Mutex::new(None) };
        sentinels.wait_ready(&target, count)?;
        Ok(sentinels)
    }

    fn wait_ready(&self, target: &SentinelTarget, count: usize) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut lagging = None;
            for sentinel in &self.sentinels {
                let state = master_state(sentinel).ok();
                let field = |name: &str| state.as_ref().and_then(|s| s.get(name)).and_then(|v| v.parse::<usize>().ok());
                let ready = field("num-slaves").is_some_and(|n| n >= target.replicas)
                    && field("num-other-sentinels").is_some_and(|n| n + 1 >= count);
                if !ready {
                    lagging = Some(sentinel);
                    break;
                }
            }
            let Some(lagging) = lagging else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::StartTimeout {
                    what: format!(
                        "{} (to see {} replicas and {} other sentinels)",
                        lagging.describe(),
                        target.replicas,
                        count - 1
                    ),
                    timeout: READY_TIMEOUT,
                    log_tail: lagging.log_tail(30),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The sentinel processes.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// Sentinel `i` (0-based).
    ///
    /// # Panics
    ///
    /// If `i` is not below the number of sentinels, like slice indexing.
    pub fn sentinel(&self, i: usize) -> &RedisServer {
        &self.sentinels[i]
    }

    /// The sentinels' addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(RedisServer::addr).collect()
    }

    /// The sentinels' URLs, `redis://127.0.0.1:PORT/`.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The primary's address as reported by the first sentinel that answers.
    pub fn master_addr(&self) -> Result<SocketAddr> {
        let mut last_err = None;
        for sentinel in &self.sentinels {
            match reported_master(sentinel) {
                Ok(addr) => return Ok(addr),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::NotRunning { what: "any sentinel".into() }))
    }

    /// Forces a failover (`SENTINEL FAILOVER mymaster`) through the first
    /// sentinel that answers; returns once it has started, not finished —
    /// use [`wait_for_failover`](Self::wait_for_failover) for that.
    ///
    /// While no replica is eligible yet (`NOGOODSLAVE`, e.g. right after a
    /// replica reconnected) it retries for a few seconds.
    pub fn failover(&self) -> Result<()> {
        let deadline = Instant::now() + FAILOVER_RETRY;
        loop {
            let mut last_err = None;
            for i in 0..self.sentinels.len() {
                // INPROG: this sentinel already leads one, which is the one to wait for.
                match self.ask_failover(i).or_else(|e| match e {
                    TestkitError::Redis(ref r) if r.code() == Some("INPROG") => Ok(()),
                    e => Err(e),
                }) {
                    Ok(()) => {
                        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = Some(i);
                        return Ok(());
                    }
                    Err(err) => last_err = Some(err),
                }
            }
            let last_err = last_err.unwrap_or_else(|| TestkitError::NotRunning { what: "any sentinel".into() });
            let retry = matches!(&last_err, TestkitError::Redis(e) if e.code() == Some("NOGOODSLAVE"));
            if !retry || Instant::now() >= deadline {
                return Err(last_err);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The sentinel that took the last [`failover`](Self::failover), which leads it.
    pub fn failover_leader(&self) -> Option<&RedisServer> {
        let leader = *self.leader.lock().unwrap_or_else(PoisonError::into_inner);
        leader.map(|i| &self.sentinels[i])
    }

    /// One `SENTINEL FAILOVER mymaster` to sentinel `i`.
    fn ask_failover(&self, i: usize) -> Result<()> {
        let mut conn = query_connection(&self.sentinels[i])?;
        redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME).query::<()>(&mut conn)?;
        Ok(())
    }

    /// Waits until the failover away from the primary on `old_port` is done:
    /// every sentinel that answers reports the same new primary and that
    /// server says it is a master. Returns the new primary's address.
    ///
    /// For a failover the sentinels start themselves (the primary was killed or paused);
    /// after one asked with [`failover`](Self::failover), use
    /// [`wait_for_failover`](Self::wait_for_failover).
    pub fn wait_for_new_master(&self, old_port: u16, timeout: Duration) -> Result<SocketAddr> {
        self.wait_new_master(old_port, timeout, false)
    }

    /// Like [`wait_for_new_master`](Self::wait_for_new_master), for a failover asked with
    /// [`failover`](Self::failover): if its leader gives it up, it is asked for again.
    ///
    /// The sentinels retry a failover of a primary they find down, but never one they were
    /// asked for: no replica fit to promote when the leader chooses, or a stall of the leader
    /// (TILT) while it waits for the promotion, ends it for good (`-failover-abort-...`). It
    /// is asked for again only of its leader, only once that leader answers, names the old
    /// primary and is not failing over (the others learn of a requested failover only when
    /// it is done, so asking one of them could start a second, competing one).
    pub fn wait_for_failover(&self, old_port: u16, timeout: Duration) -> Result<SocketAddr> {
        self.wait_new_master(old_port, timeout, true)
    }

    fn wait_new_master(&self, old_port: u16, timeout: Duration, ask_again: bool) -> Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        let mut asked = Instant::now();
        let leader = if ask_again { *self.leader.lock().unwrap_or_else(PoisonError::into_inner) } else { None };
        loop {
            let reports: Vec<SocketAddr> = self.sentinels.iter().filter_map(|s| reported_master(s).ok()).collect();
            if let Some(&first) = reports.first()
                && first.port() != old_port
                && reports.iter().all(|&addr| addr == first)
                && self.is_master(first)
            {
                return Ok(first);
            }
            if let Some(i) = leader
                && asked.elapsed() >= ASK_AGAIN_AFTER
                && gave_up(&self.sentinels[i], old_port)
            {
                // Refused (NOGOODSLAVE while no replica is fit) or unanswered: a later round asks
                // the same sentinel again.
                let _ = self.ask_failover(i);
                asked = Instant::now();
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: format!(
                        "sentinels to agree on a new master replacing port {old_port} \
                         (they report {reports:?})"
                    ),
                    timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Whether `leader` answers, still names the primary on `old_port`, and is not failing over
/// (no `failover_in_progress` among the primary's flags): the failover it led was given up.
fn gave_up(leader: &RedisServer, old_port: u16) -> bool {
    master_state(leader).is_ok_and(|state| {
        state.get("port").is_some_and(|port| port == &old_port.to_string())
            && state.get("flags").is_some_and(|flags| !flags.split(',').any(|f| f == "failover_in_progress"))
    })
}

/// A connection to `sentinel` whose queries give up quickly.
fn query_connection(sentinel: &RedisServer) -> Result<redis::Connection> {
    let conn = sentinel.client().get_connection_with_timeout(QUERY_TIMEOUT)?;
    conn.set_read_timeout(Some(QUERY_TIMEOUT))?;
    conn.set_write_timeout(Some(QUERY_TIMEOUT))?;
    Ok(conn)
}

/// `SENTINEL MASTER mymaster` as a field → value map.
fn master_state(sentinel: &RedisServer) -> Result<HashMap<String, String>> {
    let mut conn = query_connection(sentinel)?;
    let flat: Vec<String> = redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME).query(&mut conn)?;
    let mut map = HashMap::new();
    let mut items = flat.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        map.insert(key, value);
    }
    Ok(map)
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME mymaster` on one sentinel.
fn reported_master(sentinel: &RedisServer) -> Result<SocketAddr> {
    let mut conn = query_connection(sentinel)?;
    let reply: Option<(String, u16)> =
        redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME).query(&mut conn)?;
    let unexpected = |detail: String| TestkitError::UnexpectedReply { what: sentinel.describe(), detail };
    let (host, port) = reply.ok_or_else(|| unexpected(format!("{MASTER_NAME} is unknown")))?;
    let ip: IpAddr = host.parse().map_err(|_| unexpected(format!("master host {host:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

impl Sentinels {
    /// Whether the server at `addr` reports `role:master` (reached as the sentinels reach
    /// it: over TLS when they use it).
    fn is_master(&self, addr: SocketAddr) -> bool {
        self.sentinels.first().is_some_and(|s| is_master(s, addr))
    }
}

/// Whether the server at `addr` reports `role:master`, reached with `sentinel`'s TLS settings.
fn is_master(sentinel: &RedisServer, addr: SocketAddr) -> bool {
    let check = || -> Result<bool> {
        let client = sentinel.client_of(addr)?;
        let mut conn = client.get_connection_with_timeout(QUERY_TIMEOUT)?;
        conn.set_read_timeout(Some(QUERY_TIMEOUT))?;
        let info: String = redis::cmd("INFO").arg("replication").query(&mut conn)?;
        Ok(info_field(&info, "role") == Some("master"))
    };
    check().unwrap_or(false)
}
