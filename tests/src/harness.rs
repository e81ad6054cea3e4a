//! The one interface the cases are written against: what a test needs from an rdlock
//! adapter and from the runtime it runs on.
//!
//! Methods are `async` for every runtime. The async adapters implement them by awaiting
//! the adapter's own futures ([`crate::runtimes::Async`]); the blocking adapter makes its
//! synchronous calls inside them and gets concurrency from threads, so on it every future
//! below is ready when first polled.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use rdlock_core::{Acquire, LockOptions, LostReason, ReleaseOutcome, Resource};
use rdlock_driver::{ClientConfig, Codec, Error, ForceReleaseReply, Inspection, Json, LossSignal, TryLock};

/// Work started with [`Harness::spawn`]; awaiting it yields the work's result and
/// re-raises its panic, if it panicked.
pub type Task<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An rdlock adapter on its runtime, as the cases see it.
#[async_trait::async_trait]
pub trait Harness: Sized + Send + Sync + 'static {
    /// The runtime's name, for messages.
    const NAME: &'static str;
    /// The adapter's client.
    type Client: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// The adapter's guard of a held lock.
    type Guard: std::fmt::Debug + Send + Sync + 'static;
    /// The adapter's guard of a held mutex, whose value is a `T` encoded by `C`.
    type MutexGuard<T: Value, C: ValueCodec<T>>: std::fmt::Debug + Send + Sync + std::ops::DerefMut<Target = T>;

    /// Runs the future a case builds to completion on this runtime (building it there), and
    /// fails the test if it takes longer than `budget`.
    fn run<F, Fut>(case: F, budget: Duration)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static;

    /// Why `case` cannot apply to this runtime, if it cannot.
    fn skip(case: &str) -> Option<&'static str> {
        let _ = case;
        None
    }

    /// A client with the default settings (`Client::open`).
    async fn connect(url: &str) -> Result<Self::Client, Error>;
    /// A client with explicit settings (`Client::connect`).
    async fn connect_with(url: &str, config: ClientConfig) -> Result<Self::Client, Error>;

    /// A client of the cluster of a `redis+cluster://` URL, with explicit settings
    /// (`Client::connect_cluster`).
    async fn connect_cluster(url: &str, config: ClientConfig) -> Result<Self::Client, Error>;

    /// A client of the primary the sentinels of a `redis+sentinel://` URL name, with explicit
    /// settings (`Client::connect_sentinel`).
    async fn connect_sentinel(url: &str, config: ClientConfig) -> Result<Self::Client, Error>;
    /// The primary a sentinel client uses now, `host:port` (`Client::sentinel_primary`).
    fn sentinel_primary(client: &Self::Client) -> Option<String>;

    /// Waits until the lock is acquired (`Client::lock`).
    async fn lock(client: &Self::Client, key: &str) -> Result<Self::Guard, Error>;
    /// Waits until acquired or `timeout` passes (`Client::lock_timeout`).
    async fn lock_timeout(client: &Self::Client, key: &str, timeout: Duration) -> Result<Self::Guard, Error>;
    /// One attempt (`Client::try_lock`).
    async fn try_lock(client: &Self::Client, key: &str) -> Result<Option<Self::Guard>, Error>;
    /// One attempt that reports the holder's remaining lease when busy
    /// (`Client::try_lock_report`).
    async fn try_lock_report(client: &Self::Client, key: &str) -> Result<TryLock<Self::Guard>, Error>;
    /// The general form, with explicit options (`Client::acquire`).
    async fn acquire(
        client: &Self::Client,
        key: &str,
        options: LockOptions,
        how: Acquire,
    ) -> Result<Option<Self::Guard>, Error>;

    /// A lock or a share of a counted resource (`Client::acquire_resource`).
    async fn acquire_resource(
        client: &Self::Client,
        key: &str,
        resource: Resource,
        options: LockOptions,
        how: Acquire,
    ) -> Result<Option<Self::Guard>, Error>;

    /// The mutex at `key` with `codec` (`Client::mutex_with`), taken as `spec` says
    /// (`Mutex::builder`, then `lock` or `try_lock`).
    async fn mutex<T: Value, C: ValueCodec<T>>(
        client: &Self::Client,
        key: &str,
        codec: C,
        spec: MutexSpec,
    ) -> Result<Option<Self::MutexGuard<T, C>>, Error>;
    /// Writes the value, keeping the lock (`MutexGuard::store`).
    async fn store<T: Value, C: ValueCodec<T>>(guard: &mut Self::MutexGuard<T, C>) -> Result<(), Error>;
    /// Releases the mutex, writing the value back when modified (`MutexGuard::release`).
    async fn release_mutex<T: Value, C: ValueCodec<T>>(guard: Self::MutexGuard<T, C>) -> Result<ReleaseOutcome, Error>;
    /// Releases the mutex without writing (`MutexGuard::discard`).
    async fn discard<T: Value, C: ValueCodec<T>>(guard: Self::MutexGuard<T, C>) -> Result<ReleaseOutcome, Error>;
    /// The mutex guard's fence.
    fn mutex_fence<T: Value, C: ValueCodec<T>>(guard: &Self::MutexGuard<T, C>) -> u64;
    /// The fence of the holder that wrote the value the guard found.
    fn written_by<T: Value, C: ValueCodec<T>>(guard: &Self::MutexGuard<T, C>) -> Option<u64>;

    /// Locks the client tracks (`Client::tracked_locks`).
    fn tracked(client: &Self::Client) -> usize;
    /// The guard's owner token, as stored in the lock key.
    fn token(guard: &Self::Guard) -> String;
    /// The guard's fencing token.
    fn fence(guard: &Self::Guard) -> u64;
    /// The guard's end of validity.
    fn valid_until(guard: &Self::Guard) -> Instant;
    /// Whether the lease is valid now.
    fn is_valid(guard: &Self::Guard) -> bool;
    /// What the server knows of a lock (`Client::inspect`).
    async fn inspect(client: &Self::Client, key: &str) -> Result<Inspection, Error>;
    /// Deletes a lock whoever holds it, handing it on (`Client::force_release`).
    async fn force_release(client: &Self::Client, key: &str) -> Result<ForceReleaseReply, Error>;
    /// Turns a write share into a read share (`Guard::downgrade`).
    async fn downgrade(guard: &Self::Guard) -> Result<(), Error>;
    /// Renews the lease now.
    async fn extend(guard: &Self::Guard) -> Result<Instant, Error>;
    /// Releases the lock; what is known of it.
    async fn release(guard: Self::Guard) -> Result<ReleaseOutcome, Error>;
    /// The lost-lease signal, waited for at most `limit`; `None` if it did not fire.
    async fn lost_within(guard: &Self::Guard, limit: Duration) -> Option<LostReason>;
    /// Moves the guard's loss signal into concurrent work (a task, or a thread) that waits
    /// on it for at most `limit`: the reason, or `None` if it did not fire (or the lock was
    /// released first).
    fn watch_loss(guard: &Self::Guard, limit: Duration) -> Task<Option<LostReason>>;
    /// Polls `n` fresh lost futures once each (dropping each), then one future `n` times with
    /// a new waker each time; returns the wakers the guard's slot keeps after each run.
    /// `None` where the adapter has no lost future.
    async fn churn_lost(guard: &Self::Guard, n: usize) -> Option<(usize, usize)>;

    /// Takes `key` and releases it, and counts the wake-ups the calling task got from inside
    /// its own polls; `None` where a caller is a thread (no waker).
    async fn self_wakes(client: &Self::Client, key: &str) -> Option<usize>;

    /// A wait for `key` (`Client::acquire`, no deadline) as a future its caller polls when it
    /// likes, so that a case can make a caller that runs late; `None` where a caller is a
    /// thread (it runs as soon as it is answered).
    fn late_wait(client: &Self::Client, key: &str, options: LockOptions) -> Option<Task<Result<Self::Guard, Error>>>;

    /// The adapter's reentrant owner (`Client::owner`).
    type Owner: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// One hold of an owner's lease.
    type Hold: std::fmt::Debug + Send + Sync + 'static;
    /// What the work of `Client::with_lock` sees of its lock.
    type Scope: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Whether `with_lock` cancels its work when the lease is lost (async), rather than
    /// handing it a token to check (threads).
    const SCOPE_CANCELS: bool;

    /// A new owner (`Client::owner`).
    fn owner(client: &Self::Client) -> Self::Owner;
    /// Entries the owner holds or is acquiring (`Owner::entries`).
    fn owner_entries(owner: &Self::Owner) -> usize;
    /// `Owner::lock`.
    async fn owner_lock(owner: &Self::Owner, key: &str) -> Result<Self::Hold, Error>;
    /// `Owner::lock_timeout`.
    async fn owner_lock_timeout(owner: &Self::Owner, key: &str, timeout: Duration) -> Result<Self::Hold, Error>;
    /// `Owner::try_lock`.
    async fn owner_try_lock(owner: &Self::Owner, key: &str) -> Result<Option<Self::Hold>, Error>;
    /// `Owner::write`.
    async fn owner_write(owner: &Self::Owner, key: &str) -> Result<Self::Hold, Error>;
    /// The hold's fencing token.
    fn hold_fence(hold: &Self::Hold) -> u64;
    /// The hold's owner token.
    fn hold_token(hold: &Self::Hold) -> String;
    /// Holds of the hold's entry now.
    fn hold_depth(hold: &Self::Hold) -> usize;
    /// The hold's loss signal.
    fn hold_signal(hold: &Self::Hold) -> LossSignal;
    /// `Hold::release`: `None` while other holds remain.
    async fn hold_release(hold: Self::Hold) -> Result<Option<ReleaseOutcome>, Error>;
    /// `Client::with_lock`, the work given as a future (run on the calling thread by the
    /// blocking adapter).
    async fn with_lock<T, F>(client: &Self::Client, key: &str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self::Scope) -> Task<T> + Send + 'static;
    /// `LockBuilder::with_lock` with a TTL.
    async fn with_lock_ttl<T, F>(client: &Self::Client, key: &str, ttl: Duration, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(Self::Scope) -> Task<T> + Send + 'static;
    /// The scope's fencing token.
    fn scope_fence(scope: &Self::Scope) -> u64;
    /// Whether the scope's lease is lost.
    fn scope_is_lost(scope: &Self::Scope) -> bool;

    /// The adapter's client of a quorum of independent primaries, and its guard.
    type QuorumClient: std::fmt::Debug + Send + Sync + 'static;
    /// A held quorum lock.
    type QuorumGuard: std::fmt::Debug + Send + Sync + 'static;
    /// `QuorumClient::with_config`.
    fn quorum(urls: &[String], config: ClientConfig) -> Result<Self::QuorumClient, Error>;
    /// `QuorumClient::lock_with`.
    async fn quorum_lock(
        client: &Self::QuorumClient,
        key: &str,
        options: &LockOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::QuorumGuard, Error>;
    /// `QuorumClient::try_lock_with`.
    async fn quorum_try_lock(
        client: &Self::QuorumClient,
        key: &str,
        options: &LockOptions,
    ) -> Result<Option<Self::QuorumGuard>, Error>;
    /// The quorum guard's fence.
    fn quorum_fence(guard: &Self::QuorumGuard) -> u64;
    /// The quorum guard's loss, if lost.
    fn quorum_lost(guard: &Self::QuorumGuard) -> Option<LostReason>;
    /// The quorum guard's end of validity.
    fn quorum_valid_until(guard: &Self::QuorumGuard) -> Option<Instant>;
    /// `QuorumGuard::extend`.
    async fn quorum_extend(guard: &Self::QuorumGuard) -> Result<Instant, Error>;
    /// `QuorumGuard::release`.
    async fn quorum_release(guard: Self::QuorumGuard) -> Result<ReleaseOutcome, Error>;
    /// `QuorumClient::lock_with` (no timeout) as a future its caller polls when it likes (see
    /// [`Harness::late_wait`]); `None` where a caller is a thread.
    #[allow(clippy::type_complexity)]
    fn late_quorum_lock<'a>(
        client: &'a Self::QuorumClient,
        key: &'a str,
        options: &'a LockOptions,
    ) -> Option<Pin<Box<dyn Future<Output = Result<Self::QuorumGuard, Error>> + Send + 'a>>>;

    /// Runs `work` concurrently with the caller (a task, or a thread).
    fn spawn<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Task<T>;
    /// Sleeps without holding up the adapter's background work.
    async fn sleep(duration: Duration);
}

/// A value a case keeps in a mutex.
pub trait Value: Default + Send + Sync + 'static {}
impl<T: Default + Send + Sync + 'static> Value for T {}

/// A codec a case gives a mutex.
pub trait ValueCodec<T>: Codec<T> + Send + Sync + 'static {}
impl<T, C: Codec<T> + Send + Sync + 'static> ValueCodec<T> for C {}

/// How a case takes a mutex: the builder's settings, and how to wait.
#[derive(Clone, Copy, Debug)]
pub struct MutexSpec {
    /// Lease, renewal, confirmation and poll cap.
    pub options: LockOptions,
    /// The value limit (`MutexBuilder::max_value`).
    pub max_value: u32,
    /// The value's TTL (`MutexBuilder::value_ttl`), none by default.
    pub value_ttl: Option<Duration>,
    /// One attempt, or a wait (with its deadline).
    pub how: Acquire,
}

impl Default for MutexSpec {
    /// The client's default options and limit, no value TTL, a wait of up to 10 s.
    fn default() -> Self {
        Self {
            options: LockOptions::default(),
            max_value: rdlock_driver::DEFAULT_MAX_VALUE,
            value_ttl: None,
            how: Acquire::Wait { deadline: Some(Instant::now() + Duration::from_secs(10)) },
        }
    }
}

/// Waits until the lock is acquired with these options, or `timeout` passes.
pub async fn lock_with<H: Harness>(
    client: &H::Client,
    key: &str,
    options: LockOptions,
    timeout: Duration,
) -> Result<H::Guard, Error> {
    let how = Acquire::Wait { deadline: Some(Instant::now() + timeout) };
    H::acquire(client, key, options, how).await?.ok_or(Error::Closed)
}

/// One attempt with these options.
pub async fn try_with<H: Harness>(
    client: &H::Client,
    key: &str,
    options: LockOptions,
) -> Result<Option<H::Guard>, Error> {
    H::acquire(client, key, options, Acquire::Try).await
}

/// Awaits every task, in order.
pub async fn join_all<T>(tasks: Vec<Task<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await);
    }
    out
}

/// Every primitive once, on two clients of one deployment, on three fresh keys: a semaphore
/// (two permits of two, a third refused, then granted), a read-write lock (readers share, a
/// writer waits for them, then downgrades) and a mutex whose value one client writes and the
/// other reads.
pub async fn every_primitive<H: Harness>(client: &H::Client, other: &H::Client, keys: &[String]) {
    let wait = || Acquire::Wait { deadline: Some(Instant::now() + Duration::from_secs(10)) };
    let o = LockOptions::default();
    // Semaphore: two permits of two, a third refused, then granted once one goes.
    let permit = Resource::Permit { capacity: 2 };
    let a = H::acquire_resource(client, &keys[0], permit, o, wait()).await.expect("permit").expect("held");
    let b = H::acquire_resource(other, &keys[0], permit, o, wait()).await.expect("permit").expect("held");
    assert!(H::acquire_resource(other, &keys[0], permit, o, Acquire::Try).await.expect("try").is_none());
    assert!(H::release(a).await.expect("release").was_held());
    let c = H::acquire_resource(other, &keys[0], permit, o, wait()).await.expect("permit").expect("held");
    assert!(H::release(b).await.expect("release").was_held());
    assert!(H::release(c).await.expect("release").was_held());
    // Read-write lock: readers share, a writer waits for them.
    let r1 = H::acquire_resource(client, &keys[1], Resource::Read, o, wait()).await.expect("read").expect("held");
    let r2 = H::acquire_resource(other, &keys[1], Resource::Read, o, wait()).await.expect("read").expect("held");
    assert!(H::acquire_resource(other, &keys[1], Resource::Write, o, Acquire::Try).await.expect("try").is_none());
    assert!(H::release(r1).await.expect("release").was_held());
    assert!(H::release(r2).await.expect("release").was_held());
    let w = H::acquire_resource(other, &keys[1], Resource::Write, o, wait()).await.expect("write").expect("held");
    H::downgrade(&w).await.expect("downgrade");
    assert!(H::release(w).await.expect("release").was_held());
    // Mutex: a value written by one client is read by the other.
    let spec = MutexSpec::default();
    let mut m = H::mutex::<u64, Json>(client, &keys[2], Json, spec).await.expect("mutex").expect("held");
    *m += 41;
    H::release_mutex::<u64, Json>(m).await.expect("release");
    let spec = MutexSpec::default();
    let mut m = H::mutex::<u64, Json>(other, &keys[2], Json, spec).await.expect("mutex").expect("held");
    assert_eq!(*m, 41);
    *m += 1;
    H::release_mutex::<u64, Json>(m).await.expect("release");
    let spec = MutexSpec::default();
    let m = H::mutex::<u64, Json>(client, &keys[2], Json, spec).await.expect("mutex").expect("held");
    assert_eq!(*m, 42);
    H::discard::<u64, Json>(m).await.expect("discard");
}
