//! A blocking client's two background threads: timers, and the shared pub/sub connection.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdlock_core::{Reply, ServerError};
use redis::{Connection, Msg, RedisResult};

use super::inner::Inner;
use crate::convert;
use crate::error::Error;
use crate::pubsub::{MESSAGES_AT_ONCE, Refusals, backoff};

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
/// (with every wanted channel) when it drops. Every failed session — a refused connection,
/// a refused `SUBSCRIBE`, a dropped link — backs off before the next one; a channel the server
/// refuses several sessions in a row fails its waits with the server's error.
fn pubsub(inner: Arc<Inner>) {
    let mut failures = 0;
    let mut refusals = Refusals::default();
    while inner.wait_pubsub() {
        if failures > 0 {
            // Sleeps, unless the client closes meanwhile.
            inner.pause(backoff(failures));
        }
        let (client, epoch) = inner.target();
        let conn = client.get_connection_with_timeout(inner.config.connection_timeout);
        let Ok(mut conn) = conn else {
            failures += 1;
            continue;
        };
        match session(&inner, &mut conn, epoch, &mut refusals, &mut failures) {
            Ok(()) => {}
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "pub/sub session ended; reconnecting");
            }
        }
        if inner.is_closed() {
            return;
        }
        inner.run_background(inner.subscriptions_lost());
    }
}

/// Serves one pub/sub connection until it fails (`Err`) or the client closes (`Ok`).
/// `failures` is reset once the server accepts a subscription. The connection is driven
/// directly (send, then read replies), so that a refused `SUBSCRIBE` is seen as such.
fn session(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    epoch: u64,
    refusals: &mut Refusals,
    failures: &mut u32,
) -> RedisResult<()> {
    let response_timeout = inner.config.response_timeout;
    conn.set_write_timeout(Some(response_timeout))?;
    let mut subscribed = HashSet::new();
    // Messages read while waiting for a confirmation.
    let mut early = VecDeque::new();
    let mut next_ping = Instant::now();
    // The read timeout the socket has: set again only when it changes (a system call).
    let mut read_timeout = None;
    let mut set_read_timeout = |conn: &mut Connection, t: Duration| {
        if read_timeout == Some(t) {
            return Ok(());
        }
        conn.set_read_timeout(Some(t)).map(|()| read_timeout = Some(t))
    };
    loop {
        if inner.epoch() != epoch {
            // The primary changed: subscribe there, and have waiters look again.
            return Err(std::io::Error::other("the primary changed").into());
        }
        // One command for every channel queued meanwhile, each way.
        let (subscribe, unsubscribe) = inner.take_pubsub();
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            set_read_timeout(conn, response_timeout)?;
        }
        if !subscribe.is_empty() {
            let accepted = match command(conn, "SUBSCRIBE", &subscribe, &mut early)? {
                Ok(()) => subscribe,
                Err(_) => {
                    // One channel refused fails the whole batch: learn which, one by one.
                    let mut accepted = Vec::new();
                    let mut retry = false;
                    for ch in subscribe {
                        match command(conn, "SUBSCRIBE", std::slice::from_ref(&ch), &mut early)? {
                            Ok(()) => accepted.push(ch),
                            Err(refusal) => match inner.refused(refusals, &ch, refusal) {
                                Some(requests) => inner.run_background(requests),
                                None => retry = true,
                            },
                        }
                    }
                    if retry {
                        return Err(std::io::Error::other("a subscription was refused; retrying").into());
                    }
                    accepted
                }
            };
            if !accepted.is_empty() {
                *failures = 0;
                let requests = inner.subscribed(refusals, &accepted);
                subscribed.extend(accepted);
                inner.run_background(requests);
            }
        }
        if !unsubscribe.is_empty() {
            let _ = command(conn, "UNSUBSCRIBE", &unsubscribe, &mut early)?;
            for ch in &unsubscribe {
                subscribed.remove(ch);
            }
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
        // The clock first: while locks wait, the state mutex is taken when a `PING` is due,
        // not after every message, when the waiter it woke wants the mutex (issue #16).
        if Instant::now() >= next_ping && inner.wants_pubsub_ping() {
            // Written after `sent`: every message read after its answer was published after
            // `sent` (`Engine::handle_pubsub_answer`); those read before it are handed in first.
            let sent = Instant::now();
            next_ping = sent + rdlock_core::PUBSUB_PING_EVERY;
            set_read_timeout(conn, response_timeout)?;
            ping(conn, &mut early)?;
            let msgs: Vec<Msg> = early.drain(..).collect();
            for chunk in msgs.chunks(MESSAGES_AT_ONCE) {
                inner.run_background(inner.messages(chunk));
            }
            inner.pubsub_answered(sent);
            continue;
        }
        // Messages read meanwhile go in one pass of the engine; else the next one is read.
        let msgs: Vec<Msg> = match early.is_empty() {
            false => early.drain(..).collect(),
            true => {
                set_read_timeout(conn, PUBSUB_POLL)?;
                match next_message(conn) {
                    Ok(msg) => vec![msg],
                    Err(e) if e.is_timeout() => Vec::new(),
                    Err(e) => return Err(e),
                }
            }
        };
        for chunk in msgs.chunks(MESSAGES_AT_ONCE) {
            inner.run_background(inner.messages(chunk));
        }
    }
}

/// The next message (any other reply is skipped).
/// Read through the crate's pub/sub view: a timed-out *response* read makes the connection
/// skip the next reply, which here would be a message (measured: most hand-off messages were
/// lost, and waiters fell back to polling). The view is forgotten rather than dropped, since
/// dropping it unsubscribes every channel; it holds nothing then (its message cache is empty:
/// this driver never asks it to cache).
fn next_message(conn: &mut Connection) -> RedisResult<Msg> {
    let mut view = conn.as_pubsub();
    let msg = view.get_message();
    std::mem::forget(view);
    msg
}

/// Sends `PING` and reads its answer (on a subscribed connection, `["pong", ""]`), keeping
/// the messages that arrive before it in `early`.
fn ping(conn: &mut Connection, early: &mut VecDeque<Msg>) -> RedisResult<()> {
    conn.send_packed_command(&redis::cmd("PING").get_packed_command())?;
    loop {
        let value = conn.recv_response()?;
        match Msg::from_value(&value) {
            Some(msg) => early.push_back(msg),
            None => return Ok(()),
        }
    }
}

/// Sends `SUBSCRIBE` or `UNSUBSCRIBE` for `channels` and reads its confirmations (one per
/// channel, back to back: none may be left behind, or the next command would read it as its
/// own reply), or its refusal (`Ok(Err(..))`: one error, nothing done). Messages that arrive
/// meanwhile are kept in `early`.
fn command(
    conn: &mut Connection,
    name: &str,
    channels: &[String],
    early: &mut VecDeque<Msg>,
) -> RedisResult<Result<(), ServerError>> {
    conn.send_packed_command(&redis::cmd(name).arg(channels).get_packed_command())?;
    let mut confirmed = 0;
    loop {
        let value = match conn.recv_response() {
            Ok(v) => v,
            Err(e) => return convert::refusal(&e).map(Err).ok_or(e),
        };
        if let Some(msg) = Msg::from_value(&value) {
            early.push_back(msg);
            continue;
        }
        if let Reply::Error(refusal) = convert::reply(value) {
            return Ok(Err(refusal));
        }
        confirmed += 1;
        if confirmed >= channels.len() {
            return Ok(Ok(()));
        }
    }
}
