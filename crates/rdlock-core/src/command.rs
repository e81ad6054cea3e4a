//! What the core asks its driver to do: typed requests, never raw command strings.

use crate::script::Script;

/// Identifies a request, so that its reply can be handed back with [`crate::Engine::handle_reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Where a request must travel: to which server, and on which class of connection to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The server.
    pub node: Node,
    /// The connection class.
    pub class: Class,
}

impl Route {
    /// The primary's shared command connection.
    pub const COMMANDS: Route = Route { node: Node::Primary, class: Class::Commands };
    /// The primary's connection reserved for confirmations.
    pub const CONFIRM: Route = Route { node: Node::Primary, class: Class::Confirm };
}

/// Which server a request is for: the primary of a standalone or Sentinel-watched
/// deployment, or, in a cluster, the primary of a hash slot (every request about a key names
/// the key's slot, so its script and its `WAIT` reach the key's own primary together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Node {
    /// The (one) primary.
    Primary,
    /// The primary that serves this cluster hash slot (`0..16384`).
    Slot(u16),
    /// Member `i` of a quorum of independent primaries (in the order they were given).
    Member(u8),
}

/// Which kind of connection to the node a request travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// The shared command connection (multiplexed; order of sends is kept).
    Commands,
    /// A connection reserved for requests that end in `WAIT`: `WAIT` blocks every later
    /// command on its connection, and it only counts the writes of its own connection.
    Confirm,
}

/// One Redis command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run a script (`EVALSHA`, with `EVAL` when the server does not have it cached).
    Script {
        /// Which script.
        script: Script,
        /// `KEYS`.
        keys: Vec<String>,
        /// `ARGV`.
        args: Vec<String>,
    },
    /// Run a script whose last `ARGV` is a value of bytes (a mutex's value, which need not be
    /// text), shared so that a resend or a retry does not copy it.
    ScriptWithValue {
        /// Which script.
        script: Script,
        /// `KEYS`.
        keys: Vec<String>,
        /// `ARGV` before the value.
        args: Vec<String>,
        /// The last `ARGV`.
        value: std::sync::Arc<[u8]>,
    },
    /// `WAIT replicas timeout_ms`: how many replicas hold this connection's writes.
    Wait {
        /// Replicas to wait for.
        replicas: u32,
        /// Longest wait, in milliseconds (never 0: that would block for ever).
        timeout_ms: u64,
    },
    /// `WAITAOF 1 replicas timeout_ms`: whether this connection's writes are fsynced to the
    /// primary's append-only file and to those of `replicas` replicas. Its reply is
    /// `[local, replicas]`.
    WaitAof {
        /// Replicas whose append-only file must hold the writes.
        replicas: u32,
        /// Longest wait, in milliseconds (never 0: that would block for ever).
        timeout_ms: u64,
    },
    /// `ROLE`: used to count the primary's replicas.
    Role,
    /// `SET key value IFEQ value PX ttl_ms`: an owner-checked renewal in one command, on a
    /// server that offers `IFEQ` (Valkey 8.1+, Redis 8.4+; [`crate::Engine::set_ifeq`]). The
    /// key keeps its value and gets the new expiry only when it holds `value`. Its reply is
    /// `OK`; nil when the key holds another string or nothing; a `WRONGTYPE` error for a key
    /// of another type.
    SetIfEq {
        /// The lock key.
        key: String,
        /// The owner token: the value compared and written back.
        value: String,
        /// The new expiry, in milliseconds.
        ttl_ms: u64,
    },
}

/// A pipeline of commands sent together on one connection; the reply holds one
/// [`crate::Reply`] per command, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The id to hand back with the reply.
    pub id: RequestId,
    /// The connection to use.
    pub route: Route,
    /// The commands, in order.
    pub commands: Vec<Command>,
}

/// Something the driver must do on the core's behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Send a request and hand its reply (or failure) back.
    Request(Request),
    /// Subscribe the shared pub/sub connection to a channel, then call
    /// [`crate::Engine::handle_subscribed`].
    Subscribe(String),
    /// Unsubscribe the shared pub/sub connection from a channel.
    Unsubscribe(String),
    /// In a cluster: `SSUBSCRIBE` to a channel on the primary that serves `slot` (the
    /// channel's slot), never on a replica (see `docs/protocol.md`, Cluster), then call
    /// [`crate::Engine::handle_subscribed`].
    SubscribeShard {
        /// The channel.
        channel: String,
        /// Its hash slot.
        slot: u16,
    },
    /// In a cluster: `SUNSUBSCRIBE` from a channel on the connection that subscribed it.
    UnsubscribeShard {
        /// The channel.
        channel: String,
        /// Its hash slot.
        slot: u16,
    },
}
