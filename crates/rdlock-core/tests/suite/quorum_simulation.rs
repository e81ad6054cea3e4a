//! Seeded scenarios of the quorum lock: clients running [`Quorum`] machines against five
//! fake members (the scripts the differential test holds to a real server), on virtual time,
//! over a network that delays, drops and times out, with members paused or restarted and
//! holders paused between their validity check and their write. A fenced ledger takes the
//! holders' writes (accepted only at or above the highest fence it accepted).
//!
//! Checked in every scenario: fences of valid acquisitions are distinct, and the ledger
//! never accepts a write below one it accepted (P1, by the fence). In scenarios whose
//! members keep their keys for the ttl (no restart without a delay, no early expiry): no two
//! leases overlap in validity, and fences increase in the order of acquisition. The
//! documented violations are run too: a member restarted without persistence and rejoining
//! at once, and a member whose clock jumps forward (its key's TTL cut short) do produce
//! overlapping leases, and there the fence refuses the stale holder's writes.
//!
//! - `RDLOCK_QSIM_SCENARIOS=N` runs N scenarios per mode (default 300);
//! - `RDLOCK_QSIM_SEED=S` replays scenario S of every mode, printing its trace.

use crate::sim;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use rdlock_core::{
    Acquire, Event, LockId, Quorum, QuorumOptions, Reply, Request, RequestId, Rng, Transmit, TransportError,
};
use sim::dice::Dice;
use sim::fake::{Bug, Fake};
use sim::{MS, at, ns};

const MEMBERS: usize = 5;
const CLIENTS: usize = 4;
const KEY: &str = "orders";
const TTL_MS: u64 = 300;
const RESPONSE_TIMEOUT: u64 = 60 * MS;
const HORIZON: u64 = 4_000 * MS;
const EPOCH_US: u64 = 1_700_000_000_000_000;

/// What may go wrong in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Delays, drops, timeouts, a paused member, paused holders.
    Network,
    /// A member restarts without persistence and waits a TTL (plus drift) before serving.
    DelayedRestart,
    /// A member restarts without persistence and serves at once (documented violation).
    ImmediateRestart,
    /// A member's clock jumps forward: the lock key's TTL is cut short there (the Redlock
    /// violation; documented).
    ClockJump,
}

impl Mode {
    /// Whether the members keep every key for its TTL: the validity argument applies.
    fn keeps_keys(self) -> bool {
        matches!(self, Mode::Network | Mode::DelayedRestart)
    }
}

#[derive(Debug)]
enum Ev {
    /// A request reaches a member.
    Deliver {
        client: usize,
        member: usize,
        req: Request,
        sent: u64,
        answered: bool,
    },
    /// The answer (or the failure) reaches the client.
    Answer {
        client: usize,
        id: RequestId,
        reply: Result<Vec<Reply>, TransportError>,
    },
    /// An announcement on a channel reaches a subscribed client.
    Message {
        client: usize,
        channel: String,
    },
    Timer {
        client: usize,
    },
    /// The client's workload acts (start acquiring, release, write).
    Act {
        client: usize,
    },
    /// A write checked valid at `checked` reaches the ledger (the holder may have paused).
    Write {
        client: usize,
        fence: u64,
        lock: LockId,
    },
    Restart {
        member: usize,
        down_for: u64,
    },
    CutTtl {
        member: usize,
    },
}

struct Client {
    q: Quorum,
    /// When its timer event is due (later ones replace it; stale ones are skipped).
    timer: Option<u64>,
    lock: Option<LockId>,
    holding: Option<u64>,
    subscribed: BTreeSet<String>,
    pending: BTreeMap<RequestId, u64>,
}

/// One valid acquisition, as the checker sees it.
#[derive(Debug, Clone)]
struct Lease {
    #[allow(dead_code)] // read by the report's Debug
    client: usize,
    fence: u64,
    from: u64,
    until: u64,
}

struct World {
    mode: Mode,
    d: Dice,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    members: Vec<Fake>,
    /// Until when each member is down (refuses connections) or paused (answers late).
    down_until: Vec<u64>,
    /// Each member's fence counter as last seen (reset by a restart): it never goes back.
    counters: Vec<u64>,
    paused: Vec<(u64, u64)>,
    clients: Vec<Client>,
    leases: Vec<Lease>,
    open: BTreeMap<usize, usize>,
    ledger_max: u64,
    refused: u64,
    accepted: u64,
    violation: Option<String>,
    trace: Option<Vec<String>>,
}

impl World {
    fn new(seed: u64, mode: Mode, bug: Bug, trace: bool) -> Self {
        let mut d = Dice::new(seed);
        let members = (0..MEMBERS).map(|_| Fake::new(bug, EPOCH_US)).collect();
        let clients = (0..CLIENTS)
            .map(|i| Client {
                q: Quorum::new(MEMBERS, Rng::from_test_seed(seed * 31 + i as u64)).expect("five members"),
                timer: None,
                lock: None,
                holding: None,
                subscribed: BTreeSet::new(),
                pending: BTreeMap::new(),
            })
            .collect();
        let paused_member = d.below(MEMBERS);
        let p0 = d.range(0, 2_500) * MS;
        let mut paused = vec![(0, 0); MEMBERS];
        paused[paused_member] = (p0, p0 + d.range(100, 1_500) * MS);
        let mut w = World {
            mode,
            d,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            members,
            down_until: vec![0; MEMBERS],
            counters: vec![0; MEMBERS],
            paused,
            clients,
            leases: Vec::new(),
            open: BTreeMap::new(),
            ledger_max: 0,
            refused: 0,
            accepted: 0,
            violation: None,
            trace: trace.then(Vec::new),
        };
        for client in 0..CLIENTS {
            let t = w.d.range(0, 50) * MS;
            w.at(t, Ev::Act { client });
        }
        for _ in 0..3 {
            let t = w.d.range(200, 3_500) * MS;
            let member = w.d.below(MEMBERS);
            match mode {
                Mode::Network => {}
                Mode::DelayedRestart => w.at(t, Ev::Restart { member, down_for: (TTL_MS + TTL_MS / 100 + 2) * MS }),
                Mode::ImmediateRestart => w.at(t, Ev::Restart { member, down_for: 0 }),
                Mode::ClockJump => w.at(t, Ev::CutTtl { member }),
            }
        }
        w
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue.push(Reverse((t, self.seq, self.events.len() - 1)));
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>8.3} ms  {}", self.now as f64 / MS as f64, line()));
        }
    }

    fn fail(&mut self, msg: String) {
        if self.violation.is_none() {
            self.log(|| format!("VIOLATION {msg}"));
            self.violation = Some(msg);
        }
    }

    fn opts(&mut self) -> QuorumOptions {
        QuorumOptions {
            ttl: Duration::from_millis(TTL_MS),
            auto_renew: self.d.chance(0.5),
            poll_cap: Duration::from_millis(40),
            jitter: Duration::from_millis(15),
            ..QuorumOptions::default()
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((t, _, i))) = self.queue.pop() {
            if t > HORIZON || self.violation.is_some() {
                break;
            }
            self.now = t;
            let Some(ev) = self.events[i].take() else { continue };
            self.step(ev);
        }
        self.finish();
    }

    fn step(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver { client, member, req, sent, answered } => self.deliver(client, member, req, sent, answered),
            Ev::Answer { client, id, reply } => {
                let c = &mut self.clients[client];
                if c.pending.remove(&id).is_none() {
                    return; // answered by its timeout already
                }
                self.log(|| format!("c{client} <- {id:?} {reply:?}"));
                let r = self.clients[client].q.handle_reply(id, reply, at(now));
                if let Err(e) = r {
                    self.fail(format!("c{client}: {e}"));
                }
                self.drain(client);
            }
            Ev::Message { client, channel } => {
                if self.clients[client].subscribed.contains(&channel) {
                    self.clients[client].q.handle_message(&channel, at(now));
                    self.drain(client);
                }
            }
            Ev::Timer { client } => {
                if self.clients[client].timer != Some(now) {
                    return;
                }
                self.clients[client].timer = None;
                self.clients[client].q.handle_timeout(at(now));
                self.drain(client);
            }
            Ev::Act { client } => self.act(client),
            Ev::Write { client, fence, lock } => {
                if fence >= self.ledger_max {
                    self.ledger_max = fence;
                    self.accepted += 1;
                    self.log(|| format!("ledger accepts c{client} {lock:?} fence {fence}"));
                } else {
                    self.refused += 1;
                    let max = self.ledger_max;
                    self.log(|| format!("ledger refuses c{client} fence {fence} < {max}"));
                }
            }
            Ev::Restart { member, down_for } => {
                self.log(|| format!("member {member} restarts without persistence, down {} ms", down_for / MS));
                self.members[member].restart(now, 0);
                self.counters[member] = 0;
                self.down_until[member] = now + down_for;
            }
            Ev::CutTtl { member } => {
                self.log(|| format!("member {member}'s clock jumps: {KEY} expires now"));
                self.members[member].set_expiry(KEY, now + 1);
            }
        }
    }

    /// Answers request `id` at `t`, or with a timeout when `t` is past its response timeout.
    fn answer(&mut self, client: usize, id: RequestId, sent: u64, reply: Result<Vec<Reply>, TransportError>, t: u64) {
        let deadline = sent + RESPONSE_TIMEOUT;
        let (t, reply) = if t > deadline { (deadline, Err(TransportError::Timeout)) } else { (t, reply) };
        self.at(t.max(self.now), Ev::Answer { client, id, reply });
    }

    fn deliver(&mut self, client: usize, member: usize, req: Request, sent: u64, answered: bool) {
        let now = self.now;
        if now < self.down_until[member] {
            if !answered {
                self.answer(client, req.id, sent, Err(TransportError::Disconnected("refused".into())), now + MS);
            }
            return;
        }
        let (p0, p1) = self.paused[member];
        if (p0..p1).contains(&now) {
            // The member runs it when it wakes; the client times out first.
            if !answered {
                self.answer(client, req.id, sent, Err(TransportError::Timeout), sent + RESPONSE_TIMEOUT);
            }
            return self.at(p1, Ev::Deliver { client, member, req, sent, answered: true });
        }
        let mut replies = Vec::new();
        for cmd in &req.commands {
            let rdlock_core::Command::Script { script, keys, args } = cmd else {
                replies.push(Reply::Error(rdlock_core::ServerError::new("ERR", "not a script")));
                continue;
            };
            let (r, fx) = self.members[member].run_script(
                *script,
                &keys.to_vec(),
                &args.to_vec(),
                now,
                &mut Dice::new(0),
                &|_| 1,
            );
            for (channel, _) in fx.publishes {
                for c in 0..CLIENTS {
                    let t = now + self.d.range(1, 4) * MS;
                    self.at(t, Ev::Message { client: c, channel: channel.clone() });
                }
            }
            replies.push(r);
        }
        let fence_key = rdlock_core::LockKeys::new(KEY).expect("a valid key").fence;
        let c = self.members[member].string(&fence_key, now).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if c < self.counters[member] {
            self.fail(format!("member {member}'s counter went back from {} to {c}", self.counters[member]));
        }
        self.counters[member] = self.counters[member].max(c);
        self.log(|| format!("m{member} ran {:?} for c{client}: {replies:?}", req.commands[0]));
        if answered {
            return;
        }
        // A lost reply: the script ran, the client hears a timeout.
        if self.d.chance(0.02) {
            return self.answer(client, req.id, sent, Err(TransportError::Timeout), sent + RESPONSE_TIMEOUT);
        }
        let back = now + self.d.range(1, 8) * MS / 2;
        self.answer(client, req.id, sent, Ok(replies), back);
    }

    fn drain(&mut self, client: usize) {
        let now = self.now;
        while let Some(t) = self.clients[client].q.poll_transmit() {
            match t {
                Transmit::Request(req) => {
                    self.clients[client].pending.insert(req.id, now);
                    let rdlock_core::Node::Member(m) = req.route.node else {
                        return self.fail(format!("c{client}: a request without a member: {req:?}"));
                    };
                    // A lost request: never runs; the client hears a timeout.
                    if self.d.chance(0.02) {
                        let id = req.id;
                        self.at(now + RESPONSE_TIMEOUT, Ev::Answer { client, id, reply: Err(TransportError::Timeout) });
                        continue;
                    }
                    // Now and then a request is held up in the network far past its timeout,
                    // and runs when the lease it was sent for may be long over.
                    let delay = if self.d.chance(0.01) {
                        self.d.range(60, 2 * TTL_MS) * MS
                    } else {
                        self.d.range(1, 8) * MS / 2
                    };
                    self.at(now + delay, Ev::Deliver { client, member: m as usize, req, sent: now, answered: false });
                }
                Transmit::Subscribe(ch) => {
                    self.clients[client].subscribed.insert(ch);
                }
                Transmit::Unsubscribe(ch) => {
                    self.clients[client].subscribed.remove(&ch);
                }
                other => self.fail(format!("c{client}: unexpected {other:?}")),
            }
        }
        while let Some(e) = self.clients[client].q.poll_event() {
            self.log(|| format!("c{client} event {e:?}"));
            self.on_event(client, e.lock, e.event);
        }
        if let Some(t) = self.clients[client].q.poll_timeout() {
            let t = ns(t).max(now);
            if self.clients[client].timer.is_none_or(|s| t < s) {
                self.clients[client].timer = Some(t);
                self.at(t, Ev::Timer { client });
            }
        }
    }

    fn on_event(&mut self, client: usize, lock: LockId, event: Event) {
        let now = self.now;
        match event {
            Event::Acquired { fence, valid_until } => {
                self.clients[client].holding = Some(fence);
                self.leases.push(Lease { client, fence, from: now, until: ns(valid_until) });
                self.open.insert(client, self.leases.len() - 1);
                // Writes while held, then a release.
                let hold = self.d.range(5, 2 * TTL_MS) * MS;
                for _ in 0..self.d.range(1, 4) {
                    let t = now + self.d.range(0, hold / MS) * MS;
                    self.at(t, Ev::Act { client });
                }
                self.at(now + hold, Ev::Act { client });
                let _ = lock;
            }
            Event::Renewed { valid_until } => {
                if let Some(&i) = self.open.get(&client) {
                    self.leases[i].until = self.leases[i].until.max(ns(valid_until));
                }
            }
            Event::Lost { .. } => self.close(client, now),
            Event::Released { .. } => {
                self.clients[client].lock = None;
                self.clients[client].holding = None;
                let t = now + self.d.range(0, 30) * MS;
                self.at(t, Ev::Act { client });
            }
            Event::Busy { .. } | Event::TimedOut | Event::Failed(_) => {
                self.clients[client].lock = None;
                let t = now + self.d.range(0, 30) * MS;
                self.at(t, Ev::Act { client });
            }
            other => self.fail(format!("c{client}: unexpected event {other:?}")),
        }
    }

    /// The lease stops counting at `t` (lost, released, or validity over).
    fn close(&mut self, client: usize, t: u64) {
        if let Some(i) = self.open.remove(&client) {
            self.leases[i].until = self.leases[i].until.min(t);
        }
    }

    fn act(&mut self, client: usize) {
        let now = self.now;
        let Some(lock) = self.clients[client].lock else {
            let mode = if self.d.chance(0.3) {
                Acquire::Try
            } else {
                Acquire::Wait { deadline: Some(at(now + self.d.range(50, 1_500) * MS)) }
            };
            let opts = self.opts();
            match self.clients[client].q.acquire(KEY, opts, mode, at(now)) {
                Ok((id, _)) => self.clients[client].lock = Some(id),
                Err(e) => self.fail(format!("c{client}: acquire refused: {e}")),
            }
            return self.drain(client);
        };
        let Some(view) = self.clients[client].q.lease(lock, at(now)) else { return };
        if view.valid && self.d.chance(0.7) {
            // Checked valid now; the write may reach the ledger after a pause.
            let pause = if self.d.chance(0.1) { self.d.range(0, 2 * TTL_MS) * MS } else { MS };
            self.at(now + pause, Ev::Write { client, fence: view.fence, lock });
            return;
        }
        // Done with it (or it is no longer valid): release.
        if self.clients[client].q.release(lock, at(now)).is_ok() {
            self.close(client, now);
        }
        self.drain(client);
    }

    fn finish(&mut self) {
        if self.violation.is_some() {
            return;
        }
        // Fences of valid acquisitions are distinct.
        let mut seen = BTreeMap::new();
        for l in &self.leases {
            if let Some(other) = seen.insert(l.fence, l.clone()) {
                return self.fail(format!("fence {} issued twice: {other:?} and {l:?}", l.fence));
            }
        }
        if !self.mode.keeps_keys() {
            return;
        }
        // Validity never overlaps, and fences increase in the order of acquisition.
        let mut by_start = self.leases.clone();
        by_start.sort_by_key(|l| l.from);
        for w in by_start.windows(2) {
            if w[1].from < w[0].until {
                return self.fail(format!("leases overlap: {:?} and {:?}", w[0], w[1]));
            }
            if w[1].fence <= w[0].fence {
                return self.fail(format!("fence went backwards: {:?} then {:?}", w[0], w[1]));
            }
        }
    }
}

#[derive(Default, Debug)]
struct Totals {
    acquired: usize,
    overlaps: usize,
    refused: u64,
    accepted: u64,
}

fn overlaps(leases: &[Lease]) -> usize {
    let mut v = leases.to_vec();
    v.sort_by_key(|l| l.from);
    v.windows(2).filter(|w| w[1].from < w[0].until).count()
}

fn run(mode: Mode, bug: Bug, seeds: std::ops::Range<u64>) -> Result<Totals, String> {
    let mut t = Totals::default();
    for seed in seeds {
        let mut w = World::new(seed, mode, bug, false);
        w.run();
        if let Some(v) = w.violation {
            let mut w = World::new(seed, mode, bug, true);
            w.run();
            let trace = w.trace.unwrap_or_default();
            let tail = trace[trace.len().saturating_sub(200)..].join("\n");
            return Err(format!("{mode:?} seed {seed} ({bug:?}): {v}\n{tail}"));
        }
        t.acquired += w.leases.len();
        t.overlaps += overlaps(&w.leases);
        t.refused += w.refused;
        t.accepted += w.accepted;
    }
    Ok(t)
}

fn seeds() -> std::ops::Range<u64> {
    match sim::env_u64("RDLOCK_QSIM_SEED") {
        Some(s) => s..s + 1,
        None => 0..sim::env_u64("RDLOCK_QSIM_SCENARIOS").unwrap_or(100),
    }
}

#[test]
fn fences_and_validity_hold_over_a_faulty_network() {
    let t = run(Mode::Network, Bug::None, seeds()).unwrap_or_else(|e| panic!("{e}"));
    println!("network: {t:?}");
    assert!(t.acquired > 500 || seeds().count() < 100, "too few acquisitions: {t:?}");
    assert!(t.accepted > 0);
}

#[test]
fn a_delayed_restart_keeps_the_lock_safe() {
    let t = run(Mode::DelayedRestart, Bug::None, seeds()).unwrap_or_else(|e| panic!("{e}"));
    println!("delayed restart: {t:?}");
}

/// The documented violations: validity overlaps (two holders believe they hold the lock), yet
/// fences stay distinct and the ledger refuses the stale holder's writes.
#[test]
fn without_the_delay_or_with_a_clock_jump_validity_overlaps_and_the_fence_refuses() {
    for mode in [Mode::ImmediateRestart, Mode::ClockJump] {
        let t = run(mode, Bug::None, seeds()).unwrap_or_else(|e| panic!("{e}"));
        println!("{mode:?}: {t:?}");
        if seeds().count() >= 100 {
            assert!(t.overlaps > 0, "{mode:?}: the violation never showed: {t:?}");
            assert!(t.refused > 0, "{mode:?}: no stale write was refused: {t:?}");
        }
    }
}

/// Negative controls: a fence script without its checks (a delayed phase 2 then moves a
/// counter back), and a take without `NX` (two holders at once), are caught.
#[test]
fn broken_scripts_are_caught() {
    if sim::env_u64("RDLOCK_QSIM_SEED").is_some() {
        return;
    }
    for bug in [Bug::QuorumFenceUnchecked, Bug::QuorumTakeOverwrites] {
        let e = run(Mode::Network, bug, 0..100).expect_err("the bug goes unnoticed");
        println!("{bug:?} caught: {}", e.lines().next().unwrap_or_default());
    }
}
