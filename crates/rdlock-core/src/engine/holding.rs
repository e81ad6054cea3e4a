//! Holding: batched renewals, and what their answers do to each lease.

use std::collections::HashMap;
use std::time::Instant;

use std::cmp::Reverse;

use super::lock::Phase;
use super::{Engine, LockId, Pending, TimerKey};
use crate::command::{RequestId, Route};
use crate::event::{Event, LostReason};
use crate::reply::{Reply, TransportError, acknowledged};
use crate::script::{ExtendArgs, ExtendReply, PermitExtendArgs};

/// What renews in one batch: the route, the replicas its confirmation waits for, whether
/// that confirmation is durable (`WAITAOF`), and whether the batch is of shares.
type RenewalGroup = (Route, u32, bool, bool);

impl Engine {
    /// Sets [`crate::EngineConfig::set_ifeq`]: drivers call it once they know whether the
    /// server offers `SET ... IFEQ`. Renewals sent after it take the form it says.
    pub fn set_ifeq(&mut self, offered: bool) {
        self.config.set_ifeq = offered;
    }

    /// Renews, in batches, every auto-renewing lock that is due, and with them every lock
    /// whose renewal window has opened.
    pub(super) fn renew_due(&mut self, now: Instant) {
        // Locks and shares renew with different scripts: batched apart. In a cluster the route
        // names the slot: a batch is one slot's, on its primary.
        // Filed by group; a lock of the same group as the one before (every lock, on one
        // server) skips the map's hashing.
        let mut groups: Vec<(RenewalGroup, Vec<LockId>)> = Vec::new();
        let mut index: HashMap<RenewalGroup, usize> = HashMap::new();
        // The queue is in order of due time. Every lease due by now goes; past them, leases
        // whose window has opened go too, up to the first one whose window has not (with one
        // TTL for all, the window opens in the same order; with several, a lease passed over
        // here still goes when it is due).
        while let Some(&(due, id)) = self.renewals.first() {
            let lock = self.locks.get(&id);
            let held = lock.and_then(|lock| match &lock.phase {
                Phase::Held(l) => Some((lock, l)),
                _ => None,
            });
            if held.is_some_and(|(_, l)| due > now && l.renew_after > now) {
                break;
            }
            self.renewals.pop_first();
            let Some((lock, l)) = held else { continue };
            if l.lost.is_some() || l.renewing.is_some() {
                continue;
            }
            let wanted = lock.opts.confirm.wanted(self.replicas(lock.route.node)).unwrap_or(0);
            // Durable locks renew apart: their confirmation is another command.
            let group = (lock.route, wanted, lock.opts.confirm.is_durable(), lock.resource.share().is_some());
            let i = match groups.last() {
                Some((last, _)) if *last == group => groups.len() - 1,
                _ => *index.entry(group).or_insert_with(|| {
                    groups.push((group, Vec::new()));
                    groups.len() - 1
                }),
            };
            groups[i].1.push(id);
        }
        groups.sort_by_key(|(_, ids)| ids[0]);
        for ((route, wanted, _, shares), ids) in groups {
            for chunk in ids.chunks(self.config.max_renew_batch.max(1)) {
                self.send_renewal(route, wanted, shares, chunk, now);
            }
        }
    }

    fn send_renewal(&mut self, route: Route, wanted: u32, shares: bool, ids: &[LockId], now: Instant) {
        let (mut locks, mut permits) =
            (ExtendArgs::with_capacity(ids.len()), PermitExtendArgs::with_capacity(ids.len()));
        let mut confirm = None;
        // The id `request` gives this batch below: each lease is marked as it is read, in
        // one look-up.
        let req = RequestId(self.next_req);
        // The batch's own timer watches its leases' validity while it is in flight.
        let mut expires: Option<Instant> = None;
        for id in ids {
            let Some(lock) = self.locks.get_mut(id) else { continue };
            match shares {
                false => locks.push(&lock.key, lock.token, lock.opts.ttl_ms()),
                true => permits.push(&lock.key, lock.token, lock.opts.ttl_ms()),
            }
            confirm = confirm.or(lock.opts.confirm.timeout().map(|_| lock.opts.confirm));
            // `renew_due` took only held leases without a renewal in flight.
            if let Phase::Held(l) = &mut lock.phase {
                l.renewing = Some(req);
                expires = Some(expires.map_or(l.valid_until, |e| e.min(l.valid_until)));
            }
            lock.set_wake(None);
        }
        // Locks on a server with `SET ... IFEQ`: one command each, the same owner check and
        // expiry as the script's (docs/protocol.md, Renewal).
        let by_set = !shares && self.config.set_ifeq;
        let mut commands = match (shares, by_set) {
            (true, _) => vec![permits.command()],
            (false, true) => locks.set_ifeq_commands(),
            (false, false) => vec![locks.command()],
        };
        commands.extend(confirm.and_then(|c| c.command(wanted)));
        let pending = Pending::Renew { locks: ids.to_vec(), sent_at: now, wanted, by_set };
        let sent = self.request(route, commands, pending);
        debug_assert_eq!(sent, req);
        if let Some(at) = expires {
            self.timers.push(Reverse((at, TimerKey::Renewal(req))));
        }
    }

    /// The timer of renewal batch `req`, still unanswered: every lease of it whose validity
    /// has ended is lost (as a lease's own timer would have found); the others set the next.
    pub(super) fn renewal_overdue(&mut self, req: RequestId, now: Instant) {
        let Some(Pending::Renew { locks, .. }) = self.pending.get(&req) else { return };
        let mut next: Option<Instant> = None;
        for id in locks.clone() {
            let Some(l) = self.locks.get_mut(&id).and_then(|l| l.lease()) else { continue };
            if l.renewing != Some(req) || l.lost.is_some() {
                continue;
            }
            if now >= l.valid_until {
                self.lose(id, LostReason::Expired, false);
                self.reschedule(id);
            } else {
                next = Some(next.map_or(l.valid_until, |n| n.min(l.valid_until)));
            }
        }
        if let Some(at) = next {
            self.timers.push(Reverse((at, TimerKey::Renewal(req))));
        }
    }

    /// The held lease of `id` is lost: the extensions waiting for a renewal are answered
    /// with the loss; with none waiting, and unless an answer already `told` it, the loss is a
    /// notice.
    pub(super) fn lose(&mut self, id: LockId, reason: LostReason, told: bool) {
        let Some(l) = self.locks.get_mut(&id).and_then(|l| l.lease()) else { return };
        l.lost = Some(reason);
        self.renewals.remove(&(l.renew_before, id));
        let extends = std::mem::take(&mut l.extends);
        if extends.is_empty() && !told {
            self.notify(id, Event::Lost { reason });
        }
        for op in extends {
            self.answer(id, op, Event::Lost { reason });
        }
    }

    pub(super) fn on_renew_reply(
        &mut self,
        ids: &[LockId],
        req: RequestId,
        (sent_at, wanted, by_set): (Instant, u32, bool),
        reply: Result<Vec<Reply>, TransportError>,
        now: Instant,
    ) {
        let results = match (reply, by_set) {
            (Ok(r), false) => parse_renewal(&r, ids.len(), wanted),
            (Ok(r), true) => {
                let results = parse_set_renewal(&r, ids.len(), wanted);
                // Refused (a failover to a server without `IFEQ`, an ACL without `SET`): the
                // script from now on; these locks retry with it as for an unknown outcome.
                if results.is_none() && ExtendReply::refused_set(&r[..ids.len().min(r.len())]) {
                    self.config.set_ifeq = false;
                }
                results
            }
            (Err(_), _) => None,
        };
        for (i, &id) in ids.iter().enumerate() {
            let Some(lock) = self.locks.get_mut(&id) else { continue };
            let opts = lock.opts;
            let Phase::Held(l) = &mut lock.phase else { continue };
            if l.renewing != Some(req) {
                continue;
            }
            l.renewing = None;
            if l.lost.is_some() {
                continue;
            }
            match results.as_ref().map(|r| r[i]) {
                Some(true) => {
                    l.renewed(&opts, sent_at);
                    if opts.auto_renew {
                        self.renewals.insert((l.renew_before, id));
                    }
                    let renewed = Event::Renewed { valid_until: l.valid_until };
                    let extends = std::mem::take(&mut l.extends);
                    // The lease's timer, set here rather than by `reschedule`: one look-up
                    // per lease, the common case of a batch of many.
                    let wake = l.wake_at(opts.auto_renew);
                    if let Some(at) = lock.set_wake(wake) {
                        self.timers.push(Reverse((at, TimerKey::Lock(id))));
                    }
                    // An automatic renewal with no extension waiting is news, not an answer.
                    if extends.is_empty() {
                        self.notify(id, renewed);
                        continue;
                    }
                    for op in extends {
                        self.answer(id, op, renewed.clone());
                    }
                    continue;
                }
                Some(false) => self.lose(id, LostReason::NotOwner, false),
                None => {
                    // Unknown outcome: try again soon; validity running out ends it.
                    self.stats.renewals_unanswered += 1;
                    let rng = &mut self.rng;
                    let at = l.retry_renewal(&opts, now, |lo, hi| rng.between(lo, hi));
                    self.renewals.insert((at, id));
                }
            }
            self.reschedule(id);
        }
    }
}

/// Per lock: extended (true) or not ours (false). `None` when the outcome is unknown.
fn parse_renewal(replies: &[Reply], n: usize, wanted: u32) -> Option<Vec<bool>> {
    let results = ExtendReply::parse(replies.first(), n)?;
    confirmed(replies.get(1), wanted).then_some(results)
}

/// [`parse_renewal`] for a batch sent as one `SET ... IFEQ` per lock: their `n` replies,
/// then the confirmation's.
fn parse_set_renewal(replies: &[Reply], n: usize, wanted: u32) -> Option<Vec<bool>> {
    let results = ExtendReply::parse_set(replies.get(..n)?)?;
    confirmed(replies.get(n), wanted).then_some(results)
}

/// Whether the confirmation, when one was wanted, says enough replicas hold the writes: an
/// extension not known to be on them is treated as not done.
fn confirmed(reply: Option<&Reply>, wanted: u32) -> bool {
    wanted == 0 || reply.and_then(|r| acknowledged(r, wanted)).is_some_and(|n| n >= wanted)
}
