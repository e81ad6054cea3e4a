//! The shared pub/sub connection's channels, counted by the waits that need them.
//!
//! A channel stays subscribed for a while after its last waiter leaves, so that a busy lock
//! does not pay a subscribe (and the re-check that must follow it) on every wait.
//!
//! Every operation costs O(1) per channel it touches, never a scan of the table: a client may
//! wait on 100,000 keys at once, and a scan per hand-off made a mass release quadratic.
//! Idle channels are queued in the order they went idle (the linger is one length for all,
//! so that order is also the order their lingers end), and one timer serves the queue.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::command::Transmit;
use crate::engine::LockId;
use crate::keys::slot;

#[derive(Debug)]
struct Channel {
    /// Waits that need the channel.
    waiters: Waits,
    /// The server confirmed the subscription (and no reset happened since).
    active: bool,
    /// When the last waiter left; the channel is dropped after the linger time.
    idle_since: Option<Instant>,
}

/// The waits on one channel: nearly always one (a client's inbox on a key), kept inline, so
/// that a waiting lock costs its channel no allocation of its own.
#[derive(Debug, Default)]
enum Waits {
    #[default]
    None,
    One(LockId),
    Many(Vec<LockId>),
}

impl Waits {
    fn as_slice(&self) -> &[LockId] {
        match self {
            Waits::None => &[],
            Waits::One(id) => std::slice::from_ref(id),
            Waits::Many(ids) => ids,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn add(&mut self, id: LockId) {
        match self {
            Waits::None => *self = Waits::One(id),
            Waits::One(first) if *first != id => *self = Waits::Many(vec![*first, id]),
            Waits::Many(ids) if !ids.contains(&id) => ids.push(id),
            _ => {}
        }
    }

    fn remove(&mut self, id: LockId) {
        match self {
            Waits::One(first) if *first == id => *self = Waits::None,
            Waits::Many(ids) => ids.retain(|&w| w != id),
            _ => {}
        }
    }
}

/// Channel reference counts and their subscription state.
#[derive(Debug)]
pub struct Subscriptions {
    /// Boxed names: a table slot is two words, not three.
    channels: HashMap<Box<str>, Channel>,
    /// Channels as they went idle, oldest first, with the instant each did: an entry whose
    /// channel was wanted again (or reset) since is stale, and skipped when it comes due.
    idle: VecDeque<(Instant, Box<str>)>,
    linger: Duration,
    /// A cluster's: channels are sharded, subscribed on their slot's primary.
    sharded: bool,
}

impl Subscriptions {
    /// An empty table; idle channels are kept for `linger`.
    pub fn new(linger: Duration) -> Self {
        Self { channels: HashMap::new(), idle: VecDeque::new(), linger, sharded: false }
    }

    /// An empty table of sharded channels (a cluster's), each subscribed on the primary of
    /// its slot; idle channels are kept for `linger`.
    pub fn sharded(linger: Duration) -> Self {
        Self { channels: HashMap::new(), idle: VecDeque::new(), linger, sharded: true }
    }

    fn subscribe(&self, channel: &str) -> Transmit {
        match self.sharded {
            true => Transmit::SubscribeShard { channel: channel.to_owned(), slot: slot(channel) },
            false => Transmit::Subscribe(channel.to_owned()),
        }
    }

    fn unsubscribe(&self, channel: &str) -> Transmit {
        match self.sharded {
            true => Transmit::UnsubscribeShard { channel: channel.to_owned(), slot: slot(channel) },
            false => Transmit::Unsubscribe(channel.to_owned()),
        }
    }

    /// Registers a waiter on `channel`, subscribing when the channel is new.
    pub fn add(&mut self, channel: &str, waiter: LockId, out: &mut Vec<Transmit>) {
        if !self.channels.contains_key(channel) {
            out.push(self.subscribe(channel));
        }
        let ch = self.channels.entry(channel.into()).or_insert_with(|| Channel {
            waiters: Waits::None,
            active: false,
            idle_since: None,
        });
        ch.waiters.add(waiter);
        ch.idle_since = None;
    }

    /// Drops a reference; the channel lingers before it is unsubscribed. Returns when the
    /// linger ends if a timer must be scheduled for it: only when no other channel lingers
    /// (else the timer of the oldest one is already due first, and [`Subscriptions::expire`]
    /// names the next one).
    pub fn remove(&mut self, channel: &str, waiter: LockId, now: Instant) -> Option<Instant> {
        let ch = self.channels.get_mut(channel)?;
        ch.waiters.remove(waiter);
        if !ch.waiters.is_empty() {
            return None;
        }
        ch.idle_since = Some(now);
        let first = self.idle.is_empty();
        self.idle.push_back((now, channel.into()));
        first.then(|| now + self.linger)
    }

    /// Whether the server has confirmed the subscription.
    pub fn is_active(&self, channel: &str) -> bool {
        self.channels.get(channel).is_some_and(|c| c.active)
    }

    /// The waits that need `channel`.
    pub fn waiters(&self, channel: &str) -> Vec<LockId> {
        self.channels.get(channel).map_or_else(Vec::new, |c| c.waiters.as_slice().to_vec())
    }

    /// Marks a subscription confirmed; returns the channel's waiters.
    pub fn confirmed(&mut self, channel: &str) -> Vec<LockId> {
        match self.channels.get_mut(channel) {
            Some(ch) => {
                ch.active = true;
                ch.waiters.as_slice().to_vec()
            }
            None => Vec::new(),
        }
    }

    /// The pub/sub connection was lost: every channel must be subscribed again; idle ones
    /// are forgotten instead.
    pub fn reset(&mut self, out: &mut Vec<Transmit>) {
        self.reset_where(|_| true, out);
    }

    /// The channels of cluster slot `slot` moved to another primary (or the server ended
    /// their subscriptions): each is subscribed again, where the slot now lives; idle ones
    /// are forgotten instead. Until the server confirms, none is [active](Self::is_active).
    pub fn reset_slot(&mut self, slot_moved: u16, out: &mut Vec<Transmit>) {
        self.reset_where(|name| slot(name) == slot_moved, out);
    }

    /// The server ended one channel's subscription: as [`Subscriptions::reset_slot`], for it
    /// alone.
    pub fn reset_channel(&mut self, channel: &str, out: &mut Vec<Transmit>) {
        self.reset_where(|name| name == channel, out);
    }

    fn reset_where(&mut self, affected: impl Fn(&str) -> bool, out: &mut Vec<Transmit>) {
        let mut again = Vec::new();
        self.channels.retain(|name, ch| {
            if !affected(name) {
                return true;
            }
            ch.active = false;
            let wanted = !ch.waiters.is_empty();
            if wanted {
                again.push(name.clone());
            }
            wanted
        });
        out.extend(again.iter().map(|name| self.subscribe(name)));
    }

    /// Unsubscribes channels idle for the linger time; returns when the next linger ends, if
    /// one still runs, to schedule. Costs only the channels that came due.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Option<Instant> {
        while let Some((since, name)) = self.idle.front() {
            let ends = *since + self.linger;
            if now < ends {
                return Some(ends);
            }
            // Still idle since this very entry: not wanted (nor reset) meanwhile.
            let due = self.channels.get(name).is_some_and(|ch| ch.waiters.is_empty() && ch.idle_since == Some(*since));
            if due {
                self.channels.remove(name);
                out.push(self.unsubscribe(name));
            }
            self.idle.pop_front();
        }
        None
    }

    /// Channels currently wanted or lingering.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether no channel is wanted or lingering.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Subscriptions;
    use crate::command::Transmit;
    use crate::engine::LockId;

    fn unsubscribed(out: &[Transmit]) -> Vec<&str> {
        out.iter()
            .filter_map(|t| match t {
                Transmit::Unsubscribe(ch) => Some(ch.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Issue #19: each linger timer unsubscribes the channels that came due and names the
    /// next one; a channel wanted again before its linger ended stays, and one timer at a time
    /// serves every idle channel (before: a timer per channel, each scanning the whole table).
    #[test]
    fn lingers_end_in_order_with_one_timer_at_a_time() {
        let linger = Duration::from_secs(5);
        let mut subs = Subscriptions::new(linger);
        #[allow(clippy::disallowed_methods)] // the test's one clock reading
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut out = Vec::new();
        for (i, ch) in ["a", "b", "c"].into_iter().enumerate() {
            subs.add(ch, LockId(i as u64), &mut out);
        }
        assert_eq!(subs.remove("a", LockId(0), t0), Some(t0 + linger), "the first idle channel sets the timer");
        assert_eq!(subs.remove("b", LockId(1), t0 + ms), None, "the timer already set comes first");
        assert_eq!(subs.remove("c", LockId(2), t0 + 2 * ms), None);
        // "b" is wanted again, and goes idle again later.
        subs.add("b", LockId(3), &mut out);
        assert_eq!(subs.remove("b", LockId(3), t0 + 10 * ms), None);
        out.clear();
        assert_eq!(subs.expire(t0 + linger, &mut out), Some(t0 + ms + linger));
        assert_eq!(unsubscribed(&out), ["a"]);
        out.clear();
        // b's first linger was cut short by its new waiter: only c's ends here.
        assert_eq!(subs.expire(t0 + 2 * ms + linger, &mut out), Some(t0 + 10 * ms + linger));
        assert_eq!(unsubscribed(&out), ["c"]);
        out.clear();
        assert_eq!(subs.expire(t0 + 10 * ms + linger, &mut out), None, "no linger left: no timer");
        assert_eq!(unsubscribed(&out), ["b"]);
        assert!(subs.is_empty());
        // Idle again later: a new first timer.
        subs.add("a", LockId(4), &mut out);
        let t1 = t0 + 20 * linger;
        assert_eq!(subs.remove("a", LockId(4), t1), Some(t1 + linger));
    }
}
