//! The sub-machines every primitive is built from: a [`Lease`] while held, a [`Waiter`] while
//! acquiring, a [`Release`] while letting go. Each holds the data that only means something in
//! its phase, and the rules that read it; the engine moves a primitive from one to the next.

mod lease;
mod release;
mod waiter;

pub use lease::Lease;
pub use release::{Release, Then};
pub use waiter::Waiter;

/// The property tests' settings: a fixed seed, so that CI runs the same cases every time
/// (`RDLOCK_PROPTEST_SEED=random` or a number explores, as for `tests/suite/properties.rs`), and
/// no regression files written beside the sources.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    const FIXED: u64 = 0x6d61_6368;
    let seed = match std::env::var("RDLOCK_PROPTEST_SEED").ok().as_deref() {
        None => FIXED,
        Some("random") => {
            use std::hash::{BuildHasher, RandomState};
            let seed = RandomState::new().hash_one(std::process::id());
            eprintln!("machine property tests: RDLOCK_PROPTEST_SEED={seed} replays this run");
            seed
        }
        Some(n) => n.trim().parse().unwrap_or(FIXED),
    };
    Config { cases: 512, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}
