//! What newer servers offer beyond the scripts: renewals by `SET ... IFEQ` (Valkey 8.1+,
//! Redis 8.4+), found at connect. Run on the suite's server, and on Valkey when
//! `$RDLOCK_VALKEY_SERVER` names it (`scripts/dev test` sets it), so that every runtime meets
//! a server with `IFEQ` and one without.

use std::path::PathBuf;
use std::time::Duration;

use rdlock_core::{LockOptions, LostReason};
use rdlock_driver::ClientConfig;
use rdlock_testkit::RedisServer;

use crate::durable::VALKEY_ENV;
use crate::harness::{Harness, lock_with};
use crate::support::{admin, assert_clean, get, inbox_subscribers, keys, llen, options, server, wait_until};

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

/// Commands of a hand-off, from `INFO commandstats` since the last `CONFIG RESETSTAT`: the
/// owner reads (`MGET`, `GET`) and the writes.
fn handoff_commands(conn: &mut redis::Connection) -> [u64; 6] {
    ["mget", "get", "lpop", "incr", "set", "publish"].map(|c| calls(conn, c))
}

/// A holder's release hands the lock on with its owner check folded into the waiter's
/// `SET ... IFEQ` where the server has it (`LPOP`, `INCR`, `SET`, `PUBLISH`: no `MGET`), and by
/// the checked release elsewhere (`MGET` first). A release whose lease was lost meanwhile (the
/// key another's) takes back what the fold wrote: the waiter's entry stays queued with a TTL,
/// the counter where it was; the waiter then gets the lock in its turn.
pub async fn a_holders_release_folds_the_owner_check_where_the_server_has_ifeq<H: Harness>() {
    let valkey = std::env::var_os(VALKEY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut servers = vec![server()];
    match valkey {
        Some(binary) => servers.push(RedisServer::builder().binary(binary).start().expect("start Valkey")),
        None => println!("[{}] Valkey not tried: {VALKEY_ENV} is not set", H::NAME),
    }
    // No renewal in the windows counted: with IFEQ a renewal is a SET too.
    let held = LockOptions { poll_cap: Duration::from_secs(10), ..options(Duration::from_secs(30), false) };
    let names = keys(KEY);
    for server in &servers {
        let mut conn = admin(server);
        let ifeq = offers_ifeq(&mut conn);
        let clients =
            [H::connect(&server.url()).await.expect("connect"), H::connect(&server.url()).await.expect("connect")];
        let mut holder = lock_with::<H>(&clients[0], KEY, held, PATIENCE).await.expect("lock");
        for round in 1..=4 {
            let client = clients[round % 2].clone();
            let waiter = H::spawn(async move { lock_with::<H>(&client, KEY, held, PATIENCE).await.expect("lock") });
            wait_until("the waiter queued and subscribed", PATIENCE, || {
                llen(&mut conn, &names.queue) == 1 && inbox_subscribers(&mut conn, KEY) == round.min(2) as u64
            });
            redis::cmd("CONFIG").arg("RESETSTAT").exec(&mut conn).expect("CONFIG RESETSTAT");
            let fence = H::fence(&holder);
            assert!(H::release(holder).await.expect("release").was_held());
            holder = waiter.await;
            assert!(H::fence(&holder) > fence);
            // A client's first wait re-checks once after subscribing (rounds 1 and 2).
            if round > 2 {
                let [mget, get, lpop, incr, set, publish] = handoff_commands(&mut conn);
                if ifeq {
                    assert_eq!([mget, get, lpop, incr, set, publish], [0, 0, 1, 1, 1, 1], "round {round}: folded");
                } else {
                    assert_eq!([mget, lpop, incr, set, publish], [1, 1, 1, 1, 1], "round {round}: checked");
                }
            }
        }
        // The lease lost while one waiter queues: the key is another's when the release runs.
        let client = clients[1].clone();
        let quick = LockOptions { poll_cap: Duration::from_millis(100), ..held };
        let waiter = H::spawn(async move { lock_with::<H>(&client, KEY, quick, PATIENCE).await.expect("lock") });
        wait_until("the waiter queued", PATIENCE, || llen(&mut conn, &names.queue) == 1);
        let counter = get(&mut conn, &names.fence);
        let entry: Vec<String> =
            redis::cmd("LRANGE").arg(&names.queue).arg(0).arg(-1).query(&mut conn).expect("LRANGE");
        redis::cmd("SET").arg(KEY).arg("someone-else").arg("PX").arg(30_000).exec(&mut conn).expect("SET");
        assert!(!H::release(holder).await.expect("release").was_held());
        let after: Vec<String> =
            redis::cmd("LRANGE").arg(&names.queue).arg(0).arg(-1).query(&mut conn).expect("LRANGE");
        let pttl: i64 = redis::cmd("PTTL").arg(&names.queue).query(&mut conn).expect("PTTL");
        assert_eq!((after, get(&mut conn, &names.fence)), (entry, counter), "the release wrote");
        assert!(pttl > 0, "the queue lost its TTL: {pttl}");
        assert_eq!(get(&mut conn, KEY).as_deref(), Some("someone-else"));
        redis::cmd("DEL").arg(KEY).exec(&mut conn).expect("DEL");
        let guard = waiter.await;
        assert!(H::release(guard).await.expect("release").was_held());
        assert_clean(server, &[]);
        let kind = if ifeq { "with" } else { "without" };
        println!("[{}] hand-offs checked on a server {kind} IFEQ", H::NAME);
    }
}
