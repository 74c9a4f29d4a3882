/* SPDX-License-Identifier: GPL-2.0 */
/* Test-only harness for bpf/tcp_opts.h: parse, strip SACK-permitted, set TS. */
#include "harness_common.h"
#include "tcp_opts.h"

struct opts_ctl {
	__u32 tsval;
	__u32 tsecr;
};

/* the walk's output lives in a map value, as tcp_opts.h asks */
struct opts_out {
	__s32 ret;
	__u32 pad;
	struct brc_tcp_opts o;
	__u8 hdr[BRC_TCP_HDR_BUF];
};

BPF_ARRAY(opts_ctl, struct opts_ctl, 1);
BPF_ARRAY(opts_out, struct opts_out, 1);

static __always_inline int h_opts(struct __sk_buff *skb, int action)
{
	struct brc_seg s = {};
	__u16 sport, dport;
	int zero = 0, ret;
	struct opts_ctl *ctl = opts_ctl.lookup(&zero);
	struct opts_out *out = opts_out.lookup(&zero);

	if (!ctl || !out)
		return TC_ACT_SHOT;
	if (h_parse(skb, &s, &sport, &dport) < 0)
		return TC_ACT_SHOT;
	ret = brc_tcp_opts_load(skb, s.l4_off, s.thl, out->hdr, &out->o);
	if (ret == 0 && action == 1)
		ret = brc_tcp_opts_strip_sackperm(skb, s.l4_off, &out->o);
	else if (ret == 0 && action == 2)
		ret = brc_tcp_opts_set_ts(skb, s.l4_off, &out->o, ctl->tsval, ctl->tsecr);
	out->ret = ret;
	return TC_ACT_OK;
}

int h_opts_parse(struct __sk_buff *skb) { return h_opts(skb, 0); }
int h_opts_strip(struct __sk_buff *skb) { return h_opts(skb, 1); }
int h_opts_set_ts(struct __sk_buff *skb) { return h_opts(skb, 2); }
