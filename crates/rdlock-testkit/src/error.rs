//! The error type shared by every part of the test-kit.

use std::time::Duration;

/// Result alias used throughout the test-kit.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping test processes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The redis-server (or sentinel) executable could not be found.
    #[error(
        "{binary} not found ({detail}); install the Debian package `redis-server` \
         (`apt-get install redis-server`) or set {env_var} to the path of the executable"
    )]
    BinaryNotFound {
        /// Name of the executable that was looked for.
        binary: &'static str,
        /// Environment variable that overrides the lookup.
        env_var: &'static str,
        /// Where it was looked for.
        detail: String,
    },

    /// A process was started but did not become ready in time.
    #[error("{what} was not ready after {timeout:?}; last log lines:\n{log_tail}")]
    StartTimeout {
        /// Which process or group of processes.
        what: String,
        /// How long it was waited for.
        timeout: Duration,
        /// Last lines of its log, to tell why.
        log_tail: String,
    },

    /// A process exited while it was being started.
    #[error("{what} exited during start-up ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Which process.
        what: String,
        /// Its exit status.
        status: String,
        /// Last lines of its log, to tell why.
        log_tail: String,
    },

    /// A condition that was waited for did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        timeout: Duration,
    },

    /// The operation needs a running process, but it has been killed.
    #[error("{what} is not running")]
    NotRunning {
        /// Which process.
        what: String,
    },

    /// A server answered something the test-kit did not expect.
    #[error("unexpected reply from {what}: {detail}")]
    UnexpectedReply {
        /// Which process answered.
        what: String,
        /// What was wrong with the reply.
        detail: String,
    },

    /// An argument was out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An operating-system call failed.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),

    /// A Redis command failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}
