//! Protocols declared where they are used: any crate names its signals (GSN, name, and the
//! shape of their data words) with [`protocol!`](crate::protocol), and every protocol a binary
//! runs is registered once in a [`ProtocolSet`], which refuses a number or a name declared twice
//! and says which two protocols clash.
//!
//! A signal's data is either a `#[repr(C)]` `Pod` struct ([`Payload::Exact`]: the data words are
//! exactly the struct), a struct followed by more words ([`Payload::Head`]: at least the struct),
//! or free ([`Payload::Free`]). Handlers read the struct in place
//! ([`SignalView::typed`](crate::SignalView::typed) and
//! [`SignalView::typed_head`](crate::SignalView::typed_head)); a signal whose length does not fit
//! its declaration is the runtime's counted drop, never a panic.
//!
//! Numbers are part of the wire protocol: never renumber a signal, only add. Ranges: 1..=99
//! runtime and system blocks, 100..=199 transport and membership, 200..=999 engine, 1000..
//! applications and tests. The set is modelled on NDB's single `GlobalSignalNumbers.h`, made
//! open: each protocol is a list beside the code that speaks it, and the check NDB gets from one
//! header is done when the protocols are registered.

use std::sync::RwLock;

use crate::ids::Gsn;

/// How long a signal's data part is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Any number of words (read by index or as a whole).
    Free,
    /// Exactly this many words (a typed struct).
    Exact(usize),
    /// At least this many words: a typed struct followed by more.
    Head(usize),
}

impl Payload {
    /// Whether `words` data words fit this declaration.
    #[inline]
    pub fn accepts(self, words: usize) -> bool {
        match self {
            Payload::Free => true,
            Payload::Exact(n) => words == n,
            Payload::Head(n) => words >= n,
        }
    }
}

/// One declared signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalSpec {
    /// Its number.
    pub gsn: Gsn,
    /// Its name, as declared.
    pub name: &'static str,
    /// The shape of its data words.
    pub payload: Payload,
}

/// A named list of signals, declared with [`protocol!`](crate::protocol).
#[derive(Debug, PartialEq, Eq)]
pub struct Protocol {
    /// The protocol's name (for errors and logs).
    pub name: &'static str,
    /// Its signals.
    pub signals: &'static [SignalSpec],
}

impl Protocol {
    /// The declaration of `gsn` in this protocol.
    pub fn spec(&self, gsn: Gsn) -> Option<&'static SignalSpec> {
        self.signals.iter().find(|s| s.gsn == gsn)
    }
}

/// Two declarations that cannot both be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolClash {
    /// One number, two signals.
    #[error("GSN {gsn} is declared twice: {first_signal} in protocol {first} and {second_signal} in protocol {second}")]
    Number {
        gsn: u16,
        first: &'static str,
        first_signal: &'static str,
        second: &'static str,
        second_signal: &'static str,
    },
    /// One name, two numbers.
    #[error("signal name {name} is declared twice: GSN {first_gsn} in protocol {first} and GSN {second_gsn} in protocol {second}")]
    Name {
        name: &'static str,
        first: &'static str,
        first_gsn: u16,
        second: &'static str,
        second_gsn: u16,
    },
    /// Two protocols of one name with different signals.
    #[error("two different protocols are named {name}")]
    ProtocolName { name: &'static str },
}

/// The protocols a node (or a client) speaks, checked to be disjoint.
#[derive(Clone, Debug, Default)]
pub struct ProtocolSet {
    protocols: Vec<&'static Protocol>,
    /// (gsn, spec, protocol name), sorted by gsn.
    by_gsn: Vec<(Gsn, &'static SignalSpec, &'static str)>,
}

impl ProtocolSet {
    /// An empty set.
    pub fn new() -> ProtocolSet {
        ProtocolSet::default()
    }

    /// The set with the runtime's own protocol ([`crate::gsn::SYSTEM`]) registered.
    pub fn with_system() -> ProtocolSet {
        let mut set = ProtocolSet::new();
        if let Err(e) = set.register(&crate::gsn::SYSTEM) {
            unreachable!("the system protocol alone cannot clash: {e}");
        }
        set
    }

    /// Registers `protocol`. Registering the same protocol again does nothing; a number or a
    /// name that another protocol (or this one) already declares is refused naming both.
    pub fn register(&mut self, protocol: &'static Protocol) -> Result<(), ProtocolClash> {
        if self.protocols.iter().any(|p| std::ptr::eq(*p, protocol) || **p == *protocol) {
            return Ok(());
        }
        if self.protocols.iter().any(|p| p.name == protocol.name) {
            return Err(ProtocolClash::ProtocolName { name: protocol.name });
        }
        let mut added: Vec<(Gsn, &'static SignalSpec, &'static str)> = Vec::new();
        for spec in protocol.signals {
            let known = self.by_gsn.iter().chain(added.iter());
            for &(gsn, other, owner) in known {
                if gsn == spec.gsn {
                    return Err(ProtocolClash::Number {
                        gsn: gsn.0,
                        first: owner,
                        first_signal: other.name,
                        second: protocol.name,
                        second_signal: spec.name,
                    });
                }
                if other.name == spec.name {
                    return Err(ProtocolClash::Name {
                        name: spec.name,
                        first: owner,
                        first_gsn: gsn.0,
                        second: protocol.name,
                        second_gsn: spec.gsn.0,
                    });
                }
            }
            added.push((spec.gsn, spec, protocol.name));
        }
        self.by_gsn.extend(added);
        self.by_gsn.sort_by_key(|(g, _, _)| *g);
        self.protocols.push(protocol);
        publish_names(protocol);
        Ok(())
    }

    /// The declaration of `gsn`, and the protocol that declares it.
    #[inline]
    pub fn spec(&self, gsn: Gsn) -> Option<(&'static SignalSpec, &'static str)> {
        let i = self.by_gsn.binary_search_by_key(&gsn, |(g, _, _)| *g).ok()?;
        let (_, spec, owner) = self.by_gsn[i];
        Some((spec, owner))
    }

    /// The registered protocols, in registration order.
    pub fn protocols(&self) -> &[&'static Protocol] {
        &self.protocols
    }

    /// Every registered signal, by number.
    pub fn signals(&self) -> impl Iterator<Item = &'static SignalSpec> + '_ {
        self.by_gsn.iter().map(|(_, s, _)| *s)
    }
}

/// Every protocol registered anywhere in this process, for naming signals in logs
/// ([`Gsn`]'s `Display`). Registration is rare (start-up); lookups take a read lock.
static NAMES: RwLock<Vec<&'static Protocol>> = RwLock::new(Vec::new());

fn publish_names(protocol: &'static Protocol) {
    let mut names = NAMES.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !names.iter().any(|p| std::ptr::eq(*p, protocol)) {
        names.push(protocol);
    }
}

/// The name of `gsn` in any protocol registered in this process, or in the system protocol.
pub fn name_of(gsn: Gsn) -> Option<&'static str> {
    if let Some(s) = crate::gsn::SYSTEM.spec(gsn) {
        return Some(s.name);
    }
    let names = NAMES.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    names.iter().find_map(|p| p.spec(gsn)).map(|s| s.name)
}

/// Declares a protocol: one `Gsn` constant per signal, the `SignalData` binding (and compile-time
/// layout checks) of each typed payload, and a `static` [`Protocol`] listing them all.
///
/// A struct belongs to one signal. `=> Type` declares data that is exactly the struct; `=> Type, ..` a struct followed by more
/// words; no type, free data words.
///
/// ```
/// use signals::{protocol, ProtocolSet};
/// #[repr(C)]
/// #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
/// pub struct CounterReq { pub counter: u32, pub add: u32 }
/// #[repr(C)]
/// #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
/// pub struct CounterConf { pub value: u32 }
///
/// protocol! {
///     /// The counter example.
///     pub protocol COUNTER = "counter" {
///         /// Adds to a counter.
///         COUNTER_REQ = 1000 => CounterReq;
///         /// The new value, then any words.
///         COUNTER_CONF = 1001 => CounterConf, ..;
///         /// Free words.
///         COUNTER_REF = 1002;
///     }
/// }
/// let mut set = ProtocolSet::with_system();
/// set.register(&COUNTER).unwrap();
/// assert_eq!(set.spec(COUNTER_REQ).unwrap().0.name, "COUNTER_REQ");
/// ```
#[macro_export]
macro_rules! protocol {
    (
        $(#[$meta:meta])*
        $vis:vis protocol $proto:ident = $pname:literal {
            $( $(#[$doc:meta])* $name:ident = $number:literal $(=> $ty:ty $(, $rest:tt)?)? ; )*
        }
    ) => {
        $( $(#[$doc])* $vis const $name: $crate::Gsn = $crate::Gsn($number); )*
        $( $( $crate::signal_data!($ty => $name); )? )*
        $(#[$meta])*
        $vis static $proto: $crate::Protocol = $crate::Protocol {
            name: $pname,
            signals: &[ $( $crate::SignalSpec {
                gsn: $crate::Gsn($number),
                name: stringify!($name),
                payload: $crate::protocol!(@payload $($ty $(, $rest)?)?),
            }, )* ],
        };
    };
    (@payload) => { $crate::Payload::Free };
    (@payload $ty:ty) => { $crate::Payload::Exact(core::mem::size_of::<$ty>() / 4) };
    (@payload $ty:ty, ..) => { $crate::Payload::Head(core::mem::size_of::<$ty>() / 4) };
}

#[cfg(test)]
mod tests {
    // The protocols below are declared to be registered; not every constant is read.
    #![allow(dead_code)]
    use super::*;

    crate::protocol! {
        pub protocol ONE = "one" {
            ONE_A = 1500;
            ONE_B = 1501;
        }
    }
    crate::protocol! {
        pub protocol CLASHES_BY_NUMBER = "clashes-by-number" {
            OTHER_A = 1501;
        }
    }
    mod by_name {
        crate::protocol! {
            pub protocol CLASHES_BY_NAME = "clashes-by-name" {
                ONE_A = 1600;
            }
        }
    }
    use by_name::CLASHES_BY_NAME;

    #[test]
    fn a_duplicate_number_is_refused_naming_both() {
        let mut set = ProtocolSet::with_system();
        set.register(&ONE).unwrap();
        set.register(&ONE).unwrap();
        let e = set.register(&CLASHES_BY_NUMBER).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("ONE_B") && text.contains("one"), "{text}");
        assert!(text.contains("OTHER_A") && text.contains("clashes-by-number"), "{text}");
        assert!(set.spec(Gsn(1501)).is_some_and(|(s, _)| s.name == "ONE_B"));
        assert!(set.spec(Gsn(1600)).is_none());
    }

    #[test]
    fn a_duplicate_name_is_refused_naming_both() {
        let mut set = ProtocolSet::new();
        set.register(&ONE).unwrap();
        let e = set.register(&CLASHES_BY_NAME).unwrap_err();
        assert_eq!(
            e,
            ProtocolClash::Name {
                name: "ONE_A",
                first: "one",
                first_gsn: 1500,
                second: "clashes-by-name",
                second_gsn: 1600
            }
        );
    }

    #[test]
    fn registered_names_show_in_display() {
        let mut set = ProtocolSet::new();
        set.register(&ONE).unwrap();
        assert_eq!(Gsn(1500).to_string(), "ONE_A");
        assert_eq!(Gsn(1999).to_string(), "GSN_1999");
    }

    #[test]
    fn payload_shapes() {
        assert!(Payload::Free.accepts(0));
        assert!(Payload::Exact(2).accepts(2) && !Payload::Exact(2).accepts(3));
        assert!(Payload::Head(2).accepts(5) && !Payload::Head(2).accepts(1));
    }
}
