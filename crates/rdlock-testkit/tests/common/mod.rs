//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Whether a process with this pid exists and runs a redis binary.
pub fn redis_process_exists(pid: u32) -> bool {
    let proc_dir = format!("/proc/{pid}");
    if !Path::new(&proc_dir).exists() {
        return false;
    }
    // The pid may have been reused by an unrelated process.
    std::fs::read(format!("{proc_dir}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("redis"))
        .unwrap_or(false)
}

/// Asserts every pid in `pids` is gone (killed and reaped).
pub fn assert_gone(pids: &[u32]) {
    for &pid in pids {
        assert!(!redis_process_exists(pid), "process {pid} is still running");
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
