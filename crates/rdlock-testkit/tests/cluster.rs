//! A cluster of primaries with replicas.

mod common;

use std::time::Duration;

use common::{TestResult, assert_gone, eventually};
use rdlock_testkit::{Cluster, RedisServer, SLOTS, key_slot};

fn cluster_connection(cluster: &Cluster) -> redis::RedisResult<redis::cluster::ClusterConnection> {
    redis::cluster::ClusterClient::new(cluster.urls())?.get_connection()
}

fn get(node: &RedisServer, key: &str) -> redis::RedisResult<Option<String>> {
    let mut conn = node.client().get_connection()?;
    redis::cmd("GET").arg(key).query(&mut conn)
}

#[test]
fn keys_live_on_the_primary_of_their_slot_and_follow_a_migrated_slot() -> TestResult {
    let cluster = Cluster::start(3, 1)?;
    let primaries = cluster.primaries()?;
    assert_eq!(primaries.len(), 3);
    assert_eq!(cluster.nodes().len(), 6);
    for primary in &primaries {
        assert_eq!(cluster.replicas_of(primary)?.len(), 1);
    }
    // The slots are split between the primaries, all covered.
    assert_eq!(cluster.node_for_slot(0)?.port(), primaries[0].port());
    assert_eq!(cluster.node_for_slot(SLOTS - 1)?.port(), primaries[2].port());
    assert!(cluster.node_for_slot(SLOTS).is_err());

    let mut conn = cluster_connection(&cluster)?;
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        redis::cmd("SET").arg(key).arg(key).query::<()>(&mut conn)?;
    }
    for key in &keys {
        let primary = cluster.primary_for_key(key)?;
        let mut direct = primary.connection()?;
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut direct)?;
        assert_eq!(slot, key_slot(key));
        assert_eq!(get(primary, key)?.as_deref(), Some(key.as_str()));
    }

    // A slot holding keys (a hash tag puts them all into one slot) moves to another primary.
    let tagged: Vec<String> = (0..250).map(|i| format!("{{moved}}:{i}")).collect();
    for key in &tagged {
        redis::cmd("SET").arg(key).arg(key).query::<()>(&mut conn)?;
    }
    let slot = key_slot("moved");
    let from = cluster.node_for_slot(slot)?;
    let to = cluster.primaries()?.into_iter().find(|p| p.port() != from.port()).ok_or("no other primary")?;
    cluster.migrate_slot(slot, from, to)?;
    assert_eq!(cluster.node_for_slot(slot)?.port(), to.port());
    assert_eq!(get(to, &tagged[0])?.as_deref(), Some(tagged[0].as_str()));
    let moved = get(from, &tagged[0]).err().ok_or("the old owner still serves the slot")?;
    // MOVED <slot> <address of the new owner>.
    assert!(moved.to_string().contains(&format!("{slot} 127.0.0.1:{}", to.port())), "{moved}");
    // The client built before the migration follows MOVED.
    for key in &tagged {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut conn)?;
        assert_eq!(value.as_deref(), Some(key.as_str()));
    }
    let mut source = from.connection()?;
    let left: u64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut source)?;
    assert_eq!(left, 0);
    assert!(cluster.migrate_slot(slot, from, to).is_err(), "the source no longer owns the slot");

    let pids: Vec<u32> = cluster.nodes().iter().map(RedisServer::pid).collect();
    drop(cluster);
    assert_gone(&pids);
    Ok(())
}

/// Both failovers in one test: each needs the cluster to notice and agree,
/// which is most of a cluster test's time.
#[test]
fn manual_failover_and_a_killed_primary_promote_replicas() -> TestResult {
    let cluster = Cluster::start(3, 1)?;
    let mut conn = cluster_connection(&cluster)?;
    redis::cmd("SET").arg("k").arg("v").query::<()>(&mut conn)?;

    // Manual failover: the replica takes over, the old primary follows it.
    let old = cluster.primary_for_key("k")?;
    let replica = cluster.replicas_of(old)?[0];
    cluster.failover(replica)?;
    assert_eq!(cluster.primary_for_key("k")?.port(), replica.port());
    assert_eq!(cluster.replicas_of(replica)?.iter().map(|r| r.port()).collect::<Vec<_>>(), [old.port()]);
    assert_eq!(get(replica, "k")?.as_deref(), Some("v"));

    // kill -9 of that primary: the old one, now its replica, is promoted back.
    let promoted = cluster.kill_primary_and_wait_for_promotion(replica)?;
    assert_eq!(promoted.port(), old.port());
    assert!(!replica.is_running());
    assert_eq!(cluster.primaries()?.len(), 3);
    assert_eq!(cluster.primary_for_key("k")?.port(), old.port());
    // The replication link was up before the kill, so the write survived.
    let mut conn = cluster_connection(&cluster)?;
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut conn)?;
    assert_eq!(value.as_deref(), Some("v"));

    // The killed node, restarted, rejoins as a replica of the new primary.
    replica.restart(false)?;
    cluster.wait_ok(Duration::from_secs(20))?;
    assert_eq!(cluster.replicas_of(old)?.iter().map(|r| r.port()).collect::<Vec<_>>(), [replica.port()]);

    // A paused replica is skipped by readiness checks, and rejoins when resumed.
    cluster.pause(replica)?;
    cluster.wait_ok(Duration::from_secs(10))?;
    cluster.resume(replica)?;
    cluster.wait_ok(Duration::from_secs(20))?;
    assert!(eventually(Duration::from_secs(5), || get(old, "k").is_ok_and(|v| v.as_deref() == Some("v"))));

    Ok(())
}

#[test]
fn nodes_of_another_cluster_and_bad_arguments_are_rejected() -> TestResult {
    assert!(Cluster::start(0, 1).is_err());
    let cluster = Cluster::start_with(1, 0, RedisServer::builder().enable_debug(true))?;
    let stranger = RedisServer::start()?;
    assert!(cluster.kill(&stranger).is_err());
    assert!(cluster.node_id(&stranger).is_err());
    let only = &cluster.nodes()[0];
    assert_eq!(cluster.node_for_slot(SLOTS - 1)?.port(), only.port());
    assert!(cluster.migrate_slot(1, only, only).is_err());
    assert!(cluster.kill_primary_and_wait_for_promotion(only).is_err(), "no replica to promote");
    assert!(only.is_running());
    let mut conn = only.connection()?;
    redis::cmd("DEBUG").arg("SLEEP").arg(0).query::<()>(&mut conn)?;
    Ok(())
}
