//! Sentinels and failover.

mod common;

use std::time::{Duration, Instant};

use common::{TestResult, assert_gone};
use rdlock_testkit::{MASTER_NAME, RedisServer, Replicated, Sentinels};

#[test]
fn forced_failover_promotes_a_replica() -> TestResult {
    let started = Instant::now();
    let replicated = Replicated::start(2)?;
    let sentinels = Sentinels::start(&replicated, 3)?;
    assert_eq!(sentinels.addrs().len(), 3);
    assert_eq!(sentinels.urls().len(), 3);
    assert_eq!(sentinels.master_addr()?, replicated.primary().addr());

    let mut conn = sentinels.sentinel(0).connection()?;
    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME).query(&mut conn)?;
    assert_eq!(replicas.len(), 2);

    let old = replicated.primary().port();
    sentinels.failover()?;
    let new = sentinels.wait_for_new_master(old, Duration::from_secs(15))?;
    let replica_ports: Vec<u16> = replicated.replicas().iter().map(RedisServer::port).collect();
    assert!(replica_ports.contains(&new.port()), "{new} is one of {replica_ports:?}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let pids: Vec<u32> = sentinels.sentinels().iter().map(RedisServer::pid).collect();
    drop(sentinels);
    assert_gone(&pids);
    Ok(())
}

#[test]
fn a_killed_primary_is_replaced() -> TestResult {
    let replicated = Replicated::start(1)?;
    let sentinels = Sentinels::start(&replicated, 3)?;
    let old = replicated.primary().port();
    replicated.primary().kill()?;
    let new = sentinels.wait_for_new_master(old, Duration::from_secs(20))?;
    assert_eq!(new, replicated.replica(0).addr());
    Ok(())
}

#[test]
fn zero_sentinels_is_an_error() -> TestResult {
    let server = RedisServer::start()?;
    assert!(Sentinels::start(&server, 0).is_err());
    Ok(())
}
