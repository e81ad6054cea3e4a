//! Holding: batched renewals, and what their answers do to each lease.

use std::collections::HashMap;
use std::time::Instant;

use super::lock::Phase;
use super::{Engine, LockId, Pending};
use crate::command::{RequestId, Route};
use crate::event::{Event, LostReason};
use crate::reply::{Reply, TransportError, acknowledged};
use crate::script::{ExtendArgs, ExtendReply, PermitExtendArgs};
use crate::token::hex;

/// What renews in one batch: the route, the replicas its confirmation waits for, whether
/// that confirmation is durable (`WAITAOF`), and whether the batch is of shares.
type RenewalGroup = (Route, u32, bool, bool);

impl Engine {
    /// Sets [`crate::EngineConfig::set_ifeq`]: drivers call it once they know whether the
    /// server offers `SET ... IFEQ`. Renewals sent after it take the form it says.
    pub fn set_ifeq(&mut self, offered: bool) {
        self.config.set_ifeq = offered;
    }

    /// Renews, in batches, every auto-renewing lock whose renewal window has opened.
    pub(super) fn renew_due(&mut self, now: Instant) {
        let due: Vec<(Instant, LockId)> = self.renewals.range(..=(now, LockId(u64::MAX))).copied().collect();
        // Locks and shares renew with different scripts: batched apart. In a cluster the route
        // names the slot: a batch is one slot's, on its primary.
        // Filed by group; a lock of the same group as the one before (every lock, on one
        // server) skips the map's hashing.
        let mut groups: Vec<(RenewalGroup, Vec<LockId>)> = Vec::new();
        let mut index: HashMap<RenewalGroup, usize> = HashMap::new();
        for entry in due {
            self.renewals.remove(&entry);
            let id = entry.1;
            let Some(lock) = self.locks.get(&id) else { continue };
            let Phase::Held(l) = &lock.phase else { continue };
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
        for id in ids {
            let lock = &self.locks[id];
            match shares {
                false => locks.push(&lock.key, hex(lock.token), lock.opts.ttl_ms()),
                true => permits.push(&lock.key, hex(lock.token), lock.opts.ttl_ms()),
            }
            confirm = confirm.or(lock.opts.confirm.timeout().map(|_| lock.opts.confirm));
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
        let req = self.request(route, commands, pending);
        for &id in ids {
            if let Some(l) = self.locks.get_mut(&id).and_then(|l| l.lease()) {
                l.renewing = Some(req);
            }
            self.reschedule(id);
        }
    }

    /// The held lease of `id` is lost: the extensions waiting for a renewal are answered
    /// with the loss; with none waiting, and unless an answer already `told` it, the loss is a
    /// notice.
    pub(super) fn lose(&mut self, id: LockId, reason: LostReason, told: bool) {
        let Some(l) = self.locks.get_mut(&id).and_then(|l| l.lease()) else { return };
        l.lost = Some(reason);
        self.renewals.remove(&(l.renew_after, id));
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
            let Some(l) = lock.lease() else { continue };
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
                        self.renewals.insert((l.renew_after, id));
                    }
                    let renewed = Event::Renewed { valid_until: l.valid_until };
                    let extends = std::mem::take(&mut l.extends);
                    // An automatic renewal with no extension waiting is news, not an answer.
                    if extends.is_empty() {
                        self.notify(id, renewed.clone());
                    }
                    for op in extends {
                        self.answer(id, op, renewed.clone());
                    }
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
