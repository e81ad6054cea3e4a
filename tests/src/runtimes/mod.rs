//! The harness implementations: one for every async adapter (generic over the driver's
//! runtime, with an executor per runtime), one for the blocking adapter.

#[cfg(any(feature = "tokio", feature = "async-std", feature = "smol"))]
mod asynchronous;
#[cfg(feature = "blocking")]
mod blocking;

#[cfg(any(feature = "tokio", feature = "async-std", feature = "smol"))]
pub use asynchronous::{Async, Executor};
#[cfg(feature = "async-std")]
pub use asynchronous::{AsyncStd, OnAsyncStd};
#[cfg(feature = "smol")]
pub use asynchronous::{OnSmol, Smol};
#[cfg(feature = "tokio")]
pub use asynchronous::{OnTokio, Tokio};
#[cfg(feature = "blocking")]
pub use blocking::Blocking;
