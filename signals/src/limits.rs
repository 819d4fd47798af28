//! Size limits a caller configures for signals: the largest long section and the largest whole
//! signal. The encoder refuses to write past them and the walker refuses to accept past them, so
//! a peer cannot make a receiver trust a length larger than it agreed to.
//!
//! Invariant: a constructed [`Limits`] always admits a signal with a full short part, a signal
//! id, three section lengths, a checksum and at least one section word.

use crate::header::{HEADER_WORDS, MAX_DATA_WORDS, MAX_SECTIONS, MAX_TOTAL_WORDS};

/// Words every signal may need besides its section words: header, signal id, a full short
/// part, three section lengths and a checksum.
pub const OVERHEAD_WORDS_MAX: usize = HEADER_WORDS + 1 + MAX_DATA_WORDS + MAX_SECTIONS + 1;

/// Validated size limits for signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    max_section_words: u32,
    max_signal_words: u32,
}

/// A limit outside what the wire format and the other limit allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// `max_signal_words` is too small for a full signal or too large for the 16-bit length field.
    #[error("max_signal_words = {value} is out of range (allowed: {min}..={max})")]
    SignalWordsOutOfRange { value: u64, min: u64, max: u64 },
    /// `max_section_words` is zero or cannot fit in a signal of `max_signal_words`.
    #[error("max_section_words = {value} is out of range (allowed: {min}..={max} for max_signal_words = {signal_words})")]
    SectionWordsOutOfRange { value: u64, min: u64, max: u64, signal_words: u64 },
}

impl Limits {
    /// The largest limits the wire format allows.
    pub const WIRE_MAX: Limits = Limits {
        max_section_words: (MAX_TOTAL_WORDS - OVERHEAD_WORDS_MAX) as u32,
        max_signal_words: MAX_TOTAL_WORDS as u32,
    };

    /// Validated limits: `max_signal_words` in `OVERHEAD_WORDS_MAX + 1..=65535`, and
    /// `max_section_words` in `1..=max_signal_words - OVERHEAD_WORDS_MAX`.
    pub fn new(max_section_words: u64, max_signal_words: u64) -> Result<Limits, LimitsError> {
        let signal_min = OVERHEAD_WORDS_MAX as u64 + 1;
        let signal_max = MAX_TOTAL_WORDS as u64;
        if !(signal_min..=signal_max).contains(&max_signal_words) {
            return Err(LimitsError::SignalWordsOutOfRange {
                value: max_signal_words,
                min: signal_min,
                max: signal_max,
            });
        }
        let section_max = max_signal_words - OVERHEAD_WORDS_MAX as u64;
        if !(1..=section_max).contains(&max_section_words) {
            return Err(LimitsError::SectionWordsOutOfRange {
                value: max_section_words,
                min: 1,
                max: section_max,
                signal_words: max_signal_words,
            });
        }
        Ok(Limits {
            max_section_words: max_section_words as u32,
            max_signal_words: max_signal_words as u32,
        })
    }

    /// The largest long section, in words.
    pub const fn max_section_words(&self) -> usize {
        self.max_section_words as usize
    }

    /// The largest whole signal, in words.
    pub const fn max_signal_words(&self) -> usize {
        self.max_signal_words as usize
    }
}

impl Default for Limits {
    /// 8 KiB sections (2,048 words), signals up to 32 KiB (8,192 words).
    fn default() -> Limits {
        Limits { max_section_words: 2048, max_signal_words: 8192 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_bounds() {
        let l = Limits::new(1, OVERHEAD_WORDS_MAX as u64 + 1).unwrap();
        assert_eq!(l.max_section_words(), 1);
        let w = Limits::new(65535 - OVERHEAD_WORDS_MAX as u64, 65535).unwrap();
        assert_eq!(w, Limits::WIRE_MAX);
        let d = Limits::default();
        assert_eq!(Limits::new(d.max_section_words() as u64, d.max_signal_words() as u64), Ok(d));
    }

    #[test]
    fn signal_words_out_of_range_names_the_value() {
        let e = Limits::new(1, 65536).unwrap_err();
        assert_eq!(e, LimitsError::SignalWordsOutOfRange { value: 65536, min: 35, max: 65535 });
        assert!(e.to_string().contains("max_signal_words = 65536"), "{e}");
        assert!(matches!(
            Limits::new(1, 34),
            Err(LimitsError::SignalWordsOutOfRange { value: 34, .. })
        ));
    }

    #[test]
    fn section_words_out_of_range_names_the_value() {
        let e = Limits::new(0, 1000).unwrap_err();
        assert!(e.to_string().contains("max_section_words = 0"), "{e}");
        let e = Limits::new(967, 1000).unwrap_err();
        assert_eq!(
            e,
            LimitsError::SectionWordsOutOfRange {
                value: 967,
                min: 1,
                max: 966,
                signal_words: 1000
            }
        );
    }
}
