//! The client's own traces in a worker's history: with `RDLOCK_FAULT_TRACE=debug` (or
//! `trace`, `info`...), every `tracing` event of the rdlock crates becomes a note of the worker
//! that made it, stamped like its other records, so that a history shows what the client did
//! between an attempt and its answer (a failover followed, a request sent, its reply).
//!
//! A minimal subscriber: events only, spans are given ids and otherwise ignored.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// The environment variable naming the most verbose level noted (`error` .. `trace`).
pub const TRACE_ENV: &str = "RDLOCK_FAULT_TRACE";

/// Hands each rdlock event, as one line, to `emit`.
pub struct Notes<F> {
    level: Level,
    emit: F,
    next_span: AtomicU64,
}

impl<F> fmt::Debug for Notes<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notes").field("level", &self.level).finish_non_exhaustive()
    }
}

impl<F: Fn(String) + Send + Sync + 'static> Notes<F> {
    /// A subscriber for the level [`TRACE_ENV`] names; `None` when it is unset or names none.
    pub fn from_env(emit: F) -> Option<Self> {
        let level = std::env::var(TRACE_ENV).ok()?.trim().parse().ok()?;
        Some(Self { level, emit, next_span: AtomicU64::new(1) })
    }
}

impl<F: Fn(String) + Send + Sync + 'static> Subscriber for Notes<F> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.level && metadata.target().starts_with("rdlock")
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = Line(format!("trace {} {}:", meta.level(), meta.target()));
        event.record(&mut line);
        (self.emit)(line.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's fields, `name=value` after its message.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = match field.name() {
            "message" => write!(self.0, " {value:?}"),
            name => write!(self.0, " {name}={value:?}"),
        };
    }
}
