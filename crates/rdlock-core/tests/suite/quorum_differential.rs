//! The fake's quorum scripts (`quorum_take.lua`, `quorum_fence.lua`, with the release and
//! renewal a quorum lock sends) against a real `redis-server`: seeded random sequences of
//! calls and tampering run on both; after every step the replies and the two keys (value,
//! type, whether and when they expire) must agree, and a script that fails must leave the
//! real keyspace as it was.
//!
//! A counter read where none exists is the server's `TIME` in µs: checked against each
//! server's own clock, then compared as "a clock reading". Remaining times compare within
//! `TOLERANCE_MS`.
//!
//! Replay one sequence: `RDLOCK_DIFF_SEED=17 cargo test -p rdlock-core --test suite -- quorum_differential::`.

use crate::sim;

use std::collections::BTreeMap;
use std::time::Instant;

use rdlock_core::{LockKeys, Reply, Script, ServerError};
use rdlock_testkit::RedisServer;
use redis::{Connection, ErrorKind, Value};
use sim::MS;
use sim::dice::Dice;
use sim::fake::{Bug, Fake};
use sim::real::reply;

const EPOCH_US: u64 = 1_700_000_000_000_000;
const SEQUENCES: u64 = 120;
const STEPS: usize = 30;
const TOLERANCE_MS: i64 = 500;
const TTLS: [&str; 2] = ["60000", "90000"];
/// Fences the sequences raise counters to: equal, below and above one another.
const FENCES: [&str; 4] = ["5", "9", "12", "9007199254740990"];
/// Arguments the scripts must refuse before writing.
const BAD_TTLS: [&str; 3] = ["0", "-5", "1.5"];
const BAD_FENCES: [&str; 4] = ["0", "007", "9007199254740991", "x"];
const BAD_COUNTERS: [&str; 3] = ["garbage", "-3", "99999999999999999999"];

#[derive(Clone, Debug)]
enum Step {
    Run {
        script: Script,
        keys: Vec<String>,
        args: Vec<String>,
    },
    Del(String),
    /// A list where a string belongs.
    List(String),
    /// `SET key value PX 60000`.
    Garbage(String, String),
}

/// A reply with what cannot be equal taken out.
#[derive(Clone, Debug, PartialEq)]
enum N {
    Int(i64),
    Pttl(i64),
    /// A counter read where none existed: the server's clock (checked separately).
    Clock,
    Array(Vec<N>),
    Other(String),
    Error {
        code: String,
        message: String,
    },
}

fn agree(fake: &N, real: &N) -> bool {
    match (fake, real) {
        (N::Pttl(a), N::Pttl(b)) => (a - b).abs() <= TOLERANCE_MS,
        (N::Array(a), N::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| agree(a, b)),
        (N::Error { code: c1, message: m1 }, N::Error { code: c2, message: m2 }) => c1 == c2 && m2.starts_with(m1),
        _ => fake == real,
    }
}

/// Normalises a reply of `script`; `clock` is the range a fresh counter reading must fall in
/// when the counter was absent (`None`: it existed).
fn norm(script: Script, r: &Reply, clock: Option<(i64, i64)>) -> Result<N, String> {
    let ints: Option<Vec<i64>> = r.as_array().and_then(|a| a.iter().map(Reply::as_int).collect());
    Ok(match (script, ints.as_deref(), r) {
        (_, _, Reply::Error(e)) => N::Error { code: e.code.clone(), message: e.message.clone() },
        (Script::QuorumTake, Some([1, c]), _) => match clock {
            Some((lo, hi)) if (lo..=hi).contains(c) => N::Array(vec![N::Int(1), N::Clock]),
            Some(range) => return Err(format!("a fresh counter read {c}, not the clock {range:?}")),
            None => N::Array(vec![N::Int(1), N::Int(*c)]),
        },
        (Script::QuorumTake, Some([0, p]), _) if *p >= 0 => N::Array(vec![N::Int(0), N::Pttl(*p)]),
        (_, Some(v), _) => N::Array(v.iter().map(|&i| N::Int(i)).collect()),
        (_, None, Reply::Int(i)) => N::Int(*i),
        (_, None, other) => N::Other(format!("{other:?}")),
    })
}

/// A key: its value (`None`: a list) and remaining ms (`None`: no expiry).
type Snap = BTreeMap<String, (Option<String>, Option<i64>)>;

fn fake_snapshot(f: &Fake, keys: &[String], now: u64) -> Snap {
    let lists: Vec<String> = f.list_entries(now).into_iter().map(|(k, _)| k).collect();
    let mut snap = Snap::new();
    for k in keys {
        let ttl = f.expiry(k, now).map(|at| ((at - now) / MS) as i64);
        if let Some(v) = f.string(k, now) {
            snap.insert(k.clone(), (Some(v.to_owned()), ttl));
        } else if lists.contains(k) {
            snap.insert(k.clone(), (None, ttl));
        }
    }
    snap
}

fn snapshots_agree(a: &Snap, b: &Snap) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((k1, (v1, t1)), (k2, (v2, t2)))| {
            k1 == k2
                && v1 == v2
                && match (t1, t2) {
                    (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE_MS,
                    (None, None) => true,
                    _ => false,
                }
        })
}

struct Real {
    conn: Connection,
}

impl Real {
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

    fn time_us(&mut self) -> i64 {
        let t = self.call(&redis::cmd("TIME"));
        let parts: Vec<i64> = t.as_array().and_then(|a| a.iter().map(Reply::as_int).collect()).expect("TIME");
        parts[0] * 1_000_000 + parts[1]
    }

    fn snapshot(&mut self, keys: &[String]) -> Snap {
        let mut snap = Snap::new();
        for k in keys {
            let ttl = self.call(redis::cmd("PTTL").arg(k)).as_int().expect("PTTL");
            let ty = self.call(redis::cmd("TYPE").arg(k));
            let v = match ty {
                Reply::Data(t) if t == b"none" => continue,
                Reply::Data(t) if t == b"string" => match self.call(redis::cmd("GET").arg(k)) {
                    Reply::Data(d) => Some(String::from_utf8_lossy(&d).into_owned()),
                    other => panic!("{k}: {other:?}"),
                },
                _ => None,
            };
            snap.insert(k.clone(), (v, (ttl >= 0).then_some(ttl)));
        }
        snap
    }
}

fn token(d: &mut Dice) -> String {
    format!("{:016x}{:016x}", d.next_u64(), d.next_u64())
}

fn pick<'a>(d: &mut Dice, from: &[&'a str]) -> &'a str {
    from[d.below(from.len())]
}

fn random_step(d: &mut Dice, lock: &LockKeys, tokens: &[String]) -> Step {
    let keys = vec![lock.lock.clone(), lock.fence.clone()];
    let tok = tokens[d.below(tokens.len())].clone();
    let ttl = if d.chance(0.05) { pick(d, &BAD_TTLS) } else { pick(d, &TTLS) };
    match d.below(12) {
        0..=3 => Step::Run { script: Script::QuorumTake, keys, args: vec![tok, ttl.into()] },
        4..=7 => {
            let f = if d.chance(0.1) { pick(d, &BAD_FENCES) } else { pick(d, &FENCES) };
            Step::Run { script: Script::QuorumFence, keys, args: vec![tok, f.into(), ttl.into()] }
        }
        8 => Step::Run {
            script: Script::ReleaseShared,
            keys: vec![lock.lock.clone(), lock.queue.clone()],
            args: vec![tok, lock.channel.clone()],
        },
        9 => Step::Run { script: Script::Extend, keys: vec![lock.lock.clone()], args: vec![tok, ttl.into()] },
        10 => Step::Del(keys[d.below(2)].clone()),
        _ => match d.below(4) {
            0 => Step::List(keys[d.below(2)].clone()),
            1 => Step::Garbage(lock.fence.clone(), pick(d, &BAD_COUNTERS).into()),
            _ => Step::Del(keys[d.below(2)].clone()),
        },
    }
}

fn sequence(seed: u64, real: &mut Real, start: Instant, seen: &mut BTreeMap<String, usize>) -> Result<(), String> {
    let mut d = Dice::new(seed);
    let lock = LockKeys::new(["orders", "{user:7}:cart"][(seed % 2) as usize]).expect("a valid key");
    let keys = vec![lock.lock.clone(), lock.fence.clone()];
    let tokens: Vec<String> = (0..3).map(|_| token(&mut d)).collect();
    real.call(&redis::cmd("FLUSHALL"));
    let mut fake = Fake::new(Bug::None, EPOCH_US);
    #[allow(clippy::disallowed_methods)] // the fake's clock follows the real server's
    let now = || start.elapsed().as_nanos() as u64;
    let mut trace = Vec::new();
    for i in 0..STEPS {
        let step = random_step(&mut d, &lock, &tokens);
        trace.push(format!("{i:>3}: {step:?}"));
        let fail = |e: String| format!("step {i}: {e}\nsteps:\n{}", trace.join("\n"));
        let t = now();
        let before = real.snapshot(&keys);
        match &step {
            Step::Run { script, keys: k, args } => {
                let absent =
                    [!fake_snapshot(&fake, &keys, t).contains_key(&lock.fence), !before.contains_key(&lock.fence)];
                let fake_time = (EPOCH_US + t / 1000) as i64;
                let (f, _) = fake.run_script(*script, k, args, t, &mut Dice::new(0), &|_| 0);
                let t0 = real.time_us();
                let r = real.call(redis::cmd("EVAL").arg(script.source()).arg(k.len()).arg(k).arg(args));
                let t1 = real.time_us();
                let fnorm = norm(*script, &f, absent[0].then_some((fake_time, fake_time))).map_err(&fail)?;
                let rnorm = norm(*script, &r, absent[1].then_some((t0, t1))).map_err(&fail)?;
                if !agree(&fnorm, &rnorm) {
                    return Err(fail(format!("replies differ\n  fake {f:?}\n  real {r:?}")));
                }
                let shape = match &fnorm {
                    N::Array(a) if matches!(a[..], [N::Int(0), N::Pttl(_)]) => "[0, pttl]".to_owned(),
                    other => format!("{other:?}"),
                };
                *seen.entry(format!("{} {shape}", script.name())).or_default() += 1;
                if let Reply::Error(e) = &r {
                    let after = real.snapshot(&keys);
                    let same = before.len() == after.len()
                        && before.iter().zip(&after).all(|(a, b)| a.0 == b.0 && a.1.0 == b.1.0);
                    if !same {
                        return Err(fail(format!("{e} after writing: {before:?} -> {after:?}")));
                    }
                }
            }
            Step::Del(k) => {
                fake.del_key(k);
                real.call(redis::cmd("DEL").arg(k));
            }
            Step::List(k) => {
                fake.put_list(k);
                real.call(redis::cmd("DEL").arg(k));
                real.call(redis::cmd("RPUSH").arg(k).arg("x"));
            }
            Step::Garbage(k, v) => {
                fake.put_string(k, v, Some(t + 60_000 * MS));
                real.call(redis::cmd("SET").arg(k).arg(v).arg("PX").arg(60_000));
            }
        }
        let (f, r) = (fake_snapshot(&fake, &keys, now()), real.snapshot(&keys));
        if !snapshots_agree(&f, &r) {
            return Err(fail(format!("keyspaces differ\n  fake {f:?}\n  real {r:?}")));
        }
    }
    Ok(())
}

#[test]
fn the_quorum_scripts_agree_with_a_real_server() {
    let server = RedisServer::start().expect("redis-server starts");
    let mut real = Real { conn: server.connection().expect("a connection") };
    #[allow(clippy::disallowed_methods)] // anchors the fake's clock to the real one
    let start = Instant::now();
    let seeds: Vec<u64> = match sim::env_u64("RDLOCK_DIFF_SEED") {
        Some(seed) => vec![seed],
        None => (0..SEQUENCES).collect(),
    };
    let mut seen = BTreeMap::new();
    for &seed in &seeds {
        if let Err(e) = sequence(seed, &mut real, start, &mut seen) {
            panic!(
                "seed {seed}: {e}\nreplay: RDLOCK_DIFF_SEED={seed} cargo test -p rdlock-core --test suite -- quorum_differential::"
            );
        }
    }
    eprintln!("{} sequences of {STEPS} steps agree; outcomes:", seeds.len());
    for (outcome, n) in &seen {
        eprintln!("  {n:>5}  {outcome}");
    }
    if seeds.len() > 1 {
        for must in [
            "quorum-take Array([Int(1), Clock])",
            "quorum-take Array([Int(1), Int(9)])",
            "quorum-take [0, pttl]",
            "quorum-fence Array([Int(1)])",
            "quorum-fence Array([Int(0)])",
            "quorum-fence Array([Int(2), Int(12)])",
            "quorum-fence Error { code: \"RDLOCK\", message: \"invalid fence\"",
            "quorum-take Error { code: \"WRONGTYPE\"",
            "quorum-fence Error { code: \"RDLOCK\", message: \"fence counter holds no valid fence",
            "quorum-take Error { code: \"RDLOCK\", message: \"invalid ttl\"",
        ] {
            assert!(seen.keys().any(|k| k.starts_with(must)), "no {must:?} among {seen:?}");
        }
    }
}
