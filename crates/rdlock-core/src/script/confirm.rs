//! `confirm.lua`: the confirmation of heard hand-offs, one or many locks in one call.

use crate::Reply;
use crate::command::{Args, Command};
use crate::keys::Role;

use super::Script;

/// A batch of confirmations: per lock its key and fence counter, owner token and ttl (`KEYS`
/// and `ARGV` in the script's header). Built in place (no string per lock).
#[derive(Clone, Debug, Default)]
pub struct ConfirmArgs {
    keys: Args,
    tokens: Args,
    ttls: Vec<u64>,
}

impl ConfirmArgs {
    /// An empty batch with room for `n` locks.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            keys: Args::with_capacity(2 * n, n * 64),
            tokens: Args::with_capacity(2 * n, n * (32 + 8)),
            ttls: Vec::with_capacity(n),
        }
    }

    /// Adds the lock of key `key` (accepted by [`crate::LockKeys::new`]) with its token.
    pub fn push(&mut self, key: &str, token: u128, ttl_ms: u64) {
        self.keys.push(key);
        crate::keys::push_name(&mut self.keys, key, Role::Fence);
        self.tokens.push_hex(token);
        self.ttls.push(ttl_ms);
    }

    /// The script call.
    pub fn command(self) -> Command {
        let mut args = self.tokens;
        for &ttl in &self.ttls {
            args.push_u64(ttl);
        }
        Command::Script { script: Script::Confirm, keys: self.keys, args }
    }
}

/// What `confirm.lua` answered.
#[derive(Debug)]
pub struct ConfirmReply;

impl ConfirmReply {
    /// Per lock: `Some(fence)` when the key was the caller's and is extended, `None` when it
    /// was not (the caller attempts as usual). `None` for the whole batch on any other shape
    /// (an error, a wrong length): the outcome is then unknown.
    pub fn parse(reply: Option<&Reply>, n: usize) -> Option<Vec<Option<u64>>> {
        let items = reply?.as_array()?;
        if items.len() != n {
            return None;
        }
        items.iter().map(|r| r.as_int().and_then(|f| u64::try_from(f).ok()).map(|f| (f > 0).then_some(f))).collect()
    }
}
