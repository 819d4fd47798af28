//! Passing one file descriptor to the peer process over a Unix-domain socket (SCM_RIGHTS): how
//! each side of a shared-memory link hands its receive eventfd to the producer that must wake it.
//! (A TCP socket cannot carry descriptors, so set-up opens a short-lived abstract Unix socket
//! whose name travels over the handshake socket.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Room for exactly one descriptor's control message (CMSG_SPACE of one int on 64-bit Linux):
/// if a peer sends more, the kernel closes the extra ones (MSG_CTRUNC) instead of leaking them
/// into this process.
const CONTROL_BYTES: usize = 24;

/// Sends `fd` (with one payload byte) over `stream`.
pub fn send_fd(stream: &UnixStream, fd: RawFd) -> io::Result<()> {
    let mut byte = [1u8];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u8; CONTROL_BYTES];
    // SAFETY: msghdr is plain data; every pointer set below points into locals that outlive the
    // sendmsg call, and the CMSG macros stay within `control` (sized for one int, checked below).
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        assert!(space <= CONTROL_BYTES);
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
        if libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
///
/// The caller must still check what kind of descriptor it is ([`check_eventfd`]).
pub fn recv_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u8; CONTROL_BYTES];
    // SAFETY: as in `send_fd`; the received control message is checked for level, type and
    // length before its descriptor is read, and MSG_CMSG_CLOEXEC keeps it from leaking to children.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_BYTES as _;
        let n = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed before sending its descriptor",
            ));
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || ((*cmsg).cmsg_len as usize)
                < libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize
        {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "peer sent no descriptor"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "peer sent an invalid descriptor",
            ));
        }
        Ok(OwnedFd::from_raw_fd(fd))
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

    fn unsafe_free_euid() -> u32 {
        std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap()
    }
}
