//! Timestamps comparable across processes.
//!
//! `std::time::Instant` cannot be written down, but on Linux it reads `CLOCK_MONOTONIC`,
//! which every process of a machine shares. Histories therefore carry microseconds of
//! `CLOCK_MONOTONIC` (read with `clock_gettime`), and instants such as a guard's
//! `valid_until` are translated to it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};

/// Microseconds of `CLOCK_MONOTONIC`: comparable between processes of one machine.
pub fn mono_us() -> i64 {
    // clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux; 0 would only make a history odd.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| ts.tv_sec() * 1_000_000 + ts.tv_nsec() / 1_000)
}

/// Microseconds since the Unix epoch (wall clock), for people reading a history.
pub fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn signed_micros(later: Instant, earlier: Instant) -> i64 {
    match later.checked_duration_since(earlier) {
        Some(d) => micros(d),
        None => -micros(earlier.duration_since(later)),
    }
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `instant` on the `CLOCK_MONOTONIC` scale of [`mono_us`].
pub fn mono_of(instant: Instant) -> i64 {
    let (now, mono) = (Instant::now(), mono_us());
    mono + signed_micros(instant, now)
}

/// `instant` on the wall-clock scale of [`wall_us`].
pub fn wall_of(instant: Instant) -> i64 {
    let (now, wall) = (Instant::now(), wall_us());
    wall + signed_micros(instant, now)
}

/// Sleeps (blocking the thread) until [`mono_us`] reaches `at`.
pub fn sleep_until_mono(at: i64) {
    let now = mono_us();
    if at > now {
        std::thread::sleep(Duration::from_micros(u64::try_from(at - now).unwrap_or(0)));
    }
}

/// Formats microseconds as milliseconds with one decimal.
pub fn ms(us: i64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_map_onto_the_monotonic_clock() {
        let before = mono_us();
        let later = mono_of(Instant::now() + Duration::from_millis(50));
        let after = mono_us();
        // Generous: the clock reads are truncated to microseconds and may be preempted apart on a
        // loaded machine.
        assert!(later >= before + 49_000 && later <= after + 50_000 + 20_000, "{before} {later} {after}");
        let earlier = mono_of(Instant::now() - Duration::from_millis(20));
        assert!(earlier <= mono_us() - 19_000);
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(ms(1_260), "1.3 ms");
        assert_eq!(ms(-3_000), "-3.0 ms");
    }
}
