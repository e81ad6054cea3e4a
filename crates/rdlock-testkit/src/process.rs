//! Signals, reaping and log reading for the child processes the test-kit starts.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Child;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::error::{Result, TestkitError};

/// Sends `sig` to the process `pid`.
pub(crate) fn send_signal(pid: u32, sig: Signal) -> Result<()> {
    let raw =
        i32::try_from(pid).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range"))?;
    signal::kill(Pid::from_raw(raw), sig).map_err(|errno| TestkitError::Io(errno.into()))
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
    fn last_lines_takes_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }
}
