//! Passing one file descriptor to the peer process over a Unix-domain socket (SCM_RIGHTS): how
//! each side of a shared-memory link hands its receive eventfd to the producer that must wake it.
//! (A TCP socket cannot carry descriptors, so set-up opens a short-lived abstract Unix socket
//! whose name travels over the handshake socket.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Room for the control message of up to [`MAX_FDS`] descriptors (CMSG_SPACE of 8 ints on
/// 64-bit Linux). One is expected; a peer that sends more has every one of them closed, and
/// one that sends more than fit is refused (MSG_CTRUNC: the kernel drops what did not fit).
const CONTROL_BYTES: usize = 48;
/// The most descriptors one control buffer takes.
const MAX_FDS: usize = 8;

/// A control-message buffer aligned as `cmsghdr` is (the CMSG macros read its fields in place).
#[repr(C, align(8))]
struct Control([u8; CONTROL_BYTES]);

/// Sends `fd` (with one payload byte) over `stream`.
pub fn send_fd(stream: &UnixStream, fd: RawFd) -> io::Result<()> {
    send_fds(stream, &[fd])
}

/// Sends `fds` (at most [`MAX_FDS`]) in one message with one payload byte.
fn send_fds(stream: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "1 to 8 descriptors per message"));
    }
    let mut byte = [1u8];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = Control([0u8; CONTROL_BYTES]);
    let data_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: msghdr is plain data; every pointer set below points into locals that outlive the
    // sendmsg call, and the CMSG macros stay within `control` (aligned, and sized for MAX_FDS
    // ints: checked below).
    unsafe {
        let space = libc::CMSG_SPACE(data_bytes) as usize;
        assert!(space <= CONTROL_BYTES);
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_bytes) as _;
        let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), *fd);
        }
        if libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`]. Every descriptor the message carried is taken
/// into this process's ownership first, so a peer that sends more than one (or something else
/// besides) has them all closed and is refused; nothing it sent stays open here.
///
/// The caller must still check what kind of descriptor it is ([`check_eventfd`]).
pub fn recv_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = Control([0u8; CONTROL_BYTES]);
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: as in `send_fds`; the CMSG macros walk only the control length the kernel wrote
    // back (within `control`), each SCM_RIGHTS payload is read within its own cmsg_len, and
    // MSG_CMSG_CLOEXEC keeps the descriptors from leaking to children.
    let (n, flags) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_BYTES as _;
        let n = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = libc::CMSG_LEN(0) as usize;
            let len = (*cmsg).cmsg_len as usize;
            if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                && len > header
            {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..(len - header) / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if fd >= 0 {
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        (n, msg.msg_flags)
    };
    if flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent more control data than {MAX_FDS} descriptors (all closed)"),
        ));
    }
    if n == 0 && fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed before sending its descriptor",
        ));
    }
    match fds.len() {
        1 => Ok(fds.remove(0)),
        0 => Err(io::Error::new(io::ErrorKind::InvalidData, "peer sent no descriptor")),
        more => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent {more} descriptors, not one (all closed)"),
        )),
    }
}

/// Accepts `fd` only if it is an eventfd, and makes it non-blocking, so that a peer cannot hand
/// over a pipe or socket whose `write` would block a sender holding its link's lock.
pub fn check_eventfd(fd: OwnedFd) -> io::Result<OwnedFd> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer's wake descriptor is {}, not an eventfd", link.display()),
        ));
    }
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The user id of the process at the other end of `stream`.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::EventFd;

    #[test]
    fn an_eventfd_crosses_and_still_wakes() {
        let (a, b) = UnixStream::pair().unwrap();
        let event = EventFd::new().unwrap();
        send_fd(&a, event.raw_fd()).unwrap();
        let received = EventFd::from_owned(check_eventfd(recv_fd(&b).unwrap()).unwrap());
        received.notify();
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a u64 from the original eventfd.
        let n = unsafe { libc::read(event.raw_fd(), (&mut value as *mut u64).cast(), 8) };
        assert_eq!((n, value), (8, 1));
        assert_eq!(peer_uid(&b).unwrap(), unsafe_free_euid());
        // A pipe is refused as a wake descriptor.
        let (r, _w) = std::io::pipe().unwrap();
        send_fd(&a, r.as_raw_fd()).unwrap();
        let e = check_eventfd(recv_fd(&b).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not an eventfd"), "{e}");
        drop(a);
        assert!(recv_fd(&b).is_err());
    }

    #[test]
    fn extra_descriptors_from_a_peer_are_all_closed_and_refused() {
        use std::io::Read;
        let (a, b) = UnixStream::pair().unwrap();
        for n in [2, 3, MAX_FDS] {
            // n copies of a pipe's write end: once ours is closed too, the read end sees the
            // end of the pipe only if every copy received here was closed.
            let (mut r, w) = std::io::pipe().unwrap();
            send_fds(&a, &vec![w.as_raw_fd(); n]).unwrap();
            let e = recv_fd(&b).unwrap_err();
            assert!(e.to_string().contains(&format!("sent {n} descriptors")), "{e}");
            drop(w);
            // SAFETY: fcntl on the pipe's read end, which we own, with integer arguments.
            unsafe {
                let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            match r.read(&mut [0u8; 1]) {
                Ok(0) => {}
                other => panic!("a copy of the {n} descriptors sent stays open here: {other:?}"),
            }
        }
        let event = EventFd::new().unwrap();
        let raw = [event.raw_fd()];
        // One still works after refusals.
        send_fd(&a, raw[0]).unwrap();
        drop(recv_fd(&b).unwrap());
    }

    fn unsafe_free_euid() -> u32 {
        std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap()
    }
}
