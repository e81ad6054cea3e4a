//! # rdlock-bench
//!
//! Measures rdlock's adapters against a raw `SET NX PX` + compare-and-delete spin lock, each
//! scenario run on a fresh `redis-server --save '' --appendonly no`, and prints Markdown
//! tables with ratios to the raw baseline of the same run, then the targets met or missed.
//!
//! ```text
//! cargo run --release -p rdlock-bench -- [--quick] [--scenario S1,S2,...] [--adapters raw,tokio,...]
//!                                        [--runs N] [--scale N,N,...] [--json FILE]
//! ```
//!
//! Scenarios: see `shared/peers.md` (S1-S3) and `docs/performance.md` (all, with the method);
//! S6 and S7 measure the semaphore and the read-write lock against raw counters; S8 and S9 a
//! counter in a `Mutex<u64>` against the same counter kept by hand beside a lock. C1-C3 are
//! S1-S3 on a cluster of 3 primaries; F1-F4 time following a failover (Sentinel, cluster).
//! Neither is in the default list: name them with `--scenario`.

mod adapters;
mod alloc;
mod backlog;
mod counted;
mod engine;
mod failover;
mod newer;
mod one_key;
mod report;
mod scale;
mod scenario;
mod scripts;
mod server;
mod wake;

use std::time::{Duration, Instant};

use adapters::{ADAPTERS, Adapter};
use scenario::{Scenario, Settings};
use server::Server;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Errors of the benchmark itself.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "\
usage: rdlock-bench [--quick] [--scenario S1,...,S10,C1,...,C3,F1,...,F4]
                    [--adapters raw,scripts,tokio,tokio-by-hand,async-std,blocking,
                                notify,notify-async-std,notify-blocking,
                                grant,grant-async-std,grant-blocking,
                                grant-scripts,grant-scripts-async-std,grant-scripts-blocking,
                                grant-relay,grant-relay-async-std,grant-relay-blocking,
                                scripts-smol,scripts-blocking,commands,commands-checked]
                    [--runs N] [--slices N] [--scale N,N,...] [--s4-ttl SECS] [--s4-hold SECS]
                    [--s5-ttl SECS] [--s5-no-renew]
                    [--tokio-workers N] [--json FILE]
       rdlock-bench --newer [--quick]
       rdlock-bench --scripts [--quick]
       rdlock-bench --engine [--quick]
       rdlock-bench --wake [--quick] [--runs N] [--scenario S2,S10 ...]

  --quick       about a second per scenario, one run (a smoke test); default: the durations of
                shared/peers.md, median of 3 runs
  --scenario    scenarios to run (default: S1-S10; quick: S1-S9 and C3); C1-C3: S1-S3 on a
                cluster of 3 primaries (raw routes by slot); F1-F4: time to follow a
                failover (Sentinel kill -9, SENTINEL FAILOVER, cluster kill -9,
                CLUSTER FAILOVER), every adapter but raw
  --adapters    adapters to run (default: all); raw, the baseline, is needed for the ratios;
                tokio-by-hand (the tokio lock, the counter by GET and SET) runs in S8 and S9 only;
                notify* (the floor of a notified hand-off: SET NX, a message on release, no
                lock logic) in S2 and S10 only, one per executor; grant, grant-async-std,
                grant-blocking (the floor of a first-come-first-served hand-off whose message
                carries the grant, no other lock logic), grant-scripts* (the same client
                sending rdlock's own scripts) and grant-relay* (those with the messages relayed
                by a reader per client) in S2 only, only when named; scripts (raw's client
                sending rdlock's two scripts: the server-side floor) in S1, S3, C1, C3;
                scripts-smol and scripts-blocking (the same on smol, on threads) in S1 and S3,
                only when named; blocking's × scripts is against scripts-blocking when it ran;
                commands (rdlock's six commands, no checks) and commands-checked (the same
                behind rdlock's argument checks) in S1 and S3, only when named
  --runs N      runs per scenario and adapter; figures are medians over runs
  --slices N    S1-S3, S6-S9 run in N slices per adapter, the adapters taking turns (default 10,
                quick 2), so that all of them see the same background load
  --scale N,... S4 and S5 with N locks (waiters) each instead of their own size, for the
                growth curve; 0 for none (default: none; quick: S5 at 20000 beside its
                quick size, enough to show a quadratic term)
  --s4-ttl SECS  the TTL of S4's locks (default 3, quick 1; rdlock's default is 10)
  --s4-hold SECS how long S4 holds its locks (default 10, quick 0.4)
  --s5-ttl SECS  the TTL of S5's waiters (default rdlock's, 10): with one long enough that no
                waiter's anchor is past half of it at the release, no heard hand-off is
                confirmed, which measures what the confirmations cost the mass release
  --s5-no-renew S5's waiters hold without auto-renewal: the mass release's hand-offs apart
                from the renewals of the locks granted earlier in its window
  --tokio-workers N
                worker threads of the tokio runtimes (0: a current-thread runtime; default:
                one per core)
  --json FILE   also write every run's figures, medians and ratios as JSON
  --no-newer-commands
                rdlock renews by script even where the server has SET IFEQ
  --cycles N    each client's loop in a slice of S1-S3, S8 and S9 runs N cycles, not for the
                slice's duration: two runs under an instruction counter with different N
                subtract to a cost per cycle
  --no-release-ping
                rdlock's contended releases go alone, not behind a PING
  --newer       instead: the newer servers' commands (SET IFEQ, hash-field TTL, functions)
                beside the scripts, per operation, on one server (RDLOCK_REDIS_SERVER)
  --scripts     instead: the server's cost of an uncontended cycle's script calls, pipelined,
                beside raw's, two trivial scripts' and the cheapest scripts with the same
                commands, on one server (RDLOCK_REDIS_SERVER)
  --engine      instead: the core alone, no I/O: an uncontended cycle (S1's take and
                release), then at several sizes, on one server and in a cluster: a mass
                release, and a mass hand-off to one waiting engine (in queue order and
                shuffled; held at once and confirmed first), beside a plain map's cost per
                removal (quick: 1000 and 20000; it fails if the cost per lock is not flat)
  --wake        instead: what a hand-off message's hops cost on each executor, no lock: from a
                PUBLISH (after a 1 ms pause) to the subscriber running, read directly or through
                one more task or thread (quick: 200 samples, else 2,000 per run); with --scenario,
                after the scenarios, and the targets state each adapter's S2 and S10 gap beside
                this floor on its executor (one hop more: as rdlock's waiters are woken)";

#[derive(Debug)]
struct Args {
    quick: bool,
    scenarios: Vec<Scenario>,
    adapters: Vec<Adapter>,
    runs: Option<usize>,
    slices: Option<u32>,
    scale: Option<Vec<usize>>,
    s4_ttl: Option<Duration>,
    s5_ttl: Option<Duration>,
    s4_hold: Option<Duration>,
    s5_no_renew: bool,
    json: Option<String>,
    newer: bool,
    scripts: bool,
    engine: bool,
    wake: bool,
    /// `--scenario` was given: with `--wake`, the scenarios run first.
    scenarios_named: bool,
}

/// A positive number of seconds, as a duration.
fn secs(value: &str, flag: &str) -> Result<Duration, String> {
    let s: f64 = value.parse().map_err(|e| format!("{flag}: {e}"))?;
    if !(s.is_finite() && s > 0.0 && s < 86_400.0) {
        return Err(format!("{flag}: {value} is not a number of seconds between 0 and a day"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_args() -> Result<Args, String> {
    let mut chosen = None;
    let mut adapters_named = false;
    let mut args = Args {
        quick: false,
        scenarios: Vec::new(),
        // `scripts-smol` and `scripts-blocking` only when named (`--adapters`).
        adapters: ADAPTERS
            .iter()
            .filter(|a| {
                ![report::FLOOR_SMOL, report::FLOOR_BLOCKING, report::FLOOR_COMMANDS, report::FLOOR_CHECKED]
                    .contains(&a.name)
                    && !adapters::is_grant(a.name)
            })
            .copied()
            .collect(),
        runs: None,
        slices: None,
        scale: None,
        s4_ttl: None,
        s5_ttl: None,
        s5_no_renew: false,
        s4_hold: None,
        json: None,
        newer: false,
        scripts: false,
        engine: false,
        wake: false,
        scenarios_named: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--quick" => args.quick = true,
            "--newer" => args.newer = true,
            "--scripts" => args.scripts = true,
            "--engine" => args.engine = true,
            "--wake" => args.wake = true,
            "--no-newer-commands" => adapters::NEWER_COMMANDS.store(false, std::sync::atomic::Ordering::Relaxed),
            "--cycles" => {
                let n: usize = value()?.parse().map_err(|e| format!("--cycles: {e}"))?;
                scenario::CYCLES.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            "--no-release-ping" => adapters::RELEASE_PING.store(false, std::sync::atomic::Ordering::Relaxed),
            "--scenario" | "--scenarios" => {
                chosen = Some(value()?.split(',').map(str::parse).collect::<Result<_, _>>()?);
            }
            "--adapters" | "--adapter" => {
                adapters_named = true;
                args.adapters = value()?
                    .split(',')
                    .map(|name| {
                        ADAPTERS.iter().find(|a| a.name.eq_ignore_ascii_case(name.trim())).copied().ok_or_else(|| {
                            let known: Vec<&str> = ADAPTERS.iter().map(|a| a.name).collect();
                            format!("unknown adapter {name:?} (known: {})", known.join(", "))
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => args.runs = Some(value()?.parse().map_err(|e| format!("--runs: {e}"))?),
            "--slices" => args.slices = Some(value()?.parse().map_err(|e| format!("--slices: {e}"))?),
            "--tokio-workers" => {
                let n: usize = value()?.parse().map_err(|e| format!("--tokio-workers: {e}"))?;
                adapters::TOKIO_WORKERS.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            "--scale" => {
                let sizes = value()?
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<usize>().map_err(|e| format!("--scale: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                let sizes: Vec<usize> = sizes.into_iter().filter(|&n| n > 0).collect();
                // `--scale 0`: no sizes, S4 and S5 at their own (quick mode's sizes too: none).
                args.scale = Some(sizes);
            }
            "--s5-no-renew" => args.s5_no_renew = true,
            "--s4-ttl" => args.s4_ttl = Some(secs(&value()?, "--s4-ttl")?),
            "--s5-ttl" => args.s5_ttl = Some(secs(&value()?, "--s5-ttl")?),
            "--s4-hold" => args.s4_hold = Some(secs(&value()?, "--s4-hold")?),
            "--json" => args.json = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    // The notified baselines stay out of the quick run (CI's smoke test) unless named: they
    // measure a floor, and their fallback waits are timed.
    if args.quick && !adapters_named {
        args.adapters.retain(|a| !adapters::is_notify(a.name));
    }
    // The quick run (CI's smoke test) also takes C3 once: about 10 s, most of it starting the
    // adapters' clusters.
    let quick_extra: &[Scenario] = if args.quick { &[Scenario::C3] } else { &[] };
    // S10 (1,000 waiters in turn: a few seconds per adapter) runs in quick mode only when named.
    let quick_skip = |s: &&Scenario| !args.quick || **s != Scenario::S10;
    args.scenarios_named = chosen.is_some();
    args.scenarios =
        chosen.unwrap_or_else(|| Scenario::ALL.iter().filter(quick_skip).chain(quick_extra).copied().collect());
    args.scenarios.sort();
    args.scenarios.dedup();
    Ok(args)
}

fn machine(redis_version: &str) -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("nproc", nproc.to_string()),
        ("cpu", model),
        ("redis_server", redis_version.to_owned()),
        ("kernel", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()),
        ("loadavg_at_start", loadavg()),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("rdlock-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), BoxError> {
    if args.newer {
        print!("{}", newer::run(args.quick)?);
        return Ok(());
    }
    if args.scripts {
        print!("{}", scripts::run(args.quick)?);
        return Ok(());
    }
    if args.wake && !args.scenarios_named {
        print!("{}", wake::run(args.quick, args.runs.unwrap_or(if args.quick { 1 } else { 3 }))?);
        return Ok(());
    }
    if args.engine {
        print!("{}", engine::run(args.quick)?);
        return Ok(());
    }
    let mut settings = if args.quick { Settings::quick() } else { Settings::full() };
    if let Some(n) = args.slices {
        settings.slices = n.max(1);
    }
    settings.s4_ttl = args.s4_ttl.unwrap_or(settings.s4_ttl);
    settings.s4_hold = args.s4_hold.unwrap_or(settings.s4_hold);
    settings.s5_renew = !args.s5_no_renew;
    settings.s5_ttl = args.s5_ttl.unwrap_or(settings.s5_ttl);
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let probe = Server::start()?;
    let version = probe.version()?;
    // What the targets name: the server, and whether a hand-off can fold its owner check
    // into `SET ... IFEQ` there (issue #16's S2 count).
    let served = {
        let mut conn = probe.connection()?;
        let name = newer::server_name(&mut conn);
        let used = adapters::NEWER_COMMANDS.load(std::sync::atomic::Ordering::Relaxed);
        match (newer::offers_set_ifeq(&mut conn), used) {
            (true, true) => format!("{name}, SET … IFEQ"),
            (true, false) => format!("{name}, IFEQ not used"),
            (false, _) => format!("{name}, no IFEQ"),
        }
    };
    drop(probe);
    let mut machine = machine(&version);
    let began = Instant::now();

    let mut results = report::Results::new();
    let mut failures: Vec<String> = Vec::new();
    // Sizes asked for replace S4's and S5's own size (quick mode's sizes come beside it).
    let replaced = args.scale.as_ref().is_some_and(|sizes| !sizes.is_empty());
    let plain: Vec<Scenario> = args.scenarios.iter().copied().filter(|&s| !replaced || !scale::scaled(s)).collect();
    for &s in &plain {
        results.insert(s, args.adapters.iter().filter(|a| a.runs(s)).map(|a| (a.name, Vec::new())).collect());
    }
    for run in 0..runs {
        for &s in &plain {
            let adapters: Vec<Adapter> = args.adapters.iter().filter(|a| a.runs(s)).copied().collect();
            // Alternate the adapters' order between runs (and slices), so that a drift of the
            // machine's load does not always favour the same one.
            let mut order: Vec<usize> = (0..adapters.len()).collect();
            if run % 2 == 1 {
                order.reverse();
            }
            let names: Vec<&str> = order.iter().map(|&i| adapters[i].name).collect();
            eprintln!("run {}/{runs}: {s} [{}]", run + 1, names.join(", "));
            let mut figures: Vec<Option<scenario::Metrics>> = vec![None; adapters.len()];
            // A failing adapter is reported and left out of this run; the others go on.
            let mut fail = |i: usize, e: BoxError| {
                let msg = format!("run {}: {s} on {}: {e}", run + 1, adapters[i].name);
                eprintln!("  FAILED {msg}");
                failures.push(msg);
            };
            match s.duration(&settings) {
                Some(total) => {
                    let mut rigs = Vec::new();
                    for &i in &order {
                        match (adapters[i].rig)(s, &settings) {
                            Ok(rig) => rigs.push((i, Some(rig))),
                            Err(e) => fail(i, e),
                        }
                    }
                    let slice = total / settings.slices.max(1);
                    for k in 0..settings.slices.max(1) {
                        let mut turn: Vec<usize> = (0..rigs.len()).collect();
                        if k % 2 == 1 {
                            turn.reverse();
                        }
                        for j in turn {
                            let (i, slot) = &mut rigs[j];
                            if let Some(Err(e)) = slot.as_mut().map(|rig| rig.slice(slice)) {
                                *slot = None;
                                fail(*i, e);
                            }
                        }
                    }
                    for (i, rig) in rigs {
                        match rig.map(|r| r.finish()) {
                            Some(Ok(m)) => figures[i] = Some(m),
                            Some(Err(e)) => fail(i, e),
                            None => {}
                        }
                    }
                }
                None => {
                    for &i in &order {
                        match (adapters[i].rig)(s, &settings).and_then(|r| r.finish()) {
                            Ok(m) => figures[i] = Some(m),
                            Err(e) => fail(i, e),
                        }
                    }
                }
            }
            if let Some(rows) = results.get_mut(&s) {
                for (row, m) in rows.iter_mut().zip(figures) {
                    row.1.extend(m);
                }
            }
        }
    }
    let mut sizes =
        args.scale.clone().unwrap_or_else(|| if args.quick { scale::QUICK_SIZES.to_vec() } else { Vec::new() });
    sizes.sort_unstable();
    sizes.dedup();
    let mut growth = scale::ScaleResults::new();
    for run in 0..runs {
        for &n in &sizes {
            // Quick mode's sizes are S5's alone: the hand-off is where a quadratic term was
            // (issue #19), and S4 at its quick TTL of 1 s outruns the blocking adapter.
            let scaled = |s: Scenario| scale::scaled(s) && (args.scale.is_some() || s == Scenario::S5);
            for &s in args.scenarios.iter().filter(|&&s| scaled(s)) {
                let mut set = settings.clone();
                (set.s4_locks, set.s5_waiters) = (n, n);
                // The growth curve is rdlock's own: the baseline's spin waits are no curve.
                let adapters: Vec<Adapter> =
                    args.adapters.iter().filter(|a| a.runs(s) && a.name != report::RAW).copied().collect();
                let mut order: Vec<usize> = (0..adapters.len()).collect();
                if run % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    let a = adapters[i];
                    eprintln!("run {}/{runs}: {s} at {n} on {}", run + 1, a.name);
                    match (a.rig)(s, &set).and_then(|r| r.finish()) {
                        Ok(m) => {
                            let rows = growth.entry((s, n)).or_default();
                            match rows.iter_mut().find(|(name, _)| *name == a.name) {
                                Some(row) => row.1.push(m),
                                None => rows.push((a.name, vec![m])),
                            }
                        }
                        Err(e) => {
                            let msg = format!("run {}: {s} at {n} on {}: {e}", run + 1, a.name);
                            eprintln!("  FAILED {msg}");
                            failures.push(msg);
                        }
                    }
                }
            }
        }
    }
    if args.scale.is_none() && args.quick {
        // Quick mode's reference size is S5's own run: its curve starts there.
        if let Some(rows) = results.get(&Scenario::S5) {
            let rows = rows.iter().filter(|(a, _)| *a != report::RAW).cloned().collect();
            growth.insert((Scenario::S5, settings.s5_waiters), rows);
        }
    }
    report::link_lock_rates(&mut results);
    machine.push(("loadavg_at_end", loadavg()));
    machine.push(("runs", runs.to_string()));
    machine.push(("slices", settings.slices.to_string()));
    if !settings.s5_renew {
        machine.push(("s5_waiters_renew", "no (--s5-no-renew)".into()));
    }
    if let Some(ttl) = args.s5_ttl {
        machine.push(("s5_waiters_ttl", format!("{} s (--s5-ttl)", ttl.as_secs_f64())));
    }
    let workers = adapters::TOKIO_WORKERS.load(std::sync::atomic::Ordering::Relaxed);
    machine.push(("tokio_workers", if workers == usize::MAX { "one per core".into() } else { workers.to_string() }));
    machine.push(("mode", if args.quick { "quick" } else { "full" }.into()));
    // CI's smoke run is a debug build: its figures say nothing about speed.
    machine.push(("build", if cfg!(debug_assertions) { "debug (figures not comparable)" } else { "release" }.into()));
    machine.push(("wall_s", format!("{:.0}", began.elapsed().as_secs_f64())));

    println!(
        "## rdlock-bench ({} mode, median of {runs} run{})\n",
        if args.quick { "quick" } else { "full" },
        if runs == 1 { "" } else { "s" }
    );
    for (k, v) in &machine {
        println!("- {k}: {v}");
    }
    println!(
        "\nRatios (×) are to `raw` measured in the same run on the same kind of fresh server, then the median over runs."
    );
    // `--wake` beside the scenarios: the wake floors after them, in the same invocation,
    // stated beside the hand-off gaps' bars.
    // A failed wake run costs only its floors, not the scenarios' figures.
    let wake = args
        .wake
        .then(|| wake::measure(args.quick, runs))
        .and_then(|w| w.map_err(|e| eprintln!("rdlock-bench: --wake failed, its floors are left out: {e}")).ok());
    print!("{}", report::tables(&results));
    print!("{}", scale::tables(&growth));
    if let Some(w) = &wake {
        print!("\n{}", w.table());
    }
    let floors = wake.as_ref().map(wake::Wake::floors).unwrap_or_default();
    let mut targets = report::targets(&results, &served, &floors);
    targets.extend(scale::targets(&growth));
    print!("{}", report::targets_table(&targets));
    if !failures.is_empty() {
        println!("\n### Failed runs (left out of the figures)\n");
        for f in &failures {
            println!("- {f}");
        }
    }
    let violations = report::exclusion_violations(&results);
    if !violations.is_empty() {
        println!("\n### Exclusion violated\n");
        for v in &violations {
            println!("- {v}");
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(&machine, &results, &growth, &targets))?;
        eprintln!("wrote {path}");
    }
    if !violations.is_empty() {
        return Err(format!("exclusion violated in {} run(s) of S6-S9", violations.len()).into());
    }
    Ok(())
}
