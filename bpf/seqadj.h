/* SPDX-License-Identifier: GPL-2.0 */
/* Per-flow sequence/ack translation for serve mode (netfilter seqadj style):
 * the cache consumes requests (client->server bytes the server never sees) and
 * injects replies (server->client bytes the server never sent); every later
 * segment is translated so both TCP endpoints stay consistent.
 *
 * Spaces: "client space" is the numbering the client sees for both directions,
 * "server space" the one the server sees. Ingress (client->server) segments come
 * in client space and leave in server space; egress the other way round.
 *
 * One correction point per direction is kept (the latest consumed request and
 * the latest injected reply). That is enough because brc_seqadj_can_inject()
 * only allows an injection when every earlier byte of both directions has been
 * acknowledged, so no segment from before the previous correction point can
 * still be (re)sent by either side.
 *
 * Integration contract (flow state = struct brc_seqadj embedded in the caller's
 * per-flow map value; struct brc_seg filled by the caller's parser):
 *   tc ingress, client SYN (no ACK)          brc_seqadj_init_syn()
 *   tc egress,  server SYN-ACK               brc_seqadj_init_synack()
 *   (or, for a connection adopted mid-life,  brc_seqadj_init_adopted())
 *   tc ingress, every other client segment   brc_seqadj_track_ingress(), then
 *       brc_seqadj_classify() == BRC_SEQADJ_RESEND -> resend the stored reply
 *           (tcp_reply.h), never pass it;
 *       a GET the cache answers, only if brc_seqadj_can_inject() ->
 *           brc_seqadj_record(), then build the pure ACK and the reply;
 *       otherwise brc_seqadj_rewrite_ingress() and pass it.
 *   tc egress, every other server segment    brc_seqadj_track_egress(),
 *       brc_seqadj_rewrite_egress() (holds back acks covering a consumed
 *       request until the client acked the injected reply).
 *   Segments carrying the serve mark (the pure-ACK clone, the redirected reply)
 *   are skipped by both hooks: they are already in the right space.
 * All comparisons are serial-number comparisons ((s32)(a - b)); every field is
 * initialised from the handshake, never left at zero.
 */
#ifndef BRC_SEQADJ_H
#define BRC_SEQADJ_H

#include <uapi/linux/bpf.h>

#include "tcp_opts.h"   /* the walked option buffer the SACK translation works on */

/* TCP flag bits of header byte 13 (same values as brc_pkt.h's). */
#ifndef BRC_TCP_FIN
#define BRC_TCP_FIN 0x01
#endif
#ifndef BRC_TCP_SYN
#define BRC_TCP_SYN 0x02
#endif
#ifndef BRC_TCP_RST
#define BRC_TCP_RST 0x04
#endif
#ifndef BRC_TCP_PSH
#define BRC_TCP_PSH 0x08
#endif
#ifndef BRC_TCP_ACK
#define BRC_TCP_ACK 0x10
#endif

/* Offsets of the seq and ack fields in the TCP header. */
#define BRC_TCP_SEQ_OFF 4
#define BRC_TCP_ACK_OFF 8
#ifndef BRC_TCP_CSUM_OFF
#define BRC_TCP_CSUM_OFF 16
#endif

/* Facts about one TCP segment, filled by the caller's parser. Offsets count
 * from skb->data (the Ethernet header at tc). Numbers in host order, exactly as
 * on the wire (no translation applied). */
struct brc_seg {
	__u32 l3_off;       /* IPv4 header */
	__u32 l4_off;       /* TCP header */
	__u32 thl;          /* TCP header length, doff * 4 (20..60) */
	__u32 payload_len;  /* TCP payload bytes in this skb */
	__u32 seq;
	__u32 ack;
	__u16 window;       /* raw window field */
	__u8 flags;         /* BRC_TCP_* */
	__u8 pad;
};

/* brc_seqadj.flags */
#define BRC_SA_F_SYN (1 << 0)      /* client SYN seen: client-side fields valid */
#define BRC_SA_F_SYNACK (1 << 1)   /* server SYN-ACK seen: server-side fields valid */
#define BRC_SA_F_TS (1 << 2)       /* srv_tsval valid */
#define BRC_SA_F_CLOSING (1 << 3)  /* FIN or RST seen either way: no more injections */
#define BRC_SA_F_INJECTED (1 << 4) /* at least one request consumed on this flow */

/* Per-flow translation state. Lives in the caller's flow map value: it is
 * exactly the 48 bytes of brc_flow.serve_reserved[12] in brc_contract.h, so it
 * can be overlaid there without a layout change:
 *     struct brc_seqadj *sa = (struct brc_seqadj *)f->serve_reserved; */
struct brc_seqadj {
	/* client -> server: the latest request consumed by the cache (client space);
	 * it ends at cons_start + cons_after - cons_before (brc_seqadj_cons_end()) */
	__u32 cons_start;   /* its first byte */
	__u32 cons_before;  /* bytes consumed before it: server seq = client seq - this */
	__u32 cons_after;   /* bytes consumed including it (cons_before + its length) */
	/* server -> client: the latest reply injected by the cache (server space) */
	__u32 inj_pos;      /* server seq where it was inserted (the server's snd_nxt then) */
	__u32 inj_before;   /* bytes injected before it: client seq = server seq + this */
	__u32 inj_after;    /* bytes injected including it (inj_before + its length) */
	/* trackers, initialised at the handshake */
	__u32 cli_nxt;      /* client space: one past the highest client sequence seen */
	__u32 cli_max_ack;  /* client space: highest ack the client sent */
	__u32 srv_nxt;      /* server space: one past the highest server sequence seen */
	__u32 srv_max_ack;  /* server space: highest ack the server sent */
	__u32 srv_tsval;    /* newest TSval the server sent (BRC_SA_F_TS) */
	__u16 srv_win;      /* the server's last raw window */
	__u16 flags;        /* BRC_SA_F_* */
};
_Static_assert(sizeof(struct brc_seqadj) == 48, "brc_seqadj must fit brc_flow.serve_reserved");

/* Verdicts of brc_seqadj_classify(). */
#define BRC_SEQADJ_PASS 0   /* translate and pass to the server */
#define BRC_SEQADJ_RESEND 1 /* overlaps the consumed request: resend the stored reply */

/* One past the last byte of the latest consumed request (client space): the
 * ack an injected reply carries. */
static __always_inline __u32 brc_seqadj_cons_end(const struct brc_seqadj *sa)
{
	return sa->cons_start + (sa->cons_after - sa->cons_before);
}

/* a after b, a at-or-after b, in sequence space */
static __always_inline int brc_seq_after(__u32 a, __u32 b) { return (__s32)(a - b) > 0; }
static __always_inline int brc_seq_geq(__u32 a, __u32 b) { return (__s32)(a - b) >= 0; }

/* Sequence space a segment occupies (payload plus SYN and FIN). */
static __always_inline __u32 brc_seg_span(const struct brc_seg *s)
{
	return s->payload_len + !!(s->flags & BRC_TCP_SYN) + !!(s->flags & BRC_TCP_FIN);
}

/* Client SYN at ingress: start a fresh state (a new SYN replaces an old one). */
static __always_inline void brc_seqadj_init_syn(struct brc_seqadj *sa, const struct brc_seg *s)
{
	__builtin_memset(sa, 0, sizeof(*sa));
	sa->cli_nxt = s->seq + 1;
	sa->cons_start = s->seq + 1;
	sa->flags = BRC_SA_F_SYN;
}

/* Server SYN-ACK at egress (TS and window-scale facts from tcp_opts.h;
 * @wscale = the SYN-ACK's WS shift, 0 without the option). The SYN-ACK's
 * window is never scaled, later ones are: srv_win is kept as it would appear
 * in a later segment, so a reply right after the handshake does not advertise
 * 2^wscale times the server's window. Returns 0, or -1 when it does not answer
 * the SYN this state was started from (then nothing changes). */
static __always_inline int brc_seqadj_init_synack(struct brc_seqadj *sa, const struct brc_seg *s,
						  int has_ts, __u32 tsval, __u32 wscale)
{
	if (!(sa->flags & BRC_SA_F_SYN) || s->ack != sa->cli_nxt)
		return -1;
	if (sa->flags & BRC_SA_F_INJECTED)
		return -1;
	sa->srv_nxt = s->seq + 1;
	sa->srv_max_ack = s->ack;
	sa->inj_pos = s->seq + 1;
	sa->cli_max_ack = s->seq;   /* nothing of the server's acked yet */
	if (wscale > 14)   /* RFC 7323 caps the shift at 14 */
		wscale = 14;
	sa->srv_win = s->window >> wscale;
	if (!sa->srv_win && s->window)
		sa->srv_win = 1;
	if (has_ts) {
		sa->srv_tsval = tsval;
		sa->flags |= BRC_SA_F_TS;
	}
	sa->flags |= BRC_SA_F_SYNACK;
	return 0;
}

/* A connection adopted mid-life (brc_contract.h's struct brc_adopt), at a
 * command boundary: client bytes end at @cli_nxt, server bytes at @srv_nxt,
 * nothing consumed or injected yet. Both halves count as seen; the server's
 * TSval comes with its next segment (no answer before it: BRC_SA_F_TS). */
static __always_inline void brc_seqadj_init_adopted(struct brc_seqadj *sa, __u32 cli_nxt, __u32 cli_ack,
						   __u32 srv_nxt, __u32 srv_ack, __u16 srv_win)
{
	__builtin_memset(sa, 0, sizeof(*sa));
	sa->cli_nxt = cli_nxt;
	sa->cons_start = cli_nxt;
	sa->cli_max_ack = cli_ack;
	sa->srv_nxt = srv_nxt;
	sa->inj_pos = srv_nxt;
	sa->srv_max_ack = srv_ack;
	sa->srv_win = srv_win;
	sa->flags = BRC_SA_F_SYN | BRC_SA_F_SYNACK;
}

/* Both handshake halves seen. */
static __always_inline int brc_seqadj_ready(const struct brc_seqadj *sa)
{
	return (sa->flags & (BRC_SA_F_SYN | BRC_SA_F_SYNACK)) == (BRC_SA_F_SYN | BRC_SA_F_SYNACK);
}

/* Client-space end of the latest injected reply. */
static __always_inline __u32 brc_seqadj_inj_end(const struct brc_seqadj *sa)
{
	return sa->inj_pos + sa->inj_after;
}

/* The client has acknowledged the latest injected reply (trivially true before
 * any injection). */
static __always_inline int brc_seqadj_inj_acked(const struct brc_seqadj *sa)
{
	return !(sa->flags & BRC_SA_F_INJECTED) ||
	       brc_seq_geq(sa->cli_max_ack, brc_seqadj_inj_end(sa));
}

/* Ingress seq, client space -> server space. Sequence numbers up to the start
 * of the consumed request keep the old offset; anything after its first byte
 * (later data, FIN, RST, a keepalive at snd_una - 1) gets the new one. */
static __always_inline __u32 brc_seqadj_c2s_seq(const struct brc_seqadj *sa, __u32 seq)
{
	return brc_seq_after(seq, sa->cons_start) ? seq - sa->cons_after : seq - sa->cons_before;
}

/* Ingress ack, client space -> server space. An ack inside the injected reply
 * is clamped to where it was inserted: the server never sent those bytes. */
static __always_inline __u32 brc_seqadj_c2s_ack(const struct brc_seqadj *sa, __u32 ack)
{
	if (brc_seq_geq(ack, brc_seqadj_inj_end(sa)))
		return ack - sa->inj_after;
	if (brc_seq_after(ack, sa->inj_pos + sa->inj_before))
		return sa->inj_pos;
	return ack - sa->inj_before;
}

/* Egress seq, server space -> client space. Server data from inj_pos on comes
 * after the injected reply. */
static __always_inline __u32 brc_seqadj_s2c_seq(const struct brc_seqadj *sa, __u32 seq)
{
	return brc_seq_geq(seq, sa->inj_pos) ? seq + sa->inj_after : seq + sa->inj_before;
}

/* Egress ack, server space -> client space, with the hold-back: while the
 * client has not acked the injected reply, no server ack may cover the consumed
 * request (the reply may be lost, and only the client's retransmission of the
 * request lets the cache resend it). *held is set when that clamp applied. */
static __always_inline __u32 brc_seqadj_s2c_ack(const struct brc_seqadj *sa, __u32 ack, int *held)
{
	__u32 gap = sa->cons_start - sa->cons_before; /* server-space seq of the consumed request */

	*held = 0;
	if (!brc_seq_geq(ack, gap))
		return ack + sa->cons_before;
	if (!brc_seqadj_inj_acked(sa)) {
		*held = 1;
		return sa->cons_start;
	}
	return ack + sa->cons_after;
}

/* Ingress bookkeeping, for every client segment after the SYN (passed,
 * consumed or resent alike): highest ack, next sequence, closing. */
static __always_inline void brc_seqadj_track_ingress(struct brc_seqadj *sa, const struct brc_seg *s)
{
	__u32 end = s->seq + brc_seg_span(s);

	if ((s->flags & BRC_TCP_ACK) && brc_seq_after(s->ack, sa->cli_max_ack))
		sa->cli_max_ack = s->ack;
	if (brc_seq_after(end, sa->cli_nxt))
		sa->cli_nxt = end;
	if (s->flags & (BRC_TCP_FIN | BRC_TCP_RST))
		sa->flags |= BRC_SA_F_CLOSING;
}

/* Egress bookkeeping, for every server segment after the SYN-ACK: next
 * sequence, highest ack, newest TSval, last raw window, closing. */
static __always_inline void brc_seqadj_track_egress(struct brc_seqadj *sa, const struct brc_seg *s,
						    int has_ts, __u32 tsval)
{
	__u32 end = s->seq + brc_seg_span(s);

	if (brc_seq_after(end, sa->srv_nxt))
		sa->srv_nxt = end;
	if ((s->flags & BRC_TCP_ACK) && brc_seq_after(s->ack, sa->srv_max_ack))
		sa->srv_max_ack = s->ack;
	if (has_ts && (!(sa->flags & BRC_SA_F_TS) || brc_seq_after(tsval, sa->srv_tsval))) {
		sa->srv_tsval = tsval;
		sa->flags |= BRC_SA_F_TS;
	}
	sa->srv_win = s->window;
	if (s->flags & (BRC_TCP_FIN | BRC_TCP_RST))
		sa->flags |= BRC_SA_F_CLOSING;
}

/* Does this client segment's payload overlap the latest consumed request?
 * Then it is a retransmission of it (possibly collapsed with more data) and
 * must get the identical reply again; the reply acks only the request's end
 * (brc_seqadj_cons_end()), so the client resends whatever followed.
 * If brc_seqadj_inj_acked() already holds, the client has the reply (and its
 * ack of the request), so an overlapping segment is a stale network duplicate:
 * drop it; never resend or reset for it. */
static __always_inline int brc_seqadj_classify(const struct brc_seqadj *sa, const struct brc_seg *s)
{
	if (!(sa->flags & BRC_SA_F_INJECTED) || s->payload_len == 0)
		return BRC_SEQADJ_PASS;
	if (brc_seq_after(s->seq + s->payload_len, sa->cons_start) &&
	    brc_seq_after(brc_seqadj_cons_end(sa), s->seq))
		return BRC_SEQADJ_RESEND;
	return BRC_SEQADJ_PASS;
}

/* The TCP half of the answer conditions, for a request segment @s (call
 * brc_seqadj_track_ingress() on it first): handshake seen, not closing, the
 * segment is the next new data in order, the client has acked everything the
 * server sent (including any earlier injected reply), and the server has acked
 * everything the client sent before it. Redis-level conditions (nothing pending,
 * one complete GET, valid entry) are the caller's. */
static __always_inline int brc_seqadj_can_inject(const struct brc_seqadj *sa, const struct brc_seg *s)
{
	if (!brc_seqadj_ready(sa) || (sa->flags & BRC_SA_F_CLOSING))
		return 0;
	if (s->payload_len == 0 || (s->flags & (BRC_TCP_SYN | BRC_TCP_FIN | BRC_TCP_RST)))
		return 0;
	if (!(s->flags & BRC_TCP_ACK))
		return 0;
	if (sa->cli_nxt != s->seq + s->payload_len)     /* in order, nothing after it */
		return 0;
	if (s->ack != sa->srv_nxt + sa->inj_after)      /* all server data acked */
		return 0;
	if (!brc_seqadj_inj_acked(sa))
		return 0;
	if (sa->srv_max_ack != brc_seqadj_c2s_seq(sa, s->seq)) /* all client data acked */
		return 0;
	return 1;
}

/* Record that request @s (client space) is consumed and a reply of @reply_len
 * bytes is injected at the server's current snd_nxt. Call only after
 * brc_seqadj_can_inject(). Afterwards brc_seqadj_reply_seq()/_ack() give the
 * reply's numbers and brc_seqadj_pure_ack_seq() the pure ACK's. */
static __always_inline void brc_seqadj_record(struct brc_seqadj *sa, const struct brc_seg *s,
					      __u32 reply_len)
{
	sa->cons_before = sa->cons_after;
	sa->cons_after += s->payload_len;
	sa->cons_start = s->seq;
	sa->inj_before = sa->inj_after;
	sa->inj_after += reply_len;
	sa->inj_pos = sa->srv_nxt;
	sa->flags |= BRC_SA_F_INJECTED;
}

/* Client-space seq of the latest injected reply (same value on every resend). */
static __always_inline __u32 brc_seqadj_reply_seq(const struct brc_seqadj *sa)
{
	return sa->inj_pos + sa->inj_before;
}

/* Client-space ack of the latest injected reply: the end of the consumed request. */
static __always_inline __u32 brc_seqadj_reply_ack(const struct brc_seqadj *sa)
{
	return brc_seqadj_cons_end(sa);
}

/* Server-space seq for the pure ACK that carries a consumed (or resent)
 * request's ack to the server: the server's rcv_nxt at the request. */
static __always_inline __u32 brc_seqadj_pure_ack_seq(const struct brc_seqadj *sa)
{
	return sa->cons_start - sa->cons_before;
}

/* Replace a 32-bit header field at @off of the TCP header, checksum fixed
 * incrementally (right for CHECKSUM_PARTIAL too: seq/ack are not in the
 * pseudo-header). */
static __always_inline int brc_seqadj_store32(struct __sk_buff *skb, __u32 l4_off, __u32 off,
					      __u32 old_host, __u32 new_host)
{
	__u32 old = bpf_htonl(old_host), new = bpf_htonl(new_host);

	if (old == new)
		return 0;
	if (bpf_skb_store_bytes(skb, l4_off + off, &new, sizeof(new), 0) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, l4_off + BRC_TCP_CSUM_OFF, old, new, sizeof(new));
}

/* Translate a passed client segment in place to server space. Returns 0 or -1. */
static __always_inline int brc_seqadj_rewrite_ingress(struct __sk_buff *skb, const struct brc_seqadj *sa,
						      const struct brc_seg *s)
{
	if (brc_seqadj_store32(skb, s->l4_off, BRC_TCP_SEQ_OFF, s->seq, brc_seqadj_c2s_seq(sa, s->seq)) < 0)
		return -1;
	if ((s->flags & BRC_TCP_ACK) &&
	    brc_seqadj_store32(skb, s->l4_off, BRC_TCP_ACK_OFF, s->ack, brc_seqadj_c2s_ack(sa, s->ack)) < 0)
		return -1;
	return 0;
}

/* Translate a server segment in place to client space. Returns 1 when the ack
 * was held back, 0 otherwise, -1 on a helper error. */
static __always_inline int brc_seqadj_rewrite_egress(struct __sk_buff *skb, const struct brc_seqadj *sa,
						     const struct brc_seg *s)
{
	int held = 0;

	if (brc_seqadj_store32(skb, s->l4_off, BRC_TCP_SEQ_OFF, s->seq, brc_seqadj_s2c_seq(sa, s->seq)) < 0)
		return -1;
	if ((s->flags & BRC_TCP_ACK) &&
	    brc_seqadj_store32(skb, s->l4_off, BRC_TCP_ACK_OFF, s->ack, brc_seqadj_s2c_ack(sa, s->ack, &held)) < 0)
		return -1;
	return held;
}

/* SACK blocks (RFC 2018; D-SACK, RFC 2883: a first block below the cumulative
 * ack or inside the second block) name the *other* direction's stream, so they
 * are translated like that direction's ack, edge by edge (as netfilter's
 * nf_ct_sack_block_adjust does), with two rules netfilter does not need
 * because it never adds or removes whole ranges:
 *
 * 1. Never tell a sender it delivered bytes it did not send (client blocks,
 *    server stream) or never tell the client the server got the consumed
 *    request (server blocks, client stream: the client would mark the GET
 *    SACKed, not retransmit it, and a lost reply would never be resent).
 *    Client side: an edge inside the injected reply clamps to inj_pos, exactly
 *    as brc_seqadj_c2s_ack() does. That is exact, not lossy: the injected
 *    bytes have no server-space extent, so [l, r) maps to precisely the server
 *    bytes the client holds; a block wholly inside the reply (the D-SACK of a
 *    resent reply) maps to nothing and is removed. Server side: a block that
 *    starts before the consumed request and ends after it keeps only its part
 *    before it (it can only be a D-SACK: the server acked everything before
 *    the request when it was consumed, so its ordinary blocks start after it).
 * 2. One correction point per direction is exact only from the previous one
 *    on. Ordinary blocks lie above the receiver's cumulative ack, which was
 *    past the latest correction point when it was made (brc_seqadj_can_inject()),
 *    so they are always exact. A D-SACK block can name older bytes: one that
 *    starts before the latest correction point while an earlier one exists
 *    (inj_before / cons_before non-zero) may be from before that, with an
 *    offset no longer known, and is removed. A D-SACK only feeds the sender's
 *    undo and reordering heuristics; losing one costs nothing else.
 * Returns 1 with the edges translated in place, or 0: remove the block. */
static __always_inline int brc_seqadj_sack_c2s(const struct brc_seqadj *sa, __u32 *l, __u32 *r)
{
	/* client-space start of the latest injected reply */
	if (sa->inj_before && brc_seq_after(sa->inj_pos + sa->inj_before, *l))
		return 0;
	*l = brc_seqadj_c2s_ack(sa, *l);
	*r = brc_seqadj_c2s_ack(sa, *r);
	return brc_seq_after(*r, *l);
}

static __always_inline int brc_seqadj_sack_s2c(const struct brc_seqadj *sa, __u32 *l, __u32 *r)
{
	__u32 gap = sa->cons_start - sa->cons_before; /* server-space seq of the consumed request */

	if (brc_seq_geq(*l, gap)) {
		*l += sa->cons_after;
		*r += sa->cons_after;
	} else {
		if (sa->cons_before)
			return 0;
		/* before the first consumed request: no offset; clip at its start */
		if (brc_seq_after(*r, gap))
			*r = gap;
	}
	return brc_seq_after(*r, *l);
}

/* Translate every SACK block of a header buffer walked into @o, in place:
 * @c2s = 1 for a client segment (client space -> server space), 0 for a server
 * segment. Removed blocks (brc_seqadj_sack_c2s()/_s2c() said 0) close up, the
 * option shrinks (brc_tcp_opts_sack_keep()). Returns the number removed. Only
 * meaningful once the flow has offsets (BRC_SA_F_INJECTED); without, every
 * block maps to itself and callers skip the work. */
static __always_inline __u32 brc_seqadj_sack_buf(const struct brc_seqadj *sa, __u8 *hdr,
						 const struct brc_tcp_opts *o, int c2s)
{
	__u32 n = o->sack_n, keep = 0, i, off, l, r;
	int ok;

	/* Each block is written to slot `keep` whether kept or not, and `keep`
	 * counts on: no branch per outcome (the verifier would walk every
	 * combination). keep <= i, so slot `keep` was already read. A real
	 * (bounded) loop, not unrolled: brc_serve_in is near the 32k-instruction
	 * jump range, and this runs there twice (passed segment, pure ACK). */
#pragma clang loop unroll(disable)
	for (i = 0; i < BRC_SACK_BLOCKS_MAX; i++) {
		if (i < n) {
			off = brc_tcp_opts_sack_block(o, i);
			l = brc_buf_be32(hdr, off);
			r = brc_buf_be32(hdr, off + 4);
			ok = c2s ? brc_seqadj_sack_c2s(sa, &l, &r) : brc_seqadj_sack_s2c(sa, &l, &r);
			off = brc_tcp_opts_sack_block(o, keep);
			brc_buf_put_be32(hdr, off, l);
			brc_buf_put_be32(hdr, off + 4, r);
			keep += !!ok;
		}
	}
	brc_tcp_opts_sack_keep(hdr, o, keep);
	return n > keep ? n - keep : 0;
}

/* Translate the SACK blocks of a passed segment in the skb (after
 * brc_seqadj_rewrite_ingress()/_egress(), which leave the options alone):
 * @hdr/@o from brc_tcp_opts_load() on this very skb, in a map value.
 * Returns the number of blocks removed (>= 0), or -1 on a helper error (drop
 * the segment: half rewritten). Nothing to do, and no helper call, for a
 * flow without offsets or a segment without SACK blocks. */
static __always_inline int brc_seqadj_rewrite_sack(struct __sk_buff *skb, const struct brc_seqadj *sa,
						   const struct brc_seg *s, __u8 *hdr,
						   const struct brc_tcp_opts *o, int c2s)
{
	__u32 seed, removed;

	if (!(sa->flags & BRC_SA_F_INJECTED) || !o->sack_n)
		return 0;
	seed = brc_tcp_opts_csum_begin(hdr);
	removed = brc_seqadj_sack_buf(sa, hdr, o, c2s);
	if (brc_tcp_opts_commit(skb, s->l4_off, s->thl, hdr, seed) < 0)
		return -1;
	return removed;
}

#endif /* BRC_SEQADJ_H */
