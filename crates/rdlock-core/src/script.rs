//! The Lua scripts the lock runs on the server, and the names the core knows them by.

/// One of rdlock's server-side scripts. The core builds their arguments and reads their
/// replies; a driver only has to run them (`EVALSHA`, falling back to `EVAL` on `NOSCRIPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Script {
    /// Take the lock, confirm an earlier take, or join the wait queue.
    Acquire,
    /// Owner-checked release that hands the lock to the next waiter.
    Release,
    /// Owner-checked renewal of one or many locks.
    Extend,
    /// Owner-checked delete of a key shared with foreign clients, announced on the lock's
    /// channel (no hand-off: nobody queues).
    ReleaseShared,
}

impl Script {
    /// Every script, for drivers that load them up front.
    pub const ALL: [Script; 4] = [Script::Acquire, Script::Release, Script::Extend, Script::ReleaseShared];

    /// The Lua source (the fence prelude, `fence.lua`, is prepended to the scripts that grant
    /// a lock).
    pub fn source(self) -> &'static str {
        match self {
            Script::Acquire => concat!(include_str!("../scripts/fence.lua"), include_str!("../scripts/acquire.lua")),
            Script::Release => concat!(include_str!("../scripts/fence.lua"), include_str!("../scripts/release.lua")),
            Script::Extend => include_str!("../scripts/extend.lua"),
            Script::ReleaseShared => include_str!("../scripts/release_shared.lua"),
        }
    }

    /// A short name for logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            Script::Acquire => "acquire",
            Script::Release => "release",
            Script::Extend => "extend",
            Script::ReleaseShared => "release-shared",
        }
    }
}

/// The acquire script's answer, read strictly: a shape the script never sends is refused, so
/// a confused or foreign server can never make a grant out of it. The engine and the tests'
/// oracles read replies through this one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireReply {
    /// `{1, fence}`: the caller holds the lock. The fence is never 0 (the counter is seeded
    /// from the server clock in microseconds).
    Granted {
        /// The fencing token.
        fence: u64,
    },
    /// `{0, pttl}` or, from a retry, `{0, pttl, fence}`: someone else holds the lock.
    Held {
        /// The holder's remaining lease; `None` when the caller queues behind other waiters
        /// (`-3`) or the key has no expiry (`-1`, a foreign writer).
        holder_ttl: Option<std::time::Duration>,
        /// The lock's current fence, when a retry reported a live counter.
        fence: Option<u64>,
    },
}

impl AcquireReply {
    /// Reads the script's reply; `None` for any shape the script does not send.
    pub fn parse(reply: &crate::Reply) -> Option<Self> {
        let items = reply.as_array()?;
        let int = |i: usize| match items.get(i) {
            Some(crate::Reply::Int(v)) => Some(*v),
            _ => None,
        };
        match (int(0)?, items.len()) {
            (1, 2) => {
                let fence = u64::try_from(int(1)?).ok().filter(|&f| f > 0)?;
                Some(AcquireReply::Granted { fence })
            }
            (0, 2 | 3) => {
                let pttl = int(1).filter(|&t| t >= -3)?;
                let holder_ttl = u64::try_from(pttl).ok().map(std::time::Duration::from_millis);
                let fence = match items.len() {
                    3 => Some(u64::try_from(int(2)?).ok()?).filter(|&f| f > 0),
                    _ => None,
                };
                Some(AcquireReply::Held { holder_ttl, fence })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AcquireReply;
    use crate::Reply::{self, Array, Data, Int, Nil};

    fn parse(items: Vec<Reply>) -> Option<AcquireReply> {
        AcquireReply::parse(&Array(items))
    }

    #[test]
    fn grants_have_two_elements_and_a_positive_fence() {
        assert_eq!(parse(vec![Int(1), Int(7)]), Some(AcquireReply::Granted { fence: 7 }));
        for bad in [
            vec![Int(1), Int(0)],
            vec![Int(1), Int(-4)],
            vec![Int(1), Int(0), Nil],
            vec![Int(1), Int(7), Int(7)],
            vec![Int(1), Data(b"7".to_vec())],
            vec![Int(1)],
            vec![Int(2), Int(7)],
            vec![],
        ] {
            assert_eq!(parse(bad.clone()), None, "{bad:?}");
        }
        assert_eq!(AcquireReply::parse(&Int(1)), None);
    }

    #[test]
    fn held_replies_carry_a_ttl_and_maybe_a_fence() {
        use std::time::Duration;
        let held = |ttl, fence| Some(AcquireReply::Held { holder_ttl: ttl, fence });
        assert_eq!(parse(vec![Int(0), Int(250)]), held(Some(Duration::from_millis(250)), None));
        assert_eq!(parse(vec![Int(0), Int(-3)]), held(None, None));
        assert_eq!(parse(vec![Int(0), Int(5), Int(9)]), held(Some(Duration::from_millis(5)), Some(9)));
        assert_eq!(parse(vec![Int(0), Int(5), Int(0)]), held(Some(Duration::from_millis(5)), None));
        assert_eq!(parse(vec![Int(0), Int(-4)]), None);
        assert_eq!(parse(vec![Int(0), Int(5), Int(-1)]), None);
        assert_eq!(parse(vec![Int(0), Int(5), Nil]), None);
        assert_eq!(parse(vec![Int(0), Int(5), Int(1), Int(1)]), None);
    }
}
