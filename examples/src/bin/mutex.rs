//! A mutex: data that lives with the lock. Four workers on two clients update one record
//! kept beside the lock, each reading what the last holder wrote; then a mid-hold store, a
//! discarded change, a dropped guard, raw bytes, and a codec of one's own.
//!
//! `cargo run -p rdlock-examples --bin mutex`

use std::time::Duration;

use rdlock_tokio::{Client, Codec, Error};
use serde::{Deserialize, Serialize};

/// The record the mutex protects; stored as JSON, readable with any Redis client.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    count: u64,
    last_worker: Option<usize>,
}

/// A counter stored as 8 little-endian bytes instead of JSON.
struct LittleEndian;

#[derive(Debug)]
struct NotEightBytes;

impl std::fmt::Display for NotEightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not 8 bytes")
    }
}

impl std::error::Error for NotEightBytes {}

impl Codec<u64> for LittleEndian {
    type Error = NotEightBytes;

    fn encode(&self, value: &u64) -> Result<Vec<u8>, NotEightBytes> {
        Ok(value.to_le_bytes().to_vec())
    }

    fn decode(&self, bytes: &[u8]) -> Result<u64, NotEightBytes> {
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| NotEightBytes)?))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = rdlock_testkit::RedisServer::start()?;
    println!("a mutex on a throwaway server at {}", server.url());
    let clients = [Client::open(&server.url()).await?, Client::open(&server.url()).await?];

    let mut workers = Vec::new();
    for worker in 0..4 {
        let tally = clients[worker % 2].mutex::<Tally>("tally");
        workers.push(tokio::spawn(async move {
            for _ in 0..5 {
                let mut t = tally.lock_timeout(Duration::from_secs(10)).await?;
                t.count += 1;
                t.last_worker = Some(worker);
                // Written back (with this holder's fence) before the lock goes on.
                t.release().await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let tally = clients[0].mutex::<Tally>("tally");
    let t = tally.lock().await?;
    println!("4 workers x 5 increments: {:?}, last written by fence {:?}", *t, t.written_by());
    assert_eq!(t.count, 20);
    t.release().await?; // not modified: a plain release, nothing written
    let mut admin = server.connection()?;
    let json: String = redis::cmd("HGET").arg(rdlock_core::value_key("tally")).arg("v").query(&mut admin)?;
    println!("stored beside the lock, as JSON: {json}");

    // A store mid-hold keeps the lock; a discarded or dropped change is never written.
    let mut t = tally.lock().await?;
    t.count += 100;
    t.store().await?;
    t.count += 1000;
    t.discard().await?;
    let mut t = tally.lock().await?;
    assert_eq!(t.count, 120, "stored, then a change discarded");
    t.count = 0;
    drop(t); // released in the background, the change not written
    let t = tally.lock_timeout(Duration::from_secs(5)).await?;
    println!("after a store, a discard and a drop: {:?}", *t);
    t.release().await?;

    // Raw bytes, with a limit and a TTL for the value.
    let mut blob =
        clients[1].mutex_bytes("blob").builder().max_value(16).value_ttl(Duration::from_secs(60)).lock().await?;
    blob.extend_from_slice(b"0123456789abcdefXYZ");
    match blob.store().await {
        Err(Error::InvalidInput(e)) => println!("refused before sending: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    blob.truncate(16);
    blob.release().await?;

    // A codec of one's own.
    let compact = clients[0].mutex_with("compact", LittleEndian);
    let mut n = compact.lock().await?;
    *n += 7;
    n.release().await?;
    println!("compact counter: {}", *compact.lock().await?);
    Ok(())
}
