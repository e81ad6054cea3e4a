//! The fake server: a keyspace with `PX` expiry on virtual time, the four scripts
//! interpreted line by line (the Lua source is quoted above each step), replication
//! offsets for `WAIT`, `ROLE` and `TIME`.
//!
//! Time is in nanoseconds of virtual time; the server's own clock (`TIME`) is the virtual
//! clock plus a fixed epoch, so it never goes backwards, not even across a restart.

use std::collections::{BTreeMap, VecDeque};

use rdlock_core::{Reply, ServerError};

use super::MS;
use super::dice::Dice;

/// A deliberate protocol fault, to prove that the checker sees violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The faithful scripts.
    None,
    /// Release hands the lock on (or deletes it) without checking the owner token.
    ReleaseWithoutOwnerCheck,
    /// Extend renews whatever the key holds and reports success.
    ExtendWithoutOwnerCheck,
    /// The protocol before claims: a release hands the next waiter its whole TTL whether or
    /// not anyone heard the hand-off, so a waiter that vanished while queued holds the lock
    /// for a lease.
    FullLeaseHandoff,
    /// The permit scripts admit a share whether or not it fits: more permits than the
    /// capacity, a writer beside readers.
    ShareOverCapacity,
    /// The permit release frees the room of a share the caller does not hold (its token is
    /// removed if present, and the queue is served as if room were freed).
    ShareReleaseWithoutOwnerCheck,
    /// The permit acquire admits a caller that fits even when others are queued: a reader
    /// past a queued writer.
    ShareBarging,
    /// A mutex's store writes whatever the lock key holds (no owner check; the fence check
    /// stays).
    StoreWithoutOwnerCheck,
    /// A mutex's grant returns no value, whatever the value key holds (as if it read
    /// another key).
    GrantWithoutValue,
    /// The quorum fence sets the counter to the fence whoever holds the key, even backwards.
    QuorumFenceUnchecked,
    /// The quorum take sets the key whoever holds it (no `NX`).
    QuorumTakeOverwrites,
    /// A pub/sub `PING`'s answer overtakes the messages published before the `PING` ran (a
    /// driver that reports the answer before handing in the messages read ahead of it).
    PingOvertakesMessages,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    List(VecDeque<String>),
    /// A sorted set: member -> score (the permit scripts' scores are whole ms).
    Zset(BTreeMap<String, i64>),
    /// A hash: field -> bytes (a mutex's value need not be text).
    Hash(BTreeMap<String, Vec<u8>>),
}

#[path = "fake_permits.rs"]
mod permits;

#[derive(Clone, Debug)]
struct Entry {
    value: Value,
    expires: Option<u64>,
}

/// A key given to a new owner (with a freshly issued fence), as the checker sees it.
#[derive(Clone, Debug)]
pub struct Grant {
    pub key: String,
    pub token: String,
    pub fence: i64,
    /// Handed to a queued waiter (on its whole TTL when its inbox heard it, else as a claim
    /// it owns once it confirms), rather than taken by the token's own attempt.
    pub handoff: bool,
    /// Waiters queued ahead of the grantee when it was granted (FIFO: always 0).
    pub ahead: usize,
}

/// A mutex's value as a granting acquire read it (the reply carries it), for the checker.
#[derive(Clone, Debug)]
pub struct ValueRead {
    pub key: String,
    pub token: String,
    pub fence: i64,
    /// `(f, v)`: the writer's fence as stored, and the value; `None` when the key has no `v`.
    pub value: Option<(Vec<u8>, Vec<u8>)>,
}

/// A store that ran past its argument checks, for the checker.
#[derive(Clone, Debug)]
pub struct StoreRun {
    /// The lock key.
    pub key: String,
    pub token: String,
    pub fence: u64,
    /// What the lock key held when the store ran (read beside the script, not by it).
    pub holder: Option<String>,
    /// The value written; `None` when the store wrote nothing (0, -1, an error).
    pub written: Option<Vec<u8>>,
    /// When the value expires (virtual ns), if written with a ttl.
    pub expires: Option<u64>,
}

/// What a script did besides its reply.
#[derive(Default)]
pub struct Effects<'a> {
    /// `(channel, payload)` pairs, in order.
    pub publishes: Vec<(String, String)>,
    pub grants: Vec<Grant>,
    /// Shares shrunk to a reader's weight (downgrades), by token.
    pub downgrades: Vec<String>,
    /// Mutex values read by grants, in order.
    pub reads: Vec<ValueRead>,
    /// Stores that got past their argument checks, in order.
    pub stores: Vec<StoreRun>,
    /// What `PUBLISH` answers.
    listeners: Option<&'a dyn Fn(&str) -> usize>,
}

impl Effects<'_> {
    /// The effects alone, without the listener view they were made with.
    pub fn detach(self) -> Effects<'static> {
        Effects {
            publishes: self.publishes,
            grants: self.grants,
            downgrades: self.downgrades,
            reads: self.reads,
            stores: self.stores,
            listeners: None,
        }
    }

    /// `PUBLISH channel payload`: how many connections received it.
    fn publish(&mut self, channel: String, payload: String) -> usize {
        let n = self.listeners.map_or(0, |l| l(&channel));
        self.publishes.push((channel, payload));
        n
    }
}

impl std::fmt::Debug for Effects<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects").field("publishes", &self.publishes).field("grants", &self.grants).finish()
    }
}

/// A replica, reduced to when it applies each write of the primary.
#[derive(Debug)]
struct Replica {
    lag: (u64, u64),
    /// Windows in which the replica applies nothing (a stalled or cut-off replica).
    stalls: Vec<(u64, u64)>,
    /// `applied_at[i]`: when write `i + 1` reached this replica.
    applied_at: Vec<u64>,
}

type R<T> = Result<T, ServerError>;

/// A mutex's value key as `HMGET f v` reads it.
type Fields = (Option<Vec<u8>>, Option<Vec<u8>>);
type ValueBytes<'a> = Option<&'a [u8]>;

fn wrongtype() -> ServerError {
    ServerError::new("WRONGTYPE", "Operation against a key holding the wrong kind of value")
}

fn not_int() -> ServerError {
    ServerError::new("ERR", "value is not an integer or out of range")
}

fn int(i: i64) -> Reply {
    Reply::Int(i)
}

/// A release's hand-off answer: `2`, or `{2, channel, message}` when a connection heard the
/// announcement (release.lua).
pub fn handed_off(announced: Option<(String, String)>) -> Reply {
    match announced {
        Some((channel, message)) => {
            Reply::Array(vec![int(2), Reply::Data(channel.into_bytes()), Reply::Data(message.into_bytes())])
        }
        None => int(2),
    }
}

fn pair(a: i64, b: i64) -> Reply {
    Reply::Array(vec![int(a), int(b)])
}

/// `KEYS[i]` / `ARGV[i]` (0-based here); a missing one is an error, as passing nil to
/// `redis.call` is.
fn nth(list: &[String], i: usize) -> R<&str> {
    list.get(i)
        .map(String::as_str)
        .ok_or_else(|| ServerError::new("ERR", "Lua redis lib command arguments must be strings or integers"))
}

fn parse_ms(s: &str) -> R<i64> {
    s.parse::<i64>().map_err(|_| not_int())
}

/// A string as Redis reads an integer: `0`, or an optional `-` and digits without a leading 0,
/// within 64 bits.
fn redis_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical =
        s == "0" || (!digits.is_empty() && !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| s.parse().ok()).flatten()
}

const FENCE_TYPE: &str = "fence counter holds another type of value";
const FENCE_VALUE: &str = "fence counter holds no valid fence (an integer from 0 to 2^53 - 2)";
/// The largest fence Lua holds exactly, less one (so that the next one is exact too).
const FENCE_MAX: i64 = 9_007_199_254_740_990;

/// `fail(what)` of the prelude: `RDLOCK what`.
fn fail(what: &str) -> ServerError {
    ServerError::new("RDLOCK", what)
}

fn lock_key_type() -> ServerError {
    ServerError::new("WRONGTYPE", "RDLOCK lock key holds another type of value")
}

const QUEUE_TYPE: &str = "wait queue holds another type of value";
const DATA_TYPE: &str = "value key holds another type of value";

/// Lua's `tonumber` of a string: decimal (with fraction and exponent) or hex, surrounded by
/// blanks; `None` where it gives nil.
fn lua_number(s: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(s).ok()?.trim_matches(|c: char| c.is_ascii_whitespace());
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let hex = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"));
    let n = match hex {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            h.bytes().fold(0f64, |n, b| n * 16.0 + f64::from((b as char).to_digit(16).unwrap_or(0)))
        }
        Some(_) => return None,
        // Digits, a point, an exponent: never `inf` or `nan`, which Lua does not read.
        None if body.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) => {
            body.parse::<f64>().ok()?
        }
        None => return None,
    };
    Some(if neg { -n } else { n })
}

/// `ms_arg` of the prelude: 1 to 15 digits, no sign, no leading 0.
fn ms_arg(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit())
}

/// `inbox_arg(s)` of the prelude: `i`, 16 hex digits, then optionally `#` and three
/// alphanumerics.
fn inbox_arg(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = b.len() >= 17 && b[0] == b'i' && b[1..17].iter().all(u8::is_ascii_hexdigit);
    hex && (b.len() == 17 || (b.len() == 21 && b[17] == b'#' && b[18..].iter().all(u8::is_ascii_alphanumeric)))
}

/// A queue entry as `owner(entry)` of the prelude reads it: token, ttl, inbox.
type Waiter = (String, Option<String>, Option<String>);

/// `owner(entry)` of the prelude: `^([^:]+):([^:]*):(.*)$`, the ttl when a valid number of
/// ms, the inbox when valid; none when the entry does not match.
fn owner(entry: Option<&str>) -> Option<Waiter> {
    let (tok, rest) = entry?.split_once(':')?;
    let (ttl, inbox) = rest.split_once(':')?;
    if tok.is_empty() || ttl.contains(':') {
        return None;
    }
    Some((tok.to_owned(), ms_arg(ttl).then(|| ttl.to_owned()), inbox_arg(inbox).then(|| inbox.to_owned())))
}

#[derive(Debug)]
pub struct Fake {
    keys: BTreeMap<String, Entry>,
    now: u64,
    pub bug: Bug,
    /// `TIME` at virtual 0, in microseconds.
    epoch_us: u64,
    /// Restarts so far (each wipes the keyspace).
    pub restarts: u32,
    loading_until: u64,
    /// Writes so far (the replication offset).
    offset: u64,
    dirty: u64,
    replicas: Vec<Replica>,
    /// The restart count at each token's latest grant.
    grant_epoch: BTreeMap<String, u32>,
    /// Whether `SET` takes `IFEQ` (Valkey 8.1+, Redis 8.4+): renewals by `SET ... IFEQ`, and
    /// the folded release (`release_folded`), which takes its checked path where it is not.
    pub ifeq: bool,
}

impl Fake {
    pub fn new(bug: Bug, epoch_us: u64) -> Self {
        Self {
            keys: BTreeMap::new(),
            now: 0,
            bug,
            epoch_us,
            restarts: 0,
            loading_until: 0,
            offset: 0,
            dirty: 0,
            replicas: Vec::new(),
            grant_epoch: BTreeMap::new(),
            ifeq: true,
        }
    }

    pub fn add_replica(&mut self, lag: (u64, u64), stalls: Vec<(u64, u64)>) {
        self.replicas.push(Replica { lag, stalls, applied_at: Vec::new() });
    }

    // ------------------------------------------------------------ keyspace primitives

    fn entry(&mut self, key: &str) -> Option<&mut Entry> {
        if self.keys.get(key).is_some_and(|e| e.expires.is_some_and(|x| x <= self.now)) {
            self.keys.remove(key);
        }
        self.keys.get_mut(key)
    }

    fn put(&mut self, key: &str, value: Value, expires: Option<u64>) {
        self.dirty += 1;
        self.keys.insert(key.to_owned(), Entry { value, expires });
    }

    fn get(&mut self, key: &str) -> R<Option<String>> {
        match self.entry(key) {
            None => Ok(None),
            Some(Entry { value: Value::Str(s), .. }) => Ok(Some(s.clone())),
            Some(_) => Err(wrongtype()),
        }
    }

    /// `SET key value PX ttl`.
    fn set_px(&mut self, key: &str, value: &str, ttl: &str) -> R<()> {
        let ms = parse_ms(ttl)?;
        if ms <= 0 {
            return Err(ServerError::new("ERR", "invalid expire time in 'set' command"));
        }
        let at = self.now + ms as u64 * MS;
        self.put(key, Value::Str(value.to_owned()), Some(at));
        Ok(())
    }

    fn pexpire(&mut self, key: &str, ttl: &str) -> R<i64> {
        let ms = parse_ms(ttl)?;
        let now = self.now;
        let Some(e) = self.entry(key) else { return Ok(0) };
        if ms <= 0 {
            self.keys.remove(key);
        } else {
            e.expires = Some(now + ms as u64 * MS);
        }
        self.dirty += 1;
        Ok(1)
    }

    fn pttl(&mut self, key: &str) -> i64 {
        let now = self.now;
        match self.entry(key) {
            None => -2,
            Some(Entry { expires: None, .. }) => -1,
            Some(Entry { expires: Some(at), .. }) => ((*at - now) / MS) as i64,
        }
    }

    /// `INCRBY key by` (`INCR`: 1, `DECR`: -1).
    fn incr_by(&mut self, key: &str, by: i64) -> R<i64> {
        let (n, expires) = match self.entry(key) {
            None => (by, None),
            Some(Entry { value: Value::Str(s), expires }) => {
                let v = redis_int(s).ok_or_else(not_int)?;
                let n = v
                    .checked_add(by)
                    .ok_or_else(|| ServerError::new("ERR", "increment or decrement would overflow"))?;
                (n, *expires)
            }
            Some(_) => return Err(wrongtype()),
        };
        self.put(key, Value::Str(n.to_string()), expires);
        Ok(n)
    }

    fn del(&mut self, key: &str) {
        if self.entry(key).is_some() {
            self.keys.remove(key);
            self.dirty += 1;
        }
    }

    fn list(&mut self, key: &str) -> R<Option<&mut VecDeque<String>>> {
        match self.entry(key) {
            None => Ok(None),
            Some(Entry { value: Value::List(l), .. }) => Ok(Some(l)),
            Some(_) => Err(wrongtype()),
        }
    }

    fn rpush(&mut self, key: &str, v: &str) -> R<i64> {
        if let Some(l) = self.list(key)? {
            l.push_back(v.to_owned());
            let n = l.len() as i64;
            self.dirty += 1;
            return Ok(n);
        }
        self.put(key, Value::List(VecDeque::from([v.to_owned()])), None);
        Ok(1)
    }

    fn lindex0(&mut self, key: &str) -> R<Option<String>> {
        Ok(self.list(key)?.and_then(|l| l.front().cloned()))
    }

    fn lpos(&mut self, key: &str, v: &str) -> R<Option<i64>> {
        Ok(self.list(key)?.and_then(|l| l.iter().position(|x| x == v)).map(|i| i as i64))
    }

    /// Entries of other waiters ahead of `token`'s in the queue (all of them when it has
    /// none): for the checker, not a command.
    fn ahead_of(&mut self, queue: &str, token: &str) -> usize {
        let Ok(Some(l)) = self.list(queue) else { return 0 };
        let own = l.iter().position(|e| e.split(':').next() == Some(token));
        own.unwrap_or(l.len())
    }

    /// `LREM key count v` for `count >= 0` (0: every occurrence, else the first `count`).
    fn lrem(&mut self, key: &str, count: usize, v: &str) -> R<i64> {
        let Some(l) = self.list(key)? else { return Ok(0) };
        let mut removed = 0;
        l.retain(|x| {
            let drop = x == v && (count == 0 || removed < count);
            removed += usize::from(drop);
            !drop
        });
        let empty = l.is_empty();
        if empty {
            self.keys.remove(key);
        }
        self.dirty += removed as u64;
        Ok(removed as i64)
    }

    fn lpop(&mut self, key: &str) -> R<Option<String>> {
        let Some(l) = self.list(key)? else { return Ok(None) };
        let v = l.pop_front();
        if l.is_empty() {
            self.keys.remove(key);
        }
        self.dirty += 1;
        Ok(v)
    }

    /// `TIME`: seconds and microseconds.
    fn time(&self) -> (u64, u64) {
        let us = self.epoch_us + self.now / 1000;
        (us / 1_000_000, us % 1_000_000)
    }

    // ------------------------------------------------------------ scripts

    /// Runs a script at `now`; the reply (an error reply when the script fails) and what it
    /// published and granted. Writes are counted for replication. `listeners` is what
    /// `PUBLISH` answers: how many connections are subscribed to a channel.
    pub fn run_script<'l>(
        &mut self,
        script: rdlock_core::Script,
        keys: &[String],
        args: &[String],
        now: u64,
        dice: &mut Dice,
        listeners: &'l dyn Fn(&str) -> usize,
    ) -> (Reply, Effects<'l>) {
        self.run_script_with_value(script, keys, args, None, now, dice, listeners)
    }

    /// [`Fake::run_script`] with a last `ARGV` of bytes (`Command::ScriptWithValue`).
    #[allow(clippy::too_many_arguments)]
    pub fn run_script_with_value<'l>(
        &mut self,
        script: rdlock_core::Script,
        keys: &[String],
        args: &[String],
        value: Option<&[u8]>,
        now: u64,
        dice: &mut Dice,
        listeners: &'l dyn Fn(&str) -> usize,
    ) -> (Reply, Effects<'l>) {
        self.now = now;
        let mut fx = Effects { listeners: Some(listeners), ..Effects::default() };
        if now < self.loading_until {
            return (Reply::Error(ServerError::new("LOADING", "Redis is loading the dataset in memory")), fx);
        }
        let before = self.dirty;
        // A cluster variant is its base with SPUBLISH for PUBLISH, which the one fake node,
        // the slot's primary where every inbox is subscribed, counts the same way.
        let reply = match script.base() {
            rdlock_core::Script::Acquire => self.acquire(keys, args, &mut fx),
            rdlock_core::Script::Release => self.release(keys, args, &mut fx),
            rdlock_core::Script::ReleaseBatch => self.release_batch(keys, args, &mut fx),
            rdlock_core::Script::Confirm => self.confirm(keys, args),
            rdlock_core::Script::Extend => self.extend(keys, args),
            rdlock_core::Script::ReleaseShared => self.release_shared(keys, args, &mut fx),
            rdlock_core::Script::PermitAcquire => self.permit_acquire(keys, args, &mut fx),
            rdlock_core::Script::PermitRelease => self.permit_release(keys, args, &mut fx),
            rdlock_core::Script::PermitExtend => self.permit_extend(keys, args),
            rdlock_core::Script::PermitChange => self.permit_change(keys, args, &mut fx),
            rdlock_core::Script::Store => self.store(keys, args, value, &mut fx),
            rdlock_core::Script::QuorumTake => self.quorum_take(keys, args),
            rdlock_core::Script::QuorumFence => self.quorum_fence(keys, args),
            // Operators' scripts: the engine never sends them, so the fake need not follow them.
            rdlock_core::Script::Inspect | rdlock_core::Script::ForceRelease => {
                Err(ServerError::new("ERR", "the fake does not run operators' scripts"))
            }
            sharded => return (Reply::Error(ServerError::new("NOSCRIPT", format!("{sharded:?}"))), fx),
        };
        if self.dirty != before {
            self.replicate(now, dice);
        }
        for g in &fx.grants {
            self.grant_epoch.insert(g.token.clone(), self.restarts);
        }
        (reply.unwrap_or_else(Reply::Error), fx)
    }

    /// `SET key value IFEQ value PX ttl_ms` (Valkey 8.1+, Redis 8.4+): `OK` when the key held
    /// `value` (rewritten, with the new expiry), nil when it held another string or nothing,
    /// `WRONGTYPE` for another type. With [`Bug::ExtendWithoutOwnerCheck`] any string key is
    /// taken over, as the buggy script's `PEXPIRE` would renew it.
    pub fn run_set_ifeq(&mut self, key: &str, value: &str, ttl_ms: u64, now: u64, dice: &mut Dice) -> Reply {
        self.now = now;
        if now < self.loading_until {
            return Reply::Error(ServerError::new("LOADING", "Redis is loading the dataset in memory"));
        }
        let ours = match self.get(key) {
            Err(e) => return Reply::Error(e),
            Ok(cur) => cur.as_deref() == Some(value) || (cur.is_some() && self.bug == Bug::ExtendWithoutOwnerCheck),
        };
        if !ours {
            return Reply::Nil;
        }
        let before = self.dirty;
        if let Err(e) = self.set_px(key, value, &ttl_ms.to_string()) {
            return Reply::Error(e);
        }
        if self.dirty != before {
            self.replicate(now, dice);
        }
        Reply::Data(b"OK".to_vec())
    }

    /// `counter(key)` of fence.lua: `Ok(None)` when absent (Lua's false), the value when it
    /// is an integer INCR accepts and Lua holds exactly, else the reason.
    fn counter(&mut self, key: &str) -> Result<Option<i64>, ServerError> {
        // local v = redis.pcall('GET', key)
        let v = self.get(key).map_err(|_| fail(FENCE_TYPE))?;
        let Some(v) = v else { return Ok(None) };
        // (v == '0' or v matches '^[1-9]%d*$') and #v <= 16 and tonumber(v) <= 2^53 - 2
        match redis_int(&v) {
            Some(n) if (0..=FENCE_MAX).contains(&n) && v.len() <= 16 => Ok(Some(n)),
            _ => Err(fail(FENCE_VALUE)),
        }
    }

    /// `bump(key, ttl)` of fence.lua.
    fn bump(&mut self, fence_key: &str, fence_ttl: &str) -> R<i64> {
        // local f = redis.pcall('INCR', key); an error: FENCE_TYPE (WRONGTYPE) or FENCE_VALUE
        let f = match self.incr_by(fence_key, 1) {
            Ok(f) => f,
            Err(e) if e.code == "WRONGTYPE" => return Err(fail(FENCE_TYPE)),
            Err(_) => return Err(fail(FENCE_VALUE)),
        };
        // if f < 1 or f > 2^53 - 2 then DECR key; fail end
        if !(1..=FENCE_MAX).contains(&f) {
            self.incr_by(fence_key, -1)?;
            return Err(fail(FENCE_VALUE));
        }
        // if f == 1 then f = TIME in microseconds; SET key f PX ttl end
        if f == 1 {
            let (s, us) = self.time();
            let f = (s * 1_000_000 + us) as i64;
            self.set_px(fence_key, &f.to_string(), fence_ttl)?;
            return Ok(f);
        }
        Ok(f)
    }

    /// `hand_off(tok, ttl, inbox, claim, fence_ttl)` of fence.lua: the fence, and the
    /// announcement (channel, message) when a connection heard it.
    fn hand_off(
        &mut self,
        keys: (&str, &str, &str),
        (tok, ttl, inbox): &Waiter,
        claim: &str,
        fence_ttl: &str,
        fx: &mut Effects<'_>,
    ) -> R<(i64, Option<(String, String)>)> {
        let (key, fence_key, queue) = keys;
        // local f = bump(); heard = inbox and PUBLISH(KEYS[1] .. '#rdl:' .. inbox, tok:f) or 0
        let fence = self.bump(fence_key, fence_ttl)?;
        let announced = inbox.as_ref().map(|inbox| (format!("{key}#rdl:{inbox}"), format!("{tok}:{fence}")));
        let heard = match &announced {
            Some((channel, message)) => fx.publish(channel.clone(), message.clone()),
            None => 0,
        };
        // px = claim; if ttl and (heard > 0 or ttl < claim) then px = ttl end
        let px = match ttl {
            Some(t) if heard > 0 || parse_ms(t)? < parse_ms(claim)? => t.as_str(),
            // The protocol before claims: the whole TTL, heard or not.
            Some(t) if self.bug == Bug::FullLeaseHandoff => t.as_str(),
            _ => claim,
        };
        // SET KEYS[1] tok PX px; LPOP KEYS[3]
        self.set_px(key, tok, px)?;
        let ahead = self.ahead_of(queue, tok);
        self.lpop(queue)?;
        fx.grants.push(Grant { key: key.to_owned(), token: tok.to_owned(), fence, handoff: true, ahead });
        Ok((fence, announced.filter(|_| heard > 0)))
    }

    /// `next_waiter(head, mine)` of fence.lua: the first well-formed entry that is not `mine`,
    /// after dropping the others from the queue's head (checking the counter first).
    fn next_waiter(
        &mut self,
        fence_key: &str,
        queue: &str,
        mut head: Option<String>,
        mine: Option<&str>,
    ) -> R<Option<Waiter>> {
        let skip = |w: &Option<Waiter>| w.as_ref().is_none_or(|(t, _, _)| Some(t.as_str()) == mine);
        let mut who = owner(head.as_deref());
        if head.is_some() && skip(&who) {
            self.counter(fence_key)?;
        }
        while head.is_some() && skip(&who) {
            self.lpop(queue)?;
            head = self.lindex0(queue)?;
            who = owner(head.as_deref());
        }
        Ok(who)
    }

    fn acquire(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        let (key, fence_key, queue) = (nth(keys, 0)?, nth(keys, 1)?, nth(keys, 2)?);
        // if #ARGV ~= 7 then fail; attempt_args(): token '^[^:]+$'; mode; ms_arg(2, 4, 5, 6); inbox
        if args.len() != 7 {
            return Err(fail("acquire takes 7 arguments"));
        }
        let (token, ttl, mode, inbox) = (&args[0], &args[1], args[2].as_str(), &args[6]);
        if token.is_empty() || token.contains(':') {
            return Err(fail("invalid token"));
        }
        if !matches!(mode, "try" | "first" | "retry") {
            return Err(fail("invalid mode"));
        }
        if ![1, 3, 4, 5].iter().all(|&i| ms_arg(&args[i])) {
            return Err(fail("invalid ttl"));
        }
        if !inbox_arg(inbox) {
            return Err(fail("invalid inbox"));
        }
        let (qttl, fence_ttl, claim) = (&args[3], &args[4], &args[5]);
        let entry = format!("{token}:{ttl}:{inbox}");
        // if KEYS[4] then data = pcall HMGET KEYS[4] f v; an error: fail(DATA_TYPE) end
        let data = match keys.get(3) {
            Some(k) => Some(self.data_fields(k).map_err(|_| fail(DATA_TYPE))?),
            None => None,
        };
        // granted(f): {1, f, data[1] or '', data[2]} when data[2], else {1, f}
        let bug = self.bug;
        let granted = |fence: i64, fx: &mut Effects<'_>| match &data {
            None => pair(1, fence),
            Some((f, v)) => {
                let v = v.clone().filter(|_| bug != Bug::GrantWithoutValue);
                let value = v.map(|v| (f.clone().unwrap_or_default(), v));
                let read = ValueRead { key: key.to_owned(), token: token.clone(), fence, value: value.clone() };
                fx.reads.push(read);
                match value {
                    Some((f, v)) => Reply::Array(vec![int(1), int(fence), Reply::Data(f), Reply::Data(v)]),
                    None => pair(1, fence),
                }
            }
        };
        // local old = redis.pcall('SET', KEYS[1], token, 'NX', 'PX', ttl, 'GET'); a table:
        // WRONGTYPE RDLOCK ... The SET's write, when it takes an absent key, is modelled where
        // the grant sets the key (or the hand-off replaces it): every failure in between is
        // `undo` (DEL KEYS[1]), so the key's state at the end is the same.
        let old = self.get(key).map_err(|_| lock_key_type())?;
        let mut f: Option<Option<i64>> = None;
        if old.as_deref() == Some(token) {
            // f = counter(); if not f or f == 0 then f = bump() end; PEXPIRE KEYS[1] ttl
            let fence = match self.counter(fence_key)? {
                Some(c) if c != 0 => c,
                _ => self.bump(fence_key, fence_ttl)?,
            };
            self.pexpire(key, ttl)?;
            return Ok(granted(fence, fx));
        }
        if old.is_none() {
            // head = pcall LINDEX KEYS[3] 0; who, wttl, winbox = next_waiter(head, nil)
            let head = self.lindex0(queue).map_err(|_| fail(QUEUE_TYPE))?;
            match self.next_waiter(fence_key, queue, head, None)? {
                Some(who) if who.0 != *token => {
                    // f = hand_off(who, wttl, winbox, ARGV[6], ARGV[5])
                    let (fence, _) = self.hand_off((key, fence_key, queue), &who, claim, fence_ttl, fx)?;
                    f = Some(Some(fence));
                }
                who => {
                    // f = bump(); SET KEYS[1] token PX ttl; if who then LPOP end; return {1, f}
                    let fence = self.bump(fence_key, fence_ttl)?;
                    self.set_px(key, token, ttl)?;
                    let ahead = self.ahead_of(queue, token);
                    if who.is_some() {
                        self.lpop(queue)?;
                    }
                    fx.grants.push(Grant { key: key.to_owned(), token: token.clone(), fence, handoff: false, ahead });
                    return Ok(granted(fence, fx));
                }
            }
        }
        if mode == "try" {
            return Ok(pair(0, self.pttl(key)));
        }
        if mode == "first" {
            // n = pcall RPUSH; if n == 1 then PEXPIRE KEYS[3] ARGV[4]; return {0, PTTL} end; {0, -3}
            let n = self.rpush(queue, &entry).map_err(|_| fail(QUEUE_TYPE))?;
            if n == 1 {
                self.pexpire(queue, qttl)?;
                return Ok(pair(0, self.pttl(key)));
            }
            return Ok(pair(0, -3));
        }
        // if f == nil then f = counter() end
        let f = match f {
            Some(f) => f,
            None => self.counter(fence_key)?,
        };
        // at = pcall LPOS; if not at then RPUSH end; PEXPIRE KEYS[3]; {0, PTTL, f or 0}
        let at = self.lpos(queue, &entry).map_err(|_| fail(QUEUE_TYPE))?;
        if at.is_none() {
            self.rpush(queue, &entry)?;
        }
        self.pexpire(queue, qttl)?;
        let pttl = self.pttl(key);
        Ok(Reply::Array(vec![int(0), int(pttl), int(f.unwrap_or(0))]))
    }

    fn release(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        let (key, fence_key, queue) = (nth(keys, 0)?, nth(keys, 1)?, nth(keys, 2)?);
        // if #ARGV ~= 4 and #ARGV ~= 5 then fail; ms_arg(3, 4, and 5 when given)
        if args.len() != 4 && args.len() != 5 {
            return Err(fail("release takes 4 or 5 arguments"));
        }
        if !args[2..].iter().all(|a| ms_arg(a)) {
            return Err(fail("invalid ttl"));
        }
        let (token, entry, fence_ttl, claim) = (&args[0], &args[1], &args[2], &args[3]);
        // if qttl then r = release_folded(...); if r then return r end end
        if let Some(qttl) = args.get(4) {
            let folded = self.release_folded((key, fence_key, queue), token, entry, (fence_ttl, claim, qttl), fx)?;
            if let Some(r) = folded {
                return Ok(r);
            }
        }
        // got = MGET KEYS[1] KEYS[2]; cur = got[1] or pcall GET KEYS[1] (a table: WRONGTYPE);
        // if cur ~= token then pcall LREM KEYS[3] 0 ARGV[2]; return 0 end
        let owner_now = self.get(key).map_err(|_| lock_key_type())?;
        if owner_now.as_deref() != Some(token) && self.bug != Bug::ReleaseWithoutOwnerCheck {
            self.lrem(queue, 0, entry).map_err(|_| fail(QUEUE_TYPE))?;
            return Ok(int(0));
        }
        // With a counter INCR can raise (fence_of(got[2]) < 2^53 - 2) the script pops the head
        // at once (pcall LPOP, dropping malformed and own entries) and hands off knowing the
        // bump succeeds; else pcall LINDEX KEYS[3] 0 and next_waiter(head, token). The same
        // writes either way, which this follows.
        let head = self.lindex0(queue).map_err(|_| fail(QUEUE_TYPE))?;
        if let Some(who) = self.next_waiter(fence_key, queue, head, Some(token))? {
            // f, _, ch, msg = hand_off(tok, ttl, inbox, ARGV[4], ARGV[3]); return 2 (heard:
            // {2, ch, msg})
            let (_, announced) = self.hand_off((key, fence_key, queue), &who, claim, fence_ttl, fx)?;
            return Ok(handed_off(announced));
        }
        // DEL KEYS[1]; return 1
        self.del(key);
        Ok(int(1))
    }

    /// `release_folded` of release_one.lua (the owner check folded into the hand-off's `SET ...
    /// IFEQ`): `Some` reply when it answers, `None` when the checked release must. Its effects
    /// are the checked release's, but for what its undo cannot restore: a queue of one entry,
    /// popped and pushed back, gets `qttl`; a counter `0` without a TTL, raised and taken
    /// back, is deleted (`PTTL` -1 after `INCR` reads as a counter `INCR` created).
    fn release_folded(
        &mut self,
        (key, fence_key, queue): (&str, &str, &str),
        token: &str,
        entry: &str,
        (fence_ttl, claim, qttl): (&str, &str, &str),
        fx: &mut Effects<'_>,
    ) -> R<Option<Reply>> {
        // head = pcall LPOP q; a table: nil
        let Ok(list) = self.list(queue) else { return Ok(None) };
        let Some(list) = list else {
            // no head: GET k (a table: WRONGTYPE RDLOCK); ~= token: 0; DEL k: 1
            let cur = self.get(key).map_err(|_| lock_key_type())?;
            if cur.as_deref() != Some(token) && self.bug != Bug::ReleaseWithoutOwnerCheck {
                return Ok(Some(int(0)));
            }
            self.del(key);
            return Ok(Some(int(1)));
        };
        let single = list.len() == 1;
        let who = owner(list.front().map(String::as_str));
        // back(): LPUSH q head; a queue it makes again: PEXPIRE q qttl
        let back = |f: &mut Self| if single { f.pexpire(queue, qttl).map(|_| ()) } else { Ok(()) };
        // a malformed or own head: back(), nil
        let Some(who) = who.filter(|w| w.0 != token) else {
            back(self)?;
            return Ok(None);
        };
        // f = pcall INCR fk; an error, f < 1 or f > 2^53 - 2: DECR, back(), nil
        let counter = self.get(fence_key).map(|c| c.map(|s| redis_int(&s).map(|v| (v, s))));
        let f = match &counter {
            Ok(None) => Some(1),
            Ok(Some(Some((v, _)))) => v.checked_add(1),
            _ => None,
        };
        if !f.is_some_and(|f| (1..=FENCE_MAX).contains(&f)) {
            back(self)?;
            return Ok(None);
        }
        // set = pcall SET k tok IFEQ token PX px: an error (another type, no IFEQ) or nil takes
        // the INCR back (DEL when it made a counter without TTL, else DECR) and back(); nil
        // answers 0 after LREM q 0 entry, an error the checked release
        let cur = self.get(key);
        let ours = matches!(&cur, Ok(c) if c.as_deref() == Some(token) || self.bug == Bug::ReleaseWithoutOwnerCheck);
        if !self.ifeq || !ours {
            let made = matches!(counter, Ok(Some(Some((0, _))))) && self.expiry(fence_key, self.now).is_none();
            if made {
                self.del(fence_key);
            }
            back(self)?;
            if !self.ifeq || cur.is_err() {
                return Ok(None);
            }
            self.lrem(queue, 0, entry)?;
            return Ok(Some(int(0)));
        }
        // The hand-off: LPOP, INCR (seeded when 1), SET PX the waiter's ttl, PUBLISH, PEXPIRE
        // claim when unheard: what `hand_off` writes.
        let (_, announced) = self.hand_off((key, fence_key, queue), &who, claim, fence_ttl, fx)?;
        Ok(Some(handed_off(announced)))
    }

    /// `release_batch.lua`: `release_one` per lock, each lock's error its own item.
    fn release_batch(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        // n = #KEYS / 3 (a whole number, at least 1); #ARGV == 2 + 2n or 3 + 2n; ms_arg(1, 2,
        // and the last when it is the fold's qttl)
        let n = keys.len() / 3;
        if n < 1 || !keys.len().is_multiple_of(3) || (args.len() != 2 + 2 * n && args.len() != 3 + 2 * n) {
            return Err(fail("release takes 3 keys and 2 arguments per lock"));
        }
        let qttl = args.get(2 + 2 * n);
        if !ms_arg(&args[0]) || !ms_arg(&args[1]) || qttl.is_some_and(|q| !ms_arg(q)) {
            return Err(fail("invalid ttl"));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // out[i] = release_one(3(i - 1), ARGV[2i+1], ARGV[2i+2], ARGV[1], ARGV[2], qttl)
            let mut one = vec![args[2 + 2 * i].clone(), args[3 + 2 * i].clone(), args[0].clone(), args[1].clone()];
            one.extend(qttl.cloned());
            // if type(r) == 'table' then r = r.err end: an error as its text; release_one's
            // first value only (the announcement is release.lua's)
            let r = match self.release(&keys[3 * i..3 * i + 3], &one, fx) {
                Ok(Reply::Array(a)) if a.first() == Some(&int(2)) => Ok(int(2)),
                r => r,
            };
            out.push(r.unwrap_or_else(|e| Reply::Data(format!("{} {}", e.code, e.message).into_bytes())));
        }
        Ok(Reply::Array(out))
    }

    /// `confirm.lua`: per lock its fence when the key holds its token (extended), minus the
    /// counter when another's and the caller's entry is queued, else 0.
    fn confirm(&mut self, keys: &[String], args: &[String]) -> R<Reply> {
        let n = keys.len() / 3;
        if n < 1 || !keys.len().is_multiple_of(3) || args.len() != 3 * n {
            return Err(fail("confirm takes 3 keys and a token, a ttl and an entry per lock"));
        }
        if !args[n..2 * n].iter().all(|t| ms_arg(t)) {
            return Err(fail("invalid ttl"));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (key, fence_key, queue) = (&keys[3 * i], &keys[3 * i + 1], &keys[3 * i + 2]);
            // got = pcall MGET K F (nil for another type); f = got[1] and got[2] and fence_of(got[2])
            let holder = self.get(key).ok().flatten();
            let f = if holder.is_some() { self.counter(fence_key).ok().flatten() } else { None };
            match f {
                // if not f or f == 0 then 0
                None | Some(0) => out.push(int(0)),
                // elseif got[1] == token then PEXPIRE K ttl; out[i] = f
                Some(f) if holder.as_deref() == Some(args[i].as_str()) => {
                    self.pexpire(key, &args[n + i])?;
                    out.push(int(f));
                }
                // elseif pcall LPOS Q entry is a number then -f else 0
                Some(f) => {
                    out.push(int(if matches!(self.lpos(queue, &args[2 * n + i]), Ok(Some(_))) { -f } else { 0 }))
                }
            }
        }
        Ok(Reply::Array(out))
    }

    fn release_shared(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        let (key, queue) = (nth(keys, 0)?, nth(keys, 1)?);
        // if GET KEYS[1] ~= ARGV[1] then return 0 end
        if self.get(key)?.as_deref() != Some(nth(args, 0)?) && self.bug != Bug::ReleaseWithoutOwnerCheck {
            return Ok(int(0));
        }
        // DEL KEYS[1]; PUBLISH ARGV[2] 'free'; if EXISTS KEYS[2] == 1 then return 2 end; return 1
        self.del(key);
        fx.publish(nth(args, 1)?.to_owned(), "free".to_owned());
        Ok(int(if self.entry(queue).is_some() { 2 } else { 1 }))
    }

    fn extend(&mut self, keys: &[String], args: &[String]) -> R<Reply> {
        let n = keys.len();
        // if #ARGV ~= 2n then fail; every ttl ms_arg, before any write
        if args.len() != 2 * n {
            return Err(fail("extend takes a token and a ttl per key"));
        }
        if !args[n..].iter().all(|t| ms_arg(t)) {
            return Err(fail("invalid ttl"));
        }
        let mut out = Vec::with_capacity(n);
        for (i, key) in keys.iter().enumerate() {
            // local cur = redis.pcall('GET', KEYS[i]); if cur == ARGV[i] then PEXPIRE ... end
            let cur = self.get(key);
            let ours = matches!(&cur, Ok(Some(c)) if Some(c.as_str()) == args.get(i).map(String::as_str));
            if ours || self.bug == Bug::ExtendWithoutOwnerCheck {
                self.pexpire(key, nth(args, n + i)?)?;
                out.push(int(1));
            } else {
                out.push(int(0));
            }
        }
        Ok(Reply::Array(out))
    }

    /// `quorum_take.lua`: take or confirm the key, read the counter (TIME when absent).
    fn quorum_take(&mut self, keys: &[String], args: &[String]) -> R<Reply> {
        let (key, fence) = (nth(keys, 0)?, nth(keys, 1)?);
        // local ttl = ms_arg(2); local c, err = counter(KEYS[2])
        let ttl = nth(args, 1)?;
        if !ms_arg(ttl) {
            return Err(fail("invalid ttl"));
        }
        let c = self.counter(fence)?;
        // local cur = redis.pcall('GET', KEYS[1]); a table: WRONGTYPE
        let cur = self.get(key).map_err(|_| lock_key_type())?;
        let token = nth(args, 0)?;
        match cur {
            Some(other) if other != token && self.bug != Bug::QuorumTakeOverwrites => {
                return Ok(pair(0, self.pttl(key)));
            }
            Some(other) if other != token => self.set_px(key, token, ttl)?,
            Some(_) => {
                self.pexpire(key, ttl)?;
            }
            None => self.set_px(key, token, ttl)?,
        }
        let c = c.unwrap_or_else(|| {
            let (s, us) = self.time();
            (s * 1_000_000 + us) as i64
        });
        Ok(pair(1, c))
    }

    /// `quorum_fence.lua`: raise the counter to the fence, owner-checked, forwards only.
    fn quorum_fence(&mut self, keys: &[String], args: &[String]) -> R<Reply> {
        let (key, fence) = (nth(keys, 0)?, nth(keys, 1)?);
        let fttl = nth(args, 2)?;
        if !ms_arg(fttl) {
            return Err(fail("invalid ttl"));
        }
        // f matches '^[1-9]%d*$', #f <= 16, tonumber(f) <= 2^53 - 2
        let f = nth(args, 1)?;
        let digits = !f.is_empty() && !f.starts_with('0') && f.bytes().all(|b| b.is_ascii_digit());
        let fv = f.parse::<i64>().ok().filter(|&v| digits && f.len() <= 16 && v <= FENCE_MAX);
        let Some(fv) = fv else { return Err(fail("invalid fence")) };
        let c = self.counter(fence)?;
        let cur = self.get(key).map_err(|_| lock_key_type())?;
        let checked = self.bug != Bug::QuorumFenceUnchecked;
        if cur.as_deref() != Some(nth(args, 0)?) && checked {
            return Ok(Reply::Array(vec![int(0)]));
        }
        if let Some(c) = c.filter(|&c| c >= fv && checked) {
            return Ok(pair(2, c));
        }
        self.set_px(fence, f, fttl)?;
        Ok(Reply::Array(vec![int(1)]))
    }

    /// `HMGET key f v` of a mutex's value key: a key of another type is an error.
    fn data_fields(&mut self, key: &str) -> R<Fields> {
        match self.entry(key) {
            None => Ok((None, None)),
            Some(Entry { value: Value::Hash(h), .. }) => Ok((h.get("f").cloned(), h.get("v").cloned())),
            Some(_) => Err(wrongtype()),
        }
    }

    fn store(&mut self, keys: &[String], args: &[String], value: Option<&[u8]>, fx: &mut Effects<'_>) -> R<Reply> {
        // ARGV: the string arguments, then the value of bytes when one came apart.
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).chain(value).collect();
        // if #ARGV ~= 5 then fail end
        if argv.len() != 5 {
            return Err(fail("store takes 5 arguments"));
        }
        let text = |i: usize| std::str::from_utf8(argv[i]).unwrap_or("");
        let (token, fence, limit, ttl, bytes) = (text(0), text(1), text(2), text(3), argv[4]);
        // fence '^[1-9]%d*$' and #fence <= 16
        let digits = !fence.is_empty() && fence.bytes().all(|b| b.is_ascii_digit()) && !fence.starts_with('0');
        if !(digits && fence.len() <= 16) {
            return Err(fail("invalid fence"));
        }
        if !ms_arg(limit) {
            return Err(fail("invalid size limit"));
        }
        if ttl != "0" && !ms_arg(ttl) {
            return Err(fail("invalid ttl"));
        }
        // #ARGV[5] > tonumber(ARGV[3]): too large
        if bytes.len() as f64 > lua_number(limit.as_bytes()).unwrap_or(f64::INFINITY) {
            return Err(fail("value too large"));
        }
        let (key, data) = (nth(keys, 0)?, nth(keys, 1)?);
        let fence_n: f64 = lua_number(fence.as_bytes()).unwrap_or(0.0);
        let mut run = StoreRun {
            key: key.to_owned(),
            token: token.to_owned(),
            fence: fence.parse().unwrap_or(0),
            holder: self.string(key, self.now).map(str::to_owned),
            written: None,
            expires: None,
        };
        // cur = pcall GET KEYS[1]; a table: WRONGTYPE RDLOCK ...; cur ~= ARGV[1]: return 0
        let cur = self.get(key).map_err(|_| lock_key_type())?;
        if cur.as_deref() != Some(token) && self.bug != Bug::StoreWithoutOwnerCheck {
            fx.stores.push(run);
            return Ok(int(0));
        }
        // written = pcall HGET KEYS[2] f; a table: fail(DATA_TYPE)
        let (written, _) = self.data_fields(data).map_err(|_| fail(DATA_TYPE))?;
        // if written and tonumber(written) and tonumber(written) > tonumber(fence): return -1
        if written.as_deref().and_then(lua_number).is_some_and(|w| w > fence_n) {
            fx.stores.push(run);
            return Ok(int(-1));
        }
        // HSET KEYS[2] f fence v ARGV[5]; PERSIST, or PEXPIRE KEYS[2] ttl
        self.dirty += 1;
        let (now, field) = (self.now, |v: &[u8]| v.to_vec());
        match self.entry(data) {
            Some(Entry { value: Value::Hash(h), .. }) => {
                h.insert("f".into(), field(fence.as_bytes()));
                h.insert("v".into(), field(bytes));
            }
            _ => {
                let h = BTreeMap::from([("f".to_owned(), field(fence.as_bytes())), ("v".to_owned(), field(bytes))]);
                self.put(data, Value::Hash(h), None);
            }
        }
        let entry = self.keys.get_mut(data).expect("just written");
        entry.expires = (ttl != "0").then(|| now + parse_ms(ttl).unwrap_or(0) as u64 * MS);
        run.written = Some(bytes.to_vec());
        run.expires = entry.expires;
        fx.stores.push(run);
        Ok(int(1))
    }

    // ------------------------------------------------------------ replication, ROLE, restart

    fn replicate(&mut self, now: u64, dice: &mut Dice) {
        self.offset += 1;
        for r in &mut self.replicas {
            let prev = r.applied_at.last().copied().unwrap_or(0);
            let mut at = (now + dice.range(r.lag.0, r.lag.1)).max(prev);
            for &(from, until) in &r.stalls {
                if (from..until).contains(&at) {
                    at = until;
                }
            }
            r.applied_at.push(at);
        }
    }

    /// The replication offset after the latest write.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Replicas holding every write up to `offset` at `at`.
    pub fn acked(&self, offset: u64, at: u64) -> u32 {
        if offset == 0 {
            return self.replicas.len() as u32;
        }
        self.replicas.iter().filter(|r| r.applied_at.get(offset as usize - 1).is_some_and(|&t| t <= at)).count() as u32
    }

    /// When `WAIT n timeout` issued at `now` for writes up to `offset` returns: once `n`
    /// replicas hold them, or at the timeout. `None`: never (a zero timeout blocks for ever).
    pub fn wait_done(&self, offset: u64, n: u32, now: u64, timeout_ms: u64) -> Option<u64> {
        if self.acked(offset, now) >= n {
            return Some(now);
        }
        let mut times: Vec<u64> = self
            .replicas
            .iter()
            .filter_map(|r| if offset == 0 { Some(now) } else { r.applied_at.get(offset as usize - 1).copied() })
            .collect();
        times.sort_unstable();
        let reached = (n as usize).checked_sub(1).and_then(|i| times.get(i)).map(|&t| t.max(now));
        if timeout_ms == 0 {
            return reached;
        }
        let limit = now + timeout_ms * MS;
        Some(reached.map_or(limit, |t| t.min(limit)))
    }

    /// `ROLE` at `now`: it lists only connected replicas (a stalled one counts as cut off).
    pub fn role(&self, now: u64) -> Reply {
        let connected =
            self.replicas.iter().enumerate().filter(|(_, r)| !r.stalls.iter().any(|&(a, b)| (a..b).contains(&now)));
        let replicas = connected
            .map(|(i, _)| {
                Reply::Array(vec![
                    Reply::Data(b"127.0.0.1".to_vec()),
                    Reply::Data(format!("{}", 7000 + i).into_bytes()),
                    Reply::Data(self.offset.to_string().into_bytes()),
                ])
            })
            .collect();
        Reply::Array(vec![Reply::Data(b"master".to_vec()), int(self.offset as i64), Reply::Array(replicas)])
    }

    /// A restart without persistence: the keyspace is gone, and scripts get `LOADING` for a
    /// while.
    pub fn restart(&mut self, now: u64, loading: u64) {
        self.keys.clear();
        self.restarts += 1;
        self.loading_until = now + loading;
    }

    /// A key of the wrong type for a lock (a list), without expiry.
    pub fn put_list(&mut self, key: &str) {
        self.keys.insert(key.to_owned(), Entry { value: Value::List(VecDeque::from(["x".to_owned()])), expires: None });
    }

    /// `PEXPIRE` from outside the scripts: the key expires at `at`.
    pub fn set_expiry(&mut self, key: &str, at: u64) {
        if let Some(e) = self.keys.get_mut(key) {
            e.expires = Some(at);
        }
    }

    /// `DEL key` and `SET key value` (expiring at `expires`), from outside the scripts.
    pub fn del_key(&mut self, key: &str) {
        self.keys.remove(key);
    }

    pub fn put_string(&mut self, key: &str, value: &str, expires: Option<u64>) {
        self.keys.insert(key.to_owned(), Entry { value: Value::Str(value.to_owned()), expires });
    }

    // ------------------------------------------------------------ views for the checker

    fn live(&self, key: &str, now: u64) -> Option<&Entry> {
        self.keys.get(key).filter(|e| e.expires.is_none_or(|x| x > now))
    }

    /// The string a key holds at `now`.
    pub fn string(&self, key: &str, now: u64) -> Option<&str> {
        match self.live(key, now) {
            Some(Entry { value: Value::Str(s), .. }) => Some(s),
            _ => None,
        }
    }

    /// When a key expires.
    pub fn expiry(&self, key: &str, now: u64) -> Option<u64> {
        self.live(key, now).and_then(|e| e.expires)
    }

    /// Live keys without an expiry.
    pub fn keys_without_ttl(&self, now: u64) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .filter(move |(_, e)| e.expires.is_none())
            .map(|(k, _)| k.as_str())
            .filter(move |k| self.live(k, now).is_some())
    }

    /// Every live `(key, element)` of every list.
    pub fn list_entries(&self, now: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, e) in &self.keys {
            if let (Value::List(l), true) = (&e.value, e.expires.is_none_or(|x| x > now)) {
                out.extend(l.iter().map(|v| (k.clone(), v.clone())));
            }
        }
        out
    }

    /// Whether `token` holds a live share of `key` (a member whose deadline has not passed).
    pub fn share_live(&self, key: &str, token: &str, now: u64) -> bool {
        let now_ms = ((self.epoch_us + now / 1000) / 1000) as i64;
        match self.live(key, now) {
            Some(Entry { value: Value::Zset(z), .. }) => z.get(token).is_some_and(|&s| s > now_ms),
            _ => false,
        }
    }

    /// When each live share of `key` ends (virtual ns), by token.
    pub fn share_deadlines(&self, key: &str, now: u64) -> Vec<(String, u64)> {
        match self.live(key, now) {
            Some(Entry { value: Value::Zset(z), .. }) => z
                .iter()
                .map(|(t, &ms)| (t.clone(), ((ms as u64 * 1000).saturating_sub(self.epoch_us)) * 1000))
                .filter(|&(_, at)| at > now)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every live sorted set's `(key, member, score)`.
    pub fn zset_entries(&self, now: u64) -> Vec<(String, String, i64)> {
        let mut out = Vec::new();
        for (k, e) in &self.keys {
            if let (Value::Zset(z), true) = (&e.value, e.expires.is_none_or(|x| x > now)) {
                out.extend(z.iter().map(|(m, s)| (k.clone(), m.clone(), *s)));
            }
        }
        out
    }

    /// Every live hash's `(key, field, value)`.
    pub fn hash_entries(&self, now: u64) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (k, e) in &self.keys {
            if let (Value::Hash(h), true) = (&e.value, e.expires.is_none_or(|x| x > now)) {
                out.extend(h.iter().map(|(f, v)| (k.clone(), f.clone(), String::from_utf8_lossy(v).into_owned())));
            }
        }
        out
    }

    /// Every live string key and its value.
    pub fn strings(&self, now: u64) -> Vec<(String, String)> {
        self.keys
            .iter()
            .filter(|(_, e)| e.expires.is_none_or(|x| x > now))
            .filter_map(|(k, e)| match &e.value {
                Value::Str(s) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }

    /// A mutex's value key at `now`: `(f, v)` as stored, if it is a hash.
    pub fn data(&self, key: &str, now: u64) -> Option<(Option<&[u8]>, ValueBytes<'_>)> {
        match self.live(key, now) {
            Some(Entry { value: Value::Hash(h), .. }) => {
                Some((h.get("f").map(Vec::as_slice), h.get("v").map(Vec::as_slice)))
            }
            _ => None,
        }
    }

    /// A hash without expiry, from outside the scripts (a value someone else wrote).
    pub fn put_hash(&mut self, key: &str, fields: &[(&str, &[u8])]) {
        let h = fields.iter().map(|(f, v)| ((*f).to_owned(), v.to_vec())).collect();
        self.keys.insert(key.to_owned(), Entry { value: Value::Hash(h), expires: None });
    }

    /// The restart count when `token` was last granted a key.
    pub fn grant_epoch(&self, token: &str) -> Option<u32> {
        self.grant_epoch.get(token).copied()
    }
}
