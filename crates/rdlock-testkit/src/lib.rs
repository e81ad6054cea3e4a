//! Real Redis processes for tests: standalone servers, primaries with replicas,
//! sentinels, clusters, and a fault-injecting TCP proxy; TLS servers with throwaway
//! certificates ([`TestCa`], [`TlsServer`]).
//!
//! Every process runs `redis-server` on a free port of 127.0.0.1 picked at run
//! time, without persistence, in its own temporary directory, and is killed
//! when its handle is dropped — also when the test panics, in which case the
//! last lines of its log are printed to stderr — and when the process that
//! started it dies with its handles alive (killed alone, say): Linux's
//! parent-death signal, armed from one spawning thread that lives as long as
//! the process (the signal follows the thread that spawned the child).
//!
//! The executable is `$RDLOCK_REDIS_SERVER` if set, else `redis-server` on
//! `PATH` (Debian package `redis-server`). Sentinels use
//! `$RDLOCK_REDIS_SENTINEL`, else `redis-sentinel` on `PATH`, else
//! `redis-server --sentinel`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rdlock_testkit::{Proxy, RedisServer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = RedisServer::start()?;
//! let mut conn = server.connection()?;
//! redis::cmd("SET").arg("k").arg("v").query::<()>(&mut conn)?;
//!
//! // Inject faults: freeze the process, or slow down the network.
//! server.pause()?;
//! server.resume()?;
//! let proxy = Proxy::start(server.addr())?;
//! proxy.set_delay(Duration::from_millis(50));
//! let mut slow = redis::Client::open(proxy.url())?.get_connection()?;
//! let v: String = redis::cmd("GET").arg("k").query(&mut slow)?;
//! assert_eq!(v, "v");
//!
//! // A crash without persistence loses the data.
//! server.kill()?;
//! server.restart(false)?;
//! # Ok(())
//! # }
//! ```
//!
//! Replication and failover:
//!
//! ```no_run
//! use std::time::Duration;
//! use rdlock_testkit::{Replicated, Sentinels};
//!
//! # fn main() -> Result<(), rdlock_testkit::TestkitError> {
//! let replicated = Replicated::start(2)?;
//! let sentinels = Sentinels::start(&replicated, 3)?;
//! let old = replicated.primary().port();
//! sentinels.failover()?;
//! let new_primary = sentinels.wait_for_failover(old, Duration::from_secs(10))?;
//! assert_ne!(new_primary.port(), old);
//! # Ok(())
//! # }
//! ```
//!
//! A cluster ([`Cluster`]): failovers and slot migrations.
//!
//! ```no_run
//! use rdlock_testkit::{Cluster, key_slot};
//!
//! # fn main() -> Result<(), rdlock_testkit::TestkitError> {
//! let cluster = Cluster::start(3, 1)?;
//! let primary = cluster.primary_for_key("k")?;
//! let replica = cluster.replicas_of(primary)?[0];
//! cluster.failover(replica)?;
//! let new_primary = cluster.kill_primary_and_wait_for_promotion(replica)?;
//! let target = cluster.primaries()?.into_iter().find(|p| p.port() != new_primary.port()).expect("3 primaries");
//! cluster.migrate_slot(key_slot("k"), new_primary, target)?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod binary;
mod cluster;
mod error;
mod ports;
mod process;
mod proxy;
mod replicated;
mod sentinel;
mod server;
mod tls;

pub use binary::{SENTINEL_ENV, SERVER_ENV};
pub use cluster::{Cluster, SLOTS, key_slot};
pub use error::{Result, TestkitError};
pub use ports::free_port;
pub use proxy::Proxy;
pub use replicated::Replicated;
pub use sentinel::{MASTER_NAME, SentinelTarget, Sentinels};
pub use server::{HOST, RedisServer, ServerBuilder};
#[cfg(feature = "tls")]
pub use tls::TestCa;
pub use tls::{CertPair, ClientAuth, TlsServer};
