//! `rdlock inspect` and `rdlock watch`: an inspection as a table or as JSON.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdlock_blocking::{Client, Inspection, LockKind};
use serde_json::json;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The inspection as a table for people.
pub fn table(key: &str, seen: &Inspection) -> String {
    let mut out = String::new();
    let state = match (seen.kind, seen.is_held()) {
        (LockKind::Lock, _) => "held",
        (LockKind::Counted, true) => "held (shares)",
        _ => "free",
    };
    let _ = writeln!(out, "key       {key}");
    let _ = writeln!(out, "state     {state}");
    if let Some(holder) = &seen.holder {
        let ttl = seen.ttl.map_or_else(|| "no expiry".to_owned(), secs);
        let _ = writeln!(out, "holder    {holder}  (lease left {ttl})");
    }
    if let Some(cap) = seen.capacity {
        let used: u32 = seen.holders.iter().filter_map(|h| h.weight).sum();
        let _ = writeln!(out, "capacity  {cap} ({used} in use)");
    }
    for h in &seen.holders {
        let weight = h.weight.map_or_else(|| "?".to_owned(), |w| w.to_string());
        let fence = h.fence.map_or_else(|| "?".to_owned(), |f| f.to_string());
        let _ = writeln!(out, "  holder  {}  weight {weight}  fence {fence}  (lease left {})", h.token, secs(h.ttl));
    }
    let fence = seen.fence.map_or_else(|| "none".to_owned(), |f| f.to_string());
    let _ = writeln!(out, "fence     {fence}");
    let _ = writeln!(out, "queue     {} waiting", seen.waiters.len());
    for (i, w) in seen.waiters.iter().enumerate() {
        let ttl = w.ttl.map_or_else(|| "?".to_owned(), secs);
        let weight = w.weight.map(|w| format!("  weight {w}")).unwrap_or_default();
        let _ = writeln!(out, "  {:>3}.  {}  ttl {ttl}{weight}", i + 1, w.token);
    }
    if let Some(writer) = seen.value {
        let by = writer.map_or_else(|| "?".to_owned(), |f| f.to_string());
        let _ = writeln!(out, "value     stored (written under fence {by})");
    }
    out
}

/// The inspection as JSON (durations in ms; tokens are their first 8 characters).
pub fn json(key: &str, seen: &Inspection) -> serde_json::Value {
    let kind = match seen.kind {
        LockKind::Free => "free",
        LockKind::Lock => "lock",
        LockKind::Counted => "counted",
    };
    json!({
        "key": key,
        "kind": kind,
        "held": seen.is_held(),
        "holder": seen.holder,
        "ttl_ms": seen.ttl.map(ms),
        "fence": seen.fence,
        "queue": seen.waiters.iter().map(|w| json!({
            "token": w.token, "ttl_ms": w.ttl.map(ms), "weight": w.weight,
        })).collect::<Vec<_>>(),
        "holders": seen.holders.iter().map(|h| json!({
            "token": h.token, "ttl_ms": ms(h.ttl), "weight": h.weight, "fence": h.fence,
        })).collect::<Vec<_>>(),
        "capacity": seen.capacity,
        "value": seen.value.map(|writer| json!({ "writer_fence": writer })),
    })
}

/// Shows the table every `interval` until INT or TERM; exit code 0 then.
pub fn watch(client: &Client, key: &str, interval: Duration, url: &str) -> u8 {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let terminal = std::io::stdout().is_terminal();
    while !stop.load(Ordering::SeqCst) {
        let shown = match client.inspect(key) {
            Ok(seen) => table(key, &seen),
            // A passing outage is shown, not fatal: the view resumes when the server does.
            Err(e) => format!("key       {key}\nerror     {}\n", crate::scrub(&e.to_string(), url)),
        };
        let mut out = std::io::stdout().lock();
        let clear = if terminal { "\x1b[H\x1b[2J" } else { "\n" };
        if write!(out, "{clear}{shown}").and_then(|()| out.flush()).is_err() {
            return 0; // the reader went away
        }
        drop(out);
        let until = Instant::now() + interval;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(interval));
        }
    }
    0
}
