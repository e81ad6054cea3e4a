//! A client's two background tasks: the timer driver and the pub/sub connection.

use std::sync::Arc;

use futures_lite::StreamExt;
use rdlock_core::Transmit;

use crate::runtime::{Runtime, timeout};
use crate::shared::{Inner, backoff};

/// Fires the engine's timers (renewals, polls, deadlines, lost leases) and sends what they
/// produce, plus requests handed over by dropped guards. Ends once the client is closed and
/// every lock is settled.
pub(crate) async fn driver<R: Runtime>(inner: Arc<Inner<R>>) {
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
        futures_lite::future::or(inner.driver_signal.wait(), R::sleep_until(wake)).await;
    }
}

/// Owns the client's one pub/sub connection: made when the first wait needs it, made again
/// (with every wanted channel) when it drops.
pub(crate) async fn pubsub<R: Runtime>(inner: Arc<Inner<R>>) {
    inner.pubsub_signal.wait().await;
    let mut attempt = 0;
    loop {
        if inner.is_closed() {
            return;
        }
        let conn = timeout::<R, _>(inner.config.connection_timeout, inner.redis.get_async_pubsub()).await;
        let Some(Ok(conn)) = conn else {
            attempt += 1;
            R::sleep_until(R::now() + backoff(attempt)).await;
            continue;
        };
        attempt = 0;
        let (mut sink, mut stream) = conn.split();
        'connected: loop {
            // Subscribe in batches: one round trip for every channel queued meanwhile.
            let mut subscribe = Vec::new();
            while let Some(t) = inner.pop_pubsub() {
                match t {
                    Transmit::Subscribe(ch) => subscribe.push(ch),
                    Transmit::Unsubscribe(ch) => {
                        subscribe.retain(|c| *c != ch);
                        if sink.unsubscribe(&ch).await.is_err() {
                            break 'connected;
                        }
                    }
                    Transmit::Request(_) => {}
                }
            }
            if !subscribe.is_empty() {
                if sink.subscribe(&subscribe).await.is_err() {
                    break 'connected;
                }
                let (_, requests) = inner.with_engine(|s, now| {
                    for ch in &subscribe {
                        s.engine.handle_subscribed(ch, now);
                    }
                });
                spawn_run(&inner, requests);
            }
            if inner.is_closed() {
                return;
            }
            let next = futures_lite::future::or(async { Some(stream.next().await) }, async {
                inner.pubsub_signal.wait().await;
                None
            })
            .await;
            match next {
                Some(Some(msg)) => {
                    let (_, requests) = inner.with_engine(|s, now| {
                        s.engine.handle_message(msg.get_channel_name(), msg.get_payload_bytes(), now)
                    });
                    spawn_run(&inner, requests);
                }
                Some(None) => break 'connected,
                None => {}
            }
        }
        // Lost: every wanted channel is queued again; waiters re-check once it is back.
        tracing::debug!("pub/sub connection lost; reconnecting");
        let (_, requests) = inner.with_engine(|s, now| s.engine.handle_subscriptions_lost(now));
        spawn_run(&inner, requests);
    }
}

fn spawn_run<R: Runtime>(inner: &Arc<Inner<R>>, requests: Vec<rdlock_core::Request>) {
    for req in requests {
        let inner = inner.clone();
        R::spawn(async move { inner.run(vec![req]).await });
    }
}
