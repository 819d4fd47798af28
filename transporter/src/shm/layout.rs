//! The shared-memory segment of one link: a header, two ring control blocks and two rings, one
//! per direction, in one mapping of an anonymous shared-memory file (a memfd, tmpfs-backed like
//! /dev/shm). The creator seals its size before handing its descriptor over, and the opener
//! refuses one without those seals: a peer can never shrink the mapping under us (our next access
//! would be a SIGBUS, not an error), and there is no file name for a crash to leave behind.
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
//! ring data: records, each a u32 word then its body; the word at the producer's position is
//! zero (the producer clears it before it commits the record in front of it, so the consumer
//! never writes ring data). A producer that knows its ring empty may leave a lap early and start
//! the next one (see `ring.rs`).
//!      record word  bit 31 PAD_FLAG | bit 30 LAP_FLAG (parity of the lap) | bits 0..30 length
//!      data body    +0 ack u64 (how far the producer has consumed the other ring) | +8 signals
//!      pad body     the rest of the lap, unread
//!
//! header (128 bytes), little-endian:
//!      0 magic "BWSHMv5\0" | 8 layout_version u32 | 12 ring_bytes u32 | 16 nonce u64 |
//!      24 creator node u8 | 25 opener node u8 | 26..128 zero
//! ```
//! Positions are offsets that only grow; `position % R` is where the next byte goes. The region
//! stores offsets, never pointers. Everything the opener reads from the header, and everything a
//! consumer reads from its peer's words, is validated before use.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::{Pod, Zeroable};
use memmap2::MmapMut;

/// The header's first bytes.
pub const MAGIC: [u8; 8] = *b"BWSHMv5\0";
/// Version of this layout; a peer with another is refused.
pub const LAYOUT_VERSION: u32 = 5;
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

fn io_error<'a>(op: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io { op, path: format!("memfd:{name}"), source }
}

/// The seals a segment must carry before either side maps it: its size can never change (a
/// peer that shrank it would turn our next access into SIGBUS), and no seal can be added or
/// removed (a write seal would take the rings from us).
const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A mapped segment.
pub struct Segment {
    map: MmapMut,
    base: *mut u8,
    ring_bytes: usize,
    name: String,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("ring_bytes", &self.ring_bytes)
            .finish_non_exhaustive()
    }
}

// SAFETY: `base` points into `map`, which the segment owns; all shared access goes through
// atomics or through the ring protocol, which gives each byte one writer at a time.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    fn map(file: &File, name: &str, ring_bytes: usize) -> Result<Segment, SegmentError> {
        // Positions are reduced to ring offsets with a mask.
        if !ring_bytes.is_power_of_two() {
            return Err(SegmentError::Mismatch {
                path: format!("memfd:{name}"),
                what: "ring size",
                found: ring_bytes.to_string(),
                expected: "a power of two".into(),
            });
        }
        // SAFETY: the memfd is sealed against shrinking and growing before it is mapped (checked
        // by the caller), so the mapping stays backed for its whole life; the peer only writes it
        // through the protocol described at the top of this file.
        // Populated at set-up: the rings' first lap must not pay a page fault every 4 KiB on
        // each side (one in every ~64 small signals, a tail of microseconds each).
        let mut map = unsafe { memmap2::MmapOptions::new().populate().map_mut(file) }
            .map_err(io_error("mmap", name))?;
        let base = map.as_mut_ptr();
        Ok(Segment { map, base, ring_bytes, name: name.to_string() })
    }

    /// Creates an anonymous sealed segment (a memfd named `name`, close-on-exec), sizes it,
    /// seals its size, maps it and writes the header. The descriptor returned is what the
    /// opener maps: hand it over with SCM_RIGHTS. There is never a file to remove.
    pub fn create(
        name: &str,
        ring_bytes: usize,
        nonce: u64,
        creator: u8,
        opener: u8,
    ) -> Result<(Segment, File), SegmentError> {
        let c_name = std::ffi::CString::new(name).map_err(|_| SegmentError::Mismatch {
            path: format!("memfd:{name}"),
            what: "name",
            found: format!("{name:?}"),
            expected: "no NUL byte".into(),
        })?;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new
        // descriptor we own, or -1.
        let fd = unsafe {
            libc::memfd_create(c_name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io_error("memfd_create", name)(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(segment_bytes(ring_bytes) as u64).map_err(io_error("size", name))?;
        // SAFETY: fcntl on a descriptor we own, with integer arguments.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } < 0 {
            return Err(io_error("seal", name)(io::Error::last_os_error()));
        }
        let mut segment = Segment::map(&file, name, ring_bytes)?;
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
        Ok((segment, file))
    }

    /// Maps a segment the peer handed over, after checking that it is sealed against resizing,
    /// has the agreed size, and carries the `expected` header.
    pub fn open(file: File, name: &str, expected: &SegmentHeader) -> Result<Segment, SegmentError> {
        let ring_bytes = expected.ring_bytes as usize;
        let mismatch = |what, found: String, expected: String| SegmentError::Mismatch {
            path: format!("memfd:{name}"),
            what,
            found,
            expected,
        };
        // SAFETY: fcntl on a descriptor we own, with integer arguments.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & REQUIRED_SEALS != REQUIRED_SEALS {
            return Err(mismatch(
                "seals",
                if seals < 0 {
                    "none (not a sealable memfd)".into()
                } else {
                    format!("{seals:#x}")
                },
                format!("at least {REQUIRED_SEALS:#x} (shrink, grow and seal sealed)"),
            ));
        }
        let len = file.metadata().map_err(io_error("stat", name))?.len();
        if len != segment_bytes(ring_bytes) as u64 {
            return Err(mismatch(
                "file size",
                len.to_string(),
                segment_bytes(ring_bytes).to_string(),
            ));
        }
        let segment = Segment::map(&file, name, ring_bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ring_bytes: usize, nonce: u64) -> SegmentHeader {
        SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            ring_bytes: ring_bytes as u32,
            nonce,
            creator: 1,
            opener: 2,
            reserved: [0; 102],
        }
    }

    /// An unsealed memfd of `bytes`, as a careless or hostile creator would hand over.
    fn unsealed(bytes: u64) -> File {
        // SAFETY: a NUL-terminated name and flags; the result is checked and then owned.
        let fd = unsafe {
            libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor nobody else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(bytes).unwrap();
        file
    }

    #[test]
    fn a_segment_cannot_be_resized_by_either_side() {
        let (segment, file) = Segment::create("blockwire-test-seal", 4096, 7, 1, 2).unwrap();
        let size = segment_bytes(4096) as u64;
        for len in [0, size / 2, size * 2] {
            let e = file.set_len(len).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "resize to {len}: {e}");
        }
        // SAFETY: fcntl on a descriptor we own; removing seals is refused because of F_SEAL_SEAL.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
        assert!(rc < 0, "a seal could still be added");
        // The opener maps the very same memory.
        let opened = Segment::open(file, "blockwire-test-seal", &header(4096, 7)).unwrap();
        segment.consumer(0).store(42, std::sync::atomic::Ordering::Release);
        assert_eq!(opened.consumer(0).load(std::sync::atomic::Ordering::Acquire), 42);
    }

    #[test]
    fn open_refuses_unsealed_wrong_sized_or_foreign_segments() {
        let size = segment_bytes(4096) as u64;
        let e = Segment::open(unsealed(size), "x", &header(4096, 7)).unwrap_err().to_string();
        assert!(e.contains("seals is 0x0, expected at least 0x7"), "{e}");
        // A file that cannot carry seals (tmpfs reports only "sealing sealed", others nothing).
        let tmp = std::env::temp_dir().join(format!("blockwire-seal-{}", std::process::id()));
        let file = File::options().read(true).write(true).create_new(true).open(&tmp).unwrap();
        std::fs::remove_file(&tmp).unwrap();
        file.set_len(size).unwrap();
        let e = Segment::open(file, "x", &header(4096, 7)).unwrap_err().to_string();
        assert!(e.contains("seals is ") && e.contains("expected at least 0x7"), "{e}");
        // Sealed, but of another size or nonce.
        let (_, file) = Segment::create("blockwire-test-size", 8192, 7, 1, 2).unwrap();
        let e = Segment::open(file, "x", &header(4096, 7)).unwrap_err().to_string();
        assert!(
            e.contains(&format!("file size is {}, expected {size}", segment_bytes(8192))),
            "{e}"
        );
        let (_, file) = Segment::create("blockwire-test-nonce", 4096, 8, 1, 2).unwrap();
        let e = Segment::open(file, "x", &header(4096, 7)).unwrap_err().to_string();
        assert!(e.contains("nonce is 8, expected 7"), "{e}");
    }
}
