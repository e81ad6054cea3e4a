//! The fault-injecting TCP proxy.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestResult, eventually};
use rdlock_testkit::{Proxy, RedisServer};

fn connect(proxy: &Proxy) -> redis::RedisResult<redis::Connection> {
    let conn = redis::Client::open(proxy.url())?.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

fn ping(conn: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("PING").query(conn)
}

#[test]
fn forwards_in_both_directions() -> TestResult {
    let server = RedisServer::start()?;
    let proxy = Proxy::start(server.addr())?;
    assert_eq!(proxy.target(), server.addr());
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.port()));
    assert_eq!(proxy.addr().port(), proxy.port());
    let mut conn = connect(&proxy)?;
    // Large enough to take several reads.
    let big = "x".repeat(200_000);
    redis::cmd("SET").arg("big").arg(&big).query::<()>(&mut conn)?;
    let back: String = redis::cmd("GET").arg("big").query(&mut conn)?;
    assert_eq!(back, big);
    assert_eq!(proxy.connection_count(), 1);
    Ok(())
}

#[test]
fn delay_slows_both_directions_and_keeps_order() -> TestResult {
    let server = RedisServer::start()?;
    let proxy = Proxy::start(server.addr())?;
    let mut conn = connect(&proxy)?;
    ping(&mut conn)?;

    proxy.set_delay(Duration::from_millis(100));
    let started = Instant::now();
    ping(&mut conn)?;
    let round_trip = started.elapsed();
    assert!(round_trip >= Duration::from_millis(200), "{round_trip:?}");
    assert!(round_trip < Duration::from_secs(2), "{round_trip:?}");

    let mut pipe = redis::pipe();
    for _ in 0..100 {
        pipe.cmd("INCR").arg("n");
    }
    let counts: Vec<u64> = pipe.query(&mut conn)?;
    assert_eq!(counts, (1..=100).collect::<Vec<_>>());

    proxy.set_delay(Duration::ZERO);
    let started = Instant::now();
    ping(&mut conn)?;
    assert!(started.elapsed() < Duration::from_millis(150));
    Ok(())
}

#[test]
fn pause_buffers_until_resume() -> TestResult {
    let server = RedisServer::start()?;
    let proxy = Proxy::start(server.addr())?;
    let mut stream = TcpStream::connect(proxy.addr())?;
    stream.set_read_timeout(Some(Duration::from_millis(300)))?;

    proxy.pause();
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0; 64];
    let err = stream.read(&mut buf).expect_err("nothing is forwarded while paused");
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));

    proxy.resume();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let n = stream.read(&mut buf)?;
    assert_eq!(&buf[..n], b"+PONG\r\n");
    Ok(())
}

#[test]
fn cut_closes_current_connections_only() -> TestResult {
    let server = RedisServer::start()?;
    let proxy = Proxy::start(server.addr())?;
    let mut conn = connect(&proxy)?;
    ping(&mut conn)?;
    assert_eq!(proxy.connection_count(), 1);

    proxy.cut();
    assert!(ping(&mut conn).is_err());
    assert_eq!(proxy.connection_count(), 0);
    // The server sees its side closed too.
    let mut direct = server.connection()?;
    assert!(eventually(Duration::from_secs(2), || {
        redis::cmd("CLIENT")
            .arg("LIST")
            .query::<String>(&mut direct)
            .map(|list| list.lines().count() == 1)
            .unwrap_or(false)
    }));

    let mut conn = connect(&proxy)?;
    assert_eq!(ping(&mut conn)?, "PONG");
    Ok(())
}

#[test]
fn refuse_closes_new_connections() -> TestResult {
    let server = RedisServer::start()?;
    let proxy = Proxy::start(server.addr())?;
    let mut kept = connect(&proxy)?;

    proxy.refuse(true);
    assert!(connect(&proxy).is_err());
    let mut raw = TcpStream::connect(proxy.addr())?;
    raw.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0; 8];
    assert!(matches!(raw.read(&mut buf), Ok(0) | Err(_)), "closed at once");
    assert_eq!(ping(&mut kept)?, "PONG", "current connections are left alone");

    proxy.refuse(false);
    let mut conn = connect(&proxy)?;
    assert_eq!(ping(&mut conn)?, "PONG");
    Ok(())
}

#[test]
fn drop_closes_everything() -> TestResult {
    let server = RedisServer::start()?;
    let proxy = Proxy::start(server.addr())?;
    let addr = proxy.addr();
    let mut conn = connect(&proxy)?;
    ping(&mut conn)?;

    let started = Instant::now();
    drop(proxy);
    assert!(started.elapsed() < Duration::from_secs(1), "threads notice shutdown quickly");
    assert!(ping(&mut conn).is_err());
    assert!(TcpStream::connect(addr).is_err());
    Ok(())
}

#[test]
fn unreachable_target_closes_the_client() -> TestResult {
    let server = RedisServer::start()?;
    let target = server.addr();
    server.kill()?;
    let proxy = Proxy::start(target)?;
    assert!(connect(&proxy).is_err());
    assert_eq!(proxy.connection_count(), 0);
    Ok(())
}
