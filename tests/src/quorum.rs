//! The fenced quorum lock over independent `redis-server` processes (three or five each):
//! acquire, contend and release; one of five paused; three of five down; a majority lost
//! while held; what a quorum refuses.

use std::time::{Duration, Instant};

use rdlock_core::{Confirm, InvalidInput, LockError, LockOptions, LostReason, ReleaseOutcome};
use rdlock_driver::{ClientConfig, Error};
use rdlock_testkit::RedisServer;

use crate::harness::Harness;

const KEY: &str = "quorum-orders";

fn servers(n: usize) -> Vec<RedisServer> {
    (0..n).map(|_| RedisServer::start().expect("redis-server starts")).collect()
}

fn client<H: Harness>(servers: &[RedisServer]) -> H::QuorumClient {
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let config = ClientConfig { response_timeout: Duration::from_millis(500), ..ClientConfig::default() };
    H::quorum(&urls, config).expect("a quorum client")
}

fn opts(ttl_ms: u64) -> LockOptions {
    LockOptions { ttl: Duration::from_millis(ttl_ms), poll_cap: Duration::from_millis(50), ..LockOptions::default() }
}

/// Lock keys (not fence counters) on the servers given.
fn lock_keys_left(servers: &[&RedisServer]) -> usize {
    servers
        .iter()
        .map(|s| {
            let mut c = s.connection().expect("a connection");
            redis::cmd("EXISTS").arg(KEY).query::<usize>(&mut c).expect("EXISTS")
        })
        .sum()
}

/// Polls `f` until it holds, or fails after a generous hang guard.
async fn eventually<H: Harness>(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "[{}] never: {what}", H::NAME);
        H::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn quorum_acquire_contend_release<H: Harness>() {
    let s = servers(3);
    let (a, b) = (client::<H>(&s), client::<H>(&s));
    let ga = H::quorum_lock(&a, KEY, &opts(5_000), Some(Duration::from_secs(5))).await.expect("acquired");
    assert!(H::quorum_try_lock(&b, KEY, &opts(5_000)).await.expect("answered").is_none(), "held by a");
    let fence_a = H::quorum_fence(&ga);
    // A waiter, woken by the release's announcement from any member.
    let waiter = H::spawn(async move {
        let g = H::quorum_lock(&b, KEY, &opts(5_000), Some(Duration::from_secs(10))).await.expect("acquired");
        let f = H::quorum_fence(&g);
        assert_eq!(H::quorum_release(g).await.expect("released"), ReleaseOutcome::Released);
        f
    });
    H::sleep(Duration::from_millis(100)).await;
    assert_eq!(H::quorum_release(ga).await.expect("released"), ReleaseOutcome::Released);
    let fence_b = waiter.await;
    assert!(fence_b > fence_a, "fences increase: {fence_a} then {fence_b}");
    eventually::<H>("no lock key left", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 0).await;
}

pub async fn quorum_one_of_five_paused_still_acquires<H: Harness>() {
    let s = servers(5);
    let c = client::<H>(&s);
    s[4].pause().expect("paused");
    let before = Instant::now();
    let g = H::quorum_lock(&c, KEY, &opts(3_000), Some(Duration::from_secs(5))).await.expect("a majority answers");
    let after = Instant::now();
    // Validity counts from the send, less the drift allowance (30 ms + 2 ms).
    let valid_until = H::quorum_valid_until(&g).expect("held");
    let validity = Duration::from_millis(3_000 - 32);
    assert!(before + validity <= valid_until && valid_until <= after + validity, "{:?}", valid_until - before);
    assert!(H::quorum_lost(&g).is_none());
    H::quorum_extend(&g).await.expect("a majority renews while one member sleeps");
    s[4].resume().expect("resumed");
    assert_eq!(H::quorum_release(g).await.expect("released"), ReleaseOutcome::Released);
    eventually::<H>("no lock key left", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 0).await;
}

pub async fn quorum_three_of_five_down_fails_fast_and_leaves_nothing<H: Harness>() {
    let s = servers(5);
    let c = client::<H>(&s);
    for server in &s[..3] {
        server.kill().expect("killed");
    }
    let r = H::quorum_try_lock(&c, KEY, &opts(3_000)).await;
    assert!(
        matches!(r, Err(Error::Lock(LockError::NoQuorum { failed: 3, members: 5, needed: 3 }))),
        "{:?}",
        r.map(|g| g.map(|g| H::quorum_fence(&g)))
    );
    // A waiting acquisition fails as fast: an outage is not contention.
    let r = H::quorum_lock(&c, KEY, &opts(3_000), None).await;
    assert!(matches!(r, Err(Error::Lock(LockError::NoQuorum { .. }))), "{:?}", r.map(|g| H::quorum_fence(&g)));
    eventually::<H>("the live members' partial grants released", || lock_keys_left(&[&s[3], &s[4]]) == 0).await;
}

pub async fn quorum_a_majority_lost_while_held_is_reported<H: Harness>() {
    let s = servers(5);
    let c = client::<H>(&s);
    let g = H::quorum_lock(&c, KEY, &opts(5_000), Some(Duration::from_secs(5))).await.expect("acquired");
    // The slowest members' grants may still be on their way: let them land first.
    eventually::<H>("held on every member", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 5).await;
    for server in &s[..3] {
        let mut conn = server.connection().expect("a connection");
        redis::cmd("DEL").arg(KEY).query::<()>(&mut conn).expect("DEL");
    }
    let r = H::quorum_extend(&g).await;
    assert!(matches!(r, Err(Error::Lost(LostReason::NotOwner))), "{r:?}");
    assert_eq!(H::quorum_lost(&g), Some(LostReason::NotOwner));
    drop(g);
    eventually::<H>("the rest released", || lock_keys_left(&s.iter().collect::<Vec<_>>()) == 0).await;
}

pub async fn quorum_refuses_what_it_cannot_offer<H: Harness>() {
    let even = H::quorum(&["redis://127.0.0.1:1/".into(), "redis://127.0.0.1:2/".into()], ClientConfig::default());
    assert!(matches!(even, Err(Error::InvalidInput(InvalidInput::QuorumSize { members: 2, .. }))), "{even:?}");
    // One server named twice (another database, another letter case) would count twice.
    let twice = [
        "redis://127.0.0.1:1/",
        "redis://127.0.0.1:2/",
        "redis://LOCALHOST:3/0",
        "redis://localhost:3/1",
        "redis://127.0.0.1:4/",
    ];
    let twice = H::quorum(&twice.map(String::from), ClientConfig::default());
    assert!(
        matches!(&twice, Err(Error::InvalidInput(InvalidInput::RepeatedMember(m))) if m == "localhost:3"),
        "{twice:?}"
    );
    let confirm = Confirm::AtLeast { replicas: 1, timeout: Duration::from_millis(100) };
    let confirmed = LockOptions { confirm, ..opts(1_000) };
    assert!(matches!(rdlock_driver::quorum_options(&confirmed), Err(InvalidInput::NotForQuorum(_))));
    let semaphore = rdlock_core::Resource::Permit { capacity: 3 };
    assert!(matches!(rdlock_driver::quorum_resource(semaphore), Err(InvalidInput::NotForQuorum(_))));
    let s = servers(3);
    let c = client::<H>(&s);
    let r = H::quorum_try_lock(&c, "", &opts(1_000)).await;
    assert!(matches!(r, Err(Error::InvalidInput(InvalidInput::EmptyKey))), "{:?}", r.map(|g| g.is_some()));
    let r = H::quorum_try_lock(&c, KEY, &confirmed).await;
    assert!(matches!(r, Err(Error::InvalidInput(InvalidInput::NotForQuorum(_)))), "{:?}", r.map(|g| g.is_some()));
}

/// A quorum caller that runs only after its lease is over is not handed the lock (as
/// `a_caller_that_runs_after_its_lease_gets_no_guard` for one server): the client took the
/// grant of a majority in time, but the caller's task was not polled again until every
/// member's key had lapsed. It is told `NoValidityLeft`, and nothing is left held.
pub async fn quorum_a_caller_that_runs_after_its_lease_gets_no_guard<H: Harness>() {
    let servers = servers(3);
    let refs: Vec<&RedisServer> = servers.iter().collect();
    let c = client::<H>(&servers);
    let options = LockOptions { auto_renew: false, ..opts(1_000) };
    let Some(mut late) = H::late_quorum_lock(&c, KEY, &options) else { return };
    // The first poll starts the members' requests on tasks of their own; with every member
    // frozen none can answer within it, however the threads run (unfrozen, the answers could
    // all be in before the poll looked: one of nine runs of the async-std suite failed so).
    for server in &servers {
        server.pause().expect("pause");
    }
    let early = futures_lite::future::poll_once(&mut late).await;
    for server in &servers {
        server.resume().expect("resume");
    }
    if let Some(early) = early {
        panic!("[{}] answered before any round trip: {:?}", H::NAME, early.map(|g| H::quorum_fence(&g)));
    }
    eventually::<H>("the lock held on a majority", || lock_keys_left(&refs) >= 2).await;
    // Each member's key outlives the lease counted from before its request: once every key
    // is gone, the lease is surely over; the caller is polled only then.
    eventually::<H>("every member's key to lapse", || lock_keys_left(&refs) == 0).await;
    match late.await {
        Err(Error::Lock(LockError::NoValidityLeft)) => {}
        other => panic!("[{}] a caller that ran after its lease: {:?}", H::NAME, other.map(|g| H::quorum_fence(&g))),
    }
    let g = H::quorum_try_lock(&c, KEY, &opts(1_000)).await.expect("answered").expect("the lock is free");
    assert_eq!(H::quorum_release(g).await.expect("released"), ReleaseOutcome::Released);
    eventually::<H>("nothing left held", || lock_keys_left(&refs) == 0).await;
}
