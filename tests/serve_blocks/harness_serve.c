/* SPDX-License-Identifier: GPL-2.0 */
/* Test-only serving program: the serve blocks wired together the way
 * bpf/SERVE.md describes, minus everything Redis-level. It answers a GET of
 * ONE preloaded key (exact request bytes, GET in any letter case), from a
 * reply in a map, on connections tracked from their SYN in a small LRU keyed
 * by the client port (the test's addresses are fixed; they are checked too).
 * "Nothing pending in Redis" is not tracked: the test client is strictly
 * request/response, which the TCP conditions of brc_seqadj_can_inject() then
 * imply. Attached with tc clsact on the server's interface.
 *
 *   ingress: client SYN -> init + SACK-perm stripped; marked skb -> pass;
 *            overlap with a consumed GET -> resend; the key's GET when
 *            can_inject -> record, pure ACK clone to ingress, reply redirected
 *            to egress; anything else -> translated and passed.
 *   egress:  marked skb -> pass; SYN-ACK -> init; else track + translate.
 */
#include "harness_common.h"
#include "tcp_opts.h"
#include "seqadj.h"
#include "tcp_reply.h"

#define SV_REQ_MAX 64

struct sv_cfg {
	__u32 port;                 /* host order */
	__u32 req_len;
	__u8 req[SV_REQ_MAX];       /* the exact GET request to answer (GET upper case) */
};

struct sv_flow {
	__be32 caddr;
	__be32 saddr;
	__u16 cport;                /* host order */
	__u16 active;
	struct brc_seqadj sa;
};

enum sv_counter {
	SV_HIT, SV_RESENT, SV_HELD, SV_REFUSED, SV_PASS_IN, SV_PASS_OUT, SV_SYN,
	SV_ERR_BUILD, SV_ERR_CLONE, SV_CSUM_PARTIAL, SV_RESET, SV_DUP, SV__MAX,
};

struct sv_scratch {
	struct brc_reply_scratch rs;
	struct brc_tcp_opts o;
	__u8 hdr[BRC_TCP_HDR_BUF];
	__u8 req[SV_REQ_MAX];
};

BPF_ARRAY(sv_cfg, struct sv_cfg, 1);
BPF_TABLE("lru_hash", __u32, struct sv_flow, sv_flow, 256);
BPF_ARRAY(sv_reply, struct brc_reply_buf, 1);
BPF_ARRAY(sv_stats, __u64, SV__MAX);
BPF_PERCPU_ARRAY(sv_scratch, struct sv_scratch, 1);

static __always_inline void sv_count(int c)
{
	__u64 *v = sv_stats.lookup(&c);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* The segment's payload is exactly the configured GET (letters of GET in any case). */
static __always_inline int sv_is_key_get(struct __sk_buff *skb, const struct brc_seg *s,
					 const struct sv_cfg *cfg, struct sv_scratch *sc)
{
	__u64 n = s->payload_len;
	int i;

	if (n != cfg->req_len)
		return 0;
	asm volatile("" : "+r"(n));
	if (n == 0 || n > SV_REQ_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, s->l4_off + s->thl, sc->req, n) < 0)
		return 0;
#pragma unroll
	for (i = 0; i < SV_REQ_MAX; i++) {
		__u8 a = sc->req[i], b = cfg->req[i];

		if (i >= n)
			break;
		if (i >= 8 && i < 11) { /* "*2\r\n$3\r\nGET" : the command letters */
			a |= 0x20;
			b |= 0x20;
		}
		if (a != b)
			return 0;
	}
	return 1;
}

/* Consume (or resend) the request in @skb: pure ACK clone to the server,
 * the skb itself becomes the reply and goes back out of this interface. */
static __always_inline int sv_serve(struct __sk_buff *skb, const struct brc_seg *s,
				    struct brc_seqadj *sa, struct brc_reply_buf *r,
				    struct sv_scratch *sc)
{
	struct brc_reply_facts f = {};
	int partial;

	partial = brc_csum_is_partial(skb, s);
	if (partial < 0)
		goto err;
	if (partial)
		sv_count(SV_CSUM_PARTIAL);
	if (brc_pure_ack_build(skb, s, brc_seqadj_pure_ack_seq(sa),
			       brc_seqadj_c2s_ack(sa, s->ack), partial, sa, &sc->rs) < 0)
		goto err;
	if (bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS) < 0)
		sv_count(SV_ERR_CLONE);  /* the server's snd_una lags; TCP recovers by RTO */
	f.seq = brc_seqadj_reply_seq(sa);
	f.ack = brc_seqadj_reply_ack(sa);
	f.tsval = sa->srv_tsval;
	f.window = sa->srv_win;
	if (brc_reply_build(skb, s, &f, r->data, r->len, partial, &sc->rs) < 0)
		goto err;
	return bpf_redirect(skb->ifindex, 0);
err:
	/* the skb may be half rewritten: drop it; the client retransmits */
	sv_count(SV_ERR_BUILD);
	return TC_ACT_SHOT;
}

/* The stored reply is no longer the one injected: RST the server (marked clone
 * to ingress) and the client (the skb, redirected out), forget the flow. */
static __always_inline int sv_reset(struct __sk_buff *skb, const struct brc_seg *s,
				    struct sv_flow *fl, struct sv_scratch *sc)
{
	struct brc_seqadj *sa = &fl->sa;
	int partial;

	sv_count(SV_RESET);
	fl->active = 0;
	partial = brc_csum_is_partial(skb, s);
	if (partial < 0)
		return TC_ACT_SHOT;
	if (brc_rst_build(skb, s, brc_seqadj_pure_ack_seq(sa), brc_seqadj_c2s_ack(sa, s->ack),
			  0, partial, &sc->rs) < 0)
		return TC_ACT_SHOT;
	bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
	if (brc_rst_build(skb, s, brc_seqadj_reply_seq(sa), brc_seqadj_reply_ack(sa),
			  1, partial, &sc->rs) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

int sv_ingress(struct __sk_buff *skb)
{
	struct brc_seg s = {};
	__u16 sport, dport;
	__be32 addrs[2];
	int zero = 0, serve = 0;
	__u32 key;
	struct sv_cfg *cfg = sv_cfg.lookup(&zero);
	struct brc_reply_buf *r = sv_reply.lookup(&zero);
	struct sv_scratch *sc = sv_scratch.lookup(&zero);
	struct sv_flow *fl;

	if (!cfg || !r || !sc)
		return TC_ACT_OK;
	if (skb->mark == BRC_SERVE_MARK)
		return TC_ACT_OK;
	if (h_parse(skb, &s, &sport, &dport) < 0 || dport != cfg->port)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, s.l3_off + 12, addrs, sizeof(addrs)) < 0)
		return TC_ACT_OK;
	key = sport;
	if ((s.flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == BRC_TCP_SYN) {
		struct sv_flow nf = {};

		nf.caddr = addrs[0];
		nf.saddr = addrs[1];
		nf.cport = sport;
		nf.active = 1;
		brc_seqadj_init_syn(&nf.sa, &s);
		sv_flow.update(&key, &nf);
		if (brc_tcp_opts_load(skb, s.l4_off, s.thl, sc->hdr, &sc->o) == 0)
			brc_tcp_opts_strip_sackperm(skb, s.l4_off, &sc->o);
		sv_count(SV_SYN);
		return TC_ACT_OK;
	}
	fl = sv_flow.lookup(&key);
	if (!fl || !fl->active || fl->caddr != addrs[0] || fl->saddr != addrs[1] || fl->cport != sport)
		return TC_ACT_OK;

	brc_seqadj_track_ingress(&fl->sa, &s);
	if (brc_seqadj_classify(&fl->sa, &s) == BRC_SEQADJ_RESEND) {
		/* the client already acked the reply (and so got its ack of the
		 * request): this is a stale network duplicate, not a retransmission;
		 * drop it rather than resend or, worse, reset a healthy connection */
		if (brc_seqadj_inj_acked(&fl->sa)) {
			sv_count(SV_DUP);
			return TC_ACT_SHOT;
		}
		/* identical bytes or nothing: here "identical" = same length as
		 * injected and not cleared (a product compares an entry version) */
		if (r->len == 0 || r->len != fl->sa.inj_after - fl->sa.inj_before)
			return sv_reset(skb, &s, fl, sc);
		sv_count(SV_RESENT);
		serve = 1;
	} else if (sv_is_key_get(skb, &s, cfg, sc)) {
		if (brc_seqadj_can_inject(&fl->sa, &s) && r->len && r->len <= BRC_REPLY_MAX) {
			brc_seqadj_record(&fl->sa, &s, r->len);
			sv_count(SV_HIT);
			serve = 1;
		} else {
			sv_count(SV_REFUSED);
		}
	}
	/* one inlined copy of the builders (two took sv_ingress past the
	 * 32k-instruction jump range) */
	asm volatile("" : "+r"(serve));
	if (serve)
		return sv_serve(skb, &s, &fl->sa, r, sc);
	sv_count(SV_PASS_IN);
	if (brc_seqadj_rewrite_ingress(skb, &fl->sa, &s) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

int sv_egress(struct __sk_buff *skb)
{
	struct brc_seg s = {};
	__u16 sport, dport;
	__be32 addrs[2];
	int zero = 0, has_ts, held;
	__u32 key;
	struct sv_cfg *cfg = sv_cfg.lookup(&zero);
	struct sv_scratch *sc = sv_scratch.lookup(&zero);
	struct sv_flow *fl;

	if (!cfg || !sc)
		return TC_ACT_OK;
	if (skb->mark == BRC_SERVE_MARK)
		return TC_ACT_OK;
	if (h_parse(skb, &s, &sport, &dport) < 0 || sport != cfg->port)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, s.l3_off + 12, addrs, sizeof(addrs)) < 0)
		return TC_ACT_OK;
	key = dport;
	fl = sv_flow.lookup(&key);
	if (!fl || !fl->active || fl->saddr != addrs[0] || fl->caddr != addrs[1] || fl->cport != dport)
		return TC_ACT_OK;
	has_ts = brc_tcp_opts_load(skb, s.l4_off, s.thl, sc->hdr, &sc->o) == 0 &&
		 (sc->o.flags & BRC_OPT_F_TS);
	if ((s.flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == (BRC_TCP_SYN | BRC_TCP_ACK)) {
		brc_seqadj_init_synack(&fl->sa, &s, has_ts, sc->o.tsval,
				       (sc->o.flags & BRC_OPT_F_WSCALE) ? sc->o.wscale : 0);
		return TC_ACT_OK;
	}
	brc_seqadj_track_egress(&fl->sa, &s, has_ts, sc->o.tsval);
	held = brc_seqadj_rewrite_egress(skb, &fl->sa, &s);
	if (held < 0)
		return TC_ACT_SHOT;
	if (held)
		sv_count(SV_HELD);
	sv_count(SV_PASS_OUT);
	return TC_ACT_OK;
}
