/* SPDX-License-Identifier: GPL-2.0 */
/* The shadow cache: deciding at a GET's ingress whether it would be answered
 * (and whether its reply may fill), and at its reply's egress filling the
 * entry or proving the would-be answer against Redis's real bytes.
 *
 * Rules (datapath.md): fill only from the reply to a GET passed with nothing
 * pending on a clean connection, only when no write to its key bucket (or a
 * global write) was in flight when it passed and none passed before its reply.
 * An entry is valid while its bucket and the global version are those it was
 * filled at, neither has a write in flight, the key has no TTL mark, and it is
 * younger than the maximum age. The serve phase answers exactly where this
 * file says BRC_TRACK_VERIFY.
 */
#ifndef BRC_CACHE_H
#define BRC_CACHE_H

#include "brc_flow.h"

#define BRC_FIFO_F_TRACKED 1ULL     /* the tracked GET (always the FIFO head) */
#define BRC_FIFO_F_AUTH 2ULL        /* AUTH / HELLO AUTH: a non-error reply authenticates */
#define BRC_FIFO_TS_MASK ((1ULL << 56) - 1)

static __always_inline __u32 brc_key_max(const struct brc_config *cfg)
{
	__u32 m = cfg->max_key_len;

	return (m == 0 || m > BRC_KEY_MAX) ? BRC_KEY_MAX : m;
}

/* dst[0..BRC_KEY_MAX) = src[0..len) then zeros (cache keys compare whole). */
static __always_inline void brc_key_copy(__u8 *dst, const __u8 *src, __u32 len)
{
	__u32 i;

#pragma clang loop unroll(full)
	for (i = 0; i < BRC_KEY_MAX; i++)
		dst[i] = i < len ? src[i] : 0;
}

/* A GET of the key in f->rq_key (argument 1) passed, with @pending commands
 * already pending before it. Returns BRC_FIFO_F_* flags for its FIFO entry. */
static __always_inline __u64 brc_get_passed(struct brc_scratch *sc, struct brc_flow *f,
					    const struct brc_config *cfg, __u32 pending)
{
	struct brc_cache_entry *e;
	struct brc_bucket *b;
	struct brc_global *g;
	struct brc_replybuf *rb;
	__u32 idx = f->rq_key_bucket & (BRC_KEYVER_BUCKETS - 1);

	if (f->dirty) {
		brc_count(GET_UNCACHEABLE_DIRTY);
		return 0;
	}
	if (pending) {
		brc_count(GET_UNCACHEABLE_PENDING);
		return 0;
	}
	if (f->db != 0) {
		brc_count(GET_UNCACHEABLE_DB);
		return 0;
	}
	if (cfg->require_auth && !(f->flags & BRC_FF_AUTHED)) {
		brc_count(GET_UNCACHEABLE_AUTH);
		return 0;
	}
	if (f->rq_key_len > brc_key_max(cfg)) {
		brc_count(OVERSIZE_KEY);
		return 0;
	}
	if (f->state != BRC_FS_EST)
		return 0;
	b = brc_keyver.lookup(&idx);
	g = brc_get_global();
	if (!b || !g)
		return 0;

	brc_key_copy(f->track_key, f->rq_key, f->rq_key_len);
	f->track_key_len = f->rq_key_len;
	sc->ckey.len = f->rq_key_len;
	__builtin_memcpy(sc->ckey.key, f->track_key, BRC_KEY_MAX);
	f->track_bucket = idx;
	f->track_ver = b->ver;
	f->track_gver = g->ver;
	f->track = BRC_TRACK_NONE;

	e = brc_cache.lookup(&sc->ckey);
	if (b->inflight || g->inflight || brc_untracked_active(g, sc->now)) {
		brc_count(MISS);
		brc_count(FILL_REFUSED_INFLIGHT);
		return 0;
	}
	if (b->ttl || brc_ttlkeys.lookup(&sc->ckey)) {
		brc_count(MISS);
		brc_count(FILL_REFUSED_TTL);
		return 0;
	}
	if (e && e->ver == f->track_ver && e->gver == f->track_gver) {
		if (cfg->max_age_ns && sc->now - e->fill_ns > cfg->max_age_ns) {
			brc_count(CACHE_EXPIRED);
		} else {
			/* Serve phase: answer here. Observe: prove it at the reply. */
			f->track = BRC_TRACK_VERIFY;
		}
	}
	if (f->track != BRC_TRACK_VERIFY) {
		brc_count(MISS);
		f->track = BRC_TRACK_FILL;
	}
	rb = brc_replybuf.lookup(&sc->fk);
	if (!rb) {
		sc->rb.len = 0;
		brc_replybuf.update(&sc->fk, &sc->rb);
	}
	return BRC_FIFO_F_TRACKED;
}

/* Compare @len bytes of two 8-byte aligned buffers. */
static __always_inline int brc_bytes_equal(const __u8 *a, const __u8 *b, __u32 len)
{
	__u32 i;

	for (i = 0; i < BRC_VAL_MAX / 8; i++) {
		__u64 x, y, mask = ~0ULL;
		__u32 at = i * 8;

		if (at >= len)
			break;
		if (len - at < 8)
			mask = (1ULL << ((len - at) * 8)) - 1;
		x = *(const __u64 *)(a + at);
		y = *(const __u64 *)(b + at);
		if ((x ^ y) & mask)
			return 0;
	}
	return 1;
}

/* The tracked GET's reply is complete: f->rp_len bytes (at most BRC_VAL_MAX of
 * them buffered in @rb), f->rp_type its first byte, f->rp_num its length. */
static __always_inline void brc_track_done(struct brc_scratch *sc, struct brc_flow *f,
					   const struct brc_config *cfg, struct brc_replybuf *rb)
{
	struct brc_cache_entry *e;
	struct brc_bucket *b;
	struct brc_global *g;
	__u32 idx = f->track_bucket & (BRC_KEYVER_BUCKETS - 1);
	__u32 track = f->track, len = f->rp_len;
	__u32 vmax = cfg->max_value_len;

	f->track = BRC_TRACK_NONE;
	if (track == BRC_TRACK_NONE)
		return;
	b = brc_keyver.lookup(&idx);
	g = brc_get_global();
	if (!b || !g || !rb)
		return;
	sc->ckey.len = f->track_key_len;
	__builtin_memcpy(sc->ckey.key, f->track_key, BRC_KEY_MAX);

	if (track == BRC_TRACK_VERIFY) {
		if (b->ver != f->track_ver || g->ver != f->track_gver) {
			brc_count(VERIFY_RACED);
			return;
		}
		e = brc_cache.lookup(&sc->ckey);
		if (!e) {
			brc_count(VERIFY_RACED);
			return;
		}
		if (e->len == len && len <= BRC_VAL_MAX && brc_bytes_equal(e->reply, rb->data, len))
			brc_count(WOULD_HIT);
		else
			brc_count(MISMATCH);
		return;
	}

	/* BRC_TRACK_FILL */
	if (f->rp_type != '$') {
		brc_count(FILL_REFUSED_NOT_BULK);
		return;
	}
	if (vmax == 0 || vmax > BRC_VAL_MAX)
		vmax = BRC_VAL_MAX;
	if (len > BRC_VAL_MAX || (!f->rp_neg && f->rp_num > vmax)) {
		brc_count(OVERSIZE_VALUE);
		return;
	}
	if (b->ver != f->track_ver || g->ver != f->track_gver || b->inflight || g->inflight ||
	    brc_untracked_active(g, sc->now)) {
		brc_count(FILL_REFUSED_VERSION);
		return;
	}
	if (b->ttl) {
		brc_count(FILL_REFUSED_TTL);
		return;
	}
	e = &sc->entry;
	e->ver = f->track_ver;
	e->gver = f->track_gver;
	e->fill_ns = sc->now;
	e->len = len;
	e->bucket = idx;
	__builtin_memcpy(e->reply, rb->data, BRC_VAL_MAX);
	if (brc_cache.update(&sc->ckey, e) == 0)
		brc_count(FILL);
	else
		brc_count(FILL_REFUSED_NO_SPACE);
}

#endif /* BRC_CACHE_H */
