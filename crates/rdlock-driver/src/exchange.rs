//! One request's exchange with the server: what to send (by hash, then by source after
//! `NOSCRIPT`; one command alone, more as a pipeline), sent on the connection a driver gives
//! it, what its answer means, and whether the connection may serve another request. Each
//! driver picks the connection and bounds the wait its own way around it.

use std::time::Duration;

use rdlock_core::{Command, Reply, TransportError};
use redis::{RedisError, RedisResult, Value};

use crate::config::ClientConfig;
use crate::convert::{self, Eval};

pub(crate) struct Exchange<'a> {
    commands: &'a [Command],
    eval: Eval,
    /// In a cluster: preceded by `ASKING` (an `ASK` redirection to a slot being imported).
    asking: bool,
}

/// How an exchange ended.
pub(crate) struct Done {
    pub(crate) replies: Result<Vec<Reply>, TransportError>,
    /// Whether the connection may carry another request: not after a failure that may leave
    /// a late reply behind (a timeout, a dropped link), which would answer the next request.
    pub(crate) reusable: bool,
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(commands: &'a [Command]) -> Self {
        Self { commands, eval: Eval::Sha, asking: false }
    }

    /// The same, preceded by `ASKING`.
    pub(crate) fn asking(commands: &'a [Command]) -> Self {
        Self { commands, eval: Eval::Sha, asking: true }
    }

    /// The bound on the whole exchange: the response timeout, plus the time its `WAIT`s
    /// block on purpose.
    pub(crate) fn limit(&self, config: &ClientConfig) -> Duration {
        config.response_timeout + convert::blocking_time(self.commands)
    }

    /// The pipeline to send now.
    pub(crate) fn pipeline(&self) -> redis::Pipeline {
        let pipe = convert::pipeline(self.commands, self.eval);
        if !self.asking {
            return pipe;
        }
        let mut asking = redis::pipe();
        asking.ignore_errors().cmd("ASKING");
        for cmd in pipe.cmd_iter() {
            asking.add_command(cmd.clone());
        }
        asking
    }

    /// Sends the request on a synchronous connection and reads its answer: one command alone
    /// (none of a pipeline's encoding and reply buffers: ~2,800 instructions per S1 cycle),
    /// else the pipeline. A server's error is a value either way, as [`Exchange::answer`]
    /// reads it.
    pub(crate) fn query(&self, conn: &mut impl redis::ConnectionLike) -> RedisResult<Vec<Value>> {
        match self.single() {
            Some(cmd) => conn.req_command(&cmd).map(|v| vec![v]),
            None => self.pipeline().query(conn),
        }
    }

    /// The same on a multiplexed connection.
    #[cfg(feature = "async")]
    pub(crate) async fn query_async(&self, conn: &mut redis::aio::MultiplexedConnection) -> RedisResult<Vec<Value>> {
        match self.single() {
            Some(cmd) => conn.send_packed_command(&cmd).await.map(|v| vec![v]),
            None => self.pipeline().query_async(conn).await,
        }
    }

    /// The request as one command, when it is one (the usual case: a script call): sent
    /// alone, it needs none of a pipeline's buffers. Its reply is the answer's only value.
    fn single(&self) -> Option<redis::Cmd> {
        match self.commands {
            [c] if !self.asking => Some(convert::command(c, self.eval)),
            _ => None,
        }
    }

    /// Reads the answer to [`Exchange::pipeline`]: `None` when it must be sent again (the
    /// server lacked a script; the next pipeline sends its source).
    pub(crate) fn answer(&mut self, answer: RedisResult<Vec<Value>>) -> Option<Done> {
        // `ASKING`'s own reply is nobody's.
        let answer = answer.map(|mut v| {
            if self.asking && !v.is_empty() {
                v.remove(0);
            }
            v
        });
        match answer {
            Ok(values) if self.eval == Eval::Sha && convert::needs_source(&values) => {
                self.eval = Eval::Source;
                None
            }
            Ok(values) => Some(Done { replies: Ok(values.into_iter().map(convert::reply).collect()), reusable: true }),
            Err(e) => Some(Done { replies: self.unsent(&e), reusable: !convert::is_fatal(&e) }),
        }
    }

    /// The outcome when the request could not be sent or answered (`err`).
    pub(crate) fn unsent(&self, err: &RedisError) -> Result<Vec<Reply>, TransportError> {
        convert::failure(err, self.commands.len())
    }
}
