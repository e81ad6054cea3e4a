//! rdlock on tokio: a few workers contend for one lock on a throwaway Redis server, then share
//! a semaphore's permits and a read-write lock.
//!
//! `cargo run -p rdlock-examples --bin tokio`

use std::sync::Arc;
use std::time::Duration;

use rdlock_examples::Board;
use rdlock_tokio::Client;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    println!("4 workers, 3 rounds each, one lock, on a throwaway server at {}", server.url());
    let board = Arc::new(Board::default());
    let mut workers = Vec::new();
    for worker in 0..4 {
        let client = Client::open(&server.url()).await?;
        let board = board.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..3 {
                let guard = client.lock("example").await?;
                board.acquired(worker, guard.fence());
                tokio::time::sleep(Duration::from_millis(10)).await; // the protected work
                board.releasing(worker);
                guard.release().await?;
            }
            Ok::<_, rdlock_tokio::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }

    let client = Client::open(&server.url()).await?;
    // A semaphore: at most 2 holders at once; the third waits for a permit, in turn.
    let exports = client.semaphore("exports", 2);
    let (a, b) = (exports.acquire().await?, exports.acquire().await?);
    assert!(exports.try_acquire().await?.is_none(), "both permits are taken");
    println!("semaphore: permits with fences {} and {}, a third must wait", a.fence(), b.fence());
    a.release().await?;
    let c = exports.acquire_timeout(Duration::from_secs(1)).await?;
    println!("semaphore: a freed permit went on, fence {}", c.fence());
    drop((b, c));
    // A read-write lock: readers together, a writer alone.
    let doc = client.rwlock("doc");
    let (r1, r2) = (doc.read().await?, doc.read().await?);
    assert!(doc.try_write().await?.is_none(), "readers hold it");
    println!("rwlock: two readers at once (fences {}, {})", r1.fence(), r2.fence());
    drop((r1, r2));
    let w = doc.write_timeout(Duration::from_secs(1)).await?;
    println!("rwlock: the writer holds it alone, fence {}", w.fence());
    w.release().await?;
    Ok(())
}
