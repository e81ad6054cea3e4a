//! One test per transition of the engine, driven by hand: what it sends, what it reports,
//! and when it wants to be woken.

use std::time::{Duration, Instant};

use rdlock_core::{
    Acquire, Command, Confirm, Engine, EngineConfig, Event, InvalidInput, LockError, LockId, LockKeys, LockOptions,
    LostReason, MAX_TTL, MIN_TTL, Misuse, OpId, ReleaseOutcome, Reply, Request, RequestId, Route, Script, Sharing,
    Transmit, TransportError, Warning,
};
use rdlock_core::{Class, Durability, Node, NotDurable, Resource, ServerError, StoredValue, slot, value_key};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The channel of `key` that shared-mode releases announce a free key on.
fn channel(key: &str) -> String {
    LockKeys::new(key).expect("a valid key").channel
}

/// The inbox hand-offs on `key` reach the test's engine at (its client id comes from its seed).
fn inbox(key: &str) -> String {
    Engine::with_test_seed(EngineConfig::default(), 7).inbox_of(key).expect("a valid key")
}

fn opts(ttl_ms: u64) -> LockOptions {
    LockOptions {
        ttl: ms(ttl_ms),
        auto_renew: false,
        confirm: Confirm::None,
        poll_cap: ms(100),
        ..LockOptions::default()
    }
}

fn pair(a: i64, b: i64) -> Vec<Reply> {
    vec![Reply::Array(vec![Reply::Int(a), Reply::Int(b)])]
}

/// An engine, a hand-moved clock, and helpers to drain and answer it.
struct H {
    e: Engine,
    t0: Instant,
    now: Instant,
    subs: Vec<Transmit>,
}

impl H {
    fn new() -> Self {
        Self::with(EngineConfig::default())
    }

    fn with(config: EngineConfig) -> Self {
        #[allow(clippy::disallowed_methods)] // the test's one clock reading; time then moves by hand
        let t0 = Instant::now();
        Self { e: Engine::with_test_seed(config, 7), t0, now: t0, subs: Vec::new() }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Requests sent since the last call; (un)subscriptions are kept in `subs`.
    fn sent(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(t) = self.e.poll_transmit() {
            match t {
                Transmit::Request(r) => out.push(r),
                other => self.subs.push(other),
            }
        }
        out
    }

    /// Exactly one request was sent; returns it.
    fn one(&mut self) -> Request {
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1, "expected one request, got {sent:?}");
        sent.remove(0)
    }

    fn events(&mut self) -> Vec<Event> {
        self.answers().into_iter().map(|(_, e)| e).collect()
    }

    /// The events with the op each answers (`None`: a notice).
    fn answers(&mut self) -> Vec<(Option<OpId>, Event)> {
        std::iter::from_fn(|| self.e.poll_event()).map(|e| (e.op, e.event)).collect()
    }

    fn reply(&mut self, req: &Request, replies: Vec<Reply>) {
        self.e.handle_reply(req.id, Ok(replies), self.now).expect("a pending request");
    }

    fn fail(&mut self, req: &Request) {
        self.e.handle_reply(req.id, Err(TransportError::Timeout), self.now).expect("a pending request");
    }

    fn acquire(&mut self, key: &str, o: LockOptions, how: Acquire) -> LockId {
        self.e.acquire(key, o, how, self.now).expect("valid input").0
    }

    /// Moves to the engine's next timer and fires it.
    fn fire(&mut self) {
        let at = self.e.poll_timeout().expect("a timer");
        assert!(at >= self.now, "timer in the past");
        self.now = at;
        self.e.handle_timeout(self.now);
    }

    /// A held lock on `key`, acquired now.
    fn held(&mut self, key: &str, o: LockOptions) -> (LockId, Request) {
        let id = self.acquire(key, o, Acquire::Wait { deadline: None });
        let req = self.one();
        self.reply(&req, pair(1, 10));
        assert!(matches!(self.events()[..], [Event::Acquired { fence: 10, .. }]));
        (id, req)
    }

    /// A wait queued behind another holder, its subscription confirmed and re-checked.
    fn queued(&mut self, key: &str, o: LockOptions, deadline: Option<Instant>) -> (LockId, String) {
        let id = self.acquire(key, o, Acquire::Wait { deadline });
        let first = self.one();
        assert_eq!(args(&first)[2], "first");
        self.reply(&first, pair(0, -3));
        let channel = inbox(key);
        assert!(self.sent().is_empty(), "waits for the subscription");
        assert_eq!(self.subs, vec![Transmit::Subscribe(channel.clone())]);
        self.e.handle_subscribed(&channel, self.now);
        self.rechecked();
        (id, token(&first))
    }

    /// Answers the re-check that follows a subscription: another holds the lock. A plain lock
    /// re-checks with `confirm.lua` (counter 1, our entry queued); others with a whole retry.
    fn rechecked(&mut self) {
        let recheck = self.one();
        match script(&recheck).0 {
            Script::Confirm => self.reply(&recheck, vec![Reply::Array(vec![Reply::Int(-1)])]),
            _ => {
                assert_eq!(args(&recheck)[2], "retry");
                self.reply(&recheck, pair(0, 500));
            }
        }
        assert!(self.events().is_empty());
    }
}

fn script(req: &Request) -> (Script, Vec<String>, Vec<String>) {
    match &req.commands[0] {
        Command::Script { script, keys, args } => (*script, keys.to_vec(), args.to_vec()),
        other => panic!("not a script: {other:?}"),
    }
}

fn args(req: &Request) -> Vec<String> {
    script(req).2
}

fn token(req: &Request) -> String {
    args(req)[0].clone()
}

// ---------------------------------------------------------------- acquiring

#[test]
fn acquire_sends_one_script_and_reports_acquired() {
    let mut h = H::new();
    let o = opts(1000);
    h.acquire("orders", o, Acquire::Wait { deadline: None });
    let req = h.one();
    assert_eq!(req.route, Route::COMMANDS);
    let (s, keys, args) = script(&req);
    assert_eq!(s, Script::Acquire);
    let names = LockKeys::new("orders").expect("a valid key");
    assert_eq!(keys, [names.lock, names.fence, names.queue]);
    assert_eq!(args[1..3], ["1000".to_owned(), "first".to_owned()]);
    let sent_at = h.now;
    h.advance(ms(5));
    h.reply(&req, pair(1, 42));
    assert_eq!(h.events(), vec![Event::Acquired { fence: 42, valid_until: o.valid_until(sent_at) }]);
    assert!(h.subs.is_empty(), "no subscription when the lock was free");
}

#[test]
fn try_lock_reports_busy_without_queuing() {
    let mut h = H::new();
    let id = h.acquire("orders", opts(1000), Acquire::Try);
    let req = h.one();
    assert_eq!(args(&req)[2], "try");
    h.reply(&req, pair(0, 1500));
    assert_eq!(h.events(), vec![Event::Busy { holder_ttl: Some(ms(1500)) }]);
    assert_eq!(h.e.lock_info(id), None, "finished");
    assert!(h.sent().is_empty() && h.subs.is_empty());
}

#[test]
fn a_heard_hand_off_is_held_at_once_from_the_last_attempt_that_saw_another_holder() {
    // Heard on our inbox, the release set the key to our token for our whole TTL, after the
    // re-check (the latest attempt that found another holder) was sent: we hold it with no
    // round trip, valid from that re-check. (Before, every hand-off waited for a confirmation.)
    let mut h = H::new();
    let o = opts(1000);
    let (_, tok) = h.queued("orders", o, None);
    let rechecked_at = h.now;
    h.advance(ms(30));
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(rechecked_at) }]);
    assert!(h.sent().is_empty(), "no confirmation round trip");
}

impl H {
    /// Releases `id` and answers its one request with `replies`.
    fn release_answered(&mut self, id: LockId, replies: Vec<Reply>) {
        self.e.release(id, self.now).expect("held");
        let release = self.one();
        self.reply(&release, replies);
    }
}

/// A release's reply when a connection heard its hand-off: `{2, channel, "token:fence"}`.
fn announced(channel: &str, message: &str) -> Vec<Reply> {
    vec![Reply::Array(vec![
        Reply::Int(2),
        Reply::Data(channel.as_bytes().to_vec()),
        Reply::Data(message.as_bytes().to_vec()),
    ])]
}

#[test]
fn a_hand_off_to_a_waiter_of_the_same_engine_is_held_from_the_release_reply() {
    // Two callers of one client on one key: the holder's release hands the key to the other,
    // and its reply carries the announcement heard. The waiter holds at once, as on the
    // message (valid from its re-check), without waiting for the message; the message that
    // comes after finds the lock held and changes nothing.
    let mut h = H::new();
    let o = opts(1000);
    let (holder, _) = h.held("orders", o);
    let (_, tok) = h.queued("orders", o, None);
    let rechecked_at = h.now;
    h.advance(ms(31));
    h.release_answered(holder, announced(&inbox("orders"), &format!("{tok}:77")));
    assert_eq!(
        h.events(),
        vec![
            Event::Released { outcome: ReleaseOutcome::Released },
            Event::Acquired { fence: 77, valid_until: o.valid_until(rechecked_at) }
        ]
    );
    assert!(h.sent().is_empty(), "no confirmation round trip");
    let stats = h.e.stats();
    assert_eq!((stats.handoffs, stats.handoffs_heard, stats.handoffs_replied), (1, 1, 1));
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(h.events().is_empty() && h.sent().is_empty(), "the message is a duplicate");
    assert_eq!(h.e.stats().handoffs_heard, 1);
}

#[test]
fn a_release_reply_announcing_another_clients_waiter_tells_only_the_release() {
    // The announcement names a waiter this engine does not have (another client's, or a
    // channel of another key): the release is answered, and nothing else happens.
    let mut h = H::new();
    let o = opts(1000);
    let (_, other_tok) = h.queued("other", o, None);
    let (holder, _) = h.held("orders", o);
    let stranger = "ab".repeat(16);
    h.release_answered(holder, announced(&inbox("orders"), &format!("{stranger}:77")));
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    // A waiter of this engine, named on another key's channel: not its hand-off either.
    let (holder, _) = h.held("orders", o);
    h.release_answered(holder, announced(&inbox("orders"), &format!("{other_tok}:78")));
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    assert!(h.sent().is_empty());
    assert_eq!(h.e.stats().handoffs_replied, 0);
}

#[test]
fn a_release_of_a_lock_that_waited_goes_behind_a_ping() {
    // A lock that found another holder before it was granted will likely hand itself on: its
    // release leads with a `PING`, so that the server, which writes one pass's replies newest
    // client first, writes the hand-off's message ahead of the release's reply. The `PING`'s
    // own reply is nobody's, answered or refused. A lock granted at once releases alone (and
    // in a cluster none does: see the cluster tests).
    let mut h = H::new();
    let o = opts(1000);
    let (waited, tok) = h.queued("orders", o, None);
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 77, .. }]));
    h.e.release(waited, h.now).expect("held");
    let release = h.one();
    assert_eq!(release.commands.len(), 2, "{release:?}");
    assert_eq!(release.commands[0], Command::Ping);
    assert!(matches!(release.commands[1], Command::Script { script: Script::Release, .. }));
    h.reply(&release, vec![Reply::Error(ServerError::new("NOPERM", "no permission")), Reply::Int(2)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    assert_eq!(h.e.stats().handoffs, 1, "read as the release's answer");
    // Only the PING's reply: the release's is missing, which is said, never PONG read as it.
    // (The holder granted at once releases alone: its one reply is the release's.)
    let (holder, _) = h.held("orders", o);
    let (waited, tok) = h.queued("orders", o, None);
    h.release_answered(holder, vec![Reply::Int(2)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    h.e.handle_message(&inbox("orders"), format!("{tok}:78").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 78, .. }]));
    h.release_answered(waited, vec![Reply::Data(b"PONG".to_vec())]);
    assert_eq!(h.events(), vec![Event::Failed(LockError::UnexpectedReply("release: empty".into()))]);
    // Turned off: alone.
    let mut h = H::with(EngineConfig { release_behind_ping: false, ..EngineConfig::default() });
    let (waited, tok) = h.queued("orders", o, None);
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 77, .. }]));
    h.release_answered(waited, vec![Reply::Int(2)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
}

#[test]
fn a_hand_off_heard_with_less_than_half_its_ttl_left_is_confirmed_first() {
    // No attempt for 600 ms of a 1 s TTL (a stretched poll): the lease would start half
    // spent, so the waiter confirms (`confirm.lua` extends the key to its TTL while it is its
    // own, and reads the fence) and holds the lock from the confirmation's send time.
    let mut h = H::new();
    let o = opts(1000);
    let (_, tok) = h.queued("orders", o, None);
    h.advance(ms(600));
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(h.events().is_empty(), "not held yet");
    let confirm = h.one();
    let (script, keys, a) = script(&confirm);
    assert_eq!(script, Script::Confirm);
    assert_eq!((keys[0].as_str(), &a[..2]), ("orders", &[tok.clone(), "1000".to_owned()][..]));
    assert!(a[2].starts_with(&format!("{tok}:1000:i")), "its queue entry: {a:?}");
    let sent_at = h.now;
    h.advance(ms(2));
    h.reply(&confirm, vec![Reply::Array(vec![Reply::Int(77)])]);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(sent_at) }]);
}

#[test]
fn a_hand_off_heard_after_a_pubsub_ping_counts_from_the_ping_and_needs_no_confirmation() {
    // The same 600 ms wait, but the driver PINGed its pub/sub connection 100 ms ago and read
    // the answer before the message: the message was published after that PING ran, so the
    // lease counts from the PING's send time, with more than half the TTL left: held at once.
    let mut h = H::new();
    let o = opts(1000);
    let (_, tok) = h.queued("orders", o, None);
    assert!(h.e.wants_pubsub_ping(), "a lock waits");
    h.advance(ms(500));
    let pinged_at = h.now;
    h.advance(ms(100));
    h.e.handle_pubsub_answer(pinged_at);
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(pinged_at) }]);
    assert!(h.sent().is_empty(), "no confirmation round trip");
    assert!(!h.e.wants_pubsub_ping(), "nobody waits");
}

#[test]
fn a_pubsub_ping_older_than_the_anchor_or_before_a_lost_connection_moves_nothing() {
    // An answer to a PING sent before the waiter's re-check changes nothing (the anchor is
    // later); one from before the pub/sub connection was lost does not count for messages
    // read on the new one.
    let mut h = H::new();
    let o = opts(1000);
    let early = h.now;
    let (_, tok) = h.queued("orders", o, None);
    let rechecked_at = h.now;
    h.e.handle_pubsub_answer(early);
    h.advance(ms(30));
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(rechecked_at) }]);

    let mut h = H::new();
    let (_, tok) = h.queued("billing", o, None);
    h.advance(ms(500));
    h.e.handle_pubsub_answer(h.now);
    h.advance(ms(100));
    h.e.handle_subscriptions_lost(h.now);
    h.sent();
    h.e.handle_message(&inbox("billing"), format!("{tok}:78").as_bytes(), h.now);
    assert!(h.events().is_empty(), "not held yet: the floor went with its connection");
    assert_eq!(script(&h.one()).0, Script::Confirm);
}

#[test]
fn a_release_reply_is_not_read_after_a_pubsub_ping() {
    // The release's reply comes on another connection than the PING's answer: no order
    // between them, so the floor does not apply, and the waiter that waited long confirms.
    let mut h = H::new();
    let o = opts(1000);
    let (holder, _) = h.held("orders", o);
    let (_, tok) = h.queued("orders", o, None);
    h.advance(ms(600));
    h.e.handle_pubsub_answer(h.now);
    h.release_answered(holder, announced(&inbox("orders"), &format!("{tok}:77")));
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    assert_eq!(script(&h.one()).0, Script::Confirm);
}

#[test]
fn a_cluster_engine_ignores_pubsub_pings() {
    let h = H::with(EngineConfig { cluster: true, ..EngineConfig::default() });
    assert!(!h.e.wants_pubsub_ping());
}

#[test]
fn a_confirmation_held_back_behind_a_backlog_counts_its_lease_from_when_it_leaves() {
    // Two confirmation batches in flight hold the third back. Its lease used to count from
    // when its lock joined the batch: behind a backlog (S5's mass release on a loaded machine,
    // 55,000-67,000 waits failed) it started spent, and the wait failed as acquired too late
    // though the request was answered at once. It counts from when the batch leaves.
    let mut h = H::new();
    let o = opts(1000);
    let toks: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|k| {
            h.subs.clear();
            h.queued(k, o, None).1
        })
        .collect();
    h.advance(ms(600)); // less than half the TTL left: every hand-off is confirmed
    let mut batches = Vec::new();
    for (k, tok) in ["a", "b", "c"].iter().zip(&toks) {
        h.e.handle_message(&inbox(k), format!("{tok}:77").as_bytes(), h.now);
        batches.extend(h.sent());
    }
    assert_eq!(batches.len(), 2, "the third is held back");
    h.advance(ms(995)); // the server is slow: past the TTL since the third lock joined
    let left_at = h.now;
    h.reply(&batches[0], vec![Reply::Array(vec![Reply::Int(77)])]);
    // The first one's own request did take the whole TTL: too late, rightly (released, then
    // failed).
    assert!(h.events().is_empty());
    let sent = h.sent();
    assert_eq!(sent.iter().map(|r| script(r).0).collect::<Vec<_>>(), [Script::Confirm, Script::Release]);
    let third = &sent[0];
    assert_eq!(script(third).2[0], toks[2]);
    h.advance(ms(2));
    h.reply(third, vec![Reply::Array(vec![Reply::Int(77)])]);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(left_at) }]);
}

#[test]
fn an_attempt_that_waited_for_its_turn_counts_from_when_it_left() {
    // The driver bounds the requests in flight on a connection; the rest wait their turn.
    // At 300,000 waiters the re-checks queued behind each other for longer than the TTL, and
    // those handed the lock meanwhile failed as acquired too late. Told when it leaves, the
    // attempt's lease counts from then (still before the server runs it).
    let mut h = H::new();
    let o = opts(1000);
    h.acquire("orders", o, Acquire::Wait { deadline: None });
    let req = h.one();
    let made_at = h.now;
    h.advance(ms(995)); // its turn came late
    let left_at = h.now;
    h.e.handle_leaving(req.id, left_at);
    h.e.handle_leaving(req.id, made_at); // never backwards
    h.advance(ms(2));
    h.reply(&req, pair(1, 42));
    assert_eq!(h.events(), vec![Event::Acquired { fence: 42, valid_until: o.valid_until(left_at) }]);
    h.e.handle_leaving(req.id, h.now); // answered: nothing to move
    assert!(h.sent().is_empty() && h.events().is_empty());
}

#[test]
fn an_attempt_not_told_it_left_late_still_counts_from_when_it_was_made() {
    // The same without the driver's word: the lease counts from when it was made, and the
    // reply comes after it: acquired too late, released (then failed).
    let mut h = H::new();
    h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
    let req = h.one();
    h.advance(ms(997));
    h.reply(&req, pair(1, 42));
    assert!(h.events().is_empty(), "not held");
    assert_eq!(script(&h.one()).0, Script::Release);
}

#[test]
fn a_confirmation_that_waited_for_its_turn_counts_from_when_it_left() {
    let mut h = H::new();
    let o = opts(1000);
    let (_, tok) = h.queued("orders", o, None);
    h.advance(ms(600)); // less than half the TTL left: the hand-off is confirmed
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    let confirm = h.one();
    assert_eq!(script(&confirm).0, Script::Confirm);
    h.advance(ms(995));
    let left_at = h.now;
    h.e.handle_leaving(confirm.id, left_at);
    h.advance(ms(2));
    h.reply(&confirm, vec![Reply::Array(vec![Reply::Int(77)])]);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(left_at) }]);
}

#[test]
fn a_renewal_that_waited_for_its_turn_counts_from_when_it_left() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    h.held("orders", o);
    h.fire();
    let renew = h.one();
    h.advance(ms(50));
    let left_at = h.now;
    h.e.handle_leaving(renew.id, left_at);
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1)])]);
    assert_eq!(h.events(), vec![Event::Renewed { valid_until: o.valid_until(left_at) }]);
}

#[test]
fn a_claim_that_lapsed_before_the_confirmation_keeps_the_waiter_waiting() {
    // Paused past its claim: the confirmation finds the key not its own, the waiter attempts
    // as usual, which finds another holder (the claim went on to the next waiter) and
    // re-queues it: it keeps waiting, liveness only.
    let mut h = H::new();
    let (_, tok) = h.queued("orders", opts(1000), None);
    h.advance(ms(600)); // no fresh attempt: the hand-off is confirmed first
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    let confirm = h.one();
    h.advance(ms(300));
    h.reply(&confirm, vec![Reply::Array(vec![Reply::Int(0)])]);
    let retry = h.one();
    assert_eq!(args(&retry)[2], "retry");
    h.reply(&retry, triple(0, 250, 78));
    assert!(h.events().is_empty());
    assert!(h.e.poll_timeout().is_some_and(|t| t <= h.now + ms(251)), "polls again when that claim ends");
    // Its own old message again (a duplicate) is stale now.
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(h.sent().is_empty());
}

#[test]
fn a_confirmation_whose_fence_goes_backwards_is_no_grant() {
    // A retry saw fence 80 held by another; a confirmation that answers 79 comes from a
    // server the protocol cannot trust: the wait fails and leaves, as after such an attempt.
    let mut h = H::new();
    let (_, tok) = h.queued("orders", opts(1000), None);
    h.fire();
    let poll = h.one();
    h.reply(&poll, triple(0, 900, 80));
    h.advance(ms(600));
    h.e.handle_message(&inbox("orders"), format!("{tok}:81").as_bytes(), h.now);
    let confirm = h.one();
    h.reply(&confirm, vec![Reply::Array(vec![Reply::Int(79)])]);
    assert!(matches!(h.events()[..], [Event::Failed(LockError::UnexpectedReply(_))]));
    assert_eq!(script(&h.one()).0, Script::Release, "leaves the queue");
}

#[test]
fn releases_made_together_leave_in_one_call_and_a_lone_one_alone() {
    // Five releases before the driver drains: one `release_batch.lua` call, each lock's
    // reply its own. Then a lone release: `release.lua`, at once.
    let mut h = H::new();
    let ids: Vec<LockId> = (0..6).map(|i| h.held(&format!("k{i}"), opts(1000)).0).collect();
    for id in &ids[..5] {
        h.e.release(*id, h.now).expect("held");
    }
    let batch = h.one();
    let (sent, keys, a) = script(&batch);
    assert_eq!(sent, Script::ReleaseBatch);
    assert_eq!((keys.len(), a.len()), (15, 12));
    assert_eq!((keys[0].as_str(), keys[12].as_str()), ("k0", "k4"));
    let items = [1, 2, 0, 1, 2].map(Reply::Int).to_vec();
    h.reply(&batch, vec![Reply::Array(items)]);
    let told: Vec<Event> = h.events();
    assert_eq!(told.len(), 5);
    assert_eq!(told.iter().filter(|e| matches!(e, Event::Released { outcome: ReleaseOutcome::Released })).count(), 4);
    h.e.release(ids[5], h.now).expect("held");
    let lone = h.one();
    assert_eq!(script(&lone).0, Script::Release);
    h.reply(&lone, vec![Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
}

#[test]
fn a_release_waits_for_two_stalled_ones_a_millisecond_at_most() {
    // Two releases in flight on a stalled server (answered only at their response timeout):
    // the third waits 1 ms for them, then leaves anyway. (It waited for their timeout, and a
    // caller's release took that long: `calls_return_by_their_deadline_while_the_server_stalls`.)
    let mut h = H::new();
    let ids: Vec<LockId> = (0..3).map(|i| h.held(&format!("k{i}"), opts(1000)).0).collect();
    let mut sent = Vec::new();
    for id in &ids {
        h.e.release(*id, h.now).expect("held");
        sent.extend(h.sent());
    }
    assert_eq!(sent.len(), 2);
    assert!(h.e.poll_timeout().is_some_and(|t| t <= h.now + ms(1)));
    h.advance(ms(1));
    h.fire();
    let third = h.one();
    assert_eq!((script(&third).0, script(&third).1[0].as_str()), (Script::Release, "k2"));
}

#[test]
fn a_busy_routes_held_back_release_waits_for_its_answers_not_a_millisecond() {
    // Regression (#19): the route answers, each batch in 5 ms (a mass release: hundreds of
    // locks a call). A release held back behind two in flight waits for an answer, up to
    // twice that round trip of silence, not 1 ms: at 1 ms every held-back batch left, and in
    // a storm hundreds of them queued on the connection, the last past its response timeout.
    let mut h = H::new();
    let ids: Vec<LockId> = (0..4).map(|i| h.held(&format!("k{i}"), opts(10_000)).0).collect();
    let mut sent = Vec::new();
    for id in &ids[..2] {
        h.e.release(*id, h.now).expect("held");
        sent.extend(h.sent());
    }
    h.advance(ms(5));
    h.reply(&sent[0], vec![Reply::Int(1)]);
    h.e.release(ids[2], h.now).expect("held");
    assert_eq!(script(&h.one()).1[0].as_str(), "k2", "one answered: the next leaves at once");
    h.e.release(ids[3], h.now).expect("held");
    assert!(h.sent().is_empty(), "two in flight: held back");
    h.advance(ms(1));
    h.e.handle_timeout(h.now);
    assert!(h.sent().is_empty(), "the route answered 1 ms ago, its batches take 5 ms: not silent");
    h.advance(ms(9));
    h.e.handle_timeout(h.now);
    assert_eq!(script(&h.one()).1[0].as_str(), "k3", "silent for twice its round trip: it leaves");
}

#[test]
fn batches_held_back_on_a_silent_route_leave_one_at_a_time() {
    // Regression (#19): a mass release on a route that has not answered yet, in batches of
    // two locks: two leave, the rest wait; after 1 ms of silence ONE more leaves (a caller's
    // release is not held back by a stall), then one per millisecond, not all at once.
    let mut h = H::with(EngineConfig { max_renew_batch: 2, ..EngineConfig::default() });
    let ids: Vec<LockId> = (0..10).map(|i| h.held(&format!("k{i}"), opts(10_000)).0).collect();
    for id in &ids {
        h.e.release(*id, h.now).expect("held");
    }
    assert_eq!(h.sent().len(), 2);
    h.advance(ms(1));
    h.e.handle_timeout(h.now);
    assert_eq!(h.sent().len(), 1, "one batch per millisecond of silence");
    h.e.handle_timeout(h.now);
    assert!(h.sent().is_empty());
    h.advance(ms(1));
    h.e.handle_timeout(h.now);
    assert_eq!(h.sent().len(), 1);
}

#[test]
fn releases_beyond_two_in_flight_wait_for_one_and_leave_together() {
    // Drained after each call (a driver serving one caller after another): the first two
    // leave alone; the rest wait for one of them to be answered, then leave as one call.
    let mut h = H::new();
    let ids: Vec<LockId> = (0..6).map(|i| h.held(&format!("k{i}"), opts(1000)).0).collect();
    let mut alone = Vec::new();
    for id in &ids {
        h.e.release(*id, h.now).expect("held");
        alone.extend(h.sent());
    }
    assert_eq!(alone.len(), 2, "two in flight, the rest wait");
    assert!(alone.iter().all(|r| script(r).0 == Script::Release));
    h.reply(&alone[0], vec![Reply::Int(1)]);
    let batch = h.one();
    assert_eq!((script(&batch).0, script(&batch).1.len()), (Script::ReleaseBatch, 12));
    h.reply(&batch, vec![Reply::Array(vec![Reply::Int(1); 4])]);
    h.reply(&alone[1], vec![Reply::Int(1)]);
    assert_eq!(h.events().len(), 6);
    assert!(h.sent().is_empty());
}

#[test]
fn a_release_batch_with_a_lock_that_waited_goes_behind_a_ping() {
    // Four releases, the last two batched behind the first two: the batch holds a lock that
    // waited, so it goes behind a PING, and its reply is split after the PING's is dropped.
    let mut h = H::new();
    let mut ids: Vec<LockId> = (0..3).map(|i| h.held(&format!("k{i}"), opts(1000)).0).collect();
    let (waited, tok) = h.queued("k3", opts(1000), None);
    h.e.handle_message(&inbox("k3"), format!("{tok}:77").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 77, .. }]));
    ids.push(waited);
    let mut alone = Vec::new();
    for id in &ids {
        h.e.release(*id, h.now).expect("held");
        alone.extend(h.sent());
    }
    assert_eq!(alone.len(), 2, "two in flight, the rest wait");
    assert!(alone.iter().all(|r| r.commands.len() == 1), "granted at once: alone");
    h.reply(&alone[0], vec![Reply::Int(1)]);
    let batch = h.one();
    assert_eq!(batch.commands[0], Command::Ping);
    assert!(
        matches!(&batch.commands[1], Command::Script { script: Script::ReleaseBatch, keys, .. } if keys.len() == 6)
    );
    h.reply(&batch, vec![Reply::Data(b"PONG".to_vec()), Reply::Array(vec![Reply::Int(1), Reply::Int(2)])]);
    h.reply(&alone[1], vec![Reply::Int(1)]);
    let events = h.events();
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| *e == Event::Released { outcome: ReleaseOutcome::Released }), "{events:?}");
    assert_eq!(h.e.stats().handoffs, 1, "the batch's second item read as its own");
}

#[test]
fn a_holders_release_folds_its_owner_check_where_set_takes_ifeq() {
    // Where `SET` takes `IFEQ`, a held lock's release asks the script to check the owner in
    // the hand-off's `SET` (a fifth argument, the queue ttl: 4 polls, at least 60 s); a
    // waiter leaving the queue does not (the key is another's: the fold would take back what
    // it wrote), nor does any release where `SET` has no `IFEQ`.
    for ifeq in [false, true] {
        let mut h = H::with(EngineConfig { set_ifeq: ifeq, ..EngineConfig::default() });
        let (id, _) = h.held("orders", opts(1000));
        h.e.release(id, h.now).expect("held");
        let release = h.one();
        let (s, _, a) = script(&release);
        assert_eq!(s, Script::Release);
        assert_eq!(a.get(4).map(String::as_str), ifeq.then_some("60000"), "ifeq {ifeq}");
        h.reply(&release, vec![Reply::Int(1)]);
        h.events();
        let deadline = h.now + ms(150);
        h.queued("jobs", LockOptions { poll_cap: ms(1000), ..opts(1000) }, Some(deadline));
        h.fire();
        assert_eq!(h.events(), vec![Event::TimedOut]);
        let (s, _, a) = script(&h.one());
        assert_eq!((s, a.len()), (Script::Release, 4), "a waiter leaves by the checked release");
    }
    // A batch folds when any of its locks was held, with the longest queue ttl among them.
    let mut h = H::with(EngineConfig { set_ifeq: true, ..EngineConfig::default() });
    let ids: Vec<LockId> = (0..4).map(|i| h.held(&format!("k{i}"), opts(1000)).0).collect();
    let mut alone = Vec::new();
    for id in &ids {
        h.e.release(*id, h.now).expect("held");
        alone.extend(h.sent());
    }
    h.reply(&alone[0], vec![Reply::Int(1)]);
    let (s, _, a) = script(&h.one());
    assert_eq!((s, a.len(), a.last().map(String::as_str)), (Script::ReleaseBatch, 2 + 2 * 2 + 1, Some("60000")));
}

#[test]
fn messages_for_others_or_garbage_are_ignored() {
    let mut h = H::new();
    let (_, tok) = h.queued("orders", opts(1000), None);
    for (channel, payload) in [
        (inbox("orders"), "someone-else:5".to_owned()),
        (channel("orders"), format!("{tok}:5")),
        (inbox("orders"), format!("{tok}:not-a-number")),
        (inbox("jobs"), format!("{tok}:5")),
        // Look-alike keys and names: each has a channel of its own.
        (inbox("{orders}"), format!("{tok}:5")),
        (inbox("orders:ch"), format!("{tok}:5")),
        (LockKeys::new("orders").expect("a valid key").queue, format!("{tok}:5")),
        (format!("{}x", inbox("orders")), format!("{tok}:5")),
        (inbox("orders"), "no separator".to_owned()),
    ] {
        h.e.handle_message(&channel, payload.as_bytes(), h.now);
        h.e.handle_message(&channel, &[0xff, 0xfe], h.now);
    }
    assert!(h.events().is_empty() && h.sent().is_empty());
}

#[test]
fn hand_off_during_an_attempt_is_confirmed_by_the_reply() {
    let mut h = H::new();
    let (_, tok) = h.queued("orders", opts(1000), None);
    h.fire(); // the poll
    let attempt = h.one();
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(h.events().is_empty(), "waits for the attempt in flight");
    h.reply(&attempt, pair(1, 77));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 77, .. }]));
}

#[test]
fn hand_off_during_an_attempt_that_reported_no_fence_counts_from_the_attempt_before() {
    // The attempt in flight saw another holder but no counter: it tells nothing of when the
    // hand-off happened, so the lease counts from the re-check before it, which did precede
    // the hand-off (every hand-off to us pops an entry that attempt left queued).
    let mut h = H::new();
    let o = opts(1000);
    let (_, tok) = h.queued("orders", o, None);
    let rechecked_at = h.now;
    h.fire();
    let attempt = h.one();
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    h.reply(&attempt, pair(0, 400));
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(rechecked_at) }]);
    assert!(h.sent().is_empty());
}

fn triple(a: i64, b: i64, c: i64) -> Vec<Reply> {
    vec![Reply::Array(vec![Reply::Int(a), Reply::Int(b), Reply::Int(c)])]
}

#[test]
fn a_hand_off_at_or_below_a_fence_a_retry_saw_is_stale() {
    // A retry saw another holder with fence 40: a hand-off to us with fence 40 or less
    // happened before that retry and its claim is gone; one above 40 came after it.
    let mut h = H::new();
    let (_, tok) = h.queued("orders", opts(1000), None);
    h.fire();
    let poll = h.one();
    h.reply(&poll, triple(0, 400, 40));
    h.e.handle_message(&inbox("orders"), format!("{tok}:39").as_bytes(), h.now);
    h.e.handle_message(&inbox("orders"), format!("{tok}:40").as_bytes(), h.now);
    assert!(h.events().is_empty() && h.sent().is_empty(), "stale hand-offs are ignored");
    h.e.handle_message(&inbox("orders"), format!("{tok}:41").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 41, .. }]));
    assert!(h.sent().is_empty());
}

#[test]
fn hand_off_during_a_retry_that_saw_an_older_fence_counts_from_that_retry() {
    // The retry's reply names the holder's fence: a hand-off above it came after the retry
    // ran, so the lease counts from the retry's send time.
    let mut h = H::new();
    let o = opts(1000);
    let (_, tok) = h.queued("orders", o, None);
    h.fire();
    let polled_at = h.now;
    let attempt = h.one();
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    h.advance(ms(3));
    h.reply(&attempt, triple(0, 400, 76));
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: o.valid_until(polled_at) }]);
    assert!(h.sent().is_empty());
}

#[test]
fn a_hand_off_under_a_confirm_policy_is_confirmed_with_its_wait() {
    // Replicas must have the hand-off before it counts: the confirmation writes (an
    // owner-checked PEXPIRE) and WAIT rides behind it.
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::AtLeast { replicas: 1, timeout: ms(100) }, ..opts(1000) };
    let (_, tok) = h.queued("orders", o, None);
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(h.events().is_empty());
    let confirm = h.one();
    assert_eq!(args(&confirm)[2], "retry");
    assert!(matches!(confirm.commands[1], Command::Wait { replicas: 1, .. }), "{confirm:?}");
}

#[test]
fn waiters_poll_at_most_every_poll_cap() {
    let mut h = H::new();
    let o = LockOptions { poll_cap: ms(40), ..opts(1000) };
    let (_, _) = h.queued("orders", o, None);
    let polled_at = h.now;
    let next = h.e.poll_timeout().expect("a poll timer");
    assert!(next >= polled_at + ms(20) && next <= polled_at + ms(40), "{:?}", next - polled_at);
    h.fire();
    assert_eq!(args(&h.one())[2], "retry");
}

#[test]
fn waiters_poll_when_the_holders_lease_ends() {
    let mut h = H::new();
    h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
    let first = h.one();
    h.reply(&first, pair(0, 5)); // position 1: the holder has 5 ms left
    assert_eq!(h.e.poll_timeout(), Some(h.now + ms(6)));
}

#[test]
fn subscription_confirmed_after_the_attempt_triggers_a_recheck() {
    let mut h = H::new();
    h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
    let first = h.one();
    h.reply(&first, pair(0, -3));
    assert!(h.sent().is_empty());
    h.e.handle_subscribed(&inbox("orders"), h.now);
    let recheck = h.one();
    assert_eq!(script(&recheck).0, Script::Confirm, "a hand-off may have come before the subscription");
}

/// A wait queued behind another holder whose subscription was confirmed after its attempt:
/// returns its re-check (not answered yet) and its token.
fn rechecking(h: &mut H, key: &str, o: LockOptions) -> (Request, String) {
    h.acquire(key, o, Acquire::Wait { deadline: None });
    let first = h.one();
    h.reply(&first, pair(0, -3));
    assert!(h.sent().is_empty());
    h.e.handle_subscribed(&inbox(key), h.now);
    (h.one(), token(&first))
}

#[test]
fn a_recheck_that_finds_another_holder_moves_the_anchor_and_waits() {
    // `confirm.lua` answers minus the counter: the key is another's and our entry is still
    // queued. As a retry's report, the anchor moves to the re-check's send time and a hand-off
    // at or below that fence is old; a later one is held at once from the re-check.
    let mut h = H::new();
    let o = opts(1000);
    let (recheck, tok) = rechecking(&mut h, "orders", o);
    let (s, keys, a) = script(&recheck);
    assert_eq!(s, Script::Confirm);
    assert_eq!(keys.len(), 3, "the key, its counter and its queue");
    assert_eq!(a[2], format!("{tok}:1000:{}", inbox("orders").split_once("#rdl:").expect("an inbox").1));
    let sent_at = h.now;
    h.advance(ms(5));
    h.reply(&recheck, vec![Reply::Array(vec![Reply::Int(-7)])]);
    assert!(h.events().is_empty() && h.sent().is_empty(), "waits, with no other request");
    h.e.handle_message(&inbox("orders"), format!("{tok}:7").as_bytes(), h.now);
    assert!(h.events().is_empty() && h.sent().is_empty(), "a hand-off at the fence seen is old");
    h.advance(ms(20));
    h.e.handle_message(&inbox("orders"), format!("{tok}:8").as_bytes(), h.now);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 8, valid_until: o.valid_until(sent_at) }]);
}

#[test]
fn a_recheck_that_finds_its_own_token_holds_from_its_send_time() {
    // A hand-off made before the subscription was active (a claim nobody heard): the re-check
    // finds the key ours, extends it, and the lock is held from the re-check's send time.
    let mut h = H::new();
    let o = opts(1000);
    let (recheck, _) = rechecking(&mut h, "orders", o);
    let sent_at = h.now;
    h.advance(ms(3));
    h.reply(&recheck, vec![Reply::Array(vec![Reply::Int(9)])]);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 9, valid_until: o.valid_until(sent_at) }]);
}

#[test]
fn a_recheck_that_finds_neither_attempts_in_full() {
    // 0: the key free, no counter, or our entry gone (a claim that lapsed and passed on): the
    // whole attempt tells, and queues us again.
    let mut h = H::new();
    let (recheck, _) = rechecking(&mut h, "orders", opts(1000));
    h.reply(&recheck, vec![Reply::Array(vec![Reply::Int(0)])]);
    let retry = h.one();
    assert_eq!((script(&retry).0, args(&retry)[2].as_str()), (Script::Acquire, "retry"));
    h.reply(&retry, triple(0, 500, 7));
    assert!(h.events().is_empty() && h.sent().is_empty());
}

#[test]
fn a_hand_off_heard_during_a_recheck_counts_from_it() {
    // A message that arrives while the re-check is in flight waits for its answer: above the
    // fence the re-check saw, it came after, and is held from the re-check's send time.
    let mut h = H::new();
    let o = opts(1000);
    let (recheck, tok) = rechecking(&mut h, "orders", o);
    let sent_at = h.now;
    h.advance(ms(2));
    h.e.handle_message(&inbox("orders"), format!("{tok}:8").as_bytes(), h.now);
    assert!(h.events().is_empty());
    h.reply(&recheck, vec![Reply::Array(vec![Reply::Int(-7)])]);
    assert_eq!(h.events(), vec![Event::Acquired { fence: 8, valid_until: o.valid_until(sent_at) }]);
}

#[test]
fn rechecks_of_many_waiters_leave_in_few_calls() {
    // 1,200 waiters subscribed at once (S5 at 300,000 sent 300,000 re-check attempts, 8-10 s
    // of server): their re-checks batch as confirmations do, two calls in flight and the rest
    // joining one batch of up to 512 each.
    let mut h = H::new();
    let keys: Vec<String> = (0..1200).map(|i| format!("k{i}")).collect();
    for k in &keys {
        h.acquire(k, opts(10_000), Acquire::Wait { deadline: None });
    }
    for first in h.sent() {
        h.reply(&first, pair(0, -3));
    }
    for k in &keys {
        h.e.handle_subscribed(&inbox(k), h.now);
    }
    let mut calls = 0;
    let mut pending = h.sent();
    while let Some(req) = pending.pop() {
        calls += 1;
        let (s, keys, _) = script(&req);
        assert_eq!(s, Script::Confirm);
        h.reply(&req, vec![Reply::Array(vec![Reply::Int(-1); keys.len() / 3])]);
        pending.extend(h.sent());
    }
    assert!(calls <= 5, "{calls} calls for 1,200 re-checks");
    assert!(h.events().is_empty());
    assert_eq!(h.e.stats().rechecks, 1200);
}

#[test]
fn a_mutex_or_a_confirm_policy_rechecks_with_a_whole_attempt() {
    // Their grant reads the value or sends `WAIT` behind a write: the retry, as before.
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::AtLeast { replicas: 1, timeout: ms(100) }, ..opts(1000) };
    let (recheck, _) = rechecking(&mut h, "orders", o);
    assert_eq!((script(&recheck).0, args(&recheck)[2].as_str()), (Script::Acquire, "retry"));
}

#[test]
fn lost_pubsub_connection_resubscribes_and_rechecks() {
    let mut h = H::new();
    h.queued("orders", opts(1000), None);
    h.subs.clear();
    h.e.handle_subscriptions_lost(h.now);
    assert!(h.sent().is_empty());
    assert_eq!(h.subs, vec![Transmit::Subscribe(inbox("orders"))]);
    h.e.handle_subscribed(&inbox("orders"), h.now);
    assert_eq!(script(&h.one()).0, Script::Confirm);
}

#[test]
fn deadline_times_out_and_leaves_the_queue() {
    let mut h = H::new();
    let deadline = h.now + ms(150);
    let (id, tok) = h.queued("orders", LockOptions { poll_cap: ms(1000), ..opts(1000) }, Some(deadline));
    h.fire();
    assert_eq!(h.now, deadline);
    assert_eq!(h.events(), vec![Event::TimedOut]);
    let leave = h.one();
    let (s, _, a) = script(&leave);
    let suffix = inbox("orders").replace("orders#rdl:", "");
    assert_eq!(
        (s, a[0].as_str(), a[1].as_str()),
        (Script::Release, tok.as_str(), format!("{tok}:1000:{suffix}").as_str())
    );
    h.reply(&leave, vec![Reply::Int(0)]);
    assert!(h.events().is_empty());
    assert_eq!(h.e.lock_info(id), None);
}

#[test]
fn deadline_during_an_attempt_times_out_at_once() {
    let mut h = H::new();
    let deadline = h.now + ms(50);
    h.acquire("orders", opts(1000), Acquire::Wait { deadline: Some(deadline) });
    let attempt = h.one();
    h.fire();
    assert_eq!((h.now, h.events()), (deadline, vec![Event::TimedOut]));
    h.reply(&attempt, pair(1, 3)); // it won after all: give it back, silently
    assert_eq!(script(&h.one()).0, Script::Release);
    assert!(h.events().is_empty());
}

#[test]
fn abandon_during_an_attempt_releases_silently() {
    let mut h = H::new();
    let id = h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
    let attempt = h.one();
    h.e.abandon(id, h.now);
    assert!(h.sent().is_empty(), "waits for the attempt in flight");
    h.reply(&attempt, pair(1, 5));
    let release = h.one();
    assert_eq!(script(&release).0, Script::Release);
    h.reply(&release, vec![Reply::Int(1)]);
    assert!(h.events().is_empty());
    assert_eq!(h.e.lock_info(id), None);
    assert_eq!(h.e.release(id, h.now), Err(Misuse::UnknownLock(id)));
}

// ---------------------------------------------------------------- replica confirmation

#[test]
fn confirm_shortfall_releases_then_reports() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::AtLeast { replicas: 2, timeout: ms(10) }, ..opts(1000) };
    h.acquire("orders", o, Acquire::Wait { deadline: None });
    let req = h.one();
    assert_eq!(req.route, Route::CONFIRM);
    assert_eq!(req.commands[1], Command::Wait { replicas: 2, timeout_ms: 10 });
    h.reply(&req, vec![pair(1, 9).remove(0), Reply::Int(1)]);
    let release = h.one();
    assert_eq!((script(&release).0, release.route), (Script::Release, Route::CONFIRM));
    assert!(h.events().is_empty(), "reported once the lock is given back");
    h.reply(&release, vec![Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::ReplicationShortfall { acked: 1, wanted: 2 }]);
}

#[test]
fn confirm_all_counts_replicas_first() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::All { timeout: ms(10) }, ..opts(1000) };
    h.acquire("orders", o, Acquire::Wait { deadline: None });
    let role = h.one();
    assert_eq!(role.commands, vec![Command::Role]);
    let replica = Reply::Array(vec![Reply::Data(b"127.0.0.1".to_vec()), Reply::Data(b"7001".to_vec())]);
    h.reply(
        &role,
        vec![Reply::Array(vec![Reply::Data(b"master".to_vec()), Reply::Int(0), Reply::Array(vec![replica; 3])])],
    );
    let attempt = h.one();
    assert_eq!(attempt.commands[1], Command::Wait { replicas: 3, timeout_ms: 10 });
    h.reply(&attempt, vec![pair(1, 4).remove(0), Reply::Int(3)]);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 4, .. }]));
}

fn master_with(n: usize) -> Vec<Reply> {
    let replica = Reply::Array(vec![Reply::Data(b"127.0.0.1".to_vec()), Reply::Data(b"7001".to_vec())]);
    vec![Reply::Array(vec![Reply::Data(b"master".to_vec()), Reply::Int(0), Reply::Array(vec![replica; n])])]
}

#[test]
fn try_lock_that_counts_replicas_does_not_queue() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::Majority { timeout: ms(10) }, ..opts(1000) };
    h.acquire("orders", o, Acquire::Try);
    let role = h.one();
    h.reply(&role, master_with(2));
    assert_eq!(args(&h.one())[2], "try");
}

#[test]
fn abandon_while_counting_replicas_reports_nothing() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::All { timeout: ms(10) }, ..opts(1000) };
    let id = h.acquire("orders", o, Acquire::Wait { deadline: None });
    let role = h.one();
    h.e.abandon(id, h.now);
    h.fail(&role);
    assert!(h.events().is_empty());
    assert!(h.sent().is_empty(), "never reached the server: nothing to clean up");
}

#[test]
fn a_queued_wait_that_fails_while_recounting_leaves_the_queue() {
    let config = EngineConfig { replica_count_max_age: ms(10), ..EngineConfig::default() };
    let mut h = H::with(config);
    let o = LockOptions { confirm: Confirm::All { timeout: ms(5) }, poll_cap: ms(50), ..opts(1000) };
    h.acquire("orders", o, Acquire::Wait { deadline: None });
    let role = h.one();
    h.reply(&role, master_with(1));
    let first = h.one();
    h.reply(&first, vec![pair(0, -3).remove(0), Reply::Int(1)]);
    h.sent();
    h.fire(); // the poll: the replica count is stale by now
    let recount = h.one();
    assert_eq!(recount.commands, vec![Command::Role]);
    // Refused (a transport failure would count again later: see the next test).
    h.reply(&recount, vec![Reply::Error(ServerError::new("NOPERM", "no permissions to run the 'role' command"))]);
    assert!(matches!(h.events()[..], [Event::Failed(LockError::Server(_))]));
    assert_eq!(script(&h.one()).0, Script::Release, "the queue entry is removed");
}

// ---------------------------------------------------------------- holding

#[test]
fn renewals_are_batched_into_one_script() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let keys = ["a", "b", "c"];
    let tokens: Vec<String> = keys.iter().map(|k| token(&h.held(k, o).1)).collect();
    h.fire();
    assert_eq!(h.now, h.t0 + ms(100), "renewal is due at a third of the ttl");
    let renew = h.one();
    let (s, k, a) = script(&renew);
    assert_eq!((s, &k[..]), (Script::Extend, &keys.map(String::from)[..]));
    assert_eq!(a[..3], tokens[..]);
    assert_eq!(a[3..], ["300", "300", "300"].map(String::from));
    let sent_at = h.now;
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1); 3])]);
    assert_eq!(h.events(), vec![Event::Renewed { valid_until: o.valid_until(sent_at) }; 3]);
}

#[test]
fn renewal_batches_are_capped() {
    let mut h = H::with(EngineConfig { max_renew_batch: 2, ..EngineConfig::default() });
    let o = LockOptions { auto_renew: true, ..opts(300) };
    for k in ["a", "b", "c"] {
        h.held(k, o);
    }
    h.fire();
    let sizes: Vec<usize> = h.sent().iter().map(|r| script(r).1.len()).collect();
    assert_eq!(sizes, vec![2, 1]);
}

#[test]
fn renewals_by_set_ifeq_check_the_owner_per_lock() {
    let mut h = H::with(EngineConfig { set_ifeq: true, ..EngineConfig::default() });
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let keys = ["a", "b", "c"];
    let tokens: Vec<String> = keys.iter().map(|k| token(&h.held(k, o).1)).collect();
    h.fire();
    let renew = h.one();
    let want: Vec<Command> = keys
        .iter()
        .zip(&tokens)
        .map(|(k, t)| Command::SetIfEq { key: k.to_string(), value: t.clone(), ttl_ms: 300 })
        .collect();
    assert_eq!(renew.commands, want, "one command per lock, in one request");
    let sent_at = h.now;
    // Ours; another token or none; a key of another type (the script's 0 for both).
    let wrongtype =
        Reply::Error(ServerError::new("WRONGTYPE", "Operation against a key holding the wrong kind of value"));
    h.reply(&renew, vec![Reply::Data(b"OK".to_vec()), Reply::Nil, wrongtype]);
    let lost = Event::Lost { reason: LostReason::NotOwner };
    assert_eq!(h.events(), vec![Event::Renewed { valid_until: o.valid_until(sent_at) }, lost.clone(), lost]);
}

#[test]
fn a_server_refusing_set_ifeq_gets_the_script_from_then_on() {
    let mut h = H::with(EngineConfig { set_ifeq: true, ..EngineConfig::default() });
    let o = LockOptions { auto_renew: true, ..opts(300) };
    h.held("orders", o);
    h.fire();
    let renew = h.one();
    assert!(matches!(renew.commands[..], [Command::SetIfEq { .. }]));
    // A failover to a server without `IFEQ`: no answer about the lock, which is not lost.
    h.reply(&renew, vec![Reply::Error(ServerError::new("ERR", "syntax error"))]);
    assert_eq!(h.events(), vec![]);
    h.fire();
    let retry = h.one();
    assert_eq!(script(&retry).0, Script::Extend, "retried with the script");
    h.reply(&retry, vec![Reply::Array(vec![Reply::Int(1)])]);
    assert!(matches!(h.events()[..], [Event::Renewed { .. }]));
    h.fire();
    assert_eq!(script(&h.one()).0, Script::Extend, "and kept");
}

#[test]
fn a_set_ifeq_renewal_the_server_could_not_run_is_retried_the_same_way() {
    let mut h = H::with(EngineConfig { set_ifeq: true, ..EngineConfig::default() });
    h.held("orders", LockOptions { auto_renew: true, ..opts(300) });
    h.fire();
    let renew = h.one();
    h.reply(&renew, vec![Reply::Error(ServerError::new("LOADING", "Redis is loading the dataset in memory"))]);
    assert_eq!(h.events(), vec![]);
    h.fire();
    assert!(matches!(h.one().commands[..], [Command::SetIfEq { .. }]), "a loading server still has IFEQ");
}

#[test]
fn renewal_not_owner_is_lost() {
    let mut h = H::new();
    let (id, _) = h.held("orders", LockOptions { auto_renew: true, ..opts(300) });
    h.fire();
    let renew = h.one();
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(0)])]);
    assert_eq!(h.events(), vec![Event::Lost { reason: LostReason::NotOwner }]);
    assert_eq!(h.e.lock_info(id).and_then(|i| i.lost), Some(LostReason::NotOwner));
    assert_eq!(h.e.poll_timeout(), None, "no more renewals");
    assert_eq!(h.e.extend(id, h.now), Err(Misuse::NotHeld(id)));
    h.e.release(id, h.now).expect("a lost lock can still be released");
}

#[test]
fn renewal_failures_until_validity_ends_are_lost_expired() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let (_, _) = h.held("orders", o);
    let valid_until = o.valid_until(h.t0);
    let mut tries = 0;
    loop {
        h.fire();
        let events = h.events();
        if !events.is_empty() {
            assert_eq!(events, vec![Event::Lost { reason: LostReason::Expired }]);
            assert_eq!(h.now, valid_until);
            break;
        }
        for req in h.sent() {
            assert!(h.now < valid_until, "no renewal once validity is over");
            h.fail(&req);
            tries += 1;
        }
    }
    assert!(tries > 1, "failed renewals are retried");
}

/// Leases in a renewal batch have no timers of their own: the batch's timer loses each one,
/// unanswered, at its own end of validity, and not before.
#[test]
fn an_unanswered_batch_loses_each_lease_at_its_own_end() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(30_000) };
    let (a, _) = h.held("a", o);
    let first = h.now;
    h.advance(ms(50));
    let (b, _) = h.held("b", o);
    // One batch for both (a new primary checks every lease at once), never answered.
    h.e.handle_primary_changed(Some(2), h.now);
    let batch = h.one();
    assert_eq!(script(&batch).1, ["a", "b"]);
    h.fire();
    assert_eq!(h.now, o.valid_until(first));
    assert_eq!(h.e.poll_event().map(|e| (e.lock, e.event)), Some((a, Event::Lost { reason: LostReason::Expired })));
    assert!(h.events().is_empty(), "b is still valid");
    h.fire();
    assert_eq!(h.now, o.valid_until(first + ms(50)));
    assert_eq!(h.e.poll_event().map(|e| (e.lock, e.event)), Some((b, Event::Lost { reason: LostReason::Expired })));
    // The late answer changes nothing, and nothing is sent again.
    h.reply(&batch, vec![Reply::Array(vec![Reply::Int(1), Reply::Int(1)])]);
    assert!(h.events().is_empty() && h.sent().is_empty());
}

#[test]
fn manual_extend_renews_a_lock_without_auto_renew() {
    let mut h = H::new();
    let o = opts(300);
    let (id, _) = h.held("orders", o);
    assert_eq!(h.e.poll_timeout(), Some(o.valid_until(h.t0)), "only the validity timer");
    h.advance(ms(50));
    h.e.extend(id, h.now).expect("held");
    let renew = h.one();
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1)])]);
    assert_eq!(h.events(), vec![Event::Renewed { valid_until: o.valid_until(h.now) }]);
}

#[test]
fn no_renewal_after_release() {
    let mut h = H::new();
    let (id, _) = h.held("orders", LockOptions { auto_renew: true, ..opts(300) });
    h.fire();
    let renew = h.one();
    h.e.release(id, h.now).expect("held");
    let release = h.one();
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1)])]);
    assert!(h.events().is_empty(), "a renewal that returns after the release is ignored");
    h.reply(&release, vec![Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    assert!(h.e.is_empty());
}

// ---------------------------------------------------------------- releasing

#[test]
fn release_reports_whether_it_was_held() {
    let mut h = H::new();
    let (id, _) = h.held("orders", opts(300));
    h.e.release(id, h.now).expect("held");
    let release = h.one();
    h.reply(&release, vec![Reply::Int(0)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::NotHeld }]);
}

/// Regression (#9.6): after a lost answer, a retry that finds the key gone may mean our own
/// delete, an expiry or a restart (another client may hold it now): never `Released`.
#[test]
fn release_ambiguity_is_unknown_and_the_retry_goes_on_in_the_background() {
    let mut h = H::new();
    let (id, _) = h.held("orders", opts(300));
    h.e.release(id, h.now).expect("held");
    let first = h.one();
    h.fail(&first); // did it run?
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Unknown }], "told at once");
    assert!(h.sent().is_empty(), "the retry waits a moment");
    h.fire();
    let retry = h.one();
    assert_eq!(script(&retry).0, Script::Release);
    h.reply(&retry, vec![Reply::Int(0)]);
    assert!(h.events().is_empty(), "the caller has had its answer");
    assert_eq!(h.e.lock_info(id), None);
}

/// Regression (#9.6): a release after the lease was lost to expiry is not `Released`, even
/// when the key was still ours on the server.
#[test]
fn release_after_expiry_is_not_held() {
    let mut h = H::new();
    let o = opts(300);
    let (id, _) = h.held("orders", o);
    h.fire(); // validity ends
    assert_eq!(h.events(), vec![Event::Lost { reason: LostReason::Expired }]);
    h.e.release(id, h.now).expect("still tracked");
    let release = h.one();
    h.reply(&release, vec![Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::NotHeld }]);
}

/// A release that gets no answer is retried, backing off, until the lease's TTL has passed
/// (by then every key our requests could have set has expired).
#[test]
fn release_retries_until_the_ttl_has_passed() {
    let mut h = H::new();
    let (id, _) = h.held("orders", opts(300));
    h.e.release(id, h.now).expect("held");
    let start = h.now;
    let mut sent = 0;
    while h.e.lock_info(id).is_some() {
        let req = h.one();
        h.fail(&req);
        sent += 1;
        if h.e.lock_info(id).is_some() {
            h.fire();
        }
        assert!(sent < 50, "gives up");
    }
    assert!(h.now >= start + ms(300) && h.now < start + ms(300) + ms(5000), "{:?}", h.now - start);
    assert!(sent >= 3, "{sent} attempts");
    assert!(matches!(h.events()[..], [Event::Released { outcome: ReleaseOutcome::Unknown }]));
}

/// Regression (#9.4): an attempt whose answer was lost may still run on the server after the
/// clean-up release; the release is repeated later so that such a key does not stay held.
#[test]
fn a_lost_attempt_is_rechecked_after_its_clean_up() {
    let mut h = H::new();
    let id = h.acquire("orders", opts(1000), Acquire::Try);
    let attempt = h.one();
    h.fail(&attempt);
    assert!(matches!(h.events()[..], [Event::Failed(LockError::Transport(_))]));
    let clean_up = h.one();
    assert_eq!(script(&clean_up).0, Script::Release);
    h.reply(&clean_up, vec![Reply::Int(0)]);
    let mut rechecks = Vec::new();
    while h.e.lock_info(id).is_some() {
        let before = h.now;
        h.fire();
        let again = h.one();
        assert_eq!(script(&again).0, Script::Release);
        rechecks.push(h.now - before);
        h.reply(&again, vec![Reply::Int(0)]);
    }
    assert_eq!(rechecks, vec![ms(250), ms(2000)]);
    assert!(h.events().is_empty());
}

// ---------------------------------------------------------------- bad input and misuse

#[test]
fn invalid_input_is_refused_before_sending() {
    let mut h = H::new();
    let now = h.now;
    let wait = Acquire::Wait { deadline: None };
    let cases = [
        ("", opts(100), wait, InvalidInput::EmptyKey),
        ("k", opts(0), wait, InvalidInput::TtlOutOfRange { ttl: ms(0), min: MIN_TTL, max: MAX_TTL }),
        (
            "k",
            LockOptions { ttl: MAX_TTL + ms(1), ..opts(100) },
            wait,
            InvalidInput::TtlOutOfRange { ttl: MAX_TTL + ms(1), min: MIN_TTL, max: MAX_TTL },
        ),
        ("k", opts(100), Acquire::Wait { deadline: Some(now) }, InvalidInput::DeadlinePassed),
        ("k", LockOptions { poll_cap: ms(0), ..opts(100) }, wait, InvalidInput::PollCapZero),
        (
            "k",
            LockOptions { confirm: Confirm::All { timeout: ms(0) }, ..opts(100) },
            wait,
            InvalidInput::ConfirmTimeoutZero,
        ),
        (
            "k",
            LockOptions { confirm: Confirm::AtLeast { replicas: 0, timeout: ms(5) }, ..opts(100) },
            wait,
            InvalidInput::ConfirmNoReplicas,
        ),
        (
            "k",
            LockOptions { confirm: Confirm::Majority { timeout: ms(100) }, ..opts(100) },
            wait,
            InvalidInput::ConfirmTimeoutTooLong { timeout: ms(100), ttl: ms(100) },
        ),
    ];
    for (key, o, how, want) in cases {
        assert_eq!(h.e.acquire(key, o, how, now), Err(want));
    }
    let reserved = "orders#rdl:q";
    assert_eq!(h.e.acquire(reserved, opts(100), wait, now), Err(InvalidInput::KeyReserved(reserved.into())));
    assert!(h.sent().is_empty() && h.subs.is_empty() && h.e.is_empty());
}

#[test]
fn misuse_is_an_error_and_changes_nothing() {
    let mut h = H::new();
    let ghost = LockId(99);
    assert_eq!(h.e.release(ghost, h.now), Err(Misuse::UnknownLock(ghost)));
    assert_eq!(h.e.extend(ghost, h.now), Err(Misuse::UnknownLock(ghost)));
    h.e.abandon(ghost, h.now);
    let id = h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
    assert_eq!(h.e.release(id, h.now), Err(Misuse::NotHeld(id)));
    assert_eq!(h.e.extend(id, h.now), Err(Misuse::NotHeld(id)));
    let req = h.one();
    let unknown = RequestId(req.id.0 + 100);
    assert_eq!(h.e.handle_reply(unknown, Ok(vec![]), h.now), Err(Misuse::UnknownRequest(unknown)));
    h.reply(&req, pair(1, 1));
    assert_eq!(h.e.handle_reply(req.id, Ok(pair(1, 1)), h.now), Err(Misuse::UnknownRequest(req.id)));
    assert!(matches!(h.events()[..], [Event::Acquired { .. }]));
}

#[test]
fn odd_replies_fail_the_lock_without_panicking() {
    for bad in [
        vec![],
        vec![Reply::Nil],
        pair(1, -5),
        vec![Reply::Array(vec![Reply::Int(1)])],
        vec![Reply::Data(b"x".to_vec())],
    ] {
        let mut h = H::new();
        h.acquire("orders", opts(1000), Acquire::Try);
        let req = h.one();
        h.reply(&req, bad.clone());
        assert!(matches!(h.events()[..], [Event::Failed(LockError::UnexpectedReply(_))]), "{bad:?}");
    }
    let mut h = H::new();
    h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
    let req = h.one();
    let wrongtype =
        rdlock_core::ServerError::new("WRONGTYPE", "Operation against a key holding the wrong kind of value");
    h.reply(&req, vec![Reply::Error(wrongtype.clone())]);
    assert_eq!(h.events(), vec![Event::Failed(LockError::Server(wrongtype))]);
}

// ---------------------------------------------------------------- replies the engine must not trust

/// Regression (the property test's shrunk case): `[1, 0, nil]` was read as a grant with fence 0.
#[test]
fn a_misshapen_grant_is_no_grant_and_the_attempt_is_cleaned_up() {
    for bad in [
        vec![Reply::Array(vec![Reply::Int(1), Reply::Int(0), Reply::Nil])],
        pair(1, 0),
        vec![Reply::Array(vec![Reply::Int(1), Reply::Int(5), Reply::Int(5)])],
        vec![Reply::Array(vec![Reply::Int(1), Reply::Data(b"5".to_vec())])],
    ] {
        let mut h = H::new();
        h.acquire("orders", opts(1000), Acquire::Wait { deadline: None });
        let req = h.one();
        h.reply(&req, bad.clone());
        let events = h.events();
        assert!(matches!(events[..], [Event::Failed(LockError::UnexpectedReply(_))]), "{bad:?}: {events:?}");
        // The outcome is unknown: an owner-checked release cleans up whatever it did.
        assert_eq!(script(&h.one()).0, Script::Release, "{bad:?}");
    }
}

/// A grant whose fence is not above one this lock saw held by another holder.
#[test]
fn a_fence_that_goes_backwards_is_no_grant() {
    let mut h = H::new();
    h.queued("orders", opts(1000), None);
    h.fire(); // the poll
    let retry = h.one();
    h.reply(&retry, vec![Reply::Array(vec![Reply::Int(0), Reply::Int(300), Reply::Int(50)])]);
    assert!(h.events().is_empty());
    h.fire();
    let retry = h.one();
    h.reply(&retry, pair(1, 50));
    assert!(matches!(h.events()[..], [Event::Failed(LockError::UnexpectedReply(_))]));
    assert_eq!(script(&h.one()).0, Script::Release);
}

/// Regression (#20.3): held locks do not poll, so however many a client holds, a waiter still
/// polls within its poll cap (before, 4,000 held locks stretched it to 4 s).
#[test]
fn held_locks_do_not_stretch_a_waiters_polls() {
    let mut h = H::new();
    for i in 0..4000 {
        h.held(&format!("held-{i}"), opts(60_000));
    }
    let o = opts(1000);
    h.queued("wanted", o, None);
    let next = h.e.poll_timeout().expect("the waiter's poll");
    assert!(next <= h.now + o.poll_cap, "polls {:?} from now, cap {:?}", next - h.now, o.poll_cap);
}

/// Regression (#20.5): the wait queue's expiry follows the poll interval actually used, so
/// a stretched interval (many waits sharing the poll budget) cannot outlast the queue.
#[test]
fn the_queue_outlives_a_stretched_poll_interval() {
    let mut h = H::with(EngineConfig { polls_per_second: 1, ..EngineConfig::default() });
    for i in 0..100 {
        h.acquire(&format!("wait-{i}"), opts(1000), Acquire::Wait { deadline: None });
        let first = h.one();
        h.reply(&first, pair(0, -3));
    }
    // 100 waits at 1 poll a second: each polls every 100 s.
    h.acquire("one-more", opts(1000), Acquire::Wait { deadline: None });
    let queue_ttl: u64 = args(&h.one())[3].parse().expect("a number");
    assert!(queue_ttl >= 4 * 100_000, "queue ttl {queue_ttl} ms");
}

// ---------------------------------------------------------------- shared mode (#10.2)

fn shared(courtesy_ms: u64) -> LockOptions {
    LockOptions { sharing: Sharing::Foreign { courtesy: ms(courtesy_ms) }, ..opts(1000) }
}

const KEYSPACE: &str = "__keyspace@0__:orders";

/// A shared-mode wait on `orders`, held by someone else, its subscriptions confirmed and
/// re-checked: every attempt is a `try` (nothing queues).
fn shared_waiting(h: &mut H, o: LockOptions) -> (LockId, String) {
    let id = h.acquire("orders", o, Acquire::Wait { deadline: None });
    let first = h.one();
    assert_eq!(args(&first)[2], "try", "a shared key is never queued on");
    h.reply(&first, pair(0, 5000));
    assert!(h.events().is_empty(), "a wait is not busy");
    assert!(h.sent().is_empty());
    for sub in std::mem::take(&mut h.subs) {
        let Transmit::Subscribe(ch) = sub else { panic!("{sub:?}") };
        h.e.handle_subscribed(&ch, h.now);
        for recheck in h.sent() {
            assert_eq!(args(&recheck)[2], "try");
            h.reply(&recheck, pair(0, 5000));
        }
    }
    (id, token(&first))
}

#[test]
fn shared_wait_wakes_on_a_keyspace_deletion_after_a_courtesy_delay() {
    let mut h = H::with(EngineConfig { keyspace_db: Some(0), ..EngineConfig::default() });
    let id = h.acquire("orders", shared(50), Acquire::Wait { deadline: None });
    let first = h.one();
    assert_eq!(args(&first)[2], "try");
    h.reply(&first, pair(0, 5000));
    assert!(h.sent().is_empty(), "waits for the subscriptions");
    assert_eq!(h.subs, vec![Transmit::Subscribe(channel("orders")), Transmit::Subscribe(KEYSPACE.into())]);
    h.subs.clear();
    // Subscribed: the poll follows the poll cap (notifications do the waking).
    let poll = h.e.poll_timeout().expect("a poll");
    assert!(poll > h.now + ms(40) && poll <= h.now + ms(100), "{:?}", poll - h.now);
    // Other events of the key wake nobody; a deletion wakes the waiter within the courtesy.
    h.e.handle_message(KEYSPACE, b"set", h.now);
    assert_eq!(h.e.poll_timeout(), Some(poll));
    h.advance(ms(10));
    h.e.handle_message(KEYSPACE, b"del", h.now);
    let woken = h.e.poll_timeout().expect("a retry");
    assert!(woken <= h.now + ms(50), "courtesy delay {:?}", woken - h.now);
    // The same release's notice on the lock's channel draws no second delay.
    h.e.handle_message(&channel("orders"), b"free", h.now);
    assert_eq!(h.e.poll_timeout(), Some(woken));
    h.fire();
    let retry = h.one();
    assert_eq!(args(&retry)[2], "try");
    h.reply(&retry, pair(1, 77));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 77, .. }]));
    // The shared release: owner-checked delete, announced on the channel; no queue, no fence.
    // It found another holder first, so it goes behind a PING (the notice is written first).
    h.e.release(id, h.now).expect("held");
    let release = h.one();
    assert_eq!(release.commands[0], Command::Ping);
    let (s, keys, a) = script(&Request { commands: release.commands[1..].to_vec(), ..release.clone() });
    let names = LockKeys::new("orders").expect("a valid key");
    assert_eq!(s, Script::ReleaseShared);
    assert_eq!(keys, [names.lock, names.queue]);
    assert_eq!(a, [token(&first), names.channel]);
    h.reply(&release, vec![Reply::Data(b"PONG".to_vec()), Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    assert_eq!(h.e.poll_warning(), None);
}

#[test]
fn shared_wait_without_notifications_polls_within_the_courtesy() {
    let mut h = H::new();
    let (_, _) = shared_waiting(&mut h, shared(30));
    let poll = h.e.poll_timeout().expect("a poll");
    assert!(poll <= h.now + ms(30), "polls at most every courtesy: {:?}", poll - h.now);
    // No keyspace channel without notifications.
    h.fire();
    let retry = h.one();
    assert_eq!(args(&retry)[2], "try");
    // A holder with less left than the courtesy is polled at its expiry.
    h.reply(&retry, pair(0, 4));
    let poll = h.e.poll_timeout().expect("a poll");
    assert!(poll <= h.now + ms(5), "{:?}", poll - h.now);
}

#[test]
fn shared_notice_during_an_attempt_retries_after_the_courtesy() {
    let mut h = H::new();
    shared_waiting(&mut h, shared(40));
    h.fire();
    let attempt = h.one();
    // The holder releases while the attempt is in flight (it found the key still held).
    h.e.handle_message(&channel("orders"), b"free", h.now);
    h.reply(&attempt, pair(0, 5000));
    let retry = h.e.poll_timeout().expect("a retry");
    assert!(retry <= h.now + ms(40), "{:?}", retry - h.now);
}

#[test]
fn shared_release_that_finds_a_queue_warns() {
    let mut h = H::new();
    let (id, _) = h.held("orders", shared(100));
    h.e.release(id, h.now).expect("held");
    let release = h.one();
    assert_eq!(script(&release).0, Script::ReleaseShared);
    h.reply(&release, vec![Reply::Int(2)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    assert_eq!(h.e.poll_warning(), Some(Warning::MixedSharing { key: "orders".into() }));
}

#[test]
fn shared_refused_keyspace_channel_falls_back_to_polling() {
    let mut h = H::with(EngineConfig { keyspace_db: Some(3), ..EngineConfig::default() });
    h.acquire("orders", shared(20), Acquire::Wait { deadline: None });
    let first = h.one();
    h.reply(&first, pair(0, 5000));
    let keyspace = "__keyspace@3__:orders";
    assert!(h.sent().is_empty());
    assert!(h.subs.contains(&Transmit::Subscribe(keyspace.into())));
    h.e.handle_subscription_refused(keyspace, rdlock_core::ServerError::new("NOPERM", "no"), h.now);
    assert!(h.events().is_empty(), "the wait goes on");
    h.fire();
    let retry = h.one();
    h.reply(&retry, pair(0, 5000));
    let poll = h.e.poll_timeout().expect("a poll");
    assert!(poll <= h.now + ms(20), "polls within the courtesy: {:?}", poll - h.now);
}

#[test]
fn shared_courtesy_must_be_positive_and_bounded() {
    let mut h = H::new();
    for bad in [Duration::ZERO, rdlock_core::MAX_POLL_CAP + ms(1)] {
        let o = LockOptions { sharing: Sharing::Foreign { courtesy: bad }, ..opts(1000) };
        assert!(matches!(h.e.acquire("orders", o, Acquire::Try, h.now), Err(InvalidInput::CourtesyOutOfRange { .. })));
    }
    // A try in shared mode is one `try` attempt, busy when held.
    h.acquire("orders", shared(10), Acquire::Try);
    let attempt = h.one();
    assert_eq!(args(&attempt)[2], "try");
    h.reply(&attempt, pair(0, 300));
    assert_eq!(h.events(), vec![Event::Busy { holder_ttl: Some(ms(300)) }]);
}

#[test]
fn a_permit_runs_the_permit_scripts_and_renews_apart_from_locks() {
    use rdlock_core::{MAX_CAPACITY, Resource};
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(1000) };
    let sem =
        h.e.acquire_resource("jobs", Resource::Permit { capacity: 3 }, o, Acquire::Wait { deadline: None }, h.now);
    let (sem, _) = sem.expect("valid input");
    let attempt = h.one();
    let (s, keys, a) = script(&attempt);
    assert_eq!(s, Script::PermitAcquire);
    assert_eq!(keys.len(), 5);
    assert_eq!(keys[0], "jobs", "the holder set is the user's key");
    assert_eq!((a[7].as_str(), a[8].as_str()), ("3", "1"), "capacity and weight");
    h.reply(&attempt, pair(1, 40));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 40, .. }]));
    // A writer weighs the whole capacity; a reader 1.
    for (resource, weight) in [(Resource::Write, MAX_CAPACITY), (Resource::Read, 1)] {
        h.e.acquire_resource("doc", resource, o, Acquire::Try, h.now).expect("valid input");
        let attempt = h.one();
        assert_eq!(script(&attempt).2[8], weight.to_string());
        h.reply(&attempt, pair(0, 5));
        assert!(matches!(h.events()[..], [Event::Busy { .. }]));
    }
    let (_lock, _) = h.held("orders", o);
    // Both renew at the same time, in two batches: one script each.
    h.fire();
    let renewals = h.sent();
    let scripts: Vec<Script> = renewals.iter().map(|r| script(r).0).collect();
    assert!(scripts.contains(&Script::PermitExtend) && scripts.contains(&Script::Extend), "{scripts:?}");
    let permit_batch = renewals.iter().find(|r| script(r).0 == Script::PermitExtend).expect("a permit renewal");
    assert_eq!(script(permit_batch).1.len(), 3, "three keys per share");
    h.e.release(sem, h.now).expect("held");
    let release = h.sent().into_iter().find(|r| script(r).0 == Script::PermitRelease).expect("a permit release");
    assert!(script(&release).2[1].ends_with(":1"), "the entry carries the weight");
}

#[test]
fn a_permit_that_waited_releases_behind_a_ping_and_a_stored_value_needs_none() {
    // Releases outside the batches (a semaphore's permit) go behind a PING as a lock's do once
    // they found another holder; the PING's reply comes first and is nobody's. A mutex storing
    // its value needs none.
    let mut h = H::new();
    let o = opts(1000);
    let (sem, _) =
        h.e.acquire_resource("jobs", Resource::Permit { capacity: 1 }, o, Acquire::Wait { deadline: None }, h.now)
            .expect("valid input");
    let first = h.one();
    h.reply(&first, pair(0, -3));
    assert!(h.sent().is_empty(), "waits for the subscription");
    let Some(Transmit::Subscribe(channel)) = h.subs.pop() else { panic!("a subscription: {:?}", h.subs) };
    h.e.handle_subscribed(&channel, h.now);
    let recheck = h.one();
    h.reply(&recheck, pair(1, 41));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 41, .. }]));
    h.e.release(sem, h.now).expect("held");
    let release = h.one();
    assert_eq!(release.commands[0], Command::Ping);
    assert!(matches!(release.commands[1], Command::Script { script: Script::PermitRelease, .. }));
    h.reply(&release, vec![Reply::Data(b"PONG".to_vec()), Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Released }]);
    // A mutex granted after a wait, released storing its value: no PING, the store's reply in
    // front orders the server's replies the same way.
    let id = h.acquire_mutex("orders", Resource::mutex(), o);
    let first = h.one();
    h.reply(&first, pair(0, -3));
    h.e.handle_subscribed(&inbox("orders"), h.now);
    let recheck = h.one();
    h.reply(&recheck, grant_with(12, b"9", b"v"));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 12, .. }]));
    let op = h.e.release_storing(id, value(b"w"), h.now).expect("held");
    let req = h.one();
    assert_eq!(kinds(&req), ["store", "release"]);
    h.reply(&req, vec![Reply::Int(0), Reply::Int(1)]);
    assert_eq!(h.answers(), vec![(Some(op), Event::Released { outcome: ReleaseOutcome::NotHeld })], "the store's 0");
}

#[test]
fn counted_resources_refuse_bad_capacities_and_shared_mode() {
    use rdlock_core::{MAX_CAPACITY, Resource};
    let mut h = H::new();
    let w = Acquire::Wait { deadline: None };
    for capacity in [0, MAX_CAPACITY + 1] {
        let e = h.e.acquire_resource("s", Resource::Permit { capacity }, opts(1000), w, h.now);
        assert_eq!(e, Err(InvalidInput::CapacityOutOfRange { capacity, max: MAX_CAPACITY }));
    }
    let shared = LockOptions { sharing: Sharing::Foreign { courtesy: ms(50) }, ..opts(1000) };
    assert_eq!(h.e.acquire_resource("s", Resource::Read, shared, w, h.now), Err(InvalidInput::SharedModeIsForLocks));
    assert!(h.sent().is_empty());
}

#[test]
fn a_write_share_downgrades_to_a_read_share() {
    use rdlock_core::Resource;
    let mut h = H::new();
    let o = opts(1000);
    let (w, _) = h.e.acquire_resource("doc", Resource::Write, o, Acquire::Try, h.now).expect("valid input");
    let attempt = h.one();
    h.reply(&attempt, pair(1, 40));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 40, .. }]));
    let (lock, _) = h.held("orders", o);
    assert_eq!(h.e.downgrade(lock, h.now), Err(Misuse::NotAWriter(lock)), "a lock is no write share");
    h.e.downgrade(w, h.now).expect("a held write share");
    let change = h.one();
    let (s, _, a) = script(&change);
    assert_eq!((s, a[1].as_str()), (Script::PermitChange, "1"), "to a reader's weight");
    h.reply(&change, vec![Reply::Int(1)]);
    assert_eq!(h.events(), vec![Event::Downgraded]);
    assert_eq!(h.e.downgrade(w, h.now), Err(Misuse::NotAWriter(w)), "once");
    // Its release now names a reader's queue entry.
    h.e.release(w, h.now).expect("held");
    assert!(script(&h.one()).2[1].ends_with(":1"));
    // A share the server no longer has: the downgrade reports the loss.
    let (w2, _) = h.e.acquire_resource("doc2", Resource::Write, o, Acquire::Try, h.now).expect("valid input");
    let attempt = h.one();
    h.reply(&attempt, pair(1, 41));
    h.events();
    let op = h.e.downgrade(w2, h.now).expect("held");
    let change = h.one();
    h.reply(&change, vec![Reply::Int(0)]);
    assert_eq!(
        h.answers(),
        vec![(Some(op), Event::Lost { reason: LostReason::NotOwner })],
        "the answer tells the loss"
    );
}

#[test]
fn each_action_is_answered_by_its_op_and_news_is_a_notice() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let (id, acquire) = h.e.acquire("orders", o, Acquire::Wait { deadline: None }, h.now).expect("valid input");
    let attempt = h.one();
    h.reply(&attempt, pair(1, 10));
    let answers = h.e.poll_event().expect("an answer");
    assert_eq!((answers.lock, answers.op), (id, Some(acquire)));
    // An automatic renewal: nobody asked.
    h.fire();
    let renew = h.one();
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1)])]);
    assert!(matches!(h.answers()[..], [(None, Event::Renewed { .. })]));
    let release = h.e.release(id, h.now).expect("held");
    let req = h.one();
    h.reply(&req, vec![Reply::Int(1)]);
    assert_eq!(h.answers(), vec![(Some(release), Event::Released { outcome: ReleaseOutcome::Released })]);
}

#[test]
fn an_extend_while_a_renewal_is_in_flight_is_answered_by_it() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let (id, _) = h.held("orders", o);
    h.fire();
    let renew = h.one();
    let sent_at = h.now;
    h.advance(ms(5));
    let first = h.e.extend(id, h.now).expect("held");
    let second = h.e.extend(id, h.now).expect("held");
    assert!(h.sent().is_empty(), "the renewal in flight serves both");
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1)])]);
    let renewed = Event::Renewed { valid_until: o.valid_until(sent_at) };
    assert_eq!(h.answers(), vec![(Some(first), renewed.clone()), (Some(second), renewed)]);
}

#[test]
fn a_loss_answers_the_extensions_waiting_for_a_renewal() {
    let mut h = H::new();
    let o = opts(300);
    let (id, _) = h.held("orders", o);
    let op = h.e.extend(id, h.now).expect("held");
    let renew = h.one();
    // No answer before validity ends: the extension is answered by the loss, once.
    h.fire();
    assert_eq!(h.answers(), vec![(Some(op), Event::Lost { reason: LostReason::Expired })]);
    h.fail(&renew);
    assert!(h.answers().is_empty(), "answered once");
}

// ------------------------------------------------------------------ a new primary

#[test]
fn a_new_primary_checks_every_held_lease_at_once() {
    let mut h = H::new();
    let o = LockOptions { auto_renew: true, ..opts(30_000) };
    h.held("a", o);
    h.held("b", LockOptions { auto_renew: false, ..o });
    h.e.handle_primary_changed(Some(2), h.now);
    let check = h.one();
    let (s, k, _) = script(&check);
    assert_eq!(
        (s, &k[..]),
        (Script::Extend, &["a".to_owned(), "b".to_owned()][..]),
        "both, before any renewal was due"
    );
    h.reply(&check, vec![Reply::Array(vec![Reply::Int(1), Reply::Int(0)])]);
    let events = h.events();
    assert!(events.contains(&Event::Lost { reason: LostReason::NotOwner }), "{events:?}");
    assert!(matches!(events[..], [Event::Renewed { .. }, Event::Lost { .. }]), "{events:?}");
}

#[test]
fn a_renewal_answered_by_the_old_primary_proves_nothing() {
    let mut h = H::new();
    let (id, _) = h.held("a", LockOptions { auto_renew: true, ..opts(300) });
    h.fire();
    let old = h.one();
    h.e.handle_primary_changed(None, h.now);
    let check = h.one();
    h.reply(&old, vec![Reply::Array(vec![Reply::Int(1)])]);
    assert!(h.events().is_empty(), "the old primary's answer is ignored");
    h.reply(&check, vec![Reply::Array(vec![Reply::Int(0)])]);
    assert_eq!(h.events(), vec![Event::Lost { reason: LostReason::NotOwner }]);
    assert_eq!(h.e.lock_info(id).and_then(|i| i.lost), Some(LostReason::NotOwner));
}

#[test]
fn a_grant_from_the_old_primary_is_checked_on_the_new_one() {
    let mut h = H::new();
    let id = h.acquire("a", opts(30_000), Acquire::Wait { deadline: None });
    let attempt = h.one();
    h.e.handle_primary_changed(None, h.now);
    assert!(h.sent().is_empty(), "an attempt in flight is not sent twice");
    h.reply(&attempt, pair(1, 10));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 10, .. }]));
    let check = h.one();
    assert_eq!(script(&check).0, Script::Extend, "checked at once");
    h.reply(&check, vec![Reply::Array(vec![Reply::Int(0)])]);
    assert_eq!(h.e.lock_info(id).and_then(|i| i.lost), Some(LostReason::NotOwner));
}

#[test]
fn a_new_primary_makes_waiters_look_again_and_releases_go_again() {
    let mut h = H::new();
    let (_, _) = h.queued("w", opts(1_000), None);
    let (held, _) = h.held("r", opts(1_000));
    h.e.release(held, h.now).expect("held");
    let release = h.one();
    h.e.handle_primary_changed(None, h.now);
    let sent = h.sent();
    let scripts: Vec<(Script, String)> = sent.iter().map(|r| (script(r).0, script(r).1[0].clone())).collect();
    assert!(scripts.contains(&(Script::Acquire, "w".to_owned())), "{scripts:?}");
    assert!(scripts.contains(&(Script::Release, "r".to_owned())), "{scripts:?}");
    let retry = sent.iter().find(|r| script(r).0 == Script::Acquire).expect("a retry");
    assert_eq!(args(retry)[2], "retry", "idempotent: it keeps its place if the entry survived");
    h.reply(&release, vec![Reply::Int(1)]);
    assert!(h.events().is_empty(), "the old primary's answer does not answer the release");
}

#[test]
fn a_new_primary_gets_again_the_releases_the_old_one_acknowledged() {
    // Released on the old primary, which answered; the failover may have lost it.
    let release_acknowledged = |h: &mut H, key: &str, ttl_ms: u64| {
        let (held, _) = h.held(key, opts(ttl_ms));
        h.e.release(held, h.now).expect("held");
        let release = h.one();
        h.reply(&release, vec![Reply::Int(1)]);
        assert!(matches!(h.events()[..], [Event::Released { .. }]));
        release
    };
    // One server never changes: nothing is kept, nothing sent again.
    let mut h = H::new();
    release_acknowledged(&mut h, "alone", 1_000);
    h.e.handle_primary_changed(None, h.now);
    assert!(h.sent().is_empty(), "without remember_releases nothing is sent again");

    let mut h = H::new();
    h.e.remember_releases();
    let short = release_acknowledged(&mut h, "short", 1_000);
    let long = release_acknowledged(&mut h, "long", 5_000);
    h.advance(ms(2_000));
    h.e.handle_primary_changed(None, h.now);
    let again = h.one();
    // The same owner-checked release, for the lock whose key may still live: "short" has
    // expired wherever it survived.
    assert_eq!(again.commands, long.commands, "{again:?}");
    assert_ne!(again.commands, short.commands);
    // Nobody awaits its answer, whatever it is.
    h.reply(&again, vec![Reply::Int(0)]);
    assert!(h.events().is_empty());
    h.advance(ms(3_000));
    h.e.handle_primary_changed(None, h.now);
    assert!(h.sent().is_empty(), "forgotten once the lock's TTL has passed");
}

#[test]
fn replicas_the_topology_knows_count_though_unconnected() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::All { timeout: ms(50) }, ..opts(1_000) };
    h.e.handle_primary_changed(Some(2), h.now);
    h.acquire("a", o, Acquire::Wait { deadline: None });
    let role = h.one();
    let replica = Reply::Array(vec![Reply::Data(b"127.0.0.1".to_vec()), Reply::Data(b"7001".to_vec())]);
    h.reply(
        &role,
        vec![Reply::Array(vec![Reply::Data(b"master".to_vec()), Reply::Int(0), Reply::Array(vec![replica])])],
    );
    let attempt = h.one();
    assert!(
        matches!(attempt.commands[1], Command::Wait { replicas: 2, .. }),
        "two known, one connected: all means two: {attempt:?}"
    );
}

// ---------------------------------------------------------------- a mutex's value

/// A grant of a mutex that carries a value: `{1, fence, f, v}`.
fn grant_with(fence: i64, f: &[u8], v: &[u8]) -> Vec<Reply> {
    vec![Reply::Array(vec![Reply::Int(1), Reply::Int(fence), Reply::Data(f.to_vec()), Reply::Data(v.to_vec())])]
}

fn value(bytes: &[u8]) -> std::sync::Arc<[u8]> {
    bytes.into()
}

impl H {
    fn acquire_mutex(&mut self, key: &str, resource: Resource, o: LockOptions) -> LockId {
        self.e.acquire_resource(key, resource, o, Acquire::Wait { deadline: None }, self.now).expect("valid input").0
    }

    /// A held mutex on `key`, granted now with fence 10 and no value.
    fn held_mutex(&mut self, key: &str, o: LockOptions) -> LockId {
        let id = self.acquire_mutex(key, Resource::mutex(), o);
        let req = self.one();
        self.reply(&req, pair(1, 10));
        assert!(matches!(self.events()[..], [Event::Acquired { fence: 10, .. }]));
        id
    }
}

/// The store a request carries first: its keys, its `ARGV` and its value.
fn store_of(req: &Request) -> (Vec<String>, Vec<String>, &[u8]) {
    match &req.commands[0] {
        Command::ScriptWithValue { script: Script::Store, keys, args, value } => (keys.to_vec(), args.to_vec(), value),
        other => panic!("not a store: {other:?}"),
    }
}

#[test]
fn a_mutex_grant_returns_its_value_and_take_value_gives_it_once() {
    let mut h = H::new();
    let id = h.acquire_mutex("orders", Resource::mutex(), opts(1000));
    let req = h.one();
    let (s, keys, _) = script(&req);
    assert_eq!(s, Script::Acquire);
    assert_eq!(keys.len(), 4, "the value key rides along: {keys:?}");
    assert_eq!(keys[3], value_key("orders"));
    h.reply(&req, grant_with(12, b"9", b"\x00v\xff"));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 12, .. }]));
    assert_eq!(h.e.take_value(id), Some(StoredValue { written_by: Some(9), bytes: b"\x00v\xff".to_vec() }));
    assert_eq!(h.e.take_value(id), None, "once");
    // A mutex without a value yet: a plain grant, nothing to take.
    let other = h.held_mutex("jobs", opts(1000));
    assert_eq!(h.e.take_value(other), None);
    // A plain lock's attempt names three keys.
    h.acquire("plain", opts(1000), Acquire::Try);
    assert_eq!(script(&h.one()).1.len(), 3);
}

#[test]
fn a_heard_hand_off_to_a_mutex_is_confirmed_to_read_the_value() {
    let mut h = H::new();
    let id = h.acquire_mutex("orders", Resource::mutex(), opts(1000));
    let first = h.one();
    h.reply(&first, pair(0, -3));
    h.e.handle_subscribed(&inbox("orders"), h.now);
    let recheck = h.one();
    h.reply(&recheck, pair(0, 500));
    h.advance(ms(30));
    h.e.handle_message(&inbox("orders"), format!("{}:77", token(&first)).as_bytes(), h.now);
    assert!(h.events().is_empty(), "not held at once: the value comes with a grant");
    let confirm = h.one();
    let (s, keys, args) = script(&confirm);
    assert_eq!((s, keys.len(), args[2].as_str()), (Script::Acquire, 4, "retry"));
    let sent_at = h.now;
    h.reply(&confirm, grant_with(77, b"76", b"prev"));
    assert_eq!(h.events(), vec![Event::Acquired { fence: 77, valid_until: opts(1000).valid_until(sent_at) }]);
    assert_eq!(h.e.take_value(id).map(|v| v.bytes), Some(b"prev".to_vec()));
}

#[test]
fn a_store_is_answered_stored_lost_or_failed() {
    let mut h = H::new();
    let id = h.held_mutex("orders", opts(1000));
    let op = h.e.store(id, value(b"\x00a\xff"), h.now).expect("a held mutex");
    let req = h.one();
    assert_eq!(req.commands.len(), 1, "no WAIT without a confirm policy");
    let (keys, args, v) = store_of(&req);
    assert_eq!(keys, ["orders".to_owned(), value_key("orders")]);
    assert_eq!(args[1], "10", "the holder's fence");
    assert_eq!(args[3], "0", "no ttl: the value outlives the lock");
    assert_eq!(v, b"\x00a\xff");
    h.reply(&req, vec![Reply::Int(1)]);
    assert_eq!(h.answers(), vec![(Some(op), Event::Stored)]);
    // Unknown outcome: Failed, and the lease stays.
    let op = h.e.store(id, value(b"b"), h.now).expect("held");
    let req = h.one();
    h.fail(&req);
    assert!(matches!(&h.answers()[..], [(Some(o), Event::Failed(_))] if *o == op));
    // An error reply: Failed too.
    let op = h.e.store(id, value(b"b"), h.now).expect("held");
    let req = h.one();
    h.reply(&req, vec![Reply::Error(rdlock_core::ServerError::new("RDLOCK", "value key holds another type of value"))]);
    assert!(matches!(&h.answers()[..], [(Some(o), Event::Failed(LockError::Server(_)))] if *o == op));
    // Not the owner any more (0) or a later holder's value (-1): the lease is lost.
    for refused in [0, -1] {
        let id = h.held_mutex(&format!("k{refused}"), opts(1000));
        let op = h.e.store(id, value(b"c"), h.now).expect("held");
        let req = h.one();
        h.reply(&req, vec![Reply::Int(refused)]);
        assert_eq!(h.answers(), vec![(Some(op), Event::Lost { reason: LostReason::NotOwner })]);
        // Known lost: a further store is answered at once, with nothing sent.
        let op = h.e.store(id, value(b"d"), h.now).expect("still the caller's lock");
        assert!(h.sent().is_empty());
        assert_eq!(h.answers(), vec![(Some(op), Event::Lost { reason: LostReason::NotOwner })]);
    }
}

#[test]
fn a_store_under_confirm_waits_for_its_replicas() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::AtLeast { replicas: 1, timeout: ms(20) }, ..opts(1000) };
    let id = h.acquire_mutex("orders", Resource::mutex(), o);
    let req = h.one();
    h.reply(&req, vec![pair(1, 10)[0].clone(), Reply::Int(1)]);
    assert!(matches!(h.events()[..], [Event::Acquired { .. }]));
    let op = h.e.store(id, value(b"a"), h.now).expect("held");
    let req = h.one();
    assert_eq!(req.commands[1], Command::Wait { replicas: 1, timeout_ms: 20 });
    h.reply(&req, vec![Reply::Int(1), Reply::Int(0)]);
    assert_eq!(h.answers(), vec![(Some(op), Event::ReplicationShortfall { acked: 0, wanted: 1 })]);
    let op = h.e.store(id, value(b"a"), h.now).expect("held");
    let req = h.one();
    h.reply(&req, vec![Reply::Int(1), Reply::Int(1)]);
    assert_eq!(h.answers(), vec![(Some(op), Event::Stored)]);
}

#[test]
fn a_store_on_an_expired_lease_sends_nothing_and_the_loss_is_told_once() {
    let mut h = H::new();
    let id = h.held_mutex("orders", opts(100));
    h.advance(ms(200)); // past validity, before the timer fired
    let op = h.e.store(id, value(b"late"), h.now).expect("held");
    assert!(h.sent().is_empty(), "a lease past its validity writes nothing");
    assert_eq!(h.answers(), vec![(Some(op), Event::Lost { reason: LostReason::Expired })]);
    // The expiry timer does not tell the loss a second time.
    while h.e.poll_timeout().is_some_and(|t| t <= h.now) {
        h.e.handle_timeout(h.now);
    }
    assert_eq!(h.answers(), vec![], "the caller was told already");
}

#[test]
fn a_store_of_the_wrong_lock_or_size_is_misuse_and_sends_nothing() {
    let mut h = H::new();
    let (plain, _) = h.held("plain", opts(1000));
    assert_eq!(h.e.store(plain, value(b"x"), h.now), Err(Misuse::NotAMutex(plain)));
    assert_eq!(h.e.release_storing(plain, value(b"x"), h.now), Err(Misuse::NotAMutex(plain)));
    let small = Resource::Mutex { max_value: 4, value_ttl: None };
    let id = h.acquire_mutex("orders", small, opts(1000));
    let req = h.one();
    h.reply(&req, pair(1, 10));
    h.events();
    let too_large = Misuse::Invalid(id, InvalidInput::ValueTooLarge { len: 5, max: 4 });
    assert_eq!(h.e.store(id, value(b"12345"), h.now), Err(too_large.clone()));
    assert_eq!(h.e.release_storing(id, value(b"12345"), h.now), Err(too_large));
    assert!(h.sent().is_empty() && h.answers().is_empty());
    assert!(h.e.store(id, value(b"1234"), h.now).is_ok(), "at the limit");
}

/// The commands of a release that writes the value back, by kind.
fn kinds(req: &Request) -> Vec<&'static str> {
    req.commands
        .iter()
        .map(|c| match c {
            Command::ScriptWithValue { script: Script::Store, .. } => "store",
            Command::Script { script: Script::Release, .. } => "release",
            Command::Wait { .. } => "wait",
            Command::Ping => "ping",
            _ => "other",
        })
        .collect()
}

#[test]
fn release_storing_sends_the_store_first_in_one_request_and_maps_its_answer() {
    let cases: [(Vec<Reply>, Event); 3] = [
        (vec![Reply::Int(1), Reply::Int(1)], Event::Released { outcome: ReleaseOutcome::Released }),
        // Refused: nothing written; the lease was lost.
        (vec![Reply::Int(0), Reply::Int(0)], Event::Released { outcome: ReleaseOutcome::NotHeld }),
        (vec![Reply::Int(-1), Reply::Int(1)], Event::Released { outcome: ReleaseOutcome::NotHeld }),
    ];
    for (replies, want) in cases {
        let mut h = H::new();
        let id = h.held_mutex("orders", opts(1000));
        let op = h.e.release_storing(id, value(b"\x00last\xff"), h.now).expect("held");
        let req = h.one();
        assert_eq!(kinds(&req), ["store", "release"]);
        assert_eq!(store_of(&req).2, b"\x00last\xff");
        h.reply(&req, replies);
        assert_eq!(h.answers(), vec![(Some(op), want)]);
    }
    // A store the server refused with an error: Failed.
    let mut h = H::new();
    let id = h.held_mutex("orders", opts(1000));
    let op = h.e.release_storing(id, value(b"v"), h.now).expect("held");
    let req = h.one();
    let error = Reply::Error(rdlock_core::ServerError::new("RDLOCK", "value key holds another type of value"));
    h.reply(&req, vec![error, Reply::Int(1)]);
    assert!(matches!(&h.answers()[..], [(Some(o), Event::Failed(_))] if *o == op));
}

#[test]
fn release_storing_under_confirm_waits_between_the_store_and_the_release() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::AtLeast { replicas: 1, timeout: ms(20) }, ..opts(1000) };
    let id = h.acquire_mutex("orders", Resource::mutex(), o);
    let req = h.one();
    h.reply(&req, vec![pair(1, 10)[0].clone(), Reply::Int(1)]);
    h.events();
    let op = h.e.release_storing(id, value(b"v"), h.now).expect("held");
    let req = h.one();
    assert_eq!(kinds(&req), ["store", "wait", "release"]);
    h.reply(&req, vec![Reply::Int(1), Reply::Int(0), Reply::Int(1)]);
    assert_eq!(h.answers(), vec![(Some(op), Event::ReplicationShortfall { acked: 0, wanted: 1 })]);
}

#[test]
fn release_storing_on_an_expired_lease_only_releases() {
    let mut h = H::new();
    let id = h.held_mutex("orders", opts(100));
    h.advance(ms(200));
    h.e.release_storing(id, value(b"late"), h.now).expect("held");
    let req = h.one();
    assert_eq!(kinds(&req), ["release"], "nothing written by a lease past its validity");
}

#[test]
fn release_storing_reads_the_release_reply_by_its_place_not_the_last_one() {
    // One reply short ([store] only): the release's answer is missing, never read from the
    // store's `1`.
    let mut h = H::new();
    let id = h.held_mutex("orders", opts(1000));
    let op = h.e.release_storing(id, value(b"v"), h.now).expect("held");
    let req = h.one();
    h.reply(&req, vec![Reply::Int(1)]);
    assert!(
        matches!(&h.answers()[..], [(Some(o), Event::Failed(LockError::UnexpectedReply(_)))] if *o == op),
        "a missing release reply is no `Released`"
    );
}

#[test]
fn a_wait_counts_replicas_again_when_role_gets_no_answer() {
    let mut h = H::new();
    let o = LockOptions { confirm: Confirm::All { timeout: ms(10) }, ..opts(1000) };
    h.acquire("orders", o, Acquire::Wait { deadline: Some(h.now + ms(5_000)) });
    let tried = h.acquire("other", o, Acquire::Try);
    let role = h.one();
    // A primary failing over: no answer. The wait counts again later; a single attempt fails.
    h.fail(&role);
    let answers = h.events();
    assert!(matches!(answers[..], [Event::Failed(LockError::Transport(_))]), "the try-lock fails: {answers:?}");
    assert!(h.e.lock_info(tried).is_none(), "the try-lock is gone");
    assert!(h.sent().is_empty(), "not at once");
    h.fire();
    assert_eq!(h.one().commands, vec![Command::Role], "the wait counts again");
}

// ---------------------------------------------------------------- cluster

fn cluster() -> H {
    H::with(EngineConfig { cluster: true, ..EngineConfig::default() })
}

fn on_slot(key: &str, class: Class) -> Route {
    Route { node: Node::Slot(slot(key)), class }
}

fn sharded(key: &str) -> Transmit {
    let channel = inbox(key);
    Transmit::SubscribeShard { slot: slot(&channel), channel }
}

impl H {
    /// [`H::queued`] in a cluster: the inbox is a sharded channel of the key's slot.
    fn queued_in_cluster(&mut self, key: &str, o: LockOptions) -> (LockId, String) {
        let id = self.acquire(key, o, Acquire::Wait { deadline: None });
        let first = self.one();
        assert_eq!((script(&first).0, args(&first)[2].as_str()), (Script::ShardedAcquire, "first"));
        self.reply(&first, pair(0, -3));
        assert!(self.sent().is_empty(), "waits for the subscription");
        assert_eq!(std::mem::take(&mut self.subs), vec![sharded(key)]);
        self.e.handle_subscribed(&inbox(key), self.now);
        self.rechecked();
        (id, token(&first))
    }
}

#[test]
fn in_a_cluster_every_request_of_a_key_goes_to_its_slot_and_announces_sharded() {
    let mut h = cluster();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let key = "user:{42}:cart";
    let (_, tok) = h.queued_in_cluster(key, o);
    assert_eq!(slot(&inbox(key)), slot(key), "the inbox shares the key's slot");
    // Heard on a confirmed subscription on the slot's primary: held at once, as standalone.
    h.e.handle_message(&inbox(key), format!("{tok}:7").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 7, .. }]));
    h.fire();
    let renew = h.one();
    assert_eq!((script(&renew).0, renew.route), (Script::Extend, on_slot(key, Class::Commands)));
    let id = LockId(0);
    h.reply(&renew, vec![Reply::Array(vec![Reply::Int(1)])]);
    h.e.release(id, h.now).expect("held");
    let release = h.one();
    assert_eq!((script(&release).0, release.route), (Script::ShardedRelease, on_slot(key, Class::Commands)));
    // A waiting mutex, a counted resource and a shared key run their sharded variants too.
    let permit = Resource::Permit { capacity: 2 };
    h.e.acquire_resource("{s}", permit, opts(300), Acquire::Try, h.now).expect("valid");
    let attempt = h.one();
    assert_eq!((script(&attempt).0, attempt.route), (Script::ShardedPermitAcquire, on_slot("{s}", Class::Commands)));
    // Standalone engines are untouched: the plain scripts, on the primary.
    let mut plain = H::new();
    plain.acquire(key, opts(300), Acquire::Try);
    let attempt = plain.one();
    assert_eq!((script(&attempt).0, attempt.route), (Script::Acquire, Route::COMMANDS));
}

#[test]
fn in_a_cluster_renewals_batch_per_slot() {
    let mut h = cluster();
    let o = LockOptions { auto_renew: true, ..opts(300) };
    for key in ["{a}1", "{b}1", "{a}2"] {
        h.held(key, o);
    }
    h.fire();
    let mut batches: Vec<(Route, Vec<String>)> = h.sent().iter().map(|r| (r.route, script(r).1.to_vec())).collect();
    batches.sort_by_key(|(_, keys)| keys[0].clone());
    assert_eq!(
        batches,
        vec![
            (on_slot("a", Class::Commands), vec!["{a}1".to_owned(), "{a}2".to_owned()]),
            (on_slot("b", Class::Commands), vec!["{b}1".to_owned()]),
        ]
    );
}

#[test]
fn in_a_cluster_replicas_are_counted_per_shard_on_its_primary() {
    let mut h = cluster();
    let o = LockOptions { confirm: Confirm::All { timeout: ms(10) }, ..opts(1000) };
    h.acquire("{a}x", o, Acquire::Try);
    let role = h.one();
    assert_eq!((role.commands.clone(), role.route), (vec![Command::Role], on_slot("a", Class::Confirm)));
    h.reply(&role, master_with(3));
    let attempt = h.one();
    assert_eq!(
        (attempt.route, &attempt.commands[1]),
        (on_slot("a", Class::Confirm), &Command::Wait { replicas: 3, timeout_ms: 10 })
    );
    // Another shard has replicas of its own: counted on its primary, not taken from the first.
    h.acquire("{b}y", o, Acquire::Try);
    let role = h.one();
    assert_eq!((role.commands.clone(), role.route), (vec![Command::Role], on_slot("b", Class::Confirm)));
    h.reply(&role, master_with(1));
    assert_eq!(h.one().commands[1], Command::Wait { replicas: 1, timeout_ms: 10 });
    // The first shard's count is still fresh: no second ROLE there.
    h.acquire("{a}z", o, Acquire::Try);
    let attempt = h.one();
    assert_eq!(
        (attempt.route, &attempt.commands[1]),
        (on_slot("a", Class::Confirm), &Command::Wait { replicas: 3, timeout_ms: 10 })
    );
}

#[test]
fn in_a_cluster_a_slots_known_replicas_floor_its_count() {
    let mut h = cluster();
    let o = LockOptions { confirm: Confirm::All { timeout: ms(10) }, ..opts(1000) };
    // The map lists two replicas for the shard of {a}; ROLE sees one connected.
    h.e.set_slot_replicas(slot("a"), 2);
    h.acquire("{a}x", o, Acquire::Try);
    let role = h.one();
    h.reply(&role, master_with(1));
    assert_eq!(h.one().commands[1], Command::Wait { replicas: 2, timeout_ms: 10 });
    // Another slot has no floor: its connected replicas are its count.
    h.acquire("{b}y", o, Acquire::Try);
    let role = h.one();
    h.reply(&role, master_with(1));
    assert_eq!(h.one().commands[1], Command::Wait { replicas: 1, timeout_ms: 10 });
}

#[test]
fn a_moved_slot_checks_its_leases_retries_its_waiters_and_subscribes_again() {
    let mut h = cluster();
    let o = opts(1000);
    let (held_a, _) = h.held("{a}1", o);
    h.held("{b}1", o);
    let (_, tok) = h.queued_in_cluster("{a}w", o);
    h.advance(ms(10));
    h.e.handle_slot_moved(slot("a"), Some(2), h.now);
    let sent = h.sent();
    let mut what: Vec<(Script, String, Route)> =
        sent.iter().map(|r| (script(r).0, script(r).1[0].clone(), r.route)).collect();
    what.sort_by_key(|w| w.1.clone());
    assert_eq!(
        what,
        vec![
            (Script::Extend, "{a}1".to_owned(), on_slot("a", Class::Commands)),
            (Script::ShardedAcquire, "{a}w".to_owned(), on_slot("a", Class::Commands)),
        ],
        "only the moved slot's locks: its lease checked at once, its waiter attempting again"
    );
    assert_eq!(std::mem::take(&mut h.subs), vec![sharded("{a}w")], "its channel, where the slot now lives");
    let (check, retry) = if script(&sent[0]).0 == Script::Extend { (&sent[0], &sent[1]) } else { (&sent[1], &sent[0]) };
    assert_eq!(args(retry)[2], "retry");
    h.reply(retry, pair(0, 500));
    // Before the new subscription is confirmed, a hand-off heard is a hint: confirmed by an
    // attempt, never held at once (the count that set the key's TTL may not include us).
    h.e.handle_message(&inbox("{a}w"), format!("{tok}:9").as_bytes(), h.now);
    assert!(h.events().is_empty());
    let confirm = h.one();
    assert_eq!((script(&confirm).0, args(&confirm)[2].as_str()), (Script::ShardedAcquire, "retry"));
    h.reply(&confirm, pair(1, 9));
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 9, .. }]));
    // The new primary lacks the other lease: lost at the check's answer.
    h.reply(check, vec![Reply::Array(vec![Reply::Int(0)])]);
    assert_eq!(h.answers(), vec![(None, Event::Lost { reason: LostReason::NotOwner })]);
    assert_eq!(h.e.lock_info(held_a).and_then(|i| i.lost), Some(LostReason::NotOwner));
}

#[test]
fn a_release_in_flight_when_its_slot_moves_goes_again_and_is_unknown() {
    // A release sent before the client learns that its slot moved (another request's `MOVED`)
    // goes again to the slot's new primary. The first answer may come from a node that no
    // longer serves the slot (a failover may have lost what it did), so it answers nothing;
    // the second cannot say whether the key was freed by us or was gone: `Unknown`, never
    // `NotHeld`. Other slots' releases are untouched.
    let mut h = cluster();
    let (held, _) = h.held("{a}1", opts(1_000));
    h.e.release(held, h.now).expect("held");
    let first = h.one();
    h.e.handle_slot_moved(slot("a"), Some(2), h.now);
    let again = h.one();
    assert_eq!((script(&again).0, again.route), (Script::ShardedRelease, on_slot("a", Class::Commands)));
    h.reply(&first, vec![Reply::Int(1)]);
    assert!(h.events().is_empty(), "the answer sent before the move does not answer the release");
    h.reply(&again, vec![Reply::Int(0)]);
    assert_eq!(h.events(), vec![Event::Released { outcome: ReleaseOutcome::Unknown }]);
}

#[test]
fn a_grant_in_flight_when_its_slot_moved_is_checked_on_arrival() {
    let mut h = cluster();
    let o = opts(1000);
    h.acquire("{a}1", o, Acquire::Try);
    let a = h.one();
    h.acquire("{b}1", o, Acquire::Try);
    let b = h.one();
    h.e.handle_slot_moved(slot("a"), None, h.now);
    assert!(h.sent().is_empty(), "nothing held yet");
    h.reply(&b, pair(1, 3));
    assert!(h.sent().is_empty(), "another slot's grant is trusted");
    h.reply(&a, pair(1, 4));
    let check = h.one();
    assert_eq!((script(&check).0, check.route), (Script::Extend, on_slot("a", Class::Commands)));
}

#[test]
fn a_server_ended_shard_subscription_is_renewed_and_its_waiters_look_again() {
    let mut h = cluster();
    let (_, tok) = h.queued_in_cluster("{a}w", opts(1000));
    h.e.handle_shard_unsubscribed(&inbox("{a}w"), h.now);
    assert!(h.sent().is_empty(), "the poll bounds the wait meanwhile");
    assert_eq!(std::mem::take(&mut h.subs), vec![sharded("{a}w")]);
    // A message still delivered meanwhile is a hint.
    h.e.handle_message(&inbox("{a}w"), format!("{tok}:9").as_bytes(), h.now);
    assert!(h.events().is_empty());
    let confirm = h.one();
    assert_eq!(args(&confirm)[2], "retry");
    h.reply(&confirm, pair(0, 500));
    h.e.handle_subscribed(&inbox("{a}w"), h.now);
    let look = h.one();
    assert_eq!((script(&look).0, look.route), (Script::Confirm, on_slot("{a}w", Class::Commands)), "look once more");
    // Idle channels are unsubscribed as sharded ones.
    let mut idle = cluster();
    let (id, _) = idle.queued_in_cluster("{c}w", opts(1000));
    idle.e.abandon(id, idle.now);
    idle.sent();
    idle.advance(Duration::from_secs(6));
    idle.e.handle_timeout(idle.now);
    idle.sent();
    let channel = inbox("{c}w");
    assert!(idle.subs.contains(&Transmit::UnsubscribeShard { slot: slot(&channel), channel }), "{:?}", idle.subs);
}

// ---------------------------------------------------------------- stats

#[test]
fn stats_count_heard_hand_offs_polls_and_unanswered_renewals() {
    let mut h = H::new();
    assert_eq!(h.e.stats(), rdlock_core::Stats::default());
    // A waiter polls once, then hears its hand-off.
    let (_, tok) = h.queued("orders", opts(1000), None);
    h.fire();
    let poll = h.one();
    h.reply(&poll, pair(0, 500));
    h.e.handle_message(&inbox("orders"), format!("{tok}:77").as_bytes(), h.now);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 77, .. }]));
    let s = h.e.stats();
    assert_eq!((s.polls, s.handoffs_heard, s.requests_unanswered, s.renewals_unanswered), (1, 1, 0, 0));
    // A renewal left unanswered counts twice: as a request and as a renewal.
    let o = LockOptions { auto_renew: true, ..opts(300) };
    let _ = h.held("jobs", o);
    h.fire();
    let renewal = h.sent().pop().expect("a renewal");
    h.fail(&renewal);
    let s = h.e.stats();
    assert_eq!((s.requests_unanswered, s.renewals_unanswered), (1, 1));
}

#[test]
fn stats_count_a_release_that_hands_the_lock_on() {
    let mut h = H::new();
    let (id, _) = h.held("orders", opts(1000));
    h.e.release(id, h.now).expect("held");
    let release = h.one();
    h.reply(&release, vec![Reply::Int(2)]);
    assert!(matches!(h.events()[..], [Event::Released { outcome: ReleaseOutcome::Released }]));
    assert_eq!(h.e.stats().handoffs, 1);
}

// ---------------------------------------------------------------- durable confirmation (WAITAOF)

fn durable(replicas: u32) -> LockOptions {
    LockOptions { confirm: Confirm::Durable { replicas, timeout: ms(10) }, ..opts(1000) }
}

fn aof(local: i64, replicas: i64) -> Reply {
    Reply::Array(vec![Reply::Int(local), Reply::Int(replicas)])
}

#[test]
fn durable_confirm_pipelines_waitaof_on_the_confirm_connection() {
    let mut h = H::new();
    h.acquire("orders", durable(1), Acquire::Wait { deadline: None });
    let req = h.one();
    assert_eq!(req.route, Route::CONFIRM);
    assert_eq!(req.commands[1], Command::WaitAof { replicas: 1, timeout_ms: 10 });
    h.reply(&req, vec![pair(1, 4).remove(0), aof(1, 1)]);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 4, .. }]));
}

#[test]
fn durable_local_only_needs_no_replica_count() {
    let mut h = H::new();
    h.acquire("orders", durable(0), Acquire::Wait { deadline: None });
    let req = h.one();
    assert_eq!(req.commands[1], Command::WaitAof { replicas: 0, timeout_ms: 10 });
    h.reply(&req, vec![pair(1, 4).remove(0), aof(1, 0)]);
    assert!(matches!(h.events()[..], [Event::Acquired { fence: 4, .. }]));
}

#[test]
fn durable_shortfall_counts_copies_and_extra_replicas_never_stand_in_for_the_local_fsync() {
    for (reply, acked) in [(aof(0, 3), 1), (aof(1, 0), 1), (aof(0, 0), 0)] {
        let mut h = H::new();
        h.acquire("orders", durable(1), Acquire::Wait { deadline: None });
        let req = h.one();
        h.reply(&req, vec![pair(1, 4).remove(0), reply.clone()]);
        let release = h.one();
        assert_eq!(script(&release).0, Script::Release, "{reply:?}");
        assert!(h.events().is_empty(), "reported once the lock is given back");
        h.reply(&release, vec![Reply::Int(1)]);
        assert_eq!(h.events(), vec![Event::ReplicationShortfall { acked, wanted: 2 }], "{reply:?}");
    }
}

#[test]
fn durable_refused_by_the_server_is_typed_and_leaves_nothing() {
    let cases = [
        ("WAITAOF cannot be used when numlocal is set but appendonly is disabled.", NotDurable::AppendOnlyOff),
        ("unknown command 'WAITAOF', with args beginning with: '1' '0' '10'", NotDurable::NoCommand),
    ];
    for (message, why) in cases {
        let mut h = H::new();
        h.acquire("orders", durable(0), Acquire::Wait { deadline: None });
        let req = h.one();
        h.reply(&req, vec![pair(1, 4).remove(0), Reply::Error(ServerError::new("ERR", message))]);
        assert_eq!(h.events(), vec![Event::Failed(LockError::NotDurable(why))]);
        let release = h.one();
        assert_eq!(script(&release).0, Script::Release, "the written key is taken back");
    }
}

#[test]
fn durable_is_refused_before_sending_when_the_server_cannot() {
    let cases = [
        (Durability { waitaof: false, aof: false }, Some(NotDurable::NoCommand)),
        (Durability { waitaof: true, aof: false }, Some(NotDurable::AppendOnlyOff)),
        (Durability { waitaof: true, aof: true }, None),
    ];
    for (offer, refused) in cases {
        let mut h = H::new();
        h.e.set_durability(Some(offer));
        let got = h.e.acquire("orders", durable(1), Acquire::Try, h.now).err();
        assert_eq!(got, refused.map(InvalidInput::NotDurable), "{offer:?}");
        let sent = h.sent();
        assert_eq!(sent.len(), usize::from(refused.is_none()), "{offer:?}: {sent:?}");
        // Other confirmations do not care.
        assert!(h.e.acquire("plain", opts(1000), Acquire::Try, h.now).is_ok());
    }
}

#[test]
fn durable_and_wait_renewals_with_equal_counts_are_batched_apart() {
    let mut h = H::new();
    let wait =
        LockOptions { confirm: Confirm::AtLeast { replicas: 2, timeout: ms(10) }, auto_renew: true, ..opts(300) };
    let disk =
        LockOptions { confirm: Confirm::Durable { replicas: 1, timeout: ms(10) }, auto_renew: true, ..opts(300) };
    for (key, o, confirm) in [("a", wait, Reply::Int(2)), ("b", disk, aof(1, 1))] {
        h.acquire(key, o, Acquire::Wait { deadline: None });
        let req = h.one();
        h.reply(&req, vec![pair(1, 10).remove(0), confirm]);
        assert!(matches!(h.events()[..], [Event::Acquired { .. }]));
    }
    h.fire();
    let mut confirms: Vec<Command> = h.sent().into_iter().map(|r| r.commands[1].clone()).collect();
    confirms.sort_by_key(|c| matches!(c, Command::WaitAof { .. }));
    assert_eq!(
        confirms,
        [Command::Wait { replicas: 2, timeout_ms: 10 }, Command::WaitAof { replicas: 1, timeout_ms: 10 }]
    );
}
