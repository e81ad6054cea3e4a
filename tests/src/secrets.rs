//! No secret where it can leak: passwords (and TLS keys) never appear in the `Debug` or
//! `Display` output of rdlock's public types and errors, nor in any tracing span or event at
//! TRACE level; owner tokens never appear whole in the logs. Run from `tests/secrets.rs`, a
//! test binary of its own, because it installs the process's global tracing subscriber.

use std::fmt::{Debug, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rdlock_driver::{ClientConfig, ClientIdentity, ClusterConfig, SentinelConfig, TlsConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::harness::{Harness, lock_with};
use crate::support::{admin, exists, inbox_subscribers, server, wait_until};

/// The server's password.
const PASSWORD: &str = "pw-3b9f1c0e-server-secret";
/// An ACL user's password, and a wrong one tried for that user.
const USER_PASSWORD: &str = "pw-7d2a55aa-user-secret";
const WRONG_PASSWORD: &str = "pw-e41b0c9d-wrong-secret";
/// A client key in TLS settings.
const TLS_KEY: &str = "key-90f1aa37-tls-secret";
const SECRETS: [&str; 4] = [PASSWORD, USER_PASSWORD, WRONG_PASSWORD, TLS_KEY];
const KEY: &str = "rdlock-test:secrets";

/// Every span and event, checked for the secrets as it is recorded (nothing is kept but what
/// leaked, so it can run under every other case).
#[derive(Default)]
struct Capture {
    next_id: AtomicU64,
    /// Spans and events recorded.
    records: AtomicUsize,
    /// Whether an acquisition's span was seen: the subscriber does see the library.
    saw_acquire: AtomicBool,
    leaks: Mutex<Vec<String>>,
    /// Owner tokens that must not appear whole.
    tokens: Mutex<Vec<String>>,
}

impl Capture {
    fn check(&self, what: &str, text: &str) {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if SECRETS.iter().any(|s| text.contains(s)) || tokens.iter().any(|t| text.contains(t.as_str())) {
            self.leaks.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{what}: {text}"));
        }
    }
}

/// The fields of a span or event as `name=value` text.
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain: a wrapped cause is where a URL would hide.
        let _ = write!(self.0, " {}={value} ({value:?})", field.name());
        let mut source = value.source();
        while let Some(s) = source {
            let _ = write!(self.0, " <- {s} ({s:?})");
            source = s.source();
        }
    }
}

fn fields(metadata: &Metadata<'_>, record: impl FnOnce(&mut Fields)) -> String {
    let mut f = Fields(format!("{} {} {}", metadata.level(), metadata.target(), metadata.name()));
    record(&mut f);
    f.0
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.records.fetch_add(1, Ordering::Relaxed);
        if span.metadata().name() == "rdlock.acquire" {
            self.saw_acquire.store(true, Ordering::Relaxed);
        }
        self.check("span", &fields(span.metadata(), |f| span.record(f)));
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut f = Fields(String::new());
        values.record(&mut f);
        self.check("span record", &f.0);
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.check("event", &fields(event.metadata(), |f| event.record(f)));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The process's capturing subscriber, installed by the first caller.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Forward(capture)).expect("no other global subscriber");
        capture
    })
}

/// A runtime's turn at the case: the runtimes built into one test binary share its subscriber,
/// so their cases take turns, each from a clean capture, and one runtime's spans cannot pass
/// for another's.
pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let capture = capture();
    capture.saw_acquire.store(false, Ordering::Relaxed);
    capture.leaks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    turn
}

/// The global subscriber must be owned; this one forwards to the leaked capture.
struct Forward(&'static Capture);

impl Subscriber for Forward {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.new_span(span)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        self.0.record(id, values)
    }
    fn record_follows_from(&self, id: &Id, follows: &Id) {
        self.0.record_follows_from(id, follows)
    }
    fn event(&self, event: &Event<'_>) {
        self.0.event(event)
    }
    fn enter(&self, id: &Id) {
        self.0.enter(id)
    }
    fn exit(&self, id: &Id) {
        self.0.exit(id)
    }
}

/// `Debug` and `Display` (with every cause) of an error, and `Debug` of a value, checked.
fn shown<E: std::error::Error>(what: &str, e: &E) {
    let mut text = format!("{e} / {e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, " <- {s} / {s:?}");
        source = s.source();
    }
    capture().check(what, &text);
}

fn debugged(what: &str, value: &impl Debug) {
    capture().check(what, &format!("{value:?}"));
}

/// A known password on the server and an ACL user: a connection failure, an auth failure,
/// malformed URLs with the password in them, and a normal lock with a hand-off (the pub/sub
/// connection authenticates too), all under a TRACE-level capturing subscriber; the password
/// shows nowhere, and no owner token shows whole.
pub async fn no_secret_in_logs_errors_or_debug_output<H: Harness>() {
    let capture = capture();
    let server = server();
    let port = server.port();
    let mut conn = admin(&server);
    redis::cmd("ACL")
        .arg(&["SETUSER", "locker", "on", &format!(">{USER_PASSWORD}"), "~*", "&*", "+@all"])
        .query::<()>(&mut conn)
        .expect("ACL SETUSER");
    redis::cmd("CONFIG").arg(&["SET", "requirepass", PASSWORD]).query::<()>(&mut conn).expect("CONFIG SET");

    // Nobody listens on a fresh free port: the connection fails.
    let closed = rdlock_testkit::free_port();
    let refused = H::connect(&format!("redis://:{PASSWORD}@127.0.0.1:{closed}/")).await.expect_err("nobody listens");
    shown("connection failure", &refused);
    let denied =
        H::connect(&format!("redis://locker:{WRONG_PASSWORD}@127.0.0.1:{port}/")).await.expect_err("a wrong password");
    shown("auth failure", &denied);
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:notaport/"),
        format!("redis+sentinel://:{PASSWORD}@/"),
        format!("redis+cluster://:{PASSWORD}@127.0.0.1:notaport"),
    ] {
        shown("a malformed URL", &H::connect(&url).await.expect_err("malformed"));
    }
    let sentinel = SentinelConfig::from_url(&format!("redis+sentinel://locker:{USER_PASSWORD}@127.0.0.1:1/m"));
    debugged("a sentinel configuration", &sentinel.expect("a sentinel URL"));
    let cluster = ClusterConfig::from_url(&format!("redis+cluster://locker:{USER_PASSWORD}@127.0.0.1:1"));
    debugged("a cluster configuration", &cluster.expect("a cluster URL"));
    let identity = ClientIdentity { cert_pem: "cert".into(), key_pem: TLS_KEY.into() };
    let tls =
        ClientConfig { tls: Some(TlsConfig { ca_pem: None, identity: Some(identity) }), ..ClientConfig::default() };
    debugged("a client configuration", &tls);

    for url in
        [format!("redis://:{PASSWORD}@127.0.0.1:{port}/"), format!("redis://locker:{USER_PASSWORD}@127.0.0.1:{port}/")]
    {
        let (holder, waiter) = (H::connect(&url).await.expect("connect"), H::connect(&url).await.expect("connect"));
        debugged("a client", &holder);
        let guard = H::lock(&holder, KEY).await.expect("lock");
        capture.tokens.lock().unwrap_or_else(|e| e.into_inner()).push(H::token(&guard));
        debugged("a guard", &guard);
        let task = H::spawn(async move {
            let g = lock_with::<H>(&waiter, KEY, rdlock_core::LockOptions::default(), Duration::from_secs(10)).await;
            g.expect("handed the lock")
        });
        wait_until("the waiter subscribed", Duration::from_secs(10), || inbox_subscribers(&mut conn, KEY) >= 1);
        assert!(H::release(guard).await.expect("release").was_held());
        let handed = task.await;
        capture.tokens.lock().unwrap_or_else(|e| e.into_inner()).push(H::token(&handed));
        assert!(H::release(handed).await.expect("release").was_held());
    }
    // The test-kit's own connections have no password now: check on the logged-in one.
    assert!(!exists(&mut conn, KEY), "the lock key is gone");
    assert!(capture.saw_acquire.load(Ordering::Relaxed), "the subscriber saw the library's spans");
    let leaks = capture.leaks.lock().unwrap_or_else(|e| e.into_inner());
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
