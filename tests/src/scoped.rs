//! Cases for reentrant owners (`Client::owner`) and scoped locks (`Client::with_lock`), run
//! for every runtime like the lock's cases.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rdlock_core::{Acquire, LockOptions, ReleaseOutcome, Resource};
use rdlock_driver::{ClientConfig, Error};

use crate::harness::{Harness, Task, join_all};
use crate::support::{admin, assert_clean, del, exists, get, options, script_calls, server, wait_until};

const KEY: &str = "rdlock-test:scoped";
/// Long enough that no case here outlives it unless something is wrong.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a wait that must time out is given.
const SHORT: Duration = Duration::from_millis(300);

/// A client whose locks neither renew nor expire during a case, so that every script call the
/// server counts is one the case made.
async fn quiet_client<H: Harness>(url: &str) -> H::Client {
    let config = ClientConfig { defaults: options(Duration::from_secs(60), false), ..ClientConfig::default() };
    H::connect_with(url, config).await.expect("connect")
}

/// A client whose locks renew every 300 ms, so that a deleted key is noticed soon.
async fn renewing_client<H: Harness>(url: &str) -> H::Client {
    let config = ClientConfig { defaults: options(Duration::from_millis(900), true), ..ClientConfig::default() };
    H::connect_with(url, config).await.expect("connect")
}

/// Sets its flag when dropped: tells whether a piece of work was dropped (or ended).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One attempt at a read share of `key`, from another client.
async fn try_read<H: Harness>(client: &H::Client, key: &str) -> Option<H::Guard> {
    H::acquire_resource(client, key, Resource::Read, LockOptions::default(), Acquire::Try).await.expect("try read")
}

// ------------------------------------------------------------------------------ owners

/// An owner locks one key three deep: one lease (one fence, one token), depth 3; the inner
/// re-entries and releases send nothing; only the last release frees the key.
pub async fn reentrant_owner_three_deep<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    let client = quiet_client::<H>(&server.url()).await;
    let owner = H::owner(&client);
    let outer = H::owner_lock(&owner, KEY).await.expect("lock");
    let token = H::hold_token(&outer);
    assert_eq!(get(&mut conn, KEY).as_deref(), Some(token.as_str()));
    let before = script_calls(&mut conn);
    let middle = H::owner_lock(&owner, KEY).await.expect("re-enter");
    let inner = H::owner_try_lock(&owner, KEY).await.expect("re-enter").expect("held by the owner");
    assert_eq!(H::hold_depth(&inner), 3);
    assert_eq!((H::hold_fence(&middle), H::hold_fence(&inner)), (H::hold_fence(&outer), H::hold_fence(&outer)));
    assert_eq!(H::hold_token(&inner), token);
    assert_eq!(H::owner_entries(&owner), 1);
    assert_eq!(H::hold_release(inner).await.expect("release"), None);
    assert_eq!(H::hold_release(middle).await.expect("release"), None);
    assert_eq!(H::hold_depth(&outer), 1);
    assert_eq!(script_calls(&mut conn), before, "re-entries and inner releases sent nothing");
    assert_eq!(get(&mut conn, KEY).as_deref(), Some(token.as_str()), "still held");
    assert_eq!(H::hold_release(outer).await.expect("release"), Some(ReleaseOutcome::Released));
    assert!(script_calls(&mut conn) > before, "the last release sent the release");
    assert!(!exists(&mut conn, KEY));
    assert_eq!(H::owner_entries(&owner), 0);
    assert_clean(&server, &[]);
}

/// The outer hold dropped before the inner one: the key stays held (nothing sent) until the
/// inner one goes too.
pub async fn an_outer_hold_dropped_first_keeps_the_lease<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    let client = quiet_client::<H>(&server.url()).await;
    let owner = H::owner(&client);
    let outer = H::owner_lock(&owner, KEY).await.expect("lock");
    let token = H::hold_token(&outer);
    // Another clone of the owner is the same owner.
    let inner = H::owner_lock(&owner.clone(), KEY).await.expect("re-enter");
    let before = script_calls(&mut conn);
    drop(outer);
    assert_eq!(script_calls(&mut conn), before, "dropping the outer hold sent nothing");
    assert_eq!(get(&mut conn, KEY).as_deref(), Some(token.as_str()), "still held");
    assert_eq!(H::hold_depth(&inner), 1);
    let other = H::connect(&server.url()).await.expect("connect");
    assert!(H::try_lock(&other, KEY).await.expect("try").is_none(), "the inner hold keeps the lease");
    drop(inner);
    // A dropped last hold releases like a dropped guard (in the background on async runtimes).
    wait_until("the key is released", PATIENCE, || !exists(&mut conn, KEY));
    assert_clean(&server, &[]);
}

/// Re-entry works on the write side of the read-write lock, and the write share is held until
/// the last hold goes.
pub async fn write_share_reentry<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    let client = quiet_client::<H>(&server.url()).await;
    let other = H::connect(&server.url()).await.expect("connect");
    let owner = H::owner(&client);
    let outer = H::owner_write(&owner, KEY).await.expect("write");
    let before = script_calls(&mut conn);
    let inner = H::owner_write(&owner, KEY).await.expect("re-enter");
    assert_eq!(H::hold_fence(&inner), H::hold_fence(&outer));
    assert_eq!(H::hold_depth(&outer), 2);
    assert_eq!(H::hold_release(inner).await.expect("release"), None);
    assert_eq!(script_calls(&mut conn), before, "the re-entry and its release sent nothing");
    assert!(try_read::<H>(&other, KEY).await.is_none(), "the writer still holds");
    // A lock of another key is another entry of the same owner.
    let lock = H::owner_lock(&owner, "rdlock-test:scoped-other").await.expect("lock");
    assert_eq!(H::owner_entries(&owner), 2);
    assert_eq!(H::hold_release(lock).await.expect("release"), Some(ReleaseOutcome::Released));
    assert_eq!(H::hold_release(outer).await.expect("release"), Some(ReleaseOutcome::Released));
    let reader = try_read::<H>(&other, KEY).await.expect("free for readers");
    assert!(H::release(reader).await.expect("release").was_held());
    assert_clean(&server, &[]);
}

/// A plain `Client::lock` is not reentrant: on a key the same client holds (by a guard, or by
/// an owner) it waits like anyone else; an owner does not re-enter a plain guard either.
pub async fn a_plain_lock_on_a_held_key_waits<H: Harness>() {
    let server = server();
    let client = quiet_client::<H>(&server.url()).await;
    let guard = H::lock(&client, KEY).await.expect("lock");
    assert!(matches!(H::lock_timeout(&client, KEY, SHORT).await, Err(Error::TimedOut)));
    let owner = H::owner(&client);
    assert!(matches!(H::owner_lock_timeout(&owner, KEY, SHORT).await, Err(Error::TimedOut)));
    assert!(H::owner_try_lock(&owner, KEY).await.expect("try").is_none());
    assert_eq!(H::owner_entries(&owner), 0, "a failed first acquisition leaves no entry");
    assert!(H::release(guard).await.expect("release").was_held());
    let hold = H::owner_lock(&owner, KEY).await.expect("lock");
    assert!(matches!(H::lock_timeout(&client, KEY, SHORT).await, Err(Error::TimedOut)));
    assert!(H::hold_release(hold).await.expect("release").is_some_and(|o| o.was_held()));
    assert_clean(&server, &[]);
}

/// Re-entering an entry whose lease is lost is an error, not a stale hold; once its holds are
/// gone, the owner acquires the key afresh.
pub async fn reentry_after_loss_is_an_error<H: Harness>() {
    let server = server();
    let client = renewing_client::<H>(&server.url()).await;
    let owner = H::owner(&client);
    let hold = H::owner_lock(&owner, KEY).await.expect("lock");
    let fence = H::hold_fence(&hold);
    let signal = H::hold_signal(&hold);
    del(&mut admin(&server), KEY);
    wait_until("the lease is lost", PATIENCE, || signal.is_lost());
    assert!(matches!(H::owner_lock(&owner, KEY).await, Err(Error::Lost(_))));
    assert!(matches!(H::owner_try_lock(&owner, KEY).await, Err(Error::Lost(_))));
    assert_eq!(H::hold_depth(&hold), 1, "the refused re-entries hold nothing");
    let outcome = H::hold_release(hold).await.expect("release");
    assert!(outcome.is_some_and(|o| !o.was_held()), "{outcome:?}");
    assert_eq!(H::owner_entries(&owner), 0);
    let again = H::owner_lock(&owner, KEY).await.expect("lock afresh");
    assert!(H::hold_fence(&again) > fence);
    assert!(H::hold_release(again).await.expect("release").is_some_and(|o| o.was_held()));
    assert_clean(&server, &[]);
}

/// Four tasks of one owner lock a free key at once: one server-side acquisition, shared by
/// all four (none waits on another's acquisition of the same key).
pub async fn concurrent_first_acquisitions_share_one_lease<H: Harness>() {
    let server = server();
    let mut conn = admin(&server);
    let client = quiet_client::<H>(&server.url()).await;
    // Warm up: the scripts are loaded, so that one acquisition is one script call.
    let warm = H::lock(&client, KEY).await.expect("lock");
    assert!(H::release(warm).await.expect("release").was_held());
    let owner = H::owner(&client);
    let before = script_calls(&mut conn);
    let tasks: Vec<Task<H::Hold>> = (0..4)
        .map(|_| {
            let owner = owner.clone();
            H::spawn(async move { H::owner_lock(&owner, KEY).await.expect("lock") })
        })
        .collect();
    let holds = join_all(tasks).await;
    assert_eq!(script_calls(&mut conn) - before, 1, "one acquisition for the four");
    assert!(holds.iter().all(|h| H::hold_fence(h) == H::hold_fence(&holds[0]) && H::hold_depth(h) == 4));
    let mut released = Vec::new();
    for hold in holds {
        released.push(H::hold_release(hold).await.expect("release"));
    }
    assert_eq!(released, [None, None, None, Some(ReleaseOutcome::Released)]);
    assert_clean(&server, &[]);
}

/// While an owner's first call waits for a busy key, a second call of the owner waits for
/// that one (up to its own timeout) instead of queueing a second acquisition behind it; once
/// the first acquires, the owner re-enters.
pub async fn an_owners_second_caller_waits_for_its_first<H: Harness>() {
    let server = server();
    let client = quiet_client::<H>(&server.url()).await;
    let other = H::connect(&server.url()).await.expect("connect");
    let busy = H::lock(&other, KEY).await.expect("lock");
    let owner = H::owner(&client);
    let first = {
        let owner = owner.clone();
        H::spawn(async move { H::owner_lock_timeout(&owner, KEY, PATIENCE).await.expect("lock") })
    };
    // The first call's slot is in the table before it sends anything.
    wait_until("the first call is acquiring", PATIENCE, || H::owner_entries(&owner) == 1);
    assert!(matches!(H::owner_lock_timeout(&owner, KEY, SHORT).await, Err(Error::TimedOut)));
    assert!(H::owner_try_lock(&owner, KEY).await.expect("try").is_none(), "a single attempt does not wait");
    assert!(H::release(busy).await.expect("release").was_held());
    let outer = first.await;
    let inner = H::owner_try_lock(&owner, KEY).await.expect("try").expect("re-entered");
    assert_eq!((H::hold_fence(&inner), H::hold_depth(&inner)), (H::hold_fence(&outer), 2));
    drop((outer, inner));
    assert_clean(&server, &[]);
}

// ------------------------------------------------------------------------------ with_lock

/// `with_lock` runs the work while the key is held, returns its value and releases; the
/// builder form applies its options.
pub async fn with_lock_returns_the_value_and_releases<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let mut inside = admin(&server);
    let value = H::with_lock(&client, KEY, move |scope| {
        Box::pin(async move { (H::scope_fence(&scope), H::scope_is_lost(&scope), exists(&mut inside, KEY)) })
    })
    .await
    .expect("with_lock");
    assert!(value.0 > 0);
    assert_eq!((value.1, value.2), (false, true), "held, and not lost, during the work");
    assert!(!exists(&mut admin(&server), KEY), "released before returning");
    let mut inside = admin(&server);
    let pttl = H::with_lock_ttl(&client, KEY, Duration::from_secs(5), move |_scope| {
        Box::pin(async move { redis::cmd("PTTL").arg(KEY).query::<i64>(&mut inside).expect("PTTL") })
    })
    .await
    .expect("with_lock");
    assert!(pttl > 0 && pttl <= 5000, "the builder's ttl: {pttl} ms");
    let failed: Result<(), Error> =
        H::with_lock(&client, KEY, |_scope| Box::pin(async move { Err(Error::TimedOut) })).await.expect("with_lock");
    assert!(failed.is_err(), "the work's own error is its value");
    assert_clean(&server, &[]);
}

/// The key deleted under `with_lock`: the answer is `Err(Lost)`; the async work is cancelled
/// (dropped at its `.await`), the blocking work sees the loss through its scope; nothing is
/// left behind.
pub async fn with_lock_stops_on_loss<H: Harness>() {
    let server = server();
    let client = renewing_client::<H>(&server.url()).await;
    let (entered, dropped, finished) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (e, d, f) = (entered.clone(), dropped.clone(), finished.clone());
    let task = H::spawn(async move {
        H::with_lock(&client, KEY, move |scope| {
            Box::pin(async move {
                let _flag = DropFlag(d);
                e.store(true, Ordering::SeqCst);
                if H::SCOPE_CANCELS {
                    // Only cancellation ends this.
                    std::future::pending::<()>().await;
                }
                let start = Instant::now();
                while !H::scope_is_lost(&scope) && start.elapsed() < PATIENCE {
                    H::sleep(Duration::from_millis(10)).await;
                }
                f.store(true, Ordering::SeqCst);
            })
        })
        .await
    });
    let mut conn = admin(&server);
    wait_until("the work runs", PATIENCE, || entered.load(Ordering::SeqCst));
    del(&mut conn, KEY);
    let result = task.await;
    assert!(matches!(result, Err(Error::Lost(_))), "{result:?}");
    assert!(dropped.load(Ordering::SeqCst), "the work is gone");
    // Async work is cancelled before it could see the loss; blocking work saw it and returned.
    assert_eq!(finished.load(Ordering::SeqCst), !H::SCOPE_CANCELS);
    assert!(!exists(&mut conn, KEY));
    assert_clean(&server, &[]);
}

/// Work that panics: the panic reaches the caller, and the lock is released (on the caller's
/// thread before the panic goes on, for blocking code; in the background for async code).
pub async fn with_lock_releases_after_a_panic<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let run = H::with_lock(&client, KEY, |_scope| Box::pin(async move { panic!("the work panics on purpose") }));
    let caught: Result<Result<(), Error>, _> = std::panic::AssertUnwindSafe(run).catch_unwind().await;
    assert!(caught.is_err(), "the panic reaches the caller");
    let mut conn = admin(&server);
    if !H::SCOPE_CANCELS {
        assert!(!exists(&mut conn, KEY), "released before the panic went on");
    }
    wait_until("the key is released", PATIENCE, || !exists(&mut conn, KEY));
    assert!(H::try_lock(&client, KEY).await.expect("try").is_some_and(|g| !H::token(&g).is_empty()));
    assert_clean(&server, &[]);
}

/// Dropping the future of `with_lock` while its work runs cancels the work and releases the
/// lock (in the background). Async only: a blocking call cannot be cancelled.
pub async fn a_dropped_with_lock_releases<H: Harness>() {
    let server = server();
    let client = H::connect(&server.url()).await.expect("connect");
    let (entered, dropped) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (e, d) = (entered.clone(), dropped.clone());
    let run = H::with_lock(&client, KEY, move |_scope| {
        Box::pin(async move {
            let _flag = DropFlag(d);
            e.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        })
    });
    let mut conn = admin(&server);
    let ended = async { Some(run.await) }
        .or(async {
            while !entered.load(Ordering::SeqCst) {
                H::sleep(Duration::from_millis(10)).await;
            }
            assert!(exists(&mut conn, KEY), "held while the work runs");
            None
        })
        .await;
    assert!(ended.is_none(), "the work never ends by itself: {ended:?}");
    assert!(dropped.load(Ordering::SeqCst), "the work was dropped with the future");
    wait_until("the key is released", PATIENCE, || !exists(&mut conn, KEY));
    assert_clean(&server, &[]);
}
