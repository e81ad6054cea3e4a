//! rdlock's metrics in the Prometheus text format: a recorder is installed, a few workers on
//! two clients contend for one lock on a throwaway server, and what the library counted is
//! printed as a scrape would see it (docs/observability.md lists every metric).
//!
//! `cargo run -p rdlock-examples --bin metrics`

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use rdlock_tokio::{Client, ClientConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A service would serve `handle.render()` on its metrics endpoint.
    let handle = PrometheusBuilder::new().install_recorder()?;
    rdlock_tokio::describe_metrics();
    let server = rdlock_testkit::RedisServer::start()?;
    let mut workers = Vec::new();
    for name in ["billing", "reports"] {
        let config = ClientConfig { metrics_label: Some(name.to_owned()), ..ClientConfig::default() };
        let client = Client::connect(redis::Client::open(server.url())?, config).await?;
        for _ in 0..2 {
            let client = client.clone();
            workers.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let guard = client.lock("nightly-export").await?;
                    tokio::time::sleep(Duration::from_millis(5)).await; // the protected work
                    guard.release().await?;
                }
                Ok::<_, rdlock_tokio::Error>(())
            }));
        }
    }
    for w in workers {
        w.await??;
    }
    print!("{}", handle.render());
    Ok(())
}
