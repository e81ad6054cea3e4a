//! S5's message backlog: hand-off messages the server has published and the waiting client
//! has not handled yet, sampled on a thread of its own while the mass release runs (the
//! server's `cmdstat_publish` against the client's count of messages handled). Only the
//! benchmark pays for it: the client counts its messages anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the backlog is read.
const EVERY: Duration = Duration::from_millis(50);

/// The largest backlog seen, and when.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    pub max: u64,
    pub at_ms: f64,
}

/// The sampling thread, until [`Backlog::stop`].
pub struct Backlog {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Seen>,
}

impl Backlog {
    /// Starts sampling now, with `conn` to the server and `handled` the client's count
    /// (`None` when it counts none: then nothing is sampled). A line per second goes to
    /// stderr when `trace` is set.
    pub fn start(
        mut conn: redis::Connection,
        handled: impl Fn() -> Option<u64> + Send + 'static,
        trace: bool,
    ) -> Option<Self> {
        let (p0, h0) = (published(&mut conn)?, handled()?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (t0, mut seen, mut next_line) = (Instant::now(), Seen::default(), 0.0);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EVERY);
                let (Some(p), Some(h)) = (published(&mut conn), handled()) else { break };
                let (p, h) = (p.saturating_sub(p0), h.saturating_sub(h0));
                let at_ms = t0.elapsed().as_secs_f64() * 1e3;
                let behind = p.saturating_sub(h);
                if behind > seen.max {
                    seen = Seen { max: behind, at_ms };
                }
                if trace && at_ms >= next_line {
                    eprintln!("S5 release +{:.1} s: published {p}, handled {h}, behind {behind}", at_ms / 1e3);
                    next_line += 1e3;
                }
            }
            seen
        });
        Some(Self { stop, thread })
    }

    /// Stops sampling; the largest backlog seen.
    pub fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Messages the server has published so far (`PUBLISH` calls, in scripts or not).
fn published(conn: &mut redis::Connection) -> Option<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).ok()?;
    // No line yet: nothing published.
    let Some(line) = info.lines().find_map(|l| l.strip_prefix("cmdstat_publish:")) else { return Some(0) };
    line.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()
}
