//! A counting semaphore for tasks, independent of any runtime: first come, first served, and
//! O(1) per acquire and release however many tasks wait (a mass release queues 100,000).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// `n` permits; tasks beyond them wait their turn in order.
#[derive(Debug)]
pub(super) struct Permits(Mutex<State>);

#[derive(Debug)]
struct State {
    free: usize,
    /// Waiting tasks by ticket, oldest first.
    queue: VecDeque<(u64, Waker)>,
    /// Tickets handed a permit by a release, not yet polled to take it.
    granted: HashSet<u64>,
    next: u64,
}

impl Permits {
    pub(super) fn new(n: usize) -> Self {
        Self(Mutex::new(State { free: n, queue: VecDeque::new(), granted: HashSet::new(), next: 0 }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a permit; it is given back when the returned guard drops.
    pub(super) fn acquire(&self) -> Acquire<'_> {
        Acquire { permits: self, ticket: None }
    }

    /// A permit comes back: to the oldest waiting task, else to the pool.
    fn release(&self) {
        let waker = {
            let mut st = self.state();
            match st.queue.pop_front() {
                Some((ticket, waker)) => {
                    st.granted.insert(ticket);
                    Some(waker)
                }
                None => {
                    st.free += 1;
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The future of [`Permits::acquire`].
#[derive(Debug)]
pub(super) struct Acquire<'a> {
    permits: &'a Permits,
    ticket: Option<u64>,
}

impl<'a> Future for Acquire<'a> {
    type Output = Permit<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit<'a>> {
        let permits = self.permits;
        let mut st = permits.state();
        match self.ticket {
            None if st.free > 0 && st.queue.is_empty() => {
                st.free -= 1;
                Poll::Ready(Permit(permits, false))
            }
            None => {
                let ticket = st.next;
                st.next += 1;
                st.queue.push_back((ticket, cx.waker().clone()));
                drop(st);
                self.ticket = Some(ticket);
                Poll::Pending
            }
            Some(ticket) if st.granted.remove(&ticket) => {
                drop(st);
                self.ticket = None;
                Poll::Ready(Permit(permits, true))
            }
            Some(ticket) => {
                // Polled again before its turn: keep the newest waker. Rare (a select that
                // polls every branch): a scan is fine here.
                if let Some(entry) = st.queue.iter_mut().find(|(t, _)| *t == ticket) {
                    entry.1.clone_from(cx.waker());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else { return };
        let mut st = self.permits.state();
        if st.granted.remove(&ticket) {
            // Given a permit it never took: pass it on.
            drop(st);
            self.permits.release();
        } else if let Some(i) = st.queue.iter().position(|(t, _)| *t == ticket) {
            st.queue.remove(i);
        }
    }
}

/// A permit, given back on drop; whether its task waited for it.
#[derive(Debug)]
pub(super) struct Permit<'a>(&'a Permits, bool);

impl Permit<'_> {
    /// Whether the task waited its turn (no permit was free when it asked).
    pub(super) fn waited(&self) -> bool {
        self.1
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::Permits;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn permits_go_in_order_and_a_cancelled_wait_passes_its_turn_on() {
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let permits = Permits::new(1);
        let mut first = pin!(permits.acquire());
        let Poll::Ready(held) = first.as_mut().poll(&mut cx) else { panic!("a free permit is taken at once") };
        let mut second = Box::pin(permits.acquire());
        let mut third = pin!(permits.acquire());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(third.as_mut().poll(&mut cx).is_pending());
        drop(held);
        // The second was handed the permit; cancelled before it took it, it passes it on.
        drop(second);
        let Poll::Ready(_third) = third.as_mut().poll(&mut cx) else { panic!("the permit reached the next in line") };
        let mut fourth = pin!(permits.acquire());
        assert!(fourth.as_mut().poll(&mut cx).is_pending(), "one permit, still held by the third");
    }
}
