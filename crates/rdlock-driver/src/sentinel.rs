//! Connecting through Redis Sentinel, and following its failovers.
//!
//! The redis crate resolves a sentinel-managed primary once per connection; a lock client
//! must notice when the primary changes, so this module owns the whole lookup: each of the
//! sentinels is asked for the primary (`SENTINEL GET-MASTER-ADDR-BY-NAME`), the majority of
//! the answers wins, and a new address is used only once it says it is a primary (`ROLE`).
//!
//! After connect, one helper thread per client (the same code for the async and the blocking
//! driver: its queries are short and bounded) watches the primary: it listens for
//! `+switch-master` on one sentinel at a time (the next one when that one fails), and looks
//! the primary up again periodically ([`ClientConfig::topology_refresh`]) and as soon as a
//! request meets a `READONLY` reply or a lost link. On a change it points the client's
//! connections at the new primary and tells the engine
//! ([`rdlock_core::Engine::handle_primary_changed`]): every held lease is verified there at
//! once. Sentinel trouble after connect is logged, and the client keeps the primary it knows.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::{IntoConnectionInfo, RedisConnectionInfo, Value};

use crate::cell::{Cell, Side};
use crate::config::ClientConfig;
use crate::error::Error;
use crate::tls::NodeTls;

/// The port a sentinel listens on when the URL names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// How often the watcher looks for a poke or a `+switch-master` message: the most a lookup
/// asked for by a failed request waits for its turn.
const TICK: Duration = Duration::from_millis(100);

/// After a `+switch-master` message, the primary is looked up every tick for this long, until
/// the switch is seen: the other sentinels learn of it a little later than the one that
/// announced it, and a majority is needed.
const HURRY: Duration = Duration::from_secs(5);

/// A user name and password for `AUTH`. The password never shows in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user (`None`: the default user).
    pub username: Option<String>,
    /// The password (`None`: no `AUTH`).
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where the sentinels are and which primary they watch: for
/// `Client::connect_sentinel`, or parsed from a `redis+sentinel://` URL by
/// [`SentinelConfig::from_url`] (which `Client::open` does).
///
/// ```
/// use rdlock_driver::SentinelConfig;
///
/// let config = SentinelConfig::from_url(
///     "redis+sentinel://app:secret@10.0.0.1:26379,10.0.0.2:26379/orders?db=2&sentinel_password=watch",
/// )
/// .unwrap();
/// assert_eq!(config.sentinels, [("10.0.0.1".to_owned(), 26379), ("10.0.0.2".to_owned(), 26379)]);
/// assert_eq!(config.master, "orders");
/// assert_eq!(config.db, 2);
/// assert_eq!(config.data_credentials.username.as_deref(), Some("app"));
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    /// The sentinels' hosts and ports, asked in this order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// Credentials for the primary (and its replicas).
    pub data_credentials: Credentials,
    /// Credentials for the sentinels.
    pub sentinel_credentials: Credentials,
    /// The database on the primary.
    pub db: i64,
    /// TLS to the sentinels and to the primary and its replicas, all with
    /// [`ClientConfig::tls`]' certificates (needs the adapter's `tls` feature).
    pub tls: bool,
    /// Longest wait for one sentinel's answer (connecting included), so that a frozen
    /// sentinel costs little before the next one is asked.
    pub query_timeout: Duration,
}

impl SentinelConfig {
    /// Sentinels at `sentinels` watching `master`, without credentials, database 0, no TLS.
    pub fn new(sentinels: impl IntoIterator<Item = (String, u16)>, master: impl Into<String>) -> Self {
        Self {
            sentinels: sentinels.into_iter().collect(),
            master: master.into(),
            data_credentials: Credentials::default(),
            sentinel_credentials: Credentials::default(),
            db: 0,
            tls: false,
            query_timeout: Duration::from_millis(500),
        }
    }

    /// Parses `redis+sentinel://[user:password@]host[:port][,host[:port]...]/master[?query]`
    /// (`rediss+sentinel://` for TLS). The user and password are the primary's; the query
    /// may set `db=N`, `sentinel_username=...` and `sentinel_password=...`. A host without a
    /// port means port 26379; IPv6 hosts go in brackets. Percent-encoding is decoded.
    ///
    /// # Errors
    ///
    /// [`SentinelError::BadUrl`] for another scheme, no host, no master name, a bad port or
    /// database, or an unknown query parameter.
    pub fn from_url(url: &str) -> Result<Self, SentinelError> {
        let bad = |why: &str| SentinelError::BadUrl(why.to_owned());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            (true, rest)
        } else {
            return Err(bad("the scheme must be redis+sentinel:// or rediss+sentinel://"));
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no master name (/name after the hosts)"))?;
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let master =
            decode(path.trim_end_matches('/')).ok_or_else(|| bad("bad percent-encoding in the master name"))?;
        if master.is_empty() {
            return Err(bad("no master name (/name after the hosts)"));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut config = Self::new(Vec::new(), master);
        config.tls = tls;
        if let Some(userinfo) = userinfo {
            let (user, pass) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
            let user = decode(user).ok_or_else(|| bad("bad percent-encoding in the user"))?;
            config.data_credentials.username = Some(user).filter(|u| !u.is_empty());
            config.data_credentials.password =
                pass.map(|p| decode(p).ok_or_else(|| bad("bad percent-encoding in the password"))).transpose()?;
        }
        for host in hosts.split(',') {
            config.sentinels.push(
                parse_host(host, DEFAULT_SENTINEL_PORT)
                    .ok_or_else(|| bad(&format!("bad sentinel address {host:?}")))?,
            );
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).ok_or_else(|| bad("bad percent-encoding in the query"))?;
            match name {
                "db" => config.db = value.parse().map_err(|_| bad("db must be a number"))?,
                "sentinel_username" => config.sentinel_credentials.username = Some(value),
                "sentinel_password" => config.sentinel_credentials.password = Some(value),
                other => return Err(bad(&format!("unknown query parameter {other:?}"))),
            }
        }
        Ok(config)
    }
}

/// The sentinels' settings, and how their servers are reached (in the clear, or over TLS
/// with the client's certificates, parsed once).
#[derive(Clone, Debug)]
pub(crate) struct Sentinels {
    pub(crate) config: SentinelConfig,
    tls: NodeTls,
}

impl Sentinels {
    /// The sentinels of `config`, reached with `settings`' TLS certificates when its URL
    /// said TLS; TLS settings for a plain URL are refused ([`crate::TlsError::NotTls`]).
    pub(crate) fn new(config: SentinelConfig, settings: &ClientConfig) -> Result<Self, Error> {
        let tls = NodeTls::new(config.tls, settings.tls.as_ref())?;
        Ok(Self { config, tls })
    }

    /// A client of one server, with these credentials and database.
    fn client(&self, host: &str, port: u16, credentials: &Credentials, db: i64) -> redis::RedisResult<redis::Client> {
        let addr = self.tls.addr(host, port);
        let mut settings = RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &credentials.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &credentials.password {
            settings = settings.set_password(password);
        }
        redis::Client::open(addr.into_connection_info()?.set_redis_settings(settings))
    }

    /// A client of the primary at `host:port`.
    pub(crate) fn data_client(&self, primary: &Primary) -> redis::RedisResult<redis::Client> {
        self.client(&primary.host, primary.port, &self.config.data_credentials, self.config.db)
    }

    /// A connection to `host:port` whose queries give up after the query timeout.
    fn query_connection(
        &self,
        host: &str,
        port: u16,
        credentials: &Credentials,
    ) -> redis::RedisResult<redis::Connection> {
        let timeout = self.config.query_timeout;
        let conn = self.client(host, port, credentials, 0)?.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }
}

/// `host`, `host:port` or `[v6]:port`; `default` when no port is named.
pub(crate) fn parse_host(s: &str, default: u16) -> Option<(String, u16)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = port.map_or(Some(default), |p| p.parse().ok())?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Percent-decoding; `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why the sentinels could not name a primary to use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SentinelError {
    /// The sentinel URL is malformed.
    #[error("bad sentinel URL: {0}")]
    BadUrl(String),
    /// No sentinel answered.
    #[error("no sentinel reachable (asked {asked:?}; last error: {last})")]
    NoSentinelReachable {
        /// The sentinels asked, `host:port`.
        asked: Vec<String>,
        /// The last sentinel's error.
        last: String,
    },
    /// The sentinels that answered do not monitor a primary of this name.
    #[error("the sentinels know no master named {name:?}")]
    UnknownMaster {
        /// The name asked for.
        name: String,
    },
    /// No answer was given by more than half of the sentinels that answered.
    #[error("the sentinels disagree on the primary of {name:?}: {answers:?}")]
    Disagreement {
        /// The name asked for.
        name: String,
        /// Each answering sentinel and the primary it named (`None`: unknown to it).
        answers: Vec<(String, Option<String>)>,
    },
    /// The server the sentinels named does not say it is a primary (a failover under way).
    #[error("{addr}, named by the sentinels, is not a primary: {detail}")]
    NotAPrimary {
        /// The server's `host:port`.
        addr: String,
        /// Its `ROLE`, or why it could not be asked.
        detail: String,
    },
}

/// A primary as the sentinels name it, and the replicas they list for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Primary {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The replicas the sentinels list, connected or not (`None`: not learnt).
    pub(crate) replicas: Option<u32>,
}

impl Primary {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn same_server(&self, other: &Primary) -> bool {
        self.host == other.host && self.port == other.port
    }
}

/// Asks every sentinel for the primary; the answer of more than half of those that answer
/// wins. A primary other than `known` must say it is one (`ROLE`) before it is returned.
/// When no sentinel answers and TLS refused one of them, the error is that refusal
/// ([`Error::Tls`]): a wrong CA is no outage to wait out.
pub(crate) fn resolve(sentinels: &Sentinels, known: Option<&Primary>) -> Result<Primary, Error> {
    let config = &sentinels.config;
    let mut answers: Vec<(String, Option<Primary>)> = Vec::new();
    let mut last = String::from("no sentinel configured");
    let mut refused = None;
    for (host, port) in &config.sentinels {
        let asked = || -> redis::RedisResult<Option<Primary>> {
            let mut conn = sentinels.query_connection(host, *port, &config.sentinel_credentials)?;
            let addr: Option<(String, u16)> =
                redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(&config.master).query(&mut conn)?;
            let Some((host, port)) = addr else { return Ok(None) };
            // Every replica listed counts, connected or not: any of them can be promoted.
            let replicas = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(&config.master)
                .query::<Vec<Value>>(&mut conn)
                .ok()
                .and_then(|r| u32::try_from(r.len()).ok());
            Ok(Some(Primary { host, port, replicas }))
        };
        match asked() {
            Ok(answer) => answers.push((format!("{host}:{port}"), answer)),
            Err(e) => {
                refused = refused.or_else(|| crate::tls::refusal(&e));
                last = e.to_string();
            }
        }
    }
    if answers.is_empty() {
        if let Some(t) = refused {
            return Err(Error::Tls(t));
        }
        let asked = config.sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        return Err(SentinelError::NoSentinelReachable { asked, last }.into());
    }
    let primary = elect(answers, &config.master)?;
    if known.is_none_or(|k| !k.same_server(&primary)) {
        confirm_primary(sentinels, &primary)?;
    }
    Ok(primary)
}

/// The primary named by more than half of the sentinels that answered (each answer: the
/// sentinel, and the primary it named or `None` for a name it does not know), with the most
/// replicas any of those sentinels lists.
fn elect(answers: Vec<(String, Option<Primary>)>, master: &str) -> Result<Primary, SentinelError> {
    let votes = |p: &Option<Primary>| {
        answers
            .iter()
            .filter(|(_, a)| match (a, p) {
                (Some(a), Some(p)) => a.same_server(p),
                (None, None) => true,
                _ => false,
            })
            .count()
    };
    let winner = answers.iter().map(|(_, a)| a).find(|a| votes(a) * 2 > answers.len()).cloned();
    let Some(winner) = winner else {
        let answers = answers.into_iter().map(|(s, a)| (s, a.map(|a| a.addr()))).collect();
        return Err(SentinelError::Disagreement { name: master.to_owned(), answers });
    };
    let Some(mut primary) = winner else {
        return Err(SentinelError::UnknownMaster { name: master.to_owned() });
    };
    // The most replicas any agreeing sentinel lists.
    primary.replicas = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().filter(|a| a.same_server(&primary)).and_then(|a| a.replicas))
        .max();
    Ok(primary)
}

/// Asks the server itself: only a primary may be given the locks. A TLS refusal (say the
/// primary's certificate is of another CA than the sentinels') is [`Error::Tls`].
fn confirm_primary(sentinels: &Sentinels, primary: &Primary) -> Result<(), Error> {
    let not = |e: redis::RedisError| match crate::tls::refusal(&e) {
        Some(t) => Error::Tls(t),
        None => SentinelError::NotAPrimary { addr: primary.addr(), detail: e.to_string() }.into(),
    };
    let mut conn =
        sentinels.query_connection(&primary.host, primary.port, &sentinels.config.data_credentials).map_err(not)?;
    let role: Vec<Value> = redis::cmd("ROLE").query(&mut conn).map_err(not)?;
    match role.first() {
        Some(Value::BulkString(r)) if r == b"master" => Ok(()),
        Some(Value::SimpleString(r)) if r == "master" => Ok(()),
        other => {
            Err(SentinelError::NotAPrimary { addr: primary.addr(), detail: format!("ROLE says {other:?}") }.into())
        }
    }
}

/// Runs [`resolve`] on a thread of its own, for an async caller that must not block.
#[cfg(feature = "async")]
pub(crate) async fn resolve_off_thread(sentinels: Sentinels) -> Result<Primary, Error> {
    off_thread("rdlock-sentinel", move || resolve(&sentinels, None)).await?
}

/// Runs `f` (short, bounded queries) on a thread of its own, for an async caller that must
/// not block.
#[cfg(feature = "async")]
pub(crate) async fn off_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    use std::future::poll_fn;
    use std::task::{Poll, Waker};

    type Slot<T> = Mutex<(Option<T>, Option<Waker>)>;
    let slot: Arc<Slot<T>> = Arc::new(Mutex::new((None, None)));
    let theirs = slot.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let found = f();
            let waker = {
                let mut s = theirs.lock().unwrap_or_else(|e| e.into_inner());
                s.0 = Some(found);
                s.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        })
        .map_err(|e| Error::Redis(e.into()))?;
    Ok(poll_fn(|cx| {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        match s.0.take() {
            Some(found) => Poll::Ready(found),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await)
}

/// What a client connected through sentinels keeps of them: the primary in use, and a flag
/// a failed request raises to have it looked up now.
#[derive(Debug)]
pub(crate) struct Watch {
    sentinels: Sentinels,
    refresh: Duration,
    current: Mutex<Primary>,
    poked: AtomicBool,
}

impl Watch {
    /// A request met a `READONLY` reply or a lost link: look the primary up now.
    pub(crate) fn poke(&self) {
        self.poked.store(true, Ordering::Release);
    }

    /// The primary in use, `host:port`.
    pub(crate) fn primary(&self) -> String {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).addr()
    }
}

/// Makes `cell` follow the primary the sentinels name, from `primary` (found at connect):
/// sets the replica floor and starts the watcher thread, which ends with the client.
pub(crate) fn follow<D>(
    cell: &Arc<Cell<D>>,
    sentinels: Sentinels,
    primary: Primary,
    settings: &ClientConfig,
) -> Result<(), Error>
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    {
        let mut state = cell.state();
        if let Some(n) = primary.replicas {
            state.engine.set_known_replicas(n);
        }
        // A failover may lose releases the old primary acknowledged: sent again at a switch.
        state.engine.remember_releases();
    }
    let watch = Arc::new(Watch {
        sentinels,
        refresh: settings.topology_refresh.max(TICK),
        current: Mutex::new(primary),
        poked: AtomicBool::new(false),
    });
    let _ = cell.watch.set(watch.clone());
    let weak = Arc::downgrade(cell);
    std::thread::Builder::new()
        .name("rdlock-sentinel".into())
        .spawn(move || watch_loop(&watch, &weak))
        .map(drop)
        .map_err(|e| Error::Redis(e.into()))
}

/// The watcher: one sentinel's `+switch-master` channel at a time, and a lookup when a
/// message, a poke or the periodic refresh asks for one.
fn watch_loop<D>(watch: &Watch, cell: &Weak<Cell<D>>)
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    let mut next = 0;
    let mut due = Instant::now() + watch.refresh;
    let mut hurry_until = None;
    let mut failing = false;
    loop {
        let config = &watch.sentinels.config;
        let n = config.sentinels.len().max(1);
        let (host, port) = config.sentinels.get(next % n).cloned().unwrap_or_default();
        next += 1;
        let conn = watch.sentinels.query_connection(&host, port, &config.sentinel_credentials);
        let mut conn = match conn {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(sentinel = %format!("{host}:{port}"), error = %e, "sentinel unreachable");
                None
            }
        };
        let mut pubsub = conn.as_mut().map(redis::Connection::as_pubsub);
        let listening = pubsub
            .as_mut()
            .is_some_and(|p| p.subscribe("+switch-master").is_ok() && p.set_read_timeout(Some(TICK)).is_ok());
        loop {
            let Some(cell) = cell.upgrade().filter(|c| !c.is_closed()) else {
                // Dropping the view would unsubscribe: pointless on a connection being closed.
                if let Some(p) = pubsub {
                    std::mem::forget(p);
                }
                return;
            };
            let mut switched = false;
            if let (true, Some(p)) = (listening, pubsub.as_mut()) {
                match p.get_message() {
                    Ok(msg) => {
                        // `<name> <old-ip> <old-port> <new-ip> <new-port>`
                        let payload: String = msg.get_payload().unwrap_or_default();
                        switched = payload.split(' ').next() == Some(config.master.as_str());
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => {
                        tracing::debug!(sentinel = %format!("{host}:{port}"), error = %e, "sentinel link lost");
                        break;
                    }
                }
            } else {
                std::thread::sleep(TICK);
            }
            let poked = watch.poked.swap(false, Ordering::AcqRel);
            let now = Instant::now();
            if switched {
                hurry_until = Some(now + HURRY);
            }
            let hurrying = hurry_until.is_some_and(|t| now < t);
            if hurrying || poked || now >= due {
                due = now + watch.refresh;
                match look_up(watch, &cell) {
                    Ok(changed) => {
                        if failing {
                            tracing::info!(primary = %watch.primary(), "the sentinels answer again");
                        }
                        failing = false;
                        if changed {
                            hurry_until = None;
                        }
                    }
                    // Sentinels briefly disagree while a switch spreads: not worth a warning.
                    Err(e) if hurrying => tracing::debug!(error = %e, "sentinel lookup during a switch"),
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, primary = %watch.primary(), "sentinel lookup failed; keeping the primary in use");
                        }
                        failing = true;
                    }
                }
            }
            if !listening {
                break;
            }
        }
        if let Some(p) = pubsub {
            std::mem::forget(p);
        }
    }
}

/// One lookup: a confirmed new primary is switched to (`Ok(true)`); otherwise the replica
/// floor is kept current. On trouble the primary in use is kept.
fn look_up<D>(watch: &Watch, cell: &Arc<Cell<D>>) -> Result<bool, Error>
where
    D: Side + Send + Sync + 'static,
    D::Waiter: Send,
{
    let known = watch.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let found = resolve(&watch.sentinels, Some(&known))?;
    if found.same_server(&known) {
        if found.replicas.is_some() && found.replicas != known.replicas {
            watch.current.lock().unwrap_or_else(|e| e.into_inner()).replicas = found.replicas;
            if let Some(n) = found.replicas {
                cell.state().engine.set_known_replicas(n);
            }
        }
        return Ok(false);
    }
    let client = watch
        .sentinels
        .data_client(&found)
        .map_err(|e| SentinelError::NotAPrimary { addr: found.addr(), detail: e.to_string() })?;
    tracing::info!(from = %known.addr(), to = %found.addr(), "the primary changed: following it");
    *watch.current.lock().unwrap_or_else(|e| e.into_inner()) = found.clone();
    let requests = cell.primary_changed(client, found.replicas);
    D::send_background(cell, requests);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = SentinelConfig::from_url(
            "redis+sentinel://h1,h2:1234,[::1]:5/m%20x?sentinel_username=s&sentinel_password=p%40",
        )
        .expect("parses");
        assert_eq!(
            c.sentinels,
            [("h1".to_owned(), DEFAULT_SENTINEL_PORT), ("h2".to_owned(), 1234), ("::1".to_owned(), 5)]
        );
        assert_eq!(c.master, "m x");
        assert_eq!(c.sentinel_credentials.username.as_deref(), Some("s"));
        assert_eq!(c.sentinel_credentials.password.as_deref(), Some("p@"));
        assert_eq!(c.data_credentials, Credentials::default());
        assert!(!c.tls);
        let c = SentinelConfig::from_url("rediss+sentinel://:pw@h/m/").expect("parses");
        assert!(c.tls);
        assert_eq!(c.data_credentials.username, None);
        assert_eq!(c.data_credentials.password.as_deref(), Some("pw"));
        assert!(!format!("{c:?}").contains("pw\""));
    }

    fn named(sentinel: &str, port: Option<u16>, replicas: u32) -> (String, Option<Primary>) {
        let primary = port.map(|port| Primary { host: "10.0.0.9".into(), port, replicas: Some(replicas) });
        (sentinel.to_owned(), primary)
    }

    #[test]
    fn the_majority_of_the_answers_names_the_primary() {
        let two_to_one = vec![named("a", Some(1), 2), named("b", Some(2), 2), named("c", Some(1), 3)];
        let p = elect(two_to_one, "m").expect("a majority");
        assert_eq!((p.port, p.replicas), (1, Some(3)));
        // One answer of one is a majority: the others were unreachable.
        assert_eq!(elect(vec![named("a", Some(7), 0)], "m").expect("alone").port, 7);
        let split = vec![named("a", Some(1), 2), named("b", Some(2), 2)];
        assert!(matches!(elect(split, "m"), Err(SentinelError::Disagreement { answers, .. }) if answers.len() == 2));
        let unknown = vec![named("a", None, 0), named("b", None, 0), named("c", Some(1), 2)];
        assert!(matches!(elect(unknown, "m"), Err(SentinelError::UnknownMaster { name }) if name == "m"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "redis://h:1/m",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1,/m",
            "redis+sentinel://h:1/m?db=x",
            "redis+sentinel://h:1/m?color=red",
            "redis+sentinel://h:1/m%zz",
        ] {
            assert!(matches!(SentinelConfig::from_url(url), Err(SentinelError::BadUrl(_))), "{url}");
        }
    }
}
