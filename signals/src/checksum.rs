//! The optional per-signal checksum, for debugging links.
//!
//! NDB folds a signal's words with XOR, which misses two flips of the same bit in different words.
//! Ours folds each word in with XOR and then MurmurHash3's 32-bit finaliser (Austin Appleby's
//! `fmix32`: xor-shifts and two odd multiplies), plus a constant. Each step is a bijection of the
//! running value, so changing any single word (any number of its bits) always changes the result;
//! the finaliser spreads every bit over the whole value, so changes in two or more words cancel
//! only by chance (about 2^-32). A plain multiply-and-rotate fold is not enough: a multiply moves
//! a difference only towards the high bits, and a flip in the next word could cancel it half the
//! time. It is a debugging aid against corruption, not a cryptographic check.

/// Starting value of the fold (any constant).
const SEED: u32 = 0x6A09_E667;
/// Added after each word so a zero state does not stay zero over zero words.
const STEP: u32 = 0x9E37_79B9;

/// MurmurHash3's 32-bit finaliser: a bijection that mixes every bit into every other.
#[inline]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// The checksum of `words`.
#[inline]
pub fn checksum(words: &[u32]) -> u32 {
    words.iter().fold(SEED, |acc, &w| fmix32(acc ^ w).wrapping_add(STEP))
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
            // Flips in two neighbouring words: XOR folding misses the same bit in both, and a
            // multiply-only fold misses a high bit followed by a low one about half the time.
            if i + 1 < words.len() {
                for (a, b) in [(0u32, 0u32), (31, 31), (28, 1), (30, 3), (16, 0)] {
                    let mut bad = words.clone();
                    bad[i] ^= 1 << a;
                    bad[i + 1] ^= 1 << b;
                    assert_ne!(
                        checksum(&bad),
                        good,
                        "flips of bits {a} and {b} in words {i}, {}",
                        i + 1
                    );
                }
            }
        }
    }
}
