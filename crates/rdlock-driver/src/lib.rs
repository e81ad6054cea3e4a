//! # rdlock-driver: the one driver behind every rdlock adapter
//!
//! `rdlock-core` decides; this crate carries its decisions out with the `redis` crate:
//! - [`convert`]: core commands to Redis pipelines (`EVALSHA`, falling back to `EVAL` on
//!   `NOSCRIPT`) and Redis values to core replies, in one place;
//! - [`Runtime`]: the little an async runtime must provide (spawn, sleep until, now);
//! - [`Client`] and [`Guard`]: the async lock API, generic over the runtime, with one
//!   background task per client for timers (renewals, polls, lost signals) and one for the
//!   shared pub/sub connection;
//! - [`blocking`]: the same API on plain threads.
//!
//! Users pick an adapter crate (`rdlock-tokio`, `rdlock-async-std`, `rdlock-blocking`),
//! which names the runtime and re-exports these types.

#![warn(missing_docs)]

pub mod blocking;
#[cfg(feature = "async")]
mod client;
mod common;
mod config;
pub mod convert;
mod error;
#[cfg(feature = "async")]
mod runtime;
#[cfg(feature = "async")]
mod shared;
#[cfg(feature = "async")]
mod signal;
#[cfg(feature = "async")]
mod tasks;

#[cfg(feature = "async")]
pub use client::{Client, Guard, LockBuilder};
pub use config::{ClientConfig, random_seed};
pub use error::Error;
pub use rdlock_core::{Acquire, Confirm, LockOptions, LostReason, ReleaseOutcome};
#[cfg(feature = "async")]
pub use runtime::Runtime;
