/* SPDX-License-Identifier: GPL-2.0 */
/* Connection state: creation at the SYN, release at RST / server FIN, dirty
 * reasons, and the write-in-flight marks a connection holds on key buckets.
 *
 * A write "is in flight" from the moment it passes ingress until its
 * connection has no command pending (every reply seen) and is at a command
 * boundary. While a bucket (or the global entry) has marks, no GET may fill or
 * hit on it. A connection whose reply accounting is lost keeps its marks until
 * it closes; one whose request parser is lost also holds a global mark, since
 * its later writes are invisible.
 */
#ifndef BRC_FLOW_H
#define BRC_FLOW_H

#include "brc_maps.h"
#include "brc_stats.h"
#include "seqadj.h"        /* brc_seq_after(): serial-number comparison */

/* Dirty reasons after which replies no longer pair with commands. */
#define BRC_DIRTY_ACCOUNTING (BRC_DIRTY(PARSER) | BRC_DIRTY(GAP) | BRC_DIRTY(BUDGET) | \
	BRC_DIRTY(RESP3) | BRC_DIRTY(PUBSUB) | BRC_DIRTY(MONITOR) | \
	BRC_DIRTY(CLIENT_REPLY) | BRC_DIRTY(UNMATCHED))

#ifndef BRC_UNTRACKED_LEASE_NS
#define BRC_UNTRACKED_LEASE_NS 1000000000ULL   /* 1 s after untracked traffic */
#endif

/* Is a write of a connection we cannot follow possibly still in flight? */
static __always_inline int brc_untracked_active(const struct brc_global *g, __u64 now)
{
	return g->untracked_ns && now - g->untracked_ns < BRC_UNTRACKED_LEASE_NS;
}

#define BRC_FNV_BASIS 0xcbf29ce484222325ULL
#define BRC_FNV_PRIME 0x100000001b3ULL

static __always_inline __u32 brc_bucket_of(__u64 hash)
{
	return (__u32)(hash ^ (hash >> 32)) & (BRC_KEYVER_BUCKETS - 1);
}

static __always_inline struct brc_global *brc_get_global(void)
{
	__u32 zero = 0;

	return brc_global.lookup(&zero);
}

/* Take the global mark for @f (once) and, with @bump, invalidate everything. */
static __always_inline void brc_mark_global(struct brc_flow *f, int bump)
{
	struct brc_global *g = brc_get_global();

	if (!g)
		return;
	/* Mark before bump (see brc_mark_key). */
	if (!(f->flags & BRC_FF_GMARK)) {
		__sync_fetch_and_add(&g->inflight, 1);
		f->flags |= BRC_FF_GMARK;
	}
	if (bump) {
		__sync_fetch_and_add(&g->ver, 1);
		brc_count(INVALIDATE_GLOBAL);
	}
}

/* A write to the key in bucket @idx passes: bump its version and hold it in
 * flight for @f (a global mark when @f's key marks are full). */
static __always_inline void brc_mark_key(struct brc_flow *f, __u32 idx)
{
	struct brc_bucket *b;
	__u32 i, n, held;

	idx &= BRC_KEYVER_BUCKETS - 1;
	b = brc_keyver.lookup(&idx);
	if (!b)
		return;
	/* The in-flight mark goes up BEFORE the version: a GET reads the version first
	 * and the marks after, so a GET that sees the new version also sees the write in
	 * flight and is not filled. With the bump first, a GET landing between the two saw
	 * the new version and no mark; Redis, which orders connections its own way, could
	 * answer it with the old value and flush the write's reply first (releasing the
	 * mark), and the old value was filled under the new version: a stale entry. */
	held = 0;
	n = f->nmarks;
#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++) {
		if (i < n && f->marks[i] == idx)
			held = 1;
	}
	if (!held) {
		if (n < BRC_FLOW_MARKS) {
			f->marks[n & (BRC_FLOW_MARKS - 1)] = idx;
			f->nmarks = n + 1;
			__sync_fetch_and_add(&b->inflight, 1);
		} else {
			if (!(f->flags & BRC_FF_GMARK))
				brc_count(MARKS_OVERFLOW);
			brc_mark_global(f, 0);
		}
	}
	__sync_fetch_and_add(&b->ver, 1);
	brc_count(INVALIDATE_KEY);
}

/* @f's writes are done (or @f is gone): drop its in-flight marks. */
static __always_inline void brc_release_marks(struct brc_flow *f)
{
	struct brc_bucket *b;
	__u32 i, idx, n = f->nmarks;

#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++) {
		if (i < n) {
			idx = f->marks[i] & (BRC_KEYVER_BUCKETS - 1);
			b = brc_keyver.lookup(&idx);
			if (b)
				__sync_fetch_and_add(&b->inflight, -1);
		}
	}
	f->nmarks = 0;
	if (f->flags & BRC_FF_GMARK) {
		struct brc_global *g = brc_get_global();

		if (g)
			__sync_fetch_and_add(&g->inflight, -1);
		f->flags &= ~BRC_FF_GMARK;
	}
}

/* Mark @f dirty for @bit (an enum brc_dirty_bit); counted once per flow. */
static __always_inline void brc_dirty(struct brc_flow *f, __u32 bit)
{
	__u32 m = 1U << (bit & 31);

	if (f->dirty & m)
		return;
	f->dirty |= m;
	brc_count_n(BRC_C_DIRTY_PARSER + bit, 1);
}

static __always_inline __u32 brc_flow_hash(const struct brc_flow_key *k)
{
	__u32 h = k->cli_addr * 0x9e3779b1U;

	h ^= k->srv_addr + 0x7f4a7c15U + (h << 6) + (h >> 2);
	h ^= ((__u32)k->cli_port << 16 | k->srv_port) * 0x85ebca6bU;
	return h ^ (h >> 15);
}

static __always_inline __u32 brc_flow_tag(__u32 h)
{
	return (h >> 16) | 1;       /* never 0: 0 = free slot */
}

/* Client SYN: (re)start tracking this connection. */
static __always_inline void brc_flow_syn(struct brc_scratch *sc, __u32 isn)
{
	struct brc_flow *f = &sc->flow;
	__u32 h = brc_flow_hash(&sc->fk), slot = h & (BRC_FLOWTAGS - 1);
	__u32 tag = brc_flow_tag(h);

	struct brc_global *g = brc_get_global();
	struct brc_flow *old = brc_flows.lookup(&sc->fk);

	if (!g)
		return;
	if (old && (old->flags & BRC_FF_CLOSED))
		old = 0;    /* a served flow kept after its close: no longer counted live */
	if (old) {
		/* a new connection on a reused 4-tuple: drop what the old one held */
		brc_release_marks(old);
	} else if (g->flows_live >= BRC_FLOWS_MAX - BRC_FLOWS_HEADROOM) {
		/* never make the LRU evict: an evicted flow would keep its marks */
		brc_count(FLOWS_TABLE_FULL);
		return;
	}
	__builtin_memset(f, 0, sizeof(*f));
	f->state = BRC_FS_SYN;
	f->cli_next = isn + 1;
	f->created_ns = sc->now;
	f->last_ns = sc->now;
	if (brc_flows.update(&sc->fk, f) != 0) {
		brc_count(FLOWS_TABLE_FULL);
		return;
	}
	if (!old)
		__sync_fetch_and_add(&g->flows_live, 1);
	brc_count(FLOWS_TRACKED);
	brc_flowtags.update(&slot, &tag);
}

/* Release @f (RST, or the server's FIN: it will execute nothing more). */
static __always_inline void brc_flow_close(struct brc_scratch *sc, struct brc_flow *f)
{
	__u32 h = brc_flow_hash(&sc->fk), slot = h & (BRC_FLOWTAGS - 1), zero = 0;
	struct brc_global *g = brc_get_global();

	brc_release_marks(f);
	brc_replybuf.delete(&sc->fk);
	if (f->flags & BRC_FF_CLOSED)
		return;
	if (f->flags & BRC_FF_SERVED) {
		/* served (issue 5): its seqadj offsets must translate the last
		 * FIN/ACKs, so the entry stays (closed, no longer counted live;
		 * the LRU may take it, or the next SYN on the tuple replaces it) */
		f->flags |= BRC_FF_CLOSED;
		if (g)
			__sync_fetch_and_add(&g->flows_live, -1);
		brc_flowtags.update(&slot, &zero);
		brc_count(FLOWS_CLOSED);
		brc_count(SERVE_FLOWS_KEPT);
		return;
	}
	if (brc_flows.delete(&sc->fk) == 0 && g)
		__sync_fetch_and_add(&g->flows_live, -1);
	brc_flowtags.update(&slot, &zero);
	brc_count(FLOWS_CLOSED);
}

/* A payload segment found no flow: evicted (its tag is still set) or never
 * tracked (it existed before attach, or its SYN was not seen). Its commands
 * cannot be followed, so any of them may be a write: invalidate everything and
 * hold everything "in flight" for a lease (brc_global.untracked_ns). */
static __always_inline void brc_flow_missing(struct brc_scratch *sc)
{
	__u32 h = brc_flow_hash(&sc->fk), slot = h & (BRC_FLOWTAGS - 1), zero = 0;
	__u32 *t = brc_flowtags.lookup(&slot);
	struct brc_global *gl = brc_get_global();

	if (gl) {
		__sync_fetch_and_add(&gl->ver, 1);
		gl->untracked_ns = sc->now;
		brc_count(INVALIDATE_UNTRACKED);
	}

	if (t && *t == brc_flow_tag(h)) {
		struct brc_global *g = brc_get_global();

		brc_count(FLOWS_EVICTED);
		brc_flowtags.update(&slot, &zero);
		if (g)
			__sync_fetch_and_add(&g->flows_live, -1);
		return;
	}
	brc_count(SEGMENTS_UNTRACKED);
}

#endif /* BRC_FLOW_H */
