//! Cases of clients connected through Redis Sentinel: typed errors at connect, and what
//! holds when the primary fails over (killed, or switched by `SENTINEL FAILOVER`). Each
//! starts a primary, two replicas and three sentinels, so they are few.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdlock_core::{Confirm, LockOptions, LostReason};
use rdlock_driver::{ClientConfig, Error, SentinelError};
use rdlock_testkit::{MASTER_NAME, Proxy, RedisServer, Replicated, SentinelTarget, Sentinels, free_port};

use crate::harness::{Harness, lock_with};
use crate::support::{admin, get, inbox_subscribers, ms, wait_until};

const KEY: &str = "rdlock-test:sentinel";
/// Longest a failover may take to be followed; measured at a few seconds.
const FOLLOW_BOUND: Duration = Duration::from_secs(15);

/// A primary, two replicas (their replication links through a proxy, when asked, so that
/// a case can cut them) and three sentinels.
struct Topology {
    servers: Servers,
    link: Option<Proxy>,
    sentinels: Sentinels,
}

/// The data nodes: started together, or one by one behind a replication proxy.
enum Servers {
    Set(Replicated),
    Proxied(RedisServer, Vec<RedisServer>),
}

impl Topology {
    fn start(proxied_replication: bool) -> Self {
        let (servers, link) = if proxied_replication {
            let primary = RedisServer::start().expect("start the primary");
            let link = Proxy::start(primary.addr()).expect("start the replication proxy");
            let replicas = (0..2)
                .map(|_| {
                    let b = RedisServer::builder().replica_of_addr(link.addr().ip().to_string(), link.port());
                    b.start().expect("start a replica")
                })
                .collect();
            (Servers::Proxied(primary, replicas), Some(link))
        } else {
            (Servers::Set(Replicated::start(2).expect("start a primary with 2 replicas")), None)
        };
        let primary = match &servers {
            Servers::Set(set) => set.primary(),
            Servers::Proxied(primary, _) => primary,
        };
        let mut conn = admin(primary);
        wait_until("both replicas in sync", Duration::from_secs(15), || connected_replicas(&mut conn) == 2);
        let target = SentinelTarget { primary: primary.addr(), replicas: 2 };
        let sentinels = Sentinels::start(target, 3).expect("start 3 sentinels");
        Self { servers, link, sentinels }
    }

    fn primary(&self) -> &RedisServer {
        match &self.servers {
            Servers::Set(set) => set.primary(),
            Servers::Proxied(primary, _) => primary,
        }
    }

    fn replicas(&self) -> &[RedisServer] {
        match &self.servers {
            Servers::Set(set) => set.replicas(),
            Servers::Proxied(_, replicas) => replicas,
        }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.addrs().iter().map(SocketAddr::to_string).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The server at `addr`.
    fn server(&self, addr: SocketAddr) -> &RedisServer {
        std::iter::once(self.primary()).chain(self.replicas()).find(|s| s.addr() == addr).expect("a known server")
    }
}

/// A failing case shows the sentinels' logs: whether they or the client were slow to follow
/// (an election retried after twice the failover timeout, a TILT after a stalled machine).
impl Drop for Topology {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in self.sentinels.sentinels() {
                eprintln!("--- sentinel :{} ---\n{}", s.port(), s.log_tail(40));
            }
        }
    }
}

/// Replicas whose link to the primary is up (`ROLE`).
fn connected_replicas(conn: &mut redis::Connection) -> usize {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(conn).expect("ROLE");
    match role.get(2) {
        Some(redis::Value::Array(r)) => r.len(),
        _ => 0,
    }
}

fn opts(ttl: Duration, confirm: Confirm) -> LockOptions {
    LockOptions { ttl, confirm, ..LockOptions::default() }
}

/// Tries `KEY`-probe locks until one is granted: the client is on a live primary again.
/// Returns the time it took.
async fn first_acquisition<H: Harness>(client: &H::Client, since: Instant) -> Duration {
    loop {
        if let Ok(Some(guard)) = H::try_lock(client, "rdlock-test:sentinel-probe").await {
            let took = since.elapsed();
            H::release(guard).await.expect("release the probe");
            return took;
        }
        assert!(since.elapsed() < FOLLOW_BOUND, "the client did not follow the failover within {FOLLOW_BOUND:?}");
        H::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------ 1

/// Bad inputs are typed errors, answered quickly: an unknown master name, no sentinel
/// reachable, a malformed URL. A good URL to a lone primary works.
pub async fn sentinel_bad_inputs_are_typed_errors<H: Harness>() {
    let primary = RedisServer::start().expect("start a primary");
    let sentinels = Sentinels::start(&primary, 1).expect("start a sentinel");
    let sentinel = sentinels.addrs()[0];
    let started = Instant::now();
    match H::connect(&format!("redis+sentinel://{sentinel}/no-such-master")).await {
        Err(Error::Sentinel(SentinelError::UnknownMaster { name })) => assert_eq!(name, "no-such-master"),
        other => panic!("expected an unknown master, got {other:?}"),
    }
    let nobody = format!("redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{MASTER_NAME}", free_port(), free_port());
    match H::connect(&nobody).await {
        Err(Error::Sentinel(SentinelError::NoSentinelReachable { asked, .. })) => assert_eq!(asked.len(), 2),
        other => panic!("expected no sentinel reachable, got {other:?}"),
    }
    for bad in ["redis+sentinel://127.0.0.1:1", "redis+sentinel://127.0.0.1:1/m?color=red"] {
        assert!(matches!(H::connect(bad).await, Err(Error::Sentinel(SentinelError::BadUrl(_)))), "{bad}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "typed errors took {:?}", started.elapsed());
    let client = H::connect(&format!("redis+sentinel://{sentinel}/{MASTER_NAME}")).await.expect("connect");
    assert_eq!(H::sentinel_primary(&client), Some(primary.addr().to_string()));
    let guard = H::lock_timeout(&client, KEY, Duration::from_secs(5)).await.expect("lock");
    assert_eq!(get(&mut admin(&primary), KEY), Some(H::token(&guard)));
    assert!(H::release(guard).await.expect("release").was_held());
}

// ------------------------------------------------------------------------------ 2

/// A lock held with `Confirm::All` survives a `kill -9` of the primary: the client follows
/// the sentinels to the promoted replica, verifies the lease there (same token, not lost),
/// and fences keep increasing.
pub async fn a_confirmed_lock_survives_a_primary_kill<H: Harness>() {
    let topo = Topology::start(false);
    let client = H::connect(&topo.url()).await.expect("connect through the sentinels");
    assert_eq!(H::sentinel_primary(&client), Some(topo.primary().addr().to_string()));
    let all = Confirm::All { timeout: Duration::from_secs(2) };
    let guard = lock_with::<H>(&client, KEY, opts(Duration::from_secs(10), all), Duration::from_secs(5))
        .await
        .expect("a confirmed lock");
    let (token, fence) = (H::token(&guard), H::fence(&guard));
    let killed = Instant::now();
    topo.primary().kill().expect("kill -9 the primary");
    let took = first_acquisition::<H>(&client, killed).await;
    println!("[{}] followed a killed primary: first acquisition {:.0} ms after the kill", H::NAME, ms(took));
    // Every sentinel, not only the majority the client followed.
    let new = topo.sentinels.wait_for_new_master(topo.primary().port(), FOLLOW_BOUND).expect("a new primary");
    assert_eq!(H::sentinel_primary(&client), Some(new.to_string()));
    // The lease was verified on the new primary at the switch: still ours, and it renews.
    assert_eq!(get(&mut admin(topo.server(new)), KEY), Some(token), "the confirmed key is on the new primary");
    assert_eq!(H::lost_within(&guard, Duration::from_millis(500)).await, None, "a replicated lease was lost");
    H::extend(&guard).await.expect("the lease renews on the new primary");
    // The sentinels now list the dead primary as a replica of the new one: `Confirm::All`
    // counts it (the topology's count, not only the replicas connected), so it falls short.
    let short = opts(Duration::from_secs(5), Confirm::All { timeout: Duration::from_millis(300) });
    match lock_with::<H>(&client, "rdlock-test:sentinel-all", short, Duration::from_secs(5)).await {
        Err(Error::ReplicationShortfall { acked, wanted: 2 }) => assert!(acked < 2, "acked {acked}"),
        other => panic!("expected a shortfall counting the dead primary, got {other:?}"),
    }
    assert!(H::release(guard).await.expect("release").was_held());
    let next = H::lock_timeout(&client, KEY, Duration::from_secs(5)).await.expect("lock again");
    assert!(H::fence(&next) > fence, "fence {} after {fence}", H::fence(&next));
    assert!(H::release(next).await.expect("release").was_held());
}

// ------------------------------------------------------------------------------ 3

/// The negative control: a lock taken without confirmation while the replicas' links are
/// cut is missing on the promoted replica, and the client reports it lost (never silence).
pub async fn an_unreplicated_lock_is_reported_lost_after_a_failover<H: Harness>() {
    let topo = Topology::start(true);
    let client = H::connect(&topo.url()).await.expect("connect through the sentinels");
    let link = topo.link.as_ref().expect("proxied replication");
    link.refuse(true);
    link.cut();
    let mut conn = admin(topo.primary());
    wait_until("the replicas cut off", Duration::from_secs(5), || connected_replicas(&mut conn) == 0);
    // A lease that outlives the follow bound: the loss must come from the verification on the
    // new primary (NotOwner), not from validity running out while a slow failover is followed
    // (seen once in CI with a 10 s lease).
    let ttl = FOLLOW_BOUND * 2;
    let guard = lock_with::<H>(&client, KEY, opts(ttl, Confirm::None), Duration::from_secs(5))
        .await
        .expect("an unconfirmed lock");
    for replica in topo.replicas() {
        assert_eq!(get(&mut admin(replica), KEY), None, "the key reached a replica despite the cut");
    }
    let killed = Instant::now();
    topo.primary().kill().expect("kill -9 the primary");
    let reason = H::lost_within(&guard, FOLLOW_BOUND).await;
    println!("[{}] an unreplicated lease reported {reason:?} {:.0} ms after the kill", H::NAME, ms(killed.elapsed()));
    assert_eq!(reason, Some(LostReason::NotOwner), "the new primary lacks the key: the lease must be reported lost");
    // Every sentinel, not only the majority the client followed.
    let new = topo.sentinels.wait_for_new_master(topo.primary().port(), FOLLOW_BOUND).expect("a new primary");
    assert_eq!(get(&mut admin(topo.server(new)), KEY), None, "the negative control: the key is missing");
    assert!(matches!(H::extend(&guard).await, Err(Error::Lost(_))), "a lost lease must not extend");
    drop(guard);
}

// ------------------------------------------------------------------------------ 3b

/// A release the old primary acknowledged after its replicas stopped copying it is lost by the
/// failover: the promoted replica still has the key, with a token nobody holds. The client
/// sends its recent releases again to the new primary, so the lock is free there at once, not
/// at the end of its TTL (longer here than every bound of the case).
pub async fn a_release_lost_in_a_failover_is_sent_again<H: Harness>() {
    let topo = Topology::start(true);
    let client = H::connect(&topo.url()).await.expect("connect through the sentinels");
    let other = H::connect(&topo.url()).await.expect("connect another client");
    let all = Confirm::All { timeout: Duration::from_secs(2) };
    let guard = lock_with::<H>(&client, KEY, opts(FOLLOW_BOUND * 4, all), Duration::from_secs(5))
        .await
        .expect("a confirmed lock");
    let token = H::token(&guard);
    let link = topo.link.as_ref().expect("proxied replication");
    link.refuse(true);
    link.cut();
    let mut conn = admin(topo.primary());
    wait_until("the replicas cut off", Duration::from_secs(5), || connected_replicas(&mut conn) == 0);
    assert!(H::release(guard).await.expect("release on the old primary").was_held());
    for replica in topo.replicas() {
        assert_eq!(get(&mut admin(replica), KEY), Some(token.clone()), "the replica lacks the confirmed key");
    }
    let killed = Instant::now();
    topo.primary().kill().expect("kill -9 the primary");
    let new = topo.sentinels.wait_for_new_master(topo.primary().port(), FOLLOW_BOUND).expect("a new primary");
    let mut conn = admin(topo.server(new));
    // The key goes from the new primary once the client follows: only its release can take it
    // (the lease outlives the case).
    while get(&mut conn, KEY).is_some() {
        assert!(killed.elapsed() < FOLLOW_BOUND * 2, "the lost release was not sent again on the new primary");
        H::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(H::sentinel_primary(&client), Some(new.to_string()));
    println!("[{}] a lost release sent again {:.0} ms after the kill", H::NAME, ms(killed.elapsed()));
    let next = H::lock_timeout(&other, KEY, FOLLOW_BOUND).await.expect("the lock is free on the new primary");
    assert!(H::release(next).await.expect("release").was_held());
}

// ------------------------------------------------------------------------------ 4

/// `SENTINEL FAILOVER` while another client waits: the waiter looks again on the new
/// primary and gets the lock after the holder releases there.
pub async fn a_waiter_follows_a_sentinel_failover<H: Harness>() {
    let topo = Topology::start(false);
    let holder = H::connect(&topo.url()).await.expect("connect the holder");
    let waiter = H::connect(&topo.url()).await.expect("connect the waiter");
    let all = Confirm::All { timeout: Duration::from_secs(2) };
    let guard = lock_with::<H>(&holder, KEY, opts(Duration::from_secs(10), all), Duration::from_secs(5))
        .await
        .expect("the holder's lock");
    let fence = H::fence(&guard);
    let task = {
        let waiter = waiter.clone();
        H::spawn(async move { H::lock_timeout(&waiter, KEY, Duration::from_secs(30)).await })
    };
    let mut conn = admin(topo.primary());
    wait_until("the waiter queued", Duration::from_secs(5), || inbox_subscribers(&mut conn, KEY) == 1);
    let switched = Instant::now();
    topo.sentinels.failover().expect("SENTINEL FAILOVER");
    let new = topo.sentinels.wait_for_failover(topo.primary().port(), FOLLOW_BOUND).expect("a new primary");
    let new_addr = Some(new.to_string());
    while H::sentinel_primary(&holder) != new_addr || H::sentinel_primary(&waiter) != new_addr {
        assert!(switched.elapsed() < FOLLOW_BOUND, "the clients did not follow the failover");
        H::sleep(Duration::from_millis(20)).await;
    }
    println!("[{}] both clients followed SENTINEL FAILOVER in {:.0} ms", H::NAME, ms(switched.elapsed()));
    assert_eq!(H::lost_within(&guard, Duration::from_millis(500)).await, None, "the replicated lease was lost");
    assert!(H::release(guard).await.expect("release on the new primary").was_held());
    let next = task.await.expect("the waiter gets the lock on the new primary");
    assert!(H::fence(&next) > fence);
    assert_eq!(get(&mut admin(topo.server(new)), KEY), Some(H::token(&next)));
    assert!(H::release(next).await.expect("release").was_held());
}

// ------------------------------------------------------------------------------ 5

/// Two of three sentinels frozen: the client keeps working on the primary it knows, through
/// several lookups, and a new client still connects (one answer is a majority of one).
pub async fn two_paused_sentinels_leave_the_client_working<H: Harness>() {
    let topo = Topology::start(false);
    let config = ClientConfig { topology_refresh: Duration::from_millis(300), ..ClientConfig::default() };
    let client = H::connect_sentinel(&topo.url(), config.clone()).await.expect("connect");
    topo.sentinels.sentinel(0).pause().expect("pause sentinel 0");
    topo.sentinels.sentinel(1).pause().expect("pause sentinel 1");
    let until = Instant::now() + Duration::from_secs(2);
    let mut rounds = 0;
    while Instant::now() < until {
        let guard = H::lock_timeout(&client, KEY, Duration::from_secs(5)).await.expect("lock");
        H::sleep(Duration::from_millis(100)).await;
        assert!(H::release(guard).await.expect("release").was_held());
        rounds += 1;
    }
    assert_eq!(H::sentinel_primary(&client), Some(topo.primary().addr().to_string()));
    let late = H::connect_sentinel(&topo.url(), config).await.expect("connect with one sentinel answering");
    let guard = H::lock_timeout(&late, KEY, Duration::from_secs(5)).await.expect("lock on the late client");
    assert!(H::release(guard).await.expect("release").was_held());
    println!("[{}] {rounds} lock rounds with 2 of 3 sentinels frozen", H::NAME);
    topo.sentinels.sentinel(0).resume().expect("resume sentinel 0");
    topo.sentinels.sentinel(1).resume().expect("resume sentinel 1");
}

/// Every primitive (semaphore, read-write lock with a downgrade, mutex with its value) works
/// through sentinels, and again on the new primary after a `SENTINEL FAILOVER`, which both
/// clients follow by themselves.
pub async fn sentinel_every_primitive_works_across_a_failover<H: Harness>() {
    let topology = Topology::start(false);
    let client = H::connect(&topology.url()).await.expect("connect");
    let other = H::connect(&topology.url()).await.expect("connect");
    let keys = |round: &str| ["sem", "rw", "mutex"].map(|k| format!("rdlock-test:sentinel-{k}-{round}"));
    crate::harness::every_primitive::<H>(&client, &other, &keys("before")).await;

    let old = topology.primary().addr();
    let switched = Instant::now();
    topology.sentinels.failover().expect("SENTINEL FAILOVER");
    topology.sentinels.wait_for_failover(old.port(), FOLLOW_BOUND).expect("a new primary");
    for c in [&client, &other] {
        while H::sentinel_primary(c).is_none_or(|on| on == old.to_string()) {
            assert!(switched.elapsed() < FOLLOW_BOUND, "[{}] still on the old primary", H::NAME);
            H::sleep(Duration::from_millis(20)).await;
        }
        first_acquisition::<H>(c, switched).await;
    }
    crate::harness::every_primitive::<H>(&client, &other, &keys("after")).await;
}
