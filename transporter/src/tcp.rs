//! The TCP transporter: the handshake socket, made non-blocking with TCP_NODELAY, carries the
//! signal stream.
//!
//! Sending: one `writev` gathers the pending part-page and up to [`MAX_IOVECS`] queued pages, so
//! a round's batch costs one syscall. Receiving: a word-aligned buffer is filled by `read`,
//! whole signals are walked in place and handed up, and a partial signal at the end is moved to
//! the front to be completed by the next read. The buffer holds at least one largest signal, so
//! a valid stream always makes progress. The kernel wakes a sleeping receiver (level-triggered
//! epoll on the socket), so `arm` has nothing to do and senders pay no wakeup of their own.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use signals::{BatchWalker, Limits, SignalView, WalkError};

use crate::counters::LinkCounters;
use crate::pages::{Page, PagePool, PageQueue, UnsentPage};
use crate::{LinkError, LinkReceiver, LinkSender, PollProgress, SendProgress};

/// Most pages one `writev` takes.
pub const MAX_IOVECS: usize = 64;
/// Reads one `poll` makes at most before returning (fairness among links).
const MAX_READS_PER_POLL: usize = 8;

/// Makes a handshaken stream into the two halves of a TCP link.
pub fn split(
    stream: TcpStream,
    pool: Arc<PagePool>,
    counters: Arc<LinkCounters>,
    limits: Limits,
    receive_buffer_bytes: usize,
) -> io::Result<(TcpSender, TcpReceiver)> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    let reader = stream.try_clone()?;
    let words = receive_buffer_bytes.max(limits.max_signal_words() * 4).div_ceil(4);
    Ok((
        TcpSender {
            stream,
            counters: counters.clone(),
            pending: UnsentPage::new(pool, counters.clone()),
            failed: None,
            #[cfg(test)]
            fail_at_writev: None,
        },
        TcpReceiver {
            stream: reader,
            buffer: vec![0; words].into_boxed_slice(),
            start: 0,
            filled: 0,
            limits,
            counters,
        },
    ))
}

/// The sending half.
#[derive(Debug)]
pub struct TcpSender {
    stream: TcpStream,
    counters: Arc<LinkCounters>,
    /// A page written in part; finished before anything else.
    pending: UnsentPage,
    /// A write failed after others of the same call had written: that call reported what they
    /// wrote (so it is counted sent, and no longer queued), and the next call fails the link.
    failed: Option<LinkError>,
    /// Tests: the writev call (counted down from this) that fails as if the peer had reset.
    #[cfg(test)]
    fail_at_writev: Option<u32>,
}

impl TcpSender {
    /// Shuts the socket down both ways (wakes the receiving half with end-of-file).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Marks `written` bytes as sent: completed pages go back to the pool, a page written in
    /// part becomes pending. Returns the signals completed.
    fn consume(&mut self, queue: &mut PageQueue, mut written: usize) -> usize {
        let mut signals = 0;
        if let Some(page) = self.pending.as_mut() {
            let n = written.min(page.unsent().len());
            page.sent_bytes += n;
            written -= n;
            if page.unsent().is_empty() {
                signals += page.signals;
                if let Some(done) = self.pending.take() {
                    queue.finish(done);
                }
            }
        }
        while written > 0 {
            let Some(mut page) = queue.pop() else {
                unreachable!("writev wrote more bytes than were offered");
            };
            let n = written.min(page.unsent().len());
            page.sent_bytes += n;
            written -= n;
            if page.unsent().is_empty() {
                signals += page.signals;
                queue.finish(page);
            } else {
                debug_assert!(self.pending.is_none() && written == 0);
                *self.pending = Some(page);
            }
        }
        signals
    }
}

impl LinkSender for TcpSender {
    fn send(&mut self, queue: &mut PageQueue) -> Result<SendProgress, LinkError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut progress = SendProgress::default();
        loop {
            let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOVECS];
            let mut count = 0;
            let mut offered = 0;
            for bytes in self.pending.iter().map(Page::unsent).chain(queue.iter().map(Page::unsent))
            {
                if count == MAX_IOVECS {
                    break;
                }
                iov[count] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                offered += bytes.len();
                count += 1;
            }
            if count == 0 {
                return Ok(progress);
            }
            // SAFETY: `iov[..count]` points into pages owned by `self.pending` and `queue`,
            // which are not touched until the call returns; writev only reads them.
            let rc = unsafe {
                libc::writev(self.stream.as_raw_fd(), iov.as_ptr(), count as libc::c_int)
            };
            #[cfg(test)]
            let rc = match self.fail_at_writev {
                Some(n) if n <= 1 => {
                    self.fail_at_writev = None;
                    // SAFETY: sets this thread's errno, as a failing writev would.
                    unsafe { *libc::__errno_location() = libc::EPIPE };
                    -1
                }
                Some(n) => {
                    self.fail_at_writev = Some(n - 1);
                    rc
                }
                None => rc,
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        progress.blocked = true;
                        return Ok(progress);
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        let e = LinkError::Io { op: "writev", source: e };
                        if progress.bytes == 0 {
                            return Err(e);
                        }
                        // Earlier writes of this call went out: report them (the caller
                        // stops counting their bytes as queued) and fail at the next call.
                        self.failed = Some(e);
                        progress.blocked = true;
                        return Ok(progress);
                    }
                }
            }
            let written = rc as usize;
            let signals = self.consume(queue, written);
            LinkCounters::add_owned(&self.counters.batches_sent, 1);
            LinkCounters::add_owned(&self.counters.bytes_sent, written as u64);
            LinkCounters::add_owned(&self.counters.signals_sent, signals as u64);
            progress.bytes += written;
            progress.signals += signals;
            if written < offered {
                progress.blocked = true;
                return Ok(progress);
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some() || self.failed.is_some()
    }

    fn discard_pending(&mut self) -> usize {
        self.pending.discard()
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct TcpReceiver {
    stream: TcpStream,
    buffer: Box<[u32]>,
    /// Byte offset of the first signal not yet handed up.
    start: usize,
    /// Bytes read into the buffer.
    filled: usize,
    limits: Limits,
    counters: Arc<LinkCounters>,
}

impl TcpReceiver {
    /// Moves a partial signal at the end of the buffer to its front, to make room.
    fn compact(&mut self) {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.buffer);
        bytes.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
    }

    /// Hands up every whole signal in the buffer.
    fn walk(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<usize, LinkError> {
        let bytes: &[u8] = bytemuck::cast_slice(&self.buffer);
        let Ok(mut walker) = BatchWalker::new(&bytes[self.start..self.filled], self.limits) else {
            unreachable!("start is a multiple of 4 in a word buffer");
        };
        let mut signals = 0;
        let end = loop {
            match walker.next_signal() {
                Ok(Some(signal)) => {
                    deliver(signal);
                    signals += 1;
                }
                Ok(None) | Err(WalkError::Incomplete { .. }) => break Ok(()),
                Err(WalkError::Malformed(m)) => break Err(LinkError::Malformed(m)),
            }
        };
        self.start += walker.offset();
        end.map(|()| signals)
    }
}

impl LinkReceiver for TcpReceiver {
    fn poll(&mut self, deliver: &mut dyn FnMut(SignalView<'_>)) -> Result<PollProgress, LinkError> {
        let mut progress = PollProgress::default();
        for _ in 0..MAX_READS_PER_POLL {
            if self.start == self.filled {
                self.start = 0;
                self.filled = 0;
            } else if self.filled == self.buffer.len() * 4 {
                self.compact();
            }
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.buffer);
            let room = &mut bytes[self.filled..];
            // SAFETY: reads at most `room.len()` bytes into the writable slice `room`.
            let rc = unsafe {
                libc::read(self.stream.as_raw_fd(), room.as_mut_ptr().cast(), room.len())
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(LinkError::Io { op: "read", source: e }),
                }
            }
            if rc == 0 {
                return Err(LinkError::PeerClosed);
            }
            let n = rc as usize;
            let drained = n < room.len();
            self.filled += n;
            progress.bytes += n;
            let signals = self.walk(deliver)?;
            progress.signals += signals;
            LinkCounters::add_owned(&self.counters.batches_received, 1);
            LinkCounters::add_owned(&self.counters.bytes_received, n as u64);
            LinkCounters::add_owned(&self.counters.signals_received, signals as u64);
            if drained {
                // A short read emptied the socket: another read now would only say EAGAIN.
                break;
            }
        }
        Ok(progress)
    }

    fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    fn arm(&mut self) -> Result<bool, LinkError> {
        // Level-triggered epoll on the socket reports data that arrived before the sleep.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_write_that_fails_after_another_reports_what_went_and_fails_the_next_call() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_far, _) = listener.accept().unwrap();
        let pool = Arc::new(PagePool::new(80, 256));
        let counters = Arc::new(LinkCounters::default());
        let (mut tx, _rx) =
            split(near, pool.clone(), counters.clone(), Limits::default(), 1 << 16).unwrap();
        // More pages than one writev takes: the call writes twice.
        let mut queue = PageQueue::with_capacity(80);
        for i in 0..70u32 {
            let mut page = pool.take().unwrap();
            page.words_mut()[..16].fill(i);
            page.len_words = 16;
            page.signals = 1;
            queue.push(page);
        }
        tx.fail_at_writev = Some(2);
        let progress = tx.send(&mut queue).unwrap();
        assert_eq!((progress.bytes, progress.signals), (MAX_IOVECS * 64, MAX_IOVECS));
        assert!(progress.blocked, "the rest is still queued");
        assert_eq!(queue.len(), 70 - MAX_IOVECS);
        assert_eq!(counters.snapshot().signals_sent, MAX_IOVECS as u64);
        // The error comes with the next call, which writes nothing; the sender says it has
        // something for that call even when nothing else is queued.
        assert!(tx.has_pending(), "the error waits for the next call");
        let e = tx.send(&mut queue).unwrap_err().to_string();
        assert!(e.contains("writev"), "{e}");
        assert_eq!(queue.len(), 70 - MAX_IOVECS);
    }
}
