//! Seeded scenarios of the whole protocol against the fake server, with the invariants
//! checked after every step.
//!
//! - `RDLOCK_SIM_SCENARIOS=N` runs N scenarios (default 10,000) — a soak when large;
//! - `RDLOCK_SIM_FIRST=F` starts at seed F instead of 0, for soaks over fresh seeds;
//! - `RDLOCK_SIM_SEED=S` replays scenario S alone, printing its trace;
//! - `RDLOCK_SIM_LOOKALIKE=N` runs N scenarios (default 400) on look-alike keys only;
//! - `RDLOCK_SIM_VANISH=N` runs N scenarios (default 400) in which waiters vanish while queued.

use crate::sim;

use std::time::Instant;

use sim::{Bug, Stats};

const DEFAULT_SCENARIOS: u64 = 10_000;
/// The scenarios are split over this many tests so that the harness runs them in parallel.
const SHARDS: u64 = 4;

fn shard(index: u64) {
    if sim::env_u64("RDLOCK_SIM_SEED").is_some() {
        return;
    }
    let n = sim::env_u64("RDLOCK_SIM_SCENARIOS").unwrap_or(DEFAULT_SCENARIOS);
    let first = sim::env_u64("RDLOCK_SIM_FIRST").unwrap_or(0);
    #[allow(clippy::disallowed_methods)] // wall time of the run, for the report only
    let started = Instant::now();
    let mut total = Stats::default();
    for seed in (first + index..first + n).step_by(SHARDS as usize) {
        match sim::run(seed, Bug::None, false) {
            Ok(stats) => total.add(&stats),
            Err(_) => {
                // Replay with the trace for the report.
                let v = sim::run(seed, Bug::None, true).expect_err("a failing seed fails again");
                panic!("{v}");
            }
        }
    }
    println!("shard {index}: {} scenarios in {:.1?}: {total:?}", n.div_ceil(SHARDS), started.elapsed());
    // A third of the scenarios mix semaphores and read-write locks in.
    assert!(n < 100 || total.shares > total.acquired / 20, "too few shares were acquired: {total:?}");
    // Some keys of 30% of the scenarios are mutexes: their values are written, and some
    // writes of holders whose lease was lost are refused.
    assert!(n < 100 || total.stores > total.acquired / 20, "too few values were written: {total:?}");
    assert!(n < 100 || total.stores_refused > 0, "no stale write was refused: {total:?}");
}

#[test]
fn scenarios_0() {
    shard(0);
}

#[test]
fn scenarios_1() {
    shard(1);
}

#[test]
fn scenarios_2() {
    shard(2);
}

#[test]
fn scenarios_3() {
    shard(3);
}

#[test]
fn replay_one_seed() {
    let Some(seed) = sim::env_u64("RDLOCK_SIM_SEED") else { return };
    match sim::run(seed, Bug::None, true) {
        Ok(stats) => println!("seed {seed} passed: {stats:?}"),
        Err(v) => panic!("{v}"),
    }
}

/// Clients lock keys that look alike (`k`, `{k}`, `{k}x`, `a{b`, `{a{b}`, ...) at once; the
/// checker's invariants are per key, so a hand-off of one reaching a waiter of another is two
/// holders, or a holder the server does not know. (Also mixed into the shards above.)
#[test]
fn lookalike_keys() {
    if sim::env_u64("RDLOCK_SIM_SEED").is_some() {
        return;
    }
    let n = sim::env_u64("RDLOCK_SIM_LOOKALIKE").unwrap_or(400);
    let mut total = Stats::default();
    for seed in 0..n {
        let sc = || sim::Scenario::new(seed, Bug::None).with_lookalike_keys();
        match sim::run_scenario(sc(), false) {
            Ok(stats) => total.add(&stats),
            Err(_) => {
                panic!("look-alike keys: {}", sim::run_scenario(sc(), true).expect_err("a failing seed fails again"))
            }
        }
    }
    println!("{n} look-alike scenarios: {total:?}");
}

/// Waiters vanish while queued (killed, or dropped without clean-up), on long leases: once
/// the holder releases, the lock must reach a live waiter within one claim plus a poll per
/// vanished waiter ahead of it, never a lease. (Also mixed into the shards above.)
#[test]
fn vanishing_waiters() {
    if sim::env_u64("RDLOCK_SIM_SEED").is_some() {
        return;
    }
    let n = sim::env_u64("RDLOCK_SIM_VANISH").unwrap_or(400);
    let mut total = Stats::default();
    for seed in 0..n {
        let sc = || sim::Scenario::new(seed, Bug::None).with_vanishing_waiters();
        match sim::run_scenario(sc(), false) {
            Ok(stats) => total.add(&stats),
            Err(_) => {
                panic!("vanishing waiters: {}", sim::run_scenario(sc(), true).expect_err("a failing seed fails again"))
            }
        }
    }
    println!("{n} scenarios with vanishing waiters: {total:?}");
    assert!(total.ghost_checks > n / 2, "too few hand-offs to vanished waiters were checked: {total:?}");
}

/// The hash of seeds 0..500's traces (`RDLOCK_SIM_GOLDEN=N` for 0..N). A change that must
/// not change behaviour (a restructuring) keeps it: run this before and after, and compare.
#[test]
#[ignore = "a tool for refactorings: prints the hash to compare"]
fn golden_trace() {
    let n = sim::env_u64("RDLOCK_SIM_GOLDEN").unwrap_or(500);
    println!("golden trace of seeds 0..{n}: {:016x}", sim::golden(0..n));
}

#[test]
fn scenarios_are_reproducible() {
    for seed in [3, 17, 99] {
        let a = sim::run(seed, Bug::None, true).map(|s| s.steps);
        let b = sim::run(seed, Bug::None, true).map(|s| s.steps);
        assert_eq!(a.as_ref().ok(), b.as_ref().ok(), "seed {seed} ran differently twice");
    }
}
