//! Property tests: random signals survive pack -> walk unchanged (also when the stream delivers
//! them in pieces), and hostile bytes (random, bit-flipped, truncated, spliced) always end in a
//! signal or a typed error, never a panic or an out-of-bounds read. Over 150,000 cases in all.

mod common;

use common::block;
use proptest::prelude::*;
use signals::{BatchWalker, BatchWriter, Gsn, Limits, Priority, Signal, WalkError, WriteOptions};

const MAX_SECTION: usize = 64;

fn limits() -> Limits {
    Limits::new(MAX_SECTION as u64, 600).expect("test limits")
}

/// An owned signal, the test's model of what was sent.
#[derive(Clone, Debug, PartialEq)]
struct Owned {
    gsn: u16,
    priority_a: bool,
    sender: (u32, u16, u8),
    receiver: (u32, u16, u8),
    signal_id: Option<u32>,
    data: Vec<u32>,
    sections: Vec<Vec<u32>>,
}

fn owned() -> impl Strategy<Value = Owned> {
    let reference = || (1u32..=255, any::<u16>(), any::<u8>());
    (
        any::<u16>(),
        any::<bool>(),
        reference(),
        reference(),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u32>(), 0..=25),
        proptest::collection::vec(proptest::collection::vec(any::<u32>(), 0..=MAX_SECTION), 0..=3),
    )
        .prop_map(|(gsn, priority_a, sender, receiver, signal_id, data, sections)| Owned {
            gsn,
            priority_a,
            sender,
            receiver,
            signal_id,
            data,
            sections,
        })
}

impl Owned {
    /// Its sections, borrowed, for [`Owned::signal`].
    fn section_slices(&self) -> Vec<&[u32]> {
        self.sections.iter().map(Vec::as_slice).collect()
    }

    /// The signal to pack, with `sections` from [`Owned::section_slices`].
    fn signal<'a>(&'a self, sections: &'a [&'a [u32]]) -> Signal<'a> {
        let mut signal = Signal::new(
            Gsn(self.gsn),
            block(self.sender.0, self.sender.1, self.sender.2),
            block(self.receiver.0, self.receiver.1, self.receiver.2),
        )
        .data(&self.data)
        .sections(sections)
        .priority(if self.priority_a { Priority::A } else { Priority::B });
        signal.signal_id = self.signal_id;
        signal
    }
}

/// Packs `signals` into one batch of words.
fn pack(signals: &[Owned], checksum: bool) -> Vec<u32> {
    let mut page = vec![0u32; signals.len() * 600];
    let mut w = BatchWriter::new(&mut page, limits(), WriteOptions { checksum });
    for s in signals {
        let sections = s.section_slices();
        w.push(&s.signal(&sections)).expect("within limits and page");
    }
    assert_eq!(w.signal_count(), signals.len());
    w.words().to_vec()
}

/// Walks `bytes` (copied into an aligned buffer) to its end or first error, exercising every
/// accessor of every view; returns the signals and how the walk ended.
fn walk(bytes: &[u8]) -> (Vec<Owned>, Result<(), WalkError>, usize) {
    walk_with(bytes, false)
}

/// As [`walk`], optionally refusing signals without a checksum.
fn walk_with(bytes: &[u8], require_checksum: bool) -> (Vec<Owned>, Result<(), WalkError>, usize) {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
    let mut walker =
        BatchWalker::new(aligned, limits()).expect("aligned").require_checksum(require_checksum);
    let mut out = Vec::new();
    let end = loop {
        match walker.next_signal() {
            Ok(Some(v)) => {
                let (s, r) = (v.sender(), v.receiver());
                out.push(Owned {
                    gsn: v.gsn().0,
                    priority_a: v.priority() == Priority::A,
                    sender: (u32::from(s.node.get()), s.block.0, s.instance.0),
                    receiver: (u32::from(r.node.get()), r.block.0, r.instance.0),
                    signal_id: v.signal_id(),
                    data: v.data().to_vec(),
                    sections: v.sections().map(<[u32]>::to_vec).collect(),
                });
                assert_eq!(v.sections().count(), v.section_count());
                assert!(v.wire_words().len() * 4 <= bytes.len());
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    (out, end, walker.offset())
}

fn as_bytes(words: &[u32]) -> Vec<u8> {
    bytemuck::cast_slice(words).to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn pack_then_walk_round_trips(signals in proptest::collection::vec(owned(), 1..6), checksum in any::<bool>()) {
        let bytes = as_bytes(&pack(&signals, checksum));
        let (walked, end, offset) = walk(&bytes);
        prop_assert_eq!(end, Ok(()));
        prop_assert_eq!(offset, bytes.len());
        prop_assert_eq!(walked, signals);
    }

    #[test]
    fn one_signal_written_in_place_is_the_packed_signal(s in owned(), checksum in any::<bool>()) {
        let options = WriteOptions { checksum };
        let packed = pack(std::slice::from_ref(&s), checksum);
        let sections = s.section_slices();
        let signal = s.signal(&sections);
        prop_assert_eq!(signal.wire_words(options), packed.len());
        let mut words = vec![0u32; packed.len()];
        prop_assert_eq!(BatchWriter::write_one(&mut words, &signal, limits(), options), Ok(()));
        prop_assert_eq!(&words, &packed);
        // One word short: refused, nothing written.
        let mut short = vec![0u32; packed.len() - 1];
        let refused = BatchWriter::write_one(&mut short, &signal, limits(), options);
        prop_assert!(matches!(refused, Err(signals::PackError::DoesNotFit { .. })), "{:?}", refused);
        prop_assert!(short.iter().all(|&w| w == 0));
    }

    #[test]
    fn stream_pieces_say_exactly_what_is_missing(
        signals in proptest::collection::vec(owned(), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = as_bytes(&pack(&signals, false));
        let cut = cut.index(bytes.len() + 1);
        let (head, end, offset) = walk(&bytes[..cut]);
        prop_assert_eq!(&head[..], &signals[..head.len()]);
        match end {
            Ok(()) => prop_assert_eq!(offset, cut),
            Err(WalkError::Incomplete { offset: at, need_bytes }) => {
                prop_assert_eq!(at, offset);
                // The need is never more than the rest of the stream, and exactly the rest of
                // this signal once its header is in.
                prop_assert!(need_bytes > 0 && cut + need_bytes <= bytes.len());
                let (more, _, _) = walk(&bytes[offset..cut + need_bytes]);
                if cut - offset >= signals::HEADER_BYTES {
                    prop_assert_eq!(&more[..], &signals[head.len()..head.len() + 1]);
                }
            }
            Err(other) => prop_assert!(false, "valid prefix reported {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = walk(&bytes);
    }

    #[test]
    fn bit_flips_are_caught_by_the_checksum(
        signals in proptest::collection::vec(owned(), 1..4),
        flips in proptest::collection::vec(any::<prop::sample::Index>(), 1..8),
    ) {
        let mut bytes = as_bytes(&pack(&signals, true));
        let bits = bytes.len() * 8;
        let mut flipped = std::collections::BTreeSet::new();
        for f in flips {
            let bit = f.index(bits);
            if !flipped.insert(bit) { flipped.remove(&bit); }
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        // The link is configured for checksums, so the walker requires them: a flip that clears
        // the checksum flag cannot smuggle a signal through.
        let (walked, end, _) = walk_with(&bytes, true);
        if flipped.is_empty() {
            prop_assert_eq!(walked, signals);
        } else {
            // Every signal carries a checksum over all its words, so a corrupted batch cannot
            // walk clean to its end.
            prop_assert!(end.is_err(), "flipped bits {:?} went unseen", flipped);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30_000))]

    #[test]
    fn truncations_and_splices_end_in_a_typed_error_or_signals(
        first in proptest::collection::vec(owned(), 1..4),
        second in proptest::collection::vec(owned(), 1..4),
        checksum in any::<bool>(),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        word_aligned in any::<bool>(),
    ) {
        let x = as_bytes(&pack(&first, checksum));
        let y = as_bytes(&pack(&second, checksum));
        let (mut cut_x, mut cut_y) = (a.index(x.len() + 1), b.index(y.len() + 1));
        if word_aligned {
            cut_x &= !3;
            cut_y &= !3;
        }
        let mut spliced = x[..cut_x].to_vec();
        spliced.extend_from_slice(&y[cut_y..]);
        let (walked, end, offset) = walk(&spliced);
        prop_assert!(offset <= spliced.len());
        if end.is_ok() {
            prop_assert_eq!(offset, spliced.len());
        }
        // Signals before the cut are exactly the first batch's.
        let whole_before_cut = walk(&x[..cut_x]).0.len();
        prop_assert_eq!(&walked[..whole_before_cut.min(walked.len())], &first[..whole_before_cut.min(walked.len())]);
    }
}
