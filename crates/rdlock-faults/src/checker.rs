//! The checker: reads a merged history and the ledger, and reports every violation of the
//! six properties (see the crate documentation), with the take-over times it measured.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use crate::clock::{micros, ms};
use crate::ledger::LedgerState;
use crate::record::{Event, HARNESS, Record, WriteBack};

/// Environment variable that overrides the default slack (milliseconds).
pub const SLACK_ENV: &str = "RDLOCK_FAULT_SLACK_MS";
/// Slack allowed on top of every stated bound by default: scheduling on a loaded machine.
pub const DEFAULT_SLACK: Duration = Duration::from_millis(400);

/// The lock's settings, which state the bounds the checker holds the history to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The lock's TTL.
    pub ttl: Duration,
    /// The waiters' poll cap.
    pub poll_cap: Duration,
    /// Allowed on top of each bound (scheduling, process start-up, logging).
    pub slack: Duration,
}

impl Bounds {
    /// Bounds for `ttl` and `poll_cap`, with the slack of `$RDLOCK_FAULT_SLACK_MS` or
    /// [`DEFAULT_SLACK`].
    pub fn new(ttl: Duration, poll_cap: Duration) -> Self {
        let slack = std::env::var(SLACK_ENV)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map_or(DEFAULT_SLACK, Duration::from_millis);
        Self { ttl, poll_cap, slack }
    }

    /// The clock-drift allowance the lock subtracts from its validity (ttl/100 + 2 ms).
    pub fn drift(&self) -> Duration {
        self.ttl / 100 + Duration::from_millis(2)
    }

    /// How long after the lock becomes free a waiter must hold it: poll cap + slack.
    pub fn wake_bound(&self) -> Duration {
        self.poll_cap + self.slack
    }

    /// What a dead or frozen waiter at the head of the queue adds to a hand-off: its claim
    /// (the TTL when shorter), then 1 ms and a loopback round trip before the next waiter's
    /// poll passes the lock on.
    pub fn stalled_waiter_cost(&self) -> Duration {
        rdlock_core::HANDOFF_CLAIM.min(self.ttl) + Duration::from_millis(5)
    }
}

/// The properties checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// P1: no write accepted under a stale token; the unfenced counter lost no update.
    MutualExclusion,
    /// P2: a waiter acquires within poll cap + slack of the lock becoming free.
    NoLostWakeup,
    /// P3: nobody acquires while another's lease is valid and its `lost()` has not fired;
    /// `lost()` fires on time.
    LostSignal,
    /// P4: no key without a TTL, no lock key left by a failed acquisition.
    NoLeak,
    /// P5: fencing tokens strictly increase in the order of acquisition.
    FenceOrder,
    /// P6: the mutex's value is a linearizable register: in the order of fences, each holder
    /// reads the value (and the fence) of the last accepted write-back; a refused one never
    /// shows.
    MutexValue,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::MutualExclusion => "P1 mutual exclusion",
            Property::NoLostWakeup => "P2 no lost wake-up",
            Property::LostSignal => "P3 lost signal",
            Property::NoLeak => "P4 nothing leaks",
            Property::FenceOrder => "P5 fence order",
            Property::MutexValue => "P6 mutex value",
        })
    }
}

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property violated.
    pub property: Property,
    /// What the history shows.
    pub detail: String,
}

impl Violation {
    fn new(property: Property, detail: impl Into<String>) -> Self {
        Self { property, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// How the lock became free before a take-over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FreeCause {
    /// The holder released it (measured from the start of the release).
    Released,
    /// The holder released it while a frozen or dead worker sat in the wait queue: the
    /// hand-off may go to that worker as a claim, which the others wait out.
    ReleasedToStalledWaiter,
    /// The holder was killed or frozen (measured from the fault: includes the TTL).
    HolderGone,
    /// The holder's lease was lost (measured from when the lock became free).
    LeaseLost,
    /// The lock server lost its data (measured from the fault).
    DataLost,
}

/// One take-over: the next acquisition after the lock became free, while someone waited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// How the lock became free.
    pub cause: FreeCause,
    /// The previous holder.
    pub from: String,
    /// The next holder.
    pub to: String,
    /// From the cause (release start, kill or freeze, lost lease, data loss) to the next
    /// acquisition, in µs.
    pub micros: i64,
}

/// Counts and measurements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Acquisitions in the history.
    pub acquisitions: usize,
    /// Writes the ledger accepted.
    pub writes_accepted: usize,
    /// Writes the ledger rejected.
    pub writes_rejected: u64,
    /// Unfenced increments acknowledged by workers.
    pub unsafe_increments: usize,
    /// Every take-over measured.
    pub takeovers: Vec<Takeover>,
    /// Mutex values read.
    pub mutex_reads: usize,
    /// Mutex write-backs written.
    pub mutex_written: usize,
    /// Mutex write-backs refused (the lease was lost).
    pub mutex_refused: usize,
    /// Mutex write-backs of unknown outcome.
    pub mutex_unknown: usize,
}

impl Stats {
    /// The longest take-over of this cause, in µs.
    pub fn max_takeover(&self, cause: FreeCause) -> Option<i64> {
        self.takeovers.iter().filter(|t| t.cause == cause).map(|t| t.micros).max()
    }

    /// The median take-over of this cause, in µs.
    pub fn median_takeover(&self, cause: FreeCause) -> Option<i64> {
        let mut v: Vec<i64> = self.takeovers.iter().filter(|t| t.cause == cause).map(|t| t.micros).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every violation, grouped by property.
    pub violations: Vec<Violation>,
    /// Counts and measurements.
    pub stats: Stats,
}

impl Report {
    /// No violation at all.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether some violation of `property` was found.
    pub fn has(&self, property: Property) -> bool {
        self.violations.iter().any(|v| v.property == property)
    }

    /// Adds violations found elsewhere (for example by [`scan_leaks`]).
    pub fn extend(&mut self, more: impl IntoIterator<Item = Violation>) {
        self.violations.extend(more);
        self.violations.sort_by_key(|v| v.property);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "{} acquisitions, {} writes accepted, {} rejected, {} unfenced increments; {} violation(s)",
            s.acquisitions,
            s.writes_accepted,
            s.writes_rejected,
            s.unsafe_increments,
            self.violations.len()
        )?;
        if s.mutex_reads > 0 {
            writeln!(
                f,
                "  mutex: {} reads; write-backs {} written, {} refused, {} unknown",
                s.mutex_reads, s.mutex_written, s.mutex_refused, s.mutex_unknown
            )?;
        }
        let mut by_cause: BTreeMap<FreeCause, Vec<i64>> = BTreeMap::new();
        for t in &s.takeovers {
            by_cause.entry(t.cause).or_default().push(t.micros);
        }
        for (cause, mut v) in by_cause {
            v.sort_unstable();
            let (min, med, max) = (v[0], v[v.len() / 2], v[v.len() - 1]);
            writeln!(
                f,
                "  take-over after {cause:?}: n={} min {} median {} max {}",
                v.len(),
                ms(min),
                ms(med),
                ms(max)
            )?;
        }
        for v in &self.violations {
            writeln!(f, "  VIOLATION {v}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Hold {
    worker: String,
    fence: u64,
    at: i64,
    /// `(logged at, valid_until)`: the acquisition's, then each renewal's.
    validity: Vec<(i64, i64)>,
    lost: Option<(i64, String)>,
    releasing: Option<i64>,
    released: Option<(i64, bool)>,
    /// Killed or frozen while holding.
    gone: Option<i64>,
    data_lost: Option<i64>,
}

impl Hold {
    /// The latest `valid_until` logged at or before `t`.
    fn valid_until_at(&self, t: i64) -> i64 {
        self.validity.iter().filter(|(at, _)| *at <= t).map(|&(_, v)| v).max().unwrap_or(self.validity[0].1)
    }

    fn final_valid_until(&self) -> i64 {
        self.validity.iter().map(|&(_, v)| v).max().unwrap_or(self.at)
    }

    /// Whether the holder still trusted its lease at `t`.
    fn trusted_at(&self, t: i64) -> bool {
        self.releasing.is_none_or(|r| r > t)
            && self.lost.as_ref().is_none_or(|(l, _)| *l > t)
            && self.valid_until_at(t) > t
    }
}

#[derive(Debug, Default)]
struct WorkerLife {
    /// `(attempt start, outcome time, acquired)`.
    waits: Vec<(i64, Option<(i64, bool)>)>,
    /// `(frozen at, resumed at)`: the harness's freezes, and the stalls the worker saw.
    pauses: Vec<(i64, Option<i64>)>,
    killed: Option<i64>,
    last_record: i64,
}

impl WorkerLife {
    fn frozen_during(&self, from: i64, to: i64) -> bool {
        self.pauses.iter().any(|&(p, r)| p <= to && r.is_none_or(|r| r >= from)) || self.killed.is_some_and(|k| k <= to)
    }

    /// When a guard recorded at `recorded` was handed over. A guard is never handed over with
    /// its lease over, so one whose lease (`valid_until`) ran out while the worker was frozen,
    /// after its attempt began and before the record, was handed over before that freeze: the
    /// record came late. Otherwise, at its record.
    fn handed_at(&self, start: i64, valid_until: i64, recorded: i64) -> i64 {
        self.pauses
            .iter()
            .filter(|&&(p, r)| p >= start && p <= valid_until && r.is_some_and(|r| r > valid_until && r <= recorded))
            .map(|&(p, _)| p)
            .min()
            .unwrap_or(recorded)
    }

    /// The instant by which the worker has run for `span` after `t`: its freezes and stalls
    /// do not count, however they follow one another (a worker let go on and frozen again a
    /// moment later has had no time to act).
    fn ran_for(&self, t: i64, span: i64) -> i64 {
        let mut frozen: Vec<(i64, i64)> =
            self.pauses.iter().map(|&(p, r)| (p, r.unwrap_or(i64::MAX))).filter(|&(_, r)| r > t).collect();
        frozen.sort_unstable();
        let (mut now, mut left) = (t, span);
        for (p, r) in frozen {
            if r <= now {
                continue;
            }
            let running = p.max(now) - now;
            if running >= left {
                break;
            }
            left -= running;
            now = r;
        }
        now.saturating_add(left)
    }
}

/// Checks a history (records of all workers and of the harness, in any order) against the
/// ledger as read at the end.
pub fn check(records: &[Record], ledger: &LedgerState, bounds: &Bounds) -> Report {
    let mut records: Vec<&Record> = records.iter().collect();
    records.sort_by_key(|r| r.mono);
    let end = records.last().map_or(0, |r| r.mono);
    let (holds, lives) = replay(&records);
    let mut report = Report::default();
    mutual_exclusion(&records, &holds, &lives, ledger, &mut report);
    wakeups(&holds, &lives, &outages(&records), bounds, end, &mut report);
    lost_signal(&holds, &lives, bounds, &mut report);
    fence_order(&holds, &mut report);
    mutex_value(&records, &mut report);
    report.violations.sort_by_key(|v| v.property);
    report
}

fn replay(records: &[&Record]) -> (Vec<Hold>, HashMap<String, WorkerLife>) {
    let mut holds: Vec<Hold> = Vec::new();
    let mut current: HashMap<String, usize> = HashMap::new();
    let mut lives: HashMap<String, WorkerLife> = HashMap::new();
    for r in records {
        let w = r.worker.as_str();
        if w != HARNESS {
            lives.entry(w.to_owned()).or_default().last_record = r.mono;
        }
        let mine = |holds: &mut Vec<Hold>, fence: u64| -> Option<usize> {
            current.get(w).copied().filter(|&i| holds[i].fence == fence)
        };
        match &r.event {
            Event::Attempt => lives.entry(w.to_owned()).or_default().waits.push((r.mono, None)),
            Event::Acquired { fence, start, valid_until, .. } => {
                let at = lives.get(w).map_or(r.mono, |life| life.handed_at(*start, *valid_until, r.mono));
                close_wait(&mut lives, w, at, true);
                current.insert(w.to_owned(), holds.len());
                holds.push(Hold {
                    worker: w.to_owned(),
                    fence: *fence,
                    at,
                    validity: vec![(at, *valid_until)],
                    lost: None,
                    releasing: None,
                    released: None,
                    gone: None,
                    data_lost: None,
                });
            }
            Event::AcquireFailed { .. } => close_wait(&mut lives, w, r.mono, false),
            Event::Renewed { fence, valid_until } => {
                if let Some(i) = mine(&mut holds, *fence) {
                    holds[i].validity.push((r.mono, *valid_until));
                }
            }
            Event::Lost { fence, reason } => {
                if let Some(i) = mine(&mut holds, *fence) {
                    holds[i].lost.get_or_insert((r.mono, reason.clone()));
                }
            }
            Event::Releasing { fence } => {
                if let Some(i) = mine(&mut holds, *fence) {
                    holds[i].releasing.get_or_insert(r.mono);
                }
            }
            Event::Released { fence, held } => {
                if let Some(i) = mine(&mut holds, *fence) {
                    holds[i].released = Some((r.mono, *held));
                }
            }
            Event::Paused { target } | Event::Killed { target } => {
                if let Some(&i) = current.get(target)
                    && holds[i].releasing.is_none()
                {
                    holds[i].gone.get_or_insert(r.mono);
                }
                let life = lives.entry(target.clone()).or_default();
                if matches!(r.event, Event::Paused { .. }) {
                    life.pauses.push((r.mono, None));
                } else {
                    life.killed.get_or_insert(r.mono);
                }
            }
            Event::Stalled { from, to } => lives.entry(w.to_owned()).or_default().pauses.push((*from, Some(*to))),
            Event::Resumed { target } => {
                if let Some(p) =
                    lives.entry(target.clone()).or_default().pauses.iter_mut().rev().find(|p| p.1.is_none())
                {
                    p.1 = Some(r.mono);
                }
            }
            Event::DataLost => {
                for &i in current.values() {
                    if holds[i].releasing.is_none() {
                        holds[i].data_lost.get_or_insert(r.mono);
                    }
                }
            }
            _ => {}
        }
    }
    (holds, lives)
}

fn close_wait(lives: &mut HashMap<String, WorkerLife>, worker: &str, at: i64, acquired: bool) {
    if let Some(wait) = lives.entry(worker.to_owned()).or_default().waits.iter_mut().rev().find(|w| w.1.is_none()) {
        wait.1 = Some((at, acquired));
    }
}

fn mutual_exclusion(
    records: &[&Record],
    holds: &[Hold],
    lives: &HashMap<String, WorkerLife>,
    ledger: &LedgerState,
    report: &mut Report,
) {
    let p = Property::MutualExclusion;
    let out = &mut report.violations;
    for pair in ledger.log.windows(2) {
        if pair[1].0 < pair[0].0 {
            out.push(Violation::new(
                p,
                format!(
                    "the ledger accepted token {} ({}) after token {} ({})",
                    pair[1].0, pair[1].1, pair[0].0, pair[0].1
                ),
            ));
        }
    }
    let mut granted: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for h in holds {
        granted.entry(&h.worker).or_default().insert(h.fence);
    }
    let mut writers: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for (token, worker) in &ledger.log {
        writers.entry(*token).or_default().insert(worker);
        if !granted.get(worker.as_str()).is_some_and(|g| g.contains(token)) {
            out.push(Violation::new(p, format!("{worker} wrote under token {token}, which was never granted to it")));
        }
    }
    for (token, ws) in &writers {
        if ws.len() > 1 {
            let names: Vec<&str> = ws.iter().copied().collect();
            out.push(Violation::new(
                p,
                format!(
                    "the ledger accepted writes under token {token} from {}: a stale holder was not fenced out",
                    names.join(" and ")
                ),
            ));
        }
    }
    if ledger.count != ledger.log.len() as u64 {
        out.push(Violation::new(p, format!("fenced counter {} but {} logged writes", ledger.count, ledger.log.len())));
    }
    let killed = |w: &str| lives.get(w).is_some_and(|l| l.killed.is_some());
    let kills = lives.values().filter(|l| l.killed.is_some()).count() as u64;
    let mut acked: BTreeMap<&str, usize> = BTreeMap::new();
    let mut in_ledger: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut rejected, mut unsafe_acked) = (0u64, 0usize);
    for r in records {
        match r.event {
            Event::Write { accepted: true, .. } => *acked.entry(&r.worker).or_default() += 1,
            Event::Write { accepted: false, .. } => rejected += 1,
            Event::Unsafe { .. } => unsafe_acked += 1,
            _ => {}
        }
    }
    for (_, w) in &ledger.log {
        *in_ledger.entry(w).or_default() += 1;
    }
    let names: BTreeSet<&str> = acked.keys().chain(in_ledger.keys()).copied().collect();
    for w in names {
        let (a, n) = (acked.get(w).copied().unwrap_or(0), in_ledger.get(w).copied().unwrap_or(0));
        if a > n || (n > a && !killed(w)) {
            out.push(Violation::new(p, format!("{w} acknowledged {a} accepted writes; the ledger logged {n}")));
        }
    }
    if rejected > ledger.rejected || ledger.rejected > rejected + kills {
        out.push(Violation::new(
            p,
            format!("workers saw {rejected} rejected writes; the ledger counted {}", ledger.rejected),
        ));
    }
    let unsafe_acked_u = unsafe_acked as u64;
    if ledger.unsafe_count < unsafe_acked_u {
        out.push(Violation::new(
            p,
            format!(
                "the unfenced counter is {} after {} acknowledged increments: {} update(s) lost to overlapping holders",
                ledger.unsafe_count,
                unsafe_acked,
                unsafe_acked_u - ledger.unsafe_count
            ),
        ));
    } else if ledger.unsafe_count > unsafe_acked_u + kills {
        out.push(Violation::new(
            p,
            format!(
                "the unfenced counter is {} after only {} acknowledged increments",
                ledger.unsafe_count, unsafe_acked
            ),
        ));
    }
    report.stats.writes_accepted = ledger.log.len();
    report.stats.writes_rejected = ledger.rejected;
    report.stats.unsafe_increments = unsafe_acked;
    report.stats.acquisitions = holds.len();
}

/// When (and how) the lock is known to be free of hold `h`, with the moment the take-over is
/// measured from.
fn free_at(h: &Hold, bounds: &Bounds) -> Option<(i64, FreeCause, i64)> {
    let mut c: Vec<(i64, FreeCause, i64)> = Vec::new();
    if let Some(r) = h.releasing {
        c.push((r, FreeCause::Released, r));
    }
    if let Some(g) = h.gone {
        let t = g + micros(bounds.ttl);
        c.push((t, FreeCause::HolderGone, g));
    }
    if let Some(d) = h.data_lost {
        c.push((d, FreeCause::DataLost, d));
    }
    match &h.lost {
        Some((l, reason)) if reason == "NotOwner" => c.push((*l, FreeCause::LeaseLost, *l)),
        Some((l, _)) if h.gone.is_none() => {
            let t = (h.valid_until_at(*l) + micros(bounds.drift())).min(*l);
            c.push((t, FreeCause::LeaseLost, t));
        }
        _ => {}
    }
    c.into_iter().min_by_key(|x| x.0)
}

/// How long a dead waiter's queue entry may linger (the queue's own expiry, at least 60 s).
const QUEUE_LINGER_US: i64 = 60_000_000;

/// Workers that were queued when they were killed (recently) or frozen (around `free`): a
/// release may hand the lock to one of them, and the others then wait out its claim. Also
/// when the last of the frozen ones resumes: its connection stayed open, so it may have heard
/// the hand-off and hold the lock for its TTL, acting once it resumes (a frozen holder).
fn stalled_waiters(lives: &HashMap<String, WorkerLife>, free: i64, until: i64) -> (usize, Option<i64>) {
    let waiting_at = |life: &WorkerLife, t: i64| {
        life.waits.iter().any(|&(start, outcome)| start <= t && outcome.is_none_or(|(o, _)| o > t))
    };
    let (mut count, mut resumed) = (0, None::<i64>);
    for life in lives.values() {
        let killed = life.killed.is_some_and(|k| k > free - QUEUE_LINGER_US && k <= until && waiting_at(life, k));
        let frozen: Vec<i64> = life
            .pauses
            .iter()
            .filter(|&&(p, r)| p <= until && r.is_none_or(|r| r >= free) && waiting_at(life, p))
            .map(|&(_, r)| r.unwrap_or(i64::MAX))
            .collect();
        if killed || !frozen.is_empty() {
            count += 1;
        }
        // Killed after the lock became free, while waiting: it may have heard its hand-off and
        // died confirming it (a confirm policy's `WAIT`), holding the key for its TTL, as a
        // waiter frozen for good would.
        if life.killed.is_some_and(|k| k >= free && k <= until && waiting_at(life, k)) {
            resumed = Some(i64::MAX);
        }
        if let Some(&r) = frozen.iter().max() {
            resumed = Some(resumed.map_or(r, |m| m.max(r)));
        }
    }
    (count, resumed)
}

/// When the lock server could not serve the workers: from a failover's start until every
/// worker follows the new primary (`ServerDown` to `ServerUp`; open-ended without the latter).
fn outages(records: &[&Record]) -> Vec<(i64, i64)> {
    let (mut out, mut down) = (Vec::new(), None);
    for r in records {
        match r.event {
            Event::ServerDown => {
                down.get_or_insert(r.mono);
            }
            Event::ServerUp => out.extend(down.take().map(|d| (d, r.mono))),
            _ => {}
        }
    }
    out.extend(down.map(|d| (d, i64::MAX)));
    out
}

fn wakeups(
    holds: &[Hold],
    lives: &HashMap<String, WorkerLife>,
    outages: &[(i64, i64)],
    bounds: &Bounds,
    end: i64,
    report: &mut Report,
) {
    let bound = micros(bounds.wake_bound());
    for h in holds {
        let Some((free, mut cause, origin)) = free_at(h, bounds) else { continue };
        let mut deadline = free + bound;
        // Freed while the server fails over: free for the workers once they follow (a release
        // the old primary acknowledged may reach the new one only then, sent again), and
        // handed on from then.
        let mut handed = free;
        for &(down, up) in outages {
            if down <= deadline && up >= free {
                deadline = deadline.max(up.saturating_add(bound));
                handed = handed.max(up);
            }
        }
        let (stalled, resumed) = stalled_waiters(lives, handed, deadline);
        if stalled > 0 && cause == FreeCause::Released {
            // Each stalled waiter ahead in the queue may be handed a claim it never confirms;
            // a frozen one may have heard its hand-off and hold the lock until it resumes (at
            // most its TTL), then act as any holder.
            deadline += stalled as i64 * micros(bounds.stalled_waiter_cost());
            if let Some(r) = resumed {
                deadline = deadline.max(r.min(handed + micros(bounds.ttl)) + bound);
            }
            cause = FreeCause::ReleasedToStalledWaiter;
        }
        let next = holds.iter().filter(|o| o.at > h.at).min_by_key(|o| o.at);
        // Waiters in place when the lock became free, alive throughout the bound, and not
        // giving up (deadline) within it.
        let waiters: Vec<&str> = lives
            .iter()
            .filter(|(_, life)| {
                life.waits.iter().any(|&(start, outcome)| {
                    start <= free
                        && match outcome {
                            None => true,
                            Some((t, acquired)) => t >= origin && (acquired || t > deadline),
                        }
                })
            })
            .filter(|(_, life)| !life.frozen_during(free, deadline))
            .map(|(w, _)| w.as_str())
            .collect();
        if waiters.is_empty() {
            continue;
        }
        match next {
            Some(n) if n.at <= deadline => {
                if cause == FreeCause::ReleasedToStalledWaiter && n.at <= free + bound {
                    cause = FreeCause::Released;
                }
                report.stats.takeovers.push(Takeover {
                    cause,
                    from: h.worker.clone(),
                    to: n.worker.clone(),
                    micros: n.at - origin,
                });
            }
            _ if deadline > end => {}
            _ => {
                let late =
                    next.map_or("never".to_owned(), |n| format!("{} after it ({} took it)", ms(n.at - free), n.worker));
                report.violations.push(Violation::new(
                    Property::NoLostWakeup,
                    format!(
                        "the lock became free of {} (fence {}, {cause:?}) while {} waited; the next acquisition came {late}, bound {}",
                        h.worker,
                        h.fence,
                        waiters.join(", "),
                        ms(deadline - free)
                    ),
                ));
            }
        }
    }
}

fn lost_signal(holds: &[Hold], lives: &HashMap<String, WorkerLife>, bounds: &Bounds, report: &mut Report) {
    let p = Property::LostSignal;
    let slack = micros(bounds.slack);
    for b in holds {
        for a in holds.iter().filter(|a| a.worker != b.worker && a.at < b.at && a.trusted_at(b.at)) {
            report.violations.push(Violation::new(
                p,
                format!(
                    "{} acquired (fence {}) while {}'s lease (fence {}) was valid for {} more and its lost() had not fired",
                    b.worker,
                    b.fence,
                    a.worker,
                    a.fence,
                    ms(a.valid_until_at(b.at) - b.at)
                ),
            ));
        }
    }
    for h in holds {
        let life = lives.get(&h.worker);
        match &h.lost {
            Some((l, reason)) if reason == "Expired" => {
                let v = h.valid_until_at(*l);
                let due = life.map_or(v + slack, |life| life.ran_for(v, slack));
                if *l > due {
                    report.violations.push(Violation::new(
                        p,
                        format!(
                            "{}'s lost() (fence {}) fired {} after its lease ran out and the worker ran {} more",
                            h.worker,
                            h.fence,
                            ms(*l - v),
                            ms(slack)
                        ),
                    ));
                }
            }
            Some(_) => {}
            None => {
                let v = h.final_valid_until();
                let due = life.map_or(v.saturating_add(slack), |life| life.ran_for(v, slack));
                let ended =
                    h.releasing.is_some_and(|r| r <= due) || life.is_some_and(|l| l.killed.is_some_and(|k| k <= due));
                let alive_after = life.is_some_and(|l| l.last_record > due && l.killed.is_none_or(|k| k > due));
                if !ended && alive_after {
                    report.violations.push(Violation::new(
                        p,
                        format!("{}'s lease (fence {}) ran out but its lost() never fired", h.worker, h.fence),
                    ));
                }
            }
        }
    }
}

fn fence_order(holds: &[Hold], report: &mut Report) {
    let mut by_time: Vec<&Hold> = holds.iter().collect();
    by_time.sort_by_key(|h| h.at);
    for pair in by_time.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.fence <= a.fence {
            let what = if b.fence == a.fence { "the same fence as" } else { "a lower fence than" };
            report.violations.push(Violation::new(
                Property::FenceOrder,
                format!("{} acquired with fence {}, {what} {}'s earlier {}", b.worker, b.fence, a.worker, a.fence),
            ));
        }
    }
}

/// P6: replays the mutex's reads and write-backs in the order of fences (the order in which
/// the store script accepts writes) from an empty mutex (0, never written). A write-back of
/// unknown outcome may or may not have landed, so until the next read both are possible.
fn mutex_value(records: &[&Record], report: &mut Report) {
    let mut reads: BTreeMap<u64, (&str, u64, Option<u64>)> = BTreeMap::new();
    let mut writes: BTreeMap<u64, (u64, WriteBack)> = BTreeMap::new();
    for r in records {
        match r.event {
            Event::MutexRead { fence, value, written_by } => {
                reads.insert(fence, (&r.worker, value, written_by));
            }
            Event::MutexWrite { fence, value, outcome } => {
                writes.insert(fence, (value, outcome));
                let stats = &mut report.stats;
                *match outcome {
                    WriteBack::Written => &mut stats.mutex_written,
                    WriteBack::Refused => &mut stats.mutex_refused,
                    WriteBack::Unknown => &mut stats.mutex_unknown,
                } += 1;
            }
            _ => {}
        }
    }
    report.stats.mutex_reads = reads.len();
    let fences: BTreeSet<u64> = reads.keys().chain(writes.keys()).copied().collect();
    // What a read may find: `(value, written_by)`.
    let mut may: Vec<(u64, Option<u64>)> = vec![(0, None)];
    for f in fences {
        if let Some(&(worker, value, written_by)) = reads.get(&f) {
            let seen = (value, written_by);
            if !may.contains(&seen) {
                let refused = written_by.and_then(|w| writes.get(&w)).is_some_and(|&(_, o)| o == WriteBack::Refused);
                let detail = if refused {
                    format!(
                        "{worker} (fence {f}) read {value} written by fence {}, whose write-back was refused",
                        written_by.unwrap_or_default()
                    )
                } else {
                    format!(
                        "{worker} (fence {f}) read {value} written by {written_by:?}; the write-backs before it left {may:?}"
                    )
                };
                report.violations.push(Violation::new(Property::MutexValue, detail));
            }
            // Go on from what was read, so that one fault is reported once.
            may = vec![seen];
        }
        match writes.get(&f) {
            Some(&(value, WriteBack::Written)) => may = vec![(value, Some(f))],
            Some(&(value, WriteBack::Unknown)) => may.push((value, Some(f))),
            _ => {}
        }
    }
}

/// P4 on the lock server: every key but those of `may_persist` (a mutex's value, which is the
/// user's state and outlives the lock unless given a value TTL) has a TTL, and none of
/// `must_be_absent` exists.
pub fn scan_leaks(
    conn: &mut redis::Connection,
    must_be_absent: &[&str],
    may_persist: &[&str],
) -> redis::RedisResult<Vec<Violation>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(200).query(conn)?;
        for key in keys {
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(conn)?;
            if pttl == -1 && !may_persist.contains(&key.as_str()) {
                out.push(Violation::new(Property::NoLeak, format!("key {key:?} has no TTL")));
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for key in must_be_absent {
        let value: Option<String> = redis::cmd("GET").arg(*key).query(conn).unwrap_or(None);
        if let Some(v) = value {
            out.push(Violation::new(Property::NoLeak, format!("lock key {key:?} still exists (value {v})")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    fn rec(worker: &str, at_ms: i64, event: Event) -> Record {
        Record { worker: worker.into(), mono: at_ms * MS, wall: at_ms * MS, event }
    }

    fn acquired(worker: &str, at_ms: i64, fence: u64, valid_ms: i64) -> Record {
        rec(
            worker,
            at_ms,
            Event::Acquired { fence, start: at_ms * MS, valid_until: valid_ms * MS, valid_until_wall: 0 },
        )
    }

    fn bounds() -> Bounds {
        Bounds {
            ttl: Duration::from_millis(1000),
            poll_cap: Duration::from_millis(100),
            slack: Duration::from_millis(50),
        }
    }

    /// A writes twice under 10, hands over to B (waiting since 5), which writes under 11.
    fn clean() -> (Vec<Record>, LedgerState) {
        let h = vec![
            rec("a", 0, Event::Attempt),
            acquired("a", 1, 10, 990),
            rec("b", 5, Event::Attempt),
            rec("a", 10, Event::Write { fence: 10, accepted: true }),
            rec("a", 12, Event::Unsafe { fence: 10, read: 0 }),
            rec("a", 20, Event::Write { fence: 10, accepted: true }),
            rec("a", 22, Event::Unsafe { fence: 10, read: 1 }),
            rec("a", 30, Event::Releasing { fence: 10 }),
            acquired("b", 31, 11, 1020),
            rec("a", 32, Event::Released { fence: 10, held: true }),
            rec("b", 40, Event::Write { fence: 11, accepted: true }),
            rec("b", 42, Event::Unsafe { fence: 11, read: 2 }),
            rec("b", 50, Event::Releasing { fence: 11 }),
            rec("b", 51, Event::Released { fence: 11, held: true }),
        ];
        let ledger = LedgerState {
            log: vec![(10, "a".into()), (10, "a".into()), (11, "b".into())],
            count: 3,
            rejected: 0,
            unsafe_count: 3,
        };
        (h, ledger)
    }

    #[test]
    fn a_clean_history_passes_and_measures_the_hand_off() {
        let (h, ledger) = clean();
        let report = check(&h, &ledger, &bounds());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.stats.acquisitions, 2);
        assert_eq!(report.stats.writes_accepted, 3);
        assert_eq!(report.stats.max_takeover(FreeCause::Released), Some(MS));
    }

    #[test]
    fn a_lost_update_on_the_unfenced_counter_is_reported() {
        let (h, mut ledger) = clean();
        ledger.unsafe_count = 2;
        let report = check(&h, &ledger, &bounds());
        assert!(report.has(Property::MutualExclusion), "{report}");
        assert!(report.violations[0].detail.contains("1 update(s) lost"));
    }

    #[test]
    fn a_ledger_whose_tokens_go_down_or_come_from_nowhere_is_reported() {
        let (h, mut ledger) = clean();
        ledger.log = vec![(10, "a".into()), (11, "b".into()), (10, "a".into())];
        assert!(check(&h, &ledger, &bounds()).has(Property::MutualExclusion));
        let (h, mut ledger) = clean();
        ledger.log[2] = (12, "b".into());
        let report = check(&h, &ledger, &bounds());
        assert!(report.violations.iter().any(|v| v.detail.contains("never granted")), "{report}");
    }

    #[test]
    fn two_holders_with_one_token_are_reported_three_ways() {
        // The negative control: B acquires on a promoted replica that never saw A's lock.
        let h = vec![
            acquired("a", 0, 10, 2980),
            acquired("b", 500, 10, 3480),
            rec("a", 510, Event::Write { fence: 10, accepted: true }),
            rec("b", 511, Event::Write { fence: 10, accepted: true }),
            rec("a", 530, Event::Unsafe { fence: 10, read: 0 }),
            rec("b", 531, Event::Unsafe { fence: 10, read: 0 }),
        ];
        let ledger =
            LedgerState { log: vec![(10, "a".into()), (10, "b".into())], count: 2, rejected: 0, unsafe_count: 1 };
        let report = check(&h, &ledger, &bounds());
        assert!(report.has(Property::MutualExclusion), "{report}");
        assert!(report.has(Property::LostSignal), "{report}");
        assert!(report.has(Property::FenceOrder), "{report}");
        assert!(report.violations.iter().any(|v| v.detail.contains("from a and b")), "{report}");
    }

    #[test]
    fn a_frozen_holder_is_fenced_out_without_violation() {
        // A is frozen at 100 past its validity; B takes over after the key expired and writes;
        // A resumes, its lost() fires, its stale write is rejected.
        let h = vec![
            acquired("a", 0, 10, 988),
            rec("b", 5, Event::Attempt),
            rec("a", 50, Event::PausePoint { fence: 10 }),
            rec(HARNESS, 100, Event::Paused { target: "a".into() }),
            acquired("b", 1050, 11, 2040),
            rec("b", 1060, Event::Write { fence: 11, accepted: true }),
            rec(HARNESS, 1500, Event::Resumed { target: "a".into() }),
            rec("a", 1502, Event::Lost { fence: 10, reason: "Expired".into() }),
            rec("a", 1503, Event::Write { fence: 10, accepted: false }),
            rec("a", 1510, Event::Releasing { fence: 10 }),
            rec("a", 1511, Event::Released { fence: 10, held: false }),
        ];
        let ledger = LedgerState { log: vec![(11, "b".into())], count: 1, rejected: 1, unsafe_count: 0 };
        let report = check(&h, &ledger, &bounds());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.stats.max_takeover(FreeCause::HolderGone), Some(950 * MS));
    }

    #[test]
    fn a_late_lost_signal_and_a_missing_one_are_reported() {
        let late =
            vec![acquired("a", 0, 10, 988), rec("a", 988 + 200, Event::Lost { fence: 10, reason: "Expired".into() })];
        let report = check(&late, &LedgerState::default(), &bounds());
        assert!(report.violations.iter().any(|v| v.detail.contains("fired 200.0 ms after")), "{report}");
        let missing = vec![acquired("a", 0, 10, 988), rec("a", 2000, Event::Done { cmd: "hold 2000".into() })];
        let report = check(&missing, &LedgerState::default(), &bounds());
        assert!(report.violations.iter().any(|v| v.detail.contains("never fired")), "{report}");
    }

    #[test]
    fn a_waiter_left_waiting_after_the_lock_is_free_is_a_lost_wake_up() {
        let h = vec![
            acquired("a", 0, 10, 988),
            rec("b", 5, Event::Attempt),
            rec("a", 30, Event::Releasing { fence: 10 }),
            rec("a", 31, Event::Released { fence: 10, held: true }),
            acquired("b", 30 + 400, 11, 1400),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.has(Property::NoLostWakeup), "{report}");
        // Within poll cap + slack it is fine.
        let mut ok = h.clone();
        ok[4] = acquired("b", 30 + 140, 11, 1140);
        assert!(check(&ok, &LedgerState::default(), &bounds()).is_clean());
    }

    #[test]
    fn a_release_handed_to_a_dead_waiter_may_cost_a_claim_not_a_ttl() {
        // C queued, then was killed; A's release hands C's entry a claim, so B waits it out:
        // not a lost wake-up, but counted apart. Waiting out C's TTL (1 s) is one.
        let history = |b_at: i64| {
            vec![
                acquired("a", 0, 10, 988),
                rec("c", 5, Event::Attempt),
                rec("b", 6, Event::Attempt),
                rec(HARNESS, 10, Event::Killed { target: "c".into() }),
                rec("a", 30, Event::Releasing { fence: 10 }),
                rec("a", 31, Event::Released { fence: 10, held: true }),
                acquired("b", 30 + b_at, 12, 2000),
            ]
        };
        assert!(check(&history(1000), &LedgerState::default(), &bounds()).has(Property::NoLostWakeup));
        let h = history(350);
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.stats.max_takeover(FreeCause::ReleasedToStalledWaiter), Some(350 * MS));
        // Without the dead waiter the same delay is a lost wake-up.
        let alive: Vec<Record> = h.into_iter().filter(|r| r.worker != "c" && r.worker != HARNESS).collect();
        assert!(check(&alive, &LedgerState::default(), &bounds()).has(Property::NoLostWakeup));
    }

    #[test]
    fn a_frozen_waiter_that_heard_its_hand_off_may_hold_until_it_resumes() {
        // C queued, then was frozen with its connection open: A's release is heard, so C holds
        // the lock, and acts only when it resumes (at 800); B gets it from C after that. Not
        // a lost wake-up: C was a frozen holder. A wait that outlasts C's resumption is one.
        let history = |b_at: i64| {
            vec![
                acquired("a", 0, 10, 988),
                rec("c", 5, Event::Attempt),
                rec("b", 6, Event::Attempt),
                rec(HARNESS, 10, Event::Paused { target: "c".into() }),
                rec("a", 30, Event::Releasing { fence: 10 }),
                rec("a", 31, Event::Released { fence: 10, held: true }),
                rec(HARNESS, 800, Event::Resumed { target: "c".into() }),
                acquired("c", 801, 11, 1790),
                rec("c", 805, Event::Releasing { fence: 11 }),
                rec("c", 806, Event::Released { fence: 11, held: true }),
                acquired("b", b_at, 12, b_at + 990),
            ]
        };
        let report = check(&history(810), &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        let never = vec![
            acquired("a", 0, 10, 988),
            rec("c", 5, Event::Attempt),
            rec("b", 6, Event::Attempt),
            rec(HARNESS, 10, Event::Paused { target: "c".into() }),
            rec("a", 30, Event::Releasing { fence: 10 }),
            rec("a", 31, Event::Released { fence: 10, held: true }),
            rec(HARNESS, 800, Event::Resumed { target: "c".into() }),
            acquired("b", 2500, 12, 3490),
        ];
        assert!(check(&never, &LedgerState::default(), &bounds()).has(Property::NoLostWakeup));
    }

    #[test]
    fn a_killed_holder_is_taken_over_within_ttl_and_poll_cap() {
        let mut h = vec![
            acquired("a", 0, 10, 988),
            rec("b", 5, Event::Attempt),
            rec(HARNESS, 200, Event::Killed { target: "a".into() }),
            acquired("b", 1150, 11, 2140),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.stats.max_takeover(FreeCause::HolderGone), Some(950 * MS));
        h[3] = acquired("b", 200 + 1000 + 200, 11, 2390);
        assert!(check(&h, &LedgerState::default(), &bounds()).has(Property::NoLostWakeup));
    }

    #[test]
    fn fences_must_increase_in_acquisition_order() {
        let h = vec![
            acquired("a", 0, 10, 988),
            rec("a", 10, Event::Releasing { fence: 10 }),
            rec("a", 11, Event::Released { fence: 10, held: true }),
            acquired("b", 20, 9, 1008),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.has(Property::FenceOrder), "{report}");
        assert!(report.violations[0].detail.contains("a lower fence"));
    }

    /// A increments the mutex counter (0 -> 1) under fence 10; B reads it under 11 and is
    /// frozen, its write-back (2) refused; C reads 1 under 12 and writes 2.
    fn mutex_history() -> Vec<Record> {
        let read = |w: &str, at: i64, fence: u64, value: u64, written_by: Option<u64>| {
            rec(w, at, Event::MutexRead { fence, value, written_by })
        };
        let write =
            |w: &str, at: i64, fence: u64, value: u64, outcome| rec(w, at, Event::MutexWrite { fence, value, outcome });
        vec![
            acquired("a", 0, 10, 988),
            read("a", 0, 10, 0, None),
            rec("a", 2, Event::Releasing { fence: 10 }),
            write("a", 3, 10, 1, WriteBack::Written),
            rec("a", 3, Event::Released { fence: 10, held: true }),
            rec("c", 4, Event::Attempt),
            acquired("b", 5, 11, 993),
            read("b", 5, 11, 1, Some(10)),
            rec(HARNESS, 10, Event::Paused { target: "b".into() }),
            acquired("c", 1050, 12, 2040),
            read("c", 1050, 12, 1, Some(10)),
            rec("c", 1052, Event::Releasing { fence: 12 }),
            write("c", 1053, 12, 2, WriteBack::Written),
            rec("c", 1053, Event::Released { fence: 12, held: true }),
            rec(HARNESS, 1500, Event::Resumed { target: "b".into() }),
            rec("b", 1501, Event::Lost { fence: 11, reason: "Expired".into() }),
            rec("b", 1502, Event::Releasing { fence: 11 }),
            write("b", 1503, 11, 2, WriteBack::Refused),
            rec("b", 1503, Event::Released { fence: 11, held: false }),
            acquired("a", 1600, 13, 2590),
            read("a", 1600, 13, 2, Some(12)),
            rec("a", 1601, Event::Releasing { fence: 13 }),
            rec("a", 1602, Event::Released { fence: 13, held: true }),
        ]
    }

    #[test]
    fn a_mutex_counter_with_a_refused_write_back_passes() {
        let report = check(&mutex_history(), &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        let s = &report.stats;
        assert_eq!((s.mutex_reads, s.mutex_written, s.mutex_refused, s.mutex_unknown), (4, 2, 1, 0));
    }

    #[test]
    fn a_refused_write_back_that_shows_or_a_lost_one_is_reported() {
        // The negative controls: the frozen holder's write landed (C read it), or C's write
        // was lost (the last read finds 1).
        let mut h = mutex_history();
        h[10] = rec("c", 1050, Event::MutexRead { fence: 12, value: 2, written_by: Some(11) });
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.has(Property::MutexValue), "{report}");
        assert!(report.violations[0].detail.contains("whose write-back was refused"), "{report}");
        let mut h = mutex_history();
        h[20] = rec("a", 1600, Event::MutexRead { fence: 13, value: 1, written_by: Some(10) });
        let report = check(&h, &LedgerState::default(), &bounds());
        assert_eq!(report.violations.len(), 1, "{report}");
        assert!(report.has(Property::MutexValue), "{report}");
        // A write-back of unknown outcome may have landed or not; either read is fine.
        let mut h = mutex_history();
        h[12] = rec("c", 1053, Event::MutexWrite { fence: 12, value: 2, outcome: WriteBack::Unknown });
        assert!(check(&h, &LedgerState::default(), &bounds()).is_clean());
        h[20] = rec("a", 1600, Event::MutexRead { fence: 13, value: 1, written_by: Some(10) });
        assert!(check(&h, &LedgerState::default(), &bounds()).is_clean());
    }

    #[test]
    fn a_lock_freed_during_a_failover_is_due_once_the_workers_follow() {
        // A releases at 30 while the server fails over (100 to 900); B gets it at 950, within
        // the wake-up bound (150 ms) of the workers following, not of the release.
        let h = vec![
            acquired("a", 0, 10, 988),
            rec("b", 5, Event::Attempt),
            rec(HARNESS, 20, Event::ServerDown),
            rec("a", 30, Event::Releasing { fence: 10 }),
            rec("a", 31, Event::Released { fence: 10, held: true }),
            rec(HARNESS, 900, Event::ServerUp),
            acquired("b", 950, 11, 1950),
        ];
        assert!(check(&h, &LedgerState::default(), &bounds()).is_clean());
        let quiet: Vec<Record> = h.iter().filter(|r| r.worker != HARNESS).cloned().collect();
        let report = check(&quiet, &LedgerState::default(), &bounds());
        assert!(report.has(Property::NoLostWakeup), "without the failover the wait is late: {report}");
        let mut late = h.clone();
        late[6] = acquired("b", 1100, 11, 2100);
        let report = check(&late, &LedgerState::default(), &bounds());
        assert!(report.has(Property::NoLostWakeup), "late after the workers followed: {report}");
    }

    #[test]
    fn a_waiter_killed_after_the_release_may_hold_the_lock_for_its_ttl() {
        // A releases at 30; C, queued first, hears the hand-off and is killed at 60 while
        // confirming it: the key is C's until its TTL runs out, and B gets it at 1100.
        let h = vec![
            acquired("a", 0, 10, 988),
            rec("c", 2, Event::Attempt),
            rec("b", 5, Event::Attempt),
            rec("a", 30, Event::Releasing { fence: 10 }),
            rec("a", 31, Event::Released { fence: 10, held: true }),
            rec(HARNESS, 60, Event::Killed { target: "c".into() }),
            acquired("b", 1100, 12, 2100),
        ];
        assert!(check(&h, &LedgerState::default(), &bounds()).is_clean());
        // Killed before the release, it never heard one: a claim is all it costs.
        let mut early = h.clone();
        early[5] = rec(HARNESS, 20, Event::Killed { target: "c".into() });
        let report = check(&early, &LedgerState::default(), &bounds());
        assert!(report.has(Property::NoLostWakeup), "{report}");
    }

    #[test]
    fn a_restart_that_loses_the_lock_frees_it_at_once() {
        let h = vec![
            acquired("a", 0, 10, 988),
            rec("b", 5, Event::Attempt),
            rec(HARNESS, 100, Event::DataLost),
            rec("a", 300, Event::Lost { fence: 10, reason: "NotOwner".into() }),
            acquired("b", 320, 1_700_000_000_000_000, 1300),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.has(Property::NoLostWakeup), "the waiter took 220 ms: {report}");
        let mut ok = h.clone();
        ok[4] = acquired("b", 210, 1_700_000_000_000_000, 1300);
        let report = check(&ok, &LedgerState::default(), &bounds());
        // B got it while A still trusted its lease: the restart broke mutual exclusion, and the
        // checker says so; the fence (seeded from the server clock) still went up.
        assert!(report.has(Property::LostSignal) && !report.has(Property::FenceOrder), "{report}");
    }

    /// A acquires at 10 ms (fence 10, valid to 400 ms) and is frozen at 11 ms, before it
    /// writes its record; its lease runs out, B takes the lock at 500 ms (fence 11) and lets
    /// go; A's record comes after its resume at 900 ms. A guard is never handed over expired,
    /// so A's was handed over before the freeze: no fence out of order, no overlap. The
    /// same history without the freeze has A's lease over at its record: not explained.
    #[test]
    fn a_record_delayed_by_a_freeze_counts_from_before_it() {
        let late = |start_ms: i64, at_ms: i64| {
            rec(
                "a",
                at_ms,
                Event::Acquired { fence: 10, start: start_ms * MS, valid_until: 400 * MS, valid_until_wall: 0 },
            )
        };
        let h = vec![
            rec("a", 0, Event::Attempt),
            rec(HARNESS, 11, Event::Paused { target: "a".into() }),
            rec("b", 20, Event::Attempt),
            acquired("b", 500, 11, 1490),
            rec("b", 510, Event::Releasing { fence: 11 }),
            rec("b", 511, Event::Released { fence: 11, held: true }),
            rec(HARNESS, 900, Event::Resumed { target: "a".into() }),
            late(0, 901),
            rec("a", 902, Event::Lost { fence: 10, reason: "Expired".into() }),
            rec("a", 910, Event::Releasing { fence: 10 }),
            rec("a", 911, Event::Released { fence: 10, held: false }),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        let mut unexplained = h.clone();
        unexplained.retain(|r| r.worker != HARNESS);
        assert!(check(&unexplained, &LedgerState::default(), &bounds()).has(Property::FenceOrder));
    }

    /// The machine stalls every process from 100 ms to 1,700 ms (the worker's own watcher
    /// says so once it runs again): A's lease ran out inside the stall, and A let go the
    /// moment it ran again, before its timer could fire lost(). Without the stall record the
    /// same history is a lost() that never fired.
    #[test]
    fn a_stall_the_worker_saw_counts_as_a_freeze() {
        let h = vec![
            acquired("a", 0, 10, 400),
            rec("a", 1_700, Event::Stalled { from: 100 * MS, to: 1_700 * MS }),
            rec("a", 1_701, Event::Releasing { fence: 10 }),
            rec("a", 1_702, Event::Released { fence: 10, held: false }),
            rec("a", 1_800, Event::Done { cmd: "loop".into() }),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        let mut unexplained = h.clone();
        unexplained.remove(1);
        assert!(check(&unexplained, &LedgerState::default(), &bounds()).has(Property::LostSignal));
    }

    /// A's lease runs out while it is frozen (to 900 ms); let go on, it stalls at once (the
    /// machine) and is frozen again 1 ms after it runs, to 1,600 ms; it lets go at once, its
    /// lost() not fired: it never ran long enough to fire it. Had it run on from 900 ms,
    /// lost() would have been due by 900 ms plus the slack.
    #[test]
    fn a_bound_on_lost_counts_only_the_time_the_worker_ran() {
        let h = vec![
            acquired("a", 0, 10, 400),
            rec(HARNESS, 5, Event::Paused { target: "a".into() }),
            rec(HARNESS, 900, Event::Resumed { target: "a".into() }),
            rec("a", 960, Event::Stalled { from: 5 * MS, to: 960 * MS }),
            rec(HARNESS, 961, Event::Paused { target: "a".into() }),
            rec(HARNESS, 1_600, Event::Resumed { target: "a".into() }),
            rec("a", 1_601, Event::Releasing { fence: 10 }),
            rec("a", 1_602, Event::Released { fence: 10, held: false }),
            rec("a", 1_700, Event::Done { cmd: "loop".into() }),
        ];
        let report = check(&h, &LedgerState::default(), &bounds());
        assert!(report.is_clean(), "{report}");
        let mut ran_on = h.clone();
        ran_on.retain(|r| !matches!(r.event, Event::Stalled { .. }) && r.mono != 961 * MS && r.mono != 1_600 * MS);
        assert!(check(&ran_on, &LedgerState::default(), &bounds()).has(Property::LostSignal));
    }
}
