//! The growth curve (`--scale`): S4 and S5 again at several sizes, so that a cost per lock
//! that grows with the number of locks shows. Each size runs on a fresh server, as S4 and S5
//! do; the tables put the sizes of one adapter side by side, with the cost per lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{Cell, RAW, Target};
use crate::scenario::{Metrics, Scenario};

/// Every run of every adapter at every size: per (scenario, size), per adapter, per run.
pub type ScaleResults = BTreeMap<(Scenario, usize), Vec<(&'static str, Vec<Metrics>)>>;

/// The size `--quick` runs S5 at besides its own (1,000, the reference): large enough that a
/// cost quadratic in the number of locks shows twenty times over.
pub const QUICK_SIZES: &[usize] = &[20_000];

/// The hand-off time per waiter may grow this much from the smallest size to the largest
/// before the curve is called not flat: a quadratic term grows it as much as the size (10×
/// in quick mode); fixed costs amortized at the small size and a loaded machine reach 2.7×.
pub const FLAT: f64 = 5.0;

/// Scenarios that have a size.
pub fn scaled(s: Scenario) -> bool {
    matches!(s, Scenario::S4 | Scenario::S5)
}

/// The adapters that ran, in order.
fn adapters(results: &ScaleResults) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for rows in results.values() {
        for (a, _) in rows {
            if !out.contains(a) {
                out.push(a);
            }
        }
    }
    out
}

fn cell<'a>(results: &'a ScaleResults, s: Scenario, size: usize, adapter: &str) -> Option<Cell<'a>> {
    let rows = results.get(&(s, size))?;
    let runs = rows.iter().find(|(a, _)| *a == adapter).map(|(_, r)| r.as_slice())?;
    Some(Cell { runs, raw: None, floor: None, floor_name: crate::report::FLOOR, notify: None })
}

fn sizes(results: &ScaleResults, s: Scenario) -> Vec<usize> {
    results.keys().filter(|(t, _)| *t == s).map(|(_, n)| *n).collect()
}

fn fmt(x: f64, places: usize) -> String {
    if x.is_nan() { "–".into() } else { format!("{x:.places$}") }
}

/// One table per scenario: each adapter at each size.
pub fn tables(results: &ScaleResults) -> String {
    let mut out = String::new();
    let adapters = adapters(results);
    if !sizes(results, Scenario::S4).is_empty() {
        let _ = writeln!(out, "\n### S4 growth: locks held with auto-renew (one client)\n");
        let _ = writeln!(
            out,
            "| adapter | locks | acquire all | client CPU while holding (% of one core) | renewals/s | \
             client CPU/renewal | allocs/renewal | redis CPU/renewal | lost |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
        for a in &adapters {
            for n in sizes(results, Scenario::S4) {
                let Some(c) = cell(results, Scenario::S4, n, a) else { continue };
                let _ = writeln!(
                    out,
                    "| {a} | {n} | {} ms | {} % | {} | {} µs | {} | {} µs | {} |",
                    fmt(c.get("acquire_all_ms"), 0),
                    fmt(c.get("client_cpu_pct"), 2),
                    fmt(c.get("renewals_per_s"), 0),
                    fmt(c.get("client_renew_us"), 2),
                    fmt(c.get("allocs_per_renewal"), 2),
                    fmt(c.get("renew_cpu_us"), 2),
                    fmt(c.get("lost"), 0),
                );
            }
        }
    }
    if !sizes(results, Scenario::S5).is_empty() {
        let _ = writeln!(out, "\n### S5 growth: every holder lets go at once, N waiters on N keys (one client)\n");
        let _ = writeln!(
            out,
            "| adapter | waiters | all queued | all acquired after release | per waiter | p50 acquired | \
             client CPU/hand-off | redis CPU/hand-off | allocs/hand-off | client heap/waiter | pub/sub conns | \
             messages behind, at most | errors |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for a in &adapters {
            for n in sizes(results, Scenario::S5) {
                let Some(c) = cell(results, Scenario::S5, n, a) else { continue };
                let _ = writeln!(
                    out,
                    "| {a} | {} | {} ms | {} ms | {} µs | {} ms | {} µs | {} µs | {} | {} B | {} | {} | {} |",
                    fmt(c.get("waiters"), 0),
                    fmt(c.get("queue_all_ms"), 0),
                    fmt(c.get("all_acquired_ms"), 0),
                    fmt(c.get("handoff_us_per_waiter"), 2),
                    fmt(c.get("acquired_p50_ms"), 0),
                    fmt(c.get("handoff_client_cpu_us"), 1),
                    fmt(c.get("handoff_redis_cpu_us"), 1),
                    fmt(c.get("handoff_allocs"), 1),
                    fmt(c.get("bytes_per_waiter"), 0),
                    fmt(c.get("pubsub_conns"), 0),
                    fmt(c.get("msg_backlog_max"), 0),
                    fmt(c.get("errors"), 0),
                );
            }
        }
    }
    out
}

/// The targets of issue #16 at the sizes they name, and flatness across sizes.
pub fn targets(results: &ScaleResults) -> Vec<Target> {
    let mut out = Vec::new();
    let check = |v: f64, ok: bool| if v.is_nan() { None } else { Some(ok) };
    for a in adapters(results).into_iter().filter(|a| *a != RAW) {
        let mut t = |what: String, measured: String, met: Option<bool>| {
            out.push(Target { adapter: a, what, measured, met });
        };
        for n in sizes(results, Scenario::S4).into_iter().filter(|&n| n >= 100_000) {
            let Some(c) = cell(results, Scenario::S4, n, a) else { continue };
            // 5 % of a core for 100,000 locks: the same cost per lock at other sizes.
            let (cpu, bound) = (c.get("client_cpu_pct"), 5.0 * n as f64 / 100_000.0);
            t(
                format!("S4 at {n} locks: client CPU ≤ {bound:.0} % of one core"),
                format!("{cpu:.2} %"),
                check(cpu, cpu <= bound),
            );
        }
        let s5 = sizes(results, Scenario::S5);
        for &n in &s5 {
            let Some(c) = cell(results, Scenario::S5, n, a) else { continue };
            // As many as the executor can have (blocking: 2,000 threads), not always `n`.
            let w = c.get("waiters");
            if w >= 100_000.0 {
                let ms = c.get("all_acquired_ms");
                t(
                    format!("S5 at {w:.0} waiters: all acquired ≤ 2 s after release"),
                    format!("{ms:.0} ms"),
                    check(ms, ms <= 2000.0),
                );
            }
            let b = c.get("bytes_per_waiter");
            t(
                format!("S5 at {w:.0} waiters: ≤ 2 KiB client memory per waiter"),
                format!("{b:.0} B"),
                check(b, b <= 2048.0),
            );
        }
        // Flat: the hand-off time per waiter at the largest size against the smallest.
        let per =
            |n: usize| cell(results, Scenario::S5, n, a).map(|c| (c.get("waiters"), c.get("handoff_us_per_waiter")));
        if let (Some(&lo), Some(&hi)) = (s5.first(), s5.last())
            && let (Some((wl, l)), Some((wh, h))) = (per(lo), per(hi))
            && wh > wl
        {
            let r = h / l;
            t(
                format!("S5 hand-off time per waiter, {wh:.0} vs {wl:.0} waiters ≤ {FLAT}× (no quadratic term)"),
                format!("{r:.2}×"),
                check(r, r <= FLAT),
            );
        }
    }
    out
}

/// The runs as JSON entries, one per scenario, size and adapter.
pub fn json_entries(results: &ScaleResults, metrics: fn(&Metrics) -> String) -> Vec<String> {
    let mut out = Vec::new();
    for (&(s, n), rows) in results {
        for (adapter, runs) in rows {
            let runs: Vec<String> = runs.iter().map(metrics).collect();
            out.push(format!(
                "    {{\"scenario\": \"{s}\", \"size\": {n}, \"adapter\": \"{adapter}\", \"runs\": [{}]}}",
                runs.join(", ")
            ));
        }
    }
    out
}
