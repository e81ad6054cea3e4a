#![cfg(feature = "tokio")]
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let server = rdlock_testkit::RedisServer::start().unwrap();
    let a = rdlock_tokio::Client::open(&server.url()).await.unwrap();
    let b = rdlock_tokio::Client::open(&server.url()).await.unwrap();
    let g = a.lock("k").await.unwrap();
    println!("fence {}", g.fence());
    assert!(b.try_lock("k").await.unwrap().is_none());
    let t0 = std::time::Instant::now();
    let h = tokio::spawn(async move {
        let g2 = b.lock("k").await.unwrap();
        (g2.fence(), std::time::Instant::now(), g2)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rel = std::time::Instant::now();
    assert!(g.release().await.unwrap());
    let (f2, at, g2) = h.await.unwrap();
    println!("fence2 {f2} handoff gap {:?} total {:?}", at - rel, at - t0);
    assert!(g2.release().await.unwrap());
    let mut c = server.connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    println!("keys {keys:?}");
}
