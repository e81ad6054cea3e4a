//! The lock API (`Client`, `LockBuilder`, `Guard`), written once for both drivers.
//!
//! A method cannot be both `async` and blocking, so the types come from one macro that each
//! side invokes with its own words and examples. Inside the bodies, every wait goes through
//! the invoking module's `wait!` macro: `wait!(expr)` awaits `expr` on the async side and
//! simply evaluates it on the blocking side; `wait!(expr, span)` does the same inside `span`.
//! What differs beyond that (making a client, `Guard::lost`, a dropped guard's release, the
//! side's `abandon`) is written by the side, outside the macro.

/// Defines `Client`, `LockBuilder` and `Guard` in the invoking module. The module provides
/// `wait!`, `start` (makes and connects a client's state), `abandon` (gives up a lock whose
/// handle went away), an `$inner` cell with `run_until`, and the names the bodies use
/// (`Error`, `Acquire`, `common`, ...): names resolve where the macro is invoked, so that the
/// docs' links do too.
macro_rules! lock_api {
    (
        asyncness: [$($async:tt)?],
        generics: [$($g:tt)*],
        args: [$($a:tt)*],
        inner: $inner:ty,
        now: $now:path,
        waits: $waits:literal,
        task: $task:literal,
        client: {$(#[$client:meta])*},
        open_errors: {$(#[$open_errors:meta])*},
        connect: {$(#[$connect:meta])*},
        lock: {$(#[$lock:meta])*},
        try_lock_report: {$(#[$try_lock_report:meta])*},
        builder: {$(#[$builder:meta])*},
        guard: {$(#[$guard:meta])*},
        guard_lost: {$($guard_lost:tt)*}
    ) => {
        /// Closes the client when the last handle goes (guards keep it alive).
        struct Lifetime<$($g)*>(std::sync::Arc<$inner>);

        impl<$($g)*> Drop for Lifetime<$($a)*> {
            fn drop(&mut self) {
                self.0.close();
            }
        }

        $(#[$client])*
        pub struct Client<$($g)*> {
            inner: std::sync::Arc<$inner>,
            _life: std::sync::Arc<Lifetime<$($a)*>>,
        }

        impl<$($g)*> Clone for Client<$($a)*> {
            fn clone(&self) -> Self {
                Self { inner: self.inner.clone(), _life: self._life.clone() }
            }
        }

        impl<$($g)*> std::fmt::Debug for Client<$($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Client").field("server", self.inner.target().0.get_connection_info().addr()).finish()
            }
        }

        impl<$($g)*> Client<$($a)*> {
            /// Connects to the server at `url` (`redis://[user:password@]host:port/db`, or
            /// `rediss://` for TLS when the redis crate's TLS feature is on), or through
            /// sentinels (`redis+sentinel://[user:password@]host:port,host:port/master`, see
            /// [`SentinelConfig::from_url`](crate::SentinelConfig::from_url)), or to a cluster
            /// (`redis+cluster://[user:password@]host:port,host:port`, see
            /// [`ClusterConfig::from_url`](crate::ClusterConfig::from_url)).
            ///
            /// # Errors
            ///
            $(#[$open_errors])*
            /// Through sentinels: [`Error::Sentinel`] when none answers, they know no such
            /// master, or no majority of them agrees.
            pub $($async)? fn open(url: &str) -> Result<Self, Error> {
                wait!(Self::open_with(url, ClientConfig::default()))
            }

            /// As [`Client::open`], with settings: say a private CA and a client certificate
            /// ([`ClientConfig::tls`]) for a `rediss://`, `rediss+sentinel://` or
            /// `rediss+cluster://` URL, which then go to every connection the client makes.
            ///
            /// # Errors
            ///
            /// As [`Client::open`]; [`Error::Tls`] when TLS refuses a server's certificate (or
            /// a server the client's), or TLS settings come with a plain URL.
            pub $($async)? fn open_with(url: &str, config: ClientConfig) -> Result<Self, Error> {
                if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
                    let sentinel = crate::SentinelConfig::from_url(url)?;
                    return wait!(Self::connect_sentinel(sentinel, config));
                }
                if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") {
                    let cluster = crate::ClusterConfig::from_url(url)?;
                    return wait!(Self::connect_cluster(cluster, config));
                }
                wait!(Self::connect(redis::Client::open(url)?, config))
            }

            /// A client of the primary that the sentinels in `sentinel` name, with settings.
            /// Each sentinel is asked; the answer of more than half of those that answer is
            /// used, once the server says it is a primary. The client then follows failovers:
            /// it listens for the sentinels' `+switch-master`, and looks the primary up again
            /// on a `READONLY` reply, a lost link, and every
            /// [`ClientConfig::topology_refresh`]. After a switch every held lease is verified
            /// on the new primary at once (one it lacks is reported lost), and waiters look
            /// again there. The watching runs on one helper thread per client (for every
            /// adapter), which ends with the client.
            ///
            /// # Errors
            ///
            /// [`Error::Sentinel`] when no sentinel answers, they know no such master, no
            /// majority of them agrees, or the server they name is no primary;
            /// [`Error::Tls`] when no sentinel answers and TLS refused one, or refused the
            /// primary ([`SentinelConfig::tls`](crate::SentinelConfig::tls) takes
            /// [`ClientConfig::tls`] to both); otherwise as [`Client::open`].
            pub $($async)? fn connect_sentinel(sentinel: crate::SentinelConfig, config: ClientConfig) -> Result<Self, Error> {
                let inner = wait!(start_sentinel(sentinel, config))?;
                Ok(Self { _life: std::sync::Arc::new(Lifetime(inner.clone())), inner })
            }

            /// A client of the cluster whose slot map the first answering node of `cluster`
            /// gives, with settings. Each request goes to its key's primary (a script and its
            /// `WAIT` in one pipeline, on that node's connections); `MOVED` and `ASK` replies
            /// are followed, and the slot map is read again every
            /// [`ClientConfig::topology_refresh`] and after a lost link, on one helper thread
            /// per client: the leases of a slot whose primary changed are verified there at
            /// once. Hand-offs are announced over sharded pub/sub, on each slot's primary.
            ///
            /// # Errors
            ///
            /// [`Error::Cluster`] when no node gives a slot map; [`Error::Tls`] when none
            /// does and TLS refused one ([`ClusterConfig::tls`](crate::ClusterConfig::tls)
            /// takes [`ClientConfig::tls`] to every node); otherwise as [`Client::open`].
            pub $($async)? fn connect_cluster(cluster: crate::ClusterConfig, config: ClientConfig) -> Result<Self, Error> {
                let inner = wait!(start_cluster(cluster, config))?;
                Ok(Self { _life: std::sync::Arc::new(Lifetime(inner.clone())), inner })
            }

            /// The primary's `host:port` when connected through sentinels (it changes when the
            /// client follows a failover); `None` otherwise.
            pub fn sentinel_primary(&self) -> Option<String> {
                self.inner.watch.get().map(|w| w.primary())
            }

            $(#[$connect])*
            ///
            /// # Errors
            ///
            /// As [`Client::open`].
            pub $($async)? fn connect(redis: redis::Client, config: ClientConfig) -> Result<Self, Error> {
                let inner = wait!(start(redis, config))?;
                Ok(Self { _life: std::sync::Arc::new(Lifetime(inner.clone())), inner })
            }

            /// Options for one lock, starting from the client's defaults.
            pub fn lock_builder(&self, key: &str) -> LockBuilder<'_, $($a)*> {
                let request = LockRequest::new(self.inner.config.defaults);
                LockBuilder { client: self, key: key.to_owned(), resource: Resource::Lock, request }
            }

            /// The semaphore of `capacity` permits at `key`: up to `capacity` holders at once,
            /// served in arrival order. Every client of the key must agree on the capacity (it
            /// is stored while the semaphore is in use; another one is refused).
            pub fn semaphore(&self, key: &str, capacity: u32) -> Semaphore<$($a)*> {
                Semaphore { client: self.clone(), key: key.to_owned(), capacity }
            }

            /// The read-write lock at `key`: readers hold together, a writer alone, and a
            /// waiting writer makes readers that come after it wait behind it.
            pub fn rwlock(&self, key: &str) -> RwLock<$($a)*> {
                RwLock { client: self.clone(), key: key.to_owned() }
            }

            #[doc = concat!(" ", $waits, " until the lock is acquired, in turn with other waiters (first come, first")]
            /// served).
            ///
            /// Not reentrant: locking a key this client already holds waits like any other
            /// caller (until that guard goes). For reentrancy, lock through an [`Owner`].
            $(#[$lock])*
            ///
            /// # Errors
            ///
            /// [`Error::InvalidInput`] for a bad key or options (nothing is sent);
            /// [`Error::ReplicationShortfall`] when a confirmation asked for by the client's default
            /// options fails; [`Error::Lock`] when the server refuses (a key of another type,
            /// scripts disabled) or cannot be reached; [`Error::Closed`] if the client shut down.
            pub fn lock<'a>(&'a self, key: &'a str) -> acquiring!('a, Guard<$($a)*>) {
                // Straight to the acquisition: every layer of futures adds what it keeps to
                // every waiter.
                let how = Acquire::Wait { deadline: None };
                acquire!(self, key.into(), Resource::Lock, self.inner.config.defaults, how, None, common::guard)
            }

            #[doc = concat!(" ", $waits, " until the lock is acquired, or `timeout` passes. A zero timeout makes one")]
            /// attempt, like [`Client::try_lock`], answering [`Error::TimedOut`] when the lock is busy.
            ///
            /// # Errors
            ///
            /// [`Error::TimedOut`] when the timeout passes first; otherwise as [`Client::lock`].
            pub fn lock_timeout<'a>(&'a self, key: &'a str, timeout: Duration) -> acquiring!('a, Guard<$($a)*>) {
                let how = Acquire::Wait { deadline: None };
                acquire!(self, key.into(), Resource::Lock, self.inner.config.defaults, how, Some(timeout), common::guard)
            }

            /// One attempt: `None` when someone else holds the lock. [`Client::try_lock_report`]
            /// also tells how long the holder's lease has left.
            ///
            /// A release hands the lock straight to the first queued waiter, so an attempt never
            /// takes it from waiters at a release (fair hand-off); only a lock whose holder vanished
            /// and whose key expired goes to whoever asks first.
            ///
            /// # Errors
            ///
            /// As [`Client::lock`].
            pub $($async)? fn try_lock(&self, key: &str) -> Result<Option<Guard<$($a)*>>, Error> {
                wait!(self.acquire(key, self.inner.config.defaults, Acquire::Try))
            }

            /// One attempt, reporting the holder's remaining lease when the lock is busy, so that
            /// the caller can back off accordingly.
            ///
            $(#[$try_lock_report])*
            ///
            /// # Errors
            ///
            /// As [`Client::lock`].
            pub $($async)? fn try_lock_report(&self, key: &str) -> Result<TryLock<Guard<$($a)*>>, Error> {
                wait!(self.acquire_report(key, self.inner.config.defaults, Acquire::Try))
            }

            /// Acquires `key` with explicit options: the general form of the methods above. `None`
            /// when a single attempt ([`Acquire::Try`]) finds the lock busy. A wait whose deadline
            /// has already passed makes one attempt and answers [`Error::TimedOut`] when busy.
            ///
            /// # Errors
            ///
            /// As [`Client::lock_timeout`].
            pub $($async)? fn acquire(
                &self,
                key: &str,
                options: LockOptions,
                how: Acquire,
            ) -> Result<Option<Guard<$($a)*>>, Error> {
                Ok(wait!(self.acquire_resource_report(key, Resource::Lock, options, how))?.acquired())
            }

            /// [`Client::acquire`], reporting the holder's remaining lease when busy.
            ///
            /// # Errors
            ///
            /// As [`Client::lock_timeout`].
            pub $($async)? fn acquire_report(
                &self,
                key: &str,
                options: LockOptions,
                how: Acquire,
            ) -> Result<TryLock<Guard<$($a)*>>, Error> {
                wait!(self.acquire_resource_report(key, Resource::Lock, options, how))
            }

            /// The most general form: a lock, a semaphore's permit or a read-write lock's share
            /// ([`Resource`]) of `key`, with explicit options. A share's guard is a lease like a
            /// lock's (fence, validity, renewal, loss, release).
            ///
            /// # Errors
            ///
            /// As [`Client::lock_timeout`]; [`Error::InvalidInput`] for a capacity out of range
            /// or shared mode with a counted resource; [`Error::Lock`] with the server's
            /// `RDLOCK capacity mismatch` when the semaphore is in use with another capacity,
            /// or `WRONGTYPE` when `key` is a lock and a counted resource is asked (or the
            /// other way round).
            pub $($async)? fn acquire_resource(
                &self,
                key: &str,
                resource: Resource,
                options: LockOptions,
                how: Acquire,
            ) -> Result<Option<Guard<$($a)*>>, Error> {
                Ok(wait!(self.acquire_resource_report(key, resource, options, how))?.acquired())
            }

            /// [`Client::acquire_resource`], reporting how long the earliest holder has left
            /// when busy.
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn acquire_resource_report(
                &self,
                key: &str,
                resource: Resource,
                options: LockOptions,
                how: Acquire,
            ) -> Result<TryLock<Guard<$($a)*>>, Error> {
                wait!(acquire!(self, key.into(), resource, options, how, None, Ok))
            }

            /// An acquisition's first step, on either side: the engine's lock and its slot,
            /// and the requests to send. A wait with no deadline but a `timeout` ends that long
            /// from now.
            fn begin(
                &self,
                key: &str,
                resource: Resource,
                options: LockOptions,
                how: Acquire,
                timeout: Option<Duration>,
            ) -> Result<(common::Begun, Vec<rdlock_core::Request>), Error> {
                let now = $now();
                let how = match how {
                    // A timeout too long to count is no deadline.
                    Acquire::Wait { deadline: None } => Acquire::Wait { deadline: timeout.and_then(|t| now.checked_add(t)) },
                    how => how,
                };
                let (how, timed) = common::attempt(how, now);
                let (started, requests) = self.inner.with_engine(|s, now| s.start_acquire(key, resource, options, how, now));
                let (id, op) = started?;
                let deadline = match how {
                    Acquire::Wait { deadline } => deadline,
                    Acquire::Try => None,
                };
                Ok((common::Begun { id, op, timed, deadline }, requests))
            }

            /// An acquisition's answer (`event`), on either side: a guard that owns `key`, or
            /// busy. Unless it is a guard, the caller gives the lock up.
            fn finish(
                &self,
                key: std::borrow::Cow<'_, str>,
                begun: &common::Begun,
                event: Option<rdlock_core::Event>,
            ) -> Result<TryLock<Guard<$($a)*>>, Error> {
                let (fence, valid_until) = match common::acquired(event, begun.timed)? {
                    common::Answer::Acquired { fence, valid_until } => (fence, valid_until),
                    common::Answer::Busy { holder_ttl } => return Ok(TryLock::Busy { holder_ttl }),
                };
                let (token, loss) = self.inner.state().guard_parts(begun.id, $now())?;
                Ok(TryLock::Acquired(Guard {
                    client: self.clone(),
                    id: begun.id,
                    key: key.into_owned(),
                    token,
                    fence,
                    valid_until,
                    loss,
                    done: false,
                }))
            }

            /// What the server knows of the lock at `key`, read in one step: whether it is
            /// held, the holder's token prefix and remaining lease, the last fence issued, the
            /// waiters in their order; for a semaphore or read-write lock its holders and
            /// capacity; for a mutex whether a value is stored and its writer's fence. Only
            /// reads: any key may be inspected, held by anyone or by no one.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidInput`] for a bad key; [`Error::NotALock`] when the key (or a
            /// key beside it) holds a type no rdlock lock uses; [`Error::Lock`] when the
            /// server cannot be reached or refuses.
            pub $($async)? fn inspect(&self, key: &str) -> Result<rdlock_core::Inspection, Error> {
                let command = rdlock_core::Inspection::command(key)?;
                let reply = wait!(self.inner.direct(key, command)).map_err(rdlock_core::LockError::from)?;
                rdlock_core::Inspection::parse(reply.as_ref()).map_err(|e| common::not_a_lock(key, e))
            }

            /// Deletes the lock at `key`, whoever holds it, and hands it on as a release does:
            /// to the first waiter (or, for a semaphore or read-write lock, to the waiters that
            /// fit), who is woken at once. **An operator's action that breaks exclusion**: the
            /// holder is not told, and may still be working; its next renewal finds the lock
            /// gone and reports the lease lost (`Guard::lost`). Meant for a holder known to be
            /// stuck. A mutex's value is left as it is.
            ///
            /// # Errors
            ///
            /// As [`Client::inspect`].
            pub $($async)? fn force_release(&self, key: &str) -> Result<rdlock_core::ForceReleaseReply, Error> {
                let args = rdlock_core::ForceReleaseArgs { fence_ttl: rdlock_core::FENCE_TTL, claim: rdlock_core::HANDOFF_CLAIM };
                let command = args.command(key)?;
                let reply = wait!(self.inner.direct(key, command)).map_err(rdlock_core::LockError::from)?;
                rdlock_core::ForceReleaseReply::parse(reply.as_ref()).map_err(|e| common::not_a_lock(key, e))
            }

            /// The underlying `redis::Client` (the `redis` crate is re-exported by every adapter).
            /// Through sentinels: the client of the primary found at connect, which a failover
            /// replaces ([`Client::sentinel_primary`] names the one in use).
            pub fn redis(&self) -> &redis::Client {
                &self.inner.redis
            }

            /// Locks this client is tracking (held, waiting, or being released).
            pub fn tracked_locks(&self) -> usize {
                self.inner.state().engine.len()
            }

            /// What this client's engine has done so far (totals that only grow): hand-offs
            /// heard, polls, requests unanswered, messages handled.
            pub fn stats(&self) -> rdlock_core::Stats {
                self.inner.state().engine.stats()
            }
        }

        $(#[$builder])*
        #[derive(Debug)]
        pub struct LockBuilder<'a, $($g)*> {
            client: &'a Client<$($a)*>,
            key: String,
            resource: Resource,
            request: LockRequest,
        }

        impl<'a, $($g)*> LockBuilder<'a, $($a)*> {
            crate::api::request_setters!();

            /// Share the key with clients of other libraries ([`rdlock_core::Sharing::Foreign`]),
            /// or not ([`rdlock_core::Sharing::Queue`], the default).
            pub fn sharing(mut self, sharing: rdlock_core::Sharing) -> Self {
                self.request.options.sharing = sharing;
                self
            }

            /// What to take at the key: a lock (the default), a semaphore's permit(s), or a
            /// read-write lock's read or write share ([`Resource`]).
            pub fn resource(mut self, resource: Resource) -> Self {
                self.resource = resource;
                self
            }


            #[doc = concat!(" ", $waits, " until acquired (or the deadline). A deadline already passed, or a zero timeout,")]
            /// makes one attempt, answering [`Error::TimedOut`] when busy.
            ///
            /// # Errors
            ///
            /// As [`Client::lock_timeout`].
            pub fn lock(self) -> acquiring!('a, Guard<$($a)*>) {
                let how = Acquire::Wait { deadline: self.request.deadline };
                let (options, timeout) = (self.request.options, self.request.timeout);
                acquire!(self.client, self.key.into(), self.resource, options, how, timeout, common::guard)
            }

            /// One attempt: `None` when busy.
            ///
            /// # Errors
            ///
            /// As [`Client::lock`].
            pub fn try_lock(self) -> acquiring!('a, Option<Guard<$($a)*>>) {
                let options = self.request.options;
                acquire!(self.client, self.key.into(), self.resource, options, Acquire::Try, None, common::maybe)
            }

            /// One attempt, reporting the holder's remaining lease when busy.
            ///
            /// # Errors
            ///
            /// As [`Client::lock`].
            pub fn try_lock_report(self) -> acquiring!('a, TryLock<Guard<$($a)*>>) {
                let options = self.request.options;
                acquire!(self.client, self.key.into(), self.resource, options, Acquire::Try, None, Ok)
            }
        }

        /// A semaphore: `capacity` permits at one key ([`Client::semaphore`]). Each permit is a
        /// lease like a lock's [`Guard`]: fence, validity, renewal, loss, release.
        #[derive(Clone, Debug)]
        pub struct Semaphore<$($g)*> {
            client: Client<$($a)*>,
            key: String,
            capacity: u32,
        }

        impl<$($g)*> Semaphore<$($a)*> {
            #[doc = concat!(" ", $waits, " until a permit is free, in turn with other waiters.")]
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn acquire(&self) -> Result<Guard<$($a)*>, Error> {
                wait!(self.builder().lock())
            }

            #[doc = concat!(" ", $waits, " until a permit is free, or `timeout` passes ([`Error::TimedOut`]).")]
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn acquire_timeout(&self, timeout: Duration) -> Result<Guard<$($a)*>, Error> {
                wait!(self.builder().timeout(timeout).lock())
            }

            /// One attempt: `None` when no permit is free (or others wait for one).
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn try_acquire(&self) -> Result<Option<Guard<$($a)*>>, Error> {
                wait!(self.builder().try_lock())
            }

            #[doc = concat!(" ", $waits, " until `count` permits are free together, in turn with other waiters (a")]
            /// request that does not fit yet holds up the queue behind it, so it is never starved).
            /// One guard holds them all; its release frees them all.
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`]; [`Error::InvalidInput`] when `count` is 0 or above
            /// the capacity.
            pub $($async)? fn acquire_many(&self, count: u32) -> Result<Guard<$($a)*>, Error> {
                wait!(self.builder().resource(Resource::Permits { capacity: self.capacity, count }).lock())
            }

            /// Options for one permit, starting from the client's defaults.
            pub fn builder(&self) -> LockBuilder<'_, $($a)*> {
                self.client.lock_builder(&self.key).resource(Resource::Permit { capacity: self.capacity })
            }
        }

        /// A read-write lock at one key ([`Client::rwlock`]). Read and write shares are leases
        /// like a lock's [`Guard`]; a reader's fence is above every earlier writer's.
        #[derive(Clone, Debug)]
        pub struct RwLock<$($g)*> {
            client: Client<$($a)*>,
            key: String,
        }

        impl<$($g)*> RwLock<$($a)*> {
            #[doc = concat!(" ", $waits, " until a read share is granted (after any writer queued before).")]
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn read(&self) -> Result<Guard<$($a)*>, Error> {
                wait!(self.read_builder().lock())
            }

            #[doc = concat!(" ", $waits, " until the write share is granted (alone).")]
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn write(&self) -> Result<Guard<$($a)*>, Error> {
                wait!(self.write_builder().lock())
            }

            /// [`RwLock::read`], giving up after `timeout` ([`Error::TimedOut`]).
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn read_timeout(&self, timeout: Duration) -> Result<Guard<$($a)*>, Error> {
                wait!(self.read_builder().timeout(timeout).lock())
            }

            /// [`RwLock::write`], giving up after `timeout` ([`Error::TimedOut`]).
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn write_timeout(&self, timeout: Duration) -> Result<Guard<$($a)*>, Error> {
                wait!(self.write_builder().timeout(timeout).lock())
            }

            /// One attempt at a read share: `None` when a writer holds or waits.
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn try_read(&self) -> Result<Option<Guard<$($a)*>>, Error> {
                wait!(self.read_builder().try_lock())
            }

            /// One attempt at the write share: `None` when anyone holds or waits.
            ///
            /// # Errors
            ///
            /// As [`Client::acquire_resource`].
            pub $($async)? fn try_write(&self) -> Result<Option<Guard<$($a)*>>, Error> {
                wait!(self.write_builder().try_lock())
            }

            /// Options for one read share, starting from the client's defaults.
            pub fn read_builder(&self) -> LockBuilder<'_, $($a)*> {
                self.client.lock_builder(&self.key).resource(Resource::Read)
            }

            /// Options for one write share, starting from the client's defaults.
            pub fn write_builder(&self) -> LockBuilder<'_, $($a)*> {
                self.client.lock_builder(&self.key).resource(Resource::Write)
            }
        }

        $(#[$guard])*
        pub struct Guard<$($g)*> {
            client: Client<$($a)*>,
            id: LockId,
            key: String,
            token: rdlock_core::OwnerToken,
            fence: u64,
            valid_until: Instant,
            loss: std::sync::Arc<LossCell>,
            done: bool,
        }

        impl<$($g)*> std::fmt::Debug for Guard<$($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Guard").field("key", &self.key).field("fence", &self.fence).finish()
            }
        }

        impl<$($g)*> Guard<$($a)*> {
            /// The lock's key.
            pub fn key(&self) -> &str {
                &self.key
            }

            /// The owner token: the value stored in the lock key while this guard holds it (32
            /// lowercase hex digits, 128 random bits), so that an operator can map a key's value to
            /// its holder. Read-only: release and renewal compare it on the server.
            pub fn token(&self) -> &str {
                self.token.as_str()
            }

            /// The fencing token: strictly increasing across the lock's holders. Pass it to the
            /// storage you protect, so that it can refuse a stale holder.
            ///
            /// The first fence of a lock (or the first after its counter was lost, e.g. a restart
            /// without persistence) is the server's clock in microseconds since the Unix epoch; each
            /// later holder gets one more. So fences are large numbers that keep rising across
            /// restarts, not a count from 1.
            pub fn fence(&self) -> u64 {
                self.fence
            }

            /// Nothing may trust the lock past this instant (later after each renewal).
            pub fn valid_until(&self) -> Instant {
                common::lease(&self.client.inner.state().engine, self.id, self.valid_until, $now()).0
            }

            /// Whether the lease is still valid now: cheap, no round trip.
            pub fn is_valid(&self) -> bool {
                common::lease(&self.client.inner.state().engine, self.id, self.valid_until, $now()).1
            }

            $($guard_lost)*

            #[doc = concat!(" An owned, cloneable loss signal for this lock, to move into another ", $task, ": it fires")]
            /// when the lease is lost, and ends (with `None`) once the lock is released.
            pub fn loss_signal(&self) -> LossSignal {
                LossSignal::new(self.loss.clone())
            }

            /// Renews the lease now; returns the new end of validity.
            ///
            /// # Errors
            ///
            /// [`Error::Lost`] when the lease is already lost or the renewal finds it gone;
            /// [`Error::Closed`] if the client shut down.
            pub $($async)? fn extend(&self) -> Result<Instant, Error> {
                let inner = &self.client.inner;
                let (op, requests) = inner.with_engine(|s, now| common::start_extend(s, self.id, now));
                common::extended(wait!(inner.run_until(requests, self.id, op?, None)))
            }

            /// Turns a read-write lock's write share into a read share, atomically: this guard
            /// keeps holding (as a reader, with its fence and lease), and the readers queued behind
            /// it are granted at once; a writer queued after them still waits. Downgrading cannot
            /// deadlock (the share only shrinks); there is no upgrade.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidInput`] for a guard that is not a write share; [`Error::Lost`] when
            /// the lease is lost or the server no longer has the share; [`Error::Lock`] when the
            /// server did not answer (the share may be either; releasing it frees it either way).
            pub $($async)? fn downgrade(&self) -> Result<(), Error> {
                let inner = &self.client.inner;
                let (op, requests) = inner.with_engine(|s, now| common::start_downgrade(s, self.id, now));
                common::downgraded(wait!(inner.run_until(requests, self.id, op?, None)))
            }

            /// Releases the lock and says what is known of it: [`ReleaseOutcome::Released`] when the
            /// lease was valid to the end and the owner-checked delete ran, `NotHeld` when the lease
            /// had been lost (expired, or the key was not ours), `Unknown` when the server did not
            /// answer in time (the release goes on in the background). Returns within the client's
            /// response timeout. On an async runtime, a release that handed the lock to a waiter
            /// yields once before it returns (`Runtime::yield_now`),
            /// so that a waiter of this process runs first; the lock is released by then, so a
            /// future dropped at that point loses only the outcome.
            ///
            /// # Errors
            ///
            /// [`Error::Lock`] when the server refused the release (the key then expires at the end
            /// of its TTL); [`Error::Closed`] if the client shut down.
            pub $($async)? fn release(mut self) -> Result<ReleaseOutcome, Error> {
                let span = tracing::debug_span!("rdlock.release", key = %self.key, fence = self.fence);
                wait!($($async)? {
                    let inner = self.client.inner.clone();
                    let ((handoffs, op), requests) =
                        inner.with_engine(|s, now| common::begin_release(s, |s| common::start_release(s, self.id, now)));
                    let event = wait!(inner.run_until(requests, self.id, op?, None));
                    self.done = true;
                    let handed = common::forget_released(&mut inner.state(), self.id, handoffs);
                    after_release!(handed);
                    common::released(event)
                }, span)
            }
        }
    };
}
pub(crate) use lock_api;

/// The setters every acquisition's builder has, on its `request` (a `LockRequest`): lease,
/// renewal, confirmation, polling and when to give up.
macro_rules! request_setters {
    () => {
        /// Lease length (the key's expiry).
        pub fn ttl(mut self, ttl: Duration) -> Self {
            self.request.options.ttl = ttl;
            self
        }

        /// Renew the lease at about a third of the TTL while held (on by default).
        pub fn auto_renew(mut self, on: bool) -> Self {
            self.request.options.auto_renew = on;
            self
        }

        /// Wait for replicas to hold the lock before reporting it acquired (and, for a
        /// mutex, each write of its value before reporting it written).
        pub fn confirm(mut self, confirm: rdlock_core::Confirm) -> Self {
            self.request.options.confirm = confirm;
            self
        }

        /// Longest sleep between polls while waiting.
        pub fn poll_cap(mut self, cap: Duration) -> Self {
            self.request.options.poll_cap = cap;
            self
        }

        /// Give up at this instant.
        pub fn deadline(mut self, deadline: Instant) -> Self {
            self.request.deadline = Some(deadline);
            self
        }

        /// Give up after this long.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.request.timeout = Some(timeout);
            self
        }
    };
}
pub(crate) use request_setters;
