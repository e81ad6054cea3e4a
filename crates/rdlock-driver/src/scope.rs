//! What a scoped lock's work sees of its lock ([`crate::aio`]'s and [`crate::blocking`]'s
//! `Scope`), written once for both sides like the lock API (`crate::api`); and how a scoped
//! lock's answer is made from its work and its release.

use rdlock_core::{LostReason, ReleaseOutcome};

use crate::error::Error;
use crate::loss::LossCell;

/// Defines `Scope` in the invoking module (a `scoped` module of a side, next to that side's
/// `with_lock`), with the side's generics, clock and docs.
macro_rules! scope_type {
    (
        generics: [$($g:tt)*],
        args: [$($a:tt)*],
        now: $now:path,
        scope: {$(#[$scope:meta])*},
        is_lost: {$(#[$is_lost:meta])*},
        loss_signal: {$(#[$loss_signal:meta])*},
        more: {$($more:tt)*}
    ) => {
        $(#[$scope])*
        pub struct Scope<$($g)*> {
            client: Client<$($a)*>,
            id: LockId,
            key: String,
            fence: u64,
            valid_until: Instant,
            loss: Arc<LossCell>,
        }

        // Not derived: a derive would ask the runtime type to be `Clone` too.
        impl<$($g)*> Clone for Scope<$($a)*> {
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

        impl<$($g)*> std::fmt::Debug for Scope<$($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Scope").field("key", &self.key).field("fence", &self.fence).finish()
            }
        }

        impl<$($g)*> Scope<$($a)*> {
            fn of(guard: &Guard<$($a)*>) -> Self {
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
                common::lease(&self.client.inner.state().engine, self.id, self.valid_until, $now()).0
            }

            /// Whether the lease is still valid now: cheap, no round trip. False once the lock
            /// is released (a scope kept past its `with_lock` holds nothing).
            pub fn is_valid(&self) -> bool {
                common::lease(&self.client.inner.state().engine, self.id, self.valid_until, $now()).1
            }

            $(#[$is_lost])*
            pub fn is_lost(&self) -> bool {
                crate::scope::lost(&self.loss, self.is_valid()).is_some()
            }

            /// `Err(`[`Error::Lost`]`)` once the lease is lost or no longer valid: a check to
            /// make between steps of the work, and before a step that cannot be undone.
            ///
            /// # Errors
            ///
            /// [`Error::Lost`] as said.
            pub fn check(&self) -> Result<(), Error> {
                crate::scope::lost(&self.loss, self.is_valid()).map_or(Ok(()), |reason| Err(Error::Lost(reason)))
            }

            $(#[$loss_signal])*
            pub fn loss_signal(&self) -> LossSignal {
                LossSignal::new(self.loss.clone())
            }

            $($more)*
        }
    };
}
pub(crate) use scope_type;

/// Why the lease is lost, if it is: the signal's reason, or expiry when validity ran out
/// before the signal fired.
pub(crate) fn lost(loss: &LossCell, valid: bool) -> Option<LostReason> {
    loss.reason().or_else(|| (!valid).then_some(LostReason::Expired))
}

/// The answer of a scoped lock whose work finished with `value`: the value only when the
/// lease was held to the end (`lost`: what was known when the work ended) and the release
/// found the key ours.
pub(crate) fn finished<T>(value: T, released: ReleaseOutcome, lost: Option<LostReason>) -> Result<T, Error> {
    match (released, lost) {
        (_, Some(reason)) => Err(Error::Lost(reason)),
        (ReleaseOutcome::NotHeld, None) => Err(Error::Lost(LostReason::NotOwner)),
        _ => Ok(value),
    }
}
