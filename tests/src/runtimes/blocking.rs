//! The harness of the blocking adapter: each method makes the adapter's synchronous call (so
//! every future here is ready when first polled), and concurrency comes from threads.

use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use rdlock_blocking::{Client, Guard, Hold, Owner, Scope};
use rdlock_core::{Acquire, LockOptions, LostReason, ReleaseOutcome, Resource};
use rdlock_driver::blocking::MutexGuard;
use rdlock_driver::{ClientConfig, Error, ForceReleaseReply, Inspection, LossSignal, TryLock};

use crate::harness::{Harness, MutexSpec, Task, Value, ValueCodec};

/// The blocking adapter, on plain threads.
#[derive(Debug)]
pub struct Blocking;

#[async_trait::async_trait]
impl Harness for Blocking {
    const NAME: &'static str = "blocking";
    type Client = Client;
    type Guard = Guard;
    type Owner = Owner;
    type Hold = Hold;
    type Scope = Scope;
    const SCOPE_CANCELS: bool = false;
    type MutexGuard<T: Value, C: ValueCodec<T>> = MutexGuard<T, C>;

    fn run<F, Fut>(case: F, budget: Duration)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        // A blocked call cannot be interrupted: the case runs on a thread of its own, watched
        // from here. One that overruns is left behind (with its servers) and the test fails.
        let (done, finished) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("blocking-case".into())
            .spawn(move || {
                block_on(case());
                let _ = done.send(());
            })
            .expect("start the case's thread");
        match finished.recv_timeout(budget) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("[blocking] the case did not finish within {budget:?}"),
        }
    }

    fn skip(case: &str) -> Option<&'static str> {
        match case {
            "a_cancelled_caller_strands_no_other_wait" | "a_dropped_with_lock_releases" => {
                Some("a blocking call cannot be cancelled")
            }
            "a_caller_that_runs_after_its_lease_gets_no_guard"
            | "quorum_a_caller_that_runs_after_its_lease_gets_no_guard" => {
                Some("a blocking caller takes its answer on its own thread, at once")
            }
            // Twenty thousand threads: each blocking caller has a pooled connection of its own.
            "a_burst_of_requests_keeps_one_connection" => Some("concurrency is bounded by threads here"),
            _ => None,
        }
    }

    async fn connect(url: &str) -> Result<Self::Client, Error> {
        Client::open(url)
    }

    async fn connect_with(url: &str, config: ClientConfig) -> Result<Self::Client, Error> {
        Client::connect(redis::Client::open(url)?, config)
    }

    async fn connect_cluster(url: &str, config: ClientConfig) -> Result<Self::Client, Error> {
        Client::connect_cluster(rdlock_driver::ClusterConfig::from_url(url)?, config)
    }

    async fn connect_sentinel(url: &str, config: ClientConfig) -> Result<Self::Client, Error> {
        Client::connect_sentinel(rdlock_driver::SentinelConfig::from_url(url)?, config)
    }

    fn sentinel_primary(client: &Self::Client) -> Option<String> {
        client.sentinel_primary()
    }

    async fn lock(client: &Self::Client, key: &str) -> Result<Self::Guard, Error> {
        client.lock(key)
    }

    async fn lock_timeout(client: &Self::Client, key: &str, timeout: Duration) -> Result<Self::Guard, Error> {
        client.lock_timeout(key, timeout)
    }

    async fn try_lock(client: &Self::Client, key: &str) -> Result<Option<Self::Guard>, Error> {
        client.try_lock(key)
    }

    async fn try_lock_report(client: &Self::Client, key: &str) -> Result<TryLock<Self::Guard>, Error> {
        client.try_lock_report(key)
    }

    async fn acquire(
        client: &Self::Client,
        key: &str,
        options: LockOptions,
        how: Acquire,
    ) -> Result<Option<Self::Guard>, Error> {
        client.acquire(key, options, how)
    }

    async fn acquire_resource(
        client: &Self::Client,
        key: &str,
        resource: Resource,
        options: LockOptions,
        how: Acquire,
    ) -> Result<Option<Self::Guard>, Error> {
        client.acquire_resource(key, resource, options, how)
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
            Acquire::Try => b.try_lock(),
            Acquire::Wait { deadline: Some(d) } => b.deadline(d).lock().map(Some),
            Acquire::Wait { deadline: None } => b.lock().map(Some),
        }
    }

    async fn store<T: Value, C: ValueCodec<T>>(guard: &mut Self::MutexGuard<T, C>) -> Result<(), Error> {
        guard.store()
    }

    async fn release_mutex<T: Value, C: ValueCodec<T>>(guard: Self::MutexGuard<T, C>) -> Result<ReleaseOutcome, Error> {
        guard.release()
    }

    async fn discard<T: Value, C: ValueCodec<T>>(guard: Self::MutexGuard<T, C>) -> Result<ReleaseOutcome, Error> {
        guard.discard()
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
        client.inspect(key)
    }

    async fn force_release(client: &Self::Client, key: &str) -> Result<ForceReleaseReply, Error> {
        client.force_release(key)
    }

    async fn downgrade(guard: &Self::Guard) -> Result<(), Error> {
        guard.downgrade()
    }

    async fn extend(guard: &Self::Guard) -> Result<Instant, Error> {
        guard.extend()
    }

    async fn release(guard: Self::Guard) -> Result<ReleaseOutcome, Error> {
        guard.release()
    }

    async fn lost_within(guard: &Self::Guard, limit: Duration) -> Option<LostReason> {
        guard.wait_lost(limit)
    }

    fn watch_loss(guard: &Self::Guard, limit: Duration) -> Task<Option<LostReason>> {
        let signal = guard.loss_signal();
        Self::spawn(async move { signal.wait(limit) })
    }

    async fn churn_lost(_guard: &Self::Guard, _n: usize) -> Option<(usize, usize)> {
        // A blocking wait registers no waker.
        None
    }

    async fn self_wakes(_client: &Self::Client, _key: &str) -> Option<usize> {
        // A blocking caller has no waker.
        None
    }

    fn late_wait(
        _client: &Self::Client,
        _key: &str,
        _options: LockOptions,
    ) -> Option<Task<Result<Self::Guard, Error>>> {
        // A blocking caller takes its answer on the thread that waited for it, at once.
        None
    }

    fn owner(client: &Self::Client) -> Self::Owner {
        client.owner()
    }

    fn owner_entries(owner: &Self::Owner) -> usize {
        owner.entries()
    }

    async fn owner_lock(owner: &Self::Owner, key: &str) -> Result<Self::Hold, Error> {
        owner.lock(key)
    }

    async fn owner_lock_timeout(owner: &Self::Owner, key: &str, timeout: Duration) -> Result<Self::Hold, Error> {
        owner.lock_timeout(key, timeout)
    }

    async fn owner_try_lock(owner: &Self::Owner, key: &str) -> Result<Option<Self::Hold>, Error> {
        owner.try_lock(key)
    }

    async fn owner_write(owner: &Self::Owner, key: &str) -> Result<Self::Hold, Error> {
        owner.write(key)
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
        hold.release()
    }

    async fn with_lock<T, F>(client: &Self::Client, key: &str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self::Scope) -> Task<T> + Send + 'static,
    {
        // The work's future runs to its end on this thread, as blocking work would.
        client.with_lock(key, move |scope| block_on(work(scope)))
    }

    async fn with_lock_ttl<T, F>(client: &Self::Client, key: &str, ttl: Duration, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self::Scope) -> Task<T> + Send + 'static,
    {
        client.lock_builder(key).ttl(ttl).with_lock(move |scope| block_on(work(scope)))
    }

    fn scope_fence(scope: &Self::Scope) -> u64 {
        scope.fence()
    }

    fn scope_is_lost(scope: &Self::Scope) -> bool {
        scope.is_lost()
    }

    type QuorumClient = rdlock_driver::blocking::QuorumClient;
    type QuorumGuard = rdlock_driver::blocking::QuorumGuard;

    fn quorum(urls: &[String], config: ClientConfig) -> Result<Self::QuorumClient, Error> {
        rdlock_driver::blocking::QuorumClient::with_config(urls, config)
    }

    async fn quorum_lock(
        client: &Self::QuorumClient,
        key: &str,
        options: &LockOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::QuorumGuard, Error> {
        client.lock_with(key, options, timeout)
    }

    fn late_quorum_lock<'a>(
        _client: &'a Self::QuorumClient,
        _key: &'a str,
        _options: &'a LockOptions,
    ) -> Option<std::pin::Pin<Box<dyn Future<Output = Result<Self::QuorumGuard, Error>> + Send + 'a>>> {
        // A blocking caller takes its answer on the thread that waited for it, at once.
        None
    }

    async fn quorum_try_lock(
        client: &Self::QuorumClient,
        key: &str,
        options: &LockOptions,
    ) -> Result<Option<Self::QuorumGuard>, Error> {
        client.try_lock_with(key, options)
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
        guard.extend()
    }

    async fn quorum_release(guard: Self::QuorumGuard) -> Result<ReleaseOutcome, Error> {
        guard.release()
    }

    fn spawn<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Task<T> {
        let thread = std::thread::Builder::new()
            .name("blocking-work".into())
            .stack_size(512 * 1024)
            .spawn(move || block_on(work))
            .expect("start a thread");
        Box::pin(async move { thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) })
    }

    async fn sleep(duration: Duration) {
        std::thread::sleep(duration);
    }
}
