//! Walking a received batch in place: zero-copy signal views out of a contiguous run of bytes.
//!
//! This is the trust boundary for everything a peer sends. Whatever the bytes, the walker never
//! panics and never reads outside the batch: every length is checked against the batch, the
//! wire format and the configured [`Limits`] before it is used. It tells the stream case (a whole
//! signal is not there yet: [`WalkError::Incomplete`], read more and retry) apart from the hostile
//! case (the bytes can never be a signal: [`WalkError::Malformed`], close that connection).
//!
//! The batch must start on a 4-byte boundary (our receive buffers and rings are word arrays), so
//! data words, sections and typed structs are borrowed straight from it.

use crate::checksum::checksum;
use crate::header::{
    WireHeader, BITS_PRIORITY_B, BITS_RESERVED, HEADER_BYTES, HEADER_WORDS, MAX_DATA_WORDS,
};
use crate::ids::{BlockRef, Gsn, Priority};
use crate::limits::Limits;
use crate::typed::{SignalData, TypedError};

/// What makes a batch unreadable for good. Each names the byte offset of the signal in the batch
/// and the value that was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// `total_words` is smaller than the header, id, data, section lengths and checksum need.
    #[error("signal at byte {offset}: total_words = {total_words} is shorter than the {min_words} words its header needs")]
    TotalTooShort { offset: usize, total_words: usize, min_words: usize },
    /// `total_words` is over the configured largest signal.
    #[error("signal at byte {offset}: total_words = {total_words} is over max_signal_words = {max_words}")]
    TotalTooLong { offset: usize, total_words: usize, max_words: usize },
    /// More than 25 data words.
    #[error("signal at byte {offset}: data_words = {data_words} is over {MAX_DATA_WORDS}")]
    DataTooLong { offset: usize, data_words: usize },
    /// Reserved bits of the flags byte are set.
    #[error("signal at byte {offset}: unknown flag bits {bits:#04x}")]
    UnknownFlags { offset: usize, bits: u8 },
    /// The reserved header field is not zero.
    #[error("signal at byte {offset}: reserved header field is {value:#06x}, not zero")]
    ReservedNotZero { offset: usize, value: u16 },
    /// The sender or receiver names node 0.
    #[error("signal at byte {offset}: {field} block reference {word:#010x} names node 0")]
    BadBlockRef { offset: usize, field: &'static str, word: u32 },
    /// One section is longer than the configured largest section.
    #[error("signal at byte {offset}: section {section} has {words} words, over max_section_words = {max_words}")]
    SectionTooLong { offset: usize, section: usize, words: usize, max_words: usize },
    /// The sections need more words than the signal has left.
    #[error("signal at byte {offset}: sections need {section_words} words but only {room_words} remain in total_words")]
    SectionsOverrun { offset: usize, section_words: usize, room_words: usize },
    /// The signal is longer than its parts: words nobody accounts for.
    #[error(
        "signal at byte {offset}: {extra_words} words after the last section are not accounted for"
    )]
    TrailingWords { offset: usize, extra_words: usize },
    /// The link requires checksums and this signal has none.
    #[error("signal at byte {offset}: no checksum word, but the link requires checksums")]
    ChecksumMissing { offset: usize },
    /// The checksum word does not match the signal.
    #[error(
        "signal at byte {offset}: checksum {found:#010x} does not match computed {expected:#010x}"
    )]
    BadChecksum { offset: usize, expected: u32, found: u32 },
}

/// Why the walker stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// The batch ends inside a signal that looks valid so far: `need_bytes` more bytes, from
    /// `offset` on, would let the walk go on. The stream case; not an error of the peer.
    #[error("incomplete signal at byte {offset}: need {need_bytes} more bytes")]
    Incomplete { offset: usize, need_bytes: usize },
    /// The bytes can never be a valid signal: the hostile (or corrupted) case.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl WalkError {
    /// Whether this is the harmless "read more" case.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, WalkError::Incomplete { .. })
    }
}

/// The batch does not start on a 4-byte boundary (a bug of the caller, not of the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("batch at address {address:#x} is not 4-byte aligned")]
pub struct MisalignedBatch {
    /// The batch's address.
    pub address: usize,
}

/// One received signal, borrowed from its batch.
#[derive(Clone, Copy, Debug)]
pub struct SignalView<'a> {
    words: &'a [u32],
    header: WireHeader,
}

impl<'a> SignalView<'a> {
    /// The signal at the start of `words`, which this process packed itself with a
    /// [`crate::BatchWriter`] (an in-process job buffer): its header is read, not checked
    /// again. Words that are not such a signal give wrong answers or a panic, never undefined
    /// behaviour; debug builds check them as the walker does. Anything from outside the
    /// process goes through [`BatchWalker`].
    #[inline]
    pub fn trusted(words: &'a [u32], limits: Limits) -> SignalView<'a> {
        let header_words: [u32; HEADER_WORDS] = match words.first_chunk() {
            Some(w) => *w,
            None => panic!("a trusted signal of {} words has no header", words.len()),
        };
        let header: WireHeader = bytemuck::cast(header_words);
        let words = &words[..header.total_words as usize];
        debug_assert!(
            check_header(&header, 0, &limits)
                .and_then(|()| check_body(&header, words, 0, &limits))
                .is_ok(),
            "a trusted signal fails the walker's checks"
        );
        let _ = limits;
        SignalView { words, header }
    }

    /// What the signal is.
    pub fn gsn(&self) -> Gsn {
        Gsn(self.header.gsn)
    }

    /// Its priority.
    pub fn priority(&self) -> Priority {
        if self.header.bits & BITS_PRIORITY_B != 0 {
            Priority::B
        } else {
            Priority::A
        }
    }

    /// The sending block.
    pub fn sender(&self) -> BlockRef {
        BlockRef::from_word(self.header.sender)
            .unwrap_or_else(|| unreachable!("the walker refuses node 0 before making a view"))
    }

    /// The receiving block.
    pub fn receiver(&self) -> BlockRef {
        BlockRef::from_word(self.header.receiver)
            .unwrap_or_else(|| unreachable!("the walker refuses node 0 before making a view"))
    }

    /// The signal id, when the sender attached one.
    pub fn signal_id(&self) -> Option<u32> {
        self.header.has_signal_id().then(|| self.words[HEADER_WORDS])
    }

    /// The data words (the short part).
    pub fn data(&self) -> &'a [u32] {
        let at = HEADER_WORDS + self.header.has_signal_id() as usize;
        &self.words[at..at + self.header.data_words as usize]
    }

    /// How many long sections the signal carries.
    pub fn section_count(&self) -> usize {
        self.header.section_count()
    }

    /// Long section `index`, or `None` past the last.
    pub fn section(&self, index: usize) -> Option<&'a [u32]> {
        self.sections().nth(index)
    }

    /// The long sections, in order.
    pub fn sections(&self) -> impl Iterator<Item = &'a [u32]> + 'a {
        let count = self.header.section_count();
        let fixed = self.header.fixed_words();
        let words = self.words;
        let lengths = &words[fixed - count..fixed];
        let mut at = fixed;
        lengths.iter().map(move |&len| {
            let section = &words[at..at + len as usize];
            at += len as usize;
            section
        })
    }

    /// The whole signal as it was on the wire (to forward it without packing again).
    pub fn wire_words(&self) -> &'a [u32] {
        self.words
    }

    /// The data words as the struct of their signal, borrowed in place.
    pub fn typed<T: SignalData>(&self) -> Result<&'a T, TypedError> {
        if self.gsn() != T::GSN {
            return Err(TypedError::WrongGsn { expected: T::GSN, found: self.gsn() });
        }
        let data = self.data();
        if data.len() != T::WORDS {
            return Err(TypedError::WrongLength {
                gsn: T::GSN,
                expected: T::WORDS,
                found: data.len(),
            });
        }
        // Cannot fail: the length matches and words are 4-aligned like every SignalData.
        bytemuck::try_from_bytes(bytemuck::cast_slice(data)).map_err(|_| TypedError::WrongLength {
            gsn: T::GSN,
            expected: T::WORDS,
            found: data.len(),
        })
    }
}

impl<'a> SignalView<'a> {
    /// The first data words as the struct of their signal, borrowed in place, and the words
    /// after it (for a signal declared `=> Type, ..`: a struct followed by more words).
    pub fn typed_head<T: SignalData>(&self) -> Result<(&'a T, &'a [u32]), TypedError> {
        if self.gsn() != T::GSN {
            return Err(TypedError::WrongGsn { expected: T::GSN, found: self.gsn() });
        }
        let data = self.data();
        let short = TypedError::WrongLength { gsn: T::GSN, expected: T::WORDS, found: data.len() };
        if data.len() < T::WORDS {
            return Err(short);
        }
        let (head, rest) = data.split_at(T::WORDS);
        // Cannot fail: the length matches and words are 4-aligned like every SignalData.
        let head = bytemuck::try_from_bytes(bytemuck::cast_slice(head)).map_err(|_| short)?;
        Ok((head, rest))
    }
}

/// Walks the signals of one batch.
#[derive(Debug)]
pub struct BatchWalker<'a> {
    words: &'a [u32],
    /// Bytes after the last whole word (a stream read may end mid-word).
    tail_bytes: usize,
    /// Word index of the next signal.
    at: usize,
    limits: Limits,
    stopped: bool,
    /// Refuse signals without a checksum (a link configured for checksums).
    require_checksum: bool,
}

impl<'a> BatchWalker<'a> {
    /// A walker over `bytes`, which must start 4-byte aligned.
    pub fn new(bytes: &'a [u8], limits: Limits) -> Result<BatchWalker<'a>, MisalignedBatch> {
        let whole = bytes.len() & !3;
        let words = bytemuck::try_cast_slice(&bytes[..whole])
            .map_err(|_| MisalignedBatch { address: bytes.as_ptr() as usize })?;
        Ok(BatchWalker {
            words,
            tail_bytes: bytes.len() - whole,
            at: 0,
            limits,
            stopped: false,
            require_checksum: false,
        })
    }

    /// A walker over a batch of whole words.
    pub fn from_words(words: &'a [u32], limits: Limits) -> BatchWalker<'a> {
        BatchWalker { words, tail_bytes: 0, at: 0, limits, stopped: false, require_checksum: false }
    }

    /// Refuses any signal without a checksum word: on a link configured for checksums, a bit
    /// flip that clears the checksum flag (and shifts a length to match) would otherwise pass.
    pub fn require_checksum(mut self, required: bool) -> BatchWalker<'a> {
        self.require_checksum = required;
        self
    }

    /// Bytes of whole signals walked so far: where the next signal starts.
    pub fn offset(&self) -> usize {
        self.at * 4
    }

    /// The next signal, `Ok(None)` at the exact end of the batch, or why the walk stops here.
    /// After an error the walker stays where it was; the error repeats.
    #[inline(always)]
    pub fn next_signal(&mut self) -> Result<Option<SignalView<'a>>, WalkError> {
        let remaining_words = self.words.len() - self.at;
        let remaining_bytes = remaining_words * 4 + self.tail_bytes;
        if remaining_bytes == 0 {
            return Ok(None);
        }
        let offset = self.at * 4;
        if remaining_words < HEADER_WORDS {
            return Err(WalkError::Incomplete {
                offset,
                need_bytes: HEADER_BYTES - remaining_bytes,
            });
        }
        let header_words: [u32; HEADER_WORDS] = match self.words[self.at..].first_chunk() {
            Some(words) => *words,
            None => unreachable!("at least HEADER_WORDS remain"),
        };
        let header: WireHeader = bytemuck::cast(header_words);
        check_header(&header, offset, &self.limits)?;
        if self.require_checksum && !header.has_checksum() {
            return Err(Malformed::ChecksumMissing { offset }.into());
        }
        let total = header.total_words as usize;
        if total > remaining_words {
            return Err(WalkError::Incomplete { offset, need_bytes: total * 4 - remaining_bytes });
        }
        let words = &self.words[self.at..self.at + total];
        check_body(&header, words, offset, &self.limits)?;
        self.at += total;
        Ok(Some(SignalView { words, header }))
    }
}

impl<'a> Iterator for BatchWalker<'a> {
    type Item = Result<SignalView<'a>, WalkError>;

    /// Signals until the end of the batch, then at most one error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        let step = self.next_signal().transpose();
        if matches!(step, Some(Err(_)) | None) {
            self.stopped = true;
        }
        step
    }
}

/// Checks everything the header alone can tell.
#[inline(always)]
fn check_header(header: &WireHeader, offset: usize, limits: &Limits) -> Result<(), Malformed> {
    let total_words = header.total_words as usize;
    let min_words = header.fixed_words() + header.has_checksum() as usize;
    // The common case in one branch: no reserved bits, short part in range, length plausible,
    // both node ids non-zero. Anything else is sorted out below, with its own error.
    let suspicious = (header.bits & BITS_RESERVED) as usize
        | header.reserved as usize
        | (header.data_words as usize > MAX_DATA_WORDS) as usize
        | (total_words < min_words) as usize
        | (total_words > limits.max_signal_words()) as usize
        | (header.sender >> 24 == 0) as usize
        | (header.receiver >> 24 == 0) as usize;
    if suspicious == 0 {
        return Ok(());
    }
    if header.bits & BITS_RESERVED != 0 {
        return Err(Malformed::UnknownFlags { offset, bits: header.bits });
    }
    if header.reserved != 0 {
        return Err(Malformed::ReservedNotZero { offset, value: header.reserved });
    }
    let data_words = header.data_words as usize;
    if data_words > MAX_DATA_WORDS {
        return Err(Malformed::DataTooLong { offset, data_words });
    }
    if total_words < min_words {
        return Err(Malformed::TotalTooShort { offset, total_words, min_words });
    }
    let max_words = limits.max_signal_words();
    if total_words > max_words {
        return Err(Malformed::TotalTooLong { offset, total_words, max_words });
    }
    for (field, word) in [("sender", header.sender), ("receiver", header.receiver)] {
        if word >> 24 == 0 {
            return Err(Malformed::BadBlockRef { offset, field, word });
        }
    }
    unreachable!("a suspicious header fails one of the checks above")
}

/// Checks section lengths and the checksum of a whole signal (`words.len() == total_words`).
#[inline(always)]
fn check_body(
    header: &WireHeader,
    words: &[u32],
    offset: usize,
    limits: &Limits,
) -> Result<(), Malformed> {
    let fixed = header.fixed_words();
    let count = header.section_count();
    let checksum_words = header.has_checksum() as usize;
    debug_assert!(fixed + checksum_words <= words.len());
    if count == 0 && checksum_words == 0 {
        let extra_words = words.len() - fixed;
        return match extra_words {
            0 => Ok(()),
            _ => Err(Malformed::TrailingWords { offset, extra_words }),
        };
    }
    let max_words = limits.max_section_words();
    let mut section_words = 0usize;
    for (section, &len) in words[fixed - count..fixed].iter().enumerate() {
        let len = len as usize;
        if len > max_words {
            return Err(Malformed::SectionTooLong { offset, section, words: len, max_words });
        }
        section_words += len;
    }
    let room_words = words.len() - fixed - checksum_words;
    if section_words > room_words {
        return Err(Malformed::SectionsOverrun { offset, section_words, room_words });
    }
    if section_words < room_words {
        return Err(Malformed::TrailingWords { offset, extra_words: room_words - section_words });
    }
    if checksum_words == 1 {
        let (body, tail) = words.split_at(words.len() - 1);
        let expected = checksum(body);
        if tail[0] != expected {
            return Err(Malformed::BadChecksum { offset, expected, found: tail[0] });
        }
    }
    Ok(())
}
