//! # rdlock-driver: the one driver behind every rdlock adapter
//!
//! `rdlock-core` decides; this crate carries its decisions out with the `redis` crate:
//! - [`convert`]: core commands to Redis pipelines (`EVALSHA`, falling back to `EVAL` on
//!   `NOSCRIPT`) and Redis values to core replies, in one place;
//! - [`Runtime`]: the little an async runtime must provide (spawn, sleep until, now, and how
//!   to yield);
//! - [`Client`] and [`Guard`]: the async lock API, generic over the runtime, with one
//!   background task per client for timers (renewals, polls, lost signals) and one for the
//!   shared pub/sub connection;
//! - [`blocking`]: the same API on plain threads;
//! - [`LossSignal`], [`TryLock`]: an owned lost-lease signal, and a single attempt's answer;
//! - [`Mutex`] and [`Codec`]: a lock whose value lives beside it, and how the value is encoded;
//! - [`SentinelConfig`]: connecting through Redis Sentinel, and following its failovers.
//!
//! Users pick an adapter crate (`rdlock-tokio`, `rdlock-async-std`, `rdlock-blocking`),
//! which names the runtime and re-exports these types.

#![warn(missing_docs)]

mod acl;
#[cfg(feature = "async")]
mod aio;
mod api;
mod attempt;
pub mod blocking;
mod cell;
mod cluster;
mod codec;
mod common;
mod config;
pub mod convert;
mod error;
mod exchange;
mod loaded;
mod loss;
mod metrics;
mod mutex;
mod owner;
mod pubsub;
mod quorum;
#[cfg(feature = "async")]
mod runtime;
mod scope;
mod sentinel;
mod sharded;
mod tls;

#[cfg(feature = "async")]
pub use aio::{Client, Guard, LockBuilder, RwLock, Semaphore};
#[cfg(feature = "async")]
pub use aio::{Hold, Owner, Scope};
#[cfg(feature = "async")]
pub use aio::{QuorumClient, QuorumGuard};
pub use attempt::TryLock;
// A mutex: a lock whose value lives beside it.
pub use acl::{ACL_COMMANDS, acl_rule};
#[cfg(feature = "async")]
pub use aio::{Mutex, MutexBuilder, MutexGuard};
#[cfg(feature = "serde")]
pub use codec::Json;
pub use codec::{Bytes, Codec};
pub use config::{ClientConfig, KeyspaceNotifications};
pub use error::Error;
pub use loss::LossSignal;
#[cfg(feature = "metrics")]
pub use metrics::describe_metrics;
pub use quorum::{quorum_options, quorum_resource};
pub use rdlock_core::{DEFAULT_MAX_VALUE, MAX_VALUE_LIMIT, MAX_VALUE_TTL};
pub use tls::{ClientIdentity, TlsConfig, TlsError};
// The core's types a caller meets: options, and the errors inside `Error`, so that callers
// can match them without depending on `rdlock-core`.
pub use cluster::{ClusterConfig, ClusterError};
pub use rdlock_core::{
    Acquire, Confirm, EntropyUnavailable, InvalidInput, LockError, LockOptions, LostReason, MAX_CAPACITY, MAX_TTL,
    MIN_TTL, ReleaseOutcome, Resource, ServerError, Sharing, Stats, TransportError,
};
// What an operator's inspection reads, and what a forced release did.
pub use rdlock_core::{ForceReleaseReply, Holder, Inspection, LockKind, Waiter};
/// The `redis` crate this driver is built on: [`Client::redis`] returns its client, and
/// [`Client::connect`] takes one.
pub use redis;
#[cfg(feature = "async")]
pub use runtime::Runtime;
pub use sentinel::{Credentials, DEFAULT_SENTINEL_PORT, SentinelConfig, SentinelError};
