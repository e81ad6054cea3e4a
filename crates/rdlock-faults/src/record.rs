//! What workers and the harness log: one JSON object per line.
//!
//! ```text
//! {"worker":"a","mono":81234567,"wall":1767000000000000,"ev":"acquired","fence":17,"start":81230001,"valid_until":82220001,"valid_until_wall":1767000000985434}
//! ```
//!
//! `mono` fields are microseconds of `CLOCK_MONOTONIC` ([`crate::clock`]), comparable across
//! the processes of one machine; `wall` fields are microseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

use crate::clock::{mono_us, wall_us};

/// The name under which the harness logs the faults it injects.
pub const HARNESS: &str = "harness";

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who logged it: a worker's name, or [`HARNESS`].
    pub worker: String,
    /// When, in microseconds of `CLOCK_MONOTONIC`.
    pub mono: i64,
    /// When, in microseconds since the Unix epoch.
    pub wall: i64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// A record of `event` by `worker`, stamped now.
    pub fn now(worker: &str, event: Event) -> Self {
        Self { worker: worker.to_owned(), mono: mono_us(), wall: wall_us(), event }
    }

    /// One JSON line (without the newline).
    pub fn to_line(&self) -> String {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one JSON line.
    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// Why an acquisition did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The acquisition's deadline passed.
    TimedOut,
    /// Too few replicas acknowledged; the lock was released again.
    ReplicationShortfall,
    /// The reply came too late to leave any validity; the lock was released again.
    NoValidityLeft,
    /// Too many members of a quorum failed for a majority (`LockError::NoQuorum`).
    NoQuorum,
    /// Anything else (transport, server refusal, ...).
    Other,
}

/// What became of a mutex holder's write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteBack {
    /// Written and released.
    Written,
    /// Refused: the lease was lost (`Error::Lost`), nothing was written.
    Refused,
    /// No answer in time, or an error that does not say: written or not, unknown.
    Unknown,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The worker is connected and reads commands.
    Ready {
        /// Its process id.
        pid: u32,
    },
    /// An acquisition starts (the worker waits from now on).
    Attempt,
    /// The lock is held.
    Acquired {
        /// The fencing token.
        fence: u64,
        /// When the acquisition started (monotonic µs).
        start: i64,
        /// The guard's `valid_until` (monotonic µs).
        valid_until: i64,
        /// The guard's `valid_until` (wall-clock µs).
        valid_until_wall: i64,
    },
    /// The acquisition did not succeed.
    AcquireFailed {
        /// Why, as a category.
        kind: FailKind,
        /// The error as text.
        error: String,
    },
    /// A renewal moved `valid_until` (seen by polling the guard).
    Renewed {
        /// The hold's fencing token.
        fence: u64,
        /// The new `valid_until` (monotonic µs).
        valid_until: i64,
    },
    /// The guard's `lost()` fired.
    Lost {
        /// The hold's fencing token.
        fence: u64,
        /// The reason reported.
        reason: String,
    },
    /// The worker is about to stall (between checking its lease and writing): the moment for
    /// a test to freeze it.
    PausePoint {
        /// The hold's fencing token.
        fence: u64,
    },
    /// A fenced write to the ledger, and whether the ledger accepted it.
    Write {
        /// The token written under.
        fence: u64,
        /// Accepted (the token was not below the highest seen) or rejected.
        accepted: bool,
    },
    /// A write not attempted.
    WriteSkipped {
        /// The hold's fencing token (0 when nothing is held).
        fence: u64,
        /// Why.
        why: String,
    },
    /// An unfenced increment (`GET`, sleep, `SET read+1`) completed: an acknowledged increment.
    Unsafe {
        /// The hold's fencing token.
        fence: u64,
        /// The value read.
        read: u64,
    },
    /// An unfenced increment abandoned before its `SET` because the lease was no longer valid.
    UnsafeAborted {
        /// The hold's fencing token.
        fence: u64,
    },
    /// A mutex holder read the counter its grant brought.
    MutexRead {
        /// The hold's fencing token.
        fence: u64,
        /// The value read.
        value: u64,
        /// The fence of the holder that wrote it (`None`: never written).
        written_by: Option<u64>,
    },
    /// A mutex holder's release, writing the value back, completed.
    MutexWrite {
        /// The hold's fencing token.
        fence: u64,
        /// The value written back.
        value: u64,
        /// Written, refused, or unknown.
        outcome: WriteBack,
    },
    /// A release starts.
    Releasing {
        /// The hold's fencing token.
        fence: u64,
    },
    /// A release completed.
    Released {
        /// The hold's fencing token.
        fence: u64,
        /// Whether the lock was still the worker's.
        held: bool,
    },
    /// A release failed.
    ReleaseFailed {
        /// The hold's fencing token.
        fence: u64,
        /// The error as text.
        error: String,
    },
    /// A command finished.
    Done {
        /// The command line.
        cmd: String,
    },
    /// Something went wrong in the worker itself (bad command, ledger error).
    Error {
        /// What.
        what: String,
    },
    /// Harness: the target process was frozen (SIGSTOP).
    Paused {
        /// The worker (or server) frozen.
        target: String,
    },
    /// Harness: the target process was let go on (SIGCONT).
    Resumed {
        /// The worker (or server) resumed.
        target: String,
    },
    /// Harness: the target process was killed (SIGKILL).
    Killed {
        /// The worker (or server) killed.
        target: String,
    },
    /// Harness: the lock server lost its data now (restart without persistence).
    DataLost,
    /// Harness: the lock server stops serving the workers (a failover starts).
    ServerDown,
    /// Harness: the lock server serves every worker again (each follows the new primary).
    ServerUp,
    /// The worker did not run from `from` to `to` (monotonic µs) though nobody froze it: the
    /// machine was busy elsewhere. Seen by a thread of its own that wakes every few ms, and
    /// written once it runs again; the checker counts it as a freeze.
    Stalled {
        /// The thread's last wake-up before the stall.
        from: i64,
        /// Its first wake-up after.
        to: i64,
    },
    /// Harness: a fault or step worth seeing in the history.
    Note {
        /// What.
        what: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_flat_json_lines() {
        let r = Record {
            worker: "a".into(),
            mono: 5,
            wall: 6,
            event: Event::Acquired { fence: 17, start: 1, valid_until: 9, valid_until_wall: 10 },
        };
        let line = r.to_line();
        assert_eq!(
            line,
            r#"{"worker":"a","mono":5,"wall":6,"ev":"acquired","fence":17,"start":1,"valid_until":9,"valid_until_wall":10}"#
        );
        assert_eq!(Record::from_line(&line).ok(), Some(r));
        let f = Record::now("b", Event::AcquireFailed { kind: FailKind::NoValidityLeft, error: "x".into() });
        assert!(f.to_line().contains(r#""kind":"no_validity_left""#));
        assert_eq!(Record::from_line(&f.to_line()).ok(), Some(f));
        let m = Record::now("c", Event::MutexWrite { fence: 3, value: 7, outcome: WriteBack::Refused });
        assert!(m.to_line().contains(r#""ev":"mutex_write","fence":3,"value":7,"outcome":"refused""#));
        assert_eq!(Record::from_line(&m.to_line()).ok(), Some(m));
    }
}
