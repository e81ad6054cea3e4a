//! rdlock on tokio: a few workers contend for one lock on a throwaway Redis server.
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
    Ok(())
}
