//! Reentrant owners on the blocking side: the types are written once, in [`crate::owner`].

use std::time::{Duration, Instant};

use rdlock_core::{LostReason, ReleaseOutcome, Resource};

#[allow(unused_imports)] // `RwLock`: named by the docs' links only.
use super::{Client, Guard, RwLock};
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use crate::owner::owner_api;

owner_api! {
    asyncness: [],
    generics: [],
    args: [],
    now: Instant::now,
    waits: "Blocks",
    owner: {
        /// An owner of locks ([`Client::owner`]): a value, not a thread, so clone it into the
        /// threads that work for it (clones are the same owner). A key it holds can be locked
        /// again through it at once, with no round trip: every hold of one key (and kind)
        /// shares one lease, counted locally, and the lease is released only when the last
        /// hold goes, whatever the order of drops.
        ///
        /// A plain [`Client::lock`] on a key the same client holds does not re-enter: it waits
        /// like any other caller. Only an owner's holds are reentrant, and only for that owner.
        ///
        /// ```no_run
        /// # fn demo(client: rdlock_driver::blocking::Client) -> Result<(), rdlock_driver::Error> {
        /// let owner = client.owner();
        /// let outer = owner.lock("orders")?;
        /// let inner = owner.lock("orders")?; // no round trip: same lease
        /// assert_eq!((inner.fence(), inner.depth()), (outer.fence(), 2));
        /// assert_eq!(inner.release()?, None); // nothing sent: the outer hold remains
        /// assert!(outer.release()?.is_some_and(|o| o.was_held()));
        /// # Ok(()) }
        /// ```
    },
    hold: {
        /// One hold of an [`Owner`]'s lease on a key: from [`Owner::lock`] or [`Owner::write`].
        /// Every hold of the entry counts; the lease is released when the last one goes, by
        /// [`Hold::release`] or by dropping it (then on the dropping thread, like a dropped
        /// [`Guard`]). No order of releases or drops ends the lease early.
        ///
        /// ```no_run
        /// # fn demo(owner: rdlock_driver::blocking::Owner) -> Result<(), rdlock_driver::Error> {
        /// let hold = owner.write("catalog")?;
        /// let sub = owner.clone();
        /// let worker = std::thread::spawn(move || {
        ///     // The same owner on another thread: re-enters the write share.
        ///     sub.write("catalog").map(|inner| inner.depth())
        /// });
        /// drop(hold); // the lease lives until the worker's hold goes too
        /// let _ = worker.join();
        /// # Ok(()) }
        /// ```
    },
    hold_lost: {
        /// Blocks until the entry's lease is lost (see [`Guard::lost`]).
        pub fn lost(&self) -> LostReason {
            self.shared.guard.lost()
        }

        /// Waits up to `timeout` for the entry's lease to be lost: `None` if it is still held.
        pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
            self.shared.guard.wait_lost(timeout)
        }
    }
}

/// Waits until another call's acquisition settles, or `deadline` passes.
fn wait_gate(gate: &LossCell, deadline: Option<Instant>) {
    gate.wait(deadline);
}
