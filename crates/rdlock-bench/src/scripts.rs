//! `--scripts`: what one uncontended cycle's script calls cost the server (issue #16), apart
//! from the network and the client: one connection sends pipelines of cycles (take the lock,
//! release it) on one fresh server (`RDLOCK_REDIS_SERVER`, else `redis-server`), the paths
//! taking turns slice by slice. Per cycle: the server's CPU (`INFO cpu`, so that time it spends
//! descheduled does not count), its commands (`INFO commandstats`, a script's own included)
//! and its command time (the `usec` of the requests, a script's own commands included).
//!
//! - raw: `SET NX PX`, then the compare-and-delete `EVALSHA` of the raw adapter.
//! - trivial scripts: two `EVALSHA`s that return at once, with rdlock's keys and arguments:
//!   what any pair of script calls costs.
//! - floor: the cheapest script pair that runs rdlock's commands (`SET NX PX GET`, `LINDEX`,
//!   `INCR`; `MGET`, `LPOP`, `DEL`) and nothing else: no argument checks, no helpers.
//! - checked: the same commands behind rdlock's own argument checks ([`CHECKED`]).
//! - rdlock: `acquire.lua` (try) and `release.lua`, built by the core as a client sends them.

use std::time::Duration;

use rdlock_core::{AcquireArgs, AcquireReply, LockKeys, Mode, ReleaseArgs};
use rdlock_driver::convert::{self, Eval};

use crate::BoxError;
use crate::server::Server;

const TTL_MS: u64 = 30_000;
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const INBOX: &str = "i0000000000000001";

/// A script that returns at once (acquire's reply shape, then release's).
const TRIVIAL: [&str; 2] = ["return {1, 1}", "return 1"];

/// The same commands as rdlock's uncontended cycle, without a check.
pub(crate) const FLOOR: [&str; 2] = [
    "if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2], 'GET') then \
     redis.call('LINDEX', KEYS[3], '0') return {1, redis.call('INCR', KEYS[2])} end return {0, 0}",
    "local got = redis.call('MGET', KEYS[1], KEYS[2]) \
     if got[1] == ARGV[1] and not redis.call('LPOP', KEYS[3]) then redis.call('DEL', KEYS[1]) return 1 end return 0",
];

/// rdlock's commands behind rdlock's own argument checks: the scripts' uncontended paths
/// (`attempt_valid.lua`, `acquire_fast.lua`; `release_fast.lua`) alone, without the helpers
/// and checked paths after them. The fence counter's first `INCR` (1) the checked path would
/// seed is granted as is; anything else not uncontended answers as a refusal.
pub(crate) const CHECKED: [&str; 2] = [
    concat!(
        include_str!("../../rdlock-core/src/script/attempt_valid.lua"),
        include_str!("../../rdlock-core/src/script/acquire_fast.lua"),
        "if fast_incr == 1 then return {1, 1} end return {0, 0}\n"
    ),
    concat!(include_str!("../../rdlock-core/src/script/release_fast.lua"), "return 0\n"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Raw,
    Trivial,
    Floor,
    Checked,
    Rdlock,
}

impl Path {
    const ALL: [Path; 5] = [Path::Raw, Path::Trivial, Path::Floor, Path::Checked, Path::Rdlock];

    fn name(self) -> &'static str {
        match self {
            Path::Raw => "raw (`SET NX PX` + compare-and-delete)",
            Path::Trivial => "two trivial scripts",
            Path::Floor => "floor: rdlock's commands, no checks",
            Path::Checked => "checked: the same behind rdlock's argument checks",
            Path::Rdlock => "rdlock (`acquire.lua` + `release.lua`)",
        }
    }

    /// The top-level commands a cycle of this path sends.
    fn requests(self) -> &'static [&'static str] {
        match self {
            Path::Raw => &["set", "evalsha"],
            _ => &["evalsha"],
        }
    }
}

/// One cycle of `path` on the lock `keys`, as commands for a pipeline.
fn cycle(pipe: &mut redis::Pipeline, path: Path, keys: &LockKeys, entry: &str) {
    let acquire = AcquireArgs {
        token: TOKEN,
        ttl_ms: TTL_MS,
        mode: Mode::Try,
        queue_ttl: Duration::from_secs(60),
        fence_ttl: Duration::from_secs(3600),
        claim: Duration::from_secs(1),
        inbox: INBOX,
    };
    let release = ReleaseArgs {
        token: TOKEN,
        entry,
        fence_ttl: Duration::from_secs(3600),
        claim: Duration::from_secs(1),
        fold: None,
    };
    let commands = [acquire.command(keys), release.command(keys)];
    match path {
        Path::Raw => {
            pipe.cmd("SET").arg(&keys.lock).arg(TOKEN).arg("NX").arg("PX").arg(TTL_MS);
            let sha = redis::Script::new(crate::adapters::raw::COMPARE_AND_DELETE).get_hash().to_owned();
            pipe.cmd("EVALSHA").arg(sha).arg(1).arg(&keys.lock).arg(TOKEN);
        }
        Path::Rdlock => {
            for c in &commands {
                pipe.add_command(convert::command(c, Eval::Sha));
            }
        }
        Path::Trivial | Path::Floor | Path::Checked => {
            let sources = match path {
                Path::Trivial => TRIVIAL,
                Path::Floor => FLOOR,
                _ => CHECKED,
            };
            // The same keys and arguments as rdlock's calls, to another script.
            for (c, source) in commands.iter().zip(sources) {
                if let rdlock_core::Command::Script { keys, args, .. } = c {
                    pipe.cmd("EVALSHA")
                        .arg(redis::Script::new(source).get_hash())
                        .arg(keys.len())
                        .arg(keys.to_vec())
                        .arg(args.to_vec());
                }
            }
        }
    }
}

/// Whether a cycle's replies say it took and released the lock.
fn cycle_done(path: Path, replies: &[redis::Value]) -> bool {
    use redis::Value;
    match (path, replies) {
        (Path::Raw, [Value::Okay, Value::Int(1)]) => true,
        (Path::Trivial | Path::Floor | Path::Checked, [Value::Array(a), Value::Int(1)]) => {
            matches!(a.first(), Some(Value::Int(1)))
        }
        (Path::Rdlock, [acquire, Value::Int(1)]) => {
            matches!(AcquireReply::parse(&convert::reply(acquire.clone())), Some(AcquireReply::Granted { .. }))
        }
        _ => false,
    }
}

/// Figures of one path, per slice.
#[derive(Debug, Default)]
struct Figures {
    server_us: Vec<f64>,
    command_us: Vec<f64>,
    commands: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

/// Measures every path; a Markdown table.
pub fn run(quick: bool) -> Result<String, BoxError> {
    let server = Server::start()?;
    let mut conn = server.connection()?;
    let (slices, cycles) = if quick { (2, 2_000) } else { (10, 20_000) };
    // The scripts cached, as a client's connect leaves them.
    convert::load_scripts().exec(&mut conn)?;
    for source in TRIVIAL.iter().chain(&FLOOR).chain(&CHECKED).chain([&crate::adapters::raw::COMPARE_AND_DELETE]) {
        redis::cmd("SCRIPT").arg("LOAD").arg(*source).exec(&mut conn)?;
    }
    const BATCH: usize = 500;
    let mut figures: Vec<Figures> = Path::ALL.iter().map(|_| Figures::default()).collect();
    for k in 0..slices {
        let mut order = Path::ALL.to_vec();
        if k % 2 == 1 {
            order.reverse();
        }
        for path in order {
            eprintln!("scripts: {}, slice {}/{slices}", path.name(), k + 1);
            let keys = LockKeys::new(&format!("bench:scripts:{path:?}"))?;
            let entry = format!("{TOKEN}:{TTL_MS}:{INBOX}");
            let mut pipe = redis::pipe();
            for _ in 0..BATCH {
                cycle(&mut pipe, path, &keys, &entry);
            }
            let before = server.snapshot()?;
            for _ in 0..cycles / BATCH {
                let replies: Vec<redis::Value> = pipe.query(&mut conn)?;
                if let Some(bad) = replies.chunks(2).find(|c| !cycle_done(path, c)) {
                    return Err(format!("{}: a cycle did not take and release the lock: {bad:?}", path.name()).into());
                }
            }
            let d = before.until(&server.snapshot()?);
            let n = (cycles / BATCH * BATCH) as f64;
            let f = &mut figures[Path::ALL.iter().position(|&p| p == path).unwrap_or(0)];
            f.server_us.push(d.rusage.as_secs_f64() * 1e6 / n);
            f.command_us.push(d.request_usec(path.requests()) as f64 / n);
            f.commands.push(d.total() as f64 / n);
        }
    }
    let raw = median(&figures[0].server_us);
    let mut out = format!(
        "## rdlock-bench --scripts: an uncontended cycle's server cost, pipelined\n\n- server: {}\n- {slices} slices × {cycles} cycles per path (pipelines of {BATCH}), medians (and minimum) over slices\n\n",
        server.version()?
    );
    out.push_str("| path | server cmds/cycle | server CPU µs/cycle (min) | × raw | command time µs/cycle |\n");
    out.push_str("|---|--:|--:|--:|--:|\n");
    for (path, f) in Path::ALL.iter().zip(&figures) {
        out.push_str(&format!(
            "| {} | {:.2} | {:.1} ({:.1}) | {:.2}× | {:.1} |\n",
            path.name(),
            median(&f.commands),
            median(&f.server_us),
            min(&f.server_us),
            median(&f.server_us) / raw,
            median(&f.command_us)
        ));
    }
    Ok(out)
}
