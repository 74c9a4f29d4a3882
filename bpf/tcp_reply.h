/* SPDX-License-Identifier: GPL-2.0 */
/* Turn a client's request skb, in place, into (a) the pure ACK that carries its
 * acknowledgement to the server and (b) the cache's reply to the client, with
 * checksums right whether the skb is CHECKSUM_PARTIAL (offload on) or not.
 *
 * Integration contract, tc ingress, a GET the cache answers (see bpf/SERVE.md):
 *
 *     partial = brc_csum_is_partial(skb, &seg);          // before any change
 *     brc_seqadj_record(sa, &seg, len);                   // or, on a resend, nothing
 *     brc_pure_ack_build(skb, &seg, brc_seqadj_pure_ack_seq(sa),
 *                        brc_seqadj_c2s_ack(sa, seg.ack), partial, sa, scratch);
 *     bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);  // clone -> server
 *     facts = { brc_seqadj_reply_seq(sa), brc_seqadj_reply_ack(sa),
 *               sa->srv_tsval, sa->srv_win };
 *     brc_reply_build(skb, &seg, &facts, data, len, partial, scratch);
 *     return bpf_redirect(skb->ifindex, 0);                // skb -> client
 *
 * Both builders set skb->mark = BRC_SERVE_MARK; the clone inherits it at
 * ingress and the reply carries it through egress of the same device, so both
 * hooks must pass marked skbs untouched. The reply's bytes depend only on the
 * stored reply and the flow state, so a resend (brc_seqadj_classify() ==
 * BRC_SEQADJ_RESEND) calls the same two builders with the same facts and yields
 * the identical payload at the identical sequence number.
 *
 * When the stored reply is gone before a resend (entry invalidated or evicted),
 * brc_rst_build() turns the request into RSTs for both ends instead (counted
 * as `reset`): identical bytes or nothing.
 *
 * Limits: IPv4 without IP options (ihl == 5); the reply must fit one segment
 * (the caller keeps len <= the client's MSS) and BRC_REPLY_MAX.
 */
#ifndef BRC_TCP_REPLY_H
#define BRC_TCP_REPLY_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/in.h>

#include "tcp_opts.h"
#include "seqadj.h"

/* Checksum work is done in chunks of this size (bpf_csum_diff's limit). */
#define BRC_CSUM_CHUNK 512

/* Largest reply the serve path can inject; a multiple of BRC_CSUM_CHUNK, and
 * the size of the buffer the caller's reply bytes sit in (the verifier checks
 * the reads against it). Included after brc_contract.h it follows BRC_VAL_MAX,
 * the size of brc_cache_entry.reply[]. */
#ifndef BRC_REPLY_MAX
#ifdef BRC_VAL_MAX
#define BRC_REPLY_MAX BRC_VAL_MAX
#else
#define BRC_REPLY_MAX 1536
#endif
#endif
_Static_assert(BRC_REPLY_MAX % BRC_CSUM_CHUNK == 0, "BRC_REPLY_MAX must be a multiple of 512");

/* skb->mark of everything the serve path emits; both hooks skip such skbs. */
#ifndef BRC_SERVE_MARK
#define BRC_SERVE_MARK 0x42524353 /* "BRCS" */
#endif

#define BRC_IP_DF 0x4000
#define BRC_REPLY_TTL 64

/* Error returns of the builders (negative). */
#define BRC_REPLY_E_IP -1      /* not IPv4 without options */
#define BRC_REPLY_E_LEN -2     /* reply empty or larger than BRC_REPLY_MAX */
#define BRC_REPLY_E_HELPER -3  /* a bpf helper failed: the skb may be half-built, drop it */
#define BRC_REPLY_E_OPTS -4    /* malformed TCP options */

/* A stored reply, exactly the bytes the client gets (e.g. "$5\r\nhello\r\n").
 * The builders take (data, len) of any map value holding BRC_REPLY_MAX bytes at
 * data (brc_cache_entry.reply[] in the product); this type is that shape. */
struct brc_reply_buf {
	__u32 len;
	__u8 data[BRC_REPLY_MAX];
};

/* The numbers of one reply, all known from the flow state (seqadj.h). */
struct brc_reply_facts {
	__u32 seq;       /* client space, brc_seqadj_reply_seq() */
	__u32 ack;       /* client space, brc_seqadj_reply_ack() */
	__u32 tsval;     /* newest server TSval seen at egress (PAWS-safe) */
	__u16 window;    /* the server's last raw window */
	__u16 pad;
};

/* Per-CPU scratch the builders work in: a copy of the TCP header and its option
 * walk. Must be a map value (a PERCPU_ARRAY of one entry in the caller's
 * program), not the stack: see tcp_opts.h on verifier cost; it also keeps
 * 80 bytes off the 512-byte stack. */
struct brc_reply_scratch {
	__u8 hdr[BRC_TCP_HDR_BUF];
	struct brc_tcp_opts opts;
};

/* IPv4 pseudo-header for the TCP checksum. */
struct brc_pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

/* Fold a 32-bit (or chained) one's-complement sum to 16 bits, not complemented. */
static __always_inline __u16 brc_csum_fold(__u64 csum)
{
	csum = (csum & 0xffffffff) + (csum >> 32);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)csum;
}

/* Unfolded sum of the pseudo-header for a TCP segment of @tcp_len bytes. */
static __always_inline __u32 brc_csum_pseudo(__be32 saddr, __be32 daddr, __u32 tcp_len)
{
	struct brc_pseudo_hdr ph = {
		.saddr = saddr, .daddr = daddr, .zero = 0, .proto = IPPROTO_TCP,
		.len = bpf_htons(tcp_len),
	};

	return (__u32)bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
}

/* IPv6 pseudo-header for the TCP checksum (RFC 8200, 8.1). */
struct brc_pseudo_hdr6 {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be32 len;
	__u8 zero[3];
	__u8 next;
};

static __always_inline __u32 brc_csum_pseudo6(const struct ipv6hdr *ip6, __u32 tcp_len)
{
	struct brc_pseudo_hdr6 ph = { .len = bpf_htonl(tcp_len), .next = IPPROTO_TCP };

	ph.saddr = ip6->saddr;
	ph.daddr = ip6->daddr;
	return (__u32)bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
}

/* Is the request skb CHECKSUM_PARTIAL? __sk_buff does not show ip_summed, so
 * ask the kernel: bpf_l4_csum_replace() without BPF_F_PSEUDO_HDR leaves the
 * check field alone exactly when the skb is PARTIAL (the field then holds only
 * the pseudo-header sum and the device completes it) and updates it otherwise.
 * The probe's change is undone byte for byte (skb->csum of a COMPLETE skb is
 * never touched by it). Comparing the field with the pseudo-header sum instead
 * is wrong about once in 65536 complete checksums: the reply then goes out with
 * a bad checksum and the client has to retransmit (seen in CI).
 * Call before changing anything. Returns 1, 0, or <0. */
static __always_inline int brc_csum_is_partial(struct __sk_buff *skb, const struct brc_seg *s)
{
	__u32 off = s->l4_off + BRC_TCP_CSUM_OFF;
	__u16 before, after;

	if (bpf_skb_load_bytes(skb, off, &before, sizeof(before)) < 0 ||
	    bpf_l4_csum_replace(skb, off, 0, 1, sizeof(__u16)) < 0 ||
	    bpf_skb_load_bytes(skb, off, &after, sizeof(after)) < 0)
		return BRC_REPLY_E_HELPER;
	if (after == before)
		return 1;
	if (bpf_skb_store_bytes(skb, off, &before, sizeof(before), 0) < 0)
		return BRC_REPLY_E_HELPER;
	return 0;
}

/* One's-complement sum of the first @len bytes of @data (BRC_REPLY_MAX
 * readable bytes), chained on @seed. */
static __always_inline __u32 brc_csum_reply(const __u8 *data, __u32 len, __u32 seed)
{
	__u32 len4 = len & ~3U, sum = seed, base;
	__u8 tail[4] = {};
	int i;

#pragma unroll
	for (i = 0; i < BRC_REPLY_MAX / BRC_CSUM_CHUNK; i++) {
		__u32 off = i * BRC_CSUM_CHUNK;
		__u64 n;

		if (off >= len4)
			break;
		n = len4 - off;
		if (n > BRC_CSUM_CHUNK)
			n = BRC_CSUM_CHUNK;
		/* re-check on the register the helper gets (clang merges the min) */
		asm volatile("" : "+r"(n));
		if (n > BRC_CSUM_CHUNK)
			break;
		sum = (__u32)bpf_csum_diff(NULL, 0, (__be32 *)(data + off), n, sum);
	}
	if (len == len4)
		return sum;
#pragma unroll
	for (i = 0; i < 3; i++) {
		base = len4 + i;
		if (base < len && base < BRC_REPLY_MAX)
			tail[i] = data[base];
	}
	return (__u32)bpf_csum_diff(NULL, 0, (__be32 *)tail, sizeof(tail), sum);
}

/* The TCP half of emitting: the TCP header in @hdr (its check field zeroed,
 * the checksum computed here on the pseudo-header sum @sum) and the payload
 * from @data, after the IP header was written for a segment of @thl +
 * @payload_len bytes. */
static __always_inline int brc__emit_tcp(struct __sk_buff *skb, const struct brc_seg *s,
					 __u8 *hdr, __u32 thl, const __u8 *data,
					 __u32 payload_len, int partial, __u32 sum)
{
	__u16 check;

	if (partial) {
		/* what the stack puts in a CHECKSUM_PARTIAL segment: the device (or
		 * skb_checksum_help) adds header and payload from csum_start on */
		check = brc_csum_fold(sum);
	} else {
		sum = (__u32)bpf_csum_diff(NULL, 0, (__be32 *)hdr, thl, sum);
		if (payload_len)
			sum = brc_csum_reply(data, payload_len, sum);
		check = ~brc_csum_fold(sum);
	}
	__builtin_memcpy(&hdr[BRC_TCP_CSUM_OFF], &check, sizeof(check));
	if (bpf_skb_store_bytes(skb, s->l4_off, hdr, thl, 0) < 0)
		return BRC_REPLY_E_HELPER;
	if (payload_len) {
		__u64 n = payload_len;

		/* bound checked on the very register the helper gets */
		asm volatile("" : "+r"(n));
		if (n == 0 || n > BRC_REPLY_MAX)
			return BRC_REPLY_E_LEN;
		if (bpf_skb_store_bytes(skb, s->l4_off + thl, (void *)data, n, 0) < 0)
			return BRC_REPLY_E_HELPER;
	}
	skb->mark = BRC_SERVE_MARK;
	return 0;
}

/* Shared tail of the IPv4 builders: resize the skb to @payload_len bytes after
 * the TCP header, write IP header @ip (tot_len, checksum), then the TCP half. */
static __always_inline int brc__emit(struct __sk_buff *skb, const struct brc_seg *s, struct iphdr *ip,
				     __u8 *hdr, __u32 thl, const __u8 *data,
				     __u32 payload_len, int partial)
{
	__u32 tcp_len = thl + payload_len, sum;

	if (bpf_skb_change_tail(skb, s->l4_off + tcp_len, 0) < 0)
		return BRC_REPLY_E_HELPER;

	ip->tot_len = bpf_htons(sizeof(*ip) + tcp_len);
	ip->check = 0;
	ip->check = ~brc_csum_fold((__u32)bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
	if (bpf_skb_store_bytes(skb, s->l3_off, ip, sizeof(*ip), 0) < 0)
		return BRC_REPLY_E_HELPER;

	/* check field (bytes 16-17 of the header) zero while summing */
	hdr[BRC_TCP_CSUM_OFF] = 0;
	hdr[BRC_TCP_CSUM_OFF + 1] = 0;
	sum = brc_csum_pseudo(ip->saddr, ip->daddr, tcp_len);
	return brc__emit_tcp(skb, s, hdr, thl, data, payload_len, partial, sum);
}

/* The TCP header of @s into sc->hdr and its option walk (@sack: also the
 * SACK option). Returns the header length or a negative BRC_REPLY_E_*. */
static __always_inline int brc__load_tcp(struct __sk_buff *skb, const struct brc_seg *s,
					 struct brc_reply_scratch *sc, const int sack)
{
	__u32 thl = s->thl;
	int ret;

	ret = sack ? brc_tcp_opts_load(skb, s->l4_off, thl, sc->hdr, &sc->opts) :
		     brc_tcp_opts_load_no_sack(skb, s->l4_off, thl, sc->hdr, &sc->opts);
	if (ret == -2)
		return BRC_REPLY_E_HELPER;
	if (ret < 0)
		return BRC_REPLY_E_OPTS;
	return thl;
}

/* Load and check the IPv4 and TCP headers of @s into @ip and @hdr (@sack:
 * also find the SACK option, for the pure ACK). Returns the TCP header length
 * (20..60) or a negative BRC_REPLY_E_*. */
static __always_inline int brc__load_hdrs(struct __sk_buff *skb, const struct brc_seg *s,
					  struct iphdr *ip, struct brc_reply_scratch *sc, const int sack)
{
	if (s->l4_off != s->l3_off + sizeof(*ip))
		return BRC_REPLY_E_IP;
	if (bpf_skb_load_bytes(skb, s->l3_off, ip, sizeof(*ip)) < 0)
		return BRC_REPLY_E_HELPER;
	if (ip->version != 4 || ip->ihl != 5)
		return BRC_REPLY_E_IP;
	return brc__load_tcp(skb, s, sc, sack);
}

/* The IPv6 tail: payload_len instead of tot_len, no header checksum, and
 * RFC 8200's pseudo-header. */
static __always_inline int brc__emit6(struct __sk_buff *skb, const struct brc_seg *s, struct ipv6hdr *ip6,
				      __u8 *hdr, __u32 thl, const __u8 *data,
				      __u32 payload_len, int partial)
{
	__u32 tcp_len = thl + payload_len, sum;

	if (bpf_skb_change_tail(skb, s->l4_off + tcp_len, 0) < 0)
		return BRC_REPLY_E_HELPER;
	ip6->payload_len = bpf_htons(tcp_len);
	if (bpf_skb_store_bytes(skb, s->l3_off, ip6, sizeof(*ip6), 0) < 0)
		return BRC_REPLY_E_HELPER;
	hdr[BRC_TCP_CSUM_OFF] = 0;
	hdr[BRC_TCP_CSUM_OFF + 1] = 0;
	sum = brc_csum_pseudo6(ip6, tcp_len);
	return brc__emit_tcp(skb, s, hdr, thl, data, payload_len, partial, sum);
}

/* brc__load_hdrs for IPv6 without extension headers (the only IPv6 the
 * parser follows). */
static __always_inline int brc__load_hdrs6(struct __sk_buff *skb, const struct brc_seg *s,
					   struct ipv6hdr *ip6, struct brc_reply_scratch *sc, const int sack)
{
	if (s->l4_off != s->l3_off + sizeof(*ip6))
		return BRC_REPLY_E_IP;
	if (bpf_skb_load_bytes(skb, s->l3_off, ip6, sizeof(*ip6)) < 0)
		return BRC_REPLY_E_HELPER;
	if (ip6->version != 6 || ip6->nexthdr != IPPROTO_TCP)
		return BRC_REPLY_E_IP;
	return brc__load_tcp(skb, s, sc, sack);
}

/* The TCP header of a pure ACK (brc_pure_ack_build) in sc->hdr. */
static __always_inline void brc__ack_tcp(__u8 *hdr, __u32 srv_seq, __u32 srv_ack,
					 const struct brc_seqadj *sa, struct brc_reply_scratch *sc)
{
	brc_buf_put_be32(hdr, BRC_TCP_SEQ_OFF, srv_seq);
	brc_buf_put_be32(hdr, BRC_TCP_ACK_OFF, srv_ack);
	hdr[13] = BRC_TCP_ACK;
	if (sa && (sa->flags & BRC_SA_F_INJECTED) && sc->opts.sack_n)
		brc_seqadj_sack_buf(sa, hdr, &sc->opts, 1);   /* the checksum is recomputed later */
}

static __always_inline void brc__swap_ports(__u8 *hdr)
{
	int i;

#pragma unroll
	for (i = 0; i < 2; i++) {
		__u8 b = hdr[i];

		hdr[i] = hdr[i + 2];
		hdr[i + 2] = b;
	}
}

/* The TCP header of a reply (brc_reply_build) in sc->hdr, @thl bytes. */
static __always_inline void brc__reply_tcp(__u8 *hdr, int thl, const struct brc_reply_facts *f,
					   struct brc_reply_scratch *sc)
{
	brc__swap_ports(hdr);
	brc_buf_put_be32(hdr, BRC_TCP_SEQ_OFF, f->seq);
	brc_buf_put_be32(hdr, BRC_TCP_ACK_OFF, f->ack);
	hdr[13] = BRC_TCP_ACK | BRC_TCP_PSH;
	hdr[14] = f->window >> 8;
	hdr[15] = f->window;
	hdr[18] = 0; /* urgent pointer */
	hdr[19] = 0;
	brc_tcp_opts_reply_buf(hdr, thl, &sc->opts, f->tsval, sc->opts.tsval);
}

/* The TCP header of a RST|ACK (brc_rst_build) in sc->hdr, @thl bytes. */
static __always_inline void brc__rst_tcp(__u8 *hdr, int thl, __u32 seq, __u32 ack, int to_client,
					 struct brc_reply_scratch *sc)
{
	if (to_client)
		brc__swap_ports(hdr);
	brc_buf_put_be32(hdr, BRC_TCP_SEQ_OFF, seq);
	brc_buf_put_be32(hdr, BRC_TCP_ACK_OFF, ack);
	hdr[13] = BRC_TCP_RST | BRC_TCP_ACK;
	hdr[14] = 0;
	hdr[15] = 0;
	hdr[18] = 0;
	hdr[19] = 0;
	sc->opts.flags &= ~BRC_OPT_F_TS;
	brc_tcp_opts_reply_buf(hdr, thl, &sc->opts, 0, 0);
}

/* Swap the Ethernet addresses in place: a reply goes back out of the device the
 * request came in on. Returns 0, or -1 when they could not be read or written. */
static __always_inline int brc__swap_macs(struct __sk_buff *skb)
{
	__u8 mac[2 * ETH_ALEN], tmp[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)) < 0)
		return -1;
	__builtin_memcpy(tmp, mac, ETH_ALEN);
	__builtin_memcpy(mac, mac + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(mac + ETH_ALEN, tmp, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, mac, sizeof(mac), 0) < 0 ? -1 : 0;
}

/* Turn the request skb into the pure ACK for the server: payload stripped,
 * seq/ack given in server space (brc_seqadj_pure_ack_seq(), brc_seqadj_c2s_ack()),
 * flags ACK only, the client's own options and TSval kept, its SACK blocks
 * translated to server space by @sa's offsets (brc_seqadj_sack_buf(); a
 * retransmitted GET carries blocks of the server data after a lost reply;
 * NULL: options kept as they are), checksums for the new length (@partial
 * from brc_csum_is_partial() on the original request).
 * Returns 0 or a negative BRC_REPLY_E_*. */
static __always_inline int brc_pure_ack_build(struct __sk_buff *skb, const struct brc_seg *s,
					      __u32 srv_seq, __u32 srv_ack, int partial,
					      const struct brc_seqadj *sa,
					      struct brc_reply_scratch *sc)
{
	struct iphdr ip;
	int thl;

	thl = brc__load_hdrs(skb, s, &ip, sc, 1);
	if (thl < 0)
		return thl;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return BRC_REPLY_E_OPTS;
	brc__ack_tcp(sc->hdr, srv_seq, srv_ack, sa, sc);
	return brc__emit(skb, s, &ip, sc->hdr, thl, NULL, 0, partial);
}

/* Turn the request skb into the reply to the client: MACs, addresses and ports
 * swapped, seq/ack/window from @f, flags ACK|PSH, options all NOPs but the TS
 * option (TSval = f->tsval, TSecr = the request's TSval),
 * payload = @len bytes at @data (inside a map value with BRC_REPLY_MAX bytes
 * there), IP id 0 with DF, IP and TCP checksums for the new length (@partial as
 * for the pure ACK). Returns 0 or a negative BRC_REPLY_E_*. */
static __always_inline int brc_reply_build(struct __sk_buff *skb, const struct brc_seg *s,
					   const struct brc_reply_facts *f,
					   const __u8 *data, __u32 len, int partial,
					   struct brc_reply_scratch *sc)
{
	__u8 *hdr = sc->hdr;
	struct iphdr ip;
	__be32 addr;
	int thl, i;

	if (len == 0 || len > BRC_REPLY_MAX)
		return BRC_REPLY_E_LEN;
	thl = brc__load_hdrs(skb, s, &ip, sc, 0);
	if (thl < 0)
		return thl;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return BRC_REPLY_E_OPTS;

	if (brc__swap_macs(skb) < 0)
		return BRC_REPLY_E_HELPER;

	addr = ip.saddr;
	ip.saddr = ip.daddr;
	ip.daddr = addr;
	ip.id = 0;
	ip.frag_off = bpf_htons(BRC_IP_DF);
	ip.ttl = BRC_REPLY_TTL;

	/* brc__reply_tcp's steps, written out: calling it (the same code once
	 * inlined) took brc_serve_in's verification past 1M instructions */
#pragma unroll
	for (i = 0; i < 2; i++) { /* swap the ports */
		__u8 b = hdr[i];

		hdr[i] = hdr[i + 2];
		hdr[i + 2] = b;
	}
	brc_buf_put_be32(hdr, BRC_TCP_SEQ_OFF, f->seq);
	brc_buf_put_be32(hdr, BRC_TCP_ACK_OFF, f->ack);
	hdr[13] = BRC_TCP_ACK | BRC_TCP_PSH;
	hdr[14] = f->window >> 8;
	hdr[15] = f->window;
	hdr[18] = 0; /* urgent pointer */
	hdr[19] = 0;
	brc_tcp_opts_reply_buf(hdr, thl, &sc->opts, f->tsval, sc->opts.tsval);

	/* keep the verifier's bound on the length the store sees */
	asm volatile("" : "+r"(len));
	if (len == 0 || len > BRC_REPLY_MAX)
		return BRC_REPLY_E_LEN;
	return brc__emit(skb, s, &ip, hdr, thl, data, len, partial);
}

/* Turn the request skb into a RST|ACK, for when identical reply bytes can no
 * longer be produced (the stored reply is gone): never send different bytes,
 * end the connection cleanly on both sides instead. @to_client: 1 = the RST
 * for the client (addresses swapped; @seq = brc_seqadj_reply_seq(), exactly
 * the client's rcv_nxt, so RFC 5961 accepts it; @ack = brc_seqadj_reply_ack()),
 * 0 = the RST for the server (@seq = brc_seqadj_pure_ack_seq(), the server's
 * rcv_nxt; @ack = brc_seqadj_c2s_ack() of the request's ack). Options all
 * NOPs (a RST without TS skips PAWS), window 0, no payload. Typical use: the
 * server RST as a marked clone to ingress, then the client RST redirected to
 * egress, as for a reply. Returns 0 or a negative BRC_REPLY_E_*. */
static __always_inline int brc_rst_build(struct __sk_buff *skb, const struct brc_seg *s,
					 __u32 seq, __u32 ack, int to_client, int partial,
					 struct brc_reply_scratch *sc)
{
	struct iphdr ip;
	__be32 addr;
	int thl;

	thl = brc__load_hdrs(skb, s, &ip, sc, 0);
	if (thl < 0)
		return thl;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return BRC_REPLY_E_OPTS;
	if (to_client) {
		if (brc__swap_macs(skb) < 0)
			return BRC_REPLY_E_HELPER;
		/* the same swap as brc_reply_build's, written out in both: a
		 * helper taking @ip by pointer took brc_serve_in past the
		 * verifier's 1M instructions */
		addr = ip.saddr;
		ip.saddr = ip.daddr;
		ip.daddr = addr;
	}
	ip.id = 0;
	ip.frag_off = bpf_htons(BRC_IP_DF);
	ip.ttl = BRC_REPLY_TTL;
	brc__rst_tcp(sc->hdr, thl, seq, ack, to_client, sc);
	return brc__emit(skb, s, &ip, sc->hdr, thl, NULL, 0, partial);
}

/* The IPv6 builders: as the IPv4 ones, the addresses swapped in the IPv6
 * header for the client, the hop limit BRC_REPLY_TTL and the flow label 0 (the
 * reply is a new flow of the server's), no header checksum. */
static __always_inline void brc__reply_ip6(struct ipv6hdr *ip6, int swap)
{
	struct in6_addr addr;

	if (swap) {
		addr = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = addr;
	}
	ip6->flow_lbl[0] &= 0xf0;       /* the low nibble of the traffic class stays */
	ip6->flow_lbl[1] = 0;
	ip6->flow_lbl[2] = 0;
	ip6->hop_limit = BRC_REPLY_TTL;
}

static __always_inline int brc_pure_ack_build6(struct __sk_buff *skb, const struct brc_seg *s,
					       __u32 srv_seq, __u32 srv_ack, int partial,
					       const struct brc_seqadj *sa,
					       struct brc_reply_scratch *sc)
{
	struct ipv6hdr ip6;
	int thl;

	thl = brc__load_hdrs6(skb, s, &ip6, sc, 1);
	if (thl < 0)
		return thl;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return BRC_REPLY_E_OPTS;
	brc__ack_tcp(sc->hdr, srv_seq, srv_ack, sa, sc);
	return brc__emit6(skb, s, &ip6, sc->hdr, thl, NULL, 0, partial);
}

static __always_inline int brc_reply_build6(struct __sk_buff *skb, const struct brc_seg *s,
					    const struct brc_reply_facts *f,
					    const __u8 *data, __u32 len, int partial,
					    struct brc_reply_scratch *sc)
{
	struct ipv6hdr ip6;
	int thl;

	if (len == 0 || len > BRC_REPLY_MAX)
		return BRC_REPLY_E_LEN;
	thl = brc__load_hdrs6(skb, s, &ip6, sc, 0);
	if (thl < 0)
		return thl;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return BRC_REPLY_E_OPTS;
	if (brc__swap_macs(skb) < 0)
		return BRC_REPLY_E_HELPER;
	brc__reply_ip6(&ip6, 1);
	brc__reply_tcp(sc->hdr, thl, f, sc);
	asm volatile("" : "+r"(len));
	if (len == 0 || len > BRC_REPLY_MAX)
		return BRC_REPLY_E_LEN;
	return brc__emit6(skb, s, &ip6, sc->hdr, thl, data, len, partial);
}

static __always_inline int brc_rst_build6(struct __sk_buff *skb, const struct brc_seg *s,
					  __u32 seq, __u32 ack, int to_client, int partial,
					  struct brc_reply_scratch *sc)
{
	struct ipv6hdr ip6;
	int thl;

	thl = brc__load_hdrs6(skb, s, &ip6, sc, 0);
	if (thl < 0)
		return thl;
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return BRC_REPLY_E_OPTS;
	if (to_client && brc__swap_macs(skb) < 0)
		return BRC_REPLY_E_HELPER;
	brc__reply_ip6(&ip6, to_client);
	brc__rst_tcp(sc->hdr, thl, seq, ack, to_client, sc);
	return brc__emit6(skb, s, &ip6, sc->hdr, thl, NULL, 0, partial);
}

#endif /* BRC_TCP_REPLY_H */
