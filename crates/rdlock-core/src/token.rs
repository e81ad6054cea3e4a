//! Owner tokens and the core's randomness.

use crate::error::EntropyUnavailable;

/// The generator of owner tokens and jitter (xoshiro256**, 256 bits of state).
///
/// An engine seeds its own from the operating system when it is created
/// ([`Rng::from_os`]), so that no two engines (two clients, two processes, two copies of one
/// configuration) share a token sequence. [`Rng::from_test_seed`] exists for reproducible
/// tests and simulations only: tokens drawn from it are predictable.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator whose 256 bits of state come from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`EntropyUnavailable`] when the operating system cannot supply random bytes.
    pub fn from_os() -> Result<Self, EntropyUnavailable> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| EntropyUnavailable(e.to_string()))?;
        let mut state = [0u64; 4];
        for (word, chunk) in state.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        if state == [0; 4] {
            // The one state xoshiro cannot leave; 2^-256 likely, but never worth a stuck generator.
            state[0] = 1;
        }
        Ok(Self(state))
    }

    /// FOR TESTS ONLY: a generator from a 64-bit seed (expanded with splitmix64), so that a
    /// test or simulation replays exactly. Its tokens are predictable and shared by every
    /// generator with the same seed: never use it for locks other processes contend for.
    pub fn from_test_seed(seed: u64) -> Self {
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

/// An owner token as it is stored: 32 lowercase hex digits. Written digit by digit rather
/// than formatted: every request carries one, a renewal batch one per lock.
pub fn hex(token: u128) -> String {
    let mut out = String::with_capacity(32);
    write_hex(&mut out, token);
    out
}

/// An owner token as it is stored (32 lowercase hex digits), held inline: a guard keeps one
/// without a string of its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken([u8; 32]);

impl OwnerToken {
    /// The stored form of the token `bits`.
    pub fn new(bits: u128) -> Self {
        Self(hex_digits(bits))
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        // ASCII digits: always text.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for OwnerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex_digits(token: u128) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = DIGITS[((token >> ((31 - i) * 4)) & 0xf) as usize];
    }
    digits
}

/// Appends a token's 32 hex digits to `out` (a request's arguments write it in place).
pub(crate) fn write_hex(out: &mut impl std::fmt::Write, token: u128) {
    // Writing to a string or a request's arguments cannot fail.
    let _ = out.write_str(OwnerToken::new(token).as_str());
}

/// An owner token read back from its hex form.
pub fn parse_hex(token: &str) -> Option<u128> {
    if token.len() == 32 { u128::from_str_radix(token, 16).ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_seeded_tokens_are_128_bit_hex_and_reproducible() {
        let (mut a, mut b) = (Rng::from_test_seed(7), Rng::from_test_seed(7));
        let t = a.token();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t, b.token());
        assert_ne!(a.token(), t);
    }

    #[test]
    fn os_seeded_generators_differ() {
        let (Ok(mut a), Ok(mut b)) = (Rng::from_os(), Rng::from_os()) else { return };
        assert_ne!(a.token(), b.token(), "two generators seeded from the OS drew the same token");
    }
}
