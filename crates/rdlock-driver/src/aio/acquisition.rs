//! What an async acquisition awaits. Written by hand rather than as an `async fn`: an async
//! function keeps each of its arguments (twice, once moved) and those of every function it
//! awaits through, for as long as it waits, and 100,000 waiters keep that 100,000 times. This
//! keeps the terms until the first poll, then only what the wait needs, in the same place.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rdlock_core::{Acquire, LockOptions, Resource};

use super::inner::Detached;
use super::{Client, Guard, abandon};
use crate::attempt::TryLock;
use crate::common::Begun;
use crate::error::Error;
use crate::runtime::Runtime;

/// An acquisition of `key`, answered as `T` by `map` (a guard, an optional guard, or the
/// report). Dropped before its answer, it gives the lock up (in the background) and lets
/// the exchange it started finish there.
pub(super) struct Acquisition<'a, R: Runtime, T> {
    client: &'a Client<R>,
    key: Cow<'a, str>,
    state: State,
    map: fn(TryLock<Guard<R>>) -> Result<T, Error>,
    /// `rdlock.acquire`, entered at every poll.
    span: tracing::Span,
}

enum State {
    /// Not polled yet: the caller's terms.
    Start {
        resource: Resource,
        options: LockOptions,
        how: Acquire,
        timeout: Option<Duration>,
    },
    /// The lock is in the engine; the exchange this caller started, until it ends, and the
    /// `rdlock.wait` span.
    Waiting {
        begun: Begun,
        running: Option<Detached>,
        span: tracing::Span,
    },
    Done,
}

impl<'a, R: Runtime, T> Acquisition<'a, R, T> {
    pub(super) fn new(
        client: &'a Client<R>,
        key: Cow<'a, str>,
        (resource, options, how, timeout): (Resource, LockOptions, Acquire, Option<Duration>),
        map: fn(TryLock<Guard<R>>) -> Result<T, Error>,
    ) -> Self {
        let span = tracing::debug_span!("rdlock.acquire", key = &*key);
        Self { client, key, state: State::Start { resource, options, how, timeout }, map, span }
    }
}

impl<R: Runtime, T> Future for Acquisition<'_, R, T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        let inner = &this.client.inner;
        if let State::Start { resource, options, how, timeout } = this.state {
            this.state = State::Done;
            let (begun, requests) = match this.client.begin(&this.key, resource, options, how, timeout) {
                Ok(b) => b,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let running = (!requests.is_empty()).then(|| {
                let inner = inner.clone();
                Box::pin(async move { inner.run(requests).await }) as Detached
            });
            this.state = State::Waiting { begun, running, span: tracing::debug_span!("rdlock.wait") };
        }
        let State::Waiting { begun, running, span } = &mut this.state else {
            // Polled again after its answer.
            return Poll::Ready(Err(Error::Closed));
        };
        let event = match span.in_scope(|| inner.poll_answer(begun.id, begun.op, running, cx)) {
            Poll::Ready(e) => e,
            Poll::Pending => return Poll::Pending,
        };
        let State::Waiting { begun, running, .. } = std::mem::replace(&mut this.state, State::Done) else {
            unreachable!("matched above")
        };
        // What is left of the exchange is no longer this caller's to wait for.
        if let Some(rest) = running {
            R::spawn(rest);
        }
        let answer = this.client.finish(std::mem::take(&mut this.key), &begun, event);
        if !matches!(answer, Ok(TryLock::Acquired(_))) {
            abandon(inner, begun.id);
        }
        Poll::Ready(answer.and_then(this.map))
    }
}

impl<R: Runtime, T> Drop for Acquisition<'_, R, T> {
    fn drop(&mut self) {
        if let State::Waiting { begun, running, .. } = &mut self.state {
            // Cancelled while waiting: the exchange finishes in the background, so that the
            // engine learns its real outcome, and the lock is given up.
            if let Some(f) = running.take() {
                self.client.inner.detach(f);
            }
            abandon(&self.client.inner, begun.id);
        }
    }
}
