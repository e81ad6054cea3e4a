//! The `rdlock` binary, driven as a user would, against test-kit servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdlock_testkit::{Cluster, MASTER_NAME, RedisServer, Sentinels};
use rustix::process::{Pid, Signal, kill_process};

const PATIENCE: Duration = Duration::from_secs(15);

fn rdlock(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdlock"));
    c.env("RDLOCK_URL", url).env_remove("RUST_BACKTRACE");
    c
}

/// A running `rdlock`, killed (with its process group's stray children bounded by their own
/// loops) if a test fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn spawn(mut command: Command) -> Self {
        Self(Some(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn rdlock")))
    }

    fn pid(&self) -> Pid {
        let id = self.0.as_ref().expect("running").id();
        Pid::from_raw(i32::try_from(id).expect("a pid")).expect("a pid")
    }

    /// Waits (up to `PATIENCE`) for it to end.
    fn finish(mut self) -> Output {
        let mut child = self.0.take().expect("running");
        let started = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("rdlock did not end within {PATIENCE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < PATIENCE, "never saw {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rdlock-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `sh -c script` with `$F` set to `file`. Loops in scripts are bounded, so that nothing
/// outlives a failed test by more than a few seconds.
fn sh(file: &Path, script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("F='{}'; {script}", file.display())]
}

fn exec(url: &str, flags: &[&str], key: &str, command: &[String]) -> Command {
    let mut c = rdlock(url);
    c.arg("exec").args(flags).arg(key).arg("--").args(command);
    c
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("an exit code")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One line on stderr, no panic, no backtrace.
fn one_line_error(out: &Output) {
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("rdlock: ") && !err.contains("panicked") && !err.contains("backtrace"), "{err}");
}

fn inspect(url: &str, key: &str) -> serde_json::Value {
    let out = rdlock(url).args(["inspect", "--json", key]).output().expect("inspect");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn two_execs_on_one_key_take_turns() {
    let server = RedisServer::start().expect("redis-server");
    let file = scratch("turns");
    let script =
        sh(&file, r#"echo "start $RDLOCK_FENCE $RDLOCK_KEY" >> "$F"; sleep 0.3; echo "end $RDLOCK_FENCE" >> "$F""#);
    let runs: Vec<_> =
        (0..2).map(|_| Running::spawn(exec(&server.url(), &["--timeout", "10s"], "turns", &script))).collect();
    for run in runs {
        let out = run.finish();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let log = read(&file);
    let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 4, "{log}");
    // start A, end A, start B, end B: the critical sections do not overlap.
    assert_eq!((lines[0][0], lines[1][0], lines[2][0], lines[3][0]), ("start", "end", "start", "end"), "{log}");
    assert_eq!((lines[0][1], lines[2][1]), (lines[1][1], lines[3][1]), "{log}");
    assert_eq!(lines[0][2], "turns");
    let fences: Vec<u64> = [lines[0][1], lines[2][1]].iter().map(|f| f.parse().expect("a fence")).collect();
    assert!(fences[0] < fences[1], "{log}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_lost_lease_stops_the_command_and_exits_76() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let file = scratch("lost");
    let script = sh(
        &file,
        r#"trap 'echo term >> "$F"; exit 0' TERM; echo started >> "$F"; for i in $(seq 200); do sleep 0.05; done"#,
    );
    let run = Running::spawn(exec(&url, &["--ttl", "1s", "--grace", "5s"], "lost", &script));
    wait_until("the command start", || read(&file).contains("started"));
    let forced = rdlock(&url).args(["release", "--force", "lost"]).output().expect("release");
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    let out = run.finish();
    assert_eq!(code(&out), 76, "{}", stderr(&out));
    assert!(read(&file).contains("term"), "the command got SIGTERM");
    assert!(stderr(&out).contains("lost the lock"), "{}", stderr(&out));
    let _ = std::fs::remove_file(&file);
}

#[test]
fn signals_are_forwarded_and_the_lock_released() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let file = scratch("signals");
    let script = sh(
        &file,
        r#"trap 'echo got-term >> "$F"; exit 7' TERM; echo started >> "$F"; for i in $(seq 200); do sleep 0.05; done"#,
    );
    let run = Running::spawn(exec(&url, &[], "signals", &script));
    wait_until("the command start", || read(&file).contains("started"));
    assert_eq!(inspect(&url, "signals")["held"], true);
    kill_process(run.pid(), Signal::TERM).expect("kill");
    let out = run.finish();
    assert_eq!(code(&out), 7, "the command's status: {}", stderr(&out));
    assert!(read(&file).contains("got-term"));
    assert_eq!(inspect(&url, "signals")["held"], false, "released");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn exit_codes() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let run = |flags: &[&str], key: &str, cmd: &[&str]| {
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        exec(&url, flags, key, &cmd).output().expect("rdlock")
    };
    assert_eq!(code(&run(&[], "codes", &["sh", "-c", "exit 3"])), 3);
    assert_eq!(code(&run(&[], "codes", &["sh", "-c", "kill -9 $$"])), 128 + 9);
    let missing = run(&[], "codes", &["/nonexistent/rdlock-test-command"]);
    assert_eq!(code(&missing), 127);
    one_line_error(&missing);

    // A held key: --try is busy at once, --timeout after its wait.
    let client = rdlock_blocking::Client::open(&url).expect("connect");
    let guard = client.lock("codes").expect("lock");
    let busy = run(&["--try"], "codes", &["true"]);
    assert_eq!(code(&busy), 75, "{}", stderr(&busy));
    one_line_error(&busy);
    let started = Instant::now();
    let late = run(&["--timeout", "300ms"], "codes", &["true"]);
    assert_eq!(code(&late), 75, "{}", stderr(&late));
    assert!(started.elapsed() >= Duration::from_millis(300));
    guard.release().expect("release");

    // Usage errors.
    for args in [&["exec", "codes"][..], &["exec", "--bogus", "codes", "--", "true"], &["release", "codes"]] {
        let out = rdlock(&url).args(args).output().expect("rdlock");
        assert_eq!(code(&out), 64, "{args:?}: {}", stderr(&out));
        one_line_error(&out);
    }
    let bare = rdlock(&url).output().expect("rdlock");
    assert_eq!(code(&bare), 64);
    // The help, or (with RDLOCK_URL set, an argument given) a one-line error naming them.
    assert!(stderr(&bare).contains("Usage:") || stderr(&bare).contains("subcommands: exec"), "{}", stderr(&bare));
    let out = rdlock(&url).args(["exec", "--ttl", "5 parsecs", "codes", "--", "true"]).output().expect("rdlock");
    assert_eq!(code(&out), 64);
    let help = rdlock(&url).arg("--help").output().expect("rdlock");
    assert_eq!(code(&help), 0);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));

    // A key of another type.
    let mut conn = server.connection().expect("admin");
    let _: () = redis::cmd("HSET").arg("a-hash").arg("x").arg("1").query(&mut conn).expect("HSET");
    for args in [&["inspect", "a-hash"][..], &["release", "--force", "a-hash"], &["exec", "a-hash", "--", "true"]] {
        let out = rdlock(&url).args(args).output().expect("rdlock");
        assert_eq!(code(&out), 65, "{args:?}: {}", stderr(&out));
        one_line_error(&out);
    }
    let nothing = rdlock(&url).args(["release", "--force", "nothing-here"]).output().expect("rdlock");
    assert_eq!(code(&nothing), 1);

    // No server there.
    let unreachable = rdlock("redis://127.0.0.1:1/").args(["exec", "codes", "--", "true"]).output().expect("rdlock");
    assert_eq!(code(&unreachable), 69, "{}", stderr(&unreachable));
    one_line_error(&unreachable);
}

#[test]
fn a_wrong_password_is_refused_and_never_printed() {
    let server = RedisServer::start().expect("redis-server");
    let mut admin = server.connection().expect("admin");
    redis::cmd("CONFIG").arg(&["SET", "requirepass", "right-one"]).query::<()>(&mut admin).expect("CONFIG SET");
    let url = format!("redis://:wrong-one@{}/", server.addr());
    let out = rdlock(&url).args(["inspect", "k"]).output().expect("rdlock");
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    one_line_error(&out);
    assert!(!stderr(&out).contains("wrong-one"), "{}", stderr(&out));
    let good = format!("redis://:right-one@{}/", server.addr());
    let out = rdlock(&good).args(["exec", "k", "--", "true"]).output().expect("rdlock");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn inspect_json_and_watch_show_the_holder_and_queue() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let client = rdlock_blocking::Client::open(&url).expect("connect");
    let guard = client.lock("shown").expect("lock");
    let waiter = Running::spawn(exec(&url, &["--ttl", "20s"], "shown", &["true".to_owned()]));
    wait_until("the waiter queued", || inspect(&url, "shown")["queue"].as_array().is_some_and(|q| q.len() == 1));
    let seen = inspect(&url, "shown");
    assert_eq!(seen["kind"], "lock");
    assert_eq!(seen["held"], true);
    assert_eq!(seen["holder"], &guard.token()[..8]);
    assert_eq!(seen["fence"], guard.fence());
    assert!(seen["ttl_ms"].as_u64().is_some_and(|t| t <= 30_000));
    assert_eq!(seen["queue"][0]["ttl_ms"], 20_000);
    assert_eq!(seen["queue"][0]["token"].as_str().map(str::len), Some(8));

    let watch = Running::spawn({
        let mut c = rdlock(&url);
        c.args(["watch", "shown", "--interval", "100ms"]);
        c
    });
    std::thread::sleep(Duration::from_millis(400));
    kill_process(watch.pid(), Signal::INT).expect("kill");
    let watched = watch.finish();
    assert_eq!(code(&watched), 0);
    let shown = String::from_utf8_lossy(&watched.stdout);
    assert!(shown.contains("state     held") && shown.contains("1 waiting"), "{shown}");

    guard.release().expect("release");
    assert_eq!(code(&waiter.finish()), 0);
    assert_eq!(inspect(&url, "shown")["held"], false);
}

#[test]
fn completions_are_printed_without_a_server() {
    // Nothing listens there: completions never connect.
    let nowhere = "redis://127.0.0.1:1/";
    for (shell, marker) in [("bash", "_rdlock()"), ("zsh", "#compdef rdlock"), ("fish", "complete -c rdlock")] {
        let out = rdlock(nowhere).args(["completions", shell]).output().expect("completions");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker) && script.contains("inspect"), "{shell}: {script}");
    }
    let out = rdlock(nowhere).args(["completions", "no-such-shell"]).output().expect("completions");
    assert_eq!(code(&out), 64);
    one_line_error(&out);
}

/// `exec` and `inspect` through the Sentinel and the Cluster URL forms.
#[test]
fn sentinel_and_cluster_urls_work() {
    let primary = RedisServer::start().expect("redis-server");
    let sentinels = Sentinels::start(&primary, 1).expect("a sentinel");
    let sentinel_url = format!("redis+sentinel://{}/{MASTER_NAME}", sentinels.addrs()[0]);
    let cluster = Cluster::start(3, 0).expect("a cluster");
    let hosts: Vec<String> = cluster.nodes().iter().map(|n| n.addr().to_string()).collect();
    let cluster_url = format!("redis+cluster://{}", hosts.join(","));
    for (url, name) in [(sentinel_url, "sentinel"), (cluster_url, "cluster")] {
        let file = scratch(name);
        let out = exec(&url, &["--timeout", "10s"], name, &sh(&file, r#"echo "$RDLOCK_FENCE" > "$F""#))
            .output()
            .expect("exec");
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        let fence: u64 = read(&file).trim().parse().expect("a fence");
        let seen = inspect(&url, name);
        assert_eq!(seen["held"], false, "{name}: released after the command: {seen}");
        assert_eq!(seen["fence"], fence, "{name}: {seen}");
        let _ = std::fs::remove_file(&file);
    }
}

/// `--ca-file`, `--cert-file` and `--key-file` against a TLS-only server that requires a
/// client certificate (a build with the `tls` feature): `exec` runs; without the certificate,
/// or trusting the system's roots only, it is one line and exit 69. On a server built without
/// TLS the case says it does not apply.
#[cfg(feature = "tls")]
#[test]
fn tls_with_a_private_ca_and_a_client_certificate() {
    use rdlock_testkit::{ClientAuth, TestCa, TestkitError, TlsServer};

    let ca = TestCa::new("cli").expect("a CA");
    let tls = TlsServer::new(&ca).expect("certificates").clients(ClientAuth::Required);
    let server = match RedisServer::builder().tls(tls).start() {
        Ok(s) => s,
        Err(TestkitError::Exited { log_tail, .. }) if log_tail.contains("TLS support") => {
            println!("tls_with_a_private_ca_and_a_client_certificate does not apply: the server has no TLS");
            return;
        }
        Err(e) => panic!("start a TLS server: {e}"),
    };
    let identity = ca.client_cert().expect("a client certificate");
    let files = [("ca", ca.ca_pem()), ("cert", identity.cert_pem), ("key", identity.key_pem)].map(|(name, pem)| {
        let path = scratch(&format!("tls-{name}.pem"));
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    });
    let [ca_file, cert_file, key_file] = files.each_ref().map(|p| p.display().to_string());
    let mut run = rdlock(&server.url());
    run.args(["--ca-file", &ca_file, "--cert-file", &cert_file, "--key-file", &key_file]);
    let out = run.args(["exec", "--timeout", "10s", "tls", "--", "true"]).output().expect("exec");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for flags in [vec!["--ca-file", &ca_file], vec!["--cert-file", &cert_file, "--key-file", &key_file]] {
        let out = rdlock(&server.url()).args(&flags).args(["inspect", "tls"]).output().expect("inspect");
        assert_eq!(code(&out), 69, "{flags:?}: {}", stderr(&out));
        one_line_error(&out);
    }
    for path in &files {
        let _ = std::fs::remove_file(path);
    }
}
