//! The sub-machines every primitive is built from: a [`Lease`] while held, a [`Waiter`] while
//! acquiring, a [`Release`] while letting go. Each holds the data that only means something in
//! its phase, and the rules that read it; the engine moves a primitive from one to the next.

mod lease;
mod release;
mod waiter;

pub use lease::Lease;
pub use release::{Release, Then};
pub use waiter::Waiter;
