//! The fake server of the simulation against a real `redis-server`: seeded random sequences
//! of script calls (acquire in every mode, release, single and batched extend) and of direct
//! tampering (`DEL`, a list where a string belongs, a string where a list or a number
//! belongs) run on both, and after every step the replies, the hand-off messages and the
//! whole keyspace (values, lists, which keys expire and when) must agree.
//!
//! What cannot be equal is normalised: fences are seeded from each server's own clock, so
//! they compare relative to their counter's seed (and every seed is checked against the clock
//! that made it, and against the counter's earlier values); remaining times compare within
//! `TOLERANCE_MS`, the fake's clock following the real one. Sequences use long TTLs so that
//! nothing expires mid-sequence; `expiry_agrees` covers expiry on purpose, sleeping past it
//! on the real server while the fake's clock moves by the same amount.
//!
//! Replay one sequence: `RDLOCK_DIFF_SEED=17 cargo test -p rdlock-core --test suite -- differential:: --skip quorum_`.

use crate::sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdlock_core::{
    AcquireReply, FENCE_TTL, LockKeys, Mode, PermitArgs, PermitExtendArgs, PermitKeys, PermitReleaseArgs, ReleaseReply,
    Reply, Script, ServerError, slot,
};
use rdlock_testkit::{Cluster, RedisServer};
use redis::{Connection, ErrorKind, PubSub, Value};
use sim::MS;
use sim::dice::Dice;
use sim::fake::{Bug, Fake};
use sim::real::reply;

/// `TIME` of the fake at its virtual 0, in microseconds.
const EPOCH_US: u64 = 1_700_000_000_000_000;
const SEQUENCES: u64 = 400;
const STEPS: usize = 40;
/// How far remaining times may differ: real time passes between the two readings, and on a
/// loaded 2-core machine the test's thread can be descheduled between them (70 ms seen with
/// 50 ms allowed). The random sequences' TTLs differ by 30 s, so a wrong TTL still shows; the
/// expiry test checks expiry itself, not the remaining times.
const TOLERANCE_MS: i64 = 500;

thread_local! {
    /// The longest step of this sequence so far on this machine: the fake reads its clock once
    /// per step, the real server when it runs, so a machine that stalls the test between the
    /// two (a loaded CI runner) writes expiries that stay that much apart.
    static STEP_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// The tolerance for remaining times in the sequence being compared.
fn tolerance_ms() -> i64 {
    TOLERANCE_MS + STEP_MS.get()
}
/// The channel of the markers that delimit one step's hand-off messages.
const MARKER: &str = "rdlock-differential:marker";
/// The client id of waiters whose inbox has a listener (the test's pattern subscription);
/// the others' hand-offs reach nobody, and are claims.
const HEARD: u64 = 0x1111_1111_1111_1111;
const UNHEARD: u64 = 0x2222_2222_2222_2222;
/// What the test listens to: the markers, shared-mode notices, and the heard inboxes.
const PATTERNS: [&str; 3] = [MARKER, "*#rdl:ch*", "*#rdl:i1111111111111111*"];
/// Lock and queue TTLs of the random sequences: nothing expires within one.
const TTLS: [&str; 2] = ["60000", "90000"];
const GARBAGE: &str = "garbage";
/// Counter values an outside writer may leave that the scripts must refuse before writing:
/// no number, a fraction, a sign, a leading zero, more than Lua holds exactly, an overflow.
const BAD_COUNTERS: [&str; 6] = [GARBAGE, "1.5", "-3", "007", "9007199254740991", "99999999999999999999"];
/// Claims of the random sequences: nothing lapses within one (`expiry_agrees` covers lapses);
/// the shorter one is below the lock TTLs, the longer above one of them (the claim is the
/// waiter's TTL when that is shorter).
const CLAIMS: [&str; 2] = ["50000", "70000"];
const CLAIM_MS: &str = "70000";

// ---------------------------------------------------------------- steps

#[derive(Clone, Debug)]
enum Step {
    /// A script call; for acquire and release `keys[1]` is the lock's fence counter.
    Run { script: Script, keys: Vec<String>, args: Vec<String> },
    /// `DEL key`.
    Del(String),
    /// `DEL key` then `RPUSH key x`: a list without expiry where a lock's string belongs.
    List(String),
    /// `DEL key`, `RPUSH key x`, `PEXPIRE key 60000`: a list where a counter belongs.
    ExpiringList(String),
    /// `SET key value PX 60000`: a counter that is no number INCR can raise exactly, a
    /// queue that is no list.
    Garbage(String, String),
    /// Real time passes (and the fake's clock with it).
    Sleep(u64),
    /// `SET key token IFEQ token PX ttl`: a renewal on a server that offers `IFEQ`, in place
    /// of a one-lock `extend.lua` call.
    SetIfEq { key: String, token: String, ttl: u64 },
}

#[allow(clippy::too_many_arguments)]
/// The inbox of the client `token` waits from: tokens starting with `0`-`7` wait from a
/// client whose inbox has a listener.
fn inbox(lock: &LockKeys, token: &str) -> String {
    let heard = token.starts_with(|c: char| ('0'..='7').contains(&c));
    LockKeys::inbox_suffix(&lock.lock, if heard { HEARD } else { UNHEARD })
}

/// What `PUBLISH` answers on either server: the test's own pattern subscription.
fn listeners(channel: &str) -> usize {
    usize::from(channel.contains("#rdl:ch") || channel.contains("#rdl:i1111111111111111"))
}

fn acquire_with(
    lock: &LockKeys,
    token: &str,
    ttl: &str,
    mode: &str,
    queue_ttl: &str,
    fence_ttl: &str,
    claim: &str,
) -> Step {
    Step::Run {
        script: Script::Acquire,
        keys: vec![lock.lock.clone(), lock.fence.clone(), lock.queue.clone()],
        args: [token, ttl, mode, queue_ttl, fence_ttl, claim, &inbox(lock, token)].map(String::from).to_vec(),
    }
}

/// An acquire whose hand-offs claim the lock for `CLAIM_MS`.
fn acquire(lock: &LockKeys, token: &str, ttl: &str, mode: &str, queue_ttl: &str, fence_ttl: &str) -> Step {
    acquire_with(lock, token, ttl, mode, queue_ttl, fence_ttl, CLAIM_MS)
}

fn release_with(lock: &LockKeys, token: &str, ttl: &str, fence_ttl: &str, claim: &str) -> Step {
    Step::Run {
        script: Script::Release,
        keys: vec![lock.lock.clone(), lock.fence.clone(), lock.queue.clone()],
        args: vec![
            token.to_owned(),
            format!("{token}:{ttl}:{}", inbox(lock, token)),
            fence_ttl.to_owned(),
            claim.to_owned(),
        ],
    }
}

/// A release that folds its owner check into the hand-off's `SET ... IFEQ` (`ARGV[5]`, the
/// caller's queue ttl), as the engine sends a holder's release where `SET` takes `IFEQ`.
fn folded(step: Step, queue_ttl: &str) -> Step {
    match step {
        Step::Run { script, keys, mut args } => {
            args.push(queue_ttl.to_owned());
            Step::Run { script, keys, args }
        }
        other => other,
    }
}

/// Releases of many locks in one call, as the engine batches them (`ttl` the entry's), folded
/// when `fold` names the queue ttl.
fn release_batch(items: &[(&LockKeys, &str, &str)], fence_ttl: &str, claim: &str, fold: Option<&str>) -> Step {
    let ms = |s: &str| Duration::from_millis(s.parse().unwrap_or(0));
    let mut batch = rdlock_core::ReleaseBatchArgs::new(items.len(), ms(fence_ttl), ms(claim));
    batch.fold(fold.map(ms));
    for (lock, token, ttl) in items {
        batch.push(lock, token, &format!("{token}:{ttl}:{}", inbox(lock, token)));
    }
    let rdlock_core::Command::Script { script, keys, args } = batch.command() else { unreachable!("a script") };
    Step::Run { script, keys: keys.to_vec(), args: args.to_vec() }
}

/// Confirmations of heard hand-offs (or re-checks) in one call, as the engine batches them:
/// per lock the entry its attempts queue with the same ttl.
fn confirm(items: &[(&LockKeys, &str, &str)]) -> Step {
    let mut keys = Vec::new();
    let tokens = items.iter().map(|(_, t, _)| t.to_string());
    let ttls = items.iter().map(|(_, _, ttl)| ttl.to_string());
    let entries = items.iter().map(|(lock, t, ttl)| format!("{t}:{ttl}:{}", inbox(lock, t)));
    for (lock, _, _) in items {
        keys.extend([lock.lock.clone(), lock.fence.clone(), lock.queue.clone()]);
    }
    Step::Run { script: Script::Confirm, keys, args: tokens.chain(ttls).chain(entries).collect() }
}

fn release(lock: &LockKeys, token: &str, ttl: &str, fence_ttl: &str) -> Step {
    release_with(lock, token, ttl, fence_ttl, CLAIM_MS)
}

fn release_shared(lock: &LockKeys, token: &str) -> Step {
    Step::Run {
        script: Script::ReleaseShared,
        keys: vec![lock.lock.clone(), lock.queue.clone()],
        args: vec![token.to_owned(), lock.channel.clone()],
    }
}

fn extend(items: &[(&LockKeys, &str, &str)]) -> Step {
    let keys = items.iter().map(|(l, _, _)| l.lock.clone()).collect();
    let tokens = items.iter().map(|(_, t, _)| t.to_string());
    let ttls = items.iter().map(|(_, _, ttl)| ttl.to_string());
    Step::Run { script: Script::Extend, keys, args: tokens.chain(ttls).collect() }
}

/// A permit attempt: a share of `weight` of a resource with `capacity`.
#[allow(clippy::too_many_arguments)]
fn permit(lock: &LockKeys, token: &str, ttl: &str, mode: &str, claim: &str, capacity: u32, weight: u32) -> Step {
    let mode = match mode {
        "try" => Mode::Try,
        "first" => Mode::First,
        _ => Mode::Retry,
    };
    let ms = |s: &str| Duration::from_millis(s.parse().unwrap_or(0));
    let inbox = inbox(lock, token);
    let attempt = rdlock_core::AcquireArgs {
        token,
        ttl_ms: ttl.parse().unwrap_or(0),
        mode,
        queue_ttl: ms("60000"),
        fence_ttl: FENCE_TTL,
        claim: ms(claim),
        inbox: &inbox,
    };
    let args = PermitArgs { attempt, capacity, weight };
    let rdlock_core::Command::Script { script, keys, args } = args.command(&PermitKeys::derive(&lock.lock)) else {
        unreachable!("a script")
    };
    Step::Run { script, keys: keys.to_vec(), args: args.to_vec() }
}

fn permit_release(lock: &LockKeys, token: &str, ttl: &str, claim: &str, capacity: u32, weight: u32) -> Step {
    let entry = PermitArgs::entry(token, ttl.parse().unwrap_or(0), &inbox(lock, token), weight);
    let claim = Duration::from_millis(claim.parse().unwrap_or(0));
    let args = PermitReleaseArgs { token, entry: &entry, fence_ttl: FENCE_TTL, claim, capacity };
    let rdlock_core::Command::Script { script, keys, args } = args.command(&PermitKeys::derive(&lock.lock)) else {
        unreachable!("a script")
    };
    Step::Run { script, keys: keys.to_vec(), args: args.to_vec() }
}

fn permit_extend(items: &[(&LockKeys, &str, &str)]) -> Step {
    let mut batch = PermitExtendArgs::with_capacity(items.len());
    for (lock, token, ttl) in items {
        batch.push_text(&lock.lock, token, ttl.parse().unwrap_or(0));
    }
    let rdlock_core::Command::Script { script, keys, args } = batch.command() else { unreachable!("a script") };
    Step::Run { script, keys: keys.to_vec(), args: args.to_vec() }
}

fn pick<'a>(d: &mut Dice, from: &[&'a str]) -> &'a str {
    from[d.below(from.len())]
}

/// A lock or extension TTL: long, rarely the invalid 0 (which `SET` refuses and `PEXPIRE`
/// takes as "delete").
fn ttl(d: &mut Dice) -> &'static str {
    if d.chance(0.03) { "0" } else { pick(d, &TTLS) }
}

/// One random step of a sequence over `locks` and `tokens`.
fn random_step(d: &mut Dice, locks: &[LockKeys], tokens: &[String]) -> Step {
    let fence_ttl = FENCE_TTL.as_millis().to_string();
    let lock = &locks[d.below(locks.len())];
    let token = tokens[d.below(tokens.len())].as_str();
    match d.below(100) {
        0..45 => {
            let (ttl, mode, queue_ttl) = (ttl(d), pick(d, &["try", "first", "retry"]), pick(d, &TTLS));
            acquire_with(lock, token, ttl, mode, queue_ttl, &fence_ttl, pick(d, &CLAIMS))
        }
        // Half the releases folded (on a server without `IFEQ` they take the checked path).
        45..55 => {
            let step = release_with(lock, token, pick(d, &TTLS), &fence_ttl, pick(d, &CLAIMS));
            if d.chance(0.5) { folded(step, pick(d, &TTLS)) } else { step }
        }
        // A lock at most once per batch: one lock's two grants in one call would seed its
        // counter and raise it past the seed, which the seed check cannot tell from a clock
        // gone wrong.
        55..59 => {
            let mut items = Vec::new();
            for l in locks {
                if d.chance(0.7) {
                    items.push((l, tokens[d.below(tokens.len())].as_str(), pick(d, &TTLS)));
                }
            }
            let items = if items.is_empty() { vec![(lock, token, pick(d, &TTLS))] } else { items };
            let fold = d.chance(0.5).then(|| pick(d, &TTLS));
            release_batch(&items, &fence_ttl, pick(d, &CLAIMS), fold)
        }
        59..62 => {
            let items: Vec<_> = (0..1 + d.below(3))
                .map(|_| (&locks[d.below(locks.len())], tokens[d.below(tokens.len())].as_str(), ttl(d)))
                .collect();
            confirm(&items)
        }
        62..70 => release_shared(lock, token),
        70..85 => {
            let items: Vec<_> = (0..1 + d.below(3))
                .map(|_| (&locks[d.below(locks.len())], tokens[d.below(tokens.len())].as_str(), ttl(d)))
                .collect();
            extend(&items)
        }
        85..92 => Step::Del(lock.lock.clone()),
        92..93 => Step::List(lock.lock.clone()),
        93..95 => Step::Del(lock.fence.clone()),
        95..97 => Step::Del(lock.queue.clone()),
        97..99 => Step::Garbage(lock.fence.clone(), pick(d, &BAD_COUNTERS).to_owned()),
        99 if d.chance(0.5) => Step::ExpiringList(lock.fence.clone()),
        _ => Step::Garbage(lock.queue.clone(), GARBAGE.to_owned()),
    }
}

// ---------------------------------------------------------------- replies, normalised

/// A reply or a stored value in a form both servers must agree on.
#[derive(Clone, Debug, PartialEq)]
enum N {
    Nil,
    Int(i64),
    Data(String),
    Array(Vec<N>),
    /// A remaining time in ms: equal within the tolerance.
    Pttl(i64),
    /// A fence relative to its counter's seed, or as is when the counter holds none.
    Fence {
        seeded: bool,
        v: i64,
    },
    /// An error: the real message goes on with where in the script it happened.
    Error {
        code: String,
        message: String,
    },
}

fn agree(fake: &N, real: &N) -> bool {
    match (fake, real) {
        (N::Pttl(a), N::Pttl(b)) => (a - b).abs() <= tolerance_ms(),
        (N::Array(a), N::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| agree(a, b)),
        (N::Error { code: c1, message: m1 }, N::Error { code: c2, message: m2 }) => c1 == c2 && m2.starts_with(m1),
        _ => fake == real,
    }
}

fn norm(r: &Reply) -> N {
    match r {
        Reply::Nil => N::Nil,
        Reply::Int(i) => N::Int(*i),
        Reply::Data(d) => N::Data(String::from_utf8_lossy(d).into_owned()),
        Reply::Array(a) => N::Array(a.iter().map(norm).collect()),
        Reply::Error(e) => N::Error { code: e.code.clone(), message: e.message.clone() },
    }
}

fn fence(v: i64, seed: Option<i64>) -> N {
    match seed {
        Some(s) => N::Fence { seeded: true, v: v - s },
        None => N::Fence { seeded: false, v },
    }
}

/// A script's reply, its fences taken relative to `seed` (that of the lock's counter).
fn norm_reply(script: Script, r: &Reply, seed: Option<i64>) -> N {
    let ints: Option<Vec<i64>> = r.as_array().and_then(|a| a.iter().map(|x| x.as_int()).collect());
    match (script, ints.as_deref()) {
        // {1, fence} / {1}: held; {0, pttl} / {0, -3}; a retry's {0, pttl, fence}.
        (Script::Acquire | Script::PermitAcquire, Some([flag, rest @ ..])) => {
            let mut out = vec![N::Int(*flag)];
            for (i, &v) in rest.iter().enumerate() {
                out.push(match (flag, i) {
                    (0, 0) if v >= 0 => N::Pttl(v),
                    (0, 0) => N::Int(v),
                    _ => fence(v, seed),
                });
            }
            N::Array(out)
        }
        // A heard hand-off's {2, channel, "token:fence"}: the message as a message's.
        (s, _) if s.base() == Script::Release => match ReleaseReply::announcement(Some(r)) {
            Some((channel, message)) => {
                let (channel, message) = norm_message(channel, &String::from_utf8_lossy(message), seed);
                N::Array(vec![N::Int(2), N::Data(channel), message])
            }
            None => norm(r),
        },
        _ => norm(r),
    }
}

/// A hand-off message, `token:fence`, its fence relative to `seed`.
fn norm_message(channel: &str, payload: &str, seed: Option<i64>) -> (String, N) {
    let n = match payload.rsplit_once(':').map(|(t, f)| (t, f.parse::<i64>())) {
        Some((token, Ok(f))) => N::Array(vec![N::Data(token.to_owned()), fence(f, seed)]),
        _ => N::Data(payload.to_owned()),
    };
    (channel.to_owned(), n)
}

// ---------------------------------------------------------------- keyspaces

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    List(Vec<String>),
    /// A sorted set: members with their scores as ms from the server's now (the permit
    /// scripts' deadlines).
    Zset(Vec<(String, i64)>),
    Hash(Vec<(String, String)>),
}

/// Every live key: its value and remaining time in ms (`None`: no expiry).
type Snap = BTreeMap<String, (Val, Option<i64>)>;

fn int_at(snap: &Snap, key: &str) -> Option<i64> {
    match snap.get(key) {
        Some((Val::Str(s), _)) => s.parse().ok(),
        _ => None,
    }
}

fn fake_snapshot(f: &Fake, now: u64) -> Snap {
    let ttl = |k: &str| f.expiry(k, now).map(|at| ((at - now) / MS) as i64);
    let mut snap: Snap = f.strings(now).into_iter().map(|(k, v)| (k.clone(), (Val::Str(v), ttl(&k)))).collect();
    let now_ms = ((EPOCH_US + now / 1000) / 1000) as i64;
    for (k, m, score) in f.zset_entries(now) {
        let t = ttl(&k);
        if let (Val::Zset(z), _) = snap.entry(k).or_insert_with(|| (Val::Zset(Vec::new()), t)) {
            z.push((m, score - now_ms));
        }
    }
    for (k, field, v) in f.hash_entries(now) {
        let t = ttl(&k);
        if let (Val::Hash(h), _) = snap.entry(k).or_insert_with(|| (Val::Hash(Vec::new()), t)) {
            h.push((field, v));
        }
    }
    for (k, v) in f.list_entries(now) {
        let t = ttl(&k);
        match snap.entry(k).or_insert_with(|| (Val::List(Vec::new()), t)) {
            (Val::List(l), _) => l.push(v),
            _ => unreachable!("a key has one type"),
        }
    }
    snap
}

/// The keyspace normalised for comparison: counters' values relative to their seeds.
fn norm_snapshot(snap: &Snap, fences: &Fences) -> BTreeMap<String, (N, Option<N>)> {
    let seeds = &fences.seeds;
    snap.iter()
        .map(|(k, (v, ttl))| {
            let v = match v {
                Val::Str(s) => match (seeds.get(k), s.parse::<i64>()) {
                    (Some(&seed), Ok(i)) => fence(i, Some(seed)),
                    _ => N::Data(s.clone()),
                },
                Val::List(l) => N::Array(l.iter().map(|e| N::Data(e.clone())).collect()),
                Val::Zset(z) => {
                    let mut z = z.clone();
                    z.sort();
                    N::Array(z.iter().map(|(m, at)| N::Array(vec![N::Data(m.clone()), N::Pttl(*at)])).collect())
                }
                // A share is "weight:fence": the fence relative to its counter's seed.
                Val::Hash(h) => {
                    let seed = k
                        .split_once("#rdl")
                        .and_then(|(key, _)| LockKeys::new(key).ok())
                        .and_then(|l| fences.last_seed.get(&l.fence).copied());
                    N::Array(
                        h.iter()
                            .map(|(f, v)| {
                                let v = match v.split_once(':').map(|(w, fe)| (w.parse::<i64>(), fe.parse::<i64>())) {
                                    Some((Ok(w), Ok(fe))) => N::Array(vec![N::Int(w), fence(fe, seed)]),
                                    _ => N::Data(v.clone()),
                                };
                                N::Array(vec![N::Data(f.clone()), v])
                            })
                            .collect(),
                    )
                }
            };
            (k.clone(), (v, ttl.map(N::Pttl)))
        })
        .collect()
}

fn snapshots_agree(fake: &BTreeMap<String, (N, Option<N>)>, real: &BTreeMap<String, (N, Option<N>)>) -> bool {
    fake.len() == real.len()
        && fake.iter().zip(real).all(|((k1, (v1, t1)), (k2, (v2, t2)))| {
            k1 == k2
                && agree(v1, v2)
                && match (t1, t2) {
                    (Some(a), Some(b)) => agree(a, b),
                    (None, None) => true,
                    _ => false,
                }
        })
}

// ---------------------------------------------------------------- the real server

struct Real<'a> {
    conn: Connection,
    /// Subscribed to every channel.
    sub: Sub<'a>,
    markers: u64,
}

/// How the test listens: by pattern on a standalone server; on a cluster, sharded, to every
/// channel the sequences can use (sharded pub/sub has no patterns), running each script's
/// cluster variant.
enum Sub<'a> {
    Patterns(PubSub<'a>),
    Sharded(Connection),
}

impl Real<'_> {
    fn call(&mut self, cmd: &redis::Cmd) -> Reply {
        match cmd.query::<Value>(&mut self.conn) {
            Ok(v) => reply(v),
            Err(e) => match e.code() {
                Some(code) if e.kind() != ErrorKind::Io => {
                    Reply::Error(ServerError::new(code, e.detail().unwrap_or_default()))
                }
                _ => panic!("the real server failed: {e}"),
            },
        }
    }

    fn run(&mut self, script: Script, keys: &[String], args: &[String]) -> Reply {
        let script = if matches!(self.sub, Sub::Sharded(_)) { script.sharded() } else { script };
        self.call(redis::cmd("EVAL").arg(script.source()).arg(keys.len()).arg(keys).arg(args))
    }

    /// `TIME` in microseconds.
    fn time_us(&mut self) -> i64 {
        let t = self.call(&redis::cmd("TIME"));
        let parts: Vec<i64> = t.as_array().and_then(|a| a.iter().map(Reply::as_int).collect()).expect("TIME");
        parts[0] * 1_000_000 + parts[1]
    }

    /// The messages published since the previous call: everything before a fresh marker.
    fn published(&mut self) -> Vec<(String, String)> {
        self.markers += 1;
        let marker = self.markers.to_string();
        let publish = if matches!(self.sub, Sub::Sharded(_)) { "SPUBLISH" } else { "PUBLISH" };
        self.call(redis::cmd(publish).arg(MARKER).arg(&marker));
        let mut out = Vec::new();
        loop {
            let (channel, payload) = match &mut self.sub {
                Sub::Patterns(sub) => {
                    let msg = sub.get_message().expect("the marker arrives");
                    (msg.get_channel_name().to_owned(), msg.get_payload().expect("a text payload"))
                }
                Sub::Sharded(conn) => sharded_message(conn),
            };
            match channel.as_str() {
                MARKER if payload == marker => return out,
                MARKER => {}
                _ => out.push((channel, payload)),
            }
        }
    }

    /// The keyspace, given every key that may exist; the database must hold no other.
    fn snapshot(&mut self, keys: &[String]) -> Snap {
        let mut p = redis::pipe();
        for k in keys {
            p.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        p.cmd("DBSIZE");
        let meta: Vec<Reply> =
            p.query::<Vec<Value>>(&mut self.conn).expect("TYPE/PTTL").into_iter().map(reply).collect();
        let mut found = Vec::new();
        let mut p = redis::pipe();
        for (k, tp) in keys.iter().zip(meta.chunks(2)) {
            let ttl = tp[1].as_int().expect("PTTL");
            match &tp[0] {
                Reply::Data(t) if t == b"string" => p.cmd("GET").arg(k),
                Reply::Data(t) if t == b"list" => p.cmd("LRANGE").arg(k).arg(0).arg(-1),
                Reply::Data(t) if t == b"zset" => p.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                Reply::Data(t) if t == b"hash" => p.cmd("HGETALL").arg(k),
                Reply::Data(t) if t == b"none" => continue,
                other => panic!("{k} has type {other:?}"),
            };
            found.push((k.clone(), (ttl >= 0).then_some(ttl)));
        }
        assert_eq!(meta.last().and_then(Reply::as_int), Some(found.len() as i64), "keys besides {keys:?}");
        let types: Vec<Reply> = meta.chunks(2).map(|c| c[0].clone()).collect();
        let kinds: BTreeMap<&String, &Reply> = keys.iter().zip(&types).collect();
        let values: Vec<Value> = if found.is_empty() { vec![] } else { p.query(&mut self.conn).expect("GET/LRANGE") };
        let now_ms = self.time_us() / 1000;
        found
            .into_iter()
            .zip(values)
            .map(|((k, ttl), v)| {
                let texts = |a: &[Reply]| a.iter().map(|e| format!("{}", Text(e))).collect::<Vec<_>>();
                let v = match (reply(v), kinds[&k]) {
                    (Reply::Data(d), _) => Val::Str(String::from_utf8_lossy(&d).into_owned()),
                    (Reply::Array(a), Reply::Data(t)) if t == b"zset" => Val::Zset(
                        texts(&a)
                            .chunks(2)
                            .map(|c| (c[0].clone(), c[1].parse::<i64>().unwrap_or(0) - now_ms))
                            .collect(),
                    ),
                    (Reply::Array(a), Reply::Data(t)) if t == b"hash" => {
                        let mut h: Vec<(String, String)> =
                            texts(&a).chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                        h.sort();
                        Val::Hash(h)
                    }
                    (Reply::Array(a), _) => Val::List(texts(&a)),
                    (other, _) => panic!("{k} holds {other:?}"),
                };
                (k, (v, ttl))
            })
            .collect()
    }
}

struct Text<'a>(&'a Reply);

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Reply::Data(d) => f.write_str(&String::from_utf8_lossy(d)),
            other => write!(f, "{other:?}"),
        }
    }
}

// ---------------------------------------------------------------- both, step by step

/// The test's clock: the fake's virtual time is the real time since the test began, so
/// remaining times and expiry line up on both servers.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // the test's one clock reading
        Self(Instant::now())
    }

    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// What one server has shown of its fence counters.
#[derive(Debug, Default)]
struct Fences {
    /// Each counter's current seed (when it holds a number).
    seeds: BTreeMap<String, i64>,
    /// The highest value each counter has held.
    high: BTreeMap<String, i64>,
    /// Each counter's latest seed, kept when the counter is overwritten: fences issued under
    /// it may still sit in a share table.
    last_seed: BTreeMap<String, i64>,
}

impl Fences {
    /// Takes note of the counters after a step; a counter that now holds a number but did
    /// not before was seeded in the step, from a clock reading within `clock` (µs). An empty
    /// `clock` range: the step was an outside write, which forgets what it changed.
    fn update(&mut self, counters: &[String], before: &Snap, after: &Snap, clock: (i64, i64)) -> Result<(), String> {
        for c in counters {
            if clock.0 > clock.1 {
                // An outside write: whatever the counter holds now is no seed of a script's.
                if before.get(c).map(|e| &e.0) != after.get(c).map(|e| &e.0) {
                    self.seeds.remove(c);
                    self.high.remove(c);
                }
                continue;
            }
            let Some(v) = int_at(after, c) else {
                self.seeds.remove(c);
                continue;
            };
            if int_at(before, c).is_none() {
                if !(clock.0..=clock.1).contains(&v) {
                    return Err(format!("{c} seeded with {v}, not the server's clock {clock:?}"));
                }
                if let Some(&high) = self.high.get(c).filter(|&&h| v <= h) {
                    return Err(format!("{c} seeded with {v}, not above its earlier {high}"));
                }
                self.seeds.insert(c.clone(), v);
                self.last_seed.insert(c.clone(), v);
            }
            let high = self.high.entry(c.clone()).or_insert(v);
            *high = (*high).max(v);
        }
        Ok(())
    }
}

/// The fake and the real server, fed the same steps.
struct Pair<'r, 'a> {
    fake: Fake,
    real: &'r mut Real<'a>,
    clock: &'r Clock,
    /// Every key the locks may use, and their fence counters.
    keys: Vec<String>,
    counters: Vec<String>,
    fences: [Fences; 2],
    before: [Snap; 2],
    /// Outcomes seen, for the report.
    seen: &'r mut BTreeMap<String, usize>,
}

impl<'r, 'a> Pair<'r, 'a> {
    fn new(
        real: &'r mut Real<'a>,
        clock: &'r Clock,
        locks: &[LockKeys],
        seen: &'r mut BTreeMap<String, usize>,
    ) -> Self {
        real.call(&redis::cmd("FLUSHALL"));
        real.published();
        STEP_MS.set(0);
        let keys = locks
            .iter()
            .flat_map(|l| {
                let p = PermitKeys::derive(&l.lock);
                [l.lock.clone(), l.fence.clone(), l.queue.clone(), p.shares, p.capacity]
            })
            .collect();
        Self {
            fake: Fake::new(Bug::None, EPOCH_US),
            real,
            clock,
            keys,
            counters: locks.iter().map(|l| l.fence.clone()).collect(),
            fences: Default::default(),
            before: Default::default(),
            seen,
        }
    }

    /// Runs `step` on both servers; the fake's normalised reply when both agree on it, on
    /// the messages it published and on the keyspace it left.
    fn step(&mut self, step: &Step) -> Result<N, String> {
        let mut started = self.clock.now();
        let unseeded = self.counters.iter().any(|c| int_at(&self.before[1], c).is_none());
        let t0 = if unseeded { self.real.time_us() } else { 0 };
        let now = self.clock.now();
        let fake_time = (EPOCH_US + now / 1000) as i64;
        let (fake, real, fake_msgs) = match step {
            Step::Run { script, keys, args } => {
                let (r, fx) = self.fake.run_script(*script, keys, args, now, &mut Dice::new(0), &listeners);
                // The real server's messages are those somebody listened to.
                let mut heard = fx.publishes;
                let unheard = heard.len();
                heard.retain(|(c, _)| listeners(c) > 0);
                if heard.len() < unheard {
                    *self.seen.entry("hand-off unheard (a claim)".into()).or_default() += 1;
                }
                if heard.iter().any(|(c, _)| c.contains("#rdl:i")) {
                    *self.seen.entry("hand-off heard (the whole ttl)".into()).or_default() += 1;
                }
                (Some(r), Some(self.real.run(*script, keys, args)), heard)
            }
            Step::Del(k) => {
                self.fake.del_key(k);
                self.real.call(redis::cmd("DEL").arg(k));
                (None, None, vec![])
            }
            Step::List(k) => {
                self.fake.put_list(k);
                self.real.call(redis::cmd("DEL").arg(k));
                self.real.call(redis::cmd("RPUSH").arg(k).arg("x"));
                (None, None, vec![])
            }
            Step::ExpiringList(k) => {
                self.fake.put_list(k);
                self.fake.set_expiry(k, now + 60_000 * MS);
                self.real.call(redis::cmd("DEL").arg(k));
                self.real.call(redis::cmd("RPUSH").arg(k).arg("x"));
                self.real.call(redis::cmd("PEXPIRE").arg(k).arg(60_000));
                (None, None, vec![])
            }
            Step::Garbage(k, v) => {
                self.fake.put_string(k, v, Some(now + 60_000 * MS));
                self.real.call(redis::cmd("SET").arg(k).arg(v).arg("PX").arg(60_000));
                (None, None, vec![])
            }
            Step::Sleep(ms) => {
                #[allow(clippy::disallowed_methods)] // real time has to pass on the real server
                std::thread::sleep(Duration::from_millis(*ms));
                // Both sides see the sleep (the fake's clock moves with it): time it no more.
                started = self.clock.now();
                (None, None, vec![])
            }
            Step::SetIfEq { key, token, ttl } => {
                let f = self.fake.run_set_ifeq(key, token, *ttl, now, &mut Dice::new(0));
                let r =
                    self.real.call(redis::cmd("SET").arg(key).arg(token).arg("IFEQ").arg(token).arg("PX").arg(*ttl));
                let (nf, nr) = (norm(&f), norm(&r));
                if !agree(&nf, &nr) {
                    return Err(format!("SET IFEQ replies differ\n  fake {f:?}\n  real {r:?}"));
                }
                let shape = match nr {
                    N::Error { code, .. } => code,
                    other => format!("{other:?}"),
                };
                *self.seen.entry(format!("set-ifeq {shape}")).or_default() += 1;
                (None, None, vec![])
            }
        };
        let real_msgs = self.real.published();
        let t1 = if unseeded { self.real.time_us() } else { 0 };
        let after = [fake_snapshot(&self.fake, self.clock.now()), self.real.snapshot(&self.keys)];
        STEP_MS.set(STEP_MS.get().max(((self.clock.now() - started) / MS) as i64));
        // An empty clock range marks a step that is no script (the counters are tampered with).
        let (fake_clock, real_clock) = match step {
            Step::Run { .. } | Step::Sleep(_) | Step::SetIfEq { .. } => ((fake_time, fake_time), (t0, t1)),
            _ => ((1, 0), (1, 0)),
        };
        self.fences[0].update(&self.counters, &self.before[0], &after[0], fake_clock)?;
        self.fences[1].update(&self.counters, &self.before[1], &after[1], real_clock)?;
        for (k, (v, ttl)) in &after[1] {
            if ttl.is_none() && (*v != Val::List(vec!["x".into()]) || self.counters.contains(k)) {
                return Err(format!("{k} = {v:?} never expires"));
            }
        }

        let mut out = N::Nil;
        if let (Step::Run { script, keys, args }, Some(fake), Some(real)) = (step, &fake, &real) {
            let counter = keys.get(1).filter(|_| {
                matches!(
                    script,
                    Script::Acquire
                        | Script::Release
                        | Script::PermitAcquire
                        | Script::PermitRelease
                        | Script::PermitChange
                )
            });
            let seed = |side: usize| counter.and_then(|c| self.fences[side].seeds.get(c).copied());
            let seed_of = |side: usize, c: &String| self.fences[side].seeds.get(c).copied();
            let (f, r) = match script {
                // Per lock its fence (relative to its own counter's seed), minus it, or 0.
                Script::Confirm => {
                    let confirmed = |side: usize, reply: &Reply| match reply.as_array() {
                        Some(items) => N::Array(
                            items
                                .iter()
                                .zip(keys.iter().skip(1).step_by(3))
                                .map(|(x, c)| match x.as_int() {
                                    Some(v) if v > 0 => fence(v, seed_of(side, c)),
                                    // Another holder's, our entry queued: minus the counter.
                                    Some(v) if v < 0 => {
                                        N::Array(vec![N::Data("other".into()), fence(-v, seed_of(side, c))])
                                    }
                                    _ => norm(x),
                                })
                                .collect(),
                        ),
                        None => norm(reply),
                    };
                    (confirmed(0, fake), confirmed(1, real))
                }
                _ => (norm_reply(*script, fake, seed(0)), norm_reply(*script, real, seed(1))),
            };
            if !agree(&f, &r) {
                return Err(format!("replies differ\n  fake {fake:?}\n  real {real:?}\n  fake {f:?}\n  real {r:?}"));
            }
            // A batch's message is relative to the counter of the lock its channel names.
            let batch_counter = |channel: &str| {
                keys.chunks(3).find(|k| channel.starts_with(&format!("{}#rdl:", k[0]))).and_then(|k| k.get(1))
            };
            let msgs = |side: usize, m: &[(String, String)]| -> Vec<(String, N)> {
                m.iter()
                    .map(|(c, p)| match script {
                        Script::ReleaseBatch => norm_message(c, p, batch_counter(c).and_then(|k| seed_of(side, k))),
                        _ => norm_message(c, p, seed(side)),
                    })
                    .collect()
            };
            let (fm, rm) = (msgs(0, &fake_msgs), msgs(1, &real_msgs));
            if fm.len() != rm.len() || fm.iter().zip(&rm).any(|(a, b)| a.0 != b.0 || !agree(&a.1, &b.1)) {
                return Err(format!("messages differ\n  fake {fake_msgs:?}\n  real {real_msgs:?}"));
            }
            *self.seen.entry(label(*script, &f)).or_default() += 1;
            let fold = match script {
                Script::Release => args.len() == 5,
                Script::ReleaseBatch => args.len() % 2 == 1,
                _ => false,
            };
            if fold {
                *self.seen.entry(format!("folded {}", label(*script, &f))).or_default() += 1;
            }
            if *script == Script::Acquire && !fake_msgs.is_empty() {
                *self.seen.entry("acquire hands off".into()).or_default() += 1;
            }
            // A script that fails writes nothing: the real keyspace is as before, exactly.
            if let Reply::Error(e) = real {
                let (b, a) = (&self.before[1], &after[1]);
                // Scores are read relative to each reading's now: equal within the tolerance.
                let same_value = |v1: &Val, v2: &Val| match (v1, v2) {
                    (Val::Zset(x), Val::Zset(y)) => {
                        x.len() == y.len()
                            && x.iter().zip(y).all(|(p, q)| p.0 == q.0 && (p.1 - q.1).abs() <= tolerance_ms())
                    }
                    _ => v1 == v2,
                };
                // A key within the tolerance of its expiry may have expired meanwhile, on a
                // loaded machine: gone after, it was not written.
                let expired =
                    |k: &String, t: &Option<i64>| t.is_some_and(|ms| ms <= tolerance_ms()) && !a.contains_key(k);
                let b: Snap =
                    b.iter().filter(|(k, (_, t))| !expired(k, t)).map(|(k, v)| (k.clone(), v.clone())).collect();
                let same = b.len() == a.len()
                    && b.iter().zip(a).all(|((k1, (v1, t1)), (k2, (v2, t2)))| {
                        k1 == k2 && same_value(v1, v2) && t1.is_some() == t2.is_some()
                    });
                if !same || !real_msgs.is_empty() {
                    return Err(format!("{e} after writing\n  before {b:?}\n  after  {a:?}\n  messages {real_msgs:?}"));
                }
                *self.seen.entry(format!("{} failed, wrote nothing", script.name())).or_default() += 1;
            }
            out = f;
        } else if !real_msgs.is_empty() {
            return Err(format!("messages without a script: {real_msgs:?}"));
        }
        let (f, r) = (norm_snapshot(&after[0], &self.fences[0]), norm_snapshot(&after[1], &self.fences[1]));
        if !snapshots_agree(&f, &r) {
            return Err(format!("keyspaces differ\n  fake {f:?}\n  real {r:?}"));
        }
        self.before = after;
        Ok(out)
    }
}

/// The shape of an outcome, for the report: what the sequences covered.
fn label(script: Script, n: &N) -> String {
    let shape = match n {
        // A heard hand-off, its channel and message by kind.
        N::Array(a) if matches!(a.as_slice(), [N::Int(2), N::Data(_), N::Array(_)]) => "[2,channel,message]".into(),
        N::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|x| match x {
                    N::Int(i) => i.to_string(),
                    N::Pttl(_) => "pttl".into(),
                    N::Fence { seeded: true, .. } => "fence".into(),
                    N::Fence { seeded: false, v } => v.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("[{}]", items.join(","))
        }
        N::Error { code, .. } => format!("error {code}"),
        N::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    };
    format!("{} {shape}", script.name())
}

fn start() -> (RedisServer, Connection, Connection) {
    let server = RedisServer::start().expect("redis-server starts");
    let conn = server.connection().expect("a connection");
    let sub = server.connection().expect("a connection");
    (server, conn, sub)
}

fn subscribe(sub: &mut Connection) -> PubSub<'_> {
    let mut sub = sub.as_pubsub();
    sub.psubscribe(&PATTERNS[..]).expect("PSUBSCRIBE");
    sub.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    sub
}

/// Every channel the sequences' keys can announce on that the test listens to (those
/// [`listeners`] counts), and the marker.
fn listened_channels() -> Vec<String> {
    let mut out = vec![MARKER.to_owned()];
    for name in POOLS.iter().flatten() {
        let lock = LockKeys::new(name).expect("a valid key");
        out.push(LockKeys::inbox_of(&lock.lock, &LockKeys::inbox_suffix(&lock.lock, HEARD)));
        out.push(lock.channel);
    }
    out
}

/// A connection to a one-node cluster, sharded-subscribed to every listened channel.
fn ssubscribe(node: &RedisServer) -> Connection {
    let mut conn = node.connection().expect("a connection");
    for channel in listened_channels() {
        redis::cmd("SSUBSCRIBE").arg(&channel).query::<Value>(&mut conn).expect("SSUBSCRIBE");
    }
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    conn
}

/// The next `smessage` on a sharded subscription: its channel and payload.
fn sharded_message(conn: &mut Connection) -> (String, String) {
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("a text payload"),
        other => panic!("not text: {other:?}"),
    };
    match conn.recv_response().expect("the marker arrives") {
        Value::Array(parts) if parts.len() == 3 && text(&parts[0]) == "smessage" => (text(&parts[1]), text(&parts[2])),
        other => panic!("not a sharded message: {other:?}"),
    }
}

fn token(d: &mut Dice) -> String {
    format!("{:016x}{:016x}", d.next_u64(), d.next_u64())
}

/// Plain and tagged keys, and look-alike pairs whose names layout 1 shared.
const POOLS: [[&str; 2]; 4] = [["orders", "{user:7}:cart"], ["k", "{k}"], ["a{b", "{a{b}"], ["a}b", "a{}b"]];

/// One random sequence; the error names the step and lists the steps before it.
fn sequence(seed: u64, real: &mut Real<'_>, clock: &Clock, seen: &mut BTreeMap<String, usize>) -> Result<(), String> {
    let mut d = Dice::new(seed);
    // Plain and tagged keys, and look-alike pairs whose names layout 1 shared.
    let names = POOLS[(seed % POOLS.len() as u64) as usize];
    // A cluster refuses a script over keys of two slots (the engine never batches them).
    let n = if matches!(real.sub, Sub::Sharded(_)) && slot(names[0]) != slot(names[1]) { 1 } else { 1 + d.below(2) };
    let locks: Vec<LockKeys> = names[..n].iter().map(|n| LockKeys::new(n).expect("a valid key")).collect();
    let tokens: Vec<String> = (0..3).map(|_| token(&mut d)).collect();
    let ifeq = offers_ifeq(real);
    let mut pair = Pair::new(real, clock, &locks, seen);
    pair.fake.ifeq = ifeq;
    let mut trace = Vec::new();
    for i in 0..STEPS {
        let mut step = random_step(&mut d, &locks, &tokens);
        // On a server with `IFEQ`, half the one-lock renewals go as the engine sends them
        // there (the engine never sends a ttl of 0: that one stays the script's error).
        if let (true, Step::Run { script: Script::Extend, keys, args }) = (ifeq, &step)
            && keys.len() == 1
            && let Ok(ttl @ 1..) = args[1].parse::<u64>()
            && d.chance(0.5)
        {
            step = Step::SetIfEq { key: keys[0].clone(), token: args[0].clone(), ttl };
        }
        trace.push(format!("{i:>3}: {step:?}"));
        if let Err(e) = pair.step(&step) {
            return Err(format!("step {i}: {e}\nsteps:\n{}", trace.join("\n")));
        }
    }
    Ok(())
}

/// Whether the server's `SET` takes `IFEQ` (Valkey 8.1+, Redis 8.4+): its command docs name it.
fn offers_ifeq(real: &mut Real<'_>) -> bool {
    let docs = real.call(redis::cmd("COMMAND").arg("DOCS").arg("SET"));
    fn names(r: &Reply) -> bool {
        match r {
            Reply::Data(d) => d.eq_ignore_ascii_case(b"IFEQ"),
            Reply::Array(a) => a.iter().any(names),
            _ => false,
        }
    }
    names(&docs)
}

#[test]
fn the_fake_agrees_with_a_real_server() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    agree_on_sequences(&mut real);
}

/// The cluster variants (`SPUBLISH`, counted on the one node, which is every slot's primary)
/// against the fake, which follows them as their base scripts.
#[test]
fn the_fake_agrees_with_a_real_cluster() {
    let cluster = Cluster::start(1, 0).expect("a one-node cluster starts");
    let node = &cluster.nodes()[0];
    let conn = node.connection().expect("a connection");
    let mut real = Real { conn, sub: Sub::Sharded(ssubscribe(node)), markers: 0 };
    agree_on_sequences(&mut real);
}

fn agree_on_sequences(real: &mut Real<'_>) {
    let clock = Clock::new();
    let seeds: Vec<u64> = match sim::env_u64("RDLOCK_DIFF_SEED") {
        Some(seed) => vec![seed],
        None => (0..SEQUENCES).collect(),
    };
    let mut seen = BTreeMap::new();
    for &seed in &seeds {
        if let Err(e) = sequence(seed, real, &clock, &mut seen) {
            panic!(
                "seed {seed}: {e}\nreplay: RDLOCK_DIFF_SEED={seed} cargo test -p rdlock-core --test suite -- differential:: --skip quorum_ --nocapture"
            );
        }
    }
    eprintln!("{} sequences of {STEPS} steps agree; outcomes:", seeds.len());
    for (outcome, n) in &seen {
        eprintln!("  {n:>5}  {outcome}");
    }
    if seeds.len() == 1 {
        // A replayed seed agreed: one sequence cannot meet every outcome.
        return;
    }
    for must in [
        "acquire [1,fence]",
        "acquire [0,pttl]",
        "acquire [0,-3]",
        "acquire [0,pttl,fence]",
        "acquire hands off",
        "release 2",
        "acquire error RDLOCK",
        "release error RDLOCK",
        "extend error RDLOCK",
        "acquire failed, wrote nothing",
        "release failed, wrote nothing",
        "release-shared 0",
        "release-shared 1",
        "release-shared 2",
        "hand-off unheard (a claim)",
        "hand-off heard (the whole ttl)",
    ] {
        assert!(seen.contains_key(must), "no {must:?} among {seen:?}");
    }
    // The batched scripts were compared too, with locks handed on and confirmed.
    for must in ["release-batch [", "confirm ["] {
        assert!(seen.keys().any(|k| k.starts_with(must)), "no {must:?} among {seen:?}");
    }
    // A confirmation (or re-check) that found another holder with its entry queued.
    assert!(seen.keys().any(|k| k.starts_with("confirm [") && k.contains("other")), "no other holder among {seen:?}");
    // Folded releases: every answer met (on a server without `IFEQ`, by the checked path).
    for must in ["folded release 0", "folded release 1", "folded release 2", "folded release error RDLOCK"] {
        assert!(seen.contains_key(must), "no {must:?} among {seen:?}");
    }
    assert!(seen.keys().any(|k| k.starts_with("folded release-batch [")), "no folded batch among {seen:?}");
    // Renewals by `SET ... IFEQ`, where the server has it: every outcome met.
    if offers_ifeq(real) {
        for must in ["set-ifeq Data(\"OK\")", "set-ifeq Nil", "set-ifeq WRONGTYPE"] {
            assert!(seen.contains_key(must), "no {must:?} among {seen:?}");
        }
    } else {
        eprintln!("renewals by SET ... IFEQ not compared: this server's SET has no IFEQ");
    }
}

/// Expiry on real time: short TTLs, then sleeps past them on the real server while the
/// fake's clock moves by the same amount; the next calls must agree (and do what expiry
/// means).
#[test]
fn expiry_agrees() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    let lock = LockKeys::new("expiring").expect("a valid key");
    let mut pair = Pair::new(&mut real, &clock, std::slice::from_ref(&lock), &mut seen);
    let [a, b, c] = ["a", "b", "c"].map(|t| t.repeat(32));
    // Locks for 50 ms, queues for 400 ms, the fence counter for 1 s.
    let (short, long, queue, counter) = ("50", "60000", "400", "1000");
    let fence = |v| N::Fence { seeded: true, v };
    let held = |v| N::Array(vec![N::Int(1), fence(v)]);
    let steps: Vec<(Step, Option<N>)> = vec![
        (acquire(&lock, &a, short, "first", queue, counter), Some(held(0))),
        (acquire(&lock, &b, long, "first", queue, counter), Some(N::Array(vec![N::Int(0), N::Pttl(50)]))),
        (Step::Sleep(100), None),
        // a's lock expired; b's queue entry did not: a retry takes the lock and leaves the queue.
        (acquire(&lock, &b, long, "retry", queue, counter), Some(held(1))),
        (release(&lock, &a, short, counter), Some(N::Int(0))),
        (extend(&[(&lock, &a, long)]), Some(N::Array(vec![N::Int(0)]))),
        (release(&lock, &b, long, counter), Some(N::Int(1))),
        (acquire(&lock, &c, short, "first", queue, counter), Some(held(2))),
        (acquire(&lock, &a, long, "first", queue, counter), Some(N::Array(vec![N::Int(0), N::Pttl(50)]))),
        (Step::Sleep(100), None),
        // c's lock expired: c's release finds nothing, a takes the lock with its entry still queued.
        (release(&lock, &c, short, counter), Some(N::Int(0))),
        (extend(&[(&lock, &c, long)]), Some(N::Array(vec![N::Int(0)]))),
        (acquire(&lock, &a, long, "first", queue, counter), Some(held(3))),
        (release(&lock, &a, long, counter), Some(N::Int(1))),
        // The counter expires too: the next grant seeds it again, from a later clock.
        (Step::Sleep(1100), None),
        (acquire(&lock, &b, short, "try", queue, counter), Some(held(0))),
    ];
    for (i, (step, want)) in steps.iter().enumerate() {
        let got = pair.step(step).unwrap_or_else(|e| panic!("step {i} {step:?}: {e}"));
        if let Some(want) = want {
            assert!(agree(want, &got), "step {i} {step:?}: {got:?}, expected {want:?}");
        }
    }
    assert!(pair.fake.keys_without_ttl(clock.now()).next().is_none());
}

/// Claims lapse on real time: a holder releases to two waiters that never confirm; the live
/// waiter's polls pass the lock on to the next one when a claim lapses, then take it; a ghost
/// that comes back re-queues at the tail.
#[test]
fn lapsed_claims_agree() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    let lock = LockKeys::new("claimed").expect("a valid key");
    let mut pair = Pair::new(&mut real, &clock, std::slice::from_ref(&lock), &mut seen);
    // Tokens from `8` on wait from a client nobody listens for: every hand-off is a claim.
    let [h, g1, g2, w] = ["h", "8", "9", "w"].map(|t| t.repeat(32));
    let (ttl, queue, counter, claim) = ("60000", "60000", "600000", "100");
    let get = |lock: &LockKeys, t: &str, mode: &str| acquire_with(lock, t, ttl, mode, queue, counter, claim);
    let fence = |v| N::Fence { seeded: true, v };
    let polled = |pttl, v| N::Array(vec![N::Int(0), N::Pttl(pttl), fence(v)]);
    let steps: Vec<(Step, Option<N>)> = vec![
        (get(&lock, &h, "first"), Some(N::Array(vec![N::Int(1), fence(0)]))),
        (get(&lock, &g1, "first"), None),
        (get(&lock, &g2, "first"), None),
        (get(&lock, &w, "first"), Some(N::Array(vec![N::Int(0), N::Int(-3)]))),
        (release_with(&lock, &h, ttl, counter, claim), Some(N::Int(2))),
        (get(&lock, &w, "retry"), Some(polled(100, 1))),
        (Step::Sleep(150), None),
        // g1's claim lapsed: w's poll hands g2 the next one rather than taking the lock.
        (get(&lock, &w, "retry"), Some(polled(100, 2))),
        (Step::Sleep(150), None),
        (get(&lock, &w, "retry"), Some(N::Array(vec![N::Int(1), fence(3)]))),
        (get(&lock, &g1, "retry"), Some(polled(60_000, 3))),
        (release_with(&lock, &w, ttl, counter, claim), Some(N::Int(2))),
        // g1 confirms in time: its lease starts over.
        (get(&lock, &g1, "retry"), Some(N::Array(vec![N::Int(1), fence(4)]))),
        (release_with(&lock, &g1, ttl, counter, claim), Some(N::Int(1))),
    ];
    for (i, (step, want)) in steps.iter().enumerate() {
        let got = pair.step(step).unwrap_or_else(|e| panic!("step {i} {step:?}: {e}"));
        if let Some(want) = want {
            assert!(agree(want, &got), "step {i} {step:?}: {got:?}, expected {want:?}");
        }
    }
}

/// An attempt's arguments are checked by one pattern over them joined by `:` (`attempt.lua`),
/// which must refuse exactly what the checks one by one refuse, with the same error, on both
/// attempt scripts: a field holding the separator (which would shift the fields), lengths at
/// the limits, leading zeros and signs, inboxes a digit short or glued wrongly, and two bad
/// arguments at once (the first is reported: token, mode, ttls, inbox). The fake checks them
/// one by one.
#[test]
fn an_attempts_arguments_are_checked_as_one_by_one() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    // Per script (a lock and a semaphore cannot share a key), a key without a hash tag (its
    // inboxes are glued) and one with (plain inboxes).
    let names = ["attempts", "{attempts}", "permits", "{permits}"];
    let locks = names.map(|n| LockKeys::new(n).expect("a valid key"));
    let mut pair = Pair::new(&mut real, &clock, &locks, &mut seen);
    let hex16 = "0123456789abcdef";
    let bad = |m: &str| Some(N::Error { code: "RDLOCK".into(), message: m.into() });
    let mut checked = 0;
    for (i, lock) in locks.iter().enumerate() {
        let script = if i < 2 { Script::Acquire } else { Script::PermitAcquire };
        let tok = "0".repeat(32);
        let good_inbox = inbox(lock, &tok);
        let base: Vec<String> =
            [tok.as_str(), "60000", "first", "60000", "600000", "100", &good_inbox].map(String::from).to_vec();
        let with = |changes: &[(usize, &str)]| {
            let mut a = base.clone();
            for &(i, v) in changes {
                a[i] = v.to_owned();
            }
            a
        };
        let mut cases: Vec<(Vec<String>, Option<N>)> = vec![
            (with(&[(0, "")]), bad("invalid token")),
            (with(&[(0, "a:b")]), bad("invalid token")),
            (with(&[(0, ":")]), bad("invalid token")),
            (with(&[(2, "")]), bad("invalid mode")),
            (with(&[(2, "try:")]), bad("invalid mode")),
            (with(&[(2, "TRY")]), bad("invalid mode")),
            (with(&[(6, "")]), bad("invalid inbox")),
            (with(&[(6, &format!("i{}", &hex16[1..]))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{hex16}0"))]), bad("invalid inbox")),
            (with(&[(6, &format!("j{hex16}"))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{}g", &hex16[1..]))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{hex16}#ab"))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{hex16}#a-c"))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{hex16}:abc"))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{hex16}#abcd"))]), bad("invalid inbox")),
            (with(&[(6, &format!("i{}:{}", &hex16[..8], &hex16[9..]))]), bad("invalid inbox")),
            // Two bad at once: the first in the order of the checks.
            (with(&[(0, "a:b"), (2, "x")]), bad("invalid token")),
            (with(&[(2, "x"), (1, "0")]), bad("invalid mode")),
            (with(&[(5, "0"), (6, "i")]), bad("invalid ttl")),
            // The separator in one field, the fields after it shifted into place.
            (with(&[(1, "1:2"), (3, "3"), (4, "4"), (5, "5")]), bad("invalid ttl")),
            (with(&[(0, "t:1"), (1, "2")]), bad("invalid token")),
            (with(&[(5, &format!("100:i{hex16}"))]), bad("invalid ttl")),
            // Valid: a token with spaces, numbers of 15 digits (where this sequence never
            // uses them: the fake's clock would overflow), both inbox forms.
            (with(&[(0, "a b")]), None),
            (with(&[(4, "999999999999999"), (5, "999999999999999")]), None),
            (with(&[(6, &format!("i{hex16}"))]), None),
            (with(&[(6, &format!("i{hex16}#a0Z"))]), None),
        ];
        for i in [1, 3, 4, 5] {
            for v in ["0", "01", "-1", "+1", "1e3", "1.5", " 1", "1 ", "", "1234567890123456", "1:1"] {
                cases.push((with(&[(i, v)]), bad("invalid ttl")));
            }
        }
        for (args, want) in cases {
            let (keys, args) = match script {
                Script::Acquire => (vec![lock.lock.clone(), lock.fence.clone(), lock.queue.clone()], args),
                _ => {
                    let Step::Run { keys, .. } = permit(lock, &tok, "60000", "first", "100", 3, 1) else {
                        unreachable!()
                    };
                    (keys, [args, vec!["3".into(), "1".into()]].concat())
                }
            };
            let step = Step::Run { script, keys, args };
            let got = pair.step(&step).unwrap_or_else(|e| panic!("{step:?}: {e}"));
            match &want {
                Some(want) => assert!(agree(want, &got), "{step:?}: {got:?}, expected {want:?}"),
                None => assert!(!matches!(got, N::Error { .. }), "{step:?}: {got:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} cases");
}

/// A hand-off whose waiter's inbox has a listener sets the key for the waiter's whole TTL on
/// both servers, and the release's reply carries the announcement heard (the channel and
/// `token:fence`, as the message); one nobody hears is a claim, and its reply a bare `2`.
#[test]
fn heard_hand_offs_agree() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    let lock = LockKeys::new("heard").expect("a valid key");
    let mut pair = Pair::new(&mut real, &clock, std::slice::from_ref(&lock), &mut seen);
    // w waits from a client whose inbox has a listener, u from one nobody listens for.
    let [h, w, u] = ["h", "0", "9"].map(|t| t.repeat(32));
    let (ttl, queue, counter, claim) = ("60000", "60000", "600000", "100");
    let get = |t: &str, mode: &str| acquire_with(&lock, t, ttl, mode, queue, counter, claim);
    let fence = |v| N::Fence { seeded: true, v };
    let held = |v| N::Array(vec![N::Int(1), fence(v)]);
    let polled = |pttl, v| N::Array(vec![N::Int(0), N::Pttl(pttl), fence(v)]);
    let to_w = LockKeys::inbox_of(&lock.lock, &inbox(&lock, &w));
    let announced = N::Array(vec![N::Int(2), N::Data(to_w), N::Array(vec![N::Data(w.clone()), fence(1)])]);
    let steps: Vec<(Step, Option<N>)> = vec![
        (get(&h, "first"), Some(held(0))),
        (get(&w, "first"), Some(N::Array(vec![N::Int(0), N::Pttl(60_000)]))),
        (get(&u, "first"), Some(N::Array(vec![N::Int(0), N::Int(-3)]))),
        (release_with(&lock, &h, ttl, counter, claim), Some(announced)),
        // Heard: w holds the key for its 60 s, not for the 100 ms claim.
        (get(&u, "retry"), Some(polled(60_000, 1))),
        (get(&w, "retry"), Some(held(1))),
        (release_with(&lock, &w, ttl, counter, claim), Some(N::Int(2))),
        // Unheard: u has a claim, and confirms it.
        (get(&h, "try"), Some(N::Array(vec![N::Int(0), N::Pttl(100)]))),
        (get(&u, "retry"), Some(held(2))),
        (release_with(&lock, &u, ttl, counter, claim), Some(N::Int(1))),
    ];
    for (i, (step, want)) in steps.iter().enumerate() {
        let got = pair.step(step).unwrap_or_else(|e| panic!("step {i} {step:?}: {e}"));
        if let Some(want) = want {
            assert!(agree(want, &got), "step {i} {step:?}: {got:?}, expected {want:?}");
        }
    }
}

/// One random step over a counted resource: permits of a semaphore of `capacity` (weight 1),
/// or an RwLock's shares (capacity `MAX_CAPACITY`, a reader 1, a writer all of it); sometimes
/// with another capacity, on the wrong key type, or with garbage in the auxiliary keys.
fn random_permit_step(d: &mut Dice, lock: &LockKeys, tokens: &[String], capacity: u32) -> Step {
    let token = tokens[d.below(tokens.len())].as_str();
    let max = rdlock_core::MAX_CAPACITY;
    let rw = capacity == max;
    let weight = if rw && d.chance(0.3) { max } else { 1 };
    let cap = if d.chance(0.03) { capacity % 5 + 1 } else { capacity };
    let p = PermitKeys::derive(&lock.lock);
    match d.below(100) {
        0..50 => permit(lock, token, ttl(d), pick(d, &["try", "first", "retry"]), pick(d, &CLAIMS), cap, weight),
        50..75 => permit_release(lock, token, pick(d, &TTLS), pick(d, &CLAIMS), cap, weight),
        75..86 => {
            let items: Vec<_> =
                (0..1 + d.below(3)).map(|_| (lock, tokens[d.below(tokens.len())].as_str(), ttl(d))).collect();
            permit_extend(&items)
        }
        86..88 => permit_change(lock, token, if d.chance(0.7) { 1 } else { weight.max(2) }),
        88..91 => Step::List(lock.lock.clone()),
        91..93 => Step::Garbage(p.shares, GARBAGE.to_owned()),
        93..95 => Step::Garbage(p.capacity, GARBAGE.to_owned()),
        95..97 => Step::Garbage(lock.fence.clone(), pick(d, &BAD_COUNTERS).to_owned()),
        _ => Step::Del(lock.lock.clone()),
    }
}

/// The permit scripts agree with a real server on random sequences: semaphores of capacity
/// 1 to 3 and RwLocks, waiters heard and unheard, capacity mismatches, bad keys.
#[test]
fn permits_agree_with_a_real_server() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    for seed in 0..SEQUENCES / 2 {
        let mut d = Dice::new(seed ^ 0x5eed);
        let lock = LockKeys::new(["sem", "{rw}:k", "a{b"][(seed % 3) as usize]).expect("a valid key");
        let capacity = [1, 2, 3, rdlock_core::MAX_CAPACITY][d.below(4)];
        let tokens: Vec<String> = (0..4).map(|_| token(&mut d)).collect();
        let mut pair = Pair::new(&mut real, &clock, std::slice::from_ref(&lock), &mut seen);
        let mut trace = Vec::new();
        for i in 0..STEPS {
            let step = random_permit_step(&mut d, &lock, &tokens, capacity);
            trace.push(format!("{i:>3}: {step:?}"));
            if let Err(e) = pair.step(&step) {
                panic!("seed {seed} step {i}: {e}\nsteps:\n{}", trace.join("\n"));
            }
        }
    }
    eprintln!("permit sequences agree; outcomes:");
    for (outcome, n) in &seen {
        eprintln!("  {n:>5}  {outcome}");
    }
    for must in [
        "permit-acquire [1,fence]",
        "permit-acquire [0,pttl]",
        "permit-acquire [0,-3]",
        "permit-acquire [0,pttl,fence]",
        "permit-release 0",
        "permit-release 1",
        "permit-release 2",
        "permit-extend [1]",
        "permit-acquire error RDLOCK",
        "permit-acquire error WRONGTYPE",
        "permit-acquire failed, wrote nothing",
        "permit-release failed, wrote nothing",
        "permit-change 1",
        "permit-change 0",
        "hand-off heard (the whole ttl)",
        "hand-off unheard (a claim)",
    ] {
        assert!(seen.contains_key(must), "no {must:?} among {seen:?}");
    }
}

/// Permits expire on real time: a holder that does not renew is pruned, and its room goes to
/// the queue's head at the next call; the capacity is kept while anyone holds or waits.
#[test]
fn permit_expiry_agrees() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    let lock = LockKeys::new("expiring-sem").expect("a valid key");
    let mut pair = Pair::new(&mut real, &clock, std::slice::from_ref(&lock), &mut seen);
    let [a, b, c] = ["8", "9", "a"].map(|t| t.repeat(32));
    let fence = |v| N::Fence { seeded: true, v };
    let held = |v| N::Array(vec![N::Int(1), fence(v)]);
    let steps: Vec<(Step, Option<N>)> = vec![
        (permit(&lock, &a, "50", "first", "100", 1, 1), Some(held(0))),
        (permit(&lock, &b, "60000", "first", "100", 1, 1), Some(N::Array(vec![N::Int(0), N::Pttl(50)]))),
        (permit(&lock, &c, "60000", "first", "100", 2, 1), None),
        (Step::Sleep(100), None),
        // a's permit expired: b, at the head, takes it on its retry.
        (permit(&lock, &b, "60000", "retry", "100", 1, 1), Some(held(1))),
        (permit_extend(&[(&lock, &a, "60000"), (&lock, &b, "60000")]), Some(N::Array(vec![N::Int(0), N::Int(1)]))),
        (permit_release(&lock, &a, "50", "100", 1, 1), Some(N::Int(0))),
        (permit_release(&lock, &b, "60000", "100", 1, 1), Some(N::Int(1))),
    ];
    for (i, (step, want)) in steps.iter().enumerate() {
        let got = pair.step(step).unwrap_or_else(|e| panic!("step {i} {step:?}: {e}"));
        if let Some(want) = want {
            assert!(agree(want, &got), "step {i} {step:?}: {got:?}, expected {want:?}");
        }
    }
    assert!(pair.fake.keys_without_ttl(clock.now()).next().is_none());
}

fn permit_change(lock: &LockKeys, token: &str, weight: u32) -> Step {
    let args = rdlock_core::PermitChangeArgs {
        token,
        weight,
        fence_ttl: FENCE_TTL,
        claim: Duration::from_millis(100),
        capacity: rdlock_core::MAX_CAPACITY,
    };
    let rdlock_core::Command::Script { script, keys, args } = args.command(&PermitKeys::derive(&lock.lock)) else {
        unreachable!("a script")
    };
    Step::Run { script, keys: keys.to_vec(), args: args.to_vec() }
}

/// A writer downgrades: the readers queued behind it are served in the same call, a writer
/// queued after them is not; a share cannot grow; a non-holder changes nothing.
#[test]
fn downgrades_agree() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    let clock = Clock::new();
    let mut seen = BTreeMap::new();
    let lock = LockKeys::new("doc").expect("a valid key");
    let mut pair = Pair::new(&mut real, &clock, std::slice::from_ref(&lock), &mut seen);
    let max = rdlock_core::MAX_CAPACITY;
    // w writes; r1 (heard) and r2 (unheard) read; w2 writes after them.
    let [w, r1, r2, w2] = ["8", "0", "9", "a"].map(|t| t.repeat(32));
    let fence = |v| N::Fence { seeded: true, v };
    let held = |v| N::Array(vec![N::Int(1), fence(v)]);
    let steps: Vec<(Step, Option<N>)> = vec![
        (permit(&lock, &w, "60000", "first", "100", max, max), Some(held(0))),
        (permit(&lock, &r1, "60000", "first", "100", max, 1), None),
        (permit(&lock, &r2, "60000", "first", "100", max, 1), None),
        (permit(&lock, &w2, "60000", "first", "100", max, max), None),
        (permit_change(&lock, &w, max), Some(N::Int(1))),
        (permit_change(&lock, &w, 1), Some(N::Int(1))),
        (
            permit_change(&lock, &w, 2),
            Some(N::Error { code: "RDLOCK".into(), message: "a share can only shrink".into() }),
        ),
        (permit_change(&lock, &w2, 1), Some(N::Int(0))),
        (permit(&lock, &r2, "60000", "retry", "100", max, 1), Some(held(2))),
        (permit_release(&lock, &w, "60000", "100", max, 1), Some(N::Int(1))),
        (permit_release(&lock, &r1, "60000", "100", max, 1), Some(N::Int(1))),
        (permit_release(&lock, &r2, "60000", "100", max, 1), Some(N::Int(2))),
        (permit_release(&lock, &w2, "60000", "100", max, max), Some(N::Int(1))),
    ];
    for (i, (step, want)) in steps.iter().enumerate() {
        let got = pair.step(step).unwrap_or_else(|e| panic!("step {i} {step:?}: {e}"));
        if let Some(want) = want {
            assert!(agree(want, &got), "step {i} {step:?}: {got:?}, expected {want:?}");
        }
    }
}

// ---------------------------------------------------------------- a mutex's value

/// One step of [`mutex_values_agree`].
#[derive(Clone, Debug)]
enum ValueStep {
    /// A mutex's attempt (four keys) by `token` in `mode`.
    Acquire(&'static str, &'static str),
    /// A store: token, fence, ttl, value; `args` replaces the arguments when set (to break them).
    Store(&'static str, &'static str, &'static str, &'static [u8]),
    StoreArgs(Vec<String>, &'static [u8]),
    /// An outside write of the value key: a hash with these fields (after `DEL`).
    Hash(Vec<(&'static str, &'static [u8])>),
    /// A list where a key of the mutex belongs (the value key, or the lock key).
    List(String),
    Del(String),
}

/// A mutex's value paths, step by step on the fake and on a real server: grants with and
/// without a value, stores by the owner, by another token, over a later fence, too large,
/// with bad arguments, with and without a ttl, a value key of another type (on acquire and
/// on store), values of every byte (0 and 0xff too). Replies (fences relative to each
/// server's first), the value key's fields and its remaining time must agree.
#[test]
fn mutex_values_agree() {
    let (_server, conn, mut sub) = start();
    let mut real = Real { conn, sub: Sub::Patterns(subscribe(&mut sub)), markers: 0 };
    real.call(&redis::cmd("FLUSHALL"));
    let clock = Clock::new();
    let lock = LockKeys::new("orders").expect("a valid key");
    let data = rdlock_core::value_key(&lock.lock);
    let keys4 = [lock.lock.clone(), lock.fence.clone(), lock.queue.clone(), data.clone()];
    let store_keys = [lock.lock.clone(), data.clone()];
    let every_byte: &'static [u8] = Box::leak((0..=255u8).collect::<Vec<u8>>().into_boxed_slice());
    let args = |fence: &str, ttl: &str| ["a", fence, "300", ttl].map(String::from).to_vec();
    use ValueStep::*;
    let steps = vec![
        Acquire("a", "first"),
        Store("a", "5", "0", b"\x00\xff"),
        Acquire("a", "retry"),
        Store("b", "6", "0", b"other"),
        Store("a", "5", "0", &[7u8; 301]),
        StoreArgs(args("0", "0"), b"x"),
        StoreArgs(args("05", "0"), b"x"),
        StoreArgs(args("12345678901234567", "0"), b"x"),
        StoreArgs(args("5", "-1"), b"x"),
        StoreArgs(args("5", "012"), b"x"),
        StoreArgs(vec!["a".into(), "5".into(), "300".into()], b"x"),
        Hash(vec![("f", b"9"), ("v", b"later")]),
        Store("a", "5", "0", b"stale"),
        Store("a", "9", "60000", every_byte),
        Acquire("a", "retry"),
        Store("a", "10", "0", b""),
        Acquire("a", "retry"),
        Hash(vec![("v", b"odd")]),
        Acquire("a", "retry"),
        Hash(vec![("f", b"abc"), ("v", b"foreign")]),
        Store("a", "3", "0", b"over a foreign f"),
        Hash(vec![("f", b" 0x10 "), ("v", b"hex")]),
        Store("a", "11", "0", b"x"),
        Store("a", "16", "0", b"x"),
        List(data.clone()),
        Acquire("b", "first"),
        Acquire("a", "retry"),
        Store("a", "20", "0", b"x"),
        Del(data.clone()),
        List(lock.lock.clone()),
        Store("a", "20", "0", b"x"),
        Del(lock.lock.clone()),
        Acquire("b", "try"),
        Acquire("b", "try"),
    ];
    let mut first_fence: [Option<i64>; 2] = [None, None];
    let mut fake = Fake::new(Bug::None, EPOCH_US);
    for (i, step) in steps.iter().enumerate() {
        let now = clock.now();
        let run = |script, keys: &[String], args: Vec<String>, value: Option<&[u8]>, fake: &mut Fake| {
            fake.run_script_with_value(script, keys, &args, value, now, &mut Dice::new(0), &|_: &str| 0).0
        };
        let (fake_reply, real_reply) = match step {
            Acquire(token, mode) => {
                let inbox = LockKeys::inbox_suffix(&lock.lock, UNHEARD);
                let a = [*token, "60000", mode, "60000", "86400000", "250", &inbox].map(String::from).to_vec();
                let f = run(Script::Acquire, &keys4, a.clone(), None, &mut fake);
                (Some(f), Some(real.run(Script::Acquire, &keys4, &a)))
            }
            Store(token, fence, ttl, value) => {
                let a = [*token, fence, "300", ttl].map(String::from).to_vec();
                let f = run(Script::Store, &store_keys, a.clone(), Some(value), &mut fake);
                let r = real.call(
                    redis::cmd("EVAL").arg(Script::Store.source()).arg(2).arg(&store_keys[..]).arg(&a).arg(*value),
                );
                (Some(f), Some(r))
            }
            StoreArgs(a, value) => {
                let f = run(Script::Store, &store_keys, a.clone(), Some(value), &mut fake);
                let r = real.call(
                    redis::cmd("EVAL").arg(Script::Store.source()).arg(2).arg(&store_keys[..]).arg(a).arg(*value),
                );
                (Some(f), Some(r))
            }
            Hash(fields) => {
                fake.put_hash(&data, fields);
                real.call(redis::cmd("DEL").arg(&data));
                for (f, v) in fields {
                    real.call(redis::cmd("HSET").arg(&data).arg(*f).arg(*v));
                }
                (None, None)
            }
            List(k) => {
                fake.put_list(k);
                real.call(redis::cmd("DEL").arg(k));
                real.call(redis::cmd("RPUSH").arg(k).arg("x"));
                (None, None)
            }
            Del(k) => {
                fake.del_key(k);
                real.call(redis::cmd("DEL").arg(k));
                (None, None)
            }
        };
        if let (Some(f), Some(r)) = (fake_reply, real_reply) {
            // Fences are seeded from each server's clock: the grant's compares to the first.
            let norm_value = |reply: &Reply, first: &mut Option<i64>| match reply {
                Reply::Array(items) if items.first() == Some(&Reply::Int(1)) => {
                    let fence = items[1].as_int().expect("a fence");
                    let base = *first.get_or_insert(fence);
                    let mut out = items.clone();
                    out[1] = Reply::Int(fence - base);
                    Reply::Array(out)
                }
                Reply::Error(e) => Reply::Error(rdlock_core::ServerError::new(e.code.clone(), "")),
                other => other.clone(),
            };
            let (nf, nr) = (norm_value(&f, &mut first_fence[0]), norm_value(&r, &mut first_fence[1]));
            let messages_agree = match (&f, &r) {
                (Reply::Error(a), Reply::Error(b)) => b.message.starts_with(&a.message),
                _ => true,
            };
            assert!(nf == nr && messages_agree, "step {i} {step:?}: the fake answered {f:?}, the real server {r:?}");
        }
        // The value key: its fields and remaining time.
        let now = clock.now();
        let fields = fake.data(&data, now).map(|(f, v)| (f.map(<[u8]>::to_vec), v.map(<[u8]>::to_vec)));
        let fake_data = (fields, fake.expiry(&data, now).map(|at| ((at - now) / MS) as i64));
        let real_type = real.call(redis::cmd("TYPE").arg(&data));
        let real_fields = (real_type == Reply::Data(b"hash".to_vec())).then(|| {
            let mut field = |name: &str| match real.call(redis::cmd("HGET").arg(&data).arg(name)) {
                Reply::Data(d) => Some(d),
                _ => None,
            };
            (field("f"), field("v"))
        });
        let real_ttl = real.call(redis::cmd("PTTL").arg(&data)).as_int().filter(|&t| t >= 0);
        assert_eq!(fake_data.0, real_fields, "step {i} {step:?}: the value keys differ");
        match (fake_data.1, real_ttl) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= TOLERANCE_MS, "step {i}: ttl {a} vs {b}"),
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "step {i} {step:?}: ttl {a:?} vs {b:?}"),
        }
        // Nothing else was written by a failed call: the queue agrees too.
        let real_queue = real.call(redis::cmd("LLEN").arg(&lock.queue)).as_int();
        let fake_queue = fake.list_entries(clock.now()).iter().filter(|(k, _)| *k == lock.queue).count() as i64;
        assert_eq!(Some(fake_queue), real_queue, "step {i} {step:?}: the queues differ");
    }
}

/// The server's commands run inside the scripts since the last `CONFIG RESETSTAT`, by name.
fn inner_commands(conn: &mut Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO");
    let mut out = BTreeMap::new();
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let (name, rest) = line.split_once(':').expect("name:stats");
        let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls=")).expect("calls");
        if !["eval", "config|resetstat"].contains(&name) {
            out.insert(name.to_owned(), calls.parse().expect("a count"));
        }
    }
    out
}

/// What the lock's scripts cost the server (issue #16): an uncontended cycle runs six
/// commands inside its two scripts — the acquire takes the free key with `SET NX GET`, reads
/// the queue's head and bumps the fence; the release reads the owner and the counter at once,
/// pops the (empty) queue and deletes — and a hand-off five: the owner and the counter, the
/// head popped, the fence, the message, the key. Any command more is a regression of S1's
/// and S2's server time (`docs/performance.md`).
#[test]
fn an_uncontended_cycle_runs_six_commands_and_a_hand_off_five() {
    let (server, mut conn, _sub) = start();
    let mut stats = server.connection().expect("a connection");
    let lock = LockKeys::new("cheap").expect("a valid key");
    let (a, b) = ("0".repeat(32), "1".repeat(32));
    let mut run = |step: &Step| {
        let Step::Run { script, keys, args } = step else { unreachable!() };
        let cmd = redis::cmd("EVAL").arg(script.source()).arg(keys.len()).arg(keys).arg(args).clone();
        reply(cmd.query::<Value>(&mut conn).expect("the script runs"))
    };
    let counted = |stats: &mut Connection, want: &[(&str, u64)]| {
        let got = inner_commands(stats);
        let want: BTreeMap<String, u64> = want.iter().map(|&(n, c)| (n.to_owned(), c)).collect();
        assert_eq!(got, want);
        redis::cmd("CONFIG").arg("RESETSTAT").exec(stats).expect("CONFIG RESETSTAT");
    };
    // The first cycle seeds the counter (TIME, SET); count from the second.
    run(&acquire(&lock, &a, "60000", "first", "60000", "600000"));
    run(&release(&lock, &a, "60000", "600000"));
    redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut stats).expect("CONFIG RESETSTAT");
    let granted = run(&acquire(&lock, &a, "60000", "first", "60000", "600000"));
    assert!(matches!(AcquireReply::parse(&granted), Some(AcquireReply::Granted { .. })), "{granted:?}");
    counted(&mut stats, &[("incr", 1), ("lindex", 1), ("set", 1)]);
    assert_eq!(run(&release(&lock, &a, "60000", "600000")), Reply::Int(1));
    counted(&mut stats, &[("del", 1), ("lpop", 1), ("mget", 1)]);
    // A hand-off: b waits behind a, a releases (nobody listens here: a claim, the same commands).
    run(&acquire(&lock, &a, "60000", "first", "60000", "600000"));
    run(&acquire(&lock, &b, "60000", "first", "60000", "600000"));
    redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut stats).expect("CONFIG RESETSTAT");
    assert_eq!(run(&release(&lock, &a, "60000", "600000")), Reply::Int(2));
    counted(&mut stats, &[("incr", 1), ("lpop", 1), ("mget", 1), ("publish", 1), ("set", 1)]);
}

/// An acquire that took the free key and then fails (its queue holds another type) deletes
/// the key again: a failing call writes nothing, the one write before its checks included.
#[test]
fn an_acquire_that_fails_after_taking_the_key_gives_it_back() {
    let (_server, mut conn, _sub) = start();
    let lock = LockKeys::new("undone").expect("a valid key");
    redis::cmd("SET").arg(&lock.queue).arg(GARBAGE).exec(&mut conn).expect("SET");
    let Step::Run { script, keys, args } = acquire(&lock, &"0".repeat(32), "60000", "first", "60000", "600000") else {
        unreachable!()
    };
    let err = redis::cmd("EVAL").arg(script.source()).arg(keys.len()).arg(&keys).arg(&args).query::<Value>(&mut conn);
    let err = err.expect_err("a queue of another type fails the call");
    assert!(err.to_string().contains("wait queue holds another type of value"), "{err}");
    let exists: u64 = redis::cmd("EXISTS").arg(&lock.lock).arg(&lock.fence).query(&mut conn).expect("EXISTS");
    assert_eq!(exists, 0, "nothing written");
}

/// A connection of a user allowed every command but `command`.
fn user_without(server: &RedisServer, admin: &mut Connection, command: &str) -> Connection {
    let user = format!("no-{command}");
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg("nopass")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg(format!("-{command}"))
        .exec(admin)
        .expect("ACL SETUSER");
    let mut conn = server.connection().expect("a connection");
    redis::cmd("AUTH").arg(&user).arg("any").exec(&mut conn).expect("AUTH");
    conn
}

/// A user whose ACL rule predates the release's `MGET` (refused inside the script) still
/// releases and hands off: the release falls back to the checked path.
#[test]
fn a_user_refused_mget_still_releases_and_hands_off() {
    let (server, mut admin, _sub) = start();
    let mut conn = user_without(&server, &mut admin, "mget");
    let lock = LockKeys::new("old-rule").expect("a valid key");
    let (a, b) = ("0".repeat(32), "1".repeat(32));
    let mut run = |step: &Step| {
        let Step::Run { script, keys, args } = step else { unreachable!() };
        let cmd = redis::cmd("EVAL").arg(script.source()).arg(keys.len()).arg(keys).arg(args).clone();
        reply(cmd.query::<Value>(&mut conn).expect("the script runs"))
    };
    run(&acquire(&lock, &a, "60000", "first", "60000", "600000"));
    assert_eq!(run(&release(&lock, &a, "60000", "600000")), Reply::Int(1));
    run(&acquire(&lock, &a, "60000", "first", "60000", "600000"));
    run(&acquire(&lock, &b, "60000", "first", "60000", "600000"));
    assert_eq!(run(&release(&lock, &a, "60000", "600000")), Reply::Int(2));
    let holder: Option<String> = redis::cmd("GET").arg(&lock.lock).query(&mut admin).expect("GET");
    assert_eq!(holder.as_deref(), Some(b.as_str()), "handed to the waiter");
    let queued: u64 = redis::cmd("LLEN").arg(&lock.queue).query(&mut admin).expect("LLEN");
    assert_eq!(queued, 0);
}

/// A user whose ACL rule refuses `INCR` gets the checked release's answer for a hand-off whose
/// fence cannot be issued, from the hand-off that runs before the helpers too: that path
/// once raised the refusal itself (`ERR ... ACL failure`) where the checked path answers
/// `RDLOCK fence counter holds no valid fence`.
#[test]
fn a_user_refused_incr_gets_the_checked_hand_off_answer() {
    let (server, mut admin, _sub) = start();
    let mut conn = user_without(&server, &mut admin, "incr");
    let lock = LockKeys::new("no-incr").expect("a valid key");
    let (a, b) = ("0".repeat(32), "1".repeat(32));
    let run = |conn: &mut Connection, step: &Step| {
        let Step::Run { script, keys, args } = step else { unreachable!() };
        redis::cmd("EVAL").arg(script.source()).arg(keys.len()).arg(keys).arg(args).query::<Value>(conn)
    };
    // Taken and waited on by a user that may (acquire issues fences too), twice, so that the
    // counter is past its seed.
    for _ in 0..2 {
        run(&mut admin, &acquire(&lock, &a, "60000", "first", "60000", "600000")).expect("a holder");
        run(&mut admin, &release(&lock, &a, "60000", "600000")).expect("released");
    }
    run(&mut admin, &acquire(&lock, &a, "60000", "first", "60000", "600000")).expect("a holder");
    run(&mut admin, &acquire(&lock, &b, "60000", "first", "60000", "600000")).expect("a waiter queued");
    let err = run(&mut conn, &release(&lock, &a, "60000", "600000")).expect_err("no fence can be issued");
    assert_eq!(err.code(), Some("RDLOCK"), "{err}");
    assert!(err.to_string().contains("fence counter holds no valid fence"), "{err}");
}

/// On a primary demoted by a failover, the scripts' first writes are refused with `READONLY`,
/// which must reach the client as it is (it then follows the failover), not as a key of
/// another type: the acquire's `SET NX GET` once turned it into `WRONGTYPE`, and a waiter
/// gave up during a `SENTINEL FAILOVER`.
#[test]
fn a_demoted_primary_refuses_the_scripts_with_readonly() {
    let (server, mut conn, _sub) = start();
    let lock = LockKeys::new("demoted").expect("a valid key");
    let (a, b, c) = ("0".repeat(32), "1".repeat(32), "2".repeat(32));
    let mut run = |step: &Step| {
        let Step::Run { script, keys, args } = step else { unreachable!() };
        redis::cmd("EVAL").arg(script.source()).arg(keys.len()).arg(keys).arg(args).query::<Value>(&mut conn)
    };
    run(&acquire(&lock, &a, "60000", "first", "60000", "600000")).expect("a holder");
    run(&acquire(&lock, &b, "60000", "first", "60000", "600000")).expect("a waiter queued");
    // A replica of a primary it cannot reach keeps its data and refuses every write.
    let mut admin = server.connection().expect("a connection");
    redis::cmd("REPLICAOF").arg("127.0.0.1").arg(1).exec(&mut admin).expect("REPLICAOF");
    let free = LockKeys::new("demoted-free").expect("a valid key");
    for (what, step) in [
        ("acquire of a free key", acquire(&free, &c, "60000", "first", "60000", "600000")),
        ("acquire of a held key", acquire(&lock, &c, "60000", "first", "60000", "600000")),
        ("release with a hand-off", release(&lock, &a, "60000", "600000")),
        ("release by a waiter", release(&lock, &b, "60000", "600000")),
    ] {
        let err = run(&step).expect_err(what);
        assert_eq!(err.code(), Some("READONLY"), "{what}: {err}");
    }
}
