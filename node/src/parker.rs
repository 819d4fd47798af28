//! One thread's place to sleep: its [`SleepFlag`] (on its own cache line) and its [`WaitSet`]
//! (an epoll set holding its eventfd doorbell, open to transporter descriptors), plus the
//! counters of the protocol: sleeps taken, wakeups received, and wakeups other threads sent it.
//!
//! The protocol itself (and its loom model tests) lives in [`crate::sleep`]; this file only
//! binds it to the eventfd.

use std::io;
use std::time::Duration;

use crate::sleep::SleepFlag;
use crate::sync::Counter;
use crate::waitset::{WaitOutcome, WaitSet};

/// Sleep flag, doorbell and epoll set of one thread; shared (`Arc`) with every thread that may
/// need to wake it.
#[derive(Debug)]
pub struct Parker {
    flag: SleepFlag,
    waitset: WaitSet,
    /// Wakeups other threads rang for this one (written by senders).
    wakeups_sent_to: Counter,
}

impl Parker {
    /// A parker with a fresh epoll set and doorbell.
    pub fn new() -> io::Result<Parker> {
        Ok(Parker {
            flag: SleepFlag::new(),
            waitset: WaitSet::new()?,
            wakeups_sent_to: Counter::new(),
        })
    }

    /// Sender side: call after publishing work for this thread. Rings only if the thread is
    /// marked sleeping; returns whether it rang.
    #[inline]
    pub fn wake(&self) -> bool {
        let rang = self.flag.wake(self.waitset.doorbell());
        if rang {
            self.wakeups_sent_to.add(1);
        }
        rang
    }

    /// Owner side: mark sleeping (then re-check every queue, see [`SleepFlag::announce`]).
    #[inline]
    pub fn announce(&self) {
        self.flag.announce();
    }

    /// Owner side: clear the mark.
    #[inline]
    pub fn retract(&self) {
        self.flag.retract();
    }

    /// Owner side: block in the epoll set until rung, another descriptor is ready, or timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<WaitOutcome> {
        self.waitset.wait(timeout)
    }

    /// The epoll set, for adding transporter descriptors.
    pub fn waitset(&self) -> &WaitSet {
        &self.waitset
    }

    /// Wakeups rung for this thread so far.
    pub fn wakeups_sent_to(&self) -> u64 {
        self.wakeups_sent_to.get()
    }
}
