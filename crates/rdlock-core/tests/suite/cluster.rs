//! The cluster variants of the scripts on a real cluster: sharded hand-offs are counted by the
//! slot's primary alone, which is why waiters subscribe there and nowhere else
//! (`docs/protocol.md`, Cluster).

use std::time::Duration;

use rdlock_core::{LockKeys, Script, slot};
use rdlock_testkit::{Cluster, RedisServer};
use redis::{Connection, Value};

const TTL: &str = "30000";
const QUEUE_TTL: &str = "60000";
const FENCE_TTL: &str = "86400000";
const CLAIM: &str = "250";

fn run(conn: &mut Connection, script: Script, keys: &LockKeys, args: &[&str]) -> Value {
    redis::cmd("EVAL")
        .arg(script.source())
        .arg(3)
        .arg(&keys.lock)
        .arg(&keys.fence)
        .arg(&keys.queue)
        .arg(args)
        .query(conn)
        .expect("the script runs")
}

fn acquire(conn: &mut Connection, keys: &LockKeys, token: &str, mode: &str, inbox: &str) -> Value {
    run(conn, Script::ShardedAcquire, keys, &[token, TTL, mode, QUEUE_TTL, FENCE_TTL, CLAIM, inbox])
}

fn release(conn: &mut Connection, keys: &LockKeys, token: &str, inbox: &str) -> Value {
    run(conn, Script::ShardedRelease, keys, &[token, &format!("{token}:{TTL}:{inbox}"), FENCE_TTL, CLAIM])
}

fn granted(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.first() == Some(&Value::Int(1)))
}

fn pttl(conn: &mut Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
}

/// A connection sharded-subscribed to `channel` on `node`.
fn ssubscribe(node: &RedisServer, channel: &str) -> Connection {
    let mut conn = node.connection().expect("a connection");
    let reply: Value = redis::cmd("SSUBSCRIBE").arg(channel).query(&mut conn).expect("SSUBSCRIBE");
    assert!(matches!(&reply, Value::Array(a) if a.len() == 3), "{reply:?}");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
    conn
}

/// The next message's payload on a sharded subscription.
fn message(conn: &mut Connection) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(2))).expect("a read timeout");
    match conn.recv_response() {
        Ok(Value::Array(parts)) | Ok(Value::Push { data: parts, .. }) => match parts.last() {
            Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn sharded_hand_offs_are_counted_on_the_slots_primary_alone() {
    let cluster = Cluster::start(2, 1).expect("a cluster starts");
    let keys = LockKeys::new("{t}orders").expect("a valid key");
    let primary = cluster.primary_for_key(&keys.lock).expect("the key's primary");
    let replica = cluster.replicas_of(primary).expect("its replicas")[0];
    let mut conn = primary.connection().expect("a connection");
    let inbox = |client: u64| LockKeys::inbox_suffix(&keys.lock, client);
    let channel = |client: u64| LockKeys::inbox_of(&keys.lock, &inbox(client));
    let (holder, first, second) = ("aaaa", "bbbb", "cccc");

    assert!(granted(&acquire(&mut conn, &keys, holder, "try", &inbox(1))));
    assert!(!granted(&acquire(&mut conn, &keys, first, "first", &inbox(2))));
    // The first waiter listens on the slot's primary: the hand-off is counted, so the key
    // holds its token for its whole ttl, and the message arrives.
    let mut on_primary = ssubscribe(primary, &channel(2));
    let Value::Array(reply) = release(&mut conn, &keys, holder, &inbox(1)) else { panic!("handed on, heard") };
    assert_eq!(reply[..2], [Value::Int(2), Value::BulkString(channel(2).into_bytes())], "handed on, heard");
    assert!(matches!(&reply[2], Value::BulkString(m) if m.starts_with(first.as_bytes())), "{reply:?}");
    let ttl = pttl(&mut conn, &keys.lock);
    assert!(ttl > 1000, "heard: the whole ttl, not {ttl} ms");
    assert!(message(&mut on_primary).is_some_and(|m| m.starts_with(first)), "the waiter hears it");

    // The second listens on a replica of the shard: the message reaches it, but the primary
    // counted nobody, so the key holds for a claim only. A waiter that held at once on such
    // a message would hold a lock that expires within the claim: never subscribe there.
    assert!(!granted(&acquire(&mut conn, &keys, second, "first", &inbox(3))));
    let mut on_replica = ssubscribe(replica, &channel(3));
    assert_eq!(release(&mut conn, &keys, first, &inbox(2)), Value::Int(2), "handed on");
    let ttl = pttl(&mut conn, &keys.lock);
    assert!((1..=250).contains(&ttl), "unheard on the primary: a claim, not {ttl} ms");
    assert!(
        message(&mut on_replica).is_some_and(|m| m.starts_with(second)),
        "a subscriber on a replica of the shard still receives it"
    );
}

#[test]
fn a_forged_inbox_of_another_slot_costs_a_claim_not_a_half_written_script() {
    let cluster = Cluster::start(2, 0).expect("a cluster starts");
    let keys = LockKeys::new("orders").expect("a valid key");
    let primary = cluster.primary_for_key(&keys.lock).expect("the key's primary");
    let mut conn = primary.connection().expect("a connection");
    // An inbox of the right shape whose glue puts the channel on the other primary.
    let forged = (0..62usize * 62)
        .map(|i| {
            let abc = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            format!("i2222222222222222#0{}{}", char::from(abc[i / 62]), char::from(abc[i % 62]))
        })
        .find(|inbox| {
            let owner = cluster.node_for_slot(slot(&LockKeys::inbox_of(&keys.lock, inbox))).expect("an owner");
            owner.port() != primary.port()
        })
        .expect("a glue of the other primary's slots");

    // Unguarded, the server's refusal would stop a script half-way.
    let unguarded = redis::cmd("EVAL")
        .arg("return redis.call('SPUBLISH', ARGV[1], 'x')")
        .arg(0)
        .arg(LockKeys::inbox_of(&keys.lock, &forged))
        .query::<Value>(&mut conn);
    assert!(unguarded.is_err(), "{unguarded:?}");

    assert!(granted(&acquire(&mut conn, &keys, "aaaa", "try", &LockKeys::inbox_suffix(&keys.lock, 1))));
    assert!(!granted(&acquire(&mut conn, &keys, "bbbb", "first", &forged)));
    // The node refuses to publish on a slot it does not serve; the hand-off goes on as one
    // nobody heard, every write made.
    let reply = release(&mut conn, &keys, "aaaa", &LockKeys::inbox_suffix(&keys.lock, 1));
    assert_eq!(reply, Value::Int(2), "handed on");
    let holder: Option<String> = redis::cmd("GET").arg(&keys.lock).query(&mut conn).expect("GET");
    assert_eq!(holder.as_deref(), Some("bbbb"));
    let ttl = pttl(&mut conn, &keys.lock);
    assert!((1..=250).contains(&ttl), "a claim, not {ttl} ms");
    let queued: i64 = redis::cmd("LLEN").arg(&keys.queue).query(&mut conn).expect("LLEN");
    assert_eq!(queued, 0, "the head was popped");
}
