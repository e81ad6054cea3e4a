//! What newer servers offer beyond the scripts: renewals by `SET ... IFEQ` (Valkey 8.1+,
//! Redis 8.4+), found at connect. Run on the suite's server, and on Valkey when
//! `$RDLOCK_VALKEY_SERVER` names it (`scripts/dev test` sets it), so that every runtime meets
//! a server with `IFEQ` and one without.

use std::path::PathBuf;
use std::time::Duration;

use rdlock_core::LostReason;
use rdlock_driver::ClientConfig;
use rdlock_testkit::RedisServer;

use crate::durable::VALKEY_ENV;
use crate::harness::{Harness, lock_with};
use crate::support::{admin, assert_clean, options, server, wait_until};

const KEY: &str = "rdlock-test:newer";
const PATIENCE: Duration = Duration::from_secs(10);

/// Calls of one command since the last `CONFIG RESETSTAT` (a script's own calls included).
fn calls(conn: &mut redis::Connection, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).expect("INFO commandstats");
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines().find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).unwrap_or(0)
}

/// Whether the server's `SET` takes `IFEQ`, as its command docs say.
fn offers_ifeq(conn: &mut redis::Connection) -> bool {
    let docs: redis::Value = redis::cmd("COMMAND").arg("DOCS").arg("SET").query(conn).expect("COMMAND DOCS");
    format!("{docs:?}").to_ascii_uppercase().contains("\"IFEQ\"")
}

/// A held lock renews by `SET ... IFEQ` on a server that has it (no script runs: no `GET`, no
/// `PEXPIRE`), unless the client's config says not to; by `extend.lua` everywhere else. The
/// lease lasts either way, and a key of another type is a lost lease, as with the script.
pub async fn renewals_take_set_ifeq_where_the_server_has_it<H: Harness>() {
    let valkey = std::env::var_os(VALKEY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut servers = vec![server()];
    match valkey {
        Some(binary) => servers.push(RedisServer::builder().binary(binary).start().expect("start Valkey")),
        None => println!("[{}] Valkey not tried: {VALKEY_ENV} is not set", H::NAME),
    }
    for server in &servers {
        let mut conn = admin(server);
        let ifeq = offers_ifeq(&mut conn);
        for newer in [true, false] {
            let config = ClientConfig { newer_commands: newer, ..ClientConfig::default() };
            let client = H::connect_with(&server.url(), config).await.expect("connect");
            let guard =
                lock_with::<H>(&client, KEY, options(Duration::from_secs(1), true), PATIENCE).await.expect("lock");
            redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut conn).expect("CONFIG RESETSTAT");
            // Two renewals (due every third of the ttl), by either form.
            wait_until("two renewals", PATIENCE, || calls(&mut conn, "set") + calls(&mut conn, "pexpire") >= 2);
            let (set, pexpire, get) = (calls(&mut conn, "set"), calls(&mut conn, "pexpire"), calls(&mut conn, "get"));
            let by_set = ifeq && newer;
            if by_set {
                assert_eq!((pexpire, get), (0, 0), "IFEQ on offer, yet the script renewed ({set} SETs)");
            } else {
                assert_eq!(set, 0, "SET sent to a server without IFEQ or by a client told not to");
            }
            assert!(H::is_valid(&guard), "the renewals kept the lease");
            assert!(H::release(guard).await.expect("release").was_held());
        }
        // A key of another type where the lock was: the next renewal loses the lease.
        let client = H::connect(&server.url()).await.expect("connect");
        let guard = lock_with::<H>(&client, KEY, options(Duration::from_secs(1), true), PATIENCE).await.expect("lock");
        redis::cmd("DEL").arg(KEY).exec(&mut conn).expect("DEL");
        redis::cmd("RPUSH").arg(KEY).arg("x").exec(&mut conn).expect("RPUSH");
        // Within the ttl: the renewal's answer, not the lease running out.
        assert_eq!(H::lost_within(&guard, Duration::from_secs(1)).await, Some(LostReason::NotOwner));
        redis::cmd("DEL").arg(KEY).exec(&mut conn).expect("DEL");
        assert!(!H::release(guard).await.expect("release").was_held());
        assert_clean(server, &[]);
        let kind = if ifeq { "with" } else { "without" };
        println!("[{}] renewals checked on a server {kind} IFEQ", H::NAME);
    }
}
