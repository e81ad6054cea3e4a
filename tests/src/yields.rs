//! The yield after a hand-off (issue #16): a release that handed the lock to a waiter calls
//! `Runtime::yield_now` once before its caller goes on, so that a waiter of the same process
//! is not queued behind the releaser's next request; a release with nobody queued does not.
//! Counted through a runtime that wraps the executor's own and counts those calls (what a
//! call does is the runtime's). The count is kept per executor type, and only this case uses
//! `Counting`.

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdlock_driver::{Client, Runtime};

use crate::runtimes::Executor;
use crate::support::server;

/// `E`'s runtime, with its yields counted.
struct Counting<E>(PhantomData<fn() -> E>);

/// Yields so far, by executor (the cases of several executors run at once in one process).
fn yields() -> &'static Mutex<HashMap<TypeId, usize>> {
    static YIELDS: OnceLock<Mutex<HashMap<TypeId, usize>>> = OnceLock::new();
    YIELDS.get_or_init(Mutex::default)
}

fn yielded<E: Executor>() -> usize {
    yields().lock().unwrap_or_else(|e| e.into_inner()).get(&TypeId::of::<E>()).copied().unwrap_or(0)
}

impl<E: Executor> Runtime for Counting<E> {
    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        E::Runtime::spawn(future);
    }

    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send {
        E::Runtime::sleep_until(deadline)
    }

    fn yield_now() -> impl Future<Output = ()> + Send {
        *yields().lock().unwrap_or_else(|e| e.into_inner()).entry(TypeId::of::<E>()).or_default() += 1;
        E::Runtime::yield_now()
    }
}

/// A queued waiter is handed the lock by the release, which yields once; its own release,
/// with nobody queued, does not.
pub fn a_release_that_hands_the_lock_over_yields_once<E: Executor>() {
    let server = server();
    let url = server.url();
    E::block_on(async move {
        let a = Client::<Counting<E>>::open(&url).await.expect("client a");
        let b = Client::<Counting<E>>::open(&url).await.expect("client b");
        let held = a.lock("yields").await.expect("a takes the key");
        let releaser = async {
            // The hand-off needs the waiter in the queue: wait until the server shows it.
            let until = Instant::now() + Duration::from_secs(10);
            while a.inspect("yields").await.expect("inspect").waiters.is_empty() {
                assert!(Instant::now() < until, "the waiter never queued");
                E::Runtime::sleep_until(Instant::now() + Duration::from_millis(5)).await;
            }
            let before = yielded::<E>();
            assert!(held.release().await.expect("a releases").was_held());
            yielded::<E>() - before
        };
        let (waited, handing) = futures_lite::future::zip(b.lock("yields"), releaser).await;
        assert_eq!(handing, 1, "a release that handed the key over yields once");
        let before = yielded::<E>();
        assert!(waited.expect("b is handed the key").release().await.expect("b releases").was_held());
        assert_eq!(yielded::<E>(), before, "a release with nobody queued does not yield");
    });
}
