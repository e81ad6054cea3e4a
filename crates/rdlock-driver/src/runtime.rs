//! The runtime abstraction: all an adapter has to implement.

use std::future::Future;
use std::time::{Duration, Instant};

/// What the async driver needs from a runtime.
pub trait Runtime: Send + Sync + 'static {
    /// Runs a future in the background.
    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes at `deadline`. A plain future, not a boxed one: every request's response
    /// timeout is one, and a box each was a measurable share of a request's allocations.
    fn sleep_until(deadline: Instant) -> impl Future<Output = ()> + Send;

    /// The current time.
    fn now() -> Instant {
        Instant::now()
    }
}

/// Runs `future`, or gives up after `limit`.
pub(crate) async fn timeout<R: Runtime, T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let deadline = R::now() + limit;
    futures_lite::future::or(async { Some(future.await) }, async {
        R::sleep_until(deadline).await;
        None
    })
    .await
}
