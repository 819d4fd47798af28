//! A block thread: runs rounds over the block instances it hosts until told to stop.
//!
//! One round: every priority-A signal waiting (A is always served first, and again between
//! B lanes); then at most `b_signals_per_round` priority-B signals from each inbound lane
//! (fairness between senders); then due timers; then the remote sink's receive poll; then the
//! flush that hands consumed room back, publishes the job buffers written, and hands send buffers to the transporters (one
//! hand-off per peer per round). An idle thread spins `spin_time_us`, then sleeps by the
//! protocol of [`crate::sleep`] in its epoll set, until a sender, a timer or a descriptor wakes
//! it. The shape follows NDB's multi-threaded scheduler loop (`mt.cpp`: run job buffers, send,
//! spin, sleep), rewritten from the description only.
//!
//! Back-pressure: before each B signal the thread checks its outbound B lanes. While a lane to
//! thread `t` lacks room for one largest signal (congested), the thread runs B signals only
//! from lanes whose producer is a congested target (that includes its own lane to itself) or
//! itself waits on this thread (see [`crate::congestion`]): running those is what frees the
//! room someone waits for, so threads congested on each other, two or round a longer cycle,
//! keep draining each other instead of deadlocking. A handler always finds room for at least
//! one largest signal per job buffer; past that a send returns `JobBufferFull`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use signals::gsn::{IoReady, StartOrd, StopReq};
use signals::{
    gsn, BatchWalker, BatchWriter, BlockRef, Limits, NodeId, Priority, Signal, SignalData,
    SignalView, WriteOptions,
};
use transporter::StallBackoff;

use crate::block::{Block, Context, ThreadLocal};
use crate::clock::Clock;
use crate::congestion::Waits;
use crate::io::Ready;
use crate::jobbuf::JobReader;
use crate::lifecycle::BlockLife;
use crate::outbox::Outbox;
use crate::parker::Parker;
use crate::remote::{Flushed, LocalReceive, RouteError};
use crate::stats::{NamedCounters, NodeStats};
use crate::sync::Flag;

/// The longest a thread sleeps without a reason to wake (so a test clock moved by hand, or a
/// lost descriptor event, costs at most this much delay).
const SLEEP_MAX: Duration = Duration::from_millis(100);

/// Room for one timer signal (short part and long section), start order or readiness packed
/// as a batch of one.
const SCRATCH_WORDS: usize = 128;

/// Per-thread knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadTuning {
    /// Spin this long after running out of work before sleeping.
    pub spin_time: Duration,
    /// At most this many B signals from one lane per round.
    pub b_signals_per_round: usize,
    /// Signal limits (for walking job buffers and packing timers).
    pub limits: Limits,
}

/// Everything a handler may touch, apart from the inbound lanes being read.
#[derive(Debug)]
pub(crate) struct Exec {
    pub(crate) index: usize,
    pub(crate) blocks: Vec<(BlockRef, Box<dyn Block>)>,
    pub(crate) lives: Vec<BlockLife>,
    pub(crate) out: Outbox,
    pub(crate) local: ThreadLocal,
    pub(crate) named: Arc<NamedCounters>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) signals_run: u64,
    /// The last start phase this thread ordered its blocks to run.
    pub(crate) phase_ordered: u32,
    /// `STOP_REQ` was sent to this thread's blocks.
    pub(crate) stop_ordered: bool,
}

impl Exec {
    /// Thread `index`'s blocks (initialised, with their `named` counters) and what they use.
    pub(crate) fn new(
        index: usize,
        blocks: Vec<(BlockRef, Box<dyn Block>)>,
        out: Outbox,
        local: ThreadLocal,
        named: Arc<NamedCounters>,
        clock: Arc<dyn Clock>,
    ) -> Exec {
        Exec {
            index,
            lives: vec![BlockLife::default(); blocks.len()],
            blocks,
            out,
            local,
            named,
            clock,
            signals_run: 0,
            phase_ordered: 0,
            stop_ordered: false,
        }
    }

    /// Runs one signal in the block it names, which must live on this thread.
    #[inline]
    pub(crate) fn dispatch(&mut self, view: &SignalView<'_>) {
        let at = self.out.routing.locate_ref(view.receiver());
        let slot = match at {
            Some(at) if at.thread as usize == self.index => at.slot as usize,
            // Senders route by the same table, and inbound routers check it: a signal here
            // for another thread is a runtime bug.
            _ => unreachable!(
                "signal {} for {} routed to thread {}",
                view.gsn(),
                view.receiver(),
                self.index
            ),
        };
        self.dispatch_to(slot, view);
    }

    /// Runs one signal in the block of `slot`.
    #[inline]
    pub(crate) fn dispatch_to(&mut self, slot: usize, view: &SignalView<'_>) {
        let (me, block) = &mut self.blocks[slot];
        let mut ctx = Context {
            me: *me,
            slot,
            out: &mut self.out,
            local: &mut self.local,
            life: &mut self.lives[slot],
            counters: &self.named,
            clock: &*self.clock,
        };
        block.execute(view, &mut ctx);
        self.signals_run += 1;
    }

    /// Packs `signal` as a batch of one and runs it (timers, start orders, I/O readiness).
    pub(crate) fn dispatch_owned(&mut self, signal: &Signal<'_>, limits: Limits) {
        let mut scratch = [0u32; SCRATCH_WORDS];
        let mut writer = BatchWriter::new(&mut scratch, limits, WriteOptions::default());
        if let Err(e) = writer.push(signal) {
            unreachable!("a timer or start signal always fits its scratch page: {e}");
        }
        let len = writer.words().len();
        match BatchWalker::from_words(&scratch[..len], limits).next_signal() {
            Ok(Some(view)) => self.dispatch(&view),
            other => unreachable!("a signal just packed walks back: {other:?}"),
        }
    }

    /// Whether a start phase or the stop waits to be ordered to this thread's blocks.
    #[inline]
    pub(crate) fn lifecycle_due(&self) -> bool {
        let life = &self.local.lifecycle;
        let phase = life.phase();
        (phase <= life.last_phase() && self.phase_ordered < phase)
            || (!self.stop_ordered && life.stop_requested())
    }

    /// Orders the start phase in force (`START_ORD`) to every block of this thread that has not
    /// had it, and `STOP_REQ` once a stop is asked. Returns how many signals ran.
    pub(crate) fn run_lifecycle(&mut self, limits: Limits) -> usize {
        if !self.lifecycle_due() {
            return 0;
        }
        let life = self.local.lifecycle.clone();
        let (phase, last_phase) = (life.phase(), life.last_phase());
        let mut ran = 0;
        if phase <= last_phase && self.phase_ordered < phase && !self.stop_ordered {
            self.phase_ordered = phase;
            let order = StartOrd { phase, last_phase };
            for slot in 0..self.blocks.len() {
                let me = self.blocks[slot].0;
                let l = &mut self.lives[slot];
                (l.phase_ordered, l.deferred) = (phase, false);
                let start = Signal::new(gsn::START_ORD, me, me)
                    .priority(Priority::A)
                    .data(order.as_words());
                self.dispatch_owned(&start, limits);
                let l = &mut self.lives[slot];
                if !l.deferred && l.phase_done < phase && !l.stop_ordered {
                    l.phase_done = phase;
                    life.block_done(phase);
                }
                ran += 1;
            }
        }
        if !self.stop_ordered && life.stop_requested() {
            self.stop_ordered = true;
            let order = StopReq { grace_ms: life.grace_ms() };
            for slot in 0..self.blocks.len() {
                let me = self.blocks[slot].0;
                let l = &mut self.lives[slot];
                (l.stop_ordered, l.deferred) = (true, false);
                let stop =
                    Signal::new(gsn::STOP_REQ, me, me).priority(Priority::A).data(order.as_words());
                self.dispatch_owned(&stop, limits);
                let l = &mut self.lives[slot];
                if !l.deferred && !l.stop_done {
                    l.stop_done = true;
                    life.block_stopped();
                }
                ran += 1;
            }
        }
        ran
    }

    /// Runs `IO_READY` in the blocks whose watched descriptors are ready.
    pub(crate) fn run_io(&mut self, limits: Limits) -> usize {
        if self.local.io.is_empty() {
            return 0;
        }
        let mut ready: Ready = [(0, 0); 16];
        let n = self.local.io.ready(&mut ready);
        for &(slot, token) in &ready[..n] {
            let Some(&(me, _)) = self.blocks.get(slot) else { continue };
            let data = IoReady { token };
            let signal = Signal::new(gsn::IO_READY, me, me).data(data.as_words());
            self.dispatch_owned(&signal, limits);
        }
        n
    }

    /// Runs every timer that is due.
    pub(crate) fn fire_timers(&mut self, limits: Limits) -> usize {
        if self.local.timers.is_empty() {
            return 0;
        }
        let (now, mark) = (self.clock.now_ns(), self.local.timers.mark());
        let mut ran = 0;
        while let Some(timer) = self.local.timers.pop_due(now, mark) {
            let section = [timer.section()];
            let sections: &[&[u32]] = if timer.section().is_empty() { &[] } else { &section };
            let signal = Signal::new(timer.gsn, timer.block, timer.block)
                .data(timer.data())
                .sections(sections);
            self.dispatch_owned(&signal, limits);
            ran += 1;
        }
        ran
    }
}

/// One block thread and all it owns.
#[derive(Debug)]
pub(crate) struct BlockThread {
    pub(crate) exec: Exec,
    /// Inbound lanes by producer: block threads `0..threads`, then receive paths.
    pub(crate) inbound_a: Vec<JobReader>,
    pub(crate) inbound_b: Vec<JobReader>,
    pub(crate) block_threads: usize,
    pub(crate) parker: Arc<Parker>,
    pub(crate) stop: Arc<Flag>,
    pub(crate) tuning: ThreadTuning,
    pub(crate) stats: Arc<NodeStats>,
    pub(crate) cpu: Option<usize>,
    rounds: u64,
    sleeps: u64,
    wakeups: u64,
    congested_rounds: u64,
    /// Paces flushes while every peer with waiting signals is stalled.
    stall: StallBackoff,
    /// Every producer's congestion, this thread's included (published when it changes).
    waits: Arc<Waits>,
    published_mask: u64,
    /// The links this thread receives from itself (`threads.receive = 0`).
    receive: Option<Box<dyn LocalReceive>>,
    /// The thread slept on its receive side: the next poll looks at its epoll set too.
    receive_woken: bool,
    /// Received signals dropped (no such block, a sender not on the link's node).
    received_dropped: u64,
}

impl BlockThread {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        exec: Exec,
        inbound_a: Vec<JobReader>,
        inbound_b: Vec<JobReader>,
        block_threads: usize,
        parker: Arc<Parker>,
        stop: Arc<Flag>,
        tuning: ThreadTuning,
        stats: Arc<NodeStats>,
        cpu: Option<usize>,
        waits: Arc<Waits>,
    ) -> BlockThread {
        BlockThread {
            exec,
            inbound_a,
            inbound_b,
            block_threads,
            parker,
            stop,
            tuning,
            stats,
            cpu,
            rounds: 0,
            sleeps: 0,
            wakeups: 0,
            congested_rounds: 0,
            stall: StallBackoff::default(),
            waits,
            published_mask: 0,
            receive: None,
            receive_woken: false,
            received_dropped: 0,
        }
    }

    /// Makes this thread receive from `receive` itself (its descriptor joins the thread's
    /// epoll set).
    pub(crate) fn receive_here(&mut self, receive: Box<dyn LocalReceive>) -> std::io::Result<()> {
        self.exec.local.io.add_receive(receive.wait_fd())?;
        self.receive = Some(receive);
        Ok(())
    }

    /// The thread's body: pin, start the blocks, run rounds until stopped.
    pub(crate) fn run(mut self) {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                tracing::warn!(thread = self.exec.index, cpu, "could not pin block thread");
            }
        }
        tracing::debug!(
            thread = self.exec.index,
            blocks = self.exec.blocks.len(),
            "block thread started"
        );
        self.exec.run_lifecycle(self.tuning.limits);
        self.exec.out.flush();
        self.publish();
        while !self.stop.is_set() {
            if self.round() == 0 {
                self.idle();
            }
        }
        self.exec.out.flush();
        self.publish();
        tracing::debug!(thread = self.exec.index, rounds = self.rounds, "block thread stopped");
    }

    /// One round; returns how many signals ran.
    pub(crate) fn round(&mut self) -> usize {
        let mut ran = self.poll_receive();
        ran += self.run_a();
        for producer in 0..self.inbound_b.len() {
            ran += self.run_b(producer);
            ran += self.run_a();
        }
        ran += self.exec.fire_timers(self.tuning.limits);
        ran += self.exec.run_io(self.tuning.limits);
        ran += self.exec.run_lifecycle(self.tuning.limits);
        ran += self.poll_remote();
        // Published before the flush: the last sends of the round may have congested a lane.
        if self.congestion() != 0 {
            self.congested_rounds += 1;
        }
        // Signals first, then room: both are one store (and one fence, if anything moved) per
        // buffer per round, and the signals are what a waiting thread needs next.
        let flushed = self.exec.out.flush();
        self.note_flush(flushed);
        for lane in self.inbound_a.iter_mut().chain(self.inbound_b.iter_mut()) {
            lane.release();
        }
        self.rounds += 1;
        self.publish();
        ran
    }

    /// Keeps the back-off of a stalled peer (see [`StallBackoff`]).
    #[inline]
    fn note_flush(&mut self, flushed: Flushed) {
        self.stall.note(flushed.moved, flushed.blocked, Instant::now);
    }

    /// Whether signals wait for a peer and a flush may move them now: at once unless the last
    /// flush found the peers stalled, then when the back-off's retry is due.
    fn unsent_due(&self) -> bool {
        self.exec.out.remote.has_unsent() && self.stall.due(Instant::now)
    }

    /// Runs every waiting priority-A signal.
    fn run_a(&mut self) -> usize {
        let mut ran = 0;
        for lane in self.inbound_a.iter_mut() {
            // Most rounds find the A lanes empty: one load each says so.
            if !lane.has_signal() {
                continue;
            }
            while let Some(view) = lane.peek() {
                let len = view.wire_words().len();
                self.exec.dispatch(&view);
                lane.advance(len);
                ran += 1;
            }
        }
        ran
    }

    /// This thread's congestion mask (see [`Outbox::congestion_mask`]), published for the
    /// threads it waits on when it changes; a thread newly waited on is woken, since it may
    /// sleep with our lane unread (it ran nothing from it while congested itself).
    #[inline]
    fn congestion(&mut self) -> u64 {
        let mask = self.exec.out.congestion_mask();
        if mask != self.published_mask {
            let new = mask & !self.published_mask;
            self.published_mask = mask;
            self.waits.publish(self.exec.index, mask);
            for t in 0..self.block_threads.min(64) {
                if new & (1 << t) != 0 {
                    self.exec.out.wake(t);
                }
            }
        }
        mask
    }

    /// Whether B signals from `producer` may run under congestion `mask`: with none, all do;
    /// congested, those of a congested target's lane and of a producer that waits on us.
    #[inline]
    fn may_run(&self, producer: usize, mask: u64) -> bool {
        mask == 0
            || (producer < self.block_threads && mask & (1 << producer) != 0)
            || self.waits.waits_on(producer, self.exec.index)
    }

    /// Runs up to the per-round quota of B signals from one producer's lane.
    fn run_b(&mut self, producer: usize) -> usize {
        let mut ran = 0;
        while ran < self.tuning.b_signals_per_round {
            // An empty lane needs no congestion mask (a pass over every outbound lane).
            if !self.inbound_b[producer].has_signal() {
                break;
            }
            let mask = self.congestion();
            if !self.may_run(producer, mask) {
                break;
            }
            let lane = &mut self.inbound_b[producer];
            let Some(view) = lane.peek() else { break };
            let len = view.wire_words().len();
            self.exec.dispatch(&view);
            lane.advance(len);
            ran += 1;
        }
        ran
    }

    /// Receives from this thread's own links: a signal for a block of this thread runs at once,
    /// in place; one for another thread goes to that thread's lane (waiting for room while it
    /// is full, as a receive thread does, with the wait published so the thread drains us).
    fn poll_receive(&mut self) -> usize {
        let Some(receive) = self.receive.as_mut() else { return 0 };
        let woken = std::mem::take(&mut self.receive_woken);
        let BlockThread { exec, parker, waits, stop, received_dropped, published_mask, .. } = self;
        let mut deliver = |peer: NodeId, view: &SignalView<'_>| {
            let receiver = view.receiver();
            let why = if view.sender().node != peer {
                RouteError::WrongSender { peer, sender: view.sender() }
            } else if receiver.node != exec.out.routing.node() {
                RouteError::WrongNode { node: exec.out.routing.node(), receiver }
            } else {
                match exec.out.routing.locate(receiver.block, receiver.instance) {
                    Some(at) if at.thread as usize == exec.index => {
                        exec.dispatch_to(at.slot as usize, view);
                        return;
                    }
                    Some(_) => loop {
                        match exec.out.forward(view) {
                            Ok(()) => return,
                            Err(RouteError::Full { thread, priority }) if !stop.is_set() => {
                                wait_for_room(
                                    exec,
                                    parker,
                                    waits,
                                    *published_mask,
                                    thread,
                                    priority,
                                )
                            }
                            Err(e) => break e,
                        }
                    },
                    None => RouteError::UnknownBlock { receiver },
                }
            };
            *received_dropped += 1;
            tracing::warn!(peer = %peer, gsn = %view.gsn(), error = %why, dropped = *received_dropped, "received signal dropped");
        };
        receive.poll(woken, &mut deliver)
    }

    /// Lets the remote sink receive; what it receives is forwarded through this thread's own
    /// lanes (it is their only producer, so every lane stays single-producer).
    fn poll_remote(&mut self) -> usize {
        self.exec.out.poll_remote()
    }

    /// Whether anything could run now.
    fn has_work(&mut self) -> bool {
        // The idle spin's common case is "nothing": look at the lanes first, and work out the
        // congestion mask only when a B signal waits.
        if self.inbound_a.iter().any(JobReader::has_signal) {
            return true;
        }
        if self.inbound_b.iter().any(JobReader::has_signal) {
            let mask = self.congestion();
            let b = self
                .inbound_b
                .iter()
                .enumerate()
                .any(|(p, lane)| lane.has_signal() && self.may_run(p, mask));
            if b {
                return true;
            }
        }
        let now = self.exec.clock.now_ns();
        self.exec.local.timers.next_due_ns().is_some_and(|due| due <= now)
            || self.exec.lifecycle_due()
            || self.exec.out.remote.has_input()
            || self.unsent_due()
    }

    /// Spins, then sleeps until woken, a timer is due, or `SLEEP_MAX` passes.
    fn idle(&mut self) {
        let now = Instant::now();
        let spin_until = now + self.tuning.spin_time;
        let mut polls = 0u32;
        // A stalled peer's retry due too soon to sleep for is polled through, spin time or not.
        if !self.tuning.spin_time.is_zero() || self.stall.retry_soon(now) {
            loop {
                if self.has_work() || self.stop.is_set() || self.poll_receive() > 0 {
                    return;
                }
                // One pause per poll (a pause is ~100 cycles on recent x86: more would add that
                // to every hand-off), and the clock only every 64 polls.
                polls = polls.wrapping_add(1);
                if polls % 64 == 0 {
                    let now = Instant::now();
                    if now >= spin_until && !self.stall.retry_soon(now) {
                        break;
                    }
                    // Let another runnable thread of this CPU have it: where threads outnumber
                    // CPUs, the thread with the next hop's work runs now, not at the end of our
                    // time slice. On a CPU of our own this returns at once.
                    std::thread::yield_now();
                }
                core::hint::spin_loop();
            }
        }
        self.parker.announce();
        if self.has_work() || self.stop.is_set() {
            self.parker.retract();
            return;
        }
        // Links with input already cancel the sleep (and arming them is what has their next
        // input wake this thread).
        if let Some(receive) = self.receive.as_mut() {
            self.receive_woken = true;
            if !receive.prepare_sleep() {
                self.parker.retract();
                return;
            }
        }
        self.sleeps += 1;
        let timeout = self.sleep_timeout();
        match self.parker.wait(Some(timeout)) {
            Ok(outcome) if outcome.rung => self.wakeups += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(thread = self.exec.index, error = %e, "epoll_wait failed");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.parker.retract();
        self.publish();
    }

    /// Until the next timer is due or a stalled flush is retried, at most `SLEEP_MAX`.
    fn sleep_timeout(&mut self) -> Duration {
        let timer = match self.exec.local.timers.next_due_ns() {
            Some(due) => {
                let now = self.exec.clock.now_ns();
                Duration::from_nanos(due.saturating_sub(now)).min(SLEEP_MAX)
            }
            None => SLEEP_MAX,
        };
        match self.stall.until_retry(Instant::now()) {
            Some(retry) => timer.min(retry),
            None => timer,
        }
    }

    /// Publishes the running totals to the shared counters.
    fn publish(&self) {
        let Some(c) = self.stats.threads().get(self.exec.index) else { return };
        c.signals_run.publish(self.exec.signals_run);
        c.rounds.publish(self.rounds);
        c.sleeps.publish(self.sleeps);
        c.wakeups.publish(self.wakeups);
        c.congested_rounds.publish(self.congested_rounds);
        c.send_failures.publish(self.exec.local.failures);
        c.signals_dropped.publish(self.exec.local.dropped);
    }
}

/// A thread that receives for other threads waits for room in the lane of `priority` to
/// `thread`: it publishes the wait (so that thread drains our lane even when congested itself),
/// publishes what it queued, wakes the thread, and sleeps on its own parker at most 10 ms.
fn wait_for_room(
    exec: &mut Exec,
    parker: &Parker,
    waits: &Waits,
    published_mask: u64,
    thread: usize,
    priority: Priority,
) {
    let on_b = priority == Priority::B && thread < 64;
    if on_b {
        waits.publish(exec.index, published_mask | 1 << thread);
    }
    exec.out.flush();
    exec.out.wake(thread);
    parker.announce();
    if !exec.out.has_room(thread, priority) {
        let _ = parker.wait(Some(Duration::from_millis(10)));
    }
    parker.retract();
    if on_b {
        waits.publish(exec.index, published_mask);
    }
}
