//! `--engine`: the core alone, with no I/O (issues #19, #16). An uncontended cycle (S1's,
//! issue #16): what the engine costs per take and release of one lock, the part of a
//! client's share the state machine owns. Then at several sizes, a mass release: one
//! engine holds N locks on distinct keys, releases them all at once, and each request it sends
//! is answered 100 µs of its clock later, until nothing is left in flight. A mass hand-off:
//! one engine waits on N keys (queued, subscribed, re-checked) and hears each key handed to
//! it, in the order they queued or at random, held at once or confirmed first. Per lock: the
//! engine's own CPU (wall time of this loop, the replies and messages made up), on one server
//! and in a cluster, where a batch's route is one of 16,384 slots. A cost per lock that grows
//! with N is a term beyond linear; quick mode fails when it grows past [`FLAT`] from the
//! smallest size to the largest.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rdlock_core::{
    Acquire, Command, Confirm, Engine, EngineConfig, Event, LockOptions, Reply, Request, Script, Transmit,
};

use crate::BoxError;
use crate::scale::FLAT;

/// The sizes, quick (the smallest is the reference) and full.
const QUICK: [usize; 2] = [1_000, 20_000];
const FULL: [usize; 4] = [10_000, 30_000, 100_000, 300_000];

/// Runs every size on one server and in a cluster; the table, or an error when a curve is
/// not flat in quick mode.
pub fn run(quick: bool) -> Result<String, BoxError> {
    let sizes: &[usize] = if quick { &QUICK } else { &FULL };
    let (n, reps) = if quick { (20_000, 3) } else { (200_000, 7) };
    let mut per_cycle = (0..reps).map(|_| cycles(n)).collect::<Result<Vec<_>, _>>()?;
    per_cycle.sort_by(f64::total_cmp);
    let mut out = format!(
        "\n### An uncontended cycle, the engine alone (no I/O)\n\n{reps} × {n} cycles (take, granted, release, \
         released): median {:.0} ns per cycle (fastest {:.0}, slowest {:.0})\n",
        per_cycle[reps / 2],
        per_cycle[0],
        per_cycle[reps - 1]
    );
    out.push_str(
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
    out.push_str(
        "\n### Mass hand-off, the engine alone (no I/O)\n\n| topology | waiters | heard | order | per hand-off |\n\
         |---|--:|---|---|--:|\n",
    );
    for cluster in [false, true] {
        let name = if cluster { "cluster" } else { "one server" };
        for confirmed in [false, true] {
            let heard = if confirmed { "confirmed first" } else { "held at once" };
            for shuffled in [false, true] {
                let order = if shuffled { "at random" } else { "as queued" };
                let mut per_lock = Vec::new();
                for &n in sizes {
                    let took = mass_handoff(cluster, n, confirmed, shuffled)?;
                    let us = took.as_secs_f64() * 1e6 / n as f64;
                    per_lock.push(us);
                    let _ = writeln!(out, "| {name} | {n} | {heard} | {order} | {us:.2} µs |");
                }
                let growth = per_lock.last().copied().unwrap_or(0.0) / per_lock.first().copied().unwrap_or(1.0);
                if quick && growth > FLAT {
                    failures.push(format!(
                        "{name}, {heard}, {order}: the cost per hand-off grew {growth:.1}× (more than {FLAT}×)"
                    ));
                }
            }
        }
    }
    out.push_str(
        "\n### The memory's floor: a plain map of N channel names, each removed once\n\n\
         | names | order | per removal |\n|--:|---|--:|\n",
    );
    for shuffled in [false, true] {
        let order = if shuffled { "at random" } else { "as inserted" };
        for &n in sizes {
            let us = plain_map(n, shuffled) * 1e6 / n as f64;
            let _ = writeln!(out, "| {n} | {order} | {us:.3} µs |");
        }
    }
    if failures.is_empty() { Ok(out) } else { Err(format!("{out}\nnot flat: {}", failures.join("; ")).into()) }
}

/// Uncontended cycles of one lock (S1 without I/O): take it (a try, rdlock's default
/// options), hear it granted, release it, hear it released, the clock 150 µs on per cycle;
/// what the engine costs per cycle, in ns, on its own.
fn cycles(n: usize) -> Result<f64, BoxError> {
    let mut e = Engine::new(EngineConfig::default())?;
    #[allow(clippy::disallowed_methods)] // the engine's clock starts here and moves by hand
    let mut now = Instant::now();
    let mut fence = 1;
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    for _ in 0..n {
        let (id, _) = e.acquire("bench:engine:cycle", LockOptions::default(), Acquire::Try, now)?;
        fence += 1;
        let granted = Reply::Array(vec![Reply::Int(1), Reply::Int(fence)]);
        answer_all(&mut e, &granted, now)?;
        if !std::iter::from_fn(|| e.poll_event()).any(|ev| matches!(ev.event, Event::Acquired { .. })) {
            return Err("a cycle's lock was not granted".into());
        }
        std::hint::black_box(e.poll_timeout());
        now += Duration::from_micros(75);
        e.release(id, now)?;
        answer_all(&mut e, &Reply::Int(1), now)?;
        if !std::iter::from_fn(|| e.poll_event()).any(|ev| matches!(ev.event, Event::Released { .. })) {
            return Err("a cycle's lock was not released".into());
        }
        std::hint::black_box(e.poll_timeout());
        now += Duration::from_micros(75);
    }
    Ok(t0.elapsed().as_secs_f64() * 1e9 / n as f64)
}

/// Answers every request the engine sent with `reply`.
fn answer_all(e: &mut Engine, reply: &Reply, now: Instant) -> Result<(), BoxError> {
    while let Some(t) = e.poll_transmit() {
        match t {
            Transmit::Request(r) => e.handle_reply(r.id, Ok(vec![reply.clone()]), now)?,
            other => return Err(format!("unexpected in an uncontended cycle: {other:?}").into()),
        }
    }
    Ok(())
}

/// No lock logic: `n` names of an inbox's shape in a `HashMap` (the engine's map of channels
/// is one), each removed once; seconds for the removals. What a table of `n` entries costs per
/// touch as it outgrows the caches.
fn plain_map(n: usize, shuffled: bool) -> f64 {
    let names: Vec<String> = (0..n).map(|i| format!("rdl:i:{i}#0000000000000001")).collect();
    let mut map: std::collections::HashMap<String, u64> =
        names.iter().enumerate().map(|(i, k)| (k.clone(), i as u64)).collect();
    let mut order = names;
    if shuffled {
        shuffle(&mut order);
    }
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut sum = 0;
    for k in &order {
        sum += map.remove(k).unwrap_or(0);
    }
    let took = t0.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    took
}

/// A fixed shuffle (xorshift), the same every run.
fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Waits on `n` keys (each queued behind another holder, subscribed and re-checked), then
/// hears each handed over, in the order they queued or shuffled; `confirmed`: heard after half
/// the TTL, so each is confirmed (in batches) before it is held. How long from the first
/// message to the last lock held.
fn mass_handoff(cluster: bool, n: usize, confirmed: bool, shuffled: bool) -> Result<Duration, BoxError> {
    let mut e = Engine::new(EngineConfig { cluster, ..EngineConfig::default() })?;
    #[allow(clippy::disallowed_methods)] // the engine's clock starts here and moves by hand
    let mut now = Instant::now();
    let opts = LockOptions { auto_renew: false, confirm: Confirm::None, ..LockOptions::default() };
    let keys: Vec<String> = (0..n).map(|i| format!("bench:engine:{i}")).collect();
    for key in &keys {
        e.acquire(key, opts, Acquire::Wait { deadline: None }, now)?;
    }
    // Queued: each attempt finds another holder and subscribes its inbox; each subscription
    // confirmed sends a re-check (batched), answered "still queued".
    let mut tokens = std::collections::HashMap::with_capacity(n);
    let queued = Reply::Array(vec![Reply::Int(0), Reply::Int(-3)]);
    loop {
        let (sent, subscribed) = drain_all(&mut e);
        if sent.is_empty() && subscribed.is_empty() {
            break;
        }
        for r in sent {
            let reply = match &r.commands[0] {
                Command::Script { script: Script::Confirm, keys, .. } => {
                    Reply::Array(vec![Reply::Int(-1); keys.len() / 3])
                }
                Command::Script { keys, args, .. } => {
                    let (key, token) = (keys.first().unwrap_or_default(), args.first().unwrap_or_default());
                    tokens.insert(key.to_owned(), token.to_owned());
                    queued.clone()
                }
                other => return Err(format!("unexpected while queueing: {other:?}").into()),
            };
            e.handle_reply(r.id, Ok(vec![reply]), now)?;
        }
        for channel in subscribed {
            e.handle_subscribed(&channel, now);
        }
    }
    let mut messages: Vec<(String, String)> = keys
        .iter()
        .map(|k| Ok((e.inbox_of(k)?, format!("{}:7", tokens.get(k).ok_or("a key that never asked")?))))
        .collect::<Result<_, BoxError>>()?;
    if shuffled {
        shuffle(&mut messages);
    }
    // The last attempts were sent now: a hand-off heard within half the TTL is held at once.
    now += if confirmed { opts.ttl * 3 / 4 } else { Duration::from_millis(100) };
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut held = 0;
    for (channel, payload) in &messages {
        e.handle_message(channel, payload.as_bytes(), now);
        held += answer(&mut e, now)?;
    }
    while held < n {
        let more = answer(&mut e, now)?;
        if more == 0 {
            return Err(format!("{} of {n} hand-offs never held", n - held).into());
        }
        held += more;
    }
    Ok(t0.elapsed())
}

/// Answers what the engine sent (confirmations: fence 7 each), drops its (un)subscriptions,
/// and counts the locks it reports held.
fn answer(e: &mut Engine, now: Instant) -> Result<usize, BoxError> {
    let (sent, _) = drain_all(e);
    for r in sent {
        let reply = match &r.commands[0] {
            Command::Script { script: Script::Confirm, keys, .. } => Reply::Array(vec![Reply::Int(7); keys.len() / 3]),
            other => return Err(format!("unexpected after a hand-off: {other:?}").into()),
        };
        e.handle_reply(r.id, Ok(vec![reply]), now)?;
    }
    Ok(std::iter::from_fn(|| e.poll_event()).filter(|ev| matches!(ev.event, Event::Acquired { .. })).count())
}

/// The requests sent, and the channels subscribed (either kind).
fn drain_all(e: &mut Engine) -> (Vec<Request>, Vec<String>) {
    let (mut sent, mut subscribed) = (Vec::new(), Vec::new());
    while let Some(t) = e.poll_transmit() {
        match t {
            Transmit::Request(r) => sent.push(r),
            Transmit::Subscribe(channel) | Transmit::SubscribeShard { channel, .. } => subscribed.push(channel),
            _ => {}
        }
    }
    (sent, subscribed)
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
    for r in drain_all(&mut e).0 {
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
        let (sent, _) = drain_all(&mut e);
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
