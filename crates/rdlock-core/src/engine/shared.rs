//! Shared mode: keys that clients of other libraries take too. No queue; waiters wake on the
//! key's free notices and keyspace notifications, after a courtesy delay.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::lock::Step;
use super::{Engine, LockId, TimerKey};
use crate::keys::LockKeys;
use crate::options::Sharing;

/// The payload a shared-mode release publishes on the lock's channel.
const FREE: &[u8] = b"free";

impl Engine {
    /// Sets [`crate::EngineConfig::keyspace_db`]: drivers call it once they know whether the server
    /// publishes keyspace notifications, before the first lock.
    pub fn set_keyspace_db(&mut self, db: Option<u32>) {
        self.config.keyspace_db = db;
    }

    /// Tells the engine what the server offers for [`crate::Confirm::Durable`] (a driver
    /// finds it at connect; `None`: unknown, and the server's answer decides). A lock asking
    /// for it from a server that cannot is then refused before anything is sent.
    pub fn set_durability(&mut self, durability: Option<crate::Durability>) {
        self.config.durability = durability;
    }

    /// The keyspace notification channel a waiter on this shared key listens to, if any.
    pub(super) fn keyspace_channel(&self, id: LockId) -> Option<String> {
        let lock = self.locks.get(&id)?;
        let db = self.config.keyspace_db.filter(|_| !self.config.cluster)?;
        (lock.opts.sharing != Sharing::Queue).then(|| LockKeys::keyspace_channel_of(&lock.key, db))
    }

    /// A shared-mode attempt found the key held: wait, listening for the key to be freed.
    pub(super) fn wait_shared(
        &mut self,
        id: LockId,
        holder_ttl: Option<Duration>,
        sent_subscribed: bool,
        now: Instant,
    ) {
        let keyspace = self.keyspace_channel(id);
        let Some(lock) = self.locks.get_mut(&id) else { return };
        let Some(courtesy) = lock.opts.sharing.courtesy() else { return };
        let channel = LockKeys::channel_of(&lock.key);
        let mut opts = lock.opts;
        let Some(a) = lock.acquisition() else { return };
        let freed = std::mem::take(&mut a.waiter.freed);
        if !a.waiter.subscribed {
            a.waiter.subscribed = true;
            self.waiting += 1;
            let mut out = Vec::new();
            self.subs.add(&channel, id, &mut out);
            if let Some(ks) = &keyspace {
                self.subs.add(ks, id, &mut out);
            }
            self.transmits.extend(out);
        }
        let live = self.subs.is_active(&channel) && keyspace.as_ref().is_none_or(|k| self.subs.is_active(k));
        let wait = if freed || (!sent_subscribed && live) {
            // Freed while the attempt was in flight, or subscribed meanwhile (a notice may
            // have slipped between the two): try again, after the courtesy delay.
            self.courtesy_delay(courtesy)
        } else {
            // Without keyspace notifications a foreign release is seen only by polling: poll
            // as often as a foreign client does.
            if keyspace.is_none() {
                opts.poll_cap = opts.poll_cap.min(courtesy);
            }
            let cap = self.poll_interval(&opts).as_millis() as u64;
            let jittered = Duration::from_millis(self.rng.between(cap / 2, cap));
            holder_ttl.map_or(jittered, |t| (t + Duration::from_millis(1)).min(jittered))
        };
        self.set_step(id, Step::Idle { retry_at: now + wait });
    }

    /// A shared key was announced free by a shared-mode release, or deleted or expired (a
    /// keyspace notification): its waiters try again after a courtesy delay each, so that a
    /// foreign client polling every `courtesy` has about the same chance at the key as each
    /// of them. Returns whether the message was such a notice (or another keyspace event).
    pub(super) fn on_free_notice(&mut self, channel: &str, payload: &[u8], now: Instant) -> bool {
        let keyspace = LockKeys::is_keyspace_channel(channel);
        let freed = if keyspace { matches!(payload, b"del" | b"expired" | b"evicted") } else { payload == FREE };
        if !freed {
            return keyspace;
        }
        for id in self.subs.waiters(channel) {
            let Some(lock) = self.locks.get_mut(&id) else { continue };
            let Some(courtesy) = lock.opts.sharing.courtesy() else { continue };
            let Some(a) = lock.acquisition() else { continue };
            match a.step {
                Step::InFlight(_) => a.waiter.freed = true,
                // A wait already due within a courtesy delay is kept: a second notice of the
                // same release (channel and keyspace) must not draw a second, earlier delay.
                Step::Idle { retry_at } if retry_at > now + courtesy => {
                    let at = now + self.courtesy_delay(courtesy);
                    self.set_step(id, Step::Idle { retry_at: at });
                }
                _ => {}
            }
        }
        true
    }

    /// The server refuses the keyspace channel (an ACL without it): stop using keyspace
    /// notifications; shared waits poll instead.
    pub(super) fn keyspace_refused(&mut self, channel: &str, now: Instant) {
        for id in self.subs.waiters(channel) {
            if let Some(at) = self.subs.remove(channel, id, now) {
                self.timers.push(Reverse((at, TimerKey::Linger)));
            }
        }
        self.config.keyspace_db = None;
    }

    fn courtesy_delay(&mut self, courtesy: Duration) -> Duration {
        Duration::from_micros(self.rng.between(0, courtesy.as_micros().min(u128::from(u64::MAX)) as u64))
    }
}
