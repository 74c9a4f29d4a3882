/* SPDX-License-Identifier: GPL-2.0 */
/* Test-only: a minimal Ethernet/IPv4/TCP parser filling struct brc_seg for the
 * serve-block harnesses (the product uses the observe-mode parser instead). */
#ifndef BRC_HARNESS_COMMON_H
#define BRC_HARNESS_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>

#include "seqadj.h"

/* Fill @s from the frame; returns 0, or -1 if it is not IPv4/TCP. Ports are
 * returned in host order through @sport/@dport. */
static __always_inline int h_parse(struct __sk_buff *skb, struct brc_seg *s, __u16 *sport, __u16 *dport)
{
	struct iphdr ip;
	struct tcphdr th;
	__u16 proto;
	__u32 ihl;

	if (bpf_skb_load_bytes(skb, 12, &proto, sizeof(proto)) < 0 || proto != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.protocol != IPPROTO_TCP)
		return -1;
	ihl = ip.ihl * 4;
	if (ihl < 20)
		return -1;
	s->l3_off = ETH_HLEN;
	s->l4_off = ETH_HLEN + ihl;
	if (bpf_skb_load_bytes(skb, s->l4_off, &th, sizeof(th)) < 0)
		return -1;
	s->thl = th.doff * 4;
	if (s->thl < 20 || bpf_ntohs(ip.tot_len) < ihl + s->thl)
		return -1;
	s->payload_len = bpf_ntohs(ip.tot_len) - ihl - s->thl;
	s->seq = bpf_ntohl(th.seq);
	s->ack = bpf_ntohl(th.ack_seq);
	s->window = bpf_ntohs(th.window);
	s->flags = ((__u8 *)&th)[13];
	*sport = bpf_ntohs(th.source);
	*dport = bpf_ntohs(th.dest);
	return 0;
}

#endif
