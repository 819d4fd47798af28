//! The optional per-signal checksum, for debugging links.
//!
//! NDB folds a signal's words with XOR, which misses two flips of the same bit in different words.
//! Ours folds each word with a rotate, an XOR and a multiply by an odd constant: each step is a
//! bijection of the running value, so changing any single word (any number of its bits) always
//! changes the result, and reordering words almost always does. It is a debugging aid against
//! corruption, not a cryptographic check.

/// Starting value of the fold (any non-zero constant).
const SEED: u32 = 0x6A09_E667;
/// Odd multiplier (golden-ratio constant), so the multiply is invertible modulo 2^32.
const MULTIPLIER: u32 = 0x9E37_79B1;

/// The checksum of `words`.
#[inline]
pub fn checksum(words: &[u32]) -> u32 {
    words.iter().fold(SEED, |acc, &w| (acc.rotate_left(5) ^ w).wrapping_mul(MULTIPLIER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_single_word_change_is_detected() {
        let words: Vec<u32> = (0..40u32).map(|i| i.wrapping_mul(0x0101_0101)).collect();
        let good = checksum(&words);
        for i in 0..words.len() {
            for bit in [0u32, 1, 7, 31] {
                let mut bad = words.clone();
                bad[i] ^= 1 << bit;
                assert_ne!(checksum(&bad), good, "flip of bit {bit} in word {i} went unseen");
            }
            // Two flips of the same bit in two words: XOR folding misses this one.
            if i + 1 < words.len() {
                let mut bad = words.clone();
                bad[i] ^= 1;
                bad[i + 1] ^= 1;
                assert_ne!(checksum(&bad), good);
            }
        }
    }
}
