//! A deterministic world for rdlock's engine: virtual time, a fake server with expiry,
//! replicas and pub/sub, a lossy network, pauses, crashes and restarts, and a checker that
//! tests the lock's invariants after every step. A scenario is a pure function of its seed.
//!
//! Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

pub mod checker;
pub mod dice;
pub mod fake;
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
            "replay: RDLOCK_SIM_SEED={} cargo test -p rdlock-core --test simulation -- --nocapture",
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
