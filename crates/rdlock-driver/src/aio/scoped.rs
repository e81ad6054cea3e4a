//! A scoped lock on the async side: run work while the lock is held, and stop it as soon as
//! the lease is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use rdlock_core::LockId;

use super::{Client, Guard, LockBuilder};
use crate::common;
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use crate::runtime::Runtime;

crate::scope::scope_type! {
    generics: [R: Runtime],
    args: [R],
    now: R::now,
    scope: {
        /// What the work of [`Client::with_lock`] sees of its lock: an owned value (cheap to clone),
        /// so that the work's future can own it and need not borrow the guard.
        ///
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// let written = client
        ///     .with_lock("orders", |scope| async move {
        ///         // Hand the fence to the storage; check the lease before a step that cannot be undone.
        ///         scope.check()?;
        ///         Ok::<u64, rdlock_driver::Error>(scope.fence())
        ///     })
        ///     .await??;
        /// # let _ = written; Ok(()) }
        /// ```
    },
    is_lost: {
        /// Whether the lease has been lost (the work is about to be cancelled).
    },
    loss_signal: {
        /// An owned loss signal for the lock, to move into other tasks (see
        /// [`Guard::loss_signal`]).
    },
    more: {}
}

impl<R: Runtime> Client<R> {
    /// Runs `work` while holding the lock at `key` (acquired as [`Client::lock`], renewed
    /// automatically), and releases it at the end in every case: the work's value when the
    /// lock was held to the end.
    ///
    /// The work's future is dropped (cancelled at its current `.await`) as soon as the lease
    /// is lost, and the answer is [`Error::Lost`]. If the work panics, the panic goes on and
    /// the lock is released in the background, like a dropped guard; dropping the future
    /// returned here does the same.
    ///
    /// ```no_run
    /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
    /// let total = client.with_lock("orders", |scope| async move { scope.fence() % 10 }).await?;
    /// # let _ = total; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::lock`] before the work starts; [`Error::Lost`] when the lease was lost
    /// during the work (cancelled) or by its end (its value is dropped: it was not protected to
    /// the end); as [`Guard::release`] when the release fails (the key then expires with its
    /// lease).
    pub async fn with_lock<F, Fut, T>(&self, key: &str, work: F) -> Result<T, Error>
    where
        F: FnOnce(Scope<R>) -> Fut,
        Fut: Future<Output = T>,
    {
        scoped(self.lock(key).await?, work).await
    }
}

impl<R: Runtime> LockBuilder<'_, R> {
    /// [`Client::with_lock`] with this builder's options (ttl, timeout, resource, ...).
    ///
    /// ```no_run
    /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
    /// use std::time::Duration;
    ///
    /// let fence = client
    ///     .lock_builder("orders")
    ///     .ttl(Duration::from_secs(5))
    ///     .timeout(Duration::from_secs(1))
    ///     .with_lock(|scope| async move { scope.fence() })
    ///     .await?;
    /// # let _ = fence; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`LockBuilder::lock`] before the work starts; then as [`Client::with_lock`].
    pub async fn with_lock<F, Fut, T>(self, work: F) -> Result<T, Error>
    where
        F: FnOnce(Scope<R>) -> Fut,
        Fut: Future<Output = T>,
    {
        scoped(self.lock().await?, work).await
    }
}

/// Runs `work` against the lease's loss; releases either way.
async fn scoped<R: Runtime, F, Fut, T>(guard: Guard<R>, work: F) -> Result<T, Error>
where
    F: FnOnce(Scope<R>) -> Fut,
    Fut: Future<Output = T>,
{
    let scope = Scope::of(&guard);
    // The work is polled first, so that work that is done wins over a loss seen together.
    let outcome = futures_lite::future::or(async { Ok(work(scope).await) }, async { Err(guard.lost().await) }).await;
    match outcome {
        Ok(value) => {
            let lost = crate::scope::lost(&guard.loss, guard.is_valid());
            crate::scope::finished(value, guard.release().await?, lost)
        }
        Err(reason) => {
            // The work is already dropped; the release only cleans up what may be left.
            let _ = guard.release().await;
            Err(Error::Lost(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Hold, Owner};
    use super::*;

    fn send<T: Send>(_: T) {}

    /// Compiles only if the futures of owners and scoped locks can move between threads
    /// (work spawned on a multi-threaded runtime needs that); never run.
    #[allow(dead_code)]
    fn futures_are_send<R: Runtime>(client: Client<R>, owner: Owner<R>, hold: Hold<R>) {
        send(owner.lock("k"));
        send(owner.write("k"));
        send(hold.release());
        send(client.with_lock("k", |scope| async move { scope.fence() }));
        send(client.lock_builder("k").with_lock(|scope| async move { scope.check() }));
    }
}
