//! What a quorum client keeps whichever way it waits: the core's [`Quorum`] machine, the
//! answers to callers' ops, each lock's loss, and the channels to keep subscribed on every
//! member. A side feeds it inputs and carries out what it asks ([`Outputs`]).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdlock_core::{
    Confirm, Event, InvalidInput, LockId, LockOptions, LostReason, OpId, Quorum, QuorumOptions, ReleaseOutcome,
    Request, Resource, Sharing, Transmit,
};

use crate::config::ClientConfig;
use crate::error::Error;

/// A client per member URL, with the configuration's TLS; a server named twice (the same host
/// and port, whatever the database or the letter case) is refused. Names that differ but reach
/// one server (an alias, a proxy) cannot be told apart here: members must be distinct servers.
pub(crate) fn member_clients<S: AsRef<str>>(urls: &[S], config: &ClientConfig) -> Result<Vec<redis::Client>, Error> {
    let clients = urls
        .iter()
        .map(|u| crate::tls::apply(config.tls.as_ref(), redis::Client::open(u.as_ref())?))
        .collect::<Result<Vec<_>, Error>>()?;
    let mut seen = BTreeSet::new();
    for client in &clients {
        let addr = client.get_connection_info().addr().to_string().to_ascii_lowercase();
        if !seen.insert(addr.clone()) {
            return Err(InvalidInput::RepeatedMember(addr).into());
        }
    }
    Ok(clients)
}

/// The state behind one quorum client's mutex.
pub(crate) struct QuorumState {
    pub(crate) q: Quorum,
    answers: HashMap<OpId, Event>,
    lost: HashMap<LockId, LostReason>,
    /// Channels every member's pub/sub connection should be subscribed to.
    pub(crate) channels: BTreeSet<String>,
    /// Ops nobody waits for any more (a dropped guard's release): their answers are dropped.
    orphans: BTreeSet<OpId>,
}

/// Requests to send, by member.
pub(crate) type Outputs = Vec<Request>;

impl QuorumState {
    pub(crate) fn new(q: Quorum) -> Self {
        Self { q, answers: HashMap::new(), lost: HashMap::new(), channels: BTreeSet::new(), orphans: BTreeSet::new() }
    }

    /// Drains the machine after an input: requests to send; answers and losses are kept.
    pub(crate) fn drain(&mut self) -> Outputs {
        let mut out = Vec::new();
        while let Some(t) = self.q.poll_transmit() {
            match t {
                Transmit::Request(r) => out.push(r),
                Transmit::Subscribe(ch) => {
                    self.channels.insert(ch);
                }
                Transmit::Unsubscribe(ch) => {
                    self.channels.remove(&ch);
                }
                // A quorum machine subscribes on every member: no shard channels.
                _ => {}
            }
        }
        while let Some(e) = self.q.poll_event() {
            if let Event::Lost { reason } = &e.event {
                self.lost.insert(e.lock, *reason);
            }
            match e.op {
                Some(op) if self.orphans.remove(&op) => {}
                Some(op) => {
                    self.answers.insert(op, e.event);
                }
                None => {}
            }
        }
        out
    }

    /// The answer to `op`, once it is in.
    pub(crate) fn take(&mut self, op: OpId) -> Option<Event> {
        self.answers.remove(&op)
    }

    /// Nobody will wait for `op`: drop its answer.
    pub(crate) fn orphan(&mut self, op: OpId) {
        if self.answers.remove(&op).is_none() {
            self.orphans.insert(op);
        }
    }

    pub(crate) fn lost(&self, id: LockId) -> Option<LostReason> {
        self.lost.get(&id).copied()
    }

    pub(crate) fn forget(&mut self, id: LockId) {
        self.lost.remove(&id);
    }
}

/// A quorum lock's options from a client's [`LockOptions`]: what a quorum of independent
/// primaries cannot offer is refused (see `docs/protocol.md`, "What a quorum client
/// supports").
pub fn quorum_options(opts: &LockOptions) -> Result<QuorumOptions, InvalidInput> {
    opts.validate()?;
    if opts.confirm != Confirm::None {
        return Err(InvalidInput::NotForQuorum("replica confirmation (each member is a lone primary)"));
    }
    if opts.sharing != Sharing::Queue {
        return Err(InvalidInput::NotForQuorum("keys shared with other libraries' clients"));
    }
    Ok(QuorumOptions {
        ttl: opts.ttl,
        auto_renew: opts.auto_renew,
        poll_cap: opts.poll_cap,
        ..QuorumOptions::default()
    })
}

/// A quorum takes locks only: counted resources are refused.
pub fn quorum_resource(resource: Resource) -> Result<(), InvalidInput> {
    match resource {
        Resource::Lock => Ok(()),
        _ => Err(InvalidInput::NotForQuorum("semaphores and read-write locks (counted resources)")),
    }
}

/// What an acquisition's answer means to its caller: `Ok(Some(fence, valid_until))` held,
/// `Ok(None)` busy (a single attempt).
pub(crate) fn acquired(event: Event) -> Result<Option<(u64, Instant)>, Error> {
    match event {
        Event::Acquired { fence, valid_until } => Ok(Some((fence, valid_until))),
        Event::Busy { .. } => Ok(None),
        Event::TimedOut => Err(Error::TimedOut),
        Event::Failed(e) => Err(Error::Lock(e)),
        other => Err(Error::Lock(rdlock_core::LockError::UnexpectedReply(format!("{other:?}")))),
    }
}

/// A quorum guard handed to its caller, unless its lease is no longer `valid` as the caller
/// takes it (the caller ran only after its lease was over: a paused process, a starved
/// task): then dropping the guard releases the lock, and the caller is told
/// [`rdlock_core::LockError::NoValidityLeft`].
pub(crate) fn handed<G>(guard: G, valid: bool) -> Result<Option<G>, Error> {
    if !valid {
        drop(guard);
        return Err(Error::Lock(rdlock_core::LockError::NoValidityLeft));
    }
    Ok(Some(guard))
}

/// What a release's answer means to its caller.
pub(crate) fn released(event: Event) -> Result<ReleaseOutcome, Error> {
    match event {
        Event::Released { outcome } => Ok(outcome),
        Event::Failed(e) => Err(Error::Lock(e)),
        other => Err(Error::Lock(rdlock_core::LockError::UnexpectedReply(format!("{other:?}")))),
    }
}

/// What an extension's answer means to its caller: the new end of validity.
pub(crate) fn extended(event: Event) -> Result<Instant, Error> {
    match event {
        Event::Renewed { valid_until } => Ok(valid_until),
        Event::Lost { reason } => Err(Error::Lost(reason)),
        Event::Failed(e) => Err(Error::Lock(e)),
        other => Err(Error::Lock(rdlock_core::LockError::UnexpectedReply(format!("{other:?}")))),
    }
}

/// How long a side may sleep when the machine has no timer: it wakes on inputs anyway.
pub(crate) const IDLE: Duration = Duration::from_secs(1);
