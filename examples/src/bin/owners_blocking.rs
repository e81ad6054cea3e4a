//! Reentrant owners and scoped locks on plain threads, on a throwaway Redis server: an owner
//! locks a key again from another thread without a round trip, and `with_lock` hands its work
//! a scope to check, since a thread cannot be cancelled.
//!
//! `cargo run -p rdlock-examples --bin owners_blocking`

use std::time::Duration;

use rdlock_blocking::{Client, ClientConfig, Error, LockOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    // Short leases, renewed every 300 ms, so that the lost lease below is noticed soon.
    let defaults = LockOptions { ttl: Duration::from_millis(900), ..LockOptions::default() };
    let redis = rdlock_blocking::redis::Client::open(server.url())?;
    let client = Client::connect(redis, ClientConfig { defaults, ..ClientConfig::default() })?;

    // An owner: its clones are the same owner, so another thread re-enters the outer hold.
    let owner = client.owner();
    let outer = owner.lock("ledger")?;
    let sub = owner.clone();
    let inner = std::thread::spawn(move || sub.lock("ledger")).join().expect("the thread")?;
    println!("owner: fence {} held {} deep", inner.fence(), inner.depth());
    assert_eq!(inner.release()?, None, "inner releases send nothing");
    assert!(outer.release()?.is_some_and(|o| o.was_held()), "the last release frees the key");

    // A scoped lock: the work's value, released at the end (also if the work panics).
    let fence = client.with_lock("ledger", |scope| scope.fence())?;
    println!("with_lock: done under fence {fence}");

    // The key deleted under the work: the work sees it through its scope and stops.
    let mut admin = server.connection()?;
    let result = client.with_lock("ledger", |scope| {
        let _: i64 = rdlock_blocking::redis::cmd("DEL").arg(scope.key()).query(&mut admin).expect("DEL");
        // A step of work between checks; a sleep here that wakes early on a loss.
        let mut steps = 0;
        while scope.wait_lost(Duration::from_millis(50)).is_none() {
            steps += 1;
        }
        steps
    });
    assert!(matches!(result, Err(Error::Lost(_))));
    println!("with_lock: the lease was lost, the work stopped ({result:?})");
    Ok(())
}
