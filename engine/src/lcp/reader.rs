//! Finding, reading and removing the installed checkpoints of a storage instance (the reading
//! half is NDB's RESTORE block's part in a restart).
//!
//! [`list`] opens each `lcp-<instance>-<seq>.dat` and checks its header (format, owner, seq)
//! and trailer (checksum, seq, the file's length); it reads nothing else, so listing is cheap
//! however large the checkpoints are. [`read`] checks the same again, then streams every row
//! record through one buffered reader, checking each row's checksum before handing it on, and
//! at the end the row count and the trailer's checksum of the whole file.
//!
//! Invariants: a length read from a file is bounded ([`MAX_FIELD_BYTES`] per key or image,
//! and the bytes left before the trailer) before anything is allocated, so memory held while
//! reading is at most one row plus the read buffer; no byte of a file can make reading panic;
//! every error names the file and, for a bad row or checksum, the byte offset.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{
    self, FileHeader, RowHeader, Trailer, CRC_BYTES, HEADER_BYTES, MAX_FIELD_BYTES, MIN_ROW_BYTES,
    ROW_HEADER_BYTES, TRAILER_BYTES,
};
use super::{classify, file_name, io_error, sync_dir, Identity, LcpError, LcpInfo, Name};

/// Bytes the reader asks the file for at a time.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// The installed checkpoints of `identity.instance` in `dir`, newest (highest seq) first, each
/// with its header and trailer checked. `.tmp` files and other instances' files are ignored;
/// a missing `dir` has none. An installed file that is not whole, not readable, or not this
/// node's is an error naming it.
pub fn list(dir: &Path, identity: Identity) -> Result<Vec<LcpInfo>, LcpError> {
    let mut infos = Vec::new();
    for (name, path) in entries(dir, identity.instance)? {
        if let Name::Installed(seq) = name {
            infos.push(open_checked(&path, seq, identity)?.info);
        }
    }
    infos.sort_by_key(|info| std::cmp::Reverse(info.start.seq));
    Ok(infos)
}

/// Reads every row of the installed checkpoint `info` (as [`list`] returned it), calling
/// `row(table, table_version, partition, key, image)` for each in the order written; returns
/// the number of rows. Each row's checksum is checked before it is handed on; the row count
/// and the trailer's checksum of the whole file are checked at the end. On any error the rows
/// already handed on are to be discarded. An error of `row` is returned as it is.
pub fn read(
    info: &LcpInfo,
    identity: Identity,
    mut row: impl FnMut(u32, u32, u32, &[u8], &[u8]) -> Result<(), LcpError>,
) -> Result<u64, LcpError> {
    let path = info.path.as_path();
    let checked = open_checked(path, info.start.seq, identity)?;
    if checked.info != *info {
        return Err(LcpError::BadFile {
            path: path.to_owned(),
            reason: format!("it changed since it was listed: now {:?}", checked.info),
        });
    }
    let mut file = checked.file;
    file.seek(SeekFrom::Start(HEADER_BYTES as u64)).map_err(io_error(path, "seek"))?;
    let end = info.bytes - TRAILER_BYTES as u64;
    let mut scan = Scan {
        path,
        input: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        offset: HEADER_BYTES as u64,
        end,
        file_crc: crc32c::crc32c(&checked.header_bytes),
        body: Vec::new(),
    };
    let trailer = checked.trailer;
    let mut rows = 0u64;
    while scan.offset < end {
        let at = scan.offset;
        let (header, key_bytes) = scan.next_row()?;
        rows += 1;
        if rows > trailer.rows {
            return Err(corrupt(
                path,
                at,
                format!("row {rows}, but the trailer says {}", trailer.rows),
            ));
        }
        let (key, rest) = scan.body.split_at(key_bytes);
        let image = &rest[..rest.len() - CRC_BYTES];
        row(header.table, header.table_version, header.partition, key, image)?;
    }
    if rows != trailer.rows {
        return Err(corrupt(path, end, format!("{rows} rows, the trailer says {}", trailer.rows)));
    }
    if scan.file_crc != trailer.file_crc {
        return Err(corrupt(
            path,
            end,
            format!(
                "the file's checksum {:#010x} does not match the trailer's {:#010x}",
                scan.file_crc, trailer.file_crc
            ),
        ));
    }
    Ok(rows)
}

/// Removes the installed checkpoints of `identity.instance` in `dir` older than `keep_seq`,
/// then fsyncs the directory. Refuses ([`LcpError::NotInstalled`], or the error [`list`]
/// would give for it) unless checkpoint `keep_seq` is installed and whole, so the newest good
/// checkpoint is never removed by a wrong number.
pub fn remove_older(dir: &Path, identity: Identity, keep_seq: u64) -> Result<(), LcpError> {
    let entries = entries(dir, identity.instance)?;
    if !entries.iter().any(|(name, _)| *name == Name::Installed(keep_seq)) {
        return Err(LcpError::NotInstalled { dir: dir.to_owned(), seq: keep_seq });
    }
    open_checked(&dir.join(file_name(identity.instance, keep_seq)), keep_seq, identity)?;
    let mut removed = 0usize;
    for (name, path) in &entries {
        if matches!(*name, Name::Installed(seq) if seq < keep_seq) {
            std::fs::remove_file(path).map_err(io_error(path, "remove"))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Removes every `.tmp` of `identity.instance` in `dir` (checkpoints a crash interrupted) and
/// returns how many. Call at start, before any [`super::LcpWriter`] of the instance exists: a
/// running writer's file would be removed under it.
pub fn remove_tmp(dir: &Path, identity: Identity) -> Result<usize, LcpError> {
    let mut removed = 0usize;
    for (name, path) in entries(dir, identity.instance)? {
        if let Name::Tmp(_) = name {
            std::fs::remove_file(&path).map_err(io_error(&path, "remove"))?;
            tracing::info!(file = %path.display(), "removed an unfinished local checkpoint");
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// The entries of `dir` that are `instance`'s checkpoint files, installed or tmp; none when
/// `dir` does not exist.
fn entries(dir: &Path, instance: u32) -> Result<Vec<(Name, PathBuf)>, LcpError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, "list the checkpoint directory")(e)),
    };
    let mut found = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io_error(dir, "list the checkpoint directory"))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        match classify(name, instance) {
            Name::Other => {}
            kind => found.push((kind, entry.path())),
        }
    }
    Ok(found)
}

/// An installed file whose header and trailer passed.
struct Checked {
    file: File,
    info: LcpInfo,
    header_bytes: [u8; HEADER_BYTES],
    trailer: Trailer,
}

/// Opens `path`, the installed checkpoint `seq` of `identity.instance` by its name, and checks
/// its header and trailer.
fn open_checked(path: &Path, seq: u64, identity: Identity) -> Result<Checked, LcpError> {
    let bad = |reason: String| LcpError::BadFile { path: path.to_owned(), reason };
    let file = File::open(path).map_err(io_error(path, "open"))?;
    let length = file.metadata().map_err(io_error(path, "stat"))?.len();
    if length < (HEADER_BYTES + TRAILER_BYTES) as u64 {
        return Err(bad(format!(
            "{length} bytes long, shorter than a header and a trailer ({} bytes)",
            HEADER_BYTES + TRAILER_BYTES
        )));
    }
    let mut header_bytes = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header_bytes, 0).map_err(io_error(path, "read the header"))?;
    let header = format::decode_header(&header_bytes).map_err(bad)?;
    check_owner(&header, path, identity)?;
    if header.seq != seq {
        return Err(bad(format!("its header says checkpoint {}, its name {seq}", header.seq)));
    }
    let mut trailer_bytes = [0u8; TRAILER_BYTES];
    file.read_exact_at(&mut trailer_bytes, length - TRAILER_BYTES as u64)
        .map_err(io_error(path, "read the trailer"))?;
    let trailer = format::decode_trailer(&trailer_bytes).map_err(bad)?;
    check_trailer(&trailer, seq, length).map_err(bad)?;
    let info = LcpInfo {
        path: path.to_owned(),
        start: format::start_of(&header),
        max_gci: trailer.max_gci,
        rows: trailer.rows,
        bytes: length,
    };
    Ok(Checked { file, info, header_bytes, trailer })
}

/// Checks a decoded trailer against the file it ends.
fn check_trailer(trailer: &Trailer, seq: u64, length: u64) -> Result<(), String> {
    if trailer.seq != seq {
        return Err(format!("its trailer says checkpoint {}, its name {seq}", trailer.seq));
    }
    if trailer.file_bytes != length {
        return Err(format!(
            "its trailer says {} bytes, the file has {length}: not a whole checkpoint",
            trailer.file_bytes
        ));
    }
    let row_bytes = length - (HEADER_BYTES + TRAILER_BYTES) as u64;
    match trailer.rows.checked_mul(MIN_ROW_BYTES as u64) {
        Some(least) if least <= row_bytes => Ok(()),
        _ => Err(format!(
            "its trailer says {} rows, more than {row_bytes} bytes of rows can hold",
            trailer.rows
        )),
    }
}

/// Checks whose checkpoint the header says the file is, naming the field that differs.
fn check_owner(header: &FileHeader, path: &Path, identity: Identity) -> Result<(), LcpError> {
    let owner = |field: &'static str, found: u64, expected: u64| {
        (found != expected).then(|| LcpError::WrongOwner {
            path: path.to_owned(),
            field,
            found,
            expected,
        })
    };
    match owner("cluster id", header.cluster_id, identity.cluster_id)
        .or_else(|| owner("node id", u64::from(header.node_id), u64::from(identity.node_id)))
        .or_else(|| owner("instance", u64::from(header.instance), u64::from(identity.instance)))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn corrupt(path: &Path, offset: u64, reason: String) -> LcpError {
    LcpError::Corrupt { path: path.to_owned(), offset, reason }
}

/// The row records of one file, read in order.
struct Scan<'a> {
    path: &'a Path,
    input: BufReader<File>,
    /// File offset of the next record.
    offset: u64,
    /// File offset of the trailer: the end of the rows.
    end: u64,
    /// CRC-32C of the file's bytes before `offset`.
    file_crc: u32,
    /// The last record's key, image and checksum; at most `2 * MAX_FIELD_BYTES + 4` bytes.
    body: Vec<u8>,
}

impl Scan<'_> {
    /// Reads the record at `offset` into `body` (key, image, checksum), checks it, and returns
    /// its header and key length.
    fn next_row(&mut self) -> Result<(RowHeader, usize), LcpError> {
        let at = self.offset;
        let left = self.end - at;
        if left < MIN_ROW_BYTES as u64 {
            let reason = format!(
                "{left} bytes left before the trailer, a row record needs at least {MIN_ROW_BYTES}"
            );
            return Err(corrupt(self.path, at, reason));
        }
        let mut head = [0u8; ROW_HEADER_BYTES];
        read_exact(&mut self.input, self.path, &mut head)?;
        let (header, total) =
            format::decode_row_header(&head).map_err(|reason| corrupt(self.path, at, reason))?;
        if total as u64 > left {
            let reason =
                format!("row record of {total} bytes runs past the trailer at offset {}", self.end);
            return Err(corrupt(self.path, at, reason));
        }
        let body_bytes = total - ROW_HEADER_BYTES;
        debug_assert!(body_bytes <= 2 * MAX_FIELD_BYTES + CRC_BYTES);
        self.body.clear();
        self.body.resize(body_bytes, 0);
        read_exact(&mut self.input, self.path, &mut self.body)?;
        let (data, stored) = self.body.split_at(body_bytes - CRC_BYTES);
        let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        let computed = crc32c::crc32c_append(crc32c::crc32c(&head), data);
        if stored != computed {
            let reason =
                format!("row checksum {stored:#010x} does not match its bytes' {computed:#010x}");
            return Err(corrupt(self.path, at, reason));
        }
        self.file_crc =
            crc32c::crc32c_append(crc32c::crc32c_append(self.file_crc, &head), &self.body);
        self.offset += total as u64;
        Ok((header, header.key_bytes as usize))
    }
}

fn read_exact(input: &mut BufReader<File>, path: &Path, into: &mut [u8]) -> Result<(), LcpError> {
    input.read_exact(into).map_err(io_error(path, "read rows"))
}
