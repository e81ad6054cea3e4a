//! # rdlock-faults: a history-checking fault suite for rdlock
//!
//! Worker processes (the `fault-worker` binary) contend for one lock on a "lock" Redis and,
//! while they hold it, write to a separate "ledger" Redis that no fault touches:
//!
//! - a **fenced** counter, through a script that refuses a fencing token lower than the
//!   highest it has seen and logs every accepted `(token, worker)` ([`ledger`]);
//! - an **unfenced** counter, bumped with `GET`, a short sleep, then `SET`: it loses an
//!   update whenever two holders overlap, so it measures mutual exclusion itself.
//!
//! Every worker logs what happened to it as JSON lines ([`record`]), stamped with
//! `CLOCK_MONOTONIC`, which all processes of one machine share ([`clock`]). The test drives
//! workers and injects faults through a [`harness::Harness`], which also logs each fault it
//! injects. At the end, [`checker::check`] reads the merged history and the ledger and
//! reports every violation of six properties:
//!
//! - **P1 mutual exclusion**: the ledger accepted no write under a stale token (its log of
//!   tokens never goes down, and every token in it was granted to the worker that wrote it,
//!   never to two workers); the unfenced counter equals the increments acknowledged;
//! - **P2 no lost wake-up**: once the lock is free, a waiter gets it within the stated bound;
//! - **P3 lost signal**: no worker acquires while another holder's lease is valid and its
//!   `lost()` has not fired, and `lost()` fires on time (or at once when a paused holder
//!   resumes);
//! - **P4 nothing leaks**: no key on the lock server without a TTL, and no lock key left by a
//!   failed acquisition ([`checker::scan_leaks`]);
//! - **P5 fences never go backwards**: across holders, in the order they acquired, fencing
//!   tokens strictly increase, also across failover and restart;
//! - **P6 the mutex's value is a register**: for a counter kept in a `Mutex<u64>` at the
//!   lock's key, in the order of fences each holder reads the value and the writer's fence of
//!   the last accepted write-back, and a refused write-back never shows.
//!
//! Randomness (fault timings) comes from a seeded generator ([`seed`]); each test prints its
//! seed, and `RDLOCK_FAULT_SEED` replays one.

#![warn(missing_docs)]

pub mod checker;
pub mod clock;
pub mod harness;
pub mod ledger;
pub mod record;
pub mod seed;
pub mod trace;
