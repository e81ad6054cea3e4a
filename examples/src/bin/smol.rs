//! rdlock on smol (with the `rdlock-async-std` adapter, which needs only async-io): a few
//! workers contend for one lock on a throwaway Redis server.
//!
//! `cargo run -p rdlock-examples --bin smol`

use std::sync::Arc;
use std::time::Duration;

use rdlock_async_std::Client;
use rdlock_examples::Board;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    println!("4 workers, 3 rounds each, one lock, on a throwaway server at {}", server.url());
    smol::block_on(async {
        let board = Arc::new(Board::default());
        let mut workers = Vec::new();
        for worker in 0..4 {
            let client = Client::open(&server.url()).await?;
            let board = board.clone();
            workers.push(smol::spawn(async move {
                for _ in 0..3 {
                    let guard = client.lock("example").await?;
                    board.acquired(worker, guard.fence());
                    smol::Timer::after(Duration::from_millis(10)).await; // the protected work
                    board.releasing(worker);
                    guard.release().await?;
                }
                Ok::<_, rdlock_async_std::Error>(())
            }));
        }
        for w in workers {
            w.await?;
        }

        let client = Client::open(&server.url()).await?;
        // A semaphore: at most 2 holders at once; a read-write lock: readers together; a mutex.
        let exports = client.semaphore("exports", 2);
        let (a, b) = (exports.acquire().await?, exports.acquire().await?);
        assert!(exports.try_acquire().await?.is_none(), "both permits are taken");
        println!("semaphore: permits with fences {} and {}, a third must wait", a.fence(), b.fence());
        drop((a, b));
        let doc = client.rwlock("doc");
        let (r1, r2) = (doc.read().await?, doc.read().await?);
        assert!(doc.try_write().await?.is_none(), "readers hold it");
        println!("rwlock: two readers at once; the writer waits");
        drop((r1, r2));
        let w = doc.write_timeout(Duration::from_secs(1)).await?;
        println!("rwlock: the writer holds it alone, fence {}", w.fence());
        w.release().await?;
        // A mutex: bytes that live with the lock; each holder reads what the last one wrote.
        let log = client.mutex_bytes("log");
        let mut entry = log.lock().await?;
        entry.extend_from_slice(b"seen");
        entry.release().await?; // written back, then released
        let entry = log.lock().await?;
        let text = String::from_utf8_lossy(&entry).into_owned();
        println!("mutex: {text:?}, written under fence {:?}", entry.written_by());
        entry.discard().await?;
        Ok(())
    })
}
