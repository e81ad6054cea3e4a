//! S6 (a semaphore) and S7 (a read-write lock, read-heavy): 8 clients on one key, each
//! acquire -> hold 1 ms -> release -> again, as S2 does for the lock, run in slices beside the
//! other adapters' rigs.
//!
//! Exclusion is checked from the clients' own timestamps: a hold counts from `acquire()`
//! returning to `release()` being called, a span inside the server's (which grants before it
//! replies and frees only when the release arrives). So more than `capacity` permits, or a
//! writer beside anyone, seen here happened on the server too: such an "overlap" is an
//! exclusion bug, never timing noise (the leases, 10 s and renewed, cannot lapse in a 1 ms hold).

use crate::adapters::join_all;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::BoxError;
use crate::adapters::{Exec, Locker, Resource, Spec};
use crate::alloc;
use crate::scenario::{Metrics, Rig, Scenario, Settings, command_key, hold_until, ms, percentile, us};
use crate::server::{Delta, Server, Snapshot};

/// The key every client of S6 and S7 contends for.
const KEY: &str = "bench:counted";

/// Seed of S7's read/write choices: every adapter and run draws the same sequence.
const SEED: u64 = 0x5eed_0007;

/// What the clients of a run take.
#[derive(Clone, Copy, Debug)]
enum Mix {
    /// A permit of a semaphore with this capacity (S6).
    Permits(u32),
    /// A read share with this probability, else the write share (S7).
    Reads(f64),
}

impl Mix {
    /// What `client` takes in its `round`-th acquisition (counted over the whole run).
    fn pick(self, client: usize, round: u64) -> Resource {
        match self {
            Mix::Permits(capacity) => Resource::Permit { capacity },
            Mix::Reads(p) => {
                let x = splitmix(splitmix(SEED.wrapping_add(client as u64)).wrapping_add(round));
                // The top 53 bits as a fraction in [0, 1).
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                if u < p { Resource::Read } else { Resource::Write }
            }
        }
    }
}

/// SplitMix64's output function: a well-mixed hash of `z`.
fn splitmix(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One acquire -> hold -> release, as the client saw it.
#[derive(Clone, Copy, Debug)]
struct Hold {
    client: usize,
    /// The write share of S7 (a permit or a read share otherwise).
    write: bool,
    /// `acquire()` called.
    wait_start: Instant,
    /// `acquire()` returned: the holder runs.
    acquired: Instant,
    /// `release()` called.
    release_called: Instant,
    /// `release()` returned.
    released: Instant,
}

#[derive(Debug, Default)]
struct Log {
    holds: Vec<Hold>,
    /// Attempts made (the next round's index, for the read/write draw).
    rounds: u64,
    errors: u64,
    first_error: Option<String>,
    /// Releases that found the share no longer ours.
    not_held: u64,
}

/// One adapter's S6 or S7: a fresh server and 8 connected clients.
pub struct CountedRig<L: Locker, E: Exec> {
    exec: E,
    server: Server,
    lockers: Vec<Arc<L>>,
    mix: Mix,
    hold: Duration,
    logs: Vec<Log>,
    /// Time inside slices, from each slice's start to its last release.
    busy: Duration,
    /// CPU time of this process inside slices.
    client_cpu: Duration,
    first: Option<Snapshot>,
}

impl<L: Locker, E: Exec> CountedRig<L, E> {
    /// Connects and warms up the clients of S6 (`scenario` S6) or S7 (any other).
    pub fn new(exec: E, server: Server, scenario: Scenario, set: &Settings) -> Result<Self, BoxError> {
        let mix = if scenario == Scenario::S6 { Mix::Permits(set.permits) } else { Mix::Reads(set.read_share) };
        let url = server.url();
        let lockers = exec.block_on(async {
            let mut lockers = Vec::with_capacity(set.clients);
            for i in 0..set.clients {
                let locker = Arc::new(L::connect(&url).await?);
                // Warm up (connection, script cache, fence counter) on a key of its own, with
                // every kind of share the run takes.
                let key = format!("bench:warmup:{i}");
                let kinds: &[Resource] = match mix {
                    Mix::Permits(capacity) => &[Resource::Permit { capacity }],
                    Mix::Reads(_) => &[Resource::Read, Resource::Write],
                };
                for &kind in kinds {
                    let g = locker.acquire(&key, kind, Spec::default()).await?;
                    locker.release(g).await?;
                }
                lockers.push(locker);
            }
            Ok::<_, BoxError>(lockers)
        })?;
        let logs = (0..set.clients).map(|_| Log::default()).collect();
        Ok(Self {
            exec,
            server,
            lockers,
            mix,
            hold: set.hold,
            logs,
            busy: Duration::ZERO,
            client_cpu: Duration::ZERO,
            first: None,
        })
    }
}

impl<L: Locker, E: Exec> Rig for CountedRig<L, E> {
    fn slice(&mut self, duration: Duration) -> Result<(), BoxError> {
        if self.first.is_none() {
            self.first = Some(self.server.snapshot()?);
        }
        let exec = &self.exec;
        let cpu0 = alloc::process_cpu();
        let start = Instant::now() + Duration::from_millis(10);
        let deadline = start + duration;
        let tasks: Vec<_> = self
            .lockers
            .iter()
            .zip(&self.logs)
            .enumerate()
            .map(|(i, (locker, log))| {
                let run = Loop { client: i, mix: self.mix, first_round: log.rounds, hold: self.hold, start, deadline };
                exec.spawn(client_loop(locker.clone(), exec.clone(), run))
            })
            .collect();
        let logs = join_all(exec, tasks);
        let end = logs.iter().filter_map(|l| l.holds.last()).map(|h| h.released).max().unwrap_or(deadline);
        self.busy += end.saturating_duration_since(start);
        self.client_cpu += alloc::process_cpu().saturating_sub(cpu0);
        for (acc, log) in self.logs.iter_mut().zip(logs) {
            acc.holds.extend(log.holds);
            acc.rounds += log.rounds;
            acc.errors += log.errors;
            acc.not_held += log.not_held;
            if acc.first_error.is_none() {
                acc.first_error = log.first_error;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Metrics, BoxError> {
        let Some(first) = self.first else { return Err("no slice ran".into()) };
        let delta = first.until(&self.server.snapshot()?);
        let mut m = analyze(&self.logs, self.mix, self.busy, &delta, L::COUNTED_REQUESTS);
        m.insert("client_cpu_us_per_acq", self.client_cpu.as_secs_f64() * 1e6 / m["acquisitions"]);
        Ok(m)
    }
}

/// One client's part of a slice.
#[derive(Clone, Copy, Debug)]
struct Loop {
    client: usize,
    mix: Mix,
    first_round: u64,
    hold: Duration,
    start: Instant,
    deadline: Instant,
}

async fn client_loop<L: Locker, E: Exec>(locker: Arc<L>, exec: E, run: Loop) -> Log {
    let spec = Spec::default();
    let mut log = Log { holds: Vec::with_capacity(4 * 1024), ..Log::default() };
    exec.sleep(run.start.saturating_duration_since(Instant::now())).await;
    let mut round = run.first_round;
    while Instant::now() < run.deadline {
        let resource = run.mix.pick(run.client, round);
        round += 1;
        let wait_start = Instant::now();
        let guard = match locker.acquire(KEY, resource, spec).await {
            Ok(g) => g,
            Err(e) => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| e.to_string());
                if log.errors > 100 {
                    break;
                }
                continue;
            }
        };
        let acquired = Instant::now();
        hold_until(acquired + run.hold).await;
        let release_called = Instant::now();
        match locker.release(guard).await {
            Ok(true) => {}
            Ok(false) => log.not_held += 1,
            Err(e) => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        let released = Instant::now();
        let write = resource == Resource::Write;
        log.holds.push(Hold { client: run.client, write, wait_start, acquired, release_called, released });
    }
    log.rounds = round - run.first_round;
    log
}

/// The figures of one run; `requests` are the commands the clients send themselves.
fn analyze(logs: &[Log], mix: Mix, busy: Duration, delta: &Delta, requests: &[&str]) -> Metrics {
    let mut m = Metrics::new();
    let all: Vec<Hold> = logs.iter().flat_map(|l| l.holds.iter().copied()).collect();
    let n = all.len() as f64;
    let secs = busy.as_secs_f64().max(1e-9);
    m.insert("acquisitions", n);
    m.insert("acq_per_s", n / secs);
    let per_client: Vec<f64> = logs.iter().map(|l| l.holds.len() as f64).collect();
    m.insert("client_min", per_client.iter().copied().fold(f64::INFINITY, f64::min));
    m.insert("client_max", per_client.iter().copied().fold(0.0, f64::max));
    m.insert("client_mean", n / per_client.len().max(1) as f64);
    let mut cycle_us: Vec<f64> = all.iter().map(|h| us(h.released - h.wait_start)).collect();
    m.insert("cycle_p50_us", percentile(&mut cycle_us, 0.50));
    let wait = |h: &Hold| ms(h.acquired - h.wait_start);
    let mut waits: Vec<f64> = all.iter().map(wait).collect();
    m.insert("wait_p50_ms", percentile(&mut waits, 0.50));
    m.insert("wait_p99_ms", percentile(&mut waits, 0.99));
    m.insert("longest_wait_ms", waits.iter().copied().fold(0.0, f64::max));

    let sweep = sweep(&all, mix);
    m.insert("overlaps", sweep.overlaps as f64);
    match mix {
        Mix::Permits(_) => {
            m.insert("in_use_mean", sweep.area / secs);
            m.insert("in_use_max", sweep.max_in_use as f64);
            m.insert("self_share", self_share(&all));
        }
        Mix::Reads(_) => {
            let (reads, writes): (Vec<Hold>, Vec<Hold>) = all.iter().partition(|h| !h.write);
            m.insert("reads", reads.len() as f64);
            m.insert("writes", writes.len() as f64);
            m.insert("read_per_s", reads.len() as f64 / secs);
            m.insert("write_per_s", writes.len() as f64 / secs);
            m.insert("readers_mean", sweep.reader_area / sweep.reader_time.max(1e-12));
            m.insert("readers_max", sweep.max_readers as f64);
            let mut w: Vec<f64> = writes.iter().map(wait).collect();
            m.insert("writer_wait_p50_ms", percentile(&mut w, 0.50));
            m.insert("writer_wait_p99_ms", percentile(&mut w, 0.99));
            m.insert("writer_longest_wait_ms", w.iter().copied().fold(0.0, f64::max));
            let mut r: Vec<f64> = reads.iter().map(wait).collect();
            m.insert("reader_wait_p99_ms", percentile(&mut r, 0.99));
            m.insert("reader_longest_wait_ms", r.iter().copied().fold(0.0, f64::max));
        }
    }

    let per = |x: f64| if n > 0.0 { x / n } else { f64::NAN };
    m.insert("cmds_per_acq", per(delta.total() as f64));
    m.insert("requests_per_acq", per(delta.requests(requests) as f64));
    m.insert("server_cmd_us_per_acq", per(delta.request_usec(requests) as f64));
    for (name, &(calls, _)) in &delta.calls {
        m.insert(command_key(name), per(calls as f64));
    }
    m.insert("cpu_ms_per_1k", per(delta.proc_cpu.as_secs_f64() * 1e6));
    m.insert("cpu_ms_per_1k_rusage", per(delta.rusage.as_secs_f64() * 1e6));
    m.insert("errors", logs.iter().map(|l| l.errors).sum::<u64>() as f64);
    m.insert("not_held", logs.iter().map(|l| l.not_held).sum::<u64>() as f64);
    if let Some(e) = logs.iter().find_map(|l| l.first_error.as_deref()) {
        eprintln!("    first error: {e}");
    }
    m
}

/// What a walk over every hold's start and end finds.
#[derive(Debug, Default, PartialEq)]
struct Sweep {
    /// Holds that began beside what excludes them: over capacity (S6), a writer beside
    /// anyone or a reader beside a writer (S7).
    overlaps: u64,
    max_in_use: u64,
    max_readers: u64,
    /// Integral of the holders' count over time (s): its mean over the busy time.
    area: f64,
    /// Integral of the readers' count while any reader holds, and that time (s).
    reader_area: f64,
    reader_time: f64,
}

fn sweep(holds: &[Hold], mix: Mix) -> Sweep {
    // (instant, starts, is a writer); at a tie the end goes first: ends and starts the client
    // saw at the same instant cannot be told apart, so they are not called an overlap.
    let mut events: Vec<(Instant, bool, bool)> =
        holds.iter().flat_map(|h| [(h.acquired, true, h.write), (h.release_called, false, h.write)]).collect();
    events.sort_by_key(|e| (e.0, e.1));
    let mut s = Sweep::default();
    let (mut readers, mut writers) = (0u64, 0u64);
    let mut last: Option<Instant> = None;
    for (at, starts, write) in events {
        if let Some(prev) = last {
            let dt = at.saturating_duration_since(prev).as_secs_f64();
            s.area += (readers + writers) as f64 * dt;
            if readers > 0 {
                s.reader_area += readers as f64 * dt;
                s.reader_time += dt;
            }
        }
        last = Some(at);
        if starts {
            let excluded = match mix {
                Mix::Permits(capacity) => readers + writers >= u64::from(capacity),
                Mix::Reads(_) => writers > 0 || (write && readers > 0),
            };
            s.overlaps += u64::from(excluded);
            if write {
                writers += 1;
            } else {
                readers += 1;
            }
        } else if write {
            writers = writers.saturating_sub(1);
        } else {
            readers = readers.saturating_sub(1);
        }
        s.max_in_use = s.max_in_use.max(readers + writers);
        s.max_readers = s.max_readers.max(readers);
    }
    s
}

/// Share of acquisitions whose latest earlier release was the acquirer's own: it took back the
/// permit it had just freed, ahead of the clients already waiting.
fn self_share(holds: &[Hold]) -> f64 {
    let mut releases: Vec<(Instant, usize)> = holds.iter().map(|h| (h.release_called, h.client)).collect();
    releases.sort();
    let (mut pairs, mut same) = (0u64, 0u64);
    for h in holds {
        let i = releases.partition_point(|r| r.0 < h.acquired);
        if let Some(&(_, client)) = i.checked_sub(1).and_then(|i| releases.get(i)) {
            pairs += 1;
            same += u64::from(client == h.client);
        }
    }
    if pairs == 0 { f64::NAN } else { same as f64 / pairs as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: usize, write: bool, from_us: u64, to_us: u64, base: Instant) -> Hold {
        let t = |us| base + Duration::from_micros(us);
        Hold {
            client,
            write,
            wait_start: t(from_us),
            acquired: t(from_us),
            release_called: t(to_us),
            released: t(to_us),
        }
    }

    #[test]
    fn permits_over_capacity_are_overlaps() {
        let b = Instant::now();
        // Two permits: 0-100 and 50-150 fit; 60-70 is a third at once; 100-200 starts as the
        // first ends (ends go first at a tie).
        let holds = [
            hold(0, false, 0, 100, b),
            hold(1, false, 50, 150, b),
            hold(2, false, 60, 70, b),
            hold(0, false, 100, 200, b),
        ];
        let s = sweep(&holds, Mix::Permits(2));
        assert_eq!((s.overlaps, s.max_in_use), (1, 3));
        // 0-50: 1, 50-60: 2, 60-70: 3, 70-150: 2, 150-200: 1 holders.
        assert!((s.area * 1e6 - (50.0 + 20.0 + 30.0 + 160.0 + 50.0)).abs() < 1e-3);
    }

    #[test]
    fn writers_exclude_readers_and_each_other() {
        let b = Instant::now();
        let fine = [hold(0, false, 0, 100, b), hold(1, false, 20, 120, b), hold(2, true, 120, 200, b)];
        let s = sweep(&fine, Mix::Reads(0.9));
        assert_eq!((s.overlaps, s.max_readers), (0, 2));
        // Readers: 1 for 20 µs, 2 for 80 µs, 1 for 20 µs: mean 1.67 over 120 µs.
        assert!((s.reader_area / s.reader_time - 200.0 / 120.0).abs() < 1e-6);
        let bad = [
            hold(0, false, 0, 100, b),
            hold(1, true, 50, 150, b),
            hold(2, false, 140, 160, b),
            hold(3, true, 145, 146, b),
        ];
        // A writer beside a reader, a reader beside a writer, two writers at once.
        assert_eq!(sweep(&bad, Mix::Reads(0.9)).overlaps, 3);
    }

    #[test]
    fn self_share_counts_taking_back_ones_own_release() {
        let b = Instant::now();
        // Client 0 releases at 100 and takes the permit back at 110 (self); client 1 acquires
        // at 210, after client 0's release at 200 (not self).
        let holds = [
            hold(0, false, 0, 100, b),
            hold(0, false, 110, 200, b),
            hold(1, false, 50, 150, b),
            hold(1, false, 210, 300, b),
        ];
        assert_eq!(self_share(&holds), 0.5);
    }

    #[test]
    fn the_read_write_draw_is_deterministic_and_read_heavy() {
        let mix = Mix::Reads(0.9);
        let draws: Vec<Resource> = (0..10_000).map(|r| mix.pick(3, r)).collect();
        assert_eq!(draws, (0..10_000).map(|r| mix.pick(3, r)).collect::<Vec<_>>());
        let reads = draws.iter().filter(|r| **r == Resource::Read).count();
        assert!((8_800..9_200).contains(&reads), "{reads} reads of 10,000");
        assert_ne!(
            (0..64).map(|r| mix.pick(0, r)).collect::<Vec<_>>(),
            (0..64).map(|r| mix.pick(1, r)).collect::<Vec<_>>()
        );
    }
}
