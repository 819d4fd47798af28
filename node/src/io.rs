//! The I/O seam: descriptors a block watches (an io_uring ring's eventfd, a timerfd, a socket)
//! sit in its thread's epoll set, beside the doorbell, so a sleeping thread wakes for them; each
//! round, a thread that watches any asks the set which are ready (one `epoll_wait` with no
//! timeout) and runs `IO_READY` with the block's token in the block that watches it.
//!
//! Invariants: a descriptor is watched by one block of the thread at a time; watching is
//! level-triggered, so a block that leaves its descriptor readable is called again next round
//! (read until it would block, or unwatch); a thread that watches nothing makes no system call
//! for this.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::parker::Parker;

/// The token of a block thread's own receive side in its epoll set.
pub(crate) const RECEIVE_TOKEN: u64 = u64::MAX - 1;

/// How many ready descriptors one round takes at most (the rest wait for the next round).
const READY_PER_ROUND: usize = 16;

/// The descriptors watched by one thread's blocks.
#[derive(Debug)]
pub(crate) struct IoSet {
    parker: Arc<Parker>,
    /// (descriptor, block slot, block's token).
    watched: Vec<(RawFd, usize, u32)>,
}

impl IoSet {
    pub(crate) fn new(parker: Arc<Parker>) -> IoSet {
        IoSet { parker, watched: Vec::new() }
    }

    /// Puts the thread's own receive side in its epoll set.
    pub(crate) fn add_receive(&mut self, fd: RawFd) -> std::io::Result<()> {
        self.parker.waitset().add_fd(fd, RECEIVE_TOKEN)
    }

    /// Whether any descriptor is watched.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Watches `fd` for block `slot`, reported with `token`.
    pub(crate) fn watch(&mut self, fd: RawFd, slot: usize, token: u32) -> std::io::Result<()> {
        if self.watched.iter().any(|(f, _, _)| *f == fd) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("descriptor {fd} is already watched on this thread"),
            ));
        }
        let key = ((slot as u64) << 32) | u64::from(token);
        self.parker.waitset().add_fd(fd, key)?;
        self.watched.push((fd, slot, token));
        Ok(())
    }

    /// Stops watching `fd`.
    pub(crate) fn unwatch(&mut self, fd: RawFd) -> std::io::Result<()> {
        let Some(i) = self.watched.iter().position(|(f, _, _)| *f == fd) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("descriptor {fd} is not watched on this thread"),
            ));
        };
        self.watched.swap_remove(i);
        self.parker.waitset().remove_fd(fd)
    }

    /// The (block slot, token) of each descriptor ready now, into `out`; returns how many.
    pub(crate) fn ready(&self, out: &mut [(usize, u32); READY_PER_ROUND]) -> usize {
        if self.watched.is_empty() {
            return 0;
        }
        let mut keys = [0u64; READY_PER_ROUND];
        match self.parker.waitset().ready_now(&mut keys) {
            Ok((n, _)) => {
                let mut found = 0;
                // The thread's own receive side reports with its token: the round polls it.
                for key in keys[..n].iter().filter(|k| **k != RECEIVE_TOKEN) {
                    out[found] = ((key >> 32) as usize, *key as u32);
                    found += 1;
                }
                found
            }
            Err(e) => {
                tracing::error!(error = %e, "epoll_wait on the watched descriptors failed");
                0
            }
        }
    }
}

/// A buffer for [`IoSet::ready`].
pub(crate) type Ready = [(usize, u32); READY_PER_ROUND];
