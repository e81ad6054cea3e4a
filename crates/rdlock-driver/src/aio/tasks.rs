//! A client's three background tasks: the timer driver, the pub/sub connection, and the
//! watch over the response deadlines.

use std::sync::Arc;

use futures_lite::StreamExt;

use super::deadlines::Next;
use super::inner::Inner;
use crate::convert;
use crate::pubsub::{MESSAGES_AT_ONCE, Refusals, backoff};
use crate::runtime::{Runtime, timeout};

/// Fires the engine's timers (renewals, polls, deadlines, lost leases) and sends what they
/// produce, plus requests handed over by dropped guards. Ends once the client is closed and
/// every lock is settled.
pub(super) async fn driver<R: Runtime>(inner: Arc<Inner<R>>) {
    loop {
        let (_, mut requests) = inner.with_engine(|s, now| s.engine.handle_timeout(now));
        requests.extend(inner.take_background());
        for req in requests {
            let inner = inner.clone();
            R::spawn(async move { inner.run(vec![req]).await });
        }
        inner.take_detached().into_iter().for_each(R::spawn);
        let wake = {
            let mut st = inner.state();
            if inner.is_closed() && st.engine.is_empty() {
                return;
            }
            // Idle, still plan a wake-up: a lock taken meanwhile whose first timer is later
            // needs no notification (else every acquisition would wake this task).
            let wake = st.engine.poll_timeout().unwrap_or_else(|| R::now() + std::time::Duration::from_secs(1));
            st.timer_wake = Some(wake);
            wake
        };
        futures_lite::future::or(inner.side.driver_signal.wait(), R::sleep_until(wake)).await;
    }
}

/// Watches the response deadlines of the client's exchanges in flight (`deadlines.rs`): sleeps
/// until the earliest, wakes the exchanges past theirs. Ends once the client is closed and
/// nothing is in flight; exchanges sent after that time themselves.
pub(super) async fn deadlines<R: Runtime>(inner: Arc<Inner<R>>) {
    let deadlines = &inner.side.deadlines;
    loop {
        let (wakers, next) = deadlines.expire(R::now(), inner.config.response_timeout, inner.is_closed());
        wakers.into_iter().for_each(std::task::Waker::wake);
        match next {
            Next::At(at) => futures_lite::future::or(deadlines.signal.wait(), R::sleep_until(at)).await,
            Next::Idle => deadlines.signal.wait().await,
            Next::Retired => return,
        }
    }
}

/// Owns the client's one pub/sub connection: made when the first wait needs it, made again
/// (with every wanted channel) when it drops. Every failed session — a refused connection,
/// a refused `SUBSCRIBE`, a dropped link — backs off before the next one; a channel the server
/// refuses several sessions in a row fails its waits with the server's error.
pub(super) async fn pubsub<R: Runtime>(inner: Arc<Inner<R>>) {
    inner.side.pubsub_signal.wait().await;
    let mut failures = 0;
    let mut refusals = Refusals::default();
    loop {
        if inner.is_closed() {
            return;
        }
        if failures > 0 {
            R::sleep_until(R::now() + backoff(failures)).await;
        }
        let (client, epoch) = inner.target();
        let conn = timeout::<R, _>(inner.config.connection_timeout, client.get_async_pubsub()).await;
        let Some(Ok(conn)) = conn else {
            failures += 1;
            continue;
        };
        let (mut sink, mut stream) = conn.split();
        let mut next_ping = R::now();
        'connected: loop {
            if inner.epoch() != epoch {
                // The primary changed: subscribe there, and have waiters look again.
                break 'connected;
            }
            // One round trip for every channel queued meanwhile, each way.
            let (subscribe, unsubscribe) = inner.take_pubsub();
            if !unsubscribe.is_empty() && sink.unsubscribe(&unsubscribe).await.is_err() {
                failures += 1;
                break 'connected;
            }
            if !subscribe.is_empty() {
                let accepted = match sink.subscribe(&subscribe).await {
                    Ok(()) => subscribe,
                    Err(e) if convert::refusal(&e).is_some() => {
                        // One channel refused fails the whole batch: learn which, one by one.
                        let mut accepted = Vec::new();
                        let mut retry = false;
                        for ch in subscribe {
                            match sink.subscribe(&ch).await {
                                Ok(()) => accepted.push(ch),
                                Err(e) => {
                                    // Only a refusal counts towards failing the channel's waits.
                                    match convert::refusal(&e).and_then(|r| inner.refused(&mut refusals, &ch, r)) {
                                        Some(requests) => spawn_run(&inner, requests),
                                        None => retry = true,
                                    }
                                }
                            }
                        }
                        if retry {
                            failures += 1;
                            break 'connected;
                        }
                        accepted
                    }
                    Err(_) => {
                        failures += 1;
                        break 'connected;
                    }
                };
                if !accepted.is_empty() {
                    failures = 0;
                    spawn_run(&inner, inner.subscribed(&mut refusals, &accepted));
                }
            }
            if inner.is_closed() {
                return;
            }
            // The clock first: while locks wait, the state mutex is taken when a `PING` is due,
            // not after every message, when the waiter it woke wants the mutex (issue #16).
            let now = R::now();
            if now >= next_ping && inner.wants_pubsub_ping() {
                // Written after `sent`: every message read after its answer was published
                // after `sent` (`Engine::handle_pubsub_answer`). The crate's reader puts each
                // message in the stream before it completes a later answer, so those read
                // before the answer are in the stream now: handed in first. A PING the
                // server does not answer within the response timeout ends the session (a
                // stalled or half-open link), as on the blocking side.
                let sent = R::now();
                next_ping = sent + rdlock_core::PUBSUB_PING_EVERY;
                let answer = timeout::<R, _>(inner.config.response_timeout, sink.ping::<redis::Value>()).await;
                if !matches!(answer, Some(Ok(_))) || !drain_after_answer(&inner, &mut stream).await {
                    failures += 1;
                    break 'connected;
                }
                inner.pubsub_answered(sent);
                continue;
            }
            // Wakes for the next PING, or when none is planned once a PING period, to look
            // again: a lock that starts waiting on a channel still subscribed queues nothing
            // that would signal this task.
            let wake = if next_ping > now { next_ping } else { now + rdlock_core::PUBSUB_PING_EVERY };
            let next = futures_lite::future::or(async { Some(stream.next().await) }, async {
                futures_lite::future::or(inner.side.pubsub_signal.wait(), R::sleep_until(wake)).await;
                None
            })
            .await;
            // Every message already read goes with it, in passes of the engine: a backlog is gone
            // before the next (un)subscription's round trip.
            let open = match next {
                Some(Some(msg)) => hand_in_read(&inner, &mut stream, vec![msg]).await,
                Some(None) => false,
                None => true,
            };
            if !open {
                failures += 1;
                break 'connected;
            }
        }
        // Lost: every wanted channel is queued again; waiters re-check once it is back.
        tracing::debug!("pub/sub session ended; reconnecting");
        spawn_run(&inner, inner.subscriptions_lost());
    }
}

/// Hands the engine `msgs` and every message the stream has read already, in passes of the
/// engine; `false` when the stream ended (the connection is lost).
async fn hand_in_read<R: Runtime>(
    inner: &Arc<Inner<R>>,
    stream: &mut redis::aio::PubSubStream,
    msgs: Vec<redis::Msg>,
) -> bool {
    let (msgs, open) = read_ready(stream, msgs).await;
    hand_in(inner, &msgs);
    open
}

/// After a `PING`'s answer: hands the engine every message the stream read before it, all of
/// them, outside any cooperative budget (on tokio a spent budget reads as an empty stream);
/// `false` when the stream ended.
async fn drain_after_answer<R: Runtime>(inner: &Arc<Inner<R>>, stream: &mut redis::aio::PubSubStream) -> bool {
    let (msgs, open) = R::unconstrained(read_ready(stream, Vec::new())).await;
    hand_in(inner, &msgs);
    open
}

/// Gives the engine `msgs`, in passes of at most [`MESSAGES_AT_ONCE`].
fn hand_in<R: Runtime>(inner: &Arc<Inner<R>>, msgs: &[redis::Msg]) {
    for chunk in msgs.chunks(MESSAGES_AT_ONCE) {
        spawn_run(inner, inner.messages(chunk));
    }
}

/// `msgs` and every message the stream has read already, until a poll finds none; with
/// `false` when the stream ended.
async fn read_ready(stream: &mut redis::aio::PubSubStream, mut msgs: Vec<redis::Msg>) -> (Vec<redis::Msg>, bool) {
    loop {
        match futures_lite::future::poll_once(stream.next()).await {
            Some(Some(msg)) => msgs.push(msg),
            Some(None) => return (msgs, false),
            None => return (msgs, true),
        }
    }
}

fn spawn_run<R: Runtime>(inner: &Arc<Inner<R>>, requests: Vec<rdlock_core::Request>) {
    for req in requests {
        let inner = inner.clone();
        R::spawn(async move { inner.run(vec![req]).await });
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Instant;

    use super::{Inner, drain_after_answer};
    use crate::config::ClientConfig;
    use crate::runtime::Runtime;

    /// tokio as `rdlock-tokio` maps it: its budget lifted by `unconstrained`.
    struct Tokio;

    impl Runtime for Tokio {
        fn spawn<F>(future: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
            tokio::spawn(future);
        }

        fn sleep_until(_deadline: Instant) -> impl Future<Output = ()> + Send {
            std::future::pending()
        }

        fn unconstrained<F: Future + Send>(future: F) -> impl Future<Output = F::Output> + Send {
            tokio::task::unconstrained(future)
        }
    }

    /// Regression (found in review): after a `PING`'s answer the pub/sub task drains its
    /// stream, and reports the answer only then: every message read before the answer must be
    /// handed in first. The stream is a tokio channel, whose receive answers `Pending` once the
    /// task's cooperative budget (128) is spent, messages queued or not; so a drain of a
    /// backlog stopped early (127 of 1,000 handed in), and the rest would have counted from the
    /// `PING`. Run outside the budget (`Runtime::unconstrained`), it hands in all.
    #[test]
    fn a_drain_after_a_pings_answer_reads_every_message_before_it() {
        let server = rdlock_testkit::RedisServer::start().expect("a server");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        rt.block_on(async {
            let inner =
                Arc::new(Inner::<Tokio>::with_tasks(server.client(), ClientConfig::default()).expect("a client"));
            let mut pubsub = server.client().get_async_pubsub().await.expect("a pub/sub connection");
            pubsub.subscribe("ch").await.expect("subscribed");
            let (mut sink, mut stream) = pubsub.split();
            let mut pipe = redis::pipe();
            for i in 0..1000 {
                pipe.cmd("PUBLISH").arg("ch").arg(i).ignore();
            }
            pipe.query::<()>(&mut server.connection().expect("a connection")).expect("published");
            sink.ping::<redis::Value>().await.expect("answered");
            assert!(drain_after_answer(&inner, &mut stream).await, "the stream is open");
            let handed_in = inner.state().engine.stats().messages;
            assert_eq!(handed_in, 1000, "messages read before the answer were left behind");
        });
    }
}
