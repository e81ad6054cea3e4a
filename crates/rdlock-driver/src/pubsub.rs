//! What a pub/sub worker tells the engine, whichever way it reads its connection:
//! subscriptions accepted or refused (with the count of refusals that fails a channel's
//! waits), messages, and a session lost.

use std::collections::HashMap;
use std::time::Duration;

use rdlock_core::{Request, ServerError, Transmit};

use crate::cell::{Cell, Side};

/// Backoff between reconnection attempts.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.min(7))
}

/// Refusals of a channel's subscription in a row before its waits are failed.
const SUBSCRIBE_REFUSALS: u32 = 3;

/// Most messages handed to the engine in one pass (one hold of the client's mutex): a
/// backlog is handled in passes of this many, so that other callers get the mutex between.
pub(crate) const MESSAGES_AT_ONCE: usize = 512;

/// The (un)subscriptions queued meanwhile, as one `SUBSCRIBE` and one `UNSUBSCRIBE`: the last
/// word on each channel wins. One command each, whatever their number: a channel sent alone
/// costs a round trip, during which no message is read, and a mass of waiters granted at once
/// sends as many channels to leave at once (sharded channels go to their nodes' connections,
/// never here).
pub(crate) fn split(transmits: Vec<Transmit>) -> (Vec<String>, Vec<String>) {
    let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
    // From the last: the first word seen on a channel is its last (linear, however many).
    let mut seen = std::collections::HashSet::new();
    for t in transmits.into_iter().rev() {
        let (ch, into) = match t {
            Transmit::Subscribe(ch) => (ch, &mut subscribe),
            Transmit::Unsubscribe(ch) => (ch, &mut unsubscribe),
            Transmit::Request(_) | Transmit::SubscribeShard { .. } | Transmit::UnsubscribeShard { .. } => continue,
        };
        if seen.insert(ch.clone()) {
            into.push(ch);
        }
    }
    subscribe.reverse();
    unsubscribe.reverse();
    (subscribe, unsubscribe)
}

/// Counts, per channel, the pub/sub sessions in a row whose `SUBSCRIBE` the server refused.
#[derive(Debug, Default)]
pub(crate) struct Refusals(HashMap<String, u32>);

impl Refusals {
    /// Counts a refusal of `channel`; `true` when its waits must now be failed (a refusal
    /// that does not pass is retried, backing off, by reconnecting).
    pub(crate) fn refused(&mut self, channel: &str) -> bool {
        let n = self.0.entry(channel.to_owned()).or_default();
        *n += 1;
        let give_up = *n >= SUBSCRIBE_REFUSALS;
        if give_up {
            self.0.remove(channel);
        }
        give_up
    }

    /// The server accepted `channel`.
    pub(crate) fn accepted(&mut self, channel: &str) {
        self.0.remove(channel);
    }
}

impl<D: Side> Cell<D> {
    /// The (un)subscriptions queued since the last call, as channels to subscribe and to
    /// unsubscribe ([`split`]).
    pub(crate) fn take_pubsub(&self) -> (Vec<String>, Vec<String>) {
        let queued: Vec<Transmit> = self.pubsub().drain(..).collect();
        split(queued)
    }

    /// Whether the pub/sub connection is to be PINGed, at most every
    /// [`rdlock_core::PUBSUB_PING_EVERY`]: some lock waits.
    pub(crate) fn wants_pubsub_ping(&self) -> bool {
        self.state().engine.wants_pubsub_ping()
    }

    /// A `PING` written at `sent_at` on the pub/sub connection was answered, and every message
    /// read before its answer has been handed in: hand-offs heard from now on count from it.
    pub(crate) fn pubsub_answered(&self, sent_at: std::time::Instant) {
        self.state().engine.handle_pubsub_answer(sent_at);
    }

    /// The server accepted `channels`: each waiter on them re-checks its lock.
    pub(crate) fn subscribed(&self, refusals: &mut Refusals, channels: &[String]) -> Vec<Request> {
        if channels.is_empty() {
            return Vec::new();
        }
        let (_, requests) = self.with_engine(|s, now| {
            for ch in channels {
                refusals.accepted(ch);
                s.engine.handle_subscribed(ch, now);
            }
        });
        requests
    }

    /// The server refused `channel`: `None` while it is to be tried again (by reconnecting),
    /// else its waits fail with `refusal` and the requests that follow are returned.
    pub(crate) fn refused(&self, refusals: &mut Refusals, channel: &str, refusal: ServerError) -> Option<Vec<Request>> {
        if !refusals.refused(channel) {
            return None;
        }
        Some(self.with_engine(|s, now| s.engine.handle_subscription_refused(channel, refusal, now)).1)
    }

    /// Messages on subscribed channels, in the order read: handed to the engine in one pass,
    /// so that a backlog costs one lock of the mutex, one flush of the requests that follow
    /// (the confirmations of many hand-offs leave as one batch) and one wake sweep.
    pub(crate) fn messages(&self, msgs: &[redis::Msg]) -> Vec<Request> {
        if msgs.is_empty() {
            return Vec::new();
        }
        self.with_engine(|s, now| {
            for msg in msgs {
                s.engine.handle_message(msg.get_channel_name(), msg.get_payload_bytes(), now);
            }
        })
        .1
    }

    /// The session ended: every wanted channel is queued again, and waiters re-check once it
    /// is back.
    pub(crate) fn subscriptions_lost(&self) -> Vec<Request> {
        crate::metrics::pubsub_lost(&self.config);
        // A lost link may be a lost primary: ask the sentinels now.
        if let Some(watch) = self.watch.get() {
            watch.poke();
        }
        self.with_engine(|s, now| s.engine.handle_subscriptions_lost(now)).1
    }
}
