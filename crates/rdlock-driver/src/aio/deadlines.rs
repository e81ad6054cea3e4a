//! The response deadlines of a client's exchanges in flight, watched by one task of the
//! client's rather than by a runtime timer per request. A runtime timer per request was
//! measured as a share of each request's client CPU on async-io: every registration wakes its
//! reactor (an `eventfd` write and read, a `timerfd` reset and one more `epoll` wait per
//! request). Here a request writes its deadline into a slot; the watch task sleeps until the
//! earliest deadline in flight and wakes the exchanges past theirs.
//!
//! While requests keep coming, the task keeps a wake-up planned at least one response timeout
//! ahead, so that a request (whose deadline is a response timeout or more from its send)
//! finds it covered and wakes nobody: one wake-up per response timeout, not per request. A
//! period with no request lets the task wait for a signal instead; the first request after
//! it wakes the task once.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::signal::Signal;
use crate::runtime::Runtime;

/// The deadlines in flight, and when the watch task means to wake.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    state: Mutex<State>,
    /// Wakes the watch task: a deadline sooner than it planned, or the client closed.
    pub(super) signal: Signal,
}

#[derive(Debug, Default)]
struct State {
    /// Slots by index; a free slot is `None`.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// When the watch task wakes next (`None`: it waits for a signal, or runs now).
    planned: Option<Instant>,
    /// A deadline was registered since the watch task last looked.
    busy: bool,
    /// The watch task ended (a closed client with nothing in flight): exchanges time
    /// themselves.
    retired: bool,
}

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    expired: bool,
}

/// What the watch task does next.
pub(super) enum Next {
    /// Sleep until then (or a signal).
    At(Instant),
    /// Nothing in flight, nothing lately: wait for a signal.
    Idle,
    /// The client is closed and nothing is in flight: end.
    Retired,
}

impl Deadlines {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `future` until `deadline`: `None` past it.
    pub(super) fn bound<R: Runtime, F: Future + Unpin>(&self, deadline: Instant, future: F) -> Bound<'_, R, F> {
        Bound { future, deadlines: self, deadline, slot: None, own: None, _runtime: PhantomData }
    }

    /// The watch task runs at `now`: every exchange past its deadline is woken to give up;
    /// returns when to run next. `tick`: how far ahead a wake-up stays planned while requests
    /// keep coming (the response timeout, every request's shortest bound).
    pub(super) fn expire(&self, now: Instant, tick: Duration, closed: bool) -> (Vec<Waker>, Next) {
        let mut st = self.state();
        let mut wakers = Vec::new();
        let mut earliest: Option<Instant> = None;
        for slot in st.slots.iter_mut().flatten().filter(|s| !s.expired) {
            if slot.deadline <= now {
                slot.expired = true;
                wakers.extend(slot.waker.take());
            } else {
                earliest = Some(earliest.map_or(slot.deadline, |e| e.min(slot.deadline)));
            }
        }
        // Closed, the task keeps no wake-up for requests to come: it ends as soon as nothing
        // is in flight (it holds the client's state, connections included).
        let next = earliest.or_else(|| (st.busy && !closed).then(|| now + tick));
        st.busy = false;
        st.planned = next;
        let next = match next {
            Some(at) => Next::At(at),
            None if closed => {
                st.retired = true;
                Next::Retired
            }
            None => Next::Idle,
        };
        (wakers, next)
    }
}

/// A boxed runtime timer: only for exchanges sent once the watch task ended.
type OwnTimer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The future of [`Deadlines::bound`]. Its deadline takes a slot only once the exchange is
/// pending (a reply already in needs none), and gives it back when it drops.
pub(super) struct Bound<'a, R, F> {
    future: F,
    deadlines: &'a Deadlines,
    deadline: Instant,
    slot: Option<usize>,
    /// A timer of its own, once the watch task is gone.
    own: Option<OwnTimer>,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime, F> Bound<'_, R, F> {
    /// Whether the deadline has passed: registers the slot (or the waker) otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(own) = &mut self.own {
            return own.as_mut().poll(cx).is_ready();
        }
        let mut st = self.deadlines.state();
        if let Some(i) = self.slot {
            let Some(slot) = st.slots.get_mut(i).and_then(Option::as_mut) else { return true };
            if slot.expired {
                return true;
            }
            match &mut slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            return false;
        }
        if st.retired {
            drop(st);
            self.own = Some(Box::pin(R::sleep_until(self.deadline)));
            return self.own.as_mut().is_some_and(|own| own.as_mut().poll(cx).is_ready());
        }
        let slot = Some(Slot { deadline: self.deadline, waker: Some(cx.waker().clone()), expired: false });
        let i = match st.free.pop() {
            Some(i) => {
                st.slots[i] = slot;
                i
            }
            None => {
                st.slots.push(slot);
                st.slots.len() - 1
            }
        };
        self.slot = Some(i);
        st.busy = true;
        // A wake-up planned at or before the deadline covers it; otherwise (none planned: the
        // task waits for a signal, or runs now) the task must look again.
        let uncovered = st.planned.is_none_or(|p| self.deadline < p);
        drop(st);
        if uncovered {
            self.deadlines.signal.notify();
        }
        false
    }
}

impl<R: Runtime, F: Future + Unpin> Future for Bound<'_, R, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.future).poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.expired(cx) { Poll::Ready(None) } else { Poll::Pending }
    }
}

impl<R, F> Drop for Bound<'_, R, F> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut st = self.deadlines.state();
            st.slots[i] = None;
            st.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

    use super::{Deadlines, Next};
    use crate::runtime::Runtime;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A runtime whose own timers never fire: only the watch may end a bound here.
    struct Inert;
    impl Runtime for Inert {
        fn spawn<F: Future<Output = ()> + Send + 'static>(_future: F) {}
        fn sleep_until(_deadline: Instant) -> impl Future<Output = ()> + Send {
            std::future::pending()
        }
    }

    const TICK: Duration = Duration::from_secs(2);

    fn signalled(d: &Deadlines) -> bool {
        d.signal.take()
    }

    #[test]
    fn an_exchange_past_its_deadline_is_woken_and_ends() {
        let d = Deadlines::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let t0 = Instant::now();
        let deadline = t0 + TICK;
        let mut bound = pin!(d.bound::<Inert, _>(deadline, std::future::pending::<()>()));
        assert!(bound.as_mut().poll(&mut cx).is_pending());
        assert!(signalled(&d), "an idle watch task is told of the first deadline");
        let (woken, next) = d.expire(t0, TICK, false);
        assert!(woken.is_empty());
        assert!(matches!(next, Next::At(at) if at == deadline), "it sleeps until the deadline");
        let (woken, _) = d.expire(deadline, TICK, false);
        woken.into_iter().for_each(Waker::wake);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the exchange is woken once");
        assert_eq!(bound.as_mut().poll(&mut cx), Poll::Ready(None), "and gives up");
    }

    #[test]
    fn requests_under_a_planned_wake_up_wake_nobody_and_an_idle_watch_retires() {
        let d = Deadlines::default();
        let waker = Waker::from(Arc::new(Count::default()));
        let mut cx = Context::from_waker(&waker);
        let t0 = Instant::now();
        // A first request, answered: the watch keeps a wake-up planned one tick ahead.
        {
            let mut first = pin!(d.bound::<Inert, _>(t0 + TICK, std::future::pending::<()>()));
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert!(signalled(&d));
        assert!(matches!(d.expire(t0, TICK, false).1, Next::At(at) if at == t0 + TICK));
        // Requests sent later have later deadlines: covered, no signal.
        for i in 1..=100 {
            let mut next =
                pin!(d.bound::<Inert, _>(t0 + TICK + Duration::from_millis(i), std::future::pending::<()>()));
            assert!(next.as_mut().poll(&mut cx).is_pending());
            assert!(!signalled(&d), "request {i} woke the watch task");
        }
        // A quiet tick: nothing in flight, nothing sent since: wait for a signal.
        assert!(matches!(d.expire(t0 + TICK, TICK, false).1, Next::At(_)), "requests were sent during the tick");
        assert!(matches!(d.expire(t0 + 2 * TICK, TICK, false).1, Next::Idle));
        // Closed with nothing in flight: the task ends, and a later exchange times itself.
        assert!(matches!(d.expire(t0 + 2 * TICK, TICK, true).1, Next::Retired));
        let mut late = pin!(d.bound::<Inert, _>(t0, std::future::pending::<()>()));
        assert!(late.as_mut().poll(&mut cx).is_pending());
        assert!(d.state().slots.iter().all(Option::is_none), "no slot once the watch is gone");
    }
}
