//! # rdlock-core: the sans-IO state machine of rdlock's Redis locks
//!
//! This crate decides everything about a lock and does nothing itself: it opens no socket,
//! reads no clock, sleeps nowhere and spawns nothing (its one contact with the system: an
//! [`Engine`] seeds its owner tokens from the operating system's random source when it is
//! created). Time comes in as `now` arguments, Redis commands go out as typed
//! [`Transmit`]s, replies come back as the core's own [`Reply`] type, and outcomes leave as
//! [`LockEvent`]s. The runtime adapters (`rdlock-tokio`,
//! `rdlock-async-std`, `rdlock-blocking`) drive it; so can any executor of your own.
//!
//! Every primitive is a lease driven the same way: a lock, a semaphore's permit (or several
//! at once), a read-write lock's read or write share ([`Resource`]). They differ only in the
//! scripts they run; an [`Engine`] holds any mix of them, and everything below applies to
//! all (a write share can also be [downgraded](Engine::downgrade)).
//!
//! ## The contract
//!
//! An [`Engine`] holds all locks of one client. Feed it inputs, then drain its outputs:
//!
//! - **inputs** (each takes `now`): caller actions [`Engine::acquire`] (or
//!   [`Engine::acquire_resource`]), [`Engine::release`], [`Engine::extend`],
//!   [`Engine::downgrade`], [`Engine::abandon`]; and what the world did:
//!   [`Engine::handle_reply`] (a reply, or the transport failure that left the request
//!   unanswered), [`Engine::handle_message`] (a pub/sub message),
//!   [`Engine::handle_subscribed`], [`Engine::handle_subscriptions_lost`] and
//!   [`Engine::handle_timeout`]; after a failover, [`Engine::handle_primary_changed`], and in a
//!   cluster ([`EngineConfig::cluster`]: requests name a slot, hand-offs are sharded)
//!   [`Engine::handle_slot_moved`] and [`Engine::handle_shard_unsubscribed`];
//! - **outputs**: [`Engine::poll_transmit`] (requests to send, channels to (un)subscribe),
//!   [`Engine::poll_event`] (outcomes per lock) and [`Engine::poll_timeout`] (when to call
//!   `handle_timeout` next).
//!
//! Every caller action but `abandon` returns an [`OpId`], and the engine answers it exactly
//! once: the [`LockEvent`] whose `op` it is. The exceptions are the caller's own doing: after
//! `abandon` nothing more is reported for the lock, and a release ends the lock's pending
//! extension or downgrade unanswered. News nobody asked for comes as a *notice* (`op: None`):
//! an automatic renewal's [`Event::Renewed`], or [`Event::Lost`] when validity runs out or a
//! renewal finds the key gone while no extension waits. A driver hands each answer to the
//! caller that holds its op, and notices to whoever watches the lease; it never has to guess
//! which event answers which call.
//!
//! Caller misuse (a reply to an unknown request, releasing what is not held) is a
//! [`Misuse`], distinct from lock outcomes; bad input is an [`InvalidInput`], refused before
//! anything is sent. Nothing here panics on what the network or the server sends.
//!
//! ## The run loop
//!
//! ```no_run
//! # use std::time::Instant;
//! # use rdlock_core::*;
//! # fn send(_: &Request) -> Result<Vec<Reply>, TransportError> { Err(TransportError::Timeout) }
//! let mut engine = Engine::new(EngineConfig::default())?; // seeded from the OS
//! let (id, op) = engine.acquire("orders", LockOptions::default(), Acquire::Wait { deadline: None }, Instant::now())?;
//! 'run: loop {
//!     while let Some(t) = engine.poll_transmit() {
//!         match t {
//!             Transmit::Request(req) => {
//!                 let reply = send(&req); // on req.route's connection
//!                 engine.handle_reply(req.id, reply, Instant::now())?;
//!             }
//!             Transmit::Subscribe(_) | Transmit::Unsubscribe(_) => { /* pub/sub connection */ }
//!             // Only with `EngineConfig::cluster`: on the slot's primary.
//!             Transmit::SubscribeShard { .. } | Transmit::UnsubscribeShard { .. } => {}
//!         }
//!     }
//!     while let Some(LockEvent { lock, op: answered, event }) = engine.poll_event() {
//!         // The answer to our acquire carries its op; a notice (`None`) answers nobody.
//!         if answered == Some(op) {
//!             assert_eq!(lock, id);
//!             match event {
//!                 Event::Acquired { fence, .. } => println!("holding with fence {fence}"),
//!                 other => println!("not acquired: {other:?}"),
//!             }
//!             break 'run;
//!         }
//!     }
//!     // Sleep until engine.poll_timeout() or until a message arrives, then:
//!     engine.handle_timeout(Instant::now());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The protocol
//!
//! The lock key is the user's key verbatim, holding a 128-bit owner token (drawn from a
//! generator each engine seeds with 256 bits from the operating system when it is created) (the layout of
//! the common single-instance locks of other languages). Its fence counter, wait queue and
//! hand-off channel have names that start with the key and share its cluster slot
//! ([`LockKeys`]). Acquisition is one script call that takes the lock (bumping the fence),
//! confirms an earlier take or a hand-off of ours (idempotent after an ambiguous timeout), or
//! queues the caller; it never takes a free lock ahead of a queued waiter. Release hands the
//! lock to the first queued waiter inside the same script as a short *claim*
//! ([`HANDOFF_CLAIM`]) and announces it on the channel; the waiter owns the lock once it
//! confirms the claim (one round trip), so a waiter that died while queued holds the others
//! up for one claim, not a lease, and the releaser cannot barge back in.
//! Waiters also poll (at most every `poll_cap`), so a lost message costs only that.
//! Optional `WAIT` confirmation rides in the same pipeline as the script.
//! See `docs/protocol.md` for the scripts and the safety argument.
//!
//! ## A quorum of independent primaries
//!
//! [`Quorum`] is a second machine with the same run loop, for a lock held on a majority of
//! independent primaries: each attempt takes the key on every member and raises the fence
//! counters of a majority to one fence, so that fences strictly increase across any two
//! majorities (`docs/protocol.md`, "Quorum lock over independent primaries"). Its requests
//! name [`Node::Member`]; its jitter and tokens come from the [`Rng`] it is given.

#![warn(missing_docs)]

mod command;
mod engine;
mod error;
mod event;
mod ids;
mod keys;
mod machine;
mod options;
mod quorum;
mod reply;
mod script;
mod stats;
mod subscriptions;
mod token;

pub use command::{Args, Class, Command, Node, Request, RequestId, Route, Transmit};
pub use engine::{
    Engine, EngineConfig, FENCE_TTL, HANDOFF_CLAIM, LeaseView, LockId, LockInfo, OpId, PUBSUB_PING_EVERY,
};
pub use error::{EntropyUnavailable, InvalidInput, LockError, Misuse, NotDurable};
pub use event::{Event, LockEvent, LostReason, ReleaseOutcome, Warning};
pub use ids::{IdHasher, IdMap};
pub use keys::{LAYOUT, LockKeys, MARKER, MAX_KEY_LEN, Role, hash_tag, slot};
pub use options::{
    Acquire, Confirm, Durability, LockOptions, MAX_POLL_CAP, MAX_TTL, MAX_VALUE_TTL, MIN_TTL, Resource, Sharing,
};
pub use quorum::{MAX_MEMBERS, Quorum, QuorumOptions};
pub use reply::{Reply, ServerError, TransportError};
pub use script::{
    AcquireArgs, AcquireReply, ConfirmArgs, ConfirmReply, Confirmed, DEFAULT_MAX_VALUE, ExtendArgs, ExtendReply,
    ForceReleaseArgs, ForceReleaseReply, Holder, Inspection, LockKind, MAX_CAPACITY, MAX_VALUE_LIMIT, Mode, PermitArgs,
    PermitChangeArgs, PermitExtendArgs, PermitKeys, PermitReleaseArgs, QuorumFenceArgs, QuorumFenceReply,
    QuorumTakeArgs, QuorumTakeReply, ReleaseArgs, ReleaseBatchArgs, ReleaseReply, Script, SharedReleaseArgs, StoreArgs,
    StoreReply, StoredValue, Waiter, value_key,
};
pub use stats::Stats;
pub use subscriptions::Subscriptions;
pub use token::{OwnerToken, Rng};
