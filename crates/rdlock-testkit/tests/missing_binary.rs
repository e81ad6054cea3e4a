//! The lookup through `RDLOCK_REDIS_SERVER`.
//!
//! Environment variables are process-global, so the check runs in a child
//! copy of this test binary with the variable set, not in this process.

use rdlock_testkit::{RedisServer, SERVER_ENV, TestkitError};

const CHILD_MARKER: &str = "RDLOCK_TESTKIT_MISSING_BINARY_CHILD";

#[test]
fn env_var_pointing_nowhere_gives_a_clear_error() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        let err = RedisServer::start().expect_err("the configured binary does not exist");
        let msg = err.to_string();
        assert!(matches!(err, TestkitError::BinaryNotFound { .. }), "{msg}");
        assert!(msg.contains("RDLOCK_REDIS_SERVER"), "{msg}");
        assert!(msg.contains("apt-get install redis-server"), "{msg}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = std::process::Command::new(exe)
        .args(["--exact", "env_var_pointing_nowhere_gives_a_clear_error", "--test-threads=1"])
        .env(CHILD_MARKER, "1")
        .env(SERVER_ENV, "/nonexistent/redis-server")
        .output()
        .expect("child test runs");
    assert!(
        output.status.success(),
        "child failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
}
