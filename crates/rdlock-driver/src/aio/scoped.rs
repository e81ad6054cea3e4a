//! A scoped lock on the async side: run work while the lock is held, and stop it as soon as
//! the lease is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use rdlock_core::{LockId, LostReason, ReleaseOutcome};

use super::{Client, Guard, LockBuilder};
use crate::common;
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use crate::runtime::Runtime;

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
pub struct Scope<R: Runtime> {
    client: Client<R>,
    id: LockId,
    key: String,
    fence: u64,
    valid_until: Instant,
    loss: Arc<LossCell>,
}

// Not derived: a derive would ask the runtime type to be `Clone` too.
impl<R: Runtime> Clone for Scope<R> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            id: self.id,
            key: self.key.clone(),
            fence: self.fence,
            valid_until: self.valid_until,
            loss: self.loss.clone(),
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Scope<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("key", &self.key).field("fence", &self.fence).finish()
    }
}

impl<R: Runtime> Scope<R> {
    fn of(guard: &Guard<R>) -> Self {
        Self {
            client: guard.client.clone(),
            id: guard.id,
            key: guard.key.clone(),
            fence: guard.fence,
            valid_until: guard.valid_until,
            loss: guard.loss.clone(),
        }
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lock's fencing token (see [`Guard::fence`]).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Nothing may trust the lock past this instant (later after each renewal).
    pub fn valid_until(&self) -> Instant {
        common::lease(&self.client.inner.state().engine, self.id, self.valid_until, R::now()).0
    }

    /// Whether the lease is still valid now: cheap, no round trip. False once the lock is
    /// released (a scope kept past its `with_lock` holds nothing).
    pub fn is_valid(&self) -> bool {
        common::lease(&self.client.inner.state().engine, self.id, self.valid_until, R::now()).1
    }

    /// Whether the lease has been lost (the work is about to be cancelled).
    pub fn is_lost(&self) -> bool {
        self.loss.reason().is_some() || !self.is_valid()
    }

    /// `Err(`[`Error::Lost`]`)` once the lease is lost or no longer valid: a check to make
    /// before a step that cannot be undone.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] as said.
    pub fn check(&self) -> Result<(), Error> {
        lost(&self.loss, self.is_valid()).map_or(Ok(()), |reason| Err(Error::Lost(reason)))
    }

    /// An owned loss signal for the lock, to move into other tasks (see [`Guard::loss_signal`]).
    pub fn loss_signal(&self) -> LossSignal {
        LossSignal::new(self.loss.clone())
    }
}

/// Why the lease is lost, if it is: the signal's reason, or expiry when validity ran out
/// before the signal fired.
fn lost(loss: &LossCell, valid: bool) -> Option<LostReason> {
    loss.reason().or_else(|| (!valid).then_some(LostReason::Expired))
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
            let lost = lost(&guard.loss, guard.is_valid());
            match (guard.release().await?, lost) {
                (_, Some(reason)) => Err(Error::Lost(reason)),
                (ReleaseOutcome::NotHeld, None) => Err(Error::Lost(LostReason::NotOwner)),
                _ => Ok(value),
            }
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
