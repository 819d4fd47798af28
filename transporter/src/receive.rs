//! The receive side of a registry: one thread polls every live link, hands each signal up with
//! the peer it came from, and sleeps in one epoll set on all of them when idle.
//!
//! Spin, then sleep: `run` polls without blocking for `spin_time`, then arms every link (a link
//! that reports data slipped in cancels the sleep), counts a sleep on each, and blocks in epoll.
//! A link that fails while being polled is reported to the registry (which closes it, counts its
//! unsent signals and sends the failure event) and leaves the epoll set; new links arrive through
//! a channel and an eventfd that is part of the same set.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signals::{NodeId, SignalView};
use tracing::debug;

use crate::counters::LinkCounters;
use crate::poller::Epoll;
use crate::registry::Inner;
use crate::{AnyReceiver, LinkReceiver};

/// Token of the registry's wake eventfd in the epoll set (link tokens are node ids, 1..=255).
const WAKE_TOKEN: u64 = u64::MAX;
/// Up to this many links, a spinning receiver polls each link directly instead of epoll.
const DIRECT_POLL_LINKS: usize = 4;
/// A spinning receiver that polls directly still looks at its epoll set every this many passes
/// (new links, hang-ups). An epoll_wait costs as much as several round trips over shared memory,
/// so it is rare: about every 40 us of shared-memory spinning, every millisecond over TCP.
const EPOLL_EVERY: u32 = 1024;
/// A spinning [`ReceiveSide::run`] reads the clock (to know when its spin time is over) and
/// asks whether to stop only every this many passes.
const CLOCK_EVERY: u32 = 16;

struct LiveReceiver {
    peer: NodeId,
    generation: u64,
    receiver: AnyReceiver,
}

/// Polls and sleeps on every live link of one registry.
pub struct ReceiveSide {
    inner: Arc<Inner>,
    epoll: Epoll,
    links: Vec<Option<LiveReceiver>>,
    /// Slots of links polled on every pass (shared memory), not only when epoll reports them.
    polled: Vec<usize>,
    /// Slots of every live link.
    live: Vec<usize>,
    /// Direct-poll passes, to look at epoll every EPOLL_EVERY of them.
    spins: u32,
    ready: Vec<u64>,
}

impl std::fmt::Debug for ReceiveSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveSide").field("links", &self.links.iter().flatten().count()).finish()
    }
}

impl ReceiveSide {
    pub(crate) fn new(inner: Arc<Inner>) -> io::Result<ReceiveSide> {
        let epoll = Epoll::new()?;
        epoll.add(inner.receive_wake.raw_fd(), WAKE_TOKEN)?;
        Ok(ReceiveSide {
            inner,
            epoll,
            links: (0..=255).map(|_| None).collect(),
            polled: Vec::with_capacity(8),
            live: Vec::with_capacity(8),
            spins: 0,
            ready: Vec::with_capacity(32),
        })
    }

    /// Drops the link in `slot` from the epoll set and the polled list.
    fn forget(&mut self, slot: usize) {
        if let Some(old) = self.links[slot].take() {
            self.epoll.remove(old.receiver.raw_fd());
            if let Some(fd) = old.receiver.death_fd() {
                self.epoll.remove(fd);
            }
        }
        self.polled.retain(|&s| s != slot);
        self.live.retain(|&s| s != slot);
    }

    /// Takes in links that came up since the last call.
    fn adopt(&mut self) {
        while let Ok(new) = self.inner.new_receivers.try_recv() {
            let slot = new.peer.get() as usize;
            self.forget(slot);
            let added = self.epoll.add(new.receiver.raw_fd(), slot as u64).and_then(|()| match new
                .receiver
                .death_fd()
            {
                Some(fd) => self.epoll.add(fd, slot as u64),
                None => Ok(()),
            });
            if let Err(e) = added {
                self.epoll.remove(new.receiver.raw_fd());
                self.inner.fail(new.peer, new.generation, &format!("epoll add failed: {e}"));
                continue;
            }
            if new.receiver.needs_polling() {
                self.polled.push(slot);
            }
            self.live.push(slot);
            self.links[slot] = Some(LiveReceiver {
                peer: new.peer,
                generation: new.generation,
                receiver: new.receiver,
            });
        }
    }

    /// Polls every link once and hands each signal to `deliver` with its sender's node id;
    /// returns the signals delivered. With a `timeout` other than zero this is a sleep: when
    /// nothing is there, every link is armed first (a link with data cancels the sleep), a sleep
    /// is counted on each, and the thread blocks in epoll up to `timeout` (`None` = forever).
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(NodeId, SignalView<'_>),
    ) -> usize {
        // New links are adopted when the registry's wake eventfd fires in the epoll set (looked
        // at every pass when blocking, every EPOLL_EVERY passes when spinning).
        if timeout == Some(Duration::ZERO) {
            return self.poll_once(timeout, deliver);
        }
        self.poll_sleeping(timeout, deliver)
    }

    /// [`ReceiveSide::poll`] with a timeout: out of line, so a spinning pass is short.
    #[inline(never)]
    fn poll_sleeping(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(NodeId, SignalView<'_>),
    ) -> usize {
        let signals = self.poll_once(Some(Duration::ZERO), deliver);
        if signals > 0 || !self.arm_all() {
            return signals;
        }
        for live in self.links.iter().flatten() {
            if let Some(link) = self.inner.link(live.peer) {
                LinkCounters::add(&link.counters.sleeps, 1);
            }
        }
        self.poll_once(timeout, deliver)
    }

    fn poll_once(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(NodeId, SignalView<'_>),
    ) -> usize {
        if timeout == Some(Duration::ZERO) && self.live.len() <= DIRECT_POLL_LINKS {
            // Spinning over a few links: read each directly (one syscall per TCP link, none for
            // shared memory) and look at the epoll set (new links, hang-ups, wakeups) only every
            // EPOLL_EVERY passes, so a spinning receiver pays no epoll_wait per pass.
            self.spins = self.spins.wrapping_add(1);
            let mut signals = 0;
            for i in 0..self.live.len() {
                if let Some(&slot) = self.live.get(i) {
                    signals += self.poll_link(slot, deliver);
                }
            }
            if self.spins % EPOLL_EVERY == 0 {
                signals += self.poll_epoll(timeout, deliver);
            }
            return signals;
        }
        self.poll_epoll(timeout, deliver)
    }

    #[inline(never)]
    fn poll_epoll(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(NodeId, SignalView<'_>),
    ) -> usize {
        let mut ready = std::mem::take(&mut self.ready);
        if self.epoll.wait(&mut ready, timeout).is_err() {
            ready.clear();
        }
        let mut signals = 0;
        for &token in &ready {
            if token == WAKE_TOKEN {
                self.inner.receive_wake.drain();
                self.adopt();
                continue;
            }
            let slot = token as usize;
            if let Some(live) = self.links.get_mut(slot).and_then(Option::as_mut) {
                if let Err(e) = live.receiver.check_alive() {
                    let (peer, generation) = (live.peer, live.generation);
                    self.forget(slot);
                    self.inner.fail(peer, generation, &e.to_string());
                    continue;
                }
            }
            if !self.polled.contains(&slot) {
                signals += self.poll_link(slot, deliver);
            }
        }
        self.ready = ready;
        for i in 0..self.polled.len() {
            if let Some(&slot) = self.polled.get(i) {
                signals += self.poll_link(slot, deliver);
            }
        }
        signals
    }

    fn poll_link(&mut self, slot: usize, deliver: &mut dyn FnMut(NodeId, SignalView<'_>)) -> usize {
        let Some(live) = self.links.get_mut(slot).and_then(Option::as_mut) else { return 0 };
        let peer = live.peer;
        match live.receiver.poll(&mut |signal| deliver(peer, signal)) {
            Ok(progress) => progress.signals,
            Err(e) => {
                self.receive_failed(slot, e);
                0
            }
        }
    }

    /// The link in `slot` failed while being polled: it leaves the set and the registry
    /// closes it.
    #[cold]
    #[inline(never)]
    fn receive_failed(&mut self, slot: usize, e: crate::LinkError) {
        let Some(live) = self.links.get(slot).and_then(Option::as_ref) else { return };
        let (peer, generation) = (live.peer, live.generation);
        self.forget(slot);
        debug!(peer = %peer, error = %e, "receive failed");
        self.inner.fail(peer, generation, &e.to_string());
    }

    /// Arms every link before a sleep; false when one has data already.
    fn arm_all(&mut self) -> bool {
        let mut failed = Vec::new();
        let mut all = true;
        for live in self.links.iter_mut().flatten() {
            match live.receiver.arm() {
                Ok(true) => {}
                Ok(false) => all = false,
                Err(e) => failed.push((live.peer, live.generation, e.to_string())),
            }
        }
        for (peer, generation, reason) in failed {
            self.forget(peer.get() as usize);
            self.inner.fail(peer, generation, &reason);
        }
        all
    }

    /// The epoll set's descriptor: readable when a link has input (or a new link came up).
    /// A thread that receives in its own round puts it in its own epoll set, so it sleeps on
    /// every link and its other work at once.
    pub fn wait_fd(&self) -> std::os::fd::RawFd {
        self.epoll.raw_fd()
    }

    /// Before the owning thread sleeps on [`ReceiveSide::wait_fd`]: arms every link (a link
    /// with data already cancels the sleep: false) and counts a sleep on each.
    pub fn prepare_sleep(&mut self) -> bool {
        if !self.arm_all() {
            return false;
        }
        for live in self.links.iter().flatten() {
            if let Some(link) = self.inner.link(live.peer) {
                LinkCounters::add(&link.counters.sleeps, 1);
            }
        }
        true
    }

    /// Polls every link and the epoll set (new links, hang-ups) once without blocking: the
    /// pass after a sleep on [`ReceiveSide::wait_fd`].
    pub fn poll_woken(&mut self, deliver: &mut dyn FnMut(NodeId, SignalView<'_>)) -> usize {
        self.poll_epoll(Some(Duration::ZERO), deliver)
    }

    /// Receives until `stop` returns true: polls without blocking while signals arrived within
    /// `spin_time`, then sleeps (at most `max_sleep` at a time, so `stop` is checked).
    pub fn run(
        &mut self,
        spin_time: Duration,
        max_sleep: Duration,
        stop: &dyn Fn() -> bool,
        deliver: &mut dyn FnMut(NodeId, SignalView<'_>),
    ) {
        let mut last_signal = Instant::now();
        // Signals came since the clock was last read: the next read dates them.
        let mut fresh = false;
        let mut passes = 0u32;
        let mut spinning = true;
        loop {
            // A spinning pass looks at `stop` and the clock only every CLOCK_EVERY passes, and
            // a pass that delivered reads neither: the time after a delivery is when the next
            // signal (an answer to what was just sent) is most likely, and the receiver is
            // back at its links at once. A sleeping pass looks at `stop` every time.
            if !spinning || passes % CLOCK_EVERY == 0 {
                if stop() {
                    return;
                }
                let now = Instant::now();
                if std::mem::take(&mut fresh) {
                    last_signal = now;
                }
                spinning = now.duration_since(last_signal) < spin_time;
            }
            passes = passes.wrapping_add(1);
            let timeout = if spinning { Duration::ZERO } else { max_sleep };
            if self.poll(Some(timeout), deliver) > 0 {
                fresh = true;
                // Without a spin time, the next pass sleeps (and looks at `stop` first).
                spinning = !spin_time.is_zero();
            } else if spinning {
                std::hint::spin_loop();
            }
        }
    }
}
