//! `--engine`: a mass release on the core alone, with no I/O (issue #19): one engine holds N
//! locks on distinct keys, releases them all at once, and each request it sends is answered
//! 100 µs of its clock later, until nothing is left in flight. Per lock: the engine's own CPU
//! (wall time of this loop, the replies made up), on one server and in a cluster, where a
//! batch's route is one of 16,384 slots. A cost per lock that grows with N is a term beyond
//! linear; quick mode fails when it grows past [`FLAT`] from the smallest size to the largest.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, Command, Confirm, Engine, EngineConfig, LockOptions, Reply, Request, Script, Transmit};

use crate::BoxError;
use crate::scale::FLAT;

/// The sizes, quick (the smallest is the reference) and full.
const QUICK: [usize; 2] = [1_000, 20_000];
const FULL: [usize; 4] = [10_000, 30_000, 100_000, 300_000];

/// Runs every size on one server and in a cluster; the table, or an error when a curve is
/// not flat in quick mode.
pub fn run(quick: bool) -> Result<String, BoxError> {
    let sizes: &[usize] = if quick { &QUICK } else { &FULL };
    let mut out = String::from(
        "\n### Mass release, the engine alone (no I/O)\n\n| topology | locks | requests | release, all answered | per lock |\n|---|--:|--:|--:|--:|\n",
    );
    let mut failures = Vec::new();
    for cluster in [false, true] {
        let name = if cluster { "cluster" } else { "one server" };
        let mut per_lock = Vec::new();
        for &n in sizes {
            let (requests, took) = mass_release(cluster, n)?;
            let us = took.as_secs_f64() * 1e6 / n as f64;
            per_lock.push(us);
            let _ = writeln!(out, "| {name} | {n} | {requests} | {} ms | {us:.2} µs |", took.as_millis());
        }
        let growth = per_lock.last().copied().unwrap_or(0.0) / per_lock.first().copied().unwrap_or(1.0);
        if quick && growth > FLAT {
            failures.push(format!("{name}: the cost per lock grew {growth:.1}× (more than {FLAT}×)"));
        }
    }
    if failures.is_empty() { Ok(out) } else { Err(format!("{out}\nnot flat: {}", failures.join("; ")).into()) }
}

/// Holds `n` locks, releases them all, answers until nothing is in flight: how many requests
/// the release took, and how long.
fn mass_release(cluster: bool, n: usize) -> Result<(usize, Duration), BoxError> {
    let mut e = Engine::new(EngineConfig { cluster, ..EngineConfig::default() })?;
    #[allow(clippy::disallowed_methods)] // the measurement's clock; the engine's moves by hand
    let start = Instant::now();
    let mut now = start;
    let opts = LockOptions {
        ttl: Duration::from_secs(600),
        auto_renew: false,
        confirm: Confirm::None,
        ..LockOptions::default()
    };
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(e.acquire(&format!("bench:engine:{i}"), opts, Acquire::Try, now)?.0);
    }
    let granted = Reply::Array(vec![Reply::Int(1), Reply::Int(1)]);
    for r in drain(&mut e) {
        e.handle_reply(r.id, Ok(vec![granted.clone()]), now)?;
    }
    while e.poll_event().is_some() {}
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    for id in ids {
        e.release(id, now)?;
    }
    let mut requests = 0;
    loop {
        let sent = drain(&mut e);
        if sent.is_empty() {
            // Held back on a timer (a silent route): move the engine's clock to it.
            match e.poll_timeout() {
                Some(at) if at < start + opts.ttl => {
                    now = now.max(at);
                    e.handle_timeout(now);
                    continue;
                }
                _ => break,
            }
        }
        requests += sent.len();
        now += Duration::from_micros(100);
        for r in sent {
            let released = match &r.commands[0] {
                Command::Script { script: Script::ReleaseBatch, keys, .. } => {
                    Reply::Array(vec![Reply::Int(1); keys.len() / 3])
                }
                _ => Reply::Int(1),
            };
            e.handle_reply(r.id, Ok(vec![released]), now)?;
        }
        while e.poll_event().is_some() {}
    }
    Ok((requests, t0.elapsed()))
}

fn drain(e: &mut Engine) -> Vec<Request> {
    std::iter::from_fn(|| e.poll_transmit())
        .filter_map(|t| match t {
            Transmit::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}
