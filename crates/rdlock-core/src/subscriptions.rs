//! The shared pub/sub connection's channels, counted by the waits that need them.
//!
//! A channel stays subscribed for a while after its last waiter leaves, so that a busy lock
//! does not pay a subscribe (and the re-check that must follow it) on every wait.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::command::Transmit;
use crate::engine::LockId;
use crate::keys::slot;

#[derive(Debug)]
struct Channel {
    /// Waits that need the channel (usually one or a few: a plain list is smallest).
    waiters: Vec<LockId>,
    /// The server confirmed the subscription (and no reset happened since).
    active: bool,
    /// When the last waiter left; the channel is dropped after the linger time.
    idle_since: Option<Instant>,
}

/// Channel reference counts and their subscription state.
#[derive(Debug)]
pub struct Subscriptions {
    channels: HashMap<String, Channel>,
    linger: Duration,
    /// A cluster's: channels are sharded, subscribed on their slot's primary.
    sharded: bool,
}

impl Subscriptions {
    /// An empty table; idle channels are kept for `linger`.
    pub fn new(linger: Duration) -> Self {
        Self { channels: HashMap::new(), linger, sharded: false }
    }

    /// An empty table of sharded channels (a cluster's), each subscribed on the primary of
    /// its slot; idle channels are kept for `linger`.
    pub fn sharded(linger: Duration) -> Self {
        Self { channels: HashMap::new(), linger, sharded: true }
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
        let ch = self.channels.entry(channel.to_owned()).or_insert_with(|| Channel {
            waiters: Vec::new(),
            active: false,
            idle_since: None,
        });
        if !ch.waiters.contains(&waiter) {
            ch.waiters.push(waiter);
        }
        ch.idle_since = None;
    }

    /// Drops a reference; the channel lingers before it is unsubscribed. Returns when the
    /// linger ends, to schedule.
    pub fn remove(&mut self, channel: &str, waiter: LockId, now: Instant) -> Option<Instant> {
        let ch = self.channels.get_mut(channel)?;
        ch.waiters.retain(|&w| w != waiter);
        if ch.waiters.is_empty() {
            ch.idle_since = Some(now);
            return Some(now + self.linger);
        }
        None
    }

    /// Whether the server has confirmed the subscription.
    pub fn is_active(&self, channel: &str) -> bool {
        self.channels.get(channel).is_some_and(|c| c.active)
    }

    /// The waits that need `channel`.
    pub fn waiters(&self, channel: &str) -> Vec<LockId> {
        self.channels.get(channel).map_or_else(Vec::new, |c| c.waiters.clone())
    }

    /// Marks a subscription confirmed; returns the channel's waiters.
    pub fn confirmed(&mut self, channel: &str) -> Vec<LockId> {
        match self.channels.get_mut(channel) {
            Some(ch) => {
                ch.active = true;
                ch.waiters.clone()
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

    /// Unsubscribes channels idle for the linger time.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let linger = self.linger;
        let mut gone = Vec::new();
        self.channels.retain(|name, ch| {
            let done = ch.waiters.is_empty() && ch.idle_since.is_some_and(|t| now >= t + linger);
            if done {
                gone.push(name.clone());
            }
            !done
        });
        out.extend(gone.iter().map(|name| self.unsubscribe(name)));
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
