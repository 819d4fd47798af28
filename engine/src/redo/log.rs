//! [`RedoLog`]: the writer. Appends encode records into the filling buffer; a submit turns it
//! into one round (writes plus linked fdatasyncs, and the anchor when space was released);
//! completions move the durable position and, for a round that carried an anchor, the tail.
//!
//! Invariants: `tail <= durable <= head <= tail + ring` (positions); one round in flight, whose
//! buffer is not touched until its completion is reaped (and [`RedoLog`]'s drop waits for it);
//! a record is encoded once, into a buffer sized at open (no allocation per record or round,
//! except the GCI breakpoints, one per new highest GCI); a failed round stops the log for
//! good ([`RedoError::Stopped`]), since which of its bytes reached the disk is unknown (NDB
//! stops the node on a redo write error likewise).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::path::Path;

use super::io::{Io, RoundError, Sync, Write, MAX_SYNCS, MAX_WRITES};
use super::record::{self, Record, Stamp, MIN_RECORD_BYTES};
use super::recovery::{self, Recovered};
use super::ring::{self, Geometry, LogFiles, Mark, SECTOR_BYTES};
use super::settings::RedoSettings;
use super::{Identity, Lsn, RedoError};

/// Which backend writes the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring, completions on its eventfd.
    IoUring,
    /// pwrite + fdatasync on the calling thread.
    Blocking,
}

// A block owns its log and runs on one thread, to which it is moved at start.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<RedoLog>();
};

/// A round's number, from 0 at each open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoundId(pub u64);

/// What [`RedoLog::submit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    /// A round was started.
    Started(RoundId),
    /// This round is still in flight; what is buffered goes in the next one.
    Busy(RoundId),
    /// Nothing to write.
    Idle,
}

/// A round's outcome.
#[derive(Debug)]
pub struct Completion {
    /// The round.
    pub round: RoundId,
    /// The durable position after it, or why it failed.
    pub result: Result<Lsn, RedoError>,
}

/// Counts since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedoStats {
    /// Records written in completed rounds (file-end records not counted).
    pub records: u64,
    /// Rounds completed.
    pub rounds: u64,
    /// Bytes of records written (file-end records included).
    pub bytes_written: u64,
    /// fdatasyncs completed.
    pub syncs: u64,
    /// Anchor writes completed.
    pub anchor_writes: u64,
    /// Appends refused with [`RedoError::LogFull`].
    pub log_full: u64,
    /// Appends refused with [`RedoError::BufferFull`].
    pub buffer_full: u64,
}

/// A contiguous run of a round's buffer and where in the log it goes.
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    buffer_start: usize,
    position: u64,
}

/// At most two: a round fits one file's data area, so it touches at most two files.
const MAX_SEGMENTS: usize = 2;

/// One round's bytes.
#[derive(Debug)]
struct RoundBuffer {
    bytes: Vec<u8>,
    used: usize,
    segments: [Segment; MAX_SEGMENTS],
    segment_count: usize,
    /// Where the last record starts (it gets the round-end flag).
    last_record: Option<usize>,
    records: u64,
    /// The anchor sector this round writes, when `anchor_counter` is set.
    anchor: Box<[u8; SECTOR_BYTES]>,
}

impl RoundBuffer {
    fn new(bytes: usize) -> RoundBuffer {
        RoundBuffer {
            bytes: vec![0; bytes],
            used: 0,
            segments: [Segment::default(); MAX_SEGMENTS],
            segment_count: 0,
            last_record: None,
            records: 0,
            anchor: Box::new([0; SECTOR_BYTES]),
        }
    }

    fn reset(&mut self) {
        self.used = 0;
        self.segment_count = 0;
        self.last_record = None;
        self.records = 0;
    }

    /// Starts a segment unless the next bytes continue the current one at `position`. A
    /// position at a file's start always starts one: positions run on across a file's end,
    /// but the bytes go to the next file (a record that ends exactly at a file's end is
    /// followed by one at the next file's start).
    fn place(&mut self, position: u64, data_bytes: u64) {
        let continues = self.segment_count > 0 && position % data_bytes != 0 && {
            let s = self.segments[self.segment_count - 1];
            s.position + (self.used - s.buffer_start) as u64 == position
        };
        if !continues {
            assert!(self.segment_count < MAX_SEGMENTS, "a round spans at most two files");
            self.segments[self.segment_count] = Segment { buffer_start: self.used, position };
            self.segment_count += 1;
        }
    }

    /// The bytes of segment `i`.
    fn segment_bytes(&self, i: usize) -> &[u8] {
        let end =
            if i + 1 < self.segment_count { self.segments[i + 1].buffer_start } else { self.used };
        &self.bytes[self.segments[i].buffer_start..end]
    }
}

/// The round in flight.
#[derive(Debug)]
struct InFlight {
    id: u64,
    /// The head when it was submitted: durable once it completes.
    end: Mark,
    /// The tail its anchor write persists, and the anchor's counter.
    release: Option<(Mark, u64)>,
    records: u64,
    bytes: u64,
    syncs: u64,
}

/// From here on, records may carry a GCI above every earlier one.
#[derive(Clone, Copy, Debug)]
struct Breakpoint {
    mark: Mark,
    gci: u64,
}

/// One storage instance's redo log.
#[derive(Debug)]
pub struct RedoLog {
    files: LogFiles,
    geometry: Geometry,
    io: Io,
    fallback_reason: Option<String>,
    /// Appends go here.
    fill: RoundBuffer,
    /// The round in flight's bytes.
    flight: RoundBuffer,
    in_flight: Option<InFlight>,
    /// Where the next record goes and what it will carry.
    head: Mark,
    /// The head after the last completed round.
    durable: Mark,
    /// The oldest record kept, as the anchor on disk says.
    tail: Mark,
    anchor_counter: u64,
    /// A release not yet handed to a round.
    pending_release: Option<Mark>,
    /// Increases of the highest GCI logged, oldest first, none before the tail.
    breakpoints: VecDeque<Breakpoint>,
    max_gci: u64,
    max_record_bytes: usize,
    next_round_id: u64,
    stopped: Option<u64>,
    stats: RedoStats,
}

impl RedoLog {
    /// Opens (or creates) the log of `identity` in `dir`, recovers what it holds and erases
    /// what a torn last round left past the end; the records from the tail on come back in
    /// [`Recovered`]. A directory holding another cluster's, node's or instance's log, or a
    /// log made with other settings, is refused naming the file and the field.
    pub fn open(
        dir: &Path,
        settings: &RedoSettings,
        identity: Identity,
    ) -> Result<(RedoLog, Recovered), RedoError> {
        settings.validate()?;
        let geometry = Geometry::of(settings);
        let opened = ring::LogFiles::open(dir, geometry, identity)?;
        let mut files = opened.files;
        let scan = recovery::scan(&files, opened.tail)?;
        recovery::erase_remnants(&files, &scan.remnants)?;
        files.restore_and_sync()?;
        let (io, fallback_reason) = Io::choose(settings.effective_io_uring());
        let mut breakpoints = VecDeque::with_capacity(1024);
        let mut max_gci = 0;
        for r in &scan.recovered.records {
            if r.gci > max_gci {
                breakpoints.push_back(Breakpoint { mark: r.mark(), gci: r.gci });
                max_gci = r.gci;
            }
        }
        let buffer_bytes = settings.buffer_bytes as usize;
        let log = RedoLog {
            files,
            geometry,
            io,
            fallback_reason,
            fill: RoundBuffer::new(buffer_bytes),
            flight: RoundBuffer::new(buffer_bytes),
            in_flight: None,
            head: scan.head,
            durable: scan.head,
            tail: opened.tail,
            anchor_counter: opened.anchor_counter,
            pending_release: None,
            breakpoints,
            max_gci,
            max_record_bytes: buffer_bytes - MIN_RECORD_BYTES,
            next_round_id: 0,
            stopped: None,
            stats: RedoStats::default(),
        };
        let mut recovered = scan.recovered;
        recovered.created = opened.created;
        Ok((log, recovered))
    }

    fn usable(&self) -> Result<(), RedoError> {
        match self.stopped {
            Some(round) => Err(RedoError::Stopped { round }),
            None => Ok(()),
        }
    }

    /// Buffers `record` for the next round; returns the position just past it (durable once
    /// [`RedoLog::durable_through`] reaches it). Refuses with [`RedoError::LogFull`] when the
    /// ring has no room before the tail, [`RedoError::BufferFull`] when this round's buffer
    /// has none (submit, then retry after the round in flight completes).
    pub fn append(&mut self, record: &Record<'_>) -> Result<Lsn, RedoError> {
        self.usable()?;
        let bytes = match record::record_bytes(record) {
            Some(n) if n <= self.max_record_bytes => n,
            _ => {
                let image_bytes = match record.change {
                    record::Change::Write(image) => image.len(),
                    record::Change::Delete => 0,
                };
                let (key_bytes, max) = (record.key.len(), self.max_record_bytes);
                return Err(RedoError::RecordTooLarge { key_bytes, image_bytes, max });
            }
        };
        let g = self.geometry;
        let position = self.head.position;
        let file_end = g.remaining(position) < bytes as u64;
        let at = if file_end { g.next_file_start(position) } else { position };
        let end = g.normalize(at + bytes as u64);
        if end - self.tail.position > g.ring_bytes() {
            self.stats.log_full += 1;
            return Err(RedoError::LogFull { needed: end - position, free: self.free_bytes() });
        }
        let buffered = bytes + if file_end { MIN_RECORD_BYTES } else { 0 };
        let free = self.fill.bytes.len() - self.fill.used;
        if buffered > free {
            self.stats.buffer_full += 1;
            return Err(RedoError::BufferFull { needed: buffered, free });
        }
        if file_end {
            let stamp = Stamp { sequence: self.head.sequence, position, round: self.head.round };
            self.fill.place(position, g.data_bytes);
            self.fill.used +=
                record::encode_file_end(stamp, &mut self.fill.bytes[self.fill.used..]);
            self.head.sequence += 1;
        }
        let stamp = Stamp { sequence: self.head.sequence, position: at, round: self.head.round };
        self.fill.place(at, g.data_bytes);
        let offset = self.fill.used;
        self.fill.used += record::encode(record, stamp, &mut self.fill.bytes[offset..]);
        self.fill.last_record = Some(offset);
        self.fill.records += 1;
        if record.gci > self.max_gci {
            let mark = Mark { position: at, sequence: stamp.sequence, round: stamp.round };
            self.breakpoints.push_back(Breakpoint { mark, gci: record.gci });
            self.max_gci = record.gci;
        }
        self.head = Mark { position: end, sequence: stamp.sequence + 1, round: stamp.round };
        Ok(Lsn(end))
    }

    /// Starts a round with what is buffered (and the anchor, when space was released). With a
    /// round in flight nothing starts ([`Submit::Busy`]): call again once it completes.
    pub fn submit(&mut self) -> Result<Submit, RedoError> {
        self.usable()?;
        if let Some(flight) = &self.in_flight {
            return Ok(Submit::Busy(RoundId(flight.id)));
        }
        if self.fill.used == 0 && self.pending_release.is_none() {
            return Ok(Submit::Idle);
        }
        if let Some(last) = self.fill.last_record {
            record::set_round_end(&mut self.fill.bytes[last..]);
            self.head.round += 1;
        }
        let release = self.pending_release.take().map(|mark| {
            let counter = self.anchor_counter + 1;
            *self.fill.anchor = ring::encode_anchor(mark, counter);
            (mark, counter)
        });
        std::mem::swap(&mut self.fill, &mut self.flight);
        self.fill.reset();
        let id = self.next_round_id;
        self.next_round_id += 1;
        let flight = &self.flight;
        let anchor = release.map(|(_, counter)| counter);
        // SAFETY: `self.flight` is not touched again until this round's completion is reaped
        // (`finish`), and drop waits for the round in flight before the buffers go.
        match unsafe { start_round(&mut self.io, &self.files, self.geometry, flight, anchor) } {
            Ok(syncs) => {
                let (records, bytes) = (flight.records, flight.used as u64);
                self.in_flight =
                    Some(InFlight { id, end: self.head, release, records, bytes, syncs });
                Ok(Submit::Started(RoundId(id)))
            }
            Err(e) => {
                self.stopped = Some(id);
                Err(self.round_error(id, e))
            }
        }
    }

    fn round_error(&self, round: u64, e: RoundError) -> RedoError {
        let path = self.files.path(e.file_index).to_owned();
        RedoError::RoundFailed { round, path, action: e.action, source: e.source }
    }

    /// The round in flight's outcome, if it has completed (never blocks).
    pub fn poll_completions(&mut self) -> Option<Completion> {
        self.in_flight.as_ref()?;
        let result = self.io.poll()?;
        Some(self.finish(result))
    }

    /// Blocks until the round in flight completes; `None` when none is.
    pub fn wait(&mut self) -> Option<Completion> {
        self.in_flight.as_ref()?;
        let result = self.io.wait();
        Some(self.finish(result))
    }

    fn finish(&mut self, result: Result<(), RoundError>) -> Completion {
        let Some(flight) = self.in_flight.take() else {
            unreachable!("a completion is reaped only for the round in flight")
        };
        let round = RoundId(flight.id);
        if let Err(e) = result {
            self.stopped = Some(flight.id);
            if e.action == "wait" {
                // The kernel may still be reading the round's bytes: never free them.
                std::mem::forget(std::mem::replace(&mut self.flight, RoundBuffer::new(0)));
            }
            return Completion { round, result: Err(self.round_error(flight.id, e)) };
        }
        self.durable = flight.end;
        if let Some((mark, counter)) = flight.release {
            self.tail = mark;
            self.anchor_counter = counter;
            self.stats.anchor_writes += 1;
            while self.breakpoints.len() > 1 && self.breakpoints[1].mark.position <= mark.position {
                self.breakpoints.pop_front();
            }
        }
        self.stats.rounds += 1;
        self.stats.records += flight.records;
        self.stats.bytes_written += flight.bytes;
        self.stats.syncs += flight.syncs;
        Completion { round, result: Ok(Lsn(self.durable.position)) }
    }

    /// Submits and waits until everything appended (and any release) is durable.
    pub fn flush(&mut self) -> Result<Lsn, RedoError> {
        loop {
            if let Some(done) = self.wait() {
                done.result?;
                continue;
            }
            if self.submit()? == Submit::Idle {
                return Ok(self.durable_through());
            }
        }
    }

    /// Flushes and closes.
    pub fn close(mut self) -> Result<Lsn, RedoError> {
        self.flush()
    }

    /// Everything before this position is on disk.
    pub fn durable_through(&self) -> Lsn {
        Lsn(self.durable.position)
    }

    /// The position the next record goes to (everything appended is before it).
    pub fn appended_through(&self) -> Lsn {
        Lsn(self.head.position)
    }

    /// The oldest position kept (the anchor on disk).
    pub fn tail(&self) -> Lsn {
        Lsn(self.tail.position)
    }

    /// Bytes of the ring free for appends.
    pub fn free_bytes(&self) -> u64 {
        self.tail.position + self.geometry.ring_bytes() - self.head.position
    }

    /// Lets the space before `through` be reused: the new tail is written to the anchor in the
    /// next round and the space is free once that round is durable. `through` must be a
    /// position this log handed out, no later than [`RedoLog::durable_through`]; one at or
    /// before the tail changes nothing.
    pub fn release_through(&mut self, through: Lsn) -> Result<(), RedoError> {
        self.usable()?;
        if through.0 <= self.release_floor() {
            return Ok(());
        }
        if through.0 > self.durable.position {
            return Err(RedoError::ReleaseBeyondDurable {
                requested: through.0,
                durable: self.durable.position,
            });
        }
        let mark = if through.0 == self.durable.position {
            self.durable
        } else {
            self.mark_at(through.0)?
        };
        self.pending_release = Some(mark);
        Ok(())
    }

    /// Releases every record up to the first with a GCI above `gci` (or up to the durable
    /// position when there is none): what a checkpoint covering GCIs up to `gci` no longer
    /// needs. Returns the new tail (in force once the next round completes).
    pub fn release_through_gci(&mut self, gci: u64) -> Result<Lsn, RedoError> {
        self.usable()?;
        let mark = match self.breakpoints.iter().find(|b| b.gci > gci) {
            Some(b) if b.mark.position <= self.durable.position => b.mark,
            _ => self.durable,
        };
        if mark.position > self.release_floor() {
            self.pending_release = Some(mark);
        }
        Ok(Lsn(mark.position.max(self.release_floor())))
    }

    /// The furthest release already asked for.
    fn release_floor(&self) -> u64 {
        let in_flight = self.in_flight.as_ref().and_then(|f| f.release).map(|(m, _)| m.position);
        let pending = self.pending_release.map(|m| m.position);
        self.tail.position.max(in_flight.unwrap_or(0)).max(pending.unwrap_or(0))
    }

    /// The mark of the durable record at `position`, read from disk (releases are rare).
    fn mark_at(&self, position: u64) -> Result<Mark, RedoError> {
        let (file, offset) = self.geometry.locate(position);
        let remaining = self.geometry.remaining(position) as usize;
        let not_boundary = |reason: String| RedoError::NotABoundary { position, reason };
        if remaining < MIN_RECORD_BYTES {
            return Err(not_boundary(format!("only {remaining} bytes are left in its file")));
        }
        let mut header = [0u8; record::HEADER_BYTES];
        self.files.read_at(file, offset, &mut header)?;
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut bytes = vec![0u8; length.clamp(record::HEADER_BYTES, remaining)];
        self.files.read_at(file, offset, &mut bytes)?;
        match record::decode(&bytes) {
            Ok(d) if d.header.position == position => {
                Ok(Mark { position, sequence: d.header.sequence, round: d.header.round })
            }
            Ok(d) => {
                Err(not_boundary(format!("the record there is at position {}", d.header.position)))
            }
            Err(e) => Err(not_boundary(e.to_string())),
        }
    }

    /// The file and byte offset where `lsn` lies.
    pub fn locate(&self, lsn: Lsn) -> (&Path, u64) {
        let (file, offset) = self.geometry.locate(lsn.0);
        (self.files.path(file), offset)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.io {
            Io::Uring(_) => Backend::IoUring,
            Io::Blocking(_) => Backend::Blocking,
        }
    }

    /// Why the blocking backend is in use (off by setting, or why io_uring was refused).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The eventfd signalled when a round completes (io_uring only): watch it with
    /// `Context::watch_fd` and call [`RedoLog::poll_completions`] when it is readable.
    pub fn event_fd(&self) -> Option<RawFd> {
        self.io.event_fd()
    }

    /// Counts since open.
    pub fn stats(&self) -> RedoStats {
        self.stats
    }

    /// The largest record [`RedoLog::append`] takes, in bytes (header and checksum included).
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }
}

/// Builds the round's writes (records, then the anchor) and syncs (each file written) and
/// hands them to the backend; returns how many syncs it asked for.
///
/// # Safety
/// `flight` must stay alive and unchanged until the round's completion is reaped.
unsafe fn start_round(
    io: &mut Io,
    files: &LogFiles,
    geometry: Geometry,
    flight: &RoundBuffer,
    anchor_counter: Option<u64>,
) -> Result<u64, RoundError> {
    let empty = Write { file_index: 0, file: files.file(0), offset: 0, bytes: &[] };
    let mut writes = [empty; MAX_WRITES];
    let mut write_count = 0;
    for i in 0..flight.segment_count {
        let (file_index, offset) = geometry.locate(flight.segments[i].position);
        let bytes = flight.segment_bytes(i);
        writes[write_count] = Write { file_index, file: files.file(file_index), offset, bytes };
        write_count += 1;
    }
    if let Some(counter) = anchor_counter {
        let offset = ring::anchor_offset(counter);
        writes[write_count] =
            Write { file_index: 0, file: files.file(0), offset, bytes: &flight.anchor[..] };
        write_count += 1;
    }
    let mut syncs = [Sync { file_index: 0, file: files.file(0) }; MAX_SYNCS];
    let mut sync_count = 0;
    for w in &writes[..write_count] {
        if !syncs[..sync_count].iter().any(|s| s.file_index == w.file_index) {
            syncs[sync_count] = Sync { file_index: w.file_index, file: w.file };
            sync_count += 1;
        }
    }
    // SAFETY: the caller keeps `flight` (every write's bytes) unchanged until completion.
    unsafe { io.submit(&writes[..write_count], &syncs[..sync_count]) }?;
    Ok(sync_count as u64)
}

impl Drop for RedoLog {
    fn drop(&mut self) {
        // The kernel may still read the round in flight's buffer (io_uring): wait for it before
        // the buffer is freed. Appended but unsubmitted records are dropped, as at a crash.
        if self.in_flight.is_some() {
            let _ = self.io.wait();
        }
    }
}
