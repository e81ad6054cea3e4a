//! One lock of the engine: what it is, and which phase it is in. Everything that only means
//! something in one phase lives in that phase.

use std::time::Instant;

use super::OpId;
use super::value::WriteBack;
use crate::command::{RequestId, Route};
use crate::machine::{Lease, Release, Waiter};
use crate::options::{LockOptions, Resource};
use crate::script::StoredValue;

/// A lock, from `acquire` until the engine forgets it.
#[derive(Debug)]
pub(crate) struct Lock {
    /// The user's key; the other names are derived when needed (a waiting lock stays small).
    pub key: String,
    pub token: u128,
    pub opts: LockOptions,
    /// A lock, or a share of a counted resource: which scripts serve it.
    pub resource: Resource,
    pub route: Route,
    pub phase: Phase,
    /// An attempt was sent: the server may have queued the lock, or handed it the key.
    pub attempted: bool,
    /// An attempt got no answer: it may still run on the server, even after a release.
    pub unsure: bool,
    /// An attempt of it found another holder: a grant comes after that holder's, and its
    /// release will likely hand the lock on, so it may go behind a `PING`
    /// (`Engine::release_behind_ping`).
    pub contended: bool,
    /// The wake-up the timer heap holds for this lock.
    pub timer: Option<Instant>,
    /// A mutex's value as its grant returned it, until the caller takes it.
    pub fetched: Option<Box<StoredValue>>,
    /// A mutex's value to write back in front of its release.
    pub write_back: Option<Box<WriteBack>>,
}

#[derive(Debug)]
pub(crate) enum Phase {
    Acquiring(Acquisition),
    Held(Lease),
    Releasing(Release),
}

/// A lock being acquired: its attempts, its wait, and the caller's terms.
#[derive(Debug)]
pub(crate) struct Acquisition {
    /// The caller's `acquire`, answered by the acquisition's outcome.
    pub op: OpId,
    /// `try_lock`: one attempt, never queued.
    pub try_only: bool,
    pub deadline: Option<Instant>,
    pub step: Step,
    pub waiter: Waiter,
    /// The caller gave up while a request was in flight: clean up when it returns.
    pub abandoned: bool,
}

#[derive(Debug)]
pub(crate) enum Step {
    /// Waiting for the replica count before the next attempt.
    Counting,
    /// An attempt is in flight.
    InFlight(InFlight),
    /// Waiting for a hand-off, or for the next poll.
    Idle { retry_at: Instant },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    pub req: RequestId,
    pub sent_at: Instant,
    /// The channel was subscribed when the attempt was sent: no hand-off can be missed.
    pub sent_subscribed: bool,
    /// Replicas that must confirm a grant.
    pub wanted: u32,
    /// The primary it was sent to ([`super::Engine::handle_primary_changed`] counts them): a
    /// grant from an earlier one is checked on the current one at once.
    pub primary: u32,
}

impl Lock {
    /// The acquisition, while acquiring.
    pub fn acquisition(&mut self) -> Option<&mut Acquisition> {
        match &mut self.phase {
            Phase::Acquiring(a) => Some(a),
            _ => None,
        }
    }

    /// The lease, while held.
    pub fn lease(&mut self) -> Option<&mut Lease> {
        match &mut self.phase {
            Phase::Held(l) => Some(l),
            _ => None,
        }
    }

    /// When this lock next needs the engine, from its phase alone (so an early wake-up is
    /// harmless); `renewal_scheduled` says whether its renewal sits in the batcher.
    pub fn wake_at(&self, renewal_scheduled: bool) -> Option<Instant> {
        match &self.phase {
            Phase::Acquiring(a) => match a.step {
                Step::Counting => a.deadline,
                Step::InFlight(_) if a.abandoned => None,
                Step::InFlight(_) => a.deadline,
                Step::Idle { retry_at } => Some(a.deadline.map_or(retry_at, |d| d.min(retry_at))),
            },
            Phase::Held(lease) => lease.wake_at(renewal_scheduled),
            Phase::Releasing(r) => r.retry_at,
        }
    }

    /// Makes `wake` this lock's wake-up; returns it when the timer heap needs it (a changed
    /// time: an entry left for the old one is ignored when it comes up).
    pub fn set_wake(&mut self, wake: Option<Instant>) -> Option<Instant> {
        if wake == self.timer {
            return None;
        }
        self.timer = wake;
        wake
    }
}
