//! A single server: lifecycle, faults and configuration.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use common::{TestResult, assert_gone, redis_process_exists};
use rdlock_testkit::{RedisServer, TestkitError, free_port};

fn get(conn: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(conn)
}

#[test]
fn start_and_drop_stops_the_process_and_frees_the_port() -> TestResult {
    let server = RedisServer::start()?;
    let (pid, port) = (server.pid(), server.port());
    assert!(server.is_running());
    assert!(redis_process_exists(pid));
    assert_eq!(server.host(), "127.0.0.1");
    assert_eq!(server.addr().port(), port);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/"));

    let mut conn = server.client().get_connection()?;
    let pong: String = redis::cmd("PING").query(&mut conn)?;
    assert_eq!(pong, "PONG");
    // Started without persistence.
    let save: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("save").query(&mut conn)?;
    assert_eq!(save, ["save", ""]);
    let dir = server.dir().to_path_buf();
    assert!(server.log_path().exists());
    assert!(server.log_tail(5).contains("Ready to accept connections"));

    drop(conn);
    drop(server);
    assert_gone(&[pid]);
    assert!(!dir.exists(), "temporary directory is removed");
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(), "port is free again");
    Ok(())
}

#[test]
fn servers_get_distinct_ports() -> TestResult {
    let a = RedisServer::start()?;
    let b = RedisServer::start()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(free_port(), 0);
    let pids = [a.pid(), b.pid()];
    drop((a, b));
    assert_gone(&pids);
    Ok(())
}

#[test]
fn pause_makes_commands_time_out_until_resume() -> TestResult {
    let server = RedisServer::start()?;
    let mut conn = server.connection()?;
    conn.set_read_timeout(Some(Duration::from_millis(300)))?;

    server.pause()?;
    assert!(server.is_running(), "a paused server is still running");
    let err = redis::cmd("PING").query::<String>(&mut conn).expect_err("a paused server does not answer");
    assert!(err.is_timeout(), "{err}");

    server.resume()?;
    // The old connection still has the unanswered PING's reply in flight.
    let mut conn = server.connection()?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let pong: String = redis::cmd("PING").query(&mut conn)?;
    assert_eq!(pong, "PONG");

    // A server dropped while paused is killed all the same.
    server.pause()?;
    let pid = server.pid();
    drop(server);
    assert_gone(&[pid]);
    Ok(())
}

#[test]
fn restart_keeps_or_drops_data() -> TestResult {
    let server = RedisServer::start()?;
    let port = server.port();
    let mut conn = server.connection()?;
    redis::cmd("SET").arg("k").arg("v").query::<()>(&mut conn)?;

    let old_pid = server.pid();
    server.restart(true)?;
    assert_ne!(server.pid(), old_pid);
    assert_eq!(server.port(), port);
    assert_gone(&[old_pid]);
    let mut conn = server.connection()?;
    assert_eq!(get(&mut conn, "k")?.as_deref(), Some("v"));

    let old_pid = server.pid();
    server.restart(false)?;
    assert_gone(&[old_pid]);
    let mut conn = server.connection()?;
    assert_eq!(get(&mut conn, "k")?, None);
    Ok(())
}

#[test]
fn kill_then_restart_loads_only_the_last_snapshot() -> TestResult {
    let server = RedisServer::start()?;
    let mut conn = server.connection()?;
    redis::cmd("SET").arg("saved").arg("1").query::<()>(&mut conn)?;
    server.save()?;
    redis::cmd("SET").arg("unsaved").arg("1").query::<()>(&mut conn)?;

    let pid = server.pid();
    server.kill()?;
    assert!(!server.is_running());
    assert_gone(&[pid]);
    assert!(server.connection().is_err());
    assert!(matches!(server.pause(), Err(TestkitError::NotRunning { .. })));
    server.kill()?; // killing twice is fine

    server.restart(true)?;
    assert!(server.is_running());
    let mut conn = server.connection()?;
    assert_eq!(get(&mut conn, "saved")?.as_deref(), Some("1"));
    assert_eq!(get(&mut conn, "unsaved")?, None);

    server.kill()?;
    server.restart(false)?;
    let mut conn = server.connection()?;
    assert_eq!(get(&mut conn, "saved")?, None);
    Ok(())
}

#[test]
fn restart_of_a_paused_server_works() -> TestResult {
    let server = RedisServer::start()?;
    server.pause()?;
    server.restart(true)?;
    let mut conn = server.connection()?;
    let pong: String = redis::cmd("PING").query(&mut conn)?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[test]
fn builder_passes_arguments_and_enables_debug() -> TestResult {
    let server =
        RedisServer::builder().args(["--maxclients", "77"]).arg("--hz").arg("20").enable_debug(true).start()?;
    let mut conn = server.connection()?;
    let maxclients: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("maxclients").query(&mut conn)?;
    assert_eq!(maxclients, ["maxclients", "77"]);
    redis::cmd("DEBUG").arg("SLEEP").arg(0).query::<()>(&mut conn)?;

    let plain = RedisServer::start()?;
    let mut conn = plain.connection()?;
    assert!(redis::cmd("DEBUG").arg("SLEEP").arg(0).query::<()>(&mut conn).is_err(), "DEBUG is off by default");
    Ok(())
}

#[test]
fn bad_configuration_is_reported_with_the_log() {
    let err = RedisServer::builder()
        .args(["--no-such-option", "1"])
        .start()
        .expect_err("redis-server rejects unknown options");
    let msg = err.to_string();
    assert!(matches!(err, TestkitError::Exited { .. }), "{msg}");
    assert!(msg.contains("no-such-option"), "{msg}");
}

#[test]
fn client_kill_type_counts_closed_connections() -> TestResult {
    let server = RedisServer::start()?;
    let mut a = server.connection()?;
    let _b = server.connection()?;
    assert_eq!(server.client_kill_type("normal")?, 2);
    assert!(redis::cmd("PING").query::<String>(&mut a).is_err());
    assert_eq!(server.client_kill_type("pubsub")?, 0);
    Ok(())
}

#[test]
fn missing_binary_gives_a_clear_error() {
    let err =
        RedisServer::builder().binary("/nonexistent/redis-server").start().expect_err("the binary does not exist");
    let msg = err.to_string();
    assert!(matches!(err, TestkitError::BinaryNotFound { .. }), "{msg}");
    assert!(msg.contains("apt-get install redis-server"), "{msg}");
    assert!(msg.contains("RDLOCK_REDIS_SERVER"), "{msg}");
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let server = RedisServer::start().expect("server starts");
        tx.send(server.pid()).expect("receiver is alive");
        panic!("deliberate panic with a live server");
    })
    .join();
    assert!(outcome.is_err());
    let pid = rx.recv().expect("the thread sent its pid");
    assert_gone(&[pid]);
}

/// Set in the environment of the test binary re-run as a server's owner by
/// `a_server_dies_with_an_owner_killed_alone`.
const OWNER: &str = "RDLOCK_TESTKIT_OWNER";

/// The owner's side (run only as that test's child): starts a server, says its pid and
/// directory, and waits to be killed.
#[test]
#[ignore = "the child of a_server_dies_with_an_owner_killed_alone"]
fn owner_killed_alone() -> TestResult {
    if std::env::var_os(OWNER).is_none() {
        return Ok(());
    }
    let server = RedisServer::start()?;
    // The directory last: it runs to the end of the line, whatever it holds.
    println!("owner: pid={} dir={}", server.pid(), server.dir().display());
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Kills and reaps the owner however the test ends.
struct Owner(std::process::Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process killed alone (SIGKILL: its handles never drop) takes its servers with it: this
/// test binary, re-run as `owner_killed_alone`, starts one and is killed; the server must die
/// too (before, it ran on, an orphan, until someone killed it by hand).
#[test]
fn a_server_dies_with_an_owner_killed_alone() -> TestResult {
    use std::io::BufRead;
    let mut owner = Owner(
        std::process::Command::new(std::env::current_exe()?)
            .args(["--exact", "owner_killed_alone", "--ignored", "--nocapture", "--test-threads=1"])
            .env(OWNER, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()?,
    );
    let stdout = owner.0.stdout.take().ok_or("the owner's stdout")?;
    let said = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // After the harness's "test owner_killed_alone ... ", on the same line.
        .find_map(|l| l.split_once("owner: ").map(|(_, said)| said.to_owned()))
        .ok_or("the owner did not say its server's pid")?;
    let (pid, dir) = said.split_once(" dir=").ok_or("a dir")?;
    let pid: u32 = pid.strip_prefix("pid=").ok_or("a pid")?.parse()?;
    let dir = std::path::PathBuf::from(dir);
    assert!(redis_process_exists(pid));
    drop(owner);
    let gone = common::eventually(Duration::from_secs(10), || !redis_process_exists(pid));
    if !gone {
        // Do not leave it running when the test fails.
        let raw = i32::try_from(pid)?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL);
    }
    // The owner could not remove its directory: it never dropped its handle.
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "the server outlived the process that started it");
    Ok(())
}
