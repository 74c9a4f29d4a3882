/* SPDX-License-Identifier: GPL-2.0 */
/* Test-only: the serve blocks compiled together with the observe-mode headers
 * and types they will be wired into (brc_contract.h, brc_pkt.h), to prove the
 * integration is wiring: struct brc_seqadj overlaid on brc_flow.serve_reserved,
 * the reply taken straight from a brc_cache_entry (BRC_REPLY_MAX follows
 * BRC_VAL_MAX), the segment facts filled from struct brc_pkt. It must pass the
 * verifier; the behaviour itself is covered by the other harnesses. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "brc_contract.h"
#include "brc_pkt.h"
#include "seqadj.h"
#include "tcp_opts.h"
#include "tcp_reply.h"

_Static_assert(BRC_REPLY_MAX == BRC_VAL_MAX, "reply cap follows the cache entry");
_Static_assert(sizeof(((struct brc_flow *)0)->serve_reserved) == sizeof(struct brc_seqadj),
	       "seqadj overlays serve_reserved exactly");

BPF_ARRAY(it_flow, struct brc_flow, 1);
BPF_ARRAY(it_entry, struct brc_cache_entry, 1);
BPF_PERCPU_ARRAY(it_scratch, struct brc_reply_scratch, 1);

/* struct brc_pkt -> struct brc_seg (the only glue the parser side needs) */
static __always_inline void it_seg(const struct brc_pkt *p, struct brc_seg *s, __u32 thl, __u16 win)
{
	s->l3_off = p->l3_off;
	s->l4_off = p->l4_off;
	s->thl = thl;
	s->payload_len = p->payload_len;
	s->seq = p->seq;
	s->ack = p->ack_seq;
	s->flags = p->tcp_flags;
	s->window = win;
}

int it_ingress(struct __sk_buff *skb)
{
	struct brc_pkt p = {};
	struct brc_seg s = {};
	struct tcphdr th;
	struct brc_reply_facts f = {};
	int zero = 0, partial;
	struct brc_flow *fl = it_flow.lookup(&zero);
	struct brc_cache_entry *e = it_entry.lookup(&zero);
	struct brc_reply_scratch *sc = it_scratch.lookup(&zero);
	struct brc_seqadj *sa;

	if (!fl || !e || !sc)
		return TC_ACT_OK;
	if (brc_parse_tcp(skb, &p) != BRC_PKT_TCP)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, p.l4_off, &th, sizeof(th)) < 0)
		return TC_ACT_OK;
	it_seg(&p, &s, p.payload_off - p.l4_off, bpf_ntohs(th.window));
	sa = (struct brc_seqadj *)fl->serve_reserved;
	brc_seqadj_track_ingress(sa, &s);
	if (brc_seqadj_classify(sa, &s) != BRC_SEQADJ_RESEND) {
		if (!brc_seqadj_can_inject(sa, &s) || e->len == 0 || e->len > BRC_VAL_MAX)
			return brc_seqadj_rewrite_ingress(skb, sa, &s) < 0 ? TC_ACT_SHOT : TC_ACT_OK;
		brc_seqadj_record(sa, &s, e->len);
	}
	partial = brc_csum_is_partial(skb, &s);
	if (partial < 0)
		return TC_ACT_SHOT;
	if (brc_pure_ack_build(skb, &s, brc_seqadj_pure_ack_seq(sa), brc_seqadj_c2s_ack(sa, s.ack),
			       partial, sa, sc) < 0)
		return TC_ACT_SHOT;
	bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
	f.seq = brc_seqadj_reply_seq(sa);
	f.ack = brc_seqadj_reply_ack(sa);
	f.tsval = sa->srv_tsval;
	f.window = sa->srv_win;
	if (brc_reply_build(skb, &s, &f, e->reply, e->len, partial, sc) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}
