//! Runnable examples of rdlock, in `src/bin/`: one per runtime (`tokio`, `async_std`,
//! `smol`, `blocking`), the same per runtime for reentrant owners and scoped locks
//! (`owners_tokio`, `owners_async_std`, `owners_smol`, `owners_blocking`), the `demo`, `mutex`
//! (data that lives with the lock), and `embed_core`, which drives the sans-IO core from a
//! hand-written loop. Each starts a throwaway Redis server and stops it when done.
//!
//! This library holds what the per-runtime examples share: a board that prints who holds
//! the lock and how long each hand-off took.

#![warn(missing_docs)]

use std::sync::Mutex;
use std::time::Instant;

/// Prints each acquisition, with its fence and the hand-off from the previous holder, and
/// checks that fences only go up.
#[derive(Debug)]
pub struct Board {
    start: Instant,
    /// The last holder, its fence, and when it began releasing.
    last: Mutex<(Option<usize>, u64, Option<Instant>)>,
}

impl Default for Board {
    fn default() -> Self {
        Self { start: Instant::now(), last: Mutex::new((None, 0, None)) }
    }
}

impl Board {
    /// Worker `worker` holds the lock with `fence`.
    pub fn acquired(&self, worker: usize, fence: u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        assert!(fence > last.1, "fences only go up: {fence} after {}", last.1);
        let from = match (last.0, last.2) {
            (Some(prev), Some(at)) if prev != worker => {
                format!(", handed over by worker {prev} in {:.2} ms", at.elapsed().as_secs_f64() * 1e3)
            }
            _ => String::new(),
        };
        let at = self.start.elapsed().as_secs_f64() * 1e3;
        println!("{at:>8.1} ms  worker {worker} holds the lock, fence {fence}{from}");
        *last = (Some(worker), fence, None);
    }

    /// Worker `worker` is about to release the lock.
    pub fn releasing(&self, worker: usize) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.0 == Some(worker) {
            last.2 = Some(Instant::now());
        }
    }
}
