//! `quorum_take.lua` and `quorum_fence.lua`: the two phases of a quorum acquisition on one
//! member (see their headers and `docs/protocol.md`).

use std::time::Duration;

use crate::Reply;
use crate::command::Command;
use crate::error::LockError;
use crate::keys::LockKeys;

use super::Script;

/// Phase 1 on one member: take `K` for `token` (or confirm it), and read the fence counter.
#[derive(Clone, Debug)]
pub struct QuorumTakeArgs<'a> {
    /// The attempt's owner token.
    pub token: &'a str,
    /// The lease.
    pub ttl: Duration,
}

impl QuorumTakeArgs<'_> {
    /// The script call for the lock named by `keys`.
    pub fn command(&self, keys: &LockKeys) -> Command {
        Command::Script {
            script: Script::QuorumTake,
            keys: vec![keys.lock.clone(), keys.fence.clone()].into(),
            args: vec![self.token.to_owned(), self.ttl.as_millis().to_string()].into(),
        }
    }
}

/// What phase 1 answered on one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumTakeReply {
    /// The member holds the caller's token; its counter (or its clock's seed) is this.
    Granted {
        /// The member's fence counter.
        counter: u64,
    },
    /// Another token holds the key, for this long (`None`: no expiry reported).
    Busy {
        /// The holder's remaining lease on this member.
        holder_ttl: Option<Duration>,
    },
}

impl QuorumTakeReply {
    /// Reads the answer; a server error is the server's, any other shape unexpected.
    pub fn parse(reply: Option<&Reply>) -> Result<Self, LockError> {
        let unexpected = || LockError::UnexpectedReply(format!("quorum take: {reply:?}"));
        match reply {
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            Some(Reply::Array(a)) => match a[..] {
                [Reply::Int(1), Reply::Int(c)] => {
                    let counter = u64::try_from(c).map_err(|_| unexpected())?;
                    Ok(QuorumTakeReply::Granted { counter })
                }
                [Reply::Int(0), Reply::Int(pttl)] => {
                    Ok(QuorumTakeReply::Busy { holder_ttl: u64::try_from(pttl).ok().map(Duration::from_millis) })
                }
                _ => Err(unexpected()),
            },
            _ => Err(unexpected()),
        }
    }
}

/// Phase 2 on one member: raise its counter to `fence` while `token` holds `K`.
#[derive(Clone, Debug)]
pub struct QuorumFenceArgs<'a> {
    /// The attempt's owner token.
    pub token: &'a str,
    /// The fence the attempt chose (1 to 2^53 - 2).
    pub fence: u64,
    /// How long the counter lives after this write.
    pub fence_ttl: Duration,
}

impl QuorumFenceArgs<'_> {
    /// The script call for the lock named by `keys`.
    pub fn command(&self, keys: &LockKeys) -> Command {
        Command::Script {
            script: Script::QuorumFence,
            keys: vec![keys.lock.clone(), keys.fence.clone()].into(),
            args: vec![self.token.to_owned(), self.fence.to_string(), self.fence_ttl.as_millis().to_string()].into(),
        }
    }
}

/// What phase 2 answered on one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumFenceReply {
    /// The counter now holds the fence.
    Raised,
    /// The key is not the caller's any more.
    NotHeld,
    /// The counter is at or past the fence already; nothing was written.
    Behind {
        /// The member's counter.
        counter: u64,
    },
}

impl QuorumFenceReply {
    /// Reads the answer; a server error is the server's, any other shape unexpected.
    pub fn parse(reply: Option<&Reply>) -> Result<Self, LockError> {
        let unexpected = || LockError::UnexpectedReply(format!("quorum fence: {reply:?}"));
        match reply {
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            Some(Reply::Array(a)) => match a[..] {
                [Reply::Int(1)] => Ok(QuorumFenceReply::Raised),
                [Reply::Int(0)] => Ok(QuorumFenceReply::NotHeld),
                [Reply::Int(2), Reply::Int(c)] => {
                    Ok(QuorumFenceReply::Behind { counter: u64::try_from(c).map_err(|_| unexpected())? })
                }
                _ => Err(unexpected()),
            },
            _ => Err(unexpected()),
        }
    }
}
