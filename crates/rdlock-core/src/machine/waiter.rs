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

    /// The validity of a heard hand-off held at once: from the anchor, when at least half the
    /// TTL is left at `now` (else it is confirmed first).
    pub fn heard_valid_until(&self, opts: &LockOptions, now: Instant) -> Option<Instant> {
        let valid_until = opts.valid_until(self.anchor?);
        (valid_until > now + opts.ttl / 2).then_some(valid_until)
    }
}
