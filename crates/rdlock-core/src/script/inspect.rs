//! `inspect.lua` (a read-only view of one lock) and `force_release.lua` (an operator's
//! delete that hands the lock on): the calls and replies of operators' tools.

use std::time::Duration;

use crate::Reply;
use crate::command::{Args, Command};
use crate::error::{InvalidInput, LockError};
use crate::keys::LockKeys;

use super::{PermitKeys, Script, value_key};

/// What the lock key holds, as [`Inspection::kind`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Nothing: the lock is free (waiters may still be queued, and a fence counter kept).
    Free,
    /// A lock (or a mutex) held by one owner.
    Lock,
    /// A semaphore's or read-write lock's holder set.
    Counted,
}

/// One queued waiter, from the queue's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The first 8 characters of its owner token.
    pub token: String,
    /// The lease it asked for; `None` for a malformed entry.
    pub ttl: Option<Duration>,
    /// How many permits it waits for (a counted resource's waiter); `None` for a lock's.
    pub weight: Option<u32>,
}

/// One holder of a counted resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The first 8 characters of its owner token.
    pub token: String,
    /// Time left on its lease, on the server's clock.
    pub ttl: Duration,
    /// How many permits it holds (an RwLock's writer holds them all); `None` when unknown.
    pub weight: Option<u32>,
    /// The fence it was granted; `None` when unknown.
    pub fence: Option<u64>,
}

/// What the server knows of one lock, read in one step ([`Inspection::command`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// What the lock key holds.
    pub kind: LockKind,
    /// A held lock's owner token, its first 8 characters (a guard's `token()` starts with
    /// them); `None` unless [`LockKind::Lock`].
    pub holder: Option<String>,
    /// A held lock's remaining lease; `None` when free, counted, or set without expiry.
    pub ttl: Option<Duration>,
    /// The last fence issued for the key (the current holder's, or the last holder's);
    /// `None` when the counter is gone (never used, or expired).
    pub fence: Option<u64>,
    /// The waiters, in the order they will be served.
    pub waiters: Vec<Waiter>,
    /// A counted resource's holders, the earliest lease end first.
    pub holders: Vec<Holder>,
    /// A counted resource's capacity, stored while it is held or waited for.
    pub capacity: Option<u32>,
    /// A mutex's value: `Some` when one is stored, with its writer's fence (`None` inside
    /// when unreadable).
    pub value: Option<Option<u64>>,
}

impl Inspection {
    /// The read-only script call that inspects the lock at `key`.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] for a key no lock may have.
    pub fn command(key: &str) -> Result<Command, InvalidInput> {
        LockKeys::new(key)?;
        let p = PermitKeys::derive(key);
        Ok(Command::Script {
            script: Script::Inspect,
            keys: vec![p.holders, p.fence, p.queue, p.shares, p.capacity, value_key(key)].into(),
            args: Args::new(),
        })
    }

    /// Whether anyone holds the lock (or a share of it).
    pub fn is_held(&self) -> bool {
        self.holder.is_some() || !self.holders.is_empty()
    }

    /// Reads the script's answer; a server error is the server's (`WRONGTYPE` for a key that
    /// is not an rdlock lock's), any other shape an unexpected reply.
    pub fn parse(reply: Option<&Reply>) -> Result<Self, LockError> {
        let bad = |what: &str| LockError::UnexpectedReply(format!("inspect: {what}"));
        let parts = match reply {
            Some(Reply::Error(e)) => return Err(LockError::Server(e.clone())),
            Some(Reply::Array(a)) if a.len() == 8 => a,
            other => return Err(bad(&format!("{other:?}"))),
        };
        let kind = match text(&parts[0]).as_deref() {
            Some("free") => LockKind::Free,
            Some("lock") => LockKind::Lock,
            Some("counted") => LockKind::Counted,
            _ => return Err(bad("kind")),
        };
        let ttl = parts[2].as_int().filter(|&t| t >= 0).map(|t| Duration::from_millis(t as u64));
        let rows = |r: &Reply| r.as_array().map(<[Reply]>::to_vec).unwrap_or_default();
        let waiters = rows(&parts[4])
            .iter()
            .map(|w| {
                let f = rows(w);
                Waiter {
                    token: f.first().and_then(text).unwrap_or_default(),
                    ttl: f.get(1).and_then(number).map(Duration::from_millis),
                    weight: f.get(2).and_then(number).and_then(|w| u32::try_from(w).ok()),
                }
            })
            .collect();
        let holders = rows(&parts[5])
            .iter()
            .map(|h| {
                let f = rows(h);
                Holder {
                    token: f.first().and_then(text).unwrap_or_default(),
                    ttl: Duration::from_millis(f.get(1).and_then(number).unwrap_or(0)),
                    weight: f.get(2).and_then(number).and_then(|w| u32::try_from(w).ok()),
                    fence: f.get(3).and_then(number),
                }
            })
            .collect();
        let value = rows(&parts[7]);
        Ok(Inspection {
            kind,
            holder: if kind == LockKind::Lock { text(&parts[1]) } else { None },
            ttl: if kind == LockKind::Lock { ttl } else { None },
            fence: number(&parts[3]),
            waiters,
            holders,
            capacity: number(&parts[6]).and_then(|c| u32::try_from(c).ok()),
            value: (value.first().and_then(Reply::as_int) == Some(1)).then(|| value.get(1).and_then(number)),
        })
    }
}

fn text(r: &Reply) -> Option<String> {
    match r {
        Reply::Data(d) => Some(String::from_utf8_lossy(d).into_owned()),
        _ => None,
    }
}

fn number(r: &Reply) -> Option<u64> {
    r.as_int().and_then(|i| u64::try_from(i).ok())
}

/// The arguments of a forced release (`ARGV` in `force_release.lua`).
#[derive(Clone, Copy, Debug)]
pub struct ForceReleaseArgs {
    /// How long a freshly seeded fence counter lives.
    pub fence_ttl: Duration,
    /// How long a hand-off nobody heard waits for its waiter.
    pub claim: Duration,
}

impl ForceReleaseArgs {
    /// The script call that force-releases the lock (or counted resource) at `key`.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] for a key no lock may have.
    pub fn command(&self, key: &str) -> Result<Command, InvalidInput> {
        LockKeys::new(key)?;
        let p = PermitKeys::derive(key);
        Ok(Command::Script {
            script: Script::ForceRelease,
            keys: vec![p.holders, p.fence, p.queue, p.shares, p.capacity].into(),
            args: vec![self.fence_ttl.as_millis().to_string(), self.claim.as_millis().to_string()].into(),
        })
    }
}

/// What a forced release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceReleaseReply {
    /// `0`: nothing was held, and nobody was waiting to be served.
    NotHeld,
    /// `1`: the holder(s) were removed; nobody was waiting.
    Released,
    /// `2`: the lock (or the freed room) was handed to the queue's head, which was woken.
    HandedOff,
}

impl ForceReleaseReply {
    /// Reads the script's answer.
    pub fn parse(reply: Option<&Reply>) -> Result<Self, LockError> {
        match reply {
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            Some(Reply::Int(0)) => Ok(Self::NotHeld),
            Some(Reply::Int(1)) => Ok(Self::Released),
            Some(Reply::Int(2)) => Ok(Self::HandedOff),
            other => Err(LockError::UnexpectedReply(format!("force release: {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Reply {
        Reply::Data(s.as_bytes().to_vec())
    }

    #[test]
    fn a_lock_with_a_queue_is_read() {
        let waiter = Reply::Array(vec![data("abcdef01"), data("30000"), data("")]);
        let reply = Reply::Array(vec![
            data("lock"),
            data("0123abcd"),
            Reply::Int(1500),
            data("42"),
            Reply::Array(vec![waiter]),
            Reply::Array(vec![]),
            Reply::Nil,
            Reply::Array(vec![Reply::Int(1), data("41")]),
        ]);
        let seen = Inspection::parse(Some(&reply)).expect("parsed");
        assert_eq!(seen.kind, LockKind::Lock);
        assert_eq!(seen.holder.as_deref(), Some("0123abcd"));
        assert_eq!(seen.ttl, Some(Duration::from_millis(1500)));
        assert_eq!(seen.fence, Some(42));
        assert_eq!(
            seen.waiters,
            vec![Waiter { token: "abcdef01".into(), ttl: Some(Duration::from_secs(30)), weight: None }]
        );
        assert_eq!(seen.value, Some(Some(41)));
        assert!(seen.is_held());
    }

    #[test]
    fn other_shapes_are_errors() {
        assert!(Inspection::parse(None).is_err());
        assert!(Inspection::parse(Some(&Reply::Int(1))).is_err());
        let odd = Reply::Array(vec![data("odd"); 8]);
        assert!(matches!(Inspection::parse(Some(&odd)), Err(LockError::UnexpectedReply(_))));
        let refused = Reply::Error(crate::ServerError::new("WRONGTYPE", "RDLOCK"));
        assert!(matches!(Inspection::parse(Some(&refused)), Err(LockError::Server(_))));
        assert_eq!(ForceReleaseReply::parse(Some(&Reply::Int(2))).ok(), Some(ForceReleaseReply::HandedOff));
        assert!(ForceReleaseReply::parse(Some(&Reply::Int(3))).is_err());
    }
}
