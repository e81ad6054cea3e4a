//! The core's own view of a Redis reply; drivers convert their client's values into it
//! in one place.

/// A reply to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A null reply.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk or simple string.
    Data(Vec<u8>),
    /// An array.
    Array(Vec<Reply>),
    /// An error reply from the server.
    Error(ServerError),
}

/// An error reply: its code (the first word, such as `WRONGTYPE`) and its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct ServerError {
    /// The error code, such as `WRONGTYPE`, `NOPERM` or `ERR`.
    pub code: String,
    /// The rest of the message.
    pub message: String,
}

/// Acknowledgements in the reply to a confirmation behind a write, out of `wanted`: `WAIT`'s
/// replica count, or `WAITAOF`'s `[local, replicas]` read as copies on disk (the primary's
/// own fsync, then at most `wanted - 1` replicas, so that extra replicas never stand in for a
/// missing local fsync). `None` for any other reply.
pub(crate) fn acknowledged(reply: &Reply, wanted: u32) -> Option<u32> {
    let count = |n: i64, max: u32| n.clamp(0, i64::from(max)) as u32;
    match reply {
        Reply::Int(n) => Some(count(*n, u32::MAX)),
        Reply::Array(pair) => match pair[..] {
            [Reply::Int(local), Reply::Int(replicas)] => {
                Some(count(local, 1) + count(replicas, wanted.saturating_sub(1)))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The error of a confirmation's error reply: typed when it says the server cannot confirm
/// durable writes.
pub(crate) fn confirm_error(e: &ServerError) -> crate::error::LockError {
    match crate::error::NotDurable::from_reply(e) {
        Some(why) => crate::error::LockError::NotDurable(why),
        None => crate::error::LockError::Server(e.clone()),
    }
}

impl ServerError {
    /// Builds an error from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    /// Errors that go away by themselves (a failover or a restart in progress), worth a retry.
    pub fn is_transient(&self) -> bool {
        matches!(self.code.as_str(), "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "READONLY" | "CLUSTERDOWN")
    }
}

impl Reply {
    /// The integer in an `Int` reply, or in a `Data` reply that spells one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Data(d) => std::str::from_utf8(d).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The elements of an `Array` reply.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Why a request got no reply. Whether the server ran it is unknown: the core treats every
/// transport failure as ambiguous and recovers with idempotent retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No reply within the driver's response timeout.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// The connection closed or could not be made.
    #[error("connection lost: {0}")]
    Disconnected(String),
}
