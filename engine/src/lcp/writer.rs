//! [`LcpWriter`]: writes one checkpoint of a storage instance to `lcp-<instance>-<seq>.tmp`,
//! then installs it as `lcp-<instance>-<seq>.dat` by fsync, rename and directory fsync.
//!
//! Invariants:
//! - rows are encoded into one buffer of [`BUFFER_BYTES`], allocated at create and never
//!   grown: a row that does not fit what is left sends the buffer to the file first, and a row
//!   larger than the whole buffer goes to the file straight after it;
//! - `file_crc` is the CRC-32C of exactly the bytes handed to the file, in order, and
//!   `bytes_written` their count, so the trailer describes the file it ends;
//! - a failed write stops the writer for good ([`LcpError::Stopped`]): which bytes reached the
//!   file is unknown;
//! - a writer dropped before [`LcpWriter::finish`] installed its file (abandoned, failed, or
//!   dropped while unwinding) removes its `.tmp`; nothing but `finish` ever makes a `.dat`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{self, CRC_BYTES, MAX_FIELD_BYTES, TRAILER_BYTES};
use super::{file_name, io_error, sync_dir, tmp_name, Identity, LcpError, LcpInfo, LcpStart};

/// Bytes of rows gathered before they are written out.
pub const BUFFER_BYTES: usize = 1 << 20;

/// Where a writer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Taking rows.
    Open,
    /// A write failed; only dropping (which removes the tmp) is left.
    Failed,
    /// Renamed into place: the file is no longer the writer's to remove.
    Installed,
}

/// Writes one checkpoint; see the module comment.
pub struct LcpWriter {
    dir: PathBuf,
    tmp: PathBuf,
    dat: PathBuf,
    start: LcpStart,
    file: File,
    /// Rows not yet handed to the file; capacity [`BUFFER_BYTES`], never grown.
    buffer: Vec<u8>,
    /// CRC-32C of the bytes handed to the file.
    file_crc: u32,
    /// Bytes handed to the file.
    bytes_written: u64,
    rows: u64,
    state: State,
}

impl std::fmt::Debug for LcpWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LcpWriter")
            .field("tmp", &self.tmp)
            .field("start", &self.start)
            .field("buffered", &self.buffer.len())
            .field("bytes_written", &self.bytes_written)
            .field("rows", &self.rows)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl LcpWriter {
    /// Creates `lcp-<instance>-<seq>.tmp` in `dir` (and `dir` when missing), truncating a tmp
    /// left by an earlier attempt, and writes the header. Refuses a `seq` already installed.
    pub fn create(dir: &Path, identity: Identity, start: LcpStart) -> Result<LcpWriter, LcpError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir, "create the checkpoint directory"))?;
        let dat = dir.join(file_name(identity.instance, start.seq));
        let present = dat.try_exists().map_err(io_error(&dat, "look for"))?;
        if present {
            return Err(LcpError::Exists { path: dat });
        }
        let tmp = dir.join(tmp_name(identity.instance, start.seq));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error(&tmp, "create"))?;
        let mut writer = LcpWriter {
            dir: dir.to_owned(),
            tmp,
            dat,
            start,
            file,
            buffer: Vec::with_capacity(BUFFER_BYTES),
            file_crc: 0,
            bytes_written: 0,
            rows: 0,
            state: State::Open,
        };
        // On error the writer drops here, removing the tmp.
        writer.write_out(&format::encode_header(identity, &start), "write the header")?;
        Ok(writer)
    }

    /// Adds one row: table id, table version, partition, primary key and row image. Buffered;
    /// written out when the buffer cannot take it. Refuses a key or image above
    /// [`MAX_FIELD_BYTES`].
    pub fn add_row(
        &mut self,
        table: u32,
        table_version: u32,
        partition: u32,
        key: &[u8],
        image: &[u8],
    ) -> Result<(), LcpError> {
        self.check_open()?;
        if key.len() > MAX_FIELD_BYTES || image.len() > MAX_FIELD_BYTES {
            return Err(LcpError::RowTooLarge {
                key_bytes: key.len(),
                image_bytes: image.len(),
                max: MAX_FIELD_BYTES,
            });
        }
        let header =
            format::encode_row_header(table, table_version, partition, key.len(), image.len());
        let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&header), key), image);
        let crc = crc.to_le_bytes();
        let total = header.len() + key.len() + image.len() + CRC_BYTES;
        if total > self.buffer.capacity() - self.buffer.len() {
            self.flush()?;
        }
        let parts: [&[u8]; 4] = [&header, key, image, &crc];
        if total > self.buffer.capacity() {
            for part in parts {
                self.write_out(part, "write a row")?;
            }
        } else {
            for part in parts {
                self.buffer.extend_from_slice(part);
            }
        }
        debug_assert!(self.buffer.capacity() == BUFFER_BYTES, "the row buffer never grows");
        self.rows += 1;
        Ok(())
    }

    /// Bytes handed to the file so far (header included, buffered rows not), for throttling.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The header this checkpoint was created with.
    pub fn start(&self) -> LcpStart {
        self.start
    }

    /// Writes out the buffer and the trailer (`max_gci`, the row count, the file's length and
    /// the CRC-32C of every byte before the trailer), fsyncs the file, renames it to
    /// `lcp-<instance>-<seq>.dat` and fsyncs the directory. On an error before the rename the
    /// tmp is removed; after it, the `.dat` is in place but may not be durable until the
    /// directory is synced.
    pub fn finish(mut self, max_gci: u64) -> Result<LcpInfo, LcpError> {
        self.check_open()?;
        self.flush()?;
        let file_bytes = self.bytes_written + TRAILER_BYTES as u64;
        let trailer =
            format::encode_trailer(self.start.seq, max_gci, self.rows, file_bytes, self.file_crc);
        self.write_out(&trailer, "write the trailer")?;
        debug_assert_eq!(self.bytes_written, file_bytes);
        if let Err(e) = self.file.sync_all() {
            self.state = State::Failed;
            return Err(io_error(&self.tmp, "fsync")(e));
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.dat) {
            self.state = State::Failed;
            return Err(io_error(&self.dat, "rename into place")(e));
        }
        self.state = State::Installed;
        sync_dir(&self.dir)?;
        Ok(LcpInfo {
            path: self.dat.clone(),
            start: self.start,
            max_gci,
            rows: self.rows,
            bytes: file_bytes,
        })
    }

    /// Abandons the checkpoint: the tmp file is removed (a failure to remove it is logged;
    /// [`super::remove_tmp`] clears leftovers at the next start).
    pub fn abandon(self) {
        drop(self);
    }

    fn check_open(&self) -> Result<(), LcpError> {
        match self.state {
            State::Open => Ok(()),
            State::Failed => Err(LcpError::Stopped { path: self.tmp.clone() }),
            State::Installed => {
                unreachable!("finish consumes the writer: no call follows installation")
            }
        }
    }

    /// Hands the buffered rows to the file.
    fn flush(&mut self) -> Result<(), LcpError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.write_out(&buffer, "write rows");
        self.buffer = buffer;
        self.buffer.clear();
        result
    }

    /// Writes `bytes` at the end of the file, adding them to the checksum and count; a failure
    /// stops the writer.
    fn write_out(&mut self, bytes: &[u8], action: &'static str) -> Result<(), LcpError> {
        if let Err(e) = self.file.write_all(bytes) {
            self.state = State::Failed;
            return Err(io_error(&self.tmp, action)(e));
        }
        self.file_crc = crc32c::crc32c_append(self.file_crc, bytes);
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for LcpWriter {
    fn drop(&mut self) {
        if self.state == State::Installed {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %self.tmp.display(), error = %e, "could not remove an unfinished local checkpoint");
            }
        }
    }
}
