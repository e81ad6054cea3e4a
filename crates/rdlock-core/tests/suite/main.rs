//! The core's suites in one test binary, since most share the simulation's world (`sim`) and
//! one build of it serves them all. Pick one with its module's name:
//! `cargo test -p rdlock-core --test suite -- simulation::`.

mod sim;

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
