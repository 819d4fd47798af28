//! The byte forms of a local checkpoint file's three parts: the file header, the header of each
//! row record, and the trailer; their encoding and their decoding, which checks magic, format,
//! reserved fields and checksums and never panics on any input. Pure: no I/O (the writer and
//! the reader own the files).
//!
//! A file, every field little-endian (the crate does not build for big-endian hosts):
//! ```text
//! byte 0             72                                                len - 48       len
//!      +-------------+-----------------------------------------------+--------------+
//!      | FileHeader  | row record, row record, ... (packed, no gaps) | Trailer      |
//!      +-------------+-----------------------------------------------+--------------+
//! ```
//! One row record, `ROW_HEADER_BYTES + key + image + 4` bytes, unaligned (records are read
//! with a byte-wise copy, never in place):
//! ```text
//! byte 0        4        8        12       16       20       24
//!      +--------+--------+--------+--------+--------+--------+-----------+-------------+--------+
//!      | magic  | table  | table  | parti- | key    | image  | key bytes | image bytes | crc32c |
//!      | BWlr   |        | version| tion   | bytes  | bytes  |           |             |        |
//!      +--------+--------+--------+--------+--------+--------+-----------+-------------+--------+
//!        u32      u32      u32      u32      u32      u32                               u32
//! ```
//! The row's `crc32c` covers its header, key and image. The trailer's `file crc32c` covers
//! every byte of the file before the trailer (header and rows, row checksums included); its
//! own `crc32c` covers the trailer's first 44 bytes. So every byte of a file is under at least
//! one checksum, and any single changed byte is found (CRC-32C detects every burst of up to 32
//! bits).
//!
//! Lengths read from a file are bounded before anything is allocated: a key or image above
//! [`MAX_FIELD_BYTES`] is refused, as is a record running past the trailer.

use bytemuck::{Pod, Zeroable};

use super::{Identity, LcpStart};

#[cfg(target_endian = "big")]
compile_error!("the local checkpoint format is little-endian: big-endian hosts are not supported");

/// The first eight bytes of every checkpoint file: `BWLCPHDR`.
pub const FILE_MAGIC: u64 = u64::from_le_bytes(*b"BWLCPHDR");
/// The first eight bytes of the trailer: `BWLCPEND`.
pub const TRAILER_MAGIC: u64 = u64::from_le_bytes(*b"BWLCPEND");
/// The first four bytes of every row record: `BWlr`.
pub const ROW_MAGIC: u32 = u32::from_le_bytes(*b"BWlr");
/// The file format; a file of another is refused.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the file header.
pub const HEADER_BYTES: usize = 72;
/// Size of a row record's header.
pub const ROW_HEADER_BYTES: usize = 24;
/// Size of a row record's checksum.
pub const CRC_BYTES: usize = 4;
/// The smallest row record: empty key, empty image.
pub const MIN_ROW_BYTES: usize = ROW_HEADER_BYTES + CRC_BYTES;
/// Size of the trailer.
pub const TRAILER_BYTES: usize = 48;
/// The largest key, and the largest image, a row may have (16 MiB each).
pub const MAX_FIELD_BYTES: usize = 16 << 20;

/// The header at the start of every checkpoint file.
///
/// ```text
/// byte 0                8        12       16               24       28       32
///      +----------------+--------+--------+----------------+--------+--------+
///      | magic BWLCPHDR | format | header | cluster id     | node id|instance|
///      |                |        | bytes  |                |        |        |
///      +----------------+--------+--------+----------------+--------+--------+
///        u64              u32      u32      u64              u32      u32
/// byte 32               40               48               56               64       68       72
///      +----------------+----------------+----------------+----------------+--------+--------+
///      | seq            | start position | start gci      | saved gci      |reserved| crc32c |
///      +----------------+----------------+----------------+----------------+--------+--------+
///        u64              u64              u64              u64              u32      u32
/// ```
/// `crc32c` covers bytes 0..68; `reserved` is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FileHeader {
    /// [`FILE_MAGIC`].
    pub magic: u64,
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// [`HEADER_BYTES`].
    pub header_bytes: u32,
    /// The cluster the node belongs to.
    pub cluster_id: u64,
    /// The data node.
    pub node_id: u32,
    /// The storage instance whose checkpoint this is.
    pub instance: u32,
    /// The checkpoint's number.
    pub seq: u64,
    /// [`LcpStart::start_position`].
    pub start_position: u64,
    /// [`LcpStart::start_gci`].
    pub start_gci: u64,
    /// [`LcpStart::saved_gci`].
    pub saved_gci: u64,
    /// Zero.
    pub reserved: u32,
    /// CRC-32C of the bytes before it.
    pub crc: u32,
}

/// The header of a row record; see the ruler in the module comment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RowHeader {
    /// [`ROW_MAGIC`].
    pub magic: u32,
    /// Table id.
    pub table: u32,
    /// Table version.
    pub table_version: u32,
    /// Partition of the table.
    pub partition: u32,
    /// Bytes of the primary key.
    pub key_bytes: u32,
    /// Bytes of the row image.
    pub image_bytes: u32,
}

/// The trailer at the end of every installed checkpoint file.
///
/// ```text
/// byte 0                8                16               24               32
///      +----------------+----------------+----------------+----------------+
///      | magic BWLCPEND | seq            | max gci        | rows           |
///      +----------------+----------------+----------------+----------------+
///        u64              u64              u64              u64
/// byte 32               40          44       48
///      +----------------+-----------+--------+
///      | file bytes     | file      | crc32c |
///      |                | crc32c    |        |
///      +----------------+-----------+--------+
///        u64              u32         u32
/// ```
/// `file bytes` is the whole file's length, trailer included; `file crc32c` covers bytes
/// `0..file bytes - 48`; `crc32c` covers the trailer's bytes 0..44.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Trailer {
    /// [`TRAILER_MAGIC`].
    pub magic: u64,
    /// The checkpoint's number (the header's too).
    pub seq: u64,
    /// The highest GCI of any row the checkpoint holds.
    pub max_gci: u64,
    /// Row records in the file.
    pub rows: u64,
    /// Bytes of the whole file.
    pub file_bytes: u64,
    /// CRC-32C of every byte before the trailer.
    pub file_crc: u32,
    /// CRC-32C of the trailer's bytes before it.
    pub crc: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<FileHeader>() == HEADER_BYTES);
    assert!(offset_of!(FileHeader, cluster_id) == 16);
    assert!(offset_of!(FileHeader, node_id) == 24);
    assert!(offset_of!(FileHeader, instance) == 28);
    assert!(offset_of!(FileHeader, seq) == 32);
    assert!(offset_of!(FileHeader, saved_gci) == 56);
    assert!(offset_of!(FileHeader, reserved) == 64);
    assert!(offset_of!(FileHeader, crc) == 68);
    assert!(size_of::<RowHeader>() == ROW_HEADER_BYTES);
    assert!(offset_of!(RowHeader, key_bytes) == 16);
    assert!(offset_of!(RowHeader, image_bytes) == 20);
    assert!(size_of::<Trailer>() == TRAILER_BYTES);
    assert!(offset_of!(Trailer, file_bytes) == 32);
    assert!(offset_of!(Trailer, file_crc) == 40);
    assert!(offset_of!(Trailer, crc) == 44);
    // A record's length is computed in usize from two bounded fields: no overflow.
    assert!(ROW_HEADER_BYTES + 2 * MAX_FIELD_BYTES + CRC_BYTES < u32::MAX as usize);
};

/// The header of `identity`'s checkpoint `start`.
pub fn encode_header(identity: Identity, start: &LcpStart) -> [u8; HEADER_BYTES] {
    let mut header = FileHeader {
        magic: FILE_MAGIC,
        format: FORMAT_VERSION,
        header_bytes: HEADER_BYTES as u32,
        cluster_id: identity.cluster_id,
        node_id: identity.node_id,
        instance: identity.instance,
        seq: start.seq,
        start_position: start.start_position,
        start_gci: start.start_gci,
        saved_gci: start.saved_gci,
        reserved: 0,
        crc: 0,
    };
    header.crc = crc32c::crc32c(&bytemuck::bytes_of(&header)[..HEADER_BYTES - CRC_BYTES]);
    let mut bytes = [0u8; HEADER_BYTES];
    bytes.copy_from_slice(bytemuck::bytes_of(&header));
    bytes
}

/// The file header in `bytes`, or why it is not one this build can read. The owner fields are
/// the caller's to check.
pub fn decode_header(bytes: &[u8; HEADER_BYTES]) -> Result<FileHeader, String> {
    let header: FileHeader = bytemuck::pod_read_unaligned(bytes);
    if header.magic != FILE_MAGIC {
        return Err(format!(
            "magic {:#018x} is not a blockwire local checkpoint file's",
            header.magic
        ));
    }
    let crc = crc32c::crc32c(&bytes[..HEADER_BYTES - CRC_BYTES]);
    if header.crc != crc {
        return Err(format!(
            "header checksum {:#010x} does not match its bytes' {crc:#010x}",
            header.crc
        ));
    }
    if header.format != FORMAT_VERSION || header.header_bytes as usize != HEADER_BYTES {
        return Err(format!(
            "format {} with a {}-byte header is not this build's ({FORMAT_VERSION}, {HEADER_BYTES})",
            header.format, header.header_bytes
        ));
    }
    if header.reserved != 0 {
        return Err(format!("reserved header field is {}, not zero", header.reserved));
    }
    Ok(header)
}

/// The start a header records.
pub fn start_of(header: &FileHeader) -> LcpStart {
    LcpStart {
        seq: header.seq,
        start_position: header.start_position,
        start_gci: header.start_gci,
        saved_gci: header.saved_gci,
    }
}

/// A row record's header. The caller has checked both lengths against [`MAX_FIELD_BYTES`].
pub fn encode_row_header(
    table: u32,
    table_version: u32,
    partition: u32,
    key_bytes: usize,
    image_bytes: usize,
) -> [u8; ROW_HEADER_BYTES] {
    assert!(key_bytes <= MAX_FIELD_BYTES && image_bytes <= MAX_FIELD_BYTES);
    let header = RowHeader {
        magic: ROW_MAGIC,
        table,
        table_version,
        partition,
        key_bytes: key_bytes as u32,
        image_bytes: image_bytes as u32,
    };
    let mut bytes = [0u8; ROW_HEADER_BYTES];
    bytes.copy_from_slice(bytemuck::bytes_of(&header));
    bytes
}

/// A row record's header and the bytes of the whole record, when the magic is right and both
/// lengths are within [`MAX_FIELD_BYTES`]; otherwise why not. Whether the record fits the file
/// and its checksum are the caller's to check.
pub fn decode_row_header(bytes: &[u8; ROW_HEADER_BYTES]) -> Result<(RowHeader, usize), String> {
    let header: RowHeader = bytemuck::pod_read_unaligned(bytes);
    if header.magic != ROW_MAGIC {
        return Err(format!("row magic {:#010x}, expected {ROW_MAGIC:#010x}", header.magic));
    }
    let (key_bytes, image_bytes) = (header.key_bytes as usize, header.image_bytes as usize);
    if key_bytes > MAX_FIELD_BYTES || image_bytes > MAX_FIELD_BYTES {
        return Err(format!(
            "row of {key_bytes} key and {image_bytes} image bytes: above the {MAX_FIELD_BYTES}-byte limit"
        ));
    }
    Ok((header, ROW_HEADER_BYTES + key_bytes + image_bytes + CRC_BYTES))
}

/// The trailer of a file of `file_bytes` bytes (trailer included) whose bytes before the
/// trailer have checksum `file_crc`.
pub fn encode_trailer(
    seq: u64,
    max_gci: u64,
    rows: u64,
    file_bytes: u64,
    file_crc: u32,
) -> [u8; TRAILER_BYTES] {
    let mut trailer =
        Trailer { magic: TRAILER_MAGIC, seq, max_gci, rows, file_bytes, file_crc, crc: 0 };
    trailer.crc = crc32c::crc32c(&bytemuck::bytes_of(&trailer)[..TRAILER_BYTES - CRC_BYTES]);
    let mut bytes = [0u8; TRAILER_BYTES];
    bytes.copy_from_slice(bytemuck::bytes_of(&trailer));
    bytes
}

/// The trailer in `bytes`, or why it is not one (its fields are the caller's to check against
/// the file).
pub fn decode_trailer(bytes: &[u8; TRAILER_BYTES]) -> Result<Trailer, String> {
    let trailer: Trailer = bytemuck::pod_read_unaligned(bytes);
    if trailer.magic != TRAILER_MAGIC {
        return Err(format!(
            "no trailer: magic {:#018x} at the end, expected {TRAILER_MAGIC:#018x}",
            trailer.magic
        ));
    }
    let crc = crc32c::crc32c(&bytes[..TRAILER_BYTES - CRC_BYTES]);
    if trailer.crc != crc {
        return Err(format!(
            "trailer checksum {:#010x} does not match its bytes' {crc:#010x}",
            trailer.crc
        ));
    }
    Ok(trailer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDENTITY: Identity = Identity { cluster_id: 9, node_id: 2, instance: 1 };
    const START: LcpStart = LcpStart { seq: 4, start_position: 800, start_gci: 30, saved_gci: 29 };

    #[test]
    fn header_and_trailer_round_trip() {
        let header = decode_header(&encode_header(IDENTITY, &START)).expect("valid header");
        assert_eq!((header.cluster_id, header.node_id, header.instance), (9, 2, 1));
        assert_eq!(start_of(&header), START);
        let trailer = decode_trailer(&encode_trailer(4, 33, 10, 5000, 0xfeed)).expect("valid");
        assert_eq!(
            (trailer.seq, trailer.max_gci, trailer.rows, trailer.file_bytes, trailer.file_crc),
            (4, 33, 10, 5000, 0xfeed)
        );
    }

    #[test]
    fn row_header_lengths_are_bounded() {
        let bytes = encode_row_header(1, 2, 3, 5, 7);
        let (header, total) = decode_row_header(&bytes).expect("valid");
        assert_eq!((header.table, header.table_version, header.partition), (1, 2, 3));
        assert_eq!(total, ROW_HEADER_BYTES + 5 + 7 + CRC_BYTES);
        let mut big = bytes;
        big[20..24].copy_from_slice(&(MAX_FIELD_BYTES as u32 + 1).to_le_bytes());
        assert!(decode_row_header(&big).is_err_and(|e| e.contains("limit")));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(decode_row_header(&bad).is_err_and(|e| e.contains("magic")));
    }

    #[test]
    fn every_flipped_header_or_trailer_byte_is_refused() {
        let header = encode_header(IDENTITY, &START);
        for at in 0..HEADER_BYTES {
            let mut bytes = header;
            bytes[at] ^= 0x20;
            assert!(decode_header(&bytes).is_err(), "header byte {at} flipped");
        }
        let trailer = encode_trailer(4, 33, 10, 5000, 0xfeed);
        for at in 0..TRAILER_BYTES {
            let mut bytes = trailer;
            bytes[at] ^= 0x01;
            assert!(decode_trailer(&bytes).is_err(), "trailer byte {at} flipped");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            header in proptest::array::uniform32(any::<u8>()),
            more in proptest::collection::vec(any::<u8>(), 72),
        ) {
            let mut h = [0u8; HEADER_BYTES];
            h.copy_from_slice(&more);
            let _ = decode_header(&h);
            let mut t = [0u8; TRAILER_BYTES];
            t.copy_from_slice(&more[..TRAILER_BYTES]);
            let _ = decode_trailer(&t);
            let mut r = [0u8; ROW_HEADER_BYTES];
            r.copy_from_slice(&header[..ROW_HEADER_BYTES]);
            // With the magic in place, so the length checks are what decides.
            r[..4].copy_from_slice(&ROW_MAGIC.to_le_bytes());
            if let Ok((_, total)) = decode_row_header(&r) {
                prop_assert!(total <= ROW_HEADER_BYTES + 2 * MAX_FIELD_BYTES + CRC_BYTES);
            }
        }
    }
}
