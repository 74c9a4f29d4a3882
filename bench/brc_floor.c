/* SPDX-License-Identifier: GPL-2.0 */
/* The bench's floor (issue 13): the cheapest tc program that answers GETs at
 * all, so serve's cost can be read as a multiple of the cost of answering at
 * tc. Never part of the product, so it lives in bench/ (the toolkit ships
 * all of bpf/ to every Redis host): bench/brc_attach.py compile_floor() expands the
 * bpf/ headers below into it, as brc_compile.amalgamate() does for brc.c, and the
 * bench attaches it in place of brc.c.
 *
 *   brc_floor_in   client->server: every segment that is exactly one
 *                  `*2\r\n$3\r\nGET\r\n$<n>\r\n<n bytes>\r\n` on a connection
 *                  that has sent nothing else is answered with ONE FIXED REPLY
 *                  (brc_floor_reply, written by the bench), through serve's
 *                  reply path (brc_serve_emit_ip(): the pure-ACK clone to the
 *                  server, the request skb turned into the reply; IPv4 only,
 *                  as the bench's clients are);
 *   brc_floor_out  server->client: seqadj tracking and translation, as
 *                  brc_serve_out() does in brc.c.
 *
 * What it skips, against serve: the RESP parsers and all their state (sent /
 * replied, FIFO, marks, versions), the cache and key lookups, the per-flow
 * 1.4 KB brc_flow and brc_transient, brc_served (the reply is fixed, so a
 * resend is the same bytes by construction), users, the agent, latency
 * histograms, and every counter but `hit` and `resent` (the bench checks that
 * GETs are answered).
 *
 * TCP stays consistent because the flow state is serve's own: struct
 * brc_seqadj (seqadj.h) from the SYN on, the same answer condition
 * (brc_seqadj_can_inject()), the same translation of every later segment in
 * both directions (seq/ack, SACK blocks), the same ack hold-back and resend of
 * identical bytes for a retransmitted GET. What serve gets from the parsers --
 * "nothing pending in Redis" -- the floor gets from a coarser rule: a
 * connection is answered only while every data segment it has sent was a lone
 * GET that was answered. The first segment that reaches Redis (any other
 * command, a pipelined burst, a GET that could not be injected) sets
 * BRC_FLOOR_F_PASSED, and the connection is never answered again (only
 * translated, for life; a connection passed before any answer is not even
 * translated: it has no offsets). So redis-benchmark -t get (one GET at a
 * time per connection) is answered throughout; -P 16 and SET connections go
 * to Redis untouched. The fixed reply is not the key's value: in the bench it
 * is redis-benchmark's payload, which every key holds there.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "brc_contract.h"
#include "brc_types.h"
#include "brc_maps.h"
#include "brc_pkt.h"
#include "brc_stats.h"
#include "seqadj.h"
#include "tcp_opts.h"
#include "tcp_reply.h"
#include "brc_flow.h"
#include "brc_cache.h"
#include "brc_resp.h"
#include "brc_serve.h"

#ifndef BRC_FLOOR_FLOWS
#define BRC_FLOOR_FLOWS 16384
#endif

#define BRC_FLOOR_F_SERVE 1     /* the SYN's options and headers fit the reply builders */
#define BRC_FLOOR_F_PASSED 2    /* client data reached Redis: never answered again */

/* The per-connection state the reply path needs, and nothing else. */
struct brc_floor_flow {
	struct brc_seqadj sa;
	__u64 in_busy;          /* as brc_flow.in_busy: one CPU in the client bytes */
	__u32 flags;            /* BRC_FLOOR_F_* */
	__u32 pad;
};

/* An LRU: the bench opens and closes connections and never releases one. */
BPF_TABLE("lru_hash", struct brc_flow_key, struct brc_floor_flow, brc_floor_flows, BRC_FLOOR_FLOWS);

/* The connection's key from either direction's packet (client first, as brc.c keys it). */
static __always_inline void brc_floor_key(struct brc_flow_key *fk, const struct brc_pkt *pkt,
					  int from_client)
{
	brc_addr_copy(fk->cli_addr, from_client ? pkt->saddr : pkt->daddr);
	brc_addr_copy(fk->srv_addr, from_client ? pkt->daddr : pkt->saddr);
	fk->cli_port = from_client ? pkt->sport : pkt->dport;
	fk->srv_port = from_client ? pkt->dport : pkt->sport;
}
/* The one reply, RESP bytes (len 0: answer nothing). */
BPF_ARRAY(brc_floor_reply, struct brc_reply_buf, 1);

/* Is the payload exactly one `*2\r\n$3\r\nGET\r\n$<n>\r\n<key>\r\n` (GET in any
 * letter case, 1 <= n <= 99)? A shape check, not a parse: the key is not read. */
static __always_inline int brc_floor_lone_get(struct __sk_buff *skb, const struct brc_pkt *p, __u8 *b)
{
	__u32 n = p->payload_len, L, koff;
	__u8 tail[2];

	if (n < 19 || n > BRC_SERVE_GET_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, p->payload_off, b, 18) < 0 ||
	    bpf_skb_load_bytes(skb, p->payload_off + n - 2, tail, 2) < 0)
		return 0;
	if (b[0] != '*' || b[1] != '2' || b[2] != '\r' || b[3] != '\n' || b[4] != '$' ||
	    b[5] != '3' || b[6] != '\r' || b[7] != '\n' || (b[8] | 0x20) != 'g' ||
	    (b[9] | 0x20) != 'e' || (b[10] | 0x20) != 't' || b[11] != '\r' || b[12] != '\n' ||
	    b[13] != '$' || b[14] < '1' || b[14] > '9' || tail[0] != '\r' || tail[1] != '\n')
		return 0;
	L = b[14] - '0';
	koff = 17;
	if (b[15] != '\r') {
		if (b[15] < '0' || b[15] > '9')
			return 0;
		L = L * 10 + (b[15] - '0');
		koff = 18;
	}
	return b[koff - 1] == '\n' && koff + L + 2 == n;
}

int brc_floor_in(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_serve_scratch *ss = brc_get_serve_scratch();
	struct brc_reply_buf *rb;
	struct brc_floor_flow *fl, zero = {};
	struct brc_flow_key fk = {};
	struct brc_seg seg = {};
	struct brc_seqadj *sa;
	__u32 k0 = 0, len;
	__u64 now;
	int rc;

	if (!cfg || !ss || skb->mark == BRC_SERVE_MARK)
		return TC_ACT_OK;
	if (brc_parse_tcp(skb, &ss->pkt) != BRC_PKT_TCP || ss->pkt.ipv6 || ss->pkt.dport != cfg->port)
		return TC_ACT_OK;
	brc_floor_key(&fk, &ss->pkt, 1);
	fl = brc_floor_flows.lookup(&fk);
	if ((ss->pkt.tcp_flags & (BRC_TCP_SYN | BRC_TCP_ACK | BRC_TCP_RST)) == BRC_TCP_SYN) {
		/* a SYN on a connection with offsets is not a new one (the server
		 * answers it with a challenge ACK): keep translating */
		if (fl && (fl->sa.flags & BRC_SA_F_INJECTED) && !(fl->sa.flags & BRC_SA_F_CLOSING))
			return TC_ACT_OK;
		if (brc_serve_seg(skb, &ss->pkt, &seg) < 0)
			return TC_ACT_OK;
		brc_seqadj_init_syn(&zero.sa, &seg);
		rc = brc_tcp_opts_load(skb, seg.l4_off, seg.thl, ss->hdr, &ss->o);
		if (rc == 0 && !(ss->o.flags & (BRC_OPT_F_OTHER | BRC_OPT_F_MALFORMED)) &&
		    seg.l3_off == ETH_HLEN && !ss->pkt.payload_len)
			zero.flags = BRC_FLOOR_F_SERVE;
		brc_floor_flows.update(&fk, &zero);
		return TC_ACT_OK;
	}
	if (!fl)
		return TC_ACT_OK;       /* not seen from its SYN: never touched */
	sa = &fl->sa;
	if ((fl->flags & BRC_FLOOR_F_PASSED) && !(sa->flags & BRC_SA_F_INJECTED))
		return TC_ACT_OK;       /* nothing to translate, nothing to answer, ever */
	now = bpf_ktime_get_ns();
	if (__sync_val_compare_and_swap(&fl->in_busy, 0, now | 1) != 0) {
		/* another CPU is in this connection's client bytes: the client
		 * sends this segment again (serve does the same) */
		if ((__s64)(now - fl->in_busy) < (__s64)BRC_BUSY_STALE_NS)
			return TC_ACT_SHOT;
		fl->in_busy = now | 1;  /* a stale lock is no CPU at work */
	}
	if (brc_serve_seg(skb, &ss->pkt, &seg) < 0)
		goto drop;
	brc_seqadj_track_ingress(sa, &seg);
	rb = brc_floor_reply.lookup(&k0);
	if (!rb)
		goto drop;
	len = rb->len;
	if (brc_seqadj_classify(sa, &seg) == BRC_SEQADJ_RESEND) {
		if (brc_seqadj_inj_acked(sa)) {
			brc_count(SERVE_DUP_DROPPED);
			goto drop;
		}
		/* the fixed reply is the stored reply: identical bytes */
		if (len != sa->inj_after - sa->inj_before || len == 0 || len > BRC_REPLY_MAX)
			goto drop;
		brc_count(RESENT);
		goto emit;
	}
	if (seg.payload_len && !(fl->flags & BRC_FLOOR_F_PASSED)) {
		if ((fl->flags & BRC_FLOOR_F_SERVE) && (sa->flags & BRC_SA_F_TS) &&
		    len && len <= BRC_REPLY_MAX && brc_floor_lone_get(skb, &ss->pkt, ss->req) &&
		    brc_seqadj_can_inject(sa, &seg)) {
			brc_seqadj_record(sa, &seg, len);
			brc_count(HIT);
			goto emit;
		}
		/* Redis gets this one: from now on it may owe a reply */
		fl->flags |= BRC_FLOOR_F_PASSED;   /* only here, under in_busy */
	}
	if (!(sa->flags & BRC_SA_F_INJECTED)) {
		fl->in_busy = 0;
		return TC_ACT_OK;
	}
	if (brc_seqadj_rewrite_ingress(skb, sa, &seg) < 0)
		goto drop;
	/* SACK blocks, as brc_serve_sack() in brc.c (10 bytes: a SACK option) */
	if (seg.thl >= BRC_TCP_HDR_MIN + 10) {
		ss->o.sack_n = 0;
		if (brc_tcp_opts_load(skb, seg.l4_off, seg.thl, ss->hdr, &ss->o) == 0 &&
		    ss->o.sack_n && brc_seqadj_rewrite_sack(skb, sa, &seg, ss->hdr, &ss->o, 1) < 0)
			goto drop;
	}
	fl->in_busy = 0;
	return TC_ACT_OK;
drop:
	fl->in_busy = 0;
	return TC_ACT_SHOT;
emit:
	fl->in_busy = 0;
	return brc_serve_emit_ip(skb, ss, &seg, sa, rb->data, len, 0);
}

int brc_floor_out(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_serve_scratch *ss = brc_get_serve_scratch();
	struct brc_floor_flow *fl;
	struct brc_flow_key fk = {};
	struct brc_seg seg = {};
	struct brc_seqadj *sa;
	int has_ts, held;

	if (!cfg || !ss || skb->mark == BRC_SERVE_MARK)
		return TC_ACT_OK;
	if (brc_parse_tcp(skb, &ss->pkt) != BRC_PKT_TCP || ss->pkt.ipv6 || ss->pkt.sport != cfg->port)
		return TC_ACT_OK;
	brc_floor_key(&fk, &ss->pkt, 0);
	fl = brc_floor_flows.lookup(&fk);
	if (!fl)
		return TC_ACT_OK;
	sa = &fl->sa;
	if ((fl->flags & BRC_FLOOR_F_PASSED) && !(sa->flags & BRC_SA_F_INJECTED))
		return TC_ACT_OK;
	/* brc_serve_out() of brc.c, on the floor's flow state */
	if (brc_serve_seg(skb, &ss->pkt, &seg) < 0)
		return TC_ACT_SHOT;
	has_ts = brc_tcp_opts_load(skb, seg.l4_off, seg.thl, ss->hdr, &ss->o) == 0 &&
		 (ss->o.flags & BRC_OPT_F_TS);
	if ((seg.flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == (BRC_TCP_SYN | BRC_TCP_ACK)) {
		brc_seqadj_init_synack(sa, &seg, has_ts, ss->o.tsval,
				       (ss->o.flags & BRC_OPT_F_WSCALE) ? ss->o.wscale : 0);
		return TC_ACT_OK;
	}
	brc_seqadj_track_egress(sa, &seg, has_ts, ss->o.tsval);
	held = brc_seqadj_rewrite_egress(skb, sa, &seg);
	if (held < 0)
		return TC_ACT_SHOT;
	if ((sa->flags & BRC_SA_F_INJECTED) && ss->o.sack_n &&
	    brc_seqadj_rewrite_sack(skb, sa, &seg, ss->hdr, &ss->o, 0) < 0)
		return TC_ACT_SHOT;
	if (held > 0)
		brc_count(ACK_HELD);
	return TC_ACT_OK;
}
