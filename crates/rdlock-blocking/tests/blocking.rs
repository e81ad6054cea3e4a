//! Quick checks of the blocking adapter against a real server (the shared integration suite
//! runs the full case set).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdlock_blocking::{Client, ClientConfig, Confirm, Error, Guard, LostReason};
use rdlock_testkit::RedisServer;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn keys(server: &RedisServer) -> Result<Vec<String>> {
    let mut admin = server.connection()?;
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut admin)?;
    keys.sort();
    Ok(keys)
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Client>();
    check::<Guard>();
}

#[test]
fn lock_busy_release_and_drop() -> Result {
    let server = RedisServer::start()?;
    let a = Client::open(&server.url())?;
    let b = Client::open(&server.url())?;

    let g = a.lock("k")?;
    assert_eq!(g.key(), "k");
    assert!(g.is_valid() && g.valid_until() > Instant::now());
    assert!(b.try_lock("k")?.is_none(), "busy while held");
    assert!(matches!(b.lock_timeout("k", Duration::from_millis(150)), Err(Error::TimedOut)));
    // The timed-out wait leaves the queue in the background; a release before that would
    // hand the lock to it (and its clean-up would free it again a round trip later).
    let gone = Instant::now() + Duration::from_secs(5);
    while keys(&server)?.iter().any(|k| k.contains("#rdl:q")) {
        assert!(Instant::now() < gone, "the timed-out wait never left the queue");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(g.release()?.was_held(), "still ours");

    let g2 = b.try_lock("k")?.ok_or("free after release")?;
    assert!(g2.fence() > 0);
    drop(g2); // releases on this thread: the next attempt must find the lock free at once
    let g3 = a.try_lock("k")?.ok_or("free after drop")?;
    drop(g3);
    assert_eq!(a.tracked_locks(), 0);
    assert!(matches!(a.lock(""), Err(Error::InvalidInput(_))));
    let left = keys(&server)?;
    assert!(left.len() == 1 && left[0].contains("fence"), "only the fence counter is left: {left:?}");
    Ok(())
}

#[test]
fn hand_off_between_threads_with_increasing_fences() -> Result {
    let server = RedisServer::start()?;
    let holder = Client::open(&server.url())?;
    let last_fence = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let client = Client::open(&server.url()).map_err(|e| e.to_string());
            let (last_fence, inside) = (last_fence.clone(), inside.clone());
            std::thread::spawn(move || -> std::result::Result<(), String> {
                let client = client?;
                for _ in 0..5 {
                    let g = client.lock("shared").map_err(|e| e.to_string())?;
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    assert!(g.fence() > last_fence.swap(g.fence(), Ordering::SeqCst), "fences go up");
                    std::thread::sleep(Duration::from_millis(2));
                    inside.store(false, Ordering::SeqCst);
                    assert!(g.release().map_err(|e| e.to_string())?.was_held());
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "worker panicked")??;
    }
    // A waiter blocked behind a holder gets the lock handed over on release, not by polling
    // (its poll cap is far longer than the bound below).
    let g = holder.lock("shared")?;
    let waiter = {
        let client = Client::open(&server.url())?;
        let builder = move || client.lock_builder("shared").poll_cap(Duration::from_secs(30)).lock();
        std::thread::spawn(move || builder().map(|g| (Instant::now(), g.fence())))
    };
    std::thread::sleep(Duration::from_millis(100));
    let released = Instant::now();
    let fence = g.fence();
    assert!(g.release()?.was_held());
    let (acquired, next) = waiter.join().map_err(|_| "waiter panicked")??;
    assert!(next > fence);
    assert!(acquired - released < Duration::from_secs(1), "hand-off took {:?}", acquired - released);
    Ok(())
}

#[test]
fn renewal_extend_and_lost_lease() -> Result {
    let server = RedisServer::start()?;
    let client = Client::open(&server.url())?;
    let g = client.lock_builder("lease").ttl(Duration::from_millis(300)).lock()?;
    let first = g.valid_until();
    std::thread::sleep(Duration::from_millis(400));
    assert!(g.is_valid(), "auto-renewed past its first ttl");
    assert!(g.valid_until() > first);
    assert!(g.extend()? > first);
    assert_eq!(g.wait_lost(Duration::from_millis(10)), None);

    redis::cmd("DEL").arg("lease").exec(&mut server.connection()?)?;
    assert_eq!(g.wait_lost(Duration::from_secs(2)), Some(LostReason::NotOwner));
    assert_eq!(g.lost(), LostReason::NotOwner);
    assert!(!g.is_valid());
    assert!(matches!(g.extend(), Err(Error::Lost(LostReason::NotOwner))));
    assert!(!g.release()?.was_held(), "no longer ours");

    let g = client.lock_builder("short").ttl(Duration::from_millis(100)).auto_renew(false).lock()?;
    assert_eq!(g.wait_lost(Duration::from_secs(1)), Some(LostReason::Expired));
    Ok(())
}

#[test]
fn confirm_without_replicas_falls_short() -> Result {
    let server = RedisServer::start()?;
    let client = Client::connect(server.client(), ClientConfig::default())?;
    let confirm = Confirm::AtLeast { replicas: 1, timeout: Duration::from_millis(50) };
    match client.lock_builder("c").confirm(confirm).timeout(Duration::from_secs(1)).lock() {
        Err(Error::ReplicationShortfall { acked: 0, wanted: 1 }) => {}
        other => return Err(format!("expected a shortfall, got {other:?}").into()),
    }
    // The lock was given back.
    assert!(client.try_lock("c")?.is_some());
    Ok(())
}

#[test]
fn threads_end_with_the_last_handle() -> Result {
    let server = RedisServer::start()?;
    let client = Client::open(&server.url())?;
    let waiter = Client::open(&server.url())?;
    let g = client.lock("t")?;
    // Make the pub/sub thread connect: a waiter subscribes.
    let t = std::thread::spawn(move || waiter.lock_timeout("t", Duration::from_millis(200)).map(drop));
    assert!(matches!(t.join().map_err(|_| "panicked")?, Err(Error::TimedOut)));
    drop(client);
    assert!(g.is_valid(), "a guard keeps its client alive");
    drop(g);
    let mut admin = server.connection()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin)?;
        if list.lines().count() == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("connections left open:\n{list}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn waiter_survives_a_killed_pubsub_connection() -> Result {
    let server = RedisServer::start()?;
    let holder = Client::open(&server.url())?;
    let waiter = Client::open(&server.url())?;
    let g = holder.lock("p")?;
    // A long poll cap: only the hand-off (or the re-check after re-subscribing) can wake it.
    let t = std::thread::spawn(move || {
        waiter
            .lock_builder("p")
            .poll_cap(Duration::from_secs(30))
            .timeout(Duration::from_secs(5))
            .lock()
            .map(|g| g.fence())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.client_kill_type("pubsub")?, 1);
    let fence = g.fence();
    assert!(g.release()?.was_held()); // the hand-off message is lost with the connection
    let started = Instant::now();
    let next = t.join().map_err(|_| "waiter panicked")??;
    assert!(next > fence);
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
    Ok(())
}

#[test]
fn a_stalled_link_times_out_and_recovers() -> Result {
    let server = RedisServer::start()?;
    let proxy = rdlock_testkit::Proxy::start(server.addr())?;
    let config = ClientConfig { response_timeout: Duration::from_millis(200), ..ClientConfig::default() };
    let client = Client::connect(redis::Client::open(proxy.url())?, config)?;
    drop(client.lock("s")?);
    proxy.pause();
    let started = Instant::now();
    // Short-lived: the stalled attempt may still reach the server when the link resumes (its
    // outcome is unknown), and then only its TTL frees the lock.
    let stalled = client.lock_builder("s").ttl(Duration::from_millis(300)).timeout(Duration::from_millis(500)).lock();
    assert!(stalled.is_err());
    assert!(started.elapsed() < Duration::from_secs(2), "gave up after {:?}", started.elapsed());
    proxy.resume();
    // Late replies of the stalled connections must not answer the new requests.
    let g = client.lock_timeout("s", Duration::from_secs(2))?;
    assert!(g.release()?.was_held());
    Ok(())
}

#[test]
fn many_threads_share_one_client() -> Result {
    let server = RedisServer::start()?;
    let client = Client::open(&server.url())?;
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (client, counter) = (client.clone(), counter.clone());
            std::thread::spawn(move || -> std::result::Result<(), String> {
                for _ in 0..10 {
                    let g = client.lock(&format!("m{}", i % 4)).map_err(|e| e.to_string())?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    drop(g);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "panicked")??;
    }
    assert_eq!(counter.load(Ordering::Relaxed), 160);
    assert_eq!(client.tracked_locks(), 0);
    Ok(())
}

/// Regression: the pub/sub thread read messages as responses, and after each idle read
/// timeout the connection skipped the next reply — a hand-off message. Waiters then fell back
/// to polling (S2 at 0.1× raw). Here polls are 30 s apart and the locks live 30 s: 40
/// contended hand-offs between waiters that sat idle first can only be quick if no message is
/// lost.
#[test]
fn hand_off_messages_are_not_lost_after_idle_reads() -> Result {
    let server = RedisServer::start()?;
    let clients: Vec<Client> = (0..4).map(|_| Client::open(&server.url())).collect::<std::result::Result<_, _>>()?;
    let t = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            std::thread::spawn(move || -> std::result::Result<(), String> {
                // Let the pub/sub threads sit through many idle reads first.
                std::thread::sleep(Duration::from_millis(200));
                for _ in 0..10 {
                    let g = client
                        .lock_builder("contended")
                        .ttl(Duration::from_secs(30))
                        .poll_cap(Duration::from_secs(30))
                        .timeout(Duration::from_secs(20))
                        .lock()
                        .map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_millis(2));
                    g.release().map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_millis(60));
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "worker panicked")??;
    }
    assert!(t.elapsed() < Duration::from_secs(8), "40 hand-offs took {:?}", t.elapsed());
    Ok(())
}
