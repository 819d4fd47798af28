//! blockwire's small verbs layer: owning wrappers over the libibverbs objects one RDMA link
//! needs (device context and protection domain, registered regions, a completion channel with
//! two completion queues, and a reliable-connected queue pair).
//!
//! The verbs come from Debian's libibverbs (rdma-core 44): exported functions are declared in
//! [`ffi`]; the static-inline ones (post, poll, arm, register, modify) go through a C shim,
//! `csrc/shim.c`, that takes and returns scalars, opaque pointers and two small structs whose
//! sizes are asserted on both sides. Every object is released in the order verbs requires
//! (events acknowledged before their CQ is destroyed, the QP before its CQs, regions before the
//! protection domain, the context last) by holding an `Arc` of what it depends on.
//!
//! With no RDMA-capable kernel, `ibv_get_device_list` fails with ENOSYS: [`Device::open`]
//! reports that as [`VerbsError::NoDevice`] with the reason, never as a crash.

pub mod ffi;

use std::ffi::{c_int, CStr, CString};
use std::fmt;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub use ffi::{Wc, Write, MAX_CHAIN, WC_IMM, WRITE_IMM, WRITE_INLINE, WRITE_READ, WRITE_SIGNALED};

/// What went wrong in a verbs call.
#[derive(Debug, thiserror::Error)]
pub enum VerbsError {
    /// No usable RDMA device.
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    /// A verbs call failed.
    #[error("{op} failed: {source}")]
    Call {
        /// The call.
        op: &'static str,
        /// The errno it reported.
        source: std::io::Error,
    },
}

fn call_err(op: &'static str, rc: c_int) -> VerbsError {
    let errno =
        if rc < 0 { -rc } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(5) };
    VerbsError::Call { op, source: std::io::Error::from_raw_os_error(errno) }
}

fn check(op: &'static str, rc: c_int) -> Result<(), VerbsError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(call_err(op, rc))
    }
}

fn non_null<T>(op: &'static str, p: *mut T) -> Result<NonNull<T>, VerbsError> {
    NonNull::new(p).ok_or_else(|| call_err(op, 0))
}

/// A completion status as the library names it ("remote access error", ...).
pub fn status_str(status: u32) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value (unknown ones included).
    let s = unsafe { ffi::bw_wc_status_str(status) };
    if s.is_null() {
        return format!("status {status}");
    }
    // SAFETY: a non-null result is a NUL-terminated static string.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// An open device: its context, one protection domain, and the port and GID links use.
pub struct Device {
    ctx: NonNull<ffi::IbvContext>,
    pd: NonNull<ffi::IbvPd>,
    name: String,
    port: u8,
    gid: [u8; 16],
    gid_index: i32,
    lid: u16,
    mtu: u32,
}

// SAFETY: libibverbs contexts and protection domains may be used from any thread (the library
// and its providers lock internally); `Device` never hands out the raw pointers mutably.
unsafe impl Send for Device {}
// SAFETY: as above; every method takes `&self` and calls thread-safe verbs.
unsafe impl Sync for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("gid_index", &self.gid_index)
            .finish()
    }
}

impl Device {
    /// Opens device `name` (or the first one), port 1, and picks the GID links use: the first
    /// IPv4-mapped one (RoCE v2 over an IPv4 address), else the first non-zero one.
    pub fn open(name: Option<&str>) -> Result<Arc<Device>, VerbsError> {
        let cname = name
            .map(|n| CString::new(n).map_err(|_| VerbsError::NoDevice(format!("bad name {n:?}"))))
            .transpose()?;
        let mut ctx = std::ptr::null_mut();
        let mut chosen = [0 as std::ffi::c_char; 64];
        // SAFETY: every pointer is valid for the call; `chosen` has the length we pass.
        let rc = unsafe {
            ffi::bw_open_device(
                cname.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                &mut ctx,
                chosen.as_mut_ptr(),
                chosen.len() as c_int,
            )
        };
        if rc != 0 {
            let errno = -rc;
            let why = match (errno, name) {
                (libc::ENOSYS, _) => {
                    "the kernel has no RDMA support (ibv_get_device_list: ENOSYS); \
                     load rdma_rxe (scripts/rxe-setup.sh) or run inside scripts/rxe-vm.sh"
                        .to_string()
                }
                (libc::ENODEV, None) => "ibv_get_device_list lists no device".to_string(),
                (libc::ENODEV, Some(n)) => format!("no device named {n:?}"),
                (e, _) => {
                    format!("opening the device failed: {}", std::io::Error::from_raw_os_error(e))
                }
            };
            return Err(VerbsError::NoDevice(why));
        }
        let ctx = non_null("ibv_open_device", ctx)?;
        // SAFETY: the shim wrote a NUL-terminated name into `chosen`.
        let name = unsafe { CStr::from_ptr(chosen.as_ptr()) }.to_string_lossy().into_owned();
        // From here on, a failure must close the context: build the device early so its Drop
        // does (the PD pointer is set before anything else can fail).
        // SAFETY: `ctx` is an open context.
        let pd = unsafe { ffi::ibv_alloc_pd(ctx.as_ptr()) };
        let Some(pd) = NonNull::new(pd) else {
            // SAFETY: closing the context we opened, once.
            unsafe { ffi::ibv_close_device(ctx.as_ptr()) };
            return Err(call_err("ibv_alloc_pd", 0));
        };
        let mut dev =
            Device { ctx, pd, name, port: 1, gid: [0; 16], gid_index: -1, lid: 0, mtu: 0 };
        let (mut state, mut mtu, mut lid, mut gids, mut layer) = (0u32, 0u32, 0u16, 0i32, 0u8);
        // SAFETY: the out-pointers are our locals.
        let rc = unsafe {
            ffi::bw_query_port(
                ctx.as_ptr(),
                1,
                &mut state,
                &mut mtu,
                &mut lid,
                &mut gids,
                &mut layer,
            )
        };
        check("ibv_query_port", rc)?;
        if state != ffi::PORT_ACTIVE {
            return Err(VerbsError::NoDevice(format!(
                "port 1 of {} is not active (state {state})",
                dev.name
            )));
        }
        (dev.lid, dev.mtu) = (lid, mtu);
        let mut first_nonzero = None;
        for index in 0..gids.clamp(0, 256) {
            let mut gid = [0u8; 16];
            // SAFETY: `gid` has the 16 bytes the shim writes.
            if unsafe { ffi::bw_query_gid(ctx.as_ptr(), 1, index, gid.as_mut_ptr()) } != 0 {
                continue;
            }
            if gid == [0; 16] {
                continue;
            }
            if gid[..10] == [0; 10] && gid[10..12] == [0xff, 0xff] {
                first_nonzero = Some((index, gid));
                break;
            }
            first_nonzero.get_or_insert((index, gid));
        }
        let Some((index, gid)) = first_nonzero else {
            return Err(VerbsError::NoDevice(format!(
                "{} port 1 has no GID (give its network device an IP address)",
                dev.name
            )));
        };
        (dev.gid_index, dev.gid) = (index, gid);
        Ok(Arc::new(dev))
    }

    /// The device's name (`rxe0`, `mlx5_0`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port links use.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// The GID links use, and its index.
    pub fn gid(&self) -> ([u8; 16], i32) {
        (self.gid, self.gid_index)
    }

    /// The port's LID (0 on RoCE).
    pub fn lid(&self) -> u16 {
        self.lid
    }

    /// The port's active MTU (`enum ibv_mtu`: 1 = 256 bytes ... 5 = 4096 bytes).
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Registers `bytes` of fresh zeroed, page-aligned memory; `remote` lets the peer RDMA-WRITE
    /// into it and RDMA-READ from it.
    pub fn register(self: &Arc<Self>, bytes: usize, remote: bool) -> Result<Region, VerbsError> {
        let mut map = memmap2::MmapMut::map_anon(bytes.max(1))
            .map_err(|e| VerbsError::Call { op: "mmap", source: e })?;
        let mut access = ffi::ACCESS_LOCAL_WRITE;
        if remote {
            access |= ffi::ACCESS_REMOTE_WRITE | ffi::ACCESS_REMOTE_READ;
        }
        let (mut lkey, mut rkey) = (0u32, 0u32);
        // SAFETY: the mapping is ours and lives in the Region as long as the registration.
        let mr = unsafe {
            ffi::bw_reg_mr(
                self.pd.as_ptr(),
                map.as_mut_ptr().cast(),
                map.len(),
                access,
                &mut lkey,
                &mut rkey,
            )
        };
        let mr = non_null("ibv_reg_mr", mr)?;
        Ok(Region { _device: self.clone(), map, mr, lkey, rkey })
    }

    /// Creates a completion channel, a send and a receive completion queue (the receive one
    /// reports to the channel) and a reliable-connected queue pair over them, in state RESET.
    pub fn endpoint(self: &Arc<Self>, shape: EndpointShape) -> Result<Endpoint, VerbsError> {
        // SAFETY: `ctx` is open for the device's life.
        let channel = non_null("ibv_create_comp_channel", unsafe {
            ffi::ibv_create_comp_channel(self.ctx.as_ptr())
        })?;
        let mut ep = Endpoint {
            device: self.clone(),
            channel,
            send_cq: None,
            recv_cq: None,
            qp: None,
            qp_num: 0,
            max_inline: 0,
            channel_fd: -1,
            unacked: AtomicU32::new(0),
        };
        // SAFETY: the channel is ours.
        let fd = unsafe { ffi::bw_channel_fd(channel.as_ptr()) };
        if fd < 0 {
            return Err(call_err("fcntl(completion channel)", fd));
        }
        ep.channel_fd = fd;
        // SAFETY: context and channel are live; no CQ context pointer is used.
        ep.send_cq = Some(non_null("ibv_create_cq(send)", unsafe {
            ffi::ibv_create_cq(
                self.ctx.as_ptr(),
                shape.send_depth as c_int,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        })?);
        // SAFETY: as above, this CQ reports to our channel.
        ep.recv_cq = Some(non_null("ibv_create_cq(recv)", unsafe {
            ffi::ibv_create_cq(
                self.ctx.as_ptr(),
                shape.recv_depth as c_int,
                std::ptr::null_mut(),
                channel.as_ptr(),
                0,
            )
        })?);
        let (mut qp_num, mut max_inline) = (0u32, 0u32);
        // SAFETY: PD and both CQs are live; the out-pointers are locals.
        let qp = unsafe {
            ffi::bw_create_rc_qp(
                self.pd.as_ptr(),
                ep.send_cq.map_or(std::ptr::null_mut(), NonNull::as_ptr),
                ep.recv_cq.map_or(std::ptr::null_mut(), NonNull::as_ptr),
                shape.send_depth,
                shape.recv_depth,
                shape.max_inline,
                &mut qp_num,
                &mut max_inline,
            )
        };
        ep.qp = Some(non_null("ibv_create_qp", qp)?);
        (ep.qp_num, ep.max_inline) = (qp_num, max_inline);
        Ok(ep)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every region and endpoint holds an Arc of this device, so none is left; the
        // PD goes before the context, each once.
        unsafe {
            ffi::ibv_dealloc_pd(self.pd.as_ptr());
            ffi::ibv_close_device(self.ctx.as_ptr());
        }
    }
}

/// Registered memory: a private anonymous mapping and its memory region.
pub struct Region {
    _device: Arc<Device>,
    map: memmap2::MmapMut,
    mr: NonNull<ffi::IbvMr>,
    lkey: u32,
    rkey: u32,
}

// SAFETY: a memory region is a plain registration; the mapping is owned. Concurrent access to
// the bytes goes through raw pointers whose users document their own synchronisation.
unsafe impl Send for Region {}
// SAFETY: as above: `&Region` only exposes addresses and keys.
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region").field("len", &self.map.len()).field("rkey", &self.rkey).finish()
    }
}

impl Region {
    /// The first byte (the NIC and the peer may write it: access it through raw pointers only).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr().cast_mut()
    }

    /// The address, as the verbs see it.
    pub fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Bytes registered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the region is empty (never: at least one byte is registered).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The local key.
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// The remote key (what the peer names in its writes).
    pub fn rkey(&self) -> u32 {
        self.rkey
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: deregistering our own region once, before the mapping is unmapped.
        unsafe { ffi::ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// Sizes of an endpoint's queues.
#[derive(Clone, Copy, Debug)]
pub struct EndpointShape {
    /// Send queue (and send CQ) depth.
    pub send_depth: u32,
    /// Receive queue (and receive CQ) depth.
    pub recv_depth: u32,
    /// Inline data wanted (the device may give less; 0 if refused).
    pub max_inline: u32,
}

/// The remote end of a queue pair, as learnt in the set-up exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteQp {
    /// Its number.
    pub qp_num: u32,
    /// Its first packet sequence number.
    pub psn: u32,
    /// Its GID.
    pub gid: [u8; 16],
    /// Its LID (0 on RoCE).
    pub lid: u16,
    /// Path MTU to use (`enum ibv_mtu`).
    pub mtu: u32,
}

/// A reliable-connected queue pair with its completion queues and channel.
pub struct Endpoint {
    device: Arc<Device>,
    channel: NonNull<ffi::IbvCompChannel>,
    send_cq: Option<NonNull<ffi::IbvCq>>,
    recv_cq: Option<NonNull<ffi::IbvCq>>,
    qp: Option<NonNull<ffi::IbvQp>>,
    qp_num: u32,
    max_inline: u32,
    channel_fd: RawFd,
    unacked: AtomicU32,
}

// SAFETY: verbs objects are thread-safe (the provider locks each queue); the sending half
// posts and polls the send CQ, the receiving half posts receives and polls the receive CQ.
unsafe impl Send for Endpoint {}
// SAFETY: as above.
unsafe impl Sync for Endpoint {}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint").field("qp_num", &self.qp_num).finish()
    }
}

/// Acknowledge CQ events once this many are outstanding (acks take a lock in the library).
const ACK_BATCH: u32 = 32;

impl Endpoint {
    fn qp(&self) -> *mut ffi::IbvQp {
        self.qp.map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    fn send_cq(&self) -> *mut ffi::IbvCq {
        self.send_cq.map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    fn recv_cq(&self) -> *mut ffi::IbvCq {
        self.recv_cq.map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    /// The queue pair's number.
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// Inline bytes the queue pair accepts per write.
    pub fn max_inline(&self) -> u32 {
        self.max_inline
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The completion channel's descriptor (non-blocking), readable after an armed receive CQ
    /// gets a completion.
    pub fn channel_fd(&self) -> RawFd {
        self.channel_fd
    }

    /// RESET -> INIT (local write and remote write allowed).
    pub fn to_init(&self) -> Result<(), VerbsError> {
        // SAFETY: our live queue pair.
        check("ibv_modify_qp(INIT)", unsafe { ffi::bw_qp_to_init(self.qp(), self.device.port) })
    }

    /// INIT -> RTR towards `remote`.
    pub fn to_rtr(&self, remote: &RemoteQp) -> Result<(), VerbsError> {
        // SAFETY: our live queue pair; the GID is 16 bytes.
        check("ibv_modify_qp(RTR)", unsafe {
            ffi::bw_qp_to_rtr(
                self.qp(),
                self.device.port,
                remote.mtu,
                remote.qp_num,
                remote.psn,
                remote.gid.as_ptr(),
                self.device.gid_index,
                remote.lid,
            )
        })
    }

    /// RTR -> RTS with our first PSN; `timeout` is the verbs exponent (4.096 us << timeout);
    /// `retry_cnt` retries of unacknowledged packets and `rnr_retry` of receiver-not-ready
    /// NAKs (7 = forever) before the queue pair fails.
    pub fn to_rts(
        &self,
        psn: u32,
        timeout: u8,
        retry_cnt: u8,
        rnr_retry: u8,
    ) -> Result<(), VerbsError> {
        // SAFETY: our live queue pair.
        check("ibv_modify_qp(RTS)", unsafe {
            ffi::bw_qp_to_rts(self.qp(), psn, timeout, retry_cnt, rnr_retry)
        })
    }

    /// Moves the queue pair to ERROR: outstanding requests complete flushed.
    pub fn to_error(&self) -> Result<(), VerbsError> {
        // SAFETY: our live queue pair.
        check("ibv_modify_qp(ERR)", unsafe { ffi::bw_qp_to_error(self.qp()) })
    }

    /// Posts `writes` (1..=[`MAX_CHAIN`]) as one chain: one doorbell.
    ///
    /// # Safety
    /// Each write's local span must be registered memory (or, inline, readable memory) that
    /// stays valid until the write completes; remote spans are the peer's business.
    pub unsafe fn post_writes(&self, writes: &[Write]) -> Result<(), VerbsError> {
        assert!(!writes.is_empty() && writes.len() <= MAX_CHAIN);
        // SAFETY: the caller vouches for the spans; the slice is valid for the call.
        check("ibv_post_send", unsafe {
            ffi::bw_post_writes(self.qp(), writes.as_ptr(), writes.len() as c_int)
        })
    }

    /// Posts `n` buffer-less receive requests (ids `first_id..first_id + n`).
    pub fn post_recvs(&self, first_id: u64, n: u32) -> Result<(), VerbsError> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: receives with no scatter list touch no memory of ours.
        check("ibv_post_recv", unsafe { ffi::bw_post_recvs(self.qp(), first_id, n as c_int) })
    }

    /// Polls the send CQ into `out`; returns how many completions.
    pub fn poll_send(&self, out: &mut [Wc]) -> Result<usize, VerbsError> {
        poll(self.send_cq(), out)
    }

    /// Polls the receive CQ into `out`; returns how many completions.
    pub fn poll_recv(&self, out: &mut [Wc]) -> Result<usize, VerbsError> {
        poll(self.recv_cq(), out)
    }

    /// Arms the receive CQ: its next completion raises one event on the channel.
    pub fn arm_recv(&self) -> Result<(), VerbsError> {
        // SAFETY: our live CQ.
        check("ibv_req_notify_cq", unsafe { ffi::bw_req_notify_cq(self.recv_cq()) })
    }

    /// Takes the channel's pending events (non-blocking); returns how many. They are
    /// acknowledged in batches, and all at drop.
    pub fn take_events(&self) -> Result<u32, VerbsError> {
        // SAFETY: our channel and CQ.
        let got = unsafe { ffi::bw_get_cq_events(self.channel.as_ptr(), self.recv_cq()) };
        if got < 0 {
            return Err(call_err("ibv_get_cq_event", got));
        }
        let got = got as u32;
        let unacked = self.unacked.fetch_add(got, Ordering::Relaxed) + got;
        if unacked >= ACK_BATCH {
            self.unacked.fetch_sub(unacked, Ordering::Relaxed);
            // SAFETY: acknowledging events we took on this CQ.
            unsafe { ffi::ibv_ack_cq_events(self.recv_cq(), unacked) };
        }
        Ok(got)
    }
}

fn poll(cq: *mut ffi::IbvCq, out: &mut [Wc]) -> Result<usize, VerbsError> {
    let n = out.len().min(64) as c_int;
    // SAFETY: `out` has room for `n` completions; the CQ is live.
    let got = unsafe { ffi::bw_poll_cq(cq, n, out.as_mut_ptr()) };
    if got < 0 {
        return Err(call_err("ibv_poll_cq", got));
    }
    Ok(got as usize)
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: verbs order: ack every taken event, destroy the QP, then its CQs, then the
        // channel; each pointer is ours and destroyed once.
        unsafe {
            let unacked = self.unacked.swap(0, Ordering::Relaxed);
            if let Some(cq) = self.recv_cq {
                if unacked > 0 {
                    ffi::ibv_ack_cq_events(cq.as_ptr(), unacked);
                }
            }
            if let Some(qp) = self.qp.take() {
                ffi::ibv_destroy_qp(qp.as_ptr());
            }
            if let Some(cq) = self.send_cq.take() {
                ffi::ibv_destroy_cq(cq.as_ptr());
            }
            if let Some(cq) = self.recv_cq.take() {
                ffi::ibv_destroy_cq(cq.as_ptr());
            }
            ffi::ibv_destroy_comp_channel(self.channel.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_struct_sizes_match_the_shim() {
        // SAFETY: plain getters.
        let (wc, write) = unsafe { (ffi::bw_wc_size(), ffi::bw_write_size()) };
        assert_eq!(wc, std::mem::size_of::<Wc>());
        assert_eq!(write, std::mem::size_of::<Write>());
    }

    #[test]
    fn status_strings_come_from_the_library() {
        assert_eq!(status_str(0), "success");
        assert_eq!(status_str(5), "Work Request Flushed Error");
    }

    #[test]
    fn open_without_a_device_is_a_clear_error_or_a_device() {
        match Device::open(None) {
            Ok(dev) => assert!(!dev.name().is_empty()),
            Err(VerbsError::NoDevice(why)) => assert!(!why.is_empty()),
            Err(e) => panic!("unexpected {e}"),
        }
        match Device::open(Some("no-such-device-xyz")) {
            Err(VerbsError::NoDevice(why)) => assert!(
                why.contains("no-such-device-xyz") || why.contains("no RDMA support"),
                "{why}"
            ),
            other => panic!("expected NoDevice, got {other:?}"),
        }
    }
}
