/* SPDX-License-Identifier: GPL-2.0 */
/* The pinned-map contract between the BRC programs and the toolkit.
 *
 * This file is the single definition of everything that crosses the kernel/user
 * boundary: map names, key/value layouts, modes, counter names, histogram shape.
 * module_utils/brc_contract.py parses it (it does not keep a copy), so keep to the
 * forms it understands:
 *   - `#define BRC_NAME <integer>` constants,
 *   - `struct brc_x { __u32 a; __u64 b; __u8 c[16]; };` with fixed-width fields only,
 *   - one `X(NAME, "description")` per line inside the X-macro lists.
 * Counters are append-only: a retired counter keeps its slot (rename it RETIRED_n),
 * so stats read by an older toolkit stay meaningful. Changing any struct or map
 * shape changes the layout digest the toolkit computes, which makes an upgrade
 * refuse to reuse the pinned maps unless asked to reset them.
 */
#ifndef BRC_CONTRACT_H
#define BRC_CONTRACT_H

/* Modes, written to brc_config.mode by the toolkit; read per packet, so a mode
 * change needs no reload. */
#define BRC_MODE_OFF 0
#define BRC_MODE_OBSERVE 1
#define BRC_MODE_SERVE 2

/* Map names as seen by bpftool and as pinned under <pin_root>/<ifname>/. */
#define BRC_MAP_CONFIG "brc_config"
#define BRC_MAP_STATS "brc_stats"
#define BRC_MAP_LATENCY "brc_latency"

/* brc_config: ARRAY, one entry at key 0. Written by the toolkit only. */
struct brc_config {
	__u32 port;            /* Redis TCP port, host byte order */
	__u32 mode;            /* BRC_MODE_* */
	__u32 max_key_len;     /* keys longer than this are never cached (counted) */
	__u32 max_value_len;   /* values longer than this are never cached (counted) */
	__u64 max_age_ns;      /* entries older than this are treated as absent */
	__u32 verify_sample;   /* serve mode: 1 in N would-be hits still goes to Redis; 0 = none */
	__u32 require_auth;    /* 1 = Redis requires AUTH: unauthenticated flows never cached */
};

/* Counters: brc_stats is a PERCPU_ARRAY of BRC_STATS_SLOTS __u64 indexed by
 * BRC_C_<NAME>; the toolkit sums the CPUs and reports each under the lower-case
 * name. The capacity is fixed so that appending a counter keeps the map layout
 * (and the stats) across an upgrade. */
#define BRC_STATS_SLOTS 128
#define BRC_COUNTERS(X) \
	X(PKT_INGRESS, "TCP segments to the Redis port seen at ingress") \
	X(PKT_EGRESS, "TCP segments from the Redis port seen at egress")

#define BRC_COUNTER_ENUM(name, doc) BRC_C_##name,
enum brc_counter { BRC_COUNTERS(BRC_COUNTER_ENUM) BRC_C__MAX };
#undef BRC_COUNTER_ENUM
_Static_assert(BRC_C__MAX <= BRC_STATS_SLOTS, "raise BRC_STATS_SLOTS (a layout change)");

/* Latency histograms: brc_latency is a PERCPU_ARRAY of __u64 indexed by
 * class * BRC_LAT_SLOTS + slot, slot = log2(nanoseconds from request ingress to
 * reply egress), clamped to BRC_LAT_SLOTS - 1. */
#define BRC_LAT_SLOTS 40
#define BRC_LAT_CLASSES(X) \
	X(GET, "GET") \
	X(SET, "SET and its variants") \
	X(OTHER, "every other command")

#define BRC_LAT_ENUM(name, doc) BRC_LAT_##name,
enum brc_lat_class { BRC_LAT_CLASSES(BRC_LAT_ENUM) BRC_LAT__MAX };
#undef BRC_LAT_ENUM

#endif /* BRC_CONTRACT_H */
