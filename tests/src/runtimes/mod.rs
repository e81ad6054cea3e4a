//! The harness implementations, one per kind of adapter.

#[cfg(feature = "tokio")]
mod asynchronous;

#[cfg(feature = "tokio")]
pub use asynchronous::{Async, Executor, OnTokio};
