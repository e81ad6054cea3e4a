//! A held lease: its fence, how long it is valid, when it is renewed, and whether it was lost.

use std::time::{Duration, Instant};

use crate::command::RequestId;
use crate::engine::OpId;
use crate::event::LostReason;
use crate::options::LockOptions;

/// A lease from the moment it is granted until it is released or lost.
#[derive(Debug)]
pub struct Lease {
    /// The fencing token of this grant.
    pub fence: u64,
    /// The end of validity: `t_sent + ttl − drift` of the request that set the expiry.
    pub valid_until: Instant,
    /// Renewal window: a batch may take the lease from `renew_after`; it is due at `renew_before`.
    pub renew_after: Instant,
    /// See `renew_after`.
    pub renew_before: Instant,
    /// The renewal in flight.
    pub renewing: Option<RequestId>,
    /// Set once the lease is lost; it never comes back.
    pub lost: Option<LostReason>,
    /// Extensions the caller asked for, answered by the next renewal's outcome (or the loss).
    pub extends: Vec<OpId>,
}

impl Lease {
    /// A lease granted by a request sent at `from` (the start of its renewal window).
    pub fn new(opts: &LockOptions, fence: u64, from: Instant, valid_until: Instant) -> Self {
        let (renew_after, renew_before) = renew_window(opts, from);
        Self { fence, valid_until, renew_after, renew_before, renewing: None, lost: None, extends: Vec::new() }
    }

    /// Whether the holder may still trust the lock at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        self.lost.is_none() && now < self.valid_until
    }

    /// A renewal sent at `sent_at` was confirmed: validity grows (never shrinks), and the next
    /// window counts from the renewal.
    pub fn renewed(&mut self, opts: &LockOptions, sent_at: Instant) {
        self.valid_until = self.valid_until.max(opts.valid_until(sent_at));
        (self.renew_after, self.renew_before) = renew_window(opts, sent_at);
    }

    /// A renewal of unknown outcome is tried again soon: jittered, at most a tenth of the TTL
    /// (and a second) later, at least 5 ms; `draw(lo, hi)` is the engine's jitter. Returns when.
    pub fn retry_renewal(&mut self, opts: &LockOptions, now: Instant, draw: impl FnOnce(u64, u64) -> u64) -> Instant {
        let cap = (opts.ttl / 10).min(Duration::from_secs(1)).as_millis() as u64;
        let at = now + Duration::from_millis(draw(cap / 2, cap.max(5)));
        (self.renew_after, self.renew_before) = (at, at);
        at
    }

    /// When the lease needs a timer of its own: the end of validity, unless something else
    /// wakes the engine for it first. A renewal in flight is watched by its batch's timer;
    /// a `scheduled` renewal by the renewal queue, which wakes the engine at `renew_before`
    /// (only a validity that ends before that needs its own timer). Never once lost.
    pub fn wake_at(&self, scheduled: bool) -> Option<Instant> {
        match (self.lost, self.renewing, scheduled) {
            (Some(_), _, _) | (None, Some(_), _) => None,
            (None, None, true) => (self.valid_until < self.renew_before).then_some(self.valid_until),
            (None, None, false) => Some(self.valid_until),
        }
    }
}

/// The renewal window of a lease that started at `from`: about a third of the TTL in.
fn renew_window(opts: &LockOptions, from: Instant) -> (Instant, Instant) {
    (from + opts.ttl / 4, from + opts.ttl / 3)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::Lease;
    use crate::event::LostReason;
    use crate::options::LockOptions;

    proptest! {
        #![proptest_config(super::super::proptest_config())]

        /// Renewals sent at any later instants never shorten validity, the renewal window
        /// follows the latest renewal, and the next wake-up is never past validity.
        #[test]
        fn renewals_only_extend_validity(ttl_ms in 10u64..60_000, steps in prop::collection::vec((0u64..20_000, any::<bool>()), 0..20)) {
            #[allow(clippy::disallowed_methods)] // the test's one clock reading
            let t0 = Instant::now();
            let opts = LockOptions { ttl: Duration::from_millis(ttl_ms), ..LockOptions::default() };
            let mut lease = Lease::new(&opts, 7, t0, opts.valid_until(t0));
            let mut sent = t0;
            for (gap_ms, scheduled) in steps {
                sent += Duration::from_millis(gap_ms);
                let before = lease.valid_until;
                lease.renewed(&opts, sent);
                prop_assert!(lease.valid_until >= before);
                prop_assert!(lease.renew_after >= sent && lease.renew_before >= lease.renew_after);
                prop_assert!(lease.wake_at(scheduled).is_none_or(|w| w <= lease.valid_until));
                // A lease with nothing else to wake the engine for it has a timer.
                prop_assert!(scheduled || lease.wake_at(false) == Some(lease.valid_until));
                prop_assert_eq!(lease.is_valid(sent), sent < lease.valid_until);
            }
            lease.lost = Some(LostReason::Expired);
            prop_assert_eq!(lease.wake_at(true), None);
            prop_assert!(!lease.is_valid(t0));
        }
    }
}
