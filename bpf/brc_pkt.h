/* SPDX-License-Identifier: GPL-2.0 */
/* Packet headers: Ethernet (with up to two VLAN tags) / IPv4 or IPv6 / TCP
 * parsing for tc programs, and what an unparsed packet could carry to Redis.
 *
 * Headers are read with bpf_skb_load_bytes (never direct packet pointers: on
 * veth the payload sits in page fragments and even headers may not be linear
 * after some paths). Header lengths come from the packet (ihl, doff), never
 * from sizeof(). At ingress the kernel has taken VLAN tags out of the frame
 * before tc; at egress a tag is still in it when the device does not insert
 * tags itself, and a served connection's segments must be translated anyway.
 */
#ifndef BRC_PKT_H
#define BRC_PKT_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/ipv6.h>

/* What brc_parse_tcp found. Offsets are from the start of the frame. */
struct brc_pkt {
	__u32 saddr[4], daddr[4]; /* as brc_flow_key keeps them: IPv6, IPv4 mapped */
	__u16 sport, dport;   /* host order */
	__u32 seq, ack_seq;   /* host order */
	__u32 l3_off, l4_off; /* start of IP and TCP headers (l3_off is also set for other kinds) */
	__u32 payload_off;    /* first payload byte (after TCP options) */
	__u32 payload_len;    /* TCP payload bytes, from the IP header's length */
	__u8 tcp_flags;       /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 */
	__u8 ipv6;            /* 1: an IPv6 header (l4_off = l3_off + 40) */
};

#define BRC_TCP_FIN 0x01
#define BRC_TCP_SYN 0x02
#define BRC_TCP_RST 0x04
#define BRC_TCP_ACK 0x10

/* brc_parse_tcp() results: what the entry program counts and passes. */
enum brc_pkt_kind {
	BRC_PKT_TCP = 0,      /* plain IPv4 or IPv6 TCP: *pkt is filled */
	BRC_PKT_NOT_IP,       /* not IPv4 and not IPv6: ARP etc. */
	BRC_PKT_IPV6,         /* IPv6 with extension headers: not parsed (brc_pkt_may_carry_command) */
	BRC_PKT_IP_OPTIONS,   /* IPv4 with options (ihl > 5): not parsed */
	BRC_PKT_FRAGMENT,     /* IPv4 fragment (MF or offset): not parsed */
	BRC_PKT_NOT_TCP,      /* IPv4 or IPv6, other protocol */
	BRC_PKT_MALFORMED,    /* lengths inconsistent with the frame */
};

/* The TCP header at pkt->l4_off, of a packet with @l4_len bytes from it
 * (within @skb from @end_off = l3 + the IP header's length). */
static __always_inline int brc_parse_tcp_hdr(struct __sk_buff *skb, struct brc_pkt *pkt,
					     __u32 l4_len, __u32 end_off)
{
	struct tcphdr tcp;
	__u32 doff;

	if (bpf_skb_load_bytes(skb, pkt->l4_off, &tcp, sizeof(tcp)) < 0)
		return BRC_PKT_MALFORMED;
	doff = tcp.doff * 4;
	if (doff < sizeof(tcp) || l4_len < doff || end_off > skb->len)
		return BRC_PKT_MALFORMED;
	pkt->sport = bpf_ntohs(tcp.source);
	pkt->dport = bpf_ntohs(tcp.dest);
	pkt->seq = bpf_ntohl(tcp.seq);
	pkt->ack_seq = bpf_ntohl(tcp.ack_seq);
	pkt->payload_off = pkt->l4_off + doff;
	pkt->payload_len = l4_len - doff;
	pkt->tcp_flags = ((__u8 *)&tcp)[13];
	return BRC_PKT_TCP;
}

/* IPv6 whose next header is TCP (extension headers are left to
 * brc_pkt_may_carry_command: every one would be another parser to trust). */
static __always_inline int brc_parse_tcp6(struct __sk_buff *skb, struct brc_pkt *pkt, __u32 l3)
{
	struct ipv6hdr ip6;
	__u32 len;

	if (bpf_skb_load_bytes(skb, l3, &ip6, sizeof(ip6)) < 0)
		return BRC_PKT_MALFORMED;
	if (ip6.version != 6)
		return BRC_PKT_MALFORMED;
	if (ip6.nexthdr == IPPROTO_UDP || ip6.nexthdr == IPPROTO_ICMPV6 || ip6.nexthdr == 59)
		return BRC_PKT_NOT_TCP;         /* 59: no next header */
	if (ip6.nexthdr != IPPROTO_TCP)
		return BRC_PKT_IPV6;
	len = bpf_ntohs(ip6.payload_len);
	if (len == 0 && skb->len > 0xffff + l3 + sizeof(ip6))
		len = skb->len - l3 - sizeof(ip6);     /* BIG TCP: a GSO/GRO packet over 64 KB */
	__builtin_memcpy(pkt->saddr, &ip6.saddr, sizeof(pkt->saddr));
	__builtin_memcpy(pkt->daddr, &ip6.daddr, sizeof(pkt->daddr));
	pkt->ipv6 = 1;
	pkt->l4_off = l3 + sizeof(ip6);
	return brc_parse_tcp_hdr(skb, pkt, len, pkt->l4_off + len);
}

/* Parse Ethernet (+ VLAN tags) + IPv4 or IPv6 + TCP at the start of @skb.
 * Returns an enum brc_pkt_kind; only BRC_PKT_TCP fills @pkt completely. */
static __always_inline int brc_parse_tcp(struct __sk_buff *skb, struct brc_pkt *pkt)
{
	struct iphdr ip;
	__u32 ihl, tot, l3 = ETH_HLEN;
	__be16 proto = skb->protocol, inner;
	int i;

#pragma clang loop unroll(full)
	for (i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_skb_load_bytes(skb, l3 + 2, &inner, sizeof(inner)) < 0)
			return BRC_PKT_MALFORMED;
		l3 += 4;
		proto = inner;
	}
	pkt->l3_off = l3;
	if (proto == bpf_htons(ETH_P_IPV6))
		return brc_parse_tcp6(skb, pkt, l3);
	if (proto != bpf_htons(ETH_P_IP))
		return BRC_PKT_NOT_IP;
	if (bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)) < 0)
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
	if (tot == 0 && skb->len > 0xffff + l3)
		tot = skb->len - l3;            /* BIG TCP: a GSO/GRO packet over 64 KB */
	if (tot < ihl)
		return BRC_PKT_MALFORMED;
	/* ::ffff:a.b.c.d */
	pkt->saddr[0] = pkt->saddr[1] = pkt->daddr[0] = pkt->daddr[1] = 0;
	pkt->saddr[2] = pkt->daddr[2] = bpf_htonl(0xffff);
	pkt->saddr[3] = ip.saddr;
	pkt->daddr[3] = ip.daddr;
	pkt->l4_off = l3 + ihl;
	return brc_parse_tcp_hdr(skb, pkt, tot - ihl, l3 + tot);
}

/* Is @hdr (a TCP header at @off) to @port with payload after it, in a packet
 * of @l4_len bytes from @off? */
static __always_inline int brc_tcp_to_port(struct __sk_buff *skb, __u32 off, __u32 l4_len, __u32 port)
{
	struct tcphdr tcp;

	if (bpf_skb_load_bytes(skb, off, &tcp, sizeof(tcp)) < 0)
		return 1;                       /* cannot tell: assume it may */
	return bpf_ntohs(tcp.dest) == port && l4_len > (__u32)tcp.doff * 4;
}

/* A packet brc_parse_tcp did not parse (@kind, pkt->l3_off set): could it
 * carry a command to Redis on @port? IPv6 (extension headers included: they
 * may hide TCP), IPv4 with options, and fragments (a later one carries no
 * port at all) are passed unparsed, so what they may write must be invalidated. */
static __always_inline int brc_pkt_may_carry_command(struct __sk_buff *skb, int kind,
						     const struct brc_pkt *pkt, __u32 port)
{
	struct ipv6hdr ip6;
	struct iphdr ip;
	__u32 ihl, tot;

	if (kind == BRC_PKT_IPV6) {
		__u32 off = pkt->l3_off + sizeof(ip6), i;
		__u8 next, ext[2];

		if (bpf_skb_load_bytes(skb, pkt->l3_off, &ip6, sizeof(ip6)) < 0)
			return 1;
		next = ip6.nexthdr;
		/* walk the options headers (hop-by-hop carries every MLD report) */
#pragma clang loop unroll(full)
		for (i = 0; i < 3; i++) {
			if (next != 0 && next != 43 && next != 60)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
				return 1;
			next = ext[0];
			off += ((__u32)ext[1] + 1) * 8;
		}
		if (next == IPPROTO_TCP)
			return brc_tcp_to_port(skb, off, pkt->l3_off + sizeof(ip6) + bpf_ntohs(ip6.payload_len) - off,
					       port);
		/* UDP, ICMPv6 and no-next-header carry no TCP; fragments, deeper
		 * chains and anything else may */
		return next != IPPROTO_UDP && next != 58 && next != 59;
	}
	if (kind != BRC_PKT_IP_OPTIONS && kind != BRC_PKT_FRAGMENT)
		return 0;
	if (bpf_skb_load_bytes(skb, pkt->l3_off, &ip, sizeof(ip)) < 0)
		return 1;
	if (ip.protocol != IPPROTO_TCP)
		return 0;
	if (ip.frag_off & bpf_htons(0x1fff))
		return 1;                       /* a later fragment: its port is unknown */
	ihl = ip.ihl * 4;
	tot = bpf_ntohs(ip.tot_len);
	if (ihl < sizeof(ip) || tot < ihl)
		return 1;
	return brc_tcp_to_port(skb, pkt->l3_off + ihl, tot - ihl, port);
}

#endif /* BRC_PKT_H */
