//! Typed signals: a signal's data words declared as a `#[repr(C)]` bytemuck `Pod` struct tied to
//! its GSN, so blocks read and write named fields instead of word indexes.
//!
//! Reading is zero-copy: [`crate::SignalView::typed`] borrows the struct straight out of the
//! received batch. Writing in place is [`crate::BatchWriter::push_with`].
//!
//! Invariant (checked at compile time for every implementation that is used): the struct is a
//! whole number of 32-bit words, at most 25 of them, aligned to 4 bytes.

use bytemuck::Pod;

use crate::header::MAX_DATA_WORDS;
use crate::ids::Gsn;

/// The data words of one kind of signal, as a struct.
///
/// Implement it with [`signal_data!`](crate::signal_data) rather than by hand.
pub trait SignalData: Pod {
    /// The signal these words belong to.
    const GSN: Gsn;
    /// The number of data words; evaluating it checks the layout rules at compile time.
    const WORDS: usize = {
        assert!(core::mem::size_of::<Self>() % 4 == 0, "signal data must be whole 32-bit words");
        assert!(core::mem::size_of::<Self>() / 4 <= MAX_DATA_WORDS, "at most 25 data words");
        assert!(core::mem::align_of::<Self>() == 4, "signal data must be 4-byte aligned");
        core::mem::size_of::<Self>() / 4
    };

    /// The struct as data words, without copying.
    fn as_words(&self) -> &[u32] {
        let _check = Self::WORDS;
        bytemuck::cast_slice(core::slice::from_ref(self))
    }
}

/// Ties a `#[repr(C)]` `Pod` struct to its GSN and checks its layout at compile time.
///
/// ```
/// use signals::{gsn, signal_data};
/// #[repr(C)]
/// #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
/// pub struct MyPing { pub sequence: u32, pub sent_ns_low: u32, pub sent_ns_high: u32 }
/// signal_data!(MyPing => signals::Gsn(1200));
/// ```
#[macro_export]
macro_rules! signal_data {
    ($ty:ty => $gsn:expr) => {
        impl $crate::SignalData for $ty {
            const GSN: $crate::Gsn = $gsn;
        }
        const _: () = {
            assert!(core::mem::size_of::<$ty>() % 4 == 0, "signal data must be whole 32-bit words");
            assert!(
                core::mem::size_of::<$ty>() / 4 <= $crate::MAX_DATA_WORDS,
                "at most 25 data words"
            );
            assert!(core::mem::align_of::<$ty>() == 4, "signal data must be 4-byte aligned");
        };
    };
}

/// Why a received signal could not be read as a given struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypedError {
    /// The signal is another one.
    #[error("expected signal {expected}, got {found}")]
    WrongGsn { expected: Gsn, found: Gsn },
    /// The signal's data length does not match the struct.
    #[error("signal {gsn} has {found} data words, its struct has {expected}")]
    WrongLength { gsn: Gsn, expected: usize, found: usize },
}
