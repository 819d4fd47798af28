//! The redo log's conformance suite, run on both writer backends: io_uring (skipped, saying
//! why, where the kernel refuses it) and the pwrite + fdatasync fallback. Every test works in
//! its own directory under the system temp directory, removed at the end.
//!
//! Covered: round trip across file boundaries and laps of the ring; a full log refusing, then
//! accepting after a release, with nothing lost; torn ends (cut mid-record, a flipped byte,
//! zeros, a hole in the last round) cut back and reported with file and offset; corruption
//! before the end refused naming file and offset; reopening after a clean close and after a
//! drop without close; release by GCI; the completion eventfd; refusal of another node's log.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use engine::redo::{
    Backend, Change, Identity, IoUringMode, Lsn, Record, Recovered, RecoveredRecord, RedoError,
    RedoLog, RedoSettings, Submit,
};

const IDENTITY: Identity = Identity { cluster_id: 77, node_id: 3, instance: 1 };

/// A directory under the temp directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "blockwire-redo-{name}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Uring,
    Blocking,
}

/// Three 16 KiB files (12 KiB of records each): a lap is a few hundred records.
fn settings(mode: Mode) -> RedoSettings {
    RedoSettings {
        files: 3,
        file_bytes: 16 << 10,
        buffer_bytes: 4 << 10,
        io_uring: match mode {
            Mode::Uring => IoUringMode::Auto,
            Mode::Blocking => IoUringMode::Off,
        },
    }
}

/// Opens the log; `None` (with the reason printed) when the io_uring run cannot get io_uring.
fn open(dir: &Path, mode: Mode) -> Option<(RedoLog, Recovered)> {
    let (log, recovered) = RedoLog::open(dir, &settings(mode), IDENTITY).expect("open the log");
    match (mode, log.backend()) {
        (Mode::Uring, Backend::IoUring) | (Mode::Blocking, Backend::Blocking) => {
            Some((log, recovered))
        }
        (Mode::Uring, Backend::Blocking) => {
            eprintln!(
                "skipped: no io_uring here ({})",
                log.fallback_reason().unwrap_or("no reason given")
            );
            None
        }
        (Mode::Blocking, Backend::IoUring) => panic!("io_uring in use although the setting is off"),
    }
}

/// The deterministic content of record `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Op {
    gci: u64,
    transaction: u64,
    table: u32,
    partition: u32,
    key: Vec<u8>,
    image: Option<Vec<u8>>,
}

fn op(i: u64) -> Op {
    Op {
        gci: 1 + i / 10,
        transaction: 1000 + i / 3,
        table: (i % 4) as u32,
        partition: (i % 7) as u32,
        key: format!("key-{i}").into_bytes(),
        image: (i % 5 != 4)
            .then(|| (0..(i * 37 % 300) as usize).map(|b| (b as u64 ^ i) as u8).collect()),
    }
}

fn append(log: &mut RedoLog, o: &Op) -> Result<Lsn, RedoError> {
    let change = match &o.image {
        Some(image) => Change::Write(image),
        None => Change::Delete,
    };
    let record = Record {
        gci: o.gci,
        transaction: o.transaction,
        table: o.table,
        table_version: 1,
        partition: o.partition,
        key: &o.key,
        change,
    };
    log.append(&record)
}

fn as_op(r: &RecoveredRecord) -> Op {
    assert_eq!(r.table_version, 1);
    Op {
        gci: r.gci,
        transaction: r.transaction,
        table: r.table,
        partition: r.partition,
        key: r.key.clone(),
        image: r.image.clone(),
    }
}

/// Appends records `from..to` as rounds of `per_round`, each flushed; returns each one's end.
fn write_rounds(log: &mut RedoLog, from: u64, to: u64, per_round: u64) -> Vec<Lsn> {
    let mut ends = Vec::new();
    for i in from..to {
        ends.push(append(log, &op(i)).expect("append"));
        if (i + 1 - from) % per_round == 0 {
            log.flush().expect("flush");
        }
    }
    log.flush().expect("flush");
    ends
}

fn assert_ops(recovered: &[RecoveredRecord], expected: impl IntoIterator<Item = u64>) {
    let got: Vec<Op> = recovered.iter().map(as_op).collect();
    let want: Vec<Op> = expected.into_iter().map(op).collect();
    assert_eq!(got.len(), want.len(), "record count");
    for (n, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "record {n} differs");
    }
    for pair in recovered.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence + 1 + u64::from(pair[1].lsn != pair[0].end),
            "sequence"
        );
    }
}

/// Changes the bytes at `offset` of `path`.
fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).expect("open a log file");
    file.write_all_at(bytes, offset).expect("write into a log file");
}

fn round_trip_across_files_and_laps(mode: Mode) {
    let dir = TempDir::new("laps");
    let Some((mut log, recovered)) = open(&dir.0, mode) else { return };
    assert!(recovered.created && recovered.records.is_empty() && recovered.truncation.is_none());
    let ring = 3 * (16 << 10) - 3 * 4096;
    let mut next = 0;
    let mut kept_from = 0;
    let mut ends: Vec<Lsn> = Vec::new();
    // Three laps, releasing the older half whenever the ring runs low; reopen once per lap.
    while log.appended_through().get() < 3 * ring {
        let o = op(next);
        match append(&mut log, &o) {
            Ok(end) => {
                ends.push(end);
                next += 1;
                if next % 7 == 0 {
                    log.flush().expect("flush");
                }
            }
            Err(RedoError::LogFull { .. }) => {
                log.flush().expect("flush");
                kept_from = (kept_from + next) / 2;
                log.release_through(ends[kept_from as usize - 1]).expect("release");
                log.flush().expect("the anchor round");
                continue;
            }
            Err(e) => panic!("append {next}: {e}"),
        }
        if next % 150 == 0 {
            log.close().expect("close");
            let (again, recovered) = open(&dir.0, mode).expect("the same backend again");
            assert!(recovered.truncation.is_none(), "{:?}", recovered.truncation);
            assert_ops(&recovered.records, kept_from..next);
            log = again;
        }
    }
    assert!(log.stats().syncs >= log.stats().rounds && log.stats().bytes_written > 0);
    log.close().expect("close");
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(recovered.head.get() > 2 * ring, "went round the ring more than twice");
    assert_ops(&recovered.records, kept_from..next);
}

fn full_log_refuses_then_accepts_after_release(mode: Mode) {
    let dir = TempDir::new("full");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    let mut ends = Vec::new();
    let mut next = 0;
    let refused = loop {
        match append(&mut log, &op(next)) {
            Ok(end) => {
                ends.push(end);
                next += 1;
            }
            Err(RedoError::BufferFull { .. }) => {
                log.flush().expect("flush");
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(refused, RedoError::LogFull { .. }), "{refused}");
    log.flush().expect("flush");
    assert!(matches!(append(&mut log, &op(next)), Err(RedoError::LogFull { .. })), "still full");
    let half = next / 2;
    log.release_through(ends[half as usize - 1]).expect("release");
    assert!(
        matches!(append(&mut log, &op(next)), Err(RedoError::LogFull { .. })),
        "full until the anchor is durable"
    );
    log.flush().expect("the anchor round");
    assert_eq!(log.tail(), ends[half as usize - 1]);
    let before = next;
    loop {
        match append(&mut log, &op(next)) {
            Ok(_) => next += 1,
            Err(RedoError::LogFull { .. }) => break,
            Err(e) => panic!("append {next}: {e}"),
        }
        if next % 5 == 0 {
            log.flush().expect("flush");
        }
    }
    assert!(next > before, "appends resumed after the release");
    assert!(log.stats().log_full >= 3);
    log.close().expect("close");
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(recovered.truncation.is_none());
    assert_ops(&recovered.records, half..next);
}

/// Writes two rounds (5 then 3 records) and closes; returns the last record's (file, offset,
/// length) and everything's ends.
fn two_rounds(dir: &Path, mode: Mode) -> Option<(PathBuf, u64, u64)> {
    let (mut log, _) = open(dir, mode)?;
    let ends = write_rounds(&mut log, 0, 5, 5);
    let more = write_rounds(&mut log, 5, 8, 3);
    let last_start = more[1];
    let (path, offset) = log.locate(last_start);
    let length = more[2].get() - last_start.get();
    let path = path.to_owned();
    assert_eq!(ends.len(), 5);
    log.close().expect("close");
    Some((path, offset, length))
}

fn reopen_expecting_cut(dir: &Path, mode: Mode, path: &Path, offset: u64) -> RedoLog {
    let (log, recovered) = open(dir, mode).expect("reopen");
    let cut = recovered.truncation.expect("the torn end is reported");
    assert_eq!((cut.path.as_path(), cut.offset), (path, offset), "{cut}");
    assert_ops(&recovered.records, 0..7);
    log
}

fn torn_tail_mid_record(mode: Mode) {
    let dir = TempDir::new("torn");
    let Some((path, offset, length)) = two_rounds(&dir.0, mode) else { return };
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(offset + length / 2).expect("cut the file mid-record");
    drop(file);
    let mut log = reopen_expecting_cut(&dir.0, mode, &path, offset);
    // Writing goes on from the cut, and the file has its full size again.
    write_rounds(&mut log, 100, 104, 4);
    log.close().expect("close");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 16 << 10);
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(recovered.truncation.is_none());
    assert_ops(&recovered.records, (0..7).chain(100..104));
}

fn flipped_byte_in_last_record(mode: Mode) {
    let dir = TempDir::new("flip");
    let Some((path, offset, _)) = two_rounds(&dir.0, mode) else { return };
    let mut byte = [0u8];
    let file = OpenOptions::new().read(true).open(&path).expect("open");
    file.read_exact_at(&mut byte, offset + 75).expect("read");
    poke(&path, offset + 75, &[byte[0] ^ 0x04]);
    reopen_expecting_cut(&dir.0, mode, &path, offset);
}

fn zeroed_tail(mode: Mode) {
    let dir = TempDir::new("zeros");
    let Some((path, offset, length)) = two_rounds(&dir.0, mode) else { return };
    poke(&path, offset, &vec![0u8; length as usize]);
    reopen_expecting_cut(&dir.0, mode, &path, offset);
    // A last round of one record, wholly zeros, is indistinguishable from one never written:
    // a clean end, nothing reported.
    let dir = TempDir::new("zeros-single");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    write_rounds(&mut log, 0, 4, 4);
    let start = log.durable_through();
    let end = write_rounds(&mut log, 4, 5, 1)[0];
    let (path, offset) = log.locate(start);
    let path = path.to_owned();
    log.close().expect("close");
    poke(&path, offset, &vec![0u8; (end.get() - start.get()) as usize]);
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(recovered.truncation.is_none(), "{:?}", recovered.truncation);
    assert_ops(&recovered.records, 0..4);
}

fn hole_in_last_round_is_cut_and_erased(mode: Mode) {
    let dir = TempDir::new("hole");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    write_rounds(&mut log, 0, 4, 4);
    let start = log.durable_through();
    write_rounds(&mut log, 4, 10, 6);
    let (path, offset) = log.locate(start);
    let path = path.to_owned();
    log.close().expect("close");
    // The last round's first record is lost; the five after it reached the disk.
    poke(&path, offset + 80, &[0xee; 8]);
    let (mut log, recovered) = open(&dir.0, mode).expect("a torn last round is not corruption");
    let cut = recovered.truncation.expect("reported");
    assert_eq!(
        (cut.path.as_path(), cut.offset, cut.dropped_records),
        (path.as_path(), offset, 5),
        "{cut}"
    );
    assert_ops(&recovered.records, 0..4);
    // One short record where the lost round was: the dropped ones must not come back after it.
    write_rounds(&mut log, 50, 51, 1);
    drop(log);
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(recovered.truncation.is_none(), "{:?}", recovered.truncation);
    assert_ops(&recovered.records, (0..4).chain(50..51));
}

fn corrupt_middle_record_is_refused(mode: Mode) {
    let dir = TempDir::new("middle");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    let first = write_rounds(&mut log, 0, 6, 3);
    write_rounds(&mut log, 6, 12, 3);
    let (path, offset) = log.locate(first[3]);
    let path = path.to_owned();
    log.close().expect("close");
    // Record 4 is the middle of the second of four rounds: its sequence field changes.
    poke(&path, offset + 20, &[0x5a, 0xa5]);
    let error = RedoLog::open(&dir.0, &settings(mode), IDENTITY)
        .map(|_| ())
        .expect_err("corruption before the end");
    match &error {
        RedoError::Corrupt { path: p, offset: o, .. } => {
            assert_eq!((p.as_path(), *o), (path.as_path(), offset))
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains(&offset.to_string()),
        "{message}"
    );
}

fn reopen_after_clean_close(mode: Mode) {
    let dir = TempDir::new("clean");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    write_rounds(&mut log, 0, 20, 6);
    log.close().expect("close");
    let (mut log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(!recovered.created && recovered.truncation.is_none());
    assert_ops(&recovered.records, 0..20);
    write_rounds(&mut log, 20, 30, 4);
    log.close().expect("close");
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert_ops(&recovered.records, 0..30);
}

fn drop_without_close_keeps_what_was_submitted(mode: Mode) {
    let dir = TempDir::new("crash");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    write_rounds(&mut log, 0, 10, 5);
    for i in 10..14 {
        append(&mut log, &op(i)).expect("append");
    }
    assert!(matches!(log.submit().expect("submit"), Submit::Started(_)));
    for i in 14..18 {
        append(&mut log, &op(i)).expect("append");
    }
    // The process "dies": the round in flight finishes (the kernel owns it), the buffered
    // records 14..18 were never submitted.
    drop(log);
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert!(recovered.truncation.is_none());
    assert_ops(&recovered.records, 0..14);
}

fn release_by_gci(mode: Mode) {
    let dir = TempDir::new("gci");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    write_rounds(&mut log, 0, 60, 8);
    // Records 0..30 carry GCIs 1..=3; releasing through GCI 3 frees exactly them.
    let tail = log.release_through_gci(3).expect("release");
    log.flush().expect("the anchor round");
    assert_eq!(log.tail(), tail);
    log.close().expect("close");
    let (mut log, recovered) = open(&dir.0, mode).expect("reopen");
    assert_ops(&recovered.records, 30..60);
    assert_eq!(recovered.tail, tail);
    // Past everything durable: up to the durable end.
    let all = log.release_through_gci(u64::MAX).expect("release all");
    assert_eq!(all, log.durable_through());
    assert!(matches!(
        log.release_through(Lsn(log.durable_through().get() + 8)),
        Err(RedoError::ReleaseBeyondDurable { .. })
    ));
}

fn release_checks_the_boundary(mode: Mode) {
    let dir = TempDir::new("boundary");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    let ends = write_rounds(&mut log, 0, 10, 10);
    let error = log.release_through(Lsn(ends[2].get() + 8)).expect_err("inside a record");
    assert!(matches!(error, RedoError::NotABoundary { .. }), "{error}");
    log.release_through(ends[2]).expect("a record's end");
    log.flush().expect("flush");
    assert_eq!(log.tail(), ends[2]);
}

fn completions_arrive_on_the_eventfd(mode: Mode) {
    let dir = TempDir::new("eventfd");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    append(&mut log, &op(1)).expect("append");
    let Submit::Started(round) = log.submit().expect("submit") else { panic!("a round starts") };
    assert!(matches!(log.submit().expect("submit"), Submit::Busy(r) if r == round));
    match (mode, log.event_fd()) {
        (Mode::Uring, Some(fd)) => {
            let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, its count passed along.
            let ready = unsafe { libc::poll(&mut pollfd, 1, 10_000) };
            assert_eq!(ready, 1, "the eventfd becomes readable when the round completes");
            let mut done = None;
            while done.is_none() {
                done = log.poll_completions();
            }
            let done = done.expect("completion");
            assert_eq!(done.round, round);
            assert_eq!(done.result.expect("round ok"), log.durable_through());
        }
        (Mode::Blocking, None) => {
            let done = log.poll_completions().expect("the blocking backend completes at once");
            assert_eq!(done.round, round);
            assert!(done.result.is_ok());
        }
        (mode, fd) => panic!("{mode:?} with eventfd {fd:?}"),
    }
    assert!(log.poll_completions().is_none());
    assert_eq!(log.submit().expect("submit"), Submit::Idle);
}

fn another_nodes_log_is_refused(mode: Mode) {
    let dir = TempDir::new("owner");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    write_rounds(&mut log, 0, 3, 3);
    log.close().expect("close");
    for (other, field) in [
        (Identity { node_id: 4, ..IDENTITY }, "node id"),
        (Identity { cluster_id: 78, ..IDENTITY }, "cluster id"),
    ] {
        let error =
            RedoLog::open(&dir.0, &settings(mode), other).map(|_| ()).expect_err("another owner");
        assert!(matches!(&error, RedoError::WrongOwner { field: f, .. } if *f == field), "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
    let bigger = RedoSettings { files: 4, ..settings(mode) };
    let error = RedoLog::open(&dir.0, &bigger, IDENTITY).map(|_| ()).expect_err("other settings");
    assert!(matches!(error, RedoError::GeometryMismatch { field: "files", .. }), "{error}");
    // Another instance's log is other files: a new log beside the first.
    let (_log, recovered) =
        RedoLog::open(&dir.0, &settings(mode), Identity { instance: 2, ..IDENTITY })
            .expect("instance 2");
    assert!(recovered.created);
}

fn oversized_record_is_refused(mode: Mode) {
    let dir = TempDir::new("oversized");
    let Some((mut log, _)) = open(&dir.0, mode) else { return };
    let max = log.max_record_bytes();
    let image = vec![7u8; max];
    let record = Record {
        gci: 1,
        transaction: 1,
        table: 1,
        table_version: 1,
        partition: 0,
        key: b"k",
        change: Change::Write(&image),
    };
    let error = log.append(&record).expect_err("larger than a round");
    assert!(
        matches!(error, RedoError::RecordTooLarge { image_bytes, .. } if image_bytes == max),
        "{error}"
    );
    // The largest that fits goes through, even into the next file.
    let fits = max - 72 - 1 - 4;
    let record = Record { change: Change::Write(&image[..fits]), ..record };
    for _ in 0..4 {
        log.append(&record).expect("the largest record");
        log.flush().expect("flush");
    }
    log.close().expect("close");
    let (_log, recovered) = open(&dir.0, mode).expect("reopen");
    assert_eq!(recovered.records.len(), 4);
    assert!(recovered.records.iter().all(|r| r.image.as_deref() == Some(&image[..fits])));
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() { super::$name(super::Mode::Uring) } )*
        }
        mod blocking {
            $( #[test] fn $name() { super::$name(super::Mode::Blocking) } )*
        }
    };
}

on_both_backends!(
    round_trip_across_files_and_laps,
    full_log_refuses_then_accepts_after_release,
    torn_tail_mid_record,
    flipped_byte_in_last_record,
    zeroed_tail,
    hole_in_last_round_is_cut_and_erased,
    corrupt_middle_record_is_refused,
    reopen_after_clean_close,
    drop_without_close_keeps_what_was_submitted,
    release_by_gci,
    release_checks_the_boundary,
    completions_arrive_on_the_eventfd,
    another_nodes_log_is_refused,
    oversized_record_is_refused,
);

#[test]
fn a_bad_setting_is_refused_by_name() {
    let dir = TempDir::new("setting");
    let bad = RedoSettings { file_bytes: 5000, ..settings(Mode::Blocking) };
    let error = RedoLog::open(&dir.0, &bad, IDENTITY).map(|_| ()).expect_err("bad setting");
    assert!(matches!(error, RedoError::Setting { key: "file_bytes", .. }), "{error}");
    assert!(std::fs::read_dir(&dir.0).expect("list").next().is_none(), "nothing created");
}

/// A round in which a record ends exactly at a file's end: the next record goes to the next
/// file's start and the round's bytes are written as two pieces, never past the first file's
/// end (the positions run on across the boundary; the files do not).
#[test]
fn a_record_ending_exactly_at_a_files_end_does_not_spill_past_it() {
    for mode in [Mode::Blocking, Mode::Uring] {
        let dir = TempDir::new("exact-end");
        let Some((mut log, _)) = open(&dir.0, mode) else { continue };
        let data = settings(mode).data_bytes();
        let key = [7u8; 8];
        let image = [9u8; 12];
        let bytes = engine::redo::record::encoded_bytes(key.len(), image.len()).expect("fits") as u64;
        assert_eq!(data % bytes, 0, "the record size must divide a file's data area for this test");
        let count = data / bytes + data / bytes / 2;
        for i in 0..count {
            let record = Record {
                gci: 1 + i,
                transaction: i,
                table: 1,
                table_version: 1,
                partition: 0,
                key: &key,
                change: Change::Write(&image),
            };
            log.append(&record).expect("append");
            if i % 40 == 39 {
                log.flush().expect("flush");
            }
        }
        log.flush().expect("flush");
        drop(log);
        for entry in std::fs::read_dir(&dir.0).expect("list") {
            let entry = entry.expect("entry");
            let len = entry.metadata().expect("metadata").len();
            assert_eq!(len, settings(mode).file_bytes, "{mode:?}: {} grew past its size", entry.path().display());
        }
        let (_, recovered) = open(&dir.0, mode).expect("reopen");
        assert_eq!(recovered.records.len() as u64, count, "{mode:?}: records read back");
        assert!(recovered.records.iter().enumerate().all(|(i, r)| r.gci == 1 + i as u64));
    }
}
