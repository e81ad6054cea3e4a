//! A TCP proxy that injects network faults between a client and a server.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::server::HOST;

/// How often idle threads look at the flags (shutdown, pause, cut); also the
/// longest a blocked read or write lasts.
const TICK: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BUFFER_SIZE: usize = 16 * 1024;

/// A TCP proxy on a free loopback port forwarding to one target, with
/// switches for latency, stalls, cut connections and refused connections.
///
/// Runs on plain threads: one accepting, two per proxied connection. Dropping
/// the proxy closes every connection and joins all its threads.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    shutdown: AtomicBool,
    paused: AtomicBool,
    refuse: AtomicBool,
    delay_micros: AtomicU64,
    connections: Mutex<Vec<Connection>>,
    /// Tests only: holds a connection between its set-up and its registration.
    #[cfg(test)]
    hold: AtomicBool,
    #[cfg(test)]
    held: AtomicBool,
}

/// One proxied connection: both sockets (to close them from outside) and its
/// two forwarding threads.
#[derive(Debug)]
struct Connection {
    client: TcpStream,
    upstream: TcpStream,
    closed: Arc<AtomicBool>,
    pumps: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `target`.
    ///
    /// Each accepted connection opens its own connection to `target`; if that
    /// fails, the accepted one is closed.
    pub fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        // Non-blocking so the accept thread notices shutdown.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("testkit-proxy-{}", addr.port()))
                .spawn(move || accept_loop(&listener, target, &shared))?
        };
        Ok(Proxy { addr, target, shared, acceptor: Some(acceptor) })
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The proxy's URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}/", self.addr.port())
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Delays every chunk of data, in both directions, by `delay` from when the
    /// proxy received it; order is preserved. `Duration::ZERO` turns it off.
    /// Applies to data received from now on.
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_micros.store(micros, Ordering::SeqCst);
    }

    /// Stops forwarding: connections stay open and data received meanwhile is
    /// buffered, to be forwarded on [`resume`](Self::resume).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards again, starting with what was buffered while paused.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Closes every current connection on both sides, dropping buffered data.
    /// New connections are still accepted.
    pub fn cut(&self) {
        let connections = std::mem::take(&mut *self.shared.lock_connections());
        for connection in connections {
            connection.close();
        }
    }

    /// While `refuse` is true, new connections are closed as soon as they are
    /// accepted (one still being set up counts as new); current connections are left alone.
    pub fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Number of connections currently being proxied.
    pub fn connection_count(&self) -> usize {
        let mut connections = self.shared.lock_connections();
        prune(&mut connections);
        connections.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut();
    }
}

impl Shared {
    fn lock_connections(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A poisoned list is still a valid list of sockets to close.
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::SeqCst))
    }
}

impl Connection {
    fn close(self) {
        self.closed.store(true, Ordering::SeqCst);
        // Shutting the sockets down wakes both pumps and tells both peers at
        // once, even though the pumps hold their own handles.
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
        for pump in self.pumps {
            let _ = pump.join();
        }
    }

    fn is_finished(&self) -> bool {
        self.pumps.iter().all(JoinHandle::is_finished)
    }
}

/// Joins the threads of connections that have ended on their own.
fn prune(connections: &mut Vec<Connection>) {
    let (done, open): (Vec<_>, Vec<_>) = std::mem::take(connections).into_iter().partition(Connection::is_finished);
    *connections = open;
    for connection in done {
        connection.close();
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok((client, upstream)) = connect_upstream(client, target) else { continue };
                #[cfg(test)]
                while shared.hold.load(Ordering::SeqCst) {
                    shared.held.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Nothing is forwarded until the connection is in the list, and it joins the
                // list only if not refused meanwhile, checked under the list's lock, which
                // `cut` takes after `refuse(true)`: so a connection accepted before a
                // `refuse(true); cut()` never forwards after it (a client a case cut off once
                // kept a connection set up across the two, and acted while taken for gone).
                let mut connections = shared.lock_connections();
                if shared.refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = upstream.shutdown(Shutdown::Both);
                    continue;
                }
                if let Ok(connection) = start_pumps(client, upstream, shared) {
                    prune(&mut connections);
                    connections.push(connection);
                }
            }
            // WouldBlock when idle; other errors (e.g. out of descriptors)
            // are worth another try a moment later.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Opens the accepted connection's own connection to `target`; if that fails, the accepted
/// one is closed.
fn connect_upstream(client: TcpStream, target: SocketAddr) -> std::io::Result<(TcpStream, TcpStream)> {
    let set_up = |client: &TcpStream| {
        // Whether accepted sockets inherit non-blocking mode is platform-specific.
        client.set_nonblocking(false)?;
        let upstream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
        for stream in [client, &upstream] {
            stream.set_nodelay(true)?;
            stream.set_write_timeout(Some(TICK))?;
        }
        Ok(upstream)
    };
    match set_up(&client) {
        Ok(upstream) => Ok((client, upstream)),
        Err(err) => {
            let _ = client.shutdown(Shutdown::Both);
            Err(err)
        }
    }
}

/// Starts forwarding both ways.
fn start_pumps(client: TcpStream, upstream: TcpStream, shared: &Arc<Shared>) -> std::io::Result<Connection> {
    let directions = [(client.try_clone()?, upstream.try_clone()?), (upstream.try_clone()?, client.try_clone()?)];
    let mut connection =
        Connection { client, upstream, closed: Arc::new(AtomicBool::new(false)), pumps: Vec::with_capacity(2) };
    for (src, dst) in directions {
        let pump = Pump { src, dst, shared: Arc::clone(shared), closed: Arc::clone(&connection.closed) };
        let spawned = std::thread::Builder::new().name("testkit-proxy-pump".into()).spawn(move || pump.run());
        match spawned {
            Ok(handle) => connection.pumps.push(handle),
            Err(err) => {
                connection.close();
                return Err(err);
            }
        }
    }
    Ok(connection)
}

/// Forwards one direction of a connection: reads keep going all the time (so
/// data is buffered while paused), writes happen when a chunk is due.
struct Pump {
    src: TcpStream,
    dst: TcpStream,
    shared: Arc<Shared>,
    closed: Arc<AtomicBool>,
}

impl Pump {
    fn run(self) {
        if self.forward().is_err() {
            // Tear the whole connection down so the other direction stops too.
            self.closed.store(true, Ordering::SeqCst);
            let _ = self.src.shutdown(Shutdown::Both);
            let _ = self.dst.shutdown(Shutdown::Both);
        }
    }

    fn forward(&self) -> std::io::Result<()> {
        let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        let mut buf = vec![0; BUFFER_SIZE];
        let mut src_done = false;
        loop {
            if self.closed.load(Ordering::SeqCst) || self.shared.shutdown.load(Ordering::SeqCst) {
                return Ok(());
            }
            let paused = self.shared.paused.load(Ordering::SeqCst);
            if !paused {
                self.write_due(&mut queue)?;
            }
            if src_done && queue.is_empty() {
                // Pass the half-close on; the other direction may still be busy.
                let _ = self.dst.shutdown(Shutdown::Write);
                return Ok(());
            }
            let now = Instant::now();
            let wait = match queue.front() {
                Some((due, _)) if !paused => due.saturating_duration_since(now).clamp(Duration::from_millis(1), TICK),
                _ => TICK,
            };
            if src_done {
                std::thread::sleep(wait);
                continue;
            }
            self.src.set_read_timeout(Some(wait))?;
            match (&self.src).read(&mut buf) {
                Ok(0) => src_done = true,
                Ok(n) => queue.push_back((Instant::now() + self.shared.delay(), buf[..n].to_vec())),
                Err(err) if is_transient(&err) => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes the chunks whose time has come, in order. A write that would block
    /// leaves the rest queued so flags are checked again soon.
    fn write_due(&self, queue: &mut VecDeque<(Instant, Vec<u8>)>) -> std::io::Result<()> {
        while let Some((due, chunk)) = queue.front_mut() {
            if *due > Instant::now() {
                return Ok(());
            }
            match (&self.dst).write(chunk) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) if n == chunk.len() => {
                    queue.pop_front();
                }
                Ok(n) => {
                    chunk.drain(..n);
                }
                Err(err) if is_transient(&err) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection accepted before `refuse(true)` and set up across a `cut` is closed, not
    /// left to forward: a client "cut off" by a case kept one connection this way, and acted
    /// while the case took it for gone. Fails before the check under the list's lock: the
    /// read then waits out its timeout on a live connection.
    #[test]
    fn a_connection_set_up_across_refuse_and_cut_is_closed() -> Result<()> {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let proxy = Proxy::start(upstream.local_addr()?)?;
        proxy.shared.hold.store(true, Ordering::SeqCst);
        let mut client = TcpStream::connect(proxy.addr())?;
        while !proxy.shared.held.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        proxy.refuse(true);
        proxy.cut();
        proxy.shared.hold.store(false, Ordering::SeqCst);
        client.set_read_timeout(Some(Duration::from_secs(10)))?;
        let read = client.read(&mut [0; 1]);
        assert!(
            matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "{read:?}"
        );
        Ok(())
    }
}
