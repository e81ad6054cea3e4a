//! A floor measurement, not a lock: the scripts' granting floor (`grant.rs`, with rdlock's
//! scripts) with its messages relayed, as a client whose waiters share one pub/sub
//! connection must (issue #16). A reader reads the pub/sub connection and hands each message
//! to the waiting caller through a channel, as rdlock's pub/sub worker does: a task per client
//! on the async executors; on plain threads a thread per inbox, each with a connection of its
//! own (one subscribed before the reader blocks in its read; S2's clients wait on one inbox
//! each, after their warm-up's). Nothing else of rdlock's client: no engine, no state mutex,
//! no `PING`, no renewal.
//!
//! Its gap against the scripts' granting floor (the waiter reads its own connection) is what
//! the relay's hop costs a hand-off; rdlock's gap against it, what rdlock's client adds
//! beyond the hop. rdlock cannot drop the hop: one connection per waiter would break issue
//! #16's 100,000 waiters through one pub/sub connection.
//!
//! S2 only: one caller of a client waits at a time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_lite::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;

use super::grant::{BlockingReading, ONE_WAITER, Protocol, Reading, take_or_wait, take_or_wait_blocking};
use super::notify::{BlockingLinks, Links, subscribe_on};
use crate::BoxError;

/// How often a reader thread looks whether its client is gone.
const READER_POLL: Duration = Duration::from_millis(200);

/// Runs `future` on the executor the caller runs on: tokio's when inside a tokio runtime,
/// else smol's global executor (the two async executors the benchmark runs).
fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(future)),
        Err(_) => smol::spawn(future).detach(),
    }
}

/// On the async executors: a reader task per client, and what it relays.
#[derive(Debug)]
pub struct Relayed(tokio::sync::Mutex<UnboundedReceiver<Vec<u8>>>);

impl Reading for Relayed {
    fn start(links: &Arc<Links>) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = links.clone();
        // Ends when the connection closes (the run's server stops) or the client is gone
        // (its receiver dropped), and the links with it.
        spawn(async move {
            let mut stream = reader.stream.lock().await;
            loop {
                let next = futures_lite::future::or(stream.next(), async {
                    tx.closed().await;
                    None
                });
                match next.await {
                    Some(msg) if tx.send(msg.get_payload_bytes().to_vec()).is_ok() => {}
                    _ => return,
                }
            }
        });
        Self(tokio::sync::Mutex::new(rx))
    }

    async fn take_or_wait<P: Protocol>(
        &self,
        links: &Links,
        take: redis::Cmd,
        guard: P::Guard,
    ) -> Result<P::Guard, BoxError> {
        let mut relayed = self.0.try_lock().map_err(|_| ONE_WAITER)?;
        let messages = futures_lite::stream::poll_fn(|cx| relayed.poll_recv(cx));
        take_or_wait::<P, _>(links, take, guard, messages).await
    }
}

/// On plain threads: a reader thread per inbox, and what each relays.
#[derive(Debug)]
pub struct RelayedThreads {
    url: String,
    readers: Mutex<HashMap<String, mpsc::Receiver<Vec<u8>>>>,
    /// Set when the client is gone: the readers then end.
    gone: Arc<AtomicBool>,
}

impl Drop for RelayedThreads {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

impl RelayedThreads {
    /// A connection subscribed to `inbox`, and a reader thread relaying its messages.
    fn start_reader(&self, inbox: &str) -> Result<mpsc::Receiver<Vec<u8>>, BoxError> {
        let mut ps = (redis::Client::open(self.url.as_str())?.get_connection()?, HashSet::new());
        subscribe_on(&mut ps, inbox)?;
        let mut conn = ps.0;
        conn.set_read_timeout(Some(READER_POLL))?;
        let (tx, rx) = mpsc::channel();
        let gone = self.gone.clone();
        std::thread::Builder::new().name("relay".into()).spawn(move || {
            // The crate's pub/sub view, forgotten rather than dropped (dropping it unsubscribes).
            let mut view = conn.as_pubsub();
            while !gone.load(Ordering::Relaxed) {
                match view.get_message() {
                    Ok(msg) if tx.send(msg.get_payload_bytes().to_vec()).is_err() => break,
                    Ok(_) => {}
                    Err(e) if e.is_timeout() => {}
                    // The connection closed: the run's server stopped.
                    Err(_) => break,
                }
            }
            std::mem::forget(view);
        })?;
        Ok(rx)
    }
}

impl BlockingReading for RelayedThreads {
    fn start(url: &str) -> Self {
        Self { url: url.to_owned(), readers: Mutex::new(HashMap::new()), gone: Arc::new(AtomicBool::new(false)) }
    }

    fn take_or_wait<P: Protocol>(
        &self,
        links: &BlockingLinks,
        take: &redis::Cmd,
        inbox: &str,
        guard: P::Guard,
    ) -> Result<P::Guard, BoxError> {
        let mut readers = self.readers.try_lock().map_err(|_| ONE_WAITER)?;
        if !readers.contains_key(inbox) {
            let rx = self.start_reader(inbox)?;
            readers.insert(inbox.to_owned(), rx);
        }
        let relayed = &readers[inbox];
        take_or_wait_blocking::<P>(links, take, guard, |wait| match relayed.recv_timeout(wait) {
            Ok(payload) => Ok(Some(payload)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the relay ended".into()),
        })
    }
}
