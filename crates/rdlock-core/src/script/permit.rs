//! The permit scripts (`permit.lua` and its callers): counted leases, for Semaphore permits
//! and RwLock shares (a reader weighs 1, a writer the whole capacity).

use std::time::Duration;

use crate::command::{Args, Command};
use crate::keys::{LockKeys, Names, Role};

use super::acquire::AcquireRest;
use super::{AcquireArgs, Script};

/// Largest capacity and weight (`MAX_CAP` in `permit.lua`).
pub const MAX_CAPACITY: u32 = i32::MAX as u32;

/// The names of one counted resource: the holder set is the user's key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermitKeys {
    /// The holder set (a sorted set: token → deadline), under the user's key.
    pub holders: String,
    /// The fencing-token counter.
    pub fence: String,
    /// The FIFO queue of waiters.
    pub queue: String,
    /// The table of holders' weights and fences.
    pub shares: String,
    /// The capacity.
    pub capacity: String,
}

impl PermitKeys {
    /// The names for a key accepted by [`LockKeys::new`].
    pub fn derive(key: &str) -> Self {
        let keys = LockKeys::derive(key);
        let name = |role| LockKeys::name(key, role).unwrap_or_default();
        Self {
            holders: keys.lock,
            fence: keys.fence,
            queue: keys.queue,
            shares: name(Role::Shares),
            capacity: name(Role::Capacity),
        }
    }

    fn all(&self) -> Vec<String> {
        vec![self.holders.clone(), self.fence.clone(), self.queue.clone(), self.shares.clone(), self.capacity.clone()]
    }
}

/// The arguments of `permit_acquire.lua`: a lock's attempt, plus the share's terms.
#[derive(Clone, Debug)]
pub struct PermitArgs<'a> {
    /// The attempt's arguments, as for a lock (`mode`: what to do when no share fits).
    pub attempt: AcquireArgs<'a>,
    /// The resource's capacity.
    pub capacity: u32,
    /// The share's weight (1 to the capacity).
    pub weight: u32,
}

impl PermitArgs<'_> {
    /// The script call.
    pub fn command(&self, keys: &PermitKeys) -> Command {
        let mut args = self.attempt.args(2);
        args.push_u64(self.capacity.into()).push_u64(self.weight.into());
        Command::Script { script: Script::PermitAcquire, keys: keys.all().into(), args }
    }

    /// The same call for the resource of key `key` (accepted by [`LockKeys::new`]) with
    /// `token`, waited on by `client`: names, token and inbox written in place
    /// ([`AcquireArgs::for_lock`]).
    pub(crate) fn for_lock(key: &str, token: u128, client: u64, rest: AcquireRest, share: (u32, u32)) -> Command {
        let (named, mut names) = (Names::of(key), Args::with_capacity(5, 5 * (key.len() + 12)));
        names.push(key);
        for role in [Role::Fence, Role::Queue, Role::Shares, Role::Capacity] {
            named.push(&mut names, role);
        }
        let mut args = rest.args_for(&named, token, client, 2);
        args.push_u64(share.0.into()).push_u64(share.1.into());
        Command::Script { script: Script::PermitAcquire, keys: names, args }
    }

    /// The caller's queue entry, as the scripts store it.
    pub fn entry(token: &str, ttl_ms: u64, inbox: &str, weight: u32) -> String {
        format!("{token}:{ttl_ms}:{inbox}:{weight}")
    }
}

/// The arguments of `permit_release.lua`.
#[derive(Clone, Debug)]
pub struct PermitReleaseArgs<'a> {
    /// The owner token.
    pub token: &'a str,
    /// The caller's own queue entry ([`PermitArgs::entry`]).
    pub entry: &'a str,
    /// How long a freshly seeded fence counter lives.
    pub fence_ttl: Duration,
    /// How long a hand-off nobody heard waits for its waiter.
    pub claim: Duration,
    /// The capacity, used when none is stored.
    pub capacity: u32,
}

impl PermitReleaseArgs<'_> {
    /// The script call.
    pub fn command(&self, keys: &PermitKeys) -> Command {
        Command::Script {
            script: Script::PermitRelease,
            keys: keys.all().into(),
            args: vec![
                self.token.to_owned(),
                self.entry.to_owned(),
                self.fence_ttl.as_millis().to_string(),
                self.claim.as_millis().to_string(),
                self.capacity.to_string(),
            ]
            .into(),
        }
    }
}

/// A batch of share renewals for `permit_extend.lua`; its reply reads as
/// [`super::ExtendReply`].
#[derive(Clone, Debug, Default)]
pub struct PermitExtendArgs {
    keys: Args,
    tokens: Args,
    ttls: Vec<u64>,
}

impl PermitExtendArgs {
    /// An empty batch with room for `n` shares.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            keys: Args::with_capacity(3 * n, 3 * n * 32),
            tokens: Args::with_capacity(2 * n, n * (32 + 8)),
            ttls: Vec::with_capacity(n),
        }
    }

    /// Adds a share to the batch: its resource's key, owner token and ttl.
    pub fn push(&mut self, key: &str, token: u128, ttl_ms: u64) {
        let keys = PermitKeys::derive(key);
        self.keys.push(&keys.holders).push(&keys.shares).push(&keys.capacity);
        self.tokens.push_hex(token);
        self.ttls.push(ttl_ms);
    }

    /// Adds a share whose owner token is already text.
    pub fn push_text(&mut self, key: &str, token: &str, ttl_ms: u64) {
        let keys = PermitKeys::derive(key);
        self.keys.push(&keys.holders).push(&keys.shares).push(&keys.capacity);
        self.tokens.push(token);
        self.ttls.push(ttl_ms);
    }

    /// The script call.
    pub fn command(self) -> Command {
        let mut args = self.tokens;
        for &ttl in &self.ttls {
            args.push_u64(ttl);
        }
        Command::Script { script: Script::PermitExtend, keys: self.keys, args }
    }
}

/// The arguments of `permit_change.lua`: shrink a held share to `weight`.
#[derive(Clone, Debug)]
pub struct PermitChangeArgs<'a> {
    /// The owner token.
    pub token: &'a str,
    /// The new weight (at most the share's).
    pub weight: u32,
    /// How long a freshly seeded fence counter lives.
    pub fence_ttl: Duration,
    /// How long a hand-off nobody heard waits for its waiter.
    pub claim: Duration,
    /// The capacity, used when none is stored.
    pub capacity: u32,
}

impl PermitChangeArgs<'_> {
    /// The script call.
    pub fn command(&self, keys: &PermitKeys) -> Command {
        Command::Script {
            script: Script::PermitChange,
            keys: keys.all().into(),
            args: vec![
                self.token.to_owned(),
                self.weight.to_string(),
                self.fence_ttl.as_millis().to_string(),
                self.claim.as_millis().to_string(),
                self.capacity.to_string(),
            ]
            .into(),
        }
    }
}
