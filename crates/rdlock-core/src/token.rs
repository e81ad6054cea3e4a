//! Owner tokens and the core's seeded randomness.

/// A seeded generator (xoshiro256**): the core never draws entropy itself, so a run is
/// reproducible from its seed. Drivers seed it from the operating system.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator from a 64-bit seed (expanded with splitmix64).
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A value in `[lo, hi]`, for jitter.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.next_u64() % (hi - lo + 1) }
    }

    /// A fresh owner token: 128 random bits as 32 lowercase hex digits.
    pub fn token(&mut self) -> String {
        hex(self.token_bits())
    }

    /// A fresh owner token's 128 random bits.
    pub fn token_bits(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// An owner token as it is stored: 32 lowercase hex digits.
pub fn hex(token: u128) -> String {
    format!("{token:032x}")
}

/// An owner token read back from its hex form.
pub fn parse_hex(token: &str) -> Option<u128> {
    if token.len() == 32 { u128::from_str_radix(token, 16).ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_and_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let t = a.token();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t, b.token());
        assert_ne!(a.token(), t);
    }
}
