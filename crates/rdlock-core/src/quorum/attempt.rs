//! One quorum acquisition attempt, folded from its members' answers (no I/O, no clock):
//! phase 1 takes the key on every member, phase 2 raises the counters of the granted ones to
//! the chosen fence. See `docs/protocol.md`, "Quorum lock over independent primaries".

use std::time::Duration;

use crate::error::LockError;
use crate::script::{QuorumFenceReply, QuorumTakeReply};

/// The largest fence a counter holds (what Lua holds exactly, as on a single node).
const MAX_FENCE: u64 = 9_007_199_254_740_990;

/// What one member did with the attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Member {
    /// Phase 1 not answered yet.
    Taking,
    /// Holds our token; its counter read this.
    Granted(u64),
    /// Phase 2 sent, not answered yet.
    Fencing,
    /// Its counter holds our fence.
    Raised,
    /// Held by another token.
    Busy(Option<Duration>),
    /// No use to this attempt: failed (its outcome may be unknown) or refused phase 2.
    Out,
    /// Phase 1 failed (unreachable, timed out, an error): no use, and not waited for when the
    /// attempt is released.
    Unreached,
}

/// What the attempt's driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing yet: answers are outstanding.
    Wait,
    /// Send phase 2 with `fence` to these members.
    Fence(u64, Vec<usize>),
    /// A majority of counters holds the fence: the attempt counts.
    Counted(u64),
    /// A majority can no longer be reached.
    Failed(Failure),
}

/// Why an attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Other holders: the shortest remaining lease reported, if any.
    Busy(Option<Duration>),
    /// Failed members alone leave no majority, or a member refused with an error no retry
    /// cures: report it.
    Error(LockError),
}

/// The attempt's fold.
#[derive(Debug)]
pub(crate) struct Attempt {
    members: Vec<Member>,
    fence: Option<u64>,
    /// The first error no retry cures (a key of another type, a refused script).
    fatal: Option<LockError>,
    failed: usize,
}

impl Attempt {
    /// An attempt on `n` members, phase 1 sent to each.
    pub(crate) fn new(n: usize) -> Self {
        Self { members: vec![Member::Taking; n], fence: None, fatal: None, failed: 0 }
    }

    fn needed(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Member `i` answered phase 1. An answer for a member already answered is ignored.
    pub(crate) fn on_take(&mut self, i: usize, answer: Result<QuorumTakeReply, LockError>) -> Step {
        if self.members.get(i) != Some(&Member::Taking) {
            return Step::Wait;
        }
        self.members[i] = match answer {
            Ok(QuorumTakeReply::Granted { counter }) => match self.fence {
                // A late grant joins phase 2 with the fence already chosen.
                Some(_) => Member::Fencing,
                None => Member::Granted(counter),
            },
            Ok(QuorumTakeReply::Busy { holder_ttl }) => Member::Busy(holder_ttl),
            Err(e) => {
                self.out(e);
                Member::Unreached
            }
        };
        if let (Some(f), Member::Fencing) = (self.fence, &self.members[i]) {
            return Step::Fence(f, vec![i]);
        }
        self.decide()
    }

    /// Member `i` answered phase 2.
    pub(crate) fn on_fence(&mut self, i: usize, answer: Result<QuorumFenceReply, LockError>) -> Step {
        if self.members.get(i) != Some(&Member::Fencing) {
            return Step::Wait;
        }
        self.members[i] = match answer {
            Ok(QuorumFenceReply::Raised) => Member::Raised,
            Ok(QuorumFenceReply::NotHeld | QuorumFenceReply::Behind { .. }) => Member::Out,
            Err(e) => self.out(e),
        };
        self.decide()
    }

    /// Which members' phase 1 failed.
    pub(crate) fn unreached(&self) -> Vec<bool> {
        self.members.iter().map(|m| *m == Member::Unreached).collect()
    }

    /// The attempt gives up (its validity ran out): every member still counted is released
    /// by the caller; only the shape of the failure is decided here.
    pub(crate) fn give_up(&mut self) -> Failure {
        self.fatal.take().map_or(Failure::Error(LockError::NoValidityLeft), Failure::Error)
    }

    fn out(&mut self, e: LockError) -> Member {
        self.failed += 1;
        if !e.is_retryable() && self.fatal.is_none() {
            self.fatal = Some(e);
        }
        Member::Out
    }

    fn count(&self, f: impl Fn(&Member) -> bool) -> usize {
        self.members.iter().filter(|m| f(m)).count()
    }

    fn decide(&mut self) -> Step {
        let needed = self.needed();
        if self.count(|m| *m == Member::Raised) >= needed {
            return self.fence.map_or(Step::Wait, Step::Counted);
        }
        // Members that may still end up raised.
        let possible =
            self.count(|m| matches!(m, Member::Taking | Member::Granted(_) | Member::Fencing | Member::Raised));
        if possible < needed {
            return Step::Failed(self.failure());
        }
        let granted: Vec<usize> =
            (0..self.members.len()).filter(|&i| matches!(self.members[i], Member::Granted(_))).collect();
        if self.fence.is_none() && granted.len() >= needed {
            let top = granted.iter().filter_map(|&i| match self.members[i] {
                Member::Granted(c) => Some(c),
                _ => None,
            });
            let fence = top.max().unwrap_or(0).saturating_add(1);
            if fence > MAX_FENCE {
                return Step::Failed(Failure::Error(LockError::UnexpectedReply(format!(
                    "quorum take: a counter at {} leaves no fence",
                    fence - 1
                ))));
            }
            self.fence = Some(fence);
            for &i in &granted {
                self.members[i] = Member::Fencing;
            }
            return Step::Fence(fence, granted);
        }
        Step::Wait
    }

    fn failure(&mut self) -> Failure {
        if let Some(e) = self.fatal.take() {
            return Failure::Error(e);
        }
        let n = self.members.len();
        if self.failed > n - self.needed() {
            return Failure::Error(LockError::NoQuorum { failed: self.failed, members: n, needed: self.needed() });
        }
        let ttl = self.members.iter().filter_map(|m| if let Member::Busy(t) = m { *t } else { None }).min();
        Failure::Busy(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::TransportError;

    fn granted(c: u64) -> Result<QuorumTakeReply, LockError> {
        Ok(QuorumTakeReply::Granted { counter: c })
    }
    fn busy() -> Result<QuorumTakeReply, LockError> {
        Ok(QuorumTakeReply::Busy { holder_ttl: Some(Duration::from_millis(700)) })
    }
    fn down() -> Result<QuorumTakeReply, LockError> {
        Err(LockError::Transport(TransportError::Timeout))
    }

    #[test]
    fn phase_two_starts_at_a_majority_with_the_highest_counter_plus_one() {
        let mut a = Attempt::new(5);
        assert_eq!(a.on_take(0, granted(7)), Step::Wait);
        assert_eq!(a.on_take(3, busy()), Step::Wait);
        assert_eq!(a.on_take(1, granted(40)), Step::Wait);
        assert_eq!(a.on_take(2, granted(9)), Step::Fence(41, vec![0, 1, 2]));
        // A late grant is fenced with the same fence.
        assert_eq!(a.on_take(4, granted(1000)), Step::Fence(41, vec![4]));
        assert_eq!(a.on_fence(0, Ok(QuorumFenceReply::Raised)), Step::Wait);
        assert_eq!(a.on_fence(4, Ok(QuorumFenceReply::Behind { counter: 1000 })), Step::Wait);
        assert_eq!(a.on_fence(1, Ok(QuorumFenceReply::Raised)), Step::Wait);
        assert_eq!(a.on_fence(2, Ok(QuorumFenceReply::Raised)), Step::Counted(41));
    }

    #[test]
    fn contention_fails_as_soon_as_no_majority_is_possible() {
        let mut a = Attempt::new(5);
        assert_eq!(a.on_take(0, busy()), Step::Wait);
        assert_eq!(a.on_take(1, down()), Step::Wait);
        assert_eq!(a.on_take(2, busy()), Step::Failed(Failure::Busy(Some(Duration::from_millis(700)))));
    }

    #[test]
    fn an_outage_of_a_majority_is_no_quorum() {
        let mut a = Attempt::new(5);
        a.on_take(0, down());
        a.on_take(1, down());
        let step = a.on_take(2, down());
        assert_eq!(step, Step::Failed(Failure::Error(LockError::NoQuorum { failed: 3, members: 5, needed: 3 })));
    }

    #[test]
    fn a_refused_phase_two_fails_the_attempt_when_it_leaves_no_majority() {
        let mut a = Attempt::new(3);
        a.on_take(0, granted(1));
        assert_eq!(a.on_take(1, granted(1)), Step::Fence(2, vec![0, 1]));
        assert_eq!(a.on_fence(0, Ok(QuorumFenceReply::NotHeld)), Step::Wait, "member 2 may still grant");
        assert_eq!(a.on_take(2, busy()), Step::Failed(Failure::Busy(Some(Duration::from_millis(700)))));
    }

    #[test]
    fn an_error_no_retry_cures_is_reported() {
        let mut a = Attempt::new(3);
        let wrongtype = LockError::Server(crate::ServerError::new("WRONGTYPE", "x"));
        a.on_take(0, Err(wrongtype.clone()));
        assert_eq!(a.on_take(1, busy()), Step::Failed(Failure::Error(wrongtype)));
    }

    #[test]
    fn a_counter_at_the_limit_leaves_no_fence() {
        let mut a = Attempt::new(1);
        assert!(matches!(
            a.on_take(0, granted(MAX_FENCE)),
            Step::Failed(Failure::Error(LockError::UnexpectedReply(_)))
        ));
    }
}
