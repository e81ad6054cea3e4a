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
use crate::support::{admin, assert_clean, options, server};

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
/// `PEXPIRE`), unless the client's config says not to; by `extend.lua` everywhere else. A key
/// of another type is a lost lease (not owner), as with the script. Renewals are asked for
/// (`extend`, the automatic renewal's own path), so that nothing waits on timing.
pub async fn renewals_take_set_ifeq_where_the_server_has_it<H: Harness>() {
    let valkey = std::env::var_os(VALKEY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut servers = vec![server()];
    match valkey {
        Some(binary) => servers.push(RedisServer::builder().binary(binary).start().expect("start Valkey")),
        None => println!("[{}] Valkey not tried: {VALKEY_ENV} is not set", H::NAME),
    }
    let held = || options(Duration::from_secs(30), false);
    for server in &servers {
        let mut conn = admin(server);
        let ifeq = offers_ifeq(&mut conn);
        for newer in [true, false] {
            let config = ClientConfig { newer_commands: newer, ..ClientConfig::default() };
            let client = H::connect_with(&server.url(), config).await.expect("connect");
            let guard = lock_with::<H>(&client, KEY, held(), PATIENCE).await.expect("lock");
            redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut conn).expect("CONFIG RESETSTAT");
            let first = H::extend(&guard).await.expect("extend");
            assert!(H::extend(&guard).await.expect("extend") >= first);
            let (set, pexpire, get) = (calls(&mut conn, "set"), calls(&mut conn, "pexpire"), calls(&mut conn, "get"));
            if ifeq && newer {
                assert_eq!((set, pexpire, get), (2, 0, 0), "IFEQ on offer: one SET per renewal, no script");
            } else {
                assert_eq!((set, pexpire, get), (0, 2, 2), "no IFEQ, or told not to use it: the script");
            }
            assert!(H::release(guard).await.expect("release").was_held());
        }
        // A key of another type where the lock was: the renewal loses the lease.
        let client = H::connect(&server.url()).await.expect("connect");
        let guard = lock_with::<H>(&client, KEY, held(), PATIENCE).await.expect("lock");
        redis::cmd("DEL").arg(KEY).exec(&mut conn).expect("DEL");
        redis::cmd("RPUSH").arg(KEY).arg("x").exec(&mut conn).expect("RPUSH");
        assert!(H::extend(&guard).await.is_err(), "extended a lock whose key is a list");
        assert_eq!(H::lost_within(&guard, PATIENCE).await, Some(LostReason::NotOwner));
        redis::cmd("DEL").arg(KEY).exec(&mut conn).expect("DEL");
        assert!(!H::release(guard).await.expect("release").was_held());
        assert_clean(server, &[]);
        let kind = if ifeq { "with" } else { "without" };
        println!("[{}] renewals checked on a server {kind} IFEQ", H::NAME);
    }
}
