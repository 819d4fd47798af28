//! The arbitrator: an API node that decides which side of a possible network partition keeps
//! running (NDB's arbitrator, run here by `blockwire arbitrator`). When the survivors of a
//! data-node failure are no majority and hold no whole node group, the president asks the
//! configured arbitrator (`[[blocks]] kind = "membership"`, `arbitrator = ID`) before it goes
//! on; a side that is refused, or gets no answer, stops.
//!
//! The rule: the first request is granted and its set of survivors remembered for `memory`;
//! while remembered, a request from the same side (a subset of that set: a retry, or a later
//! failure among those survivors) is granted and any other refused, so two sides can never
//! both be granted. A request carrying another cluster's id is refused.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use engine::protocol::{join, ArbitAnswer, ArbitReq, ARBIT_ANSWER};
use signals::{BlockRef, NodeId, Signal, SignalData, SignalView};

use crate::session::Session;
use crate::Result;

/// An `ARBIT_REQ` as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    from: BlockRef,
    round: u32,
    ticket: u64,
    survivors: BTreeSet<NodeId>,
}

impl Request {
    /// Reads a request; `None` when malformed.
    pub(crate) fn read(view: &SignalView<'_>) -> Option<Request> {
        let req = view.typed::<ArbitReq>().ok()?;
        let survivors = view.section(0)?.iter().map(|w| NodeId::new(*w)).collect::<Option<BTreeSet<NodeId>>>()?;
        Some(Request { from: view.sender(), round: req.round, ticket: join(req.ticket_low, req.ticket_high), survivors })
    }
}

/// One decision, as the arbitrator logs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The data node that asked (the president of its side).
    pub president: NodeId,
    /// The survivors it asked for.
    pub survivors: Vec<NodeId>,
    /// Whether they may go on.
    pub granted: bool,
    /// Why, in words.
    pub reason: String,
}

/// The arbitrator's memory of what it granted.
#[derive(Debug)]
pub struct Arbitrator {
    cluster_id: u64,
    memory: Duration,
    granted: Option<(BTreeSet<NodeId>, Instant)>,
}

impl Arbitrator {
    /// An arbitrator for cluster `cluster_id` that remembers a grant for `memory`.
    pub fn new(cluster_id: u64, memory: Duration) -> Arbitrator {
        Arbitrator { cluster_id, memory, granted: None }
    }

    fn decide(&mut self, req: &Request, now: Instant) -> (bool, String) {
        if req.ticket != self.cluster_id {
            return (false, format!("the request names cluster {}, not {}", req.ticket, self.cluster_id));
        }
        if req.survivors.is_empty() {
            return (false, "the request names no survivors".into());
        }
        match &self.granted {
            Some((set, at)) if now.duration_since(*at) < self.memory => {
                if req.survivors.is_subset(set) {
                    let set = set.clone();
                    self.granted = Some((set, now));
                    (true, "the side granted before".into())
                } else {
                    (false, format!("another side was granted: data nodes {:?}", set.iter().map(|n| n.get()).collect::<Vec<_>>()))
                }
            }
            _ => {
                self.granted = Some((req.survivors.clone(), now));
                (true, "the first side to ask".into())
            }
        }
    }
}

impl<'c> Session<'c> {
    /// Answers arbitration requests until `stop` returns true, calling `log` with each
    /// decision.
    pub fn arbitrate(
        &mut self,
        arbitrator: &mut Arbitrator,
        mut stop: impl FnMut() -> bool,
        mut log: impl FnMut(&Decision),
    ) -> Result<()> {
        while !stop() {
            self.pump(Duration::from_millis(5));
            for req in std::mem::take(&mut self.inbox.arbitration) {
                let (granted, reason) = arbitrator.decide(&req, Instant::now());
                let answer = ArbitAnswer { round: req.round, granted: u32::from(granted) };
                let sent = self.pack(req.from, &Signal::new(ARBIT_ANSWER, self.me, req.from).data(answer.as_words()));
                self.send.flush();
                log(&Decision {
                    president: req.from.node,
                    survivors: req.survivors.iter().copied().collect(),
                    granted,
                    reason: match sent {
                        Ok(()) => reason,
                        Err(e) => format!("{reason} (the answer could not be sent: {e})"),
                    },
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(nodes: &[u32], ticket: u64) -> Request {
        Request {
            from: BlockRef::new(NodeId::new(nodes[0]).unwrap(), engine::MEMBERSHIP, signals::BlockInstance(0)),
            round: 1,
            ticket,
            survivors: nodes.iter().map(|n| NodeId::new(*n).unwrap()).collect(),
        }
    }

    #[test]
    fn only_one_side_is_ever_granted_while_remembered() {
        let mut a = Arbitrator::new(7, Duration::from_secs(30));
        let t = Instant::now();
        assert!(a.decide(&req(&[1, 3], 7), t).0);
        assert!(!a.decide(&req(&[2, 4], 7), t).0, "the other side");
        assert!(!a.decide(&req(&[1, 2], 7), t).0, "a set overlapping both sides");
        assert!(a.decide(&req(&[1, 3], 7), t).0, "the same side again");
        assert!(a.decide(&req(&[3], 7), t).0, "a later failure within the granted side");
        assert!(!a.decide(&req(&[1], 8), t).0, "another cluster's ticket");
        let later = t + Duration::from_secs(31);
        assert!(a.decide(&req(&[2, 4], 7), later).0, "forgotten after the memory");
    }
}
