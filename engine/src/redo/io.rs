//! How a round reaches the disk: its writes (at most three: the records in one or two files,
//! and an anchor slot) and then one fdatasync per file written, behind one interface with two
//! backends. [`Io::Uring`] submits the round as one linked chain of io_uring requests, each
//! write and sync flagged `IOSQE_IO_LINK` but the last, so each starts only after the one
//! before it succeeded: an io_uring fsync is otherwise not ordered after writes submitted
//! before it (see `io_uring_enter(2)`), and a failed write cancels the syncs after it.
//! Completions come back on the ring, which signals an eventfd a block can watch
//! ([`Io::event_fd`], for `Context::watch_fd`). [`Io::Blocking`] does the same pwrites and
//! fdatasyncs on the calling thread and has the result ready at once.
//!
//! io_uring is refused in many containers (setup returns EPERM or ENOSYS under seccomp) or may
//! lack an opcode; [`Io::choose`] tries setup, a probe of the opcodes, the eventfd and one
//! no-op round trip, and on any failure falls back to [`Io::Blocking`], saying so once per
//! process (a warning) and keeping the reason for [`super::RedoLog::backend`].
//!
//! Invariant: at most one round is in flight; the bytes it writes stay alive and unchanged
//! until its completion has been reaped (the caller's promise in [`Io::submit`], kept by
//! [`super::RedoLog`], which waits for the round in flight before it drops its buffers).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Once;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::settings::IoUringMode;

/// The most writes in one round: records in two files and an anchor slot.
pub const MAX_WRITES: usize = 3;
/// The most syncs in one round: the two files written and file 0 (the anchor).
pub const MAX_SYNCS: usize = 3;
/// Submission queue entries: one round's chain fits with room to spare.
const RING_ENTRIES: u32 = 8;
const _: () = assert!((MAX_WRITES + MAX_SYNCS) as u32 <= RING_ENTRIES);
/// `user_data` of the no-op that proves the ring works.
const NOOP_TOKEN: u64 = u64::MAX;

/// One write of a round.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    /// The file's index in the ring (for errors).
    pub file_index: u32,
    /// The file.
    pub file: &'a File,
    /// Byte offset in the file.
    pub offset: u64,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// One fdatasync of a round.
#[derive(Clone, Copy, Debug)]
pub struct Sync<'a> {
    /// The file's index in the ring (for errors).
    pub file_index: u32,
    /// The file.
    pub file: &'a File,
}

/// Why a round failed: the first request that did.
#[derive(Debug)]
pub struct RoundError {
    /// The file's index in the ring.
    pub file_index: u32,
    /// `"write"` or `"fdatasync"`.
    pub action: &'static str,
    /// What the kernel said.
    pub source: std::io::Error,
}

/// The backend a log writes through.
#[derive(Debug)]
pub enum Io {
    /// io_uring: the round's chain is submitted, completions are reaped later (boxed: the
    /// ring's queues and the round's request table make it ten times the blocking backend).
    Uring(Box<Uring>),
    /// pwrite + fdatasync on the calling thread.
    Blocking(Blocking),
}

impl Io {
    /// io_uring when `mode` allows and the kernel does, else the blocking backend and, when
    /// io_uring was refused, why (warned once per process).
    pub fn choose(mode: (IoUringMode, Option<&'static str>)) -> (Io, Option<String>) {
        if let (IoUringMode::Off, why) = mode {
            let why = why.unwrap_or("io_uring is off");
            tracing::info!("{why}: the redo log writes with pwrite + fdatasync");
            return (Io::Blocking(Blocking::default()), Some(why.to_string()));
        }
        match Uring::new() {
            Ok(uring) => (Io::Uring(Box::new(uring)), None),
            Err(reason) => {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(%reason, "io_uring refused: the redo log writes with pwrite + fdatasync on the block's thread");
                });
                (Io::Blocking(Blocking::default()), Some(reason))
            }
        }
    }

    /// Starts a round: `writes` in order, then `syncs`.
    ///
    /// # Safety
    /// The bytes of every write must stay alive and unchanged until [`Io::poll`] or
    /// [`Io::wait`] has returned this round's result (the kernel reads them asynchronously
    /// with io_uring). No round may be in flight.
    pub unsafe fn submit(
        &mut self,
        writes: &[Write<'_>],
        syncs: &[Sync<'_>],
    ) -> Result<(), RoundError> {
        assert!(
            writes.len() <= MAX_WRITES && syncs.len() <= MAX_SYNCS,
            "a round has at most 3 writes and 3 syncs"
        );
        assert!(!self.in_flight(), "one round in flight at a time");
        match self {
            // SAFETY: the caller's promise is passed on unchanged.
            Io::Uring(uring) => unsafe { uring.submit(writes, syncs) },
            Io::Blocking(blocking) => {
                blocking.run(writes, syncs);
                Ok(())
            }
        }
    }

    /// The round's result, when it has completed (without blocking).
    pub fn poll(&mut self) -> Option<Result<(), RoundError>> {
        match self {
            Io::Uring(uring) => uring.poll(),
            Io::Blocking(blocking) => blocking.done.take(),
        }
    }

    /// Blocks until the round in flight completes; its result.
    pub fn wait(&mut self) -> Result<(), RoundError> {
        match self {
            Io::Uring(uring) => uring.wait(),
            Io::Blocking(blocking) => match blocking.done.take() {
                Some(result) => result,
                None => unreachable!("wait is called only with a round in flight"),
            },
        }
    }

    /// Whether a round is in flight.
    pub fn in_flight(&self) -> bool {
        match self {
            Io::Uring(uring) => uring.pending > 0,
            Io::Blocking(blocking) => blocking.done.is_some(),
        }
    }

    /// The eventfd the ring signals on each completion (io_uring only).
    pub fn event_fd(&self) -> Option<RawFd> {
        match self {
            Io::Uring(uring) => Some(uring.event.as_raw_fd()),
            Io::Blocking(_) => None,
        }
    }
}

/// The blocking backend: the result of the last round, until taken.
#[derive(Debug, Default)]
pub struct Blocking {
    done: Option<Result<(), RoundError>>,
}

impl Blocking {
    fn run(&mut self, writes: &[Write<'_>], syncs: &[Sync<'_>]) {
        use std::os::unix::fs::FileExt;
        let mut result = Ok(());
        for w in writes {
            if let Err(source) = w.file.write_all_at(w.bytes, w.offset) {
                result = Err(RoundError { file_index: w.file_index, action: "write", source });
                break;
            }
        }
        if result.is_ok() {
            for s in syncs {
                if let Err(source) = s.file.sync_data() {
                    result =
                        Err(RoundError { file_index: s.file_index, action: "fdatasync", source });
                    break;
                }
            }
        }
        self.done = Some(result);
    }
}

/// What one request of the round in flight was, by its `user_data`.
#[derive(Clone, Copy, Debug, Default)]
struct Request {
    file_index: u32,
    /// Bytes a write must report; `None` for a sync.
    write_bytes: Option<u32>,
}

/// The io_uring backend.
pub struct Uring {
    ring: IoUring,
    /// Signalled by the kernel on each completion; drained by [`Uring::poll`].
    event: File,
    /// Requests of the round in flight not yet completed.
    pending: usize,
    requests: [Request; MAX_WRITES + MAX_SYNCS],
    first_error: Option<RoundError>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").field("event", &self.event).field("pending", &self.pending).finish()
    }
}

impl Uring {
    /// Sets up a ring, checks it can write and sync, registers an eventfd and runs a no-op;
    /// any failure is the reason to fall back.
    fn new() -> Result<Uring, String> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| format!("io_uring_setup failed: {e}"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring probe failed: {e}"))?;
        for (code, name) in [(opcode::Write::CODE, "WRITE"), (opcode::Fsync::CODE, "FSYNC")] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring lacks the {name} operation"));
            }
        }
        // SAFETY: eventfd takes no pointers; its result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("eventfd failed: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by eventfd, is open, and nothing else owns it.
        let event = unsafe { File::from_raw_fd(fd) };
        ring.submitter()
            .register_eventfd(fd)
            .map_err(|e| format!("io_uring eventfd registration failed: {e}"))?;
        let mut uring =
            Uring { ring, event, pending: 0, requests: Default::default(), first_error: None };
        uring.noop().map_err(|e| format!("io_uring no-op failed: {e}"))?;
        Ok(uring)
    }

    /// One no-op through the ring and back.
    fn noop(&mut self) -> std::io::Result<()> {
        let entry = opcode::Nop::new().build().user_data(NOOP_TOKEN);
        // SAFETY: a no-op references no memory.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| std::io::Error::other("submission queue full"))?;
        self.ring.submit_and_wait(1)?;
        let result = self.ring.completion().next().map(|c| c.result());
        self.drain_event();
        match result {
            Some(r) if r >= 0 => Ok(()),
            Some(r) => Err(std::io::Error::from_raw_os_error(-r)),
            None => Err(std::io::Error::other("no completion after waiting for one")),
        }
    }

    /// # Safety
    /// As [`Io::submit`].
    unsafe fn submit(
        &mut self,
        writes: &[Write<'_>],
        syncs: &[Sync<'_>],
    ) -> Result<(), RoundError> {
        let count = writes.len() + syncs.len();
        let mut entries = [const { None::<squeue::Entry> }; MAX_WRITES + MAX_SYNCS];
        for (i, w) in writes.iter().enumerate() {
            debug_assert!(w.bytes.len() <= u32::MAX as usize);
            let len = w.bytes.len() as u32;
            let fd = types::Fd(w.file.as_raw_fd());
            entries[i] =
                Some(opcode::Write::new(fd, w.bytes.as_ptr(), len).offset(w.offset).build());
            self.requests[i] = Request { file_index: w.file_index, write_bytes: Some(len) };
        }
        for (j, s) in syncs.iter().enumerate() {
            let i = writes.len() + j;
            let fd = types::Fd(s.file.as_raw_fd());
            entries[i] = Some(opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build());
            self.requests[i] = Request { file_index: s.file_index, write_bytes: None };
        }
        let mut queue = self.ring.submission();
        for (i, entry) in entries.into_iter().take(count).enumerate() {
            let Some(entry) = entry else {
                unreachable!("the first `count` entries were built above")
            };
            let flags = if i + 1 < count { squeue::Flags::IO_LINK } else { squeue::Flags::empty() };
            let entry = entry.flags(flags).user_data(i as u64);
            // SAFETY: the buffers a write names stay valid and unchanged until its completion is
            // reaped (this function's contract); the files outlive the log that owns this ring.
            if unsafe { queue.push(&entry) }.is_err() {
                unreachable!("a round of {count} requests fits the {RING_ENTRIES}-entry queue, which is empty between rounds");
            }
        }
        drop(queue);
        self.pending = count;
        self.first_error = None;
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    // The kernel took none of the chain: nothing is in flight.
                    self.pending = 0;
                    return Err(RoundError {
                        file_index: self.requests[0].file_index,
                        action: "submit",
                        source,
                    });
                }
            }
        }
    }

    fn drain_event(&mut self) {
        let mut counter = [0u8; 8];
        // Non-blocking: WouldBlock means already drained.
        let _ = self.event.read(&mut counter);
    }

    /// Reaps what has completed; the round's result once every request has.
    fn poll(&mut self) -> Option<Result<(), RoundError>> {
        if self.pending == 0 {
            return None;
        }
        self.drain_event();
        let mut completion = self.ring.completion();
        completion.sync();
        for entry in &mut completion {
            let index = entry.user_data() as usize;
            let Some(request) = self.requests.get(index).copied() else {
                unreachable!("user_data {index} was not given to a request of this round")
            };
            self.pending -= 1;
            let failure = match (entry.result(), request.write_bytes) {
                (r, _) if r < 0 => Some(std::io::Error::from_raw_os_error(-r)),
                (r, Some(expected)) if r as u32 != expected => Some(std::io::Error::new(
                    ErrorKind::WriteZero,
                    format!("short write: {r} of {expected} bytes"),
                )),
                _ => None,
            };
            if let Some(source) = failure {
                let action = if request.write_bytes.is_some() { "write" } else { "fdatasync" };
                // Requests after the first failure of a chain are cancelled: keep the cause.
                let is_cancel = |e: &std::io::Error| e.raw_os_error() == Some(libc::ECANCELED);
                let replace = match &self.first_error {
                    None => true,
                    Some(kept) => is_cancel(&kept.source) && !is_cancel(&source),
                };
                if replace {
                    self.first_error =
                        Some(RoundError { file_index: request.file_index, action, source });
                }
            }
        }
        (self.pending == 0).then(|| self.first_error.take().map_or(Ok(()), Err))
    }

    /// Blocks until the round in flight has completed.
    fn wait(&mut self) -> Result<(), RoundError> {
        loop {
            if let Some(result) = self.poll() {
                return result;
            }
            assert!(self.pending > 0, "wait is called only with a round in flight");
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    // Cannot learn the round's fate: treat it as failed (the log stops).
                    self.pending = 0;
                    return Err(RoundError {
                        file_index: self.requests[0].file_index,
                        action: "wait",
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still read a round's buffers: wait before they can be freed (the
        // log's own drop waits first; this is the backstop).
        if self.pending > 0 {
            let _ = self.wait();
        }
    }
}
