/* SPDX-License-Identifier: GPL-2.0 */
/* Packet headers: Ethernet / IPv4 / TCP parsing for tc programs.
 *
 * Headers are read with bpf_skb_load_bytes (never direct packet pointers: on
 * veth the payload sits in page fragments and even headers may not be linear
 * after some paths). Header lengths come from the packet (ihl, doff), never
 * from sizeof().
 */
#ifndef BRC_PKT_H
#define BRC_PKT_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>

/* What brc_parse_tcp4 found. Offsets are from the start of the frame. */
struct brc_pkt {
	__u32 saddr, daddr;   /* network order */
	__u16 sport, dport;   /* host order */
	__u32 seq, ack_seq;   /* host order */
	__u32 l3_off, l4_off; /* start of IPv4 and TCP headers */
	__u32 payload_off;    /* first payload byte (after TCP options) */
	__u32 payload_len;    /* TCP payload bytes, from the IPv4 total length */
	__u8 tcp_flags;       /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 */
};

#define BRC_TCP_FIN 0x01
#define BRC_TCP_SYN 0x02
#define BRC_TCP_RST 0x04
#define BRC_TCP_ACK 0x10

/* brc_parse_tcp4() results: what the entry program counts and passes. */
enum brc_pkt_kind {
	BRC_PKT_TCP4 = 0,     /* plain IPv4 TCP: *pkt is filled */
	BRC_PKT_NOT_IP,       /* not IPv4 and not IPv6: ARP etc. */
	BRC_PKT_IPV6,         /* IPv6: passed untouched */
	BRC_PKT_IP_OPTIONS,   /* IPv4 with options (ihl > 5): passed untouched */
	BRC_PKT_FRAGMENT,     /* IPv4 fragment (MF or offset): passed untouched */
	BRC_PKT_NOT_TCP,      /* IPv4, other protocol */
	BRC_PKT_MALFORMED,    /* lengths inconsistent with the frame */
};

/* Parse Ethernet + IPv4 + TCP at the start of @skb.
 * Returns an enum brc_pkt_kind; only BRC_PKT_TCP4 fills @pkt completely. */
static __always_inline int brc_parse_tcp4(struct __sk_buff *skb, struct brc_pkt *pkt)
{
	struct iphdr ip;
	struct tcphdr tcp;
	__u32 ihl, doff, tot;

	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return BRC_PKT_IPV6;
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return BRC_PKT_NOT_IP;
	pkt->l3_off = ETH_HLEN;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return BRC_PKT_MALFORMED;
	if (ip.version != 4)
		return BRC_PKT_MALFORMED;
	if (ip.protocol != IPPROTO_TCP)
		return BRC_PKT_NOT_TCP;
	ihl = ip.ihl * 4;
	if (ihl < sizeof(ip))
		return BRC_PKT_MALFORMED;
	if (ihl > sizeof(ip))
		return BRC_PKT_IP_OPTIONS;
	if (ip.frag_off & bpf_htons(0x3fff))   /* MF flag or fragment offset */
		return BRC_PKT_FRAGMENT;
	tot = bpf_ntohs(ip.tot_len);
	pkt->l4_off = ETH_HLEN + ihl;
	if (bpf_skb_load_bytes(skb, pkt->l4_off, &tcp, sizeof(tcp)) < 0)
		return BRC_PKT_MALFORMED;
	doff = tcp.doff * 4;
	if (doff < sizeof(tcp) || tot < ihl + doff || ETH_HLEN + tot > skb->len)
		return BRC_PKT_MALFORMED;
	pkt->saddr = ip.saddr;
	pkt->daddr = ip.daddr;
	pkt->sport = bpf_ntohs(tcp.source);
	pkt->dport = bpf_ntohs(tcp.dest);
	pkt->seq = bpf_ntohl(tcp.seq);
	pkt->ack_seq = bpf_ntohl(tcp.ack_seq);
	pkt->payload_off = pkt->l4_off + doff;
	pkt->payload_len = tot - ihl - doff;
	pkt->tcp_flags = ((__u8 *)&tcp)[13];
	return BRC_PKT_TCP4;
}

#endif /* BRC_PKT_H */
