//! The raw declarations: libibverbs' exported functions (rdma-core 44, Debian's libibverbs1)
//! and the shim's (`csrc/shim.c`). Verbs objects are opaque here; only the shim looks inside
//! them. The two structs shared with the shim have their sizes asserted on both sides.

use std::ffi::{c_char, c_int, c_void};

/// `struct ibv_context` (opaque).
#[repr(C)]
#[derive(Debug)]
pub struct IbvContext {
    _private: [u8; 0],
}
/// `struct ibv_pd` (opaque).
#[repr(C)]
#[derive(Debug)]
pub struct IbvPd {
    _private: [u8; 0],
}
/// `struct ibv_mr` (opaque).
#[repr(C)]
#[derive(Debug)]
pub struct IbvMr {
    _private: [u8; 0],
}
/// `struct ibv_comp_channel` (opaque).
#[repr(C)]
#[derive(Debug)]
pub struct IbvCompChannel {
    _private: [u8; 0],
}
/// `struct ibv_cq` (opaque).
#[repr(C)]
#[derive(Debug)]
pub struct IbvCq {
    _private: [u8; 0],
}
/// `struct ibv_qp` (opaque).
#[repr(C)]
#[derive(Debug)]
pub struct IbvQp {
    _private: [u8; 0],
}

/// One completion (the shim's `struct bw_wc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wc {
    /// The work request's id.
    pub wr_id: u64,
    /// `enum ibv_wc_status` (0 is success).
    pub status: u32,
    /// `enum ibv_wc_opcode`.
    pub opcode: u32,
    /// Bytes received (for a WRITE WITH IMMEDIATE: the length written).
    pub byte_len: u32,
    /// The immediate value in host order, when `flags & WC_IMM`.
    pub imm: u32,
    /// The local queue pair's number.
    pub qp_num: u32,
    /// [`WC_IMM`] when an immediate came with the completion.
    pub flags: u32,
}
const _: () = assert!(std::mem::size_of::<Wc>() == 32);

/// A completion carried an immediate value.
pub const WC_IMM: u32 = 1;

/// One RDMA WRITE (or, with [`WRITE_READ`], READ) to post (the shim's `struct bw_write`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Write {
    /// Comes back in the completion (when signalled).
    pub wr_id: u64,
    /// Source address in registered memory (or any memory, when inline).
    pub local_addr: u64,
    /// Destination address in the peer's registered memory (the source, for a READ).
    pub remote_addr: u64,
    /// Bytes to write.
    pub length: u32,
    /// The source region's local key (ignored when inline).
    pub lkey: u32,
    /// The destination region's remote key.
    pub rkey: u32,
    /// The immediate value, host order (with [`WRITE_IMM`]).
    pub imm: u32,
    /// [`WRITE_SIGNALED`] | [`WRITE_INLINE`] | [`WRITE_IMM`], or [`WRITE_READ`].
    pub flags: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(std::mem::size_of::<Write>() == 48);

/// Ask for a send completion for this write.
pub const WRITE_SIGNALED: u32 = 1;
/// Copy the data into the work request (small writes).
pub const WRITE_INLINE: u32 = 2;
/// RDMA WRITE WITH IMMEDIATE (consumes a receive request at the peer).
pub const WRITE_IMM: u32 = 4;
/// RDMA READ instead of a write: `length` bytes at `remote_addr` are copied to `local_addr`
/// (never inline; the queue pair allows one READ in flight).
pub const WRITE_READ: u32 = 8;
/// The longest chain `bw_post_writes` takes.
pub const MAX_CHAIN: usize = 8;

/// `IBV_ACCESS_LOCAL_WRITE`.
pub const ACCESS_LOCAL_WRITE: c_int = 1;
/// `IBV_ACCESS_REMOTE_WRITE`.
pub const ACCESS_REMOTE_WRITE: c_int = 2;
/// `IBV_ACCESS_REMOTE_READ`.
pub const ACCESS_REMOTE_READ: c_int = 4;

/// `IBV_WC_RECV_RDMA_WITH_IMM`.
pub const WC_OPCODE_RECV_RDMA_WITH_IMM: u32 = 129;
/// `IBV_PORT_ACTIVE`.
pub const PORT_ACTIVE: u32 = 4;

#[link(name = "ibverbs")]
extern "C" {
    pub fn ibv_close_device(ctx: *mut IbvContext) -> c_int;
    pub fn ibv_alloc_pd(ctx: *mut IbvContext) -> *mut IbvPd;
    pub fn ibv_dealloc_pd(pd: *mut IbvPd) -> c_int;
    pub fn ibv_dereg_mr(mr: *mut IbvMr) -> c_int;
    pub fn ibv_create_comp_channel(ctx: *mut IbvContext) -> *mut IbvCompChannel;
    pub fn ibv_destroy_comp_channel(ch: *mut IbvCompChannel) -> c_int;
    pub fn ibv_create_cq(
        ctx: *mut IbvContext,
        cqe: c_int,
        cq_context: *mut c_void,
        channel: *mut IbvCompChannel,
        comp_vector: c_int,
    ) -> *mut IbvCq;
    pub fn ibv_destroy_cq(cq: *mut IbvCq) -> c_int;
    pub fn ibv_ack_cq_events(cq: *mut IbvCq, nevents: u32);
    pub fn ibv_destroy_qp(qp: *mut IbvQp) -> c_int;
}

extern "C" {
    pub fn bw_wc_size() -> usize;
    pub fn bw_write_size() -> usize;
    pub fn bw_open_device(
        name: *const c_char,
        out: *mut *mut IbvContext,
        name_out: *mut c_char,
        name_len: c_int,
    ) -> c_int;
    pub fn bw_query_port(
        ctx: *mut IbvContext,
        port: u8,
        state: *mut u32,
        active_mtu: *mut u32,
        lid: *mut u16,
        gid_tbl_len: *mut i32,
        link_layer: *mut u8,
    ) -> c_int;
    pub fn bw_query_gid(ctx: *mut IbvContext, port: u8, index: c_int, gid: *mut u8) -> c_int;
    pub fn bw_reg_mr(
        pd: *mut IbvPd,
        addr: *mut c_void,
        len: usize,
        access: c_int,
        lkey: *mut u32,
        rkey: *mut u32,
    ) -> *mut IbvMr;
    pub fn bw_channel_fd(ch: *mut IbvCompChannel) -> c_int;
    pub fn bw_create_rc_qp(
        pd: *mut IbvPd,
        send_cq: *mut IbvCq,
        recv_cq: *mut IbvCq,
        max_send_wr: u32,
        max_recv_wr: u32,
        max_inline: u32,
        qp_num: *mut u32,
        max_inline_out: *mut u32,
    ) -> *mut IbvQp;
    pub fn bw_qp_to_init(qp: *mut IbvQp, port: u8) -> c_int;
    pub fn bw_qp_to_rtr(
        qp: *mut IbvQp,
        port: u8,
        mtu: u32,
        remote_qpn: u32,
        remote_psn: u32,
        remote_gid: *const u8,
        sgid_index: c_int,
        dlid: u16,
    ) -> c_int;
    pub fn bw_qp_to_rts(
        qp: *mut IbvQp,
        psn: u32,
        timeout: u8,
        retry_cnt: u8,
        rnr_retry: u8,
    ) -> c_int;
    pub fn bw_qp_to_error(qp: *mut IbvQp) -> c_int;
    pub fn bw_post_writes(qp: *mut IbvQp, writes: *const Write, n: c_int) -> c_int;
    pub fn bw_post_recvs(qp: *mut IbvQp, first_id: u64, n: c_int) -> c_int;
    pub fn bw_poll_cq(cq: *mut IbvCq, n: c_int, out: *mut Wc) -> c_int;
    pub fn bw_req_notify_cq(cq: *mut IbvCq) -> c_int;
    pub fn bw_get_cq_events(ch: *mut IbvCompChannel, expected: *mut IbvCq) -> c_int;
    pub fn bw_wc_status_str(status: u32) -> *const c_char;
}
