//! The physical references every other figure is compared with, measured in the same run:
//! a cache-line ping-pong between two threads (the floor for any shared-memory hand-off), the
//! shared-memory ring's commit protocol alone between two threads (what the protocol adds to
//! that floor, before any of our software), and a
//! bare TCP_NODELAY socket ping-pong over loopback, busy-polling a non-blocking socket (spin) or
//! blocking in `read` (sleep), plus a bare socket stream that sends one message per `write`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::{histogram, record};
use crate::{pin, Mode, Plan};

/// A counter alone on its 128-byte line (two lines on CPUs that prefetch pairs).
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// Round trips of a value between two threads through two cache lines.
pub fn cache_line_pingpong(plan: &Plan) -> Histogram<u64> {
    let ping = Arc::new(Line::default());
    let pong = Arc::new(Line::default());
    let total = plan.warmup + plan.count;
    let (p, q) = (ping.clone(), pong.clone());
    let cpu = plan.cpus.1;
    let echo = std::thread::spawn(move || {
        pin(cpu);
        for i in 1..=total {
            // SYNC: ping. Acquire pairs with the main thread's release store of `i`.
            while p.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            // SYNC: pong. Release pairs with the main thread's acquire load.
            q.0.store(i, Ordering::Release);
        }
    });
    pin(plan.cpus.0);
    let mut h = histogram();
    for i in 1..=total {
        let start = Instant::now();
        // SYNC: ping.
        ping.0.store(i, Ordering::Release);
        // SYNC: pong.
        while pong.0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        if i > plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    let _ = echo.join();
    h
}

/// Bytes of each direction's ring in [`ring_protocol_pingpong`].
const PROTOCOL_RING_BYTES: usize = 1 << 20;

/// One direction of [`ring_protocol_pingpong`]: the shared-memory transporter's commit
/// protocol alone, on words of this process's memory.
struct ProtocolRing {
    words: Box<[std::sync::atomic::AtomicU32]>,
}

impl ProtocolRing {
    fn new() -> ProtocolRing {
        let words = (0..PROTOCOL_RING_BYTES / 4).map(|_| Default::default()).collect();
        ProtocolRing { words }
    }

    fn word(&self, at: usize) -> &std::sync::atomic::AtomicU32 {
        &self.words[at & (self.words.len() - 1)]
    }

    /// Producer: the body, the zero word past the record, then the record's word (release).
    /// Returns the next position, in words.
    fn commit(&self, at: usize, body: &[u32]) -> usize {
        for (i, &w) in body.iter().enumerate() {
            self.word(at + 1 + i).store(w, Ordering::Relaxed);
        }
        let next = at + 1 + body.len();
        self.word(next).store(0, Ordering::Relaxed);
        // SYNC: protocol-commit. Release: the body and the zero are visible before the word.
        self.word(at).store(body.len() as u32 * 4, Ordering::Release);
        next
    }

    /// Consumer: spins until the record at `at` is committed, copies its body into `into`;
    /// returns the next position, in words.
    fn take(&self, at: usize, into: &mut [u32]) -> usize {
        loop {
            // SYNC: protocol-commit (acquire side).
            let len = self.word(at).load(Ordering::Acquire) as usize / 4;
            if len > 0 {
                for (i, w) in into.iter_mut().enumerate().take(len) {
                    *w = self.word(at + 1 + i).load(Ordering::Relaxed);
                }
                return at + 1 + len;
            }
            std::hint::spin_loop();
        }
    }
}

/// Round trips of a `record_bytes`-byte record (its word included) between two threads, through
/// the shared-memory ring's commit protocol and nothing else: the producer writes the body,
/// zeroes the word past it and release-stores the record's word; the consumer spins on that word
/// and copies the body out. No pages, no walker, no block: what the protocol itself costs on
/// lines that move forward every hop, beside the cache-line ping-pong.
pub fn ring_protocol_pingpong(plan: &Plan, record_bytes: usize) -> Histogram<u64> {
    let body_words = (record_bytes / 4).saturating_sub(1).clamp(1, 64);
    let (there, back) = (Arc::new(ProtocolRing::new()), Arc::new(ProtocolRing::new()));
    let total = plan.warmup + plan.count;
    let (t, b) = (there.clone(), back.clone());
    let cpu = plan.cpus.1;
    let echo = std::thread::spawn(move || {
        pin(cpu);
        let mut body = vec![0u32; body_words];
        let (mut read, mut write) = (0, 0);
        for _ in 0..total {
            read = t.take(read, &mut body);
            write = b.commit(write, &body);
        }
    });
    pin(plan.cpus.0);
    let mut body: Vec<u32> = (1..=body_words as u32).collect();
    let (mut read, mut write) = (0, 0);
    let mut h = histogram();
    for i in 0..total {
        let start = Instant::now();
        write = there.commit(write, &body);
        read = back.take(read, &mut body);
        if i >= plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    let _ = echo.join();
    h
}

fn socket_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// Reads exactly `buf.len()` bytes, spinning on a non-blocking socket or blocking.
fn read_message(s: &mut TcpStream, buf: &mut [u8], mode: Mode) -> std::io::Result<()> {
    if mode == Mode::Sleep {
        return s.read_exact(buf);
    }
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_message(s: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < buf.len() {
        match s.write(&buf[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Round trips of a `message_bytes` message over a bare TCP_NODELAY loopback socket pair.
pub fn tcp_pingpong(
    plan: &Plan,
    message_bytes: usize,
    mode: Mode,
) -> std::io::Result<Histogram<u64>> {
    let (mut client, mut server) = socket_pair()?;
    let nonblocking = mode == Mode::Spin;
    client.set_nonblocking(nonblocking)?;
    server.set_nonblocking(nonblocking)?;
    let total = plan.warmup + plan.count;
    let cpu = plan.cpus.1;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpu);
        let mut buf = vec![0u8; message_bytes];
        for _ in 0..total {
            read_message(&mut server, &mut buf, mode)?;
            write_message(&mut server, &buf)?;
        }
        Ok(())
    });
    pin(plan.cpus.0);
    let mut h = histogram();
    let mut buf = vec![7u8; message_bytes];
    for i in 0..total {
        let start = Instant::now();
        write_message(&mut client, &buf)?;
        read_message(&mut client, &mut buf, mode)?;
        if i >= plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    echo.join().unwrap_or_else(|_| Err(std::io::Error::other("echo thread panicked")))?;
    Ok(h)
}

/// Messages per second through a bare socket, one `write` per message.
pub fn tcp_stream_one_per_write(plan: &Plan, message_bytes: usize) -> std::io::Result<f64> {
    // A rate: half a million messages measure it well; more only costs minutes.
    let plan = Plan { count: plan.count.min(500_000), ..*plan };
    let (mut client, mut server) = socket_pair()?;
    let total_bytes = (plan.count * message_bytes as u64) as usize;
    let cpu = plan.cpus.1;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpu);
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total_bytes {
            match server.read(&mut buf)? {
                0 => return Err(ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        Ok(())
    });
    pin(plan.cpus.0);
    let message = vec![1u8; message_bytes];
    let start = Instant::now();
    for _ in 0..plan.count {
        client.write_all(&message)?;
    }
    reader.join().unwrap_or_else(|_| Err(std::io::Error::other("reader panicked")))?;
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    Ok(plan.count as f64 / elapsed.as_secs_f64())
}

/// Round trips of a wakeup between two threads that each block on an eventfd: the floor for any
/// transport whose receiver sleeps in the kernel and is woken by its peer.
pub fn eventfd_wake_pingpong(plan: &Plan) -> std::io::Result<Histogram<u64>> {
    let ping = Arc::new(EventFdPair::new()?);
    let total = plan.warmup + plan.count;
    let pair = ping.clone();
    let cpu = plan.cpus.1;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpu);
        for _ in 0..total {
            pair.wait(0)?;
            pair.wake(1)?;
        }
        Ok(())
    });
    pin(plan.cpus.0);
    let mut h = histogram();
    for i in 0..total {
        let start = Instant::now();
        ping.wake(0)?;
        ping.wait(1)?;
        if i >= plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    echo.join().unwrap_or_else(|_| Err(std::io::Error::other("echo thread panicked")))?;
    Ok(h)
}

/// Round trips of a futex wake between two threads that each block in `FUTEX_WAIT` on one
/// shared word (1: the echo's turn, 2: the pinger's): the kernel's cheapest sleep and wake.
pub fn futex_wake_pingpong(plan: &Plan) -> Histogram<u64> {
    let word = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let total = plan.warmup + plan.count;
    let w = word.clone();
    let cpu = plan.cpus.1;
    let echo = std::thread::spawn(move || {
        pin(cpu);
        for _ in 0..total {
            futex_wait_for(&w, 1);
            w.store(2, Ordering::Release);
            futex_wake(&w);
        }
    });
    pin(plan.cpus.0);
    let mut h = histogram();
    for i in 0..total {
        let start = Instant::now();
        word.store(1, Ordering::Release);
        futex_wake(&word);
        futex_wait_for(&word, 2);
        if i >= plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    let _ = echo.join();
    h
}

/// Blocks until `word` holds `want` (no spinning: every check that fails sleeps in the kernel).
fn futex_wait_for(word: &std::sync::atomic::AtomicU32, want: u32) {
    loop {
        let seen = word.load(Ordering::Acquire);
        if seen == want {
            return;
        }
        // SAFETY: FUTEX_WAIT_PRIVATE on a live, aligned u32 of this process; it returns at once
        // if the word no longer holds `seen` (EAGAIN), on a wake, or on a signal (EINTR).
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

/// Wakes a thread blocked on `word`.
fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE_PRIVATE on a live, aligned u32 of this process; no memory is written.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
}

/// Two blocking eventfds.
struct EventFdPair {
    fds: [std::os::fd::OwnedFd; 2],
}

impl EventFdPair {
    fn new() -> std::io::Result<EventFdPair> {
        let make = || -> std::io::Result<std::os::fd::OwnedFd> {
            // SAFETY: plain syscall; the result is checked before use.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `fd` is fresh and owned by nothing else.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
        };
        Ok(EventFdPair { fds: [make()?, make()?] })
    }

    fn wake(&self, which: usize) -> std::io::Result<()> {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
        let n = unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&self.fds[which]),
                (&one as *const u64).cast(),
                8,
            )
        };
        if n != 8 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, which: usize) -> std::io::Result<()> {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from a blocking eventfd we own.
        let n = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.fds[which]),
                (&mut value as *mut u64).cast(),
                8,
            )
        };
        if n != 8 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The cache-line ping-pong's only state: two cache lines, 128 bytes apart (a value goes out on
/// the first and comes back on the second), in a file two processes map or in memory two
/// threads share.
#[derive(Debug)]
pub(crate) struct Lines {
    map: memmap2::MmapMut,
}

impl Lines {
    /// Two lines of this process's memory, for two threads.
    pub(crate) fn anonymous() -> std::io::Result<Lines> {
        Ok(Lines { map: memmap2::MmapMut::map_anon(256)? })
    }

    /// Creates (`create`) or opens the file at `path` and maps it, for two processes.
    pub(crate) fn map(path: &std::path::Path, create: bool) -> std::io::Result<Lines> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)?;
        if create {
            file.set_len(256)?;
        }
        // SAFETY: a private benchmark file both processes map; the two words are only accessed
        // atomically.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }?;
        if map.len() < 256 {
            return Err(std::io::Error::other(format!(
                "{} is shorter than two lines",
                path.display()
            )));
        }
        Ok(Lines { map })
    }

    fn words(&self) -> (&AtomicU64, &AtomicU64) {
        let base = self.map.as_ptr();
        // SAFETY: the mapping is page aligned and at least 256 bytes long (checked in `map`);
        // offsets 0 and 128 are 8-aligned u64 slots that both processes access only
        // atomically, for as long as `self` lives.
        unsafe { (&*(base as *const AtomicU64), &*(base.add(128) as *const AtomicU64)) }
    }

    /// The pinging side: one round trip of `value` (each round trip's value is new). False
    /// when no answer came within [`LINES_PATIENCE`] (the other process is gone).
    pub(crate) fn round_trip(&self, value: u64) -> bool {
        let (ping, pong) = self.words();
        // SYNC: ping.
        ping.store(value, Ordering::Release);
        // SYNC: pong.
        wait_for(pong, value)
    }

    /// The echoing side: waits for `value` and sends it back. False when it did not come
    /// within [`LINES_PATIENCE`].
    pub(crate) fn echo(&self, value: u64) -> bool {
        let (ping, pong) = self.words();
        // SYNC: ping (acquire side).
        if !wait_for(ping, value) {
            return false;
        }
        // SYNC: pong (release side).
        pong.store(value, Ordering::Release);
        true
    }
}

/// The cache-line reference measured between the same two threads or processes as a subject,
/// in blocks between the subject's (see `--interleave`).
#[derive(Debug)]
pub struct Interleaved {
    /// The reference's round trips, pooled.
    pub reference: Histogram<u64>,
    /// For each pair of blocks, the subject's p50 over the reference's.
    pub ratios: Vec<f64>,
}

/// What an interleaved run collects: the subject's samples of the current block, and the
/// reference's blocks run between them.
#[derive(Debug)]
pub(crate) struct BlockPairs {
    mine: Vec<u64>,
    theirs: Vec<u64>,
    reference: Histogram<u64>,
    ratios: Vec<f64>,
    /// The last value sent on the lines (each round trip's is new).
    value: u64,
}

impl BlockPairs {
    pub(crate) fn new(block: u64) -> BlockPairs {
        let block = block as usize;
        BlockPairs {
            mine: Vec::with_capacity(block),
            theirs: Vec::with_capacity(block),
            reference: histogram(),
            ratios: Vec::new(),
            value: 0,
        }
    }

    /// One measured round trip of the subject.
    pub(crate) fn subject(&mut self, took: Duration) {
        self.mine.push(took.as_nanos() as u64);
    }

    /// Runs `block` round trips of the reference on `lines` (the other side echoes as many),
    /// recorded when `measured`, and closes the block pair.
    pub(crate) fn run_reference(
        &mut self,
        lines: &Lines,
        block: u64,
        measured: bool,
    ) -> Result<(), String> {
        for _ in 0..block {
            self.value += 1;
            let start = Instant::now();
            if !lines.round_trip(self.value) {
                return Err(format!("no answer on the cache lines at {}", self.value));
            }
            if measured {
                let took = start.elapsed();
                record(&mut self.reference, took);
                self.theirs.push(took.as_nanos() as u64);
            }
        }
        if !self.mine.is_empty() && !self.theirs.is_empty() {
            self.ratios
                .push(median(&mut self.mine) as f64 / median(&mut self.theirs).max(1) as f64);
        }
        self.mine.clear();
        self.theirs.clear();
        Ok(())
    }

    pub(crate) fn finish(self) -> Interleaved {
        Interleaved { reference: self.reference, ratios: self.ratios }
    }
}

/// The p50 of `samples` (reordered).
fn median(samples: &mut [u64]) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let mid = samples.len() / 2;
    *samples.select_nth_unstable(mid).1
}

/// How long one side of the cache-line ping-pong waits for the other before calling it gone.
const LINES_PATIENCE: Duration = Duration::from_secs(10);

/// Spins until `word` holds `value` (acquire); false after [`LINES_PATIENCE`]. The clock is
/// read once every 64Ki polls, so a poll costs what it did without the limit.
fn wait_for(word: &AtomicU64, value: u64) -> bool {
    let mut polls = 0u32;
    let mut deadline = None;
    while word.load(Ordering::Acquire) != value {
        std::hint::spin_loop();
        polls = polls.wrapping_add(1);
        if polls % (1 << 16) == 0 {
            let now = Instant::now();
            if now > *deadline.get_or_insert(now + LINES_PATIENCE) {
                return false;
            }
        }
    }
    true
}

/// Round trips of a value between two processes through two cache lines of a shared mapping.
pub fn cache_line_pingpong_processes(plan: &Plan) -> std::io::Result<Histogram<u64>> {
    let path =
        std::path::PathBuf::from(format!("/dev/shm/blockwire-bench-lines-{}", std::process::id()));
    let lines = Lines::map(&path, true)?;
    let total = plan.warmup + plan.count;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "limit-peer",
            "--path",
            &path.display().to_string(),
            "--count",
            &total.to_string(),
            "--cpu",
            &plan.cpus.1.to_string(),
        ])
        .spawn()?;
    pin(plan.cpus.0);
    // Wait for the child to map the file and say it is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.words().1.load(Ordering::Acquire) != u64::MAX {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = std::fs::remove_file(&path);
            return Err(std::io::Error::other("limit peer did not start"));
        }
        std::thread::yield_now();
    }
    // Both have it mapped: the name can go.
    let _ = std::fs::remove_file(&path);
    let mut h = histogram();
    for i in 1..=total {
        let start = Instant::now();
        if !lines.round_trip(i) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("limit peer stopped answering at {i}")));
        }
        if i > plan.warmup {
            record(&mut h, start.elapsed());
        }
    }
    child.wait()?;
    Ok(h)
}

/// The child of [`cache_line_pingpong_processes`]: echoes `count` values.
pub fn cache_line_peer(path: &std::path::Path, count: u64, cpu: usize) -> std::io::Result<()> {
    pin(cpu);
    let lines = Lines::map(path, false)?;
    // SYNC: the "mapped" mark the parent waits for.
    lines.words().1.store(u64::MAX, Ordering::Release);
    for i in 1..=count {
        if !lines.echo(i) {
            return Err(std::io::Error::other(format!("no value {i} from the parent")));
        }
    }
    Ok(())
}

/// RDMA's physical reference: perftest's `ib_write_lat` between two processes on the same
/// device (RDMA WRITE ping-pong, each side polling memory), run now with `-H` so every sample
/// comes back. perftest reports half a round trip; samples are doubled to round trips, and the
/// first `plan.warmup` are dropped. The client runs on `plan.cpus.0` and the server on
/// `plan.cpus.1`, as the measured transporter's two ends do (and never inside the mask of a
/// thread pinned earlier, where both would share one CPU).
pub fn ib_write_lat(plan: &Plan, message_bytes: usize) -> std::io::Result<Histogram<u64>> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let iters = (plan.count + plan.warmup).max(5).to_string();
    let size = message_bytes.max(2).to_string();
    let args = ["-s", size.as_str(), "-n", iters.as_str(), "-F", "-H"];
    let tool = |cpu: usize| {
        let mut cmd = Command::new("ib_write_lat");
        cmd.args(args).stdin(Stdio::null()).stderr(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec and makes one syscall
        // (async-signal-safe), touching only its own stack.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                // Best effort, like `pin`: an unknown CPU leaves the inherited mask.
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                Ok(())
            });
        }
        cmd
    };
    let missing = |e: std::io::Error| {
        std::io::Error::new(
            e.kind(),
            format!("cannot run ib_write_lat (apt-get install perftest): {e}"),
        )
    };
    let mut server = tool(plan.cpus.1).stdout(Stdio::null()).spawn().map_err(missing)?;
    // The server needs a moment to listen; the client gives up at once when it is not there.
    let mut output = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let out = tool(plan.cpus.0).arg("127.0.0.1").output().map_err(missing)?;
        if out.status.success() {
            output = Some(out.stdout);
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let stdout = output.ok_or_else(|| std::io::Error::other("ib_write_lat did not complete"))?;
    let mut h = histogram();
    let samples = String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| l.split_once(", ").and_then(|(_, us)| us.trim().parse::<f64>().ok()))
        .map(|us| (us * 2000.0) as u64)
        .collect::<Vec<_>>();
    for &ns in samples.iter().skip(plan.warmup as usize) {
        h.saturating_record(ns.max(1));
    }
    if h.is_empty() {
        return Err(std::io::Error::other("ib_write_lat printed no samples"));
    }
    Ok(h)
}
