//! Fuzz target: the batch walker on arbitrary bytes. The first byte picks the limits and whether
//! the batch is handed over as bytes (with a ragged tail) or as words; the rest is the batch.
//! Every outcome must be a signal view or a typed error: a panic or an out-of-bounds read is a
//! finding. Each view's accessors are exercised, and the walk must make progress or stop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signals::{BatchWalker, Limits, WalkError};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, batch)) = input.split_first() else { return };
    let limits = match selector % 3 {
        0 => Limits::default(),
        1 => Limits::new(16, 64).expect("valid limits"),
        _ => Limits::WIRE_MAX,
    };
    let mut words = vec![0u32; batch.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..batch.len()].copy_from_slice(batch);
    let aligned = &bytemuck::cast_slice::<u32, u8>(&words)[..batch.len()];
    let mut walker = if selector & 0x80 != 0 {
        BatchWalker::from_words(&words[..batch.len() / 4], limits)
    } else {
        BatchWalker::new(aligned, limits).expect("aligned buffer")
    };
    let mut last_offset = 0;
    loop {
        match walker.next_signal() {
            Ok(Some(view)) => {
                assert!(walker.offset() > last_offset, "walk made no progress");
                last_offset = walker.offset();
                let _ = (view.gsn(), view.priority(), view.sender(), view.receiver(), view.signal_id());
                let total: usize = view.sections().map(<[u32]>::len).sum::<usize>() + view.data().len();
                assert!(total <= view.wire_words().len());
            }
            Ok(None) => break,
            Err(WalkError::Incomplete { need_bytes, .. }) => {
                assert!(need_bytes > 0);
                break;
            }
            Err(WalkError::Malformed(m)) => {
                let _ = m.to_string();
                break;
            }
        }
    }
});
