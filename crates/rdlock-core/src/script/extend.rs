//! `extend.lua`: owner-checked renewal of one or many locks in one call.

use crate::Reply;
use crate::command::Command;

use super::Script;

/// A batch of renewals: per lock its key, owner token and ttl (`KEYS` and `ARGV` in the
/// script's header).
#[derive(Clone, Debug, Default)]
pub struct ExtendArgs {
    keys: Vec<String>,
    tokens: Vec<String>,
    ttls: Vec<String>,
}

impl ExtendArgs {
    /// An empty batch with room for `n` locks.
    pub fn with_capacity(n: usize) -> Self {
        Self { keys: Vec::with_capacity(n), tokens: Vec::with_capacity(n), ttls: Vec::with_capacity(n) }
    }

    /// Adds a lock to the batch.
    pub fn push(&mut self, key: &str, token: String, ttl_ms: u64) {
        self.keys.push(key.to_owned());
        self.tokens.push(token);
        self.ttls.push(ttl_ms.to_string());
    }

    /// The script call.
    pub fn command(self) -> Command {
        let mut args = self.tokens;
        args.extend(self.ttls);
        Command::Script { script: Script::Extend, keys: self.keys, args }
    }
}

/// What `extend.lua` answered: per lock, extended (`true`) or not held by that token.
#[derive(Debug)]
pub struct ExtendReply;

impl ExtendReply {
    /// Reads the answer for a batch of `n` locks; `None` for any other shape (an error, a
    /// wrong length): the outcome is then unknown.
    pub fn parse(reply: Option<&Reply>, n: usize) -> Option<Vec<bool>> {
        let results: Vec<bool> = reply?.as_array()?.iter().map(|r| r.as_int() == Some(1)).collect();
        (results.len() == n).then_some(results)
    }
}
