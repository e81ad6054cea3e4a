//! Cases for the counted resources — semaphore permits and read-write lock shares — run for
//! every runtime like the lock's cases.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdlock_core::{
    Acquire, Confirm, InvalidInput, LockError, LockOptions, MAX_CAPACITY, PermitKeys, Resource, Sharing,
};
use rdlock_driver::Error;
use rdlock_testkit::Proxy;

use crate::harness::{Harness, join_all};
use crate::support::{admin, assert_clean, inbox_subscribers, llen, ms, options, script_calls, server, wait_until};

const KEY: &str = "rdlock-test:counted";
/// Long enough that no case here outlives it unless something is wrong.
const PATIENCE: Duration = Duration::from_secs(10);
/// Scheduling slack on a loaded 2-core machine, for bounds that are timers, not round trips.
const SLACK: Duration = Duration::from_millis(400);

/// Waits until `resource` of `KEY` is held, with these options, or `timeout` passes.
async fn take<H: Harness>(
    client: &H::Client,
    resource: Resource,
    opts: LockOptions,
    timeout: Duration,
) -> Result<H::Guard, Error> {
    let how = Acquire::Wait { deadline: Some(Instant::now() + timeout) };
    H::acquire_resource(client, KEY, resource, opts, how).await?.ok_or(Error::Closed)
}

/// Waits until `queued` waiters are in `KEY`'s queue, all subscribed to their inboxes.
fn wait_for_waiters(server: &rdlock_testkit::RedisServer, queued: usize, subscribers: u64) {
    let mut conn = admin(server);
    let queue = PermitKeys::derive(KEY).queue;
    wait_until(&format!("{queued} waiter(s) queued"), PATIENCE, || {
        llen(&mut conn, &queue) == queued && inbox_subscribers(&mut conn, KEY) == subscribers
    });
}

// ------------------------------------------------------------------------------ 1

/// Eight tasks on two clients take permits of a 3-permit semaphore four times each, holding
/// each for 5 ms: never more than 3 inside at once, 3 at some point, every fence distinct.
pub async fn semaphore_never_exceeds_its_capacity<H: Harness>() {
    const CAPACITY: u32 = 3;
    const TASKS: usize = 8;
    let server = server();
    let clients =
        [H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect")];
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..TASKS)
        .map(|t| {
            let client = clients[t % 2].clone();
            let (inside, peak, fences) = (inside.clone(), peak.clone(), fences.clone());
            H::spawn(async move {
                for _ in 0..4 {
                    let opts = LockOptions::default();
                    let g = take::<H>(&client, Resource::Permit { capacity: CAPACITY }, opts, PATIENCE)
                        .await
                        .expect("a permit");
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    assert!(n <= CAPACITY as usize, "{n} permits of {CAPACITY} held at once");
                    fences.lock().expect("fences").push(H::fence(&g));
                    H::sleep(Duration::from_millis(5)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    assert!(H::release(g).await.expect("release").was_held());
                }
            })
        })
        .collect();
    join_all(tasks).await;
    let mut fences = fences.lock().expect("fences").clone();
    let n = fences.len();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), n, "a fence was issued twice");
    assert_eq!(peak.load(Ordering::SeqCst), CAPACITY as usize, "the permits were never all in use at once");
    println!("[{}] {n} permits of {CAPACITY}, at most {CAPACITY} at once", H::NAME);
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 2

/// Six readers and two writers on two clients: readers overlap, a writer is alone.
pub async fn readers_share_and_a_writer_is_alone<H: Harness>() {
    let server = server();
    let clients =
        [H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect")];
    let readers_in = Arc::new(AtomicUsize::new(0));
    let writers_in = Arc::new(AtomicUsize::new(0));
    let peak_readers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let client = clients[t % 2].clone();
        let (readers_in, writers_in, peak) = (readers_in.clone(), writers_in.clone(), peak_readers.clone());
        let writer = t >= 6;
        tasks.push(H::spawn(async move {
            for _ in 0..4 {
                let resource = if writer { Resource::Write } else { Resource::Read };
                let g = take::<H>(&client, resource, LockOptions::default(), PATIENCE).await.expect("a share");
                if writer {
                    let w = writers_in.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(w == 1 && readers_in.load(Ordering::SeqCst) == 0, "a writer beside another holder");
                    H::sleep(Duration::from_millis(5)).await;
                    writers_in.fetch_sub(1, Ordering::SeqCst);
                } else {
                    let r = readers_in.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(r, Ordering::SeqCst);
                    assert_eq!(writers_in.load(Ordering::SeqCst), 0, "a reader beside a writer");
                    H::sleep(Duration::from_millis(20)).await;
                    readers_in.fetch_sub(1, Ordering::SeqCst);
                }
                assert!(H::release(g).await.expect("release").was_held());
            }
        }));
    }
    join_all(tasks).await;
    let peak = peak_readers.load(Ordering::SeqCst);
    println!("[{}] readers and writers: up to {peak} readers at once", H::NAME);
    assert!(peak > 1, "readers never overlapped");
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 3

/// Three readers take the read lock again and again (30 ms holds, no pause); a writer that
/// asks meanwhile is served once the readers ahead of it leave, not when the stream stops.
pub async fn a_writer_is_not_starved_by_a_stream_of_readers<H: Harness>() {
    const STREAM: Duration = Duration::from_secs(3);
    let server = server();
    let readers = H::connect(&server.url()).await.expect("connect");
    let writer = H::connect(&server.url()).await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (client, stop) = (readers.clone(), stop.clone());
            H::spawn(async move {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < STREAM {
                    let g = take::<H>(&client, Resource::Read, LockOptions::default(), PATIENCE).await.expect("read");
                    H::sleep(Duration::from_millis(30)).await;
                    assert!(H::release(g).await.expect("release").was_held());
                }
            })
        })
        .collect();
    H::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let g = take::<H>(&writer, Resource::Write, LockOptions::default(), PATIENCE).await.expect("write");
    let waited = asked.elapsed();
    stop.store(true, Ordering::SeqCst);
    println!("[{}] a writer among streaming readers waited {:.1} ms", H::NAME, ms(waited));
    // The readers ahead of it hold 30 ms; starved, it would wait for the stream's end (3 s).
    assert!(waited < Duration::from_millis(30) + SLACK * 2, "the writer waited {waited:?}");
    assert!(H::release(g).await.expect("release").was_held());
    join_all(tasks).await;
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 4

/// A reader whose client is cut off (connections closed, new ones refused) never releases:
/// its share expires by itself, and a waiting writer holds the lock within the reader's TTL
/// plus a poll cap.
pub async fn a_crashed_readers_share_expires<H: Harness>() {
    let server = server();
    let proxy = Proxy::start(server.addr()).expect("start a proxy");
    let cut_off = H::connect(&proxy.url()).await.expect("connect through the proxy");
    let writer = H::connect(&server.url()).await.expect("connect");
    // Long enough that a loaded machine's slow first grant is not refused as too late.
    let ttl = Duration::from_millis(1000);
    let reader = take::<H>(&cut_off, Resource::Read, options(ttl, true), PATIENCE).await.expect("read");
    proxy.refuse(true);
    proxy.cut();
    let cut = Instant::now();
    let waiting = LockOptions { poll_cap: Duration::from_millis(200), ..options(Duration::from_secs(5), true) };
    let g = take::<H>(&writer, Resource::Write, waiting, PATIENCE).await.expect("write");
    let took = cut.elapsed();
    println!("[{}] a crashed reader's share (ttl 1 s) gave way after {:.1} ms", H::NAME, ms(took));
    assert!(took < ttl + waiting.poll_cap + SLACK, "took {took:?}");
    assert!(H::fence(&g) > H::fence(&reader));
    assert!(H::release(g).await.expect("release").was_held());
    drop(reader);
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 5

/// Bad input is a typed error and leaves nothing behind: a capacity of 0 or above the limit,
/// shared mode, a capacity other than the stored one, a lock and a semaphore on one key.
pub async fn counted_resources_refuse_bad_input<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let how = Acquire::Wait { deadline: Some(Instant::now() + PATIENCE) };
    for capacity in [0, MAX_CAPACITY + 1] {
        let e = H::acquire_resource(&client, KEY, Resource::Permit { capacity }, LockOptions::default(), how).await;
        assert!(
            matches!(e, Err(Error::InvalidInput(InvalidInput::CapacityOutOfRange { .. }))),
            "capacity {capacity}: {:?}",
            e.map(|_| ())
        );
    }
    let shared =
        LockOptions { sharing: Sharing::Foreign { courtesy: Duration::from_millis(50) }, ..LockOptions::default() };
    let e = H::acquire_resource(&client, KEY, Resource::Read, shared, how).await;
    assert!(matches!(e, Err(Error::InvalidInput(InvalidInput::SharedModeIsForLocks))), "{:?}", e.map(|_| ()));
    let held =
        take::<H>(&client, Resource::Permit { capacity: 2 }, LockOptions::default(), PATIENCE).await.expect("a permit");
    let mismatch =
        H::acquire_resource(&client, KEY, Resource::Permit { capacity: 3 }, LockOptions::default(), Acquire::Try).await;
    assert!(
        matches!(&mismatch, Err(Error::Lock(LockError::Server(e))) if e.code == "RDLOCK" && e.message.contains("capacity mismatch")),
        "{:?}",
        mismatch.map(|_| ())
    );
    let lock = H::try_lock(&client, KEY).await;
    assert!(matches!(&lock, Err(Error::Lock(LockError::Server(e))) if e.code == "WRONGTYPE"), "{:?}", lock.map(|_| ()));
    assert!(H::release(held).await.expect("release").was_held());
    let lock = H::lock(&client, KEY).await.expect("a lock, once the semaphore is gone");
    let sem =
        H::acquire_resource(&client, KEY, Resource::Permit { capacity: 2 }, LockOptions::default(), Acquire::Try).await;
    assert!(matches!(&sem, Err(Error::Lock(LockError::Server(e))) if e.code == "WRONGTYPE"), "{:?}", sem.map(|_| ()));
    assert!(H::release(lock).await.expect("release").was_held());
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 6

/// A permit that too few replicas confirm is released again, and nothing is left.
pub async fn a_permit_confirm_shortfall_leaves_nothing<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let confirm = Confirm::AtLeast { replicas: 1, timeout: Duration::from_millis(50) };
    let opts = LockOptions { confirm, ..LockOptions::default() };
    let e = take::<H>(&client, Resource::Permit { capacity: 2 }, opts, PATIENCE).await;
    assert!(matches!(e, Err(Error::ReplicationShortfall { acked: 0, wanted: 1 })), "{:?}", e.map(|_| ()));
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 7

/// A freed permit goes to the queued waiter in the release script, and the waiter, hearing
/// it on its inbox, holds it with no round trip of its own (one script call per hand-off).
pub async fn a_freed_permit_is_handed_to_the_waiter<H: Harness>() {
    let server = server();
    let (a, b) = (H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect"));
    let sem = Resource::Permit { capacity: 1 };
    let waiting = LockOptions { poll_cap: Duration::from_secs(10), ..LockOptions::default() };
    let mut stats = admin(&server);
    // Twice: b's first wait re-checks once after its inbox subscription is confirmed, which may
    // land in the window; its second finds the inbox still subscribed (it lingers).
    for round in 1..=2 {
        let held = take::<H>(&a, sem, LockOptions::default(), PATIENCE).await.expect("a permit");
        let b = b.clone();
        let waiter = H::spawn(async move {
            let g = take::<H>(&b, sem, waiting, PATIENCE).await.expect("a permit");
            (Instant::now(), g)
        });
        wait_for_waiters(&server, 1, 1);
        let scripts = script_calls(&mut stats);
        let released = Instant::now();
        assert!(H::release(held).await.expect("release").was_held());
        let (acquired, g) = waiter.await;
        let took = acquired.saturating_duration_since(released);
        println!("[{}] permit hand-off: {:.2} ms", H::NAME, ms(took));
        if round == 2 {
            assert_eq!(script_calls(&mut stats) - scripts, 1, "the waiter confirmed the hand-off");
        }
        assert!(took < Duration::from_millis(900), "the waiter polled instead: {took:?}");
        assert!(H::release(g).await.expect("release").was_held());
    }
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 8

/// A writer downgrades: it keeps holding as a reader, the two readers queued behind it hold
/// at once beside it, and a writer queued after them still waits. Only a write share can be
/// downgraded, once.
pub async fn a_writer_downgrades_and_the_readers_behind_it_join<H: Harness>() {
    let server = server();
    let (a, b) = (H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect"));
    let w = take::<H>(&a, Resource::Write, LockOptions::default(), PATIENCE).await.expect("write");
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            H::spawn(
                async move { take::<H>(&b, Resource::Read, LockOptions::default(), PATIENCE).await.expect("read") },
            )
        })
        .collect();
    wait_for_waiters(&server, 2, 1);
    let c = H::connect(&server.url()).await.expect("connect");
    let late_writer =
        H::spawn(async move { take::<H>(&c, Resource::Write, LockOptions::default(), PATIENCE).await.expect("write") });
    wait_for_waiters(&server, 3, 2);
    H::downgrade(&w).await.expect("downgrade");
    let readers = join_all(readers).await;
    assert!(H::is_valid(&w), "the downgraded writer still holds, as a reader");
    assert!(readers.iter().all(|r| H::fence(r) > H::fence(&w)));
    let again = H::downgrade(&w).await;
    assert!(matches!(again, Err(Error::InvalidInput(InvalidInput::NotAWriter))), "{again:?}");
    let sem = Resource::Permit { capacity: 2 };
    let permit = H::acquire_resource(&a, "rdlock-test:other", sem, LockOptions::default(), Acquire::Try)
        .await
        .expect("a permit")
        .expect("free");
    assert!(matches!(H::downgrade(&permit).await, Err(Error::InvalidInput(InvalidInput::NotAWriter))));
    assert!(H::release(permit).await.expect("release").was_held());
    for r in readers {
        assert!(H::release(r).await.expect("release").was_held());
    }
    assert!(H::release(w).await.expect("release").was_held());
    let w2 = late_writer.await;
    assert!(H::release(w2).await.expect("release").was_held());
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ 9

/// Several permits at once: a request that does not fit yet holds up the queue (strict FIFO,
/// so it is never starved), and its guard frees them all.
pub async fn many_permits_at_once_wait_their_turn<H: Harness>() {
    let server = server();
    let (a, b) = (H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect"));
    let two = Resource::Permits { capacity: 3, count: 2 };
    let one = Resource::Permit { capacity: 3 };
    let held = take::<H>(&a, two, LockOptions::default(), PATIENCE).await.expect("two permits");
    let waiter =
        H::spawn(async move { take::<H>(&b, two, LockOptions::default(), PATIENCE).await.expect("two permits") });
    wait_for_waiters(&server, 1, 1);
    // One permit is free, but a request for two came first.
    let c = H::connect(&server.url()).await.expect("connect");
    let behind = take::<H>(&c, one, LockOptions::default(), Duration::from_millis(300)).await;
    assert!(
        matches!(behind, Err(Error::TimedOut)),
        "a single permit went past a queued request: {:?}",
        behind.map(|_| ())
    );
    let bad =
        H::acquire_resource(&c, KEY, Resource::Permits { capacity: 3, count: 4 }, LockOptions::default(), Acquire::Try)
            .await;
    assert!(
        matches!(bad, Err(Error::InvalidInput(InvalidInput::PermitCountOutOfRange { .. }))),
        "{:?}",
        bad.map(|_| ())
    );
    assert!(H::release(held).await.expect("release").was_held());
    let both = waiter.await;
    let single = take::<H>(&c, one, LockOptions::default(), PATIENCE).await.expect("the third permit");
    assert!(H::release(both).await.expect("release").was_held());
    assert!(H::release(single).await.expect("release").was_held());
    assert_clean(&server, &[]);
}
