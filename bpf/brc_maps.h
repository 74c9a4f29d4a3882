/* SPDX-License-Identifier: GPL-2.0 */
/* Every map the BRC programs use, in one place, with why it exists.
 *
 * Persistent maps (config, stats, histograms, cache, flows, versions) are
 * declared with BRC_PERSISTENT: when the loader passes -DBRC_PIN_DIR="<dir>",
 * they become BPF_TABLE_PINNED at <dir>/<name> (bcc reuses an existing pin
 * without checking its layout: module_utils/brc_bpf.py compares layouts
 * first). Scratch and tail-call maps belong to one build and are never pinned
 * by the programs (the caller pins the prog arrays next to the programs).
 * Sizes are #ifndef-overridable through bcc cflags; changing one changes the
 * declared layout, which the toolkit checks before reusing pins.
 */
#ifndef BRC_MAPS_H
#define BRC_MAPS_H

#include "brc_contract.h"

#ifdef BRC_PIN_DIR
#define BRC_PERSISTENT(type, k, v, name, n) \
	BPF_TABLE_PINNED(type, k, v, name, n, BRC_PIN_DIR "/" #name)
#define BRC_PERSISTENT_F(type, k, v, name, n, flags) \
	BPF_TABLE_PINNED(type, k, v, name, n, BRC_PIN_DIR "/" #name, flags)
#else
#define BRC_PERSISTENT(type, k, v, name, n) BPF_TABLE(type, k, v, name, n)
#define BRC_PERSISTENT_F(type, k, v, name, n, flags) BPF_F_TABLE(type, k, v, name, n, flags)
#endif

/* brc_config: the toolkit's settings, one entry at key 0 (read per packet). */
BRC_PERSISTENT("array", __u32, struct brc_config, brc_config, 1);

/* brc_stats: named counters, per CPU so the hot path never shares a line. */
BRC_PERSISTENT("percpu_array", __u32, __u64, brc_stats, BRC_STATS_SLOTS);

/* brc_latency: log2 histograms, request ingress to reply egress, per class. */
BRC_PERSISTENT("percpu_array", __u32, __u64, brc_latency, BRC_LAT__MAX * BRC_LAT_SLOTS);

#endif /* BRC_MAPS_H */
