/* SPDX-License-Identifier: GPL-2.0 */
/* Every map the BRC programs use, in one place, with why it exists.
 *
 * Persistent maps (config, stats, histograms, cache, flows, versions) are
 * declared with BRC_PERSISTENT: when the loader passes -DBRC_PIN_DIR="<dir>",
 * they become BPF_TABLE_PINNED at <dir>/<name> (bcc reuses an existing pin
 * without checking its layout: module_utils/brc_compile.py compares layouts
 * first). Scratch and tail-call maps belong to one build and are never pinned
 * by the programs (the caller pins the prog arrays next to the programs).
 * Sizes are #ifndef-overridable through bcc cflags; changing one changes the
 * declared layout, which the toolkit checks before reusing pins.
 */
#ifndef BRC_MAPS_H
#define BRC_MAPS_H

#include "brc_contract.h"
#include "brc_types.h"

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

/* brc_latency: log2 histograms, request ingress to reply egress, per command. */
BRC_PERSISTENT("percpu_array", __u32, __u64, brc_latency, BRC_LAT_COMMANDS * BRC_LAT_SLOTS);

#ifndef BRC_FLOWS_MAX
#define BRC_FLOWS_MAX 16384         /* tracked connections (Redis maxclients is 10000) */
#endif
#ifndef BRC_TRANSIENT_MAX
#define BRC_TRANSIENT_MAX 8192      /* half-open connections and closed served ones */
#endif
#ifndef BRC_CACHE_MAX
#define BRC_CACHE_MAX 32768         /* cache entries (LRU) */
#endif
#ifndef BRC_CACHE_MAP_TYPE
#define BRC_CACHE_MAP_TYPE "lru_hash" /* chosen by measurement: bpf/README.md */
#endif
#ifndef BRC_KEYVER_BUCKETS
#define BRC_KEYVER_BUCKETS 65536    /* key version buckets (a power of 2) */
#endif
#ifndef BRC_REPLYBUF_MAX
#define BRC_REPLYBUF_MAX 4096       /* tracked GET replies streaming at once */
#endif
#ifndef BRC_TTLKEYS_MAX
#define BRC_TTLKEYS_MAX 65536       /* keys with a TTL remembered exactly */
#endif

/* brc_flows: per-connection TCP and RESP state, from the SYN on. A plain hash:
 * an evicted live connection would lose its translation (a served one stalls)
 * and its write marks; when full, a new connection is just not tracked. */
BRC_PERSISTENT("hash", struct brc_flow_key, struct brc_flow, brc_flows, BRC_FLOWS_MAX);

/* brc_transient: connections that are not live in brc_flows: half-open ones
 * (SYN seen, no SYN-ACK yet: a SYN never answered, a flood or a filtered port,
 * must not take a slot of brc_flows for good) and closed served ones, kept only
 * to translate their last FIN/ACKs. An LRU: neither holds a mark, so losing
 * the oldest costs a late translation at most, never a live connection. */
BRC_PERSISTENT("lru_hash", struct brc_flow_key, struct brc_flow, brc_transient, BRC_TRANSIENT_MAX);

/* brc_cache: the shadow cache, key bytes -> exact reply bytes + versions. */
BRC_PERSISTENT(BRC_CACHE_MAP_TYPE, struct brc_cache_key, struct brc_cache_entry, brc_cache, BRC_CACHE_MAX);

/* brc_keyver: per-bucket write versions, in-flight marks, holds and TTL flags. */
BRC_PERSISTENT("array", __u32, struct brc_bucket, brc_keyver, BRC_KEYVER_BUCKETS);

/* brc_global: the version and in-flight count every entry also depends on. */
BRC_PERSISTENT("array", __u32, struct brc_global, brc_global, 1);

/* brc_replybuf: reply bytes of tracked GETs while they stream out. */
BRC_PERSISTENT("lru_hash", struct brc_flow_key, struct brc_replybuf, brc_replybuf, BRC_REPLYBUF_MAX);

#ifndef BRC_OOO_FLOWS
#define BRC_OOO_FLOWS 512           /* connections holding out-of-order bytes at once */
#endif

/* brc_ooo: client bytes after a sequence hole, per connection, until it fills. */
BRC_PERSISTENT("lru_hash", struct brc_flow_key, struct brc_ooo, brc_ooo, BRC_OOO_FLOWS);

#ifndef BRC_UNTRACKED_MAX
#define BRC_UNTRACKED_MAX 4096      /* untracked connections remembered for adoption */
#endif
#ifndef BRC_ADOPT_MAX
#define BRC_ADOPT_MAX 256           /* adoption tickets (freezes and proofs) at once */
#endif

/* Adoption (brc_contract.h): what the programs saw of untracked connections, and
 * the agent's tickets for them. */
BRC_PERSISTENT("lru_hash", struct brc_flow_key, struct brc_untracked, brc_untracked, BRC_UNTRACKED_MAX);
BRC_PERSISTENT("hash", struct brc_flow_key, struct brc_adopt, brc_adopt, BRC_ADOPT_MAX);

/* brc_ttlkeys: keys given a TTL (exact, not per bucket: a plain SET of one
 * key must not make another key's TTL forgotten). Not LRU: when full, the
 * key's bucket is marked for good instead. */
BRC_PERSISTENT("hash", struct brc_cache_key, __u64, brc_ttlkeys, BRC_TTLKEYS_MAX);

/* brc_served: the reply injected last on each served flow, for identical
 * resends (serve mode). Sized like brc_flows: one per flow. */
BRC_PERSISTENT("lru_hash", struct brc_flow_key, struct brc_served, brc_served, BRC_FLOWS_MAX);

#ifndef BRC_USERS_MAX
#define BRC_USERS_MAX 1024          /* ACL users the toolkit can describe */
#endif

/* brc_users: who Redis lets GET every key (the toolkit reads it from Redis). */
BRC_PERSISTENT("hash", struct brc_user_key, struct brc_user, brc_users, BRC_USERS_MAX);

/* brc_server: what the toolkit last read from Redis (auth epoch, timeout). */
BRC_PERSISTENT("array", __u32, struct brc_server, brc_server, 1);

/* brc_agent: the host agent's heartbeat and reports (written only by it). */
BRC_PERSISTENT("array", __u32, struct brc_agent, brc_agent, 1);

#ifndef BRC_TOUCHED_MAX
#define BRC_TOUCHED_MAX 4096        /* answered keys waiting for the agent's TOUCH */
#endif

/* brc_touched: keys answered in the kernel, for the agent to TOUCH in Redis. */
BRC_PERSISTENT("lru_hash", struct brc_cache_key, __u64, brc_touched, BRC_TOUCHED_MAX);

#ifndef BRC_EXPIRY_MAX
#define BRC_EXPIRY_MAX BRC_CACHE_MAX    /* one expiry record per cacheable entry */
#endif
#ifndef BRC_EXPIRY_WANTED_MAX
#define BRC_EXPIRY_WANTED_MAX 4096  /* keys waiting for the agent to read their expiry */
#endif

/* brc_expiry: Redis's deadline of each key, as the agent read it (fills need it). */
BRC_PERSISTENT("lru_hash", struct brc_cache_key, struct brc_expiry, brc_expiry, BRC_EXPIRY_MAX);

/* brc_expiry_wanted: keys a fill waits on, for the agent to read their expiry. */
BRC_PERSISTENT("lru_hash", struct brc_cache_key, __u64, brc_expiry_wanted, BRC_EXPIRY_WANTED_MAX);

/* brc_cmds: the Redis command table (build-owned, filled by the loader). */
BPF_TABLE("hash", struct brc_cmd_name, struct brc_cmd, brc_cmds, 512);

/* brc_subcmds: what a subcommand of CLIENT, CONFIG, ACL means (build-owned). */
BPF_TABLE("hash", struct brc_subcmd_key, struct brc_subcmd, brc_subcmds, 64);

/* brc_jmp: parser continuations and the serve path (build-owned; the caller pins it). */
BPF_PROG_ARRAY(brc_jmp, BRC_JMP__MAX);

/* brc_flow_zero: never written; a new flow starts as a copy of it (a flow is
 * too big to clear in a program). */
BPF_ARRAY(brc_flow_zero, struct brc_flow, 1);

/* brc_scratch: per-CPU working memory (the stack is 512 bytes). */
BPF_PERCPU_ARRAY(brc_scratch, struct brc_scratch, 1);

#endif /* BRC_MAPS_H */
