/* SPDX-License-Identifier: GPL-2.0 */
/* Adopting connections BRC did not see open (opened before the attach, or
 * their SYN unseen), at a command boundary the host agent proved with Redis's
 * word; the protocol is brc_contract.h's, above struct brc_untracked. Here:
 * the record of what each side of such a connection sent and acked, the
 * freeze, and the flow a proven ticket turns into. Only while an agent is in
 * charge: without one nothing could prove a boundary, and an untracked
 * connection's bytes invalidate everything (brc_flow_missing).
 *
 * The record may be older than the connection's real state only after a
 * blind gap (segments BRC never saw), and re-attaching empties it
 * (module_utils/brc_maps.BLIND_GAP_MAPS). Otherwise every segment moves it,
 * and a ticket is used only while the record still ends exactly where the
 * agent proved the boundary, at the segment that starts there.
 */
#ifndef BRC_ADOPT_H
#define BRC_ADOPT_H

#include "brc_flow.h"
#include "brc_pkt.h"
#include "seqadj.h"

/* The record of sc->fk, made by whichever side comes first. */
static __always_inline struct brc_untracked *brc_untracked_get(struct brc_scratch *sc)
{
	struct brc_untracked *u = brc_untracked.lookup(&sc->fk), fresh = {};

	if (u)
		return u;
	brc_untracked.insert(&sc->fk, &fresh);
	return brc_untracked.lookup(&sc->fk);
}

/* One side's segment: its end (data, FIN) and its ack, the highest so far.
 * Pure ACKs count too: their sequence number is the sender's next byte. */
static __always_inline void brc_untracked_side(struct brc_untracked *u, const struct brc_pkt *pkt,
					       __u32 *next, __u32 *ack, __u64 side, __u64 now)
{
	__u32 end = pkt->seq + pkt->payload_len + !!(pkt->tcp_flags & BRC_TCP_FIN);
	int first = !(u->flags & side);

	if (first || brc_seq_after(end, *next))
		*next = end;
	if ((pkt->tcp_flags & BRC_TCP_ACK) && (first || brc_seq_after(pkt->ack_seq, *ack)))
		*ack = pkt->ack_seq;
	u->seen_ns = now;
	if (first)
		__sync_fetch_and_or(&u->flags, side);
}

/* A SYN on the tuple: a new connection, seen from its start. */
static __always_inline void brc_untracked_forget(struct brc_scratch *sc)
{
	brc_untracked.delete(&sc->fk);
	brc_adopt.delete(&sc->fk);
}

/* The proven ticket @t becomes a flow at its boundary (the segment being
 * processed starts there): Redis's db, user and protocol, the socket's MSS and
 * window shift, sequence state from the record @u. Unproven until Redis's first
 * reply. A replica's link starts given up, at the master's stream as the
 * record last saw it. The state becomes established last: the other hook
 * skips the flow until then. */
static __always_inline struct brc_flow *brc_adopt_flow(struct brc_scratch *sc, const struct brc_config *cfg,
						       const struct brc_untracked *u, const struct brc_adopt *t)
{
	struct brc_global *g = brc_get_global();
	struct brc_flow *zero, *f;
	__u64 flags = BRC_FF_UNPROVEN;
	__u32 z = 0;

	zero = brc_flow_zero.lookup(&z);
	if (!g || !zero || brc_flows.insert(&sc->fk, zero) != 0) {
		brc_count(FLOWS_TABLE_FULL);
		return 0;
	}
	f = brc_flows.lookup(&sc->fk);
	if (!f)
		return 0;
	f->cli_next = t->cli_next;
	f->srv_next = t->replica ? u->srv_next : t->srv_next;
	f->cli_ack = u->cli_ack;
	f->srv_ack = u->srv_ack;
	f->created_ns = sc->now;
	f->last_ns = sc->now;
	f->last_pass_ns = sc->now;
	f->db = t->db;
	f->rp_proto = t->proto;
	f->user_len = t->user_len < BRC_USER_MAX ? t->user_len : BRC_USER_MAX;
	__builtin_memcpy(f->user, t->user, BRC_USER_MAX);
	f->mss = t->mss;
	f->cli_wscale = t->cli_wscale;
	if (t->authed)
		flags |= BRC_FF_AUTHED;
	if (t->replica)
		brc_dirty(f, BRC_DIRTY_BIT_REPLICATION);        /* never answered: not served */
	else if (cfg->mode == BRC_MODE_SERVE) {
		brc_seqadj_init_adopted((struct brc_seqadj *)f->serve_reserved, t->cli_next, u->cli_ack,
					t->srv_next, u->srv_ack, u->srv_win);
		flags |= BRC_FF_SERVE;
	}
	brc_flag_set(f, flags);
	__sync_fetch_and_add(&g->flows_live, 1);
	f->state = BRC_FS_EST;
	brc_count(FLOWS_ADOPTED);
	return f;
}

/* A client segment of a connection BRC does not track, under an agent.
 * Returns the flow adopted at it, or NULL; *@drop: a frozen connection's new
 * bytes, which Redis must not get before the agent has read its state. */
static __always_inline struct brc_flow *brc_untracked_in(struct brc_scratch *sc, const struct brc_config *cfg,
							 const struct brc_pkt *pkt, int *drop)
{
	struct brc_untracked *u;
	struct brc_flow *f = 0;
	struct brc_global *g;
	struct brc_adopt *t;
	__s64 frozen;
	int fresh;

	if (pkt->tcp_flags & (BRC_TCP_SYN | BRC_TCP_RST))
		return 0;
	u = brc_untracked_get(sc);
	if (!u)
		return 0;
	t = pkt->payload_len ? brc_adopt.lookup(&sc->fk) : 0;
	if (t) {
		fresh = (u->flags & BRC_UT_F_CLI) && brc_seq_after(pkt->seq + pkt->payload_len, u->cli_next);
		frozen = (__s64)(t->freeze_until_ns - sc->now);
		if (t->proven && pkt->seq == t->cli_next) {
			if (u->cli_next == t->cli_next && (t->replica || u->srv_next == t->srv_next) &&
			    (u->flags & (BRC_UT_F_CLI | BRC_UT_F_SRV)) == (BRC_UT_F_CLI | BRC_UT_F_SRV))
				f = brc_adopt_flow(sc, cfg, u, t);
			else
				brc_count(ADOPT_MISSED);
			brc_adopt.delete(&sc->fk);      /* one segment decides */
			if (f) {
				brc_untracked.delete(&sc->fk);
				return f;
			}
		} else if (fresh && frozen > 0 && frozen <= (__s64)BRC_ADOPT_FREEZE_MAX_NS) {
			/* new bytes while frozen, or past the proven boundary before
			 * the segment starting at it (a tail loss probe resends the
			 * last segment first): Redis must not get them yet */
			brc_count(ADOPT_FROZEN);
			*drop = 1;
			return 0;
		} else if (t->proven && fresh) {
			brc_count(ADOPT_MISSED);
			brc_adopt.delete(&sc->fk);
		}
	}
	brc_untracked_side(u, pkt, &u->cli_next, &u->cli_ack, BRC_UT_F_CLI, sc->now);
	if (pkt->payload_len) {
		brc_count(SEGMENTS_UNTRACKED);
		/* the agent proves from this record that Redis ran these bytes
		 * before it loads the users again (module_utils/brc_adopt.py) */
		g = brc_get_global();
		if (g)
			brc_auth_unseen(g, 0);
	}
	return 0;
}

/* A server segment of a connection BRC does not track, under an agent. */
static __always_inline void brc_untracked_out(struct __sk_buff *skb, struct brc_scratch *sc,
					      const struct brc_pkt *pkt)
{
	struct brc_untracked *u;
	__be16 win = 0;

	if (pkt->tcp_flags & (BRC_TCP_SYN | BRC_TCP_RST))
		return;
	u = brc_untracked_get(sc);
	if (!u)
		return;
	if (bpf_skb_load_bytes(skb, pkt->l4_off + 14, &win, sizeof(win)) == 0)
		u->srv_win = bpf_ntohs(win);
	brc_untracked_side(u, pkt, &u->srv_next, &u->srv_ack, BRC_UT_F_SRV, sc->now);
}

#endif /* BRC_ADOPT_H */
