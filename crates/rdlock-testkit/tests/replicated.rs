//! A primary with replicas.

mod common;

use std::time::Duration;

use common::{TestResult, assert_gone};
use rdlock_testkit::{RedisServer, Replicated};

fn wait(conn: &mut redis::Connection, replicas: usize, timeout_ms: u64) -> redis::RedisResult<usize> {
    redis::cmd("SET").arg("k").arg("v").query::<()>(conn)?;
    redis::cmd("WAIT").arg(replicas).arg(timeout_ms).query(conn)
}

#[test]
fn writes_reach_every_replica_until_one_is_cut_off() -> TestResult {
    let replicated = Replicated::start(2)?;
    assert_eq!(replicated.replicas().len(), 2);
    let mut conn = replicated.primary().connection()?;
    assert_eq!(wait(&mut conn, 2, 5000)?, 2);

    // The sync key used by start is gone again.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn)?;
    assert_eq!(keys, ["k"]);
    let mut replica_conn = replicated.replica(1).connection()?;
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut replica_conn)?;
    assert_eq!(value.as_deref(), Some("v"));

    // A frozen replica whose link is closed cannot acknowledge anything.
    replicated.replica(0).pause()?;
    assert_eq!(replicated.primary().client_kill_type("replica")?, 2);
    assert!(wait(&mut conn, 2, 200)? < 2);

    replicated.replica(0).resume()?;
    replicated.wait_for_replicas(2, Duration::from_secs(10))?;
    assert_eq!(wait(&mut conn, 2, 5000)?, 2);

    let pids: Vec<u32> =
        std::iter::once(replicated.primary()).chain(replicated.replicas()).map(RedisServer::pid).collect();
    drop(replicated);
    assert_gone(&pids);
    Ok(())
}

#[test]
fn promote_turns_a_replica_into_a_primary() -> TestResult {
    let replicated = Replicated::start_with(1, RedisServer::builder().enable_debug(true))?;
    replicated.promote(0)?;
    let mut conn = replicated.replica(0).connection()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn)?;
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())));
    // A promoted replica accepts writes.
    redis::cmd("SET").arg("k").arg("v").query::<()>(&mut conn)?;
    Ok(())
}

#[test]
fn a_restarted_replica_syncs_again() -> TestResult {
    let replicated = Replicated::start(1)?;
    let mut conn = replicated.primary().connection()?;
    redis::cmd("SET").arg("k").arg("v").query::<()>(&mut conn)?;
    replicated.replica(0).restart(false)?;
    replicated.wait_for_replicas(1, Duration::from_secs(10))?;
    let mut replica_conn = replicated.replica(0).connection()?;
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut replica_conn)?;
    assert_eq!(value.as_deref(), Some("v"));
    Ok(())
}
