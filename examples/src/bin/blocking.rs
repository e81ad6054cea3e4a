//! rdlock on plain threads: a few workers contend for one lock on a throwaway Redis server.
//!
//! `cargo run -p rdlock-examples --bin blocking`

use std::sync::Arc;
use std::time::Duration;

use rdlock_blocking::Client;
use rdlock_examples::Board;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    println!("4 workers, 3 rounds each, one lock, on a throwaway server at {}", server.url());
    // One client for every thread: its pooled connections keep them from queueing.
    let client = Client::open(&server.url())?;
    let board = Arc::new(Board::default());
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (client, board) = (client.clone(), board.clone());
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let guard = client.lock("example")?;
                    board.acquired(worker, guard.fence());
                    std::thread::sleep(Duration::from_millis(10)); // the protected work
                    board.releasing(worker);
                    guard.release()?;
                }
                Ok::<_, rdlock_blocking::Error>(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a worker panicked")??;
    }
    Ok(())
}
