//! A deterministic world for rdlock's engine: virtual time, a fake server with expiry,
//! replicas and pub/sub, a lossy network, pauses, crashes and restarts, and a checker that
//! tests the lock's invariants after every step. A scenario is a pure function of its seed.

pub mod checker;
pub mod dice;
pub mod fake;
pub mod real;
pub mod scenario;
mod workload;
pub mod world;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use checker::Stats;
pub use fake::Bug;
pub use scenario::Scenario;
pub use world::World;

/// Virtual time is counted in nanoseconds.
pub const MS: u64 = 1_000_000;

/// The one real clock reading: virtual time 0.
pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)] // tests read the clock once, to anchor virtual time
    *BASE.get_or_init(Instant::now)
}

/// The instant of virtual time `t`.
pub fn at(t: u64) -> Instant {
    base() + Duration::from_nanos(t)
}

/// The virtual time of an instant.
pub fn ns(i: Instant) -> u64 {
    i.saturating_duration_since(base()).as_nanos() as u64
}

/// `text` with every `Instant { tv_sec: s, tv_nsec: n }` (how an instant prints) replaced by
/// its virtual time, `@<ns>`: a trace then reads the same in every run.
pub fn virtualize(text: &str) -> String {
    const OPEN: &str = "Instant { tv_sec: ";
    fn abs(t: &str) -> Option<(u128, &str)> {
        let (sec, rest) = t.split_once(", tv_nsec: ")?;
        let (nsec, rest) = rest.split_once(" }")?;
        Some((sec.parse::<u128>().ok()? * 1_000_000_000 + nsec.parse::<u128>().ok()?, rest))
    }
    let base_abs = abs(format!("{:?}", base()).strip_prefix(OPEN).unwrap_or_default()).map_or(0, |(v, _)| v);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        match abs(&rest[i + OPEN.len()..]) {
            Some((v, tail)) => {
                out.push_str(&format!("@{}", v.wrapping_sub(base_abs) as i128));
                rest = tail;
            }
            None => {
                out.push_str(OPEN);
                rest = &rest[i + OPEN.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A hash of the traces of `seeds`, Instants as virtual time: a refactoring that keeps the
/// engine's behaviour keeps it (`simulation.rs`, `golden_trace`).
pub fn golden(seeds: std::ops::Range<u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // `RDLOCK_SIM_GOLDEN_DUMP=path` also writes the traces, to diff two runs when the hash moves.
    let mut dump = std::env::var_os("RDLOCK_SIM_GOLDEN_DUMP").map(|p| std::fs::File::create(p).expect("dump file"));
    for seed in seeds {
        let sc = Scenario::new(seed, Bug::None);
        let mut world = World::new(sc, true);
        world.run();
        for line in world.trace().unwrap_or_default() {
            if let Some(f) = &mut dump {
                use std::io::Write;
                writeln!(f, "{seed} {line}").expect("dump write");
            }
            for b in line.bytes().chain([b'\n']) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

/// A broken invariant, with what it takes to replay it.
#[derive(Debug)]
pub struct Violation {
    pub seed: u64,
    pub bug: Bug,
    pub message: String,
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} ({:?}): {}", self.seed, self.bug, self.message)?;
        writeln!(
            f,
            "replay: RDLOCK_SIM_SEED={} cargo test -p rdlock-core --test suite -- simulation:: --skip quorum_ --nocapture",
            self.seed
        )?;
        let skip = self.trace.len().saturating_sub(5000);
        for line in &self.trace[skip..] {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs the scenario of `seed`; `trace` keeps a log of every step for the report.
pub fn run(seed: u64, bug: Bug, trace: bool) -> Result<Stats, Violation> {
    run_scenario(Scenario::new(seed, bug), trace)
}

/// Runs one scenario; `trace` keeps a log of every step for the report.
pub fn run_scenario(sc: Scenario, trace: bool) -> Result<Stats, Violation> {
    let (seed, bug) = (sc.seed, sc.bug);
    let mut world = World::new(sc, trace);
    let stats = world.run();
    match world.checker.violation.take() {
        None => Ok(stats),
        Some(message) => {
            Err(Violation { seed, bug, message, trace: world.trace().map(<[String]>::to_vec).unwrap_or_default() })
        }
    }
}

/// A number from the environment, if set.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}
