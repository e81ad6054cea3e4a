//! Where a lock lives: the user's key verbatim, plus auxiliary keys and a channel that share
//! its cluster hash slot.

use crate::error::InvalidInput;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 16 * 1024;

/// The names of one lock's key, fence counter, wait queue and hand-off channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockKeys {
    /// The lock key: the user's key, verbatim; its value is the owner token.
    pub lock: String,
    /// The fencing-token counter.
    pub fence: String,
    /// The FIFO queue of waiters.
    pub queue: String,
    /// The channel hand-offs are announced on.
    pub channel: String,
}

impl LockKeys {
    /// Derives the names for `key`. Auxiliary names carry `{key}` as a hash tag (or the key's
    /// own tag) so that everything of one lock lives in one cluster slot.
    pub fn new(key: &str) -> Result<Self, InvalidInput> {
        if key.is_empty() {
            return Err(InvalidInput::EmptyKey);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidInput::KeyTooLong { len: key.len(), max: MAX_KEY_LEN });
        }
        if hash_tag(key).is_none() && key.contains('}') {
            // `a}b` has no tag and cannot be wrapped in one: no name could share its slot.
            return Err(InvalidInput::KeyNotSlotSafe(key.to_owned()));
        }
        Ok(Self::derive(key))
    }

    /// The names of a key already checked by [`LockKeys::new`].
    pub(crate) fn derive(key: &str) -> Self {
        let base = tagged(key);
        Self {
            lock: key.to_owned(),
            fence: format!("{base}:rdlock:fence"),
            queue: format!("{base}:rdlock:queue"),
            channel: format!("{base}:rdlock:handoff"),
        }
    }

    /// The hand-off channel of a key already checked by [`LockKeys::new`].
    pub(crate) fn channel_of(key: &str) -> String {
        format!("{}:rdlock:handoff", tagged(key))
    }
}

/// The key itself when it has a hash tag, else the key wrapped in one.
fn tagged(key: &str) -> std::borrow::Cow<'_, str> {
    if hash_tag(key).is_some() { key.into() } else { format!("{{{key}}}").into() }
}

/// The hash tag of a key, by the Redis Cluster rule: the text between the first `{` and the
/// first `}` after it, when not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The cluster hash slot of a key (CRC16/XMODEM of its tag or of the whole key, mod 16384).
pub fn slot(key: &str) -> u16 {
    let bytes = hash_tag(key).unwrap_or(key).as_bytes();
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxiliary_names_share_the_slot() {
        for key in ["orders", "a{b", "user:{42}:lock", "x{y}z", "ü-ñ"] {
            let k = LockKeys::new(key).expect("valid key");
            assert_eq!(k.lock, key);
            for aux in [&k.fence, &k.queue, &k.channel] {
                assert_eq!(slot(aux), slot(key), "{aux} vs {key}");
            }
        }
    }

    #[test]
    fn slot_matches_the_cluster_specification() {
        // Reference values from the cluster specification's CRC16 example and known slots.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{foo}bar"), 12182);
    }

    #[test]
    fn bad_keys_are_typed_errors() {
        assert_eq!(LockKeys::new(""), Err(InvalidInput::EmptyKey));
        assert!(matches!(LockKeys::new("a}b"), Err(InvalidInput::KeyNotSlotSafe(_))));
        assert!(matches!(LockKeys::new(&"k".repeat(MAX_KEY_LEN + 1)), Err(InvalidInput::KeyTooLong { .. })));
    }
}
