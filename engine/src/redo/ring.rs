//! The log's files and where a position lies in them: `files` files named
//! `redo-{instance}-{n}.log`, each `file_bytes` long, created full of zeros and reused as a
//! ring; the header every file starts with (whose log it is, its place in the ring); and the
//! anchor, the persisted tail of the log, in two slots of file 0's header.
//!
//! Positions ([`super::Lsn`]) count bytes of records from the log's creation and never go
//! back. With `data = file_bytes - FILE_HEADER_BYTES` bytes of records per file, position `p`
//! lies in file `(p / data) % files` at byte `FILE_HEADER_BYTES + p % data`; `p / (data *
//! files)` is the lap of the ring. A record never crosses a file end: when fewer than
//! [`MIN_RECORD_BYTES`] remain in a file the position moves on to the next file's start
//! ([`Geometry::normalize`]); when more remain but the record does not fit, a file-end record
//! says so.
//!
//! One file, `file_bytes` long:
//! ```text
//! byte 0            512          1024         1536                 4096              file_bytes
//!      +------------+------------+------------+--------------------+-----------------------+
//!      | FileHeader | anchor     | anchor     | zeros              | records, 8-aligned,   |
//!      | (64 bytes, | slot 0     | slot 1     |                    | then zeros or an      |
//!      | zero pad)  | (file 0)   | (file 0)   |                    | earlier lap's records |
//!      +------------+------------+------------+--------------------+-----------------------+
//! ```
//! The header is written once, at creation; nothing in it changes with the lap (the lap is in
//! every record's position). The anchor lives in file 0 only: two 512-byte slots written
//! alternately (slot = counter % 2), each in its own sector, so a torn anchor write leaves the
//! other slot, which still describes space that was not reused (InnoDB keeps its checkpoint
//! in two slots of its first log file for the same reason; NDB records its log tail in the
//! first page of its log files).
//!
//! Creation is crash-safe: files are written as `*.log.tmp`, synced, renamed with file 0 last,
//! and the directory synced. A missing file 0 with its `.tmp` present is an interrupted
//! creation and is redone; a missing file 0 without it, while other files exist, is refused.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use super::record::MIN_RECORD_BYTES;
use super::settings::RedoSettings;
use super::{Identity, RedoError};

/// Bytes before the first record of every file.
pub const FILE_HEADER_BYTES: u64 = 4096;
/// The unit the header and anchor are written in.
pub const SECTOR_BYTES: usize = 512;
/// Where the two anchor slots of file 0 start.
pub const ANCHOR_OFFSETS: [u64; 2] = [512, 1024];
/// The first eight bytes of every log file: `BWREDOLG`.
pub const FILE_MAGIC: u64 = u64::from_le_bytes(*b"BWREDOLG");
/// The file format; a file of another is refused.
pub const FORMAT_VERSION: u32 = 1;
/// The first four bytes of an anchor slot: `BWan`.
pub const ANCHOR_MAGIC: u32 = u32::from_le_bytes(*b"BWan");

/// The header at the start of every log file.
///
/// ```text
/// byte 0                8        12       16               24               32
///      +----------------+--------+--------+----------------+----------------+
///      | magic BWREDOLG | format | header | cluster id     | file bytes     |
///      |                |        | bytes  |                |                |
///      +----------------+--------+--------+----------------+----------------+
///        u64              u32      u32      u64              u64
/// byte 32       36       40       44       48                         60       64
///      +--------+--------+--------+--------+--------------------------+--------+
///      | node   |instance| file   | files  | reserved (zero)          | crc32c |
///      | id     |        | number |        |                          |        |
///      +--------+--------+--------+--------+--------------------------+--------+
///        u32      u32      u32      u32      3 x u32                    u32
/// ```
/// `crc32c` covers bytes 0..60.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct FileHeader {
    /// [`FILE_MAGIC`].
    pub magic: u64,
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// [`FILE_HEADER_BYTES`].
    pub header_bytes: u32,
    /// The cluster the node belongs to.
    pub cluster_id: u64,
    /// Bytes of each file of the log.
    pub file_bytes: u64,
    /// The data node.
    pub node_id: u32,
    /// The storage instance whose log this is.
    pub instance: u32,
    /// This file's place in the ring.
    pub file_number: u32,
    /// Files in the ring.
    pub files: u32,
    /// Zero.
    pub reserved: [u32; 3],
    /// CRC-32C of the bytes before it.
    pub crc: u32,
}

/// The persisted tail: the position, sequence and round of the oldest record the log keeps.
///
/// ```text
/// byte 0        4        8                16               24               32
///      +--------+--------+----------------+----------------+----------------+
///      | magic  | zero   | counter        | tail position  | tail sequence  |
///      | BWan   |        |                |                |                |
///      +--------+--------+----------------+----------------+----------------+
///        u32      u32      u64              u64              u64
/// byte 32               40                              60       64
///      +----------------+-------------------------------+--------+
///      | tail round     | reserved (zero)               | crc32c |
///      +----------------+-------------------------------+--------+
///        u64              u64 + u64 + u32                 u32
/// ```
/// `counter` grows by one with each anchor write and picks the slot (`counter % 2`); the valid
/// slot with the higher counter is the anchor. `crc32c` covers bytes 0..60.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct AnchorSlot {
    /// [`ANCHOR_MAGIC`].
    pub magic: u32,
    /// Zero.
    pub zero: u32,
    /// How many anchors were written before this one, plus one.
    pub counter: u64,
    /// Position of the oldest record kept.
    pub tail_position: u64,
    /// Its sequence number.
    pub tail_sequence: u64,
    /// Its round.
    pub tail_round: u64,
    /// Zero.
    pub reserved: [u64; 2],
    /// Zero.
    pub reserved_word: u32,
    /// CRC-32C of the bytes before it.
    pub crc: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<FileHeader>() == 64);
    assert!(offset_of!(FileHeader, cluster_id) == 16);
    assert!(offset_of!(FileHeader, node_id) == 32);
    assert!(offset_of!(FileHeader, files) == 44);
    assert!(offset_of!(FileHeader, crc) == 60);
    assert!(size_of::<AnchorSlot>() == 64);
    assert!(offset_of!(AnchorSlot, tail_position) == 16);
    assert!(offset_of!(AnchorSlot, tail_round) == 32);
    assert!(offset_of!(AnchorSlot, crc) == 60);
    assert!(ANCHOR_OFFSETS[1] as usize + SECTOR_BYTES <= FILE_HEADER_BYTES as usize);
    assert!(FILE_HEADER_BYTES % 8 == 0);
};

/// Where the oldest kept record is and what it must carry: the anchor's content, and the
/// "expected next record" the writer and the recovery scan keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Its position.
    pub position: u64,
    /// Its sequence number.
    pub sequence: u64,
    /// Its round.
    pub round: u64,
}

/// The shape of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Files in the ring.
    pub files: u32,
    /// Bytes of each file.
    pub file_bytes: u64,
    /// Bytes of records each file holds.
    pub data_bytes: u64,
}

impl Geometry {
    /// The geometry of valid settings.
    pub fn of(settings: &RedoSettings) -> Geometry {
        Geometry {
            files: settings.files,
            file_bytes: settings.file_bytes,
            data_bytes: settings.data_bytes(),
        }
    }

    /// Bytes of records the whole ring holds.
    pub fn ring_bytes(&self) -> u64 {
        self.data_bytes * u64::from(self.files)
    }

    /// The file (index in the ring) and byte offset in it of `position`.
    pub fn locate(&self, position: u64) -> (u32, u64) {
        let segment = position / self.data_bytes;
        ((segment % u64::from(self.files)) as u32, FILE_HEADER_BYTES + position % self.data_bytes)
    }

    /// Bytes from `position` to the end of its file's data.
    pub fn remaining(&self, position: u64) -> u64 {
        self.data_bytes - position % self.data_bytes
    }

    /// The start of the next file after the one `position` lies in.
    pub fn next_file_start(&self, position: u64) -> u64 {
        (position / self.data_bytes + 1) * self.data_bytes
    }

    /// `position`, or the next file's start when too little is left in this file for a record.
    pub fn normalize(&self, position: u64) -> u64 {
        if self.remaining(position) < MIN_RECORD_BYTES as u64 {
            self.next_file_start(position)
        } else {
            position
        }
    }
}

/// The name of file `n` of `instance`'s log.
pub fn file_name(instance: u32, n: u32) -> String {
    format!("redo-{instance}-{n}.log")
}

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> RedoError + 'a {
    move |source| RedoError::Io { path: path.to_owned(), action, source }
}

/// What [`LogFiles::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The files.
    pub files: LogFiles,
    /// The anchor: the oldest record kept.
    pub tail: Mark,
    /// The anchor's counter.
    pub anchor_counter: u64,
    /// Whether the log was created now.
    pub created: bool,
}

/// The open files of one log.
#[derive(Debug)]
pub struct LogFiles {
    dir: PathBuf,
    geometry: Geometry,
    paths: Vec<PathBuf>,
    files: Vec<File>,
    /// Bytes each file had when opened (less than `file_bytes` when cut short).
    lengths: Vec<u64>,
}

impl LogFiles {
    /// Opens the log in `dir` for `identity`, creating it when there is none.
    pub fn open(dir: &Path, geometry: Geometry, identity: Identity) -> Result<Opened, RedoError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir, "create the log directory"))?;
        let paths: Vec<PathBuf> =
            (0..geometry.files).map(|n| dir.join(file_name(identity.instance, n))).collect();
        let first_tmp = tmp_path(&paths[0]);
        let created = !paths[0].exists();
        if created {
            if !first_tmp.exists() {
                if let Some(present) = paths.iter().find(|p| p.exists()) {
                    return Err(RedoError::Incomplete {
                        dir: dir.to_owned(),
                        missing: paths[0].clone(),
                        present: present.clone(),
                    });
                }
            }
            create_files(dir, &paths, geometry, identity)?;
        }
        let mut log = LogFiles {
            dir: dir.to_owned(),
            geometry,
            paths,
            files: Vec::new(),
            lengths: Vec::new(),
        };
        for n in 0..geometry.files {
            let path = &log.paths[n as usize];
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_error(path, "open"))?;
            let length = file.metadata().map_err(io_error(path, "stat"))?.len();
            check_header(&file, path, n, geometry, identity, length)?;
            log.files.push(file);
            log.lengths.push(length);
        }
        let (tail, anchor_counter) = log.read_anchor()?;
        Ok(Opened { files: log, tail, anchor_counter, created })
    }

    /// The ring's shape.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The path of file `n`.
    pub fn path(&self, n: u32) -> &Path {
        &self.paths[n as usize]
    }

    /// The open file `n`.
    pub fn file(&self, n: u32) -> &File {
        &self.files[n as usize]
    }

    /// The anchor with the higher counter of the two valid slots, and that counter.
    pub fn read_anchor(&self) -> Result<(Mark, u64), RedoError> {
        let path = self.path(0);
        let mut best: Option<(Mark, u64)> = None;
        let mut why = Vec::new();
        for offset in ANCHOR_OFFSETS {
            let mut bytes = [0u8; 64];
            match self.file(0).read_exact_at(&mut bytes, offset) {
                Ok(()) => match decode_anchor(&bytes) {
                    Ok((mark, counter)) => {
                        let newer = match best {
                            Some((_, best_counter)) => counter > best_counter,
                            None => true,
                        };
                        if newer {
                            best = Some((mark, counter));
                        }
                    }
                    Err(reason) => why.push(format!("slot at {offset}: {reason}")),
                },
                Err(e) => why.push(format!("slot at {offset}: {e}")),
            }
        }
        best.ok_or_else(|| RedoError::NoAnchor { path: path.to_owned(), reasons: why.join("; ") })
    }

    /// Reads file `n`'s record area into `into` (resized to `data_bytes`); bytes past the end
    /// of a file cut short read as zeros.
    pub fn read_data(&self, n: u32, into: &mut Vec<u8>) -> Result<(), RedoError> {
        into.clear();
        into.resize(self.geometry.data_bytes as usize, 0);
        let present = self.lengths[n as usize]
            .saturating_sub(FILE_HEADER_BYTES)
            .min(self.geometry.data_bytes);
        let path = self.path(n);
        self.file(n)
            .read_exact_at(&mut into[..present as usize], FILE_HEADER_BYTES)
            .map_err(io_error(path, "read records"))
    }

    /// Writes `bytes` at `offset` of file `n` and returns (the caller syncs).
    pub fn write_at(&self, n: u32, offset: u64, bytes: &[u8]) -> Result<(), RedoError> {
        self.file(n).write_all_at(bytes, offset).map_err(io_error(self.path(n), "write"))
    }

    /// Reads `into.len()` bytes at `offset` of file `n`.
    pub fn read_at(&self, n: u32, offset: u64, into: &mut [u8]) -> Result<(), RedoError> {
        self.file(n).read_exact_at(into, offset).map_err(io_error(self.path(n), "read"))
    }

    /// Gives files cut short their full length back (zeros), then syncs every file: what
    /// recovery found is durable before anything is written after it.
    pub fn restore_and_sync(&mut self) -> Result<(), RedoError> {
        for n in 0..self.geometry.files {
            let length = self.lengths[n as usize];
            if length < self.geometry.file_bytes {
                let path = self.paths[n as usize].clone();
                tracing::warn!(file = %path.display(), length, "redo log file was cut short: zero-filled to its full size");
                write_zeros(self.file(n), &path, length, self.geometry.file_bytes)?;
                self.lengths[n as usize] = self.geometry.file_bytes;
            }
            self.file(n).sync_data().map_err(io_error(self.path(n), "fdatasync"))?;
        }
        Ok(())
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes every file as `.tmp` (header, zeros, and in file 0 the first anchor), syncs, renames
/// them with file 0 last, and syncs the directory.
fn create_files(
    dir: &Path,
    paths: &[PathBuf],
    geometry: Geometry,
    identity: Identity,
) -> Result<(), RedoError> {
    for (n, path) in paths.iter().enumerate().rev() {
        let tmp = tmp_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error(&tmp, "create"))?;
        // Zeros, not fallocate: a preallocated but unwritten extent turns each later
        // fdatasync into a metadata update too (the extent's conversion), the cost a redo
        // log exists to avoid (NDB's InitFragmentLogFiles=full writes its files likewise).
        write_zeros(&file, &tmp, 0, geometry.file_bytes)?;
        let header = encode_header(geometry, identity, n as u32);
        file.write_all_at(&header, 0).map_err(io_error(&tmp, "write the file header"))?;
        if n == 0 {
            let anchor = Mark { position: 0, sequence: 0, round: 0 };
            file.write_all_at(&encode_anchor(anchor, 1), ANCHOR_OFFSETS[1])
                .map_err(io_error(&tmp, "write the anchor"))?;
        }
        file.sync_all().map_err(io_error(&tmp, "fsync"))?;
    }
    for path in paths.iter().rev() {
        std::fs::rename(tmp_path(path), path).map_err(io_error(path, "rename into place"))?;
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir, "fsync the log directory"))
}

/// Writes zeros over `from..to` of `file`, a mebibyte at a time.
fn write_zeros(file: &File, path: &Path, from: u64, to: u64) -> Result<(), RedoError> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(io_error(path, "write zeros"))?;
        at += n as u64;
    }
    Ok(())
}

/// File `n`'s header sector.
pub fn encode_header(geometry: Geometry, identity: Identity, n: u32) -> [u8; SECTOR_BYTES] {
    let mut header = FileHeader {
        magic: FILE_MAGIC,
        format: FORMAT_VERSION,
        header_bytes: FILE_HEADER_BYTES as u32,
        cluster_id: identity.cluster_id,
        file_bytes: geometry.file_bytes,
        node_id: identity.node_id,
        instance: identity.instance,
        file_number: n,
        files: geometry.files,
        reserved: [0; 3],
        crc: 0,
    };
    header.crc = crc32c::crc32c(&bytemuck::bytes_of(&header)[..60]);
    let mut sector = [0u8; SECTOR_BYTES];
    sector[..64].copy_from_slice(bytemuck::bytes_of(&header));
    sector
}

/// Checks file `n`'s header against the identity and the settings, naming what differs.
fn check_header(
    file: &File,
    path: &Path,
    n: u32,
    geometry: Geometry,
    identity: Identity,
    length: u64,
) -> Result<(), RedoError> {
    let bad = |reason: String| RedoError::BadFileHeader { path: path.to_owned(), reason };
    let mut bytes = [0u8; 64];
    match file.read_exact_at(&mut bytes, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            return Err(bad(format!("{length} bytes long, shorter than a file header")))
        }
        Err(e) => return Err(io_error(path, "read the file header")(e)),
    }
    let header: FileHeader = bytemuck::pod_read_unaligned(&bytes);
    if header.magic != FILE_MAGIC {
        return Err(bad(format!(
            "magic {:#018x} is not a blockwire redo log file's",
            header.magic
        )));
    }
    let crc = crc32c::crc32c(&bytes[..60]);
    if header.crc != crc {
        return Err(bad(format!(
            "header checksum {:#010x} does not match its bytes' {crc:#010x}",
            header.crc
        )));
    }
    if header.format != FORMAT_VERSION || u64::from(header.header_bytes) != FILE_HEADER_BYTES {
        return Err(bad(format!(
            "format {} with a {}-byte header is not this build's",
            header.format, header.header_bytes
        )));
    }
    check_owner(&header, path, n, geometry, identity)?;
    if length > geometry.file_bytes {
        return Err(bad(format!(
            "{length} bytes long, longer than its {} bytes",
            geometry.file_bytes
        )));
    }
    Ok(())
}

/// Checks whose log the header says the file belongs to, and its place and shape.
fn check_owner(
    header: &FileHeader,
    path: &Path,
    n: u32,
    geometry: Geometry,
    identity: Identity,
) -> Result<(), RedoError> {
    let owner = |field: &'static str, found: u64, expected: u64| {
        (found != expected).then(|| RedoError::WrongOwner {
            path: path.to_owned(),
            field,
            found,
            expected,
        })
    };
    if let Some(e) = owner("cluster id", header.cluster_id, identity.cluster_id)
        .or_else(|| owner("node id", u64::from(header.node_id), u64::from(identity.node_id)))
        .or_else(|| owner("instance", u64::from(header.instance), u64::from(identity.instance)))
    {
        return Err(e);
    }
    if header.file_number != n {
        return Err(RedoError::BadFileHeader {
            path: path.to_owned(),
            reason: format!(
                "it says it is file {} of the ring, its name says {n}",
                header.file_number
            ),
        });
    }
    let geometry_error = |field: &'static str, found: u64, configured: u64| {
        (found != configured).then(|| RedoError::GeometryMismatch {
            path: path.to_owned(),
            field,
            found,
            configured,
        })
    };
    if let Some(e) = geometry_error("files", u64::from(header.files), u64::from(geometry.files))
        .or_else(|| geometry_error("file_bytes", header.file_bytes, geometry.file_bytes))
    {
        return Err(e);
    }
    Ok(())
}

/// An anchor slot's bytes.
pub fn encode_anchor(tail: Mark, counter: u64) -> [u8; SECTOR_BYTES] {
    let mut slot = AnchorSlot {
        magic: ANCHOR_MAGIC,
        counter,
        tail_position: tail.position,
        tail_sequence: tail.sequence,
        tail_round: tail.round,
        ..AnchorSlot::zeroed()
    };
    slot.crc = crc32c::crc32c(&bytemuck::bytes_of(&slot)[..60]);
    let mut sector = [0u8; SECTOR_BYTES];
    sector[..64].copy_from_slice(bytemuck::bytes_of(&slot));
    sector
}

/// The mark and counter of an anchor slot, or why it is not valid.
pub fn decode_anchor(bytes: &[u8; 64]) -> Result<(Mark, u64), String> {
    let slot: AnchorSlot = bytemuck::pod_read_unaligned(bytes);
    if slot.magic != ANCHOR_MAGIC {
        return Err(format!("magic {:#010x}", slot.magic));
    }
    let crc = crc32c::crc32c(&bytes[..60]);
    if slot.crc != crc {
        return Err(format!("checksum {:#010x} does not match its bytes' {crc:#010x}", slot.crc));
    }
    let mark =
        Mark { position: slot.tail_position, sequence: slot.tail_sequence, round: slot.tail_round };
    Ok((mark, slot.counter))
}

/// Which anchor slot a counter writes.
pub fn anchor_offset(counter: u64) -> u64 {
    ANCHOR_OFFSETS[(counter % 2) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry { files: 3, file_bytes: 16384, data_bytes: 16384 - FILE_HEADER_BYTES }
    }

    #[test]
    fn positions_map_onto_files_and_laps() {
        let g = geometry();
        assert_eq!(g.ring_bytes(), 3 * 12288);
        assert_eq!(g.locate(0), (0, 4096));
        assert_eq!(g.locate(12288), (1, 4096));
        assert_eq!(g.locate(12288 * 2 + 8), (2, 4104));
        assert_eq!(g.locate(12288 * 3), (0, 4096), "lap 1 starts again at file 0");
        assert_eq!(g.remaining(12288 - 80), 80);
        assert_eq!(g.normalize(12288 - 80), 12288 - 80);
        assert_eq!(g.normalize(12288 - 72), 12288, "too little left for a record");
        assert_eq!(g.next_file_start(5), 12288);
    }

    #[test]
    fn anchor_slots_round_trip_and_reject_damage() {
        let mark = Mark { position: 999, sequence: 12, round: 4 };
        let sector = encode_anchor(mark, 7);
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(&sector[..64]);
        assert_eq!(decode_anchor(&bytes), Ok((mark, 7)));
        bytes[20] ^= 1;
        assert!(decode_anchor(&bytes).is_err_and(|e| e.contains("checksum")));
        assert!(decode_anchor(&[0u8; 64]).is_err_and(|e| e.contains("magic")));
        assert_ne!(anchor_offset(7), anchor_offset(8));
    }
}
