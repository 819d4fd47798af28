//! Setting up one RDMA link over its handshake socket: create the queue pair and register the
//! receive ring, post the first receive requests, swap [`SetupMessage`]s, move the queue pair
//! through INIT -> RTR -> RTS, and confirm with a last exchange so neither side writes before
//! the other can receive. Everything the peer sends is checked before use.

use std::net::TcpStream;
use std::sync::Arc;

use signals::Limits;
use verbs::{Device, Endpoint, EndpointShape, Region, RemoteQp, VerbsError};

use crate::handshake::{self, HandshakeError};

/// Bytes after each ring (and after each staging mirror) for the credit word's line.
pub const CREDIT_LINE: usize = 64;
/// The largest ring a link may have.
pub const MAX_RING_BYTES: usize = 1 << 30;
/// The deepest receive queue a peer may announce.
pub const MAX_RECV_DEPTH: u32 = 1 << 16;

/// What a link is built with.
#[derive(Clone, Debug)]
pub struct RdmaParams {
    /// The registry's open device.
    pub device: Arc<Device>,
    /// Our receive ring's size (a power of two; the peer writes it).
    pub ring_bytes: usize,
    /// Receive requests kept posted.
    pub recv_depth: u32,
    /// Send queue depth.
    pub send_depth: u32,
    /// Signal limits (the ring must hold four largest signals).
    pub limits: Limits,
}

impl RdmaParams {
    /// Defaults for queue depths.
    pub fn new(device: Arc<Device>, ring_bytes: usize, limits: Limits) -> RdmaParams {
        RdmaParams { device, ring_bytes, recv_depth: 256, send_depth: 128, limits }
    }
}

/// Why an RDMA link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RdmaSetupError {
    /// A verbs call failed.
    #[error(transparent)]
    Verbs(#[from] VerbsError),
    /// The exchange over the socket failed.
    #[error("rdma set-up exchange: {0}")]
    Exchange(#[from] HandshakeError),
    /// The peer's set-up is impossible or does not match ours.
    #[error("rdma set-up from peer refused: {0}")]
    Mismatch(String),
}

/// The peer's side of the link, as it announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupMessage {
    /// Its queue pair.
    pub qp: RemoteQp,
    /// Receive requests it keeps posted (our write credit at start).
    pub recv_depth: u32,
    /// Its receive ring.
    pub ring_addr: u64,
    /// The ring's key.
    pub ring_rkey: u32,
    /// The ring's size.
    pub ring_bytes: u32,
    /// Where we write its credit word (in the same region as the ring).
    pub credit_addr: u64,
}

const MAGIC: [u8; 4] = *b"BWRD";
const VERSION: u16 = 1;
/// Encoded size of a [`SetupMessage`].
///
/// ```text
///  0 magic "BWRD" | 4 version u16 | 6 mtu u8 | 7 zero | 8 qp_num u32 | 12 psn u32
///  16 gid [16] | 32 lid u16 | 34 zero u16 | 36 recv_depth u32 | 40 ring_addr u64
///  48 ring_rkey u32 | 52 ring_bytes u32 | 56 credit_addr u64 | 64 (end)
/// ```
pub const SETUP_BYTES: usize = 64;

impl SetupMessage {
    /// Little-endian bytes.
    pub fn encode(&self) -> [u8; SETUP_BYTES] {
        let mut b = [0u8; SETUP_BYTES];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6] = self.qp.mtu as u8;
        b[8..12].copy_from_slice(&self.qp.qp_num.to_le_bytes());
        b[12..16].copy_from_slice(&self.qp.psn.to_le_bytes());
        b[16..32].copy_from_slice(&self.qp.gid);
        b[32..34].copy_from_slice(&self.qp.lid.to_le_bytes());
        b[36..40].copy_from_slice(&self.recv_depth.to_le_bytes());
        b[40..48].copy_from_slice(&self.ring_addr.to_le_bytes());
        b[48..52].copy_from_slice(&self.ring_rkey.to_le_bytes());
        b[52..56].copy_from_slice(&self.ring_bytes.to_le_bytes());
        b[56..64].copy_from_slice(&self.credit_addr.to_le_bytes());
        b
    }

    /// Reads and checks a peer's message; `min_ring` is four of our largest signals.
    pub fn decode(b: &[u8], min_ring: usize) -> Result<SetupMessage, RdmaSetupError> {
        let bad = |what: String| Err(RdmaSetupError::Mismatch(what));
        if b.len() != SETUP_BYTES {
            return bad(format!("set-up is {} bytes, expected {SETUP_BYTES}", b.len()));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
        if b[0..4] != MAGIC {
            return bad(format!("bad magic {:02x?}", &b[0..4]));
        }
        if u16_at(4) != VERSION {
            return bad(format!("set-up version mismatch: ours {VERSION}, peer's {}", u16_at(4)));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[16..32]);
        let m = SetupMessage {
            qp: RemoteQp {
                qp_num: u32_at(8),
                psn: u32_at(12),
                gid,
                lid: u16_at(32),
                mtu: b[6].into(),
            },
            recv_depth: u32_at(36),
            ring_addr: u64_at(40),
            ring_rkey: u32_at(48),
            ring_bytes: u32_at(52),
            credit_addr: u64_at(56),
        };
        let ring = m.ring_bytes as usize;
        if !(1..=5).contains(&m.qp.mtu) {
            return bad(format!("path MTU code {} is not 1..=5", m.qp.mtu));
        }
        if m.qp.qp_num >= 1 << 24 || m.qp.psn >= 1 << 24 {
            return bad(format!("QP number {} or PSN {} is over 24 bits", m.qp.qp_num, m.qp.psn));
        }
        if !ring.is_power_of_two() || ring < min_ring || ring > MAX_RING_BYTES {
            return bad(format!(
                "ring of {ring} bytes: must be a power of two in {min_ring}..={MAX_RING_BYTES}"
            ));
        }
        if m.recv_depth == 0 || m.recv_depth > MAX_RECV_DEPTH {
            return bad(format!("receive depth {} is not 1..={MAX_RECV_DEPTH}", m.recv_depth));
        }
        if m.credit_addr != m.ring_addr.wrapping_add(ring as u64) {
            return bad(format!(
                "credit word at {:#x} is not right after the ring ({:#x} + {ring})",
                m.credit_addr, m.ring_addr
            ));
        }
        Ok(m)
    }
}

/// A set-up link: the queue pair (in RTS) and its memory.
#[derive(Debug)]
pub struct RdmaLink {
    /// The queue pair, its CQs and channel (dropped first: no NIC access after it).
    pub endpoint: Endpoint,
    /// Our receive ring, then our credit line (the peer writes both).
    pub ring: Region,
    /// The mirror of the peer's ring we copy batches into, then our outgoing credit word.
    pub staging: Region,
    /// Our ring's size.
    pub ring_bytes: usize,
    /// Receive requests we keep posted.
    pub recv_depth: u32,
    /// Our send queue's depth.
    pub send_depth: u32,
    /// What the peer announced.
    pub peer: SetupMessage,
}

/// Minimum ring size for `limits`: four largest signals, at least 4 KiB.
pub fn min_ring_bytes(limits: &Limits) -> usize {
    (limits.max_signal_words() * 4 * 4).max(4096).next_power_of_two()
}

fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    // A fixed PSN is as correct, only less robust against stale packets; never fail over it.
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b) & 0xff_ffff
}

/// Builds our half and swaps set-ups with the peer over `stream` (whose read timeout bounds
/// the exchange). Both sides run the same steps.
pub fn establish(stream: &mut TcpStream, p: &RdmaParams) -> Result<RdmaLink, RdmaSetupError> {
    let min_ring = min_ring_bytes(&p.limits);
    if !p.ring_bytes.is_power_of_two() || p.ring_bytes < min_ring || p.ring_bytes > MAX_RING_BYTES {
        return Err(RdmaSetupError::Mismatch(format!(
            "own ring of {} bytes: must be a power of two in {min_ring}..={MAX_RING_BYTES}",
            p.ring_bytes
        )));
    }
    let shape =
        EndpointShape { send_depth: p.send_depth, recv_depth: p.recv_depth, max_inline: 256 };
    let endpoint = p.device.endpoint(shape)?;
    let ring = p.device.register(p.ring_bytes + CREDIT_LINE, true)?;
    endpoint.to_init()?;
    endpoint.post_recvs(0, p.recv_depth)?;
    let (gid, _) = p.device.gid();
    let psn = random_psn();
    let mine = SetupMessage {
        qp: RemoteQp {
            qp_num: endpoint.qp_num(),
            psn,
            gid,
            lid: p.device.lid(),
            mtu: p.device.mtu(),
        },
        recv_depth: p.recv_depth,
        ring_addr: ring.addr(),
        ring_rkey: ring.rkey(),
        ring_bytes: p.ring_bytes as u32,
        credit_addr: ring.addr() + p.ring_bytes as u64,
    };
    let theirs = handshake::exchange_setup(stream, &mine.encode())?;
    let peer = SetupMessage::decode(&theirs, min_ring)?;
    // Both ends of a link are configured with one ring size (as for shared memory); the peer's
    // says how much staging memory we register and pin here, so it is not left to the peer.
    if peer.ring_bytes as usize != p.ring_bytes {
        return Err(RdmaSetupError::Mismatch(format!(
            "ring size: ours {} bytes, the peer's {} (both ends of a link use the same)",
            p.ring_bytes, peer.ring_bytes
        )));
    }
    let staging = p.device.register(peer.ring_bytes as usize + CREDIT_LINE, false)?;
    // The peer's first credit: its whole ring and receive queue. It writes this word only after
    // taking data from us, and we send none before the set-up ends.
    let first = super::Credit { consumed: 0, posted: peer.recv_depth }.encode();
    // SAFETY: the credit word and its check are 8-aligned inside our ring region (ring + credit
    // line); nothing writes them concurrently (see above).
    unsafe {
        let at = ring.as_ptr().add(p.ring_bytes + super::CREDIT_AT).cast::<u64>();
        at.write_volatile(first);
        at.add(1).write_volatile(super::seal(first));
    }
    let remote = RemoteQp { mtu: peer.qp.mtu.min(mine.qp.mtu), ..peer.qp };
    endpoint.to_rtr(&remote)?;
    // 4.096 us << 14 = 67 ms per try, 7 tries: a peer that stops acknowledging fails the link
    // in about half a second. Receiver-not-ready is retried 6 times, not forever: credits mean
    // we never write without a receive request posted, so RNR only comes from a broken peer
    // (a queue pair in error has none), and it must fail the link, not stall it.
    endpoint.to_rts(psn, 14, 7, 6)?;
    let ready = handshake::exchange_setup(stream, b"ready")?;
    if ready != b"ready" {
        return Err(RdmaSetupError::Mismatch(format!("expected \"ready\", got {ready:02x?}")));
    }
    Ok(RdmaLink {
        endpoint,
        ring,
        staging,
        ring_bytes: p.ring_bytes,
        recv_depth: p.recv_depth,
        send_depth: p.send_depth,
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SetupMessage {
        SetupMessage {
            qp: RemoteQp { qp_num: 17, psn: 0x12345, gid: [7; 16], lid: 0, mtu: 3 },
            recv_depth: 256,
            ring_addr: 0x7000_0000,
            ring_rkey: 99,
            ring_bytes: 1 << 16,
            credit_addr: 0x7000_0000 + (1 << 16),
        }
    }

    #[test]
    fn setup_round_trips() {
        let m = sample();
        assert_eq!(SetupMessage::decode(&m.encode(), 4096).unwrap(), m);
    }

    #[test]
    fn impossible_setups_are_refused_by_name() {
        let check = |f: &dyn Fn(&mut SetupMessage), want: &str| {
            let mut m = sample();
            f(&mut m);
            let e = SetupMessage::decode(&m.encode(), 4096).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        check(&|m| m.ring_bytes = 5000, "ring of 5000 bytes");
        check(&|m| m.ring_bytes = 1024, "ring of 1024 bytes");
        check(&|m| m.recv_depth = 0, "receive depth 0");
        check(&|m| m.qp.mtu = 9, "path MTU code 9");
        check(&|m| m.qp.qp_num = 1 << 24, "over 24 bits");
        check(&|m| m.credit_addr = 0, "credit word at 0x0");
        let mut b = sample().encode();
        b[4] = 2;
        let e = SetupMessage::decode(&b, 4096).unwrap_err().to_string();
        assert!(e.contains("version mismatch: ours 1, peer's 2"), "{e}");
        b[0] = b'X';
        assert!(SetupMessage::decode(&b, 4096).unwrap_err().to_string().contains("bad magic"));
        assert!(SetupMessage::decode(&b[..10], 4096).unwrap_err().to_string().contains("10 bytes"));
    }
}
