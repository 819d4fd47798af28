//! The redo log's settings: how many files, how big, the round buffer, and whether io_uring is
//! tried. Every value is checked before a file is touched, with an error naming the key, the
//! value and what is allowed (the cluster file names them `redo_<key>` when the storage block
//! reads them).
//!
//! Invariants the rest of the module relies on: `file_bytes` is a multiple of 4096 and leaves
//! room for the file header and at least one buffer; `buffer_bytes` fits one file's data area,
//! so one round spans at most two files; every size fits the 32-bit lengths of io_uring writes.

use super::ring::FILE_HEADER_BYTES;
use super::RedoError;

/// Whether the log tries io_uring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoUringMode {
    /// Use io_uring when the kernel allows it, else pwrite + fdatasync (said once, as a warning).
    Auto,
    /// Always pwrite + fdatasync on the calling thread.
    Off,
}

/// The environment variable that forces the fallback: `BLOCKWIRE_IO_URING=off` (also `0`,
/// `false`) overrides [`IoUringMode::Auto`]; any other value changes nothing.
pub const IO_URING_ENV: &str = "BLOCKWIRE_IO_URING";

/// The smallest log file: a header and three 4 KiB pages of records (for tests).
pub const MIN_FILE_BYTES: u64 = 16 << 10;
/// The largest log file (recovery reads a file at a time into memory).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// The most files in the ring.
pub const MAX_FILES: u32 = 1024;
/// The smallest round buffer.
pub const MIN_BUFFER_BYTES: u64 = 1 << 10;
/// The largest round buffer.
pub const MAX_BUFFER_BYTES: u64 = 256 << 20;

/// The redo log's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedoSettings {
    /// Files in the ring (NDB: `NoOfFragmentLogFiles`).
    pub files: u32,
    /// Bytes of each file, header included, a multiple of 4096 (NDB: `FragmentLogFileSize`).
    pub file_bytes: u64,
    /// Bytes one round may hold; the log keeps two (one filling, one being written). A record
    /// larger than this less one file-end record is refused.
    pub buffer_bytes: u64,
    /// Whether io_uring is tried.
    pub io_uring: IoUringMode,
}

impl Default for RedoSettings {
    fn default() -> RedoSettings {
        RedoSettings {
            files: 4,
            file_bytes: 64 << 20,
            buffer_bytes: 4 << 20,
            io_uring: IoUringMode::Auto,
        }
    }
}

impl RedoSettings {
    /// Checks every value, naming the first bad key.
    pub fn validate(&self) -> Result<(), RedoError> {
        let bad = |key: &'static str, value: u64, allowed: String| {
            Err(RedoError::Setting { key, value: value.to_string(), allowed })
        };
        if !(1..=MAX_FILES).contains(&self.files) {
            return bad("files", u64::from(self.files), format!("1..={MAX_FILES}"));
        }
        if !(MIN_FILE_BYTES..=MAX_FILE_BYTES).contains(&self.file_bytes)
            || self.file_bytes % 4096 != 0
        {
            return bad(
                "file_bytes",
                self.file_bytes,
                format!("a multiple of 4096 from {MIN_FILE_BYTES} to {MAX_FILE_BYTES}"),
            );
        }
        let data_bytes = self.file_bytes - FILE_HEADER_BYTES;
        let max_buffer = data_bytes.min(MAX_BUFFER_BYTES);
        if !(MIN_BUFFER_BYTES..=max_buffer).contains(&self.buffer_bytes)
            || self.buffer_bytes % 8 != 0
        {
            return bad(
                "buffer_bytes",
                self.buffer_bytes,
                format!(
                    "a multiple of 8 from {MIN_BUFFER_BYTES} to {max_buffer} (at most file_bytes less \
                     the {FILE_HEADER_BYTES}-byte file header)"
                ),
            );
        }
        Ok(())
    }

    /// The mode in force, and what turned io_uring off if anything did: the setting, unless
    /// [`IO_URING_ENV`] says off.
    pub fn effective_io_uring(&self) -> (IoUringMode, Option<&'static str>) {
        let forced_off = std::env::var(IO_URING_ENV)
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false"));
        match (forced_off, self.io_uring) {
            (true, _) => (IoUringMode::Off, Some("io_uring is off: BLOCKWIRE_IO_URING=off")),
            (false, IoUringMode::Off) => (IoUringMode::Off, Some("io_uring is off by setting")),
            (false, IoUringMode::Auto) => (IoUringMode::Auto, None),
        }
    }

    /// Bytes of records one file holds (the file less its header).
    pub fn data_bytes(&self) -> u64 {
        self.file_bytes - FILE_HEADER_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(settings: RedoSettings) -> Option<&'static str> {
        match settings.validate() {
            Ok(()) => None,
            Err(RedoError::Setting { key, .. }) => Some(key),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(key_of(RedoSettings::default()), None);
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let d = RedoSettings::default();
        assert_eq!(key_of(RedoSettings { files: 0, ..d }), Some("files"));
        assert_eq!(key_of(RedoSettings { files: MAX_FILES + 1, ..d }), Some("files"));
        assert_eq!(key_of(RedoSettings { file_bytes: 8192, ..d }), Some("file_bytes"));
        assert_eq!(key_of(RedoSettings { file_bytes: (64 << 20) + 100, ..d }), Some("file_bytes"));
        assert_eq!(key_of(RedoSettings { buffer_bytes: 100, ..d }), Some("buffer_bytes"));
        assert_eq!(key_of(RedoSettings { buffer_bytes: 4097, ..d }), Some("buffer_bytes"));
        let small = RedoSettings { file_bytes: MIN_FILE_BYTES, buffer_bytes: MIN_FILE_BYTES, ..d };
        assert_eq!(key_of(small), Some("buffer_bytes"));
        let message = small.validate().map_err(|e| e.to_string()).expect_err("too big a buffer");
        assert!(message.contains("buffer_bytes") && message.contains("16384"), "{message}");
    }
}
