//! One redo record: the after-image of a committed operation (or a delete marker), stamped
//! with where it sits in the log, ending in a CRC-32C; its encoding into a caller's buffer and
//! its decoding, which checks everything and never panics on any input.
//!
//! A record on disk, every field little-endian (the crate does not build for big-endian hosts):
//! ```text
//! byte 0        4        8                16               24               32
//!      +--------+--------+----------------+----------------+----------------+
//!      | magic  | length | sequence       | position       | round          |
//!      +--------+--------+----------------+----------------+----------------+
//!        u32      u32      u64              u64              u64
//! byte 32               40               48   49   50   52       56       60       64
//!      +----------------+----------------+----+----+----+--------+--------+--------+
//!      | gci            | transaction    |kind|flag|rsvd| table  | table  | parti- |
//!      |                |                |    |    |    |        | version| tion   |
//!      +----------------+----------------+----+----+----+--------+--------+--------+
//!        u64              u64              u8   u8   u16  u32      u32      u32
//! byte 64       68       72
//!      +--------+--------+---------------------+----------------+--------+
//!      | key    | image  | key bytes, then     | zero padding   | crc32c |
//!      | bytes  | bytes  | image bytes         | to length - 4  |        |
//!      +--------+--------+---------------------+----------------+--------+
//!        u32      u32                                             u32, at length - 4
//! ```
//! - `length` counts the whole record, header to checksum, and is a multiple of 8: records are
//!   packed back to back on 8-byte boundaries. Not 512: a typical record is 100 to 300 bytes
//!   and group commit writes whatever a round holds, so sector padding per record would
//!   multiply the bytes written; a round instead rewrites the partly filled sector it starts
//!   in, relying on the device writing a sector atomically (as PostgreSQL's WAL and NDB's redo
//!   log, which rewrites its partly filled 32 KiB page at every group commit, both do).
//! - `sequence` numbers every record of the log (file-end records included) from 0, one more
//!   each; `position` is the record's own place in the log (its [`crate::redo::Lsn`]), so a
//!   record left from an earlier lap of the ring, whose position is one ring length or more
//!   behind, is never taken for the one expected there. NDB keeps a lap number in each redo
//!   page header for the same purpose; a position carries the lap and the offset in one.
//! - `round` numbers the write rounds (group commits): every record of one round carries its
//!   number, the last carries [`FLAG_ROUND_END`]; the next round's number is one more. Recovery
//!   uses it to tell a torn last round from corruption in a round that had completed.
//! - `kind` is [`Kind::Write`] (the image is the row after the operation), [`Kind::Delete`]
//!   (no image) or [`Kind::FileEnd`] (no key, no image: the rest of this file is unused, the
//!   log goes on at the start of the next file); `reserved` must be zero.
//! - `crc32c` (Castagnoli, the `crc32c` crate, hardware-accelerated) covers every byte before it.

use bytemuck::{Pod, Zeroable};

#[cfg(target_endian = "big")]
compile_error!(
    "the redo log format is little-endian and is read in place: big-endian hosts are not supported"
);

/// The first four bytes of every record: `BWrd`.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"BWrd");
/// Size of the fixed header.
pub const HEADER_BYTES: usize = 72;
/// Size of the trailing checksum.
pub const CRC_BYTES: usize = 4;
/// Every record starts and ends on a multiple of this.
pub const ALIGN_BYTES: usize = 8;
/// The smallest record: a header and a checksum, aligned (a delete of an empty key, or a file
/// end). A file whose unused rest is shorter than this needs no file-end record.
pub const MIN_RECORD_BYTES: usize = align_up(HEADER_BYTES + CRC_BYTES);

/// Set on the last record of a write round.
pub const FLAG_ROUND_END: u8 = 0b0000_0001;
/// The flags a valid record may carry.
const FLAGS_KNOWN: u8 = FLAG_ROUND_END;

/// The fixed header that starts every record; see the ruler in the module comment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RecordHeader {
    /// [`RECORD_MAGIC`].
    pub magic: u32,
    /// Bytes of the whole record, a multiple of [`ALIGN_BYTES`].
    pub length: u32,
    /// The record's number in the log.
    pub sequence: u64,
    /// The record's position in the log.
    pub position: u64,
    /// The write round the record went to disk in.
    pub round: u64,
    /// The global checkpoint the operation's transaction committed in.
    pub gci: u64,
    /// The transaction id.
    pub transaction: u64,
    /// A [`Kind`].
    pub kind: u8,
    /// [`FLAG_ROUND_END`] or zero.
    pub flags: u8,
    /// Zero.
    pub reserved: u16,
    /// Table id.
    pub table: u32,
    /// Table version.
    pub table_version: u32,
    /// Partition of the table.
    pub partition: u32,
    /// Bytes of the key.
    pub key_bytes: u32,
    /// Bytes of the image (zero for a delete and a file end).
    pub image_bytes: u32,
}

/// Byte offset of `magic`.
pub const OFFSET_MAGIC: usize = 0;
/// Byte offset of `length`.
pub const OFFSET_LENGTH: usize = 4;
/// Byte offset of `sequence`.
pub const OFFSET_SEQUENCE: usize = 8;
/// Byte offset of `position`.
pub const OFFSET_POSITION: usize = 16;
/// Byte offset of `round`.
pub const OFFSET_ROUND: usize = 24;
/// Byte offset of `gci`.
pub const OFFSET_GCI: usize = 32;
/// Byte offset of `transaction`.
pub const OFFSET_TRANSACTION: usize = 40;
/// Byte offset of `kind`.
pub const OFFSET_KIND: usize = 48;
/// Byte offset of `flags`.
pub const OFFSET_FLAGS: usize = 49;
/// Byte offset of `reserved`.
pub const OFFSET_RESERVED: usize = 50;
/// Byte offset of `table`.
pub const OFFSET_TABLE: usize = 52;
/// Byte offset of `table_version`.
pub const OFFSET_TABLE_VERSION: usize = 56;
/// Byte offset of `partition`.
pub const OFFSET_PARTITION: usize = 60;
/// Byte offset of `key_bytes`.
pub const OFFSET_KEY_BYTES: usize = 64;
/// Byte offset of `image_bytes`.
pub const OFFSET_IMAGE_BYTES: usize = 68;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RecordHeader>() == HEADER_BYTES);
    assert!(align_of::<RecordHeader>() == 8);
    assert!(HEADER_BYTES % ALIGN_BYTES == 0);
    assert!(offset_of!(RecordHeader, magic) == OFFSET_MAGIC);
    assert!(offset_of!(RecordHeader, length) == OFFSET_LENGTH);
    assert!(offset_of!(RecordHeader, sequence) == OFFSET_SEQUENCE);
    assert!(offset_of!(RecordHeader, position) == OFFSET_POSITION);
    assert!(offset_of!(RecordHeader, round) == OFFSET_ROUND);
    assert!(offset_of!(RecordHeader, gci) == OFFSET_GCI);
    assert!(offset_of!(RecordHeader, transaction) == OFFSET_TRANSACTION);
    assert!(offset_of!(RecordHeader, kind) == OFFSET_KIND);
    assert!(offset_of!(RecordHeader, flags) == OFFSET_FLAGS);
    assert!(offset_of!(RecordHeader, reserved) == OFFSET_RESERVED);
    assert!(offset_of!(RecordHeader, table) == OFFSET_TABLE);
    assert!(offset_of!(RecordHeader, table_version) == OFFSET_TABLE_VERSION);
    assert!(offset_of!(RecordHeader, partition) == OFFSET_PARTITION);
    assert!(offset_of!(RecordHeader, key_bytes) == OFFSET_KEY_BYTES);
    assert!(offset_of!(RecordHeader, image_bytes) == OFFSET_IMAGE_BYTES);
    assert!(MIN_RECORD_BYTES == 80);
};

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The row's image after a write (insert, update).
    Write = 1,
    /// The row was deleted.
    Delete = 2,
    /// The rest of this file is unused; the log continues at the next file's start.
    FileEnd = 3,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            1 => Some(Kind::Write),
            2 => Some(Kind::Delete),
            3 => Some(Kind::FileEnd),
            _ => None,
        }
    }
}

/// What a committed operation left in the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// The row's image after the operation.
    Write(&'a [u8]),
    /// The row is gone.
    Delete,
}

/// One committed operation's after-image, as the storage block hands it to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The global checkpoint its transaction committed in.
    pub gci: u64,
    /// The transaction id.
    pub transaction: u64,
    /// Table id.
    pub table: u32,
    /// Table version.
    pub table_version: u32,
    /// Partition of the table.
    pub partition: u32,
    /// The primary key's bytes.
    pub key: &'a [u8],
    /// The row image, or the delete marker.
    pub change: Change<'a>,
}

/// Where the writer places a record: its number, position and round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) sequence: u64,
    pub(crate) position: u64,
    pub(crate) round: u64,
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header remain before the end of the file.
    #[error(
        "{available} bytes left before the end of the file, a record header needs {HEADER_BYTES}"
    )]
    Truncated { available: usize },
    /// The magic is wrong (zeros, or not the start of a record).
    #[error("magic {found:#010x}, expected {RECORD_MAGIC:#010x}")]
    BadMagic { found: u32 },
    /// The length field is out of bounds.
    #[error("length {length} is invalid ({reason}; {available} bytes left in the file)")]
    BadLength { length: u32, available: usize, reason: &'static str },
    /// The checksum does not match the bytes.
    #[error("checksum {stored:#010x} does not match the bytes' {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    /// The kind byte is not a known kind.
    #[error("kind {found} is not a record kind")]
    BadKind { found: u8 },
    /// Unknown flags or a non-zero reserved field.
    #[error("flags {flags:#04x} / reserved {reserved} are invalid")]
    BadFlags { flags: u8, reserved: u16 },
    /// The key and image lengths do not add up to the record length, or the kind forbids them.
    #[error("key {key_bytes} + image {image_bytes} bytes do not fit a {kind:?} record of {length} bytes")]
    BadPayload { kind: Kind, key_bytes: u32, image_bytes: u32, length: u32 },
}

/// A record read back: its header and its key and image, borrowed from the bytes read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The header as stored.
    pub header: RecordHeader,
    /// The kind.
    pub kind: Kind,
    /// The key bytes.
    pub key: &'a [u8],
    /// The image bytes (empty for a delete or a file end).
    pub image: &'a [u8],
}

impl Decoded<'_> {
    /// Bytes of the whole record.
    pub fn length(&self) -> usize {
        self.header.length as usize
    }

    /// Whether this is the last record of its write round.
    pub fn round_end(&self) -> bool {
        self.header.flags & FLAG_ROUND_END != 0
    }
}

/// `n` rounded up to [`ALIGN_BYTES`].
pub const fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Bytes of the record for a key and an image of these sizes, or `None` when that does not fit
/// the 32-bit length field.
pub fn encoded_bytes(key_bytes: usize, image_bytes: usize) -> Option<usize> {
    let payload = key_bytes.checked_add(image_bytes)?;
    let total = align_up(HEADER_BYTES.checked_add(payload)?.checked_add(CRC_BYTES)?);
    u32::try_from(total).ok().map(|_| total)
}

/// Bytes `record` takes when encoded.
pub fn record_bytes(record: &Record<'_>) -> Option<usize> {
    encoded_bytes(record.key.len(), image_of(record).len())
}

fn image_of<'a>(record: &Record<'a>) -> &'a [u8] {
    match record.change {
        Change::Write(image) => image,
        Change::Delete => &[],
    }
}

/// Encodes `record`, stamped, at the start of `out`; returns its length. `out` must hold
/// [`record_bytes`] bytes (the caller checked the size against its buffer).
pub(crate) fn encode(record: &Record<'_>, stamp: Stamp, out: &mut [u8]) -> usize {
    let image = image_of(record);
    let kind = match record.change {
        Change::Write(_) => Kind::Write,
        Change::Delete => Kind::Delete,
    };
    let Some(length) = encoded_bytes(record.key.len(), image.len()) else {
        unreachable!("the log checks a record's size before encoding it")
    };
    assert!(out.len() >= length, "record of {length} bytes encoded into {} bytes", out.len());
    let header = RecordHeader {
        magic: RECORD_MAGIC,
        length: length as u32,
        sequence: stamp.sequence,
        position: stamp.position,
        round: stamp.round,
        gci: record.gci,
        transaction: record.transaction,
        kind: kind as u8,
        flags: 0,
        reserved: 0,
        table: record.table,
        table_version: record.table_version,
        partition: record.partition,
        key_bytes: record.key.len() as u32,
        image_bytes: image.len() as u32,
    };
    out[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    let key_end = HEADER_BYTES + record.key.len();
    out[HEADER_BYTES..key_end].copy_from_slice(record.key);
    out[key_end..key_end + image.len()].copy_from_slice(image);
    out[key_end + image.len()..length - CRC_BYTES].fill(0);
    seal(&mut out[..length]);
    length
}

/// Encodes a file-end record at the start of `out`; returns its length.
pub(crate) fn encode_file_end(stamp: Stamp, out: &mut [u8]) -> usize {
    let length = MIN_RECORD_BYTES;
    assert!(out.len() >= length, "file-end record encoded into {} bytes", out.len());
    let header = RecordHeader {
        magic: RECORD_MAGIC,
        length: length as u32,
        sequence: stamp.sequence,
        position: stamp.position,
        round: stamp.round,
        kind: Kind::FileEnd as u8,
        ..RecordHeader::zeroed()
    };
    out[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    out[HEADER_BYTES..length - CRC_BYTES].fill(0);
    seal(&mut out[..length]);
    length
}

/// Marks the encoded record at the start of `record` as its round's last and reseals it.
pub(crate) fn set_round_end(record: &mut [u8]) {
    let length = u32::from_le_bytes([record[4], record[5], record[6], record[7]]) as usize;
    debug_assert!(length >= MIN_RECORD_BYTES && length <= record.len());
    record[OFFSET_FLAGS] |= FLAG_ROUND_END;
    seal(&mut record[..length]);
}

/// Writes the checksum of everything before the last four bytes into them.
fn seal(record: &mut [u8]) {
    let body = record.len() - CRC_BYTES;
    let crc = crc32c::crc32c(&record[..body]);
    record[body..].copy_from_slice(&crc.to_le_bytes());
}

/// The position a record header claims, when `bytes` start with the magic and hold a header:
/// recovery uses it to tell a record begun at this place in this lap (torn or corrupt) from
/// leftovers of an earlier lap.
pub fn claimed_position(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..HEADER_BYTES)?;
    let header: RecordHeader = bytemuck::pod_read_unaligned(header);
    (header.magic == RECORD_MAGIC).then_some(header.position)
}

/// Decodes the record at the start of `bytes`, where `bytes` runs to the end of the file's
/// data (a record never crosses a file end). Checks, in order: room for a header, the magic,
/// the length (aligned, at least a header and a checksum, within `bytes`), the checksum, then
/// the kind, flags and payload lengths. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let Some(head) = bytes.get(..HEADER_BYTES) else {
        return Err(DecodeError::Truncated { available: bytes.len() });
    };
    let header: RecordHeader = bytemuck::pod_read_unaligned(head);
    if header.magic != RECORD_MAGIC {
        return Err(DecodeError::BadMagic { found: header.magic });
    }
    let length = header.length as usize;
    let bad_length =
        |reason| DecodeError::BadLength { length: header.length, available: bytes.len(), reason };
    if length < MIN_RECORD_BYTES {
        return Err(bad_length("shorter than a header and a checksum"));
    }
    if length % ALIGN_BYTES != 0 {
        return Err(bad_length("not a multiple of 8"));
    }
    if length > bytes.len() {
        return Err(bad_length("runs past the end of the file"));
    }
    let body = length - CRC_BYTES;
    let stored =
        u32::from_le_bytes([bytes[body], bytes[body + 1], bytes[body + 2], bytes[body + 3]]);
    let computed = crc32c::crc32c(&bytes[..body]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let Some(kind) = Kind::from_byte(header.kind) else {
        return Err(DecodeError::BadKind { found: header.kind });
    };
    if header.flags & !FLAGS_KNOWN != 0 || header.reserved != 0 {
        return Err(DecodeError::BadFlags { flags: header.flags, reserved: header.reserved });
    }
    payload(header, kind, bytes)
}

/// The key and image of a record whose length and checksum are good.
fn payload(header: RecordHeader, kind: Kind, bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let bad = || DecodeError::BadPayload {
        kind,
        key_bytes: header.key_bytes,
        image_bytes: header.image_bytes,
        length: header.length,
    };
    let (key_bytes, image_bytes) = (header.key_bytes as usize, header.image_bytes as usize);
    let fits = match kind {
        Kind::Write => true,
        Kind::Delete => image_bytes == 0,
        Kind::FileEnd => key_bytes == 0 && image_bytes == 0,
    };
    // u32 + u32 fits a u64 usize: no overflow on the 64-bit hosts the crate builds for.
    if !fits || encoded_bytes(key_bytes, image_bytes) != Some(header.length as usize) {
        return Err(bad());
    }
    let key_end = HEADER_BYTES + key_bytes;
    Ok(Decoded {
        header,
        kind,
        key: &bytes[HEADER_BYTES..key_end],
        image: &bytes[key_end..key_end + image_bytes],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAMP: Stamp = Stamp { sequence: 7, position: 4096, round: 3 };

    fn sample<'a>(key: &'a [u8], change: Change<'a>) -> Record<'a> {
        Record {
            gci: 11,
            transaction: 0xabcd,
            table: 5,
            table_version: 2,
            partition: 9,
            key,
            change,
        }
    }

    #[test]
    fn write_round_trips_with_every_field() {
        let record = sample(b"key-1", Change::Write(b"row image bytes"));
        let mut buf = vec![0u8; 256];
        let n = encode(&record, STAMP, &mut buf);
        assert_eq!(n, align_up(HEADER_BYTES + 5 + 15 + CRC_BYTES));
        assert_eq!(n % ALIGN_BYTES, 0);
        let d = decode(&buf[..n]).expect("valid");
        assert_eq!(d.kind, Kind::Write);
        assert_eq!((d.key, d.image), (&b"key-1"[..], &b"row image bytes"[..]));
        let h = d.header;
        assert_eq!((h.sequence, h.position, h.round), (7, 4096, 3));
        assert_eq!(
            (h.gci, h.transaction, h.table, h.table_version, h.partition),
            (11, 0xabcd, 5, 2, 9)
        );
        assert!(!d.round_end());
        assert_eq!(claimed_position(&buf), Some(4096));
    }

    #[test]
    fn delete_and_file_end_have_no_image() {
        let mut buf = vec![0u8; 256];
        let n = encode(&sample(b"k", Change::Delete), STAMP, &mut buf);
        let d = decode(&buf[..n]).expect("valid delete");
        assert_eq!((d.kind, d.key, d.image.len()), (Kind::Delete, &b"k"[..], 0));
        let n = encode_file_end(STAMP, &mut buf);
        assert_eq!(n, MIN_RECORD_BYTES);
        let d = decode(&buf[..n]).expect("valid file end");
        assert_eq!((d.kind, d.key.len(), d.image.len()), (Kind::FileEnd, 0, 0));
    }

    #[test]
    fn round_end_flag_is_sealed_into_the_checksum() {
        let mut buf = vec![0u8; 256];
        let n = encode(&sample(b"k", Change::Write(b"v")), STAMP, &mut buf);
        set_round_end(&mut buf);
        let d = decode(&buf[..n]).expect("resealed");
        assert!(d.round_end());
    }

    #[test]
    fn each_defect_is_named() {
        let mut buf = vec![0u8; 256];
        let n = encode(&sample(b"key", Change::Write(b"image")), STAMP, &mut buf);
        assert!(matches!(decode(&buf[..40]), Err(DecodeError::Truncated { available: 40 })));
        assert!(matches!(decode(&[0u8; 100]), Err(DecodeError::BadMagic { found: 0 })));
        assert!(matches!(decode(&buf[..n - 8]), Err(DecodeError::BadLength { .. })));
        let mut flipped = buf.clone();
        flipped[HEADER_BYTES + 1] ^= 0x10;
        assert!(matches!(decode(&flipped[..n]), Err(DecodeError::Checksum { .. })));
        let mut bad_kind = buf.clone();
        bad_kind[OFFSET_KIND] = 9;
        seal(&mut bad_kind[..n]);
        assert!(matches!(decode(&bad_kind[..n]), Err(DecodeError::BadKind { found: 9 })));
        let mut bad_flags = buf.clone();
        bad_flags[OFFSET_FLAGS] = 0x80;
        seal(&mut bad_flags[..n]);
        assert!(matches!(decode(&bad_flags[..n]), Err(DecodeError::BadFlags { .. })));
        let mut bad_payload = buf.clone();
        bad_payload[OFFSET_KEY_BYTES] = 200;
        seal(&mut bad_payload[..n]);
        assert!(matches!(decode(&bad_payload[..n]), Err(DecodeError::BadPayload { .. })));
    }

    #[test]
    fn sizes_past_the_length_field_are_refused() {
        assert_eq!(encoded_bytes(usize::MAX, 1), None);
        assert_eq!(encoded_bytes(u32::MAX as usize, 0), None);
        assert_eq!(encoded_bytes(0, 0), Some(MIN_RECORD_BYTES));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = claimed_position(&bytes);
        }

        #[test]
        fn decoding_a_mutated_record_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            image in proptest::collection::vec(any::<u8>(), 0..200),
            at in 0usize..400,
            value in any::<u8>(),
        ) {
            let mut buf = vec![0u8; 512];
            let n = encode(&sample(&key, Change::Write(&image)), STAMP, &mut buf);
            let clean = decode(&buf[..n]).map(|d| (d.key.to_vec(), d.image.to_vec()));
            prop_assert_eq!(clean, Ok((key.clone(), image.clone())));
            let at = at % n;
            let changed = buf[at] != value;
            buf[at] = value;
            let result = decode(&buf[..n]);
            // CRC-32C detects every single-byte change.
            prop_assert!(!changed || result.is_err());
        }
    }
}
