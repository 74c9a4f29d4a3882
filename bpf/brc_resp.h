/* SPDX-License-Identifier: GPL-2.0 */
/* RESP, both directions: resumable lexers that keep every bit of state in the
 * flow (a command or reply may be split at any byte across segments), and the
 * handlers for what they find (argument, command, reply complete).
 *
 * Parity with Redis 7.0 (networking.c processInlineBuffer/processMultibulkBuffer):
 * the first byte of a command decides its type ('*' multibulk, anything else
 * inline); numbers are read as string2ll reads them (no sign, no leading zero);
 * an inline command is followed only within the subset BRC reads exactly as
 * Redis does (printable ASCII words separated by spaces, a line ending in \n or
 * \r\n); anything else gives the connection up. Where Redis is lenient and
 * BRC is not (a CR that is not followed by LF), the connection is given up,
 * never read differently.
 *
 * Lexers read one chunk (BRC_CHUNK bytes loaded with bpf_skb_load_bytes) and
 * stop at the first event; bulk data that needs no reading (values, long
 * arguments past what is kept) is skipped without loading it. Return contract
 * of both lexers: an enum brc_ev; sc->pos = bytes of the chunk consumed.
 *
 * State changes (SELECT, AUTH, HELLO ... AUTH, RESET, and a plain SET clearing
 * a TTL) are recorded at the request and applied only when Redis's reply says
 * they happened; a failed one changes nothing.
 */
#ifndef BRC_RESP_H
#define BRC_RESP_H

#include "brc_cache.h"

/* Request lexer states (brc_flow.rq_state). */
enum brc_rq_state {
	BRC_RQ_IDLE = 0,        /* between commands */
	BRC_RQ_ARRLEN,          /* after '*': digits */
	BRC_RQ_ARRLEN_LF,
	BRC_RQ_BULKHDR,         /* expecting '$' */
	BRC_RQ_BULKLEN,         /* after '$': digits */
	BRC_RQ_BULKLEN_LF,
	BRC_RQ_BULK,            /* argument bytes being read */
	BRC_RQ_BULK_SKIP,       /* argument bytes skipped unread */
	BRC_RQ_BULK_CR,
	BRC_RQ_BULK_LF,
	BRC_RQ_INLINE,          /* inline command: space-separated words to '\n' */
	BRC_RQ_INLINE_CR,       /* inline: '\r' seen, only '\n' may follow */
	BRC_RQ_LOST,            /* cannot follow: the flow is given up */
};

/* Reply lexer states (brc_flow.rp_state). RESP3's types are followed only on a
 * connection Redis answered HELLO 3 (brc_flow.rp_proto): in RESP2 they are not
 * RESP, and in RESP3 the negative lengths of RESP2's nils are not. */
enum brc_rp_state {
	BRC_RP_IDLE = 0,        /* expecting a type byte */
	BRC_RP_LINE,            /* +simple, -error, :integer (RESP3 also _ , # ( ) up to '\r' */
	BRC_RP_LINE_LF,
	BRC_RP_BULKLEN,         /* after '$' (RESP3 also '!' blob error, '=' verbatim) */
	BRC_RP_BULKLEN_LF,
	BRC_RP_ARRLEN,          /* after '*' */
	BRC_RP_ARRLEN_LF,
	BRC_RP_AGGLEN,          /* RESP3: after % map, ~ set, > push, | attribute */
	BRC_RP_AGGLEN_LF,
	BRC_RP_BULK,            /* bulk data: skipped or copied, never lexed */
	BRC_RP_BULK_CR,
	BRC_RP_BULK_LF,
	BRC_RP_LOST,
};

enum brc_ev {
	BRC_EV_MORE = 0,        /* chunk used up */
	BRC_EV_SKIP,            /* entered a bulk state handled without lexing */
	BRC_EV_LOST,            /* not RESP: the flow is given up */
	BRC_EV_ARG,             /* request: an argument is complete, more follow */
	BRC_EV_ARG_END,         /* request: the last argument is complete */
	BRC_EV_END,             /* request: command complete (inline, no open argument) */
	BRC_EV_POP,             /* reply: the last element of an aggregate is complete */
	BRC_EV_REPLY,           /* reply: a top-level reply is complete */
	BRC_EV_NOT_REPLY,       /* reply: a top-level push or attribute is complete (owes nothing) */
	BRC_EV_TYPE3,           /* reply: a type byte RESP2 does not have (in rp_agg) */
	BRC_EV_AGG,             /* reply: a RESP3 aggregate header is complete */
	BRC_EV_LOST_INLINE,     /* request: an inline command BRC does not read as Redis does */
};

#define BRC_CF_TTL 1            /* this command gives its key a TTL */
#define BRC_CF_AUTH 2           /* HELLO ... AUTH user pass */
#define BRC_CF_SERVER 4         /* may change users, rights or the server's role */
#define BRC_CF_BAD 8            /* Redis will refuse it (syntax): it changes nothing */
#define BRC_CF_DIGIT 16         /* a digit of the number being read was seen */

/* Where the option walk of HELLO is (brc_flow.rq_opt). */
#define BRC_OPT_NONE 0
#define BRC_OPT_USER 1          /* this argument is AUTH's user name */
#define BRC_OPT_PASS 2          /* this argument is a password: never read */
#define BRC_OPT_NAME 3          /* this argument is SETNAME's name */

#define BRC_MAX_MULTIBULK (1024 * 1024)         /* Redis's own limits */
#define BRC_MAX_BULK (512U * 1024 * 1024)

/* rp_stack entries: the elements an open aggregate still holds, and what it is.
 * A push is not a reply and an attribute is not an element of its parent: both
 * describe what follows or arrives between replies. */
#define BRC_RP_AGG_PUSH (1U << 31)
#define BRC_RP_AGG_ATTR (1U << 30)
#define BRC_RP_AGG_COUNT (BRC_RP_AGG_ATTR - 1)
_Static_assert(BRC_MAX_BULK + 9 <= BRC_RP_AGG_COUNT, "an aggregate's length fits an rp_stack entry");

/* The first bytes of a reply as rp_head holds them (little-endian). */
#define BRC_HEAD_OK 0x0a0d4b4f2bULL             /* "+OK\r\n" */

_Static_assert(BRC_USER_MAX == BRC_KEY_MAX, "a chg_buf slot holds a key or a user name");
_Static_assert(BRC_CHG_BUF == BRC_CHG_RING * BRC_KEY_MAX, "one chg_buf slot per ring entry");

/* ---- request side ------------------------------------------------------ */

/* Give @f up for @bit (an enum brc_dirty_bit other than MULTI). */
static __always_inline void brc_giveup(struct brc_flow *f, __u32 bit)
{
	brc_dirty(f, bit);
}

/* The request parser cannot follow this flow any more: its writes are now
 * invisible, so it invalidates everything and holds a global mark until it
 * closes. */
static __always_inline void brc_rq_lost(struct brc_flow *f, __u32 bit)
{
	f->rq_state = BRC_RQ_LOST;
	brc_giveup(f, bit);
	brc_mark_global(f, f->sent, 1);
}

/* The server's SYN-ACK answered half-open flow @syn: it becomes a tracked
 * connection in brc_flows (not tracked when that is full). Returns it, or NULL. */
static __always_inline struct brc_flow *brc_flow_established(struct brc_scratch *sc, struct brc_flow *syn)
{
	struct brc_global *g = brc_get_global();
	struct brc_flow *f;
	__u64 busy;

	if (!g)
		return 0;
	if (brc_flows.insert(&sc->fk, syn) != 0) {
		brc_count(FLOWS_TABLE_FULL);
		brc_transient.delete(&sc->fk);
		return 0;
	}
	brc_transient.delete(&sc->fk);
	f = brc_flows.lookup(&sc->fk);
	if (!f)
		return 0;
	/* the copy took the half-open entry's lock too, which a CPU releases
	 * there (a retransmitted SYN beside this SYN-ACK): not ours to keep */
	busy = f->in_busy;
	if (busy)
		__sync_val_compare_and_swap(&f->in_busy, busy, 0);
	__sync_fetch_and_add(&g->flows_live, 1);
	brc_count(FLOWS_TRACKED);
	if (f->rq_state == BRC_RQ_LOST)
		brc_mark_global(f, f->sent, 0);         /* TFO data: its later writes are unparsed too */
	return f;
}

/* Data of half-open @f (on the SYN: TCP Fast Open; before the SYN-ACK): bytes
 * BRC did not parse may carry writes. A half-open flow holds no marks
 * (brc_transient may lose it), so everything is invalidated and held for a while,
 * and the connection is given up (@bit) with its parser stopped. */
static __always_inline void brc_flow_unparsed_data(struct brc_scratch *sc, struct brc_flow *f, __u32 bit)
{
	struct brc_global *g = brc_get_global();

	f->rq_state = BRC_RQ_LOST;
	brc_dirty(f, bit);
	if (!g)
		return;
	brc_hold_until(g, sc->now + BRC_UNTRACKED_LEASE_NS);
	brc_bump_global(g);
}

/* Is argument @i a key position of the current command? */
static __always_inline int brc_rq_is_key(const struct brc_flow *f, __u32 i)
{
	if (f->rq_kind != BRC_K_READ && f->rq_kind != BRC_K_WRITE)
		return 0;
	if (i < f->rq_first || f->rq_first == 0)
		return 0;
	if (f->rq_last != 255 && i > f->rq_last)
		return 0;
	if (f->rq_step > 1 && ((i - f->rq_first) % f->rq_step) != 0)
		return 0;
	return 1;
}

/* Is the current argument the user name of an AUTH or HELLO ... AUTH? */
static __always_inline int brc_rq_is_user(const struct brc_flow *f)
{
	if (f->rq_special == BRC_SP_AUTH)
		return f->rq_argi == 1 && f->rq_argc == 3;
	return f->rq_special == BRC_SP_HELLO && f->rq_opt == BRC_OPT_USER;
}

/* May the current argument's bytes be read? Never for passwords and secrets. */
static __always_inline int brc_rq_readable(const struct brc_flow *f)
{
	__u32 sp = f->rq_special;

	if (f->rq_argi == 0)
		return 1;
	if (sp == BRC_SP_SECRET)
		return 0;
	if (sp == BRC_SP_AUTH)
		return brc_rq_is_user(f);
	if (sp == BRC_SP_HELLO)
		return f->rq_opt != BRC_OPT_PASS;
	if (sp == BRC_SP_CONFIG || sp == BRC_SP_ACL)
		return f->rq_argi == 1;         /* the subcommand; its values may be secrets */
	return 1;
}

/* Does brc_rq_arg_done() read argument f->rq_argi (a key, @key)? The name,
 * keys, and the arguments of commands it interprets; not the other arguments
 * of a plain command (MGET's, EXISTS's, a HSET's fields), nor a SET's value:
 * those are skipped unlexed, for traffic BRC does not answer to cost little. */
static __always_inline int brc_rq_arg_needed(const struct brc_flow *f, __u32 key)
{
	if (f->rq_argi == 0 || key)
		return 1;
	if (f->rq_special == BRC_SP_SET)
		return f->rq_argi != 2;
	return f->rq_special != BRC_SP_NONE;
}

/* Set up reading of argument f->rq_argi (outside the lexer loop). */
static __always_inline void brc_rq_arg_setup(struct brc_flow *f)
{
	__u32 key = f->rq_argi > 0 && brc_rq_is_key(f, f->rq_argi);

	f->rq_copy = (key && f->rq_argi == f->rq_keyarg) || brc_rq_is_user(f);
	if (f->rq_copy)
		__builtin_memset(f->rq_key, 0, BRC_KEY_MAX);    /* zero-padded after its length */
	if (!brc_rq_readable(f) || !brc_rq_arg_needed(f, key))
		f->rq_keep = 0;
	else if (key || f->rq_copy)
		f->rq_keep = BRC_KEY_MAX;
	else
		f->rq_keep = BRC_TOK_LEN + 1;   /* one more than kept: tells "too long" apart */
}

/* Start an argument (inside the lexer loop: keep it small). */
static __always_inline void brc_rq_arg_begin(struct brc_flow *f)
{
	f->rq_arglen = 0;
	f->rq_hash = BRC_FNV_BASIS;
}

static __always_inline void brc_rq_arg_byte(struct brc_flow *f, __u8 c)
{
	__u32 len = f->rq_arglen;

	f->rq_arglen = len + 1;
	if (len >= f->rq_keep)
		return;
	if (len < BRC_TOK_LEN)
		f->rq_tok[len & (BRC_TOK_LEN - 1)] = (c >= 'a' && c <= 'z') ? c - 32 : c;
	f->rq_hash = (f->rq_hash ^ c) * BRC_FNV_PRIME;
	if (f->rq_copy)
		f->rq_key[len & (BRC_KEY_MAX - 1)] = c;
}

/* The first @n (<= 8) bytes of @s as a little-endian word: folds to a constant. */
static __always_inline __u64 brc_str8(const char *s, __u32 n)
{
	__u64 v = 0;
	__u32 i;

#pragma clang loop unroll(full)
	for (i = 0; i < 8; i++)
		if (i < n)
			v |= (__u64)(__u8)s[i] << (i * 8);
	return v;
}

/* Is the current argument exactly @s (@n <= 8 bytes, upper case)? One word
 * compare: a byte loop here is merged by clang into a loop the verifier
 * cannot bound. */
static __always_inline int brc_tok_is(const struct brc_flow *f, const char *s, __u32 n)
{
	__u64 mask = n >= 8 ? ~0ULL : (1ULL << (n * 8)) - 1;

	return f->rq_arglen == n && (*(const __u64 *)f->rq_tok & mask) == brc_str8(s, n);
}

/* Read @p from memory, hiding from clang and the verifier what was stored
 * there: the lexers keep their position in memory so that every loop
 * iteration looks the same to the verifier (linear, not combinatorial, cost). */
static __always_inline __u32 brc_reload(volatile __u32 *p)
{
	__u32 v = *p;

	asm volatile("" : "+r"(v));
	return v;
}

/* Take the next byte of the chunk being lexed: 0 and its index in @i and the
 * byte in @c, or -1 at the chunk's end. */
static __always_inline int brc_chunk_next(struct brc_scratch *sc, __u32 *i, __u8 *c)
{
	*i = brc_reload(&sc->pos);
	if (*i >= brc_reload(&sc->n))
		return -1;
	*c = sc->buf[*i & (BRC_CHUNK - 1)];
	sc->pos = *i + 1;
	return 0;
}

/* A word byte of an inline command as BRC follows it: printable ASCII, no quote. */
static __always_inline int brc_inline_word_byte(__u8 c)
{
	return c > ' ' && c < 0x7f && c != '"' && c != '\'';
}

/* One digit of a RESP length as string2ll reads it: no leading zero. */
static __always_inline int brc_rq_digit(struct brc_flow *f, __u8 c)
{
	if ((f->rq_cflags & BRC_CF_DIGIT) && f->rq_num == 0)
		return -1;      /* "0" followed by a digit */
	if (f->rq_num > BRC_MAX_BULK / 10)
		return -1;
	f->rq_num = f->rq_num * 10 + (c - '0');
	f->rq_cflags |= BRC_CF_DIGIT;
	return 0;
}

/* Lex request bytes sc->buf[sc->pos..sc->n). */
static __always_inline int brc_rq_lex(struct brc_flow *f, struct brc_scratch *sc)
{
	__u32 k, i;
	__u8 c;

	for (k = 0; k < BRC_CHUNK; k++) {
		if (brc_chunk_next(sc, &i, &c))
			break;
		switch (f->rq_state) {
		case BRC_RQ_IDLE:
			f->rq_argi = 0;
			f->rq_opt = BRC_OPT_NONE;
			f->rq_keep = BRC_TOK_LEN + 1;
			f->rq_copy = 0;
			f->rq_num = 0;
			f->rq_cflags = 0;
			if (c == '*') {
				f->rq_state = BRC_RQ_ARRLEN;
				f->rq_inline = 0;
				break;
			}
			/* anything else starts an inline command, as in Redis */
			f->rq_inline = 1;
			f->rq_argc = 0;
			brc_rq_arg_begin(f);
			if (c == '\n')
				f->rq_state = BRC_RQ_IDLE;      /* an empty line: Redis runs nothing */
			else if (c == '\r')
				f->rq_state = BRC_RQ_INLINE_CR;
			else if (c == ' ')
				f->rq_state = BRC_RQ_INLINE;
			else if (brc_inline_word_byte(c)) {
				f->rq_state = BRC_RQ_INLINE;
				brc_rq_arg_byte(f, c);
			} else
				goto lost_inline;
			break;
		case BRC_RQ_ARRLEN:
		case BRC_RQ_BULKLEN:
			if (c >= '0' && c <= '9') {
				if (brc_rq_digit(f, c) < 0)
					goto lost;
			} else if (c == '\r' && (f->rq_cflags & BRC_CF_DIGIT)) {
				f->rq_state += 1;       /* ARRLEN_LF / BULKLEN_LF */
			} else {
				goto lost;              /* a sign, a blank, nothing: not as Redis reads it */
			}
			break;
		case BRC_RQ_ARRLEN_LF:
			if (c != '\n' || f->rq_num > BRC_MAX_MULTIBULK)
				goto lost;
			if (f->rq_num == 0) {
				f->rq_state = BRC_RQ_IDLE;      /* "*0": Redis runs nothing */
				break;
			}
			f->rq_argc = f->rq_num;
			f->rq_state = BRC_RQ_BULKHDR;
			break;
		case BRC_RQ_BULKHDR:
			if (c != '$')
				goto lost;
			f->rq_num = 0;
			f->rq_cflags &= ~BRC_CF_DIGIT;
			f->rq_state = BRC_RQ_BULKLEN;
			break;
		case BRC_RQ_BULKLEN_LF:
			if (c != '\n' || f->rq_num > BRC_MAX_BULK)
				goto lost;
			brc_rq_arg_begin(f);
			f->rq_left = f->rq_num;
			if (f->rq_left == 0) {
				f->rq_state = BRC_RQ_BULK_CR;
			} else if (f->rq_keep == 0 && f->rq_left > brc_reload(&sc->n) - i - 1) {
				f->rq_state = BRC_RQ_BULK_SKIP;
				return BRC_EV_SKIP;
			} else if (f->rq_keep == 0) {
				/* unread and within this chunk: jump to its CR */
				sc->pos = i + 1 + f->rq_left;
				f->rq_arglen = f->rq_left;
				f->rq_left = 0;
				f->rq_state = BRC_RQ_BULK_CR;
			} else {
				f->rq_state = BRC_RQ_BULK;
			}
			break;
		case BRC_RQ_BULK:
			brc_rq_arg_byte(f, c);
			f->rq_left -= 1;
			if (f->rq_left == 0) {
				f->rq_state = BRC_RQ_BULK_CR;
			} else if (f->rq_arglen >= f->rq_keep &&
				   f->rq_left > brc_reload(&sc->n) - i - 1) {
				f->rq_state = BRC_RQ_BULK_SKIP;
				return BRC_EV_SKIP;
			}
			break;
		case BRC_RQ_BULK_CR:
			if (c != '\r')
				goto lost;
			f->rq_state = BRC_RQ_BULK_LF;
			break;
		case BRC_RQ_BULK_LF:
			if (c != '\n')
				goto lost;
			if (f->rq_argi + 1 >= f->rq_argc) {
				f->rq_state = BRC_RQ_IDLE;
				return BRC_EV_ARG_END;
			}
			f->rq_num = 0;
			f->rq_cflags &= ~BRC_CF_DIGIT;
			f->rq_state = BRC_RQ_BULKHDR;
			return BRC_EV_ARG;
		case BRC_RQ_INLINE:
		case BRC_RQ_INLINE_CR:
			if (c == '\n') {
				f->rq_state = BRC_RQ_IDLE;
				if (f->rq_arglen)
					return BRC_EV_ARG_END;
				if (f->rq_argi)
					return BRC_EV_END;
				break;                  /* only blanks: Redis runs nothing */
			}
			if (f->rq_state == BRC_RQ_INLINE_CR)
				goto lost_inline;       /* Redis splits the line here; BRC does not follow */
			if (c == '\r') {
				f->rq_state = BRC_RQ_INLINE_CR;
			} else if (c == ' ') {
				if (f->rq_arglen)
					return BRC_EV_ARG;
			} else if (brc_inline_word_byte(c)) {
				brc_rq_arg_byte(f, c);
			} else {
				goto lost_inline;
			}
			break;
		default:
			goto lost;
		}
	}
	return BRC_EV_MORE;
lost:
	return BRC_EV_LOST;
lost_inline:
	return BRC_EV_LOST_INLINE;
}

/* The current argument as a table key (upper-cased, zero-padded to
 * BRC_TOK_LEN) in @name. Returns 0 when no table can hold it: empty, longer
 * than BRC_TOK_LEN, or with a NUL byte (Redis's own lookup would not match). */
static __always_inline int brc_tok_key(const struct brc_flow *f, __u8 *name)
{
	const __u64 ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	__u64 w0 = *(const __u64 *)f->rq_tok, w1 = *(const __u64 *)(f->rq_tok + 8);
	__u64 m0 = ~0ULL, m1 = ~0ULL, v0, v1;
	__u32 n = f->rq_arglen;

	if (n == 0 || n > BRC_TOK_LEN)
		return 0;
	if (n < 8)
		m0 = (1ULL << (n * 8)) - 1;
	if (n <= 8)
		m1 = 0;
	else if (n < 16)
		m1 = (1ULL << ((n - 8) * 8)) - 1;
	w0 &= m0;
	w1 &= m1;
	/* a zero byte inside the argument: bytes past it read as 0xff here */
	v0 = w0 | ~m0;
	v1 = w1 | ~m1;
	if (((v0 - ones) & ~v0 & highs) | ((v1 - ones) & ~v1 & highs))
		return 0;
	*(__u64 *)name = w0;
	*(__u64 *)(name + 8) = w1;
	return 1;
}

/* Argument 0 is complete: look the command up. */
static __always_inline void brc_rq_cmd_begin(struct brc_scratch *sc, struct brc_flow *f)
{
	struct brc_cmd *cmd = 0;

	if (brc_tok_key(f, sc->cname.name))
		cmd = brc_cmds.lookup(&sc->cname);
	f->rq_cflags = 0;
	f->rq_opt = BRC_OPT_NONE;
	f->rq_key_len = 0;
	f->rq_key_bucket = 0;
	f->rq_val = BRC_DB_INVALID;
	if (!cmd) {
		/* its replies and keys are unknown: everything may change */
		f->rq_kind = BRC_K_UNKNOWN;
		f->rq_special = BRC_SP_NONE;
		f->rq_group = BRC_REQ_OTHER;
		f->rq_cmd = BRC_LAT_ID_OTHER;
		brc_rq_lost(f, BRC_DIRTY_BIT_UNKNOWN);
		return;
	}
	f->rq_kind = cmd->kind;
	f->rq_first = cmd->first;
	f->rq_last = cmd->last;
	f->rq_step = cmd->step;
	f->rq_special = cmd->special;
	f->rq_group = cmd->group;
	f->rq_cmd = cmd->id;
	f->rq_keyarg = cmd->special == BRC_SP_CARRY_TTL ? 2 : 1;
	if (f->rq_inline && !(cmd->flags & BRC_CMDF_INLINE)) {
		/* inline AUTH, SELECT, CONFIG ...: people type them, not programs, and
		 * their arity (which argument is a secret) is not known in advance.
		 * Where an argument may be a secret, nothing more is read. */
		if (cmd->special == BRC_SP_AUTH || cmd->special == BRC_SP_HELLO ||
		    cmd->special == BRC_SP_CONFIG || cmd->special == BRC_SP_ACL ||
		    cmd->special == BRC_SP_SECRET) {
			brc_rq_lost(f, BRC_DIRTY_BIT_STATE);
			return;
		}
		brc_giveup(f, BRC_DIRTY_BIT_STATE);
	}
	if (f->rq_kind == BRC_K_GLOBAL)
		brc_mark_global(f, f->sent, 1);
	switch (f->rq_special) {
	case BRC_SP_MULTI:
		brc_dirty(f, BRC_DIRTY_BIT_MULTI);
		break;
	case BRC_SP_SUBSCRIBE:
		brc_giveup(f, BRC_DIRTY_BIT_PUBSUB);
		break;
	case BRC_SP_MONITOR:
		brc_giveup(f, BRC_DIRTY_BIT_MONITOR);
		break;
	case BRC_SP_REPLICATION:
		brc_giveup(f, BRC_DIRTY_BIT_REPLICATION);
		break;
	case BRC_SP_SERVER:
		f->rq_cflags |= BRC_CF_SERVER;
		break;
	}
}

/* Argument 1 of CLIENT, CONFIG or ACL is complete: what it means (brc_subcmds). */
static __always_inline void brc_rq_subcommand(struct brc_scratch *sc, struct brc_flow *f)
{
	struct brc_subcmd *sub = 0;
	__u32 action;

	sc->subkey.special = f->rq_special;
	if (brc_tok_key(f, sc->subkey.name))
		sub = brc_subcmds.lookup(&sc->subkey);
	action = sub ? sub->action : 0;
	if (action == BRC_SUB_GIVEUP_REPLY)
		brc_giveup(f, BRC_DIRTY_BIT_CLIENT_REPLY);
	else if (action == BRC_SUB_GIVEUP_TRACKING)
		brc_giveup(f, BRC_DIRTY_BIT_TRACKING);
	else if (action != BRC_SUB_READ_ONLY && f->rq_special != BRC_SP_CLIENT)
		f->rq_cflags |= BRC_CF_SERVER;
}

/* Read the current argument as a SELECT index the way Redis does (string2ll,
 * then a range check): digits, no sign, no leading zero. BRC_DB_INVALID when
 * BRC cannot read it so; Redis refuses most of those, and accepting one of
 * them gives the connection up. */
static __always_inline __u32 brc_rq_db_index(const struct brc_flow *f)
{
	__u32 i, v = 0, n = f->rq_arglen;
	__u32 ok = n > 0 && n <= 8 && (n == 1 || f->rq_tok[0] != '0');

	/* no early exit: the loop must unroll */
#pragma clang loop unroll(full)
	for (i = 0; i < 8; i++) {
		__u8 d = f->rq_tok[i];

		if (i < n) {
			if (d < '0' || d > '9')
				ok = 0;
			v = v * 10 + (d - '0');
		}
	}
	return ok ? v : BRC_DB_INVALID;
}

/* HELLO's arguments after the protocol version, walked as Redis walks them. */
static __always_inline void brc_rq_hello_arg(struct brc_flow *f)
{
	__u32 more = f->rq_argc - 1 - f->rq_argi;

	switch (f->rq_opt) {
	case BRC_OPT_USER:
		f->rq_key_len = f->rq_arglen;
		f->rq_opt = BRC_OPT_PASS;
		return;
	case BRC_OPT_PASS:
	case BRC_OPT_NAME:
		f->rq_opt = BRC_OPT_NONE;
		return;
	}
	if (brc_tok_is(f, "AUTH", 4) && more >= 2) {
		if (f->rq_cflags & BRC_CF_AUTH)
			brc_giveup(f, BRC_DIRTY_BIT_STATE);     /* the last AUTH would win */
		f->rq_cflags |= BRC_CF_AUTH;
		f->rq_opt = BRC_OPT_USER;
	} else if (brc_tok_is(f, "SETNAME", 7) && more >= 1) {
		f->rq_opt = BRC_OPT_NAME;
	} else {
		f->rq_cflags |= BRC_CF_BAD;     /* a syntax error: Redis changes nothing */
	}
}

/* Argument f->rq_argi is complete. */
static __always_inline void brc_rq_arg_done(struct brc_scratch *sc, struct brc_flow *f)
{
	__u32 argi = f->rq_argi;

	if (f->rq_inline)
		f->rq_argc = argi + 1;
	if (argi == 0) {
		brc_rq_cmd_begin(sc, f);
		return;
	}
	if (brc_rq_is_key(f, argi)) {
		__u32 idx = brc_bucket_of(f->rq_hash);

		if (f->rq_kind == BRC_K_WRITE)
			brc_mark_key(f, idx, f->sent);
		if (argi == f->rq_keyarg) {
			f->rq_key_len = f->rq_arglen;
			f->rq_key_bucket = idx;
		}
		return;
	}
	switch (f->rq_special) {
	case BRC_SP_SET:
		if (argi >= 3 && (brc_tok_is(f, "EX", 2) || brc_tok_is(f, "PX", 2) ||
				  brc_tok_is(f, "EXAT", 4) || brc_tok_is(f, "PXAT", 4) ||
				  brc_tok_is(f, "KEEPTTL", 7)))
			f->rq_cflags |= BRC_CF_TTL;
		break;
	case BRC_SP_GETEX:
		f->rq_cflags |= BRC_CF_TTL;
		break;
	case BRC_SP_AUTH:
		if (brc_rq_is_user(f))
			f->rq_key_len = f->rq_arglen;
		break;
	case BRC_SP_HELLO:
		if (argi == 1) {
			/* Redis reads the version with string2ll: exactly "2" or "3" */
			if (brc_tok_is(f, "2", 1))
				f->rq_val = 2;
			else if (brc_tok_is(f, "3", 1))
				f->rq_val = BRC_PROTO_RESP3;
			else
				brc_giveup(f, BRC_DIRTY_BIT_RESP3);
		} else {
			brc_rq_hello_arg(f);
		}
		break;
	case BRC_SP_SELECT:
		if (argi == 1)
			f->rq_val = brc_rq_db_index(f);
		break;
	case BRC_SP_CLIENT:
	case BRC_SP_CONFIG:
	case BRC_SP_ACL:
		if (argi == 1)
			brc_rq_subcommand(sc, f);
		break;
	}
}

/* Record the state change command @seq asks for, to apply at its reply.
 * Returns the FIFO flag to set, 0 when there is nothing to apply. */
static __always_inline __u64 brc_rq_chg(struct brc_flow *f, __u32 seq, __u32 kind, __u32 db, int user)
{
	__u32 slot = f->chg_sent & (BRC_CHG_RING - 1);
	__u8 *buf = f->chg_buf + slot * BRC_KEY_MAX;

	if (f->dirty)
		return 0;       /* never cached from again: its state no longer matters */
	if (f->chg_sent - f->chg_done >= BRC_CHG_RING || (__u32)(seq - f->replied) >= BRC_FIFO_LEN) {
		/* more changes in flight than BRC keeps: it cannot follow them */
		if (kind != BRC_CHG_SET_CLEARS_TTL)
			brc_giveup(f, BRC_DIRTY_BIT_STATE);
		return 0;
	}
	f->chg_kind[slot] = kind;
	f->chg_db[slot] = db;
	if (user && f->rq_argc == 2 && f->rq_special == BRC_SP_AUTH) {
		/* AUTH pass = the default user */
		brc_user_default(&f->chg_len[slot], buf);
	} else {
		/* a user name BRC cannot hold (longer than BRC_USER_MAX) matches nobody */
		f->chg_len[slot] = (user && f->rq_key_len > BRC_USER_MAX) ? BRC_USER_MAX + 1 : f->rq_key_len;
		__builtin_memcpy(buf, f->rq_key, BRC_KEY_MAX);
	}
	/* publish the slot before the count egress reads */
	asm volatile("" ::: "memory");
	f->chg_sent += 1;
	return BRC_FIFO_F_STATE;
}

/* The command is complete: account it as pending and act on it. */
static __always_inline void brc_rq_cmd_done(struct brc_scratch *sc, struct brc_flow *f,
					    const struct brc_config *cfg)
{
	__u32 argc = f->rq_argc;
	__u32 seq = f->sent;
	__u32 replied = f->replied;
	__u64 flags = 0;
	__u32 idx = f->rq_key_bucket & (BRC_KEYVER_BUCKETS - 1);
	struct brc_bucket *b;

	if (f->rq_inline)
		brc_count(REQ_INLINE);
	if (f->rq_group == BRC_REQ_GET)
		brc_count(REQ_GET);
	else if (f->rq_group == BRC_REQ_SET)
		brc_count(REQ_SET);
	else
		brc_count(REQ_OTHER);
	if (f->rq_kind == BRC_K_WRITE || f->rq_kind == BRC_K_GLOBAL || f->rq_kind == BRC_K_UNKNOWN)
		brc_count(REQ_WRITE);
	if (f->rq_cflags & BRC_CF_SERVER)
		brc_mark_server(f, seq);

	switch (f->rq_special) {
	case BRC_SP_GET:
		if (argc == 2) {
			flags = brc_get_passed(sc, f, cfg, seq - replied);
			if (!f->dirty)
				flags |= BRC_FIFO_F_GET;
		} else {
			brc_count(GET_UNCACHEABLE_ARGS);
		}
		break;
	case BRC_SP_SET:
	case BRC_SP_TTL:
	case BRC_SP_GETEX:
	case BRC_SP_CARRY_TTL:
		if (f->rq_special == BRC_SP_TTL || f->rq_special == BRC_SP_CARRY_TTL)
			f->rq_cflags |= BRC_CF_TTL;
		if (argc <= f->rq_keyarg || f->rq_key_len > BRC_KEY_MAX)
			break;          /* such keys are never cached anyway */
		brc_addr_copy(sc->ckey.srv_addr, sc->fk.srv_addr);
		sc->ckey.len = f->rq_key_len;
		__builtin_memcpy(sc->ckey.key, f->rq_key, BRC_KEY_MAX);
		if (f->rq_cflags & BRC_CF_TTL) {
			brc_count(TTL_MARKED);
			if (brc_ttlkeys.update(&sc->ckey, &sc->now) != 0) {
				b = brc_keyver.lookup(&idx);
				if (b)
					b->ttl = 1;
			}
		} else if (f->rq_special == BRC_SP_SET && argc == 3 && f->db == 0 &&
			   f->chg_sent == f->chg_done) {   /* no SELECT in flight: db 0 it is */
			/* SET k v: the TTL is gone once Redis says it applied it */
			flags = brc_rq_chg(f, seq, BRC_CHG_SET_CLEARS_TTL, 0, 0);
		}
		break;
	case BRC_SP_AUTH:
		if (argc == 2 || argc == 3)
			flags = brc_rq_chg(f, seq, BRC_CHG_AUTH, 0, 1);
		break;
	case BRC_SP_HELLO:
		/* HELLO alone changes nothing (its reply is in the current protocol) */
		if (argc >= 2 && !(f->rq_cflags & BRC_CF_BAD))
			flags = brc_rq_chg(f, seq, (f->rq_cflags & BRC_CF_AUTH) ? BRC_CHG_HELLO_AUTH : BRC_CHG_HELLO,
					   f->rq_val, f->rq_cflags & BRC_CF_AUTH);
		break;
	case BRC_SP_SELECT:
		if (argc == 2)
			flags = brc_rq_chg(f, seq, BRC_CHG_SELECT, f->rq_val, 0);
		break;
	case BRC_SP_RESET:
		flags = brc_rq_chg(f, seq, BRC_CHG_RESET, 0, 0);
		break;
	}

	if ((__u32)(seq - replied) < BRC_FIFO_LEN)
		f->fifo[seq & (BRC_FIFO_LEN - 1)] = brc_fifo_entry(sc->now, seq, f->rq_cmd, flags);
	/* publish the command only after its FIFO slot and state change */
	asm volatile("" ::: "memory");
	f->sent = seq + 1;
}

/* ---- reply side -------------------------------------------------------- */

/* Append one byte of the tracked reply. */
static __always_inline void brc_rp_keep(struct brc_flow *f, struct brc_replybuf *rb, __u8 c)
{
	__u32 len = f->rp_len;

	if (len < BRC_VAL_MAX)
		rb->data[len & (BRC_VAL_MAX - 1)] = c;
	f->rp_len = len + 1;
}

/* Lex reply bytes sc->buf[sc->pos..sc->n). @rb: where the tracked reply's bytes go. */
static __always_inline int brc_rp_lex(struct brc_flow *f, struct brc_replybuf *rb,
				      struct brc_scratch *sc)
{
	__u32 k, i, d, h;
	__u64 e;
	__u8 c;

	for (k = 0; k < BRC_CHUNK; k++) {
		if (brc_chunk_next(sc, &i, &c))
			break;
		if (f->rp_state == BRC_RP_IDLE && f->rp_depth == 0) {
			/* a top-level reply starts: is it the tracked GET's? */
			f->rp_type = c;
			f->rp_len = 0;
			f->rp_hlen = 0;
			f->rp_head = 0;
			e = f->replied != f->sent ? brc_fifo_get(f, f->replied) : 0;
			f->rp_tracked = f->track != BRC_TRACK_NONE && ((e >> 60) & BRC_FIFO_F_TRACKED);
		}
		h = f->rp_hlen;
		if (h < 8)
			f->rp_head |= (__u64)c << ((h & 7) * 8);
		if (h < 255)
			f->rp_hlen = h + 1;
		if (f->rp_tracked)
			brc_rp_keep(f, rb, c);
		switch (f->rp_state) {
		case BRC_RP_IDLE:
			f->rp_num = 0;
			f->rp_neg = 0;
			if (c == '+' || c == '-' || c == ':')
				f->rp_state = BRC_RP_LINE;
			else if (c == '$')
				f->rp_state = BRC_RP_BULKLEN;
			else if (c == '*')
				f->rp_state = BRC_RP_ARRLEN;
			else {
				/* RESP3's types are told apart outside this loop
				 * (brc_rp_type3): the verifier's cost of it is per byte */
				f->rp_agg = c;
				return BRC_EV_TYPE3;
			}
			break;
		case BRC_RP_LINE:
			if (c == '\r')
				f->rp_state = BRC_RP_LINE_LF;
			break;
		case BRC_RP_BULKLEN:
		case BRC_RP_ARRLEN:
		case BRC_RP_AGGLEN:
			if (c >= '0' && c <= '9') {
				if (f->rp_num > BRC_MAX_BULK / 10)
					goto lost;
				f->rp_num = f->rp_num * 10 + (c - '0');
			} else if (c == '-' && f->rp_num == 0 && !f->rp_neg) {
				f->rp_neg = 1;
			} else if (c == '\r') {
				f->rp_state += 1;       /* BULKLEN_LF / ARRLEN_LF / AGGLEN_LF */
			} else {
				goto lost;
			}
			break;
		case BRC_RP_BULKLEN_LF:
			if (c != '\n')
				goto lost;
			if (f->rp_neg)
				goto element_done;      /* nil */
			f->rp_left = f->rp_num;
			if (f->rp_left == 0) {
				f->rp_state = BRC_RP_BULK_CR;
				break;
			}
			f->rp_state = BRC_RP_BULK;
			/* data beyond this chunk is skipped or copied without lexing */
			if (f->rp_left > brc_reload(&sc->n) - i - 1)
				return BRC_EV_SKIP;
			if (!f->rp_tracked) {
				/* within this chunk and not kept: jump to its CR */
				sc->pos = i + 1 + f->rp_left;
				f->rp_left = 0;
				f->rp_state = BRC_RP_BULK_CR;
			}
			break;
		case BRC_RP_BULK:
			/* short data inside the chunk (a tracked reply keeps it above) */
			f->rp_left -= 1;
			if (f->rp_left == 0)
				f->rp_state = BRC_RP_BULK_CR;
			break;
		case BRC_RP_ARRLEN_LF:
			if (c != '\n')
				goto lost;
			if (f->rp_neg || f->rp_num == 0)
				goto element_done;      /* nil or empty array */
			d = f->rp_depth;
			if (d >= BRC_RESP_DEPTH)
				goto lost;
			f->rp_stack[d & (BRC_RESP_DEPTH - 1)] = f->rp_num;
			f->rp_depth = d + 1;
			f->rp_state = BRC_RP_IDLE;
			break;
		case BRC_RP_AGGLEN_LF:
			if (c != '\n')
				goto lost;
			f->rp_state = BRC_RP_IDLE;
			return BRC_EV_AGG;      /* brc_rp_agg opens it */
		case BRC_RP_BULK_CR:
			if (c != '\r')
				goto lost;
			f->rp_state = BRC_RP_BULK_LF;
			break;
		case BRC_RP_LINE_LF:
		case BRC_RP_BULK_LF:
			if (c != '\n')
				goto lost;
			goto element_done;
		default:
			goto lost;
		}
		continue;
element_done:
		f->rp_state = BRC_RP_IDLE;
		d = f->rp_depth;
		if (d == 0) {
			return BRC_EV_REPLY;
		}
		d = (d - 1) & (BRC_RESP_DEPTH - 1);
		f->rp_stack[d] -= 1;
		if ((f->rp_stack[d] & BRC_RP_AGG_COUNT) == 0) {
			return BRC_EV_POP;
		}
	}
	return BRC_EV_MORE;
lost:
	return BRC_EV_LOST;
}

/* Is the reply being lexed the answer to a HELLO 3 (the oldest state change in
 * flight, its command at the head of the queue)? Redis answers it in RESP3. */
static __always_inline int brc_rp_answers_hello3(const struct brc_flow *f)
{
	__u32 slot = f->chg_done & (BRC_CHG_RING - 1), kind = f->chg_kind[slot];
	__u64 e = f->replied != f->sent ? brc_fifo_get(f, f->replied) : 0;

	return ((e >> 60) & BRC_FIFO_F_STATE) && f->chg_sent != f->chg_done &&
	       (kind == BRC_CHG_HELLO || kind == BRC_CHG_HELLO_AUTH) && f->chg_db[slot] == BRC_PROTO_RESP3;
}

/* A RESP3 type byte (f->rp_agg) began an element: enter its lexer state, or
 * the flow is lost (RESP3 on a RESP2 connection, a push inside an aggregate,
 * garbage). Returns BRC_EV_MORE or BRC_EV_LOST. */
static __always_inline int brc_rp_type3(struct brc_flow *f)
{
	__u32 c = f->rp_agg;

	if (!brc_resp3(f) && !brc_rp_answers_hello3(f))
		return BRC_EV_LOST;
	if (c == '_' || c == ',' || c == '#' || c == '(')
		f->rp_state = BRC_RP_LINE;
	else if (c == '!' || c == '=')
		f->rp_state = BRC_RP_BULKLEN;
	else if (c == '%' || c == '~' || c == '|' || (c == '>' && f->rp_depth == 0))
		f->rp_state = BRC_RP_AGGLEN;
	else
		return BRC_EV_LOST;
	return BRC_EV_MORE;
}

/* A non-aggregate element completed at the current depth (as in brc_rp_lex). */
static __always_inline int brc_rp_element_done(struct brc_flow *f)
{
	__u32 d = f->rp_depth;

	f->rp_state = BRC_RP_IDLE;
	if (d == 0)
		return BRC_EV_REPLY;
	d = (d - 1) & (BRC_RESP_DEPTH - 1);
	f->rp_stack[d] -= 1;
	return (f->rp_stack[d] & BRC_RP_AGG_COUNT) == 0 ? BRC_EV_POP : BRC_EV_MORE;
}

/* A RESP3 aggregate header (f->rp_agg, f->rp_num) is complete: open it. A map and
 * an attribute hold a key and a value per entry; an empty push or attribute is
 * no element at all. Returns an event for the caller, as brc_rp_lex does. */
static __always_inline int brc_rp_agg(struct brc_flow *f)
{
	__u32 a = f->rp_agg, n = f->rp_num, d = f->rp_depth, kind = 0;

	if (f->rp_neg)
		return BRC_EV_LOST;             /* RESP3 has no negative aggregate length */
	if (a == '%' || a == '|')
		n *= 2;
	if (a == '>')
		kind = BRC_RP_AGG_PUSH;
	else if (a == '|')
		kind = BRC_RP_AGG_ATTR;
	if (n == 0) {
		if (kind)
			return d == 0 ? BRC_EV_NOT_REPLY : BRC_EV_MORE;
		return brc_rp_element_done(f);  /* an empty map or set */
	}
	if (d >= BRC_RESP_DEPTH)
		return BRC_EV_LOST;
	f->rp_stack[d & (BRC_RESP_DEPTH - 1)] = n | kind;
	f->rp_depth = d + 1;
	return BRC_EV_MORE;
}

/* An aggregate's last element completed: close it and every enclosing aggregate
 * that this completes. Returns BRC_EV_REPLY when a top-level reply is complete,
 * BRC_EV_NOT_REPLY for a top-level push or attribute, BRC_EV_MORE otherwise. */
static __always_inline int brc_rp_pop(struct brc_flow *f)
{
	__u32 i, d, top;

#pragma clang loop unroll(full)
	for (i = 0; i < BRC_RESP_DEPTH; i++) {
		d = f->rp_depth;
		if (d == 0)
			return BRC_EV_REPLY;
		d -= 1;
		top = f->rp_stack[d & (BRC_RESP_DEPTH - 1)];
		if (top & BRC_RP_AGG_COUNT)
			return BRC_EV_MORE;
		f->rp_depth = d;                 /* the aggregate is done */
		if (d == 0)
			return (top & (BRC_RP_AGG_PUSH | BRC_RP_AGG_ATTR)) ? BRC_EV_NOT_REPLY : BRC_EV_REPLY;
		if (top & BRC_RP_AGG_ATTR)
			return BRC_EV_MORE;      /* not an element: the one it describes follows */
		f->rp_stack[(d - 1) & (BRC_RESP_DEPTH - 1)] -= 1;
	}
	return BRC_EV_MORE;
}

/* Is the complete reply exactly "+OK\r\n"? */
static __always_inline int brc_rp_is_ok(const struct brc_flow *f)
{
	return f->rp_hlen == 5 && f->rp_head == BRC_HEAD_OK;
}

/* Is the complete reply exactly "+RESET\r\n"? */
static __always_inline int brc_rp_is_reset(const struct brc_flow *f)
{
	const __u64 reset = (__u64)'+' | (__u64)'R' << 8 | (__u64)'E' << 16 | (__u64)'S' << 24 |
			    (__u64)'E' << 32 | (__u64)'T' << 40 | (__u64)'\r' << 48 | (__u64)'\n' << 56;

	return f->rp_hlen == 8 && f->rp_head == reset;
}

/* Redis authenticated @f as the user in state-change @slot (its name in @buf). */
static __always_inline void brc_rp_take_user(struct brc_flow *f, __u32 slot, const __u8 *buf)
{
	f->user_len = f->chg_len[slot];
	__builtin_memcpy(f->user, buf, BRC_USER_MAX);
	brc_flag_set(f, BRC_FF_AUTHED);
}

/* Apply the oldest state change in flight now that Redis answered it. */
static __always_inline void brc_rp_chg_apply(struct brc_scratch *sc, struct brc_flow *f)
{
	__u32 slot = f->chg_done & (BRC_CHG_RING - 1);
	__u32 kind = f->chg_kind[slot], err = f->rp_type == '-' || f->rp_type == '!';
	__u8 *buf = f->chg_buf + slot * BRC_KEY_MAX;

	switch (kind) {
	case BRC_CHG_SELECT:
		if (brc_rp_is_ok(f)) {
			if (f->chg_db[slot] == BRC_DB_INVALID)
				brc_giveup(f, BRC_DIRTY_BIT_STATE);     /* Redis read it, BRC could not */
			else
				f->db = f->chg_db[slot];
		} else if (!err) {
			brc_giveup(f, BRC_DIRTY_BIT_REPLY_SHAPE);
		}
		break;
	case BRC_CHG_AUTH:
		if (brc_rp_is_ok(f)) {
			brc_rp_take_user(f, slot, buf);
		} else if (!err) {
			brc_giveup(f, BRC_DIRTY_BIT_REPLY_SHAPE);
		}
		break;
	case BRC_CHG_HELLO:
	case BRC_CHG_HELLO_AUTH:
		/* Redis answers a HELLO that succeeded in the protocol it asked for:
		 * its map in RESP3, an array in RESP2; a failed one changes nothing */
		if (f->rp_type == (f->chg_db[slot] == BRC_PROTO_RESP3 ? '%' : '*')) {
			f->rp_proto = f->chg_db[slot];
			if (kind == BRC_CHG_HELLO_AUTH)
				brc_rp_take_user(f, slot, buf);
		} else if (!err) {
			brc_giveup(f, BRC_DIRTY_BIT_REPLY_SHAPE);
		}
		break;
	case BRC_CHG_RESET:
		if (brc_rp_is_reset(f)) {
			f->db = 0;
			f->rp_proto = 2;        /* RESET goes back to RESP2 */
			brc_user_default(&f->user_len, f->user);
			brc_flag_clear(f, BRC_FF_AUTHED);
		} else {
			brc_giveup(f, BRC_DIRTY_BIT_REPLY_SHAPE);
		}
		break;
	case BRC_CHG_SET_CLEARS_TTL:
		if (brc_rp_is_ok(f)) {
			brc_addr_copy(sc->ckey.srv_addr, sc->fk.srv_addr);
			sc->ckey.len = f->chg_len[slot];
			__builtin_memcpy(sc->ckey.key, buf, BRC_KEY_MAX);
			if (brc_ttlkeys.delete(&sc->ckey) == 0)
				brc_count(TTL_CLEARED);
		}
		break;
	}
	f->chg_done += 1;
}

/* A top-level reply is complete: pair it with the oldest pending command. */
static __always_inline void brc_rp_reply_done(struct brc_scratch *sc, struct brc_flow *f,
					      const struct brc_config *cfg, struct brc_replybuf *rb)
{
	__u32 tracked = f->rp_tracked, r = f->replied;
	__u64 e, flags;

	brc_count(REPLIES);
	f->rp_tracked = 0;
	if (f->dirty & BRC_DIRTY_GIVEUP) {
		f->track = BRC_TRACK_NONE;      /* replies no longer pair: nothing to apply */
		return;
	}
	if (r == f->sent) {
		brc_count(REPLIES_UNMATCHED);
		brc_giveup(f, BRC_DIRTY_BIT_UNMATCHED);
		return;
	}
	e = brc_fifo_get(f, r);
	flags = e >> 60;
	if (e)
		brc_latency_add((e >> BRC_FIFO_ID_SHIFT) & 0xff, brc_fifo_age(e, sc->now));
	else
		brc_count(LATENCY_UNTIMED);
	if ((flags & BRC_FIFO_F_GET) && f->rp_type != '$' && f->rp_type != '-' &&
	    !(f->rp_type == '_' && brc_resp3(f))) {
		/* a GET's reply is a bulk string, nil or an error: this one is another's */
		brc_giveup(f, BRC_DIRTY_BIT_REPLY_SHAPE);
		tracked = 0;
	}
	if (flags & BRC_FIFO_F_TRACKED) {
		if (tracked)
			brc_track_done(sc, f, cfg, rb);
		f->track = BRC_TRACK_NONE;
	}
	if (flags & BRC_FIFO_F_STATE)
		brc_rp_chg_apply(sc, f);
	/* publish the reply only after the state it changed */
	asm volatile("" ::: "memory");
	f->replied = r + 1;
	brc_release_marks(f, r + 1, 0);
}

/* A top-level push or attribute is complete: nothing is paired with it. The
 * reply an attribute describes never fills or verifies (its bytes would lack it). */
static __always_inline void brc_rp_not_reply(struct brc_flow *f)
{
	brc_count(RESP3_NOT_REPLIES);
	if (f->rp_type == '|')
		f->track = BRC_TRACK_NONE;
	f->rp_tracked = 0;
}

static __always_inline void brc_rp_lost(struct brc_flow *f, __u32 bit)
{
	f->rp_state = BRC_RP_LOST;
	f->track = BRC_TRACK_NONE;
	brc_giveup(f, bit);
}

#endif /* BRC_RESP_H */
