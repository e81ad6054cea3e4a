//! Seeded randomness for fault timings: a test prints its seed, and `RDLOCK_FAULT_SEED`
//! replays it.

use std::time::Duration;

/// Environment variable that fixes the seed of every test.
pub const SEED_ENV: &str = "RDLOCK_FAULT_SEED";

/// Fault timings drawn from the core's seeded generator, with a few helpers for tests.
#[derive(Clone, Debug)]
pub struct Rng(rdlock_core::Rng);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(rdlock_core::Rng::from_test_seed(seed))
    }

    /// The seed of test `name`: `$RDLOCK_FAULT_SEED` if set, else drawn from the clock.
    /// Printed, so a failing run can be replayed.
    pub fn for_test(name: &str) -> (u64, Self) {
        let base = std::env::var(SEED_ENV).ok().and_then(|s| s.trim().parse::<u64>().ok());
        let seed = base.unwrap_or_else(|| crate::clock::wall_us().unsigned_abs() ^ u64::from(std::process::id()));
        println!("[{name}] seed {seed} (replay with {SEED_ENV}={seed})");
        // Mix in the test's name, so tests sharing a seed still differ.
        let mixed =
            name.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (seed, Self::new(mixed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.between(lo, hi)
    }

    /// Uniform in `lo_ms..=hi_ms` milliseconds.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.between(lo_ms, hi_ms))
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// An index below `n` (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_and_stay_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let x = a.between(3, 9);
            assert_eq!(x, b.between(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_eq!(a.between(5, 5), 5);
        assert_eq!(a.between(5, 1), 5);
        assert!(a.index(3) < 3);
        assert_eq!(a.index(0), 0);
    }
}
