//! What the core asks its driver to do: typed requests, never raw command strings.

use crate::script::Script;

/// Identifies a request, so that its reply can be handed back with [`crate::Engine::handle_reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Where a request must travel: to which server, and on which class of connection to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        keys: Args,
        /// `ARGV`.
        args: Args,
    },
    /// Run a script whose last `ARGV` is a value of bytes (a mutex's value, which need not be
    /// text), shared so that a resend or a retry does not copy it.
    ScriptWithValue {
        /// Which script.
        script: Script,
        /// `KEYS`.
        keys: Args,
        /// `ARGV` before the value.
        args: Args,
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
    /// `PING`, its reply ignored: sent in front of a release that will likely hand its lock
    /// on, so that the server writes the hand-off's message before the release's reply. A
    /// server writes the replies of one event-loop pass newest client first, and the
    /// releaser's client is then already among them (`docs/protocol.md`, *A release behind a
    /// `PING`*). A driver must send it and hand back its reply like any other command.
    Ping,
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

/// A command's arguments (a script's `KEYS` or `ARGV`): all of them in one buffer, with where
/// each ends, so that building a request costs two allocations however many arguments it
/// has (a renewal batch has three per lock), and numbers and tokens are written in place
/// rather than made into strings first. Read back as `&str`s by index or in order.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Args {
    text: String,
    ends: Vec<u32>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// No arguments yet, with room for `args` of `bytes` in all.
    pub fn with_capacity(args: usize, bytes: usize) -> Self {
        Self { text: String::with_capacity(bytes), ends: Vec::with_capacity(args) }
    }

    /// Adds an argument.
    pub fn push(&mut self, arg: &str) -> &mut Self {
        self.text.push_str(arg);
        self.end()
    }

    /// Adds a number, in decimal.
    pub fn push_u64(&mut self, n: u64) -> &mut Self {
        write_u64(&mut self.text, n);
        self.end()
    }

    /// Adds an owner token, as it is stored ([`crate::token::hex`]).
    pub fn push_hex(&mut self, token: u128) -> &mut Self {
        crate::token::write_hex(&mut self.text, token);
        self.end()
    }

    /// Ends the argument written since the last one ended (in place, with `std::fmt::Write`).
    pub fn end(&mut self) -> &mut Self {
        // A request's arguments stay far below 4 GiB: the server refuses a bulk of 512 MiB.
        self.ends.push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
        self
    }

    /// How many arguments.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Argument `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    /// The first argument.
    pub fn first(&self) -> Option<&str> {
        self.get(0)
    }

    /// The last argument.
    pub fn last(&self) -> Option<&str> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    /// The arguments in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { args: self, front: 0, back: self.len() }
    }

    /// Every argument's bytes, back to back (their total length: [`Args::bytes`]).
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// The arguments as strings of their own (tests, tools).
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

/// Appends `n` in decimal to `out`, without the formatter.
pub(crate) fn write_u64(out: &mut impl std::fmt::Write, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always text. Writing to a string or a request's arguments cannot fail.
    let _ = out.write_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

impl std::fmt::Write for Args {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        Ok(())
    }
}

impl std::ops::Index<usize> for Args {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        match self.get(i) {
            Some(arg) => arg,
            None => panic!("argument {i} of {}", self.len()),
        }
    }
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Args {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut args = Args::new();
        for arg in iter {
            args.push(arg.as_ref());
        }
        args
    }
}

impl<S: AsRef<str>> From<Vec<S>> for Args {
    fn from(args: Vec<S>) -> Self {
        args.iter().collect()
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Args {
    fn from(args: [S; N]) -> Self {
        args.iter().collect()
    }
}

impl<S: AsRef<str>> PartialEq<[S]> for Args {
    fn eq(&self, other: &[S]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

impl<S: AsRef<str>> PartialEq<Vec<S>> for Args {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

impl<'a> IntoIterator for &'a Args {
    type Item = &'a str;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The arguments of an [`Args`], in order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    args: &'a Args,
    front: usize,
    back: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.front == self.back {
            return None;
        }
        self.front += 1;
        self.args.get(self.front - 1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.back - self.front, Some(self.back - self.front))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        self.args.get(self.back)
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::Args;

    #[test]
    fn arguments_read_back_as_written() {
        let mut a = Args::with_capacity(4, 8);
        a.push("key").push_u64(0).push_u64(u64::MAX).push_hex(0xab).push("");
        assert_eq!(a.len(), 5);
        assert_eq!(a.to_vec(), ["key", "0", "18446744073709551615", &format!("{:032x}", 0xab), ""]);
        assert_eq!((a.first(), a.last(), a.get(5)), (Some("key"), Some(""), None));
        assert_eq!(&a[2], "18446744073709551615");
        assert_eq!(Args::from(vec!["x", "y"]), vec!["x", "y"]);
        assert!(Args::new().is_empty() && Args::new().iter().next().is_none());
        std::fmt::Write::write_fmt(&mut a, format_args!("{}-{}", 1, 2)).expect("writes to a string");
        a.end();
        assert_eq!(a.last(), Some("1-2"));
    }
}
