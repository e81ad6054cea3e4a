//! Sentinels and failover.

mod common;

use std::net::SocketAddr;
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
    let new = sentinels.wait_for_failover(old, Duration::from_secs(15))?;
    assert_a_replica(&replicated, new);
    assert!(started.elapsed() < Duration::from_secs(30));

    let pids: Vec<u32> = sentinels.sentinels().iter().map(RedisServer::pid).collect();
    drop(sentinels);
    assert_gone(&pids);
    Ok(())
}

/// A failover the sentinels give up is asked for again. Here its leader stops before it
/// chooses a replica, and back from TILT finds none it may promote (priority 0): it gives up
/// for good, and only a new request moves the primary.
#[test]
fn a_failover_given_up_is_asked_again() -> TestResult {
    let priority = |replicated: &Replicated, value: u32| -> TestResult {
        for replica in replicated.replicas() {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("replica-priority")
                .arg(value)
                .query::<()>(&mut replica.connection()?)?;
        }
        Ok(())
    };
    let (replicated, sentinels, old) = failover_with_a_stalled_leader(|r| priority(r, 0))?;
    let leader = sentinels.sentinel(0);
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let log = leader.log_tail(200);
        // A leader that chose before it stopped promotes anyway: nothing is given up then.
        if log.contains("-failover-abort") || log.contains("+selected-slave") {
            let what = if log.contains("-failover-abort") { "gave up" } else { "chose before it stopped" };
            println!("the leader {what}");
            break;
        }
        assert!(Instant::now() < until, "the leader neither chose nor gave up:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    priority(&replicated, 100)?;
    let new = sentinels.wait_for_failover(old, Duration::from_secs(20))?;
    assert_a_replica(&replicated, new);
    Ok(())
}

/// A failover whose leader stalls before it chooses a replica (and so goes into TILT) still
/// ends with a new primary, without being asked for again.
#[test]
fn a_failover_survives_its_leader_stalling() -> TestResult {
    let (replicated, sentinels, old) = failover_with_a_stalled_leader(|_| Ok(()))?;
    let new = sentinels.wait_for_new_master(old, Duration::from_secs(15));
    let log = sentinels.sentinel(0).log_tail(200);
    assert!(log.contains("+tilt"), "the leader's stall was a TILT:\n{log}");
    assert_a_replica(&replicated, new.map_err(|e| format!("{e}\n{log}"))?);
    Ok(())
}

/// Two replicas and three sentinels, a failover asked for, and its leader (the sentinel that
/// took the request) stopped at once for 2.5 s, so that it goes into TILT when it resumes;
/// `meanwhile` runs while it is stopped. Returns the old primary's port.
fn failover_with_a_stalled_leader(
    meanwhile: impl FnOnce(&Replicated) -> TestResult,
) -> Result<(Replicated, Sentinels, u16), Box<dyn std::error::Error>> {
    let replicated = Replicated::start(2)?;
    let sentinels = Sentinels::start(&replicated, 3)?;
    let old = replicated.primary().port();
    sentinels.failover()?;
    let leader = sentinels.sentinel(0);
    leader.pause()?;
    meanwhile(&replicated)?;
    std::thread::sleep(Duration::from_millis(2500));
    leader.resume()?;
    Ok((replicated, sentinels, old))
}

fn assert_a_replica(replicated: &Replicated, new: SocketAddr) {
    let replica_ports: Vec<u16> = replicated.replicas().iter().map(RedisServer::port).collect();
    assert!(replica_ports.contains(&new.port()), "{new} is one of {replica_ports:?}");
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
