/* SPDX-License-Identifier: GPL-2.0 */
/* Test-only harness for bpf/seqadj.h: one flow, state in a map the test can
 * read and write; ingress/egress programs as the integration contract says.
 *
 *   client --SYN--> [h_sa_ingress] --> server      init_syn, SACK-perm -> NOPs unless keep_sackperm
 *   client <--SYN-ACK-- [h_sa_egress] <-- server   init_synack
 *   client --data--> [h_sa_ingress]                track, classify, consume or translate
 *                                                  (seq/ack, then SACK blocks)
 *   client <--data-- [h_sa_egress]                 track, translate (+ hold-back, SACK blocks)
 */
#include "harness_common.h"
#include "tcp_opts.h"
#include "seqadj.h"
#include "tcp_reply.h"

struct sa_ctl {
	__u32 consume;      /* 1: consume the next data segment if can_inject */
	__u32 reply_len;    /* length of the reply injected for it */
	__u32 keep_sackperm; /* 1: leave SACK-permitted on the SYN (the product's default) */
	__u32 pure_ack;     /* 1: a consumed/resent request comes out as its pure ACK (tcp_reply.h) */
};

#define H_PASS 0
#define H_INIT 1
#define H_CONSUMED 2
#define H_RESEND 3
#define H_REFUSED 4     /* consume asked but can_inject said no: passed */
#define H_ERROR 9

struct sa_out {
	__u32 verdict;      /* H_* */
	__u32 held;         /* egress: ack held back */
	__s32 sack_removed; /* SACK blocks removed by brc_seqadj_rewrite_sack(), -1 = error */
	__u32 reply_seq;    /* after H_CONSUMED/H_RESEND */
	__u32 reply_ack;
	__u32 pure_ack_seq;
	__u32 pure_ack_ack;
};

struct sa_scratch {
	__u8 hdr[BRC_TCP_HDR_BUF];
	struct brc_tcp_opts o;
	struct brc_reply_scratch rs;
};

BPF_ARRAY(sa_state, struct brc_seqadj, 1);
BPF_ARRAY(sa_ctl, struct sa_ctl, 1);
BPF_ARRAY(sa_out, struct sa_out, 1);
BPF_PERCPU_ARRAY(sa_scratch, struct sa_scratch, 1);

int h_sa_ingress(struct __sk_buff *skb)
{
	struct brc_seg s = {};
	__u16 sport, dport;
	int zero = 0;
	struct brc_seqadj *sa = sa_state.lookup(&zero);
	struct sa_ctl *ctl = sa_ctl.lookup(&zero);
	struct sa_out *out = sa_out.lookup(&zero);
	struct sa_scratch *sc = sa_scratch.lookup(&zero);
	int rem;

	if (!sa || !ctl || !out || !sc)
		return TC_ACT_SHOT;
	out->verdict = H_ERROR;
	if (h_parse(skb, &s, &sport, &dport) < 0)
		return TC_ACT_SHOT;
	if ((s.flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == BRC_TCP_SYN) {
		brc_seqadj_init_syn(sa, &s);
		if (brc_tcp_opts_load(skb, s.l4_off, s.thl, sc->hdr, &sc->o) == 0 && !ctl->keep_sackperm)
			brc_tcp_opts_strip_sackperm(skb, s.l4_off, &sc->o);
		out->verdict = H_INIT;
		return TC_ACT_OK;
	}
	out->sack_removed = 0;
	if (brc_tcp_opts_load(skb, s.l4_off, s.thl, sc->hdr, &sc->o) == -2)
		sc->o.sack_n = 0;
	brc_seqadj_track_ingress(sa, &s);
	if (brc_seqadj_classify(sa, &s) == BRC_SEQADJ_RESEND) {
		out->verdict = H_RESEND;
		goto reply;
	}
	if (ctl->consume && s.payload_len) {
		if (brc_seqadj_can_inject(sa, &s)) {
			brc_seqadj_record(sa, &s, ctl->reply_len);
			out->verdict = H_CONSUMED;
			goto reply;
		}
		out->verdict = H_REFUSED;
	} else {
		out->verdict = H_PASS;
	}
	rem = brc_seqadj_rewrite_ingress(skb, sa, &s);
	if (rem == 0)
		rem = brc_seqadj_rewrite_sack(skb, sa, &s, sc->hdr, &sc->o, 1);
	/* one store of each field (clang merges stores across paths otherwise,
	 * into an insn the verifier sees with two pointer types) */
	asm volatile("" : "+r"(rem));
	out->sack_removed = rem;
	if (rem < 0)
		out->verdict = H_ERROR;
	return TC_ACT_OK;
reply:
	out->reply_seq = brc_seqadj_reply_seq(sa);
	out->reply_ack = brc_seqadj_reply_ack(sa);
	out->pure_ack_seq = brc_seqadj_pure_ack_seq(sa);
	out->pure_ack_ack = brc_seqadj_c2s_ack(sa, s.ack);
	if (ctl->pure_ack) {
		/* CHECKSUM_NONE in BPF_PROG_TEST_RUN: a full checksum */
		if (brc_pure_ack_build(skb, &s, out->pure_ack_seq, out->pure_ack_ack, 0, sa, &sc->rs) < 0)
			out->verdict = H_ERROR;
		return TC_ACT_OK;
	}
	return TC_ACT_SHOT;
}

int h_sa_egress(struct __sk_buff *skb)
{
	struct brc_seg s = {};
	__u16 sport, dport;
	int zero = 0, has_ts, held;
	struct brc_seqadj *sa = sa_state.lookup(&zero);
	struct sa_out *out = sa_out.lookup(&zero);
	struct sa_scratch *sc = sa_scratch.lookup(&zero);

	if (!sa || !out || !sc)
		return TC_ACT_SHOT;
	out->verdict = H_ERROR;
	if (h_parse(skb, &s, &sport, &dport) < 0)
		return TC_ACT_SHOT;
	has_ts = brc_tcp_opts_load(skb, s.l4_off, s.thl, sc->hdr, &sc->o) == 0 &&
		 (sc->o.flags & BRC_OPT_F_TS);
	if ((s.flags & (BRC_TCP_SYN | BRC_TCP_ACK)) == (BRC_TCP_SYN | BRC_TCP_ACK)) {
		out->verdict = brc_seqadj_init_synack(sa, &s, has_ts, sc->o.tsval,
						       (sc->o.flags & BRC_OPT_F_WSCALE) ? sc->o.wscale : 0) == 0 ? H_INIT : H_ERROR;
		return TC_ACT_OK;
	}
	brc_seqadj_track_egress(sa, &s, has_ts, sc->o.tsval);
	held = brc_seqadj_rewrite_egress(skb, sa, &s);
	out->held = held > 0;
	out->verdict = held < 0 ? H_ERROR : H_PASS;
	held = brc_seqadj_rewrite_sack(skb, sa, &s, sc->hdr, &sc->o, 0);
	asm volatile("" : "+r"(held));
	out->sack_removed = held;
	if (held < 0)
		out->verdict = H_ERROR;
	return TC_ACT_OK;
}
