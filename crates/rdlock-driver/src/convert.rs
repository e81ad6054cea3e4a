//! The one place where core commands become Redis pipelines and Redis values become core
//! replies. Both the async and the blocking driver use it.

use std::sync::OnceLock;
use std::time::Duration;

use rdlock_core::{Args, Command, Reply, Script, ServerError, TransportError};
use redis::{ErrorKind, RedisError, Value};

/// Whether scripts go by hash (`EVALSHA`) or by source (`EVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eval {
    /// `EVALSHA`: the usual case, the server has the script cached.
    Sha,
    /// `EVAL`: after a `NOSCRIPT` reply (a restarted or new server), which also caches it.
    Source,
}

fn sha(script: Script) -> &'static str {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    let hashes = HASHES
        .get_or_init(|| Script::ALL.iter().map(|s| redis::Script::new(s.source()).get_hash().to_owned()).collect());
    let index = Script::ALL.iter().position(|s| *s == script).unwrap_or(0);
    &hashes[index]
}

/// The pipeline for a request's commands.
pub fn pipeline(commands: &[Command], eval: Eval) -> redis::Pipeline {
    let mut pipe = redis::Pipeline::with_capacity(commands.len());
    pipe.ignore_errors();
    for c in commands {
        pipe.add_command(command(c, eval));
    }
    pipe
}

/// One command, its buffers sized up front: a script call with many keys (a renewal batch)
/// otherwise grows them a dozen times.
pub fn command(command: &Command, eval: Eval) -> redis::Cmd {
    match command {
        Command::Script { script, keys, args } => script_call(*script, eval, keys, args, None),
        Command::ScriptWithValue { script, keys, args, value } => script_call(*script, eval, keys, args, Some(value)),
        Command::Wait { replicas, timeout_ms } => {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(*replicas).arg(*timeout_ms);
            cmd
        }
        Command::WaitAof { replicas, timeout_ms } => {
            let mut cmd = redis::cmd("WAITAOF");
            cmd.arg(1).arg(*replicas).arg(*timeout_ms);
            cmd
        }
        Command::Role => redis::cmd("ROLE"),
        Command::Ping => redis::cmd("PING"),
        Command::SetIfEq { key, value, ttl_ms } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value).arg("IFEQ").arg(value).arg("PX").arg(*ttl_ms);
            cmd
        }
    }
}

/// A script call, by hash or by source.
fn script_call(script: Script, eval: Eval, keys: &Args, args: &Args, value: Option<&[u8]>) -> redis::Cmd {
    let (name, body) = match eval {
        Eval::Sha => ("EVALSHA", sha(script)),
        Eval::Source => ("EVAL", script.source()),
    };
    let count = 3 + keys.len() + args.len() + usize::from(value.is_some());
    let bytes = name.len() + body.len() + 20 + keys.bytes() + args.bytes();
    let mut cmd = redis::Cmd::with_capacity(count, bytes + value.map_or(0, <[u8]>::len));
    cmd.arg(name).arg(body).arg(keys.len());
    for arg in keys.iter().chain(args.iter()) {
        cmd.arg(arg);
    }
    if let Some(v) = value {
        cmd.arg(v);
    }
    cmd
}

/// `SCRIPT LOAD` of every script, sent on a client's first connection to each server
/// (`loaded.rs`) so that the first lock on a fresh server needs no `NOSCRIPT` round trip.
/// Its failure is harmless: `EVAL` is the fallback.
pub fn load_scripts() -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for script in Script::ALL {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.source()).ignore();
    }
    pipe
}

/// Longest a request may take beyond the response timeout: its `WAIT`s block on purpose.
pub fn blocking_time(commands: &[Command]) -> Duration {
    commands
        .iter()
        .map(|c| match c {
            Command::Wait { timeout_ms, .. } | Command::WaitAof { timeout_ms, .. } => {
                Duration::from_millis(*timeout_ms)
            }
            _ => Duration::ZERO,
        })
        .sum()
}

/// Whether any reply says the server lacks a script.
pub fn needs_source(replies: &[Value]) -> bool {
    replies.iter().any(|v| matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT"))
}

/// A Redis value as a core reply.
pub fn reply(value: Value) -> Reply {
    match value {
        Value::Nil => Reply::Nil,
        Value::Int(i) => Reply::Int(i),
        Value::BulkString(b) => Reply::Data(b),
        Value::SimpleString(s) => Reply::Data(s.into_bytes()),
        Value::Okay => Reply::Data(b"OK".to_vec()),
        Value::Boolean(b) => Reply::Int(i64::from(b)),
        Value::Double(d) => Reply::Data(d.to_string().into_bytes()),
        Value::VerbatimString { text, .. } => Reply::Data(text.into_bytes()),
        Value::Array(items) | Value::Set(items) => Reply::Array(items.into_iter().map(reply).collect()),
        Value::Map(pairs) => Reply::Array(pairs.into_iter().flat_map(|(k, v)| [reply(k), reply(v)]).collect()),
        Value::Attribute { data, .. } => reply(*data),
        Value::Push { data, .. } => Reply::Array(data.into_iter().map(reply).collect()),
        Value::ServerError(e) => Reply::Error(ServerError::new(e.code(), e.details().unwrap_or_default())),
        other => Reply::Data(format!("{other:?}").into_bytes()),
    }
}

/// A failed exchange: server refusals become error replies (the core reads their codes);
/// anything else left the request unanswered.
pub fn failure(err: &RedisError, commands: usize) -> Result<Vec<Reply>, TransportError> {
    if let Some(code) = err.code().filter(|_| err.kind() != ErrorKind::Io) {
        let e = ServerError::new(code, err.detail().unwrap_or_default());
        return Ok(vec![Reply::Error(e); commands.max(1)]);
    }
    if err.is_timeout() {
        return Err(TransportError::Timeout);
    }
    Err(TransportError::Disconnected(err.to_string()))
}

/// The server's refusal in `err` (an error reply, such as `NOPERM`), if that is what it is.
pub fn refusal(err: &RedisError) -> Option<ServerError> {
    let code = err.code().filter(|_| err.kind() != ErrorKind::Io && !err.is_connection_dropped())?;
    Some(ServerError::new(code, err.detail().unwrap_or_default()))
}

/// Whether the connection that produced `err` must be replaced.
pub fn is_fatal(err: &RedisError) -> bool {
    err.is_connection_dropped() || err.is_unrecoverable_error() || err.kind() == ErrorKind::Io || err.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_go_by_hash_then_by_source() {
        let cmds = [Command::Script { script: Script::Release, keys: ["k"].into(), args: ["t"].into() }];
        let sha = redis::pipe().cmd("X").get_packed_pipeline();
        assert!(!sha.is_empty());
        let by_hash = String::from_utf8_lossy(&pipeline(&cmds, Eval::Sha).get_packed_pipeline()).into_owned();
        assert!(by_hash.contains("EVALSHA") && by_hash.contains(super::sha(Script::Release)));
        let by_source = String::from_utf8_lossy(&pipeline(&cmds, Eval::Source).get_packed_pipeline()).into_owned();
        assert!(by_source.contains("rdlock release"));
    }

    #[test]
    fn values_become_replies() {
        let v = Value::Array(vec![Value::Int(1), Value::BulkString(b"x".to_vec()), Value::Nil]);
        assert_eq!(reply(v), Reply::Array(vec![Reply::Int(1), Reply::Data(b"x".to_vec()), Reply::Nil]));
    }
}
