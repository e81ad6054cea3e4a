//! The fake server follows the scripts: these pin its behaviour on the cases the
//! simulation relies on, so that a mistake in the fake does not pass for one in the engine.

use crate::sim;

use rdlock_core::{LockKeys, Reply, Script};

/// Fingerprints of the scripts' code (comments and blank lines ignored) that the fake
/// follows. When a script changes, update `sim/fake.rs` to match it, then these.
/// A cluster variant (`Sharded*`) is followed as its base, `SPUBLISH` counted like `PUBLISH`
/// (the one fake node is every slot's primary, where every inbox is subscribed).
const FOLLOWED: [(Script, u64); 16] = [
    (Script::Acquire, 13_309_214_669_736_257_014),
    (Script::Release, 14_802_493_993_813_814_503),
    (Script::ReleaseBatch, 15_420_217_760_920_762_016),
    (Script::Confirm, 16_136_223_178_161_728_681),
    (Script::Extend, 14_220_457_821_182_822_727),
    (Script::PermitAcquire, 10_925_107_671_827_683_881),
    (Script::PermitRelease, 7_650_677_438_004_832_629),
    (Script::PermitExtend, 8_695_377_993_663_735_464),
    (Script::PermitChange, 2_349_021_599_835_274_629),
    (Script::Store, 1_755_592_626_817_761_467),
    (Script::ShardedAcquire, 13_317_414_660_025_577_339),
    (Script::ShardedRelease, 9_764_451_038_641_466_316),
    (Script::ShardedReleaseBatch, 18_330_261_163_266_277_379),
    (Script::ShardedPermitAcquire, 13_629_017_744_966_934_690),
    (Script::ShardedPermitRelease, 1_819_148_716_838_090_292),
    (Script::ShardedPermitChange, 14_054_213_150_805_952_648),
];

/// The script's code without comments and blank lines, with whitespace collapsed.
fn code(script: Script) -> String {
    let lines = script.source().lines().map(|l| l.split("--").next().unwrap_or_default());
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// FNV-1a, 64 bits.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn the_fake_follows_the_current_scripts() {
    for (script, want) in FOLLOWED {
        let code = code(script);
        assert_eq!(
            fingerprint(&code),
            want,
            "{} changed: make tests/suite/sim/fake.rs follow it, then update FOLLOWED. Its code now:\n{code}",
            script.name()
        );
    }
}
use sim::MS;
use sim::dice::Dice;
use sim::fake::{Bug, Fake, handed_off};

const EPOCH_US: u64 = 1_700_000_000_000_000;
fn names() -> LockKeys {
    LockKeys::new("k").expect("a valid key")
}

fn keys() -> Vec<String> {
    let n = names();
    vec![n.lock, n.fence, n.queue]
}

/// Each token waits from a client of its own, with this inbox.
fn inbox(token: &str) -> String {
    LockKeys::inbox_suffix("k", fingerprint(token))
}

/// The channel `token`'s hand-offs are published on.
fn inbox_channel(token: &str) -> String {
    LockKeys::inbox_of("k", &inbox(token))
}

/// `token`'s queue entry.
fn entry(token: &str, ttl: u64) -> String {
    format!("{token}:{ttl}:{}", inbox(token))
}

/// Runs a script; the inboxes of `heard` have a subscriber.
fn run(f: &mut Fake, script: Script, args: &[String], now: u64, heard: &[&str]) -> (Reply, Vec<(String, String)>) {
    let listening: Vec<String> = heard.iter().map(|t| inbox_channel(t)).collect();
    let listeners = |channel: &str| listening.iter().filter(|c| *c == channel).count();
    let keys = if script == Script::Extend { vec!["k".to_owned()] } else { keys() };
    let (r, fx) = f.run_script(script, &keys, args, now, &mut Dice::new(0), &listeners);
    (r, fx.publishes)
}

fn acquire_heard(f: &mut Fake, token: &str, ttl: u64, mode: &str, now: u64, heard: &[&str]) -> Reply {
    let args = [token, &ttl.to_string(), mode, "60000", "86400000", "250", &inbox(token)].map(String::from).to_vec();
    run(f, Script::Acquire, &args, now, heard).0
}

fn acquire(f: &mut Fake, token: &str, ttl: u64, mode: &str, now: u64) -> Reply {
    acquire_heard(f, token, ttl, mode, now, &[])
}

fn release_heard(f: &mut Fake, token: &str, ttl: u64, now: u64, heard: &[&str]) -> (Reply, Vec<(String, String)>) {
    let args = [token, &entry(token, ttl), "86400000", "250"].map(String::from).to_vec();
    run(f, Script::Release, &args, now, heard)
}

fn release(f: &mut Fake, token: &str, ttl: u64, now: u64) -> (Reply, Vec<(String, String)>) {
    release_heard(f, token, ttl, now, &[])
}

/// A release folded into the hand-off's `SET ... IFEQ` (`ARGV[5]`: the caller's queue ttl).
fn release_folded(f: &mut Fake, token: &str, ttl: u64, now: u64, heard: &[&str]) -> (Reply, Vec<(String, String)>) {
    let args = [token, &entry(token, ttl), "86400000", "250", "90000"].map(String::from).to_vec();
    run(f, Script::Release, &args, now, heard)
}

fn extend(f: &mut Fake, token: &str, ttl: u64, now: u64) -> Reply {
    run(f, Script::Extend, &[token.to_owned(), ttl.to_string()], now, &[]).0
}

fn pair(a: i64, b: i64) -> Reply {
    Reply::Array(vec![Reply::Int(a), Reply::Int(b)])
}

#[test]
fn acquire_takes_confirms_queues_and_expires() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    let seeded = (EPOCH_US + 1000) as i64; // TIME at 1 ms
    assert_eq!(acquire(&mut f, "a", 100, "first", MS), pair(1, seeded));
    assert_eq!(f.string("k", MS), Some("a"));
    assert_eq!(f.expiry("k", MS), Some(101 * MS));
    // Idempotent: the same token confirms and refreshes.
    assert_eq!(acquire(&mut f, "a", 100, "retry", 50 * MS), pair(1, seeded));
    assert_eq!(f.expiry("k", 50 * MS), Some(150 * MS));
    // Others: try reports the PTTL, first queues (position 1 gets the PTTL, later ones -3).
    assert_eq!(acquire(&mut f, "b", 100, "try", 60 * MS), pair(0, 90));
    assert_eq!(acquire(&mut f, "b", 100, "first", 60 * MS), pair(0, 90));
    assert_eq!(acquire(&mut f, "c", 100, "first", 60 * MS), pair(0, -3));
    // A retry also reports the current fence, to tell a stale hand-off from a fresh one.
    let retried = Reply::Array(vec![Reply::Int(0), Reply::Int(90), Reply::Int(seeded)]);
    assert_eq!(acquire(&mut f, "c", 100, "retry", 60 * MS), retried);
    assert_eq!(f.list_entries(60 * MS).len(), 2, "retry does not queue twice");
    // Expired: c's retry finds the key free but b queued first, so it hands b a claim (and
    // bumps the counter) instead of taking the lock; b confirms it.
    let claimed = Reply::Array(vec![Reply::Int(0), Reply::Int(100), Reply::Int(seeded + 1)]);
    assert_eq!(acquire(&mut f, "c", 100, "retry", 150 * MS), claimed);
    assert_eq!(f.list_entries(150 * MS), vec![(names().queue, entry("c", 100))]);
    assert_eq!(acquire(&mut f, "b", 100, "retry", 151 * MS), pair(1, seeded + 1));
}

#[test]
fn release_hands_off_in_order_and_checks_the_owner() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    acquire(&mut f, "a", 100, "first", 0);
    acquire(&mut f, "b", 80, "first", 0);
    acquire(&mut f, "c", 90, "first", 0);
    assert_eq!(release(&mut f, "b", 80, MS), (Reply::Int(0), vec![]), "not the owner: leaves the queue");
    let (r, published) = release(&mut f, "a", 100, 2 * MS);
    assert_eq!(r, Reply::Int(2));
    let fence = EPOCH_US as i64 + 1;
    assert_eq!(published, vec![(inbox_channel("c"), format!("c:{fence}"))]);
    assert_eq!(f.string("k", 2 * MS), Some("c"));
    assert_eq!(f.expiry("k", 2 * MS), Some(92 * MS), "unheard: a claim of the waiter's ttl, shorter than 250 ms");
    // The waiter confirms: its token is there, so its ttl starts over and it gets the fence.
    assert_eq!(acquire(&mut f, "c", 90, "retry", 3 * MS), pair(1, fence));
    assert_eq!(f.expiry("k", 3 * MS), Some(93 * MS));
    assert_eq!(release(&mut f, "c", 90, 3 * MS), (Reply::Int(1), vec![]));
    assert_eq!(f.string("k", 3 * MS), None);
    assert!(f.list_entries(3 * MS).is_empty());
}

#[test]
fn a_claim_lasts_250_ms_and_a_lapsed_one_passes_to_the_next_waiter() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    acquire(&mut f, "a", 30_000, "first", 0);
    for w in ["g1", "g2", "w"] {
        acquire(&mut f, w, 30_000, "first", 0);
    }
    let (r, published) = release(&mut f, "a", 30_000, MS);
    assert_eq!(r, Reply::Int(2));
    let seeded = EPOCH_US as i64;
    assert_eq!(published, vec![(inbox_channel("g1"), format!("g1:{}", seeded + 1))]);
    assert_eq!(f.expiry("k", MS), Some(251 * MS), "a claim, not the waiter's 30 s");
    // g1 never confirms. w's poll during the claim sees it, and queues no second time.
    let polled = Reply::Array(vec![Reply::Int(0), Reply::Int(150), Reply::Int(seeded + 1)]);
    assert_eq!(acquire(&mut f, "w", 30_000, "retry", 101 * MS), polled);
    // After it, w's poll finds the key free but g2 first: g2 gets the next claim, not w.
    let polled = Reply::Array(vec![Reply::Int(0), Reply::Int(250), Reply::Int(seeded + 2)]);
    assert_eq!(acquire(&mut f, "w", 30_000, "retry", 252 * MS), polled);
    assert_eq!(f.string("k", 252 * MS), Some("g2"));
    // A newcomer does not barge either; it queues behind w.
    assert_eq!(acquire(&mut f, "n", 30_000, "try", 260 * MS), pair(0, 242));
    assert_eq!(acquire(&mut f, "n", 30_000, "first", 260 * MS), pair(0, -3));
    // g2's claim lapses too; w is at the head and takes the lock itself, with its ttl.
    assert_eq!(acquire(&mut f, "w", 30_000, "retry", 503 * MS), pair(1, seeded + 3));
    assert_eq!(f.expiry("k", 503 * MS), Some(30_503 * MS));
    assert_eq!(f.list_entries(503 * MS), vec![(names().queue, entry("n", 30_000))]);
    // g1 comes back after its claim lapsed: it re-queues at the tail.
    let polled = Reply::Array(vec![Reply::Int(0), Reply::Int(30_000), Reply::Int(seeded + 3)]);
    assert_eq!(acquire(&mut f, "g1", 30_000, "retry", 503 * MS), polled);
    let q: Vec<String> = f.list_entries(503 * MS).into_iter().map(|(_, e)| e).collect();
    assert_eq!(q, [entry("n", 30_000), entry("g1", 30_000)]);
}

#[test]
fn a_hand_off_its_waiter_hears_is_its_whole_ttl() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    acquire(&mut f, "a", 30_000, "first", 0);
    acquire(&mut f, "w", 20_000, "first", 0);
    acquire(&mut f, "x", 20_000, "first", 0);
    // x's inbox has a listener, w's has not: w gets a claim, x nothing yet.
    let (r, published) = release_heard(&mut f, "a", 30_000, MS, &["x"]);
    assert_eq!(r, Reply::Int(2));
    assert_eq!(published.len(), 1);
    assert_eq!(f.expiry("k", MS), Some(251 * MS), "unheard: a claim");
    // w confirms; its release reaches x, who hears it: x holds the key for its 20 s.
    assert_eq!(acquire(&mut f, "w", 20_000, "retry", 2 * MS).as_array().map(|a| a[0].clone()), Some(Reply::Int(1)));
    let (r, published) = release_heard(&mut f, "w", 20_000, 3 * MS, &["x"]);
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, inbox_channel("x"));
    assert_eq!(r, handed_off(Some(published[0].clone())), "heard: the reply carries the announcement");
    assert_eq!(f.string("k", 3 * MS), Some("x"));
    assert_eq!(f.expiry("k", 3 * MS), Some(20_003 * MS), "heard: the waiter's whole ttl");
}

#[test]
fn a_waiter_without_a_valid_inbox_is_refused_or_gets_a_claim() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    for bad in ["", "i123", "x0000000000000000", "i000000000000000g", "i0000000000000000#ab", "i0000000000000000:1"] {
        let args = ["a", "100", "first", "60000", "86400000", "250", bad].map(String::from).to_vec();
        let r = run(&mut f, Script::Acquire, &args, 0, &[]).0;
        assert!(matches!(&r, Reply::Error(e) if e.message.contains("inbox")), "{bad:?}: {r:?}");
    }
}

#[test]
fn scripts_that_fail_write_nothing() {
    // A counter that is no integer, a queue that is no list, a bad ttl: an RDLOCK error before
    // any write (the old release set the key, then failed on the counter).
    for (what, garbage_fence, list_fence) in [("no integer", true, false), ("another type", false, true)] {
        let mut f = Fake::new(Bug::None, EPOCH_US);
        acquire(&mut f, "a", 100, "first", 0);
        acquire(&mut f, "b", 100, "first", 0);
        let n = names();
        if garbage_fence {
            f.put_string(&n.fence, "1.5", None);
        }
        if list_fence {
            f.put_list(&n.fence);
        }
        let before = (f.strings(MS), f.list_entries(MS));
        let (r, published) = release(&mut f, "a", 100, MS);
        assert!(matches!(&r, Reply::Error(e) if e.code == "RDLOCK"), "{what}: {r:?}");
        assert!(published.is_empty());
        assert_eq!((f.strings(MS), f.list_entries(MS)), before, "{what}: the release wrote");
    }
    let mut f = Fake::new(Bug::None, EPOCH_US);
    f.put_string(&names().queue, "x", None);
    let r = acquire(&mut f, "a", 100, "first", 0);
    assert!(matches!(&r, Reply::Error(e) if e.code == "RDLOCK" && e.message.contains("queue")), "{r:?}");
    assert_eq!(f.string("k", 0), None);
    let r = acquire(&mut f, "a", 0, "try", 0);
    assert!(matches!(&r, Reply::Error(e) if e.code == "RDLOCK"), "{r:?}");
}

#[test]
fn release_skips_the_callers_own_stale_entry() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    acquire(&mut f, "b", 50, "first", 0);
    acquire(&mut f, "a", 50, "first", 0); // queued
    acquire(&mut f, "a", 50, "retry", 60 * MS); // b expired: a takes it, its entry is removed
    assert!(f.list_entries(60 * MS).is_empty());
    assert_eq!(release(&mut f, "a", 50, 61 * MS).0, Reply::Int(1));
}

#[test]
fn extend_checks_the_owner() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    acquire(&mut f, "a", 100, "first", 0);
    assert_eq!(extend(&mut f, "a", 300, 10 * MS), Reply::Array(vec![Reply::Int(1)]));
    assert_eq!(f.expiry("k", 10 * MS), Some(310 * MS));
    assert_eq!(extend(&mut f, "b", 300, 10 * MS), Reply::Array(vec![Reply::Int(0)]));
    assert_eq!(extend(&mut f, "a", 300, 400 * MS), Reply::Array(vec![Reply::Int(0)]), "expired");
}

#[test]
fn broken_fakes_skip_the_owner_checks() {
    let mut f = Fake::new(Bug::ExtendWithoutOwnerCheck, EPOCH_US);
    acquire(&mut f, "a", 100, "first", 0);
    assert_eq!(extend(&mut f, "b", 300, 10 * MS), Reply::Array(vec![Reply::Int(1)]));
    let mut f = Fake::new(Bug::ReleaseWithoutOwnerCheck, EPOCH_US);
    acquire(&mut f, "a", 100, "first", 0);
    assert_eq!(release(&mut f, "b", 100, MS).0, Reply::Int(1));
    assert_eq!(f.string("k", MS), None);
}

#[test]
fn fences_keep_increasing_across_a_restart() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    let first = acquire(&mut f, "a", 100, "first", 0);
    f.restart(5 * MS, 2 * MS);
    let loading = acquire(&mut f, "b", 100, "first", 6 * MS);
    assert!(matches!(loading, Reply::Error(e) if e.code == "LOADING"));
    let second = acquire(&mut f, "b", 100, "first", 7 * MS);
    let fence = |r: &Reply| r.as_array().and_then(|a| a[1].as_int()).expect("a fence");
    assert!(fence(&second) > fence(&first));
    assert_eq!(f.grant_epoch("a"), Some(0));
    assert_eq!(f.grant_epoch("b"), Some(1));
}

#[test]
fn a_key_of_the_wrong_type_is_an_error() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    f.put_list("k");
    for r in [acquire(&mut f, "a", 100, "try", 0), release(&mut f, "a", 100, 0).0] {
        assert!(matches!(&r, Reply::Error(e) if e.code == "WRONGTYPE" && e.message.starts_with("RDLOCK")), "{r:?}");
    }
    assert_eq!(extend(&mut f, "a", 100, 0), Reply::Array(vec![Reply::Int(0)]), "pcall: not ours");
}

#[test]
fn wait_counts_replicas_that_caught_up() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    f.add_replica((2 * MS, 2 * MS), vec![]);
    f.add_replica((5 * MS, 5 * MS), vec![(0, 100 * MS)]); // stalled until 100 ms
    assert_eq!(f.wait_done(0, 2, 0, 10), Some(0), "no writes yet: every replica has them");
    acquire(&mut f, "a", 100, "first", 10 * MS);
    let off = f.offset();
    assert_eq!(f.acked(off, 10 * MS), 0);
    assert_eq!(f.wait_done(off, 1, 10 * MS, 50), Some(12 * MS));
    assert_eq!(f.wait_done(off, 2, 10 * MS, 50), Some(60 * MS), "times out");
    assert_eq!(f.acked(off, 60 * MS), 1);
    assert_eq!(f.wait_done(off, 2, 10 * MS, 0), Some(100 * MS), "WAIT with no timeout blocks until done");
    assert_eq!(f.wait_done(off, 3, 10 * MS, 0), None, "or for ever");
    let listed = |r: Reply| r.as_array().and_then(|a| a[2].as_array().map(<[Reply]>::len));
    assert_eq!(listed(f.role(50 * MS)), Some(1), "ROLE lists connected replicas only");
    assert_eq!(listed(f.role(100 * MS)), Some(2));
}

/// A mutex's attempt: the acquire with its value key as `KEYS[4]`.
fn acquire_mutex(f: &mut Fake, token: &str, mode: &str, now: u64) -> Reply {
    let args = [token, "100", mode, "60000", "86400000", "250", &inbox(token)].map(String::from).to_vec();
    let mut keys = keys();
    keys.push(rdlock_core::value_key("k"));
    f.run_script(Script::Acquire, &keys, &args, now, &mut Dice::new(0), &|_: &str| 0).0
}

fn store(f: &mut Fake, token: &str, fence: i64, ttl: &str, value: &[u8], now: u64) -> Reply {
    let keys = ["k".to_owned(), rdlock_core::value_key("k")];
    let args = [token, &fence.to_string(), "8", ttl].map(String::from);
    f.run_script_with_value(Script::Store, &keys, &args, Some(value), now, &mut Dice::new(0), &|_: &str| 0).0
}

#[test]
fn a_mutex_grant_returns_its_value_and_stores_are_owner_and_fence_checked() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    let data = rdlock_core::value_key("k");
    let seeded = (EPOCH_US + 1000) as i64;
    // No value yet: a plain grant.
    assert_eq!(acquire_mutex(&mut f, "a", "first", MS), pair(1, seeded));
    // The owner writes (binary bytes, kept as they are), without a ttl: the value outlives the lock.
    assert_eq!(store(&mut f, "a", seeded, "0", b"\x00\xff", 2 * MS), Reply::Int(1));
    assert_eq!(f.data(&data, 2 * MS), Some((Some(seeded.to_string().as_bytes()), Some(&b"\x00\xff"[..]))));
    assert_eq!(f.expiry(&data, 2 * MS), None);
    // Not the owner: nothing written. Too large, bad fence, bad ttl: errors before anything.
    assert_eq!(store(&mut f, "b", seeded + 5, "0", b"x", 3 * MS), Reply::Int(0));
    let err = |what: &str| Reply::Error(rdlock_core::ServerError::new("RDLOCK", what));
    assert_eq!(store(&mut f, "a", seeded, "0", b"123456789", 3 * MS), err("value too large"));
    assert_eq!(store(&mut f, "a", 0, "0", b"x", 3 * MS), err("invalid fence"));
    assert_eq!(store(&mut f, "a", seeded, "-1", b"x", 3 * MS), err("invalid ttl"));
    // The grant (an idempotent retry) returns the value and its writer's fence, as bytes.
    let with = |fence: i64, f: &[u8], v: &[u8]| {
        Reply::Array(vec![Reply::Int(1), Reply::Int(fence), Reply::Data(f.to_vec()), Reply::Data(v.to_vec())])
    };
    assert_eq!(acquire_mutex(&mut f, "a", "retry", 4 * MS), with(seeded, seeded.to_string().as_bytes(), b"\x00\xff"));
    // A value written under a later fence is never overwritten by an earlier holder.
    f.put_hash(&data, &[("f", (seeded + 9).to_string().as_bytes()), ("v", b"later")]);
    assert_eq!(store(&mut f, "a", seeded, "0", b"x", 5 * MS), Reply::Int(-1));
    // With a ttl the value expires; a grant then has none.
    f.put_hash(&data, &[("v", b"odd")]);
    assert_eq!(acquire_mutex(&mut f, "a", "retry", 5 * MS), with(seeded, b"", b"odd"));
    assert_eq!(store(&mut f, "a", seeded, "20", b"short", 6 * MS), Reply::Int(1));
    assert_eq!(f.expiry(&data, 6 * MS), Some(26 * MS));
    assert_eq!(acquire_mutex(&mut f, "a", "retry", 27 * MS), pair(1, seeded));
    // A value key of another type: the attempt and the store fail, nothing written.
    f.put_list(&data);
    let data_type = Reply::Error(rdlock_core::ServerError::new("RDLOCK", "value key holds another type of value"));
    assert_eq!(acquire_mutex(&mut f, "b", "first", 28 * MS), data_type);
    assert_eq!(f.list_entries(28 * MS).len(), 1, "only the list itself: b did not queue");
    assert_eq!(store(&mut f, "a", seeded, "0", b"x", 28 * MS), data_type);
}

#[test]
fn a_store_without_owner_check_is_a_bug_the_fake_can_have() {
    let mut f = Fake::new(Bug::StoreWithoutOwnerCheck, EPOCH_US);
    assert_eq!(store(&mut f, "nobody", 5, "0", b"x", MS), Reply::Int(1));
}

#[test]
fn a_folded_release_hands_off_as_the_checked_one_and_restarts_a_queue_it_put_back() {
    let mut f = Fake::new(Bug::None, EPOCH_US);
    let q = names().queue;
    acquire(&mut f, "a", 30_000, "first", 0);
    for w in ["w", "x", "y"] {
        acquire(&mut f, w, 20_000, "first", 0);
    }
    // Heard: the waiter's whole ttl; unheard: a claim. As the checked release.
    let (r, published) = release_folded(&mut f, "a", 30_000, MS, &["w"]);
    assert_eq!((r, published.len()), (handed_off(Some(published[0].clone())), 1));
    assert_eq!((f.string("k", MS), f.expiry("k", MS)), (Some("w"), Some(20_001 * MS)));
    let (r, published) = release_folded(&mut f, "w", 20_000, 2 * MS, &[]);
    assert_eq!((r, published.len()), (Reply::Int(2), 1));
    assert_eq!((f.string("k", 2 * MS), f.expiry("k", 2 * MS)), (Some("x"), Some(252 * MS)), "a claim");
    // Not the owner, two queued: the head goes back, the queue keeps its TTL (60 s from 0).
    assert_eq!(acquire(&mut f, "z", 20_000, "first", 3 * MS), pair(0, -3));
    assert_eq!(release_folded(&mut f, "v", 20_000, 3 * MS, &[]).0, Reply::Int(0));
    assert_eq!(f.expiry(&q, 3 * MS), Some(60_000 * MS));
    // One queued: the pop emptied the queue, whose TTL went with it: it gets the caller's.
    assert_eq!(release(&mut f, "z", 20_000, 4 * MS).0, Reply::Int(0), "z leaves");
    let ids: Vec<String> = f.list_entries(4 * MS).into_iter().map(|(_, e)| e).collect();
    assert_eq!(ids, [entry("y", 20_000)]);
    assert_eq!(release_folded(&mut f, "v", 20_000, 5 * MS, &[]).0, Reply::Int(0));
    assert_eq!(f.list_entries(5 * MS).len(), 1);
    assert_eq!(f.expiry(&q, 5 * MS), Some(90_005 * MS));
    // Where SET has no IFEQ the checked release answers, the same way.
    f.ifeq = false;
    let (r, published) = release_folded(&mut f, "x", 250, 6 * MS, &["y"]);
    assert_eq!((r, published.len()), (handed_off(Some(published[0].clone())), 1));
    assert_eq!(f.string("k", 6 * MS), Some("y"));
    // Nobody queued: the owner's delete.
    assert_eq!(release_folded(&mut f, "y", 20_000, 7 * MS, &[]).0, Reply::Int(1));
    assert_eq!(f.string("k", 7 * MS), None);
}
