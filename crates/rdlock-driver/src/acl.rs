//! What a server's ACL must allow an rdlock client: the commands, and how to grant a
//! namespace of locks (docs/security.md has the full rule and why each command is needed).

/// The commands an rdlock client sends or its scripts call, as an ACL rule fragment: grant
/// them after `-@all`, beside one key pattern and one channel pattern for the namespace
/// ([`acl_rule`]).
///
/// - Sent by the client: `EVALSHA` (every lock operation), `EVAL` (a server that lost its
///   script cache), `SCRIPT LOAD`, `PING`, `SUBSCRIBE`/`UNSUBSCRIBE` (hand-offs),
///   `SSUBSCRIBE`/`SUNSUBSCRIBE` (hand-offs in a cluster), `WAIT` and `ROLE` (replica
///   confirmation), `INFO` (the eviction check at connect; refused, it is skipped),
///   `CLUSTER SLOTS` (a cluster's map), `ASKING` (a slot being migrated), `COMMAND DOCS`
///   (whether `SET` takes `IFEQ`, at connect) and `SET` (renewals where it does). Not `CONFIG GET`,
///   which would let the user read the server's passwords: without it keyspace
///   notifications (shared mode only) count as off unless
///   [`KeyspaceNotifications::On`](crate::KeyspaceNotifications) says otherwise.
/// - Called by the scripts, with the keys they were given: the rest.
pub const ACL_COMMANDS: &str = "+evalsha +eval +script|load +ping +subscribe +unsubscribe +ssubscribe \
+sunsubscribe +wait +role +info +cluster|slots +asking +command|docs \
+get +mget +set +del +exists +type +pexpire +pttl +persist +incr +decr +time \
+lindex +llen +lpop +lpos +lpush +lrange +lrem +rpush \
+hget +hmget +hset +hdel +hincrby \
+zadd +zcard +zrange +zrangebyscore +zrem +zscore \
+publish +spublish";

/// The ACL rule (after `ACL SETUSER name on >password`) that lets a user take every rdlock
/// lock whose key starts with `prefix`, and nothing else: every name beside a lock (its
/// fence, queue, hand-off channels) starts with the lock's key.
///
/// ```
/// let rule = rdlock_driver::acl_rule("orders:");
/// assert!(rule.starts_with("resetkeys ~orders:* resetchannels &orders:* -@all +evalsha"));
/// ```
pub fn acl_rule(prefix: &str) -> String {
    format!("resetkeys ~{prefix}* resetchannels &{prefix}* -@all {ACL_COMMANDS}")
}
