//! The fixed signal header on the wire, drawn below and checked at compile time.
//!
//! The format is modelled on NDB's "Protocol6" (a small fixed header whose first word carries the
//! message length, so a receiver walks a batch without knowing any GSN) but the layout is
//! blockwire's own. Every field is little-endian; the crate refuses to build on a big-endian
//! target, so a received batch is read in place with native loads.
//!
//! One signal on the wire, in 32-bit words:
//! ```text
//!   +--------------------+  word 0
//!   | header (4 words)   |
//!   +--------------------+  word 4
//!   | signal id          |  present when FLAG_SIGNAL_ID
//!   +--------------------+
//!   | data words (0..25) |  `data_words` of them
//!   +--------------------+
//!   | section lengths    |  `section_count` words, each the length of one section in words
//!   +--------------------+
//!   | section words      |  the sections, back to back
//!   +--------------------+
//!   | checksum           |  present when FLAG_CHECKSUM: see `crate::checksum`, over all words above
//!   +--------------------+  word `total_words`
//! ```
//! Signals in a batch follow each other with no gap, so each starts on a 4-byte boundary.

use bytemuck::{Pod, Zeroable};

#[cfg(target_endian = "big")]
compile_error!("blockwire's wire format is little-endian and is read in place: big-endian hosts are not supported");

/// The fixed 16-byte header that starts every signal.
///
/// ```text
/// byte  0        2        3        4        6        8                12               16
///       +--------+--------+--------+--------+--------+----------------+----------------+
///       | total  | data   | bits   | gsn    |reserved| sender         | receiver       |
///       | words  | words  |        |        | (zero) | BlockRef word  | BlockRef word  |
///       +--------+--------+--------+--------+--------+----------------+----------------+
///         u16 LE   u8       u8       u16 LE   u16 LE   u32 LE           u32 LE
///
/// bits (byte 3):  bit 7  6  5  4  3  2  1  0
///                     +--+--+--+--+--+--+--+--+
///                     | reserved |CK|ID|PB|SC |  SC: section count 0..=3
///                     +--+--+--+--+--+--+--+--+  PB: 1 = priority B, 0 = priority A
///                                                ID: a signal id word follows the header
///                                                CK: a checksum word ends the signal
///                                                reserved: must be zero
/// ```
/// `total_words` counts the whole signal, header and checksum included.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct WireHeader {
    /// Length of the whole signal in 32-bit words.
    pub total_words: u16,
    /// Number of data words, at most [`MAX_DATA_WORDS`].
    pub data_words: u8,
    /// Section count, priority and flags; see the ruler above.
    pub bits: u8,
    /// Global signal number.
    pub gsn: u16,
    /// Must be zero.
    pub reserved: u16,
    /// The sending block, packed as in [`crate::BlockRef::to_word`].
    pub sender: u32,
    /// The receiving block, packed likewise.
    pub receiver: u32,
}

/// Byte offset of `total_words`.
pub const OFFSET_TOTAL_WORDS: usize = 0;
/// Byte offset of `data_words`.
pub const OFFSET_DATA_WORDS: usize = 2;
/// Byte offset of `bits`.
pub const OFFSET_BITS: usize = 3;
/// Byte offset of `gsn`.
pub const OFFSET_GSN: usize = 4;
/// Byte offset of `reserved`.
pub const OFFSET_RESERVED: usize = 6;
/// Byte offset of `sender`.
pub const OFFSET_SENDER: usize = 8;
/// Byte offset of `receiver`.
pub const OFFSET_RECEIVER: usize = 12;

/// Size of the header in bytes.
pub const HEADER_BYTES: usize = 16;
/// Size of the header in words.
pub const HEADER_WORDS: usize = HEADER_BYTES / 4;
/// The most data words a signal carries (its "short part").
pub const MAX_DATA_WORDS: usize = 25;
/// The most long sections a signal carries.
pub const MAX_SECTIONS: usize = 3;
/// The largest `total_words` the 16-bit field can say.
pub const MAX_TOTAL_WORDS: usize = u16::MAX as usize;

/// Mask of the section count in `bits`.
pub const BITS_SECTION_COUNT: u8 = 0b0000_0011;
/// Set for priority B.
pub const BITS_PRIORITY_B: u8 = 0b0000_0100;
/// A signal id word follows the header.
pub const FLAG_SIGNAL_ID: u8 = 0b0000_1000;
/// A checksum word ends the signal.
pub const FLAG_CHECKSUM: u8 = 0b0001_0000;
/// Bits that must be zero.
pub const BITS_RESERVED: u8 = 0b1110_0000;

const _: () = {
    assert!(core::mem::size_of::<WireHeader>() == HEADER_BYTES);
    assert!(core::mem::align_of::<WireHeader>() == 4);
    assert!(core::mem::offset_of!(WireHeader, total_words) == OFFSET_TOTAL_WORDS);
    assert!(core::mem::offset_of!(WireHeader, data_words) == OFFSET_DATA_WORDS);
    assert!(core::mem::offset_of!(WireHeader, bits) == OFFSET_BITS);
    assert!(core::mem::offset_of!(WireHeader, gsn) == OFFSET_GSN);
    assert!(core::mem::offset_of!(WireHeader, reserved) == OFFSET_RESERVED);
    assert!(core::mem::offset_of!(WireHeader, sender) == OFFSET_SENDER);
    assert!(core::mem::offset_of!(WireHeader, receiver) == OFFSET_RECEIVER);
    // The section count field must be able to say MAX_SECTIONS, and the flag bits must not overlap.
    assert!(BITS_SECTION_COUNT as usize >= MAX_SECTIONS);
    assert!(
        BITS_SECTION_COUNT & BITS_PRIORITY_B == 0
            && (BITS_SECTION_COUNT | BITS_PRIORITY_B) & (FLAG_SIGNAL_ID | FLAG_CHECKSUM) == 0
            && FLAG_SIGNAL_ID & FLAG_CHECKSUM == 0
    );
    assert!(
        BITS_SECTION_COUNT | BITS_PRIORITY_B | FLAG_SIGNAL_ID | FLAG_CHECKSUM | BITS_RESERVED
            == 0xFF
    );
    assert!(MAX_DATA_WORDS <= u8::MAX as usize);
};

impl WireHeader {
    /// The section count encoded in `bits`.
    pub const fn section_count(&self) -> usize {
        (self.bits & BITS_SECTION_COUNT) as usize
    }

    /// Whether a signal id word follows the header.
    pub const fn has_signal_id(&self) -> bool {
        self.bits & FLAG_SIGNAL_ID != 0
    }

    /// Whether a checksum word ends the signal.
    pub const fn has_checksum(&self) -> bool {
        self.bits & FLAG_CHECKSUM != 0
    }

    /// Words that precede the section words: header, signal id, data and section lengths.
    pub const fn fixed_words(&self) -> usize {
        HEADER_WORDS
            + self.has_signal_id() as usize
            + self.data_words as usize
            + self.section_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_sit_where_the_ruler_says() {
        let h = WireHeader {
            total_words: 0x0102,
            data_words: 0x03,
            bits: BITS_PRIORITY_B | FLAG_CHECKSUM | 2,
            gsn: 0x0506,
            reserved: 0,
            sender: 0x0A0B_0C0D,
            receiver: 0x1112_1314,
        };
        let bytes = bytemuck::bytes_of(&h);
        assert_eq!(
            bytes,
            &[
                0x02, 0x01, 0x03, 0x16, 0x06, 0x05, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A, 0x14, 0x13, 0x12,
                0x11
            ]
        );
        assert_eq!(h.section_count(), 2);
        assert!(h.has_checksum());
        assert!(!h.has_signal_id());
        assert_eq!(h.fixed_words(), 4 + 3 + 2);
    }
}
