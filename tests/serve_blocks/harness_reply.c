/* SPDX-License-Identifier: GPL-2.0 */
/* Test-only harness for bpf/tcp_reply.h: build the reply or the pure ACK from a
 * request frame with facts and reply bytes the test puts in maps.
 * BPF_PROG_TEST_RUN skbs are always CHECKSUM_NONE, so the builders' PARTIAL
 * output is reached through rp_ctl.partial_as; what the kernel probe said is
 * reported in rp_out.partial either way. */
#include "harness_common.h"
#include "tcp_reply.h"

struct rp_ctl {
	struct brc_reply_facts f;
	__u32 srv_seq;      /* pure ACK numbers, server space */
	__u32 srv_ack;
	__u32 partial_as;   /* 0: as brc_csum_is_partial() says, 1: not PARTIAL, 2: PARTIAL */
};

struct rp_out {
	__s32 ret;
	__s32 partial;      /* what brc_csum_is_partial() said */
};

BPF_ARRAY(rp_ctl, struct rp_ctl, 1);
BPF_ARRAY(rp_buf, struct brc_reply_buf, 1);
BPF_ARRAY(rp_out, struct rp_out, 1);
BPF_PERCPU_ARRAY(rp_scratch, struct brc_reply_scratch, 1);

static __always_inline int h_build(struct __sk_buff *skb, int mode)
{
	struct brc_seg s = {};
	__u16 sport, dport;
	int zero = 0, partial;
	struct rp_ctl *ctl = rp_ctl.lookup(&zero);
	struct rp_out *out = rp_out.lookup(&zero);
	struct brc_reply_buf *r = rp_buf.lookup(&zero);
	struct brc_reply_scratch *sc = rp_scratch.lookup(&zero);

	if (!ctl || !out || !r || !sc)
		return TC_ACT_SHOT;
	if (h_parse(skb, &s, &sport, &dport) < 0)
		return TC_ACT_SHOT;
	partial = brc_csum_is_partial(skb, &s);
	out->partial = partial;
	if (partial < 0)
		return TC_ACT_SHOT;
	if (ctl->partial_as)
		partial = ctl->partial_as == 2;
	if (mode == 4)        /* detection only: the frame must come out untouched */
		out->ret = 0;
	else if (mode == 1)
		out->ret = brc_pure_ack_build(skb, &s, ctl->srv_seq, ctl->srv_ack, partial, 0, sc);
	else if (mode == 2)   /* RST to the client: seq/ack from the reply facts */
		out->ret = brc_rst_build(skb, &s, ctl->f.seq, ctl->f.ack, 1, partial, sc);
	else if (mode == 3)   /* RST to the server: pure-ACK numbers */
		out->ret = brc_rst_build(skb, &s, ctl->srv_seq, ctl->srv_ack, 0, partial, sc);
	else
		out->ret = brc_reply_build(skb, &s, &ctl->f, r->data, r->len, partial, sc);
	return TC_ACT_OK;
}

int h_reply(struct __sk_buff *skb) { return h_build(skb, 0); }
int h_pure_ack(struct __sk_buff *skb) { return h_build(skb, 1); }
int h_rst_client(struct __sk_buff *skb) { return h_build(skb, 2); }
int h_rst_server(struct __sk_buff *skb) { return h_build(skb, 3); }
int h_detect(struct __sk_buff *skb) { return h_build(skb, 4); }
