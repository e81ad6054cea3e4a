//! `release.lua` (queue mode) and `release_shared.lua` (keys shared with foreign clients):
//! owner-checked releases.

use std::time::Duration;

use crate::command::{Args, Command};
use crate::error::LockError;
use crate::keys::{LockKeys, Names, Role};
use crate::{Reply, ServerError};

use super::Script;
use super::acquire::millis;

/// The arguments of a queue-mode release (`ARGV` in `release.lua`).
#[derive(Clone, Debug)]
pub struct ReleaseArgs<'a> {
    /// The owner token.
    pub token: &'a str,
    /// The caller's own queue entry (`token:ttl:inbox`), removed when the key is not its.
    pub entry: &'a str,
    /// How long a freshly seeded fence counter lives.
    pub fence_ttl: Duration,
    /// How long a hand-off nobody heard waits for its waiter.
    pub claim: Duration,
    /// `Some(queue ttl)`: the caller held the lock and the server's `SET` takes `IFEQ`, so the
    /// hand-off checks the owner in the new owner's `SET` (`ARGV[5]`; `release_folded` in
    /// `release_one.lua`). The TTL is given to a queue whose pop is taken back after emptying it.
    pub fold: Option<Duration>,
}

impl ReleaseArgs<'_> {
    /// The script call for the lock named by `keys`.
    pub fn command(&self, keys: &LockKeys) -> Command {
        let mut names = Args::with_capacity(3, 3 * keys.lock.len() + 16);
        names.push(&keys.lock).push(&keys.fence).push(&keys.queue);
        let mut args = Args::with_capacity(5, self.token.len() + self.entry.len() + 32);
        args.push(self.token).push(self.entry).push_u64(millis(self.fence_ttl)).push_u64(millis(self.claim));
        if let Some(queue_ttl) = self.fold {
            args.push_u64(millis(queue_ttl));
        }
        Command::Script { script: Script::Release, keys: names, args }
    }

    /// The same call for the lock of key `key` (accepted by [`LockKeys::new`]) held with
    /// `token` by `client`, whose queue entry carries `ttl_ms`: names, token and entry written
    /// in place, as a batch writes them (every release of a lock cycle goes this way).
    pub(crate) fn for_lock(key: &str, token: u128, ttl_ms: u64, client: u64, rest: ReleaseRest) -> Command {
        let (named, mut names) = (Names::of(key), Args::with_capacity(3, 3 * key.len() + 32));
        names.push(key);
        named.push(&mut names, Role::Fence);
        named.push(&mut names, Role::Queue);
        let mut args = Args::with_capacity(5, 2 * 32 + 2 * 20 + 21 + 4);
        args.push_hex(token);
        named.push_entry(&mut args, token, ttl_ms, client);
        args.push_u64(millis(rest.fence_ttl)).push_u64(millis(rest.claim));
        if let Some(queue_ttl) = rest.fold {
            args.push_u64(millis(queue_ttl));
        }
        Command::Script { script: Script::Release, keys: names, args }
    }
}

/// A release's arguments beside the lock's own ([`ReleaseArgs`]' last three).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReleaseRest {
    pub(crate) fence_ttl: Duration,
    pub(crate) claim: Duration,
    pub(crate) fold: Option<Duration>,
}

/// Many queue-mode releases in one call (`release_batch.lua`): per lock its keys, owner token
/// and queue entry; the fence ttl, the claim and the fold are the same for every lock. Built
/// in place (no string per lock), as renewal batches are.
#[derive(Clone, Debug)]
pub struct ReleaseBatchArgs {
    keys: Args,
    args: Args,
    fold: Option<Duration>,
}

/// Bytes of a key name a batch's buffer is sized for up front (it grows past them).
const KEY_BYTES: usize = 32;

impl ReleaseBatchArgs {
    /// An empty batch with room for `n` locks.
    pub fn new(n: usize, fence_ttl: Duration, claim: Duration) -> Self {
        let mut args = Args::with_capacity(2 + 2 * n, 24 + n * (32 + 32 + 32));
        args.push_u64(millis(fence_ttl)).push_u64(millis(claim));
        Self { keys: Args::with_capacity(3 * n, 3 * n * KEY_BYTES), args, fold: None }
    }

    /// Asks every lock's release to fold its owner check into the hand-off
    /// ([`ReleaseArgs::fold`], the script's last `ARGV`); `None` (the default) for none.
    pub fn fold(&mut self, queue_ttl: Option<Duration>) {
        self.fold = queue_ttl;
    }

    /// Adds the lock named by `keys`, with its token and queue entry as text.
    pub fn push(&mut self, keys: &LockKeys, token: &str, entry: &str) {
        self.keys.push(&keys.lock).push(&keys.fence).push(&keys.queue);
        self.args.push(token).push(entry);
    }

    /// Adds the lock of key `key` (accepted by [`LockKeys::new`]) held with `token` by
    /// `client`, whose queue entry carries `ttl_ms`: its names and entry written in place.
    pub(crate) fn push_lock(&mut self, key: &str, token: u128, ttl_ms: u64, client: u64) {
        let named = Names::of(key);
        self.keys.push(key);
        named.push(&mut self.keys, Role::Fence);
        named.push(&mut self.keys, Role::Queue);
        self.args.push_hex(token);
        named.push_entry(&mut self.args, token, ttl_ms, client);
    }

    /// The script call.
    pub fn command(mut self) -> Command {
        if let Some(queue_ttl) = self.fold {
            self.args.push_u64(millis(queue_ttl));
        }
        Command::Script { script: Script::ReleaseBatch, keys: self.keys, args: self.args }
    }

    /// Splits the batch's reply into the reply `release.lua` gives for each of its `n` locks:
    /// an array of `n` becomes its items; anything else (an error of the whole call, a wrong
    /// shape) is every lock's reply, read as it would be for one.
    /// A lock's error comes as its text (`CODE message`) and is read back as that error.
    pub fn split(reply: Option<&Reply>, n: usize) -> Vec<Option<Reply>> {
        match reply {
            Some(Reply::Array(items)) if items.len() == n => items
                .iter()
                .map(|r| match r {
                    Reply::Data(text) => {
                        let text = String::from_utf8_lossy(text);
                        let (code, message) = text.split_once(' ').unwrap_or((&text, ""));
                        Some(Reply::Error(ServerError::new(code, message)))
                    }
                    other => Some(other.clone()),
                })
                .collect(),
            other => vec![other.cloned(); n],
        }
    }
}

/// The arguments of a shared-mode release (`ARGV` in `release_shared.lua`).
#[derive(Clone, Debug)]
pub struct SharedReleaseArgs<'a> {
    /// The owner token.
    pub token: &'a str,
}

impl SharedReleaseArgs<'_> {
    /// The script call for the lock named by `keys`: the free notice goes on its channel.
    pub fn command(&self, keys: &LockKeys) -> Command {
        Command::Script {
            script: Script::ReleaseShared,
            keys: vec![keys.lock.clone(), keys.queue.clone()].into(),
            args: vec![self.token.to_owned(), keys.channel.clone()].into(),
        }
    }
}

/// What a release script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReply {
    /// `0`: the key was not the caller's (its queue entry, if any, was removed).
    NotHeld,
    /// `1`: the caller's key was deleted; nobody waited.
    Released,
    /// `2` from `release.lua`: handed to the next waiter (`{2, channel, message}` when a
    /// connection heard its announcement: [`ReleaseReply::announcement`]).
    HandedOff,
    /// `2` from `release_shared.lua`: deleted, but queue-mode waiters are queued on the key
    /// (some client of it does not use shared mode).
    ReleasedBesideQueue,
}

impl ReleaseReply {
    /// Reads the answer of `script` (a release script); a server error is the server's, any
    /// other shape an unexpected reply.
    pub fn parse(script: Script, reply: Option<&Reply>) -> Result<Self, LockError> {
        match (reply, script) {
            (Some(Reply::Error(e)), _) => Err(LockError::Server(e.clone())),
            (Some(Reply::Int(0)), _) => Ok(ReleaseReply::NotHeld),
            (Some(Reply::Int(1)), _) => Ok(ReleaseReply::Released),
            (Some(Reply::Int(2)), Script::ReleaseShared) => Ok(ReleaseReply::ReleasedBesideQueue),
            (Some(Reply::Int(2)), _) => Ok(ReleaseReply::HandedOff),
            (Some(r), s) if s.base() == Script::Release && Self::announcement(Some(r)).is_some() => {
                Ok(ReleaseReply::HandedOff)
            }
            (Some(r), _) => Err(LockError::UnexpectedReply(format!("release: {r:?}"))),
            (None, _) => Err(LockError::UnexpectedReply("release: empty".into())),
        }
    }

    /// The announcement a hand-off's reply carries when a connection heard it (`{2, channel,
    /// "token:fence"}` from `release.lua`): the channel and the message, as a subscriber of
    /// the channel received them.
    pub fn announcement(reply: Option<&Reply>) -> Option<(&str, &[u8])> {
        match reply {
            Some(Reply::Array(items)) => match items.as_slice() {
                [Reply::Int(2), Reply::Data(channel), Reply::Data(message)] => {
                    Some((std::str::from_utf8(channel).ok()?, message.as_slice()))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the caller's key was freed (deleted or handed on) by this call.
    pub fn was_held(self) -> bool {
        self != ReleaseReply::NotHeld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: Command) -> Vec<String> {
        let Command::Script { args, .. } = command else { panic!("a script") };
        args.iter().map(str::to_owned).collect()
    }

    #[test]
    fn a_release_written_in_place_is_the_one_built() {
        let (fence_ttl, claim) = (Duration::from_secs(86_400), Duration::from_millis(250));
        let token = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
        for key in ["orders:1", "{tag}:x", "a"] {
            for fold in [None, Some(Duration::from_secs(60))] {
                let hex = crate::token::hex(token);
                let entry = format!("{hex}:10000:{}", LockKeys::inbox_suffix(key, 0xfeed));
                let built = ReleaseArgs { token: &hex, entry: &entry, fence_ttl, claim, fold };
                let rest = ReleaseRest { fence_ttl, claim, fold };
                assert_eq!(
                    ReleaseArgs::for_lock(key, token, 10_000, 0xfeed, rest),
                    built.command(&LockKeys::derive(key)),
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn a_folded_release_carries_the_queue_ttl_last() {
        let keys = LockKeys::derive("k");
        let (fence_ttl, claim) = (Duration::from_secs(86_400), Duration::from_millis(250));
        let plain = ReleaseArgs { token: "t", entry: "t:100:i0", fence_ttl, claim, fold: None };
        assert_eq!(args(plain.command(&keys)), ["t", "t:100:i0", "86400000", "250"]);
        let folded = ReleaseArgs { fold: Some(Duration::from_secs(60)), ..plain };
        assert_eq!(args(folded.command(&keys)), ["t", "t:100:i0", "86400000", "250", "60000"]);
        let mut batch = ReleaseBatchArgs::new(2, fence_ttl, claim);
        batch.push(&LockKeys::derive("a"), "ta", "ea");
        batch.push(&LockKeys::derive("b"), "tb", "eb");
        batch.fold(Some(Duration::from_secs(90)));
        assert_eq!(args(batch.command()), ["86400000", "250", "ta", "ea", "tb", "eb", "90000"]);
    }
}
