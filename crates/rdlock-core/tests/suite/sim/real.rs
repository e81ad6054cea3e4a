//! What the tests that talk to a real server share.

use rdlock_core::{Reply, ServerError};
use redis::Value;

/// A Redis value as the core's reply (what the drivers do).
pub fn reply(value: Value) -> Reply {
    match value {
        Value::Nil => Reply::Nil,
        Value::Int(i) => Reply::Int(i),
        Value::BulkString(b) => Reply::Data(b),
        Value::SimpleString(s) => Reply::Data(s.into_bytes()),
        Value::Okay => Reply::Data(b"OK".to_vec()),
        Value::Array(items) => Reply::Array(items.into_iter().map(reply).collect()),
        Value::ServerError(e) => Reply::Error(ServerError::new(e.code(), e.details().unwrap_or_default())),
        other => panic!("unexpected RESP2 value {other:?}"),
    }
}
