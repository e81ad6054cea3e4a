//! Quick checks of the adapter against a real server, under async-std's executor and under
//! smol's (the shared integration suite runs the full case set).

use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rdlock_async_std::{Client, Error, LostReason};
use rdlock_testkit::RedisServer;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn sleep(d: Duration) {
    async_io::Timer::after(d).await;
}

/// Lock, busy, release, a hand-off to a waiting task, drop-releases, and a lost lease.
async fn basics(url: String, spawn: fn(spawned::Boxed) -> spawned::Handle) -> Result {
    let a = Client::open(&url).await?;
    let b = Client::open(&url).await?;
    let g = a.lock("k").await?;
    assert!(g.is_valid());
    assert!(b.try_lock("k").await?.is_none(), "busy while held");
    assert!(matches!(b.lock_timeout("k", Duration::from_millis(100)).await, Err(Error::TimedOut)));

    // A waiting task gets the lock handed over when it is released.
    let fence = g.fence();
    let waiter = spawn(Box::pin(async move {
        // Its poll cap is far longer than the bound below: only the hand-off can be this quick.
        let g = b.lock_builder("k").poll_cap(Duration::from_secs(30)).lock().await.map_err(|e| e.to_string())?;
        Ok((Instant::now(), g.fence()))
    }));
    sleep(Duration::from_millis(50)).await;
    let released = Instant::now();
    assert!(g.release().await?.was_held());
    let (acquired, next) = waiter.await?;
    assert!(next > fence, "fences go up");
    assert!(acquired - released < Duration::from_secs(1), "hand-off took {:?}", acquired - released);

    // Dropping a guard releases in the background.
    let g = a.try_lock("d").await?.ok_or("free")?;
    drop(g);
    let deadline = Instant::now() + Duration::from_secs(1);
    while a.tracked_locks() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    assert!(a.try_lock("d").await?.is_some(), "released by the drop");

    // A lost lease fires the guard's signal.
    let g = a.lock_builder("lease").ttl(Duration::from_millis(300)).lock().await?;
    redis::cmd("DEL").arg("lease").exec(&mut redis::Client::open(url.as_str())?.get_connection()?)?;
    let lost = async { Some(g.lost().await) }.or(async {
        sleep(Duration::from_secs(2)).await;
        None
    });
    assert_eq!(lost.await, Some(LostReason::NotOwner));
    assert!(!g.release().await?.was_held(), "no longer ours");
    Ok(())
}

/// A spawned task's result, whatever the executor.
mod spawned {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Instant;

    pub type Out = Result<(Instant, u64), String>;
    pub type Boxed = Pin<Box<dyn Future<Output = Out> + Send>>;
    pub type Handle = Pin<Box<dyn Future<Output = Out> + Send>>;
}

#[test]
fn under_async_std() -> Result {
    let server = RedisServer::start()?;
    async_std::task::block_on(basics(server.url(), |f| Box::pin(async_std::task::spawn(f))))
}

#[test]
fn under_smol() -> Result {
    let server = RedisServer::start()?;
    smol::block_on(basics(server.url(), |f| Box::pin(smol::spawn(f))))
}
