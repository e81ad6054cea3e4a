//! A wake-up flag for one waiting task, independent of any runtime.

use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

/// Set by anyone, awaited by one task; a set before the wait is not lost.
#[derive(Debug, Default)]
pub(super) struct Signal(Mutex<(bool, Option<Waker>)>);

impl Signal {
    pub(super) fn notify(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether it was set since the last look (and clears it), for tests.
    #[cfg(test)]
    pub(super) fn take(&self) -> bool {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).0)
    }

    pub(super) async fn wait(&self) {
        poll_fn(|cx| {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::take(&mut s.0) {
                Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
