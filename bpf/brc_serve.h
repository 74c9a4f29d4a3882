/* SPDX-License-Identifier: GPL-2.0 */
/* Serve mode: the Redis half of answering a GET at tc ingress, and
 * the glue between the observe-mode flow state and the serve blocks
 * (seqadj.h, tcp_opts.h, tcp_reply.h; design and contract in SERVE.md).
 *
 * A segment is answered only when it is exactly one RESP `GET key` (any letter
 * case) and nothing else, the flow is clean, tracked from its SYN with
 * timestamps, nothing is pending, the parser is between commands, the
 * segment is the next in order, brc_seqadj_can_inject() holds, the entry is
 * valid by the same rules brc_get_passed() uses for a would-hit, and the
 * copy sent is provably that entry. The GET never reaches the request parser,
 * so the observe accounting (sent, FIFO, tracked GET) is untouched by a hit;
 * only cli_next moves past it. A connection whose GETs are all answered here
 * would look idle to Redis, so one passes to Redis at least every
 * brc_server.idle_pass_ns (half of Redis's `timeout`).
 *
 * The injected bytes are kept per flow in brc_served until a later hit
 * replaces them, so a retransmitted GET gets exactly the same bytes even if
 * the cache entry changed meanwhile; gone (LRU) = reset both ends, counted.
 */
#ifndef BRC_SERVE_H
#define BRC_SERVE_H

#include "brc_flow.h"

#define BRC_SERVE_REQ_MAX 128      /* bytes of the request buffer (a power of 2) */
#define BRC_SERVE_GET_MAX 96       /* longest segment that may be a cacheable GET */

/* Per-CPU serve scratch (the option walk must live in a map value). */
struct brc_serve_scratch {
	struct brc_reply_scratch rs;
	struct brc_tcp_opts o;
	__u8 hdr[BRC_TCP_HDR_BUF];
	struct brc_pkt pkt;
	struct brc_cache_key ckey;
	struct brc_cache_entry entry;   /* the copy answered from (len + reply = a brc_served) */
	__u8 req[BRC_SERVE_REQ_MAX];
};

BPF_PERCPU_ARRAY(brc_serve_scratch, struct brc_serve_scratch, 1);

static __always_inline struct brc_serve_scratch *brc_get_serve_scratch(void)
{
	__u32 zero = 0;

	return brc_serve_scratch.lookup(&zero);
}

/* struct brc_pkt -> struct brc_seg (raw window read from the header). */
static __always_inline int brc_serve_seg(struct __sk_buff *skb, const struct brc_pkt *p,
					 struct brc_seg *s)
{
	__be16 win = 0;
	__u32 thl;

	if (bpf_skb_load_bytes(skb, p->l4_off + 14, &win, sizeof(win)) < 0)
		return -1;
	s->l3_off = p->l3_off;
	s->l4_off = p->l4_off;
	thl = p->payload_off - p->l4_off;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return -1;
	asm volatile("" : "+r"(thl));
	s->thl = ((thl - 1) & (BRC_TCP_HDR_BUF - 1)) + 1;
	s->payload_len = p->payload_len;
	s->seq = p->seq;
	s->ack = p->ack_seq;
	s->flags = p->tcp_flags;
	s->window = bpf_ntohs(win);
	return 0;
}

/* Is the payload exactly "*2\r\n$3\r\nGET\r\n$<n>\r\n<key>\r\n"? Fills
 * ss->ckey (zero padded) and *@hash (FNV-1a of the key, any value including 0);
 * returns 1 if so, 0 if not. */
static __always_inline int brc_serve_parse_get(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					       __u32 key_max, __u64 *hash)
{
	const __u8 *p = ss->req;
	__u64 n = ss->pkt.payload_len, h = BRC_FNV_BASIS;
	__u32 L, koff, i;

	if (n < 19 || n > BRC_SERVE_GET_MAX)
		return 0;
	asm volatile("" : "+r"(n));
	n &= BRC_SERVE_REQ_MAX - 1;
	if (n < 19 || n > BRC_SERVE_GET_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, ss->pkt.payload_off, ss->req, n) < 0)
		return 0;
	if (p[0] != '*' || p[1] != '2' || p[2] != '\r' || p[3] != '\n' || p[4] != '$' ||
	    p[5] != '3' || p[6] != '\r' || p[7] != '\n' || (p[8] | 0x20) != 'g' ||
	    (p[9] | 0x20) != 'e' || (p[10] | 0x20) != 't' || p[11] != '\r' || p[12] != '\n' ||
	    p[13] != '$')
		return 0;
	if (p[14] < '1' || p[14] > '9')
		return 0;
	L = p[14] - '0';
	if (p[15] == '\r') {
		koff = 17;
	} else {
		if (p[15] < '0' || p[15] > '9' || p[16] != '\r')
			return 0;
		L = L * 10 + (p[15] - '0');
		koff = 18;
	}
	if (p[(koff - 1) & (BRC_SERVE_REQ_MAX - 1)] != '\n')
		return 0;
	if (L > key_max || L > BRC_KEY_MAX || koff + L + 2 != n)
		return 0;
	if (p[(koff + L) & (BRC_SERVE_REQ_MAX - 1)] != '\r' ||
	    p[(koff + L + 1) & (BRC_SERVE_REQ_MAX - 1)] != '\n')
		return 0;
	ss->ckey.srv_addr = ss->pkt.daddr;
	ss->ckey.len = L;
#pragma clang loop unroll(disable)
	for (i = 0; i < BRC_KEY_MAX; i++) {
		__u8 c = 0;

		if (i < L) {
			c = p[(koff + i) & (BRC_SERVE_REQ_MAX - 1)];
			h = (h ^ c) * BRC_FNV_PRIME;
		}
		ss->ckey.key[i] = c;
	}
	*hash = h;
	return 1;
}

/* Consume (or resend) the request in @skb: a pure ACK in server space cloned
 * to this device's ingress (the GET's ack reaches the server), then the skb
 * itself becomes the reply and goes out of this device. */
static __always_inline int brc_serve_emit(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					  const struct brc_seg *seg, struct brc_seqadj *sa, const __u8 *data, __u32 len)
{
	struct brc_reply_facts fa = {};
	int partial;

	partial = brc_csum_is_partial(skb, seg);
	if (partial < 0)
		goto err;
	if (partial)
		brc_count(SERVE_CSUM_PARTIAL);
	if (brc_pure_ack_build(skb, seg, brc_seqadj_pure_ack_seq(sa),
			       brc_seqadj_c2s_ack(sa, seg->ack), partial, sa, &ss->rs) < 0)
		goto err;
	if (bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS) < 0)
		brc_count(SERVE_ERR_CLONE);
	fa.seq = brc_seqadj_reply_seq(sa);
	fa.ack = brc_seqadj_reply_ack(sa);
	fa.tsval = sa->srv_tsval;
	fa.window = sa->srv_win;
	if (brc_reply_build(skb, seg, &fa, data, len, partial, &ss->rs) < 0)
		goto err;
	return bpf_redirect(skb->ifindex, 0);
err:
	/* half rewritten: drop it; the client retransmits and gets a resend */
	brc_count(SERVE_ERR_BUILD);
	return TC_ACT_SHOT;
}

/* The identical bytes are gone: RST the server (clone to ingress) and the
 * client (the skb, redirected out); the flow is released. */
static __always_inline int brc_serve_reset(struct __sk_buff *skb, struct brc_scratch *sc,
					   struct brc_serve_scratch *ss, const struct brc_seg *seg,
					   struct brc_flow *f,
					   struct brc_seqadj *sa)
{
	int partial;

	brc_count(RESET);
	sa->flags |= BRC_SA_F_CLOSING;
	brc_flow_close(sc, f, 0);
	partial = brc_csum_is_partial(skb, seg);
	if (partial < 0)
		return TC_ACT_SHOT;
	if (brc_rst_build(skb, seg, brc_seqadj_pure_ack_seq(sa),
			  brc_seqadj_c2s_ack(sa, seg->ack), 0, partial, &ss->rs) < 0)
		return TC_ACT_SHOT;
	bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
	if (brc_rst_build(skb, seg, brc_seqadj_reply_seq(sa), brc_seqadj_reply_ack(sa),
			  1, partial, &ss->rs) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* Is ss->entry, copied out of @e, one whole fill of the key in ss->ckey that
 * is still the live element's? Preallocated LRU elements are recycled for other
 * keys under a reader: a torn or foreign copy must never be sent. */
static __always_inline int brc_serve_copy_ok(const struct brc_serve_scratch *ss,
					     const struct brc_cache_entry *e)
{
	const struct brc_cache_entry *c = &ss->entry;

	if (c->fill_id != c->fill_id_end || e->fill_id != c->fill_id)
		return 0;
	if (c->srv_addr != ss->ckey.srv_addr || c->key_len != ss->ckey.len)
		return 0;
	return brc_bytes_equal(c->key, ss->ckey.key, BRC_KEY_MAX);
}

/* Would the cache answer this segment? Returns the entry's reply length (and
 * leaves the entry in ss->entry) or 0. Counts why a would-be hit was passed. */
static __always_inline __u32 brc_serve_lookup(struct __sk_buff *skb, const struct brc_config *cfg,
					      struct brc_scratch *sc, struct brc_serve_scratch *ss,
					      const struct brc_seg *seg, struct brc_flow *f,
					      struct brc_seqadj *sa)
{
	struct brc_cache_entry *e;
	struct brc_server *sv;
	struct brc_bucket *b;
	struct brc_global *g;
	__u64 h;
	__u32 idx, len, n;

	if (cfg->mode != BRC_MODE_SERVE)
		return 0;
	/* BRC_FF_OOO_HELD: bytes after a hole were passed at today's offsets */
	if ((f->flags & (BRC_FF_CLOSED | BRC_FF_CLI_FIN | BRC_FF_SRV_FIN | BRC_FF_OOO_HELD)) ||
	    f->state != BRC_FS_EST)
		return 0;
	if (f->dirty || f->sent != f->replied || f->rq_state != BRC_RQ_IDLE || f->db != 0)
		return 0;
	if (!(sa->flags & BRC_SA_F_TS) || ss->pkt.seq != f->cli_next)
		return 0;
	if (!brc_serve_parse_get(skb, ss, brc_key_max(cfg), &h))
		return 0;
	idx = brc_bucket_of(h);
	b = brc_keyver.lookup(&idx);
	g = brc_get_global();
	if (!b || !g || b->inflight || g->inflight || brc_held(g, sc->now) ||
	    brc_bucket_held(b, sc->now))
		return 0;
	e = brc_cache.lookup(&ss->ckey);
	if (!e || e->ver != b->ver || e->gver != g->ver)
		return 0;
	if (cfg->max_age_ns && sc->now - e->fill_ns > cfg->max_age_ns)
		return 0;
	len = e->len;
	if (len == 0 || len > BRC_VAL_MAX || e->reply[0] != '$')
		return 0;
	if (!brc_may_answer(f, g, sc->now, 0))
		return 0;
	sv = brc_get_server();
	if (sv && sv->idle_pass_ns && sc->now - f->last_pass_ns >= sv->idle_pass_ns) {
		brc_count(SERVE_PASSED_IDLE);
		return 0;
	}
	/* the answer is one segment with the request's options (brc_reply_build):
	 * bigger than the MSS, a device on the way drops it or the client cannot
	 * take it */
	if (len + (seg->thl - BRC_TCP_HDR_MIN) > f->mss) {
		brc_count(SERVE_OVER_MSS);
		return 0;
	}
	/* the client's window must take it: a zero-window client would drop the
	 * answer yet take the ack of its GET, and nobody would send it again */
	if (!brc_seqadj_can_inject(sa, seg) ||
	    len > ((__u32)seg->window << (f->cli_wscale > 14 ? 14 : f->cli_wscale))) {
		brc_count(SERVE_REFUSED_TCP);
		return 0;
	}
	n = cfg->verify_sample;
	if (n && bpf_get_prandom_u32() % n == 0) {
		brc_count(SERVE_VERIFY_SAMPLED);
		return 0;
	}
	/* a helper call, as for the fill (brc_track_done) */
	if (bpf_probe_read_kernel(&ss->entry, sizeof(ss->entry), e) < 0)
		return 0;
	/* the element may have been refilled or recycled while copying */
	if (!brc_serve_copy_ok(ss, e)) {
		brc_count(SERVE_KEY_RECHECK);
		return 0;
	}
	if (ss->entry.len != len || e->ver != b->ver || e->gver != g->ver || b->inflight || g->inflight)
		return 0;
	if (!brc_entry_unexpired(&ss->entry, b, &ss->ckey, sc->now)) {
		brc_count(ANSWER_NEAR_EXPIRY);
		return 0;
	}
	if (!brc_entry_fits(&ss->entry, f)) {
		brc_count(ANSWER_NIL_RESP3);
		return 0;
	}
	return len;
}

#endif /* BRC_SERVE_H */
