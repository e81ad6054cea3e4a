//! Sentinels and failover.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestResult, assert_gone, eventually};
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
    let stalled = failover_with_a_stalled_leader(|r| priority(r, 0))?;
    let leader = stalled.sentinels.failover_leader().ok_or("no leader")?;
    if !stalled.chose_first {
        let gave_up =
            eventually(Duration::from_secs(15), || leader.log_tail(200).contains("-failover-abort-no-good-slave"));
        assert!(gave_up, "the leader did not give up:\n{}", leader.log_tail(200));
    }
    priority(&stalled.replicated, 100)?;
    let new = stalled.sentinels.wait_for_failover(stalled.old, Duration::from_secs(20))?;
    assert_a_replica(&stalled.replicated, new);
    Ok(())
}

/// A failover whose leader stalls before it chooses a replica (and so goes into TILT) still
/// ends with a new primary, without being asked for again.
#[test]
fn a_failover_survives_its_leader_stalling() -> TestResult {
    let stalled = failover_with_a_stalled_leader(|_| Ok(()))?;
    let sentinels = &stalled.sentinels;
    let leader = sentinels.failover_leader().ok_or("no leader")?;
    // A leader stopped after it sent the promotion gives that up when it resumes: its wait for
    // the promotion outlived the failover timeout. That is the case asked for again.
    let new = if stalled.chose_first {
        sentinels.wait_for_failover(stalled.old, Duration::from_secs(20))
    } else {
        sentinels.wait_for_new_master(stalled.old, Duration::from_secs(15))
    };
    let log = leader.log_tail(200);
    assert!(log.contains("+tilt"), "the leader's stall was a TILT:\n{log}");
    assert_a_replica(&stalled.replicated, new.map_err(|e| format!("{e}\n{log}"))?);
    Ok(())
}

/// A failover asked for while its leader was stopped for 2.5 s.
struct Stalled {
    replicated: Replicated,
    sentinels: Sentinels,
    /// The old primary's port.
    old: u16,
    /// Whether the leader chose a replica before it stopped (the test thread was late): the
    /// case then proves less, but must not fail.
    chose_first: bool,
}

/// Two replicas and three sentinels, a failover asked for, and its leader (the sentinel that
/// took the request) stopped at once for 2.5 s, so that it goes into TILT when it resumes;
/// `meanwhile` runs while it is stopped.
fn failover_with_a_stalled_leader(
    meanwhile: impl FnOnce(&Replicated) -> TestResult,
) -> Result<Stalled, Box<dyn std::error::Error>> {
    let replicated = Replicated::start(2)?;
    let sentinels = Sentinels::start(&replicated, 3)?;
    let old = replicated.primary().port();
    sentinels.failover()?;
    let leader = sentinels.failover_leader().ok_or("no leader")?;
    leader.pause()?;
    // Stopped: its log is complete up to here.
    let chose_first = leader.log_tail(200).contains("+selected-slave");
    if chose_first {
        println!("the leader chose a replica before it stopped");
    }
    meanwhile(&replicated)?;
    std::thread::sleep(Duration::from_millis(2500));
    leader.resume()?;
    Ok(Stalled { replicated, sentinels, old, chose_first })
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
