//! Durable confirmation (`WAITAOF`, `Confirm::Durable`) against a server that has it: Valkey,
//! named by `$RDLOCK_VALKEY_SERVER` (`scripts/dev test` installs it and sets it). Without it
//! the cases that need it print why and return.

use std::path::PathBuf;
use std::time::Duration;

use rdlock_core::{Confirm, InvalidInput, LockError, LockOptions, NotDurable};
use rdlock_driver::Error;
use rdlock_testkit::{RedisServer, Replicated};

use crate::harness::{Harness, lock_with};
use crate::support::{admin, assert_clean, exists, get, server};

/// Environment variable naming a server binary with `WAITAOF` (Valkey, or Redis 7.2+).
pub const VALKEY_ENV: &str = "RDLOCK_VALKEY_SERVER";

const KEY: &str = "rdlock-test:durable";
const PATIENCE: Duration = Duration::from_secs(10);

/// The server with `WAITAOF`, or `None` after saying why the case is skipped.
fn durable_server<H: Harness>(case: &str) -> Option<PathBuf> {
    let path = std::env::var_os(VALKEY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    if path.is_none() {
        println!("[{}] {case} skipped: {VALKEY_ENV} (a Valkey server) is not set; `scripts/dev test` sets it", H::NAME);
    }
    path
}

/// With the append-only file on and fsynced on every write.
fn aof_on(binary: PathBuf) -> rdlock_testkit::ServerBuilder {
    RedisServer::builder().binary(binary).args(["--appendonly", "yes", "--appendfsync", "always"])
}

fn durable(replicas: u32, timeout: Duration) -> LockOptions {
    LockOptions {
        ttl: Duration::from_secs(5),
        confirm: Confirm::Durable { replicas, timeout },
        ..LockOptions::default()
    }
}

/// `Confirm::Durable` with a healthy replica holds, the key on both servers; with the replica
/// frozen (and its link cut, so that nothing it buffered counts) it falls short: the lock is
/// released before the shortfall is reported, nothing left; the primary's fsync alone still
/// holds.
pub async fn durable_confirm_holds_or_falls_short<H: Harness>() {
    let Some(binary) = durable_server::<H>("durable_confirm_holds_or_falls_short") else { return };
    let set = Replicated::start_with(1, aof_on(binary)).expect("start a primary with a replica");
    let client = H::connect(&set.primary().url()).await.expect("connect");
    // Generous: a replica reports its fsynced offset about once a second (measured: WAITAOF
    // 1 1 takes about 1 s), so a durable confirmation by a replica waits for that report.
    let guard = lock_with::<H>(&client, KEY, durable(1, Duration::from_secs(3)), PATIENCE).await.expect("durable lock");
    assert!(get(&mut admin(set.replica(0)), KEY).is_some(), "acquired before the replica had the key");
    assert!(H::release(guard).await.expect("release").was_held());

    set.replica(0).pause().expect("SIGSTOP the replica");
    set.primary().client_kill_type("replica").expect("CLIENT KILL TYPE replica");
    match lock_with::<H>(&client, KEY, durable(1, Duration::from_millis(300)), PATIENCE).await {
        // The primary's own fsync is one of the two copies wanted.
        Err(Error::ReplicationShortfall { acked: 1, wanted: 2 }) => {}
        other => panic!("expected a shortfall of one copy in two, got {other:?}"),
    }
    assert!(!exists(&mut admin(set.primary()), KEY), "the shortfall left the lock key behind");
    let local = lock_with::<H>(&client, KEY, durable(0, Duration::from_secs(2)), PATIENCE).await;
    assert!(H::release(local.expect("the primary's fsync alone")).await.expect("release").was_held());
    set.replica(0).resume().expect("SIGCONT the replica");
    assert_clean(set.primary(), &[]);
}

/// A durable lock from a server that cannot give it is a typed error, and nothing is left:
/// refused before sending when the client saw it at connect (no append-only file, or no
/// `WAITAOF` on a server older than 7.2), and refused by the server when its append-only file
/// was turned off after the client connected (the written key is taken back).
pub async fn durable_confirm_refused_without_aof_or_command<H: Harness>() {
    let timeout = Duration::from_millis(500);
    // The default server: Redis 7.0 lacks the command; a newer one lacks the append-only file.
    let plain = server();
    let client = H::connect(&plain.url()).await.expect("connect");
    match lock_with::<H>(&client, KEY, durable(0, timeout), PATIENCE).await {
        Err(Error::InvalidInput(InvalidInput::NotDurable(NotDurable::NoCommand | NotDurable::AppendOnlyOff))) => {}
        other => panic!("expected a refusal before sending, got {other:?}"),
    }
    assert_clean(&plain, &[]);

    let Some(binary) = durable_server::<H>("durable_confirm_refused_without_aof_or_command (its second half)") else {
        return;
    };
    let no_aof = RedisServer::builder().binary(&binary).start().expect("start a server without AOF");
    let client = H::connect(&no_aof.url()).await.expect("connect");
    match lock_with::<H>(&client, KEY, durable(0, timeout), PATIENCE).await {
        Err(Error::InvalidInput(InvalidInput::NotDurable(NotDurable::AppendOnlyOff))) => {}
        other => panic!("expected AppendOnlyOff before sending, got {other:?}"),
    }
    assert_clean(&no_aof, &[]);

    let turned_off = aof_on(binary).start().expect("start a server with AOF");
    let client = H::connect(&turned_off.url()).await.expect("connect");
    redis::cmd("CONFIG").arg(&["SET", "appendonly", "no"]).query::<()>(&mut admin(&turned_off)).expect("CONFIG SET");
    match lock_with::<H>(&client, KEY, durable(0, timeout), PATIENCE).await {
        Err(Error::Lock(LockError::NotDurable(NotDurable::AppendOnlyOff))) => {}
        other => panic!("expected the server's AppendOnlyOff, got {other:?}"),
    }
    crate::support::wait_until("the refused lock's key taken back", PATIENCE, || !exists(&mut admin(&turned_off), KEY));
    assert_clean(&turned_off, &[]);
}
