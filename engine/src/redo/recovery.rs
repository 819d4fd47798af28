//! Reading the log back at open: walk the ring from the anchor's tail, validating each record,
//! find where the log ends, and decide whether what stopped the walk is the torn end of the
//! last round (cut back and reported) or corruption before the end (an error: data is never
//! skipped).
//!
//! The walk. Starting at the tail with the anchor's (position, sequence, round), a record at
//! the expected position is taken when it decodes (magic, length bounds, CRC-32C, kind and
//! lengths: [`super::record::decode`]) and carries exactly the expected position, sequence and
//! round, and does not run past the tail's place one lap later. The next expected record is
//! one sequence on, at the record's end (or the next file's start after a file end or when
//! too little of the file is left), in the same round, or the next round after a record
//! flagged round-end. The first position where no such record starts is the cut, X.
//!
//! The rule at X. The round expected at X is R (the round of the record before X, plus one if
//! that record ended its round; the anchor's round when there is none). Every 8-byte aligned
//! position Q after X, up to the tail's place one lap later, is searched for a record of the
//! current lap: one that decodes and whose position field equals Q (an earlier lap's record
//! carries a position one or more ring lengths smaller, so it never matches).
//! - If such a record at Q belongs to a round other than R, X is **mid-log**: a round after R
//!   exists, and since a round is submitted only after the one before it completed, R was
//!   whole on disk and the bad bytes at X are corruption. Opening fails with
//!   [`RedoError::Corrupt`] naming the file and offset of X and of Q.
//! - Otherwise X is the **end**: everything found after X is of round R, the round that was in
//!   flight when the node stopped, whose sectors reached the disk in no particular order. The
//!   log is cut at X, and the cut is reported ([`Truncation`], file and offset) when the
//!   record before X does not end its round, or a record claiming position X was begun there
//!   and does not validate, or records of R were found after X (they are dropped, and erased
//!   before anything new is written, so they can never be taken for a later record). A clean
//!   end — the last round complete, then zeros or an earlier lap's bytes — is not a truncation.
//!
//! The search reads every file of the ring once more (the free part of it), so an open reads
//! up to twice the ring: the price of never mistaking corruption for the end.
//!
//! What this rule cannot tell apart: a record of the last round that completed its fdatasync
//! and was damaged afterwards (media corruption) looks like a torn last round; it is cut and
//! reported, not silently dropped. A flipped bit inside a header's position field turns a
//! torn record into "nothing begun here"; the round-end check still reports the cut when the
//! round had more than one record.

use std::path::PathBuf;

use super::record::{
    self, Change, Decoded, Kind, Record, RecordHeader, ALIGN_BYTES, MIN_RECORD_BYTES, RECORD_MAGIC,
};
use super::ring::{Geometry, LogFiles, Mark, FILE_HEADER_BYTES};
use super::{Lsn, RedoError};

/// A record read back at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredRecord {
    /// Where it starts.
    pub lsn: Lsn,
    /// Where the next record starts (release through this to free it).
    pub end: Lsn,
    /// Its sequence number.
    pub sequence: u64,
    /// The round it was written in.
    pub round: u64,
    /// The global checkpoint its transaction committed in.
    pub gci: u64,
    /// The transaction id.
    pub transaction: u64,
    /// Table id.
    pub table: u32,
    /// Table version.
    pub table_version: u32,
    /// Partition.
    pub partition: u32,
    /// The primary key.
    pub key: Vec<u8>,
    /// The row image, `None` for a delete.
    pub image: Option<Vec<u8>>,
}

impl RecoveredRecord {
    fn new(d: &Decoded<'_>, position: u64, next: u64) -> RecoveredRecord {
        let h = &d.header;
        RecoveredRecord {
            lsn: Lsn(position),
            end: Lsn(next),
            sequence: h.sequence,
            round: h.round,
            gci: h.gci,
            transaction: h.transaction,
            table: h.table,
            table_version: h.table_version,
            partition: h.partition,
            key: d.key.to_vec(),
            image: (d.kind == Kind::Write).then(|| d.image.to_vec()),
        }
    }

    /// The record as it was appended.
    pub fn as_record(&self) -> Record<'_> {
        Record {
            gci: self.gci,
            transaction: self.transaction,
            table: self.table,
            table_version: self.table_version,
            partition: self.partition,
            key: &self.key,
            change: match &self.image {
                Some(image) => Change::Write(image),
                None => Change::Delete,
            },
        }
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark { position: self.lsn.0, sequence: self.sequence, round: self.round }
    }
}

/// Where a torn end was cut, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The file the cut is in.
    pub path: PathBuf,
    /// Byte offset of the cut in that file.
    pub offset: u64,
    /// The log position of the cut (the new head).
    pub lsn: Lsn,
    /// What was found there.
    pub reason: String,
    /// Valid records of the unfinished round found after the cut, dropped.
    pub dropped_records: usize,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "redo log cut at {} offset {} (position {}): {}",
            self.path.display(),
            self.offset,
            self.lsn,
            self.reason
        )
    }
}

/// What the log held at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The records from the tail to the end, in log order.
    pub records: Vec<RecoveredRecord>,
    /// The torn end that was cut, if any.
    pub truncation: Option<Truncation>,
    /// The tail (oldest record kept).
    pub tail: Lsn,
    /// The end: where the next record goes.
    pub head: Lsn,
    /// Whether the log was created by this open.
    pub created: bool,
}

/// The scan's result, for the log to resume from.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) recovered: Recovered,
    /// The record expected at the cut: where and with what the writer resumes.
    pub(crate) head: Mark,
    /// (file, offset) of each record of the unfinished round found after the cut.
    pub(crate) remnants: Vec<(u32, u64)>,
}

/// One file's records in memory at a time.
struct Reader<'a> {
    files: &'a LogFiles,
    loaded: Option<u32>,
    data: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn data_of(&mut self, file: u32) -> Result<&[u8], RedoError> {
        if self.loaded != Some(file) {
            self.loaded = None;
            self.files.read_data(file, &mut self.data)?;
            self.loaded = Some(file);
        }
        Ok(&self.data)
    }

    /// The bytes from `position` to the end of its file's records.
    fn at(&mut self, geometry: Geometry, position: u64) -> Result<&[u8], RedoError> {
        let (file, offset) = geometry.locate(position);
        let data = self.data_of(file)?;
        Ok(&data[(offset - FILE_HEADER_BYTES) as usize..])
    }
}

/// Where the walk stopped.
struct End {
    /// The record expected at the cut.
    expect: Mark,
    /// Why the bytes at the cut are not that record; `None` when the walk reached the tail's
    /// place one lap on (a ring full of valid records).
    failure: Option<String>,
    /// Whether the last record taken ended its round; `None` when none was taken.
    last_round_end: Option<bool>,
}

/// Reads the log from `tail`; see the module comment for the rule.
pub(crate) fn scan(files: &LogFiles, tail: Mark) -> Result<Scan, RedoError> {
    let g = files.geometry();
    let limit = tail.position + g.ring_bytes();
    let mut reader = Reader { files, loaded: None, data: Vec::new() };
    let mut records = Vec::new();
    let end = walk(&mut reader, g, tail, limit, &mut records)?;
    let cut = end.expect.position;
    let (remnants, torn_here) = match &end.failure {
        Some(reason) => {
            let remnants = search_after(&mut reader, cut, limit, end.expect.round, reason)?;
            let torn_here = record::claimed_position(reader.at(g, cut)?) == Some(cut);
            (remnants, torn_here)
        }
        None => (Vec::new(), false),
    };
    let unfinished = end.last_round_end == Some(false);
    let truncation = (unfinished || torn_here || !remnants.is_empty()).then(|| {
        let mut why = Vec::new();
        if torn_here {
            why.push(format!(
                "a record begun here does not validate ({})",
                end.failure.as_deref().unwrap_or("")
            ));
        }
        if unfinished {
            why.push(
                "the record before it does not end its round (the round was being written)"
                    .to_string(),
            );
        }
        if !remnants.is_empty() {
            why.push(format!(
                "{} record(s) of that unfinished round after it are dropped",
                remnants.len()
            ));
        }
        let (file, offset) = g.locate(cut);
        Truncation {
            path: files.path(file).to_owned(),
            offset,
            lsn: Lsn(cut),
            reason: why.join("; "),
            dropped_records: remnants.len(),
        }
    });
    if let Some(t) = &truncation {
        tracing::warn!(file = %t.path.display(), offset = t.offset, position = t.lsn.0, reason = %t.reason, "redo log: torn end cut");
    }
    let recovered =
        Recovered { records, truncation, tail: Lsn(tail.position), head: Lsn(cut), created: false };
    Ok(Scan { recovered, head: end.expect, remnants })
}

/// Takes records from `tail` while each is the one expected.
fn walk(
    reader: &mut Reader<'_>,
    g: Geometry,
    tail: Mark,
    limit: u64,
    records: &mut Vec<RecoveredRecord>,
) -> Result<End, RedoError> {
    let mut expect = tail;
    let mut last_round_end = None;
    loop {
        if expect.position >= limit {
            return Ok(End { expect, failure: None, last_round_end });
        }
        let bytes = reader.at(g, expect.position)?;
        let d = match record::decode(bytes) {
            Ok(d) => d,
            Err(e) => return Ok(End { expect, failure: Some(e.to_string()), last_round_end }),
        };
        let next = match d.kind {
            Kind::FileEnd => g.next_file_start(expect.position),
            Kind::Write | Kind::Delete => g.normalize(expect.position + d.length() as u64),
        };
        if let Some(why) = mismatch(&d.header, expect, next, limit) {
            return Ok(End { expect, failure: Some(why), last_round_end });
        }
        if d.kind != Kind::FileEnd {
            records.push(RecoveredRecord::new(&d, expect.position, next));
        }
        last_round_end = Some(d.round_end());
        let round = d.header.round + u64::from(d.round_end());
        expect = Mark { position: next, sequence: expect.sequence + 1, round };
    }
}

/// Why a record that decodes is not the one expected, if it is not.
fn mismatch(h: &RecordHeader, expect: Mark, next: u64, limit: u64) -> Option<String> {
    if h.position != expect.position {
        return Some(format!(
            "the record here says position {} (an earlier lap's), position {} was expected",
            h.position, expect.position
        ));
    }
    if h.sequence != expect.sequence {
        return Some(format!("sequence {} where {} was expected", h.sequence, expect.sequence));
    }
    if h.round != expect.round {
        return Some(format!("round {} where {} was expected", h.round, expect.round));
    }
    if next > limit {
        return Some(format!(
            "it runs to position {next}, past the tail's place one lap on ({limit})"
        ));
    }
    None
}

/// Searches every aligned position after `cut` (to `limit`) for records of this lap; returns
/// (file, offset) of those of `round`, or the corruption error at the first of another round.
fn search_after(
    reader: &mut Reader<'_>,
    cut: u64,
    limit: u64,
    round: u64,
    reason: &str,
) -> Result<Vec<(u32, u64)>, RedoError> {
    let files = reader.files;
    let g = files.geometry();
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut remnants = Vec::new();
    let mut position = cut + ALIGN_BYTES as u64;
    while position < limit {
        let segment_start = position - position % g.data_bytes;
        let last = (segment_start + g.data_bytes).min(limit);
        let (file, _) = g.locate(position);
        let data = reader.data_of(file)?;
        let mut q = position;
        while q < last && g.remaining(q) >= MIN_RECORD_BYTES as u64 {
            let offset = (q - segment_start) as usize;
            if data[offset..offset + 4] == magic {
                if let Ok(d) = record::decode(&data[offset..]) {
                    if d.header.position == q && d.header.round == round {
                        remnants.push((file, FILE_HEADER_BYTES + offset as u64));
                    } else if d.header.position == q {
                        let (cut_file, cut_offset) = g.locate(cut);
                        return Err(RedoError::Corrupt {
                            path: files.path(cut_file).to_owned(),
                            offset: cut_offset,
                            position: cut,
                            reason: reason.to_string(),
                            later_path: files.path(file).to_owned(),
                            later_offset: FILE_HEADER_BYTES + offset as u64,
                            later_round: d.header.round,
                        });
                    }
                }
            }
            q += ALIGN_BYTES as u64;
        }
        position = segment_start + g.data_bytes;
    }
    Ok(remnants)
}

/// Erases (zeros the header of) each record left after the cut by the unfinished round, so
/// no later scan can take one for a record written after the cut. The caller syncs.
pub(crate) fn erase_remnants(files: &LogFiles, remnants: &[(u32, u64)]) -> Result<(), RedoError> {
    for &(file, offset) in remnants {
        files.write_at(file, offset, &[0u8; record::HEADER_BYTES])?;
    }
    Ok(())
}
