//! The quorum machine step by step: hand-written replies, one member at a time.

use std::time::{Duration, Instant};

use rdlock_core::{
    Acquire, Command, Event, InvalidInput, LockError, LostReason, Node, Quorum, QuorumOptions, ReleaseOutcome, Reply,
    Request, Rng, Script, Transmit, TransportError,
};

/// The one clock reading of a test: every instant after it is made by adding to it.
fn start() -> Instant {
    #[allow(clippy::disallowed_methods)] // the anchor of the test's own time line
    Instant::now()
}

fn opts() -> QuorumOptions {
    QuorumOptions { ttl: Duration::from_secs(1), auto_renew: false, ..QuorumOptions::default() }
}

fn requests(q: &mut Quorum) -> Vec<Request> {
    let mut out = Vec::new();
    while let Some(t) = q.poll_transmit() {
        if let Transmit::Request(r) = t {
            out.push(r);
        }
    }
    out
}

fn events(q: &mut Quorum) -> Vec<Event> {
    std::iter::from_fn(|| q.poll_event()).map(|e| e.event).collect()
}

fn member(r: &Request) -> usize {
    match r.route.node {
        Node::Member(i) => i as usize,
        other => panic!("not a member: {other:?}"),
    }
}

fn script(r: &Request) -> Script {
    match &r.commands[0] {
        Command::Script { script, .. } => *script,
        other => panic!("not a script: {other:?}"),
    }
}

fn arr(v: &[i64]) -> Result<Vec<Reply>, TransportError> {
    Ok(vec![Reply::Array(v.iter().map(|&i| Reply::Int(i)).collect())])
}

/// Grants phase 1 on the members in `grant` (counter `c + i`), refuses it elsewhere, and
/// raises phase 2 on every member asked.
fn acquire_on(q: &mut Quorum, grant: &[usize], t: Instant) -> Vec<Event> {
    let takes = requests(q);
    assert!(takes.iter().all(|r| script(r) == Script::QuorumTake));
    assert_eq!(takes.len(), q.members());
    for r in &takes {
        let m = member(r);
        if grant.contains(&m) {
            q.handle_reply(r.id, arr(&[1, 10 + m as i64]), t).expect("known");
        } else {
            q.handle_reply(r.id, arr(&[0, 500]), t).expect("known");
        }
    }
    for r in requests(q) {
        assert_eq!(script(&r), Script::QuorumFence);
        q.handle_reply(r.id, arr(&[1]), t).expect("known");
    }
    events(q)
}

#[test]
fn sizes_are_odd_and_bounded() {
    for n in [0, 2, 4, 16, 17] {
        assert!(matches!(Quorum::new(n, Rng::from_test_seed(1)), Err(InvalidInput::QuorumSize { .. })), "{n}");
    }
    assert!(Quorum::new(1, Rng::from_test_seed(1)).is_ok());
    let mut q = Quorum::new(3, Rng::from_test_seed(1)).expect("3");
    let bad = QuorumOptions { drift: Some(Duration::from_secs(2)), ..opts() };
    assert!(matches!(q.acquire("k", bad, Acquire::Try, start()), Err(InvalidInput::DriftTooLong { .. })));
}

#[test]
fn a_majority_acquires_with_the_highest_counter_plus_one() {
    let t = start();
    let mut q = Quorum::new(5, Rng::from_test_seed(1)).expect("5");
    let (id, _) = q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    let ev = acquire_on(&mut q, &[0, 2, 4], t);
    // Granted counters 10, 12, 14: the fence is 15; validity = ttl - (ttl/100 + 2 ms).
    assert_eq!(ev, vec![Event::Acquired { fence: 15, valid_until: t + Duration::from_millis(988) }]);
    assert_eq!(q.lease(id, t).map(|l| l.fence), Some(15));
}

#[test]
fn one_paused_member_leaves_a_shorter_validity() {
    let t0 = start();
    let mut q = Quorum::new(5, Rng::from_test_seed(1)).expect("5");
    q.acquire("k", opts(), Acquire::Try, t0).expect("valid");
    let takes = requests(&mut q);
    let late = t0 + Duration::from_millis(300);
    // Members 0-3 answer after 300 ms; member 4 never does (paused).
    for r in takes.iter().filter(|r| member(r) < 4) {
        q.handle_reply(r.id, arr(&[1, 7]), late).expect("known");
    }
    for r in requests(&mut q) {
        q.handle_reply(r.id, arr(&[1]), late).expect("known");
    }
    // Validity counts from the send: 300 ms of it are gone.
    let ev = events(&mut q);
    assert_eq!(ev, vec![Event::Acquired { fence: 8, valid_until: t0 + Duration::from_millis(988) }]);
    // The paused member's answer comes as a timeout: nothing changes.
    let paused = takes.iter().find(|r| member(r) == 4).expect("member 4");
    q.handle_reply(paused.id, Err(TransportError::Timeout), late).expect("known");
    assert!(events(&mut q).is_empty());
}

#[test]
fn a_majority_down_fails_fast_and_releases_everywhere() {
    let t = start();
    let mut q = Quorum::new(5, Rng::from_test_seed(1)).expect("5");
    // Even a waiting acquisition gives up: an outage is not contention.
    q.acquire("k", opts(), Acquire::Wait { deadline: None }, t).expect("valid");
    let takes = requests(&mut q);
    let token = match &takes[0].commands[0] {
        Command::Script { args, .. } => args[0].to_owned(),
        _ => unreachable!(),
    };
    for r in &takes {
        let reply = if member(r) < 3 { Err(TransportError::Disconnected("refused".into())) } else { arr(&[1, 1]) };
        q.handle_reply(r.id, reply, t).expect("known");
    }
    // Released on every member at once, and again on members 3 and 4 from their grants,
    // which came after the attempt had failed.
    let cleanup = requests(&mut q);
    assert_eq!(cleanup.len(), 7);
    assert_eq!(cleanup[5..].iter().map(member).collect::<Vec<_>>(), vec![3, 4]);
    for r in &cleanup {
        assert!(events(&mut q).is_empty(), "answered before its releases were");
        assert_eq!(script(r), Script::ReleaseShared);
        assert!(matches!(&r.commands[0], Command::Script { args, .. } if args[0] == token));
        q.handle_reply(r.id, Ok(vec![Reply::Int(1)]), t).expect("known");
    }
    assert_eq!(events(&mut q), vec![Event::Failed(LockError::NoQuorum { failed: 3, members: 5, needed: 3 })]);
    assert!(q.is_empty() && q.in_flight() == 0);
}

/// The error comes once nothing of the attempt is left on the members that answer: a
/// majority refused before the others' grants came in, so the call waits for those grants,
/// their releases, and the releases sent when the attempt failed. (It was answered at once,
/// and the fault row q06 found a reached member still holding the key when the call returned.)
#[test]
fn no_quorum_is_answered_once_the_reached_members_released_their_grants() {
    let t = start();
    let mut q = Quorum::new(5, Rng::from_test_seed(1)).expect("5");
    q.acquire("k", opts(), Acquire::Wait { deadline: None }, t).expect("valid");
    let takes = requests(&mut q);
    for r in takes.iter().filter(|r| member(r) < 3) {
        q.handle_reply(r.id, Err(TransportError::Disconnected("refused".into())), t).expect("known");
    }
    assert!(events(&mut q).is_empty(), "answered while members 3 and 4 may still grant");
    let settle = requests(&mut q);
    assert_eq!(settle.len(), 5, "released on every member at once");
    for r in takes.iter().filter(|r| member(r) >= 3) {
        q.handle_reply(r.id, arr(&[1, 1]), t).expect("known");
    }
    let again = requests(&mut q);
    assert_eq!(again.iter().map(member).collect::<Vec<_>>(), vec![3, 4], "late grants released from their replies");
    for r in settle.iter().chain(&again) {
        assert!(events(&mut q).is_empty(), "answered before every release was");
        let reply = if member(r) < 3 { Err(TransportError::Timeout) } else { Ok(vec![Reply::Int(1)]) };
        q.handle_reply(r.id, reply, t).expect("known");
    }
    assert_eq!(events(&mut q), vec![Event::Failed(LockError::NoQuorum { failed: 3, members: 5, needed: 3 })]);
    assert!(q.is_empty() && q.in_flight() == 0);
}

/// Members whose phase 1 failed (frozen ones: a timeout) are released without waiting: a
/// frozen member would hold the error back for a connection timeout or two more.
#[test]
fn no_quorum_does_not_wait_for_the_releases_of_members_that_failed() {
    let t = start();
    let mut q = Quorum::new(5, Rng::from_test_seed(1)).expect("5");
    q.acquire("k", opts(), Acquire::Wait { deadline: None }, t).expect("valid");
    let takes = requests(&mut q);
    for r in takes.iter().filter(|r| member(r) >= 3) {
        q.handle_reply(r.id, arr(&[1, 1]), t).expect("known");
    }
    for r in takes.iter().filter(|r| member(r) < 3) {
        q.handle_reply(r.id, Err(TransportError::Timeout), t).expect("known");
    }
    let releases = requests(&mut q);
    assert_eq!(releases.len(), 5, "released on every member");
    for r in releases.iter().filter(|r| member(r) >= 3) {
        assert!(events(&mut q).is_empty(), "answered before the reached members released");
        q.handle_reply(r.id, Ok(vec![Reply::Int(1)]), t).expect("known");
    }
    assert_eq!(events(&mut q), vec![Event::Failed(LockError::NoQuorum { failed: 3, members: 5, needed: 3 })]);
    assert!(q.is_empty(), "the lock is gone; the failed members' releases are still out");
    assert_eq!(q.in_flight(), 3);
}

#[test]
fn contention_in_try_mode_is_busy_after_releasing_the_partial_grant() {
    let t = start();
    let mut q = Quorum::new(3, Rng::from_test_seed(1)).expect("3");
    q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    let takes = requests(&mut q);
    q.handle_reply(takes[0].id, arr(&[1, 3]), t).expect("known");
    q.handle_reply(takes[1].id, arr(&[0, 250]), t).expect("known");
    assert!(events(&mut q).is_empty());
    q.handle_reply(takes[2].id, arr(&[0, 400]), t).expect("known");
    assert_eq!(events(&mut q), vec![Event::Busy { holder_ttl: Some(Duration::from_millis(250)) }]);
    assert!(requests(&mut q).iter().all(|r| script(r) == Script::ReleaseShared));
}

#[test]
fn acquired_too_late_is_no_validity_left() {
    let t = start();
    let mut q = Quorum::new(3, Rng::from_test_seed(1)).expect("3");
    q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    let late = t + Duration::from_secs(2);
    assert!(acquire_on(&mut q, &[0, 1, 2], late).is_empty(), "answered before the releases were");
    let releases = requests(&mut q);
    assert_eq!(releases.len(), 3, "released on every member");
    for r in &releases {
        q.handle_reply(r.id, Ok(vec![Reply::Int(1)]), late).expect("known");
    }
    assert_eq!(events(&mut q), vec![Event::Failed(LockError::NoValidityLeft)]);
    assert!(q.is_empty());
}

#[test]
fn waiters_retry_after_a_seeded_jitter_and_wake_on_an_announcement() {
    let run = |seed: u64| {
        let t = start();
        let mut q = Quorum::new(3, Rng::from_test_seed(seed)).expect("3");
        q.acquire("k", opts(), Acquire::Wait { deadline: None }, t).expect("valid");
        for r in requests(&mut q) {
            q.handle_reply(r.id, arr(&[0, 5_000]), t).expect("known");
        }
        let mut subscribed = Vec::new();
        while let Some(tx) = q.poll_transmit() {
            if let Transmit::Subscribe(ch) = tx {
                subscribed.push(ch);
            }
        }
        (q.poll_timeout().map(|w| w - t), subscribed, q)
    };
    let (a, subs, mut q) = run(7);
    let (b, _, _) = run(7);
    assert_eq!(a, b, "the same seed waits the same");
    let wait = a.expect("a timer");
    // poll_cap (200 ms) plus a jitter in [0, 50 ms].
    assert!(wait >= Duration::from_millis(200) && wait <= Duration::from_millis(250), "{wait:?}");
    assert_eq!(subs, vec![rdlock_core::LockKeys::new("k").expect("valid").channel]);
    // An announcement from any member brings the retry forward to within the jitter.
    let t = start();
    q.handle_message(&subs[0], t);
    assert!(q.poll_timeout().expect("a timer") <= t + Duration::from_millis(50));
}

#[test]
fn renewals_need_a_majority_and_report_the_loss() {
    let t = start();
    let mut q = Quorum::new(5, Rng::from_test_seed(1)).expect("5");
    let (id, _) = q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    acquire_on(&mut q, &[0, 1, 2, 3, 4], t);
    // A renewal extended on three members: renewed, from its own send time.
    let t1 = t + Duration::from_millis(100);
    let op = q.extend(id, t1).expect("held");
    let reqs = requests(&mut q);
    assert!(reqs.iter().all(|r| script(r) == Script::Extend));
    for r in &reqs {
        let ok = if member(r) < 3 { 1 } else { 0 };
        q.handle_reply(r.id, arr(&[ok]), t1).expect("known");
    }
    let ev: Vec<_> = std::iter::from_fn(|| q.poll_event()).collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].op, Some(op));
    assert_eq!(ev[0].event, Event::Renewed { valid_until: t1 + Duration::from_millis(988) });
    // Three members no longer hold it: lost, and the rest is released.
    let t2 = t + Duration::from_millis(200);
    q.extend(id, t2).expect("held");
    for r in requests(&mut q) {
        let reply = if member(&r) == 0 { arr(&[1]) } else { arr(&[0]) };
        q.handle_reply(r.id, reply, t2).expect("known");
    }
    assert_eq!(events(&mut q), vec![Event::Lost { reason: LostReason::NotOwner }]);
    assert!(!q.lease(id, t2).expect("kept until released").valid);
    assert!(requests(&mut q).iter().all(|r| script(r) == Script::ReleaseShared));
    // Releasing a lost lock answers NotHeld.
    q.release(id, t2).expect("lost locks can be released");
    for r in requests(&mut q) {
        q.handle_reply(r.id, Ok(vec![Reply::Int(0)]), t2).expect("known");
    }
    assert_eq!(events(&mut q), vec![Event::Released { outcome: ReleaseOutcome::NotHeld }]);
    assert!(q.is_empty());
}

#[test]
fn validity_running_out_is_lost_expired() {
    let t = start();
    let mut q = Quorum::new(3, Rng::from_test_seed(1)).expect("3");
    let (id, _) = q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    acquire_on(&mut q, &[0, 1, 2], t);
    let end = q.poll_timeout().expect("the validity timer");
    assert_eq!(end, t + Duration::from_millis(988));
    q.handle_timeout(end);
    assert_eq!(events(&mut q), vec![Event::Lost { reason: LostReason::Expired }]);
    assert_eq!(q.lease(id, end).map(|l| l.valid), Some(false));
}

#[test]
fn a_release_counts_a_majority_of_deletes() {
    let t = start();
    let mut q = Quorum::new(3, Rng::from_test_seed(1)).expect("3");
    let (id, _) = q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    acquire_on(&mut q, &[0, 1, 2], t);
    let op = q.release(id, t).expect("held");
    let reqs = requests(&mut q);
    q.handle_reply(reqs[0].id, Ok(vec![Reply::Int(1)]), t).expect("known");
    q.handle_reply(reqs[1].id, Err(TransportError::Timeout), t).expect("known");
    q.handle_reply(reqs[2].id, Ok(vec![Reply::Int(1)]), t).expect("known");
    let ev: Vec<_> = std::iter::from_fn(|| q.poll_event()).collect();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].op, &ev[0].event), (Some(op), &Event::Released { outcome: ReleaseOutcome::Released }));
    // A reply nobody asked for is misuse, and changes nothing.
    assert!(q.handle_reply(reqs[0].id, Ok(vec![]), t).is_err());
}

/// Regression (found by the fault row q02): the release sent when an attempt fails can reach
/// a member before that attempt's own phase 1 request does (a driver that sends from several
/// threads or tasks), and the grant then stays until its TTL. A grant that answers an attempt
/// which has ended is released again from its reply, after it.
#[test]
fn a_grant_after_its_attempt_failed_is_released_after_it() {
    let t = start();
    let mut q = Quorum::new(3, Rng::from_test_seed(1)).expect("3");
    q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    let takes = requests(&mut q);
    q.handle_reply(takes[0].id, arr(&[0, 500]), t).expect("known");
    q.handle_reply(takes[1].id, arr(&[0, 500]), t).expect("known");
    assert!(matches!(events(&mut q)[..], [Event::Busy { .. }]));
    let at_failure = requests(&mut q);
    assert_eq!(at_failure.len(), 3, "released on every member at once");
    assert!(q.is_empty(), "the lock is gone; its member 2 has not answered");
    // Member 2's grant comes last: it is released again, from its reply.
    q.handle_reply(takes[2].id, arr(&[1, 4]), t).expect("known");
    let after = requests(&mut q);
    assert_eq!(after.len(), 1);
    assert_eq!((member(&after[0]), script(&after[0])), (2, Script::ReleaseShared));
    // A refusal needs nothing more; a held lock keeps its own late grants.
    let (id, _) = q.acquire("k", opts(), Acquire::Try, t).expect("valid");
    let takes = requests(&mut q);
    q.handle_reply(takes[0].id, arr(&[1, 4]), t).expect("known");
    q.handle_reply(takes[1].id, arr(&[1, 4]), t).expect("known");
    for r in requests(&mut q) {
        q.handle_reply(r.id, arr(&[1]), t).expect("known");
    }
    assert!(q.lease(id, t).is_some_and(|l| l.valid));
    q.handle_reply(takes[2].id, arr(&[1, 4]), t).expect("known");
    assert!(requests(&mut q).is_empty(), "a late grant of the held lock is kept");
}
