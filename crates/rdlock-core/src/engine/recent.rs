//! Releases a primary acknowledged lately, sent again when the primary changes.
//!
//! A failover loses what the old primary acknowledged after the replica it promoted stopped
//! replicating from it, releases included: the key then lives on the new primary with a
//! token nobody holds (the lock held by nobody until its TTL runs out), and a queue entry
//! the release removed is back at the head of the queue, handed the lock by the next release
//! or expiry (for its whole TTL when its client still listens on that key). So each release
//! is remembered for its lock's TTL, after which the key it released has expired wherever
//! it survived, and sent again, owner-checked, to a new primary: a key that still holds the
//! token is released (handed on), a queue entry of it is removed, anything else is left as it
//! is. Tokens are never reused, so a release sent again can never touch another lock.

use std::collections::VecDeque;
use std::time::Instant;

use super::lock::Lock;
use super::releasing::release_command;
use super::{Engine, Pending};
use crate::command::{Command, Node, Route};

/// The remembered releases, oldest first (pruned by their end, which is roughly in order).
#[derive(Debug, Default)]
pub(super) struct Recent {
    releases: VecDeque<Remembered>,
}

#[derive(Debug)]
struct Remembered {
    /// When the key it released has expired everywhere (the lock's TTL after the release).
    until: Instant,
    route: Route,
    command: Command,
}

impl Recent {
    /// `lock` finished after its release was sent: keep its release for the lock's TTL.
    pub(super) fn remember(&mut self, lock: &Lock, client: u64, now: Instant) {
        while self.releases.front().is_some_and(|r| r.until <= now) {
            self.releases.pop_front();
        }
        let until = now.checked_add(lock.opts.ttl).unwrap_or(now);
        // Sent again to a new primary, which may lack `IFEQ` and mostly finds the key gone:
        // never folded.
        let command = release_command(lock, client, None);
        self.releases.push_back(Remembered { until, route: lock.route, command });
    }
}

impl Engine {
    /// The driver follows changes of primary (sentinels; a cluster does from the start):
    /// from now on each release is remembered for its lock's TTL and sent again to a new
    /// primary by [`Engine::handle_primary_changed`] (for a cluster's slot,
    /// [`Engine::handle_slot_moved`]). Off for one server, which never changes: it costs one
    /// command kept per release.
    pub fn remember_releases(&mut self) {
        self.recent.get_or_insert_default();
    }

    /// Sends the remembered releases of `node` (`None`: every node) again, batched per route;
    /// their replies are not awaited by anyone.
    pub(super) fn send_recent_releases(&mut self, node: Option<Node>, now: Instant) {
        let Some(recent) = &mut self.recent else { return };
        recent.releases.retain(|r| r.until > now);
        let batch = self.config.max_renew_batch.max(1);
        let mut requests: Vec<(Route, Vec<Command>)> = Vec::new();
        for r in recent.releases.iter().filter(|r| node.is_none_or(|n| r.route.node == n)) {
            match requests.iter_mut().find(|(route, c)| *route == r.route && c.len() < batch) {
                Some((_, commands)) => commands.push(r.command.clone()),
                None => requests.push((r.route, vec![r.command.clone()])),
            }
        }
        for (route, commands) in requests {
            self.request(route, commands, Pending::Resent);
        }
    }
}
