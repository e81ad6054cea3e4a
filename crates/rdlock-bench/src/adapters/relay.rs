//! A floor measurement, not a lock: the scripts' granting floor (`grant.rs`, any
//! [`Protocol`]) with its messages relayed, as a client whose waiters share one pub/sub
//! connection must (issue #16). One reader per client reads the pub/sub connection and hands
//! each message to the waiting caller through a channel: a task on the async executors, a
//! thread on plain threads, as rdlock's pub/sub worker does. Nothing else of rdlock's client:
//! no engine, no state mutex, no `PING`, no renewal.
//!
//! Its gap against the scripts' granting floor (the waiter reads its own connection) is what
//! the relay's hop costs a hand-off; rdlock's gap against it, what rdlock's client adds
//! beyond the hop. rdlock cannot drop the hop: one connection per waiter would break issue
//! #16's 100,000 waiters through one pub/sub connection.
//!
//! S2 only: one caller of a client waits at a time. On threads a reader is handed its
//! connection subscribed to one inbox, at the inbox's first wait (S2's warm-up and its key:
//! two per client).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_lite::StreamExt;

use super::grant::{Checked, ONE_WAITER, Protocol, take_or_wait, take_or_wait_blocking};
use super::notify::{BlockingLinks, Links, plain, subscribe_on};
use super::{Locker, Resource, Spec};
use crate::BoxError;

/// How often the reader thread looks whether its client is gone.
const READER_POLL: Duration = Duration::from_millis(200);

/// Runs `future` on the executor the caller runs on: tokio's when inside a tokio runtime,
/// else smol's global executor (the two async executors the benchmark runs).
fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(future)),
        Err(_) => smol::spawn(future).detach(),
    }
}

/// The async floor: the granting floor's connections, the messages read by a reader task.
pub struct GrantRelay<P: Protocol = Checked> {
    links: Arc<Links>,
    relayed: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>>,
    ids: P::Ids,
}

impl<P: Protocol> std::fmt::Debug for GrantRelay<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantRelay").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl<P: Protocol> Locker for GrantRelay<P> {
    type Guard = P::Guard;
    const REQUESTS: &'static [&'static str] = P::REQUESTS;
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let links = Arc::new(Links::open(url).await?);
        if let Some(load) = P::load() {
            load.query_async::<()>(&mut links.conn.clone()).await?;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = links.clone();
        // Ends when the connection closes (the run's server stops) or the client is gone.
        spawn(async move {
            let mut stream = reader.stream.lock().await;
            while let Some(msg) = stream.next().await {
                if tx.send(msg.get_payload_bytes().to_vec()).is_err() {
                    return;
                }
            }
        });
        Ok(Self { links, relayed: tokio::sync::Mutex::new(rx), ids: P::ids()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<P::Guard, BoxError> {
        let (take, inbox, guard) = P::take(&self.ids, key, spec)?;
        // Subscribed before it can be queued: a hand-off is never published unheard.
        self.links.subscribe(&inbox).await?;
        let mut relayed = self.relayed.try_lock().map_err(|_| ONE_WAITER)?;
        let messages = futures_lite::stream::poll_fn(|cx| relayed.poll_recv(cx));
        take_or_wait::<P, _>(&self.links, take, guard, messages).await
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<P::Guard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: P::Guard) -> Result<bool, BoxError> {
        P::released(self.links.conn.clone().send_packed_command(&P::release(&guard)?).await?)
    }

    fn is_valid(&self, _guard: &P::Guard) -> bool {
        true
    }
}

/// The same on plain threads: a reader thread blocks in the pub/sub socket's read and hands
/// each message to the waiting thread through a channel.
pub struct GrantRelayBlocking<P: Protocol = Checked> {
    links: BlockingLinks,
    url: String,
    /// Each inbox's reader: what it relays.
    relay: Mutex<HashMap<String, mpsc::Receiver<Vec<u8>>>>,
    /// Set when the client is gone: the reader then ends.
    gone: Arc<AtomicBool>,
    ids: P::Ids,
}

impl<P: Protocol> std::fmt::Debug for GrantRelayBlocking<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantRelayBlocking").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl<P: Protocol> Drop for GrantRelayBlocking<P> {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

impl<P: Protocol> GrantRelayBlocking<P> {
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

impl<P: Protocol> Locker for GrantRelayBlocking<P> {
    type Guard = P::Guard;
    const REQUESTS: &'static [&'static str] = P::REQUESTS;
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        let links = BlockingLinks::open(url)?;
        if let Some(load) = P::load() {
            load.query::<()>(&mut *links.conn.lock().unwrap_or_else(PoisonError::into_inner))?;
        }
        let (relay, gone) = (Mutex::new(HashMap::new()), Arc::new(AtomicBool::new(false)));
        Ok(Self { links, url: url.to_owned(), relay, gone, ids: P::ids()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<P::Guard, BoxError> {
        let (take, inbox, guard) = P::take(&self.ids, key, spec)?;
        let mut relay = self.relay.try_lock().map_err(|_| ONE_WAITER)?;
        if !relay.contains_key(&inbox) {
            let rx = self.start_reader(&inbox)?;
            relay.insert(inbox.clone(), rx);
        }
        let relayed = &relay[&inbox];
        take_or_wait_blocking::<P>(&self.links, &take, guard, |wait| match relayed.recv_timeout(wait) {
            Ok(payload) => Ok(Some(payload)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the relay ended".into()),
        })
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<P::Guard, BoxError> {
        plain(resource)?;
        self.lock(key, spec).await
    }

    async fn release(&self, guard: P::Guard) -> Result<bool, BoxError> {
        P::released(self.links.query::<redis::Value>(&P::release(&guard)?)?)
    }

    fn is_valid(&self, _guard: &P::Guard) -> bool {
        true
    }
}
