//! Holding: batched renewals, and what their answers do to each lease.

use std::collections::HashMap;
use std::time::Instant;

use std::cmp::Reverse;

use super::lock::Phase;
use super::{Engine, LockId, Pending, TimerKey};
use crate::command::{RequestId, Route};
use crate::event::{Event, LostReason};
use crate::options::Confirm;
use crate::reply::{Reply, TransportError, acknowledged};
use crate::script::{ExtendArgs, ExtendReply, PermitExtendArgs};

/// What renews in one batch: the route, the replicas its confirmation waits for, whether
/// that confirmation is durable (`WAITAOF`), and whether the batch is of shares.
type RenewalGroup = (Route, u32, bool, bool);

/// A renewal batch being filled: its request's id (its leases are marked with it as they
/// join), its leases and their arguments, its confirmation, and the first end of validity
/// among its leases (its timer).
struct Batch {
    group: RenewalGroup,
    req: RequestId,
    ids: Vec<LockId>,
    args: Renewing,
    confirm: Option<Confirm>,
    expires: Option<Instant>,
}

/// A batch's arguments: locks and shares renew by different scripts.
enum Renewing {
    Locks(ExtendArgs),
    Shares(PermitExtendArgs),
}

impl Batch {
    fn new(group: RenewalGroup, req: RequestId, n: usize) -> Self {
        let args = match group.3 {
            false => Renewing::Locks(ExtendArgs::with_capacity(n)),
            true => Renewing::Shares(PermitExtendArgs::with_capacity(n)),
        };
        Self { group, req, ids: Vec::with_capacity(n), args, confirm: None, expires: None }
    }
}

impl Engine {
    /// Sets [`crate::EngineConfig::set_ifeq`]: drivers call it once they know whether the
    /// server offers `SET ... IFEQ`. Renewals sent after it take the form it says.
    pub fn set_ifeq(&mut self, offered: bool) {
        self.config.set_ifeq = offered;
    }

    /// Renews, in batches, every auto-renewing lock that is due, and with them every lock
    /// whose renewal window has opened.
    ///
    /// One pass over the leases: each is read once, as it joins its batch (its arguments
    /// written, its renewal marked), since 100,000 leases do not stay in the cache between
    /// two passes.
    pub(super) fn renew_due(&mut self, now: Instant) {
        // Locks and shares renew with different scripts: batched apart. In a cluster the route
        // names the slot: a batch is one slot's, on its primary.
        // Filed by group; a lock of the same group as the one before (every lock, on one
        // server) skips the map's hashing.
        let max = self.config.max_renew_batch.max(1);
        let mut batches: Vec<Batch> = Vec::new();
        let mut index: HashMap<RenewalGroup, usize> = HashMap::new();
        // The queue is in order of due time. Every lease due by now goes; past them, leases
        // whose window has opened go too, up to the first one whose window has not (with one
        // TTL for all, the window opens in the same order; with several, a lease passed over
        // here still goes when it is due).
        while let Some(&(due, id)) = self.renewals.first() {
            let lock = self.locks.get_mut(&id);
            let open = lock.as_ref().is_none_or(|lock| match &lock.phase {
                Phase::Held(l) => due <= now || l.renew_after <= now,
                _ => true,
            });
            if !open {
                break;
            }
            self.renewals.pop_first();
            let Some(lock) = lock else { continue };
            let Phase::Held(l) = &mut lock.phase else { continue };
            if l.lost.is_some() || l.renewing.is_some() {
                continue;
            }
            let replicas = self.shards.get(&lock.route.node).and_then(|s| s.replicas).map(|(n, _)| n);
            let wanted = lock.opts.confirm.wanted(replicas).unwrap_or(0);
            // Durable locks renew apart: their confirmation is another command.
            let group = (lock.route, wanted, lock.opts.confirm.is_durable(), lock.resource.share().is_some());
            let i = match batches.last() {
                Some(last) if last.group == group => batches.len() - 1,
                _ => *index.entry(group).or_insert_with(|| batches.len()),
            };
            if i == batches.len() {
                let req = RequestId(self.next_req);
                self.next_req += 1;
                batches.push(Batch::new(group, req, max.min(self.renewals.len() + 1)));
            }
            let b = &mut batches[i];
            match &mut b.args {
                Renewing::Locks(args) => args.push(&lock.key, lock.token, lock.opts.ttl_ms()),
                Renewing::Shares(args) => args.push(&lock.key, lock.token, lock.opts.ttl_ms()),
            }
            b.confirm = b.confirm.or(lock.opts.confirm.timeout().map(|_| lock.opts.confirm));
            l.renewing = Some(b.req);
            b.expires = Some(b.expires.map_or(l.valid_until, |e| e.min(l.valid_until)));
            b.ids.push(id);
            // The batch's timer watches the lease's validity now.
            lock.set_wake(None);
            if b.ids.len() == max {
                // Full: sent now; the group's next lease starts another.
                let req = RequestId(self.next_req);
                self.next_req += 1;
                let full = std::mem::replace(b, Batch::new(group, req, max.min(self.renewals.len())));
                self.send_renewal(full, now);
            }
        }
        batches.sort_by_key(|b| b.ids.first().copied());
        for b in batches {
            if !b.ids.is_empty() {
                self.send_renewal(b, now);
            }
        }
    }

    fn send_renewal(&mut self, b: Batch, now: Instant) {
        let (route, wanted, _, shares) = b.group;
        // Locks on a server with `SET ... IFEQ`: one command each, the same owner check and
        // expiry as the script's (docs/protocol.md, Renewal).
        let by_set = !shares && self.config.set_ifeq;
        let mut commands = match b.args {
            Renewing::Shares(args) => vec![args.command()],
            Renewing::Locks(args) if by_set => args.set_ifeq_commands(),
            Renewing::Locks(args) => vec![args.command()],
        };
        commands.extend(b.confirm.and_then(|c| c.command(wanted)));
        let pending = Pending::Renew { locks: b.ids, sent_at: now, wanted, by_set };
        self.request_as(b.req, route, commands, pending);
        if let Some(at) = b.expires {
            self.timers.push(Reverse((at, TimerKey::Renewal(b.req))));
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
