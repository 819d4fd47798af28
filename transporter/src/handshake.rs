//! The link handshake: the first bytes on every link's TCP socket, before any signal.
//!
//! The connecting side (the lower node id) sends a [`Hello`]; the accepting side checks magic,
//! protocol version, cluster id, that the hello is addressed to it, that the sender is a
//! configured peer with this transport and direction, and whether a cluster secret is in use on
//! both sides. With a secret, both sides prove they know it by challenge and response: the
//! accepting side sends a fresh nonce, the connecting side answers with
//! HMAC-SHA256(secret, "blockwire-connect" || hello || challenge), and the accepting side answers
//! with HMAC-SHA256(secret, "blockwire-accept" || hello || challenge) so the connecting side
//! knows it reached a member too. Both compares are constant-time (`hmac`'s `verify_slice`).
//! Shared-memory and RDMA links then exchange their set-up blobs ([`exchange_setup`]) over the
//! same socket.
//!
//! ```text
//! Hello, 40 bytes (connecting -> accepting), little-endian:
//! byte 0      4        6     7      8            16    17    18     20             36       40
//!      +------+--------+-----+------+------------+-----+-----+------+--------------+--------+
//!      |magic |version |trans|flags | cluster id |from |to   |zero  | nonce (16)   | zero   |
//!      +------+--------+-----+------+------------+-----+-----+------+--------------+--------+
//! Reply, 24 bytes (accepting -> connecting):
//! byte 0      4        6      7      8                      24
//!      +------+--------+------+------+----------------------+
//!      |magic |version |status|flags | challenge nonce (16) |
//!      +------+--------+------+------+----------------------+
//! flags bit 0: a cluster secret is configured on the sender's side.
//! ```
//! Every input is checked before use; a bad field is a typed [`HandshakeError`] naming it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use signals::NodeId;

use crate::TransportKind;

/// The four bytes every hello and reply start with.
pub const MAGIC: [u8; 4] = *b"BWHS";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Size of a hello.
pub const HELLO_BYTES: usize = 40;
/// Size of a reply.
pub const REPLY_BYTES: usize = 24;
/// Size of a secret proof (HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;
/// The largest set-up blob a peer may send.
pub const MAX_SETUP_BYTES: usize = 4096;
const FLAG_SECRET: u8 = 1;

/// Why the accepting side refused a link; sent as the reply's status byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The hello's first bytes are not [`MAGIC`].
    #[error("wrong magic")]
    WrongMagic,
    /// Another protocol version.
    #[error("wrong protocol version")]
    WrongVersion,
    /// Another cluster.
    #[error("wrong cluster id")]
    WrongCluster,
    /// The hello is addressed to another node id.
    #[error("hello addressed to another node")]
    NotForMe,
    /// The sender's node id is not a configured peer of this node.
    #[error("unknown node id")]
    UnknownNode,
    /// The configured transport of this link is another one.
    #[error("wrong transport for this link")]
    WrongTransport,
    /// The higher node id tried to connect (the lower one connects).
    #[error("wrong direction: the lower node id connects")]
    WrongDirection,
    /// The peer already has a live link to this node.
    #[error("node id already connected")]
    AlreadyConnected,
    /// One side has a cluster secret and the other does not.
    #[error("cluster secret configured on one side only")]
    SecretMismatch,
    /// The proof of the secret was wrong.
    #[error("wrong cluster secret")]
    BadSecret,
    /// The accepting side cannot take the link now (shutting down, no resources).
    #[error("busy")]
    Busy,
}

impl Refusal {
    const ALL: [Refusal; 11] = [
        Refusal::WrongMagic,
        Refusal::WrongVersion,
        Refusal::WrongCluster,
        Refusal::NotForMe,
        Refusal::UnknownNode,
        Refusal::WrongTransport,
        Refusal::WrongDirection,
        Refusal::AlreadyConnected,
        Refusal::SecretMismatch,
        Refusal::BadSecret,
        Refusal::Busy,
    ];

    fn code(self) -> u8 {
        16 + Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0) as u8
    }

    fn from_code(code: u8) -> Option<Refusal> {
        code.checked_sub(16).and_then(|i| Refusal::ALL.get(i as usize).copied())
    }
}

const STATUS_ACCEPTED: u8 = 0;
const STATUS_CHALLENGE: u8 = 1;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The other side refused, for this reason.
    #[error("refused by node {peer}: {reason}")]
    Refused { peer: u32, reason: Refusal },
    /// This side refused the other (and told it so).
    #[error("refused node {peer}: {reason}")]
    RefusedPeer { peer: u32, reason: Refusal },
    /// The other side's answer is not a valid handshake message.
    #[error("bad handshake message from peer: {what} = {value}")]
    BadMessage { what: &'static str, value: u64 },
    /// The accepting side could not prove it knows the secret.
    #[error("peer's proof of the cluster secret is wrong")]
    BadServerProof,
    /// With a cluster secret here, the other side accepted without the challenge in which it
    /// proves it knows the secret.
    #[error("node {peer} accepted without proving it knows the cluster secret")]
    UnprovenAccept { peer: u32 },
    /// The socket failed or timed out.
    #[error("handshake {op} failed: {source}")]
    Io { op: &'static str, source: io::Error },
}

/// What the connecting side says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// Transport of the link.
    pub transport: u8,
    /// Whether the connecting side has a cluster secret.
    pub has_secret: bool,
    /// Cluster id.
    pub cluster_id: u64,
    /// Connecting node.
    pub from: u8,
    /// Accepting node.
    pub to: u8,
    /// Fresh random bytes.
    pub nonce: [u8; 16],
}

impl Hello {
    /// A hello from `from` to `to` for a link of `transport`, with a fresh nonce.
    pub fn new(
        cluster_id: u64,
        from: NodeId,
        to: NodeId,
        transport: TransportKind,
        has_secret: bool,
    ) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            transport: transport.code(),
            has_secret,
            cluster_id,
            from: from.get(),
            to: to.get(),
            nonce: nonce(),
        }
    }

    fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6] = self.transport;
        b[7] = if self.has_secret { FLAG_SECRET } else { 0 };
        b[8..16].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[16] = self.from;
        b[17] = self.to;
        b[20..36].copy_from_slice(&self.nonce);
        b
    }

    fn decode(b: &[u8; HELLO_BYTES]) -> Result<Hello, Refusal> {
        if b[0..4] != MAGIC {
            return Err(Refusal::WrongMagic);
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&b[20..36]);
        Ok(Hello {
            version: u16::from_le_bytes([b[4], b[5]]),
            transport: b[6],
            has_secret: b[7] & FLAG_SECRET != 0,
            cluster_id: u64::from_le_bytes(b[8..16].try_into().unwrap_or([0; 8])),
            from: b[16],
            to: b[17],
            nonce,
        })
    }
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    if getrandom::getrandom(&mut n).is_err() {
        // No OS randomness: fall back to time and address entropy. The nonce only needs to be
        // fresh, not secret; the secret itself never leaves the process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let addr = &t as *const u128 as usize as u128;
        n.copy_from_slice(&(t ^ (addr << 64)).to_le_bytes());
    }
    n
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> HandshakeError {
    move |source| HandshakeError::Io { op, source }
}

/// Reads one whole message into `buf`. The socket's read timeout is the budget for the whole
/// message, not for each read: a peer that trickles a byte at a time cannot hold a handshake
/// (and its slot) open for longer than that.
fn read_message(
    stream: &mut TcpStream,
    buf: &mut [u8],
    op: &'static str,
) -> Result<(), HandshakeError> {
    let budget = stream.read_timeout().map_err(io_err(op))?;
    let deadline = budget.map(|b| Instant::now() + b);
    let mut filled = 0;
    while filled < buf.len() {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::Io {
                    op,
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{filled} of {} bytes arrived within {:?}",
                            buf.len(),
                            budget.unwrap_or_default()
                        ),
                    ),
                });
            }
            stream.set_read_timeout(Some(left)).map_err(io_err(op))?;
        }
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(HandshakeError::Io {
                    op,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the peer closed after {filled} of {} bytes", buf.len()),
                    ),
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The socket's timeout (what is left of the budget) ran out: the loop's check says
            // so, naming how much arrived (the socket says only "would block").
            Err(e)
                if deadline.is_some()
                    && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(HandshakeError::Io { op, source: e }),
        }
    }
    if deadline.is_some() {
        stream.set_read_timeout(budget).map_err(io_err(op))?;
    }
    Ok(())
}

fn proof(secret: &[u8], label: &[u8], hello: &[u8], reply: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(label);
    mac.update(hello);
    mac.update(reply);
    mac
}

fn reply_bytes(status: u8, has_secret: bool, challenge: &[u8; 16]) -> [u8; REPLY_BYTES] {
    let mut r = [0u8; REPLY_BYTES];
    r[0..4].copy_from_slice(&MAGIC);
    r[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    r[6] = status;
    r[7] = if has_secret { FLAG_SECRET } else { 0 };
    r[8..24].copy_from_slice(challenge);
    r
}

/// The connecting side: sends `hello`, answers a challenge with `secret`, and returns when the
/// accepting side has accepted (and, with a secret, proved it knows it too).
pub fn connect(
    stream: &mut TcpStream,
    hello: &Hello,
    secret: Option<&[u8]>,
) -> Result<(), HandshakeError> {
    let hello_bytes = hello.encode();
    stream.write_all(&hello_bytes).map_err(io_err("send hello"))?;
    let mut reply = [0u8; REPLY_BYTES];
    read_message(stream, &mut reply, "read reply")?;
    if reply[0..4] != MAGIC {
        return Err(HandshakeError::BadMessage {
            what: "reply magic",
            value: u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]) as u64,
        });
    }
    let peer = hello.to as u32;
    let status = reply[6];
    if status == STATUS_ACCEPTED || status == STATUS_CHALLENGE {
        let version = u16::from_le_bytes([reply[4], reply[5]]);
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::BadMessage {
                what: "reply version",
                value: version as u64,
            });
        }
        let peer_secret = reply[7] & FLAG_SECRET != 0;
        if peer_secret != secret.is_some() || reply[7] & !FLAG_SECRET != 0 {
            return Err(HandshakeError::BadMessage { what: "reply flags", value: reply[7] as u64 });
        }
    }
    match status {
        // With a secret, acceptance comes only after the challenge, with the peer's proof.
        STATUS_ACCEPTED if secret.is_some() => Err(HandshakeError::UnprovenAccept { peer }),
        STATUS_ACCEPTED => Ok(()),
        STATUS_CHALLENGE => {
            let Some(secret) = secret else {
                return Err(HandshakeError::BadMessage {
                    what: "unexpected challenge status",
                    value: 1,
                });
            };
            let answer =
                proof(secret, b"blockwire-connect", &hello_bytes, &reply).finalize().into_bytes();
            stream.write_all(&answer).map_err(io_err("send proof"))?;
            let mut status = [0u8; 1];
            read_message(stream, &mut status, "read verdict")?;
            if status[0] != STATUS_ACCEPTED {
                return Err(refused(peer, status[0]));
            }
            let mut server_proof = [0u8; PROOF_BYTES];
            read_message(stream, &mut server_proof, "read peer proof")?;
            proof(secret, b"blockwire-accept", &hello_bytes, &reply)
                .verify_slice(&server_proof)
                .map_err(|_| HandshakeError::BadServerProof)
        }
        code => Err(refused(peer, code)),
    }
}

fn refused(peer: u32, code: u8) -> HandshakeError {
    match Refusal::from_code(code) {
        Some(reason) => HandshakeError::Refused { peer, reason },
        None => HandshakeError::BadMessage { what: "reply status", value: code as u64 },
    }
}

/// What the accepting side knows of itself.
#[derive(Clone, Copy, Debug)]
pub struct AcceptParams<'a> {
    /// This cluster.
    pub cluster_id: u64,
    /// This node.
    pub me: NodeId,
    /// The cluster secret, if configured.
    pub secret: Option<&'a [u8]>,
}

/// The accepting side. `check` judges the peer and transport from the config (unknown node,
/// wrong transport, wrong direction); `claim` reserves the link once the peer is proven, and
/// refuses with [`Refusal::AlreadyConnected`] when it is taken. Returns the accepted hello.
pub fn accept(
    stream: &mut TcpStream,
    params: &AcceptParams<'_>,
    check: impl FnOnce(&Hello) -> Result<(), Refusal>,
    claim: impl FnOnce(&Hello) -> Result<(), Refusal>,
) -> Result<Hello, HandshakeError> {
    let mut hello_bytes = [0u8; HELLO_BYTES];
    read_message(stream, &mut hello_bytes, "read hello")?;
    let challenge = nonce();
    let has_secret = params.secret.is_some();
    let refuse = |stream: &mut TcpStream, peer: u8, reason: Refusal| {
        // Best effort: the peer learns why before the socket closes.
        let _ = stream.write_all(&reply_bytes(reason.code(), has_secret, &challenge));
        HandshakeError::RefusedPeer { peer: peer as u32, reason }
    };
    let hello = match Hello::decode(&hello_bytes) {
        Ok(h) => h,
        Err(reason) => return Err(refuse(stream, 0, reason)),
    };
    let verdict = if hello.version != PROTOCOL_VERSION {
        Err(Refusal::WrongVersion)
    } else if hello.cluster_id != params.cluster_id {
        Err(Refusal::WrongCluster)
    } else if hello.to != params.me.get() {
        Err(Refusal::NotForMe)
    } else if hello.has_secret != has_secret {
        Err(Refusal::SecretMismatch)
    } else {
        check(&hello)
    };
    if let Err(reason) = verdict {
        return Err(refuse(stream, hello.from, reason));
    }
    let Some(secret) = params.secret else {
        claim(&hello).map_err(|reason| refuse(stream, hello.from, reason))?;
        stream
            .write_all(&reply_bytes(STATUS_ACCEPTED, false, &challenge))
            .map_err(io_err("send accept"))?;
        return Ok(hello);
    };
    let reply = reply_bytes(STATUS_CHALLENGE, true, &challenge);
    stream.write_all(&reply).map_err(io_err("send challenge"))?;
    let mut answer = [0u8; PROOF_BYTES];
    read_message(stream, &mut answer, "read proof")?;
    if proof(secret, b"blockwire-connect", &hello_bytes, &reply).verify_slice(&answer).is_err() {
        let _ = stream.write_all(&[Refusal::BadSecret.code()]);
        return Err(HandshakeError::RefusedPeer {
            peer: hello.from as u32,
            reason: Refusal::BadSecret,
        });
    }
    if let Err(reason) = claim(&hello) {
        let _ = stream.write_all(&[reason.code()]);
        return Err(HandshakeError::RefusedPeer { peer: hello.from as u32, reason });
    }
    let server_proof =
        proof(secret, b"blockwire-accept", &hello_bytes, &reply).finalize().into_bytes();
    let mut verdict = [0u8; 1 + PROOF_BYTES];
    verdict[0] = STATUS_ACCEPTED;
    verdict[1..].copy_from_slice(&server_proof);
    stream.write_all(&verdict).map_err(io_err("send accept"))?;
    Ok(hello)
}

/// Sends this side's transport set-up blob and reads the peer's (length-prefixed, at most
/// [`MAX_SETUP_BYTES`]).
pub fn exchange_setup(stream: &mut TcpStream, mine: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    if mine.len() > MAX_SETUP_BYTES {
        return Err(HandshakeError::BadMessage {
            what: "own setup length",
            value: mine.len() as u64,
        });
    }
    stream.write_all(&(mine.len() as u32).to_le_bytes()).map_err(io_err("send setup length"))?;
    stream.write_all(mine).map_err(io_err("send setup"))?;
    let mut len = [0u8; 4];
    read_message(stream, &mut len, "read setup length")?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_SETUP_BYTES {
        return Err(HandshakeError::BadMessage { what: "setup length", value: len as u64 });
    }
    let mut theirs = vec![0u8; len];
    read_message(stream, &mut theirs, "read setup")?;
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_round_trip() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::from_code(r.code()), Some(r));
        }
        assert_eq!(Refusal::from_code(2), None);
        assert_eq!(Refusal::from_code(200), None);
    }

    #[test]
    fn hello_round_trips_and_checks_magic() {
        let n = |i| NodeId::new(i).unwrap();
        let h = Hello::new(77, n(1), n(2), TransportKind::Tcp, true);
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(Hello::decode(&bad), Err(Refusal::WrongMagic));
    }
}
