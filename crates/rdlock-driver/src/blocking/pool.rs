//! A blocking client's connections of one route, bounded, with the workers' own share.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Most connections a pool opens for callers' own requests; callers beyond wait for one
/// to come back. Unbounded, a thousand threads locking at once each made (and closed) a
/// connection of their own, loading the scripts on each: acquisitions ran ~10x slower, and
/// leases ran out before their renewals got through (issue #16).
pub(super) const MAX_CALLER_CONNS: usize = 32;
/// Most worker threads sending background requests at once, and so the workers' share of
/// connections.
pub(super) const MAX_WORKERS: usize = 4;

/// Connections of one route: a thread takes one for a request and puts it back after, so
/// that threads locking at once do not queue behind each other up to the bound, and wait
/// for a connection beyond it. The workers (renewals, releases of dropped guards) have a
/// share of their own that callers never take: in one shared list, a thousand waiting
/// callers took every connection a worker put back, and renewals queued behind them until
/// the leases ran out (100,000 held locks: 74,357 lost while acquiring).
pub(super) struct Pool<C> {
    shares: [Share<C>; 2],
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self { shares: [Share::new(MAX_CALLER_CONNS), Share::new(MAX_WORKERS)] }
    }
}

/// One share of a pool: its idle connections (each with the epoch of the primary it was made
/// to) and how many it has open, up to its bound.
struct Share<C> {
    conns: Mutex<Conns<C>>,
    /// Signalled when a connection of this share is returned or closed, and a thread waits.
    freed: Condvar,
    bound: usize,
    /// Notifications sent, for the tests to see that none is sent when no thread waits.
    #[cfg(test)]
    notified: std::sync::atomic::AtomicUsize,
}

struct Conns<C> {
    idle: Vec<(u64, C)>,
    /// Connections idle or in use (or being made).
    open: usize,
    /// Threads waiting on `freed`: a notification with none is a system call that wakes no
    /// one, once per request (issue #16).
    waiting: usize,
}

/// What [`Pool::take`] gives: an idle connection, or the right to make one.
pub(super) enum Taken<C> {
    Idle(C),
    New,
}

impl<C> Share<C> {
    fn new(bound: usize) -> Self {
        Self {
            conns: Mutex::new(Conns { idle: Vec::new(), open: 0, waiting: 0 }),
            freed: Condvar::new(),
            bound,
            #[cfg(test)]
            notified: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Wakes a waiting thread, if any, after `conns` changed. No wake-up is lost: a waiter
    /// counts itself under the mutex before it waits (and the wait releases the mutex only
    /// once the thread is queued on `freed`), so `waiting`, read here under the same mutex
    /// after the change, counts every thread that waits without having seen it.
    fn changed(&self, conns: MutexGuard<'_, Conns<C>>) {
        let waiting = conns.waiting > 0;
        drop(conns);
        if waiting {
            #[cfg(test)]
            self.notified.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.freed.notify_one();
        }
    }

    fn conns(&self) -> MutexGuard<'_, Conns<C>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C> Pool<C> {
    fn share(&self, background: bool) -> &Share<C> {
        &self.shares[usize::from(background)]
    }

    /// An idle connection to the primary of `epoch` (those to an older primary are closed),
    /// or the right to make one while under the share's bound; else waits for one, until
    /// `deadline` (`None` then). `background` for the workers' share. With it, whether it
    /// had to wait.
    pub(super) fn take(&self, epoch: u64, background: bool, deadline: Option<Instant>) -> Option<(Taken<C>, bool)> {
        let share = self.share(background);
        let mut conns = share.conns();
        let before = conns.idle.len();
        conns.idle.retain(|(e, _)| *e == epoch);
        conns.open -= before - conns.idle.len();
        let mut waited = false;
        loop {
            if let Some((_, c)) = conns.idle.pop() {
                return Some((Taken::Idle(c), waited));
            }
            if conns.open < share.bound {
                conns.open += 1;
                return Some((Taken::New, waited));
            }
            waited = true;
            let left = match deadline {
                None => None,
                Some(d) => Some(d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero())?),
            };
            conns.waiting += 1;
            conns = match left {
                None => share.freed.wait(conns).unwrap_or_else(|e| e.into_inner()),
                Some(left) => share.freed.wait_timeout(conns, left).unwrap_or_else(|e| e.into_inner()).0,
            };
            conns.waiting -= 1;
        }
    }

    /// A connection made outside [`Pool::take`] (the client's first) joins the callers' share.
    pub(super) fn adopt(&self, epoch: u64, conn: C) {
        self.share(false).conns().open += 1;
        self.put(epoch, conn, false);
    }

    /// A connection taken from the share of `background` comes back.
    pub(super) fn put(&self, epoch: u64, conn: C, background: bool) {
        let share = self.share(background);
        let mut conns = share.conns();
        conns.idle.push((epoch, conn));
        share.changed(conns);
    }

    /// A connection taken (or the right to make one) from the share of `background` ends
    /// without coming back.
    pub(super) fn discard(&self, background: bool) {
        let share = self.share(background);
        let mut conns = share.conns();
        conns.open -= 1;
        share.changed(conns);
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_CALLER_CONNS, MAX_WORKERS, Pool, Taken};

    /// Callers at their bound find no connection for themselves among those the workers put
    /// back, and a worker finds its own waiting for it. Fails with one shared list: the
    /// callers took the workers' connections one by one, until every connection was a
    /// caller's and a worker (renewing leases) had none.
    #[test]
    fn callers_never_take_the_workers_connections() {
        let pool = Pool::<u32>::default();
        let now = Some(std::time::Instant::now());
        for _ in 0..MAX_CALLER_CONNS {
            assert!(matches!(pool.take(0, false, now).map(|t| t.0), Some(Taken::New)));
        }
        for round in 0..=MAX_WORKERS {
            let worker = match pool.take(0, true, now).map(|t| t.0) {
                Some(Taken::New) => round as u32,
                Some(Taken::Idle(c)) => c,
                None => panic!("round {round}: a worker found no connection"),
            };
            pool.put(0, worker, true);
            assert!(pool.take(0, false, now).is_none(), "round {round}: a caller took the workers' connection");
        }
        // Callers' own connections still come back to callers.
        pool.put(0, 100, false);
        assert!(matches!(pool.take(0, false, now).map(|t| t.0), Some(Taken::Idle(100))));
    }

    /// Connections to an older primary are closed when found, freeing their places.
    #[test]
    fn connections_to_an_older_primary_are_not_reused() {
        let pool = Pool::<u32>::default();
        pool.adopt(0, 7);
        assert!(matches!(pool.take(1, false, None).map(|t| t.0), Some(Taken::New)));
        for _ in 1..MAX_CALLER_CONNS {
            assert!(matches!(pool.take(1, false, None).map(|t| t.0), Some(Taken::New)));
        }
        assert!(pool.take(1, false, Some(std::time::Instant::now())).is_none());
        pool.discard(false);
        assert!(matches!(pool.take(1, false, None).map(|t| t.0), Some(Taken::New)));
    }

    fn notified(pool: &Pool<u32>) -> usize {
        pool.share(false).notified.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Blocks until a thread waits on the callers' share (no timing: it counts itself
    /// under the mutex just before it waits).
    fn until_waiting(pool: &Pool<u32>) {
        while pool.share(false).conns().waiting == 0 {
            std::thread::yield_now();
        }
    }

    /// A connection put back or discarded with nobody waiting notifies nobody (a system
    /// call per request that woke no one), and a thread waiting at the bound is still woken
    /// by either, with or without a deadline: no wake-up is lost.
    #[test]
    fn only_a_waiting_thread_is_notified_and_it_always_is() {
        let pool = Pool::<u32>::default();
        for _ in 0..MAX_CALLER_CONNS {
            assert!(matches!(pool.take(0, false, None).map(|t| t.0), Some(Taken::New)));
        }
        pool.put(0, 1, false);
        pool.discard(false);
        assert_eq!(notified(&pool), 0, "notified with nobody waiting");
        // Back at the bound.
        assert!(matches!(pool.take(0, false, None).map(|t| t.0), Some(Taken::Idle(1))));
        assert!(matches!(pool.take(0, false, None).map(|t| t.0), Some(Taken::New)));
        let pool = &pool;
        std::thread::scope(|s| {
            // Woken by `put`, waiting without a deadline.
            let waiter =
                s.spawn(move || pool.take(0, false, None).map(|(t, waited)| (matches!(t, Taken::Idle(2)), waited)));
            until_waiting(pool);
            pool.put(0, 2, false);
            assert_eq!(waiter.join().expect("the waiter"), Some((true, true)));
            // Woken by `discard`, waiting with a deadline far off.
            let far = Some(std::time::Instant::now() + std::time::Duration::from_secs(3600));
            let waiter = s.spawn(move || pool.take(0, false, far).map(|(t, waited)| (matches!(t, Taken::New), waited)));
            until_waiting(pool);
            pool.discard(false);
            assert_eq!(waiter.join().expect("the waiter"), Some((true, true)));
        });
        assert_eq!(notified(pool), 2);
        assert_eq!(pool.share(false).conns().waiting, 0);
    }
}
