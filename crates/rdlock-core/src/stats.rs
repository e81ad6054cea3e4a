//! Running totals of what an engine did that its events do not say: a driver turns their
//! growth into metrics.

/// What an engine has done since it was made ([`crate::Engine::stats`]). Each field only
/// grows; a driver reports the difference between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests whose reply did not come (a transport failure or a timeout): their outcome
    /// is unknown and the engine resolves it by asking again.
    pub requests_unanswered: u64,
    /// Renewals of a lease whose outcome was unknown, each retried while validity lasts.
    pub renewals_unanswered: u64,
    /// Releases that handed the lock to the next waiter in its queue (heard or not).
    pub handoffs: u64,
    /// Hand-offs a waiting lock heard announced (rather than found by its poll).
    pub handoffs_heard: u64,
    /// Hand-offs to a waiting lock of this engine that the reply of this engine's own release
    /// announced, ahead of their message (counted among `handoffs_heard` too; one that came
    /// while the waiter's attempt was in flight is counted by that attempt's reply instead).
    pub handoffs_replied: u64,
    /// Attempts a waiting lock made on its poll schedule (no hand-off heard in time).
    pub polls: u64,
    /// Re-checks of a waiting lock whose subscription became active after its attempt was
    /// sent (a hand-off may have come before it): batched for plain locks.
    pub rechecks: u64,
    /// Messages handled from subscribed channels (hand-offs, free notices, and those for no
    /// lock of this engine): against the server's count of messages published, how far the
    /// client's reading lags.
    pub messages: u64,
}
