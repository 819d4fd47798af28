//! Tests of local checkpoint files against real files: round trips (empty, small, large and
//! largest rows, across many buffer flushes), listing order and what listing ignores, refusal
//! of another cluster's, node's or instance's file naming the field, corruption named by file
//! and offset, truncated and oversized files, every flipped byte and every cut length found,
//! removal of older checkpoints, and installation only at finish. Each test works in its own
//! directory under the system temp directory, removed at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{CRC_BYTES, HEADER_BYTES, MAX_FIELD_BYTES, ROW_HEADER_BYTES, TRAILER_BYTES};
use super::writer::BUFFER_BYTES;
use super::*;

const IDENTITY: Identity = Identity { cluster_id: 77, node_id: 3, instance: 1 };

/// A directory under the temp directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "blockwire-lcp-{name}-{}-{}-{}",
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

/// One row as written and read: table, version, partition, key, image.
type Row = (u32, u32, u32, Vec<u8>, Vec<u8>);

fn start(seq: u64) -> LcpStart {
    LcpStart { seq, start_position: 1000 + seq, start_gci: 50 + seq, saved_gci: 49 + seq }
}

/// Bytes of `n` that differ from row to row.
fn bytes(n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) ^ salt.wrapping_mul(7)) as u8).collect()
}

fn write(dir: &Path, identity: Identity, seq: u64, rows: &[Row]) -> LcpInfo {
    let mut writer = LcpWriter::create(dir, identity, start(seq)).expect("create");
    for (table, version, partition, key, image) in rows {
        writer.add_row(*table, *version, *partition, key, image).expect("add a row");
    }
    writer.finish(90 + seq).expect("finish")
}

fn read_all(info: &LcpInfo, identity: Identity) -> Result<Vec<Row>, LcpError> {
    let mut rows = Vec::new();
    let count = read(info, identity, |table, version, partition, key, image| {
        rows.push((table, version, partition, key.to_vec(), image.to_vec()));
        Ok(())
    })?;
    assert_eq!(count, rows.len() as u64);
    Ok(rows)
}

fn seqs(infos: &[LcpInfo]) -> Vec<u64> {
    infos.iter().map(|i| i.start.seq).collect()
}

fn row_bytes(row: &Row) -> u64 {
    (ROW_HEADER_BYTES + row.3.len() + row.4.len() + CRC_BYTES) as u64
}

/// A few small rows of different shapes, for the corruption tests.
fn small_rows() -> Vec<Row> {
    vec![
        (1, 1, 0, Vec::new(), Vec::new()),
        (1, 1, 1, bytes(4, 1), Vec::new()),
        (2, 3, 7, bytes(8, 2), bytes(40, 2)),
        (2, 3, 8, bytes(1, 3), bytes(100, 3)),
        (5, 1, 2, bytes(16, 4), bytes(1, 4)),
    ]
}

#[test]
fn rows_round_trip_empty_small_large_and_largest() {
    let dir = TempDir::new("round-trip");
    let mut rows: Vec<Row> = vec![
        (1, 1, 0, Vec::new(), Vec::new()),
        (1, 1, 0, bytes(8, 1), Vec::new()),
        (1, 2, 3, bytes(8, 2), bytes(3 * BUFFER_BYTES, 2)),
    ];
    // Enough small rows for several buffer flushes, around the large ones.
    rows.extend((0..6000).map(|i| (7, 1, (i % 4) as u32, bytes(12, i), bytes(i % 400, i))));
    rows.push((9, 4, 1, bytes(MAX_FIELD_BYTES, 9), bytes(MAX_FIELD_BYTES, 10)));
    rows.push((9, 4, 2, bytes(3, 11), bytes(5, 11)));

    let mut writer = LcpWriter::create(&dir.0, IDENTITY, start(1)).expect("create");
    assert_eq!(writer.bytes_written(), HEADER_BYTES as u64, "the header is written at create");
    let mut last = writer.bytes_written();
    for (table, version, partition, key, image) in &rows {
        writer.add_row(*table, *version, *partition, key, image).expect("add");
        assert!(writer.bytes_written() >= last);
        last = writer.bytes_written();
    }
    let too_large = writer.add_row(1, 1, 1, b"k", &bytes(MAX_FIELD_BYTES + 1, 0));
    assert!(
        matches!(too_large, Err(LcpError::RowTooLarge { image_bytes, .. }) if image_bytes == MAX_FIELD_BYTES + 1)
    );
    let expected_bytes =
        HEADER_BYTES as u64 + rows.iter().map(row_bytes).sum::<u64>() + TRAILER_BYTES as u64;
    assert!(writer.bytes_written() < expected_bytes, "the last rows are still buffered");
    let info = writer.finish(123).expect("finish");

    assert_eq!((info.rows, info.max_gci, info.start), (rows.len() as u64, 123, start(1)));
    assert_eq!(info.bytes, expected_bytes);
    assert_eq!(std::fs::metadata(&info.path).expect("stat").len(), expected_bytes);
    assert_eq!(info.path, dir.0.join("lcp-1-1.dat"));
    assert_eq!(list(&dir.0, IDENTITY).expect("list"), vec![info.clone()]);
    let back = read_all(&info, IDENTITY).expect("read");
    assert_eq!(back.len(), rows.len());
    assert!(back == rows, "rows read back differ from the rows written");
}

#[test]
fn an_empty_checkpoint_has_no_rows() {
    let dir = TempDir::new("empty");
    let info = write(&dir.0, IDENTITY, 4, &[]);
    assert_eq!((info.rows, info.bytes), (0, (HEADER_BYTES + TRAILER_BYTES) as u64));
    assert_eq!(read_all(&info, IDENTITY).expect("read"), Vec::<Row>::new());
}

#[test]
fn list_is_newest_first_and_ignores_tmp_and_other_files() {
    let dir = TempDir::new("list");
    assert!(list(&dir.0.join("missing"), IDENTITY).expect("missing dir").is_empty());
    for seq in [3, 1, 12, 2] {
        write(&dir.0, IDENTITY, seq, &small_rows());
    }
    let other_instance = Identity { instance: 2, ..IDENTITY };
    write(&dir.0, other_instance, 40, &small_rows());
    let open = LcpWriter::create(&dir.0, IDENTITY, start(13)).expect("create");
    for name in ["lcp-1-07.dat", "lcp-1-+8.dat", "lcp-1-9.dat.bak", "notes.txt", "lcp-1-x.tmp"] {
        std::fs::write(dir.0.join(name), b"not a checkpoint").expect("write a stray file");
    }
    std::fs::write(dir.0.join(tmp_name(1, 20)), b"torn").expect("write a stale tmp");

    let infos = list(&dir.0, IDENTITY).expect("list");
    assert_eq!(seqs(&infos), vec![12, 3, 2, 1]);
    assert!(infos.iter().all(|i| i.rows == small_rows().len() as u64));
    assert_eq!(seqs(&list(&dir.0, other_instance).expect("list")), vec![40]);

    drop(open);
    assert_eq!(remove_tmp(&dir.0, IDENTITY).expect("remove tmp"), 1, "only the stale tmp is left");
    assert!(!dir.0.join(tmp_name(1, 20)).exists());
    assert!(dir.0.join("lcp-1-x.tmp").exists(), "names not of the canonical form are left alone");
}

#[test]
fn another_owners_file_is_refused_naming_the_field() {
    let dir = TempDir::new("owner");
    let info = write(&dir.0, IDENTITY, 5, &small_rows());
    for (identity, field, found, expected) in [
        (Identity { cluster_id: 78, ..IDENTITY }, "cluster id", 77, 78),
        (Identity { node_id: 4, ..IDENTITY }, "node id", 3, 4),
    ] {
        let e = list(&dir.0, identity).expect_err("another node's checkpoint");
        assert!(
            matches!(&e, LcpError::WrongOwner { path, field: f, found: fo, expected: ex }
                if *path == info.path && *f == field && *fo == found && *ex == expected),
            "{e}"
        );
        assert!(e.to_string().contains(field) && e.to_string().contains("lcp-1-5.dat"));
        assert!(matches!(
            read(&info, identity, |_, _, _, _, _| Ok(())),
            Err(LcpError::WrongOwner { .. })
        ));
    }
    // Instance 1's file under instance 2's name.
    let renamed = dir.0.join(file_name(2, 5));
    std::fs::rename(&info.path, &renamed).expect("rename");
    let e = list(&dir.0, Identity { instance: 2, ..IDENTITY }).expect_err("another instance's");
    assert!(
        matches!(&e, LcpError::WrongOwner { path, field: "instance", found: 1, expected: 2 } if *path == renamed),
        "{e}"
    );
    // Checkpoint 5 under checkpoint 6's name.
    let wrong_seq = dir.0.join(file_name(1, 6));
    std::fs::rename(&renamed, &wrong_seq).expect("rename");
    let e = list(&dir.0, IDENTITY).expect_err("name and header differ");
    assert!(
        matches!(&e, LcpError::BadFile { path, reason } if *path == wrong_seq && reason.contains("name")),
        "{e}"
    );
}

#[test]
fn a_corrupt_row_is_named_by_file_and_offset() {
    let dir = TempDir::new("corrupt-row");
    let rows = small_rows();
    let info = write(&dir.0, IDENTITY, 2, &rows);
    let mut file = std::fs::read(&info.path).expect("read the file");
    // A byte in the image of the third row.
    let third = HEADER_BYTES as u64 + row_bytes(&rows[0]) + row_bytes(&rows[1]);
    file[third as usize + ROW_HEADER_BYTES + 8 + 5] ^= 0x04;
    std::fs::write(&info.path, &file).expect("write the file back");

    assert_eq!(list(&dir.0, IDENTITY).expect("header and trailer are intact"), vec![info.clone()]);
    let mut delivered = 0;
    let e = read(&info, IDENTITY, |_, _, _, _, _| {
        delivered += 1;
        Ok(())
    })
    .expect_err("a corrupt row");
    assert!(
        matches!(&e, LcpError::Corrupt { path, offset, reason }
            if *path == info.path && *offset == third && reason.contains("checksum")),
        "{e}"
    );
    assert_eq!(delivered, 2, "the rows before the corrupt one were handed on, no more");
    assert!(e.to_string().contains(&format!("offset {third}")));
}

#[test]
fn lengths_past_the_limit_or_the_file_are_refused_before_allocating() {
    let dir = TempDir::new("lengths");
    let rows = small_rows();
    let info = write(&dir.0, IDENTITY, 2, &rows);
    let clean = std::fs::read(&info.path).expect("read the file");
    let second = HEADER_BYTES + row_bytes(&rows[0]) as usize;
    let image_bytes_field = second + 20;
    for (value, expect) in [(u32::MAX, "limit"), (1 << 20, "runs past the trailer")] {
        let mut file = clean.clone();
        file[image_bytes_field..image_bytes_field + 4].copy_from_slice(&value.to_le_bytes());
        std::fs::write(&info.path, &file).expect("write the file back");
        let e = read_all(&info, IDENTITY).expect_err("a bad length");
        assert!(
            matches!(&e, LcpError::Corrupt { offset, reason, .. }
                if *offset == second as u64 && reason.contains(expect)),
            "{e}"
        );
    }
}

#[test]
fn a_truncated_file_is_refused_naming_it() {
    let dir = TempDir::new("truncated");
    let info = write(&dir.0, IDENTITY, 3, &small_rows());
    let clean = std::fs::read(&info.path).expect("read the file");
    for cut in [0, 10, HEADER_BYTES, HEADER_BYTES + TRAILER_BYTES, clean.len() / 2, clean.len() - 1]
    {
        std::fs::write(&info.path, &clean[..cut]).expect("write a cut file");
        let e = list(&dir.0, IDENTITY).expect_err("a truncated file");
        assert!(
            matches!(&e, LcpError::BadFile { path, .. } if *path == info.path),
            "cut {cut}: {e}"
        );
        assert!(e.to_string().contains("lcp-1-3.dat"));
    }
}

/// `Ok` with every row, or the first error of listing or reading the only checkpoint in `dir`.
fn list_and_read(dir: &Path) -> Result<Vec<Row>, LcpError> {
    let infos = list(dir, IDENTITY)?;
    assert_eq!(infos.len(), 1, "one file, listed or refused");
    read_all(&infos[0], IDENTITY)
}

#[test]
fn every_flipped_byte_and_every_cut_is_an_error_never_a_panic_or_fewer_rows() {
    let dir = TempDir::new("fuzz");
    let rows = small_rows();
    let info = write(&dir.0, IDENTITY, 8, &rows);
    let clean = std::fs::read(&info.path).expect("read the file");
    assert_eq!(list_and_read(&dir.0).expect("the clean file"), rows);
    for at in 0..clean.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut file = clean.clone();
            file[at] ^= mask;
            std::fs::write(&info.path, &file).expect("write a flipped file");
            let result = list_and_read(&dir.0);
            assert!(result.is_err(), "byte {at} ^ {mask:#04x} went unnoticed: {result:?}");
        }
    }
    for cut in 0..clean.len() {
        std::fs::write(&info.path, &clean[..cut]).expect("write a cut file");
        assert!(list_and_read(&dir.0).is_err(), "cut at {cut} went unnoticed");
    }
    let mut longer = clean.clone();
    longer.push(0);
    std::fs::write(&info.path, &longer).expect("write a longer file");
    assert!(list_and_read(&dir.0).is_err(), "a byte after the trailer went unnoticed");
}

#[test]
fn remove_older_keeps_the_given_checkpoint_and_newer() {
    let dir = TempDir::new("remove");
    for seq in 1..=4 {
        write(&dir.0, IDENTITY, seq, &small_rows());
    }
    let other_instance = Identity { instance: 2, ..IDENTITY };
    write(&dir.0, other_instance, 1, &small_rows());

    let e = remove_older(&dir.0, IDENTITY, 9).expect_err("checkpoint 9 is not installed");
    assert!(matches!(e, LcpError::NotInstalled { seq: 9, .. }), "{e}");
    assert_eq!(seqs(&list(&dir.0, IDENTITY).expect("list")), vec![4, 3, 2, 1], "nothing removed");

    remove_older(&dir.0, IDENTITY, 3).expect("remove older than 3");
    assert_eq!(seqs(&list(&dir.0, IDENTITY).expect("list")), vec![4, 3]);
    assert_eq!(
        seqs(&list(&dir.0, other_instance).expect("list")),
        vec![1],
        "other instance untouched"
    );
    remove_older(&dir.0, IDENTITY, 3).expect("nothing left to remove");
    assert_eq!(seqs(&list(&dir.0, IDENTITY).expect("list")), vec![4, 3]);
}

#[test]
fn finish_installs_atomically() {
    let dir = TempDir::new("atomic");
    let mut writer = LcpWriter::create(&dir.0, IDENTITY, start(6)).expect("create");
    for (table, version, partition, key, image) in small_rows() {
        writer.add_row(table, version, partition, &key, &image).expect("add");
    }
    let (tmp, dat) = (dir.0.join("lcp-1-6.tmp"), dir.0.join("lcp-1-6.dat"));
    assert!(tmp.exists() && !dat.exists(), "before finish only the tmp exists");
    assert!(list(&dir.0, IDENTITY).expect("list").is_empty());
    assert!(matches!(remove_older(&dir.0, IDENTITY, 6), Err(LcpError::NotInstalled { .. })));

    let info = writer.finish(7).expect("finish");
    assert!(!tmp.exists() && dat.exists(), "after finish only the installed file exists");
    assert_eq!(list(&dir.0, IDENTITY).expect("list"), vec![info]);
    let again = LcpWriter::create(&dir.0, IDENTITY, start(6)).expect_err("seq 6 is installed");
    assert!(matches!(&again, LcpError::Exists { path } if *path == dat), "{again}");
}

#[test]
fn abandoned_and_dropped_writers_remove_their_tmp() {
    let dir = TempDir::new("abandon");
    let mut writer = LcpWriter::create(&dir.0, IDENTITY, start(1)).expect("create");
    writer.add_row(1, 1, 1, b"key", b"image").expect("add");
    let tmp = dir.0.join(tmp_name(1, 1));
    assert!(tmp.exists());
    writer.abandon();
    assert!(!tmp.exists(), "abandon removes the tmp");

    let writer = LcpWriter::create(&dir.0, IDENTITY, start(2)).expect("create");
    drop(writer);
    assert!(!dir.0.join(tmp_name(1, 2)).exists(), "drop removes the tmp");

    // A stale tmp of the same seq is truncated, not appended to.
    std::fs::write(dir.0.join(tmp_name(1, 3)), vec![0xaa; 5000]).expect("write a stale tmp");
    let info = write(&dir.0, IDENTITY, 3, &small_rows());
    assert_eq!(read_all(&info, IDENTITY).expect("read"), small_rows());
    assert!(list(&dir.0, IDENTITY).expect("list").len() == 1);
}

#[test]
fn a_callback_error_stops_the_read() {
    let dir = TempDir::new("callback");
    let info = write(&dir.0, IDENTITY, 1, &small_rows());
    let mut seen = 0;
    let e = read(&info, IDENTITY, |_, _, _, _, _| {
        seen += 1;
        if seen == 3 {
            return Err(LcpError::Row("table 2 is not known".into()));
        }
        Ok(())
    })
    .expect_err("the callback refused");
    assert!(matches!(&e, LcpError::Row(m) if m.contains("table 2")), "{e}");
    assert_eq!(seen, 3);
}

#[test]
fn a_file_changed_since_listing_is_refused() {
    let dir = TempDir::new("changed");
    let info = write(&dir.0, IDENTITY, 1, &small_rows());
    let stale = LcpInfo { rows: info.rows + 1, ..info.clone() };
    let e = read_all(&stale, IDENTITY).expect_err("the info does not describe the file");
    assert!(matches!(&e, LcpError::BadFile { reason, .. } if reason.contains("changed")), "{e}");
}
