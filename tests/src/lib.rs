//! Integration tests of rdlock against real `redis-server` processes: one set of cases,
//! written once, run for every runtime adapter enabled by a feature of this package.
//!
//! - [`harness::Harness`] is what a case needs from an adapter and its runtime: connect, the
//!   lock calls, the guard's accessors, a bounded wait for the lost signal, concurrent work
//!   and sleeping. Its methods are `async` for every adapter; the blocking adapter makes its
//!   synchronous calls inside them and gets concurrency from threads.
//! - [`runtimes`] implements it: once for every async adapter, generically over the driver's
//!   runtime ([`runtimes::Async`], with a `block_on` per runtime), and once for the blocking one.
//! - [`cases`] holds the cases, generic over the harness ([`counted`] those of semaphores and
//!   read-write locks, [`mutex`] those of the mutex, [`sentinel`] those of failovers under
//!   Redis Sentinel, [`cluster`] those of a Redis Cluster, [`quorum`] those of the fenced quorum lock, [`tls`] those over TLS); [`support`] the
//!   server-side checks.
//! - [`cases!`] stamps out one `#[test]` per case for a harness; `tests/integration.rs` invokes
//!   it once per enabled runtime, in a module named after it (`tokio::mutual_exclusion`, ...).
//!
//! Run with `cargo test -p rdlock-tests --features tokio` (or any of `tokio`, `async-std`,
//! `smol`, `blocking`, together or alone). Each case starts its own servers on free ports,
//! so the cases run in parallel; `redis-server` must be on `PATH` (or named by
//! `$RDLOCK_REDIS_SERVER`).

pub mod acl;
pub mod cases;
pub mod cluster;
pub mod counted;
pub mod durable;
pub mod harness;
pub mod inspect;
pub mod metrics;
pub mod mutex;
pub mod newer;
pub mod quorum;
pub mod runtimes;
pub mod scoped;
pub mod secrets;
pub mod sentinel;
pub mod support;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(any(feature = "tokio", feature = "async-std", feature = "smol"))]
pub mod yields;

use std::future::Future;
use std::time::Duration;

use harness::Harness;

/// The longest any case may run before it fails.
pub const CASE_BUDGET: Duration = Duration::from_secs(45);

/// Runs one case on harness `H`, unless `H` says it cannot apply.
pub fn run_case<H, F, Fut>(name: &'static str, case: F)
where
    H: Harness,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if let Some(why) = H::skip(name) {
        println!("[{}] {name} does not apply: {why}", H::NAME);
        return;
    }
    H::run(case, CASE_BUDGET);
}

/// One `#[test]` per case, for the harness given: `rdlock_tests::cases!(Harness);`.
#[macro_export]
macro_rules! cases {
    ($harness:ty) => {
        $crate::cases!(@in cases $harness;
            mutual_exclusion,
            fencing_across_restart,
            handoff_latency,
            a_long_wait_holds_its_heard_hand_off_without_a_confirmation,
            waiter_survives_pubsub_kill,
            waiter_outlives_vanished_holder,
            auto_renew_keeps_the_lock,
            lost_when_key_deleted,
            lost_before_anyone_else_acquires,
            replicate_confirm,
            thousand_waiters_one_pubsub_connection,
            idle_channels_leave_in_one_unsubscribe,
            a_burst_of_requests_keeps_one_connection,
            many_callers_and_short_leases_share_a_few_connections,
            scripts_are_loaded_once_per_server,
            bad_input,
            authenticated,
            release_semantics,
            concurrent_extends_are_each_answered,
            calls_return_by_their_deadline_while_the_server_stalls,
            release_after_a_restart_is_not_claimed,
            a_cancelled_caller_strands_no_other_wait,
            a_caller_that_runs_after_its_lease_gets_no_guard,
            a_refused_subscription_backs_off_and_fails_the_wait,
            an_evicting_server_is_detected_at_connect,
            cloned_config_clients_exclude,
            lost_keeps_one_waker_per_future,
            an_answer_does_not_wake_the_task_that_drove_it_in,
            zero_timeout_is_one_attempt,
            try_lock_reports_holder_ttl,
            loss_signal_moves_to_another_task,
            lookalike_keys_are_distinct_locks,
            shares_a_key_with_redis_py,
            vanished_waiters_cost_a_claim_each,
        );
        $crate::cases!(@in counted $harness;
            semaphore_never_exceeds_its_capacity,
            readers_share_and_a_writer_is_alone,
            a_writer_is_not_starved_by_a_stream_of_readers,
            a_crashed_readers_share_expires,
            counted_resources_refuse_bad_input,
            a_permit_confirm_shortfall_leaves_nothing,
            a_freed_permit_is_handed_to_the_waiter,
            a_writer_downgrades_and_the_readers_behind_it_join,
            many_permits_at_once_wait_their_turn,
        );
        $crate::cases!(@in scoped $harness;
            reentrant_owner_three_deep,
            an_outer_hold_dropped_first_keeps_the_lease,
            write_share_reentry,
            a_plain_lock_on_a_held_key_waits,
            reentry_after_loss_is_an_error,
            concurrent_first_acquisitions_share_one_lease,
            an_owners_second_caller_waits_for_its_first,
            with_lock_returns_the_value_and_releases,
            with_lock_stops_on_loss,
            with_lock_releases_after_a_panic,
            a_dropped_with_lock_releases,
        );
        $crate::cases!(@in mutex $harness;
            a_counter_in_a_mutex_ends_exact,
            a_frozen_holders_write_back_is_refused,
            a_mebibyte_value_round_trips,
            a_corrupt_value_is_a_typed_decode_error,
            a_value_key_of_another_type_is_refused,
            written_by_is_the_previous_writers_fence,
            a_dropped_guard_writes_nothing,
            an_unmodified_release_sends_no_store,
            a_value_ttl_applies_only_when_asked,
            confirm_covers_the_write_back,
        );
        $crate::cases!(@in inspect $harness;
            inspect_reads_a_lock_and_force_release_hands_it_on,
            inspect_reads_counted_resources_and_a_mutex_value,
            inspect_and_force_release_refuse_other_keys,
            inspect_and_force_release_follow_the_cluster_slots,
        );
        $crate::cases!(@in acl $harness;
            an_acl_user_of_one_namespace_uses_every_primitive,
            a_user_without_the_channel_pattern_gets_a_typed_error_at_the_first_wait,
        );
        $crate::cases!(@in metrics $harness;
            metrics_count_a_known_workload,
        );
        $crate::cases!(@in newer $harness;
            renewals_take_set_ifeq_where_the_server_has_it,
            a_holders_release_folds_the_owner_check_where_the_server_has_ifeq,
        );
        $crate::cases!(@in durable $harness;
            durable_confirm_holds_or_falls_short,
            durable_confirm_refused_without_aof_or_command,
        );
        $crate::cases!(@in sentinel $harness;
            sentinel_bad_inputs_are_typed_errors,
            a_confirmed_lock_survives_a_primary_kill,
            an_unreplicated_lock_is_reported_lost_after_a_failover,
            a_release_lost_in_a_failover_is_sent_again,
            a_waiter_follows_a_sentinel_failover,
            two_paused_sentinels_leave_the_client_working,
            sentinel_every_primitive_works_across_a_failover,
        );
        $crate::cases!(@in tls $harness;
            tls_lock_and_handoff,
            tls_replica_confirmation,
            tls_bad_certificates_are_refused_with_typed_errors,
            mutual_tls_with_and_without_a_client_certificate,
            tls_sentinel_handoff_across_a_failover,
            tls_cluster_handoff_across_shards,
        );
        $crate::cases!(@in quorum $harness;
            quorum_acquire_contend_release,
            quorum_a_caller_that_runs_after_its_lease_gets_no_guard,
            quorum_one_of_five_paused_still_acquires,
            quorum_three_of_five_down_fails_fast_and_leaves_nothing,
            quorum_a_majority_lost_while_held_is_reported,
            quorum_refuses_what_it_cannot_offer,
        );
        $crate::cases!(@in cluster $harness;
            cluster_mutual_exclusion_and_handoff_across_shards,
            cluster_every_primitive_works,
            cluster_a_migrated_slot_keeps_its_holder,
            cluster_a_replica_stall_in_another_shard_is_harmless,
            cluster_a_killed_primary_is_followed,
            cluster_a_half_migrated_slot_is_served,
            cluster_a_handoff_is_heard_not_polled,
            cluster_a_killed_pubsub_connection_is_replaced,
            cluster_a_waiter_follows_a_migrated_slot,
            cluster_a_manual_failover_keeps_the_lease_and_serves_the_waiter,
        );
    };
    (@in $module:ident $harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run_case::<$harness, _, _>(stringify!($case), $crate::$module::$case::<$harness>);
            }
        )*
    };
}
