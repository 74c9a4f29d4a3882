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
#define BRC_BATCH_BYTES (BRC_BATCH_GETS * (18 + BRC_KEY_MAX + 2))  /* their longest RESP */
#define BRC_BATCH_STEPS (BRC_BATCH_GETS + 4)  /* keys and MGET headers walked */

/* Per-CPU serve scratch (the option walk must live in a map value). */
struct brc_serve_scratch {
	struct brc_reply_scratch rs;
	struct brc_tcp_opts o;
	__u8 hdr[BRC_TCP_HDR_BUF];
	struct brc_pkt pkt;
	struct brc_cache_key ckey;
	struct brc_cache_entry entry;   /* the copy answered from (len + reply = a brc_served) */
	__u8 req[BRC_SERVE_REQ_MAX];
	/* a batch (brc_serve_batch): its reply as a brc_served, with headroom for
	 * bounded copies; where the walk is, kept here between its GETs */
	struct brc_served batch;
	__u8 batch_headroom[BRC_VAL_MAX];
	__u32 batch_off;                /* payload bytes of the segment walked */
	__u32 batch_gets;               /* GETs in it */
	__u32 batch_mgets;              /* MGETs in it */
	__u32 batch_keys;               /* keys looked up (GETs and MGETs' keys) */
	__u32 batch_keys_left;          /* keys of the current MGET not walked yet */
	__u32 batch_candidate;          /* brc_serve_lookup: more than one GET may be here */
	__u32 batch_refused;            /* brc_serve_batch refused this segment: serve it as any other */
	__u32 emit_src;                 /* brc_serve_emit6: what to send (BRC_EMIT_*) */
	__u32 emit_len;                 /* ... and its length */
};

/* What brc_serve_emit6 sends, for an IPv6 connection (ss->emit_src). */
#define BRC_EMIT_ENTRY 0        /* ss->entry.reply: an answer */
#define BRC_EMIT_SERVED 1       /* the flow's brc_served: a resend */
#define BRC_EMIT_BATCH 2        /* ss->batch.data: a batch's answer */
#define BRC_EMIT_RESET 3        /* RSTs both ways (brc_serve_reset) */

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

/* Load up to BRC_SERVE_GET_MAX bytes of the payload from byte @off (of
 * @avail left) into ss->req. Returns how many, or 0 when fewer than @least. */
static __always_inline __u32 brc_serve_load(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					    __u32 off, __u32 avail, __u32 least)
{
	__u64 n = avail;

	if (n > BRC_SERVE_GET_MAX)
		n = BRC_SERVE_GET_MAX;
	asm volatile("" : "+r"(n));
	n &= BRC_SERVE_REQ_MAX - 1;
	if (n < least || n > BRC_SERVE_GET_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, ss->pkt.payload_off + off, ss->req, n) < 0)
		return 0;
	return n;
}

/* Is "$<L>\r\n<key>\r\n" at ss->req[@at], within the @n bytes loaded? Fills
 * ss->ckey (zero padded) and *@hash (FNV-1a of the key, any value including 0);
 * returns the offset one past it, or 0. */
static __always_inline __u32 brc_serve_parse_key(struct brc_serve_scratch *ss, __u32 key_max,
						 __u64 *hash, __u32 at, __u32 n)
{
	const __u8 *p = ss->req;
	__u64 h = BRC_FNV_BASIS;
	__u32 L, koff, i;

	/* the verifier's bound on @at, after the barrier (clang drops masks it
	 * proves redundant) */
	asm volatile("" : "+r"(at));
	at &= 15;
	if (at > 13 || p[at] != '$')
		return 0;
	if (p[(at + 1) & 31] < '1' || p[(at + 1) & 31] > '9')
		return 0;
	L = p[(at + 1) & 31] - '0';
	if (p[(at + 2) & 31] == '\r') {
		koff = at + 4;
	} else {
		if (p[(at + 2) & 31] < '0' || p[(at + 2) & 31] > '9' || p[(at + 3) & 31] != '\r')
			return 0;
		L = L * 10 + (p[(at + 2) & 31] - '0');
		koff = at + 5;
	}
	if (p[(koff - 1) & (BRC_SERVE_REQ_MAX - 1)] != '\n')
		return 0;
	if (L > key_max || L > BRC_KEY_MAX || koff + L + 2 > n)
		return 0;
	if (p[(koff + L) & (BRC_SERVE_REQ_MAX - 1)] != '\r' ||
	    p[(koff + L + 1) & (BRC_SERVE_REQ_MAX - 1)] != '\n')
		return 0;
	brc_addr_copy(ss->ckey.srv_addr, ss->pkt.daddr);
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
	return koff + L + 2;
}

/* Is there a whole "*2\r\n$3\r\nGET\r\n$<n>\r\n<key>\r\n" at payload byte
 * @off, within @avail bytes? Fills ss->ckey and *@hash (brc_serve_parse_key);
 * returns its length, or 0. */
static __always_inline __u32 brc_serve_parse_get_at(struct __sk_buff *skb, struct brc_serve_scratch *ss,
						    __u32 key_max, __u64 *hash, __u32 off, __u32 avail)
{
	const __u8 *p = ss->req;
	__u32 n = brc_serve_load(skb, ss, off, avail, 19);

	if (!n)
		return 0;
	if (p[0] != '*' || p[1] != '2' || p[2] != '\r' || p[3] != '\n' || p[4] != '$' ||
	    p[5] != '3' || p[6] != '\r' || p[7] != '\n' || (p[8] | 0x20) != 'g' ||
	    (p[9] | 0x20) != 'e' || (p[10] | 0x20) != 't' || p[11] != '\r' || p[12] != '\n')
		return 0;
	return brc_serve_parse_key(ss, key_max, hash, 13, n);
}

/* Is the payload exactly one GET (brc_serve_parse_get_at)? Returns 1 if so,
 * 0 if not; notes in ss->batch_candidate when several GETs or an MGET may be
 * there. */
static __always_inline int brc_serve_parse_get(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					       __u32 key_max, __u64 *hash)
{
	__u32 n = ss->pkt.payload_len, len;

	if (n > BRC_SERVE_GET_MAX) {
		ss->batch_candidate = n <= BRC_BATCH_BYTES;
		return 0;
	}
	len = brc_serve_parse_get_at(skb, ss, key_max, hash, 0, n);
	if (len && len < n) {
		ss->batch_candidate = 1;
		return 0;
	}
	/* "*<N>\r\n$4\r\nM...": maybe an MGET (ss->req holds the payload) */
	if (!len && n >= 21 && ss->req[0] == '*' &&
	    ((ss->req[8] | 0x20) == 'm' || (ss->req[9] | 0x20) == 'm'))
		ss->batch_candidate = 1;
	return len != 0;
}

/* Consume (or resend) the request in @skb: a pure ACK in server space cloned
 * to this device's ingress (the GET's ack reaches the server), then the skb
 * itself becomes the reply and goes out of this device. @v6 (a constant): the
 * IPv6 builders, which only brc_serve_emit6 runs (brc_serve_in has no room for
 * both: its jumps would reach past the 32k instructions a jump spans). */
static __always_inline int brc_serve_emit_ip(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					     const struct brc_seg *seg, struct brc_seqadj *sa,
					     const __u8 *data, __u32 len, const int v6)
{
	struct brc_reply_facts fa = {};
	int partial, rc;

	partial = brc_csum_is_partial(skb, seg);
	if (partial < 0)
		goto err;
	if (partial)
		brc_count(SERVE_CSUM_PARTIAL);
	if (v6)
		rc = brc_pure_ack_build6(skb, seg, brc_seqadj_pure_ack_seq(sa),
					 brc_seqadj_c2s_ack(sa, seg->ack), partial, sa, &ss->rs);
	else
		rc = brc_pure_ack_build(skb, seg, brc_seqadj_pure_ack_seq(sa),
					brc_seqadj_c2s_ack(sa, seg->ack), partial, sa, &ss->rs);
	if (rc < 0)
		goto err;
	if (bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS) < 0)
		brc_count(SERVE_ERR_CLONE);
	fa.seq = brc_seqadj_reply_seq(sa);
	fa.ack = brc_seqadj_reply_ack(sa);
	fa.tsval = sa->srv_tsval;
	fa.window = sa->srv_win;
	if (v6)
		rc = brc_reply_build6(skb, seg, &fa, data, len, partial, &ss->rs);
	else
		rc = brc_reply_build(skb, seg, &fa, data, len, partial, &ss->rs);
	if (rc < 0)
		goto err;
	return bpf_redirect(skb->ifindex, 0);
err:
	/* half rewritten: drop it; the client retransmits and gets a resend */
	brc_count(SERVE_ERR_BUILD);
	return TC_ACT_SHOT;
}

/* The RSTs of brc_serve_reset: the server's (clone to ingress), then the
 * client's (the skb, redirected out). @v6 as for brc_serve_emit_ip. */
static __always_inline int brc_serve_rsts_ip(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					     const struct brc_seg *seg, struct brc_seqadj *sa, const int v6)
{
	int partial, rc;

	partial = brc_csum_is_partial(skb, seg);
	if (partial < 0)
		return TC_ACT_SHOT;
	if (v6)
		rc = brc_rst_build6(skb, seg, brc_seqadj_pure_ack_seq(sa),
				    brc_seqadj_c2s_ack(sa, seg->ack), 0, partial, &ss->rs);
	else
		rc = brc_rst_build(skb, seg, brc_seqadj_pure_ack_seq(sa),
				   brc_seqadj_c2s_ack(sa, seg->ack), 0, partial, &ss->rs);
	if (rc < 0)
		return TC_ACT_SHOT;
	bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
	if (v6)
		rc = brc_rst_build6(skb, seg, brc_seqadj_reply_seq(sa), brc_seqadj_reply_ack(sa),
				    1, partial, &ss->rs);
	else
		rc = brc_rst_build(skb, seg, brc_seqadj_reply_seq(sa), brc_seqadj_reply_ack(sa),
				   1, partial, &ss->rs);
	if (rc < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* An IPv6 connection's emit: handed to brc_serve_emit6 (@src a BRC_EMIT_*,
 * @len the reply's length). Returns only when the tail call failed. */
static __always_inline int brc_serve_emit6_call(struct __sk_buff *skb, struct brc_serve_scratch *ss,
						__u32 src, __u32 len)
{
	ss->emit_src = src;
	ss->emit_len = len;
	brc_jmp.call(skb, BRC_JMP_SERVE_EMIT6);
	/* nothing was sent, and the segment cannot pass untranslated: the
	 * client sends it again */
	brc_count(TAILCALL_FAILED);
	return TC_ACT_SHOT;
}

/* brc_serve_emit_ip for either family; @src says where @data is from, for
 * brc_serve_emit6 (IPv6). */
static __always_inline int brc_serve_emit(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					  const struct brc_seg *seg, struct brc_seqadj *sa,
					  const __u8 *data, __u32 len, __u32 src)
{
	if (ss->pkt.ipv6)
		return brc_serve_emit6_call(skb, ss, src, len);
	return brc_serve_emit_ip(skb, ss, seg, sa, data, len, 0);
}

/* The identical bytes are gone: RST the server (clone to ingress) and the
 * client (the skb, redirected out); the flow is released. */
static __always_inline int brc_serve_reset(struct __sk_buff *skb, struct brc_scratch *sc,
					   struct brc_serve_scratch *ss, const struct brc_seg *seg,
					   struct brc_flow *f,
					   struct brc_seqadj *sa)
{
	brc_count(RESET);
	sa->flags |= BRC_SA_F_CLOSING;
	brc_flow_close(sc, f, 0);
	if (ss->pkt.ipv6)
		return brc_serve_emit6_call(skb, ss, BRC_EMIT_RESET, 0);
	return brc_serve_rsts_ip(skb, ss, seg, sa, 0);
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
	if (!brc_addr_eq(c->srv_addr, ss->ckey.srv_addr) || c->key_len != ss->ckey.len)
		return 0;
	return brc_bytes_equal(c->key, ss->ckey.key, BRC_KEY_MAX);
}

/* The flow half of the answer conditions, for any request segment: serve
 * mode, established and open, clean, nothing pending, the next in order. */
static __always_inline int brc_serve_flow_ready(const struct brc_config *cfg,
						const struct brc_serve_scratch *ss,
						const struct brc_flow *f, const struct brc_seqadj *sa)
{
	if (cfg->mode != BRC_MODE_SERVE)
		return 0;
	/* BRC_FF_OOO_HELD: bytes after a hole were passed at today's offsets;
	 * BRC_FF_UNPROVEN: adopted, and Redis may have its replies off */
	if ((f->flags & (BRC_FF_CLOSED | BRC_FF_CLI_FIN | BRC_FF_SRV_FIN | BRC_FF_OOO_HELD |
			 BRC_FF_UNPROVEN)) ||
	    f->state != BRC_FS_EST)
		return 0;
	if (f->dirty || f->sent != f->replied || f->rq_state != BRC_RQ_IDLE || f->db != 0)
		return 0;
	return (sa->flags & BRC_SA_F_TS) && ss->pkt.seq == f->cli_next;
}

/* The entry of the key in ss->ckey (FNV-1a @h), valid by the rules a would-be
 * hit follows. Returns its reply length, and the entry, its bucket and the
 * global versions for brc_serve_copy(); or 0 (no would-be hit, nothing counted). */
static __always_inline __u32 brc_serve_find(const struct brc_config *cfg, struct brc_scratch *sc,
					    struct brc_serve_scratch *ss, __u64 h,
					    struct brc_cache_entry **ep, struct brc_bucket **bp,
					    struct brc_global **gp)
{
	struct brc_cache_entry *e;
	struct brc_bucket *b;
	struct brc_global *g;
	__u32 idx = brc_bucket_of(h), len;

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
	*ep = e;
	*bp = b;
	*gp = g;
	return len;
}

/* The connection half, for an answer of @len bytes: the user may read, Redis
 * heard from the connection lately, and TCP takes it. Counts why not (@count). */
static __always_inline int brc_serve_conn_ok(struct brc_scratch *sc, const struct brc_seg *seg,
					     const struct brc_flow *f, const struct brc_seqadj *sa,
					     const struct brc_global *g, __u32 len, const int count)
{
	struct brc_server *sv;

	if (!brc_may_answer(f, g, sc->now, 0))
		return 0;
	sv = brc_get_server();
	if (sv && sv->idle_pass_ns && sc->now - f->last_pass_ns >= sv->idle_pass_ns) {
		if (count)
			brc_count(SERVE_PASSED_IDLE);
		return 0;
	}
	/* the answer is one segment with the request's options (brc_reply_build):
	 * bigger than the MSS, a device on the way drops it or the client cannot
	 * take it */
	if (len + (seg->thl - BRC_TCP_HDR_MIN) > f->mss) {
		if (count)
			brc_count(SERVE_OVER_MSS);
		return 0;
	}
	/* the client's window must take it: a zero-window client would drop the
	 * answer yet take the ack of its GET, and nobody would send it again */
	if (!brc_seqadj_can_inject(sa, seg) ||
	    len > ((__u32)seg->window << (f->cli_wscale > 14 ? 14 : f->cli_wscale))) {
		if (count)
			brc_count(SERVE_REFUSED_TCP);
		return 0;
	}
	return 1;
}

/* Copy entry @e (@len bytes of reply, from brc_serve_find()) to ss->entry and
 * prove the copy is that live entry, unexpired, in the connection's protocol
 * (@nil_any_protocol: the caller writes a cached nil in RESP3's form itself).
 * Counts why not. */
static __always_inline int brc_serve_copy(struct brc_scratch *sc, struct brc_serve_scratch *ss,
					  const struct brc_flow *f, struct brc_cache_entry *e,
					  const struct brc_bucket *b, const struct brc_global *g, __u32 len,
					  const int nil_any_protocol)
{
	__u64 m = len;

	/* helper calls, as for the fill (brc_track_done), in the entry's order:
	 * its head, the reply's own bytes, fill_id_end. Copying the whole value
	 * (BRC_VAL_MAX) for every answer cost more than Redis's own GET. */
	asm volatile("" : "+r"(m));
	m = ((m - 1) & (BRC_VAL_MAX - 1)) + 1;
	if (bpf_probe_read_kernel(&ss->entry, __builtin_offsetof(struct brc_cache_entry, reply), e) < 0 ||
	    bpf_probe_read_kernel(ss->entry.reply, m, e->reply) < 0 ||
	    bpf_probe_read_kernel(&ss->entry.fill_id_end, sizeof(ss->entry.fill_id_end), &e->fill_id_end) < 0)
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
	if (!nil_any_protocol && !brc_entry_fits(&ss->entry, f)) {
		brc_count(ANSWER_NIL_RESP3);
		return 0;
	}
	return 1;
}

/* verify_sample: 1 in N would-be hits go to Redis anyway, to be compared. */
static __always_inline int brc_serve_sampled(const struct brc_config *cfg)
{
	__u32 n = cfg->verify_sample;

	if (n && bpf_get_prandom_u32() % n == 0) {
		brc_count(SERVE_VERIFY_SAMPLED);
		return 1;
	}
	return 0;
}

/* Would the cache answer this segment, one GET? Returns the entry's reply
 * length (and leaves the entry in ss->entry) or 0. Counts why a would-be hit
 * was passed; ss->batch_candidate says when brc_serve_batch() may take it. */
static __always_inline __u32 brc_serve_lookup(struct __sk_buff *skb, const struct brc_config *cfg,
					      struct brc_scratch *sc, struct brc_serve_scratch *ss,
					      const struct brc_seg *seg, struct brc_flow *f,
					      struct brc_seqadj *sa)
{
	struct brc_cache_entry *e = 0;
	struct brc_bucket *b = 0;
	struct brc_global *g = 0;
	__u64 h;
	__u32 len;

	ss->batch_candidate = 0;
	if (!brc_serve_flow_ready(cfg, ss, f, sa))
		return 0;
	if (!brc_serve_parse_get(skb, ss, brc_key_max(cfg), &h))
		return 0;
	len = brc_serve_find(cfg, sc, ss, h, &e, &b, &g);
	if (!len || !e || !b || !g)
		return 0;
	if (!brc_serve_conn_ok(sc, seg, f, sa, g, len, 1) || brc_serve_sampled(cfg))
		return 0;
	if (!brc_serve_copy(sc, ss, f, e, b, g, len, 0))
		return 0;
	return len;
}

/* A segment of several GETs alone (a pipelined batch) on a connection with
 * nothing pending is answered when every GET is a would-be hit that
 * brc_serve_lookup() would answer alone and their replies, in order, make one
 * answer that fits one segment (MSS, window) and BRC_VAL_MAX; otherwise the
 * whole segment goes to Redis (no partial answers). brc_serve_batch() takes
 * one GET per run (a tail call each: a loop over them cost the verifier more
 * than 1M instructions); the GETs are linearised in order at their checks, as
 * Redis runs them one after the other. Reasons are counted for single GETs
 * only: a refused batch's first GET is counted where Redis answers it. */

/* Is "*<N>\r\n$4\r\nMGET\r\n" at payload byte @off (within @avail), with
 * 1 to BRC_BATCH_GETS keys? Returns its length (the keys follow) and the
 * number of keys in *@keys, or 0. */
static __always_inline __u32 brc_serve_parse_mget_at(struct __sk_buff *skb, struct brc_serve_scratch *ss,
						     __u32 off, __u32 avail, __u32 *keys)
{
	const __u8 *p = ss->req;
	__u32 n = brc_serve_load(skb, ss, off, avail, 21), N, h = 2;

	if (!n || p[0] != '*' || p[1] < '1' || p[1] > '9')
		return 0;
	N = p[1] - '0';
	if (p[2] != '\r') {
		if (p[2] < '0' || p[2] > '9')
			return 0;
		N = N * 10 + (p[2] - '0');
		h = 3;
	}
	if (N < 2 || N > BRC_BATCH_GETS + 1)
		return 0;
	if (p[h] != '\r' || p[h + 1] != '\n' || p[h + 2] != '$' || p[h + 3] != '4' ||
	    p[h + 4] != '\r' || p[h + 5] != '\n' || (p[h + 6] | 0x20) != 'm' ||
	    (p[h + 7] | 0x20) != 'g' || (p[h + 8] | 0x20) != 'e' || (p[h + 9] | 0x20) != 't' ||
	    p[h + 10] != '\r' || p[h + 11] != '\n')
		return 0;
	*keys = N - 1;
	return h + 12;
}

/* Start a batch walk (brc_serve_in, before the first brc_serve_batch run). */
static __always_inline void brc_serve_batch_begin(struct brc_serve_scratch *ss)
{
	ss->batch_off = 0;
	ss->batch_gets = 0;
	ss->batch_mgets = 0;
	ss->batch_keys = 0;
	ss->batch_keys_left = 0;
	ss->batch.len = 0;
}

/* Append @len bytes at @src (a header built on the stack, or the checked copy
 * of an entry's reply) to the batch's reply. Returns 0 when it would not fit. */
static __always_inline int brc_serve_batch_put(struct brc_serve_scratch *ss, const void *src, __u32 len)
{
	__u32 used = ss->batch.len;
	__u64 at = used, m = len;

	if (len == 0 || used >= BRC_VAL_MAX || len > BRC_VAL_MAX - used)
		return 0;
	/* bounds the verifier sees (at most 2 * BRC_VAL_MAX with the headroom),
	 * applied after the barrier: clang drops masks it proves redundant */
	asm volatile("" : "+r"(at), "+r"(m));
	at &= BRC_VAL_MAX - 1;
	m = ((m - 1) & (BRC_VAL_MAX - 1)) + 1;
	if (bpf_probe_read_kernel(ss->batch.data + at, m, src) < 0)
		return 0;
	ss->batch.len = used + len;
	return 1;
}

/* The next step of the batch at ss->batch_off: a GET, an MGET's header (its
 * array header goes to the reply), or the next key of that MGET; for a key,
 * its entry found, proven and appended to ss->batch (a cached nil in the
 * connection's protocol: RESP3's is _). Returns 1, or 0 to refuse the batch. */
static __always_inline int brc_serve_batch_step(struct __sk_buff *skb, const struct brc_config *cfg,
						struct brc_scratch *sc, struct brc_serve_scratch *ss,
						const struct brc_flow *f)
{
	struct brc_cache_entry *e = 0;
	struct brc_bucket *b = 0;
	struct brc_global *g = 0;
	__u32 off = ss->batch_off, n = ss->pkt.payload_len, glen, len, keys = 0, hl;
	__u8 hdr[8] = { '*' };
	__u64 h;

	/* steps are tail calls: BRC_BATCH_STEPS of them leave the request parser
	 * most of its passes when the batch is refused (MAX_TAIL_CALL_CNT is 33) */
	if (ss->batch_keys >= BRC_BATCH_GETS || ss->batch_keys + ss->batch_mgets >= BRC_BATCH_STEPS ||
	    off >= n || n > BRC_BATCH_BYTES)
		return 0;
	if (ss->batch_keys_left) {
		glen = brc_serve_load(skb, ss, off, n - off, 7);
		glen = glen ? brc_serve_parse_key(ss, brc_key_max(cfg), &h, 0, glen) : 0;
		if (!glen)
			return 0;
		ss->batch_keys_left -= 1;
	} else {
		glen = brc_serve_parse_get_at(skb, ss, brc_key_max(cfg), &h, off, n - off);
		if (!glen) {
			glen = brc_serve_parse_mget_at(skb, ss, off, n - off, &keys);
			if (!glen || keys == 0 || keys > BRC_BATCH_GETS || !brc_user_may_mget(f))
				return 0;
			/* the reply: an array of as many (the same in RESP2 and RESP3) */
			if (keys < 10) {
				hdr[1] = '0' + keys;
				hdr[2] = '\r';
				hdr[3] = '\n';
				hl = 4;
			} else {
				hdr[1] = '1';
				hdr[2] = '0' + (keys - 10);
				hdr[3] = '\r';
				hdr[4] = '\n';
				hl = 5;
			}
			if (!brc_serve_batch_put(ss, hdr, hl))
				return 0;
			ss->batch_keys_left = keys;
			ss->batch_off = off + glen;
			ss->batch_mgets += 1;
			return 1;
		}
		ss->batch_gets += 1;
	}
	len = brc_serve_find(cfg, sc, ss, h, &e, &b, &g);
	if (!len || !e || !b || !g || brc_serve_sampled(cfg))
		return 0;
	if (!brc_serve_copy(sc, ss, f, e, b, g, len, 1))
		return 0;
	if (brc_resp3(f) && ss->entry.reply[1] == '-') {
		hdr[0] = '_';
		hdr[1] = '\r';
		hdr[2] = '\n';
		if (!brc_serve_batch_put(ss, hdr, 3))
			return 0;
	} else if (!brc_serve_batch_put(ss, ss->entry.reply, len)) {
		return 0;
	}
	ss->batch_off = off + glen;
	ss->batch_keys += 1;
	if (brc_agent_on() && bpf_get_prandom_u32() % BRC_TOUCH_SAMPLE == 0) {
		/* as for a single answer (brc_serve_in) */
		brc_touched.update(&ss->ckey, &sc->now);
		brc_count(TOUCH_SAMPLED);
	}
	return 1;
}

/* The whole segment walked: may the batch be answered? Returns its length. */
static __always_inline __u32 brc_serve_batch_ready(const struct brc_config *cfg, struct brc_scratch *sc,
						   struct brc_serve_scratch *ss, const struct brc_seg *seg,
						   const struct brc_flow *f, const struct brc_seqadj *sa)
{
	struct brc_global *g = brc_get_global();
	__u32 len = ss->batch.len;

	/* a lone GET is brc_serve_lookup's, which did not answer it */
	if (!g || ss->batch_off != ss->pkt.payload_len || ss->batch_keys_left ||
	    (ss->batch_gets < 2 && !ss->batch_mgets) || len == 0 || len > BRC_VAL_MAX)
		return 0;
	if (!brc_serve_flow_ready(cfg, ss, f, sa) || !brc_serve_conn_ok(sc, seg, f, sa, g, len, 0))
		return 0;
	return len;
}

#endif /* BRC_SERVE_H */
