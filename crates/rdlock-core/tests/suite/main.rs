//! The core's suites in one test binary, since most share the simulation's world (`sim`) and
//! one build of it serves them all. Pick one with its module's name:
//! `cargo test -p rdlock-core --test suite -- properties::` (a filter is matched
//! anywhere in a test's name: `-- simulation:: --skip quorum_` leaves out `quorum_simulation`).

mod sim;

/// Where the property tests keep the failures they found, to replay them first on every run:
/// beside each suite's source (`properties.proptest-regressions`). Proptest's default looks
/// for the nearest folder with a `main.rs`, which is this binary's, and would keep them apart.
fn saved() -> Option<Box<dyn proptest::test_runner::FailurePersistence>> {
    Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions")))
}

mod cluster;
mod differential;
mod fake_redis;
mod names;
mod negative_control;
mod properties;
mod quorum_differential;
mod quorum_simulation;
mod quorum_transitions;
mod simulation;
mod transitions;
