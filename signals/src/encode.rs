//! Packing signals into a caller-provided send-buffer page.
//!
//! Invariants: the page always holds a run of whole, valid signals (`len_words` words); a push
//! either writes one whole signal or writes nothing and says why. No allocation: the page is the
//! caller's, and a signal's sections are borrowed slices.

use crate::checksum::checksum;
use crate::header::{
    WireHeader, BITS_PRIORITY_B, FLAG_CHECKSUM, FLAG_SIGNAL_ID, HEADER_WORDS, MAX_DATA_WORDS,
    MAX_SECTIONS,
};
use crate::ids::{BlockRef, Gsn, Priority};
use crate::limits::Limits;
use crate::typed::SignalData;

/// One signal to send, borrowing its data and sections.
#[derive(Clone, Copy, Debug)]
pub struct Signal<'a> {
    /// What the signal is.
    pub gsn: Gsn,
    /// A (control) or B.
    pub priority: Priority,
    /// The sending block.
    pub sender: BlockRef,
    /// The receiving block.
    pub receiver: BlockRef,
    /// An optional id, for tracing a signal across links.
    pub signal_id: Option<u32>,
    /// The short part, at most 25 words.
    pub data: &'a [u32],
    /// Up to three long sections.
    pub sections: &'a [&'a [u32]],
}

impl<'a> Signal<'a> {
    /// A priority-B signal with no data and no sections.
    pub const fn new(gsn: Gsn, sender: BlockRef, receiver: BlockRef) -> Signal<'a> {
        Signal {
            gsn,
            priority: Priority::B,
            sender,
            receiver,
            signal_id: None,
            data: &[],
            sections: &[],
        }
    }

    /// A signal whose GSN and short part come from a typed struct.
    pub fn typed<T: SignalData>(sender: BlockRef, receiver: BlockRef, data: &'a T) -> Signal<'a> {
        Signal { data: data.as_words(), ..Signal::new(T::GSN, sender, receiver) }
    }

    /// With this short part.
    pub const fn data(mut self, data: &'a [u32]) -> Signal<'a> {
        self.data = data;
        self
    }

    /// With these long sections.
    pub const fn sections(mut self, sections: &'a [&'a [u32]]) -> Signal<'a> {
        self.sections = sections;
        self
    }

    /// With this priority.
    pub const fn priority(mut self, priority: Priority) -> Signal<'a> {
        self.priority = priority;
        self
    }

    /// With this signal id.
    pub const fn signal_id(mut self, id: u32) -> Signal<'a> {
        self.signal_id = Some(id);
        self
    }

    /// Words the signal takes packed with `options` (its limits are not checked here: a push
    /// checks them), for a writer that places it before packing it.
    #[inline]
    pub fn wire_words(&self, options: WriteOptions) -> usize {
        self.words_with(self.data.len(), options)
    }

    /// Packed words with `data_words` data words in place of the data's length.
    #[inline]
    fn words_with(&self, data_words: usize, options: WriteOptions) -> usize {
        HEADER_WORDS
            + self.signal_id.is_some() as usize
            + data_words
            + self.sections.len()
            + self.sections.iter().map(|s| s.len()).sum::<usize>()
            + options.checksum as usize
    }
}

/// Why a signal was not packed. Nothing was written in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// More than 25 data words.
    #[error("signal {gsn} has {words} data words (allowed: at most {MAX_DATA_WORDS})")]
    DataTooLong { gsn: Gsn, words: usize },
    /// More than three sections.
    #[error("signal {gsn} has {count} sections (allowed: at most {MAX_SECTIONS})")]
    TooManySections { gsn: Gsn, count: usize },
    /// One section is longer than the configured limit.
    #[error("signal {gsn} section {section} has {words} words (limit max_section_words = {max})")]
    SectionTooLong { gsn: Gsn, section: usize, words: usize, max: usize },
    /// The whole signal is longer than the configured limit.
    #[error("signal {gsn} needs {words} words (limit max_signal_words = {max})")]
    SignalTooLong { gsn: Gsn, words: usize, max: usize },
    /// The signal is valid but the page has too little room left: flush and retry.
    #[error("signal needs {need_bytes} bytes but the page has {free_bytes} free")]
    DoesNotFit { need_bytes: usize, free_bytes: usize },
}

/// Options for a link's batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// End every signal with a checksum word (debugging links).
    pub checksum: bool,
}

/// Packs signals back to back into a page of words.
#[derive(Debug)]
pub struct BatchWriter<'a> {
    page: &'a mut [u32],
    len_words: usize,
    signals: usize,
    limits: Limits,
    options: WriteOptions,
}

impl<'a> BatchWriter<'a> {
    /// A writer that fills `page` from its start.
    pub fn new(page: &'a mut [u32], limits: Limits, options: WriteOptions) -> BatchWriter<'a> {
        BatchWriter { page, len_words: 0, signals: 0, limits, options }
    }

    /// A writer that appends to a page already holding `len_words` words of whole signals
    /// (packed earlier by a writer with the same limits and options). `len_words` is clamped to
    /// the page.
    pub fn resume(
        page: &'a mut [u32],
        len_words: usize,
        limits: Limits,
        options: WriteOptions,
    ) -> BatchWriter<'a> {
        let len_words = len_words.min(page.len());
        BatchWriter { page, len_words, signals: 0, limits, options }
    }

    /// Packs one whole signal, or nothing.
    #[inline]
    pub fn push(&mut self, signal: &Signal<'_>) -> Result<(), PackError> {
        self.push_inline(signal)
    }

    /// [`BatchWriter::push`], always inline.
    #[inline(always)]
    fn push_inline(&mut self, signal: &Signal<'_>) -> Result<(), PackError> {
        let (start, total) = self.reserve(signal, signal.data.len())?;
        let data_at = self.write_prefix(start, total, signal, signal.data.len());
        self.page[data_at..data_at + signal.data.len()].copy_from_slice(signal.data);
        self.finish(start, data_at + signal.data.len(), signal);
        Ok(())
    }

    /// Packs `signal` alone at the start of `words`, inline in the caller: for a writer that
    /// placed the signal itself (`words` holds [`Signal::wire_words`] words) and writes it
    /// straight where it is read from. Nothing is written when the signal breaks `limits` or
    /// does not fit.
    #[inline(always)]
    pub fn write_one(
        words: &mut [u32],
        signal: &Signal<'_>,
        limits: Limits,
        options: WriteOptions,
    ) -> Result<(), PackError> {
        BatchWriter::new(words, limits, options).push_inline(signal)
    }

    /// Packs a typed signal whose data words are written in place by `fill`, starting zeroed.
    /// `envelope` gives the sender, receiver, priority, id and sections; its GSN and data are
    /// replaced by `T::GSN` and the struct.
    pub fn push_with<T: SignalData>(
        &mut self,
        envelope: &Signal<'_>,
        fill: impl FnOnce(&mut T),
    ) -> Result<(), PackError> {
        let signal = Signal { gsn: T::GSN, data: &[], ..*envelope };
        let (start, total) = self.reserve(&signal, T::WORDS)?;
        let data_at = self.write_prefix(start, total, &signal, T::WORDS);
        let slot = &mut self.page[data_at..data_at + T::WORDS];
        slot.fill(0);
        fill(bytemuck::from_bytes_mut(bytemuck::cast_slice_mut(slot)));
        self.finish(start, data_at + T::WORDS, &signal);
        Ok(())
    }

    /// Checks `signal` (with `data_words` of data) against the limits and the free room, and
    /// returns where it will start and its length in words.
    #[inline]
    fn reserve(&self, signal: &Signal<'_>, data_words: usize) -> Result<(usize, usize), PackError> {
        let gsn = signal.gsn;
        if data_words > MAX_DATA_WORDS {
            return Err(PackError::DataTooLong { gsn, words: data_words });
        }
        if signal.sections.len() > MAX_SECTIONS {
            return Err(PackError::TooManySections { gsn, count: signal.sections.len() });
        }
        let max = self.limits.max_section_words();
        for (section, s) in signal.sections.iter().enumerate() {
            if s.len() > max {
                return Err(PackError::SectionTooLong { gsn, section, words: s.len(), max });
            }
        }
        let words = signal.words_with(data_words, self.options);
        if words > self.limits.max_signal_words() {
            return Err(PackError::SignalTooLong {
                gsn,
                words,
                max: self.limits.max_signal_words(),
            });
        }
        let free = self.page.len() - self.len_words;
        if words > free {
            return Err(PackError::DoesNotFit { need_bytes: words * 4, free_bytes: free * 4 });
        }
        Ok((self.len_words, words))
    }

    /// Writes the header of a signal of `total` words and its signal id at `start`; returns
    /// where the data words go.
    #[inline]
    fn write_prefix(
        &mut self,
        start: usize,
        total: usize,
        signal: &Signal<'_>,
        data_words: usize,
    ) -> usize {
        let mut bits = signal.sections.len() as u8;
        if signal.priority == Priority::B {
            bits |= BITS_PRIORITY_B;
        }
        if signal.signal_id.is_some() {
            bits |= FLAG_SIGNAL_ID;
        }
        if self.options.checksum {
            bits |= FLAG_CHECKSUM;
        }
        debug_assert!(total <= u16::MAX as usize && start + total <= self.page.len());
        let header = WireHeader {
            total_words: total as u16,
            data_words: data_words as u8,
            bits,
            gsn: signal.gsn.0,
            reserved: 0,
            sender: signal.sender.to_word(),
            receiver: signal.receiver.to_word(),
        };
        let header_words: [u32; HEADER_WORDS] = bytemuck::cast(header);
        self.page[start..start + HEADER_WORDS].copy_from_slice(&header_words);
        let mut at = start + HEADER_WORDS;
        if let Some(id) = signal.signal_id {
            self.page[at] = id;
            at += 1;
        }
        at
    }

    /// Writes section lengths, section words and the checksum after the data ending at `at`,
    /// then makes the signal part of the batch.
    #[inline(always)]
    fn finish(&mut self, start: usize, mut at: usize, signal: &Signal<'_>) {
        for s in signal.sections {
            self.page[at] = s.len() as u32;
            at += 1;
        }
        for s in signal.sections {
            self.page[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        if self.options.checksum {
            self.page[at] = checksum(&self.page[start..at]);
            at += 1;
        }
        self.len_words = at;
        self.signals += 1;
    }

    /// The packed batch, as words.
    pub fn words(&self) -> &[u32] {
        &self.page[..self.len_words]
    }

    /// The packed batch, as bytes (what goes on the wire).
    pub fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.words())
    }

    /// Bytes packed so far.
    pub fn len_bytes(&self) -> usize {
        self.len_words * 4
    }

    /// Whether nothing is packed.
    pub fn is_empty(&self) -> bool {
        self.len_words == 0
    }

    /// Signals packed by this writer (not counting what a resumed page held before).
    pub fn signal_count(&self) -> usize {
        self.signals
    }

    /// Bytes still free in the page.
    pub fn free_bytes(&self) -> usize {
        (self.page.len() - self.len_words) * 4
    }

    /// Forgets the packed signals, to reuse the page after it was sent.
    pub fn clear(&mut self) {
        self.len_words = 0;
        self.signals = 0;
    }
}
