//! The checker can see violations: the same simulation against deliberately broken scripts
//! must report one within a bounded number of scenarios.

use crate::sim;

use sim::Bug;

/// Scenarios tried before declaring the checker blind.
const BUDGET: u64 = 2_000;

/// The first seed whose scenario the checker rejects, with its report.
fn first_violation(bug: Bug) -> Option<(u64, String)> {
    (0..BUDGET).find_map(|seed| sim::run(seed, bug, false).err().map(|v| (seed, v.message)))
}

#[test]
fn release_without_owner_check_is_caught() {
    let (seed, message) =
        first_violation(Bug::ReleaseWithoutOwnerCheck).expect("no violation found: the checker is blind");
    println!("seed {seed}: {message}");
}

#[test]
fn extend_without_owner_check_is_caught() {
    let (seed, message) =
        first_violation(Bug::ExtendWithoutOwnerCheck).expect("no violation found: the checker is blind");
    println!("seed {seed}: {message}");
}

#[test]
fn a_full_lease_hand_off_to_a_vanished_waiter_is_caught() {
    // The protocol before claims: each vanished waiter holds the lock for its whole TTL.
    let (seed, message) = (0..BUDGET)
        .find_map(|seed| {
            let sc = sim::Scenario::new(seed, Bug::FullLeaseHandoff).with_vanishing_waiters();
            sim::run_scenario(sc, false).err().map(|v| (seed, v.message))
        })
        .expect("no violation found: the checker is blind to ghost waiters");
    assert!(message.contains("vanished waiter"), "seed {seed}: {message}");
    println!("seed {seed}: {message}");
}

/// The first seed of a scenario with semaphores and read-write locks whose run the checker
/// rejects.
fn first_counted_violation(bug: Bug) -> Option<(u64, String)> {
    (0..BUDGET).find_map(|seed| {
        let sc = sim::Scenario::new(seed, bug);
        let sc = sc.with_counted_resources(&mut sim::dice::Dice::new(seed));
        sim::run_scenario(sc, false).err().map(|v| (seed, v.message))
    })
}

#[test]
fn shares_over_capacity_are_caught() {
    let (seed, message) =
        first_counted_violation(Bug::ShareOverCapacity).expect("no violation found: the checker is blind to capacity");
    assert!(message.contains("capacity") || message.contains("writer beside"), "seed {seed}: {message}");
    println!("seed {seed}: {message}");
}

#[test]
fn a_share_release_without_owner_check_is_caught() {
    let (seed, message) = first_counted_violation(Bug::ShareReleaseWithoutOwnerCheck)
        .expect("no violation found: the checker is blind to share releases");
    println!("seed {seed}: {message}");
}

#[test]
fn a_reader_admitted_past_a_queued_writer_is_caught() {
    let (seed, message) =
        first_counted_violation(Bug::ShareBarging).expect("no violation found: the checker is blind to barging");
    assert!(message.contains("past"), "seed {seed}: {message}");
    println!("seed {seed}: {message}");
}

#[test]
fn a_grant_that_does_not_return_the_value_is_caught() {
    let (seed, message) =
        first_violation(Bug::GrantWithoutValue).expect("no violation found: the checker is blind to grants' reads");
    assert!(message.contains("last write applied"), "seed {seed}: {message}");
    println!("seed {seed}: {message}");
}

#[test]
fn the_faithful_scripts_pass_the_same_seeds() {
    // The broken runs fail because of the bug, not because of the scenarios.
    for seed in 0..50 {
        if let Err(v) = sim::run(seed, Bug::None, false) {
            panic!("{v}");
        }
    }
}

#[test]
fn a_store_without_owner_check_is_caught() {
    // Only scenarios with mutexes can show it; a holder whose lease was lost writes anyway.
    let (seed, message) =
        first_violation(Bug::StoreWithoutOwnerCheck).expect("no violation found: the checker is blind to stores");
    assert!(message.contains("value of"), "seed {seed}: {message}");
    println!("seed {seed}: {message}");
}

#[test]
fn a_pubsub_ping_answer_read_ahead_of_older_messages_is_caught() {
    let (seed, message) =
        first_violation(Bug::PingOvertakesMessages).expect("no violation found: the checker is blind to early floors");
    println!("seed {seed}: {message}");
}
