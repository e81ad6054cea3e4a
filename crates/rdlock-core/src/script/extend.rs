//! `extend.lua`: owner-checked renewal of one or many locks in one call; or, on a server
//! that offers it, the same renewal as one `SET key token IFEQ token PX ttl` per lock.

use crate::command::{Args, Command};
use crate::{Reply, ServerError};

use super::Script;

/// A batch of renewals: per lock its key, owner token and ttl (`KEYS` and `ARGV` in the
/// script's header).
///
/// Built in place: the keys and tokens go straight into the call's argument buffers (no
/// string per lock), the TTLs are kept as numbers until the call is made.
#[derive(Clone, Debug, Default)]
pub struct ExtendArgs {
    keys: Args,
    tokens: Args,
    ttls: Vec<u64>,
}

/// Bytes of a key name a batch's buffer is sized for up front (it grows past them).
const KEY_BYTES: usize = 24;

impl ExtendArgs {
    /// An empty batch with room for `n` locks.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            keys: Args::with_capacity(n, n * KEY_BYTES),
            tokens: Args::with_capacity(2 * n, n * (32 + 8)),
            ttls: Vec::with_capacity(n),
        }
    }

    /// Adds a lock to the batch: its key, owner token and ttl.
    pub fn push(&mut self, key: &str, token: u128, ttl_ms: u64) {
        self.keys.push(key);
        self.tokens.push_hex(token);
        self.ttls.push(ttl_ms);
    }

    /// Adds a lock whose owner token is already text.
    pub fn push_text(&mut self, key: &str, token: &str, ttl_ms: u64) {
        self.keys.push(key);
        self.tokens.push(token);
        self.ttls.push(ttl_ms);
    }

    /// The script call.
    pub fn command(self) -> Command {
        let mut args = self.tokens;
        for &ttl in &self.ttls {
            args.push_u64(ttl);
        }
        Command::Script { script: Script::Extend, keys: self.keys, args }
    }

    /// The batch as one [`Command::SetIfEq`] per lock, in order: each does what the script
    /// does for its key (the value compared and kept, the expiry set), atomically on its own;
    /// the script's batch was never more than that either, its keys renewed one by one.
    pub fn set_ifeq_commands(self) -> Vec<Command> {
        self.keys
            .iter()
            .zip(self.tokens.iter())
            .zip(self.ttls)
            .map(|((key, value), ttl_ms)| Command::SetIfEq { key: key.to_owned(), value: value.to_owned(), ttl_ms })
            .collect()
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

    /// Reads the replies to [`ExtendArgs::set_ifeq_commands`], one per lock: `OK` extended;
    /// nil (another token, or no key) and `WRONGTYPE` (a key of another type) not held, as
    /// the script answers 0 for both. `None` for anything else: the outcome is unknown.
    pub fn parse_set(replies: &[Reply]) -> Option<Vec<bool>> {
        replies
            .iter()
            .map(|r| match r {
                Reply::Data(ok) if ok == b"OK" => Some(true),
                Reply::Nil => Some(false),
                Reply::Error(e) if e.code == "WRONGTYPE" => Some(false),
                _ => None,
            })
            .collect()
    }

    /// Whether the server refused a `SET ... IFEQ` itself (a syntax error from a server
    /// without `IFEQ`, `NOPERM`, an unknown command): not an answer about any lock.
    pub fn refused_set(replies: &[Reply]) -> bool {
        replies
            .iter()
            .any(|r| matches!(r, Reply::Error(ServerError { code, .. }) if code != "WRONGTYPE" && !transient(code)))
    }
}

/// Error codes that say the server could not run a command now, not that it does not know it:
/// a loading or demoted server, a moved slot, a busy script, a full server.
fn transient(code: &str) -> bool {
    matches!(
        code,
        "LOADING" | "READONLY" | "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "BUSY" | "MASTERDOWN" | "OOM"
    )
}
