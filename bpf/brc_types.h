/* SPDX-License-Identifier: GPL-2.0 */
/* Program-internal types (never cross the kernel/user boundary). */
#ifndef BRC_TYPES_H
#define BRC_TYPES_H

#include "brc_contract.h"

#ifndef BRC_CHUNK
#define BRC_CHUNK 32                /* payload bytes lexed per load (a power of 2) */
#endif

/* Per-CPU working memory: the payload cursor handed along the tail-call chain,
 * the chunk being lexed, and staging for values too big for the stack. */
struct brc_scratch {
	struct brc_flow_key fk;
	__u32 off;                  /* next payload byte to parse (frame offset) */
	__u32 end;                  /* one past the last payload byte */
	__u32 calls;                /* parser passes so far for this segment */
	__u64 now;                  /* bpf_ktime_get_ns() at the entry program */
	__u32 n;                    /* bytes loaded in buf */
	__u32 pos;                  /* lexer position in buf */
	__u8 buf[BRC_CHUNK];
	struct brc_cache_key ckey;
	struct brc_cmd_name cname;
	struct brc_subcmd_key subkey;
	struct brc_cache_entry entry;
	struct brc_expiry expiry;   /* a brc_expiry record, copied to be checked */
	struct brc_replybuf rb;
	__u32 src;                  /* request parser's bytes: 0 the skb, 1 the flow's brc_ooo */
	__u32 pad;
	struct brc_ooo ooo;         /* the value a new brc_ooo element is created from */
};

/* Addresses as the contract keeps them (BRC_ADDR_WORDS words, network order). */
static __always_inline void brc_addr_copy(__u32 *dst, const __u32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline int brc_addr_eq(const __u32 *a, const __u32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

#endif /* BRC_TYPES_H */
