//! Numbered test streams: signal `seq` has a shape and words that are a function of `seq`, so a
//! receiver checks every word of every signal, and their order, without a copy of what was sent.
//! Used by the conformance suite, the `blockwire-linkpeer` process and benchmarks.
//!
//! Signal `seq` has 1..=25 data words (word 0 is `seq`), 0..=3 sections of up to 300 words.

use signals::{gsn, BlockRef, Signal, SignalView};

/// Data words, section lengths and section count of stream signal `seq`.
pub fn shape(seq: u64) -> (usize, [usize; 3], usize) {
    let data = 1 + (seq % 25) as usize;
    let count = (seq % 4) as usize;
    let lens = [(seq * 7 % 301) as usize, (seq * 13 % 97) as usize, (seq * 31 % 5) as usize];
    (data, lens, count)
}

fn word(seq: u64, part: usize, i: usize) -> u32 {
    (seq as u32).wrapping_mul(2_654_435_761) ^ ((part as u32) << 24) ^ i as u32
}

/// Reusable storage for building stream signals without allocating per signal.
#[derive(Debug, Default)]
pub struct StreamStorage {
    data: Vec<u32>,
    sections: [Vec<u32>; 3],
}

impl StreamStorage {
    /// Builds stream signal `seq` from `from` to `to` and passes it to `f`.
    pub fn with_signal<R>(
        &mut self,
        seq: u64,
        from: BlockRef,
        to: BlockRef,
        f: impl FnOnce(&Signal<'_>) -> R,
    ) -> R {
        let (data, lens, count) = shape(seq);
        self.data.clear();
        self.data.push(seq as u32);
        self.data.extend((1..data).map(|i| word(seq, 0, i)));
        for (k, section) in self.sections.iter_mut().enumerate() {
            section.clear();
            section.extend((0..lens[k]).map(|i| word(seq, k + 1, i)));
        }
        let [a, b, c] = &self.sections;
        let all: [&[u32]; 3] = [a, b, c];
        let signal = Signal::new(gsn::PING_REQ, from, to).data(&self.data).sections(&all[..count]);
        f(&signal)
    }
}

/// Checks that `s` is stream signal `seq`, word for word.
pub fn check(s: &SignalView<'_>, seq: u64) -> Result<(), String> {
    let (data, lens, count) = shape(seq);
    let d = s.data();
    if d.len() != data || d.first() != Some(&(seq as u32)) {
        return Err(format!(
            "signal {seq}: got data word 0 {:?} and {} data words, expected {seq} and {data}",
            d.first(),
            d.len()
        ));
    }
    if d.iter().enumerate().skip(1).any(|(i, &w)| w != word(seq, 0, i)) {
        return Err(format!("signal {seq}: data words differ"));
    }
    if s.section_count() != count {
        return Err(format!("signal {seq}: {} sections, expected {count}", s.section_count()));
    }
    for (k, section) in s.sections().enumerate() {
        if section.len() != lens[k]
            || section.iter().enumerate().any(|(i, &w)| w != word(seq, k + 1, i))
        {
            return Err(format!("signal {seq}: section {k} differs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use signals::{
        BatchWalker, BatchWriter, BlockInstance, BlockNumber, Limits, NodeId, WriteOptions,
    };

    #[test]
    fn stream_signals_check_and_mismatches_are_caught() {
        let r = BlockRef::new(NodeId::MIN, BlockNumber(1), BlockInstance(0));
        let mut storage = StreamStorage::default();
        let mut page = vec![0u32; 1 << 14];
        let mut w = BatchWriter::new(&mut page, Limits::default(), WriteOptions::default());
        for seq in 0..20 {
            storage.with_signal(seq, r, r, |s| w.push(s)).unwrap();
        }
        let words = w.words().to_vec();
        for (seq, s) in BatchWalker::from_words(&words, Limits::default()).enumerate() {
            let s = s.unwrap();
            assert_eq!(check(&s, seq as u64), Ok(()));
            assert!(check(&s, seq as u64 + 1).is_err());
        }
    }
}
