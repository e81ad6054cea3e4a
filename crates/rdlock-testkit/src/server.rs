//! One `redis-server` process (a primary, a replica or a sentinel) owned by a handle.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::binary;
use crate::error::{Result, TestkitError};
use crate::ports::free_port;
use crate::process::{file_len, kill_and_reap, last_lines, read_from, send_signal, spawn_tied, tail_file};
use crate::tls::{ClientAuth, TlsServer};

/// The address every test process binds to.
pub const HOST: &str = "127.0.0.1";

const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried when the picked one turns out to be taken.
const PORT_ATTEMPTS: usize = 8;
/// Tries to get the same port back on restart, a short pause apart.
const RESTART_PORT_ATTEMPTS: usize = 20;
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Timeout of the test-kit's own commands (SAVE, CLIENT KILL, ...), so a
/// paused server turns into an error instead of a hung test.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
const PANIC_TAIL_LINES: usize = 30;

const LOG_FILE: &str = "redis.log";
/// Output written before the log file is opened (e.g. configuration errors).
const STDIO_FILE: &str = "stdio.log";
const RDB_FILE: &str = "dump.rdb";
const SENTINEL_CONF: &str = "sentinel.conf";
/// A TLS server's certificate, key, and the CA it trusts for clients and replicas.
const TLS_FILES: [&str; 3] = ["tls-cert.pem", "tls-key.pem", "tls-ca.pem"];

/// Configures and starts a [`RedisServer`]; get one from [`RedisServer::builder`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    args: Vec<OsString>,
    enable_debug: bool,
    replica_of: Option<(String, u16)>,
    binary: Option<PathBuf>,
    start_timeout: Duration,
    sentinel_config: Option<String>,
    tls: Option<TlsServer>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            enable_debug: false,
            replica_of: None,
            binary: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            sentinel_config: None,
            tls: None,
        }
    }
}

impl ServerBuilder {
    /// Appends one raw command-line argument, e.g. `.arg("--maxmemory").arg("10mb")`.
    ///
    /// Extra arguments come after the test-kit's own, so they override them.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several raw command-line arguments, e.g. `.args(["--maxclients", "64"])`.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Allows the `DEBUG` command from loopback clients (`--enable-debug-command local`),
    /// e.g. for `DEBUG SLEEP` or `DEBUG SET-ACTIVE-EXPIRE`.
    #[must_use]
    pub fn enable_debug(mut self, enable: bool) -> Self {
        self.enable_debug = enable;
        self
    }

    /// Starts the server as a replica of `primary`.
    #[must_use]
    pub fn replica_of(self, primary: &RedisServer) -> Self {
        self.replica_of_addr(HOST, primary.port())
    }

    /// Starts the server as a replica of the server at `host:port`.
    #[must_use]
    pub fn replica_of_addr(mut self, host: impl Into<String>, port: u16) -> Self {
        self.replica_of = Some((host.into(), port));
        self
    }

    /// Uses this executable instead of looking one up through
    /// `$RDLOCK_REDIS_SERVER` (or `$RDLOCK_REDIS_SENTINEL`) and `PATH`.
    #[must_use]
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// How long to wait for the server to answer `PING` (10 s by default).
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Serves TLS only: the server's port is its TLS port (`--port 0`), its replication
    /// goes over TLS, and the test-kit's own connections use TLS too.
    #[must_use]
    pub fn tls(mut self, tls: TlsServer) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether the server will serve TLS.
    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Runs the process as a sentinel with this initial configuration file.
    pub(crate) fn sentinel_config(mut self, config: String) -> Self {
        self.sentinel_config = Some(config);
        self
    }

    /// Starts the server on a free loopback port and waits until it answers `PING`.
    ///
    /// If another process takes the port first, a fresh port is tried.
    pub fn start(self) -> Result<RedisServer> {
        let sentinel = self.sentinel_config.is_some();
        let binary = match (&self.binary, sentinel) {
            (Some(path), false) => binary::explicit(path, "redis-server", binary::SERVER_ENV)?,
            (Some(path), true) => binary::explicit(path, "redis-sentinel", binary::SENTINEL_ENV)?,
            (None, false) => binary::server()?,
            (None, true) => binary::sentinel()?,
        };
        let dir = scratch_dir()?;
        let mode = match self.sentinel_config {
            Some(config) => {
                // Sentinel rewrites this file as it learns about the topology.
                let path = dir.path().join(SENTINEL_CONF);
                std::fs::write(&path, config)?;
                Mode::Sentinel { config: path }
            }
            None => Mode::Server,
        };
        if let Some(tls) = &self.tls {
            let pems = [&tls.server.cert_pem, &tls.server.key_pem, &tls.ca_pem];
            for (file, pem) in TLS_FILES.iter().zip(pems) {
                std::fs::write(dir.path().join(file), pem)?;
            }
        }
        let mut args = Vec::new();
        if self.enable_debug {
            args.extend(["--enable-debug-command", "local"].map(OsString::from));
        }
        if let Some((host, port)) = self.replica_of {
            args.extend([OsString::from("--replicaof"), host.into(), port.to_string().into()]);
        }
        args.extend(self.args);
        let launch = Launch { binary, mode, args, start_timeout: self.start_timeout, tls: self.tls };

        let mut last_port = 0;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            last_port = port;
            match launch.spawn_ready(port, dir.path()) {
                Ok(child) => return RedisServer::new(port, launch, child, dir),
                Err(Spawn::PortInUse) => continue,
                Err(Spawn::Failed(err)) => return Err(err),
            }
        }
        Err(TestkitError::Exited {
            what: launch.describe(last_port),
            status: format!("could not bind a free port in {PORT_ATTEMPTS} attempts"),
            log_tail: tail_file(&dir.path().join(LOG_FILE), PANIC_TAIL_LINES),
        })
    }
}

/// A server's own directory: in memory (`/dev/shm`) where the machine has one with room to
/// spare and `TMPDIR` does not say otherwise, else in the temporary directory.
///
/// Servers `fsync` in these tests: a sentinel its configuration at each new epoch and at a
/// failover's steps, cluster nodes theirs on every change, replicas their first copy of the
/// data, the durable cases every write. On a disk busy with other writes one `fsync` can stall
/// a server for seconds, long enough to put a sentinel in TILT (in CI all three of a case
/// stalled 3.4 s together in the middle of a failover). In memory it returns at once, and the
/// servers behave the same otherwise.
fn scratch_dir() -> std::io::Result<TempDir> {
    /// What `/dev/shm` must have free (a container's is often 64 MiB).
    const SHM_ROOM: u64 = 1 << 30;
    let mut builder = tempfile::Builder::new();
    builder.prefix("rdlock-testkit-");
    let shm = Path::new("/dev/shm");
    let roomy = nix::sys::statvfs::statvfs(shm)
        .is_ok_and(|fs| fs.blocks_available().saturating_mul(fs.fragment_size()) >= SHM_ROOM);
    if std::env::var_os("TMPDIR").is_none() && roomy {
        return builder.tempdir_in(shm).or_else(|_| builder.tempdir());
    }
    builder.tempdir()
}

/// A running `redis-server` on a free loopback port, stopped when dropped.
///
/// Each server has its own temporary directory holding its log (and its RDB
/// file, see [`RedisServer::restart`]); it is removed on drop. When the handle
/// is dropped while the thread panics — a failing test — the last lines of the
/// log are printed to stderr.
///
/// Every method takes `&self`, so a server can be shared between threads and
/// faults can be injected through the references [`crate::Replicated`] hands out.
/// If the test process is killed outright (or panics with `panic = "abort"`),
/// destructors do not run and the server outlives it.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    launch: Launch,
    client: redis::Client,
    state: Mutex<State>,
    dir: TempDir,
}

#[derive(Debug)]
struct State {
    /// `None` once killed.
    child: Option<Child>,
    pid: u32,
    paused: bool,
}

impl RedisServer {
    /// Starts a server with the default settings; see [`ServerBuilder::start`].
    pub fn start() -> Result<RedisServer> {
        Self::builder().start()
    }

    /// A builder for a server with extra configuration, as a replica, etc.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    fn new(port: u16, launch: Launch, child: Child, dir: TempDir) -> Result<Self> {
        let client = launch.client(port)?;
        Ok(Self {
            port,
            launch,
            client,
            state: Mutex::new(State { pid: child.id(), child: Some(child), paused: false }),
            dir,
        })
    }

    /// The TCP port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host the server listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's URL, `redis://127.0.0.1:PORT/` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        self.launch.url(self.port)
    }

    /// Process id of the current (or, once killed, the last) server process.
    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// A client for this server (for a TLS server: trusting its CA, showing the
    /// test-kit's client certificate).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// A client of another server on this host, at `addr`, with this server's TLS settings
    /// (none, or its CA and the test-kit's client certificate).
    pub(crate) fn client_of(&self, addr: SocketAddr) -> redis::RedisResult<redis::Client> {
        self.launch.client(addr.port())
    }

    /// A new connection to this server.
    ///
    /// Connecting (including the client's handshake) times out after 5 s; the
    /// returned connection has no read or write timeout.
    pub fn connection(&self) -> Result<redis::Connection> {
        Ok(self.client.get_connection_with_timeout(Duration::from_secs(5))?)
    }

    /// The temporary directory the server runs in (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// The last `lines` lines of the server's log, followed by anything the
    /// process wrote to stdout or stderr (such as configuration errors).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut tail = tail_file(&self.log_path(), lines);
        let stdio = tail_file(&self.dir.path().join(STDIO_FILE), lines);
        if !stdio.trim().is_empty() {
            tail.push_str("\n--- stdout/stderr ---\n");
            tail.push_str(&stdio);
        }
        tail
    }

    /// Whether the server process is alive (a paused process counts as alive).
    pub fn is_running(&self) -> bool {
        let mut state = self.lock();
        let exited = match state.child.as_mut() {
            None => return false,
            // If the status cannot be read, assume it is still there.
            Some(child) => child.try_wait().map(|s| s.is_some()).unwrap_or(false),
        };
        if exited {
            state.child = None;
        }
        !exited
    }

    /// Whether the process is frozen by [`pause`](Self::pause).
    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Freezes the process with SIGSTOP: connections stay open, nothing is answered. Returns
    /// once the kernel reports it stopped: the signal is delivered asynchronously, and a
    /// server still running for a moment after `kill` could answer what a test sends next.
    pub fn pause(&self) -> Result<()> {
        let mut state = self.running_state()?;
        send_signal(state.pid, Signal::SIGSTOP)?;
        state.paused = true;
        crate::process::wait_stopped(state.pid)
    }

    /// Lets a paused process go on with SIGCONT.
    pub fn resume(&self) -> Result<()> {
        let mut state = self.running_state()?;
        send_signal(state.pid, Signal::SIGCONT)?;
        state.paused = false;
        Ok(())
    }

    /// Kills the process with SIGKILL (no shutdown, no save) and reaps it.
    ///
    /// Doing so on a server that is already gone is not an error.
    pub fn kill(&self) -> Result<()> {
        let mut state = self.lock();
        if let Some(mut child) = state.child.take() {
            kill_and_reap(&mut child)?;
        }
        state.paused = false;
        Ok(())
    }

    /// Writes a snapshot of the dataset (`SAVE`) into the server's directory,
    /// for a later [`restart(true)`](Self::restart) to load.
    pub fn save(&self) -> Result<()> {
        let mut conn = self.admin_connection()?;
        redis::cmd("SAVE").query::<()>(&mut conn)?;
        Ok(())
    }

    /// Stops the server (if it runs) and starts a new process on the same port
    /// with the same configuration.
    ///
    /// The server runs without persistence, so data survives only through a snapshot:
    /// - `keep_data = true`: a running server is first told to [`save`](Self::save);
    ///   the new process loads that snapshot. After [`kill`](Self::kill), the new
    ///   process loads the last snapshot taken (if any), like a real crash
    ///   without persistence would lose writes made after it.
    /// - `keep_data = false`: any snapshot is deleted; the server starts empty.
    ///
    /// For a sentinel `keep_data` does not matter: its configuration file,
    /// which holds what it learned, is always kept.
    pub fn restart(&self, keep_data: bool) -> Result<()> {
        let mut state = self.lock();
        if let Some(mut child) = state.child.take() {
            let alive = matches!(child.try_wait(), Ok(None));
            if alive && state.paused {
                // If this fails the process is gone, which the kill below handles.
                let _ = send_signal(state.pid, Signal::SIGCONT);
            }
            state.paused = false;
            if alive
                && keep_data
                && matches!(self.launch.mode, Mode::Server)
                && let Err(err) = self.save()
            {
                state.child = Some(child);
                return Err(err);
            }
            kill_and_reap(&mut child)?;
        }
        if !keep_data {
            match std::fs::remove_file(self.dir.path().join(RDB_FILE)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
        // The port was just ours, so another process can only hold it briefly
        // (e.g. a client's ephemeral port); keep trying the same one.
        let mut attempt = 1;
        loop {
            match self.launch.spawn_ready(self.port, self.dir.path()) {
                Ok(child) => {
                    state.pid = child.id();
                    state.child = Some(child);
                    return Ok(());
                }
                Err(Spawn::PortInUse) if attempt < RESTART_PORT_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(Spawn::PortInUse) => {
                    return Err(TestkitError::Exited {
                        what: self.describe(),
                        status: format!("port {} stayed in use by another process", self.port),
                        log_tail: self.log_tail(PANIC_TAIL_LINES),
                    });
                }
                Err(Spawn::Failed(err)) => return Err(err),
            }
        }
    }

    /// Runs `CLIENT KILL TYPE kind` (`normal`, `replica`, `pubsub` or `master`)
    /// and returns how many connections were closed; the test-kit's own
    /// connection is skipped.
    pub fn client_kill_type(&self, kind: &str) -> Result<u64> {
        let mut conn = self.admin_connection()?;
        Ok(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg(kind).query(&mut conn)?)
    }

    /// A connection with timeouts, for the test-kit's own commands.
    pub(crate) fn admin_connection(&self) -> Result<redis::Connection> {
        admin_connection(&self.client)
    }

    pub(crate) fn describe(&self) -> String {
        self.launch.describe(self.port)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning only means another thread panicked mid-call; the state
        // itself (a child handle and flags) is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn running_state(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.lock();
        if state.child.is_some() { Ok(state) } else { Err(TestkitError::NotRunning { what: self.describe() }) }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mut child) = state.child.take() {
            // Nothing useful can be done about a failure in a destructor.
            let _ = kill_and_reap(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} ({}): last {PANIC_TAIL_LINES} log lines ---\n{}\n---",
                self.launch.describe(self.port),
                self.log_path().display(),
                self.log_tail(PANIC_TAIL_LINES),
            );
        }
    }
}

/// Opens a connection whose commands time out instead of hanging.
pub(crate) fn admin_connection(client: &redis::Client) -> Result<redis::Connection> {
    let conn = client.get_connection_with_timeout(ADMIN_TIMEOUT)?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    conn.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    Ok(conn)
}

/// Value of `field` in the text of an `INFO` reply.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')).map(str::trim))
}

#[derive(Debug, Clone)]
enum Mode {
    Server,
    Sentinel { config: PathBuf },
}

/// Everything needed to start (and restart) the process.
#[derive(Debug)]
struct Launch {
    binary: PathBuf,
    mode: Mode,
    /// Arguments after the test-kit's defaults.
    args: Vec<OsString>,
    start_timeout: Duration,
    tls: Option<TlsServer>,
}

enum Spawn {
    /// Another process holds the port: retry.
    PortInUse,
    Failed(TestkitError),
}

impl From<std::io::Error> for Spawn {
    fn from(err: std::io::Error) -> Self {
        Spawn::Failed(err.into())
    }
}

impl Launch {
    fn describe(&self, port: u16) -> String {
        match self.mode {
            Mode::Server => format!("redis-server on port {port}"),
            Mode::Sentinel { .. } => format!("sentinel on port {port}"),
        }
    }

    fn url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{HOST}:{port}/")
    }

    /// The test-kit's client of the server on `port`.
    fn client(&self, port: u16) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            Some(tls) => tls.client(self.url(port)),
            None => redis::Client::open(self.url(port)),
        }
    }

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        match &self.mode {
            Mode::Server => {
                cmd.args(["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]);
            }
            Mode::Sentinel { config } => {
                cmd.arg(config).arg("--sentinel");
            }
        }
        cmd.arg("--bind").arg(HOST);
        match &self.tls {
            None => cmd.arg("--port").arg(port.to_string()),
            Some(tls) => {
                let [cert, key, ca] = TLS_FILES.map(|f| dir.join(f));
                let auth = match tls.clients {
                    ClientAuth::No => "no",
                    ClientAuth::Required => "yes",
                };
                cmd.args(["--port", "0", "--tls-port"])
                    .arg(port.to_string())
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key)
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
                    .args(["--tls-auth-clients", auth, "--tls-replication", "yes"])
            }
        };
        cmd.arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join(LOG_FILE))
            .arg("--daemonize")
            .arg("no")
            .args(&self.args);
        cmd
    }

    /// Spawns the process and waits until it answers `PING` as itself.
    fn spawn_ready(&self, port: u16, dir: &Path) -> Result<Child, Spawn> {
        let log = dir.join(LOG_FILE);
        let stdio = dir.join(STDIO_FILE);
        // Only what this attempt writes tells whether *it* failed to bind.
        let (log_start, stdio_start) = (file_len(&log), file_len(&stdio));
        let out = OpenOptions::new().create(true).append(true).open(&stdio)?;
        let err = out.try_clone()?;
        let mut cmd = self.command(port, dir);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = spawn_tied(cmd)?;
        let fresh_output = || read_from(&log, log_start) + &read_from(&stdio, stdio_start);
        let deadline = Instant::now() + self.start_timeout;
        loop {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let output = fresh_output();
                    if output.contains("Address already in use") {
                        return Err(Spawn::PortInUse);
                    }
                    return Err(Spawn::Failed(TestkitError::Exited {
                        what: self.describe(port),
                        status: status.to_string(),
                        log_tail: last_lines(&output, PANIC_TAIL_LINES),
                    }));
                }
                Err(err) => {
                    let _ = kill_and_reap(&mut child);
                    return Err(err.into());
                }
            }
            // Another server may answer on the port we failed to bind, so
            // check that the one answering is ours.
            if probe_pid(self, port) == Some(child.id()) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = kill_and_reap(&mut child);
                return Err(Spawn::Failed(TestkitError::StartTimeout {
                    what: self.describe(port),
                    timeout: self.start_timeout,
                    log_tail: last_lines(&fresh_output(), PANIC_TAIL_LINES),
                }));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// The pid of the server answering `PING` on `port`, if any.
fn probe_pid(launch: &Launch, port: u16) -> Option<u32> {
    let client = launch.client(port).ok()?;
    let mut conn = client.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    conn.set_write_timeout(Some(Duration::from_millis(500))).ok()?;
    // PING fails with LOADING while a snapshot is being read.
    redis::cmd("PING").query::<String>(&mut conn).ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info_field(&info, "process_id")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_launch() -> Result<Launch> {
        Ok(Launch {
            binary: binary::server()?,
            mode: Mode::Server,
            args: Vec::new(),
            start_timeout: Duration::from_secs(5),
            tls: None,
        })
    }

    #[test]
    fn a_port_held_by_a_listener_is_reported_for_retry() -> Result<()> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        assert!(matches!(plain_launch()?.spawn_ready(port, dir.path()), Err(Spawn::PortInUse)));
        Ok(())
    }

    #[test]
    fn another_server_on_the_port_is_not_mistaken_for_ours() -> Result<()> {
        let other = RedisServer::start()?;
        let dir = tempfile::tempdir()?;
        assert!(matches!(plain_launch()?.spawn_ready(other.port(), dir.path()), Err(Spawn::PortInUse)));
        Ok(())
    }

    #[test]
    fn info_field_parses_values() {
        let info = "# Server\r\nredis_version:7.0.15\r\nprocess_id:42\r\n";
        assert_eq!(info_field(info, "process_id"), Some("42"));
        assert_eq!(info_field(info, "process"), None);
        assert_eq!(info_field(info, "missing"), None);
    }
}
