//! Blocks of two nodes run in one thread by the harness: every signal they send is seen, held,
//! and delivered in the order the test chooses; timers fire only when the manual clock moves;
//! the same seed gives the same order.

use node::blocks::{self, ping::Echo};
use node::harness::Harness;
use node::{Block, Context};
use signals::{gsn, BlockInstance, BlockNumber, BlockRef, NodeId, Signal, SignalView};

const CALLER: BlockNumber = BlockNumber(220);

fn node(n: u32) -> NodeId {
    NodeId::new(n).unwrap()
}

/// At start, pings each target with its index; after each answer, waits 1 ms (a timer) and
/// then records the answer in a CONTINUE to itself.
#[derive(Debug)]
struct Caller {
    targets: Vec<BlockRef>,
}

impl Block for Caller {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => {
                for (i, t) in self.targets.iter().enumerate() {
                    ctx.send(&ctx.signal(gsn::PING_REQ, *t).data(&[i as u32])).unwrap();
                }
            }
            gsn::PING_CONF => {
                ctx.send_delayed(1_000_000, gsn::CONTINUE, s.data()).unwrap();
            }
            gsn::CONTINUE | gsn::STOP_REQ => {}
            _ => ctx.unhandled(s),
        }
    }
}

fn harness() -> (Harness, BlockRef, [BlockRef; 2]) {
    let mut h = Harness::new();
    let echoes = [
        h.place(node(1), blocks::PING, BlockInstance(0), Box::new(Echo::new())).unwrap(),
        h.place(node(2), blocks::PING, BlockInstance(0), Box::new(Echo::new())).unwrap(),
    ];
    let caller = Caller { targets: echoes.to_vec() };
    let me = h.place(node(2), CALLER, BlockInstance(0), Box::new(caller)).unwrap();
    h.start().unwrap();
    (h, me, echoes)
}

#[test]
fn the_harness_holds_every_signal_and_delivers_in_the_chosen_order() {
    let (mut h, me, [remote_echo, local_echo]) = harness();
    assert!(h.started());
    // Both pings are pending, in send order: one to the other node, one to the same node.
    let pending: Vec<_> = h.pending().iter().map(|e| (e.gsn(), e.receiver())).collect();
    assert_eq!(pending, vec![(gsn::PING_REQ, remote_echo), (gsn::PING_REQ, local_echo)]);
    // Deliver the second first.
    let first = h.deliver(1).unwrap();
    assert_eq!(first.receiver(), local_echo);
    assert_eq!(h.pending().len(), 2, "the local echo's answer joined the remote ping");
    assert_eq!(h.pending()[1].gsn(), gsn::PING_CONF);
    assert_eq!(h.pending()[1].data(), vec![1]);
    assert_eq!(h.run(10), 3);
    assert!(h.pending().is_empty());
    // The answers set timers; nothing fires until the clock moves past them.
    assert_eq!(h.advance_ns(999_999), 0);
    assert_eq!(h.advance_ns(1), 2);
    let log: Vec<_> = h.log().iter().map(|e| (e.gsn(), e.sender(), e.receiver())).collect();
    assert_eq!(
        log,
        vec![
            (gsn::PING_REQ, me, remote_echo),
            (gsn::PING_REQ, me, local_echo),
            (gsn::PING_CONF, local_echo, me),
            (gsn::PING_CONF, remote_echo, me),
        ]
    );
    // A signal for a node outside the harness is handed to the test.
    let outsider = BlockRef::new(node(9), blocks::PING, BlockInstance(0));
    h.inject(&Signal::new(gsn::PING_REQ, outsider, local_echo).data(&[5])).unwrap();
    h.run(1);
    let outside = h.take_outside();
    assert_eq!(outside.len(), 1);
    assert_eq!((outside[0].gsn(), outside[0].receiver()), (gsn::PING_CONF, outsider));
    // An ill-sized request is the block's counted drop, here as on a thread.
    h.inject(&Signal::new(gsn::PING_REQ, outsider, local_echo)).unwrap();
    h.run(1);
    assert_eq!(h.dropped(node(2)), 1);
    assert!(h.pending().is_empty());
    h.stop();
}

#[test]
fn the_same_seed_gives_the_same_order() {
    let order = |seed| {
        let (mut h, _, _) = harness();
        h.run_random(seed, 100);
        h.log().iter().map(|e| (e.gsn(), e.sender(), e.receiver())).collect::<Vec<_>>()
    };
    assert_eq!(order(7), order(7));
    let orders: std::collections::HashSet<_> = (0..32).map(order).collect();
    assert!(orders.len() > 1, "different seeds reach different orders");
}
