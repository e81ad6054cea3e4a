//! Cases of a least-privilege ACL user: one key pattern and one channel pattern cover every
//! name of a namespace's locks (`rdlock_driver::acl_rule`), so every primitive works; a key
//! outside the namespace, or a user without the channel pattern, gets a typed error at once.

use std::time::{Duration, Instant};

use rdlock_core::{Acquire, LockOptions, Resource};
use rdlock_driver::{Bytes, Error, acl_rule};

use crate::harness::{Harness, MutexSpec};
use crate::support::{admin, server};

const PATIENCE: Duration = Duration::from_secs(10);

fn wait() -> Acquire {
    Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) }
}

/// `ACL SETUSER name on >pw` with `rule`, on the server's admin connection.
fn set_user(conn: &mut redis::Connection, name: &str, rule: &str) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(name).arg("on").arg(">pw");
    for part in rule.split_whitespace() {
        cmd.arg(part);
    }
    cmd.query::<()>(conn).expect("ACL SETUSER");
}

fn user_url(url: &str, name: &str) -> String {
    url.replacen("redis://", &format!("redis://{name}:pw@"), 1)
}

/// A user granted `acl_rule("orders:")` takes a lock (with a hand-off to a waiter on another
/// client), a semaphore's permit, read and write shares, and a mutex with its value; a key
/// of another namespace is refused with `Error::NoPermission`, and nothing of it is written.
pub async fn an_acl_user_of_one_namespace_uses_every_primitive<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    set_user(&mut conn, "orders", &acl_rule("orders:"));
    let url = user_url(&server.url(), "orders");
    let (a, b) = (H::connect(&url).await.expect("connect"), H::connect(&url).await.expect("connect"));

    // A lock, handed off to a waiter on the other client (its inbox channel is in the
    // namespace too).
    let held = H::lock(&a, "orders:1").await.expect("lock");
    let waiter = {
        let b = b.clone();
        H::spawn(async move { H::lock(&b, "orders:1").await.expect("lock after the hand-off") })
    };
    let started = Instant::now();
    while H::inspect(&a, "orders:1").await.expect("inspect").waiters.is_empty() {
        assert!(started.elapsed() < PATIENCE, "the waiter never queued");
        H::sleep(Duration::from_millis(5)).await;
    }
    assert!(H::release(held).await.expect("release").was_held());
    let next = waiter.await;
    assert!(H::fence(&next) > 0);
    H::release(next).await.expect("release");

    let opts = LockOptions::default();
    for resource in [Resource::Permit { capacity: 2 }, Resource::Read, Resource::Write] {
        let g = H::acquire_resource(&a, "orders:shared", resource, opts, wait()).await.expect("acquire");
        H::release(g.expect("held")).await.expect("release");
    }
    let mut m = H::mutex::<Vec<u8>, Bytes>(&a, "orders:m", Bytes, MutexSpec::default()).await.expect("mutex");
    let m_guard = m.as_mut().expect("held");
    **m_guard = b"v1".to_vec();
    H::release_mutex(m.expect("held")).await.expect("release the mutex");
    let again = H::mutex::<Vec<u8>, Bytes>(&b, "orders:m", Bytes, MutexSpec::default()).await.expect("mutex");
    assert_eq!(&***again.as_ref().expect("held"), b"v1");
    H::discard(again.expect("held")).await.expect("discard");

    // Outside the namespace: refused, typed, and nothing written.
    match H::lock(&a, "billing:1").await {
        Err(Error::NoPermission(e)) => assert_eq!(e.code, "NOPERM"),
        other => panic!("[{}] expected NoPermission, got {other:?}", H::NAME),
    }
    let keys: Vec<String> = redis::cmd("KEYS").arg("billing*").query(&mut conn).expect("KEYS");
    assert!(keys.is_empty(), "{keys:?}");
}

/// A user whose ACL grants the keys but not the channels: a lock that is free is taken (no
/// subscription is needed); a wait for a held one fails with `Error::NoPermission` at its
/// subscription instead of hanging to its deadline; and its release, which may not announce
/// the hand-off to the next waiter (another user's), still hands the lock on, as an unheard
/// claim the waiter finds by its poll. (Before, the release script stopped at the refused
/// `PUBLISH` with an error, half-way through its writes.)
pub async fn a_user_without_the_channel_pattern_gets_a_typed_error_at_the_first_wait<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    set_user(&mut conn, "keysonly", &acl_rule("jobs:").replace("&jobs:*", ""));
    let client = H::connect(&user_url(&server.url(), "keysonly")).await.expect("connect");
    let held = H::lock(&client, "jobs:1").await.expect("a free lock needs no channel");

    // A waiter of the default user, queued behind it.
    let other = H::connect(&server.url()).await.expect("connect");
    let waiter = {
        let other = other.clone();
        H::spawn(async move { H::lock(&other, "jobs:1").await.expect("lock after the hand-off") })
    };
    let started = Instant::now();
    while H::inspect(&other, "jobs:1").await.expect("inspect").waiters.is_empty() {
        assert!(started.elapsed() < PATIENCE, "the waiter never queued");
        H::sleep(Duration::from_millis(5)).await;
    }

    // A deadline past the case's budget: only the typed error ends this wait in time.
    let how = Acquire::Wait { deadline: Some(Instant::now() + Duration::from_secs(60)) };
    match H::acquire(&client, "jobs:1", LockOptions::default(), how).await {
        Err(Error::NoPermission(e)) => assert_eq!(e.code, "NOPERM"),
        other => panic!("[{}] expected NoPermission, got {other:?}", H::NAME),
    }
    assert!(H::release(held).await.expect("the release hands on without announcing").was_held());
    let next = waiter.await;
    assert!(H::fence(&next) > 0);
    H::release(next).await.expect("release");
}
