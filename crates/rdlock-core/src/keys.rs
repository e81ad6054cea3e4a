//! Where a lock lives: the user's key verbatim, plus auxiliary keys and a channel whose names
//! start with the key and share its cluster hash slot (naming layout 2).
//!
//! The auxiliary name of role `r` for key `K` is `K ∥ "#rdl:" ∥ r`, followed, when `K` has no
//! hash tag, by `"#" ∥ F` where `F` is three characters of `[0-9A-Za-z]` chosen so that the
//! whole name hashes to `K`'s slot. Keys containing `#rdl` are refused, so the first `#rdl`
//! of a name ends its key: distinct (key, role) pairs never share a name, and no name is a
//! key. `docs/protocol.md` has the full argument.

use std::sync::OnceLock;

use crate::command::Args;
use crate::error::InvalidInput;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 16 * 1024;

/// The version of the naming layout. Clients of different layouts do not see each other's
/// locks as the same lock: upgrade all clients of a key together.
pub const LAYOUT: u32 = 2;

/// The marker that ends the user's key in every auxiliary name; keys containing it are refused.
pub const MARKER: &str = "#rdl";

/// How the server names its keyspace notification channels: `__keyspace@<db>__:<key>`.
const KEYSPACE_PREFIX: &str = "__keyspace@";

/// What an auxiliary name is for. Role names are distinct, non-empty and `[a-z]` only, so no
/// role can add a hash tag or a second marker to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// The fencing-token counter.
    Fence,
    /// The FIFO queue of waiters.
    Queue,
    /// The pub/sub channel shared-mode releases announce a free key on.
    Channel,
    /// Counted resources (Semaphore, RwLock): the table of holders' weights and fences.
    Shares,
    /// Counted resources: the capacity, stored while the resource is in use.
    Capacity,
    /// A mutex's value (a hash: the value and the fence of the holder that wrote it).
    Data,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 6] = [Role::Fence, Role::Queue, Role::Channel, Role::Shares, Role::Capacity, Role::Data];

    /// The role's name, as it appears at the end of the key's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Fence => "fence",
            Role::Queue => "q",
            Role::Channel => "ch",
            Role::Shares => "w",
            Role::Capacity => "cap",
            Role::Data => "data",
        }
    }
}

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
    /// Derives the names for `key`, or refuses a key that is empty, too long, or contains
    /// [`MARKER`] (it could equal, or be confused with, another lock's auxiliary name).
    pub fn new(key: &str) -> Result<Self, InvalidInput> {
        check(key)?;
        Ok(Self::derive(key))
    }

    /// The key itself, owned, once accepted (as by [`LockKeys::new`], without deriving the
    /// names a caller has no use for yet).
    pub fn checked(key: &str) -> Result<String, InvalidInput> {
        check(key)?;
        Ok(key.to_owned())
    }

    /// The name of `role` for `key` (also for roles this struct has no field for).
    pub fn name(key: &str, role: Role) -> Result<String, InvalidInput> {
        check(key)?;
        Ok(name(key, role))
    }

    /// Whether `name` is an auxiliary name of some lock (it contains [`MARKER`]): no lock key is.
    pub fn is_auxiliary(name: &str) -> bool {
        name.contains(MARKER)
    }

    /// The names of a key already checked by [`LockKeys::new`].
    pub(crate) fn derive(key: &str) -> Self {
        Self {
            lock: key.to_owned(),
            fence: name(key, Role::Fence),
            queue: name(key, Role::Queue),
            channel: name(key, Role::Channel),
        }
    }

    /// The hand-off channel of a key already checked by [`LockKeys::new`].
    pub(crate) fn channel_of(key: &str) -> String {
        name(key, Role::Channel)
    }

    /// The part of a waiter's inbox name after `K ∥ "#rdl:"`: the role `i` followed by the
    /// client's id in 16 hex digits, then the glue. Queue entries carry it, so the scripts
    /// build the inbox as `KEYS[1] .. "#rdl:" .. suffix` (which starts with the key and
    /// shares its slot) and publish a hand-off to that one client only.
    /// For a key accepted by [`LockKeys::new`].
    pub fn inbox_suffix(key: &str, client: u64) -> String {
        let mut suffix = String::with_capacity(1 + 16 + 4);
        write_inbox_suffix(&mut suffix, Glue::of(key), client);
        suffix
    }

    /// The inbox of a key accepted by [`LockKeys::new`], from its suffix.
    pub fn inbox_of(key: &str, suffix: &str) -> String {
        let mut name = String::with_capacity(key.len() + MARKER.len() + 1 + suffix.len());
        name.push_str(key);
        name.push_str(MARKER);
        name.push(':');
        name.push_str(suffix);
        name
    }

    /// Whether `channel` is `client`'s inbox on `key`, without building either (every
    /// hand-off message is checked so: a mass release's are 100,000).
    pub(crate) fn is_client_inbox_of(key: &str, client: u64, channel: &str) -> bool {
        let Some(rest) = Self::suffix_of(key, channel) else { return false };
        with_inbox_role(client, |role| {
            let Some(glued) = rest.strip_prefix(role) else { return false };
            match Glue::of(key).for_role(role) {
                Some(g) => glued.as_bytes() == g,
                None => glued.is_empty(),
            }
        })
    }

    /// What follows `K ∥ "#rdl:"` in `channel`, when it starts so.
    fn suffix_of<'c>(key: &str, channel: &'c str) -> Option<&'c str> {
        channel.strip_prefix(key).and_then(|r| r.strip_prefix(MARKER)).and_then(|r| r.strip_prefix(':'))
    }

    /// The channel the server publishes `key`'s keyspace notifications on, in database `db`.
    pub(crate) fn keyspace_channel_of(key: &str, db: u32) -> String {
        format!("{KEYSPACE_PREFIX}{db}__:{key}")
    }

    /// Whether `channel` is a keyspace notification channel (of a lock key: an auxiliary name
    /// that happens to start like one is not).
    pub(crate) fn is_keyspace_channel(channel: &str) -> bool {
        channel.starts_with(KEYSPACE_PREFIX) && !Self::is_auxiliary(channel)
    }
}

fn check(key: &str) -> Result<(), InvalidInput> {
    if key.is_empty() {
        return Err(InvalidInput::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(InvalidInput::KeyTooLong { len: key.len(), max: MAX_KEY_LEN });
    }
    if key.contains(MARKER) {
        return Err(InvalidInput::KeyReserved(key.to_owned()));
    }
    Ok(())
}

/// Writes `role`'s name of `key` (accepted by [`LockKeys::new`]) as the next argument of
/// `args`, in place: a batch of many locks then makes no string per name.
#[cfg(test)]
pub(crate) fn push_name(args: &mut Args, key: &str, role: Role) {
    Names::of(key).push(args, role);
}

/// Writes `client`'s whole inbox on `key` ([`LockKeys::inbox_of`] its suffix) into `out`, so
/// that a name only looked up needs no string of its own.
pub(crate) fn write_inbox(out: &mut String, key: &str, client: u64) {
    out.push_str(key);
    out.push_str(MARKER);
    out.push(':');
    write_inbox_suffix(out, Glue::of(key), client);
}

/// One key's names written in place, its glue's work on the key itself done once for all
/// of them (a command names the lock's fence, queue and inbox together).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Names<'k> {
    key: &'k str,
    glue: Glue,
}

impl<'k> Names<'k> {
    /// The names of `key`, accepted by [`LockKeys::new`].
    pub(crate) fn of(key: &'k str) -> Self {
        Self { key, glue: Glue::of(key) }
    }

    /// Writes `role`'s name as the next argument of `args`.
    pub(crate) fn push(&self, args: &mut Args, role: Role) {
        use std::fmt::Write as _;
        let _ = args.write_str(self.key);
        let _ = args.write_str(MARKER);
        let _ = args.write_char(':');
        write_glued(args, self.glue, role.as_str());
        args.end();
    }

    /// Writes `token:ttl:inbox`, a lock's queue entry (its token as [`crate::token::hex`]
    /// writes it, its inbox as [`LockKeys::inbox_suffix`] names it) as the next argument of
    /// `args`.
    pub(crate) fn push_entry(&self, args: &mut Args, token: u128, ttl_ms: u64, client: u64) {
        use std::fmt::Write as _;
        crate::token::write_hex(args, token);
        let _ = args.write_char(':');
        crate::command::write_u64(args, ttl_ms);
        let _ = args.write_char(':');
        write_inbox_suffix(args, self.glue, client);
        args.end();
    }

    /// Writes `client`'s inbox suffix ([`LockKeys::inbox_suffix`]) as the next argument of
    /// `args`.
    pub(crate) fn push_inbox_suffix(&self, args: &mut Args, client: u64) {
        write_inbox_suffix(args, self.glue, client);
        args.end();
    }
}

fn write_inbox_suffix(out: &mut impl std::fmt::Write, glue: Glue, client: u64) {
    with_inbox_role(client, |role| write_glued(out, glue, role));
}

/// Calls `f` with the role part of `client`'s inbox (`i` and the id in 16 hex digits), made
/// on the stack.
fn with_inbox_role<T>(client: u64, f: impl FnOnce(&str) -> T) -> T {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut role = [b'i'; 17];
    for (i, d) in role[1..].iter_mut().enumerate() {
        *d = DIGITS[((client >> ((15 - i) * 4)) & 0xf) as usize];
    }
    // ASCII by construction.
    f(std::str::from_utf8(&role).unwrap_or_default())
}

/// Writes `r`, then the glue of `K`'s name for role `r` when `K` has no hash tag: what follows
/// `K ∥ "#rdl:"` in a name or an inbox.
fn write_glued(out: &mut impl std::fmt::Write, glue: Glue, role: &str) {
    let _ = out.write_str(role);
    if let Some(g) = glue.for_role(role) {
        // ASCII by construction.
        let _ = out.write_str(std::str::from_utf8(&g).unwrap_or_default());
    }
}

/// `K ∥ "#rdl:" ∥ r`, then the glue when `K` has no hash tag.
fn name(key: &str, role: Role) -> String {
    let mut name = String::with_capacity(key.len() + MARKER.len() + 1 + role.as_str().len() + 4);
    name.push_str(key);
    name.push_str(MARKER);
    name.push(':');
    write_glued(&mut name, Glue::of(key), role.as_str());
    name
}

/// What a key's names are glued with: for a key without a hash tag, its CRC16 (the glue of
/// each role follows from it); a key with a tag needs none.
#[derive(Clone, Copy, Debug)]
struct Glue(Option<u16>);

impl Glue {
    fn of(key: &str) -> Self {
        Self(hash_tag(key).is_none().then(|| crc16(0, key.as_bytes())))
    }

    /// For a key without a hash tag, `"#" ∥ F`: the name then has no tag either (nothing
    /// after the key holds a `{` or `}`), so Redis hashes it whole, and `F` makes that hash
    /// equal the key's. A key with a tag needs none: the name keeps the tag, which sits
    /// inside the key.
    fn for_role(self, role: &str) -> Option<[u8; 4]> {
        let want = self.0?;
        let before = [MARKER.as_bytes(), b":", role.as_bytes(), b"#"].iter().fold(want, |crc, part| crc16(crc, part));
        // CRC16 is linear: crc(before, F) = crc(before, 000) ^ crc(0, F), so the residue that
        // F itself must hash to is known up front and a table finds the first such F.
        let need = (want ^ crc16(before, &[0, 0, 0])) % SLOTS;
        let [a, b, c] = glue_table()[usize::from(need)];
        Some([b'#', a, b, c])
    }
}

const SLOTS: u16 = 16384;
const GLUE_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// For each residue `v` mod 16384, the first three-character string over [`GLUE_ALPHABET`]
/// (in byte order) whose CRC16 is `v` mod 16384. Every residue has one (a unit test checks);
/// built once, on first use, from the 238,328 candidates.
fn glue_table() -> &'static [[u8; 3]; SLOTS as usize] {
    static TABLE: OnceLock<Box<[[u8; 3]; SLOTS as usize]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = Box::new([[0u8; 3]; SLOTS as usize]);
        for &a in GLUE_ALPHABET {
            let ca = crc16(0, &[a]);
            for &b in GLUE_ALPHABET {
                let cb = crc16(ca, &[b]);
                for &c in GLUE_ALPHABET {
                    let slot = &mut table[usize::from(crc16(cb, &[c]) % SLOTS)];
                    if slot[0] == 0 {
                        *slot = [a, b, c];
                    }
                }
            }
        }
        table
    })
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
    crc16(0, hash_tag(key).unwrap_or(key).as_bytes()) % SLOTS
}

/// CRC16/XMODEM (polynomial 0x1021, no reflection, no final xor), continued from `crc`.
fn crc16(crc: u16, bytes: &[u8]) -> u16 {
    bytes.iter().fold(crc, |crc, &b| (crc << 8) ^ CRC_TABLE[usize::from((crc >> 8) as u8 ^ b)])
}

const CRC_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn names(key: &str) -> Vec<String> {
        Role::ALL.iter().map(|&r| LockKeys::name(key, r).expect("valid key")).collect()
    }

    #[test]
    fn names_and_entries_written_in_place_are_the_ones_built() {
        for key in ["orders:1", "{tag}:x", "a", "k{}{t}"] {
            let mut args = Args::new();
            for &role in Role::ALL.iter() {
                push_name(&mut args, key, role);
            }
            let token = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
            Names::of(key).push_entry(&mut args, token, 10_000, 0xfeed);
            Names::of(key).push_inbox_suffix(&mut args, 0xfeed);
            let mut want = names(key);
            want.push(format!("{}:10000:{}", crate::token::hex(token), LockKeys::inbox_suffix(key, 0xfeed)));
            want.push(LockKeys::inbox_suffix(key, 0xfeed));
            assert_eq!(args.to_vec(), want, "{key}");
            let mut inbox = String::from("left over");
            inbox.clear();
            write_inbox(&mut inbox, key, 0xfeed);
            assert_eq!(inbox, LockKeys::inbox_of(key, &LockKeys::inbox_suffix(key, 0xfeed)), "{key}");
        }
    }

    #[test]
    fn auxiliary_names_share_the_slot_and_start_with_the_key() {
        for key in ["orders", "a{b", "user:{42}:lock", "x{y}z", "ü-ñ", "a}b", "a{}b", "{}", "#", "k#rd", "}{"] {
            let k = LockKeys::new(key).expect("valid key");
            assert_eq!(k.lock, key);
            for aux in [&k.fence, &k.queue, &k.channel] {
                assert_eq!(slot(aux), slot(key), "{aux} vs {key}");
                assert!(aux.starts_with(key), "{aux} vs {key}");
                assert!(LockKeys::is_auxiliary(aux));
            }
            assert_eq!(k.channel, LockKeys::channel_of(key));
        }
    }

    #[test]
    fn inboxes_start_with_the_key_share_its_slot_and_differ_per_client() {
        for key in ["orders", "a{b", "user:{42}:lock", "a}b", "a{}b", "{}"] {
            let a = LockKeys::inbox_of(key, &LockKeys::inbox_suffix(key, 1));
            let b = LockKeys::inbox_of(key, &LockKeys::inbox_suffix(key, u64::MAX));
            assert_ne!(a, b);
            for inbox in [&a, &b] {
                assert_eq!(slot(inbox), slot(key), "{inbox} vs {key}");
                assert!(inbox.starts_with(key) && LockKeys::is_auxiliary(inbox), "{inbox}");
                assert!(!names(key).contains(inbox), "{inbox}");
            }
            assert!(LockKeys::is_client_inbox_of(key, 1, &a) && !LockKeys::is_client_inbox_of(key, 2, &a));
            assert!(
                !LockKeys::is_client_inbox_of(key, 1, &b) && !LockKeys::is_client_inbox_of(key, 1, &format!("{a}x"))
            );
            assert!(!LockKeys::is_client_inbox_of(key, 1, &LockKeys::channel_of(key)));
        }
        assert_eq!(LockKeys::inbox_suffix("{coll}", 0xab), "i00000000000000ab");
    }

    #[test]
    fn examples_of_layout_2() {
        let first3 = |key| names(key)[..3].to_vec();
        assert_eq!(first3("{coll}"), ["{coll}#rdl:fence", "{coll}#rdl:q", "{coll}#rdl:ch"]);
        // Values from an independent brute-force search over whole names.
        assert_eq!(first3("coll"), ["coll#rdl:fence#6WM", "coll#rdl:q#4C2", "coll#rdl:ch#2jX"]);
        assert_eq!(first3("a}b"), ["a}b#rdl:fence#43N", "a}b#rdl:q#4L2", "a}b#rdl:ch#4t4"]);
        assert_eq!(first3("a{b"), ["a{b#rdl:fence#6Zc", "a{b#rdl:q#2YK", "a{b#rdl:ch#0KT"]);
        assert_eq!(first3("a{}b"), ["a{}b#rdl:fence#428", "a{}b#rdl:q#14j", "a{}b#rdl:ch#2KC"]);
        // Every role's name shares the key's slot and starts with it.
        for key in ["coll", "{coll}", "a}b", "a{b", "a{}b"] {
            for n in names(key) {
                assert!(n.starts_with(key) && slot(&n) == slot(key), "{n}");
            }
        }
    }

    /// The collision of layout 1: `coll` and `{coll}` shared every auxiliary name.
    #[test]
    fn a_key_and_its_tagged_twin_share_nothing() {
        let (a, b) = (names("coll"), names("{coll}"));
        assert!(a.iter().all(|n| !b.contains(n)), "{a:?} vs {b:?}");
        let (c, d) = (names("a{b"), names("{a{b}"));
        assert!(c.iter().all(|n| !d.contains(n)), "{c:?} vs {d:?}");
    }

    #[test]
    fn braces_anywhere_are_accepted() {
        for key in ["a}b", "a{b", "a{}b", "}", "{", "{}", "}{", "a{}b}"] {
            assert!(hash_tag(key).is_none(), "{key}");
            assert!(LockKeys::new(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn keys_with_the_marker_are_refused() {
        for key in ["#rdl", "coll#rdl:q", "{coll}#rdl:ch", "x#rdly", "#rdl{t}"] {
            let e = LockKeys::new(key).expect_err("a reserved key");
            assert_eq!(e, InvalidInput::KeyReserved(key.to_owned()));
            assert!(e.to_string().contains("#rdl"), "{e}");
            assert!(LockKeys::name(key, Role::Queue).is_err());
        }
        // Every auxiliary name is refused as a key.
        for n in names("coll").iter().chain(&names("{coll}")) {
            assert!(matches!(LockKeys::new(n), Err(InvalidInput::KeyReserved(_))), "{n}");
        }
        // Near misses are keys like any other.
        for key in ["#rd", "#RDL", "rdl", "# rdl", "k#r"] {
            assert!(LockKeys::new(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn every_residue_has_a_glue() {
        let table = glue_table();
        for (v, g) in table.iter().enumerate() {
            assert!(g.iter().all(|b| GLUE_ALPHABET.contains(b)), "residue {v} has no glue");
            assert_eq!(usize::from(crc16(0, g) % SLOTS), v);
        }
        // The first in byte order: nothing before it hits the same residue.
        let first = table[0];
        for &a in GLUE_ALPHABET.iter().filter(|&&a| a <= first[0]) {
            for &b in GLUE_ALPHABET {
                for &c in GLUE_ALPHABET {
                    if [a, b, c] < first {
                        assert_ne!(crc16(0, &[a, b, c]) % SLOTS, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn roles_are_distinct_lowercase_words() {
        for (i, a) in Role::ALL.iter().enumerate() {
            assert!(!a.as_str().is_empty() && a.as_str().bytes().all(|b| b.is_ascii_lowercase()));
            assert!(Role::ALL[i + 1..].iter().all(|b| b.as_str() != a.as_str()));
        }
    }

    #[test]
    fn slot_matches_the_cluster_specification() {
        // Reference values from the cluster specification's CRC16 example and known slots.
        assert_eq!(crc16(0, b"123456789"), 0x31C3);
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{foo}bar"), 12182);
    }

    #[test]
    fn bad_keys_are_typed_errors() {
        assert_eq!(LockKeys::new(""), Err(InvalidInput::EmptyKey));
        assert!(matches!(LockKeys::new(&"k".repeat(MAX_KEY_LEN + 1)), Err(InvalidInput::KeyTooLong { .. })));
        assert!(LockKeys::new(&"}".repeat(MAX_KEY_LEN)).is_ok());
    }
}
