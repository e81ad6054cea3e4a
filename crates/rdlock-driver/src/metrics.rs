//! Counts and timings for dashboards, through the `metrics` facade (feature `metrics`): they
//! cost nothing until the application installs a recorder, and nothing at all without the
//! feature. Names and labels: docs/observability.md.
//!
//! Each lock's events are counted as the driver drains them from the engine (so every
//! adapter counts alike); what the events do not say (hand-offs heard, polls, unanswered
//! requests) comes from the growth of the engine's [`Stats`].

#[cfg(feature = "metrics")]
use std::time::Instant;

use rdlock_core::{Event, Stats};

/// One lock's clock readings: when its acquisition started and since when it is held.
#[derive(Debug, Default)]
pub(crate) struct Timing {
    #[cfg(feature = "metrics")]
    started: Option<Instant>,
    #[cfg(feature = "metrics")]
    held_since: Option<Instant>,
}

impl Timing {
    /// The acquisition starts now.
    pub(crate) fn start(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.started = Some(Instant::now());
        }
    }
}

/// A client's metrics: its label, and the engine totals already reported.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    client: Option<metrics::SharedString>,
    #[cfg(feature = "metrics")]
    reported: Stats,
}

#[cfg(not(feature = "metrics"))]
impl Meter {
    pub(crate) fn new(_config: &crate::ClientConfig) -> Self {
        Self::default()
    }

    pub(crate) fn event(&self, _timing: &mut Timing, _event: &Event) {}

    pub(crate) fn stats(&mut self, _now: Stats) {}
}

/// A connection for requests was made (the first, or one replacing a lost one).
pub(crate) fn connected(_config: &crate::ClientConfig) {
    #[cfg(feature = "metrics")]
    metrics::counter!("rdlock_connections_opened_total", labels(client(_config), [])).increment(1);
}

/// The pub/sub session ended (its waiters fall back to polls until it is back).
pub(crate) fn pubsub_lost(_config: &crate::ClientConfig) {
    #[cfg(feature = "metrics")]
    metrics::counter!("rdlock_pubsub_sessions_lost_total", labels(client(_config), [])).increment(1);
}

#[cfg(feature = "metrics")]
fn client(config: &crate::ClientConfig) -> Option<metrics::SharedString> {
    config.metrics_label.clone().map(metrics::SharedString::from_owned)
}

#[cfg(feature = "metrics")]
fn labels<const N: usize>(
    client: Option<metrics::SharedString>,
    extra: [(&'static str, &'static str); N],
) -> Vec<metrics::Label> {
    let mut v: Vec<metrics::Label> = extra.iter().map(|&(k, v)| metrics::Label::from_static_parts(k, v)).collect();
    if let Some(c) = client {
        v.push(metrics::Label::new("client", c));
    }
    v
}

#[cfg(feature = "metrics")]
impl Meter {
    pub(crate) fn new(config: &crate::ClientConfig) -> Self {
        Self { client: client(config), reported: Stats::default() }
    }

    fn counter<const N: usize>(
        &self,
        name: &'static str,
        extra: [(&'static str, &'static str); N],
    ) -> metrics::Counter {
        metrics::counter!(name, labels(self.client.clone(), extra))
    }

    /// An event of a lock whose clock readings are `timing`.
    pub(crate) fn event(&self, timing: &mut Timing, event: &Event) {
        use rdlock_core::{LostReason, ReleaseOutcome};
        let acquisition = |outcome| self.counter("rdlock_acquisitions_total", [("outcome", outcome)]).increment(1);
        match event {
            Event::Acquired { .. } => {
                acquisition("acquired");
                let now = Instant::now();
                if let Some(started) = timing.started.take() {
                    metrics::histogram!("rdlock_acquire_wait_seconds", labels(self.client.clone(), []))
                        .record(now.duration_since(started));
                }
                timing.held_since = Some(now);
                metrics::gauge!("rdlock_locks_held", labels(self.client.clone(), [])).increment(1.0);
            }
            Event::Busy { .. } => acquisition("busy"),
            Event::TimedOut => acquisition("timed_out"),
            Event::ReplicationShortfall { .. } => {
                if timing.held_since.is_none() {
                    acquisition("shortfall");
                }
                self.counter("rdlock_replication_shortfalls_total", []).increment(1);
            }
            Event::Failed(_) if timing.held_since.is_none() && timing.started.is_some() => acquisition("failed"),
            Event::Renewed { .. } => self.counter("rdlock_renewals_total", []).increment(1),
            Event::Lost { reason } => {
                let reason = match reason {
                    LostReason::NotOwner => "not_owner",
                    LostReason::Expired => "expired",
                };
                self.counter("rdlock_leases_lost_total", [("reason", reason)]).increment(1);
                self.held_ends(timing);
            }
            Event::Released { outcome } => {
                let outcome = match outcome {
                    ReleaseOutcome::Released => "released",
                    ReleaseOutcome::NotHeld => "not_held",
                    ReleaseOutcome::Unknown => "unknown",
                };
                self.counter("rdlock_releases_total", [("outcome", outcome)]).increment(1);
                self.held_ends(timing);
            }
            _ => {}
        }
    }

    /// The lease ended (released or lost): its hold time, once.
    fn held_ends(&self, timing: &mut Timing) {
        if let Some(since) = timing.held_since.take() {
            metrics::histogram!("rdlock_hold_seconds", labels(self.client.clone(), [])).record(since.elapsed());
            metrics::gauge!("rdlock_locks_held", labels(self.client.clone(), [])).decrement(1.0);
        }
    }

    /// The engine's totals now: their growth since the last reading is reported.
    pub(crate) fn stats(&mut self, now: Stats) {
        if now == self.reported {
            return;
        }
        let was = std::mem::replace(&mut self.reported, now);
        for (name, now, was) in [
            ("rdlock_requests_unanswered_total", now.requests_unanswered, was.requests_unanswered),
            ("rdlock_renewals_unanswered_total", now.renewals_unanswered, was.renewals_unanswered),
            ("rdlock_handoffs_total", now.handoffs, was.handoffs),
            ("rdlock_handoffs_heard_total", now.handoffs_heard, was.handoffs_heard),
            ("rdlock_handoffs_replied_total", now.handoffs_replied, was.handoffs_replied),
            ("rdlock_polls_total", now.polls, was.polls),
        ] {
            if now > was {
                self.counter(name, []).increment(now - was);
            }
        }
    }
}

/// Gives the installed recorder the unit and a one-line description of every metric rdlock
/// records (an exporter prints them as help text). Call it once, after installing the
/// recorder; the metrics are recorded with or without it.
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("rdlock_acquisitions_total", Unit::Count, "Acquisitions ended, by outcome");
    describe_histogram!("rdlock_acquire_wait_seconds", Unit::Seconds, "From the call to the lock held");
    describe_histogram!("rdlock_hold_seconds", Unit::Seconds, "From the lock held to its release or loss");
    describe_gauge!("rdlock_locks_held", Unit::Count, "Leases held now");
    describe_counter!("rdlock_releases_total", Unit::Count, "Releases answered, by what is known of the lease");
    describe_counter!("rdlock_renewals_total", Unit::Count, "Renewals that extended a lease");
    describe_counter!("rdlock_renewals_unanswered_total", Unit::Count, "Renewals without an answer (retried)");
    describe_counter!("rdlock_leases_lost_total", Unit::Count, "Leases lost, by reason");
    describe_counter!("rdlock_replication_shortfalls_total", Unit::Count, "Writes too few replicas confirmed");
    describe_counter!("rdlock_handoffs_total", Unit::Count, "Releases that handed the lock to the next waiter");
    describe_counter!("rdlock_handoffs_heard_total", Unit::Count, "Hand-offs a waiter heard announced");
    describe_counter!(
        "rdlock_handoffs_replied_total",
        Unit::Count,
        "Hand-offs to the client's own waiters read from its release's reply"
    );
    describe_counter!("rdlock_polls_total", Unit::Count, "Attempts waiters made on their poll schedule");
    describe_counter!("rdlock_requests_unanswered_total", Unit::Count, "Requests without an answer (retried)");
    describe_counter!("rdlock_connections_opened_total", Unit::Count, "Connections for requests made");
    describe_counter!("rdlock_pubsub_sessions_lost_total", Unit::Count, "Pub/sub sessions that ended");
}
