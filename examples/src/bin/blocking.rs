//! rdlock on plain threads: a few workers contend for one lock on a throwaway Redis server,
//! then share a semaphore's permits, a read-write lock and a mutex's value.
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

    // A semaphore: at most 2 holders at once; the third waits for a permit, in turn.
    let exports = client.semaphore("exports", 2);
    let (a, b) = (exports.acquire()?, exports.acquire()?);
    assert!(exports.try_acquire()?.is_none(), "both permits are taken");
    println!("semaphore: permits with fences {} and {}, a third must wait", a.fence(), b.fence());
    a.release()?;
    let c = exports.acquire_timeout(Duration::from_secs(1))?;
    println!("semaphore: a freed permit went on, fence {}", c.fence());
    drop((b, c));
    // A read-write lock: readers together, a writer alone.
    let doc = client.rwlock("doc");
    let (r1, r2) = (doc.read()?, doc.read()?);
    assert!(doc.try_write()?.is_none(), "readers hold it");
    println!("rwlock: two readers at once (fences {}, {})", r1.fence(), r2.fence());
    drop((r1, r2));
    let w = doc.write_timeout(Duration::from_secs(1))?;
    println!("rwlock: the writer holds it alone, fence {}", w.fence());
    w.release()?;
    // A mutex: its value lives beside the lock; each holder reads the last one written.
    let notes = client.mutex::<Vec<String>>("notes");
    let mut n = notes.lock()?;
    let note = format!("written under fence {}", n.fence());
    n.push(note);
    n.release()?; // written back, then released
    let n = notes.lock()?;
    println!("mutex: {:?}, written by fence {:?}", *n, n.written_by());
    n.release()?;
    Ok(())
}
