//! The response deadlines of the exchanges in flight, watched by the client's driver task
//! rather than by a timer each. A runtime timer per request was measured as a share of each
//! request's client CPU: with async-io, every registration wakes the reactor (an `eventfd`
//! write and read, a `timerfd` reset and one more `epoll` wait per request); with tokio, a
//! wheel insert and removal under its lock. Here a request takes a slot in a list, and the
//! driver, which sleeps until the earliest deadline anyway, wakes the ones past theirs.

use std::future::{Future, poll_fn};
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::runtime::Runtime;

/// The deadlines in flight, and when the driver means to wake.
#[derive(Debug, Default)]
pub(super) struct Deadlines(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// Slots by index; a free slot is `None`.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// When the driver wakes next (`None`: it is not planned yet, or it runs now).
    planned: Option<Instant>,
    /// The driver ended (a closed client with nothing left): requests time themselves.
    retired: bool,
}

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    expired: bool,
}

/// One exchange's deadline, given back on drop. `sooner` says the driver must be woken to
/// plan for it.
pub(super) struct Watch<'a> {
    deadlines: &'a Deadlines,
    /// The slot, or `None` once the driver is gone.
    index: Option<usize>,
    deadline: Instant,
    pub(super) sooner: bool,
}

impl Deadlines {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `deadline` for one exchange.
    pub(super) fn watch(&self, deadline: Instant) -> Watch<'_> {
        let mut st = self.state();
        if st.retired {
            return Watch { deadlines: self, index: None, deadline, sooner: false };
        }
        let slot = Some(Slot { deadline, waker: None, expired: false });
        let index = match st.free.pop() {
            Some(i) => {
                st.slots[i] = slot;
                i
            }
            None => {
                st.slots.push(slot);
                st.slots.len() - 1
            }
        };
        // A planned wake-up at or before the deadline covers it; after it (or none planned
        // while the driver sleeps on an engine timer only), the driver must plan again.
        let sooner = st.planned.is_some_and(|p| deadline < p);
        Watch { deadlines: self, index: Some(index), deadline, sooner }
    }

    /// The driver is about to sleep until `wake` (its engine's next timer): returns when it
    /// must wake instead, the earliest of that and every deadline in flight.
    pub(super) fn plan(&self, wake: Instant) -> Instant {
        let mut st = self.state();
        let earliest = st.slots.iter().flatten().filter(|s| !s.expired).map(|s| s.deadline).min();
        let wake = earliest.map_or(wake, |d| d.min(wake));
        st.planned = Some(wake);
        wake
    }

    /// The driver runs at `now`: every exchange past its deadline is woken to give up.
    pub(super) fn expire(&self, now: Instant) {
        let wakers: Vec<Waker> = {
            let mut st = self.state();
            st.planned = None;
            st.slots
                .iter_mut()
                .flatten()
                .filter(|s| !s.expired && s.deadline <= now)
                .filter_map(|s| {
                    s.expired = true;
                    s.waker.take()
                })
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The driver may end if nothing is watched; from then on, exchanges time themselves.
    pub(super) fn retire(&self) -> bool {
        let mut st = self.state();
        st.retired = st.slots.iter().all(Option::is_none);
        st.retired
    }
}

impl Watch<'_> {
    /// Runs `future` until the deadline: `None` past it.
    pub(super) async fn bound<R: Runtime, T>(&self, future: impl Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(future.await) }, async {
            self.expired::<R>().await;
            None
        })
        .await
    }

    /// Completes once the deadline has passed: when the driver says so, or by a timer of its
    /// own once the driver is gone.
    pub(super) async fn expired<R: Runtime>(&self) {
        let Some(index) = self.index else { return R::sleep_until(self.deadline).await };
        poll_fn(|cx| {
            let mut st = self.deadlines.state();
            let Some(slot) = st.slots.get_mut(index).and_then(Option::as_mut) else { return Poll::Ready(()) };
            if slot.expired {
                return Poll::Ready(());
            }
            match &mut slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            let mut st = self.deadlines.state();
            st.slots[i] = None;
            st.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    use super::Deadlines;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Registers `waker` for a watch, as its expiry's poll does: whether it has expired.
    fn expired(watch: &super::Watch<'_>, waker: &Waker) -> bool {
        let index = watch.index.expect("watched");
        let mut st = watch.deadlines.state();
        let slot = st.slots[index].as_mut().expect("a live slot");
        slot.waker = Some(waker.clone());
        slot.expired
    }

    #[test]
    fn the_driver_plans_for_the_earliest_deadline_and_wakes_only_those_past_it() {
        let deadlines = Deadlines::default();
        let now = Instant::now();
        let (soon, later) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
        let a = deadlines.watch(later);
        assert!(!a.sooner, "nothing planned yet: the driver plans before it sleeps");
        assert_eq!(deadlines.plan(now + Duration::from_secs(10)), later);
        let b = deadlines.watch(soon);
        assert!(b.sooner, "earlier than the planned wake-up: the driver must plan again");
        assert!(!deadlines.watch(now + Duration::from_secs(3)).sooner, "covered by the plan");
        assert_eq!(deadlines.plan(now + Duration::from_secs(10)), soon);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert!(!expired(&a, &waker) && !expired(&b, &waker));
        deadlines.expire(soon);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "only the exchange past its deadline is woken");
        assert!(expired(&b, &waker) && !expired(&a, &waker));
        assert!(!deadlines.retire(), "a driver watching exchanges stays");
        drop((a, b));
        assert!(deadlines.retire());
        assert!(deadlines.watch(soon).index.is_none(), "once the driver is gone, a request times itself");
    }
}
