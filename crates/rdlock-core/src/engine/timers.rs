//! Timers: each lock's next wake-up is derived from its phase (so an early call is
//! harmless), kept in one heap with the channels' linger timer and the renewal batches' in
//! flight. Held leases that auto-renew have no timer of their own: the renewal queue's first
//! entry is the engine's wake-up for all of them.

use std::cmp::Reverse;
use std::time::Instant;

use super::lock::{Phase, Step};
use super::{Engine, LockId, TimerKey};
use crate::event::{Event, LostReason};
use crate::machine::Then;
use crate::script::Mode;

impl Engine {
    /// Time has reached `now`: fire every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.latest = Some(self.latest.map_or(now, |t| t.max(now)));
        if self.renewals.first().is_some_and(|&(due, _)| due <= now) {
            self.renew_due(now);
        }
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Linger => {
                    let mut out = Vec::new();
                    // One linger timer at a time: the next one is set here.
                    if let Some(next) = self.subs.expire(now, &mut out) {
                        self.timers.push(Reverse((next, TimerKey::Linger)));
                    }
                    self.transmits.extend(out);
                }
                TimerKey::Batch(lane) => self.batch_timer(lane, now),
                TimerKey::Lock(id) => {
                    let Some(lock) = self.locks.get_mut(&id) else { continue };
                    if lock.timer != Some(at) {
                        continue;
                    }
                    lock.timer = None;
                    self.on_lock_timer(id, now);
                    self.reschedule(id);
                }
                TimerKey::Renewal(req) => self.renewal_overdue(req, now),
            }
        }
    }

    /// When [`Engine::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let renew = self.renewals.first().map(|&(due, _)| due);
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            let live = match key {
                TimerKey::Linger => true,
                TimerKey::Batch(lane) => self.batches.timer_live(&lane, at),
                TimerKey::Lock(id) => self.locks.get(&id).is_some_and(|l| l.timer == Some(at)),
                TimerKey::Renewal(req) => self.pending.contains_key(&req),
            };
            if live {
                return Some(renew.map_or(at, |r| r.min(at)));
            }
            self.timers.pop();
        }
        renew
    }

    fn on_lock_timer(&mut self, id: LockId, now: Instant) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        match &mut lock.phase {
            Phase::Acquiring(a) => {
                let past_deadline = a.deadline.is_some_and(|d| now >= d);
                let op = a.op;
                match a.step {
                    Step::Counting if past_deadline => {
                        self.answer(id, op, Event::TimedOut);
                        self.leave_counting(id, now);
                    }
                    Step::InFlight(_) if past_deadline && !a.abandoned => {
                        a.abandoned = true;
                        self.answer(id, op, Event::TimedOut);
                    }
                    Step::Idle { .. } if past_deadline => {
                        self.answer(id, op, Event::TimedOut);
                        self.send_release(id, Then::Silent, now);
                    }
                    Step::Idle { retry_at } if now >= retry_at => {
                        self.stats.polls += 1;
                        self.send_attempt(id, Mode::Retry, now)
                    }
                    _ => {}
                }
            }
            Phase::Held(l) if l.lost.is_none() && now >= l.valid_until => self.lose(id, LostReason::Expired, false),
            Phase::Held(l) if l.lost.is_none() && l.renewing.is_none() && now >= l.renew_before => self.renew_due(now),
            Phase::Releasing(r) if r.retry_at.is_some_and(|at| now >= at) => self.resend_release(id, now),
            _ => {}
        }
    }

    /// Sets the lock's timer to its phase's next wake-up.
    pub(super) fn reschedule(&mut self, id: LockId) {
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let scheduled = match &lock.phase {
            Phase::Held(l) if l.lost.is_none() && l.renewing.is_none() => self.renewals.contains(&(l.renew_before, id)),
            _ => false,
        };
        if let Some(at) = lock.set_wake(lock.wake_at(scheduled)) {
            self.timers.push(Reverse((at, TimerKey::Lock(id))));
        }
    }
}
