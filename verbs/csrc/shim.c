/*
 * blockwire verbs shim: the libibverbs calls that are static inline functions or macros in
 * <infiniband/verbs.h> (posting, polling, arming, registering, the QP state changes), wrapped
 * as plain functions that take and return scalars, opaque pointers and two small structs whose
 * sizes are asserted here and in `src/ffi.rs`. Errors come back as negative errno values.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <infiniband/verbs.h>

/* One completion, as Rust sees it (32 bytes). */
struct bw_wc {
	uint64_t wr_id;
	uint32_t status;
	uint32_t opcode;
	uint32_t byte_len;
	uint32_t imm; /* host order; valid when flags has BW_WC_IMM */
	uint32_t qp_num;
	uint32_t flags;
};
_Static_assert(sizeof(struct bw_wc) == 32, "bw_wc is 32 bytes");

#define BW_WC_IMM 1u

/* One RDMA WRITE to post (48 bytes). */
struct bw_write {
	uint64_t wr_id;
	uint64_t local_addr;
	uint64_t remote_addr;
	uint32_t length;
	uint32_t lkey;
	uint32_t rkey;
	uint32_t imm; /* host order; used with BW_WRITE_IMM */
	uint32_t flags;
	uint32_t pad;
};
_Static_assert(sizeof(struct bw_write) == 48, "bw_write is 48 bytes");

#define BW_WRITE_SIGNALED 1u
#define BW_WRITE_INLINE 2u
#define BW_WRITE_IMM 4u
#define BW_WRITE_READ 8u /* RDMA READ: the remote span is copied into the local one */
#define BW_MAX_CHAIN 8

size_t bw_wc_size(void) { return sizeof(struct bw_wc); }
size_t bw_write_size(void) { return sizeof(struct bw_write); }

/*
 * Opens the device named `name` (or the first one when `name` is NULL). Returns 0, or
 * -errno: -ENOSYS/-errno of ibv_get_device_list when the kernel has no RDMA support, -ENODEV
 * when there is no (such) device. The chosen name is copied to `name_out`.
 */
int bw_open_device(const char *name, struct ibv_context **out, char *name_out, int name_len)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	if (!list)
		return errno ? -errno : -ENOSYS;
	struct ibv_device *dev = NULL;
	for (int i = 0; i < n; i++) {
		if (!name || strcmp(ibv_get_device_name(list[i]), name) == 0) {
			dev = list[i];
			break;
		}
	}
	if (!dev) {
		ibv_free_device_list(list);
		return -ENODEV;
	}
	if (name_out && name_len > 0) {
		strncpy(name_out, ibv_get_device_name(dev), (size_t)name_len - 1);
		name_out[name_len - 1] = 0;
	}
	errno = 0;
	struct ibv_context *ctx = ibv_open_device(dev);
	int err = errno;
	ibv_free_device_list(list);
	if (!ctx)
		return err ? -err : -EIO;
	*out = ctx;
	return 0;
}

int bw_query_port(struct ibv_context *ctx, uint8_t port, uint32_t *state, uint32_t *active_mtu,
		  uint16_t *lid, int32_t *gid_tbl_len, uint8_t *link_layer)
{
	struct ibv_port_attr attr;
	memset(&attr, 0, sizeof attr);
	int rc = ibv_query_port(ctx, port, &attr);
	if (rc)
		return rc > 0 ? -rc : rc;
	*state = attr.state;
	*active_mtu = attr.active_mtu;
	*lid = attr.lid;
	*gid_tbl_len = attr.gid_tbl_len;
	*link_layer = attr.link_layer;
	return 0;
}

int bw_query_gid(struct ibv_context *ctx, uint8_t port, int index, uint8_t gid[16])
{
	union ibv_gid g;
	int rc = ibv_query_gid(ctx, port, index, &g);
	if (rc)
		return rc > 0 ? -rc : (errno ? -errno : -EIO);
	memcpy(gid, g.raw, 16);
	return 0;
}

struct ibv_mr *bw_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int access, uint32_t *lkey,
			 uint32_t *rkey)
{
	struct ibv_mr *mr = ibv_reg_mr(pd, addr, len, access);
	if (mr) {
		*lkey = mr->lkey;
		*rkey = mr->rkey;
	}
	return mr;
}

/* The completion channel's descriptor, made non-blocking. */
int bw_channel_fd(struct ibv_comp_channel *ch)
{
	int flags = fcntl(ch->fd, F_GETFL);
	if (flags < 0 || fcntl(ch->fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;
	return ch->fd;
}

struct ibv_qp *bw_create_rc_qp(struct ibv_pd *pd, struct ibv_cq *send_cq, struct ibv_cq *recv_cq,
			       uint32_t max_send_wr, uint32_t max_recv_wr, uint32_t max_inline,
			       uint32_t *qp_num, uint32_t *max_inline_out)
{
	struct ibv_qp_init_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.send_cq = send_cq;
	attr.recv_cq = recv_cq;
	attr.qp_type = IBV_QPT_RC;
	attr.sq_sig_all = 0;
	attr.cap.max_send_wr = max_send_wr;
	attr.cap.max_recv_wr = max_recv_wr;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	attr.cap.max_inline_data = max_inline;
	struct ibv_qp *qp = ibv_create_qp(pd, &attr);
	if (!qp && max_inline) {
		attr.cap.max_inline_data = 0;
		qp = ibv_create_qp(pd, &attr);
	}
	if (qp) {
		*qp_num = qp->qp_num;
		*max_inline_out = attr.cap.max_inline_data;
	}
	return qp;
}

static int rc(int r) { return r > 0 ? -r : r; }

int bw_qp_to_init(struct ibv_qp *qp, uint8_t port)
{
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = port;
	a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	return rc(ibv_modify_qp(qp, &a,
				IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
}

int bw_qp_to_rtr(struct ibv_qp *qp, uint8_t port, uint32_t mtu, uint32_t remote_qpn,
		 uint32_t remote_psn, const uint8_t remote_gid[16], int sgid_index, uint16_t dlid)
{
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = (enum ibv_mtu)mtu;
	a.dest_qp_num = remote_qpn;
	a.rq_psn = remote_psn;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.port_num = port;
	a.ah_attr.dlid = dlid;
	a.ah_attr.is_global = 1;
	memcpy(a.ah_attr.grh.dgid.raw, remote_gid, 16);
	a.ah_attr.grh.sgid_index = (uint8_t)sgid_index;
	a.ah_attr.grh.hop_limit = 64;
	return rc(ibv_modify_qp(qp, &a,
				IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
					IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
					IBV_QP_MIN_RNR_TIMER));
}

int bw_qp_to_rts(struct ibv_qp *qp, uint32_t psn, uint8_t timeout, uint8_t retry_cnt,
		 uint8_t rnr_retry)
{
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	a.timeout = timeout;
	a.retry_cnt = retry_cnt;
	a.rnr_retry = rnr_retry;
	a.sq_psn = psn;
	a.max_rd_atomic = 1;
	return rc(ibv_modify_qp(qp, &a,
				IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
					IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
					IBV_QP_MAX_QP_RD_ATOMIC));
}

int bw_qp_to_error(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_ERR;
	return rc(ibv_modify_qp(qp, &a, IBV_QP_STATE));
}

/* Posts `n` (1..=BW_MAX_CHAIN) RDMA WRITEs (or READs) as one chain: one doorbell. */
int bw_post_writes(struct ibv_qp *qp, const struct bw_write *w, int n)
{
	struct ibv_send_wr wr[BW_MAX_CHAIN];
	struct ibv_sge sge[BW_MAX_CHAIN];
	if (n < 1 || n > BW_MAX_CHAIN)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		unsigned int flags = w[i].flags;
		sge[i].addr = w[i].local_addr;
		sge[i].length = w[i].length;
		sge[i].lkey = w[i].lkey;
		/* A constant size: the compiler zeroes the request with a few stores, no call. */
		memset(&wr[i], 0, sizeof(wr[i]));
		wr[i].wr_id = w[i].wr_id;
		wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
		wr[i].sg_list = &sge[i];
		wr[i].num_sge = w[i].length ? 1 : 0;
		if (flags & BW_WRITE_READ) {
			wr[i].opcode = IBV_WR_RDMA_READ;
		} else if (flags & BW_WRITE_IMM) {
			wr[i].opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
			wr[i].imm_data = htonl(w[i].imm);
		} else {
			wr[i].opcode = IBV_WR_RDMA_WRITE;
		}
		if (flags & BW_WRITE_SIGNALED)
			wr[i].send_flags |= IBV_SEND_SIGNALED;
		if (flags & BW_WRITE_INLINE)
			wr[i].send_flags |= IBV_SEND_INLINE;
		wr[i].wr.rdma.remote_addr = w[i].remote_addr;
		wr[i].wr.rdma.rkey = w[i].rkey;
	}
	struct ibv_send_wr *bad = NULL;
	return rc(ibv_post_send(qp, wr, &bad));
}

/* Posts `n` receive requests without buffers (a WRITE WITH IMMEDIATE needs none), wr_ids
 * first_id, first_id + 1, ..., as chains of at most 64: one doorbell per chain. */
int bw_post_recvs(struct ibv_qp *qp, uint64_t first_id, int n)
{
	struct ibv_recv_wr wr[64];
	while (n > 0) {
		int k = n < 64 ? n : 64;
		memset(wr, 0, sizeof(wr[0]) * (size_t)k);
		for (int i = 0; i < k; i++) {
			wr[i].wr_id = first_id + (uint64_t)i;
			wr[i].sg_list = NULL;
			wr[i].num_sge = 0;
			wr[i].next = i + 1 < k ? &wr[i + 1] : NULL;
		}
		struct ibv_recv_wr *bad = NULL;
		int r = ibv_post_recv(qp, wr, &bad);
		if (r)
			return rc(r);
		first_id += (uint64_t)k;
		n -= k;
	}
	return 0;
}

/* Polls at most `n` (<= 64) completions into `out`; returns how many, or -errno. */
int bw_poll_cq(struct ibv_cq *cq, int n, struct bw_wc *out)
{
	struct ibv_wc wc[64];
	if (n > 64)
		n = 64;
	int got = ibv_poll_cq(cq, n, wc);
	if (got < 0)
		return got;
	for (int i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].byte_len = wc[i].byte_len;
		out[i].flags = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? BW_WC_IMM : 0;
		out[i].imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(wc[i].imm_data) : 0;
		out[i].qp_num = wc[i].qp_num;
	}
	return got;
}

int bw_req_notify_cq(struct ibv_cq *cq) { return rc(ibv_req_notify_cq(cq, 0)); }

/* Takes every pending event of a non-blocking channel; returns how many (0 when none). The
 * events must later be acknowledged with ibv_ack_cq_events on their CQ. */
int bw_get_cq_events(struct ibv_comp_channel *ch, struct ibv_cq *expected)
{
	int count = 0;
	for (;;) {
		struct ibv_cq *cq = NULL;
		void *ctx = NULL;
		if (ibv_get_cq_event(ch, &cq, &ctx)) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return count;
			return -errno;
		}
		if (cq != expected) {
			ibv_ack_cq_events(cq, 1);
			return -EPROTO;
		}
		count++;
	}
}

const char *bw_wc_status_str(uint32_t status) { return ibv_wc_status_str((enum ibv_wc_status)status); }
