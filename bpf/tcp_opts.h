/* SPDX-License-Identifier: GPL-2.0 */
/* TCP options for the serve path: walk them with bounded loops, read MSS/TS,
 * find the SACK blocks (seqadj.h translates them), turn SACK-permitted on a SYN
 * into NOPs (only with BRC_SERVE_STRIP_SACK), rewrite the timestamps option,
 * rewrite a SACK option's blocks in a header buffer.
 *
 * Integration contract (see bpf/SERVE.md):
 *   - tc ingress, client SYN of a flow that may be served:
 *         brc_tcp_opts_load(skb, l4_off, thl, hdr, &opts);
 *     SACK is negotiated as the two ends ask. (Built with -DBRC_SERVE_STRIP_SACK,
 *     the behaviour before SACK blocks were translated, also
 *     brc_tcp_opts_strip_sackperm(), so
 *     SACK is never negotiated.)
 *   - tc egress, every server segment of a served flow: brc_tcp_opts_load() to
 *     learn the newest server TSval (brc_seqadj_track_egress() takes it) and
 *     where its SACK blocks are (sack_off, sack_n).
 *   - tc ingress, a client segment of a flow with offsets: brc_tcp_opts_load()
 *     for its SACK blocks. seqadj.h maps them (brc_seqadj_rewrite_sack()) with
 *     brc_tcp_opts_sack_get()/_put() below on the walked header buffer.
 *   - tcp_reply.h uses brc_tcp_opts_parse_buf()/brc_tcp_opts_reply_buf() on its own
 *     copy of the TCP header; callers never need to.
 * Nothing here touches maps or flow state; every function works on the skb and
 * offsets it is given.
 *
 * Verifier cost: keep the header buffer and struct brc_tcp_opts in a map value
 * (tcp_reply.h's per-CPU scratch, or the caller's own). On the stack the walk's
 * results are constants per option layout, any later branch on them makes them
 * precise, and the verifier then carries one state per layout through the rest
 * of the program (a SACK-perm strip after the walk hit the 1M-instruction
 * limit that way; from a map value it is a few thousand). Packet bytes are read with bpf_skb_load_bytes because on
 * veth the TCP header may sit in a page fragment.
 *
 * Checksums: the single-field rewrites here use bpf_l4_csum_replace without the
 * pseudo-header flag, which is right for CHECKSUM_NONE/COMPLETE skbs (the check
 * field is updated) and for CHECKSUM_PARTIAL skbs (the helper leaves the
 * pseudo-header sum alone, the device/stack sums the new bytes later).
 */
#ifndef BRC_TCP_OPTS_H
#define BRC_TCP_OPTS_H

#include <uapi/linux/bpf.h>

/* Buffer for a whole TCP header (20 bytes + at most 40 of options). Indices into
 * it are masked with BRC_TCP_HDR_BUF - 1, so it must stay a power of two >= 60. */
#define BRC_TCP_HDR_BUF 64
#define BRC_TCP_HDR_MIN 20
#define BRC_TCP_HDR_MAX 60
/* The MSS an end that sends no MSS option takes (RFC 9293 3.7.1). */
#define BRC_TCP_DEFAULT_MSS 536
/* Offset of the checksum field inside the TCP header. */
#define BRC_TCP_CSUM_OFF 16

#define BRC_TCPOPT_EOL 0
#define BRC_TCPOPT_NOP 1
#define BRC_TCPOPT_MSS 2
#define BRC_TCPOPT_WSCALE 3
#define BRC_TCPOPT_SACK_PERM 4
#define BRC_TCPOPT_SACK 5
#define BRC_TCPOPT_TS 8
#define BRC_TCPOLEN_TS 10
#define BRC_TCPOLEN_SACK_BLOCK 8
#define BRC_SACK_BLOCKS_MAX 4    /* (40 - 2) / 8 */

/* brc_tcp_opts.flags */
#define BRC_OPT_F_MSS (1 << 0)
#define BRC_OPT_F_WSCALE (1 << 1)
#define BRC_OPT_F_SACK_PERM (1 << 2)
#define BRC_OPT_F_SACK (1 << 3)      /* a SACK option present (blocks in sack_off/sack_n if well formed) */
#define BRC_OPT_F_TS (1 << 4)
#define BRC_OPT_F_OTHER (1 << 5)     /* an option this file does not know (MD5, AO, MPTCP, ...) */
#define BRC_OPT_F_MALFORMED (1 << 7) /* bad length: callers must not serve this flow/segment */

/* What a walk over one segment's options found. Offsets count from the start of
 * the TCP header (they are always >= 20 when the option is present). */
struct brc_tcp_opts {
	__u32 tsval;        /* host order; valid with BRC_OPT_F_TS */
	__u32 tsecr;        /* host order; valid with BRC_OPT_F_TS */
	__u16 mss;          /* host order; valid with BRC_OPT_F_MSS */
	__u8 ts_off;        /* offset of the TS kind byte */
	__u8 sackperm_off;  /* offset of the SACK-permitted kind byte */
	__u8 wscale;        /* valid with BRC_OPT_F_WSCALE */
	__u8 flags;         /* BRC_OPT_F_* */
	__u8 sack_off;      /* offset of the SACK kind byte (the last SACK option, as Linux reads it) */
	__u8 sack_n;        /* its blocks (1..4); 0 = none, or a length Linux ignores too */
};

/* Read a big-endian u32 at @off of a header buffer (indices masked). */
static __always_inline __u32 brc_buf_be32(const __u8 *hdr, __u32 off)
{
	return ((__u32)hdr[off & (BRC_TCP_HDR_BUF - 1)] << 24) |
	       ((__u32)hdr[(off + 1) & (BRC_TCP_HDR_BUF - 1)] << 16) |
	       ((__u32)hdr[(off + 2) & (BRC_TCP_HDR_BUF - 1)] << 8) |
	       (__u32)hdr[(off + 3) & (BRC_TCP_HDR_BUF - 1)];
}

/* Write a big-endian u32 at @off of a header buffer (indices masked). */
static __always_inline void brc_buf_put_be32(__u8 *hdr, __u32 off, __u32 v)
{
	hdr[off & (BRC_TCP_HDR_BUF - 1)] = v >> 24;
	hdr[(off + 1) & (BRC_TCP_HDR_BUF - 1)] = v >> 16;
	hdr[(off + 2) & (BRC_TCP_HDR_BUF - 1)] = v >> 8;
	hdr[(off + 3) & (BRC_TCP_HDR_BUF - 1)] = v;
}

/* Walk the options of a TCP header held in @hdr (BRC_TCP_HDR_BUF bytes, the
 * first @thl valid). The walk visits every possible option position as a
 * constant (unrolled) and acts only where the next option starts, so the
 * verifier never sees a variable stack index and prunes the paths of different
 * option layouts into one: about 40 positions of straight code instead of a
 * loop whose states multiply (a variable-cursor loop took 750k verifier
 * instructions here). Fills @o; returns 0, or -1 when the options are
 * malformed (BRC_OPT_F_MALFORMED is then set too). */
/* One position @i of the walk: 0 = go on, 1 = stop (end of options), -1 = malformed. */
static __always_inline int brc__opt_step(const __u8 *hdr, __u32 thl, const __u32 i, __u32 *next,
					 struct brc_tcp_opts *o, const int sack)
{
	__u8 kind, len;

	if (i >= thl)
		return 1;
	if (i != *next)
		return 0;
	kind = hdr[i & (BRC_TCP_HDR_BUF - 1)];
	if (kind == BRC_TCPOPT_EOL)
		return 1;
	if (kind == BRC_TCPOPT_NOP) {
		*next = i + 1;
		return 0;
	}
	if (i + 1 >= thl)
		return -1;
	len = hdr[(i + 1) & (BRC_TCP_HDR_BUF - 1)];
	if (len < 2 || i + len > thl)
		return -1;
	if (kind == BRC_TCPOPT_MSS) {
		if (len != 4)
			return -1;
		o->mss = ((__u16)hdr[(i + 2) & (BRC_TCP_HDR_BUF - 1)] << 8) |
			 hdr[(i + 3) & (BRC_TCP_HDR_BUF - 1)];
		o->flags |= BRC_OPT_F_MSS;
	} else if (kind == BRC_TCPOPT_WSCALE) {
		if (len != 3)
			return -1;
		o->wscale = hdr[(i + 2) & (BRC_TCP_HDR_BUF - 1)];
		o->flags |= BRC_OPT_F_WSCALE;
	} else if (kind == BRC_TCPOPT_SACK_PERM) {
		if (len != 2)
			return -1;
		o->sackperm_off = i;
		o->flags |= BRC_OPT_F_SACK_PERM;
	} else if (kind == BRC_TCPOPT_SACK) {
		/* the last one, as Linux (tcp_parse_options) reads it; its length is
		 * checked once after the walk (this code is repeated 40 times) */
		o->flags |= BRC_OPT_F_SACK;
		if (sack) {
			o->sack_off = i;
			o->sack_n = len;
		}
	} else if (kind == BRC_TCPOPT_TS) {
		if (len != BRC_TCPOLEN_TS)
			return -1;
		o->ts_off = i;
		o->tsval = brc_buf_be32(hdr, i + 2);
		o->tsecr = brc_buf_be32(hdr, i + 6);
		o->flags |= BRC_OPT_F_TS;
	} else {
		o->flags |= BRC_OPT_F_OTHER;
	}
	*next = i + len;
	return 0;
}

static __always_inline int brc__opts_parse(const __u8 *hdr, __u32 thl, struct brc_tcp_opts *o,
					   const int sack)
{
	__u32 next = BRC_TCP_HDR_MIN;
	int r = 0;

	__builtin_memset(o, 0, sizeof(*o));
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX) {
		o->flags |= BRC_OPT_F_MALFORMED;
		return -1;
	}
	/* A copy of thl the verifier does not link to the caller's register: the
	 * caller's thl is precise (a helper size), and narrowing it at every
	 * position below would keep every path's state distinct. */
	asm volatile("%0 &= 0xff" : "+r"(thl));
	/* unrolled by hand: clang will not fully unroll a loop with an early exit */
#define BRC__OPT_STEP(i) if (!r) r = brc__opt_step(hdr, thl, i, &next, o, sack);
#define BRC__OPT_STEP4(i) BRC__OPT_STEP(i) BRC__OPT_STEP(i + 1) BRC__OPT_STEP(i + 2) BRC__OPT_STEP(i + 3)
	BRC__OPT_STEP4(20) BRC__OPT_STEP4(24) BRC__OPT_STEP4(28) BRC__OPT_STEP4(32) BRC__OPT_STEP4(36)
	BRC__OPT_STEP4(40) BRC__OPT_STEP4(44) BRC__OPT_STEP4(48) BRC__OPT_STEP4(52) BRC__OPT_STEP4(56)
#undef BRC__OPT_STEP4
#undef BRC__OPT_STEP
	/* sack_n holds the SACK option's length so far: Linux uses it only if it
	 * is 2 + 8n, n >= 1 (n <= 4 follows from the 40 option bytes) */
	if (o->sack_n >= 2 + BRC_TCPOLEN_SACK_BLOCK &&
	    ((o->sack_n - 2) & (BRC_TCPOLEN_SACK_BLOCK - 1)) == 0)
		o->sack_n = (o->sack_n - 2) / BRC_TCPOLEN_SACK_BLOCK;
	else
		o->sack_n = 0;
	if (r < 0) {
		o->flags |= BRC_OPT_F_MALFORMED;
		return -1;
	}
	return 0;
}

/* The walk, with the SACK option's place (sack_off, sack_n) found. */
static __always_inline int brc_tcp_opts_parse_buf(const __u8 *hdr, __u32 thl, struct brc_tcp_opts *o)
{
	return brc__opts_parse(hdr, thl, o, 1);
}

static __always_inline int brc__opts_load(struct __sk_buff *skb, __u32 l4_off, __u32 thl,
					  __u8 *hdr, struct brc_tcp_opts *o, const int sack);

/* Copy the TCP header at @l4_off (@thl bytes, 20..60) into @hdr and walk its
 * options into @o. Returns 0, -1 on malformed options, -2 if the load failed. */
static __always_inline int brc_tcp_opts_load(struct __sk_buff *skb, __u32 l4_off, __u32 thl,
					     __u8 *hdr, struct brc_tcp_opts *o)
{
	return brc__opts_load(skb, l4_off, thl, hdr, o, 1);
}

/* The same without the SACK option's place (sack_n stays 0): for callers that
 * drop the client's options anyway (tcp_reply.h's reply and RSTs). Recording
 * it costs little per walk, but these walks are inlined several times into
 * one program (brc_serve_in), which must stay within the 32k-instruction
 * jump range. */
static __always_inline int brc_tcp_opts_load_no_sack(struct __sk_buff *skb, __u32 l4_off, __u32 thl,
						     __u8 *hdr, struct brc_tcp_opts *o)
{
	return brc__opts_load(skb, l4_off, thl, hdr, o, 0);
}

static __always_inline int brc__opts_load(struct __sk_buff *skb, __u32 l4_off, __u32 thl,
					  __u8 *hdr, struct brc_tcp_opts *o, const int sack)
{
	__builtin_memset(o, 0, sizeof(*o));
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return -1;
	/* keep the bound on the register the helper sees */
	asm volatile("" : "+r"(thl));
	if (thl < BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return -1;
	if (bpf_skb_load_bytes(skb, l4_off, hdr, thl) < 0)
		return -2;
	return brc__opts_parse(hdr, thl, o, sack);
}

/* Set one byte of the TCP header (@off from its start) and fix the checksum
 * incrementally. Works at any alignment: it rewrites the 16-bit word holding the
 * byte, which is what the one's-complement sum is made of. */
static __always_inline int brc_tcp_set_byte(struct __sk_buff *skb, __u32 l4_off, __u32 off, __u8 val)
{
	__u32 word_off = l4_off + (off & ~1U);
	__u16 old, new;

	if (bpf_skb_load_bytes(skb, word_off, &old, sizeof(old)) < 0)
		return -1;
	/* memory order on the little-endian BPF target: byte 0 is the low half */
	if (off & 1)
		new = (old & 0x00ff) | ((__u16)val << 8);
	else
		new = (old & 0xff00) | val;
	if (new == old)
		return 0;
	if (bpf_skb_store_bytes(skb, word_off, &new, sizeof(new), 0) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, l4_off + BRC_TCP_CSUM_OFF, old, new, sizeof(new));
}

/* Set a big-endian u32 at @off of the TCP header, checksum fixed incrementally.
 * Even offsets take one 4-byte replace; odd ones go byte by byte. */
static __always_inline int brc_tcp_set_be32(struct __sk_buff *skb, __u32 l4_off, __u32 off, __u32 val)
{
	__u32 old, new = bpf_htonl(val);
	int i;

	if (!(off & 1)) {
		if (bpf_skb_load_bytes(skb, l4_off + off, &old, sizeof(old)) < 0)
			return -1;
		if (old == new)
			return 0;
		if (bpf_skb_store_bytes(skb, l4_off + off, &new, sizeof(new), 0) < 0)
			return -1;
		return bpf_l4_csum_replace(skb, l4_off + BRC_TCP_CSUM_OFF, old, new, sizeof(new));
	}
#pragma unroll
	for (i = 0; i < 4; i++)
		if (brc_tcp_set_byte(skb, l4_off, off + i, val >> (24 - 8 * i)) < 0)
			return -1;
	return 0;
}

/* On a client SYN: replace the SACK-permitted option found by the walk with two
 * NOPs, so the server never offers SACK. Returns 1 if rewritten, 0 if there was
 * none, <0 on a helper error. */
static __always_inline int brc_tcp_opts_strip_sackperm(struct __sk_buff *skb, __u32 l4_off,
						       const struct brc_tcp_opts *o)
{
	if (!(o->flags & BRC_OPT_F_SACK_PERM))
		return 0;
	if (brc_tcp_set_byte(skb, l4_off, o->sackperm_off, BRC_TCPOPT_NOP) < 0 ||
	    brc_tcp_set_byte(skb, l4_off, o->sackperm_off + 1, BRC_TCPOPT_NOP) < 0)
		return -1;
	return 1;
}

/* The SACK option found by the walk, in the header buffer it was walked in:
 * block @i (0..sack_n-1) starts at brc_tcp_opts_sack_block(o, i), its left
 * edge there and its right edge 4 bytes later (brc_buf_be32/brc_buf_put_be32). */
static __always_inline __u32 brc_tcp_opts_sack_block(const struct brc_tcp_opts *o, __u32 i)
{
	return o->sack_off + 2 + i * BRC_TCPOLEN_SACK_BLOCK;
}

/* Keep only the first @keep blocks of the walked SACK option in @hdr: its
 * length byte shrinks and the bytes of the blocks dropped become NOPs; with
 * none kept the whole option becomes NOPs. The header length never changes
 * (Linux reads NOPs after a SACK option, and no option at all, fine). */
static __always_inline void brc_tcp_opts_sack_keep(__u8 *hdr, const struct brc_tcp_opts *o, __u32 keep)
{
	__u32 n = o->sack_n, slot, off, j;

	if (keep >= n)
		return;
	if (keep) {
		hdr[(o->sack_off + 1) & (BRC_TCP_HDR_BUF - 1)] = 2 + keep * BRC_TCPOLEN_SACK_BLOCK;
	} else {
		hdr[o->sack_off & (BRC_TCP_HDR_BUF - 1)] = BRC_TCPOPT_NOP;
		hdr[(o->sack_off + 1) & (BRC_TCP_HDR_BUF - 1)] = BRC_TCPOPT_NOP;
	}
	/* a few branches per block slot, not per byte: the verifier walks this
	 * after the translation's own branches (tcp_reply.h's pure ACK too) */
#pragma clang loop unroll(disable)
	for (slot = 0; slot < BRC_SACK_BLOCKS_MAX; slot++) {
		if (slot < keep || slot >= n)
			continue;
		off = brc_tcp_opts_sack_block(o, slot);
#pragma unroll
		for (j = 0; j < BRC_TCPOLEN_SACK_BLOCK; j++)
			hdr[(off + j) & (BRC_TCP_HDR_BUF - 1)] = BRC_TCPOPT_NOP;
	}
}

/* Rewriting options in place through a header buffer: take the checksum seed
 * before changing @hdr (as loaded by brc_tcp_opts_load()), change the option
 * bytes in @hdr, then brc_tcp_opts_commit() stores the option area and fixes
 * the TCP checksum by the difference of the two sums (bpf_l4_csum_replace in
 * diff mode, no pseudo-header flag: right for CHECKSUM_PARTIAL skbs, whose
 * field holds only the pseudo-header sum, and for the others). The sums run
 * over all 40 option bytes of the buffer: bytes past the header length are
 * the same in both and cancel out. */
static __always_inline __u32 brc_tcp_opts_csum_begin(__u8 *hdr)
{
	return (__u32)bpf_csum_diff((__be32 *)(hdr + BRC_TCP_HDR_MIN), BRC_TCP_HDR_MAX - BRC_TCP_HDR_MIN,
				    NULL, 0, 0);
}

static __always_inline int brc_tcp_opts_commit(struct __sk_buff *skb, __u32 l4_off, __u32 thl,
					       __u8 *hdr, __u32 seed)
{
	__u32 diff;
	__u64 n;

	diff = (__u32)bpf_csum_diff(NULL, 0, (__be32 *)(hdr + BRC_TCP_HDR_MIN),
				    BRC_TCP_HDR_MAX - BRC_TCP_HDR_MIN, seed);
	if (thl <= BRC_TCP_HDR_MIN || thl > BRC_TCP_HDR_MAX)
		return -1;
	n = thl - BRC_TCP_HDR_MIN;
	/* the bound on the register the helper gets (clang merges the checks) */
	asm volatile("" : "+r"(n));
	if (n == 0 || n > BRC_TCP_HDR_MAX - BRC_TCP_HDR_MIN)
		return -1;
	if (bpf_skb_store_bytes(skb, l4_off + BRC_TCP_HDR_MIN, hdr + BRC_TCP_HDR_MIN, n, 0) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, l4_off + BRC_TCP_CSUM_OFF, 0, diff, 0);
}

/* Rewrite TSval/TSecr of the TS option found by the walk, in the skb, checksum
 * fixed incrementally. Returns 0, -1 without a TS option or on a helper error. */
static __always_inline int brc_tcp_opts_set_ts(struct __sk_buff *skb, __u32 l4_off,
					       const struct brc_tcp_opts *o, __u32 tsval, __u32 tsecr)
{
	if (!(o->flags & BRC_OPT_F_TS))
		return -1;
	if (brc_tcp_set_be32(skb, l4_off, o->ts_off + 2, tsval) < 0 ||
	    brc_tcp_set_be32(skb, l4_off, o->ts_off + 6, tsecr) < 0)
		return -1;
	return 0;
}

/* Options of an injected reply, in a header buffer: every option byte becomes a
 * NOP (SACK blocks or anything else of the client's would be wrong in the other
 * direction), then the TS option goes back at its old place with the given
 * values. The header length does not change. */
static __always_inline void brc_tcp_opts_reply_buf(__u8 *hdr, __u32 thl, const struct brc_tcp_opts *o,
						   __u32 tsval, __u32 tsecr)
{
	__u32 i;

#pragma unroll
	for (i = BRC_TCP_HDR_MIN; i < BRC_TCP_HDR_MAX; i++)
		if (i < thl)
			hdr[i] = BRC_TCPOPT_NOP;
	if (!(o->flags & BRC_OPT_F_TS))
		return;
	/* constant positions again: ts_off never becomes a stack index */
#pragma unroll
	for (i = BRC_TCP_HDR_MIN; i <= BRC_TCP_HDR_MAX - BRC_TCPOLEN_TS; i++) {
		if (i != o->ts_off)
			continue;
		hdr[i] = BRC_TCPOPT_TS;
		hdr[i + 1] = BRC_TCPOLEN_TS;
		brc_buf_put_be32(hdr, i + 2, tsval);
		brc_buf_put_be32(hdr, i + 6, tsecr);
	}
}

#endif /* BRC_TCP_OPTS_H */
