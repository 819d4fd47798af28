//! The catalogue of global signal numbers: one constant and one name per signal, for dispatch,
//! logs and traces.
//!
//! Invariant: every number appears once (checked by a unit test), and `name` knows every
//! constant declared here. Numbers are part of the wire protocol: never renumber a signal,
//! only add new ones. Ranges: 1..=99 runtime and system blocks, 100..=199 transport and
//! membership, 200.. engine blocks.

use crate::ids::Gsn;

macro_rules! catalogue {
    ($($(#[$doc:meta])* $name:ident = $number:expr;)*) => {
        $( $(#[$doc])* pub const $name: Gsn = Gsn($number); )*

        /// Every catalogued signal, in declaration order.
        pub const ALL: &[(Gsn, &str)] = &[ $( ($name, stringify!($name)), )* ];

        /// The name of a catalogued signal, or `None`.
        pub fn name(gsn: Gsn) -> Option<&'static str> {
            match gsn.0 {
                $( $number => Some(stringify!($name)), )*
                _ => None,
            }
        }
    };
}

catalogue! {
    /// A block's message to itself after a delay or as a continuation step (NDB's CONTINUEB).
    CONTINUE = 1;
    /// Echo request: the receiver answers with `PING_CONF` carrying the same words and sections.
    PING_REQ = 2;
    /// Echo answer.
    PING_CONF = 3;
    /// Asks a node's statistics block for its counters.
    STATS_REQ = 4;
    /// The counters, as words and sections.
    STATS_CONF = 5;
    /// Starts a block after the node has loaded its configuration.
    START_ORD = 6;
    /// Asks a node to stop in order.
    STOP_REQ = 7;
    /// Heartbeat between membership blocks.
    HEARTBEAT = 100;
    /// A link to a node failed, or a node was declared dead.
    NODE_FAILREP = 101;
    /// A link to a node came up.
    NODE_CONNECTED = 102;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_named() {
        for (i, (gsn, text)) in ALL.iter().enumerate() {
            assert_eq!(name(*gsn), Some(*text));
            for (other, other_text) in &ALL[i + 1..] {
                assert_ne!(gsn, other, "{text} and {other_text} share a number");
            }
        }
        assert_eq!(name(Gsn(0)), None);
    }
}
