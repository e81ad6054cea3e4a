//! `rdlock exec`: the lock around a child process.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdlock_blocking::{Client, ReleaseOutcome};
use rustix::process::{Pid, Signal, kill_process};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::{EX_LOST, EX_SOFTWARE, ExecArgs, report};

/// How often the child and the signals are looked at (the lease's loss wakes us at once).
const POLL: Duration = Duration::from_millis(50);

/// Acquires, runs the command, releases; the exit code.
pub fn run(client: &Client, args: ExecArgs, url: &str) -> u8 {
    let key = args.key.as_str();
    let mut builder = client.lock_builder(key).ttl(args.ttl);
    if let Some(confirm) = args.confirm {
        builder = builder.confirm(confirm.with(args.confirm_timeout));
    }
    let acquired = if args.try_once {
        builder.try_lock()
    } else {
        if let Some(timeout) = args.timeout {
            builder = builder.timeout(timeout);
        }
        builder.lock().map(Some)
    };
    let guard = match acquired {
        Ok(Some(g)) => g,
        Ok(None) => {
            eprintln!("rdlock: {key:?} is busy");
            return crate::EX_BUSY;
        }
        Err(e) => return report(&e, url, &format!("cannot lock {key:?}")),
    };

    // From here on INT and TERM are the child's to act on: they are forwarded, and rdlock
    // releases once the child has exited. (Before, they simply end rdlock.)
    let signals = [(SIGTERM, Signal::TERM), (SIGINT, Signal::INT)].map(|(raw, sig)| {
        let flag = Arc::new(AtomicBool::new(false));
        let _ = signal_hook::flag::register(raw, flag.clone());
        (flag, sig)
    });

    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let spawned = std::process::Command::new(program)
        .args(rest)
        .env("RDLOCK_FENCE", guard.fence().to_string())
        .env("RDLOCK_KEY", key)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rdlock: cannot run {program:?}: {e}");
            let _ = guard.release();
            // As shells do: 127 not found, 126 found but not runnable.
            return if e.kind() == ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let signal = |sig| {
        if let Some(pid) = pid {
            let _ = kill_process(pid, sig);
        }
    };

    let mut lost_at: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("rdlock: cannot watch the command: {e}");
                break wait_out(&mut child);
            }
        }
        for (flag, sig) in &signals {
            if flag.swap(false, Ordering::SeqCst) {
                signal(*sig);
            }
        }
        match lost_at {
            None => {
                if let Some(reason) = guard.wait_lost(POLL) {
                    eprintln!("rdlock: lost the lock {key:?} ({reason:?}): stopping the command");
                    signal(Signal::TERM);
                    lost_at = Some(Instant::now());
                }
            }
            Some(at) => {
                if !killed && at.elapsed() >= args.grace {
                    eprintln!("rdlock: the command outlived its grace period: killing it");
                    signal(Signal::KILL);
                    killed = true;
                }
                std::thread::sleep(POLL);
            }
        }
    };
    if lost_at.is_some() {
        return EX_LOST;
    }
    match guard.release() {
        Ok(ReleaseOutcome::NotHeld) => {
            eprintln!("rdlock: the lock {key:?} was lost before the command ended");
            return EX_LOST;
        }
        Ok(_) => {}
        // The key expires at the end of its lease; the command's own status still stands.
        Err(e) => eprintln!("rdlock: release of {key:?} failed: {}", crate::scrub(&e.to_string(), url)),
    }
    status.map_or(EX_SOFTWARE, exit_code)
}

/// Waits for the child the blocking way, once polling failed.
fn wait_out(child: &mut Child) -> Option<ExitStatus> {
    child.wait().ok()
}

/// The child's status as an exit code: its own, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        (None, None) => EX_SOFTWARE,
    }
}
