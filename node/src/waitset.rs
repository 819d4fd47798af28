//! Where a block thread sleeps: one epoll set holding the thread's eventfd doorbell, to which
//! other file descriptors (the transporters' sockets, completion channels) can be added, so one
//! `epoll_wait` waits for "a thread signalled me" and "a peer sent me bytes" alike.
//!
//! Invariants: the eventfd is non-blocking and counts rings; a wait drains it, so a ring that
//! arrives while the thread is awake costs exactly one early return from the next wait. Tokens
//! given to [`WaitSet::add_fd`] are the caller's; [`DOORBELL_TOKEN`] is reserved.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sleep::Doorbell;

/// The token the doorbell's eventfd reports with.
pub const DOORBELL_TOKEN: u64 = u64::MAX;

/// Events one wait reports at most (the rest are reported by the next wait).
const MAX_EVENTS: usize = 16;

/// The eventfd another thread writes to wake this one (the transporter layer's, so a block
/// thread and a receive thread wake the same way).
pub use transporter::poller::EventFd;

impl Doorbell for EventFd {
    fn ring(&self) {
        self.notify();
    }
}

/// One thread's epoll set, its doorbell already in it.
#[derive(Debug)]
pub struct WaitSet {
    epoll: OwnedFd,
    doorbell: EventFd,
}

/// What one wait saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitOutcome {
    /// The doorbell was rung (by one or more senders).
    pub rung: bool,
    /// Other descriptors became ready.
    pub other_ready: usize,
}

impl WaitSet {
    /// An epoll set with a fresh doorbell.
    pub fn new() -> io::Result<WaitSet> {
        // SAFETY: epoll_create1 takes no pointers; a negative return is an error checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let set = WaitSet { epoll, doorbell: EventFd::new()? };
        set.add_fd(set.doorbell.as_raw_fd(), DOORBELL_TOKEN)?;
        Ok(set)
    }

    /// The doorbell other threads ring.
    pub fn doorbell(&self) -> &EventFd {
        &self.doorbell
    }

    /// Adds `fd` (level-triggered, readable) reporting with `token`. The caller keeps `fd` open
    /// for as long as it stays in the set.
    pub fn add_fd(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: `event` is a live epoll_event for the duration of the call; the kernel copies it.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes `fd` from the set.
    pub fn remove_fd(&self, fd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add_fd`; the event argument is ignored for DEL but must be non-null on
        // old kernels.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until the doorbell rings, another descriptor is ready, or `timeout` passes
    /// (`None`: no limit). Drains the doorbell. Interrupted waits return as a timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<WaitOutcome> {
        let ms: i32 = match timeout {
            None => -1,
            // Round up so a timer due in 0.3 ms is not polled for in a busy loop.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        // SAFETY: `events` is a live array of MAX_EVENTS entries the kernel may write to.
        let n = unsafe {
            libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), MAX_EVENTS as i32, ms)
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(WaitOutcome::default());
            }
            return Err(err);
        }
        let mut outcome = WaitOutcome::default();
        for event in &events[..n as usize] {
            if event.u64 == DOORBELL_TOKEN {
                outcome.rung = self.doorbell.drain() > 0;
            } else {
                outcome.other_ready += 1;
            }
        }
        Ok(outcome)
    }
}

impl WaitSet {
    /// Without blocking, the tokens of the descriptors ready now (the doorbell's excepted: a
    /// ring seen here is drained and reported as `rung`), at most `tokens.len()` of them.
    pub fn ready_now(&self, tokens: &mut [u64]) -> io::Result<(usize, bool)> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let max = tokens.len().min(MAX_EVENTS) as i32;
        if max == 0 {
            return Ok((0, false));
        }
        // SAFETY: `events` is a live array of at least `max` entries the kernel may write to.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), max, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok((0, false))
            } else {
                Err(err)
            };
        }
        let (mut found, mut rung) = (0, false);
        for event in &events[..n as usize] {
            if event.u64 == DOORBELL_TOKEN {
                rung |= self.doorbell.drain() > 0;
            } else {
                tokens[found] = event.u64;
                found += 1;
            }
        }
        Ok((found, rung))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wakes_and_is_drained() {
        let set = WaitSet::new().unwrap();
        let timed_out = set.wait(Some(Duration::from_millis(1))).unwrap();
        assert_eq!(timed_out, WaitOutcome::default());
        set.doorbell().ring();
        set.doorbell().ring();
        let woke = set.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(woke.rung);
        // Both rings were drained by one wait.
        assert!(!set.wait(Some(Duration::from_millis(1))).unwrap().rung);
    }

    #[test]
    fn other_descriptors_join_the_set() {
        let set = WaitSet::new().unwrap();
        let other = EventFd::new().unwrap();
        set.add_fd(other.as_raw_fd(), 7).unwrap();
        other.ring();
        let outcome = set.wait(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(outcome, WaitOutcome { rung: false, other_ready: 1 });
        set.remove_fd(other.as_raw_fd()).unwrap();
        assert_eq!(set.wait(Some(Duration::from_millis(1))).unwrap(), WaitOutcome::default());
    }
}
