//! One test per packing and walking error: each is produced from bytes built for it, and its
//! message names the offending value and offset.

mod common;

use common::block;
use signals::header::{BITS_RESERVED, FLAG_CHECKSUM, OFFSET_BITS, OFFSET_RESERVED};
use signals::{
    gsn, signal_data, BatchWalker, BatchWriter, Gsn, Limits, Malformed, PackError, Priority,
    Signal, TypedError, WalkError, WriteOptions,
};

fn limits() -> Limits {
    Limits::new(64, 200).expect("test limits")
}

/// A batch of two valid signals, as bytes, with the second one's byte offset.
fn two_signals(options: WriteOptions) -> (Vec<u8>, usize) {
    let mut page = vec![0u32; 512];
    let mut w = BatchWriter::new(&mut page, limits(), options);
    w.push(&Signal::new(gsn::PING_REQ, block(1, 2, 0), block(3, 4, 1)).data(&[1, 2, 3])).unwrap();
    let first = w.len_bytes();
    let sections: [&[u32]; 2] = [&[10, 11], &[20, 21, 22]];
    w.push(
        &Signal::new(gsn::PING_CONF, block(3, 4, 1), block(1, 2, 0)).data(&[9]).sections(&sections),
    )
    .unwrap();
    (w.bytes().to_vec(), first)
}

/// Walks `bytes` (copied to an aligned buffer) and returns the first error.
fn first_error(bytes: &[u8]) -> WalkError {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
    let mut walker = BatchWalker::new(aligned, limits()).unwrap();
    loop {
        match walker.next_signal() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("batch walked without error"),
            Err(e) => return e,
        }
    }
}

fn to_words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn malformed(e: WalkError) -> Malformed {
    match e {
        WalkError::Malformed(m) => m,
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn valid_batch_walks_in_order_with_all_fields() {
    let (bytes, _) = two_signals(WriteOptions { checksum: true });
    let words: Vec<u32> = to_words(&bytes);
    let mut walker = BatchWalker::from_words(&words, limits());
    let a = walker.next_signal().unwrap().unwrap();
    assert_eq!((a.gsn(), a.priority(), a.data()), (gsn::PING_REQ, Priority::B, &[1, 2, 3][..]));
    assert_eq!((a.sender(), a.receiver()), (block(1, 2, 0), block(3, 4, 1)));
    assert_eq!((a.section_count(), a.signal_id()), (0, None));
    let b = walker.next_signal().unwrap().unwrap();
    assert_eq!(b.sections().collect::<Vec<_>>(), vec![&[10, 11][..], &[20, 21, 22][..]]);
    assert_eq!(b.section(2), None);
    assert!(matches!(walker.next_signal(), Ok(None)));
    assert_eq!(walker.offset(), bytes.len());
}

#[test]
fn incomplete_header_and_incomplete_body_say_how_much_is_missing() {
    let (bytes, second) = two_signals(WriteOptions::default());
    assert_eq!(
        first_error(&bytes[..second + 5]),
        WalkError::Incomplete { offset: second, need_bytes: 11 }
    );
    let cut = bytes.len() - 6;
    assert_eq!(first_error(&bytes[..cut]), WalkError::Incomplete { offset: second, need_bytes: 6 });
    assert!(first_error(&bytes[..cut]).is_incomplete());
    assert!(first_error(&bytes[..cut]).to_string().contains("need 6 more bytes"));
}

#[test]
fn total_too_short() {
    let (mut bytes, second) = two_signals(WriteOptions::default());
    put_u16(&mut bytes, second, 6);
    let m = malformed(first_error(&bytes));
    assert_eq!(
        m,
        Malformed::TotalTooShort { offset: second, total_words: 6, min_words: 4 + 1 + 2 }
    );
    assert!(m.to_string().contains(&format!("byte {second}: total_words = 6")), "{m}");
}

#[test]
fn total_too_long() {
    let (mut bytes, _) = two_signals(WriteOptions::default());
    put_u16(&mut bytes, 0, 201);
    let m = malformed(first_error(&bytes));
    assert_eq!(m, Malformed::TotalTooLong { offset: 0, total_words: 201, max_words: 200 });
    assert!(m.to_string().contains("total_words = 201 is over max_signal_words = 200"), "{m}");
}

#[test]
fn data_too_long() {
    let (mut bytes, _) = two_signals(WriteOptions::default());
    bytes[2] = 26;
    let m = malformed(first_error(&bytes));
    assert_eq!(m, Malformed::DataTooLong { offset: 0, data_words: 26 });
    assert!(m.to_string().contains("data_words = 26"), "{m}");
}

#[test]
fn unknown_flags() {
    let (mut bytes, second) = two_signals(WriteOptions::default());
    bytes[second + OFFSET_BITS] |= BITS_RESERVED & 0x80;
    let m = malformed(first_error(&bytes));
    assert!(
        matches!(m, Malformed::UnknownFlags { offset, bits } if offset == second && bits & 0x80 != 0)
    );
    assert!(m.to_string().contains("unknown flag bits 0x"), "{m}");
}

#[test]
fn reserved_not_zero() {
    let (mut bytes, _) = two_signals(WriteOptions::default());
    put_u16(&mut bytes, OFFSET_RESERVED, 0x1234);
    let m = malformed(first_error(&bytes));
    assert_eq!(m, Malformed::ReservedNotZero { offset: 0, value: 0x1234 });
    assert!(m.to_string().contains("0x1234"), "{m}");
}

#[test]
fn bad_block_ref_names_the_field() {
    let (mut bytes, _) = two_signals(WriteOptions::default());
    put_u32(&mut bytes, 12, 0x0000_0004);
    let m = malformed(first_error(&bytes));
    assert_eq!(m, Malformed::BadBlockRef { offset: 0, field: "receiver", word: 4 });
    let (mut bytes, _) = two_signals(WriteOptions::default());
    put_u32(&mut bytes, 8, 0x0001_0002);
    assert!(malformed(first_error(&bytes))
        .to_string()
        .contains("sender block reference 0x00010002"));
}

#[test]
fn section_too_long() {
    let (mut bytes, second) = two_signals(WriteOptions::default());
    // Second signal: header 4, data 1, then two section lengths.
    put_u32(&mut bytes, second + 5 * 4, 65);
    let m = malformed(first_error(&bytes));
    assert_eq!(
        m,
        Malformed::SectionTooLong { offset: second, section: 0, words: 65, max_words: 64 }
    );
    assert!(m.to_string().contains("section 0 has 65 words, over max_section_words = 64"), "{m}");
}

#[test]
fn sections_overrun() {
    let (mut bytes, second) = two_signals(WriteOptions::default());
    put_u32(&mut bytes, second + 6 * 4, 4);
    let m = malformed(first_error(&bytes));
    assert_eq!(m, Malformed::SectionsOverrun { offset: second, section_words: 6, room_words: 5 });
}

#[test]
fn trailing_words() {
    let (mut bytes, second) = two_signals(WriteOptions::default());
    put_u32(&mut bytes, second + 6 * 4, 1);
    let m = malformed(first_error(&bytes));
    assert_eq!(m, Malformed::TrailingWords { offset: second, extra_words: 2 });
    assert!(m.to_string().contains("2 words after the last section"), "{m}");
}

#[test]
fn bad_checksum() {
    let (mut bytes, second) = two_signals(WriteOptions { checksum: true });
    assert_ne!(bytes[second + OFFSET_BITS] & FLAG_CHECKSUM, 0);
    bytes[second + 7 * 4] ^= 0x40; // a section word
    let m = malformed(first_error(&bytes));
    assert!(
        matches!(m, Malformed::BadChecksum { offset, expected, found } if offset == second && expected != found)
    );
    assert!(m.to_string().contains("does not match computed"), "{m}");
}

#[test]
fn checksum_missing_on_a_link_that_requires_it() {
    let (bytes, _) = two_signals(WriteOptions::default());
    let words = to_words(&bytes);
    let e =
        BatchWalker::from_words(&words, limits()).require_checksum(true).next_signal().unwrap_err();
    assert_eq!(e, WalkError::Malformed(Malformed::ChecksumMissing { offset: 0 }));
    assert!(e.to_string().contains("requires checksums"), "{e}");
}

#[test]
fn misaligned_batch_is_refused() {
    let words = [0u32; 8];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let e = BatchWalker::new(&bytes[1..], limits()).unwrap_err();
    assert!(e.to_string().contains("not 4-byte aligned"), "{e}");
}

#[test]
fn pack_errors_write_nothing() {
    let mut page = vec![0u32; 40];
    let mut w = BatchWriter::new(&mut page, limits(), WriteOptions::default());
    let (from, to) = (block(1, 1, 0), block(2, 1, 0));
    let big = [0u32; 65];
    let ok = [0u32; 26];
    let s1: [&[u32]; 2] = [&[1], &big];
    let s3: [&[u32]; 3] = [&big[..64], &big[..64], &big[..64]];
    let s40: [&[u32]; 1] = [&big[..40]];
    let cases: Vec<(Signal, PackError)> = vec![
        (
            Signal::new(Gsn(9), from, to).data(&ok),
            PackError::DataTooLong { gsn: Gsn(9), words: 26 },
        ),
        (
            Signal::new(Gsn(9), from, to).sections(&[&[1], &[2], &[3], &[4]]),
            PackError::TooManySections { gsn: Gsn(9), count: 4 },
        ),
        (
            Signal::new(Gsn(9), from, to).sections(&s1),
            PackError::SectionTooLong { gsn: Gsn(9), section: 1, words: 65, max: 64 },
        ),
        (
            Signal::new(Gsn(9), from, to).data(&[1, 2]).sections(&s3),
            PackError::SignalTooLong { gsn: Gsn(9), words: 4 + 2 + 3 + 192, max: 200 },
        ),
        (
            Signal::new(Gsn(9), from, to).sections(&s40),
            PackError::DoesNotFit { need_bytes: 45 * 4, free_bytes: 40 * 4 },
        ),
    ];
    for (signal, expected) in cases {
        assert_eq!(w.push(&signal), Err(expected));
        assert!(w.is_empty(), "{expected} wrote something");
    }
    let e = PackError::SectionTooLong { gsn: gsn::PING_REQ, section: 1, words: 65, max: 64 };
    assert_eq!(
        e.to_string(),
        "signal PING_REQ section 1 has 65 words (limit max_section_words = 64)"
    );
    w.push(&Signal::new(Gsn(9), from, to).sections(&[&big[..30]])).unwrap();
    assert_eq!(w.len_bytes(), 35 * 4);
    let six_words = Signal::new(Gsn(9), from, to).data(&[1, 2]);
    assert_eq!(w.push(&six_words), Err(PackError::DoesNotFit { need_bytes: 24, free_bytes: 20 }));
    assert_eq!(w.len_bytes(), 35 * 4);
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct PingReq {
    sequence: u32,
    sent_ns_low: u32,
    sent_ns_high: u32,
}
signal_data!(PingReq => gsn::PING_REQ);

#[test]
fn typed_signals_read_and_write_fields_in_place() {
    let mut page = vec![0u32; 64];
    let mut w = BatchWriter::new(&mut page, limits(), WriteOptions::default());
    let (from, to) = (block(1, 1, 0), block(2, 1, 0));
    let req = PingReq { sequence: 7, sent_ns_low: 8, sent_ns_high: 9 };
    w.push(&Signal::typed(from, to, &req).priority(Priority::A).signal_id(99)).unwrap();
    w.push_with::<PingReq>(&Signal::new(Gsn(0), from, to), |p| p.sequence = 8).unwrap();
    w.push(&Signal::new(gsn::PING_REQ, from, to).data(&[1])).unwrap();
    w.push(&Signal::new(gsn::PING_CONF, from, to).data(&[1, 2, 3])).unwrap();
    let words = w.words().to_vec();
    let mut walker = BatchWalker::from_words(&words, limits());
    let a = walker.next_signal().unwrap().unwrap();
    assert_eq!(a.typed::<PingReq>(), Ok(&req));
    assert_eq!((a.priority(), a.signal_id()), (Priority::A, Some(99)));
    let b = walker.next_signal().unwrap().unwrap();
    assert_eq!(b.typed::<PingReq>(), Ok(&PingReq { sequence: 8, sent_ns_low: 0, sent_ns_high: 0 }));
    let c = walker.next_signal().unwrap().unwrap();
    let e = c.typed::<PingReq>().unwrap_err();
    assert_eq!(e, TypedError::WrongLength { gsn: gsn::PING_REQ, expected: 3, found: 1 });
    let d = walker.next_signal().unwrap().unwrap();
    let e = d.typed::<PingReq>().unwrap_err();
    assert_eq!(e, TypedError::WrongGsn { expected: gsn::PING_REQ, found: gsn::PING_CONF });
    assert_eq!(e.to_string(), "expected signal PING_REQ, got PING_CONF");
}

#[test]
fn iterator_stops_after_first_error() {
    let (mut bytes, second) = two_signals(WriteOptions::default());
    bytes[second + 2] = 30;
    let words: Vec<u32> = to_words(&bytes);
    let items: Vec<_> = BatchWalker::from_words(&words, limits()).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert_eq!(
        items[1].as_ref().unwrap_err(),
        &WalkError::Malformed(Malformed::DataTooLong { offset: second, data_words: 30 })
    );
}

/// A trusted view (in-process job buffers) reads the same signal the walker does.
#[test]
fn trusted_view_reads_what_the_walker_reads() {
    use signals::{gsn, BatchWalker, BatchWriter, BlockInstance, BlockNumber, BlockRef, NodeId};
    use signals::{Limits, Signal, SignalView, WriteOptions};
    let me = BlockRef::new(NodeId::MIN, BlockNumber(7), BlockInstance(1));
    let limits = Limits::default();
    let section = [5u32; 9];
    let sections: [&[u32]; 2] = [&section, &section[..2]];
    let signals = [
        Signal::new(gsn::PING_REQ, me, me),
        Signal::new(gsn::PING_CONF, me, me).data(&[1, 2, 3]).signal_id(77),
        Signal::new(gsn::PING_REQ, me, me).data(&[4]).sections(&sections),
    ];
    let mut words = [0u32; 256];
    let mut w = BatchWriter::new(&mut words, limits, WriteOptions::default());
    for s in &signals {
        w.push(s).unwrap();
    }
    let len = w.words().len();
    let mut walker = BatchWalker::from_words(&words[..len], limits);
    let mut at = 0;
    while let Some(walked) = walker.next_signal().unwrap() {
        let trusted = SignalView::trusted(&words[at..len], limits);
        assert_eq!(trusted.wire_words(), walked.wire_words());
        assert_eq!(trusted.gsn(), walked.gsn());
        assert_eq!(trusted.data(), walked.data());
        assert_eq!(trusted.signal_id(), walked.signal_id());
        assert!(trusted.sections().eq(walked.sections()));
        at += walked.wire_words().len();
    }
    assert_eq!(at, len);
}
