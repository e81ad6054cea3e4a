//! Reentrant owners: the holds of one owner, counted locally under one lease per
//! (key, kind). The table below is the pure bookkeeping (no I/O, no runtime), shared by both
//! drivers; `owner_api!` writes the public types once for both, like `lock_api!`.
//!
//! A hold is an `Arc` of the entry's shared state, which owns the real guard: re-entry clones
//! the `Arc` (no round trip), and the guard is released only when the last clone goes, so no
//! order of drops can release early. The table keeps a `Weak` to each held entry (so the
//! table never keeps a lock alive) and a gate for an entry being acquired, so that concurrent
//! first acquisitions by one owner make one server-side acquisition, not two that would wait
//! on each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::loss::LossCell;

/// Which lease of a key an owner holds: its lock and its read-write lock's write share are
/// distinct entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Lock,
    Write,
}

type Key = (String, Kind);

enum State<S> {
    /// A first acquisition is under way; the gate ends when it succeeds or gives up.
    Acquiring(Arc<LossCell>),
    Held(Weak<S>),
}

struct Slot<S> {
    /// Tells this slot from a later one at the same key, so that a stale clean-up leaves the
    /// later one alone.
    id: u64,
    state: State<S>,
}

/// One owner's entries.
pub(crate) struct Table<S> {
    slots: Mutex<HashMap<Key, Slot<S>>>,
    next: AtomicU64,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self { slots: Mutex::new(HashMap::new()), next: AtomicU64::new(0) }
    }
}

impl<S> std::fmt::Debug for Table<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("entries", &self.slots().len()).finish()
    }
}

/// What a caller of the owner does next at one key.
pub(crate) enum Step<S> {
    /// The owner holds it: one more hold of the same entry.
    Reenter(Arc<S>),
    /// Another call of this owner is acquiring it: wait for the gate to end, then look again.
    Wait(Arc<LossCell>),
    /// Nobody of this owner holds it: acquire, then [`Pending::finish`].
    Acquire(Pending<S>),
}

impl<S> Table<S> {
    fn slots(&self) -> MutexGuard<'_, HashMap<Key, Slot<S>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries now (held or being acquired).
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    /// Looks `key` up for one call. Never drops a hold while the table is locked (a last
    /// hold's clean-up locks it): an upgraded `Arc` leaves inside the step.
    pub(crate) fn step(self: &Arc<Self>, key: &str, kind: Kind) -> Step<S> {
        let mut slots = self.slots();
        let k = (key.to_owned(), kind);
        if let Some(slot) = slots.get(&k) {
            match &slot.state {
                State::Acquiring(gate) => return Step::Wait(gate.clone()),
                State::Held(weak) => {
                    if let Some(held) = weak.upgrade() {
                        return Step::Reenter(held);
                    }
                    // Its last hold is going (its clean-up will see another id): start anew.
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let gate = Arc::new(LossCell::default());
        slots.insert(k.clone(), Slot { id, state: State::Acquiring(gate.clone()) });
        Step::Acquire(Pending { table: self.clone(), key: k, id, gate, finished: false })
    }
}

/// A first acquisition under way. Dropped unfinished (failed, busy, cancelled), it removes
/// its slot and opens the gate, so that the callers waiting on it try for themselves.
pub(crate) struct Pending<S> {
    table: Arc<Table<S>>,
    key: Key,
    id: u64,
    gate: Arc<LossCell>,
    finished: bool,
}

impl<S> Pending<S> {
    /// The acquisition succeeded: `make` builds the shared state around the entry's
    /// clean-up handle, and the callers waiting on the gate re-enter it.
    pub(crate) fn finish(mut self, make: impl FnOnce(Entry<S>) -> S) -> Arc<S> {
        let entry = Entry { table: self.table.clone(), key: self.key.clone(), id: self.id };
        let held = Arc::new(make(entry));
        if let Some(slot) = self.table.slots().get_mut(&self.key).filter(|s| s.id == self.id) {
            slot.state = State::Held(Arc::downgrade(&held));
        }
        self.finished = true;
        self.gate.end();
        held
    }
}

impl<S> Drop for Pending<S> {
    fn drop(&mut self) {
        if !self.finished {
            {
                let mut slots = self.table.slots();
                if slots.get(&self.key).is_some_and(|s| s.id == self.id) {
                    slots.remove(&self.key);
                }
            }
            self.gate.end();
        }
    }
}

/// Removes a held entry from its table when the entry's shared state goes (with its last
/// hold), unless the slot already belongs to a later acquisition.
pub(crate) struct Entry<S> {
    table: Arc<Table<S>>,
    key: Key,
    id: u64,
}

impl<S> std::fmt::Debug for Entry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("key", &self.key).field("id", &self.id).finish()
    }
}

impl<S> Drop for Entry<S> {
    fn drop(&mut self) {
        let mut slots = self.table.slots();
        if slots.get(&self.key).is_some_and(|s| s.id == self.id) {
            slots.remove(&self.key);
        }
    }
}

/// Defines `Owner` and `Hold` in the invoking module, over its `Client` and `Guard` (whose
/// private fields it reads: it expands in their module). Waits go through the module's
/// `wait!`; `wait_gate` is how the side waits, up to a deadline, for another call's
/// acquisition to settle (the gate ends).
macro_rules! owner_api {
    (
        asyncness: [$($async:tt)?],
        generics: [$($g:tt)*],
        args: [$($a:tt)*],
        now: $now:path,
        waits: $waits:literal,
        owner: {$(#[$owner:meta])*},
        hold: {$(#[$hold:meta])*},
        hold_lost: {$($hold_lost:tt)*}
    ) => {
        impl<$($g)*> Client<$($a)*> {
            /// A new owner: locks taken through it are reentrant for it (see [`Owner`]). Each
            /// call makes a distinct owner; clone the owner to share it.
            pub fn owner(&self) -> Owner<$($a)*> {
                Owner { client: self.clone(), table: std::sync::Arc::default() }
            }
        }

        /// What the holds of one (owner, key, kind) share: the real guard, released when the
        /// last hold goes. The entry is declared first so that it leaves the table before the
        /// guard's release starts.
        struct Shared<$($g)*> {
            _entry: crate::owner::Entry<Shared<$($a)*>>,
            guard: Guard<$($a)*>,
        }

        $(#[$owner])*
        pub struct Owner<$($g)*> {
            client: Client<$($a)*>,
            table: std::sync::Arc<crate::owner::Table<Shared<$($a)*>>>,
        }

        impl<$($g)*> Clone for Owner<$($a)*> {
            fn clone(&self) -> Self {
                Self { client: self.client.clone(), table: self.table.clone() }
            }
        }

        impl<$($g)*> std::fmt::Debug for Owner<$($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Owner").field("entries", &self.table.len()).finish()
            }
        }

        impl<$($g)*> Owner<$($a)*> {
            #[doc = concat!(" ", $waits, " until the lock at `key` is held by this owner: at once, with no round")]
            /// trip, when it already holds it (one more hold of the same lease); otherwise as
            /// [`Client::lock`]. While another call of this owner is acquiring the key, waits
            /// for that one and then shares its lease.
            ///
            /// # Errors
            ///
            /// [`Error::Lost`] when this owner holds the key but its lease is lost (drop its
            /// holds, then lock again); otherwise as [`Client::lock`].
            pub $($async)? fn lock(&self, key: &str) -> Result<Hold<$($a)*>, Error> {
                wait!(self.take(key, crate::owner::Kind::Lock, None, false))?.ok_or(Error::Closed)
            }

            /// [`Owner::lock`], giving up after `timeout` ([`Error::TimedOut`]); a re-entry
            /// never waits.
            ///
            /// # Errors
            ///
            /// As [`Owner::lock`] and [`Client::lock_timeout`].
            pub $($async)? fn lock_timeout(&self, key: &str, timeout: Duration) -> Result<Hold<$($a)*>, Error> {
                let deadline = $now().checked_add(timeout);
                wait!(self.take(key, crate::owner::Kind::Lock, deadline, false))?.ok_or(Error::Closed)
            }

            /// One attempt: a re-entry when this owner holds the lock, `None` when someone else
            /// holds it, or while another call of this owner is still acquiring it.
            ///
            /// # Errors
            ///
            /// As [`Owner::lock`].
            pub $($async)? fn try_lock(&self, key: &str) -> Result<Option<Hold<$($a)*>>, Error> {
                wait!(self.take(key, crate::owner::Kind::Lock, None, true))
            }

            #[doc = concat!(" ", $waits, " until this owner holds the write share of the read-write lock at `key`")]
            /// ([`Client::rwlock`]), reentrantly like [`Owner::lock`]. The write share and the
            /// lock of one key are distinct entries of the owner.
            ///
            /// # Errors
            ///
            /// As [`Owner::lock`] and [`RwLock::write`].
            pub $($async)? fn write(&self, key: &str) -> Result<Hold<$($a)*>, Error> {
                wait!(self.take(key, crate::owner::Kind::Write, None, false))?.ok_or(Error::Closed)
            }

            /// [`Owner::write`], giving up after `timeout` ([`Error::TimedOut`]).
            ///
            /// # Errors
            ///
            /// As [`Owner::write`].
            pub $($async)? fn write_timeout(&self, key: &str, timeout: Duration) -> Result<Hold<$($a)*>, Error> {
                let deadline = $now().checked_add(timeout);
                wait!(self.take(key, crate::owner::Kind::Write, deadline, false))?.ok_or(Error::Closed)
            }

            /// One attempt at the write share, like [`Owner::try_lock`].
            ///
            /// # Errors
            ///
            /// As [`Owner::write`].
            pub $($async)? fn try_write(&self, key: &str) -> Result<Option<Hold<$($a)*>>, Error> {
                wait!(self.take(key, crate::owner::Kind::Write, None, true))
            }

            /// The client this owner locks through.
            pub fn client(&self) -> &Client<$($a)*> {
                &self.client
            }

            /// Keys (with their kind) this owner holds or is acquiring now.
            pub fn entries(&self) -> usize {
                self.table.len()
            }

            /// Re-enters, waits for this owner's acquisition in flight, or acquires. `None`
            /// only for a single attempt that finds the key busy.
            $($async)? fn take(
                &self,
                key: &str,
                kind: crate::owner::Kind,
                deadline: Option<Instant>,
                once: bool,
            ) -> Result<Option<Hold<$($a)*>>, Error> {
                use crate::owner::Step;
                loop {
                    match self.table.step(key, kind) {
                        Step::Reenter(shared) => {
                            let guard = &shared.guard;
                            // A lost lease is never handed out again as if it were held.
                            let lost = guard.loss.reason().or_else(|| (!guard.is_valid()).then_some(LostReason::Expired));
                            return match lost {
                                Some(reason) => Err(Error::Lost(reason)),
                                None => Ok(Some(Hold { shared })),
                            };
                        }
                        Step::Wait(_) if once => return Ok(None),
                        Step::Wait(gate) => {
                            if deadline.is_some_and(|d| $now() >= d) {
                                return Err(Error::TimedOut);
                            }
                            // Then look again: re-enter what it acquired, or try in its place.
                            wait!(wait_gate::<$($a)*>(&gate, deadline));
                        }
                        Step::Acquire(pending) => {
                            let resource = match kind {
                                crate::owner::Kind::Lock => Resource::Lock,
                                crate::owner::Kind::Write => Resource::Write,
                            };
                            let builder = self.client.lock_builder(key).resource(resource);
                            let builder = match deadline {
                                Some(deadline) => builder.deadline(deadline),
                                None => builder,
                            };
                            // Dropped on failure or cancellation, `pending` lets the waiters try.
                            let guard = if once { wait!(builder.try_lock())? } else { Some(wait!(builder.lock())?) };
                            return Ok(guard.map(|guard| Hold {
                                shared: pending.finish(|entry| Shared { _entry: entry, guard }),
                            }));
                        }
                    }
                }
            }
        }

        $(#[$hold])*
        pub struct Hold<$($g)*> {
            shared: std::sync::Arc<Shared<$($a)*>>,
        }

        impl<$($g)*> std::fmt::Debug for Hold<$($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Hold")
                    .field("key", &self.shared.guard.key)
                    .field("fence", &self.shared.guard.fence)
                    .field("depth", &self.depth())
                    .finish()
            }
        }

        impl<$($g)*> Hold<$($a)*> {
            /// The key held.
            pub fn key(&self) -> &str {
                self.shared.guard.key()
            }

            /// The lease's fencing token (the same for every hold of the entry).
            pub fn fence(&self) -> u64 {
                self.shared.guard.fence()
            }

            /// The owner token stored in the key while held.
            pub fn token(&self) -> &str {
                self.shared.guard.token()
            }

            /// Nothing may trust the lock past this instant (later after each renewal).
            pub fn valid_until(&self) -> Instant {
                self.shared.guard.valid_until()
            }

            /// Whether the lease is still valid now: cheap, no round trip.
            pub fn is_valid(&self) -> bool {
                self.shared.guard.is_valid()
            }

            /// An owned loss signal for the entry's lease (see [`Guard::loss_signal`]).
            pub fn loss_signal(&self) -> LossSignal {
                self.shared.guard.loss_signal()
            }

            /// The holds of this entry now, this one included: 1 for the outermost alone.
            pub fn depth(&self) -> usize {
                std::sync::Arc::strong_count(&self.shared)
            }

            $($hold_lost)*

            /// Gives this hold up. While other holds of the entry remain, nothing is sent and
            /// the answer is `None`; the last hold releases the lease like [`Guard::release`]
            /// and answers `Some` with what is known of it.
            ///
            /// # Errors
            ///
            /// From the last hold only: as [`Guard::release`].
            pub $($async)? fn release(self) -> Result<Option<ReleaseOutcome>, Error> {
                // Exactly one of racing last holds gets the state; the others just let go.
                match std::sync::Arc::into_inner(self.shared) {
                    None => Ok(None),
                    Some(Shared { _entry, guard }) => {
                        drop(_entry);
                        wait!(guard.release()).map(Some)
                    }
                }
            }
        }
    };
}
pub(crate) use owner_api;

#[cfg(test)]
mod tests {
    use super::*;

    struct Held {
        _entry: Entry<Held>,
    }

    fn acquire(table: &Arc<Table<Held>>, key: &str, kind: Kind) -> Arc<Held> {
        match table.step(key, kind) {
            Step::Acquire(p) => p.finish(|entry| Held { _entry: entry }),
            _ => panic!("expected a first acquisition"),
        }
    }

    #[test]
    fn reentry_shares_one_entry_until_the_last_hold() {
        let table = Arc::new(Table::default());
        let outer = acquire(&table, "k", Kind::Lock);
        let inner = match table.step("k", Kind::Lock) {
            Step::Reenter(h) => h,
            _ => panic!("expected a re-entry"),
        };
        assert!(Arc::ptr_eq(&outer, &inner));
        // Outer first: the entry stays while the inner hold lives.
        drop(outer);
        assert_eq!(table.len(), 1);
        assert!(matches!(table.step("k", Kind::Lock), Step::Reenter(_)));
        drop(inner);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn lock_and_write_are_distinct_entries() {
        let table = Arc::new(Table::default());
        let _lock = acquire(&table, "k", Kind::Lock);
        let _write = acquire(&table, "k", Kind::Write);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_second_first_acquisition_waits_on_the_gate() {
        let table: Arc<Table<Held>> = Arc::new(Table::default());
        let Step::Acquire(pending) = table.step("k", Kind::Lock) else { panic!("first") };
        let Step::Wait(gate) = table.step("k", Kind::Lock) else { panic!("second waits") };
        assert_eq!(gate.wait(Some(std::time::Instant::now())), None);
        let held = pending.finish(|entry| Held { _entry: entry });
        // The gate is open; looking again re-enters.
        assert_eq!(gate.wait(None), None);
        assert!(matches!(table.step("k", Kind::Lock), Step::Reenter(h) if Arc::ptr_eq(&h, &held)));
    }

    #[test]
    fn a_failed_acquisition_clears_its_slot_and_opens_the_gate() {
        let table: Arc<Table<Held>> = Arc::new(Table::default());
        let Step::Acquire(pending) = table.step("k", Kind::Lock) else { panic!("first") };
        let Step::Wait(gate) = table.step("k", Kind::Lock) else { panic!("second waits") };
        drop(pending);
        assert_eq!(gate.wait(None), None);
        assert_eq!(table.len(), 0);
        assert!(matches!(table.step("k", Kind::Lock), Step::Acquire(_)));
    }

    #[test]
    fn a_stale_clean_up_leaves_a_later_entry_alone() {
        let table: Arc<Table<Held>> = Arc::new(Table::default());
        let held = acquire(&table, "k", Kind::Lock);
        let weak = Arc::downgrade(&held);
        // Simulate the last hold going while a new call already looks: it starts anew.
        let entry = Arc::into_inner(held).map(|h| h._entry);
        assert!(weak.upgrade().is_none());
        let Step::Acquire(pending) = table.step("k", Kind::Lock) else { panic!("a fresh acquisition") };
        drop(entry);
        assert_eq!(table.len(), 1, "the old entry's clean-up left the new slot");
        let _new = pending.finish(|entry| Held { _entry: entry });
        assert_eq!(table.len(), 1);
    }
}
