//! The fenced quorum lock over independent `redis-server` processes, through the blocking
//! driver's `QuorumClient` (the async adapters do not have it yet). Short cases: three or
//! five servers each; a paused member, a majority down, a majority lost while held.

use std::time::{Duration, Instant};

use rdlock_core::{Confirm, InvalidInput, LockError, LockOptions, LostReason, ReleaseOutcome};
use rdlock_driver::Error;
use rdlock_driver::blocking::QuorumClient;
use rdlock_testkit::RedisServer;

const KEY: &str = "quorum-orders";

fn servers(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start().expect("redis-server starts")).collect()
}

fn client(servers: &[RedisServer]) -> QuorumClient {
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let config = rdlock_driver::ClientConfig { response_timeout: Duration::from_millis(500), ..Default::default() };
    QuorumClient::with_config(&urls, config).expect("a quorum client")
}

fn opts(ttl_ms: u64) -> LockOptions {
    LockOptions { ttl: Duration::from_millis(ttl_ms), poll_cap: Duration::from_millis(50), ..LockOptions::default() }
}

/// Lock keys (not fence counters) left on the servers still running.
fn lock_keys_left(servers: &[&RedisServer]) -> usize {
    servers
        .iter()
        .map(|s| {
            let mut c = s.connection().expect("a connection");
            redis::cmd("EXISTS").arg(KEY).query::<usize>(&mut c).expect("EXISTS")
        })
        .sum()
}

/// Polls `f` until it holds or a generous hang guard passes.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn quorum_acquire_contend_release() {
    let s = servers(3);
    let (a, b) = (client(&s), client(&s));
    let ga = a.lock_with(KEY, &opts(5_000), Some(Duration::from_secs(5))).expect("acquired");
    assert!(b.try_lock_with(KEY, &opts(5_000)).expect("answered").is_none(), "held by a");
    // A waiter is woken by the release's announcement from any member.
    let fence_a = ga.fence();
    let waiter = std::thread::spawn(move || {
        let g = b.lock_with(KEY, &opts(5_000), Some(Duration::from_secs(10))).expect("acquired after the release");
        let f = g.fence();
        assert_eq!(g.release().expect("released"), ReleaseOutcome::Released);
        f
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ga.release().expect("released"), ReleaseOutcome::Released);
    let fence_b = waiter.join().expect("the waiter");
    assert!(fence_b > fence_a, "fences increase: {fence_a} then {fence_b}");
    eventually("no lock key left", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 0);
}

#[test]
fn quorum_one_of_five_paused_still_acquires() {
    let s = servers(5);
    let c = client(&s);
    s[4].pause().expect("paused");
    let before = Instant::now();
    let g = c.lock_with(KEY, &opts(3_000), Some(Duration::from_secs(5))).expect("a majority answers");
    // Validity counts from the send, less the drift allowance: at most ttl - drift.
    let after = Instant::now();
    let valid_until = g.valid_until().expect("held");
    let validity = Duration::from_millis(3_000 - 32);
    assert!(before + validity <= valid_until && valid_until <= after + validity, "{:?}", valid_until - before);
    assert!(g.lost().is_none());
    g.extend().expect("a majority renews while one member sleeps");
    s[4].resume().expect("resumed");
    assert_eq!(g.release().expect("released"), ReleaseOutcome::Released);
    eventually("no lock key left", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 0);
}

#[test]
fn quorum_three_of_five_down_fails_fast_and_leaves_nothing() {
    let s = servers(5);
    let c = client(&s);
    for server in &s[..3] {
        server.kill().expect("killed");
    }
    let started = Instant::now();
    let r = c.try_lock_with(KEY, &opts(3_000));
    assert!(matches!(r, Err(Error::Lock(LockError::NoQuorum { failed: 3, members: 5, needed: 3 }))), "{r:?}");
    // A waiting acquisition fails as fast: an outage is no contention.
    let r = c.lock_with(KEY, &opts(3_000), None);
    assert!(matches!(r, Err(Error::Lock(LockError::NoQuorum { .. }))), "{:?}", r.map(|g| g.fence()));
    // Refused connections answer at once; the hang guard is generous.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    eventually("the live members' partial grants released", || lock_keys_left(&[&s[3], &s[4]]) == 0);
}

#[test]
fn quorum_a_majority_lost_while_held_is_reported() {
    let s = servers(5);
    let c = client(&s);
    let g = c.lock_with(KEY, &opts(5_000), Some(Duration::from_secs(5))).expect("acquired");
    // The slowest members' grants may still be on their way: let them land first.
    eventually("held on every member", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 5);
    for server in &s[..3] {
        let mut conn = server.connection().expect("a connection");
        redis::cmd("DEL").arg(KEY).query::<()>(&mut conn).expect("DEL");
    }
    let r = g.extend();
    assert!(matches!(r, Err(Error::Lost(LostReason::NotOwner))), "{r:?}");
    assert_eq!(g.lost(), Some(LostReason::NotOwner));
    drop(g);
    eventually("the rest released", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 0);
}

#[test]
fn quorum_refuses_what_it_cannot_offer() {
    let even = QuorumClient::open(&["redis://127.0.0.1:1/", "redis://127.0.0.1:2/"]);
    assert!(matches!(even, Err(Error::InvalidInput(InvalidInput::QuorumSize { members: 2, .. }))), "{even:?}");
    let confirmed =
        LockOptions { confirm: Confirm::AtLeast { replicas: 1, timeout: Duration::from_millis(100) }, ..opts(1_000) };
    assert!(matches!(rdlock_driver::quorum_options(&confirmed), Err(InvalidInput::NotForQuorum(_))));
    let semaphore = rdlock_core::Resource::Permit { capacity: 3 };
    assert!(matches!(rdlock_driver::quorum_resource(semaphore), Err(InvalidInput::NotForQuorum(_))));
    let s = servers(3);
    let c = client(&s);
    let r = c.try_lock_with("", &opts(1_000));
    assert!(matches!(r, Err(Error::InvalidInput(InvalidInput::EmptyKey))), "{:?}", r.map(|g| g.map(|g| g.fence())));
}
