//! The ledger: the storage the lock protects, on a Redis server that no fault touches.
//!
//! Writes go through [`FENCED_INCR`], which refuses a fencing token lower than the highest
//! it has seen. This is what downstream storage must do with rdlock's tokens: a holder that
//! was paused past its lease, or that lost its lock in a failover, writes with an old token
//! and is turned away once a newer holder has written.

/// The fenced increment.
///
/// - `KEYS[1]` highest token seen, `KEYS[2]` log (list of `token:worker`),
///   `KEYS[3]` accepted writes, `KEYS[4]` rejected writes;
/// - `ARGV[1]` the writer's token (decimal), `ARGV[2]` the writer's name;
/// - reply: 0 when the token is below the highest seen (nothing written but the rejection
///   count), else the number of accepted writes so far.
///
/// Tokens are compared as decimal strings (length first), so no token loses precision in
/// Lua's doubles.
pub const FENCED_INCR: &str = r"
local function below(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local highest = redis.call('GET', KEYS[1])
if highest and below(ARGV[1], highest) then
  redis.call('INCR', KEYS[4])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
return redis.call('INCR', KEYS[3])
";

/// Highest token seen.
pub const HIGHEST: &str = "ledger:highest";
/// Log of accepted writes, `token:worker`, in the order the ledger accepted them.
pub const LOG: &str = "ledger:log";
/// Accepted writes (the fenced counter).
pub const COUNT: &str = "ledger:count";
/// Rejected writes.
pub const REJECTED: &str = "ledger:rejected";
/// The unfenced counter (`GET` then `SET`).
pub const UNSAFE: &str = "ledger:unsafe";

/// The keys of [`FENCED_INCR`], in order.
pub const FENCED_KEYS: [&str; 4] = [HIGHEST, LOG, COUNT, REJECTED];

/// The script object for [`FENCED_INCR`].
pub fn script() -> redis::Script {
    redis::Script::new(FENCED_INCR)
}

/// The ledger as read at the end of a test.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Accepted writes, `(token, worker)`, in the order they were accepted.
    pub log: Vec<(u64, String)>,
    /// The fenced counter.
    pub count: u64,
    /// Rejected writes.
    pub rejected: u64,
    /// The unfenced counter.
    pub unsafe_count: u64,
}

impl LedgerState {
    /// Reads the ledger.
    pub fn read(conn: &mut redis::Connection) -> redis::RedisResult<Self> {
        let entries: Vec<String> = redis::cmd("LRANGE").arg(LOG).arg(0).arg(-1).query(conn)?;
        let log = entries
            .iter()
            .filter_map(|e| e.split_once(':').and_then(|(t, w)| Some((t.parse().ok()?, w.to_owned()))))
            .collect();
        let get = |conn: &mut redis::Connection, key: &str| -> redis::RedisResult<u64> {
            Ok(redis::cmd("GET").arg(key).query::<Option<u64>>(conn)?.unwrap_or(0))
        };
        Ok(Self { log, count: get(conn, COUNT)?, rejected: get(conn, REJECTED)?, unsafe_count: get(conn, UNSAFE)? })
    }
}
