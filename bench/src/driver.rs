//! The driver blocks of the full-stack benchmarks: blocks like any other, placed on thread 0 of
//! the benchmark's own node, talking to the echo and statistics blocks of the peer node (another
//! process) or of the same node (`local`).
//!
//! - [`Pinger`]: sends `PING_REQ` to the echo block, records each round trip (from the handler's
//!   `send` to the handler that runs the `PING_CONF`) in an HDR histogram, and after
//!   `warmup + count` round trips hands the histogram of the last `count` to the bench thread.
//! - [`Streamer`]: asks the peer's statistics block for its counters, sends `count` [`ITEM`]
//!   signals one way to the echo block, `batch` per handler run (so one round of the block
//!   thread, one hand-off to the transporter, per batch), then one `PING_REQ` as an end marker
//!   (signals from one block to another arrive in order, so its answer means every item ran on
//!   the receiver), and asks for the counters again.
//!
//! Invariant: a driver reports exactly once, a result or an error naming what went wrong; a
//! full send buffer or job buffer is back-pressure (the driver continues in a later round),
//! never a lost item.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use node::blocks::stats::StatsReport;
use node::{Block, Context, SendError};
use signals::{gsn, BlockNumber, BlockRef, Gsn, SignalView};

use crate::limit::{BlockPairs, Interleaved, Lines};
use crate::report::{histogram, record};

/// The driver block's number (outside the system range 1..=99).
pub const DRIVER: BlockNumber = BlockNumber(210);
/// The one-way stream's signal: no block handles it, so the echo block runs it and ignores it.
pub const ITEM: Gsn = Gsn(60100);

/// Asks a [`LinesEcho`] to echo one block of cache-line round trips (data word 0: the phase).
pub const LINES_ORD: Gsn = Gsn(60101);
/// The block number of [`LinesEcho`].
pub const LINES_ECHO: BlockNumber = BlockNumber(211);

/// What the pinger and a [`LinesEcho`] share in an interleaved run: after every `block` round
/// trips through the runtime, the same two block threads run `block` round trips of the
/// cache-line reference.
#[derive(Debug)]
pub struct Interleave {
    lines: Lines,
    block: u64,
    /// The last phase the echo side entered (it then echoes that phase's block).
    echo_phase: AtomicU64,
}

impl Interleave {
    pub fn new(block: u64) -> std::io::Result<Interleave> {
        Ok(Interleave { lines: Lines::anonymous()?, block, echo_phase: AtomicU64::new(0) })
    }
}

/// The echo side of an interleaved run, on the echo block's thread: on `LINES_ORD` it echoes one
/// block of cache-line round trips inside its handler (its thread does nothing else meanwhile).
#[derive(Debug)]
pub struct LinesEcho {
    shared: Arc<Interleave>,
    value: u64,
}

impl LinesEcho {
    pub fn new(shared: Arc<Interleave>) -> LinesEcho {
        LinesEcho { shared, value: 0 }
    }
}

impl Block for LinesEcho {
    fn execute(&mut self, s: &SignalView<'_>, _ctx: &mut Context<'_>) {
        if s.gsn() != LINES_ORD {
            return;
        }
        let phase = u64::from(s.data().first().copied().unwrap_or(0));
        // SYNC: echo-phase. Release: the pinger starts the block once it sees this phase.
        self.shared.echo_phase.store(phase, Ordering::Release);
        for _ in 0..self.shared.block {
            self.value += 1;
            if !self.shared.lines.echo(self.value) {
                // The pinger stopped (its run failed): it reports why.
                return;
            }
        }
    }
}

/// What a [`Pinger`] measured.
#[derive(Debug)]
pub struct Pinged {
    /// The recorded round trips.
    pub hist: Histogram<u64>,
    /// The interleaved reference, when the run had one.
    pub interleaved: Option<Interleaved>,
}

/// An interleaved run's state in the pinger.
#[derive(Debug)]
struct PingerLines {
    shared: Arc<Interleave>,
    echo: BlockRef,
    pairs: BlockPairs,
    phase: u32,
}

/// Round trips of `PING_REQ`/`PING_CONF` between the driver and an echo block.
#[derive(Debug)]
pub struct Pinger {
    interleave: Option<PingerLines>,
    target: BlockRef,
    data: Vec<u32>,
    section: Vec<u32>,
    warmup: u64,
    total: u64,
    done_count: u64,
    sent_at: Instant,
    hist: Histogram<u64>,
    done: Option<mpsc::Sender<Result<Pinged, String>>>,
}

impl Pinger {
    /// Pings `target` with `data_words` data words and a section of `section_words` (none when
    /// 0), `warmup` unrecorded then `count` recorded. With `interleave` (the shared lines and
    /// the [`LinesEcho`]'s reference), every block of round trips is followed by a block of the
    /// cache-line reference between the same two threads.
    pub fn new(
        target: BlockRef,
        data_words: usize,
        section_words: usize,
        warmup: u64,
        count: u64,
        interleave: Option<(Arc<Interleave>, BlockRef)>,
        done: mpsc::Sender<Result<Pinged, String>>,
    ) -> Pinger {
        Pinger {
            interleave: interleave.map(|(shared, echo)| PingerLines {
                pairs: BlockPairs::new(shared.block),
                shared,
                echo,
                phase: 0,
            }),
            target,
            data: vec![0; data_words.max(1)],
            section: (0..section_words as u32).collect(),
            warmup,
            total: warmup + count,
            done_count: 0,
            sent_at: Instant::now(),
            hist: histogram(),
            done: Some(done),
        }
    }

    fn report(&mut self, result: Result<Histogram<u64>, String>) {
        if let Some(done) = self.done.take() {
            let interleaved = self.interleave.take().map(|l| l.pairs.finish());
            let _ = done.send(result.map(|hist| Pinged { hist, interleaved }));
        }
    }

    /// After a block of round trips: has the [`LinesEcho`] start a block of the reference, and
    /// joins it from a continuation (this round must end first, so the order reaches the other
    /// thread).
    fn start_lines(&mut self, ctx: &mut Context<'_>) -> bool {
        let Some(l) = self.interleave.as_mut() else { return false };
        if self.done_count % l.shared.block != 0 {
            return false;
        }
        l.phase += 1;
        let phase = [l.phase];
        let order = ctx.signal(LINES_ORD, l.echo).data(&phase);
        if let Err(e) = ctx.send(&order).and_then(|()| ctx.continue_later(&phase)) {
            self.report(Err(format!("starting the cache-line block failed: {e}")));
        }
        true
    }

    /// The continuation of [`Pinger::start_lines`]: once the echo side is in the phase, runs the
    /// block of the reference, then goes on pinging (or reports).
    fn run_lines(&mut self, ctx: &mut Context<'_>) {
        let measured = self.done_count > self.warmup;
        let Some(l) = self.interleave.as_mut() else { return };
        // SYNC: echo-phase (acquire side).
        if l.shared.echo_phase.load(Ordering::Acquire) != u64::from(l.phase) {
            // Not there yet: look again in a later round.
            if let Err(e) = ctx.continue_later(&[l.phase]) {
                self.report(Err(format!("waiting for the cache-line block failed: {e}")));
            }
            return;
        }
        if let Err(e) = l.pairs.run_reference(&l.shared.lines, l.shared.block, measured) {
            self.report(Err(e));
            return;
        }
        self.next(ctx);
    }

    /// Reports after the last round trip, else pings again.
    fn next(&mut self, ctx: &mut Context<'_>) {
        if self.done_count == self.total {
            let h = std::mem::replace(&mut self.hist, histogram());
            self.report(Ok(h));
        } else {
            self.ping(ctx);
        }
    }

    fn ping(&mut self, ctx: &mut Context<'_>) {
        self.data[0] = self.done_count as u32;
        self.sent_at = Instant::now();
        let sections = [self.section.as_slice()];
        let n = usize::from(!self.section.is_empty());
        let ping = ctx.signal(gsn::PING_REQ, self.target).data(&self.data).sections(&sections[..n]);
        if let Err(e) = ctx.send(&ping) {
            self.report(Err(format!("ping {} to {} failed: {e}", self.done_count, self.target)));
        }
    }

    fn answer(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        let rtt = self.sent_at.elapsed();
        let section_back = s.sections().next().unwrap_or(&[]);
        if s.sender() != self.target
            || s.data().first() != Some(&(self.done_count as u32))
            || section_back.len() != self.section.len()
            || (!self.section.is_empty() && section_back != self.section.as_slice())
        {
            let got = (s.sender(), s.data().first().copied());
            let want = (self.target, self.done_count);
            self.report(Err(format!("unexpected answer {got:?}, expected {want:?}")));
            return;
        }
        self.done_count += 1;
        if self.done_count > self.warmup {
            record(&mut self.hist, rtt);
            if let Some(l) = self.interleave.as_mut() {
                l.pairs.subject(rtt);
            }
        }
        if !self.start_lines(ctx) {
            self.next(ctx);
        }
    }
}

impl Block for Pinger {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match s.gsn() {
            gsn::START_ORD => self.ping(ctx),
            gsn::PING_CONF if self.done.is_some() => self.answer(s, ctx),
            gsn::CONTINUE if self.done.is_some() => self.run_lines(ctx),
            _ => {}
        }
    }
}

/// What a stream run saw.
#[derive(Clone, Debug)]
pub struct StreamOutcome {
    /// From the first item sent to the end marker's answer.
    pub elapsed: Duration,
    /// The receiving node's counters before the first item.
    pub before: StatsReport,
    /// The receiving node's counters after the end marker's answer.
    pub after: StatsReport,
    /// Sends refused by back-pressure (retried in a later round).
    pub refusals: u64,
}

/// Where a [`Streamer`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    CountersBefore,
    Sending,
    Marker,
    CountersAfter,
    Done,
}

/// One-way stream of [`ITEM`]s to an echo block, between two reads of the receiver's counters.
#[derive(Debug)]
pub struct Streamer {
    echo: BlockRef,
    stats: BlockRef,
    data: Vec<u32>,
    count: u64,
    batch: usize,
    sent: u64,
    refusals: u64,
    phase: Phase,
    started: Instant,
    elapsed: Duration,
    before: Option<StatsReport>,
    done: mpsc::Sender<Result<StreamOutcome, String>>,
}

impl Streamer {
    /// Streams `count` items of `data_words` words to `echo`, `batch` per handler run, reading
    /// the counters of the receiving node from its statistics block `stats`.
    pub fn new(
        echo: BlockRef,
        stats: BlockRef,
        data_words: usize,
        count: u64,
        batch: usize,
        done: mpsc::Sender<Result<StreamOutcome, String>>,
    ) -> Streamer {
        Streamer {
            echo,
            stats,
            data: vec![0; data_words],
            count,
            batch: batch.max(1),
            sent: 0,
            refusals: 0,
            phase: Phase::CountersBefore,
            started: Instant::now(),
            elapsed: Duration::ZERO,
            before: None,
            done,
        }
    }

    fn fail(&mut self, what: String) {
        self.phase = Phase::Done;
        let _ = self.done.send(Err(what));
    }

    fn ask_counters(&mut self, ctx: &mut Context<'_>) {
        if let Err(e) = ctx.send(&ctx.signal(gsn::STATS_REQ, self.stats).data(&[7])) {
            self.fail(format!("STATS_REQ to {} failed: {e}", self.stats));
        }
    }

    /// Sends up to one batch, then continues in a later round (or sends the end marker).
    fn send_batch(&mut self, ctx: &mut Context<'_>) {
        let mut in_batch = 0;
        while in_batch < self.batch && self.sent < self.count {
            if let Some(w) = self.data.first_mut() {
                *w = self.sent as u32;
            }
            match ctx.send(&ctx.signal(ITEM, self.echo).data(&self.data)) {
                Ok(()) => {
                    self.sent += 1;
                    in_batch += 1;
                }
                Err(SendError::JobBufferFull { .. })
                | Err(SendError::Remote(node::RemoteError::Overloaded { .. })) => {
                    self.refusals += 1;
                    break;
                }
                Err(e) => return self.fail(format!("item {} failed: {e}", self.sent)),
            }
        }
        if self.sent < self.count {
            if let Err(e) = ctx.continue_later(&[]) {
                self.fail(format!("could not continue the stream: {e}"));
            }
            return;
        }
        self.phase = Phase::Marker;
        let marker = [u32::MAX];
        if let Err(e) = ctx.send(&ctx.signal(gsn::PING_REQ, self.echo).data(&marker)) {
            self.fail(format!("end marker failed: {e}"));
        }
    }

    fn counters(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        let report = match StatsReport::decode(s) {
            Ok(r) => r,
            Err(e) => return self.fail(e.to_string()),
        };
        match self.phase {
            Phase::CountersBefore => {
                self.before = Some(report);
                self.phase = Phase::Sending;
                self.started = Instant::now();
                self.send_batch(ctx);
            }
            Phase::CountersAfter => {
                self.phase = Phase::Done;
                let outcome = StreamOutcome {
                    elapsed: self.elapsed,
                    before: self.before.take().unwrap_or_default(),
                    after: report,
                    refusals: self.refusals,
                };
                let _ = self.done.send(Ok(outcome));
            }
            _ => {}
        }
    }
}

impl Block for Streamer {
    fn execute(&mut self, s: &SignalView<'_>, ctx: &mut Context<'_>) {
        match (s.gsn(), self.phase) {
            (gsn::START_ORD, Phase::CountersBefore) => self.ask_counters(ctx),
            (gsn::STATS_CONF, _) => self.counters(s, ctx),
            (gsn::CONTINUE, Phase::Sending) => self.send_batch(ctx),
            (gsn::PING_CONF, Phase::Marker) => {
                self.elapsed = self.started.elapsed();
                self.phase = Phase::CountersAfter;
                self.ask_counters(ctx);
            }
            _ => {}
        }
    }
}
