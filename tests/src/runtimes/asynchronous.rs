//! The harness for every async adapter, once: generic over the driver's runtime, plus a way
//! to run a future to completion on it.

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rdlock_core::{Acquire, LockOptions, LostReason, ReleaseOutcome, Resource};
use rdlock_driver::{
    Client, ClientConfig, Error, ForceReleaseReply, Guard, Hold, Inspection, LossSignal, MutexGuard, Owner, Runtime,
    Scope, TryLock,
};

use crate::harness::{Harness, MutexSpec, Task, Value, ValueCodec};

/// An executor the tests can enter, and the driver runtime whose clients run on it.
pub trait Executor: Send + Sync + 'static {
    /// The runtime's name, for messages.
    const NAME: &'static str;
    /// The adapter's runtime.
    type Runtime: Runtime;
    /// Runs `future` to completion on this executor, from a thread outside it.
    fn block_on<F: Future>(future: F) -> F::Output;
}

/// The harness of the async adapter whose runtime `E` names, on executor `E`.
#[derive(Debug)]
pub struct Async<E>(PhantomData<fn() -> E>);

#[async_trait::async_trait]
impl<E: Executor> Harness for Async<E> {
    const NAME: &'static str = E::NAME;
    type Client = Client<E::Runtime>;
    type Guard = Guard<E::Runtime>;
    type Owner = Owner<E::Runtime>;
    type Hold = Hold<E::Runtime>;
    type Scope = Scope<E::Runtime>;
    const SCOPE_CANCELS: bool = true;
    type MutexGuard<T: Value, C: ValueCodec<T>> = MutexGuard<T, C, E::Runtime>;

    fn run<F, Fut>(case: F, budget: Duration)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        E::block_on(async move {
            let deadline = Instant::now() + budget;
            let finished = async {
                case().await;
                true
            }
            .or(async {
                E::Runtime::sleep_until(deadline).await;
                false
            })
            .await;
            // Dropping the unfinished case stops its servers.
            assert!(finished, "[{}] the case did not finish within {budget:?}", E::NAME);
        });
    }

    async fn connect(url: &str) -> Result<Self::Client, Error> {
        Client::open(url).await
    }

    async fn connect_with(url: &str, config: ClientConfig) -> Result<Self::Client, Error> {
        Client::connect(redis::Client::open(url)?, config).await
    }

    async fn connect_cluster(url: &str, config: ClientConfig) -> Result<Self::Client, Error> {
        Client::connect_cluster(rdlock_driver::ClusterConfig::from_url(url)?, config).await
    }

    async fn connect_sentinel(url: &str, config: ClientConfig) -> Result<Self::Client, Error> {
        Client::connect_sentinel(rdlock_driver::SentinelConfig::from_url(url)?, config).await
    }

    fn sentinel_primary(client: &Self::Client) -> Option<String> {
        client.sentinel_primary()
    }

    async fn lock(client: &Self::Client, key: &str) -> Result<Self::Guard, Error> {
        client.lock(key).await
    }

    async fn lock_timeout(client: &Self::Client, key: &str, timeout: Duration) -> Result<Self::Guard, Error> {
        client.lock_timeout(key, timeout).await
    }

    async fn try_lock(client: &Self::Client, key: &str) -> Result<Option<Self::Guard>, Error> {
        client.try_lock(key).await
    }

    async fn try_lock_report(client: &Self::Client, key: &str) -> Result<TryLock<Self::Guard>, Error> {
        client.try_lock_report(key).await
    }

    async fn acquire(
        client: &Self::Client,
        key: &str,
        options: LockOptions,
        how: Acquire,
    ) -> Result<Option<Self::Guard>, Error> {
        client.acquire(key, options, how).await
    }

    async fn acquire_resource(
        client: &Self::Client,
        key: &str,
        resource: Resource,
        options: LockOptions,
        how: Acquire,
    ) -> Result<Option<Self::Guard>, Error> {
        client.acquire_resource(key, resource, options, how).await
    }

    async fn mutex<T: Value, C: ValueCodec<T>>(
        client: &Self::Client,
        key: &str,
        codec: C,
        spec: MutexSpec,
    ) -> Result<Option<Self::MutexGuard<T, C>>, Error> {
        let mutex = client.mutex_with(key, codec);
        let mut b = mutex
            .builder()
            .ttl(spec.options.ttl)
            .auto_renew(spec.options.auto_renew)
            .confirm(spec.options.confirm)
            .poll_cap(spec.options.poll_cap)
            .max_value(spec.max_value);
        if let Some(ttl) = spec.value_ttl {
            b = b.value_ttl(ttl);
        }
        match spec.how {
            Acquire::Try => b.try_lock().await,
            Acquire::Wait { deadline: Some(d) } => b.deadline(d).lock().await.map(Some),
            Acquire::Wait { deadline: None } => b.lock().await.map(Some),
        }
    }

    async fn store<T: Value, C: ValueCodec<T>>(guard: &mut Self::MutexGuard<T, C>) -> Result<(), Error> {
        guard.store().await
    }

    async fn release_mutex<T: Value, C: ValueCodec<T>>(guard: Self::MutexGuard<T, C>) -> Result<ReleaseOutcome, Error> {
        guard.release().await
    }

    async fn discard<T: Value, C: ValueCodec<T>>(guard: Self::MutexGuard<T, C>) -> Result<ReleaseOutcome, Error> {
        guard.discard().await
    }

    fn mutex_fence<T: Value, C: ValueCodec<T>>(guard: &Self::MutexGuard<T, C>) -> u64 {
        guard.fence()
    }

    fn written_by<T: Value, C: ValueCodec<T>>(guard: &Self::MutexGuard<T, C>) -> Option<u64> {
        guard.written_by()
    }

    fn tracked(client: &Self::Client) -> usize {
        client.tracked_locks()
    }

    fn token(guard: &Self::Guard) -> String {
        guard.token().to_owned()
    }

    fn fence(guard: &Self::Guard) -> u64 {
        guard.fence()
    }

    fn valid_until(guard: &Self::Guard) -> Instant {
        guard.valid_until()
    }

    fn is_valid(guard: &Self::Guard) -> bool {
        guard.is_valid()
    }

    async fn inspect(client: &Self::Client, key: &str) -> Result<Inspection, Error> {
        client.inspect(key).await
    }

    async fn force_release(client: &Self::Client, key: &str) -> Result<ForceReleaseReply, Error> {
        client.force_release(key).await
    }

    async fn downgrade(guard: &Self::Guard) -> Result<(), Error> {
        guard.downgrade().await
    }

    async fn extend(guard: &Self::Guard) -> Result<Instant, Error> {
        guard.extend().await
    }

    async fn release(guard: Self::Guard) -> Result<ReleaseOutcome, Error> {
        guard.release().await
    }

    async fn lost_within(guard: &Self::Guard, limit: Duration) -> Option<LostReason> {
        let deadline = Instant::now() + limit;
        async { Some(guard.lost().await) }
            .or(async {
                E::Runtime::sleep_until(deadline).await;
                None
            })
            .await
    }

    fn watch_loss(guard: &Self::Guard, limit: Duration) -> Task<Option<LostReason>> {
        let signal = guard.loss_signal();
        let deadline = Instant::now() + limit;
        Self::spawn(async move {
            signal
                .lost()
                .or(async {
                    E::Runtime::sleep_until(deadline).await;
                    None
                })
                .await
        })
    }

    async fn churn_lost(guard: &Self::Guard, n: usize) -> Option<(usize, usize)> {
        let waker = || Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..n {
            let mut lost = std::pin::pin!(guard.lost());
            let _ = lost.as_mut().poll(&mut Context::from_waker(&waker()));
        }
        let fresh = guard.lost_waker_count();
        let mut lost = std::pin::pin!(guard.lost());
        for _ in 0..n {
            let _ = lost.as_mut().poll(&mut Context::from_waker(&waker()));
        }
        let _ = lost.as_mut().poll(&mut cx);
        Some((fresh, guard.lost_waker_count()))
    }

    async fn self_wakes(client: &Self::Client, key: &str) -> Option<usize> {
        let count = Arc::new(OwnWakes::default());
        let guard = OwnWakes::watch(&count, client.lock(key)).await.expect("lock");
        let outcome = OwnWakes::watch(&count, guard.release()).await.expect("release");
        assert!(outcome.was_held());
        Some(count.during.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn late_wait(client: &Self::Client, key: &str, options: LockOptions) -> Option<Task<Result<Self::Guard, Error>>> {
        let (client, key) = (client.clone(), key.to_owned());
        Some(Box::pin(async move {
            let guard = client.acquire(&key, options, Acquire::Wait { deadline: None }).await?;
            Ok(guard.expect("a wait without a deadline answers with a guard"))
        }))
    }

    fn owner(client: &Self::Client) -> Self::Owner {
        client.owner()
    }

    fn owner_entries(owner: &Self::Owner) -> usize {
        owner.entries()
    }

    async fn owner_lock(owner: &Self::Owner, key: &str) -> Result<Self::Hold, Error> {
        owner.lock(key).await
    }

    async fn owner_lock_timeout(owner: &Self::Owner, key: &str, timeout: Duration) -> Result<Self::Hold, Error> {
        owner.lock_timeout(key, timeout).await
    }

    async fn owner_try_lock(owner: &Self::Owner, key: &str) -> Result<Option<Self::Hold>, Error> {
        owner.try_lock(key).await
    }

    async fn owner_write(owner: &Self::Owner, key: &str) -> Result<Self::Hold, Error> {
        owner.write(key).await
    }

    fn hold_fence(hold: &Self::Hold) -> u64 {
        hold.fence()
    }

    fn hold_token(hold: &Self::Hold) -> String {
        hold.token().to_owned()
    }

    fn hold_depth(hold: &Self::Hold) -> usize {
        hold.depth()
    }

    fn hold_signal(hold: &Self::Hold) -> LossSignal {
        hold.loss_signal()
    }

    async fn hold_release(hold: Self::Hold) -> Result<Option<ReleaseOutcome>, Error> {
        hold.release().await
    }

    async fn with_lock<T, F>(client: &Self::Client, key: &str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self::Scope) -> Task<T> + Send + 'static,
    {
        client.with_lock(key, work).await
    }

    async fn with_lock_ttl<T, F>(client: &Self::Client, key: &str, ttl: Duration, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self::Scope) -> Task<T> + Send + 'static,
    {
        client.lock_builder(key).ttl(ttl).with_lock(work).await
    }

    fn scope_fence(scope: &Self::Scope) -> u64 {
        scope.fence()
    }

    fn scope_is_lost(scope: &Self::Scope) -> bool {
        scope.is_lost()
    }

    type QuorumClient = rdlock_driver::QuorumClient<E::Runtime>;
    type QuorumGuard = rdlock_driver::QuorumGuard<E::Runtime>;

    fn quorum(urls: &[String], config: ClientConfig) -> Result<Self::QuorumClient, Error> {
        rdlock_driver::QuorumClient::with_config(urls, config)
    }

    async fn quorum_lock(
        client: &Self::QuorumClient,
        key: &str,
        options: &LockOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::QuorumGuard, Error> {
        client.lock_with(key, options, timeout).await
    }

    fn late_quorum_lock<'a>(
        client: &'a Self::QuorumClient,
        key: &'a str,
        options: &'a LockOptions,
    ) -> Option<std::pin::Pin<Box<dyn Future<Output = Result<Self::QuorumGuard, Error>> + Send + 'a>>> {
        Some(Box::pin(client.lock_with(key, options, None)))
    }

    async fn quorum_try_lock(
        client: &Self::QuorumClient,
        key: &str,
        options: &LockOptions,
    ) -> Result<Option<Self::QuorumGuard>, Error> {
        client.try_lock_with(key, options).await
    }

    fn quorum_fence(guard: &Self::QuorumGuard) -> u64 {
        guard.fence()
    }

    fn quorum_lost(guard: &Self::QuorumGuard) -> Option<LostReason> {
        guard.lost()
    }

    fn quorum_valid_until(guard: &Self::QuorumGuard) -> Option<Instant> {
        guard.valid_until()
    }

    async fn quorum_extend(guard: &Self::QuorumGuard) -> Result<Instant, Error> {
        guard.extend().await
    }

    async fn quorum_release(guard: Self::QuorumGuard) -> Result<ReleaseOutcome, Error> {
        guard.release().await
    }

    fn spawn<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Task<T> {
        let slot = Arc::new(Mutex::new(Outcome::<T> { value: None, gone: false, waker: None }));
        let sender = Sender(slot.clone());
        E::Runtime::spawn(async move {
            let result = AssertUnwindSafe(work).catch_unwind().await;
            sender.send(result);
        });
        Box::pin(async move {
            let result = poll_fn(|cx| {
                let mut o = slot.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(v) = o.value.take() {
                    return Poll::Ready(v);
                }
                assert!(!o.gone, "[{}] a spawned task was dropped before it finished", E::NAME);
                o.waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    async fn sleep(duration: Duration) {
        E::Runtime::sleep_until(Instant::now() + duration).await;
    }
}

/// A waker that does nothing; each is a distinct allocation, as a real task's may be.
struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// What a spawned task left for the one awaiting it.
struct Outcome<T> {
    value: Option<std::thread::Result<T>>,
    /// The task was dropped (its runtime shut down) without a result.
    gone: bool,
    waker: Option<Waker>,
}

/// The task's end of the hand-over: sends the result, or on drop reports that none will come.
struct Sender<T>(Arc<Mutex<Outcome<T>>>);

impl<T> Sender<T> {
    fn send(self, value: std::thread::Result<T>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).value = Some(value);
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
            o.gone = true;
            o.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Tokio, multi-threaded: the runtime most applications run.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub struct Tokio;

#[cfg(feature = "tokio")]
impl Executor for Tokio {
    const NAME: &'static str = "tokio";
    type Runtime = rdlock_tokio::Tokio;

    fn block_on<F: Future>(future: F) -> F::Output {
        // Each case gets its own runtime, so its background tasks end with it.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        runtime.block_on(future)
    }
}

/// The tokio adapter.
#[cfg(feature = "tokio")]
pub type OnTokio = Async<Tokio>;

/// async-std's executor, driving the async-io adapter.
#[cfg(feature = "async-std")]
#[derive(Debug)]
pub struct AsyncStd;

#[cfg(feature = "async-std")]
impl Executor for AsyncStd {
    const NAME: &'static str = "async-std";
    type Runtime = rdlock_async_std::AsyncStd;

    fn block_on<F: Future>(future: F) -> F::Output {
        async_std::task::block_on(future)
    }
}

/// The async-io adapter under async-std.
#[cfg(feature = "async-std")]
pub type OnAsyncStd = Async<AsyncStd>;

/// smol's executor, driving the same async-io adapter.
#[cfg(feature = "smol")]
#[derive(Debug)]
pub struct Smol;

#[cfg(feature = "smol")]
impl Executor for Smol {
    const NAME: &'static str = "smol";
    type Runtime = rdlock_async_std::AsyncStd;

    fn block_on<F: Future>(future: F) -> F::Output {
        smol::block_on(future)
    }
}

/// The async-io adapter under smol.
#[cfg(feature = "smol")]
pub type OnSmol = Async<Smol>;

/// Counts the wake-ups a future's task gets from inside the future's own poll, on the
/// polling thread. Its waker stays the same across polls (as a runtime's task waker does),
/// forwarding to the task's current one.
#[derive(Default)]
struct OwnWakes {
    /// The thread polling now.
    polling: Mutex<Option<std::thread::ThreadId>>,
    task: Mutex<Option<Waker>>,
    during: std::sync::atomic::AtomicUsize,
}

impl Wake for OwnWakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if *self.polling.lock().expect("thread") == Some(std::thread::current().id()) {
            self.during.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(w) = &*self.task.lock().expect("waker") {
            w.wake_by_ref();
        }
    }
}

impl OwnWakes {
    /// Runs `future`, counting into `count`.
    async fn watch<F: Future>(count: &Arc<Self>, future: F) -> F::Output {
        let waker = Waker::from(count.clone());
        let mut future = std::pin::pin!(future);
        poll_fn(|cx| {
            *count.task.lock().expect("waker") = Some(cx.waker().clone());
            *count.polling.lock().expect("thread") = Some(std::thread::current().id());
            let out = future.as_mut().poll(&mut Context::from_waker(&waker));
            *count.polling.lock().expect("thread") = None;
            out
        })
        .await
    }
}
