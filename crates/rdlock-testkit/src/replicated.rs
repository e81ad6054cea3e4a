//! A primary with replicas.

use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};
use crate::server::{ADMIN_TIMEOUT, RedisServer, ServerBuilder};

/// How long [`Replicated::start`] waits for every replica to acknowledge a write.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest single `WAIT`, in milliseconds; it must stay under the admin read timeout.
const WAIT_SLICE_MS: u128 = 5_000;
/// Key written (and deleted again) to have something for `WAIT` to acknowledge.
const SYNC_KEY: &str = "rdlock-testkit:replication-sync";

/// A primary `redis-server` and its replicas, all stopped when dropped.
#[derive(Debug)]
pub struct Replicated {
    primary: RedisServer,
    replicas: Vec<RedisServer>,
}

impl Replicated {
    /// Starts a primary and `n_replicas` replicas with default settings.
    ///
    /// Returns once a write on the primary is acknowledged by every replica
    /// (`WAIT n_replicas 5000`), so the replicas are fully synced.
    pub fn start(n_replicas: usize) -> Result<Replicated> {
        Self::start_with(n_replicas, RedisServer::builder())
    }

    /// Like [`start`](Self::start), with every server (primary and replicas)
    /// configured from `base`, e.g. `RedisServer::builder().enable_debug(true)`.
    pub fn start_with(n_replicas: usize, base: ServerBuilder) -> Result<Replicated> {
        let primary = base.clone().start()?;
        let replicas =
            (0..n_replicas).map(|_| base.clone().replica_of(&primary).start()).collect::<Result<Vec<_>>>()?;
        let replicated = Replicated { primary, replicas };
        replicated.wait_for_replicas(n_replicas, SYNC_TIMEOUT)?;
        Ok(replicated)
    }

    /// The primary.
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// All replicas, in start order.
    pub fn replicas(&self) -> &[RedisServer] {
        &self.replicas
    }

    /// Replica `i` (0-based, in start order).
    ///
    /// # Panics
    ///
    /// If `i` is not below the number of replicas, like slice indexing.
    pub fn replica(&self, i: usize) -> &RedisServer {
        &self.replicas[i]
    }

    /// Makes replica `i` a primary of its own (`REPLICAOF NO ONE`), as a
    /// failover would. The old primary keeps running as a primary too.
    ///
    /// # Panics
    ///
    /// If `i` is not below the number of replicas, like slice indexing.
    pub fn promote(&self, i: usize) -> Result<()> {
        let mut conn = self.replica(i).admin_connection()?;
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut conn)?;
        Ok(())
    }

    /// Waits until at least `count` replicas acknowledge a write on the primary
    /// (a key set and deleted again, so the dataset is unchanged), e.g. after
    /// restarting a replica.
    pub fn wait_for_replicas(&self, count: usize, timeout: Duration) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let mut conn = self.primary.admin_connection()?;
        let mut last_acked = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // `WAIT n 0` would block forever.
            let wait_ms = remaining.as_millis().clamp(1, WAIT_SLICE_MS);
            let (acked,): (usize,) = redis::pipe()
                .cmd("SET")
                .arg(SYNC_KEY)
                .arg(1)
                .ignore()
                .cmd("DEL")
                .arg(SYNC_KEY)
                .ignore()
                .cmd("WAIT")
                .arg(count)
                .arg(u64::try_from(wait_ms).unwrap_or(1))
                .query(&mut conn)?;
            last_acked = last_acked.max(acked);
            if acked >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: format!(
                        "{count} replicas of {} to acknowledge a write (best: {last_acked})",
                        self.primary.describe()
                    ),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// WAIT_SLICE_MS must stay below the admin read timeout or WAIT itself times out.
const _: () = assert!(WAIT_SLICE_MS < ADMIN_TIMEOUT.as_millis());
