//! What the clients do: each worker loops lock → hold → release over the shared keys, with
//! try-locks and waits (with and without deadline), auto-renew on and off, manual extends,
//! cancelled waits, dropped guards and replica confirmation. A mutex's holder reads the value
//! its grant returned and writes back that value with a tag of its own appended: mid-hold
//! sometimes, with the release usually, or not at all (a plain release, or a dropped guard).

use std::sync::Arc;
use std::time::Duration;

use rdlock_core::{Acquire, Confirm, Event, LockId, LockOptions, OpId, Resource, Sharing};

use super::scenario::{Kind, WRONGTYPE_KEY};
use super::world::World;
use super::{MS, at};

#[derive(Clone, Copy, Debug, Default)]
enum State {
    #[default]
    Idle,
    Acquiring {
        lock: LockId,
        ttl_ms: u64,
        auto_renew: bool,
    },
    Holding {
        lock: LockId,
        extend_at: Option<u64>,
        release_at: u64,
        /// A write share that may still be downgraded (once) before it is released.
        writer: bool,
        /// A mutex's mid-hold store, still to come.
        store_at: Option<u64>,
    },
}

/// The caller action an op stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Acquire,
    Release,
    Extend,
    Downgrade,
    Store,
    ReleaseStoring,
}

/// One sequential user of locks inside a client.
#[derive(Debug, Default)]
pub struct Worker {
    state: State,
    /// Invalidates planned steps of an earlier state.
    nonce: u64,
    /// A mutex holder's value: what its grant read, then what it last wrote back.
    value: Vec<u8>,
    /// Values this worker wrote (or tried to), to tag each write apart.
    writes: u64,
}

impl Worker {
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    pub(super) fn bump(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce
    }

    /// The lock this worker waits for, if it is acquiring one.
    pub fn acquiring(&self) -> Option<LockId> {
        match self.state {
            State::Acquiring { lock, .. } => Some(lock),
            _ => None,
        }
    }

    fn lock(&self) -> Option<LockId> {
        match self.state {
            State::Idle => None,
            State::Acquiring { lock, .. } | State::Holding { lock, .. } => Some(lock),
        }
    }
}

impl World {
    /// A planned step of worker `w` of client `c` is due.
    pub(super) fn act(&mut self, c: usize, w: usize, nonce: u64) {
        let worker = &self.clients[c].workers[w];
        if worker.nonce != nonce {
            return;
        }
        let t = at(self.now);
        match worker.state {
            State::Idle if self.now < self.sc.active => self.start(c, w),
            State::Idle => {}
            State::Acquiring { lock, .. } => {
                self.log(|| format!("c{c} cancels {lock:?}"));
                self.clients[c].engine.abandon(lock, t);
                self.clients[c].owed.retain(|_, (l, _)| *l != lock);
                self.checker.on_release_called(c, lock, true);
                self.idle(c, w);
            }
            State::Holding { lock, extend_at, release_at, writer, store_at: Some(x) } if x <= self.now => {
                let value = self.next_value(c, w);
                let op = self.clients[c].engine.store(lock, value, t);
                self.log(|| format!("c{c} stores {lock:?}: {op:?}"));
                match op {
                    Ok(op) => self.owe(c, lock, Some(op), OpKind::Store),
                    Err(e) => self.checker.fail(self.now, format!("client {c}: store of held {lock:?} refused: {e}")),
                }
                self.clients[c].workers[w].state =
                    State::Holding { lock, extend_at, release_at, writer, store_at: None };
                let next = extend_at.unwrap_or(release_at).max(self.now);
                self.plan(c, w, next - self.now);
            }
            State::Holding { lock, extend_at: Some(x), release_at, writer, store_at } if x <= self.now => {
                let op = self.clients[c].engine.extend(lock, t).ok();
                self.owe(c, lock, op, OpKind::Extend);
                let ok = op.is_some();
                self.log(|| format!("c{c} extends {lock:?}: {ok}"));
                self.checker.on_extend(c, lock, ok, self.now);
                self.clients[c].workers[w].state =
                    State::Holding { lock, extend_at: None, release_at, writer, store_at };
                let next = store_at.unwrap_or(release_at).max(self.now);
                self.plan(c, w, next - self.now);
            }
            State::Holding { lock, extend_at, writer: true, store_at, .. } if self.dice.chance(0.4) => {
                // Downgrade instead of releasing, then hold on as a reader for a while.
                let op = self.clients[c].engine.downgrade(lock, t).ok();
                self.owe(c, lock, op, OpKind::Downgrade);
                let ok = op.is_some();
                self.log(|| format!("c{c} downgrades {lock:?}: {ok}"));
                let release_at = self.now + self.dice.range(1, 60) * MS;
                self.clients[c].workers[w].state =
                    State::Holding { lock, extend_at, release_at, writer: false, store_at };
                self.plan(c, w, release_at - self.now);
            }
            State::Holding { lock, .. } => {
                let mutex = self.checker.rec(c, lock).is_some_and(|r| matches!(r.resource, Resource::Mutex { .. }));
                if mutex && self.dice.chance(0.7) {
                    self.release_storing(c, w, lock);
                } else if self.dice.chance(0.85) {
                    self.release(c, lock);
                } else {
                    self.log(|| format!("c{c} drops {lock:?}"));
                    self.clients[c].engine.abandon(lock, t);
                    self.clients[c].owed.retain(|_, (l, _)| *l != lock);
                    self.checker.on_release_called(c, lock, true);
                }
                self.idle(c, w);
            }
        }
    }

    fn release(&mut self, c: usize, lock: LockId) {
        self.log(|| format!("c{c} releases {lock:?}"));
        let released = self.clients[c].engine.release(lock, at(self.now));
        self.released(c, lock, released, OpKind::Release);
    }

    /// A mutex's release that writes its value back first.
    fn release_storing(&mut self, c: usize, w: usize, lock: LockId) {
        let value = self.next_value(c, w);
        self.log(|| format!("c{c} releases {lock:?} storing {value:?}"));
        let released = self.clients[c].engine.release_storing(lock, value, at(self.now));
        self.released(c, lock, released, OpKind::ReleaseStoring);
    }

    fn released(&mut self, c: usize, lock: LockId, op: Result<OpId, rdlock_core::Misuse>, kind: OpKind) {
        match op {
            Ok(op) => {
                // A release ends the lock's pending extension, downgrade or store unanswered
                // (unless its answer was out already).
                let cl = &mut self.clients[c];
                cl.owed.retain(|op, (l, kind)| {
                    *l != lock
                        || !matches!(kind, OpKind::Extend | OpKind::Downgrade | OpKind::Store)
                        || cl.emitted.contains(op)
                });
                self.owe(c, lock, Some(op), kind);
            }
            Err(e) => self.checker.fail(self.now, format!("client {c}: release of held {lock:?} refused: {e}")),
        }
        self.checker.on_release_called(c, lock, false);
    }

    /// The value worker `w` writes next: its value with a tag of its own appended (binary on
    /// purpose: a 0 byte and a 0xff byte around the writer's ids).
    fn next_value(&mut self, c: usize, w: usize) -> Arc<[u8]> {
        let wk = &mut self.clients[c].workers[w];
        wk.writes += 1;
        wk.value.extend_from_slice(&[0, c as u8, w as u8]);
        wk.value.extend_from_slice(&wk.writes.to_le_bytes()[..2]);
        wk.value.push(0xff);
        wk.value.as_slice().into()
    }

    fn idle(&mut self, c: usize, w: usize) {
        self.clients[c].workers[w].state = State::Idle;
        let think = self.dice.range(1, 60) * MS;
        self.plan(c, w, think);
    }

    fn start(&mut self, c: usize, w: usize) {
        let d = &mut self.dice;
        let mut keys: Vec<&str> = self.sc.keys.iter().map(String::as_str).collect();
        if self.sc.wrongtype && d.chance(0.15) {
            keys.push(WRONGTYPE_KEY);
        }
        keys.retain(|k| !self.clients[c].live.contains_key(*k));
        if keys.is_empty() {
            let later = d.range(5, 30) * MS;
            return self.plan(c, w, later);
        }
        let key = keys[d.below(keys.len())].to_owned();
        let ttl_ms = d.range(self.sc.ttl_ms.0, self.sc.ttl_ms.1);
        let replicas = self.sc.replicas.len() as u64;
        let confirm = if d.chance(if replicas > 0 { 0.3 } else { 0.05 }) {
            let timeout = Duration::from_millis(d.range(2, 40.min(ttl_ms - 1)));
            match d.below(3) {
                0 => Confirm::AtLeast { replicas: d.range(1, replicas + 1) as u32, timeout },
                1 => Confirm::All { timeout },
                _ => Confirm::Majority { timeout },
            }
        } else {
            Confirm::None
        };
        let opts = LockOptions {
            ttl: Duration::from_millis(ttl_ms),
            auto_renew: d.chance(0.6),
            confirm,
            poll_cap: Duration::from_millis(d.range(10, 200)),
            sharing: match self.sc.shared {
                Some((lo, hi)) => Sharing::Foreign { courtesy: Duration::from_millis(d.range(lo, hi)) },
                None => Sharing::Queue,
            },
        };
        let deadline = match d.below(10) {
            0..=2 => None,
            3..=7 => Some(Some(self.now + d.range(self.sc.patience_ms.0, self.sc.patience_ms.1) * MS)),
            _ => Some(None),
        };
        let cancel = deadline.is_some() && d.chance(0.1);
        let cancel_after = d.range(1, 300) * MS;
        let how = match deadline {
            None => Acquire::Try,
            Some(dl) => Acquire::Wait { deadline: dl.map(at) },
        };
        let resource = match self.sc.kind(&key) {
            Kind::Lock => Resource::Lock,
            Kind::Semaphore(capacity) if capacity > 1 && self.dice.chance(0.2) => {
                Resource::Permits { capacity, count: self.dice.range(2, u64::from(capacity)) as u32 }
            }
            Kind::Semaphore(capacity) => Resource::Permit { capacity },
            Kind::RwLock if self.dice.chance(0.3) => Resource::Write,
            Kind::RwLock => Resource::Read,
            Kind::Mutex { value_ttl_ms } => Resource::Mutex {
                max_value: rdlock_core::DEFAULT_MAX_VALUE,
                value_ttl: value_ttl_ms.map(Duration::from_millis),
            },
        };
        match self.clients[c].engine.acquire_resource(&key, resource, opts, how, at(self.now)) {
            Ok((lock, op)) => {
                self.owe(c, lock, Some(op), OpKind::Acquire);
                self.log(|| format!("c{c} acquires {lock:?} on {key} {resource:?} {how:?} {opts:?}"));
                self.clients[c].live.insert(key.clone(), lock);
                self.checker.on_acquire(c, lock, &key, resource, opts, deadline, self.now);
                let worker = &mut self.clients[c].workers[w];
                worker.state = State::Acquiring { lock, ttl_ms, auto_renew: opts.auto_renew };
                worker.bump();
                if cancel {
                    self.plan(c, w, cancel_after);
                }
            }
            Err(e) => self.checker.fail(self.now, format!("client {c}: valid acquire of {key} refused: {e}")),
        }
    }

    /// The engine owes an answer to `op`, if the action was accepted.
    fn owe(&mut self, c: usize, lock: LockId, op: Option<OpId>, kind: OpKind) {
        if let Some(op) = op
            && self.clients[c].owed.insert(op, (lock, kind)).is_some()
        {
            self.checker.fail(self.now, format!("client {c}: op {op:?} handed out twice"));
        }
    }

    /// An event carries the op it answers: one that was owed, for its own lock, once. A
    /// notice (no op) is only news nobody asked for: a renewal, or a loss, while no extension
    /// of the lock waits (it would be that extension's answer).
    /// Returns the kind of op answered.
    pub(super) fn on_answer(&mut self, c: usize, lock: LockId, op: Option<OpId>, ev: &Event) -> Option<OpKind> {
        let extending = self.clients[c].owed.values().any(|&(l, kind)| l == lock && kind == OpKind::Extend);
        let mut kind = None;
        let wrong = match op {
            None if extending => Some(format!("{ev:?} of {lock:?} is a notice while an extension waits")),
            None if matches!(ev, Event::Renewed { .. } | Event::Lost { .. }) => None,
            None => Some(format!("{ev:?} of {lock:?} answers no op")),
            Some(op) => match self.clients[c].owed.remove(&op) {
                Some((owner, k)) if owner == lock => {
                    kind = Some(k);
                    None
                }
                Some((owner, _)) => Some(format!("{op:?} of {owner:?} answered for {lock:?}")),
                None => Some(format!("{op:?} answered but not owed (twice, or after its lock was given up)")),
            },
        };
        if let Some(wrong) = wrong {
            self.checker.fail(self.now, format!("client {c}: {wrong}"));
        }
        kind
    }

    /// Once the world is quiet, every live client has had every answer it is owed.
    pub(super) fn check_answered(&mut self) {
        let unanswered: Vec<String> = (self.clients.iter().enumerate())
            .filter(|(_, cl)| cl.alive)
            .flat_map(|(c, cl)| cl.owed.iter().map(move |(op, (lock, _))| format!("c{c} {op:?} of {lock:?}")))
            .collect();
        if !unanswered.is_empty() {
            self.checker.fail(self.now, format!("quiet, yet never answered: {unanswered:?}"));
        }
    }

    /// An event for one of client `c`'s locks moves the worker that owns it along.
    pub(super) fn on_lock_event(&mut self, c: usize, lock: LockId, ev: Event) {
        let Some(w) = self.clients[c].workers.iter().position(|wk| wk.lock() == Some(lock)) else { return };
        match (self.clients[c].workers[w].state, ev) {
            (State::Acquiring { ttl_ms, auto_renew, .. }, Event::Acquired { .. }) => {
                let hold = self.dice.range(1, ttl_ms * 3 / 2) * MS;
                let release_at = self.now + hold;
                let extend_at = (!auto_renew && self.dice.chance(0.4)).then(|| self.now + self.dice.range(0, hold));
                let writer = self.checker.rec(c, lock).is_some_and(|r| r.resource == Resource::Write);
                let mutex = self.checker.rec(c, lock).is_some_and(|r| matches!(r.resource, Resource::Mutex { .. }));
                let mut store_at = None;
                if mutex {
                    let first = self.clients[c].engine.take_value(lock);
                    let again = self.clients[c].engine.take_value(lock).is_some();
                    self.checker.on_value_taken(c, lock, first.as_ref(), again, self.now);
                    self.clients[c].workers[w].value = first.map(|v| v.bytes).unwrap_or_default();
                    store_at = self.dice.chance(0.4).then(|| self.now + self.dice.range(0, hold));
                }
                self.clients[c].workers[w].state = State::Holding { lock, extend_at, release_at, writer, store_at };
                let next = extend_at.into_iter().chain(store_at).min().unwrap_or(release_at);
                self.plan(c, w, next - self.now);
            }
            (State::Acquiring { .. }, _) => self.idle(c, w),
            (State::Holding { .. }, Event::Lost { .. }) => {
                self.release(c, lock);
                self.idle(c, w);
            }
            _ => {}
        }
    }
}
