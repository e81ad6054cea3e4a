//! `--newer`: what the newer servers' commands would save beside rdlock's scripts (issue #14),
//! measured on one fresh server (`RDLOCK_REDIS_SERVER`, else `redis-server`), each operation's
//! two paths taking turns in slices so that both see the same background load. Per operation:
//! server commands (`INFO commandstats`, a script's own commands included), server CPU
//! (`INFO cpu`), client CPU (this process's, which does nothing else meanwhile) and round trips. One connection, one
//! operation in flight: the cost of the commands, not of the client's concurrency.
//!
//! - renew: `extend.lua` against `SET key token IFEQ token PX ttl` (Valkey 8.1+, Redis 8.4+),
//!   one lock and a batch of 64 (one script call, or 64 `SET`s in one pipeline).
//! - share renew: `permit_extend.lua` against what a hash-field-TTL design would send (the
//!   share a field of the share table that expires by itself: `HPEXPIRE` of the field and
//!   `PEXPIRE ... GT` of the two keys; Redis 7.4+, Valkey 9.0+).
//! - acquire + release: `EVALSHA` of `acquire.lua` and `release.lua` against `FCALL` of the
//!   same code loaded as a function library.

use std::time::Duration;

use rdlock_core::{
    AcquireArgs, AcquireReply, Command, ExtendArgs, LockKeys, Mode, PermitArgs, PermitExtendArgs, PermitKeys,
};
use rdlock_core::{ReleaseArgs, Script};
use rdlock_driver::convert::{self, Eval};

use crate::BoxError;
use crate::server::Server;

const TTL_MS: u64 = 30_000;
const BATCH: usize = 64;

/// Which path of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// rdlock's script, by `EVALSHA`.
    Script,
    /// The newer command.
    Newer,
}

/// One operation's two paths.
#[derive(Clone, Copy, Debug)]
enum Op {
    Renew,
    RenewBatch,
    ShareRenew,
    AcquireRelease,
}

impl Op {
    const ALL: [Op; 4] = [Op::Renew, Op::RenewBatch, Op::ShareRenew, Op::AcquireRelease];

    fn name(self) -> &'static str {
        match self {
            Op::Renew => "renew 1 lock",
            Op::RenewBatch => "renew 64 locks",
            Op::ShareRenew => "renew 1 share",
            Op::AcquireRelease => "acquire + release",
        }
    }

    fn paths(self) -> (&'static str, &'static str) {
        match self {
            Op::Renew | Op::RenewBatch => ("extend.lua", "SET IFEQ PX"),
            Op::ShareRenew => ("permit_extend.lua", "HPEXPIRE + 2 PEXPIRE GT"),
            Op::AcquireRelease => ("EVALSHA", "FCALL"),
        }
    }

    /// The server feature the newer path needs, as `COMMAND DOCS`/`COMMAND INFO` show it.
    fn available(self, conn: &mut redis::Connection) -> bool {
        match self {
            Op::Renew | Op::RenewBatch => {
                let docs: redis::Value =
                    redis::cmd("COMMAND").arg("DOCS").arg("SET").query(conn).unwrap_or(redis::Value::Nil);
                format!("{docs:?}").contains("IFEQ")
            }
            Op::ShareRenew => has_command(conn, "HPEXPIRE"),
            Op::AcquireRelease => has_command(conn, "FCALL"),
        }
    }
}

fn has_command(conn: &mut redis::Connection, name: &str) -> bool {
    let info: Vec<redis::Value> = redis::cmd("COMMAND").arg("INFO").arg(name).query(conn).unwrap_or_default();
    info.first().is_some_and(|v| !matches!(v, redis::Value::Nil))
}

/// The keys of the operations' `i`-th lock (a separate set per path, so that neither path
/// meets the other's data).
fn key(op: Op, path: Path, i: usize) -> String {
    format!("bench:newer:{op:?}:{path:?}:{i}")
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const INBOX: &str = "i0000000000000001";

fn acquire_args(mode: Mode) -> AcquireArgs<'static> {
    AcquireArgs {
        token: TOKEN,
        ttl_ms: TTL_MS,
        mode,
        queue_ttl: Duration::from_secs(60),
        fence_ttl: Duration::from_secs(3600),
        claim: Duration::from_secs(1),
        inbox: INBOX,
    }
}

fn release_args(entry: &str) -> ReleaseArgs<'_> {
    ReleaseArgs { token: TOKEN, entry, fence_ttl: Duration::from_secs(3600), claim: Duration::from_secs(1), fold: None }
}

/// The function library's name and its source: every script the measurement calls, each
/// wrapped as a function of `KEYS` and `ARGV` (a script's chunk is such a function already).
const LIBRARY: &str = "rdlock_bench";
fn library() -> String {
    let mut lib = format!("#!lua name={LIBRARY}\n");
    for script in [Script::Acquire, Script::Release] {
        lib.push_str(&format!(
            "redis.register_function('rdlock_{}', function(KEYS, ARGV)\n{}\nend)\n",
            script.name(),
            script.source()
        ));
    }
    lib
}

/// A core command as `FCALL` of the library's function.
fn fcall(pipe: &mut redis::Pipeline, command: &Command) {
    if let Command::Script { script, keys, args } = command {
        pipe.cmd("FCALL")
            .arg(format!("rdlock_{}", script.name()))
            .arg(keys.len())
            .arg(keys.to_vec())
            .arg(args.to_vec());
    }
}

/// The round trips of operation `op` by `path` on lock `i`.
fn round_trips(op: Op, path: Path, i: usize) -> Result<Vec<redis::Pipeline>, BoxError> {
    let k = key(op, path, i);
    Ok(match (op, path) {
        (Op::Renew, Path::Script) => {
            let mut args = ExtendArgs::with_capacity(1);
            args.push_text(&k, TOKEN, TTL_MS);
            vec![convert::pipeline(&[args.command()], Eval::Sha)]
        }
        (Op::Renew, Path::Newer) => {
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&k).arg(TOKEN).arg("IFEQ").arg(TOKEN).arg("PX").arg(TTL_MS);
            vec![pipe]
        }
        (Op::RenewBatch, Path::Script) => {
            let mut args = ExtendArgs::with_capacity(BATCH);
            for j in 0..BATCH {
                args.push_text(&key(op, path, j), TOKEN, TTL_MS);
            }
            vec![convert::pipeline(&[args.command()], Eval::Sha)]
        }
        (Op::RenewBatch, Path::Newer) => {
            let mut pipe = redis::pipe();
            for j in 0..BATCH {
                pipe.cmd("SET").arg(key(op, path, j)).arg(TOKEN).arg("IFEQ").arg(TOKEN).arg("PX").arg(TTL_MS);
            }
            vec![pipe]
        }
        (Op::ShareRenew, Path::Script) => {
            let mut args = PermitExtendArgs::with_capacity(1);
            args.push_text(&k, TOKEN, TTL_MS);
            vec![convert::pipeline(&[args.command()], Eval::Sha)]
        }
        (Op::ShareRenew, Path::Newer) => {
            let keys = PermitKeys::derive(&k);
            let mut pipe = redis::pipe();
            pipe.cmd("HPEXPIRE").arg(&keys.shares).arg(TTL_MS).arg("FIELDS").arg(1).arg(TOKEN);
            pipe.cmd("PEXPIRE").arg(&keys.shares).arg(TTL_MS + 1).arg("GT");
            pipe.cmd("PEXPIRE").arg(&keys.capacity).arg(TTL_MS + 1).arg("GT");
            vec![pipe]
        }
        (Op::AcquireRelease, _) => {
            let keys = LockKeys::new(&k)?;
            let entry = format!("{TOKEN}:{TTL_MS}:{INBOX}");
            let commands = [acquire_args(Mode::Try).command(&keys), release_args(&entry).command(&keys)];
            commands
                .iter()
                .map(|c| match path {
                    Path::Script => convert::pipeline(std::slice::from_ref(c), Eval::Sha),
                    Path::Newer => {
                        let mut pipe = redis::pipe();
                        fcall(&mut pipe, c);
                        pipe
                    }
                })
                .collect()
        }
    })
}

/// What the operations need in place before they run: held locks and shares, the library.
fn setup(conn: &mut redis::Connection, op: Op) -> Result<(), BoxError> {
    for path in [Path::Script, Path::Newer] {
        match op {
            Op::Renew | Op::RenewBatch => {
                for j in 0..BATCH {
                    redis::cmd("SET").arg(key(op, path, j)).arg(TOKEN).arg("PX").arg(TTL_MS).exec(conn)?;
                }
            }
            Op::ShareRenew if path == Path::Script => {
                let keys = PermitKeys::derive(&key(op, path, 0));
                let args = PermitArgs { attempt: acquire_args(Mode::Try), capacity: 3, weight: 1 };
                let reply: Vec<redis::Value> = convert::pipeline(&[args.command(&keys)], Eval::Source).query(conn)?;
                let reply = reply.into_iter().next().map(convert::reply);
                if !matches!(reply.as_ref().and_then(AcquireReply::parse), Some(AcquireReply::Granted { .. })) {
                    return Err(format!("the share was not granted: {reply:?}").into());
                }
            }
            Op::ShareRenew => {
                let keys = PermitKeys::derive(&key(op, path, 0));
                redis::cmd("HSET").arg(&keys.shares).arg(TOKEN).arg("1:1").exec(conn)?;
                redis::cmd("HPEXPIRE").arg(&keys.shares).arg(TTL_MS).arg("FIELDS").arg(1).arg(TOKEN).exec(conn)?;
                redis::cmd("SET").arg(&keys.capacity).arg(3).arg("PX").arg(TTL_MS).exec(conn)?;
                redis::cmd("PEXPIRE").arg(&keys.shares).arg(TTL_MS).exec(conn)?;
            }
            Op::AcquireRelease if path == Path::Newer => {
                redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(library()).exec(conn)?;
            }
            Op::AcquireRelease => {}
        }
    }
    // The scripts cached, as a client's connect leaves them.
    convert::load_scripts().exec(conn)?;
    Ok(())
}

/// Per-operation figures of one path, medians over slices.
#[derive(Debug, Default)]
struct Figures {
    commands: Vec<f64>,
    server_us: Vec<f64>,
    client_us: Vec<f64>,
    round_trips: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// Runs `ops` operations of one path and adds their figures.
fn slice(
    server: &Server,
    conn: &mut redis::Connection,
    op: Op,
    path: Path,
    ops: usize,
    out: &mut Figures,
) -> Result<(), BoxError> {
    let plans: Vec<Vec<redis::Pipeline>> = (0..ops).map(|_| round_trips(op, path, 0)).collect::<Result<_, _>>()?;
    let before = server.snapshot()?;
    let cpu = crate::alloc::process_cpu();
    for plan in &plans {
        for pipe in plan {
            let replies: Vec<redis::Value> = pipe.query(conn)?;
            // `PEXPIRE ... GT` answers 0 when the expiry is already that far: only the field's
            // renewal says whether the share is held.
            let checked = if matches!(op, Op::ShareRenew) { &replies[..1] } else { &replies[..] };
            if let Some(bad) = checked.iter().find(|v| !granted(v)) {
                return Err(format!("{} by {path:?}: unexpected reply {bad:?}", op.name()).into());
            }
        }
    }
    let client = crate::alloc::process_cpu().saturating_sub(cpu);
    let d = before.until(&server.snapshot()?);
    let n = ops as f64;
    out.commands.push(d.total() as f64 / n);
    out.server_us.push(d.rusage.as_secs_f64() * 1e6 / n);
    out.client_us.push(client.as_secs_f64() * 1e6 / n);
    out.round_trips.push(d.reads as f64 / n);
    Ok(())
}

/// Whether a reply says the operation did what it should (a renewal extended, a lock granted
/// and released): anything else means the measured path is not doing the work.
fn granted(v: &redis::Value) -> bool {
    use redis::Value;
    match v {
        Value::Okay => true,
        Value::Int(i) => *i == 1,
        Value::Array(items) => items.first().is_some_and(granted) && items.iter().all(|i| !matches!(i, Value::Int(0))),
        _ => false,
    }
}

/// Whether the server's `SET` takes `IFEQ` (Valkey 8.1+, Redis 8.4+), as its command docs say.
pub fn offers_set_ifeq(conn: &mut redis::Connection) -> bool {
    Op::Renew.available(conn)
}

/// The server's name and version: Valkey says its own beside the Redis version it claims.
pub fn server_name(conn: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("server").query(conn).unwrap_or_default();
    let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    match (field("valkey_version:"), field("redis_version:")) {
        (Some(v), _) => format!("Valkey {v}"),
        (None, Some(v)) => format!("Redis {v}"),
        _ => "?".into(),
    }
}

/// Measures every operation the server can run both ways; a Markdown table.
pub fn run(quick: bool) -> Result<String, BoxError> {
    let server = Server::start()?;
    let mut conn = server.connection()?;
    let (slices, per_slice) = if quick { (2, 500) } else { (10, 3000) };
    let mut out = format!(
        "## rdlock-bench --newer: the newer servers' commands beside the scripts\n\n- server: {}\n- slices: {slices} × {per_slice} operations per path, medians over slices\n\n",
        server_name(&mut conn)
    );
    out.push_str("| operation | path | commands/op | server CPU µs/op | client CPU µs/op | round trips/op |\n");
    out.push_str("|---|---|---:|---:|---:|---:|\n");
    for op in Op::ALL {
        let (script, newer) = op.paths();
        if !op.available(&mut conn) {
            out.push_str(&format!("| {} | {newer} | not offered by this server | | | |\n", op.name()));
            continue;
        }
        setup(&mut conn, op)?;
        let mut figures = [Figures::default(), Figures::default()];
        for k in 0..slices {
            let order = if k % 2 == 0 { [Path::Script, Path::Newer] } else { [Path::Newer, Path::Script] };
            for path in order {
                eprintln!("newer: {} by {path:?}, slice {}/{slices}", op.name(), k + 1);
                slice(&server, &mut conn, op, path, per_slice, &mut figures[usize::from(path == Path::Newer)])?;
            }
        }
        for (name, f) in [(script, &figures[0]), (newer, &figures[1])] {
            out.push_str(&format!(
                "| {} | {name} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
                op.name(),
                median(&f.commands),
                median(&f.server_us),
                median(&f.client_us),
                median(&f.round_trips)
            ));
        }
    }
    Ok(out)
}
