//! Which servers a client has loaded its scripts on. Scripts live per server, not per
//! connection: the client's first connection to a server loads them, later ones do not (a
//! blocking client's pool opens up to dozens). A server that lost them since (a restart,
//! `SCRIPT FLUSH`) is served by the `NOSCRIPT` fallback, which sends a script's source.

use std::collections::HashSet;
use std::sync::Mutex;

/// A server as the client connects to it: the primary of an epoch (a failover makes a new
/// one), or a cluster node by its address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Server {
    Primary(u64),
    Node(String),
}

impl Server {
    /// The server a connection made to `node` (a cluster's) or else to the primary of `epoch`
    /// reaches.
    pub(crate) fn of(node: Option<&redis::Client>, epoch: u64) -> Self {
        match node {
            Some(c) => Server::Node(c.get_connection_info().addr().to_string()),
            None => Server::Primary(epoch),
        }
    }
}

/// The servers a client's scripts were loaded on (or are being loaded on).
#[derive(Debug, Default)]
pub(crate) struct Loaded(Mutex<HashSet<Server>>);

impl Loaded {
    /// Whether a connection just made to `server` is to load the scripts: the client's first
    /// there is. Marked at once: a request sent meanwhile on another new connection finds a
    /// script missing at worst, and the fallback sends its source.
    pub(crate) fn first(&self, server: &Server) -> bool {
        self.servers().insert(server.clone())
    }

    /// The load on `server` did not get through: the next connection made there loads them.
    pub(crate) fn failed(&self, server: &Server) {
        self.servers().remove(server);
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, HashSet<Server>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::{Loaded, Server};

    #[test]
    fn each_server_loads_once_until_a_load_fails() {
        let loaded = Loaded::default();
        let node = Server::Node("127.0.0.1:7000".into());
        assert!(loaded.first(&Server::Primary(0)) && !loaded.first(&Server::Primary(0)));
        // A failover's new primary, and a cluster node, are servers of their own.
        assert!(loaded.first(&Server::Primary(1)) && loaded.first(&node) && !loaded.first(&node));
        loaded.failed(&node);
        assert!(loaded.first(&node));
    }
}
