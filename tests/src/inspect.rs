//! Cases for operators' calls: `Client::inspect` (checked against the server's own keys) and
//! `Client::force_release` (which wakes the waiters and makes the holder's lease lost).

use std::time::{Duration, Instant};

use rdlock_core::{Acquire, LockKeys, LockKind, Resource, Role, value_key};
use rdlock_driver::{Error, ForceReleaseReply, Inspection, InvalidInput, Json, LockError};

use crate::harness::{Harness, MutexSpec, Task};
use crate::support::{admin, get, options, server};

const PATIENCE: Duration = Duration::from_secs(10);

/// Inspects `key` until `done` holds (up to `PATIENCE`); the inspection that satisfied it.
async fn inspect_until<H: Harness>(
    client: &H::Client,
    key: &str,
    what: &str,
    done: impl Fn(&Inspection) -> bool,
) -> Inspection {
    let started = Instant::now();
    loop {
        let seen = H::inspect(client, key).await.expect("inspect");
        if done(&seen) {
            return seen;
        }
        assert!(started.elapsed() < PATIENCE, "[{}] never saw {what}: {seen:?}", H::NAME);
        H::sleep(Duration::from_millis(10)).await;
    }
}

/// A waiter on `key` (a lock, or `resource`) on its own task: its fence once acquired.
fn waiter<H: Harness>(client: &H::Client, key: &'static str, resource: Resource) -> Task<u64> {
    let client = client.clone();
    H::spawn(async move {
        let how = Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) };
        let opts = options(Duration::from_secs(30), true);
        let g = H::acquire_resource(&client, key, resource, opts, how).await.expect("acquire").expect("held");
        let fence = H::fence(&g);
        H::release(g).await.expect("release");
        fence
    })
}

/// A lock seen by `inspect` agrees with the server's keys (holder, lease, fence, queue in
/// order); a forced release hands it to the queue's head at once and the holder's next renewal
/// reports the lease lost.
pub async fn inspect_reads_a_lock_and_force_release_hands_it_on<H: Harness>() {
    const KEY: &str = "rdlock-test:inspect";
    let server = server();
    let mut conn = admin(&server);
    let client = H::connect(&server.url()).await.expect("connect");
    let free = H::inspect(&client, KEY).await.expect("inspect a free key");
    assert_eq!((free.kind, free.holder.as_deref(), free.waiters.len()), (LockKind::Free, None, 0));
    assert!(!free.is_held());

    // A short lease renewed often, so that the loss shows at the next renewal.
    let how = Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) };
    let holder = H::acquire(&client, KEY, options(Duration::from_millis(600), true), how).await.expect("lock");
    let holder = holder.expect("held");
    let others = [H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect")];
    let first = waiter::<H>(&others[0], KEY, Resource::Lock);
    inspect_until::<H>(&client, KEY, "one waiter", |i| i.waiters.len() == 1).await;
    let second = waiter::<H>(&others[1], KEY, Resource::Lock);
    let seen = inspect_until::<H>(&client, KEY, "two waiters", |i| i.waiters.len() == 2).await;

    // The server's own view, read right after.
    let keys = LockKeys::new(KEY).expect("key");
    let queue: Vec<String> = redis::cmd("LRANGE").arg(&keys.queue).arg(0).arg(-1).query(&mut conn).expect("LRANGE");
    assert_eq!(seen.kind, LockKind::Lock);
    assert!(seen.is_held());
    assert_eq!(seen.holder.as_deref(), Some(&H::token(&holder)[..8]));
    assert!(seen.ttl.is_some_and(|t| t <= Duration::from_millis(600)), "{:?}", seen.ttl);
    assert_eq!(seen.fence, Some(H::fence(&holder)));
    assert_eq!(get(&mut conn, &keys.fence), Some(H::fence(&holder).to_string()));
    let order: Vec<&str> = queue.iter().map(|e| &e[..8]).collect();
    assert_eq!(seen.waiters.iter().map(|w| w.token.as_str()).collect::<Vec<_>>(), order);
    assert!(seen.waiters.iter().all(|w| w.ttl == Some(Duration::from_secs(30)) && w.weight.is_none()));
    assert!(seen.token_prefixes_are_short());

    assert_eq!(H::force_release(&client, KEY).await.expect("force release"), ForceReleaseReply::HandedOff);
    assert!(H::lost_within(&holder, Duration::from_secs(5)).await.is_some(), "the holder learns of the loss");
    let f1 = first.await;
    assert!(f1 > H::fence(&holder), "the first waiter was handed the lock");
    let f2 = second.await;
    assert!(f2 > f1, "then the second");
    drop(holder);
    assert_eq!(H::force_release(&client, KEY).await.expect("force release"), ForceReleaseReply::NotHeld);
    let after = H::inspect(&client, KEY).await.expect("inspect");
    assert_eq!((after.kind, after.fence, after.waiters.len()), (LockKind::Free, Some(f2), 0));
}

trait Short {
    fn token_prefixes_are_short(&self) -> bool;
}

impl Short for Inspection {
    /// Whole tokens never leave the server (they would let a reader release the lock).
    fn token_prefixes_are_short(&self) -> bool {
        let tokens = self.holder.iter().chain(self.waiters.iter().map(|w| &w.token));
        tokens.chain(self.holders.iter().map(|h| &h.token)).all(|t| t.len() == 8)
    }
}

/// A semaphore's holders, capacity and waiters, and a mutex's value, as `inspect` sees them;
/// a forced release of the semaphore serves the waiter that did not fit.
pub async fn inspect_reads_counted_resources_and_a_mutex_value<H: Harness>() {
    const SEM: &str = "rdlock-test:inspect-sem";
    const MUTEX: &str = "rdlock-test:inspect-mutex";
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let how = || Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) };
    let permit = Resource::Permit { capacity: 3 };
    let opts = options(Duration::from_secs(20), true);
    let a = H::acquire_resource(&client, SEM, permit, opts, how()).await.expect("permit").expect("held");
    let b = H::acquire_resource(&client, SEM, permit, opts, how()).await.expect("permit").expect("held");
    let all = waiter::<H>(&client, SEM, Resource::Permits { capacity: 3, count: 3 });
    let seen = inspect_until::<H>(&client, SEM, "a waiter", |i| i.waiters.len() == 1).await;
    assert_eq!((seen.kind, seen.capacity, seen.holder.as_deref()), (LockKind::Counted, Some(3), None));
    assert_eq!(seen.waiters[0].weight, Some(3));
    let mut fences: Vec<_> = seen.holders.iter().map(|h| h.fence).collect();
    fences.sort();
    assert_eq!(fences, vec![Some(H::fence(&a)), Some(H::fence(&b))]);
    assert!(seen.holders.iter().all(|h| h.weight == Some(1) && h.ttl <= Duration::from_secs(20)));
    assert!(seen.token_prefixes_are_short());

    assert_eq!(H::force_release(&client, SEM).await.expect("force release"), ForceReleaseReply::HandedOff);
    assert!(all.await > H::fence(&b), "the waiter for every permit was served");
    assert!(H::lost_within(&a, Duration::from_secs(15)).await.is_some(), "a holder learns of the loss");
    drop((a, b));

    let fresh = H::inspect(&client, MUTEX).await.expect("inspect");
    assert_eq!(fresh.value, None);
    let mut g = H::mutex::<u64, Json>(&client, MUTEX, Json, MutexSpec::default()).await.expect("mutex").expect("held");
    *g = 7;
    let fence = H::mutex_fence::<u64, Json>(&g);
    H::release_mutex(g).await.expect("release");
    let seen = H::inspect(&client, MUTEX).await.expect("inspect");
    assert_eq!((seen.kind, seen.value), (LockKind::Free, Some(Some(fence))));
}

/// Keys that are not rdlock locks (the lock key, or a key beside it, of another type) are
/// refused with `Error::NotALock` and left as they are; a bad key is invalid input.
pub async fn inspect_and_force_release_refuse_other_keys<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    let client = H::connect(&server.url()).await.expect("connect");
    let _: () = redis::cmd("HSET").arg("rdlock-test:a-hash").arg("x").arg("1").query(&mut conn).expect("HSET");
    let queue = LockKeys::name("rdlock-test:odd-queue", Role::Queue).expect("key");
    let _: () = redis::cmd("SET").arg(&queue).arg("x").query(&mut conn).expect("SET");
    let _: () = redis::cmd("SET").arg(value_key("rdlock-test:odd-value")).arg("x").query(&mut conn).expect("SET");
    for key in ["rdlock-test:a-hash", "rdlock-test:odd-queue", "rdlock-test:odd-value"] {
        let refused = H::inspect(&client, key).await;
        assert!(matches!(&refused, Err(Error::NotALock { key: k }) if k == key), "{key}: {refused:?}");
    }
    for key in ["rdlock-test:a-hash", "rdlock-test:odd-queue"] {
        let refused = H::force_release(&client, key).await;
        assert!(matches!(&refused, Err(Error::NotALock { key: k }) if k == key), "{key}: {refused:?}");
    }
    let kept: Option<String> = redis::cmd("HGET").arg("rdlock-test:a-hash").arg("x").query(&mut conn).expect("HGET");
    assert_eq!(kept.as_deref(), Some("1"));
    assert_eq!(get(&mut conn, &queue).as_deref(), Some("x"));
    assert!(matches!(H::inspect(&client, "").await, Err(Error::InvalidInput(InvalidInput::EmptyKey))));

    // A failing forced release writes nothing: a held key with a waiter and a corrupt fence
    // counter (the hand-off's fence cannot be issued) is left exactly as it was.
    let broken = LockKeys::new("rdlock-test:broken").expect("key");
    let _: () = redis::cmd("SET").arg(&broken.lock).arg("holder-token").query(&mut conn).expect("SET");
    let _: () = redis::cmd("SET").arg(&broken.fence).arg("not-a-number").query(&mut conn).expect("SET");
    let entry = format!("waiter-token:30000:i{}", "0".repeat(16));
    let _: () = redis::cmd("RPUSH").arg(&broken.queue).arg(&entry).query(&mut conn).expect("RPUSH");
    let dump = |conn: &mut redis::Connection| -> Vec<Option<Vec<u8>>> {
        [&broken.lock, &broken.fence, &broken.queue]
            .iter()
            .map(|k| redis::cmd("DUMP").arg(k).query(conn).expect("DUMP"))
            .collect()
    };
    let before = dump(&mut conn);
    let refused = H::force_release(&client, "rdlock-test:broken").await;
    assert!(matches!(&refused, Err(Error::Lock(LockError::Server(s))) if s.code == "RDLOCK"), "{refused:?}");
    assert_eq!(dump(&mut conn), before, "nothing written");
    let free = H::force_release(&client, "rdlock-test:nothing").await.expect("force release of a free key");
    assert_eq!(free, ForceReleaseReply::NotHeld);
}

/// On a cluster, `inspect` and `force_release` go to the key's slot's primary (they were
/// sent to the seed and answered `MOVED`), for keys on every shard.
pub async fn inspect_and_force_release_follow_the_cluster_slots<H: Harness>() {
    let cluster = rdlock_testkit::Cluster::start(3, 0).expect("a cluster");
    let url = format!("redis+cluster://{}", cluster.nodes()[0].addr());
    let client = H::connect(&url).await.expect("connect");
    // Three keys whose slots lie on different primaries.
    let keys = ["inspect-a", "inspect-b", "inspect-c", "inspect-d", "inspect-e", "inspect-f"];
    let mut seen_nodes = std::collections::HashSet::new();
    for key in keys {
        seen_nodes.insert(cluster.primary_for_key(key).expect("slot owner").addr());
        let guard = H::lock(&client, key).await.expect("lock");
        let seen = H::inspect(&client, key).await.expect("inspect");
        assert!(seen.is_held(), "[{}] {key}: {seen:?}", H::NAME);
        assert_eq!(seen.fence, Some(H::fence(&guard)));
        assert_eq!(H::force_release(&client, key).await.expect("force release"), ForceReleaseReply::Released);
        assert!(!H::inspect(&client, key).await.expect("inspect").is_held());
        drop(guard);
    }
    assert_eq!(seen_nodes.len(), 3, "the keys cover every shard");
}
