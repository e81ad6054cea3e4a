//! Counting members' answers to a request sent to every member (a renewal, a release).

/// Per member: yes, no, or failed (outcome unknown); each member counted once.
#[derive(Debug)]
pub(crate) struct Tally {
    answered: Vec<Option<Answer>>,
}

/// One member's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Done on this member (extended, deleted).
    Yes,
    /// Not ours on this member.
    No,
    /// No answer, or an error: unknown.
    Failed,
}

impl Tally {
    pub(crate) fn new(n: usize) -> Self {
        Self { answered: vec![None; n] }
    }

    /// Records member `i`'s answer (a second answer for a member is ignored).
    pub(crate) fn record(&mut self, i: usize, a: Answer) {
        if let Some(slot @ None) = self.answered.get_mut(i) {
            *slot = Some(a);
        }
    }

    pub(crate) fn count(&self, a: Answer) -> usize {
        self.answered.iter().filter(|x| **x == Some(a)).count()
    }

    pub(crate) fn complete(&self) -> bool {
        self.answered.iter().all(Option::is_some)
    }

    pub(crate) fn members(&self) -> usize {
        self.answered.len()
    }

    pub(crate) fn needed(&self) -> usize {
        self.answered.len() / 2 + 1
    }

    /// A majority said yes.
    pub(crate) fn won(&self) -> bool {
        self.count(Answer::Yes) >= self.needed()
    }

    /// A majority can no longer say yes because too many said no.
    pub(crate) fn refused(&self) -> bool {
        self.count(Answer::No) > self.members() - self.needed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        let mut t = Tally::new(5);
        t.record(0, Answer::Yes);
        t.record(0, Answer::No);
        t.record(1, Answer::Failed);
        t.record(2, Answer::Yes);
        assert!(!t.won() && !t.refused() && !t.complete());
        t.record(3, Answer::Yes);
        assert!(t.won());
        let mut t = Tally::new(3);
        t.record(0, Answer::No);
        t.record(2, Answer::No);
        assert!(t.refused() && !t.won());
    }
}
