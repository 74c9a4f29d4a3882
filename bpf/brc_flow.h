/* SPDX-License-Identifier: GPL-2.0 */
/* Connection state: creation at the SYN, release at an acceptable RST or the
 * server's FIN, giving a connection up, and the write-in-flight marks a
 * connection holds on key buckets, on everything, and on the auth state.
 *
 * A write "is in flight" from the moment it passes ingress until Redis's reply
 * to it is seen at egress. While a bucket (or the global entry) has marks, no
 * GET may fill or hit on it. A connection that is given up (any dirty reason
 * but MULTI) keeps its marks until it closes: its replies can no longer say
 * when a write is done. One whose request parser is lost also holds a global
 * mark, since its later writes are invisible.
 *
 * Two CPUs: ingress and egress of one connection may run at once. Every field
 * has one writer (ingress: sent, fifo slots, rq_*, chg_* requests; egress:
 * replied, rp_*, db, user, chg_done), and the fields both change (dirty, flags,
 * marks) change only by atomic or/and/compare-and-swap. Egress of one
 * connection is serialized by its socket's lock; ingress is not on every
 * device (veth queues per sending CPU), so in_busy makes a second CPU drop its
 * segment (serve mode: the client sends it again) or give the connection up
 * (observe mode) instead of parsing beside the first.
 */
#ifndef BRC_FLOW_H
#define BRC_FLOW_H

#include "brc_maps.h"
#include "brc_stats.h"
#include "seqadj.h"        /* brc_seq_after(): serial-number comparison */

#ifndef BRC_BUSY_STALE_NS
/* in_busy older than this is no CPU at work. Generous: a guest CPU the host
 * stops mid-segment keeps its lock for as long as it is stopped, and calling
 * that a lost lock gives a live connection up (1 ms did, in CI) */
#define BRC_BUSY_STALE_NS 1000000000ULL
#endif
#ifndef BRC_UNTRACKED_LEASE_NS
#define BRC_UNTRACKED_LEASE_NS 1000000000ULL   /* 1 s after untracked traffic */
#endif
#ifndef BRC_RST_HOLD_NS
#define BRC_RST_HOLD_NS 30000000000ULL        /* after a client RST with commands pending, when max_age is 0 */
#endif

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

static __always_inline struct brc_server *brc_get_server(void)
{
	__u32 zero = 0;

	return brc_server.lookup(&zero);
}

static __always_inline struct brc_agent *brc_get_agent(void)
{
	__u32 zero = 0;

	return brc_agent.lookup(&zero);
}

#define BRC_PROTO_RESP3 3

/* Does @f get RESP3 replies (Redis answered its HELLO 3)? */
static __always_inline int brc_resp3(const struct brc_flow *f)
{
	return f->rp_proto == BRC_PROTO_RESP3;
}

/* Is a host agent in charge (brc_agent)? Then Redis's own feed reports every key
 * that changes, and writes BRC cannot see or see finish need no lease or hold. */
static __always_inline int brc_agent_on(void)
{
	struct brc_agent *a = brc_get_agent();

	return a && (a->flags & BRC_AGENT_F_ON);
}

/* May answers go on as far as the agent goes: none in charge, or it beat recently. */
static __always_inline int brc_agent_fresh(__u64 now)
{
	struct brc_agent *a = brc_get_agent();

	if (!a || !(a->flags & BRC_AGENT_F_ON))
		return 1;
	return (__s64)(now - a->beat_ns) < (__s64)BRC_AGENT_STALE_NS;
}

/* Is a write BRC could not see (or see finish) possibly still in flight? */
static __always_inline int brc_held(const struct brc_global *g, __u64 now)
{
	return (__s64)(g->hold_until_ns - now) > 0;
}

/* Raise the hold at *@slot to @until (the later of two holds wins). */
static __always_inline void brc_hold_slot(__u64 *slot, __u64 until)
{
	__u64 cur;
	int i;

#pragma clang loop unroll(full)
	for (i = 0; i < 4; i++) {
		cur = *slot;
		if ((__s64)(cur - until) >= 0)
			return;
		if (__sync_val_compare_and_swap(slot, cur, until) == cur)
			return;
	}
}

/* Everything counts as in flight until @until. */
static __always_inline void brc_hold_until(struct brc_global *g, __u64 until)
{
	brc_hold_slot(&g->hold_until_ns, until);
}

/* Is a write to bucket @b possibly still running (its client reset first)? */
static __always_inline int brc_bucket_held(const struct brc_bucket *b, __u64 now)
{
	return (__s64)(b->hold_until_ns - now) > 0;
}

/* Invalidate everything now (a global version bump). */
static __always_inline void brc_bump_global(struct brc_global *g)
{
	__sync_fetch_and_add(&g->ver, 1);
	brc_count(INVALIDATE_GLOBAL);
}

/* Serial order of command numbers: has the reply to command @seq been seen
 * when @replied replies have? */
static __always_inline int brc_replied_past(__u32 replied, __u32 seq)
{
	return (__s32)(replied - seq) > 0;
}

#define BRC_MARK_WORD(id, seq) ((((__u64)(id) + 1) << 32) | (__u32)(seq))

/* Hold the global mark for command @seq of @f (the latest global write holds
 * it), and with @bump invalidate everything. The mark goes up before the bump
 * (see brc_mark_key). */
static __always_inline void brc_mark_global(struct brc_flow *f, __u32 seq, int bump)
{
	struct brc_global *g = brc_get_global();
	__u64 v, w = BRC_MARK_WORD(0, seq);

	if (!g)
		return;
	v = f->gmark;
	if (v && __sync_val_compare_and_swap(&f->gmark, v, w) == v)
		goto bump;
	/* free, or released by egress meanwhile: take it anew */
	__sync_fetch_and_add(&g->inflight, 1);
	if (__sync_val_compare_and_swap(&f->gmark, 0, w) != 0)
		__sync_fetch_and_add(&g->inflight, -1);    /* cannot happen: one ingress at a time */
bump:
	if (bump)
		brc_bump_global(g);
}

/* A write to the key in bucket @idx passes as command @seq of @f: bump the
 * bucket's version and hold it in flight until that command's reply (a global
 * mark when @f's key marks are full). */
static __always_inline void brc_mark_key(struct brc_flow *f, __u32 idx, __u32 seq)
{
	struct brc_bucket *b;
	__u64 v, w;
	__u32 i, held = 0;

	idx &= BRC_KEYVER_BUCKETS - 1;
	b = brc_keyver.lookup(&idx);
	if (!b)
		return;
	w = BRC_MARK_WORD(idx, seq);
	/* The in-flight mark goes up BEFORE the version: a GET reads the version first
	 * and the marks after, so a GET that sees the new version also sees the write in
	 * flight and is not filled. With the bump first, a GET landing between the two saw
	 * the new version and no mark; Redis, which orders connections its own way, could
	 * answer it with the old value and flush the write's reply first (releasing the
	 * mark), and the old value was filled under the new version: a stale entry. */
#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++) {
		v = f->marks[i];
		if (!held && v && (v >> 32) == idx + 1 &&
		    __sync_val_compare_and_swap(&f->marks[i], v, w) == v)
			held = 1;
	}
#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++) {
		if (!held && f->marks[i] == 0) {
			__sync_fetch_and_add(&b->inflight, 1);
			if (__sync_val_compare_and_swap(&f->marks[i], 0, w) == 0)
				held = 1;
			else
				__sync_fetch_and_add(&b->inflight, -1);
		}
	}
	if (!held) {
		brc_count(MARKS_OVERFLOW);
		brc_mark_global(f, seq, 0);
	}
	__sync_fetch_and_add(&b->ver, 1);
	brc_count(INVALIDATE_KEY);
}

/* A command that may change users, rights or the server's role passes as
 * command @seq: answering stops host-wide until it completes and the toolkit
 * has read the state again (brc_server). */
static __always_inline void brc_mark_server(struct brc_flow *f, __u32 seq)
{
	struct brc_global *g = brc_get_global();
	__u64 v, w = BRC_MARK_WORD(0, seq);

	brc_count(SERVER_CHANGES);
	if (!g)
		return;
	v = f->smark;
	if (v && __sync_val_compare_and_swap(&f->smark, v, w) == v)
		return;
	__sync_fetch_and_add(&g->auth_inflight, 1);
	if (__sync_val_compare_and_swap(&f->smark, 0, w) != 0)
		__sync_fetch_and_add(&g->auth_inflight, -1);
}

/* Drop mark word *@slot if @all, or if its command has been replied to.
 * Returns the word dropped (0 = none). */
static __always_inline __u64 brc_unmark(__u64 *slot, __u32 replied, int all)
{
	__u64 v = *slot;

	if (!v || (!all && !brc_replied_past(replied, (__u32)v)))
		return 0;
	if (__sync_val_compare_and_swap(slot, v, 0) != v)
		return 0;       /* retaken by a later command meanwhile: still in flight */
	return v;
}

/* Release the marks of @f whose commands Redis has answered (@replied replies
 * seen), or all of them (@all: the connection is gone). A given-up connection
 * releases only when it is gone. */
static __always_inline void brc_release_marks(struct brc_flow *f, __u32 replied, int all)
{
	struct brc_global *g = brc_get_global();
	struct brc_bucket *b;
	__u32 i, idx;
	__u64 v;

	if (!all && (f->dirty & BRC_DIRTY_GIVEUP))
		return;
#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++) {
		v = brc_unmark(&f->marks[i], replied, all);
		if (v) {
			idx = ((__u32)(v >> 32) - 1) & (BRC_KEYVER_BUCKETS - 1);
			b = brc_keyver.lookup(&idx);
			if (b)
				__sync_fetch_and_add(&b->inflight, -1);
		}
	}
	if (!g)
		return;
	if (brc_unmark(&f->gmark, replied, all))
		__sync_fetch_and_add(&g->inflight, -1);
	if (brc_unmark(&f->smark, replied, all)) {
		/* the change is done (or its connection gone): the loaded state is old */
		__sync_fetch_and_add(&g->auth_epoch, 1);
		__sync_fetch_and_add(&g->auth_inflight, -1);
	}
}

/* Mark @f dirty for @bit (an enum brc_dirty_bit); counted once per flow. */
static __always_inline void brc_dirty(struct brc_flow *f, __u32 bit)
{
	__u64 m = 1ULL << (bit & 63);

	if (f->dirty & m)
		return;
	if (__sync_fetch_and_or(&f->dirty, m) & m)
		return;
	brc_count_n(BRC_DIRTY_SLOT_BASE + (bit & 31), 1);
}

static __always_inline void brc_flag_set(struct brc_flow *f, __u64 bits)
{
	if ((f->flags & bits) != bits)
		__sync_fetch_and_or(&f->flags, bits);
}

static __always_inline void brc_flag_clear(struct brc_flow *f, __u64 bits)
{
	if (f->flags & bits)
		__sync_fetch_and_and(&f->flags, ~bits);
}

/* "default", the user of a connection that has not authenticated. */
static __always_inline void brc_user_default(__u32 *len, __u8 *name)
{
	__builtin_memset(name, 0, BRC_USER_MAX);
	name[0] = 'd'; name[1] = 'e'; name[2] = 'f'; name[3] = 'a';
	name[4] = 'u'; name[5] = 'l'; name[6] = 't';
	*len = 7;
}

/* Client SYN: (re)start tracking this connection, in brc_transient until the
 * server's SYN-ACK. A SYN on a connection whose handshake completed is
 * ignored, as the kernel answers it with a challenge ACK (RFC 5961) and keeps
 * the connection. Returns the half-open flow, or NULL. */
static __always_inline struct brc_flow *brc_flow_syn(struct brc_scratch *sc, __u32 isn)
{
	struct brc_flow *zero, *f;
	__u32 z = 0;

	if (brc_flows.lookup(&sc->fk)) {
		brc_count(SYN_IGNORED);
		return 0;
	}
	zero = brc_flow_zero.lookup(&z);     /* replaces a closed served flow on the tuple */
	if (!zero || brc_transient.update(&sc->fk, zero) != 0)
		return 0;
	f = brc_transient.lookup(&sc->fk);
	if (!f)
		return 0;
	f->state = BRC_FS_SYN;
	f->cli_next = isn + 1;
	f->created_ns = sc->now;
	f->last_ns = sc->now;
	f->last_pass_ns = sc->now;
	brc_user_default(&f->user_len, f->user);
	return f;
}

/* Does @f hold a write (or auth change) in flight? */
static __always_inline int brc_flow_holds_marks(const struct brc_flow *f)
{
	__u32 i, any = f->gmark || f->smark;

#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++)
		any |= f->marks[i] != 0;
	return any;
}

/* A client reset @f before Redis answered writes it sent (or before BRC could
 * tell): Redis may still run them (they sit in the socket, or the client is
 * paused). Whatever they could change is held as in flight for a while: the
 * buckets of its key marks, everything for a global mark (invisible writes),
 * and the auth state for a server-state command (a load before then is stale). */
static __always_inline void brc_flow_hold_unanswered(struct brc_scratch *sc, struct brc_flow *f,
						     struct brc_global *g)
{
	const struct brc_config *cfg;
	struct brc_bucket *b;
	__u32 zero = 0, i, idx;
	__u64 until, v;

	cfg = brc_config.lookup(&zero);
	until = sc->now + ((cfg && cfg->max_age_ns) ? cfg->max_age_ns : BRC_RST_HOLD_NS);
#pragma clang loop unroll(full)
	for (i = 0; i < BRC_FLOW_MARKS; i++) {
		v = f->marks[i];
		if (v) {
			idx = ((__u32)(v >> 32) - 1) & (BRC_KEYVER_BUCKETS - 1);
			b = brc_keyver.lookup(&idx);
			if (b)
				brc_hold_slot(&b->hold_until_ns, until);
		}
	}
	if (f->gmark) {
		brc_hold_until(g, until);
		brc_bump_global(g);
	}
	if (f->smark)
		brc_hold_slot(&g->auth_hold_until_ns, until);
	brc_count(RST_PENDING);
}

/* Release @f: its marks go, its entry goes (a served one moves to brc_transient
 * for its last FIN/ACKs). @redis_done: the server closed or reset, so Redis
 * runs nothing more of it. Otherwise (a client RST) Redis may still run what
 * the connection sent before (a busy Redis has not read it yet): with commands
 * unanswered (or replies no longer paired), what its marks cover is held
 * first. The RST itself always passes: holding it back would make Redis run
 * a write it drops when its client resets first (a paused client). */
static __always_inline void brc_flow_close(struct brc_scratch *sc, struct brc_flow *f, int redis_done)
{
	struct brc_global *g = brc_get_global();

	if (f->flags & BRC_FF_CLOSED)
		return;
	if (f->state != BRC_FS_EST) {
		brc_transient.delete(&sc->fk);       /* half-open: no marks, not counted live */
		return;
	}
	if (!redis_done && g && (f->sent != f->replied || (f->dirty & BRC_DIRTY_GIVEUP)) &&
	    brc_flow_holds_marks(f))
		brc_flow_hold_unanswered(sc, f, g);
	brc_release_marks(f, 0, 1);
	brc_replybuf.delete(&sc->fk);
	if (f->flags & BRC_FF_OOO_HELD)
		brc_ooo.delete(&sc->fk);
	brc_count(FLOWS_CLOSED);
	if (g)
		__sync_fetch_and_add(&g->flows_live, -1);
	if (f->flags & BRC_FF_SERVED) {
		/* its seqadj offsets must translate the last FIN/ACKs */
		brc_flag_set(f, BRC_FF_CLOSED);
		brc_transient.update(&sc->fk, f);
		brc_count(SERVE_FLOWS_KEPT);
	}
	brc_flows.delete(&sc->fk);
}

/* The flow of sc->fk: live (brc_flows), or half-open or closed-but-translated
 * (brc_transient). Two maps at most: each map a pointer may come from multiplies
 * what the verifier walks after it. */
static __always_inline struct brc_flow *brc_flow_find(struct brc_scratch *sc)
{
	struct brc_flow *f = brc_flows.lookup(&sc->fk);

	if (!f)
		f = brc_transient.lookup(&sc->fk);
	return f;
}

/* Would the server's kernel accept this RST of the client (RFC 5961: exactly
 * at rcv_nxt; after the client's FIN also one past it)? Others only earn a
 * challenge ACK and must not change BRC's state. */
static __always_inline int brc_rst_acceptable(const struct brc_flow *f, __u32 seq)
{
	if (f->state != BRC_FS_EST)
		return 1;
	if (seq == f->cli_next)
		return 1;
	return (f->flags & BRC_FF_CLI_FIN) && seq == f->cli_next + 1;
}

/* Client bytes BRC cannot parse reach Redis while an agent is in charge. Its
 * feed reports the keys they change, but nothing reports a change of who may
 * read what (CONFIG SET requirepass, ACL SETUSER) as it happens, and the
 * agent's poll of ACL LIST lags a beat: the users loaded count as old (the
 * agent loads them again at its next beat), and a load counts only if made
 * after @until (0: none) or after the agent proved Redis ran those bytes. */
static __always_inline void brc_auth_unseen(struct brc_global *g, __u64 until)
{
	__sync_fetch_and_add(&g->auth_epoch, 1);
	if (until)
		brc_hold_slot(&g->auth_hold_until_ns, until);
	brc_count(AUTH_UNSEEN);
}

/* A payload segment found no flow: the connection existed before attach, or
 * its SYN was not seen. Its commands cannot be followed, so any of them may be
 * a write: invalidate everything and hold everything in flight for a lease
 * (without an agent in charge; with one, Redis reports its writes). */
static __always_inline void brc_flow_missing(struct brc_scratch *sc)
{
	struct brc_global *g = brc_get_global();

	brc_count(SEGMENTS_UNTRACKED);
	if (!g || brc_agent_on())
		return;         /* the agent's feed reports what it writes */
	brc_hold_until(g, sc->now + BRC_UNTRACKED_LEASE_NS);
	__sync_fetch_and_add(&g->ver, 1);
	brc_count(INVALIDATE_UNTRACKED);
}

#endif /* BRC_FLOW_H */
