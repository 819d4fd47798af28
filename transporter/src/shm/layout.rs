//! The shared-memory segment of one link: a header, two ring control blocks and two rings, one
//! per direction, in one mapping of a file in /dev/shm (mode 0600).
//!
//! ```text
//! byte 0        128           512           896      4096               4096+R             4096+2R
//!      +--------+-------------+-------------+--------+------------------+------------------+
//!      | header | control 0   | control 1   | zero   | ring 0 (R bytes) | ring 1 (R bytes) |
//!      +--------+-------------+-------------+--------+------------------+------------------+
//! ring 0 carries creator -> opener, ring 1 opener -> creator; R = ring_bytes, a power of two.
//!
//! control block i (384 bytes), each word alone on its own 128-byte line:
//!      +0    reserved           u64   zero (records commit themselves, see `ring.rs`)
//!      +128  consumer position  u64   bytes ever consumed from ring i (written by its consumer)
//!      +256  receiver sleeping  u64   1 while ring i's consumer sleeps (see `wake.rs`)
//!
//! ring data: records, each a u32 word (length, or PAD_FLAG | padding length) then whole
//! signals; the word at the producer's position is zero (the producer clears it before it
//! commits the record in front of it, so the consumer never writes ring data).
//!
//! header (128 bytes), little-endian:
//!      0 magic "BWSHMv3\0" | 8 layout_version u32 | 12 ring_bytes u32 | 16 nonce u64 |
//!      24 creator node u8 | 25 opener node u8 | 26..128 zero
//! ```
//! Positions are offsets that only grow; `position % R` is where the next byte goes. The region
//! stores offsets, never pointers. Everything the opener reads from the header, and everything a
//! consumer reads from its peer's words, is validated before use.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::{Pod, Zeroable};
use memmap2::MmapMut;

/// The header's first bytes.
pub const MAGIC: [u8; 8] = *b"BWSHMv3\0";
/// Version of this layout; a peer with another is refused.
pub const LAYOUT_VERSION: u32 = 3;
/// Header size.
pub const HEADER_BYTES: usize = 128;
/// One cache-line pair: every frequently written word sits alone on one.
pub const LINE_BYTES: usize = 128;
/// Offset of control block 0.
pub const CONTROL_OFFSET: usize = 128;
/// Size of one control block.
pub const CONTROL_BYTES: usize = 3 * LINE_BYTES;
/// Offset of the reserved (zero) word within a control block.
pub const RESERVED_OFFSET: usize = 0;
/// Offset of the consumer position within a control block.
pub const CONSUMER_OFFSET: usize = LINE_BYTES;
/// Offset of the sleeping flag within a control block.
pub const SLEEPING_OFFSET: usize = 2 * LINE_BYTES;
/// Offset of ring 0's data (page aligned).
pub const DATA_OFFSET: usize = 4096;
/// Smallest ring.
pub const MIN_RING_BYTES: usize = 4096;
/// Largest ring.
pub const MAX_RING_BYTES: usize = 1 << 30;

/// The segment header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// Bytes of each ring.
    pub ring_bytes: u32,
    /// The nonce agreed in the handshake.
    pub nonce: u64,
    /// The node that created the segment (it produces into ring 0).
    pub creator: u8,
    /// The node that opened it (it produces into ring 1).
    pub opener: u8,
    /// Zero.
    pub reserved: [u8; 102],
}

const _: () = {
    assert!(core::mem::size_of::<SegmentHeader>() == HEADER_BYTES);
    assert!(core::mem::offset_of!(SegmentHeader, layout_version) == 8);
    assert!(core::mem::offset_of!(SegmentHeader, ring_bytes) == 12);
    assert!(core::mem::offset_of!(SegmentHeader, nonce) == 16);
    assert!(core::mem::offset_of!(SegmentHeader, creator) == 24);
    assert!(core::mem::offset_of!(SegmentHeader, opener) == 25);
    assert!(CONTROL_OFFSET >= HEADER_BYTES);
    assert!(CONTROL_OFFSET + 2 * CONTROL_BYTES <= DATA_OFFSET);
    assert!(CONTROL_OFFSET % LINE_BYTES == 0 && DATA_OFFSET % 4096 == 0);
};

/// Total bytes of a segment with rings of `ring_bytes`.
pub const fn segment_bytes(ring_bytes: usize) -> usize {
    DATA_OFFSET + 2 * ring_bytes
}

/// A ring size outside what the layout allows.
pub fn check_ring_bytes(ring_bytes: usize, largest_signal_bytes: usize) -> Result<(), String> {
    let min = MIN_RING_BYTES.max((2 * largest_signal_bytes).next_power_of_two());
    if !ring_bytes.is_power_of_two() || ring_bytes < min || ring_bytes > MAX_RING_BYTES {
        return Err(format!(
            "ring_bytes = {ring_bytes}: allowed a power of two from {min} (twice the largest signal) to {MAX_RING_BYTES}"
        ));
    }
    Ok(())
}

/// Why a segment could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: io::Error },
    /// The file or header does not match what was agreed.
    #[error("shared-memory segment {path}: {what} is {found}, expected {expected}")]
    Mismatch { path: String, what: &'static str, found: String, expected: String },
}

/// Where segment files live.
pub fn segment_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// A mapped segment.
pub struct Segment {
    map: MmapMut,
    base: *mut u8,
    ring_bytes: usize,
    path: PathBuf,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("ring_bytes", &self.ring_bytes)
            .finish()
    }
}

// SAFETY: the mapping is shared memory; all concurrent access goes through the atomics of the
// control blocks and the ring discipline (a producer writes only free space, a consumer reads only
// published space), so the segment can be shared and sent between threads.
unsafe impl Send for Segment {}
// SAFETY: see `Send` above.
unsafe impl Sync for Segment {}

fn io_error<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io { op, path: path.display().to_string(), source }
}

impl Segment {
    fn map(file: &File, path: PathBuf, ring_bytes: usize) -> Result<Segment, SegmentError> {
        // Positions are reduced to ring offsets with a mask.
        if !ring_bytes.is_power_of_two() {
            return Err(SegmentError::Mismatch {
                path: path.display().to_string(),
                what: "ring size",
                found: ring_bytes.to_string(),
                expected: "a power of two".into(),
            });
        }
        // SAFETY: the file is ours (0600, a unique name) and sized before mapping; the peer only
        // writes it through the protocol described at the top of this file.
        // Populated at set-up: the rings' first lap must not pay a page fault every 4 KiB on
        // each side (one in every ~64 small signals, a tail of microseconds each).
        let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(file) }
            .map_err(io_error("mmap", &path))?;
        let base = map.as_mut_ptr();
        Ok(Segment { map, base, ring_bytes, path })
    }

    /// Creates `/dev/shm/<name>` (it must not exist), sizes and maps it, and writes the header.
    pub fn create(
        name: &str,
        ring_bytes: usize,
        nonce: u64,
        creator: u8,
        opener: u8,
    ) -> Result<Segment, SegmentError> {
        let path = segment_path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("create", &path))?;
        let sized = file.set_len(segment_bytes(ring_bytes) as u64).map_err(io_error("size", &path));
        let mapped = sized.and_then(|()| Segment::map(&file, path.clone(), ring_bytes));
        let mut segment = match mapped {
            Ok(s) => s,
            Err(e) => {
                // Leave nothing behind in /dev/shm.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let header = SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            ring_bytes: ring_bytes as u32,
            nonce,
            creator,
            opener,
            reserved: [0; 102],
        };
        segment.map[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
        Ok(segment)
    }

    /// Opens and maps `/dev/shm/<name>`, checking its size and header against `expected`.
    pub fn open(name: &str, expected: &SegmentHeader) -> Result<Segment, SegmentError> {
        let path = segment_path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let ring_bytes = expected.ring_bytes as usize;
        let len = file.metadata().map_err(io_error("stat", &path))?.len();
        let mismatch = |what, found: String, expected: String| SegmentError::Mismatch {
            path: path.display().to_string(),
            what,
            found,
            expected,
        };
        if len != segment_bytes(ring_bytes) as u64 {
            return Err(mismatch(
                "file size",
                len.to_string(),
                segment_bytes(ring_bytes).to_string(),
            ));
        }
        let segment = Segment::map(&file, path.clone(), ring_bytes)?;
        let found: SegmentHeader = bytemuck::pod_read_unaligned(&segment.map[..HEADER_BYTES]);
        let checks: [(&'static str, u64, u64); 6] = [
            ("magic", u64::from_le_bytes(found.magic), u64::from_le_bytes(expected.magic)),
            ("layout_version", found.layout_version.into(), expected.layout_version.into()),
            ("ring_bytes", found.ring_bytes.into(), expected.ring_bytes.into()),
            ("nonce", found.nonce, expected.nonce),
            ("creator", found.creator.into(), expected.creator.into()),
            ("opener", found.opener.into(), expected.opener.into()),
        ];
        for (what, f, e) in checks {
            if f != e {
                return Err(mismatch(what, f.to_string(), e.to_string()));
            }
        }
        Ok(segment)
    }

    /// Removes the file (the mapping stays valid); harmless if it is gone already.
    pub fn unlink(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Bytes of each ring.
    pub fn ring_bytes(&self) -> usize {
        self.ring_bytes
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= DATA_OFFSET, "control word offset {offset}");
        // SAFETY: `offset` is 8-aligned inside the control area of a page-aligned mapping that
        // lives as long as `self`; AtomicU64 has the size and alignment of u64, and the word is
        // only ever accessed atomically by either process.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    /// The record word at byte `offset` of ring `ring`.
    pub fn ring_word(&self, ring: usize, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.ring_bytes, "record offset {offset}");
        // SAFETY: `offset` is 4-aligned inside ring `ring` of a page-aligned mapping that lives
        // as long as `self`; AtomicU32 has the layout of u32, and record words are only accessed
        // atomically.
        unsafe { &*(self.data(ring).add(offset) as *const AtomicU32) }
    }

    /// Ring `ring`'s consumer position.
    pub fn consumer(&self, ring: usize) -> &AtomicU64 {
        self.word(CONTROL_OFFSET + ring * CONTROL_BYTES + CONSUMER_OFFSET)
    }

    /// Ring `ring`'s sleeping flag.
    pub fn sleeping(&self, ring: usize) -> &AtomicU64 {
        self.word(CONTROL_OFFSET + ring * CONTROL_BYTES + SLEEPING_OFFSET)
    }

    /// Start of ring `ring`'s data.
    pub fn data(&self, ring: usize) -> *mut u8 {
        assert!(ring < 2);
        // SAFETY: both rings lie inside the mapping (its size is `segment_bytes(ring_bytes)`).
        unsafe { self.base.add(DATA_OFFSET + ring * self.ring_bytes) }
    }
}
