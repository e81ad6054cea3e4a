//! `store.lua`: the owner-checked write of a mutex's value; and the value a grant returns.

use std::sync::Arc;
use std::time::Duration;

use crate::Reply;
use crate::command::Command;
use crate::error::LockError;
use crate::keys::{LockKeys, Role};

use super::Script;

/// The largest value a mutex accepts unless told otherwise: 1 MiB. Every grant carries the
/// value and every write-back sends it, through a server that runs one script at a time, so
/// a large value delays every client of the server while it is copied (about a millisecond
/// per MiB on loopback); a lock's data should be small state, not a blob store.
pub const DEFAULT_MAX_VALUE: u32 = 1024 * 1024;
/// The largest value limit a mutex may be given: 64 MiB, far below the server's 512 MB
/// string limit and its default 512 MiB `proto-max-bulk-len`.
pub const MAX_VALUE_LIMIT: u32 = 64 * 1024 * 1024;

/// The arguments of one store (`ARGV` in `store.lua`).
#[derive(Clone, Debug)]
pub struct StoreArgs<'a> {
    /// The owner token.
    pub token: &'a str,
    /// The owner's fence, recorded with the value.
    pub fence: u64,
    /// The largest value accepted, in bytes (the server checks it too).
    pub max_value: u32,
    /// How long the value lives after the write; `None`: it outlives the lock.
    pub value_ttl: Option<Duration>,
    /// The value.
    pub value: Arc<[u8]>,
}

impl StoreArgs<'_> {
    /// The script call for the mutex at `key` (accepted by [`LockKeys::new`]).
    pub fn command(&self, key: &str) -> Command {
        Command::ScriptWithValue {
            script: Script::Store,
            keys: vec![key.to_owned(), value_key(key)].into(),
            args: vec![
                self.token.to_owned(),
                self.fence.to_string(),
                self.max_value.to_string(),
                self.value_ttl.map_or(0, |t| t.as_millis().max(1)).to_string(),
            ]
            .into(),
            value: self.value.clone(),
        }
    }
}

/// The name of the key that holds the value of the mutex at `key`.
pub fn value_key(key: &str) -> String {
    LockKeys::name(key, Role::Data).unwrap_or_default()
}

/// What a store answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreReply {
    /// `1`: written.
    Written,
    /// `0`: not written, the key is not the caller's.
    NotOwner,
    /// `-1`: not written, a holder with a later fence wrote the value.
    Superseded,
}

impl StoreReply {
    /// Reads the script's answer; a server error is the server's.
    pub fn parse(reply: Option<&Reply>) -> Result<Self, LockError> {
        match reply {
            Some(Reply::Int(1)) => Ok(StoreReply::Written),
            Some(Reply::Int(0)) => Ok(StoreReply::NotOwner),
            Some(Reply::Int(-1)) => Ok(StoreReply::Superseded),
            Some(Reply::Error(e)) => Err(LockError::Server(e.clone())),
            Some(r) => Err(LockError::UnexpectedReply(format!("store: {r:?}"))),
            None => Err(LockError::UnexpectedReply("store: empty".into())),
        }
    }
}

/// A mutex's value as a grant returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredValue {
    /// The fence of the holder that wrote it; `None` when the server's record of it is not a
    /// fence (written by something other than rdlock).
    pub written_by: Option<u64>,
    /// The value, as stored.
    pub bytes: Vec<u8>,
}

impl StoredValue {
    /// The value in a grant `{1, fence, f, v}`; `None` for a grant without one (`{1, fence}`).
    pub fn from_grant(reply: &Reply) -> Option<Self> {
        match reply.as_array()? {
            [_, _, f, Reply::Data(v)] => {
                let written_by = f.as_int().and_then(|f| u64::try_from(f).ok()).filter(|&f| f > 0);
                Some(StoredValue { written_by, bytes: v.clone() })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StoreReply, StoredValue};
    use crate::Reply::{Array, Data, Int, Nil};

    #[test]
    fn grants_carry_the_value_and_its_writer() {
        let grant = |f: &[u8], v: &[u8]| Array(vec![Int(1), Int(9), Data(f.to_vec()), Data(v.to_vec())]);
        let value = StoredValue::from_grant(&grant(b"7", b"\x00\xff")).expect("a value");
        assert_eq!((value.written_by, value.bytes), (Some(7), vec![0, 255]));
        assert_eq!(StoredValue::from_grant(&grant(b"", b"x")).expect("a value").written_by, None);
        assert_eq!(StoredValue::from_grant(&grant(b"-3", b"x")).expect("a value").written_by, None);
        assert_eq!(StoredValue::from_grant(&Array(vec![Int(1), Int(9)])), None);
        assert_eq!(StoredValue::from_grant(&Array(vec![Int(1), Int(9), Data(b"1".to_vec()), Nil])), None);
    }

    #[test]
    fn store_replies_are_read_strictly() {
        assert_eq!(StoreReply::parse(Some(&Int(1))), Ok(StoreReply::Written));
        assert_eq!(StoreReply::parse(Some(&Int(0))), Ok(StoreReply::NotOwner));
        assert_eq!(StoreReply::parse(Some(&Int(-1))), Ok(StoreReply::Superseded));
        assert!(StoreReply::parse(Some(&Int(2))).is_err());
        assert!(StoreReply::parse(None).is_err());
    }
}
