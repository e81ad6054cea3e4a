//! An owner-checked release (also the clean-up of an abandoned or failed acquisition), kept
//! until the server has answered it, and after that while an attempt of unknown outcome may
//! still take the key.

use std::time::{Duration, Instant};

use crate::command::RequestId;
use crate::engine::OpId;
use crate::error::LockError;
use crate::event::{Event, ReleaseOutcome};
use crate::script::ReleaseReply;

/// Longest pause between the retries of a release that got no answer.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// After a release is answered, when an attempt of unknown outcome may still run on the
/// server (it was sent on a link that stalled), the release is repeated this long after it.
const RECHECKS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(2)];

/// What to tell the caller once a release completes.
#[derive(Debug)]
pub enum Then {
    /// The caller asked to release (this op): report [`Event::Released`].
    Report(OpId),
    /// Answer this op with this event instead (an acquisition undone).
    Emit(OpId, Event),
    /// Nobody is listening (a dropped guard, an abandoned wait).
    Silent,
}

/// A release in progress.
#[derive(Debug)]
pub struct Release {
    /// The request in flight; `None` while waiting for `retry_at`.
    pub req: Option<RequestId>,
    /// When to send it again.
    pub retry_at: Option<Instant>,
    attempts: u32,
    /// The lease was valid when the release began: only then can it report `Released`.
    valid_at_start: bool,
    /// What the caller is told at the first answer or failure.
    pub then: Then,
    /// Retries stop here: by then every key our requests could have set has expired.
    give_up: Instant,
    /// Repeats still due after an answer (see [`RECHECKS`]).
    rechecks_left: usize,
}

impl Release {
    /// A release that begins now; `give_up` ends its retries; `unsure` (an attempt of this
    /// lock went unanswered) makes it repeat after its answer.
    pub fn new(valid_at_start: bool, then: Then, give_up: Instant, unsure: bool) -> Self {
        let rechecks_left = if unsure { RECHECKS.len() } else { 0 };
        Self { req: None, retry_at: None, attempts: 0, valid_at_start, then, give_up, rechecks_left }
    }

    /// Whether the lease was valid when the release began (the key most likely still ours).
    pub fn valid_at_start(&self) -> bool {
        self.valid_at_start
    }

    /// The release was sent (again) as `req`.
    pub fn sent(&mut self, req: RequestId) {
        self.req = Some(req);
        self.retry_at = None;
        self.attempts += 1;
    }

    /// The answer to the request in flight, or its failure. Returns what to tell the caller
    /// (the first answer or failure only: the op it answers, and the event) and, when the
    /// release must go again, when.
    pub fn answered(
        &mut self,
        outcome: &Result<ReleaseReply, LockError>,
        now: Instant,
    ) -> (Option<(OpId, Event)>, Option<Instant>) {
        self.req = None;
        let known = |held: bool| if held { ReleaseOutcome::Released } else { ReleaseOutcome::NotHeld };
        let event = match (outcome, std::mem::replace(&mut self.then, Then::Silent)) {
            (_, Then::Silent) => None,
            (_, Then::Emit(op, e)) => Some((op, e)),
            // Only the first attempt's answer tells: after a lost one, "not ours" may be our
            // own earlier delete, or an expiry, or a restart.
            (Ok(r), Then::Report(op)) if self.attempts == 1 => {
                Some((op, Event::Released { outcome: known(self.valid_at_start && r.was_held()) }))
            }
            (Ok(_), Then::Report(op)) => Some((op, Event::Released { outcome: ReleaseOutcome::Unknown })),
            (Err(e), Then::Report(op)) if e.is_retryable() => Some((
                op,
                Event::Released {
                    outcome: if self.valid_at_start { ReleaseOutcome::Unknown } else { ReleaseOutcome::NotHeld },
                },
            )),
            (Err(e), Then::Report(op)) => Some((op, Event::Failed(e.clone()))),
        };
        self.retry_at = match outcome {
            Err(e) if e.is_retryable() && now < self.give_up => {
                Some(now + BACKOFF_CAP.min(Duration::from_millis(50) * 2u32.pow(self.attempts.min(10))))
            }
            // Answered: repeat it while an attempt of ours may still take the key.
            Ok(_) if self.rechecks_left > 0 => {
                let delay = RECHECKS[RECHECKS.len() - self.rechecks_left];
                self.rechecks_left -= 1;
                Some(now + delay)
            }
            _ => None,
        };
        (event, self.retry_at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::{Release, Then};
    use crate::command::RequestId;
    use crate::engine::OpId;
    use crate::error::LockError;
    use crate::event::{Event, ReleaseOutcome};
    use crate::reply::TransportError;
    use crate::script::ReleaseReply;

    proptest! {
        #![proptest_config(super::super::proptest_config())]

        /// The caller hears once, at the first answer or failure, and `Released` only when
        /// the lease was valid and the first attempt's answer freed the key; retries stop at
        /// `give_up`, and at most two repeats follow an answer.
        #[test]
        fn one_answer_then_retries_and_repeats_end(
            valid in any::<bool>(),
            unsure in any::<bool>(),
            answers in prop::collection::vec(0u8..4, 1..20),
        ) {
            #[allow(clippy::disallowed_methods)] // the test's one clock reading
            let t0 = Instant::now();
            let give_up = t0 + Duration::from_secs(10);
            let mut r = Release::new(valid, Then::Report(OpId(1)), give_up, unsure);
            let (mut now, mut events, mut repeats, mut first) = (t0, 0, 0, None);
            for (i, a) in answers.into_iter().enumerate() {
                r.sent(RequestId(i as u64));
                let outcome = match a {
                    0 => Ok(ReleaseReply::NotHeld),
                    1 => Ok(ReleaseReply::Released),
                    2 => Ok(ReleaseReply::HandedOff),
                    _ => Err(LockError::Transport(TransportError::Timeout)),
                };
                let (event, again) = r.answered(&outcome, now);
                if let Some(e) = event {
                    events += 1;
                    first = Some((i, outcome.clone(), e));
                }
                repeats += usize::from(outcome.is_ok() && again.is_some());
                match again {
                    Some(at) => { prop_assert!(at > now); now = at; }
                    None => break,
                }
                prop_assert!(outcome.is_ok() || now <= give_up + Duration::from_secs(5));
            }
            prop_assert_eq!(events, 1, "the caller hears exactly once");
            prop_assert!(repeats <= 2);
            if let Some((i, outcome, (OpId(1), Event::Released { outcome: told }))) = first {
                let freed = matches!(outcome, Ok(ReleaseReply::Released | ReleaseReply::HandedOff));
                prop_assert_eq!(told == ReleaseOutcome::Released, i == 0 && valid && freed);
            }
        }
    }
}
