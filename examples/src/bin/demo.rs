//! The rdlock demo: a throwaway Redis, four workers contending for one lock, fencing
//! tokens that only go up, FIFO hand-offs, and a lost lease detected by its holder.
//!
//! Run it with `scripts/dev demo` (or `cargo run -p rdlock-examples --bin demo`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdlock_tokio::{Client, LostReason};

const KEY: &str = "demo:orders";
const WORKERS: usize = 4;
const ROUNDS: usize = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    println!("throwaway redis-server on {} (stopped when the demo ends)\n", server.url());
    let start = Instant::now();
    let last_fence = Arc::new(AtomicU64::new(0));

    println!("{WORKERS} workers, {ROUNDS} rounds each, one lock ({KEY}):");
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = Client::open(&server.url()).await?;
        let last_fence = last_fence.clone();
        workers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let asked = Instant::now();
                let guard = client.lock(KEY).await?;
                let waited = asked.elapsed();
                // Downstream storage would refuse any fence lower than the last it saw.
                let previous = last_fence.swap(guard.fence(), Ordering::SeqCst);
                assert!(guard.fence() > previous, "fences only go up");
                let step = match previous {
                    0 => "first: seeded from the server clock".to_owned(),
                    p => format!("+{}", guard.fence() - p),
                };
                println!(
                    "  {:>7.1} ms  worker {w} holds the lock (round {round}), fence {} ({step}), waited {:.1} ms",
                    start.elapsed().as_secs_f64() * 1e3,
                    guard.fence(),
                    waited.as_secs_f64() * 1e3,
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                guard.release().await?;
            }
            Ok::<_, rdlock_tokio::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    println!("  every release handed the lock to the longest waiter: no barging, no polling storm\n");

    println!("a lost lease, detected by its holder:");
    let client = Client::open(&server.url()).await?;
    let guard = client.lock_builder(KEY).ttl(Duration::from_millis(600)).lock().await?;
    println!("  holder has fence {}, valid for {:?}", guard.fence(), guard.valid_until() - Instant::now());
    // Someone deletes the key behind the holder's back (an operator, a failover...).
    let mut admin = server.connection()?;
    redis::cmd("DEL").arg(KEY).query::<()>(&mut admin)?;
    let detected = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost()).await?;
    assert_eq!(reason, LostReason::NotOwner);
    println!(
        "  the next renewal found another owner: lost() fired after {:.0} ms ({reason:?}); is_valid() = {}",
        detected.elapsed().as_secs_f64() * 1e3,
        guard.is_valid()
    );
    println!("  release() reports what is known of it: {:?}", guard.release().await?);

    let left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut admin)?;
    println!("\nkeys left: {left:?} (only the fence counter, which carries a TTL)");
    Ok(())
}
