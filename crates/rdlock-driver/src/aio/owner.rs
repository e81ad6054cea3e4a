//! Reentrant owners on the async side: the types are written once, in [`crate::owner`].

use std::time::{Duration, Instant};

use rdlock_core::{LostReason, ReleaseOutcome, Resource};

#[allow(unused_imports)] // `RwLock`: named by the docs' links only.
use super::{Client, Guard, RwLock};
use crate::error::Error;
use crate::loss::{LossCell, LossSignal};
use crate::owner::owner_api;
use crate::runtime::Runtime;

owner_api! {
    asyncness: [async],
    generics: [R: Runtime],
    args: [R],
    now: R::now,
    waits: "Waits",
    owner: {
        /// An owner of locks ([`Client::owner`]): a value, not a task, so clone it into the
        /// sub-tasks that work for it (clones are the same owner). A key it holds can be locked
        /// again through it at once, with no round trip: every hold of one key (and kind)
        /// shares one lease, counted locally, and the lease is released only when the last
        /// hold goes, whatever the order of drops.
        ///
        /// A plain [`Client::lock`] on a key the same client holds does not re-enter: it waits
        /// like any other caller. Only an owner's holds are reentrant, and only for that owner.
        ///
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>(client: rdlock_driver::Client<R>) -> Result<(), rdlock_driver::Error> {
        /// let owner = client.owner();
        /// let outer = owner.lock("orders").await?;
        /// let inner = owner.lock("orders").await?; // no round trip: same lease
        /// assert_eq!((inner.fence(), inner.depth()), (outer.fence(), 2));
        /// assert_eq!(inner.release().await?, None); // nothing sent: the outer hold remains
        /// assert!(outer.release().await?.is_some_and(|o| o.was_held()));
        /// # Ok(()) }
        /// ```
    },
    hold: {
        /// One hold of an [`Owner`]'s lease on a key: from [`Owner::lock`] or [`Owner::write`].
        /// Every hold of the entry counts; the lease is released when the last one goes, by
        /// [`Hold::release`] or by dropping it (then in the background, like a dropped
        /// [`Guard`]). No order of releases or drops ends the lease early.
        ///
        /// ```no_run
        /// # async fn demo<R: rdlock_driver::Runtime>(owner: rdlock_driver::Owner<R>) -> Result<(), rdlock_driver::Error> {
        /// let hold = owner.write("catalog").await?;
        /// let signal = hold.loss_signal();
        /// let sub = owner.clone();
        /// R::spawn(async move {
        ///     // The same owner in a sub-task: re-enters the write share.
        ///     if let Ok(inner) = sub.write("catalog").await {
        ///         println!("depth {} until lost: {:?}", inner.depth(), signal.is_lost());
        ///     }
        /// });
        /// drop(hold); // the lease lives until the sub-task's hold goes too
        /// # Ok(()) }
        /// ```
    },
    hold_lost: {
        /// Completes when the entry's lease is lost (see [`Guard::lost`]).
        pub async fn lost(&self) -> LostReason {
            self.shared.guard.lost().await
        }
    }
}

/// Waits until another call's acquisition settles, or `deadline` passes.
async fn wait_gate<R: Runtime>(gate: &LossCell, deadline: Option<Instant>) {
    match deadline {
        None => {
            gate.lost().await;
        }
        Some(deadline) => {
            let settled = async {
                gate.lost().await;
            };
            futures_lite::future::or(settled, R::sleep_until(deadline)).await;
        }
    }
}
