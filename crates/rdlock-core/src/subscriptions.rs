//! The shared pub/sub connection's channels, counted by the waits that need them.
//!
//! A channel stays subscribed for a while after its last waiter leaves, so that a busy lock
//! does not pay a subscribe (and the re-check that must follow it) on every wait.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::command::Transmit;
use crate::engine::LockId;

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
}

impl Subscriptions {
    /// An empty table; idle channels are kept for `linger`.
    pub fn new(linger: Duration) -> Self {
        Self { channels: HashMap::new(), linger }
    }

    /// Registers a waiter on `channel`, subscribing when the channel is new.
    pub fn add(&mut self, channel: &str, waiter: LockId, out: &mut Vec<Transmit>) {
        let ch = self.channels.entry(channel.to_owned()).or_insert_with(|| {
            out.push(Transmit::Subscribe(channel.to_owned()));
            Channel { waiters: Vec::new(), active: false, idle_since: None }
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
        self.channels.retain(|name, ch| {
            ch.active = false;
            let wanted = !ch.waiters.is_empty();
            if wanted {
                out.push(Transmit::Subscribe(name.clone()));
            }
            wanted
        });
    }

    /// Unsubscribes channels idle for the linger time.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let linger = self.linger;
        self.channels.retain(|name, ch| {
            let done = ch.waiters.is_empty() && ch.idle_since.is_some_and(|t| now >= t + linger);
            if done {
                out.push(Transmit::Unsubscribe(name.clone()));
            }
            !done
        });
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
