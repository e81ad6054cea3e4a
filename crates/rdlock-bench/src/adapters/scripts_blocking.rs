//! The scripts floor (`scripts.rs`) for threads: the same two script calls, with the same keys
//! and arguments, over the redis crate's synchronous `Connection`, one per client, each
//! request blocking its caller's thread ([`super::ThreadExec`]). What the blocking adapter
//! cannot go below: its "× scripts" is against this row when it ran (`report.rs`).
//!
//! A single server only (S1, S3), uncontended as `scripts`.

use std::sync::Mutex;
use std::time::Duration;

use rdlock_driver::convert;

use super::scripts::{Ids, ScriptsGuard, granted, release, released};
use super::{Locker, Resource, Spec};
use crate::BoxError;

/// The read and write timeouts of the connection: the multiplexed connection's default
/// response timeout, which `scripts` keeps. Socket options set once: no cost per request.
const TIMEOUT: Duration = Duration::from_millis(500);

/// One client: one synchronous connection.
pub struct ScriptsBlocking {
    /// Locked for one request and its reply (a client's tasks share it; S1 and S3 run one
    /// task per client, so it is never contended there).
    conn: Mutex<redis::Connection>,
    ids: Ids,
}

impl std::fmt::Debug for ScriptsBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptsBlocking").field("ids", &self.ids).finish_non_exhaustive()
    }
}

impl ScriptsBlocking {
    fn send(&self, cmd: &redis::Cmd) -> Result<redis::Value, BoxError> {
        let mut conn = self.conn.lock().map_err(|_| "a thread panicked holding the connection")?;
        Ok(cmd.query(&mut *conn)?)
    }
}

impl Locker for ScriptsBlocking {
    type Guard = ScriptsGuard;
    const REQUESTS: &'static [&'static str] = &["evalsha", "eval"];
    const RENEWS: bool = false;

    async fn connect(url: &str) -> Result<Self, BoxError> {
        if !url.starts_with("redis://") {
            return Err(format!("the blocking scripts baseline runs on a single server, not {url}").into());
        }
        let mut conn = redis::Client::open(url)?.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        // Every script cached on the server, as the driver does at connect.
        convert::load_scripts().exec(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn), ids: Ids::new()? })
    }

    async fn lock(&self, key: &str, spec: Spec) -> Result<ScriptsGuard, BoxError> {
        let (cmd, guard) = self.ids.acquire(key, spec)?;
        granted(self.send(&cmd)?, guard)
    }

    async fn acquire(&self, key: &str, resource: Resource, spec: Spec) -> Result<ScriptsGuard, BoxError> {
        match resource {
            Resource::Lock => self.lock(key, spec).await,
            _ => Err("the scripts baseline takes plain locks only".into()),
        }
    }

    async fn release(&self, guard: ScriptsGuard) -> Result<bool, BoxError> {
        released(self.send(&release(&guard)?)?)
    }

    fn is_valid(&self, _guard: &ScriptsGuard) -> bool {
        true
    }
}
