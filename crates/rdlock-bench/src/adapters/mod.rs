//! What the scenarios need from a lock implementation ([`Locker`]) and from the executor it runs
//! on ([`Exec`]), and the table of adapters ([`ADAPTERS`]). Adding an adapter is an entry in
//! that table, plus an `Exec` when it brings a new executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::BoxError;
use crate::scenario::{self, Rig, Scenario, Settings};

pub mod raw;
pub mod rdlock;

/// A spawned task's result.
pub type Join<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The executor a scenario runs on.
pub trait Exec: Clone + Send + Sync + 'static {
    /// Runs a future to completion on the calling thread.
    fn block_on<F: Future>(&self, future: F) -> F::Output;
    /// Runs a future in the background (a task, or a thread for blocking adapters).
    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T>;
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// Lease options of one acquisition.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub ttl: Duration,
    pub auto_renew: bool,
}

impl Default for Spec {
    /// The library default, and the TTL of peers.md: 10 s, renewed while held.
    fn default() -> Self {
        Self { ttl: Duration::from_secs(10), auto_renew: true }
    }
}

/// One lock client with its own connection(s). Shared by the tasks of one client.
pub trait Locker: Sized + Send + Sync + 'static {
    /// A held lock.
    type Guard: Send + 'static;
    /// Commands the client sends itself (lower case, as in `INFO commandstats`); every other
    /// command the server counts ran inside its scripts.
    const REQUESTS: &'static [&'static str];
    /// Whether it renews held leases by itself (S4).
    const RENEWS: bool;

    fn connect(url: &str) -> impl Future<Output = Result<Self, BoxError>> + Send;
    /// Waits until `key` is held.
    fn lock(&self, key: &str, spec: Spec) -> impl Future<Output = Result<Self::Guard, BoxError>> + Send;
    /// Releases; `true` if it was still held.
    fn release(&self, guard: Self::Guard) -> impl Future<Output = Result<bool, BoxError>> + Send;
    /// Whether the lease is still valid (as far as the client knows).
    fn is_valid(&self, guard: &Self::Guard) -> bool;
}

/// One adapter: a name for `--adapters`, and what sets up one scenario run of it (a fresh
/// server, its executor, its clients).
#[derive(Clone, Copy, Debug)]
pub struct Adapter {
    pub name: &'static str,
    pub rig: MakeRig,
}

/// Sets up one scenario run of an adapter.
pub type MakeRig = fn(Scenario, &Settings) -> Result<Box<dyn Rig>, BoxError>;

/// Every adapter, `raw` (the baseline) first.
pub const ADAPTERS: &[Adapter] = &[
    Adapter { name: "raw", rig: |s, set| scenario::rig::<raw::Raw, _>(TokioExec::new()?, s, set) },
    Adapter {
        name: "tokio",
        rig: |s, set| scenario::rig::<rdlock::Rd<rdlock_tokio::Tokio>, _>(TokioExec::new()?, s, set),
    },
    // ── TO ADD: rdlock-async-std and rdlock-blocking ─────────────────────────────────────
    // Their crates were stubs when this benchmark was written. Once they exist:
    //
    // async-std (under smol): in Cargo.toml add `rdlock-async-std.workspace = true` and
    // `smol.workspace = true`, write `SmolExec` below (block_on = `smol::block_on`, spawn =
    // `Box::pin(smol::spawn(f))`, sleep = `smol::Timer::after(d)`), and add
    //     Adapter { name: "async-std", rig: |s, set|
    //         scenario::rig::<rdlock::Rd<rdlock_async_std::AsyncStd>, _>(SmolExec, s, set) },
    // (`rdlock::Rd<R>` works for any `rdlock_driver::Runtime`.)
    //
    // blocking (threads): add `rdlock-blocking.workspace = true`, implement `Locker` for a
    // wrapper of its client whose async methods call the blocking ones (each client runs on
    // its own thread, so blocking there is fine), and run it on `ThreadExec` below:
    //     Adapter { name: "blocking", rig: |s, set|
    //         scenario::rig::<blocking::Blocking, _>(ThreadExec, s, set) },
];

/// Worker threads of the tokio runtimes: 0 for a current-thread runtime; by default
/// (`usize::MAX`) one per core, tokio's own default.
pub static TOKIO_WORKERS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A tokio runtime (multi-threaded unless `--tokio-workers 0`), made afresh per scenario run.
#[derive(Clone, Debug)]
pub struct TokioExec(Arc<tokio::runtime::Runtime>);

impl TokioExec {
    pub fn new() -> Result<Self, BoxError> {
        let rt = match TOKIO_WORKERS.load(Ordering::Relaxed) {
            0 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            usize::MAX => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
            n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
        };
        Ok(Self(Arc::new(rt)))
    }
}

impl Exec for TokioExec {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }

    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T> {
        let handle = self.0.spawn(future);
        Box::pin(async move {
            match handle.await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// One thread per task, for blocking adapters: `sleep` blocks the calling thread, which is
/// that task's own. Used by the blocking adapter once it exists (see [`ADAPTERS`]).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadExec;

impl Exec for ThreadExec {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    fn spawn<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Join<T> {
        let thread = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || futures_lite::future::block_on(future))
            .unwrap_or_else(|e| panic!("cannot start a thread: {e}"));
        // Joining blocks the awaiting thread: only the scenario's main thread awaits these.
        Box::pin(async move { thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) })
    }

    async fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
