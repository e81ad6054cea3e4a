//! Reentrant owners and scoped locks on async-std, on a throwaway Redis server: an owner locks a
//! key again from a sub-task without a round trip, and `with_lock` stops its work when the
//! lease is lost.
//!
//! `cargo run -p rdlock-examples --bin owners_async_std`

use std::time::Duration;

use rdlock_async_std::{Client, ClientConfig, Error, LockOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    async_std::task::block_on(async {
        // Short leases, renewed every 300 ms, so that the lost lease below is noticed soon.
        let defaults = LockOptions { ttl: Duration::from_millis(900), ..LockOptions::default() };
        let redis = rdlock_async_std::redis::Client::open(server.url())?;
        let client = Client::connect(redis, ClientConfig { defaults, ..ClientConfig::default() }).await?;

        // An owner: its clones are the same owner, so a sub-task re-enters the outer hold.
        let owner = client.owner();
        let outer = owner.lock("ledger").await?;
        let sub = owner.clone();
        let inner = async_std::task::spawn(async move { sub.lock("ledger").await }).await?;
        println!("owner: fence {} held {} deep", inner.fence(), inner.depth());
        assert_eq!(inner.release().await?, None, "inner releases send nothing");
        assert!(outer.release().await?.is_some_and(|o| o.was_held()), "the last release frees the key");

        // A scoped lock: the work's value, released at the end.
        let fence = client.with_lock("ledger", |scope| async move { scope.fence() }).await?;
        println!("with_lock: done under fence {fence}");

        // The key deleted under the work (an operator, an expiry): the work is cancelled.
        let mut admin = server.connection()?;
        let result = client
            .with_lock("ledger", |scope| async move {
                let _: i64 = rdlock_async_std::redis::cmd("DEL").arg(scope.key()).query(&mut admin).expect("DEL");
                std::future::pending::<()>().await // never ends by itself
            })
            .await;
        assert!(matches!(result, Err(Error::Lost(_))));
        println!("with_lock: the lease was lost, the work was cancelled ({result:?})");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
