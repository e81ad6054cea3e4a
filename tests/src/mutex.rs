//! Cases for the mutex — a lock whose value lives beside it — run for every runtime like the
//! lock's cases.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, Confirm, InvalidInput, LockError, LockOptions, value_key};
use rdlock_driver::{Bytes, ClientConfig, DEFAULT_MAX_VALUE, Error, Json, ReleaseOutcome};
use rdlock_testkit::{Proxy, Replicated};

use crate::harness::{Harness, MutexSpec, Value, ValueCodec, join_all};
use crate::support::{admin, assert_clean, exists, ms, options, script_calls, server, wait_until};

const KEY: &str = "rdlock-test:mutex";
/// Long enough that no case here outlives it unless something is wrong.
const PATIENCE: Duration = Duration::from_secs(10);

/// Waits (up to `PATIENCE`) until the mutex at `KEY` is held with these options.
async fn take<H: Harness, T: Value, C: ValueCodec<T>>(
    client: &H::Client,
    codec: C,
    options: LockOptions,
) -> Result<H::MutexGuard<T, C>, Error> {
    let how = Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) };
    let spec = MutexSpec { options, how, ..MutexSpec::default() };
    H::mutex(client, KEY, codec, spec).await?.ok_or(Error::Closed)
}

/// A counter in the mutex at `KEY`, with the default options.
async fn counter<H: Harness>(client: &H::Client) -> H::MutexGuard<u64, Json> {
    take::<H, u64, Json>(client, Json, LockOptions::default()).await.expect("the mutex")
}

/// `HGET` of a field of the value key of `KEY`.
fn stored(conn: &mut redis::Connection, field: &str) -> Option<Vec<u8>> {
    redis::cmd("HGET").arg(value_key(KEY)).arg(field).query(conn).expect("HGET")
}

/// The fence recorded with the stored value.
fn stored_fence(conn: &mut redis::Connection) -> Option<u64> {
    stored(conn, "f").map(|f| String::from_utf8(f).expect("utf-8").parse().expect("a fence"))
}

/// `PTTL` of the value key.
fn value_pttl(conn: &mut redis::Connection) -> i64 {
    redis::cmd("PTTL").arg(value_key(KEY)).query(conn).expect("PTTL")
}

fn released(outcome: Result<ReleaseOutcome, Error>) {
    assert_eq!(outcome.expect("release"), ReleaseOutcome::Released);
}

// ------------------------------------------------------------------------------ 1

/// Eight tasks on two clients each add 1 to a counter kept in a `Mutex<u64>` 200 times:
/// the counter ends at exactly 1600, written by the last holder.
pub async fn a_counter_in_a_mutex_ends_exact<H: Harness>() {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 200;
    let server = server();
    let clients =
        [H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect")];
    let started = Instant::now();
    let tasks = (0..TASKS)
        .map(|t| {
            let client = clients[(t % 2) as usize].clone();
            H::spawn(async move {
                for _ in 0..ROUNDS {
                    let how = Acquire::Wait { deadline: Some(Instant::now() + Duration::from_secs(30)) };
                    let spec = MutexSpec { how, ..MutexSpec::default() };
                    let mut g = H::mutex::<u64, Json>(&client, KEY, Json, spec).await.expect("lock").expect("held");
                    *g += 1;
                    released(H::release_mutex(g).await);
                }
            })
        })
        .collect();
    join_all(tasks).await;
    println!("[{}] {} increments in {:.0} ms", H::NAME, TASKS * ROUNDS, ms(started.elapsed()));
    let g = counter::<H>(&clients[0]).await;
    assert_eq!(*g, TASKS * ROUNDS, "an increment was lost or doubled");
    assert!(H::written_by::<u64, Json>(&g).is_some_and(|f| f < H::mutex_fence::<u64, Json>(&g)));
    assert_eq!(stored(&mut admin(&server), "v").as_deref(), Some(&b"1600"[..]), "stored as JSON");
    released(H::release_mutex(g).await);
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 2

/// A holder whose connection freezes past its lease writes its value back too late: another
/// client has taken the mutex and written meanwhile. The late write is refused by the server
/// (`Lost`), its release is `Lost` too, and the other's value survives.
pub async fn a_frozen_holders_write_back_is_refused<H: Harness>() {
    let server = server();
    let proxy = Proxy::start(server.addr()).expect("start a proxy");
    // Long enough that the frozen store is answered once the connection thaws.
    let config = ClientConfig { response_timeout: Duration::from_secs(20), ..ClientConfig::default() };
    let frozen = H::connect_with(&proxy.url(), config).await.expect("connect through the proxy");
    let other = H::connect(&server.url()).await.expect("connect");
    let mut a = take::<H, u64, Json>(&frozen, Json, options(Duration::from_millis(500), false)).await.expect("held");
    let a_fence = H::mutex_fence::<u64, Json>(&a);
    *a = 1;
    proxy.pause();
    let writer = H::spawn(async move {
        let stored = H::store::<u64, Json>(&mut a).await;
        (stored, H::release_mutex(a).await)
    });
    let mut b = take::<H, u64, Json>(&other, Json, LockOptions::default()).await.expect("held once a expired");
    let b_fence = H::mutex_fence::<u64, Json>(&b);
    assert!(b_fence > a_fence);
    assert_eq!(*b, 0, "a's value was never written");
    *b = 2;
    released(H::release_mutex(b).await);
    proxy.resume();
    let (stored_a, released_a) = writer.await;
    assert!(matches!(stored_a, Err(Error::Lost(_))), "the frozen store: {stored_a:?}");
    assert!(matches!(released_a, Err(Error::Lost(_))), "the frozen release: {released_a:?}");
    let mut conn = admin(&server);
    assert_eq!(stored(&mut conn, "v").as_deref(), Some(&b"2"[..]), "the other's value was overwritten");
    assert_eq!(stored_fence(&mut conn), Some(b_fence));
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 3

/// A value of 1 MiB (the default limit) round trips; one byte more is refused with a typed
/// error before anything is sent, and the lock is released without writing.
pub async fn a_mebibyte_value_round_trips<H: Harness>() {
    const MIB: usize = 1024 * 1024;
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let big: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let mut g = take::<H, Vec<u8>, Bytes>(&client, Bytes, LockOptions::default()).await.expect("held");
    assert!(g.is_empty(), "a fresh mutex holds no bytes");
    g.clone_from(&big);
    released(H::release_mutex(g).await);
    let mut g = take::<H, Vec<u8>, Bytes>(&client, Bytes, LockOptions::default()).await.expect("held");
    assert!(*g == big, "the value came back changed ({} bytes)", g.len());
    g.push(0);
    let mut stats = admin(&server);
    let calls = script_calls(&mut stats);
    let too_large = |e: Option<&Error>| {
        matches!(e, Some(Error::InvalidInput(InvalidInput::ValueTooLarge { len, max }))
            if *len == MIB + 1 && *max == DEFAULT_MAX_VALUE)
    };
    let e = H::store::<Vec<u8>, Bytes>(&mut g).await;
    assert!(too_large(e.as_ref().err()), "{e:?}");
    assert_eq!(script_calls(&mut stats), calls, "a value too large was sent");
    assert!(exists(&mut stats, KEY), "the lock is still held after a refused store");
    let e = H::release_mutex(g).await;
    assert!(too_large(e.as_ref().err()), "{e:?}");
    wait_until("the refused release's lock is released", PATIENCE, || !exists(&mut stats, KEY));
    let g = take::<H, Vec<u8>, Bytes>(&client, Bytes, LockOptions::default()).await.expect("held");
    assert!(*g == big, "the refused value was written");
    released(H::discard(g).await);
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 4

/// A stored value that does not decode is a typed error naming the key; the lock is free
/// when the caller hears it, and the stored bytes are untouched. A value that does not
/// encode is a typed error too, and nothing is written.
pub async fn a_corrupt_value_is_a_typed_decode_error<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let mut conn = admin(&server);
    redis::cmd("HSET")
        .arg(value_key(KEY))
        .arg("f")
        .arg(5)
        .arg("v")
        .arg(b"{not json".as_slice())
        .exec(&mut conn)
        .expect("HSET");
    match take::<H, u64, Json>(&client, Json, LockOptions::default()).await {
        Err(Error::Decode { key, source }) => {
            assert_eq!(key, KEY);
            assert!(source.downcast_ref::<serde_json::Error>().is_some(), "{source}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(!exists(&mut conn, KEY), "the lock was not released before the error");
    assert_eq!(stored(&mut conn, "v").as_deref(), Some(&b"{not json"[..]), "the stored bytes changed");
    // The raw bytes are there for whoever repairs them.
    let g = take::<H, Vec<u8>, Bytes>(&client, Bytes, LockOptions::default()).await.expect("held");
    assert_eq!(&g[..], b"{not json");
    assert_eq!(H::written_by::<Vec<u8>, Bytes>(&g), Some(5));
    released(H::discard(g).await);

    // JSON object keys must be strings: a map keyed by byte strings does not encode.
    redis::cmd("DEL").arg(value_key(KEY)).exec(&mut conn).expect("DEL");
    let mut g = take::<H, BTreeMap<Vec<u8>, u8>, Json>(&client, Json, LockOptions::default()).await.expect("held");
    g.insert(vec![1], 1);
    let e = H::store::<BTreeMap<Vec<u8>, u8>, Json>(&mut g).await;
    assert!(matches!(&e, Err(Error::Encode { key, .. }) if key == KEY), "{e:?}");
    let e = H::release_mutex(g).await;
    assert!(matches!(&e, Err(Error::Encode { key, .. }) if key == KEY), "{e:?}");
    wait_until("the lock is released", PATIENCE, || !exists(&mut conn, KEY));
    assert!(!exists(&mut conn, &value_key(KEY)), "a value was written");
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 5

/// A value key of another type fails the acquisition with the server's typed error, and
/// leaves the lock free and the key as it was.
pub async fn a_value_key_of_another_type_is_refused<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let mut conn = admin(&server);
    redis::cmd("SET").arg(value_key(KEY)).arg("a string").exec(&mut conn).expect("SET");
    let e = take::<H, u64, Json>(&client, Json, LockOptions::default()).await;
    assert!(
        matches!(&e, Err(Error::Lock(LockError::Server(s))) if s.code == "RDLOCK" && s.message.contains("another type")),
        "{e:?}"
    );
    assert!(!exists(&mut conn, KEY), "the lock key was left behind");
    let kept: String = redis::cmd("GET").arg(value_key(KEY)).query(&mut conn).expect("GET");
    assert_eq!(kept, "a string");
    // The failed acquisition is given up in the background: the client forgets it soon.
    let start = Instant::now();
    while H::tracked(&client) != 0 {
        assert!(start.elapsed() < PATIENCE, "the failed acquisition is still tracked");
        H::sleep(Duration::from_millis(10)).await;
    }
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 6

/// Each holder reads the fence of the holder that last wrote the value: none at first, then
/// the writer's (a release that writes, or a store mid-hold), kept by holders that do not
/// write.
pub async fn written_by_is_the_previous_writers_fence<H: Harness>() {
    let server = server();
    let (a, b) = (H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect"));
    let mut g = counter::<H>(&a).await;
    assert_eq!(H::written_by::<u64, Json>(&g), None, "a fresh mutex has no writer");
    let attempt = MutexSpec { how: Acquire::Try, ..MutexSpec::default() };
    let busy = H::mutex::<u64, Json>(&b, KEY, Json, attempt).await.expect("try_lock");
    assert!(busy.is_none(), "a second holder beside the first");
    let first = H::mutex_fence::<u64, Json>(&g);
    *g = 10;
    released(H::release_mutex(g).await);
    let g = counter::<H>(&b).await;
    assert_eq!((*g, H::written_by::<u64, Json>(&g)), (10, Some(first)));
    released(H::release_mutex(g).await);
    let mut g = counter::<H>(&a).await;
    assert_eq!(H::written_by::<u64, Json>(&g), Some(first), "an unmodified release wrote");
    let storer = H::mutex_fence::<u64, Json>(&g);
    *g = 11;
    H::store::<u64, Json>(&mut g).await.expect("store");
    assert_eq!(stored_fence(&mut admin(&server)), Some(storer));
    released(H::release_mutex(g).await);
    let g = counter::<H>(&b).await;
    assert_eq!((*g, H::written_by::<u64, Json>(&g)), (11, Some(storer)));
    released(H::release_mutex(g).await);
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 7

/// A guard dropped without a release frees the lock and writes nothing, whatever was done
/// to the value; so does `discard`.
pub async fn a_dropped_guard_writes_nothing<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let mut conn = admin(&server);
    let mut g = counter::<H>(&client).await;
    *g = 3;
    released(H::release_mutex(g).await);
    let mut g = counter::<H>(&client).await;
    *g = 99;
    drop(g);
    wait_until("the dropped guard's lock is released", PATIENCE, || !exists(&mut conn, KEY));
    let mut g = counter::<H>(&client).await;
    assert_eq!(*g, 3, "the dropped guard wrote its value");
    *g = 98;
    released(H::discard(g).await);
    let g = counter::<H>(&client).await;
    assert_eq!(*g, 3, "the discarded value was written");
    released(H::release_mutex(g).await);
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 8

/// Releasing a guard whose value was only read sends a plain release (one script call); a
/// modified one sends the store in front of it (two, in one round trip).
pub async fn an_unmodified_release_sends_no_store<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let mut stats = admin(&server);
    // No renewals: every script call counted is the release's.
    let quiet = options(Duration::from_secs(30), false);
    let mut g = take::<H, u64, Json>(&client, Json, quiet).await.expect("held");
    *g = 7;
    released(H::release_mutex(g).await);
    let g = take::<H, u64, Json>(&client, Json, quiet).await.expect("held");
    let calls = script_calls(&mut stats);
    assert_eq!(*g, 7);
    released(H::release_mutex(g).await);
    assert_eq!(script_calls(&mut stats) - calls, 1, "an unmodified release sent a store");
    let mut g = take::<H, u64, Json>(&client, Json, quiet).await.expect("held");
    let calls = script_calls(&mut stats);
    *g += 1;
    released(H::release_mutex(g).await);
    assert_eq!(script_calls(&mut stats) - calls, 2, "a modified release: the store and the release");
    let g = take::<H, u64, Json>(&client, Json, quiet).await.expect("held");
    assert_eq!(*g, 8);
    released(H::release_mutex(g).await);
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 9

/// By default the value has no TTL (it outlives the lock); a value TTL applies from each
/// write, and a later write without one removes it.
pub async fn a_value_ttl_applies_only_when_asked<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let mut conn = admin(&server);
    let mut g = counter::<H>(&client).await;
    *g = 1;
    released(H::release_mutex(g).await);
    assert_eq!(value_pttl(&mut conn), -1, "a value with a TTL by default");
    let how = Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) };
    let spec = MutexSpec { value_ttl: Some(Duration::from_secs(60)), how, ..MutexSpec::default() };
    let mut g = H::mutex::<u64, Json>(&client, KEY, Json, spec).await.expect("lock").expect("held");
    *g = 2;
    released(H::release_mutex(g).await);
    let pttl = value_pttl(&mut conn);
    assert!(pttl > 0 && pttl <= 60_000, "value ttl 60 s, PTTL {pttl}");
    let mut g = counter::<H>(&client).await;
    assert_eq!(*g, 2);
    *g = 3;
    released(H::release_mutex(g).await);
    assert_eq!(value_pttl(&mut conn), -1, "a write without a value TTL kept the old one");
    assert_clean(&server, &[&value_key(KEY)]);
}

// ------------------------------------------------------------------------------ 10

/// The options' confirmation covers the write-back: a confirmed release leaves the value on
/// the replica; with the replica gone, a store and a release report the shortfall (the value
/// is written on the primary, and the lock released).
pub async fn confirm_covers_the_write_back<H: Harness>() {
    let set = Replicated::start(1).expect("start a primary with a replica");
    let client = H::connect(&set.primary().url()).await.expect("connect");
    let confirmed = |timeout| LockOptions {
        confirm: Confirm::AtLeast { replicas: 1, timeout },
        ..options(Duration::from_secs(30), true)
    };
    let mut g = take::<H, u64, Json>(&client, Json, confirmed(Duration::from_secs(2))).await.expect("held");
    *g = 42;
    released(H::release_mutex(g).await);
    let mut replica = admin(set.replica(0));
    assert_eq!(stored(&mut replica, "v").as_deref(), Some(&b"42"[..]), "confirmed, yet not on the replica");

    let mut g = take::<H, u64, Json>(&client, Json, confirmed(Duration::from_millis(300))).await.expect("held");
    set.replica(0).pause().expect("SIGSTOP the replica");
    set.primary().client_kill_type("replica").expect("CLIENT KILL TYPE replica");
    *g = 43;
    let e = H::store::<u64, Json>(&mut g).await;
    assert!(matches!(e, Err(Error::ReplicationShortfall { acked: 0, wanted: 1 })), "store: {e:?}");
    *g = 44;
    let e = H::release_mutex(g).await;
    assert!(matches!(e, Err(Error::ReplicationShortfall { acked: 0, wanted: 1 })), "release: {e:?}");
    let mut primary = admin(set.primary());
    assert!(!exists(&mut primary, KEY), "the lock was not released");
    assert_eq!(stored(&mut primary, "v").as_deref(), Some(&b"44"[..]), "not written on the primary");
    set.replica(0).resume().expect("SIGCONT the replica");
    assert_clean(set.primary(), &[&value_key(KEY)]);
}
