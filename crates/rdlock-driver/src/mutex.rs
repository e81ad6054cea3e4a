//! The mutex API (`Mutex`, `MutexBuilder`, `MutexGuard`): a lock whose data lives beside it,
//! written once for both drivers like the lock API ([`crate::api`]), by a macro each side
//! invokes after `lock_api!` (the types reach into the lock's `Client` and `Guard`).
//!
//! A grant returns the stored value; the guard decodes it, lends it out (`Deref`,
//! `DerefMut`, which marks it modified), and writes it back on `store` or `release`, each an
//! owner-checked script that never writes over a later holder's value. A dropped guard
//! releases the lock without writing: a write nobody asked for could be stale data.

use std::sync::Arc;

use rdlock_core::{Event, LockId, LostReason, Misuse, OpId, ReleaseOutcome};

use crate::common::{Shared, Waiter};
use crate::error::Error;
use crate::loss::LossCell;

/// A stored value that failed to decode: the typed error naming the key.
pub(crate) fn decode_error(key: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Decode { key: key.to_owned(), source: Box::new(e) }
}

/// Encodes a guard's value for a write.
pub(crate) fn encode<T, C: crate::Codec<T>>(codec: &C, key: &str, value: &T) -> Result<Arc<[u8]>, Error> {
    match codec.encode(value) {
        Ok(bytes) => Ok(bytes.into()),
        Err(e) => Err(Error::Encode { key: key.to_owned(), source: Box::new(e) }),
    }
}

/// What a refused write means to the caller: too large a value is invalid input; a lease
/// the engine no longer holds is lost.
fn misuse(m: Misuse, loss: &LossCell) -> Error {
    match m {
        Misuse::Invalid(_, input) => Error::InvalidInput(input),
        Misuse::NotHeld(_) => Error::Lost(loss.reason().unwrap_or(LostReason::Expired)),
        _ => Error::Closed,
    }
}

/// Starts a write of `value`: mid-hold, or in front of the release (`then_release`); returns
/// the op its answer carries.
pub(crate) fn start_write<W: Waiter>(
    shared: &mut Shared<W>,
    id: LockId,
    value: Arc<[u8]>,
    then_release: bool,
    loss: &LossCell,
    now: std::time::Instant,
) -> Result<OpId, Error> {
    let op = match then_release {
        false => shared.engine.store(id, value, now),
        true => shared.engine.release_storing(id, value, now),
    };
    shared.expect(id, op).map_err(|m| misuse(m, loss))
}

/// The answer to a mid-hold write.
pub(crate) fn stored(event: Option<Event>) -> Result<(), Error> {
    match event {
        Some(Event::Stored) => Ok(()),
        Some(Event::Lost { reason }) => Err(Error::Lost(reason)),
        Some(Event::ReplicationShortfall { acked, wanted }) => Err(Error::ReplicationShortfall { acked, wanted }),
        Some(Event::Failed(e)) => Err(Error::from(e)),
        _ => Err(Error::Closed),
    }
}

/// The answer to a mutex's release: a lease lost before it is an error (whatever was to be
/// written was not), an unknown outcome is not (the write may have landed).
pub(crate) fn released(event: Option<Event>, loss: &LossCell) -> Result<ReleaseOutcome, Error> {
    match event {
        Some(Event::Released { outcome: ReleaseOutcome::NotHeld }) => {
            Err(Error::Lost(loss.reason().unwrap_or(LostReason::NotOwner)))
        }
        Some(Event::Released { outcome }) => Ok(outcome),
        Some(Event::ReplicationShortfall { acked, wanted }) => Err(Error::ReplicationShortfall { acked, wanted }),
        Some(Event::Failed(e)) => Err(Error::from(e)),
        _ => Err(Error::Closed),
    }
}

/// Defines `Mutex`, `MutexBuilder` and `MutexGuard`, and the `Client` methods that make a
/// mutex, in the invoking module, beside `lock_api!`'s types (whose private fields the bodies
/// use). The module provides `wait!` and the names the bodies use, as for `lock_api!`.
macro_rules! mutex_api {
    (
        asyncness: [$($async:tt)?],
        generics: [$($g:tt)*],
        args: [$($a:tt)*],
        now: $now:path,
        waits: $waits:literal,
        mutex: {$(#[$mutex:meta])*},
        json: {$(#[$json:meta])*},
        builder: {$(#[$builder:meta])*},
        guard: {$(#[$guard:meta])*}
    ) => {
        impl<$($g)*> Client<$($a)*> {
            $(#[$json])*
            #[cfg(feature = "serde")]
            pub fn mutex<T>(&self, key: &str) -> Mutex<T, crate::codec::Json, $($a)*>
            where
                T: serde::Serialize + serde::de::DeserializeOwned,
            {
                self.mutex_with(key, crate::codec::Json)
            }

            /// The mutex at `key` whose value is raw bytes ([`Bytes`](crate::Bytes)); empty
            /// until first written.
            pub fn mutex_bytes(&self, key: &str) -> Mutex<Vec<u8>, crate::codec::Bytes, $($a)*> {
                self.mutex_with(key, crate::codec::Bytes)
            }

            /// The mutex at `key` whose value `codec` encodes and decodes ([`Codec`](crate::Codec)).
            /// Until a value is first written (or after a value TTL ran out), a holder finds
            /// `T::default()`; `Option<T>` suits types without a natural default.
            pub fn mutex_with<T, C: crate::Codec<T>>(&self, key: &str, codec: C) -> Mutex<T, C, $($a)*> {
                Mutex {
                    client: self.clone(),
                    key: key.to_owned(),
                    codec: std::sync::Arc::new(codec),
                    _value: std::marker::PhantomData,
                }
            }
        }

        $(#[$mutex])*
        pub struct Mutex<T, C, $($g)*> {
            client: Client<$($a)*>,
            key: String,
            codec: std::sync::Arc<C>,
            _value: std::marker::PhantomData<fn() -> T>,
        }

        impl<T, C, $($g)*> Clone for Mutex<T, C, $($a)*> {
            fn clone(&self) -> Self {
                Self {
                    client: self.client.clone(),
                    key: self.key.clone(),
                    codec: self.codec.clone(),
                    _value: std::marker::PhantomData,
                }
            }
        }

        impl<T, C, $($g)*> std::fmt::Debug for Mutex<T, C, $($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Mutex").field("key", &self.key).finish()
            }
        }

        impl<T, C, $($g)*> Mutex<T, C, $($a)*> {
            /// The mutex's key.
            pub fn key(&self) -> &str {
                &self.key
            }
        }

        impl<T: Default, C: crate::Codec<T>, $($g)*> Mutex<T, C, $($a)*> {
            #[doc = concat!(" ", $waits, " until the mutex is held, in turn with other waiters, and reads its value.")]
            ///
            /// # Errors
            ///
            /// [`Error::Decode`] when the stored value does not decode (the lock is released
            /// again, the stored bytes left as they are); [`Error::Lock`] with the server's
            /// `RDLOCK` error when the value key holds another type of value; otherwise as
            /// [`Client::lock`].
            pub $($async)? fn lock(&self) -> Result<MutexGuard<T, C, $($a)*>, Error> {
                wait!(self.builder().lock())
            }

            #[doc = concat!(" ", $waits, " until the mutex is held, or `timeout` passes ([`Error::TimedOut`]).")]
            ///
            /// # Errors
            ///
            /// As [`Mutex::lock`].
            pub $($async)? fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<T, C, $($a)*>, Error> {
                wait!(self.builder().timeout(timeout).lock())
            }

            /// One attempt: `None` when someone else holds the mutex.
            ///
            /// # Errors
            ///
            /// As [`Mutex::lock`].
            pub $($async)? fn try_lock(&self) -> Result<Option<MutexGuard<T, C, $($a)*>>, Error> {
                wait!(self.builder().try_lock())
            }

            /// Options for one acquisition, starting from the client's defaults, the default
            /// value limit ([`DEFAULT_MAX_VALUE`](crate::DEFAULT_MAX_VALUE)) and no value TTL.
            pub fn builder(&self) -> MutexBuilder<'_, T, C, $($a)*> {
                MutexBuilder {
                    mutex: self,
                    request: LockRequest::new(self.client.inner.config.defaults),
                    max_value: rdlock_core::DEFAULT_MAX_VALUE,
                    value_ttl: None,
                }
            }
        }

        $(#[$builder])*
        pub struct MutexBuilder<'a, T, C, $($g)*> {
            mutex: &'a Mutex<T, C, $($a)*>,
            request: LockRequest,
            max_value: u32,
            value_ttl: Option<Duration>,
        }

        impl<T, C, $($g)*> std::fmt::Debug for MutexBuilder<'_, T, C, $($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("MutexBuilder")
                    .field("key", &self.mutex.key)
                    .field("request", &self.request)
                    .field("max_value", &self.max_value)
                    .field("value_ttl", &self.value_ttl)
                    .finish()
            }
        }

        impl<T: Default, C: crate::Codec<T>, $($g)*> MutexBuilder<'_, T, C, $($a)*> {
            crate::api::request_setters!();

            /// The largest encoded value accepted, in bytes (1 to
            /// [`MAX_VALUE_LIMIT`](crate::MAX_VALUE_LIMIT); [`DEFAULT_MAX_VALUE`](crate::DEFAULT_MAX_VALUE)
            /// unless told). A larger write is refused before anything is sent
            /// ([`InvalidInput::ValueTooLarge`](crate::InvalidInput::ValueTooLarge)).
            pub fn max_value(mut self, bytes: u32) -> Self {
                self.max_value = bytes;
                self
            }

            /// How long the value lives after each write. By default it has no TTL: it
            /// outlives the lock, as the user's state.
            pub fn value_ttl(mut self, ttl: Duration) -> Self {
                self.value_ttl = Some(ttl);
                self
            }

            #[doc = concat!(" ", $waits, " until held (or the deadline), and reads the value.")]
            ///
            /// # Errors
            ///
            /// As [`Mutex::lock`].
            pub $($async)? fn lock(self) -> Result<MutexGuard<T, C, $($a)*>, Error> {
                let how = Acquire::Wait { deadline: self.request.deadline($now()) };
                wait!(self.acquire(how))?.ok_or(Error::Closed)
            }

            /// One attempt: `None` when busy.
            ///
            /// # Errors
            ///
            /// As [`Mutex::lock`].
            pub $($async)? fn try_lock(self) -> Result<Option<MutexGuard<T, C, $($a)*>>, Error> {
                wait!(self.acquire(Acquire::Try))
            }

            $($async)? fn acquire(self, how: Acquire) -> Result<Option<MutexGuard<T, C, $($a)*>>, Error> {
                let Self { mutex, request, max_value, value_ttl } = self;
                let resource = Resource::Mutex { max_value, value_ttl };
                let client = &mutex.client;
                let Some(guard) = wait!(client.acquire_resource(&mutex.key, resource, request.options, how))? else {
                    return Ok(None);
                };
                // The grant brought the value; taking it sends nothing.
                let stored = client.inner.state().engine.take_value(guard.id);
                let (value, written_by) = match stored {
                    None => (T::default(), None),
                    Some(stored) => match mutex.codec.decode(&stored.bytes) {
                        Ok(value) => (value, stored.written_by),
                        Err(e) => {
                            // Released before answering, so that the key is free when the
                            // caller hears; nothing is written.
                            let _ = wait!(guard.release());
                            return Err(crate::mutex::decode_error(&mutex.key, e));
                        }
                    },
                };
                Ok(Some(MutexGuard { guard, value, codec: mutex.codec.clone(), written_by, modified: false }))
            }
        }

        $(#[$guard])*
        pub struct MutexGuard<T, C, $($g)*> {
            guard: Guard<$($a)*>,
            value: T,
            codec: std::sync::Arc<C>,
            written_by: Option<u64>,
            modified: bool,
        }

        impl<T, C, $($g)*> std::fmt::Debug for MutexGuard<T, C, $($a)*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("MutexGuard")
                    .field("key", &self.guard.key)
                    .field("fence", &self.guard.fence)
                    .field("written_by", &self.written_by)
                    .field("modified", &self.modified)
                    .finish()
            }
        }

        impl<T, C, $($g)*> std::ops::Deref for MutexGuard<T, C, $($a)*> {
            type Target = T;

            fn deref(&self) -> &T {
                &self.value
            }
        }

        /// Mutable access marks the value modified, so that [`MutexGuard::release`] writes it.
        impl<T, C, $($g)*> std::ops::DerefMut for MutexGuard<T, C, $($a)*> {
            fn deref_mut(&mut self) -> &mut T {
                self.modified = true;
                &mut self.value
            }
        }

        impl<T, C: crate::Codec<T>, $($g)*> MutexGuard<T, C, $($a)*> {
            /// The mutex's key.
            pub fn key(&self) -> &str {
                &self.guard.key
            }

            /// The fencing token, as [`Guard::fence`]: strictly increasing across the mutex's
            /// holders. The value is written with it ([`MutexGuard::written_by`]).
            pub fn fence(&self) -> u64 {
                self.guard.fence
            }

            /// The fence of the holder that wrote the value this guard found (`None`: no value
            /// was stored). A later holder reads the fence of the last write, so that it can
            /// tell whose work it continues.
            pub fn written_by(&self) -> Option<u64> {
                self.written_by
            }

            /// Whether the value was borrowed mutably since it was read or last stored: what
            /// [`MutexGuard::release`] writes back.
            pub fn is_modified(&self) -> bool {
                self.modified
            }

            /// Nothing may trust the lock, or the value read under it, past this instant.
            pub fn valid_until(&self) -> Instant {
                self.guard.valid_until()
            }

            /// Whether the lease is still valid now: cheap, no round trip.
            pub fn is_valid(&self) -> bool {
                self.guard.is_valid()
            }

            /// The lease is lost (as [`Guard::lost`]).
            pub $($async)? fn lost(&self) -> LostReason {
                wait!(self.guard.lost())
            }

            /// An owned, cloneable loss signal for this lock (as [`Guard::loss_signal`]).
            pub fn loss_signal(&self) -> LossSignal {
                self.guard.loss_signal()
            }

            /// Renews the lease now (as [`Guard::extend`]).
            ///
            /// # Errors
            ///
            /// As [`Guard::extend`].
            pub $($async)? fn extend(&self) -> Result<Instant, Error> {
                wait!(self.guard.extend())
            }

            /// Writes the value now, keeping the lock: it is stored with this holder's fence,
            /// only while the lock is ours and no later holder has written, and confirmed by
            /// replicas when the options ask for it. Afterwards the value counts as unmodified.
            ///
            /// # Errors
            ///
            /// [`Error::Encode`] or [`Error::InvalidInput`] (`ValueTooLarge`): nothing was sent;
            /// [`Error::Lost`]: the lease is lost, nothing was written;
            /// [`Error::ReplicationShortfall`]: written on the primary, too few replicas
            /// confirmed; [`Error::Lock`]: refused, or no answer (written or not: unknown).
            pub $($async)? fn store(&mut self) -> Result<(), Error> {
                let bytes = crate::mutex::encode(&*self.codec, &self.guard.key, &self.value)?;
                let (id, loss) = (self.guard.id, self.guard.loss.clone());
                let inner = &self.guard.client.inner;
                let (op, requests) =
                    inner.with_engine(|s, now| crate::mutex::start_write(s, id, bytes, false, &loss, now));
                crate::mutex::stored(wait!(inner.run_until(requests, id, op?, None)))?;
                self.modified = false;
                Ok(())
            }

            /// Releases the mutex, writing the value back first when it was modified (in the
            /// same round trip; otherwise a plain release, nothing written).
            ///
            /// `Ok(Released)`: written (if modified) and released; `Ok(Unknown)`: the server
            /// did not answer in time, so the value may or may not have been written (the
            /// release goes on in the background).
            ///
            /// # Errors
            ///
            /// [`Error::Lost`] when the lease was lost before the release: nothing was written,
            /// the value is whatever the next holder made of it. [`Error::Encode`] or
            /// [`Error::InvalidInput`] (`ValueTooLarge`): nothing was sent, and the lock is
            /// released without writing (call [`MutexGuard::store`] first to keep the lock on
            /// such an error). [`Error::ReplicationShortfall`]: written and released, but too
            /// few replicas confirmed the write. [`Error::Lock`]: the server refused the write
            /// (the lock was released all the same) or the release.
            pub $($async)? fn release(self) -> Result<ReleaseOutcome, Error> {
                let Self { mut guard, value, codec, modified, .. } = self;
                let span = tracing::debug_span!("rdlock.release", key = %guard.key, fence = guard.fence, modified);
                wait!($($async)? {
                    let loss = guard.loss.clone();
                    let inner = guard.client.inner.clone();
                    let id = guard.id;
                    let ((handoffs, op), requests) = if modified {
                        let bytes = crate::mutex::encode(&*codec, &guard.key, &value)?;
                        inner.with_engine(|s, now| {
                            common::begin_release(s, |s| crate::mutex::start_write(s, id, bytes, true, &loss, now))
                        })
                    } else {
                        inner.with_engine(|s, now| common::begin_release(s, |s| common::start_release(s, id, now)))
                    };
                    let event = wait!(inner.run_until(requests, id, op?, None));
                    guard.done = true;
                    let handed = common::forget_released(&mut inner.state(), id, handoffs);
                    after_release!(handed);
                    crate::mutex::released(event, &loss)
                }, span)
            }

            /// Releases the mutex without writing the value, whatever was done to it, and says
            /// what is known of the release (as [`Guard::release`]).
            ///
            /// # Errors
            ///
            /// As [`Guard::release`].
            pub $($async)? fn discard(self) -> Result<ReleaseOutcome, Error> {
                wait!(self.guard.release())
            }
        }
    };
}
pub(crate) use mutex_api;

#[cfg(test)]
mod tests {
    use rdlock_core::{LockError, LostReason, ReleaseOutcome};

    use super::*;

    #[test]
    fn a_release_that_found_the_lease_lost_is_an_error_and_unknown_is_not() {
        let loss = LossCell::default();
        let ev = |outcome| Some(Event::Released { outcome });
        assert!(matches!(released(ev(ReleaseOutcome::Released), &loss), Ok(ReleaseOutcome::Released)));
        assert!(matches!(released(ev(ReleaseOutcome::Unknown), &loss), Ok(ReleaseOutcome::Unknown)));
        assert!(matches!(released(ev(ReleaseOutcome::NotHeld), &loss), Err(Error::Lost(LostReason::NotOwner))));
        loss.set_lost(LostReason::Expired);
        assert!(matches!(released(ev(ReleaseOutcome::NotHeld), &loss), Err(Error::Lost(LostReason::Expired))));
        let short = Some(Event::ReplicationShortfall { acked: 0, wanted: 1 });
        assert!(matches!(released(short, &loss), Err(Error::ReplicationShortfall { acked: 0, wanted: 1 })));
        let failed = Some(Event::Failed(LockError::UnexpectedReply("x".into())));
        assert!(matches!(released(failed, &loss), Err(Error::Lock(_))));
        assert!(matches!(released(None, &loss), Err(Error::Closed)));
    }

    #[test]
    fn a_store_maps_each_answer() {
        assert!(stored(Some(Event::Stored)).is_ok());
        let lost = Some(Event::Lost { reason: LostReason::NotOwner });
        assert!(matches!(stored(lost), Err(Error::Lost(LostReason::NotOwner))));
        let short = Some(Event::ReplicationShortfall { acked: 1, wanted: 2 });
        assert!(matches!(stored(short), Err(Error::ReplicationShortfall { acked: 1, wanted: 2 })));
        assert!(matches!(stored(None), Err(Error::Closed)));
    }

    #[test]
    fn codec_errors_name_the_key() {
        let codec = crate::codec::Bytes;
        let bytes = encode(&codec, "k", &vec![1, 2]).expect("bytes always encode");
        assert_eq!(&bytes[..], &[1, 2]);
        #[derive(Debug, thiserror::Error)]
        #[error("nope")]
        struct Nope;
        let e = decode_error("k", Nope);
        assert!(matches!(&e, Error::Decode { key, .. } if key == "k"), "{e}");
        assert_eq!(e.to_string(), "the value of mutex \"k\" could not be decoded: nope");
    }
}
