//! Setting up a shared-memory link over its handshake socket, after the handshake.
//!
//! The connecting side (lower node id) creates the segment; the accepting side opens it:
//! ```text
//! creator                                         opener
//!   memfd blockwire-<cluster>-<lo>-<hi>-<nonce>: size, seal shrink+grow+seal, map, header
//!   listen on abstract unix socket blockwire-fd-<nonce>
//!   -- setup: magic, layout version, ring_bytes, nonce, names -->  <-- setup: magic, version, ring_bytes
//!   both check version and ring size match (a mismatch refuses the link on both sides)
//!   <== unix connect (same uid on both ends, checked with SO_PEERCRED) ==>
//!   -- segment descriptor (SCM_RIGHTS) ==>        check seals, size and header; map
//!   -- "mapped" ------------------------------------>  <-- "mapped" or the reason it failed
//!   <== each side sends its receive eventfd (SCM_RIGHTS) ==>
//! ```
//! The segment never has a name in the file system, so no crash at any step leaves a file
//! behind. The handshake socket stays open for the link's life; its hang-up is the death notice.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signals::NodeId;

use super::fdpass::{check_eventfd, peer_uid, recv_fd, send_fd};
use super::layout::{Segment, SegmentError, SegmentHeader, LAYOUT_VERSION, MAGIC};
use crate::handshake::{exchange_setup, HandshakeError};
use crate::poller::EventFd;
use std::fs::File;
use std::os::fd::AsRawFd;

const SETUP_MAGIC: [u8; 8] = *b"BWSHMSET";
const MAPPED: &[u8] = b"mapped";

/// Why a shared-memory link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ShmSetupError {
    /// The handshake socket failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The segment could not be created, opened or checked.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The peer's set-up message is not valid.
    #[error("bad shared-memory set-up from peer: {0}")]
    BadSetup(String),
    /// The two sides disagree on the layout version or the ring size.
    #[error("shared-memory {what} mismatch: ours {ours}, peer's {theirs}")]
    Mismatch { what: &'static str, ours: u64, theirs: u64 },
    /// The peer could not map the segment.
    #[error("peer could not map the segment: {0}")]
    PeerFailed(String),
    /// Passing descriptors (the segment's, then the wakeup eventfds) over the local socket
    /// failed.
    #[error("passing descriptors over the local socket: {0}")]
    FdPassing(std::io::Error),
}

/// What both sides end up with.
#[derive(Debug)]
pub struct ShmLink {
    /// The mapped segment.
    pub segment: Arc<Segment>,
    /// The ring this side produces into.
    pub send_ring: usize,
    /// The ring this side consumes.
    pub receive_ring: usize,
    /// This side's receive eventfd (in its epoll set).
    pub own_wake: EventFd,
    /// The peer's receive eventfd (written to wake it).
    pub peer_wake: EventFd,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A little-endian reader over a peer's set-up message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ShmSetupError> {
        if self.0.len() < n {
            return Err(ShmSetupError::BadSetup(format!("message ends before {what}")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self, what: &str) -> Result<u32, ShmSetupError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ShmSetupError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn text(&mut self, what: &str) -> Result<String, ShmSetupError> {
        let len = self.take(2, what)?;
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let bytes = self.take(len, what)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ShmSetupError::BadSetup(format!("{what} is not UTF-8")))?;
        if text.is_empty()
            || text.len() > 200
            || !text.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(ShmSetupError::BadSetup(format!("{what} {text:?} is not a plain name")));
        }
        Ok(text.to_string())
    }
}

fn check_common(r: &mut Reader<'_>, ring_bytes: usize) -> Result<(), ShmSetupError> {
    if r.take(8, "magic")? != SETUP_MAGIC {
        return Err(ShmSetupError::BadSetup("wrong magic".into()));
    }
    let version = r.u32("layout version")?;
    if version != LAYOUT_VERSION {
        return Err(ShmSetupError::Mismatch {
            what: "layout version",
            ours: LAYOUT_VERSION.into(),
            theirs: version.into(),
        });
    }
    let theirs = r.u32("ring size")?;
    if theirs as usize != ring_bytes {
        return Err(ShmSetupError::Mismatch {
            what: "ring_bytes",
            ours: ring_bytes as u64,
            theirs: theirs.into(),
        });
    }
    Ok(())
}

fn common(ring_bytes: usize) -> Vec<u8> {
    let mut out = SETUP_MAGIC.to_vec();
    out.extend_from_slice(&LAYOUT_VERSION.to_le_bytes());
    out.extend_from_slice(&(ring_bytes as u32).to_le_bytes());
    out
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

/// Waits up to `timeout` for the opener to connect to the descriptor socket `listener` (named
/// `name`), watching the handshake socket too: an opener that cannot map the segment, or
/// cannot connect at all, says why there instead, and that comes back as
/// [`ShmSetupError::PeerFailed`] at once.
fn accept_opener(
    listener: &UnixListener,
    name: &str,
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<UnixStream, ShmSetupError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [
            libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ms = crate::poller::wait_ms(left);
        // SAFETY: `fds` is a live array of two pollfds; its length is passed with it.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(ShmSetupError::FdPassing(e));
        }
        if fds[0].revents != 0 {
            let (s, _) = listener.accept().map_err(ShmSetupError::FdPassing)?;
            return Ok(s);
        }
        if fds[1].revents != 0 {
            // The opener's reason (or its hang-up, which the exchange reports).
            let reason = exchange_setup(stream, b"no descriptor connection")?;
            return Err(ShmSetupError::PeerFailed(String::from_utf8_lossy(&reason).into_owned()));
        }
        if left.is_zero() {
            return Err(ShmSetupError::FdPassing(std::io::Error::new(
                ErrorKind::TimedOut,
                format!("the peer did not connect to descriptor socket @{name} within {timeout:?}"),
            )));
        }
    }
}

/// Checks that the process at the other end of the descriptor socket runs as our user, and
/// bounds how long a read from it may wait.
fn check_fd_peer(stream: &UnixStream, timeout: Duration) -> Result<(), ShmSetupError> {
    stream.set_read_timeout(Some(timeout)).map_err(ShmSetupError::FdPassing)?;
    let own_uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .map_err(ShmSetupError::FdPassing)?;
    let peer_uid = peer_uid(stream).map_err(ShmSetupError::FdPassing)?;
    if peer_uid != own_uid {
        return Err(ShmSetupError::BadSetup(format!(
            "the descriptor socket's peer runs as uid {peer_uid}, not {own_uid}"
        )));
    }
    Ok(())
}

fn swap_fds(stream: &UnixStream, own: &EventFd) -> Result<EventFd, ShmSetupError> {
    send_fd(stream, own.raw_fd()).map_err(ShmSetupError::FdPassing)?;
    let theirs = recv_fd(stream).and_then(check_eventfd).map_err(ShmSetupError::FdPassing)?;
    Ok(EventFd::from_owned(theirs))
}

/// The abstract Unix socket over which the creator of the segment with `nonce` passes
/// descriptors.
fn fd_socket_name(nonce: u64) -> String {
    format!("blockwire-fd-{nonce:016x}")
}

/// The connecting side: creates the segment and sets the link up.
pub fn create(
    stream: &mut TcpStream,
    cluster_id: u64,
    me: NodeId,
    peer: NodeId,
    ring_bytes: usize,
    timeout: Duration,
) -> Result<ShmLink, ShmSetupError> {
    let nonce = random_u64();
    let name = format!("blockwire-{cluster_id}-{me}-{peer}-{nonce:016x}");
    let (segment, file) = Segment::create(&name, ring_bytes, nonce, me.get(), peer.get())?;
    let socket_name = fd_socket_name(nonce);
    let addr =
        UnixAddr::from_abstract_name(socket_name.as_bytes()).map_err(ShmSetupError::FdPassing)?;
    let listener = UnixListener::bind_addr(&addr).map_err(ShmSetupError::FdPassing)?;
    let mut mine = common(ring_bytes);
    mine.extend_from_slice(&nonce.to_le_bytes());
    put_bytes(&mut mine, name.as_bytes());
    put_bytes(&mut mine, socket_name.as_bytes());
    let theirs = exchange_setup(stream, &mine)?;
    check_common(&mut Reader(&theirs), ring_bytes)?;
    let unix = accept_opener(&listener, &socket_name, stream, timeout)?;
    check_fd_peer(&unix, timeout)?;
    send_fd(&unix, file.as_raw_fd()).map_err(ShmSetupError::FdPassing)?;
    // Our descriptor is no longer needed: the mapping keeps the memory.
    drop(file);
    let status = exchange_setup(stream, MAPPED)?;
    if status != MAPPED {
        return Err(ShmSetupError::PeerFailed(String::from_utf8_lossy(&status).into_owned()));
    }
    let own_wake = EventFd::new().map_err(ShmSetupError::FdPassing)?;
    let peer_wake = swap_fds(&unix, &own_wake)?;
    Ok(ShmLink { segment: Arc::new(segment), send_ring: 0, receive_ring: 1, own_wake, peer_wake })
}

/// The accepting side: opens the peer's segment and sets the link up.
pub fn open(
    stream: &mut TcpStream,
    me: NodeId,
    peer: NodeId,
    ring_bytes: usize,
    timeout: Duration,
) -> Result<ShmLink, ShmSetupError> {
    let theirs = exchange_setup(stream, &common(ring_bytes))?;
    let mut r = Reader(&theirs);
    check_common(&mut r, ring_bytes)?;
    let nonce = r.u64("nonce")?;
    let name = r.text("segment name")?;
    let socket_name = r.text("socket name")?;
    // The socket is the creator's, named from the segment's nonce: a name that is anything else
    // would have this side connect to some other process's socket.
    if socket_name != fd_socket_name(nonce) {
        return Err(ShmSetupError::BadSetup(format!(
            "socket name {socket_name:?} is not {:?}, the name for nonce {nonce:016x}",
            fd_socket_name(nonce)
        )));
    }
    let expected = SegmentHeader {
        magic: MAGIC,
        layout_version: LAYOUT_VERSION,
        ring_bytes: ring_bytes as u32,
        nonce,
        creator: peer.get(),
        opener: me.get(),
        reserved: [0; 102],
    };
    let addr =
        UnixAddr::from_abstract_name(socket_name.as_bytes()).map_err(ShmSetupError::FdPassing)?;
    let mapped = UnixStream::connect_addr(&addr)
        .map_err(|e| {
            ShmSetupError::FdPassing(std::io::Error::new(
                e.kind(),
                format!("connecting to descriptor socket @{socket_name}: {e}"),
            ))
        })
        .and_then(|unix| {
            check_fd_peer(&unix, timeout)?;
            let fd = recv_fd(&unix).map_err(ShmSetupError::FdPassing)?;
            Ok((Segment::open(File::from(fd), &name, &expected)?, unix))
        });
    let (segment, unix) = match mapped {
        Ok(s) => s,
        Err(e) => {
            // Tell the creator why, so it fails at once instead of timing out.
            let _ = exchange_setup(stream, e.to_string().as_bytes());
            return Err(e);
        }
    };
    let status = exchange_setup(stream, MAPPED)?;
    if status != MAPPED {
        return Err(ShmSetupError::PeerFailed(String::from_utf8_lossy(&status).into_owned()));
    }
    let own = EventFd::new().map_err(ShmSetupError::FdPassing)?;
    let peer_wake = swap_fds(&unix, &own)?;
    Ok(ShmLink {
        segment: Arc::new(segment),
        send_ring: 1,
        receive_ring: 0,
        own_wake: own,
        peer_wake,
    })
}
