//! A wait for a lock: what its attempts have shown, and the hand-offs it heard.

use std::time::Instant;

use crate::options::LockOptions;

/// What a lock that is acquiring knows of the queue and of hand-offs to it.
#[derive(Debug, Default)]
pub struct Waiter {
    /// Holds a reference on its channel (its inbox; a shared key's channel).
    pub subscribed: bool,
    /// A hand-off announced while an attempt was in flight, with its fence.
    pub granted: Option<u64>,
    /// When the latest attempt that found the lock held by another was sent: a hand-off
    /// announced after it set the key after that instant, so its lease counts from it.
    pub anchor: Option<Instant>,
    /// The highest fence a retry saw held by someone else: a hand-off at or below it is stale.
    pub seen_fence: u64,
    /// Shared mode: the key was announced free while an attempt was in flight.
    pub freed: bool,
}

impl Waiter {
    /// An attempt sent at `sent_at` found another holder and reported `fence` (a retry) or
    /// none. Returns the hand-off announced while it was in flight if that one came after it.
    ///
    /// The lease of a hand-off we hear counts from the anchor: every hand-off to this lock
    /// pops an entry that one of its attempts pushed, so it comes after the first attempt
    /// (when no earlier one may have run unanswered: `unsure`), and after a retry whose
    /// reported fence is below the hand-off's (a message at or below `seen_fence` is ignored).
    /// A retry that saw no counter tells nothing.
    pub fn saw_holder(&mut self, fence: Option<u64>, sent_at: Instant, unsure: bool) -> Option<u64> {
        self.seen_fence = self.seen_fence.max(fence.unwrap_or(0));
        if fence.is_some() || (self.anchor.is_none() && !unsure) {
            self.anchor = Some(sent_at);
        }
        self.granted.take().filter(|&g| g > self.seen_fence)
    }

    /// Whether a hand-off message with `fence` may be new: above every fence a retry saw
    /// held by someone else.
    pub fn is_fresh(&self, fence: u64) -> bool {
        fence > self.seen_fence
    }

    /// When a heard hand-off's lease starts and its validity, held at once: from the later of
    /// the anchor and `floor` (an instant the message was published after: a `PING` answered
    /// on the pub/sub connection before it was read), when at least half the TTL is left at
    /// `now` (else it is confirmed first). Either is an instant before the hand-off's `SET`.
    pub fn heard_valid_until(
        &self,
        opts: &LockOptions,
        floor: Option<Instant>,
        now: Instant,
    ) -> Option<(Instant, Instant)> {
        let from = self.anchor.max(floor)?;
        let valid_until = opts.valid_until(from);
        (valid_until > now + opts.ttl / 2).then_some((from, valid_until))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::Waiter;
    use crate::options::LockOptions;

    proptest! {
        #![proptest_config(super::super::proptest_config())]

        /// Whatever attempts report and whatever hand-offs are heard in between: the anchor
        /// and the highest fence seen never go back, a hand-off at or below a fence a retry
        /// saw is never taken, and a hand-off held at once counts from the anchor with at
        /// least half the TTL left.
        #[test]
        fn the_anchor_and_the_fences_only_move_forward(
            steps in prop::collection::vec((0u64..500, prop::option::of(0u64..100), prop::option::of(0u64..100), any::<bool>()), 0..30),
            ttl_ms in 10u64..10_000,
        ) {
            #[allow(clippy::disallowed_methods)] // the test's one clock reading
            let t0 = Instant::now();
            let opts = LockOptions { ttl: Duration::from_millis(ttl_ms), ..LockOptions::default() };
            let mut w = Waiter::default();
            let mut sent = t0;
            for (gap_ms, fence, heard, unsure) in steps {
                sent += Duration::from_millis(gap_ms);
                let (anchor, seen) = (w.anchor, w.seen_fence);
                w.granted = heard;
                let taken = w.saw_holder(fence.filter(|&f| f > 0), sent, unsure);
                prop_assert!(w.anchor >= anchor && w.seen_fence >= seen);
                prop_assert!(w.granted.is_none(), "a stashed hand-off is always consumed");
                if let Some(g) = taken {
                    prop_assert!(g > w.seen_fence && Some(g) == heard);
                }
                prop_assert!(!w.is_fresh(w.seen_fence));
                let now = sent + Duration::from_millis(gap_ms / 2);
                match (w.heard_valid_until(&opts, None, now), w.anchor) {
                    (Some((f, v)), Some(a)) => prop_assert!(f == a && v == opts.valid_until(a) && v > now + opts.ttl / 2),
                    (Some(_), None) => prop_assert!(false, "held at once without an anchor"),
                    (None, _) => {}
                }
                // A floor counts only when later than the anchor, and alone stands for one.
                let floor = sent.checked_sub(Duration::from_millis(ttl_ms / 3));
                if let Some((f, v)) = w.heard_valid_until(&opts, floor, now) {
                    prop_assert!(Some(f) == w.anchor.max(floor) && v == opts.valid_until(f) && v > now + opts.ttl / 2);
                }
            }
        }
    }
}
