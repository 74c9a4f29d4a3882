/* SPDX-License-Identifier: GPL-2.0 */
/* The shadow cache: deciding at a GET's ingress whether it would be answered
 * (and whether its reply may fill), and at its reply's egress filling the
 * entry or proving the would-be answer against Redis's real bytes.
 *
 * Rules (datapath.md): fill only from the reply to a GET passed with nothing
 * pending on a connection that was never given up, only when no write to its
 * key bucket (or a global write) was in flight when it passed and none passed
 * before its reply. An entry is valid while its bucket and the global version
 * are those it was filled at, neither has a write in flight, the key has no
 * TTL mark (with an agent in charge: Redis's deadline for it, read by the agent
 * at those versions, is more than a margin away), and it is younger than the
 * maximum age. It may be answered only to
 * a connection whose user Redis has authenticated and lets read every key,
 * while the toolkit's copy of those rights is current (brc_may_answer). The
 * serve phase answers exactly where this file says BRC_TRACK_VERIFY.
 */
#ifndef BRC_CACHE_H
#define BRC_CACHE_H

#include "brc_flow.h"

#define BRC_FIFO_F_TRACKED 1ULL     /* the tracked GET */
#define BRC_FIFO_F_GET 2ULL         /* a GET: its reply is a bulk string or an error */
#define BRC_FIFO_F_STATE 4ULL       /* its reply decides the state change in chg_* */
/* Ingress time in 16 ns units: 36 bits span 1099 s, as 40 bits of ns did, and
 * leave 8 for the command's histogram id (log2 slots below 16 ns stay empty). */
#define BRC_FIFO_TS_SHIFT 4
#define BRC_FIFO_TS_BITS 36
#define BRC_FIFO_TS_MASK ((1ULL << BRC_FIFO_TS_BITS) - 1)
#define BRC_FIFO_SEQ_SHIFT 36
#define BRC_FIFO_ID_SHIFT 52

static __always_inline __u64 brc_fifo_entry(__u64 now, __u32 seq, __u32 id, __u64 flags)
{
	return ((now >> BRC_FIFO_TS_SHIFT) & BRC_FIFO_TS_MASK) |
	       ((__u64)(seq & 0xffff) << BRC_FIFO_SEQ_SHIFT) |
	       ((__u64)(id & 0xff) << BRC_FIFO_ID_SHIFT) | (flags << 60);
}

/* Nanoseconds from FIFO entry @e's ingress to @now. */
static __always_inline __u64 brc_fifo_age(__u64 e, __u64 now)
{
	return (((now >> BRC_FIFO_TS_SHIFT) - e) & BRC_FIFO_TS_MASK) << BRC_FIFO_TS_SHIFT;
}

/* The FIFO entry of command @seq, or 0 when its slot was not written for it. */
static __always_inline __u64 brc_fifo_get(const struct brc_flow *f, __u32 seq)
{
	__u64 e = f->fifo[seq & (BRC_FIFO_LEN - 1)];

	if (((e >> BRC_FIFO_SEQ_SHIFT) & 0xffff) != (seq & 0xffff) || !e)
		return 0;
	return e;
}

static __always_inline __u32 brc_key_max(const struct brc_config *cfg)
{
	__u32 m = cfg->max_key_len;

	return (m == 0 || m > BRC_KEY_MAX) ? BRC_KEY_MAX : m;
}

/* Is the toolkit's copy of Redis's users and rights current (loaded, nothing
 * that could change it in flight or completed since)? */
static __always_inline int brc_server_current(const struct brc_global *g)
{
	struct brc_server *sv = brc_get_server();

	return sv && g->auth_inflight == 0 && sv->auth_epoch == g->auth_epoch &&
	       (__s64)(sv->loaded_ns - g->auth_hold_until_ns) >= 0;
}

/* Would Redis let @f's user GET any key? Its user must be authenticated (or
 * the open default user) and allowed every key, as the toolkit read from Redis. */
static __always_inline int brc_user_may_read(const struct brc_flow *f)
{
	struct brc_user *u = brc_users.lookup((struct brc_user_key *)&f->user_len);

	if (!u || !(u->flags & BRC_USER_READ_ALL))
		return 0;
	return (f->flags & BRC_FF_AUTHED) || (u->flags & BRC_USER_OPEN);
}

/* May @f's user also MGET every key (BRC_USER_MGET; brc_may_answer() checks
 * the rest)? */
static __always_inline int brc_user_may_mget(const struct brc_flow *f)
{
	struct brc_user *u = brc_users.lookup((struct brc_user_key *)&f->user_len);

	return u && (u->flags & BRC_USER_MGET);
}

/* The Redis-level conditions of an answer on @f besides the entry; with
 * @count, counts why not (the serve stage does not: a GET it passes is counted
 * by the request parser right after). */
static __always_inline int brc_may_answer(const struct brc_flow *f, const struct brc_global *g,
					  __u64 now, int count)
{
	if (!brc_agent_fresh(now)) {
		if (count)
			brc_count(GET_UNCACHEABLE_AGENT);
		return 0;
	}
	if (!brc_server_current(g)) {
		if (count)
			brc_count(GET_UNCACHEABLE_SERVER);
		return 0;
	}
	if (!brc_user_may_read(f)) {
		if (count)
			brc_count(GET_UNCACHEABLE_AUTH);
		return 0;
	}
	return 1;
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

/* Would entry @e's key still exist in Redis at @now? An entry filled under an
 * agent carries Redis's deadline (answers end BRC_EXPIRY_MARGIN_NS before it);
 * one filled by the programs alone, no TTL mark on its key (brc_ttlkeys). */
static __always_inline int brc_entry_unexpired(const struct brc_cache_entry *e,
					       const struct brc_bucket *b,
					       struct brc_cache_key *k, __u64 now)
{
	if (e->expire_ns)
		return e->expire_ns == BRC_EXPIRY_NEVER || now + BRC_EXPIRY_MARGIN_NS < e->expire_ns;
	return !b->ttl && !brc_ttlkeys.lookup(k);
}

/* May entry @e's bytes answer @f? A bulk string is the same in both protocols,
 * but RESP2's nil ($-1) is not RESP3's (_, which is never cached). */
static __always_inline int brc_entry_fits(const struct brc_cache_entry *e, const struct brc_flow *f)
{
	return !(brc_resp3(f) && e->reply[1] == '-');
}

/* Is there an expiry record of sc->ckey at the versions @f's GET was tracked at? */
static __always_inline int brc_expiry_current(struct brc_scratch *sc, const struct brc_flow *f)
{
	struct brc_expiry *x = brc_expiry.lookup(&sc->ckey);

	return x && x->ver == f->track_ver && x->gver == f->track_gver;
}

/* Copy sc->ckey's expiry record to sc->expiry and check the copy (one write of
 * that key, at the versions @f's GET was tracked at, see struct brc_expiry). */
static __always_inline int brc_expiry_copy(struct brc_scratch *sc, const struct brc_flow *f)
{
	struct brc_expiry *x = brc_expiry.lookup(&sc->ckey);
	struct brc_expiry *c = &sc->expiry;

	if (!x)
		return 0;
	__builtin_memcpy(c, x, sizeof(*c));
	if (c->write_id != c->write_id_end || x->write_id != c->write_id)
		return 0;
	if (!brc_addr_eq(c->srv_addr, sc->ckey.srv_addr) || c->key_len != sc->ckey.len ||
	    !brc_bytes_equal(c->key, sc->ckey.key, BRC_KEY_MAX))
		return 0;
	return c->ver == f->track_ver && c->gver == f->track_gver;
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

	if (cfg->mode == BRC_MODE_OFF)
		return 0;       /* writes go unseen while off: nothing read now may fill */
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

	__builtin_memcpy(f->track_key, f->rq_key, BRC_KEY_MAX);   /* zero-padded */
	f->track_key_len = f->rq_key_len;
	brc_addr_copy(sc->ckey.srv_addr, sc->fk.srv_addr);
	sc->ckey.len = f->rq_key_len;
	__builtin_memcpy(sc->ckey.key, f->track_key, BRC_KEY_MAX);
	f->track_bucket = idx;
	f->track_ver = b->ver;
	f->track_gver = g->ver;
	f->track = BRC_TRACK_NONE;

	if (b->inflight || g->inflight || brc_held(g, sc->now) || brc_bucket_held(b, sc->now)) {
		brc_count(MISS);
		brc_count(FILL_REFUSED_INFLIGHT);
		return 0;
	}
	if (brc_agent_on()) {
		/* the fill needs Redis's deadline: ask the agent now, it may come first */
		if (!brc_expiry_current(sc, f)) {
			brc_expiry_wanted.update(&sc->ckey, &sc->now);
			brc_count(EXPIRY_WANTED);
		}
	} else if (b->ttl || brc_ttlkeys.lookup(&sc->ckey)) {
		brc_count(MISS);
		brc_count(FILL_REFUSED_TTL);
		return 0;
	}
	e = brc_cache.lookup(&sc->ckey);
	if (e && e->ver == f->track_ver && e->gver == f->track_gver) {
		if (cfg->max_age_ns && sc->now - e->fill_ns > cfg->max_age_ns)
			brc_count(CACHE_EXPIRED);
		else if (!brc_entry_unexpired(e, b, &sc->ckey, sc->now))
			brc_count(ANSWER_NEAR_EXPIRY);
		else if (!brc_entry_fits(e, f))
			brc_count(ANSWER_NIL_RESP3);
		else if (brc_may_answer(f, g, sc->now, 1))
			/* Serve phase: answer here. Observe: prove it at the reply. */
			f->track = BRC_TRACK_VERIFY;
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
	__u64 expire_ns = 0;

	f->track = BRC_TRACK_NONE;
	if (track == BRC_TRACK_NONE || cfg->mode == BRC_MODE_OFF || (f->dirty & BRC_DIRTY_GIVEUP))
		return;
	b = brc_keyver.lookup(&idx);
	g = brc_get_global();
	if (!b || !g || !rb)
		return;
	brc_addr_copy(sc->ckey.srv_addr, sc->fk.srv_addr);
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
		if (e->len == len && len <= BRC_VAL_MAX && brc_bytes_equal(e->reply, rb->data, len)) {
			brc_count(WOULD_HIT);
			return;
		}
		if (e->expire_ns && e->expire_ns != BRC_EXPIRY_NEVER &&
		    sc->now + BRC_EXPIRY_MARGIN_NS >= e->expire_ns) {
			/* the key's deadline came while Redis worked on the GET */
			brc_count(VERIFY_RACED);
			return;
		}
		/* BRC's model disagreed with Redis: the entry goes, everything is
		 * invalidated (the cause is unknown) and the connection is given up */
		brc_count(MISMATCH);
		if (brc_cache.delete(&sc->ckey) == 0)
			brc_count(MISMATCH_EVICTED);
		brc_bump_global(g);
		brc_dirty(f, BRC_DIRTY_BIT_MISMATCH);
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
	    brc_held(g, sc->now) || brc_bucket_held(b, sc->now)) {
		brc_count(FILL_REFUSED_VERSION);
		return;
	}
	if (brc_agent_on()) {
		if (!brc_expiry_copy(sc, f)) {
			brc_count(FILL_REFUSED_EXPIRY);
			return;
		}
		expire_ns = sc->expiry.expire_ns;
		if (!expire_ns || (expire_ns != BRC_EXPIRY_NEVER &&
				   sc->now + BRC_EXPIRY_MARGIN_NS >= expire_ns)) {
			brc_count(FILL_REFUSED_TTL);
			return;
		}
	} else if (b->ttl) {
		brc_count(FILL_REFUSED_TTL);
		return;
	}
	e = &sc->entry;
	e->fill_id = ((__u64)bpf_get_prandom_u32() << 32) | (__u32)sc->now;
	e->ver = f->track_ver;
	e->gver = f->track_gver;
	e->fill_ns = sc->now;
	e->expire_ns = expire_ns;
	e->bucket = idx;
	brc_addr_copy(e->srv_addr, sc->ckey.srv_addr);
	e->key_len = sc->ckey.len;
	__builtin_memcpy(e->key, sc->ckey.key, BRC_KEY_MAX);
	e->len = len;
	/* one helper call: clang does not inline a copy of BRC_VAL_MAX bytes,
	 * and an unrolled one would cost the verifier per byte (on a failure it
	 * zeroes the copy: never cached) */
	if (bpf_probe_read_kernel(e->reply, BRC_VAL_MAX, rb->data) < 0) {
		brc_count(FILL_REFUSED_NO_SPACE);
		return;
	}
	e->fill_id_end = e->fill_id;
	if (brc_cache.update(&sc->ckey, e) == 0)
		brc_count(FILL);
	else
		brc_count(FILL_REFUSED_NO_SPACE);
}

#endif /* BRC_CACHE_H */
