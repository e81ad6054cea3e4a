//! The runtime abstraction: all an adapter has to implement.

use std::future::Future;
use std::time::{Duration, Instant};

/// What the async driver needs from a runtime.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Runs a future in the background.
    fn spawn<F>(future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes at `deadline`.
    async fn sleep_until(deadline: Instant);

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
