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

/* bcc rewrites map calls only outside macros: one copy per map. */
int lookup_c_hash(struct __sk_buff *skb)
{
	struct bscratch *s = pick();
	struct brc_cache_entry *e;

	if (!s)
		return 0;
	e = c_hash.lookup(&s->k);
	if (e) {
		s->sink += e->len;
		__builtin_memcpy(s->e.reply, e->reply, BRC_VAL_MAX);
	}
	return 0;
}

int update_c_hash(struct __sk_buff *skb)
{
	struct bscratch *s = pick();

	if (!s)
		return 0;
	s->e.len = 9;
	c_hash.update(&s->k, &s->e);
	return 0;
}

int lookup_c_lru(struct __sk_buff *skb)
{
	struct bscratch *s = pick();
	struct brc_cache_entry *e;

	if (!s)
		return 0;
	e = c_lru.lookup(&s->k);
	if (e) {
		s->sink += e->len;
		__builtin_memcpy(s->e.reply, e->reply, BRC_VAL_MAX);
	}
	return 0;
}

int update_c_lru(struct __sk_buff *skb)
{
	struct bscratch *s = pick();

	if (!s)
		return 0;
	s->e.len = 9;
	c_lru.update(&s->k, &s->e);
	return 0;
}

int lookup_c_pchash(struct __sk_buff *skb)
{
	struct bscratch *s = pick();
	struct brc_cache_entry *e;

	if (!s)
		return 0;
	e = c_pchash.lookup(&s->k);
	if (e) {
		s->sink += e->len;
		__builtin_memcpy(s->e.reply, e->reply, BRC_VAL_MAX);
	}
	return 0;
}

int update_c_pchash(struct __sk_buff *skb)
{
	struct bscratch *s = pick();

	if (!s)
		return 0;
	s->e.len = 9;
	c_pchash.update(&s->k, &s->e);
	return 0;
}

int lookup_c_lrupc(struct __sk_buff *skb)
{
	struct bscratch *s = pick();
	struct brc_cache_entry *e;

	if (!s)
		return 0;
	e = c_lrupc.lookup(&s->k);
	if (e) {
		s->sink += e->len;
		__builtin_memcpy(s->e.reply, e->reply, BRC_VAL_MAX);
	}
	return 0;
}

int update_c_lrupc(struct __sk_buff *skb)
{
	struct bscratch *s = pick();

	if (!s)
		return 0;
	s->e.len = 9;
	c_lrupc.update(&s->k, &s->e);
	return 0;
}


int lookup_c_array(struct __sk_buff *skb)
{
	struct bscratch *s = pick();
	struct locked_entry *e;
	__u32 idx;

	if (!s)
		return 0;
	idx = slot_of(s);
	e = c_array.lookup(&idx);
	if (!e)
		return 0;
	bpf_spin_lock(&e->lock);
	if (e->klen == s->k.len && *(__u32 *)e->key == *(__u32 *)s->k.key)
		__builtin_memcpy(s->e.reply, e->e.reply, BRC_VAL_MAX);
	bpf_spin_unlock(&e->lock);
	return 0;
}

int update_c_array(struct __sk_buff *skb)
{
	struct bscratch *s = pick();
	struct locked_entry *e;
	__u32 idx;

	if (!s)
		return 0;
	idx = slot_of(s);
	e = c_array.lookup(&idx);
	if (!e)
		return 0;
	bpf_spin_lock(&e->lock);
	e->klen = s->k.len;
	__builtin_memcpy(e->key, s->k.key, BRC_KEY_MAX);
	__builtin_memcpy(e->e.reply, s->e.reply, BRC_VAL_MAX);
	e->e.len = 9;
	bpf_spin_unlock(&e->lock);
	return 0;
}
