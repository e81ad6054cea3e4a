//! A scoped lock on the blocking side: run work while the lock is held; a thread cannot be
//! cancelled, so the work is handed a token to check.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{LockId, LostReason};

use super::{Client, Guard, LockBuilder};
use crate::common;
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};

crate::scope::scope_type! {
    generics: [],
    args: [],
    now: Instant::now,
    scope: {
        /// What the work of [`Client::with_lock`] sees of its lock: an owned value (cheap to clone,
        /// can be moved to helper threads). A blocking call cannot be cancelled from outside, so the
        /// work checks it ([`Scope::check`], [`Scope::is_lost`]) between steps.
        ///
        /// ```no_run
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// let steps = client.with_lock("orders", |scope| {
        ///     for step in 0..3 {
        ///         // Stop as soon as the lease is lost: the storage would refuse the fence anyway.
        ///         scope.check()?;
        ///         println!("step {step} with fence {}", scope.fence());
        ///     }
        ///     Ok::<u32, rdlock_driver::Error>(3)
        /// })??;
        /// # let _ = steps; Ok(()) }
        /// ```
    },
    is_lost: {
        /// Whether the lease has been lost: stop the work.
    },
    loss_signal: {
        /// An owned loss signal for the lock, to move into other threads (see
        /// [`Guard::loss_signal`]).
    },
    more: {
        /// Waits up to `timeout` for the lease to be lost: `None` if it is still held (a sleep
        /// that wakes early when the lease is lost).
        pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
            self.loss.wait(Some(Instant::now() + timeout))
        }
    }
}

impl Client {
    /// Runs `work` on this thread while holding the lock at `key` (acquired as
    /// [`Client::lock`], renewed automatically), and releases it at the end in every case:
    /// the work's value when the lock was held to the end.
    ///
    /// A thread cannot be cancelled: the work gets a [`Scope`] to check, and should stop
    /// when it reports the lease lost. If the lease was lost by the time the work returns,
    /// the answer is [`Error::Lost`] (the value is dropped: it was not protected to the end).
    /// If the work panics, the lock is released on this thread before the panic goes on.
    ///
    /// ```no_run
    /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
    /// let fence = client.with_lock("orders", |scope| scope.fence())?;
    /// # let _ = fence; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::lock`] before the work starts; [`Error::Lost`] as said; as
    /// [`Guard::release`] when the release fails (the key then expires with its lease).
    pub fn with_lock<F, T>(&self, key: &str, work: F) -> Result<T, Error>
    where
        F: FnOnce(Scope) -> T,
    {
        scoped(self.lock(key)?, work)
    }
}

impl LockBuilder<'_> {
    /// [`Client::with_lock`] with this builder's options (ttl, timeout, resource, ...).
    ///
    /// ```no_run
    /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
    /// use std::time::Duration;
    ///
    /// let fence = client
    ///     .lock_builder("orders")
    ///     .ttl(Duration::from_secs(5))
    ///     .timeout(Duration::from_secs(1))
    ///     .with_lock(|scope| scope.fence())?;
    /// # let _ = fence; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`LockBuilder::lock`] before the work starts; then as [`Client::with_lock`].
    pub fn with_lock<F, T>(self, work: F) -> Result<T, Error>
    where
        F: FnOnce(Scope) -> T,
    {
        scoped(self.lock()?, work)
    }
}

/// Runs `work`, then releases, whatever the work did (a panic goes on after the release).
fn scoped<T>(guard: Guard, work: impl FnOnce(Scope) -> T) -> Result<T, Error> {
    let scope = Scope::of(&guard);
    // The guard is not touched by the work, so it is in a consistent state after a panic.
    let result = catch_unwind(AssertUnwindSafe(|| work(scope)));
    let lost = crate::scope::lost(&guard.loss, guard.is_valid());
    let released = guard.release();
    let value = result.unwrap_or_else(|panic| resume_unwind(panic));
    crate::scope::finished(value, released?, lost)
}
