/* SPDX-License-Identifier: GPL-2.0 */
/* Counters and latency histograms (names and shapes live in brc_contract.h). */
#ifndef BRC_STATS_H
#define BRC_STATS_H

#include "brc_maps.h"

/* Add @n to counter BRC_C_<name> on this CPU. */
static __always_inline void brc_count_n(__u32 counter, __u64 n)
{
	__u64 *v = brc_stats.lookup(&counter);

	if (v)
		*v += n;
}
#define brc_count(c) brc_count_n(BRC_C_##c, 1)

/* floor(log2(v)) for v > 0, 0 for v == 0; branch-free enough for the verifier. */
static __always_inline __u32 brc_log2(__u64 v)
{
	__u32 r = 0, s;

	s = (v > 0xFFFFFFFFULL) << 5; v >>= s; r |= s;
	s = (v > 0xFFFF) << 4; v >>= s; r |= s;
	s = (v > 0xFF) << 3; v >>= s; r |= s;
	s = (v > 0xF) << 2; v >>= s; r |= s;
	s = (v > 0x3) << 1; v >>= s; r |= s;
	r |= (v >> 1);
	return r;
}

/* Record one request/reply latency of @ns nanoseconds for command id @id. */
static __always_inline void brc_latency_add(__u32 id, __u64 ns)
{
	__u32 slot = brc_log2(ns);
	__u32 idx;
	__u64 *v;

	if (slot > BRC_LAT_SLOTS - 1)
		slot = BRC_LAT_SLOTS - 1;
	if (id >= BRC_LAT_COMMANDS)
		id = BRC_LAT_ID_OTHER;
	idx = id * BRC_LAT_SLOTS + slot;
	v = brc_latency.lookup(&idx);
	if (v)
		*v += 1;
}

/* The configuration, or NULL when the toolkit has not written one. */
static __always_inline struct brc_config *brc_get_config(void)
{
	__u32 zero = 0;

	return brc_config.lookup(&zero);
}

#endif /* BRC_STATS_H */
