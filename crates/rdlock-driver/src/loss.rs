//! A held lock's loss signal: set once when the lease is lost, ended when the lock is
//! released; awaited by futures (one waker each), waited on by threads, and handed out as an
//! owned [`LossSignal`].

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(feature = "async")]
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rdlock_core::LostReason;

#[derive(Default)]
struct State {
    lost: Option<LostReason>,
    /// The lock was released (or its guard dropped): nothing is left to lose.
    ended: bool,
    /// Threads in [`LossCell::wait`]: without any, a notification is a system call for
    /// nobody (one per release, on every adapter).
    threads: usize,
    /// One waker per waiting future, by the future's key: a re-poll replaces its entry and a
    /// dropped future removes it, so a select loop cannot grow this.
    #[cfg(feature = "async")]
    wakers: Vec<(u64, Waker)>,
    #[cfg(feature = "async")]
    next_key: u64,
}

/// The shared cell behind a lock's loss signal.
#[derive(Default)]
pub(crate) struct LossCell {
    state: Mutex<State>,
    /// Wakes threads waiting on the signal.
    cond: Condvar,
}

impl fmt::Debug for LossCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("LossCell").field("lost", &st.lost).field("ended", &st.ended).finish()
    }
}

impl LossCell {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease is lost (the first reason stays).
    pub(crate) fn set_lost(&self, reason: LostReason) {
        let mut st = self.state();
        st.lost.get_or_insert(reason);
        self.wake_all(st);
    }

    /// The lock is gone from the client (released or dropped).
    pub(crate) fn end(&self) {
        let mut st = self.state();
        st.ended = true;
        self.wake_all(st);
    }

    #[cfg_attr(not(feature = "async"), allow(unused_mut))]
    fn wake_all(&self, mut st: MutexGuard<'_, State>) {
        #[cfg(feature = "async")]
        let wakers = std::mem::take(&mut st.wakers);
        let threads = st.threads > 0;
        drop(st);
        if threads {
            self.cond.notify_all();
        }
        #[cfg(feature = "async")]
        wakers.into_iter().for_each(|(_, w)| w.wake());
    }

    pub(crate) fn reason(&self) -> Option<LostReason> {
        self.state().lost
    }

    /// Blocks until the lease is lost (`Some`), the lock ends or `until` passes (`None`).
    pub(crate) fn wait(&self, until: Option<Instant>) -> Option<LostReason> {
        let mut st = self.state();
        loop {
            if st.lost.is_some() || st.ended {
                return st.lost;
            }
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return None;
            }
            st.threads += 1;
            st = match left {
                Some(left) => self.cond.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0,
                None => self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            st.threads -= 1;
        }
    }

    /// Completes with the reason once the lease is lost, or `None` once the lock ends.
    #[cfg(feature = "async")]
    pub(crate) fn lost(&self) -> LostFuture<'_> {
        LostFuture { cell: self, key: None }
    }

    /// Futures waiting now (one waker each).
    #[cfg(feature = "async")]
    pub(crate) fn waiting(&self) -> usize {
        self.state().wakers.len()
    }
}

/// Waits on a [`LossCell`]; keeps one waker in it while pending, none once dropped.
#[cfg(feature = "async")]
pub(crate) struct LostFuture<'a> {
    cell: &'a LossCell,
    key: Option<u64>,
}

#[cfg(feature = "async")]
impl std::future::Future for LostFuture<'_> {
    type Output = Option<LostReason>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.cell.state();
        if st.lost.is_some() || st.ended {
            return Poll::Ready(st.lost);
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let key = st.next_key;
                st.next_key += 1;
                key
            }
        };
        match st.wakers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, w)) if w.will_wake(cx.waker()) => {}
            Some((_, w)) => w.clone_from(cx.waker()),
            None => st.wakers.push((key, cx.waker().clone())),
        }
        drop(st);
        self.key = Some(key);
        Poll::Pending
    }
}

#[cfg(feature = "async")]
impl Drop for LostFuture<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut st = self.cell.state();
            if let Some(i) = st.wakers.iter().position(|(k, _)| *k == key) {
                st.wakers.swap_remove(i);
            }
        }
    }
}

/// An owned, cloneable view of one lock's lease, like a cancellation token: move it into
/// another task or thread to stop work there when the lease is lost, while the guard stays
/// where the lock is released.
///
/// It fires at most once, with the reason the lease was lost. Once the lock is released (or
/// its guard dropped) without having been lost, waits on it end with `None`: nothing is
/// left to lose, and a watcher task does not outlive the lock.
#[derive(Clone)]
pub struct LossSignal {
    cell: Arc<LossCell>,
}

impl fmt::Debug for LossSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossSignal").field("lost", &self.reason()).finish()
    }
}

impl LossSignal {
    pub(crate) fn new(cell: Arc<LossCell>) -> Self {
        Self { cell }
    }

    /// Whether the lease has been lost: cheap, no round trip.
    pub fn is_lost(&self) -> bool {
        self.cell.reason().is_some()
    }

    /// Why the lease was lost, if it has been.
    pub fn reason(&self) -> Option<LostReason> {
        self.cell.reason()
    }

    /// Completes with the reason once the lease is lost, or with `None` once the lock is
    /// released (or its guard dropped) without being lost. Cancel-safe; each waiting future
    /// keeps one waker, so it may sit in a select loop.
    #[cfg(feature = "async")]
    pub async fn lost(&self) -> Option<LostReason> {
        self.cell.lost().await
    }

    /// Blocks the thread up to `timeout` for the lease to be lost: the reason if it was,
    /// `None` if it is still held when `timeout` passes or the lock was released meanwhile.
    pub fn wait(&self, timeout: Duration) -> Option<LostReason> {
        self.cell.wait(Some(Instant::now() + timeout))
    }

    /// Blocks the thread until the lease is lost (the reason) or the lock is released
    /// (`None`).
    pub fn wait_forever(&self) -> Option<LostReason> {
        self.cell.wait(None)
    }
}

#[cfg(all(test, feature = "async"))]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Wake;

    struct Noop;

    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    fn poll(f: std::pin::Pin<&mut LostFuture<'_>>) -> Poll<Option<LostReason>> {
        f.poll(&mut Context::from_waker(&Waker::from(Arc::new(Noop))))
    }

    #[test]
    fn one_waker_per_future_and_none_after_drop() {
        let cell = LossCell::default();
        for _ in 0..10_000 {
            let mut f = std::pin::pin!(cell.lost());
            assert!(poll(f.as_mut()).is_pending());
        }
        assert_eq!(cell.waiting(), 0);
        let mut f = std::pin::pin!(cell.lost());
        for _ in 0..10_000 {
            assert!(poll(f.as_mut()).is_pending());
        }
        assert_eq!(cell.waiting(), 1);
        cell.set_lost(LostReason::NotOwner);
        assert_eq!(poll(f.as_mut()), Poll::Ready(Some(LostReason::NotOwner)));
        assert_eq!(cell.waiting(), 0);
    }

    #[test]
    fn ends_with_none_when_released() {
        let cell = LossCell::default();
        let mut f = std::pin::pin!(cell.lost());
        assert!(poll(f.as_mut()).is_pending());
        cell.end();
        assert_eq!(poll(f.as_mut()), Poll::Ready(None));
        assert_eq!(cell.wait(None), None);
    }
}
