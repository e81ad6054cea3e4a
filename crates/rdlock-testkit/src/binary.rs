//! Finding the `redis-server` and `redis-sentinel` executables.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, TestkitError};

/// Environment variable naming the `redis-server` executable to use.
pub const SERVER_ENV: &str = "RDLOCK_REDIS_SERVER";
/// Environment variable naming the `redis-sentinel` executable to use.
pub const SENTINEL_ENV: &str = "RDLOCK_REDIS_SENTINEL";

const SERVER_NAME: &str = "redis-server";
const SENTINEL_NAME: &str = "redis-sentinel";

/// Finds `redis-server`: `$RDLOCK_REDIS_SERVER`, else `PATH`.
pub(crate) fn server() -> Result<PathBuf> {
    resolve(SERVER_NAME, SERVER_ENV, std::env::var_os(SERVER_ENV), std::env::var_os("PATH"))
}

/// Finds an executable that can run a sentinel: `$RDLOCK_REDIS_SENTINEL`, else
/// `redis-sentinel` on `PATH`, else `redis-server` (started with `--sentinel`).
pub(crate) fn sentinel() -> Result<PathBuf> {
    match resolve(SENTINEL_NAME, SENTINEL_ENV, std::env::var_os(SENTINEL_ENV), std::env::var_os("PATH")) {
        Ok(path) => Ok(path),
        // An explicit setting that points nowhere is a mistake worth reporting,
        // not something to paper over with a fallback.
        Err(err) if std::env::var_os(SENTINEL_ENV).is_some_and(|v| !v.is_empty()) => Err(err),
        Err(_) => server(),
    }
}

/// Checks a path given explicitly by the caller.
pub(crate) fn explicit(path: &Path, binary: &'static str, env_var: &'static str) -> Result<PathBuf> {
    if is_executable(path) {
        Ok(path.to_path_buf())
    } else {
        Err(TestkitError::BinaryNotFound {
            binary,
            env_var,
            detail: format!("{} is not an executable file", path.display()),
        })
    }
}

/// The lookup itself, with the environment passed in so it can be tested
/// without touching process-global state.
fn resolve(
    binary: &'static str,
    env_var: &'static str,
    env_value: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf> {
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::BinaryNotFound {
                binary,
                env_var,
                detail: format!("{env_var}={} is not an executable file", path.display()),
            })
        };
    }
    let found = path_var
        .as_deref()
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate));
    found.ok_or_else(|| TestkitError::BinaryNotFound {
        binary,
        env_var,
        detail: format!("{env_var} is not set and no `{binary}` on PATH"),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_value_pointing_nowhere_is_a_clear_error() {
        let err =
            resolve(SERVER_NAME, SERVER_ENV, Some("/nonexistent/redis-server".into()), Some("/usr/bin:/bin".into()))
                .err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("RDLOCK_REDIS_SERVER"), "{msg}");
        assert!(msg.contains("apt-get install redis-server"), "{msg}");
    }

    #[test]
    fn empty_path_finds_nothing() {
        let err = resolve(SERVER_NAME, SERVER_ENV, None, None).err();
        assert!(matches!(err, Some(TestkitError::BinaryNotFound { .. })));
    }

    #[test]
    fn path_search_finds_an_executable() {
        // `sh` exists on every machine these tests run on.
        let found = resolve("sh", SERVER_ENV, None, Some("/nonexistent:/bin:/usr/bin".into()));
        assert!(found.is_ok_and(|p| p.ends_with("sh")));
    }

    #[test]
    fn empty_env_value_falls_back_to_path() {
        let found = resolve("sh", SERVER_ENV, Some("".into()), Some("/bin:/usr/bin".into()));
        assert!(found.is_ok());
    }
}
