/* SPDX-License-Identifier: GPL-2.0 */
/* Out-of-order client bytes (brc_ooo, see brc_contract.h): held when they
 * arrive after a hole, parsed right after the segment that fills it, so that
 * reordering no longer ends a connection's caching.
 *
 * Why this stays what Redis reads: the segment is passed, and Redis's kernel
 * queues it out of order too; when the hole fills, it hands Redis the filling
 * bytes and then the queued ones, trimming the queued range where the filling
 * segment already covered it (tcp_ofo_queue). The parser does the same within
 * one tail-call chain that runs before the filling segment reaches TCP, so
 * every write among the held bytes is marked in flight before Redis can run
 * it. Only what Linux resolves the same way is held: one contiguous range,
 * extended at either end; a resend of bytes already held is ignored (Linux
 * keeps the bytes it queued first when all of a new segment's are present);
 * any other overlap, or bytes past BRC_OOO_MAX from the hole, give the
 * connection up. Nothing
 * is answered on a connection while it holds bytes (brc_serve_lookup): an
 * answer would shift the sequence space of bytes already passed. */
#ifndef BRC_OOO_H
#define BRC_OOO_H

#include "brc_resp.h"

/* @len (1..BRC_OOO_MAX, checked by the caller) in a form the verifier bounds. */
static __always_inline __u32 brc_ooo_len(__u32 len)
{
	__u32 n = len - 1;

	asm volatile("" : "+r"(n));
	return (n & (BRC_OOO_MAX - 1)) + 1;
}

/* A client segment of @f starting after the next byte expected: hold its
 * bytes. Returns 0 when held (or already held), -1 when it cannot be. */
static __always_inline int brc_ooo_hold(struct __sk_buff *skb, struct brc_scratch *sc,
					struct brc_flow *f, const struct brc_pkt *pkt)
{
	__u32 len = pkt->payload_len, s, e;
	struct brc_ooo *b;

	if (len == 0 || len > BRC_OOO_MAX)
		return -1;
	b = brc_ooo.lookup(&sc->fk);
	if (!(f->flags & BRC_FF_OOO_HELD)) {
		if (!b) {
			brc_ooo.update(&sc->fk, &sc->ooo);
			b = brc_ooo.lookup(&sc->fk);
			if (!b)
				return -1;
		}
		b->base = f->cli_next;
		b->lo = 0;
		b->hi = 0;
	} else if (!b) {
		return -1;      /* evicted: what was held is lost */
	}
	s = pkt->seq - b->base;
	if (s >= BRC_OOO_MAX || len > BRC_OOO_MAX - s)
		return -1;
	e = s + len;
	if (b->hi > b->lo) {
		if (s >= b->lo && e <= b->hi) {
			brc_count(OOO_RESENT);
			return 0;
		}
		if (e != b->lo && s != b->hi)
			return -1;
	}
	asm volatile("" : "+r"(s));    /* keep the mask: clang knows s < BRC_OOO_MAX */
	s &= BRC_OOO_MAX - 1;
	if (bpf_skb_load_bytes(skb, pkt->payload_off, b->data + s, brc_ooo_len(len)) < 0)
		return -1;
	if (b->hi == b->lo) {
		b->lo = s;
		b->hi = e;
	} else if (e == b->lo) {
		b->lo = s;
	} else {
		b->hi = e;
	}
	brc_flag_set(f, BRC_FF_OOO_HELD);
	brc_count(OOO_HELD);
	return 0;
}

/* The request parser finished its bytes (@sc->src says which). Returns 1 when
 * the held bytes are next: @sc is set to parse them (sc->src = 1); 0 when
 * nothing is left to parse. */
static __always_inline int brc_ooo_next(struct brc_scratch *sc, struct brc_flow *f)
{
	struct brc_ooo *b;
	__u32 c;

	if (!(f->flags & BRC_FF_OOO_HELD))
		return 0;
	if (f->rq_state == BRC_RQ_LOST)
		goto release;   /* given up: nothing more is parsed */
	if (!sc->src) {
		b = brc_ooo.lookup(&sc->fk);
		if (!b) {
			brc_rq_lost(f, BRC_DIRTY_BIT_GAP);      /* evicted while held */
			goto release;
		}
		c = f->cli_next - b->base;
		if (c < b->lo)
			return 0;       /* the hole is not filled yet */
		if (c >= b->hi || b->hi > BRC_OOO_MAX)
			goto release;   /* the filling segment covered them all */
		sc->src = 1;
		sc->off = c;
		sc->end = b->hi;
		f->cli_next = b->base + b->hi;
		brc_count(OOO_RESUMED);
		return 1;
	}
release:
	sc->src = 0;
	brc_ooo.delete(&sc->fk);
	brc_flag_clear(f, BRC_FF_OOO_HELD);
	return 0;
}

/* Payload bytes [sc->off, sc->off + n) of the held range into sc->buf. */
static __always_inline __u32 brc_ooo_load_chunk(struct brc_scratch *sc, __u32 n)
{
	struct brc_ooo *b = brc_ooo.lookup(&sc->fk);
	__u32 k, at = sc->off;

	if (!b)
		return 0;
#pragma unroll
	for (k = 0; k < BRC_CHUNK; k++)
		sc->buf[k] = b->data[(at + k) & (2 * BRC_OOO_MAX - 1)];
	return n;
}

#endif /* BRC_OOO_H */
