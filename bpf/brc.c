/* SPDX-License-Identifier: GPL-2.0 */
/* BRC: BPF Redis Cache, tc (clsact) programs for a Redis host's interface.
 *
 *   brc_ingress    client->server segments: handshake, sequence check, then
 *                  the serve stage (brc_serve_in, a tail call) for connections
 *                  tracked in serve mode, and the request parser
 *                  (brc_parse_req, a tail call)
 *   brc_egress     server->client segments: handshake, translation of served
 *                  connections, sequence check, then the reply parser
 *                  (brc_parse_rep, a tail call)
 *
 * Mode off: pass, except connections already answered (their sequence
 * translation lasts their lifetime). Mode observe: parse, track, shadow-cache
 * and measure; packets are never altered. Mode serve: as observe, and a GET
 * the cache may answer is answered here (brc_serve.h, bpf/SERVE.md).
 * Compiled by bcc through module_utils/brc_compile.py, which fills brc_cmds and
 * brc_jmp.
 *
 * The parsers are tail-call targets because a segment may hold more RESP than
 * one program may lex under the verifier's limits: each pass runs the lexer up
 * to BRC_REQ_EVENTS / BRC_REP_EVENTS times and continues itself (at most
 * BRC_PASSES passes per segment; beyond that the flow is given up, counted).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "brc_contract.h"
#include "brc_types.h"
#include "brc_maps.h"
#ifndef BRC_LAYOUT_PROBE  /* compile_programs(load=False): the maps are all a layout
			   * probe needs, and clang spends most of a build's compile
			   * time on the serve path's unrolled option walks */
#include "brc_pkt.h"
#include "brc_stats.h"
#include "seqadj.h"
#include "tcp_opts.h"
#include "tcp_reply.h"
#include "brc_flow.h"
#include "brc_adopt.h"
#include "brc_cache.h"
#include "brc_resp.h"
#include "brc_ooo.h"
#include "brc_serve.h"

#ifndef BRC_REQ_EVENTS
#define BRC_REQ_EVENTS 24       /* request lexer runs (chunks or events) per pass */
#endif
#ifndef BRC_REP_EVENTS
#define BRC_REP_EVENTS 12       /* reply lexer runs per pass (its handler is bigger) */
#endif
#define BRC_PASSES 32           /* parser passes per segment (kernel limit: 33 tail calls) */

static __always_inline struct brc_scratch *brc_get_scratch(void)
{
	__u32 zero = 0;

	return brc_scratch.lookup(&zero);
}

/* Load payload bytes [sc->off, sc->off + n) into sc->buf; n <= BRC_CHUNK.
 * @held (a constant): from the flow's held out-of-order bytes instead. */
static __always_inline __u32 brc_load_chunk(struct __sk_buff *skb, struct brc_scratch *sc, const int held)
{
	__u32 n = sc->end - sc->off;

	if (n > BRC_CHUNK)
		n = BRC_CHUNK;
	n = ((n - 1) & (BRC_CHUNK - 1)) + 1;
	if (held)
		return brc_ooo_load_chunk(sc, n);
	if (bpf_skb_load_bytes(skb, sc->off, sc->buf, n) < 0)
		return 0;
	return n;
}

/* The client segment of @f is done with (see in_busy in brc_flow.h). */
static __always_inline void brc_in_release(struct brc_flow *f)
{
	f->in_busy = 0;
}

/* The parse loops' config, scratch and flow, looked up again for every event:
 * pointers carried across iterations keep path-specific verifier state alive,
 * and the cost of verifying the loop grows combinatorially instead of
 * linearly. 0 when one of them is gone. */
static __always_inline int brc_parse_lookup(struct brc_config **cfg, struct brc_scratch **sc,
					    struct brc_flow **f)
{
	*cfg = brc_get_config();
	*sc = brc_get_scratch();
	if (!*cfg || !*sc)
		return 0;
	*f = brc_flows.lookup(&(*sc)->fk);
	return *f != 0;
}

/* The request parser over the segment's bytes (@held 0) or over the bytes the
 * flow held after a hole (@held 1, brc_ooo.h): one body, two programs, so that
 * each is verified with one source of bytes (both in one program would take it
 * past the verifier's 1M instructions). */
static __always_inline int brc_parse_req_from(struct __sk_buff *skb, const int held)
{
	struct brc_config *cfg;
	struct brc_scratch *sc;
	struct brc_flow *f;
	__u32 it, n, ev, skip;

	if (!brc_parse_lookup(&cfg, &sc, &f))
		return TC_ACT_OK;
	for (it = 0; it < BRC_REQ_EVENTS; it++) {
		if (!brc_parse_lookup(&cfg, &sc, &f))
			return TC_ACT_OK;
		if (sc->off >= sc->end || f->rq_state == BRC_RQ_LOST)
			goto done;
		if (f->rq_state == BRC_RQ_BULK_SKIP) {
			skip = sc->end - sc->off;
			if (skip > f->rq_left)
				skip = f->rq_left;
			sc->off += skip;
			f->rq_left -= skip;
			/* the argument's real length: a key or user name cut at
			 * BRC_KEY_MAX would name another (shorter) key or user */
			f->rq_arglen += skip;
			if (f->rq_left == 0)
				f->rq_state = BRC_RQ_BULK_CR;
			continue;
		}
		n = brc_load_chunk(skb, sc, held);
		if (n == 0) {
			brc_rq_lost(f, BRC_DIRTY_BIT_PARSER);
			goto out;
		}
		sc->n = n;
		sc->pos = 0;
		ev = brc_rq_lex(f, sc);
		sc->off += brc_reload(&sc->pos) & (BRC_CHUNK * 2 - 1);
		switch (ev) {
		case BRC_EV_LOST:
			brc_count(PARSE_ERROR_REQUEST);
			brc_rq_lost(f, BRC_DIRTY_BIT_PARSER);
			goto out;
		case BRC_EV_LOST_INLINE:
			brc_count(PARSE_ERROR_REQUEST);
			brc_rq_lost(f, BRC_DIRTY_BIT_INLINE);
			goto out;
		case BRC_EV_ARG:
			brc_rq_arg_done(sc, f);
			f->rq_argi += 1;
			brc_rq_arg_setup(f);
			if (f->rq_inline)
				brc_rq_arg_begin(f);
			break;
		case BRC_EV_ARG_END:
			brc_rq_arg_done(sc, f);
			if (f->rq_state != BRC_RQ_LOST)
				brc_rq_cmd_done(sc, f, cfg);
			break;
		case BRC_EV_END:
			brc_rq_cmd_done(sc, f, cfg);
			break;
		}
	}
done:
	if (f->rq_state != BRC_RQ_LOST && (sc->off < sc->end || brc_ooo_next(sc, f))) {
		sc->calls += 1;
		if (sc->calls >= BRC_PASSES) {
			brc_rq_lost(f, BRC_DIRTY_BIT_BUDGET);
			goto out;
		}
		brc_jmp.call(skb, sc->src ? BRC_JMP_PARSE_REQ_HELD : BRC_JMP_PARSE_REQ);
		brc_count(TAILCALL_FAILED);
		brc_rq_lost(f, BRC_DIRTY_BIT_TAILCALL);
	}
out:
	if (f->rq_state == BRC_RQ_LOST)
		brc_ooo_next(sc, f);    /* given up: drop what it held */
	sc->src = 0;
	brc_in_release(f);
	return TC_ACT_OK;
}

int brc_parse_req(struct __sk_buff *skb)
{
	return brc_parse_req_from(skb, 0);
}

int brc_parse_req_held(struct __sk_buff *skb)
{
	return brc_parse_req_from(skb, 1);
}

int brc_parse_rep(struct __sk_buff *skb)
{
	struct brc_config *cfg;
	struct brc_scratch *sc;
	struct brc_replybuf *rb;
	struct brc_flow *f;
	__u32 it, n, ev, skip, len, rb_real = 1;

	if (!brc_parse_lookup(&cfg, &sc, &f))
		return TC_ACT_OK;
	for (it = 0; it < BRC_REP_EVENTS; it++) {
		if (!brc_parse_lookup(&cfg, &sc, &f))
			return TC_ACT_OK;
		/* the tracked reply's buffer; scratch stands in as a sink when
		 * there is none, so the lexer needs no NULL check per byte */
		rb = brc_replybuf.lookup(&sc->fk);
		rb_real = 1;
		if (!rb) {
			rb = &sc->rb;
			rb_real = 0;
		}
		if (sc->off >= sc->end || f->rp_state == BRC_RP_LOST)
			goto done;
		if (f->rp_state == BRC_RP_BULK) {
			skip = sc->end - sc->off;
			if (skip > f->rp_left)
				skip = f->rp_left;
			if (f->rp_tracked) {
				len = f->rp_len;
				if (len < BRC_VAL_MAX && skip <= BRC_VAL_MAX - len && skip > 0) {
					__u32 m = ((skip - 1) & (BRC_VAL_MAX - 1)) + 1;

					bpf_skb_load_bytes(skb, sc->off, rb->data + (len & (BRC_VAL_MAX - 1)), m);
				}
				f->rp_len = len + skip;
			}
			sc->off += skip;
			f->rp_left -= skip;
			if (f->rp_left == 0)
				f->rp_state = BRC_RP_BULK_CR;
			continue;
		}
		n = brc_load_chunk(skb, sc, 0);
		if (n == 0) {
			brc_rp_lost(f, BRC_DIRTY_BIT_PARSER);
			goto done;
		}
		sc->n = n;
		sc->pos = 0;
		ev = brc_rp_lex(f, rb, sc);
		sc->off += brc_reload(&sc->pos) & (BRC_CHUNK * 2 - 1);
		if (ev == BRC_EV_TYPE3)
			ev = brc_rp_type3(f);
		else if (ev == BRC_EV_AGG)
			ev = brc_rp_agg(f);
		if (ev == BRC_EV_POP)
			ev = brc_rp_pop(f);
		switch (ev) {
		case BRC_EV_LOST:
			brc_count(PARSE_ERROR_REPLY);
			brc_rp_lost(f, BRC_DIRTY_BIT_PARSER);
			goto done;
		case BRC_EV_REPLY:
			brc_rp_reply_done(sc, f, cfg, rb_real ? rb : 0);
			break;
		case BRC_EV_NOT_REPLY:
			brc_rp_not_reply(f);
			break;
		}
	}
	if (sc->off < sc->end) {
		sc->calls += 1;
		if (sc->calls < BRC_PASSES) {
			brc_jmp.call(skb, BRC_JMP_PARSE_REP);
			brc_count(TAILCALL_FAILED);
			brc_rp_lost(f, BRC_DIRTY_BIT_TAILCALL);
		} else {
			brc_rp_lost(f, BRC_DIRTY_BIT_BUDGET);
		}
	}
done:
	/* the segment carried the server's FIN: release after its last reply */
	sc = brc_get_scratch();
	if (!sc)
		return TC_ACT_OK;
	f = brc_flows.lookup(&sc->fk);
	if (f && (f->flags & BRC_FF_SRV_FIN))
		brc_flow_close(sc, f, 1);
	return TC_ACT_OK;
}

/* A segment to Redis's tls-port (brc_server, read from Redis): encrypted, so
 * BRC can neither follow nor answer it; counting says why those clients are
 * never answered. */
static __always_inline void brc_count_tls(const struct brc_pkt *pkt)
{
	struct brc_server *sv = brc_get_server();

	if (!sv || !sv->tls_port || pkt->dport != sv->tls_port)
		return;
	if ((pkt->tcp_flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == BRC_TCP_SYN)
		brc_count(TLS_CONNECTIONS);
	else if (pkt->payload_len)
		brc_count(TLS_SEGMENTS);
}

/* Count what the packet parser did not parse; at ingress, invalidate what it
 * may write. */
static __always_inline void brc_unparsed(struct __sk_buff *skb, int kind, const struct brc_pkt *pkt,
					 const struct brc_config *cfg, struct brc_scratch *sc, int ingress)
{
	struct brc_global *g;

	if (kind == BRC_PKT_MALFORMED)
		brc_count(PKT_MALFORMED);
	if (!ingress || cfg->mode == BRC_MODE_OFF)
		return;
	if (kind == BRC_PKT_IPV6)
		brc_count(PKT_IPV6);
	else if (kind == BRC_PKT_IP_OPTIONS)
		brc_count(PKT_IP_OPTIONS);
	else if (kind == BRC_PKT_FRAGMENT)
		brc_count(PKT_FRAGMENT);
	if (!brc_pkt_may_carry_command(skb, kind, pkt, cfg->port))
		return;
	g = brc_get_global();
	if (!g)
		return;
	if (brc_agent_on()) {
		/* Redis reports what it writes; a change of who may read what
		 * only a load made after it has run shows */
		brc_auth_unseen(g, bpf_ktime_get_ns() + BRC_UNTRACKED_LEASE_NS);
		return;
	}
	brc_hold_until(g, bpf_ktime_get_ns() + BRC_UNTRACKED_LEASE_NS);
	__sync_fetch_and_add(&g->ver, 1);
	brc_count(INVALIDATE_UNPARSED);
}

/* The observe-mode work on one client segment of a tracked flow (after any
 * serve-mode translation): trackers, then the request parser. The caller
 * holds f->in_busy; it is released here unless the parser takes over. */
static __always_inline int brc_ingress_observe(struct __sk_buff *skb, struct brc_scratch *sc,
					       struct brc_flow *f, const struct brc_pkt *pkt,
					       __u32 calls_spent)
{
	__u32 start;
	__s32 d;

	f->last_ns = sc->now;
	if (pkt->tcp_flags & BRC_TCP_RST) {
		if (!brc_rst_acceptable(f, pkt->seq)) {
			brc_count(RST_IGNORED);
			goto out;
		}
		brc_flow_close(sc, f, 0);
		return TC_ACT_OK;
	}
	if ((pkt->tcp_flags & BRC_TCP_ACK) && f->state == BRC_FS_EST &&
	    brc_seq_after(pkt->ack_seq, f->cli_ack))
		f->cli_ack = pkt->ack_seq;
	if (pkt->tcp_flags & BRC_TCP_FIN)
		brc_flag_set(f, BRC_FF_CLI_FIN);
	if (pkt->payload_len == 0)
		goto out;
	f->last_pass_ns = sc->now;
	if (f->state != BRC_FS_EST) {
		if (f->rq_state != BRC_RQ_LOST)
			brc_flow_unparsed_data(sc, f, BRC_DIRTY_BIT_GAP);  /* data before the SYN-ACK */
		goto out;
	}
	d = (__s32)(pkt->seq - f->cli_next);
	if (d > 0) {
		/* bytes before this segment were not seen yet: hold it for when
		 * they are (brc_ooo.h), or give up when it cannot be held */
		if (f->rq_state != BRC_RQ_LOST && brc_ooo_hold(skb, sc, f, pkt) < 0) {
			brc_rq_lost(f, BRC_DIRTY_BIT_GAP);
			brc_ooo_next(sc, f);    /* given up: drop what it held */
		}
		goto out;
	}
	if ((__s32)(d + (__s32)pkt->payload_len) <= 0) {
		brc_count(SEGMENTS_RETRANSMITTED);
		goto out;
	}
	start = pkt->payload_off + (__u32)(-d);
	f->cli_next = pkt->seq + pkt->payload_len;
	if (f->rq_state == BRC_RQ_LOST)
		goto out;
	sc->off = start;
	sc->end = pkt->payload_off + pkt->payload_len;
	sc->calls = calls_spent;  /* the tail calls of a refused batch come off the parser's */
	sc->src = 0;
	brc_jmp.call(skb, BRC_JMP_PARSE_REQ);
	brc_count(TAILCALL_FAILED);
	brc_rq_lost(f, BRC_DIRTY_BIT_TAILCALL);
out:
	brc_in_release(f);
	return TC_ACT_OK;
}

int brc_ingress(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_scratch *sc = brc_get_scratch();
	struct brc_serve_scratch *ss;
	struct brc_pkt pkt = {};
	struct brc_flow *f;
	__u64 busy;
	int kind, drop = 0;

	if (!cfg || !sc)
		return TC_ACT_OK;
	if (skb->mark == BRC_SERVE_MARK)
		return TC_ACT_OK;       /* our own pure ACK / RST clone */
	kind = brc_parse_tcp(skb, &pkt);
	if (kind != BRC_PKT_TCP) {
		brc_unparsed(skb, kind, &pkt, cfg, sc, 1);
		return TC_ACT_OK;
	}
	if (pkt.dport != cfg->port) {
		brc_count_tls(&pkt);
		return TC_ACT_OK;
	}
	brc_addr_copy(sc->fk.cli_addr, pkt.saddr);
	brc_addr_copy(sc->fk.srv_addr, pkt.daddr);
	sc->fk.cli_port = pkt.sport;
	sc->fk.srv_port = pkt.dport;
	if (cfg->mode == BRC_MODE_OFF) {
		/* off: pass, except that served flows stay translated for life */
		f = brc_flow_find(sc);
		if (!f || !(f->flags & BRC_FF_SERVED))
			return TC_ACT_OK;
	}
	brc_count(PKT_INGRESS);
	sc->now = bpf_ktime_get_ns();
	if ((pkt.tcp_flags & (BRC_TCP_SYN | BRC_TCP_ACK | BRC_TCP_RST)) == BRC_TCP_SYN) {
		if (cfg->mode == BRC_MODE_OFF) {
			/* a new connection on the tuple of a closed served one (the
			 * client reused its port): the old entry would translate the
			 * new handshake by the old offsets and Redis would reset it.
			 * A live flow's SYN is RFC 5961's case: kept, as Linux keeps it. */
			if (!brc_flows.lookup(&sc->fk))
				brc_transient.delete(&sc->fk);
			return TC_ACT_OK;
		}
		brc_untracked_forget(sc);
		f = brc_flow_syn(sc, pkt.seq);
		if (f && pkt.payload_len) {
			/* TCP Fast Open: data BRC does not parse reaches Redis */
			brc_flow_unparsed_data(sc, f, BRC_DIRTY_BIT_TFO);
			return TC_ACT_OK;
		}
		if (!f || cfg->mode != BRC_MODE_SERVE)
			return TC_ACT_OK;
	} else {
		f = brc_flow_find(sc);
		if (!f) {
			if (!brc_agent_on()) {
				if (pkt.payload_len)
					brc_flow_missing(sc);
				return TC_ACT_OK;
			}
			/* under an agent it may be adopted at a proven boundary */
			f = brc_untracked_in(sc, cfg, &pkt, &drop);
			if (!f)
				return drop ? TC_ACT_SHOT : TC_ACT_OK;
		}
	}
	if (!(f->flags & BRC_FF_CLOSED) &&
	    (busy = __sync_val_compare_and_swap(&f->in_busy, 0, sc->now | 1)) != 0) {
		/* Another CPU is in the middle of this connection's client bytes
		 * (a retransmission timer's send beside the application's). In
		 * serve mode drop the segment: the client sends it again, and the
		 * connection is kept; giving it up would hold a global mark, so no
		 * key could be filled for its whole life. Observe mode never alters
		 * traffic: it gives the connection up. Signed: the holder may have
		 * read a later clock than sc->now. */
		if ((__s64)(sc->now - busy) >= (__s64)BRC_BUSY_STALE_NS &&
		    __sync_val_compare_and_swap(&f->in_busy, busy, sc->now | 1) == busy) {
			/* No CPU runs one segment that long: the lock was never
			 * released. Taken over, so that a served flow's segments
			 * are still translated (dropping them all would stall the
			 * connection), and the connection is given up: what the
			 * lost release skipped is unknown. */
			brc_rq_lost(f, BRC_DIRTY_BIT_STALE_BUSY);
		} else if (f->flags & BRC_FF_SERVE) {
			brc_count(SERVE_BUSY_DROPPED);
			return TC_ACT_SHOT;
		} else {
			brc_rq_lost(f, BRC_DIRTY_BIT_CONCURRENT);
			return TC_ACT_OK;
		}
	}
	if ((f->flags & BRC_FF_SERVE) || (pkt.tcp_flags & BRC_TCP_SYN)) {
		/* serve-mode flows (and SYNs in serve mode): brc_serve_in */
		ss = brc_get_serve_scratch();
		if (!ss) {
			brc_in_release(f);
			return (f->flags & BRC_FF_SERVED) ? TC_ACT_SHOT : TC_ACT_OK;
		}
		ss->pkt = pkt;
		brc_jmp.call(skb, BRC_JMP_SERVE);
		brc_count(TAILCALL_FAILED);
		/* the segment was neither parsed nor translated: give the
		 * connection up, and never pass a served flow's segment untranslated */
		brc_rq_lost(f, BRC_DIRTY_BIT_TAILCALL);
		brc_in_release(f);
		return (f->flags & BRC_FF_SERVED) ? TC_ACT_SHOT : TC_ACT_OK;
	}
	return brc_ingress_observe(skb, sc, f, &pkt, 0);
}

/* The SACK blocks of a served flow's passed segment, after its seq/ack were
 * translated: found by the option walk already made into ss (brc_serve_in()'s,
 * brc_serve_out()'s for the TSval) and mapped to the receiver's space
 * (seqadj.h). Nothing to do before the flow has offsets.
 * Returns 0, or -1 on a helper error (drop: the segment is half rewritten). */
static __always_inline int brc_serve_sack(struct __sk_buff *skb, struct brc_serve_scratch *ss,
					  const struct brc_seqadj *sa, const struct brc_seg *seg,
					  int c2s)
{
	int removed;

	/* a malformed tail still leaves the SACK option the walk found before
	 * it, which is the one Linux uses too */
	if (!(sa->flags & BRC_SA_F_INJECTED) || !ss->o.sack_n)
		return 0;
	removed = brc_seqadj_rewrite_sack(skb, sa, seg, ss->hdr, &ss->o, c2s);
	if (removed < 0)
		return -1;
	brc_count(SACK_TRANSLATED);
	if (removed)
		brc_count_n(BRC_C_SACK_BLOCKS_REMOVED, removed);
	return 0;
}

/* Serve mode, every client segment of a flow tracked in serve mode (and the
 * client's SYN): the table of bpf/SERVE.md, then the observe-mode work. The
 * caller holds f->in_busy. */
int brc_serve_in(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_scratch *sc = brc_get_scratch();
	struct brc_serve_scratch *ss = brc_get_serve_scratch();
	struct brc_served *r;
	struct brc_seg seg = {};
	struct brc_seqadj *sa;
	struct brc_flow *f;
	const __u8 *data;
	__u32 len, refused, src;
	int rc = 0, syn, walk, rst_ignored = 0;

	if (!cfg || !sc || !ss)
		return TC_ACT_OK;
	/* back from brc_serve_batch, which did not answer: as any other segment */
	refused = ss->batch_refused;
	ss->batch_refused = 0;
	f = brc_flow_find(sc);
	if (!f)
		return TC_ACT_OK;
	sa = (struct brc_seqadj *)f->serve_reserved;
	if (brc_serve_seg(skb, &ss->pkt, &seg) < 0) {
		brc_in_release(f);
		return (f->flags & BRC_FF_SERVED) ? TC_ACT_SHOT : TC_ACT_OK;
	}
	syn = (seg.flags & (BRC_TCP_SYN | BRC_TCP_ACK | BRC_TCP_RST)) == BRC_TCP_SYN;
	if (syn) {
		brc_seqadj_init_syn(sa, &seg);  /* brc_flow_syn() just (re)started this flow */
		goto options;
	}
	if (!(f->flags & BRC_FF_SERVE)) {
		brc_in_release(f);
		return TC_ACT_OK;
	}
	f->last_ns = sc->now;
	if ((seg.flags & BRC_TCP_RST) && !brc_rst_acceptable(f, seg.seq)) {
		/* the server's kernel will only answer a challenge ACK: translate
		 * it, change nothing */
		brc_count(RST_IGNORED);
		brc_in_release(f);
		rst_ignored = 1;
		goto translate;
	}
	brc_seqadj_track_ingress(sa, &seg);
	if (brc_seqadj_classify(sa, &seg) == BRC_SEQADJ_RESEND) {
		if (brc_seqadj_inj_acked(sa)) {
			/* the client has the reply: a stale duplicate */
			brc_count(SERVE_DUP_DROPPED);
			brc_in_release(f);
			return TC_ACT_SHOT;
		}
		r = brc_served.lookup(&sc->fk);
		len = sa->inj_after - sa->inj_before;
		if (!r || r->len != len || len == 0 || len > BRC_VAL_MAX) {
			brc_in_release(f);
			return brc_serve_reset(skb, sc, ss, &seg, f, sa);
		}
		brc_count(RESENT);
		data = r->data;
		src = BRC_EMIT_SERVED;
		goto emit;
	}
	len = brc_serve_lookup(skb, cfg, sc, ss, &seg, f, sa);
	if (len) {
		if (brc_served.update(&sc->fk, (struct brc_served *)&ss->entry.len) != 0) {
			brc_count(SERVE_ERR_BUILD);
		} else {
			brc_seqadj_record(sa, &seg, len);
			f->cli_next = seg.seq + seg.payload_len;
			brc_flag_set(f, BRC_FF_SERVED);
			brc_count(HIT);
			if (brc_agent_on() && bpf_get_prandom_u32() % BRC_TOUCH_SAMPLE == 0) {
				/* Redis no longer sees this read: the agent TOUCHes it */
				brc_touched.update(&ss->ckey, &sc->now);
				brc_count(TOUCH_SAMPLED);
			}
			/* what the client waits for at this host: ingress to the
			 * reply's redirect (a resend is not a new request) */
			brc_latency_add(BRC_LAT_ID_GET, bpf_ktime_get_ns() - sc->now);
			data = ss->entry.reply;
			src = BRC_EMIT_ENTRY;
			goto emit;
		}
	}
	if (ss->batch_candidate && !refused) {
		brc_serve_batch_begin(ss);
		brc_jmp.call(skb, BRC_JMP_SERVE_BATCH);
	}
translate:
	if (brc_seqadj_rewrite_ingress(skb, sa, &seg) < 0)
		goto drop;
options:
	/* One option walk, for the SYN's options and for the SACK blocks of a
	 * flow with offsets (a SACK option needs 10 bytes; Linux's NOP,NOP,TS
	 * alone makes 32). Inlined once and here, near the end: every state the
	 * walk leaves is carried through what follows it, which the verifier
	 * could not afford before the serve path (1M instructions), and a
	 * second copy would take brc_serve_in past the 32k-instruction jump
	 * range. */
	ss->o.sack_n = 0;
	walk = syn || ((sa->flags & BRC_SA_F_INJECTED) && seg.thl >= BRC_TCP_HDR_MIN + 10);
	asm volatile("" : "+r"(walk));  /* or clang threads `syn` through and copies the walk */
	if (walk)
		rc = brc_tcp_opts_load(skb, seg.l4_off, seg.thl, ss->hdr, &ss->o);
	if (syn) {
		if (rc < 0 || (ss->o.flags & (BRC_OPT_F_OTHER | BRC_OPT_F_MALFORMED)) ||
		    seg.l3_off != ETH_HLEN)
			goto syn_done;          /* unknown options or headers: never served */
#ifdef BRC_SERVE_STRIP_SACK
		/* the behaviour before SACK blocks were translated */
		rc = brc_tcp_opts_strip_sackperm(skb, seg.l4_off, &ss->o);
		if (rc < 0)
			goto syn_done;          /* SACK may be negotiated: never served */
		if (rc > 0)
			brc_count(SACK_PERM_STRIPPED);
#endif
		/* SACK is negotiated as the ends ask: brc_serve_sack() translates
		 * the blocks both ways once the flow has offsets */
		f->mss = (ss->o.flags & BRC_OPT_F_MSS) ? ss->o.mss : BRC_TCP_DEFAULT_MSS;
		f->cli_wscale = (ss->o.flags & BRC_OPT_F_WSCALE) ? ss->o.wscale : 0;
		brc_flag_set(f, BRC_FF_SERVE);
syn_done:
		brc_in_release(f);
		return TC_ACT_OK;
	}
	if (brc_serve_sack(skb, ss, sa, &seg, 1) < 0)
		goto drop;
	if (rst_ignored || (f->flags & BRC_FF_CLOSED))
		return TC_ACT_OK;
	return brc_ingress_observe(skb, sc, f, &ss->pkt, refused);
drop:
	/* half rewritten: the client retransmits */
	if (!rst_ignored)
		brc_in_release(f);
	return TC_ACT_SHOT;
emit:
	brc_in_release(f);
	return brc_serve_emit(skb, ss, &seg, sa, data, len, src);
}

/* Serve mode, a segment brc_serve_in() found may hold several GETs: one GET
 * per run (brc_serve_batch_step()), then answered as one, or handed back to
 * brc_serve_in() to go to Redis as any other segment. The caller holds
 * f->in_busy. */
int brc_serve_batch(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_scratch *sc = brc_get_scratch();
	struct brc_serve_scratch *ss = brc_get_serve_scratch();
	struct brc_seg seg = {};
	struct brc_seqadj *sa;
	struct brc_flow *f;
	__u32 len, i;
	__u64 lat;

	if (!cfg || !sc || !ss)
		return TC_ACT_SHOT;     /* never: brc_serve_in had them */
	f = brc_flow_find(sc);
	if (!f)
		return TC_ACT_SHOT;
	sa = (struct brc_seqadj *)f->serve_reserved;
	if (ss->batch_off < ss->pkt.payload_len) {
		if (!brc_serve_batch_step(skb, cfg, sc, ss, f))
			goto refuse;
		brc_jmp.call(skb, BRC_JMP_SERVE_BATCH);
		goto refuse;
	}
	if (brc_serve_seg(skb, &ss->pkt, &seg) < 0)
		goto refuse;
	len = brc_serve_batch_ready(cfg, sc, ss, &seg, f, sa);
	if (!len || brc_served.update(&sc->fk, &ss->batch) != 0)
		goto refuse;
	brc_seqadj_record(sa, &seg, len);
	f->cli_next = seg.seq + seg.payload_len;
	brc_flag_set(f, BRC_FF_SERVED);
	brc_count(SERVE_BATCHES);
	if (ss->batch_mgets)
		brc_count_n(BRC_C_SERVE_MGETS, ss->batch_mgets);
	lat = bpf_ktime_get_ns() - sc->now;
	for (i = 0; i < BRC_BATCH_GETS; i++) {
		if (i < ss->batch_gets) {
			brc_count(HIT);
			brc_latency_add(BRC_LAT_ID_GET, lat);
		} else if (i < ss->batch_gets + ss->batch_mgets) {
			brc_latency_add(BRC_LAT_ID_MGET, lat);
		} else {
			break;
		}
	}
	brc_in_release(f);
	return brc_serve_emit(skb, ss, &seg, sa, ss->batch.data, len, BRC_EMIT_BATCH);
refuse:
	/* the tail calls this walk took (one per step, and back) come off the
	 * parser's (brc_serve_in) */
	ss->batch_refused = 2 + ss->batch_keys + ss->batch_mgets;
	brc_jmp.call(skb, BRC_JMP_SERVE);
	/* not handed back: its bytes go unparsed, so the connection is given up
	 * (its next segments never come here again); a served flow's need
	 * translating: dropped, the client sends it again */
	brc_count(TAILCALL_FAILED);
	brc_rq_lost(f, BRC_DIRTY_BIT_TAILCALL);
	brc_in_release(f);
	return (f->flags & BRC_FF_SERVED) ? TC_ACT_SHOT : TC_ACT_OK;
}

/* Serve mode, an IPv6 connection's answer, resend or reset, handed over by
 * brc_serve_in or brc_serve_batch (ss->emit_src, ss->emit_len): the IPv6
 * builders in a program of their own, as brc_serve_in has no room for them. */
int brc_serve_emit6(struct __sk_buff *skb)
{
	struct brc_scratch *sc = brc_get_scratch();
	struct brc_serve_scratch *ss = brc_get_serve_scratch();
	struct brc_seg seg = {};
	struct brc_served *r;
	struct brc_seqadj *sa;
	struct brc_flow *f;
	const __u8 *data;
	__u32 len;

	if (!sc || !ss)
		return TC_ACT_SHOT;     /* never: the caller had them */
	f = brc_flow_find(sc);
	if (!f || brc_serve_seg(skb, &ss->pkt, &seg) < 0)
		return TC_ACT_SHOT;
	sa = (struct brc_seqadj *)f->serve_reserved;
	len = ss->emit_len;
	if (ss->emit_src == BRC_EMIT_RESET)
		return brc_serve_rsts_ip(skb, ss, &seg, sa, 1);
	/* one emit, whatever the source: each inlined copy is thousands of
	 * instructions, and jumps span 32k */
	data = ss->entry.reply;
	if (ss->emit_src == BRC_EMIT_BATCH) {
		data = ss->batch.data;
	} else if (ss->emit_src == BRC_EMIT_SERVED) {
		r = brc_served.lookup(&sc->fk);
		if (!r || r->len != len)
			return TC_ACT_SHOT;     /* changed meanwhile: the client sends it again */
		data = r->data;
	}
	return brc_serve_emit_ip(skb, ss, &seg, sa, data, len, 1);
}

/* Serve mode, every server segment of a flow tracked in serve mode: the
 * SYN-ACK starts the server half, everything else is tracked and translated
 * (acks held back while an injected reply is unacknowledged). Returns 1 when
 * the ack was held, 0, or -1 on a helper error (drop: the server retransmits). */
static __always_inline int brc_serve_out(struct __sk_buff *skb, const struct brc_pkt *pkt,
					 struct brc_flow *f)
{
	struct brc_serve_scratch *ss = brc_get_serve_scratch();
	struct brc_seqadj *sa = (struct brc_seqadj *)f->serve_reserved;
	struct brc_seg seg = {};
	int has_ts, held;

	if (!ss)
		return -1;
	if (brc_serve_seg(skb, pkt, &seg) < 0)
		return -1;
	has_ts = brc_tcp_opts_load(skb, seg.l4_off, seg.thl, ss->hdr, &ss->o) == 0 &&
		 (ss->o.flags & BRC_OPT_F_TS);
	if ((seg.flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == (BRC_TCP_SYN | BRC_TCP_ACK)) {
		brc_seqadj_init_synack(sa, &seg, has_ts, ss->o.tsval,
				       (ss->o.flags & BRC_OPT_F_WSCALE) ? ss->o.wscale : 0);
		/* Redis's host announces what its own device takes */
		if (ss->o.flags & BRC_OPT_F_MSS && ss->o.mss < f->mss)
			f->mss = ss->o.mss;
		if (!(ss->o.flags & BRC_OPT_F_WSCALE))
			f->cli_wscale = 0;      /* windows are not scaled either way (RFC 7323) */
		return 0;
	}
	brc_seqadj_track_egress(sa, &seg, has_ts, ss->o.tsval);
	held = brc_seqadj_rewrite_egress(skb, sa, &seg);
	if (held < 0 || brc_serve_sack(skb, ss, sa, &seg, 0) < 0)
		return -1;
	if (held > 0)
		brc_count(ACK_HELD);
	return held;
}

int brc_egress(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_scratch *sc = brc_get_scratch();
	struct brc_pkt pkt = {};
	struct brc_flow *f;
	__u32 start;
	__s32 d;
	int kind, held;

	if (!cfg || !sc)
		return TC_ACT_OK;
	if (skb->mark == BRC_SERVE_MARK)
		return TC_ACT_OK;       /* our own reply / RST */
	kind = brc_parse_tcp(skb, &pkt);
	if (kind != BRC_PKT_TCP) {
		brc_unparsed(skb, kind, &pkt, cfg, sc, 0);
		return TC_ACT_OK;
	}
	if (pkt.sport != cfg->port)
		return TC_ACT_OK;
	brc_addr_copy(sc->fk.cli_addr, pkt.daddr);
	brc_addr_copy(sc->fk.srv_addr, pkt.saddr);
	sc->fk.cli_port = pkt.dport;
	sc->fk.srv_port = pkt.sport;
	f = brc_flow_find(sc);
	if (cfg->mode == BRC_MODE_OFF && (!f || !(f->flags & BRC_FF_SERVED)))
		return TC_ACT_OK;       /* off: pass, except served flows (translated for life) */
	brc_count(PKT_EGRESS);
	sc->now = bpf_ktime_get_ns();
	if (!f) {
		if (pkt.payload_len)
			brc_flow_missing(sc);
		if (brc_agent_on())
			brc_untracked_out(skb, sc, &pkt);
		return TC_ACT_OK;
	}
	f->last_ns = sc->now;
	if (f->flags & BRC_FF_SERVE) {
		held = brc_serve_out(skb, &pkt, f);
		if (held < 0)
			return TC_ACT_SHOT;
		if (f->flags & BRC_FF_CLOSED)
			return TC_ACT_OK;
	}
	if (pkt.tcp_flags & BRC_TCP_RST) {
		brc_flow_close(sc, f, 1);       /* Redis's side is gone */
		return TC_ACT_OK;
	}
	if ((pkt.tcp_flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == (BRC_TCP_SYN | BRC_TCP_ACK)) {
		/* it acks the SYN, or past the SYN's data when the server took it (TFO) */
		if (f->state == BRC_FS_SYN && (pkt.ack_seq == f->cli_next ||
		    ((f->dirty & BRC_DIRTY(TFO)) && brc_seq_after(pkt.ack_seq, f->cli_next)))) {
			f->state = BRC_FS_EST;
			f->srv_next = pkt.seq + 1;
			f->srv_ack = pkt.ack_seq;
			f->cli_ack = pkt.seq + 1;
			brc_flow_established(sc, f);
		}
		return TC_ACT_OK;
	}
	if (f->state != BRC_FS_EST) {
		if (pkt.tcp_flags & BRC_TCP_FIN)
			brc_flow_close(sc, f, 1);
		return TC_ACT_OK;
	}
	if ((pkt.tcp_flags & BRC_TCP_ACK) && brc_seq_after(pkt.ack_seq, f->srv_ack))
		f->srv_ack = pkt.ack_seq;
	if (pkt.payload_len) {
		d = (__s32)(pkt.seq - f->srv_next);
		if (d > 0) {
			if (f->rp_state != BRC_RP_LOST)
				brc_rp_lost(f, BRC_DIRTY_BIT_GAP);
		} else if ((__s32)(d + (__s32)pkt.payload_len) <= 0) {
			brc_count(SEGMENTS_RETRANSMITTED);
		} else {
			start = pkt.payload_off + (__u32)(-d);
			f->srv_next = pkt.seq + pkt.payload_len;
			/* an adopted connection's replies are on: answers may start */
			if ((f->flags & BRC_FF_UNPROVEN) &&
			    (__sync_fetch_and_and(&f->flags, ~(__u64)BRC_FF_UNPROVEN) & BRC_FF_UNPROVEN))
				brc_count(ADOPT_PROVEN);
			/* a given-up connection's replies decide nothing any more */
			if (f->rp_state != BRC_RP_LOST && !(f->dirty & BRC_DIRTY_GIVEUP)) {
				sc->off = start;
				sc->end = pkt.payload_off + pkt.payload_len;
				sc->calls = 0;
				/* the server's FIN in this segment is handled after the parse */
				if (pkt.tcp_flags & BRC_TCP_FIN)
					brc_flag_set(f, BRC_FF_SRV_FIN);
				brc_jmp.call(skb, BRC_JMP_PARSE_REP);
				brc_count(TAILCALL_FAILED);
				brc_rp_lost(f, BRC_DIRTY_BIT_TAILCALL);
			}
		}
	}
	if (pkt.tcp_flags & BRC_TCP_FIN) {
		/* Redis closed: it executes nothing more on this connection (a FIN
		 * on a segment with parsed payload is released by brc_parse_rep) */
		brc_flow_close(sc, f, 1);
	}
	return TC_ACT_OK;
}
/* The host agent's entry (never attached): bump the versions of the key buckets
 * Redis reported changed, as a write seen on the wire does. Run with
 * BPF_PROG_TEST_RUN on a 14-byte Ethernet header and a struct brc_feed_batch;
 * returns the number of buckets bumped. Reads the batch one word at a time: a
 * per-CPU scratch could be in use by a tc program the run interrupted. */
int brc_feed(struct __sk_buff *skb)
{
	struct brc_global *g = brc_get_global();
	struct brc_bucket *b;
	__u32 i, n = 0, flags = 0, idx, done = 0;

	if (!g)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &n, sizeof(n)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + 4, &flags, sizeof(flags)) < 0)
		return 0;
	if (flags & BRC_FEED_F_FLUSH) {
		brc_bump_global(g);
		brc_count(FEED_FLUSHES);
	}
	for (i = 0; i < BRC_FEED_BATCH; i++) {
		if (i >= n)
			break;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 8 + i * 4, &idx, sizeof(idx)) < 0)
			break;
		idx &= BRC_KEYVER_BUCKETS - 1;
		b = brc_keyver.lookup(&idx);
		if (!b)
			continue;
		__sync_fetch_and_add(&b->ver, 1);
		done++;
	}
	brc_count_n(BRC_C_FEED_KEYS, done);
	return done;
}
#endif /* BRC_LAYOUT_PROBE */
