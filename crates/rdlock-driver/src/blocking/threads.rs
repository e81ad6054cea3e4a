//! A blocking client's two background threads: timers, and the shared pub/sub connection.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdlock_core::Transmit;
use redis::{Connection, RedisResult};

use super::inner::Inner;
use crate::error::Error;

/// How long the pub/sub thread blocks on its socket before it looks for queued
/// (un)subscriptions: the most a new subscription waits for its turn.
const PUBSUB_POLL: Duration = Duration::from_millis(20);

/// Starts the timer thread and the pub/sub thread. Both end once the client is closed (its
/// last handle and guard are gone) and, for timers, every lock is settled.
pub(super) fn start(inner: &Arc<Inner>) -> Result<(), Error> {
    let spawn = |name: &str, body: fn(Arc<Inner>)| {
        let inner = inner.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || body(inner)).map(drop)
    };
    spawn("rdlock-timers", timers).and_then(|()| spawn("rdlock-pubsub", pubsub)).map_err(|e| {
        inner.close();
        Error::Redis(e.into())
    })
}

/// Fires the engine's timers (renewals, polls, deadlines, lost leases) and sends what they
/// produce.
fn timers(inner: Arc<Inner>) {
    while inner.wait_for_timer() {
        let requests = inner.fire_timers();
        inner.run_background(requests);
    }
}

/// Owns the client's one pub/sub connection: made when the first wait needs it, made again
/// (with every wanted channel) when it drops.
fn pubsub(inner: Arc<Inner>) {
    let mut attempt = 0;
    while inner.wait_pubsub() {
        let conn = inner.redis.get_connection_with_timeout(inner.config.connection_timeout);
        let Ok(mut conn) = conn else {
            attempt += 1;
            // Sleeps, unless the client closes meanwhile.
            inner.pause(backoff(attempt));
            continue;
        };
        attempt = 0;
        if let Err(e) = session(&inner, &mut conn) {
            tracing::debug!(error = %e, "pub/sub connection lost; reconnecting");
        }
        if inner.is_closed() {
            return;
        }
        // Every wanted channel is queued again; waiters re-check once it is back.
        let (_, requests) = inner.with_engine(|s, now| s.engine.handle_subscriptions_lost(now));
        inner.run_background(requests);
    }
}

/// Serves one pub/sub connection until it fails (`Err`) or the client closes (`Ok`).
fn session(inner: &Arc<Inner>, conn: &mut Connection) -> RedisResult<()> {
    let response_timeout = inner.config.response_timeout;
    conn.set_write_timeout(Some(response_timeout))?;
    let mut ps = conn.as_pubsub();
    let mut subscribed = HashSet::new();
    loop {
        // The last word on each channel wins; a batch subscribes every channel queued
        // meanwhile in one round trip.
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for t in inner.take_pubsub() {
            match t {
                Transmit::Subscribe(ch) => {
                    unsubscribe.retain(|c| *c != ch);
                    subscribe.push(ch);
                }
                Transmit::Unsubscribe(ch) => {
                    subscribe.retain(|c| *c != ch);
                    unsubscribe.push(ch);
                }
                Transmit::Request(_) => {}
            }
        }
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            ps.set_read_timeout(Some(response_timeout))?;
        }
        if !subscribe.is_empty() {
            // Redis runs one SUBSCRIBE for all its channels at once: the first confirmation
            // means every channel of the batch is live. The other confirmations follow it
            // back to back, and the next read (`get_message` below) skips them.
            ps.subscribe(&subscribe)?;
            let (_, requests) = inner.with_engine(|s, now| {
                for ch in &subscribe {
                    s.engine.handle_subscribed(ch, now);
                }
            });
            subscribed.extend(subscribe);
            inner.run_background(requests);
        }
        for ch in unsubscribe {
            // One channel per command: each reply is then read as its own confirmation.
            ps.unsubscribe(&ch)?;
            subscribed.remove(&ch);
        }
        if subscribed.is_empty() {
            // No message can come: sleep until the next subscription.
            if !inner.wait_pubsub() {
                return Ok(());
            }
            continue;
        }
        if inner.is_closed() {
            return Ok(());
        }
        ps.set_read_timeout(Some(PUBSUB_POLL))?;
        match ps.get_message() {
            Ok(msg) => {
                let (_, requests) = inner.with_engine(|s, now| {
                    s.engine.handle_message(msg.get_channel_name(), msg.get_payload_bytes(), now)
                });
                inner.run_background(requests);
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
}

/// Backoff between reconnection attempts.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.min(7))
}
