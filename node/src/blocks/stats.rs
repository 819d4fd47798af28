//! The statistics block: answers `STATS_REQ` with `STATS_CONF` carrying the node's counters,
//! and [`StatsReport::decode`] reads such an answer back.
//!
//! `STATS_CONF` layout (every u64 as two words, low then high):
//! ```text
//! data:      [request word 0 (echoed, 0 if none), threads, links, named counters]
//! section 0: per thread  [signals_run, rounds, sleeps, wakeups, congested_rounds, send_failures,
//!            signals_dropped] (14 words each)
//! section 1: per link    [peer node id, signals, bytes, batches, wakeups_sent,
//!            send_buffer_high_water_bytes, receiver_sleeps, cq_events] (15 words each), as the
//!            transporter layer reports
//! section 2: per named counter [owner block ref word, value] (3 words each)
//! ```
//! Invariant: the answer never exceeds `max_section_words` per section; what does not fit is
//! left out and the counts in the data words say how many entries each section holds. The
//! section buffers are allocated once, at creation.

use std::sync::Arc;

use signals::gsn::{StatsConf, StatsReq};
use signals::{
    gsn, BlockInstance, BlockRef, Limits, NodeId, Signal, SignalData, SignalView, TypedError,
    WriteOptions,
};

use crate::block::{Block, Context};
use crate::stats::{LinkCounters, NodeStats, ThreadSnapshot};

const THREAD_WORDS: usize = 14;
const LINK_WORDS: usize = 1 + 2 * LinkCounters::COUNT;
const NAMED_WORDS: usize = 3;

/// The statistics block.
#[derive(Debug)]
pub struct Statistics {
    node_stats: Arc<NodeStats>,
    sections: [Vec<u32>; 3],
    capacity: usize,
    /// Words the three sections may take together: the largest signal less the answer's header,
    /// data and section lengths (and a signal id and checksum, were they used).
    budget: usize,
}

fn push_u64(out: &mut Vec<u32>, v: u64) {
    out.push(v as u32);
    out.push((v >> 32) as u32);
}

fn read_u64(words: &[u32], at: usize) -> u64 {
    words.get(at).copied().unwrap_or(0) as u64
        | (words.get(at + 1).copied().unwrap_or(0) as u64) << 32
}

impl Statistics {
    /// A statistics block reporting `node_stats`, keeping each section within `limits`.
    pub fn new(node_stats: Arc<NodeStats>, limits: Limits) -> Statistics {
        let capacity = limits.max_section_words();
        let sections = [
            Vec::with_capacity(capacity),
            Vec::with_capacity(capacity),
            Vec::with_capacity(capacity),
        ];
        let empty: [&[u32]; 3] = [&[], &[], &[]];
        let here = BlockRef::new(NodeId::MIN, super::STATS, BlockInstance(0));
        let overhead = Signal::new(gsn::STATS_CONF, here, here)
            .data(&[0; 4])
            .sections(&empty)
            .signal_id(0)
            .wire_words(WriteOptions { checksum: true });
        let budget = limits.max_signal_words().saturating_sub(overhead);
        Statistics { node_stats, sections, capacity, budget }
    }

    /// Fills the three sections; returns (threads, links, named) entry counts.
    fn fill(&mut self) -> [u32; 3] {
        let cap = self.capacity;
        // What is left of the answer's room for all three sections.
        let mut room = self.budget;
        let mut fits = |section: &Vec<u32>, words: usize| {
            let fit = section.len() + words <= cap && words <= room;
            if fit {
                room -= words;
            }
            fit
        };
        let [threads, links, named] = &mut self.sections;
        threads.clear();
        links.clear();
        named.clear();
        let mut counts = [0u32; 3];
        for t in self.node_stats.threads() {
            if !fits(threads, THREAD_WORDS) {
                break;
            }
            let s = t.snapshot();
            for v in [
                s.signals_run,
                s.rounds,
                s.sleeps,
                s.wakeups,
                s.congested_rounds,
                s.send_failures,
                s.signals_dropped,
            ] {
                push_u64(threads, v);
            }
            counts[0] += 1;
        }
        self.node_stats.for_each_link(&mut |l: LinkCounters| {
            if fits(links, LINK_WORDS) {
                links.push(l.peer.map_or(0, |p| p.get() as u32));
                for v in l.values() {
                    push_u64(links, v);
                }
                counts[1] += 1;
            }
        });
        for t in 0..self.node_stats.threads().len() {
            if let Some(n) = self.node_stats.named(t) {
                n.for_each(|owner, _name, value| {
                    if fits(named, NAMED_WORDS) {
                        named.push(owner.to_word());
                        push_u64(named, value);
                        counts[2] += 1;
                    }
                });
            }
        }
        counts
    }

    fn answer(&mut self, req: &SignalView<'_>, ctx: &mut Context<'_>) {
        let Some(&StatsReq { request }) = ctx.typed::<StatsReq>(req) else { return };
        let [threads, links, named] = self.fill();
        let data = StatsConf { request, threads, links, named };
        let [s0, s1, s2] = &self.sections;
        let sections: [&[u32]; 3] = [s0, s1, s2];
        let conf =
            ctx.signal(gsn::STATS_CONF, req.sender()).data(data.as_words()).sections(&sections);
        if let Err(e) = ctx.send(&conf) {
            tracing::warn!(to = %req.sender(), error = %e, "could not answer STATS_REQ");
        }
    }
}

impl Block for Statistics {
    fn execute(&mut self, signal: &SignalView<'_>, ctx: &mut Context<'_>) {
        match signal.gsn() {
            gsn::STATS_REQ => self.answer(signal, ctx),
            gsn::START_ORD | gsn::STOP_REQ => {}
            _ => ctx.unhandled(signal),
        }
    }
}

/// A decoded `STATS_CONF`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsReport {
    /// The request word echoed back.
    pub request: u32,
    /// Per block thread.
    pub threads: Vec<ThreadSnapshot>,
    /// Per link.
    pub links: Vec<LinkCounters>,
    /// Named counters: owner and value.
    pub named: Vec<(BlockRef, u64)>,
}

/// A `STATS_CONF` that does not follow the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed STATS_CONF: {0}")]
pub struct BadStatsConf(pub &'static str);

impl StatsReport {
    /// Reads a `STATS_CONF`.
    pub fn decode(view: &SignalView<'_>) -> Result<StatsReport, BadStatsConf> {
        let &StatsConf { request, threads, links, named } =
            view.typed::<StatsConf>().map_err(|e| match e {
                TypedError::WrongGsn { .. } => BadStatsConf("not a STATS_CONF"),
                TypedError::WrongLength { .. } => BadStatsConf("expected 4 data words"),
            })?;
        let s = |i| view.section(i).unwrap_or(&[]);
        let (s0, s1, s2) = (s(0), s(1), s(2));
        if s0.len() != threads as usize * THREAD_WORDS
            || s1.len() != links as usize * LINK_WORDS
            || s2.len() != named as usize * NAMED_WORDS
        {
            return Err(BadStatsConf("section lengths do not match the counts"));
        }
        let threads = s0
            .chunks_exact(THREAD_WORDS)
            .map(|w| ThreadSnapshot {
                signals_run: read_u64(w, 0),
                rounds: read_u64(w, 2),
                sleeps: read_u64(w, 4),
                wakeups: read_u64(w, 6),
                congested_rounds: read_u64(w, 8),
                send_failures: read_u64(w, 10),
                signals_dropped: read_u64(w, 12),
            })
            .collect();
        let links = s1
            .chunks_exact(LINK_WORDS)
            .map(|w| {
                let values = std::array::from_fn(|i| read_u64(w, 1 + 2 * i));
                LinkCounters::from_values(NodeId::new(w[0]), values)
            })
            .collect();
        let mut named_out = Vec::new();
        for w in s2.chunks_exact(NAMED_WORDS) {
            let owner = BlockRef::from_word(w[0])
                .ok_or(BadStatsConf("named counter owner names node 0"))?;
            named_out.push((owner, read_u64(w, 1)));
        }
        Ok(StatsReport { request, threads, links, named: named_out })
    }
}
