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

    /// Lets the tasks already woken run before the caller goes on. A release that handed the
    /// lock over yields once, so that a waiter of the same process (woken by the message that
    /// came with the release's reply, or by the reply itself) runs before the releaser builds
    /// its next request. The default yields by waking itself, which a first-in-first-out
    /// executor (smol's, async-std's) runs after the tasks already queued; a runtime where
    /// that does not help returns at once.
    fn yield_now() -> impl Future<Output = ()> + Send {
        futures_lite::future::yield_now()
    }

    /// Runs `future` outside any cooperative budget the runtime keeps. The pub/sub task reads
    /// its message stream until it is empty before it reports a `PING`'s answer, and a budget
    /// spent would read as empty (`Engine::handle_pubsub_answer` needs every message read
    /// before the answer handed in first). The default runs it as it is; a runtime whose
    /// channels count against a per-task budget (tokio's) lifts it.
    fn unconstrained<F: Future + Send>(future: F) -> impl Future<Output = F::Output> + Send {
        future
    }

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
