//! Quorum rows q04–q06: members of a five-member quorum out of reach, killed or frozen
//! (SIGSTOP, resumed afterwards). One out: acquisitions go on with reduced validity and the
//! history is clean; three out: an acquisition fails at once with `NoQuorum` and leaves nothing
//! on the two it reached. Each row has its negative control.

use std::time::Duration;

use rdlock_core::LockKeys;
use rdlock_faults::checker::{self, Bounds, Property, Report, Violation};
use rdlock_faults::clock::{micros, ms};
use rdlock_faults::record::{Event, FailKind, Record};
use rdlock_faults::seed::Rng;
use rdlock_testkit::{Proxy, RedisServer};

use super::{KEY, STEP, Suite, TestResult, acquired, assert_clean, fence, serial};

/// Members of each row's quorum.
const MEMBERS: usize = 5;
/// The workers' response and connection timeouts: a frozen member's request counts as failed
/// after them. The client's defaults (2 s each) are longer than these rows' leases: an attempt
/// waiting on frozen members could run out of validity first and be retried rather than
/// refused, and each release, which waits for every member's answer, would wait out a frozen
/// member's connection timeout twice (about 4 s measured).
const RESPONSE: Duration = Duration::from_millis(250);
/// The negative controls' key: apart from the row's, which a resumed member may still hold.
const CONTROL_KEY: &str = "fault:control";

type Failure = Box<dyn std::error::Error>;

/// How a member is out of reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// Killed (SIGKILL); back means restarted empty, at once (it held nothing of a live hold).
    Down,
    /// Frozen (SIGSTOP): connections stay open, nothing is answered; back means resumed, and
    /// it then runs the requests waiting in its sockets.
    Paused,
}

impl Outage {
    fn take_out(self, m: &RedisServer) -> rdlock_testkit::Result<()> {
        match self {
            Outage::Down => m.kill(),
            Outage::Paused => m.pause(),
        }
    }

    fn bring_back(self, m: &RedisServer) -> rdlock_testkit::Result<()> {
        match self {
            Outage::Down => m.restart(false),
            Outage::Paused => m.resume(),
        }
    }
}

/// Five independent servers.
struct Members(Vec<RedisServer>);

impl Members {
    fn start() -> rdlock_testkit::Result<Self> {
        Ok(Self((0..MEMBERS).map(|_| RedisServer::start()).collect::<Result<_, _>>()?))
    }

    /// A quorum URL naming these members, in this order.
    fn url(&self, which: &[usize]) -> String {
        let addrs: Vec<String> = which.iter().map(|&i| format!("{}:{}", self.0[i].host(), self.0[i].port())).collect();
        format!("redis+quorum://{}", addrs.join(","))
    }

    fn all(&self) -> String {
        self.url(&(0..MEMBERS).collect::<Vec<_>>())
    }

    fn out(&self, i: usize, outage: Outage, s: &Suite) -> rdlock_testkit::Result<()> {
        outage.take_out(&self.0[i])?;
        s.h.note(format!("member {i} out: {outage:?}"));
        Ok(())
    }

    fn back(&self, i: usize, outage: Outage, s: &Suite) -> rdlock_testkit::Result<()> {
        outage.bring_back(&self.0[i])?;
        s.h.note(format!("member {i} back ({outage:?})"));
        Ok(())
    }

    /// P4 on the members `which`: no key without a TTL; with `gone`, nothing of that lock
    /// but its fence counter (no lock key, no queue entry, nothing else).
    fn leaks(&self, which: &[usize], gone: Option<&str>) -> Result<Vec<Violation>, Failure> {
        let mut out = Vec::new();
        for &i in which {
            let mut c = self.0[i].connection()?;
            let must_be_absent: Vec<&str> = gone.into_iter().collect();
            let mut found = checker::scan_leaks(&mut c, &must_be_absent, &[])?;
            if let Some(key) = gone {
                let counter = LockKeys::new(key)?.fence;
                let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{key}*")).query(&mut c)?;
                found.extend(
                    keys.into_iter()
                        .filter(|k| k != key && *k != counter)
                        .map(|k| Violation { property: Property::NoLeak, detail: format!("key {k:?} left") }),
                );
            }
            out.extend(found.into_iter().map(|v| Violation { detail: format!("member {i}: {}", v.detail), ..v }));
        }
        Ok(out)
    }

    /// Who holds `key` on each member, and for how long (for the log).
    fn holders(&self, key: &str) -> Result<String, Failure> {
        let mut out = Vec::new();
        for (i, m) in self.0.iter().enumerate() {
            let mut c = m.connection()?;
            let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut c)?;
            out.push(if pttl == -2 { format!("{i}: free") } else { format!("{i}: held, pttl {pttl}") });
        }
        Ok(out.join("; "))
    }
}

fn draw_outage(rng: &mut Rng) -> Outage {
    if rng.chance(0.5) { Outage::Down } else { Outage::Paused }
}

/// Validity as the guard reported it on each acquisition, left when the call returned:
/// above zero and below `ttl − drift` (the lease counts from the attempt's send, before the
/// return). Returns the least and most left, in ms.
fn check_validity(holds: &[Record], bounds: &Bounds) -> (f64, f64) {
    let (mut least, mut most) = (i64::MAX, 0);
    for r in holds {
        let Event::Acquired { valid_until, .. } = r.event else { continue };
        let left = valid_until - r.mono;
        assert!(left > 0, "no validity left on return: {r:?}");
        assert!(left < micros(bounds.ttl - bounds.drift()), "validity not reduced (ttl {:?}): {r:?}", bounds.ttl);
        least = least.min(left);
        most = most.max(left);
    }
    (least as f64 / 1000.0, most as f64 / 1000.0)
}

/// How long the release calls took (they wait for every member's answer): min, median, max.
fn release_times(history: &[Record]) -> String {
    let mut took: Vec<i64> = history
        .iter()
        .filter(|r| matches!(r.event, Event::Released { .. }))
        .filter_map(|done| {
            let start = history.iter().rev().find(|r| {
                r.worker == done.worker && r.mono <= done.mono && matches!(r.event, Event::Releasing { .. })
            })?;
            Some(done.mono - start.mono)
        })
        .collect();
    took.sort_unstable();
    match (took.first(), took.get(took.len() / 2), took.last()) {
        (Some(&lo), Some(&mid), Some(&hi)) => format!("min {} median {} max {}", ms(lo), ms(mid), ms(hi)),
        _ => "none".to_owned(),
    }
}

/// One member of five out (`outage`) while three workers contend, then back. Acquisitions go
/// on (one more, without a deadline, must succeed) with validity below the TTL, P1–P5 hold,
/// and the live members keep nothing of the lock.
/// Then the negative control ([`counted_twice`]).
fn one_member_out(name: &'static str, control: &'static str, outage: Outage) -> TestResult {
    let mut s = Suite::new(name)?;
    let m = Members::start()?;
    let (ttl, cap) = (s.rng.millis(1000, 1500), Duration::from_millis(100));
    let bounds = Bounds::new(ttl, cap);
    let out = s.rng.index(MEMBERS);
    let workers = ["a", "b", "c"];
    for w in workers {
        let mut spec = s.spec(w, &m.all(), ttl, cap);
        spec.timeouts(RESPONSE);
        s.h.spawn(&spec)?;
    }
    m.out(out, outage, &s)?;
    let mark = s.h.mark();
    let cmd = "loop 1500 40 2";
    for w in workers {
        s.h.send(w, cmd)?;
    }
    for w in workers {
        s.h.wait_record(
            mark,
            w,
            Duration::from_millis(1500) + ttl * 2 + STEP,
            |e| matches!(e, Event::Done { cmd: c } if c == cmd),
        )?;
    }
    // However few the loops got (they end at a deadline), one acquisition without a deadline
    // must succeed while the member is out.
    let once = s.h.mark();
    s.h.command("a", "acquire", STEP)?;
    let r = s.h.wait_record(once, "a", STEP, |e| acquired(e) || matches!(e, Event::AcquireFailed { .. }))?;
    assert!(acquired(&r.event), "not acquired with one member of five out: {r:?}");
    s.h.command("a", "write 1", STEP)?;
    s.h.command("a", "release", STEP)?;
    let history: Vec<Record> = s.h.records().into_iter().skip(mark).collect();
    let holds: Vec<Record> = history.iter().filter(|r| acquired(&r.event)).cloned().collect();
    let (least, most) = check_validity(&holds, &bounds);
    let releases = release_times(&history);
    let live: Vec<usize> = (0..MEMBERS).filter(|&i| i != out).collect();
    let mut report = s.finish(&bounds, None)?;
    report.extend(m.leaks(&live, Some(KEY))?);
    m.back(out, outage, &s)?;
    // A resumed member runs what waited in its sockets: a grant it makes then expires by its TTL.
    report.extend(m.leaks(&[out], None)?);
    println!(
        "[{name}] member {out} {outage:?}, ttl {ttl:?}: {} acquisitions, validity left on return {least:.1}–{most:.1} ms; \
         release calls {releases}; members after: {}",
        holds.len(),
        m.holders(KEY)?
    );
    assert_clean(&report);
    let report = counted_twice(control, &m, out, outage)?;
    assert!(report.has(Property::LostSignal), "the checker missed the overlap:\n{report}");
    Ok(())
}

/// Negative control: a client that names member `x` twice (`x, y` and a proxy to `x`: two
/// servers of five make its majority; a client refuses the same address twice, not an alias) acquires while `out` is out, and a correct client acquires once `out`
/// is back. Both hold at once: the checker must report it (P3); their fences come from
/// disjoint counters, so the ledger may refuse either's writes.
fn counted_twice(name: &'static str, m: &Members, out: usize, outage: Outage) -> Result<Report, Failure> {
    let mut s = Suite::new(name)?;
    let (ttl, cap) = (s.rng.millis(1000, 1500), Duration::from_millis(100));
    let bounds = Bounds::new(ttl, cap);
    let live: Vec<usize> = (0..MEMBERS).filter(|&i| i != out).collect();
    let x = live[s.rng.index(live.len())];
    let y = *live.iter().filter(|&&i| i != x).nth(s.rng.index(live.len() - 1)).ok_or("no second member")?;
    let alias = Proxy::start(m.0[x].addr())?;
    let mut twice = s.spec("twice", &format!("{},{}", m.url(&[x, y]), alias.addr()), ttl, cap);
    twice.key = CONTROL_KEY.to_owned();
    twice.timeouts(RESPONSE);
    let mut b = s.spec("b", &m.all(), ttl, cap);
    b.key = CONTROL_KEY.to_owned();
    b.timeouts(RESPONSE);
    b.timeout = Some(ttl * 3);
    s.h.spawn(&twice)?;
    s.h.spawn(&b)?;
    m.out(out, outage, &s)?;
    let mark = s.h.mark();
    s.h.command("twice", "acquire", STEP)?;
    let t = s.h.wait_record(mark, "twice", STEP, |e| acquired(e) || matches!(e, Event::AcquireFailed { .. }))?;
    assert!(acquired(&t.event), "the client counting member {x} twice holds {x} and {y}: {t:?}");
    s.h.command("twice", "write 1", STEP)?;
    m.back(out, outage, &s)?;
    let mark = s.h.mark();
    s.h.command("b", "acquire", ttl * 3 + STEP)?;
    let r = s.h.wait_record(mark, "b", STEP, |e| acquired(e) || matches!(e, Event::AcquireFailed { .. }))?;
    assert!(acquired(&r.event), "b gathers the three others: {r:?}");
    for w in ["b", "twice", "b", "twice"] {
        s.h.command(w, "write 1", STEP)?;
    }
    s.h.command("twice", "release", STEP)?;
    s.h.command("b", "release", STEP)?;
    let report = s.finish(&bounds, None)?;
    println!("[{name}] members {x}, {x}, {y}: fence {}; b: fence {}", fence(&t), fence(&r));
    Ok(report)
}

/// Quorum 4: one member of five killed while three workers contend, then restarted empty.
#[test]
fn q04_quorum_one_member_down_acquires_with_reduced_validity() -> TestResult {
    let _turn = serial();
    one_member_out("q04 quorum one member down", "q04c counted twice, one down (negative control)", Outage::Down)
}

/// Quorum 5: one member of five frozen (SIGSTOP) while three workers contend, then resumed.
#[test]
fn q05_quorum_one_member_paused_acquires_with_reduced_validity() -> TestResult {
    let _turn = serial();
    one_member_out("q05 quorum one member paused", "q05c counted twice, one paused (negative control)", Outage::Paused)
}

/// Quorum 6: three members of five out of reach (each killed or frozen, drawn by the seed).
/// An acquisition fails with `NoQuorum` (the response timeout bounds it, not the deadline),
/// and once it returned the two members it reached hold nothing of the lock; after the
/// members come back the lock is acquired again. Negative control: the partial grants a
/// client that does not release them would leave (written by the test on the reached
/// members) are reported by the same check.
#[test]
fn q06_quorum_three_of_five_unavailable_fail_fast_and_leave_nothing() -> TestResult {
    let _turn = serial();
    let mut s = Suite::new("q06 quorum three of five unavailable")?;
    let m = Members::start()?;
    let (ttl, cap) = (s.rng.millis(1000, 2000), Duration::from_millis(100));
    let bounds = Bounds::new(ttl, cap);
    let mut pool: Vec<usize> = (0..MEMBERS).collect();
    let mut outs = Vec::new();
    for _ in 0..3 {
        let i = pool.remove(s.rng.index(pool.len()));
        outs.push((i, draw_outage(&mut s.rng)));
    }
    let reached = pool;
    let mut spec = s.spec("a", &m.all(), ttl, cap);
    spec.timeouts(RESPONSE);
    // A hang guard: the failure must come from the members, long before it.
    spec.timeout = Some(ttl * 4);
    s.h.spawn(&spec)?;
    // One hold while every member serves: counters exist, connections are open.
    s.h.command("a", "acquire", STEP)?;
    s.h.command("a", "write 1", STEP)?;
    s.h.command("a", "release", STEP)?;
    for &(i, outage) in &outs {
        m.out(i, outage, &s)?;
    }
    let mark = s.h.mark();
    s.h.command("a", "acquire", ttl * 4 + STEP)?;
    let r = s.h.wait_record(mark, "a", STEP, |e| acquired(e) || matches!(e, Event::AcquireFailed { .. }))?;
    // Checked at once: the call has returned.
    let left = m.leaks(&reached, Some(KEY))?;
    let Event::AcquireFailed { kind, error } = &r.event else { panic!("acquired with three of five out: {r:?}") };
    println!("[q06] out {outs:?}, reached {reached:?}: {error}; left behind: {left:?}");
    assert_eq!(*kind, FailKind::NoQuorum, "{error}");
    // Negative control: what a client that does not release its partial grants leaves.
    for &i in &reached {
        redis::cmd("SET")
            .arg(KEY)
            .arg("partial-grant")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query::<()>(&mut m.0[i].connection()?)?;
    }
    let forged = m.leaks(&reached, Some(KEY))?;
    assert_eq!(forged.len(), reached.len(), "the check missed a partial grant: {forged:?}");
    for &i in &reached {
        redis::cmd("DEL").arg(KEY).query::<()>(&mut m.0[i].connection()?)?;
    }
    for &(i, outage) in &outs {
        m.back(i, outage, &s)?;
    }
    // Resumed members run the failed attempt's requests from their sockets: a grant made then
    // holds the member until its TTL, which the next acquisition may have to wait out.
    let mark = s.h.mark();
    s.h.command("a", "acquire", ttl * 4 + STEP)?;
    let again = s.h.wait_record(mark, "a", STEP, |e| acquired(e) || matches!(e, Event::AcquireFailed { .. }))?;
    assert!(acquired(&again.event), "not acquired once the members are back: {again:?}");
    let Event::Acquired { start, .. } = again.event else { unreachable!("checked above") };
    println!(
        "[q06] acquired again in {} once the members were back; members: {}",
        ms(again.mono - start),
        m.holders(KEY)?
    );
    s.h.command("a", "write 1", STEP)?;
    s.h.command("a", "release", STEP)?;
    let mut report = s.finish(&bounds, None)?;
    report.extend(left);
    report.extend(m.leaks(&(0..MEMBERS).collect::<Vec<_>>(), None)?);
    assert_clean(&report);
    Ok(())
}
