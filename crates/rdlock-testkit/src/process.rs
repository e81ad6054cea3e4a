//! Signals, reaping and log reading for the child processes the test-kit starts.

use std::io::{Read, Seek, SeekFrom};
#[cfg(target_os = "linux")]
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::error::{Result, TestkitError};

/// Sends `sig` to the process `pid`.
pub(crate) fn send_signal(pid: u32, sig: Signal) -> Result<()> {
    let raw =
        i32::try_from(pid).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range"))?;
    signal::kill(Pid::from_raw(raw), sig).map_err(|errno| TestkitError::Io(errno.into()))
}

/// Waits until process `pid` is stopped (state `T`, or `t` under a tracer, in
/// `/proc/<pid>/stat`), for at most [`STOP_PATIENCE`]. A dead process (`Z`, `X`) answers
/// nothing either, and where `/proc` cannot be read it returns at once.
pub(crate) fn wait_stopped(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/stat");
    let start = std::time::Instant::now();
    loop {
        let Some(state) = process_state(&path) else { return Ok(()) };
        if matches!(state.as_str(), "T" | "t" | "Z" | "X") {
            return Ok(());
        }
        if start.elapsed() > STOP_PATIENCE {
            return Err(TestkitError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("process {pid} not stopped {STOP_PATIENCE:?} after SIGSTOP"),
            )));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The state letter in `/proc/<pid>/stat` (at `path`), if it can be read.
fn process_state(path: &str) -> Option<String> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The state follows the command name, which is in parentheses and may hold any byte.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).map(str::to_owned)
}

/// How long [`wait_stopped`] waits for a stop to take effect.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A spawn request for [`spawn_tied`]'s thread, and where its answer goes.
type Request = (Command, Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that its process is killed (SIGKILL) when this process dies, however it
/// dies: a test binary or benchmark killed alone, whose handles never drop, leaves no server
/// running. Linux sends the parent-death signal when the *thread* that spawned the child ends,
/// and servers are started from any test's thread and shared across threads, so every child
/// is spawned from one thread that lives as long as the process.
pub(crate) fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        let thread = std::thread::Builder::new().name("rdlock-testkit-spawner".into()).spawn(move || {
            // Never ends: the sender is in a static.
            for (mut cmd, answer) in rx {
                let _ = answer.send(spawn_with_parent_death_signal(&mut cmd));
            }
        });
        if let Err(e) = thread {
            panic!("the test-kit cannot start its spawning thread: {e}");
        }
        tx
    });
    let (tx, rx) = channel();
    let sent = spawner.send((cmd, tx));
    sent.map_err(|_| std::io::Error::other("the test-kit's spawning thread is gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("the test-kit's spawning thread is gone"))?
}

#[cfg(target_os = "linux")]
fn spawn_with_parent_death_signal(cmd: &mut Command) -> std::io::Result<Child> {
    let parent = nix::unistd::getpid();
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the closure makes two system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent died before the signal was armed: the child was handed to another.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Elsewhere there is no parent-death signal: a server then outlives a killed owner.
#[cfg(not(target_os = "linux"))]
fn spawn_with_parent_death_signal(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.spawn()
}

/// Kills `child` with SIGKILL and waits for it, so no zombie or stray server
/// outlives its handle. Also works on a stopped (SIGSTOP) process.
pub(crate) fn kill_and_reap(child: &mut Child) -> Result<()> {
    match child.try_wait()? {
        Some(_) => Ok(()),
        None => {
            // An error here means it exited in between; `wait` still reaps it.
            let _ = child.kill();
            child.wait()?;
            Ok(())
        }
    }
}

/// Last `lines` lines of the file at `path` (empty when it does not exist).
pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    last_lines(&String::from_utf8_lossy(&text), lines)
}

/// Last `lines` lines of `text`.
pub(crate) fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Length of the file at `path`, 0 when it does not exist.
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Contents of the file at `path` from byte `offset` on (empty on error).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut out = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_process_is_seen_stopped() {
        let mut child = spawn_tied({
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        })
        .expect("spawn sleep");
        send_signal(child.id(), Signal::SIGSTOP).expect("SIGSTOP");
        wait_stopped(child.id()).expect("stopped");
        assert_eq!(process_state(&format!("/proc/{}/stat", child.id())).as_deref(), Some("T"));
        send_signal(child.id(), Signal::SIGCONT).expect("SIGCONT");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    #[test]
    fn last_lines_takes_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }
}
