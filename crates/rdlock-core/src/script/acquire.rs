//! `acquire.lua`: take the lock, confirm a hand-off, or join the wait queue.

use std::time::Duration;

use crate::Reply;
use crate::command::Args;
use crate::command::Command;
use crate::keys::{LockKeys, Names, Role};

use super::Script;

/// How an attempt treats the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `try_lock`: do not queue.
    Try,
    /// The first attempt of a wait: queue on failure.
    First,
    /// A later attempt (or a confirmation): idempotent, queues only if not queued.
    Retry,
}

impl Mode {
    pub(super) fn arg(self) -> &'static str {
        match self {
            Mode::Try => "try",
            Mode::First => "first",
            Mode::Retry => "retry",
        }
    }
}

/// The arguments of one call (`ARGV` in the script's header).
#[derive(Clone, Debug)]
pub struct AcquireArgs<'a> {
    /// The owner token, as stored in the key.
    pub token: &'a str,
    /// The lease, in ms.
    pub ttl_ms: u64,
    /// What to do when the lock is held.
    pub mode: Mode,
    /// How long the queue outlives its last push.
    pub queue_ttl: Duration,
    /// How long a freshly seeded fence counter lives.
    pub fence_ttl: Duration,
    /// How long a hand-off nobody heard waits for its waiter.
    pub claim: Duration,
    /// The caller's inbox, as it follows `K#rdl:` ([`LockKeys::inbox_suffix`]).
    pub inbox: &'a str,
}

impl AcquireArgs<'_> {
    /// The script call for the lock named by `keys`.
    pub fn command(&self, keys: &LockKeys) -> Command {
        let mut names = Args::with_capacity(3, 3 * keys.lock.len() + 16);
        names.push(&keys.lock).push(&keys.fence).push(&keys.queue);
        Command::Script { script: Script::Acquire, keys: names, args: self.args(0) }
    }

    /// The script call for the mutex named by `keys`: a grant also returns its value
    /// ([`super::StoredValue::from_grant`]).
    pub fn command_with_value(&self, keys: &LockKeys) -> Command {
        let mut names = Args::with_capacity(4, 4 * keys.lock.len() + 24);
        names.push(&keys.lock).push(&keys.fence).push(&keys.queue).push(&super::value_key(&keys.lock));
        Command::Script { script: Script::Acquire, keys: names, args: self.args(0) }
    }

    /// `ARGV`, with room for the `more` a permit's attempt adds.
    pub(super) fn args(&self, more: usize) -> Args {
        let rest = AcquireRest {
            ttl_ms: self.ttl_ms,
            mode: self.mode,
            queue_ttl: self.queue_ttl,
            fence_ttl: self.fence_ttl,
            claim: self.claim,
        };
        let bytes = self.token.len() + self.inbox.len() + 48 + 12 * more;
        rest.argv(
            more,
            bytes,
            |a| a.push(self.token),
            |a| {
                a.push(self.inbox);
            },
        )
    }

    /// The same call for the lock of key `key` (accepted by [`LockKeys::new`]) with `token`,
    /// waited on by `client` (its inbox), and for a mutex (`with_value`) its value's name:
    /// names, token and inbox written in place, as a release writes them
    /// ([`super::ReleaseArgs::for_lock`]; every attempt of a lock goes this way).
    pub(crate) fn for_lock(key: &str, token: u128, client: u64, rest: AcquireRest, with_value: bool) -> Command {
        let n = 3 + usize::from(with_value);
        let (named, mut names) = (Names::of(key), Args::with_capacity(n, n * (key.len() + 12)));
        names.push(key);
        named.push(&mut names, Role::Fence);
        named.push(&mut names, Role::Queue);
        if with_value {
            named.push(&mut names, Role::Data);
        }
        Command::Script { script: Script::Acquire, keys: names, args: rest.args_for(&named, token, client, 0) }
    }
}

/// An attempt's arguments beside the lock's own token and inbox ([`AcquireArgs`]' others).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AcquireRest {
    pub(crate) ttl_ms: u64,
    pub(crate) mode: Mode,
    pub(crate) queue_ttl: Duration,
    pub(crate) fence_ttl: Duration,
    pub(crate) claim: Duration,
}

impl AcquireRest {
    /// `ARGV` for the lock `named` held with `token` by `client`, written in place, with room
    /// for the `more` a permit's attempt adds.
    pub(super) fn args_for(&self, named: &Names<'_>, token: u128, client: u64, more: usize) -> Args {
        let bytes = 32 + 24 + 48 + 12 * more;
        self.argv(more, bytes, |a| a.push_hex(token), |a| named.push_inbox_suffix(a, client))
    }

    /// `ARGV` in the script's order, the token and the inbox written by `token` and `inbox`.
    fn argv(
        &self,
        more: usize,
        bytes: usize,
        token: impl FnOnce(&mut Args) -> &mut Args,
        inbox: impl FnOnce(&mut Args),
    ) -> Args {
        let mut args = Args::with_capacity(7 + more, bytes);
        token(&mut args)
            .push_u64(self.ttl_ms)
            .push(self.mode.arg())
            .push_u64(millis(self.queue_ttl))
            .push_u64(millis(self.fence_ttl))
            .push_u64(millis(self.claim));
        inbox(&mut args);
        args
    }
}

/// The acquire script's answer, read strictly: a shape the script never sends is refused, so
/// a confused or foreign server can never make a grant out of it. The engine and the tests'
/// oracles read replies through this one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireReply {
    /// `{1, fence}`, or `{1, fence, f, v}` for a mutex with a value: the caller holds the
    /// lock. The fence is never 0 (the counter is seeded from the server clock in
    /// microseconds).
    Granted {
        /// The fencing token.
        fence: u64,
    },
    /// `{0, pttl}` or, from a retry, `{0, pttl, fence}`: someone else holds the lock.
    Held {
        /// The holder's remaining lease; `None` when the caller queues behind other waiters
        /// (`-3`) or the key has no expiry (`-1`, a foreign writer).
        holder_ttl: Option<Duration>,
        /// The lock's current fence, when a retry reported a live counter.
        fence: Option<u64>,
    },
}

impl AcquireReply {
    /// Reads the script's reply; `None` for any shape the script does not send.
    pub fn parse(reply: &Reply) -> Option<Self> {
        let items = reply.as_array()?;
        let int = |i: usize| match items.get(i) {
            Some(Reply::Int(v)) => Some(*v),
            _ => None,
        };
        match (int(0)?, items.len()) {
            // A mutex's grant carries its value: bytes, never nil.
            (1, 2) | (1, 4) if items.len() == 2 || matches!(items[3], Reply::Data(_)) => {
                let fence = u64::try_from(int(1)?).ok().filter(|&f| f > 0)?;
                Some(AcquireReply::Granted { fence })
            }
            (0, 2 | 3) => {
                let pttl = int(1).filter(|&t| t >= -3)?;
                let holder_ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
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

/// A duration as the scripts take it: whole milliseconds.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        let with_value = vec![Int(1), Int(7), Data(b"5".to_vec()), Data(b"v".to_vec())];
        assert_eq!(parse(with_value), Some(AcquireReply::Granted { fence: 7 }));
        assert_eq!(parse(vec![Int(1), Int(7), Data(b"5".to_vec()), Nil]), None);
    }

    #[test]
    fn an_attempt_written_in_place_is_the_one_built() {
        use super::{AcquireArgs, AcquireRest, Mode};
        use crate::keys::LockKeys;
        use crate::script::{MAX_CAPACITY, PermitArgs, PermitKeys};
        use std::time::Duration;
        let (fence_ttl, claim, queue_ttl) =
            (Duration::from_secs(86_400), Duration::from_millis(250), Duration::from_secs(60));
        let token = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
        for key in ["orders:1", "{tag}:x", "a"] {
            for mode in [Mode::Try, Mode::First, Mode::Retry] {
                let (hex, inbox) = (crate::token::hex(token), LockKeys::inbox_suffix(key, 0xfeed));
                let ttl_ms = 10_000;
                let built = AcquireArgs { token: &hex, ttl_ms, mode, queue_ttl, fence_ttl, claim, inbox: &inbox };
                let rest = AcquireRest { ttl_ms, mode, queue_ttl, fence_ttl, claim };
                let keys = LockKeys::derive(key);
                assert_eq!(AcquireArgs::for_lock(key, token, 0xfeed, rest, false), built.command(&keys), "{key}");
                assert_eq!(
                    AcquireArgs::for_lock(key, token, 0xfeed, rest, true),
                    built.command_with_value(&keys),
                    "{key}"
                );
                for (capacity, weight) in [(3, 1), (MAX_CAPACITY, MAX_CAPACITY)] {
                    let permit = PermitArgs { attempt: built.clone(), capacity, weight };
                    assert_eq!(
                        PermitArgs::for_lock(key, token, 0xfeed, rest, (capacity, weight)),
                        permit.command(&PermitKeys::derive(key)),
                        "{key}"
                    );
                }
            }
        }
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
