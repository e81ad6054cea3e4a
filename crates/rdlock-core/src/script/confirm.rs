//! `confirm.lua`: the confirmation of heard hand-offs and the re-check that follows a
//! subscription, one or many locks in one call.

use crate::Reply;
use crate::command::{Args, Command};
use crate::keys::{Names, Role};

use super::Script;

/// A batch of confirmations: per lock its key, fence counter and queue, owner token, ttl and
/// queue entry (`KEYS` and `ARGV` in the script's header). Built in place (no string per lock).
#[derive(Clone, Debug, Default)]
pub struct ConfirmArgs {
    keys: Args,
    tokens: Args,
    ttls: Vec<u64>,
    entries: Args,
}

impl ConfirmArgs {
    /// An empty batch with room for `n` locks.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            keys: Args::with_capacity(3 * n, n * 96),
            tokens: Args::with_capacity(3 * n, n * (32 + 8 + 64)),
            ttls: Vec::with_capacity(n),
            entries: Args::with_capacity(n, n * 64),
        }
    }

    /// Adds the lock of key `key` (accepted by [`crate::LockKeys::new`]) with its token, ttl
    /// and the queue entry its attempts push (client `client`'s inbox).
    pub fn push(&mut self, key: &str, token: u128, ttl_ms: u64, client: u64) {
        let named = Names::of(key);
        self.keys.push(key);
        named.push(&mut self.keys, Role::Fence);
        named.push(&mut self.keys, Role::Queue);
        self.tokens.push_hex(token);
        self.ttls.push(ttl_ms);
        named.push_entry(&mut self.entries, token, ttl_ms, client);
    }

    /// The script call.
    pub fn command(self) -> Command {
        let mut args = self.tokens;
        for &ttl in &self.ttls {
            args.push_u64(ttl);
        }
        for entry in self.entries.iter() {
            args.push(entry);
        }
        Command::Script { script: Script::Confirm, keys: self.keys, args }
    }
}

/// What `confirm.lua` answered for one lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// The key held the caller's token and is extended: held, with this fence.
    Ours(u64),
    /// The key holds another token, the counter was this fence and the caller's entry is
    /// queued: what a retry reports (a hand-off announced with a higher fence ran after it).
    Other(u64),
    /// Neither (the key absent, no fence, the entry gone): the caller attempts as usual.
    Unknown,
}

/// What `confirm.lua` answered.
#[derive(Debug)]
pub struct ConfirmReply;

impl ConfirmReply {
    /// Per lock what the call found. `None` for the whole batch on any other shape (an error,
    /// a wrong length, an item that is not an integer): the outcome is then unknown.
    pub fn parse(reply: Option<&Reply>, n: usize) -> Option<Vec<Confirmed>> {
        let items = reply?.as_array()?;
        if items.len() != n {
            return None;
        }
        items
            .iter()
            .map(|r| {
                r.as_int().map(|f| match f {
                    0 => Confirmed::Unknown,
                    f if f > 0 => Confirmed::Ours(f.unsigned_abs()),
                    f => Confirmed::Other(f.unsigned_abs()),
                })
            })
            .collect()
    }
}
