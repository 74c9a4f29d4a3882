/* SPDX-License-Identifier: GPL-2.0 */
/* Candidate layouts for brc_cache, same key/value shapes as the contract,
 * timed with BPF_PROG_TEST_RUN by cachebench.py. One program per
 * (map, operation); the key is drawn from N_KEYS with bpf_get_prandom_u32. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "brc_contract.h"

#define N_KEYS 4096
#define CAP 32768

struct locked_entry {
	struct bpf_spin_lock lock;
	__u32 klen;
	__u8 key[BRC_KEY_MAX];
	struct brc_cache_entry e;
};

struct bscratch {
	struct brc_cache_key k;
	struct brc_cache_entry e;
	__u64 sink;
};

BPF_TABLE("hash", struct brc_cache_key, struct brc_cache_entry, c_hash, CAP);
BPF_TABLE("lru_hash", struct brc_cache_key, struct brc_cache_entry, c_lru, CAP);
BPF_TABLE("percpu_hash", struct brc_cache_key, struct brc_cache_entry, c_pchash, CAP);
BPF_TABLE("lru_percpu_hash", struct brc_cache_key, struct brc_cache_entry, c_lrupc, CAP);
BPF_TABLE("array", __u32, struct locked_entry, c_array, CAP);
BPF_PERCPU_ARRAY(bs, struct bscratch, 1);

static __always_inline struct bscratch *pick(void)
{
	__u32 zero = 0, r = bpf_get_prandom_u32() % N_KEYS;
	struct bscratch *s = bs.lookup(&zero);

	if (!s)
		return 0;
	s->k.len = 16;
	*(__u32 *)s->k.key = r;
	return s;
}

static __always_inline __u32 slot_of(struct bscratch *s)
{
	return (*(__u32 *)s->k.key * 2654435761U) % CAP;
}

enum { C_HASH, C_LRU, C_PCHASH, C_LRUPC, C_ARRAY };

static __always_inline struct locked_entry *array_slot(struct bscratch *s)
{
	__u32 idx = slot_of(s);

	return c_array.lookup(&idx);
}

/* The map's number is a constant in each program, so the compiler keeps only that map's
 * branch: every program times one map, as a copy of its own would. */
static __always_inline int lookup(int map)
{
	struct bscratch *s = pick();
	struct brc_cache_entry *e = 0;
	struct locked_entry *l;

	if (!s)
		return 0;
	switch (map) {
	case C_HASH: e = c_hash.lookup(&s->k); break;
	case C_LRU: e = c_lru.lookup(&s->k); break;
	case C_PCHASH: e = c_pchash.lookup(&s->k); break;
	case C_LRUPC: e = c_lrupc.lookup(&s->k); break;
	case C_ARRAY:
		l = array_slot(s);
		if (!l)
			return 0;
		bpf_spin_lock(&l->lock);
		if (l->klen == s->k.len && *(__u32 *)l->key == *(__u32 *)s->k.key)
			__builtin_memcpy(s->e.reply, l->e.reply, BRC_VAL_MAX);
		bpf_spin_unlock(&l->lock);
		return 0;
	}
	if (e) {
		s->sink += e->len;
		__builtin_memcpy(s->e.reply, e->reply, BRC_VAL_MAX);
	}
	return 0;
}

static __always_inline int update(int map)
{
	struct bscratch *s = pick();
	struct locked_entry *l;

	if (!s)
		return 0;
	if (map != C_ARRAY)
		s->e.len = 9;
	switch (map) {
	case C_HASH: c_hash.update(&s->k, &s->e); break;
	case C_LRU: c_lru.update(&s->k, &s->e); break;
	case C_PCHASH: c_pchash.update(&s->k, &s->e); break;
	case C_LRUPC: c_lrupc.update(&s->k, &s->e); break;
	case C_ARRAY:
		l = array_slot(s);
		if (!l)
			return 0;
		bpf_spin_lock(&l->lock);
		l->klen = s->k.len;
		__builtin_memcpy(l->key, s->k.key, BRC_KEY_MAX);
		__builtin_memcpy(l->e.reply, s->e.reply, BRC_VAL_MAX);
		l->e.len = 9;
		bpf_spin_unlock(&l->lock);
		break;
	}
	return 0;
}

/* One program per (map, operation). bcc rewrites map calls only outside macros: they stay
 * in lookup() and update() above, and only the entry points come from the macro. */
#define PROGRAMS(name, map) \
	int lookup_##name(struct __sk_buff *skb) { return lookup(map); } \
	int update_##name(struct __sk_buff *skb) { return update(map); }

PROGRAMS(c_hash, C_HASH)
PROGRAMS(c_lru, C_LRU)
PROGRAMS(c_pchash, C_PCHASH)
PROGRAMS(c_lrupc, C_LRUPC)
PROGRAMS(c_array, C_ARRAY)
