//! The handshake against peers that do not follow it: an impostor that says "accepted" to a
//! node with a cluster secret, and a peer that trickles its hello to hold the handshake open.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use signals::NodeId;
use transporter::handshake::{self, AcceptParams, HandshakeError, Hello, HELLO_BYTES, MAGIC};
use transporter::TransportKind;

fn node(id: u32) -> NodeId {
    NodeId::new(id).unwrap()
}

/// A listener whose one connection reads a hello and answers with `status` and `flags`
/// (version 1, a zero challenge): what anything listening at a peer's address could send.
fn impostor(status: u8, flags: u8) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; HELLO_BYTES];
        s.read_exact(&mut hello).unwrap();
        let mut reply = [0u8; 24];
        reply[0..4].copy_from_slice(&MAGIC);
        reply[4..6].copy_from_slice(&1u16.to_le_bytes());
        reply[6] = status;
        reply[7] = flags;
        let _ = s.write_all(&reply);
        // Hold the socket until the other side is done with it.
        let _ = s.read(&mut [0u8; 1]);
    });
    addr
}

fn connect_with_secret(addr: std::net::SocketAddr) -> Result<(), HandshakeError> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = Hello::new(7, node(1), node(2), TransportKind::Tcp, true);
    handshake::connect(&mut s, &hello, Some(b"s3cret"))
}

#[test]
fn a_node_with_a_secret_refuses_an_accept_that_proves_nothing() {
    // "Accepted" with the secret flag set: the challenge, and with it the proof, was skipped.
    match connect_with_secret(impostor(0, 1)) {
        Err(HandshakeError::UnprovenAccept { peer: 2 }) => {}
        other => panic!("an unproven accept was taken: {other:?}"),
    }
    // "Accepted" by a side that says it has no secret.
    match connect_with_secret(impostor(0, 0)) {
        Err(HandshakeError::BadMessage { what: "reply flags", value: 0 }) => {}
        other => panic!("an accept from a side without the secret was taken: {other:?}"),
    }
    // Unknown flag bits.
    match connect_with_secret(impostor(1, 0x81)) {
        Err(HandshakeError::BadMessage { what: "reply flags", value: 0x81 }) => {}
        other => panic!("a reply with unknown flags was taken: {other:?}"),
    }
}

#[test]
fn a_peer_that_trickles_its_hello_is_cut_off_at_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_by_peer = sent.clone();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let hello = Hello::new(7, node(1), node(2), TransportKind::Tcp, false);
        // One byte every 100 ms: each read alone would be well within the timeout.
        for (i, byte) in hello_bytes(&hello).iter().enumerate() {
            if s.write_all(&[*byte]).is_err() {
                return;
            }
            sent_by_peer.store(i + 1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(100));
        }
    });
    let (mut s, _) = listener.accept().unwrap();
    // Half-way between two bytes, so the budget runs out while a read waits (the socket's
    // own timeout fires, not the check between reads).
    s.set_read_timeout(Some(Duration::from_millis(850))).unwrap();
    let params = AcceptParams { cluster_id: 7, me: node(2), secret: None };
    let result = handshake::accept(&mut s, &params, |_| Ok(()), |_| Ok(()));
    let when = sent.load(Ordering::SeqCst);
    match result {
        Err(HandshakeError::Io { op: "read hello", source }) => {
            assert_eq!(source.kind(), ErrorKind::TimedOut, "{source}");
            assert!(source.to_string().contains("of 40 bytes"), "{source}");
        }
        other => panic!("the trickled hello was waited for: {other:?}"),
    }
    assert!(when < HELLO_BYTES, "the handshake gave up only after the whole hello ({when} bytes)");
    drop(s);
    peer.join().unwrap();
}

/// The hello's bytes as the connecting side sends them (read back from a real `connect`).
fn hello_bytes(hello: &Hello) -> [u8; HELLO_BYTES] {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hello = *hello;
    let sender = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = handshake::connect(&mut s, &hello, None);
    });
    let (mut s, _) = listener.accept().unwrap();
    let mut bytes = [0u8; HELLO_BYTES];
    s.read_exact(&mut bytes).unwrap();
    drop(s);
    sender.join().unwrap();
    bytes
}
