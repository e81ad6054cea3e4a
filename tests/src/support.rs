//! Server-side helpers shared by the cases: servers, admin connections, and the checks that
//! look at what the library left in Redis. All synchronous: they run on the thread that drives
//! the case, never inside the adapter's runtime workers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdlock_core::LockKeys;
use rdlock_testkit::RedisServer;

/// Starts a standalone server for one case.
pub fn server() -> RedisServer {
    RedisServer::start().expect("start redis-server")
}

/// An admin connection to `server`.
pub fn admin(server: &RedisServer) -> redis::Connection {
    let conn = server.connection().expect("connect to redis-server");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    conn
}

/// The names of `key`'s auxiliary keys and channel.
pub fn keys(key: &str) -> LockKeys {
    LockKeys::new(key).expect("a valid key")
}

/// `GET key`.
pub fn get(conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).expect("GET")
}

/// `EXISTS key`.
pub fn exists(conn: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(conn).expect("EXISTS") == 1
}

/// `LLEN key`.
pub fn llen(conn: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("LLEN").arg(key).query(conn).expect("LLEN")
}

/// `PUBSUB NUMSUB channel`: how many connections are subscribed to it.
pub fn numsub(conn: &mut redis::Connection, channel: &str) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query(conn).expect("PUBSUB NUMSUB");
    n
}

/// How many connections listen for hand-offs on `key`: subscribers of every waiter's inbox
/// (`PUBSUB CHANNELS`, then `NUMSUB` of each).
pub fn inbox_subscribers(conn: &mut redis::Connection, key: &str) -> u64 {
    let pattern = format!("{}#rdl:i*", glob_escape(key));
    let channels: Vec<String> =
        redis::cmd("PUBSUB").arg("CHANNELS").arg(&pattern).query(conn).expect("PUBSUB CHANNELS");
    channels.iter().map(|c| numsub(conn, c)).sum()
}

/// `s` as a glob pattern that matches only itself.
fn glob_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// Script calls the server has run (`EVALSHA` and `EVAL`), from `INFO commandstats`.
pub fn script_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO commandstats");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// What the server saw, for a failure's message: its clients, its command counts and its
/// keys with their TTLs.
pub fn server_story(server: &RedisServer) -> String {
    let mut conn = admin(server);
    let mut ask = |args: &[&str]| -> String {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut conn) {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        }
    };
    let keys = ask(&["KEYS", "*"]);
    let pttls = ask(&[
        "EVAL",
        "local o = {} for _, k in ipairs(redis.call('KEYS', '*')) do \
        o[#o + 1] = k .. ' ' .. redis.call('TYPE', k).ok .. ' ' .. redis.call('PTTL', k) end return o",
        "0",
    ]);
    format!(
        "server {}:\nkeys {keys}\nttls {pttls}\nclients {}\ncommandstats {}\nlog {}",
        server.url(),
        ask(&["CLIENT", "LIST"]),
        ask(&["INFO", "commandstats"]),
        server.log_tail(20),
    )
}

/// A server's clock beside ours: how far its `TIME` (which its key expiry follows) moved
/// while our monotonic clock moved, for the message of a bound on a TTL that fails.
pub struct ServerClock {
    conn: redis::Connection,
    ours: Instant,
    theirs: Duration,
}

impl ServerClock {
    /// Reads the server's clock once now.
    pub fn start(server: &RedisServer) -> Self {
        let mut conn = admin(server);
        let theirs = server_time(&mut conn);
        Self { conn, ours: Instant::now(), theirs }
    }

    /// How much further the server's clock moved than ours since [`ServerClock::start`]: a
    /// wall clock stepped forward (a time sync on a virtual machine) expires keys that much
    /// early, which no lock can prevent (`docs/safety.md`, *Clock drift*). A lower bound on a
    /// TTL holds on the server's clock, so it allows for this; zero when the clocks agree.
    pub fn ahead(&mut self) -> Duration {
        let ours = self.ours.elapsed();
        server_time(&mut self.conn).saturating_sub(self.theirs).saturating_sub(ours)
    }

    /// How far each clock moved since [`ServerClock::start`], as text.
    pub fn moved(&mut self) -> String {
        let ours = self.ours.elapsed();
        let theirs = server_time(&mut self.conn).saturating_sub(self.theirs);
        format!("the server's clock moved {:.1} ms while ours moved {:.1} ms", ms(theirs), ms(ours))
    }
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClock").field("ours", &self.ours).field("theirs", &self.theirs).finish_non_exhaustive()
    }
}

fn server_time(conn: &mut redis::Connection) -> Duration {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn).expect("TIME");
    Duration::from_secs(s) + Duration::from_micros(us)
}

/// Every command the server runs, as `MONITOR` reports it, kept while `RDLOCK_TEST_MONITOR`
/// is set (for tracing a case that failed; it slows the server).
#[derive(Debug, Default)]
pub struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    /// Starts watching `server` if `RDLOCK_TEST_MONITOR` is set.
    pub fn start(server: &RedisServer) -> Self {
        let monitor = Self::default();
        if std::env::var_os("RDLOCK_TEST_MONITOR").is_none() {
            return monitor;
        }
        let mut conn = server.connection().expect("connect to redis-server");
        conn.send_packed_command(&redis::cmd("MONITOR").get_packed_command()).expect("MONITOR");
        let lines = monitor.lines.clone();
        std::thread::spawn(move || {
            while let Ok(v) = conn.recv_response() {
                let line = match v {
                    redis::Value::SimpleString(s) => s,
                    other => format!("{other:?}"),
                };
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        // Wait for MONITOR's own reply, so that nothing after this is missed.
        let start = Instant::now();
        while monitor.lines.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        monitor
    }

    /// What was seen so far, a line per command.
    pub fn seen(&self) -> String {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }
}

/// `DEL key`.
pub fn del(conn: &mut redis::Connection, key: &str) {
    redis::cmd("DEL").arg(key).query::<i64>(conn).expect("DEL");
}

/// The `sub=` (subscribed channels) field of every pub/sub connection, one per connection.
pub fn pubsub_connections(server: &RedisServer) -> Vec<u64> {
    pubsub_connections_on(&mut admin(server))
}

/// The same, asked on `conn` (a new connection's set-up would wait out a `CLIENT PAUSE`, and
/// could time out before it ends).
pub fn pubsub_connections_on(conn: &mut redis::Connection) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query(conn).expect("CLIENT LIST");
    subscriptions_in(&list)
}

/// The `sub=` fields of a `CLIENT LIST` answer.
pub fn subscriptions_in(list: &str) -> Vec<u64> {
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(' ').find_map(|f| f.strip_prefix("sub=")).and_then(|n| n.parse().ok()).expect("a sub= field"))
        .collect()
}

/// Polls `check` every 10 ms until it holds; panics after `limit`. Returns the time it took.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What [`assert_clean`] found wrong with one key.
fn offence(conn: &mut redis::Connection, key: &str, allowed: &[&str]) -> Option<String> {
    if allowed.contains(&key) {
        return None;
    }
    if !LockKeys::is_auxiliary(key) {
        return Some(format!("{key:?} (a lock key, or a key nobody expected)"));
    }
    let pttl: i64 = redis::cmd("PTTL").arg(key).query(conn).expect("PTTL");
    match pttl {
        // Expired or deleted since the scan.
        -2 => None,
        -1 => Some(format!("{key:?} has no TTL")),
        // The fence counter lives a day; nothing of rdlock's may outlive that.
        ms if ms > 24 * 3600 * 1000 => Some(format!("{key:?} lives {ms} ms")),
        _ => None,
    }
}

/// Every key on `server` that should not be there: any key other than `allowed` that is not
/// one of rdlock's auxiliary keys (so every lock key: all locks must have been released),
/// and any auxiliary key without a TTL.
pub fn leftovers(server: &RedisServer, allowed: &[&str]) -> Vec<String> {
    let mut conn = admin(server);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    let mut bad: Vec<String> = keys.iter().filter_map(|k| offence(&mut conn, k, allowed)).collect();
    bad.sort();
    bad
}

/// Asserts that nothing is left behind (see [`leftovers`]), giving background releases (of
/// dropped guards) up to 3 s to land.
pub fn assert_clean(server: &RedisServer, allowed: &[&str]) {
    let start = Instant::now();
    loop {
        let bad = leftovers(server, allowed);
        if bad.is_empty() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "left behind on {}: {bad:?}", server.url());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lock options: `ttl`, auto-renewal on or off, the default poll cap.
pub fn options(ttl: Duration, auto_renew: bool) -> rdlock_core::LockOptions {
    rdlock_core::LockOptions { ttl, auto_renew, ..rdlock_core::LockOptions::default() }
}

/// Milliseconds, for messages.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
