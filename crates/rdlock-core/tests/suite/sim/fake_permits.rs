//! The permit scripts (`permit.lua`, `permit_acquire.lua`, `permit_release.lua`,
//! `permit_extend.lua`), interpreted step by step like the lock's: a child of the fake, so
//! it shares its keyspace primitives.

use std::collections::BTreeMap;

use rdlock_core::{Reply, ServerError};

use super::{Effects, Entry, Fake, Grant, QUEUE_TYPE, R, Value, fail, int, ms_arg, nth, parse_ms};

const HOLDERS_TYPE: &str = "holder set holds another type of value";
const SHARES_TYPE: &str = "share table holds another type of value";
const CAP_TYPE: &str = "capacity holds another type of value";
const USED: &str = "#used";
const MAX_CAP: i64 = 2_147_483_647;

/// `count_arg(i)`: 1 to MAX_CAP, no sign, no leading 0.
fn count_arg(s: &str) -> Option<i64> {
    let ok = !s.is_empty() && !s.starts_with('0') && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| s.parse::<i64>().ok()).flatten().filter(|&v| v <= MAX_CAP)
}

/// A queue entry "token:ttl:inbox:weight" as `permit_owner` reads it.
struct Entry4 {
    tok: String,
    ttl: Option<i64>,
    inbox: Option<String>,
    weight: Option<i64>,
}

fn permit_owner(entry: &str) -> Option<Entry4> {
    let parts: Vec<&str> = entry.split(':').collect();
    let [tok, ttl, inbox, w] = parts[..] else { return None };
    if tok.is_empty() {
        return None;
    }
    let ttl = ms_arg(ttl).then(|| ttl.parse::<i64>().ok()).flatten();
    let weight = count_arg(w);
    let inbox = super::inbox_arg(inbox).then(|| inbox.to_owned());
    Some(Entry4 { tok: tok.to_owned(), ttl, inbox, weight })
}

impl Fake {
    /// Server time in ms, as `now_ms()` computes it.
    fn now_ms(&self) -> i64 {
        let (s, us) = self.time();
        (s * 1000 + us / 1000) as i64
    }

    fn type_is(&mut self, key: &str, ok: fn(&Value) -> bool) -> bool {
        self.entry(key).is_none_or(|e| ok(&e.value))
    }

    /// `check_keys()`: nil, or the error to return before any write.
    fn check_permit_keys(&mut self, keys: &[String]) -> R<()> {
        if !self.type_is(&keys[0], |v| matches!(v, Value::Zset(_))) {
            return Err(ServerError::new("WRONGTYPE", format!("RDLOCK {HOLDERS_TYPE}")));
        }
        if !self.type_is(&keys[2], |v| matches!(v, Value::List(_))) {
            return Err(fail(QUEUE_TYPE));
        }
        if !self.type_is(&keys[3], |v| matches!(v, Value::Hash(_))) {
            return Err(fail(SHARES_TYPE));
        }
        if !self.type_is(&keys[4], |v| matches!(v, Value::Str(_))) {
            return Err(fail(CAP_TYPE));
        }
        let f = self.counter(&keys[1])?;
        let queued = self.llen(&keys[2])?;
        if f.is_some_and(|f| f + queued + 1 > super::FENCE_MAX) {
            return Err(fail(super::FENCE_VALUE));
        }
        Ok(())
    }

    fn llen(&mut self, key: &str) -> R<i64> {
        Ok(self.list(key)?.map_or(0, |l| l.len() as i64))
    }

    fn zset(&mut self, key: &str) -> Option<&mut BTreeMap<String, i64>> {
        match self.entry(key) {
            Some(Entry { value: Value::Zset(z), .. }) => Some(z),
            _ => None,
        }
    }

    fn hash(&mut self, key: &str) -> Option<&mut BTreeMap<String, Vec<u8>>> {
        match self.entry(key) {
            Some(Entry { value: Value::Hash(h), .. }) => Some(h),
            _ => None,
        }
    }

    fn zscore(&mut self, key: &str, member: &str) -> Option<i64> {
        self.zset(key).and_then(|z| z.get(member).copied())
    }

    /// `ZADD key score member` (creates the key without expiry).
    fn zadd(&mut self, key: &str, score: i64, member: &str) {
        self.dirty += 1;
        match self.zset(key) {
            Some(z) => {
                z.insert(member.to_owned(), score);
            }
            None => self.put(key, Value::Zset(BTreeMap::from([(member.to_owned(), score)])), None),
        }
    }

    /// `ZREM`; an emptied set is deleted, as Redis does.
    fn zrem(&mut self, key: &str, member: &str) {
        if let Some(z) = self.zset(key) {
            z.remove(member);
            let empty = z.is_empty();
            self.dirty += 1;
            if empty {
                self.keys.remove(key);
            }
        }
    }

    fn hget(&mut self, key: &str, field: &str) -> Option<String> {
        self.hash(key).and_then(|h| h.get(field).map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    fn hset(&mut self, key: &str, field: &str, value: String) {
        let value = value.into_bytes();
        self.dirty += 1;
        match self.hash(key) {
            Some(h) => {
                h.insert(field.to_owned(), value);
            }
            None => self.put(key, Value::Hash(BTreeMap::from([(field.to_owned(), value)])), None),
        }
    }

    fn hdel(&mut self, key: &str, field: &str) {
        if let Some(h) = self.hash(key) {
            h.remove(field);
            let empty = h.is_empty();
            self.dirty += 1;
            if empty {
                self.keys.remove(key);
            }
        }
    }

    fn hincrby(&mut self, key: &str, field: &str, by: i64) {
        let v = self.hget(key, field).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        self.hset(key, field, (v + by).to_string());
    }

    /// `PEXPIRE key ms` with a number (as the scripts pass it).
    fn pexpire_ms(&mut self, key: &str, ms: i64) {
        let _ = self.pexpire(key, &ms.to_string());
    }

    /// `share(tok)`: weight and fence; 0, 0 when unknown.
    fn share(&mut self, shares: &str, tok: &str) -> (i64, i64) {
        let Some(v) = self.hget(shares, tok) else { return (0, 0) };
        match v.split_once(':') {
            Some((w, f)) => (w.parse().unwrap_or(0), f.parse().unwrap_or(0)),
            None => (0, 0),
        }
    }

    /// `drop(tok)`.
    fn drop_holder(&mut self, keys: &[String], tok: &str) {
        let (w, _) = self.share(&keys[3], tok);
        self.zrem(&keys[0], tok);
        self.hdel(&keys[3], tok);
        if w > 0 {
            self.hincrby(&keys[3], USED, -w);
        }
    }

    /// `prune(now)`: drops holders whose deadline passed; the weight in use.
    fn prune(&mut self, keys: &[String], now: i64) -> i64 {
        let dead: Vec<String> = match self.zset(&keys[0]) {
            // ZRANGEBYSCORE -inf now: in score order, then member order.
            Some(z) => {
                let mut d: Vec<(i64, String)> =
                    z.iter().filter(|(_, s)| **s <= now).map(|(m, s)| (*s, m.clone())).collect();
                d.sort();
                d.into_iter().map(|(_, m)| m).collect()
            }
            None => Vec::new(),
        };
        for tok in dead {
            self.drop_holder(keys, &tok);
        }
        self.hget(&keys[3], USED).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Records a grant for the checker and the replication epoch.
    /// Call before the grantee's entry leaves the queue.
    fn note_grant(&mut self, keys: &[String], tok: &str, fence: i64, handoff: bool, fx: &mut Effects<'_>) {
        let ahead = self.ahead_of(&keys[2], tok);
        fx.grants.push(Grant { key: keys[0].clone(), token: tok.to_owned(), fence, handoff, ahead });
    }

    /// `serve(used, cap, mine, claim, now, fence_ttl)`: (used, at_head, served).
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        keys: &[String],
        mut used: i64,
        cap: i64,
        mine: Option<&str>,
        claim: i64,
        now: i64,
        fence_ttl: &str,
        fx: &mut Effects<'_>,
    ) -> R<(i64, bool, i64)> {
        let mut served = 0;
        loop {
            let Some(head) = self.lindex0(&keys[2])? else { return Ok((used, false, served)) };
            let Some(e) = permit_owner(&head).filter(|e| e.weight.is_some()) else {
                self.lpop(&keys[2])?;
                continue;
            };
            let w = e.weight.unwrap_or(0);
            if Some(e.tok.as_str()) == mine {
                return Ok((used, true, served));
            }
            if used + w > cap && self.bug != super::Bug::ShareOverCapacity {
                return Ok((used, false, served));
            }
            served += 1;
            let f = self.bump(&keys[1], fence_ttl)?;
            let heard = match &e.inbox {
                Some(inbox) => fx.publish(format!("{}#rdl:{inbox}", keys[0]), format!("{}:{f}", e.tok)),
                None => 0,
            };
            let px = match e.ttl {
                Some(t) if heard > 0 || t < claim => t,
                _ => claim,
            };
            self.zadd(&keys[0], now + px, &e.tok);
            self.hset(&keys[3], &e.tok, format!("{w}:{f}"));
            self.hincrby(&keys[3], USED, w);
            self.note_grant(keys, &e.tok, f, true, fx);
            self.lpop(&keys[2])?;
            used += w;
        }
    }

    /// `settle(now, cap)`.
    fn settle(&mut self, keys: &[String], now: i64, cap: i64) {
        let last = self.zset(&keys[0]).and_then(|z| z.values().max().copied());
        let qttl = self.pttl(&keys[2]);
        let mut live = 0;
        match last {
            Some(last) => {
                live = last - now + 1;
                self.pexpire_ms(&keys[0], live);
                self.pexpire_ms(&keys[3], live);
            }
            None => self.del(&keys[3]),
        }
        let keep = live.max(qttl);
        if keep > 0 {
            let _ = self.set_px(&keys[4], &cap.to_string(), &keep.to_string());
        } else {
            self.del(&keys[4]);
        }
    }

    /// `first_deadline(now)`.
    fn first_deadline(&mut self, keys: &[String], now: i64) -> i64 {
        let first = self.zset(&keys[0]).and_then(|z| z.values().min().copied());
        first.map_or(-3, |s| (s - now).max(0))
    }

    pub(super) fn permit_acquire(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        for i in 0..5 {
            nth(keys, i)?;
        }
        if args.len() != 9 {
            return Err(fail("permit acquire takes 9 arguments"));
        }
        let (token, ttl, mode) = (&args[0], &args[1], args[2].as_str());
        if token.is_empty() || token.contains(':') {
            return Err(fail("invalid token"));
        }
        if !matches!(mode, "try" | "first" | "retry") {
            return Err(fail("invalid mode"));
        }
        if ![1, 3, 4, 5].iter().all(|&i| ms_arg(&args[i])) {
            return Err(fail("invalid ttl"));
        }
        if !super::inbox_arg(&args[6]) {
            return Err(fail("invalid inbox"));
        }
        let Some(cap) = count_arg(&args[7]) else { return Err(fail("invalid capacity")) };
        let weight = count_arg(&args[8]).filter(|&w| w <= cap).ok_or_else(|| fail("invalid weight"))?;
        self.check_permit_keys(keys)?;
        if let Some(stored) = self.get(&keys[4])?
            && stored != cap.to_string()
        {
            return Err(fail(&format!("capacity mismatch: stored {stored}, asked {cap}")));
        }
        let (qttl, fence_ttl, claim) = (&args[3], &args[4], parse_ms(&args[5])?);
        let ttl_ms = parse_ms(ttl)?;
        let entry = format!("{token}:{ttl}:{}:{weight}", args[6]);
        let now = self.now_ms();
        let used = self.prune(keys, now);
        if self.zscore(&keys[0], token).is_some() {
            self.zadd(&keys[0], now + ttl_ms, token);
            let (_, f) = self.share(&keys[3], token);
            self.settle(keys, now, cap);
            return Ok(Reply::Array(vec![int(1), int(f)]));
        }
        let (used, at_head, _) = self.serve(keys, used, cap, Some(token), claim, now, fence_ttl, fx)?;
        let fits = used + weight <= cap || self.bug == super::Bug::ShareOverCapacity;
        let first = at_head || self.llen(&keys[2])? == 0 || self.bug == super::Bug::ShareBarging;
        if first && fits {
            // admit(token, ttl, weight, now, fence_ttl)
            let f = self.bump(&keys[1], fence_ttl)?;
            self.zadd(&keys[0], now + ttl_ms, token);
            self.hset(&keys[3], token, format!("{weight}:{f}"));
            self.hincrby(&keys[3], USED, weight);
            self.note_grant(keys, token, f, false, fx);
            if at_head {
                self.lpop(&keys[2])?;
            }
            self.settle(keys, now, cap);
            return Ok(Reply::Array(vec![int(1), int(f)]));
        }
        let wait = self.first_deadline(keys, now);
        if mode == "try" {
            self.settle(keys, now, cap);
            return Ok(Reply::Array(vec![int(0), int(wait)]));
        }
        if mode == "first" {
            let n = self.rpush(&keys[2], &entry)?;
            if n == 1 {
                self.pexpire(&keys[2], qttl)?;
            }
            self.settle(keys, now, cap);
            return Ok(Reply::Array(vec![int(0), int(if n == 1 { wait } else { -3 })]));
        }
        if self.lpos(&keys[2], &entry)?.is_none() {
            self.rpush(&keys[2], &entry)?;
        }
        self.pexpire(&keys[2], qttl)?;
        let f = self.counter(&keys[1])?;
        self.settle(keys, now, cap);
        Ok(Reply::Array(vec![int(0), int(wait), int(f.unwrap_or(0))]))
    }

    pub(super) fn permit_release(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        for i in 0..5 {
            nth(keys, i)?;
        }
        if args.len() != 5 {
            return Err(fail("permit release takes 5 arguments"));
        }
        if !ms_arg(&args[2]) || !ms_arg(&args[3]) {
            return Err(fail("invalid ttl"));
        }
        let Some(mut cap) = count_arg(&args[4]) else { return Err(fail("invalid capacity")) };
        self.check_permit_keys(keys)?;
        if let Some(stored) = self.get(&keys[4])? {
            cap = stored.parse().unwrap_or(cap);
        }
        let (token, entry, fence_ttl, claim) = (&args[0], &args[1], &args[2], parse_ms(&args[3])?);
        let now = self.now_ms();
        self.prune(keys, now);
        let unchecked = self.bug == super::Bug::ShareReleaseWithoutOwnerCheck;
        if self.zscore(&keys[0], token).is_none() && !unchecked {
            self.lrem(&keys[2], 0, entry)?;
            self.settle(keys, now, cap);
            return Ok(int(0));
        }
        self.drop_holder(keys, token);
        let mut used = self.hget(&keys[3], USED).and_then(|v| v.parse().ok()).unwrap_or(0);
        if unchecked {
            // As if the caller's share (of the weight in its entry) had been freed.
            used -= entry.rsplit(':').next().and_then(|w| w.parse::<i64>().ok()).unwrap_or(1);
        }
        let (_, _, served) = self.serve(keys, used, cap, None, claim, now, fence_ttl, fx)?;
        self.settle(keys, now, cap);
        Ok(int(if served > 0 { 2 } else { 1 }))
    }

    pub(super) fn permit_extend(&mut self, keys: &[String], args: &[String]) -> R<Reply> {
        if !keys.len().is_multiple_of(3) || args.len() != 2 * (keys.len() / 3) {
            return Err(ServerError::new("RDLOCK", "permit extend takes three keys, a token and a ttl per share"));
        }
        let n = keys.len() / 3;
        if !args[n..].iter().all(|s| ms_arg(s)) {
            return Err(ServerError::new("RDLOCK", "invalid ttl"));
        }
        let now = self.now_ms();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (holders, shares, cap) = (&keys[3 * i], &keys[3 * i + 1], &keys[3 * i + 2]);
            let ttl = parse_ms(&args[n + i])?;
            let owned = self.bug == super::Bug::ExtendWithoutOwnerCheck
                || (self.zscore(holders, &args[i]).is_some_and(|s| s > now)
                    && self.type_is(shares, |v| matches!(v, Value::Hash(_)))
                    && self.entry(shares).is_some()
                    && self.entry(cap).is_some_and(|e| matches!(e.value, Value::Str(_))));
            if owned && self.zset(holders).is_some() {
                self.zadd(holders, now + ttl, &args[i]);
                for k in [holders, shares, cap] {
                    let left = self.pttl(k);
                    if left == -1 || (left >= 0 && left < ttl + 1) {
                        self.pexpire_ms(k, ttl + 1);
                    }
                }
                out.push(int(1));
            } else {
                out.push(int(0));
            }
        }
        Ok(Reply::Array(out))
    }

    pub(super) fn permit_change(&mut self, keys: &[String], args: &[String], fx: &mut Effects<'_>) -> R<Reply> {
        for i in 0..5 {
            nth(keys, i)?;
        }
        if args.len() != 5 {
            return Err(fail("permit change takes 5 arguments"));
        }
        if !ms_arg(&args[2]) || !ms_arg(&args[3]) {
            return Err(fail("invalid ttl"));
        }
        let Some(weight) = count_arg(&args[1]) else { return Err(fail("invalid weight")) };
        let Some(mut cap) = count_arg(&args[4]) else { return Err(fail("invalid capacity")) };
        self.check_permit_keys(keys)?;
        if let Some(stored) = self.get(&keys[4])? {
            cap = stored.parse().unwrap_or(cap);
        }
        let (token, fence_ttl, claim) = (&args[0], &args[2], parse_ms(&args[3])?);
        let now = self.now_ms();
        self.prune(keys, now);
        if self.zscore(&keys[0], token).is_none() {
            self.settle(keys, now, cap);
            return Ok(int(0));
        }
        let (w, f) = self.share(&keys[3], token);
        if weight > w {
            return Err(fail("a share can only shrink"));
        }
        self.hset(&keys[3], token, format!("{weight}:{f}"));
        self.hincrby(&keys[3], USED, weight - w);
        fx.downgrades.push(token.clone());
        let used = self.hget(&keys[3], USED).and_then(|v| v.parse().ok()).unwrap_or(0);
        self.serve(keys, used, cap, None, claim, now, fence_ttl, fx)?;
        self.settle(keys, now, cap);
        Ok(int(1))
    }
}
