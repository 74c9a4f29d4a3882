/* SPDX-License-Identifier: GPL-2.0 */
/* RESP, both directions: resumable lexers that keep every bit of state in the
 * flow (a command or reply may be split at any byte across segments), and the
 * handlers for what they find (argument, command, reply complete).
 *
 * Lexers read one chunk (BRC_CHUNK bytes loaded with bpf_skb_load_bytes) and
 * stop at the first event; bulk data that needs no reading (values, long
 * arguments past what is kept) is skipped without loading it. Return contract
 * of both lexers: an enum brc_ev; sc->pos = bytes of the chunk consumed.
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
	BRC_RQ_LOST,            /* cannot follow: the flow is dirty */
};

/* Reply lexer states (brc_flow.rp_state). */
enum brc_rp_state {
	BRC_RP_IDLE = 0,        /* expecting a type byte */
	BRC_RP_LINE,            /* +simple, -error, :integer up to '\r' */
	BRC_RP_LINE_LF,
	BRC_RP_BULKLEN,         /* after '$' */
	BRC_RP_BULKLEN_LF,
	BRC_RP_ARRLEN,          /* after '*' */
	BRC_RP_ARRLEN_LF,
	BRC_RP_BULK,            /* bulk data: skipped or copied, never lexed */
	BRC_RP_BULK_CR,
	BRC_RP_BULK_LF,
	BRC_RP_LOST,
};

enum brc_ev {
	BRC_EV_MORE = 0,        /* chunk used up */
	BRC_EV_SKIP,            /* entered a bulk state handled without lexing */
	BRC_EV_LOST,            /* not RESP: the flow went dirty */
	BRC_EV_ARG,             /* request: an argument is complete, more follow */
	BRC_EV_ARG_END,         /* request: the last argument is complete */
	BRC_EV_END,             /* request: command complete (inline, no open argument) */
	BRC_EV_POP,             /* reply: the last element of an array is complete */
	BRC_EV_REPLY,           /* reply: a top-level reply is complete */
};

#define BRC_CF_TTL 1            /* this command gives its key a TTL */
#define BRC_CF_AUTH 2           /* HELLO ... AUTH */

#define BRC_MAX_MULTIBULK (1024 * 1024)         /* Redis's own limits */
#define BRC_MAX_BULK (512U * 1024 * 1024)

/* ---- request side ------------------------------------------------------ */

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

/* May the current argument's bytes be kept? Never for passwords. */
static __always_inline int brc_rq_readable(const struct brc_flow *f)
{
	if (f->rq_argi == 0)
		return 1;
	return !(f->rq_special == BRC_SP_AUTH || f->rq_special == BRC_SP_SECRET || f->rq_secret);
}

/* How many leading bytes of the current argument are read (the rest skipped). */
static __always_inline __u32 brc_rq_keep(const struct brc_flow *f)
{
	if (!brc_rq_readable(f))
		return 0;
	if (f->rq_argi > 0 && brc_rq_is_key(f, f->rq_argi))
		return BRC_KEY_MAX;
	return BRC_TOK_LEN + 1;     /* one more than kept: tells "too long" apart */
}

/* Set up reading of argument f->rq_argi (outside the lexer loop). */
static __always_inline void brc_rq_arg_setup(struct brc_flow *f)
{
	f->rq_keep = brc_rq_keep(f);
	f->rq_copykey = f->rq_argi == 1 && brc_rq_is_key(f, 1);
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
	if (f->rq_copykey)
		f->rq_key[len & (BRC_KEY_MAX - 1)] = c;
}

static __always_inline int brc_tok_is(const struct brc_flow *f, const char *s, __u32 n)
{
	__u32 i;

	if (f->rq_arglen != n)
		return 0;
#pragma clang loop unroll(full)
	for (i = 0; i < 8; i++) {
		if (i >= n)
			break;
		if (f->rq_tok[i] != (__u8)s[i])
			return 0;
	}
	return 1;
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

/* Lex request bytes sc->buf[sc->pos..sc->n). */
static __always_inline int brc_rq_lex(struct brc_flow *f, struct brc_scratch *sc)
{
	__u32 k, i;
	__u8 c;

	for (k = 0; k < BRC_CHUNK; k++) {
		i = brc_reload(&sc->pos);
		if (i >= brc_reload(&sc->n))
			break;
		c = sc->buf[i & (BRC_CHUNK - 1)];
		sc->pos = i + 1;
		switch (f->rq_state) {
		case BRC_RQ_IDLE:
			if (c == '*') {
				f->rq_state = BRC_RQ_ARRLEN;
				f->rq_num = 0;
				f->rq_inline = 0;
				f->rq_argi = 0;
				f->rq_secret = 0;
				f->rq_keep = BRC_TOK_LEN + 1;
				f->rq_copykey = 0;
			} else if (c != '\r' && c != '\n' && c != ' ') {
				f->rq_state = BRC_RQ_INLINE;
				f->rq_inline = 1;
				f->rq_argi = 0;
				f->rq_argc = 0;
				f->rq_secret = 0;
				f->rq_keep = BRC_TOK_LEN + 1;
				f->rq_copykey = 0;
				brc_rq_arg_begin(f);
				if (c == '"' || c == '\'')
					goto lost;
				brc_rq_arg_byte(f, c);
			}
			break;
		case BRC_RQ_ARRLEN:
		case BRC_RQ_BULKLEN:
			if (c >= '0' && c <= '9') {
				if (f->rq_num > BRC_MAX_BULK / 10)
					goto lost;
				f->rq_num = f->rq_num * 10 + (c - '0');
			} else if (c == '\r') {
				f->rq_state += 1;       /* ARRLEN_LF / BULKLEN_LF */
			} else {
				goto lost;
			}
			break;
		case BRC_RQ_ARRLEN_LF:
			if (c != '\n' || f->rq_num > BRC_MAX_MULTIBULK)
				goto lost;
			if (f->rq_num == 0) {
				f->rq_state = BRC_RQ_IDLE;      /* "*0": Redis ignores it */
				break;
			}
			f->rq_argc = f->rq_num;
			f->rq_state = BRC_RQ_BULKHDR;
			break;
		case BRC_RQ_BULKHDR:
			if (c != '$')
				goto lost;
			f->rq_num = 0;
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
			f->rq_state = BRC_RQ_BULKHDR;
			return BRC_EV_ARG;
		case BRC_RQ_INLINE:
			if (c == '\n') {
				f->rq_state = BRC_RQ_IDLE;
				return f->rq_arglen ? BRC_EV_ARG_END : BRC_EV_END;
			}
			if (c == ' ' || c == '\t') {
				if (f->rq_arglen) {
						return BRC_EV_ARG;
				}
			} else if (c == '"' || c == '\'') {
				goto lost;      /* quoted inline arguments are not followed */
			} else if (c != '\r') {
				brc_rq_arg_byte(f, c);
			}
			break;
		default:
			goto lost;
		}
	}
	return BRC_EV_MORE;
lost:
	return BRC_EV_LOST;
}

/* Argument f->rq_argi is complete. */
static __always_inline void brc_rq_arg_done(struct brc_scratch *sc, struct brc_flow *f)
{
	__u32 argi = f->rq_argi;

	if (argi == 0) {
		struct brc_cmd_name name = {};
		struct brc_cmd *cmd = 0;

		if (f->rq_arglen <= BRC_TOK_LEN && f->rq_arglen > 0) {
			__u32 i;

#pragma clang loop unroll(full)
			for (i = 0; i < BRC_TOK_LEN; i++)
				name.name[i] = i < f->rq_arglen ? f->rq_tok[i] : 0;
			cmd = brc_cmds.lookup(&name);
		}
		f->rq_cflags = 0;
		if (cmd) {
			f->rq_kind = cmd->kind;
			f->rq_first = cmd->first;
			f->rq_last = cmd->last;
			f->rq_step = cmd->step;
			f->rq_special = cmd->special;
			f->rq_class = cmd->cls;
		} else {
			f->rq_kind = BRC_K_UNKNOWN;
			f->rq_first = 0;
			f->rq_last = 0;
			f->rq_step = 0;
			f->rq_special = BRC_SP_NONE;
			f->rq_class = BRC_LAT_OTHER;
		}
		f->rq_key_len = 0;
		f->rq_key_bucket = 0;
		f->rq_val = 0;
		if (f->rq_kind == BRC_K_UNKNOWN || f->rq_kind == BRC_K_GLOBAL)
			brc_mark_global(f, 1);
		if (f->rq_special == BRC_SP_MULTI)
			brc_dirty(f, BRC_DIRTY_BIT_MULTI);
		else if (f->rq_special == BRC_SP_SUBSCRIBE)
			brc_dirty(f, BRC_DIRTY_BIT_PUBSUB);
		else if (f->rq_special == BRC_SP_MONITOR)
			brc_dirty(f, BRC_DIRTY_BIT_MONITOR);
		return;
	}
	if (f->rq_secret) {
		f->rq_secret -= 1;
		return;
	}
	if (brc_rq_is_key(f, argi)) {
		__u32 idx = brc_bucket_of(f->rq_hash);

		if (f->rq_kind == BRC_K_WRITE)
			brc_mark_key(f, idx);
		if (argi == 1) {
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
	case BRC_SP_HELLO:
		if (argi == 1 && !brc_tok_is(f, "2", 1))
			brc_dirty(f, BRC_DIRTY_BIT_RESP3);  /* 3, or anything not RESP2 */
		if (brc_tok_is(f, "AUTH", 4)) {
			f->rq_cflags |= BRC_CF_AUTH;
			f->rq_secret = 2;                  /* username, password */
		}
		break;
	case BRC_SP_CLIENT:
		if (argi == 1 && brc_tok_is(f, "REPLY", 5))
			brc_dirty(f, BRC_DIRTY_BIT_CLIENT_REPLY);
		break;
	case BRC_SP_SELECT:
		if (argi == 1) {
			__u32 i, v = 0, ok = f->rq_arglen > 0 && f->rq_arglen <= 8;

#pragma clang loop unroll(full)
			for (i = 0; i < 8; i++) {
				__u8 d = f->rq_tok[i];

				if (i >= f->rq_arglen)
					break;
				if (d < '0' || d > '9')
					ok = 0;
				v = v * 10 + (d - '0');
			}
			f->rq_val = ok ? v : 0xffffffff;
		}
		break;
	}
}

/* The command is complete: account it as pending and act on it. */
static __always_inline void brc_rq_cmd_done(struct brc_scratch *sc, struct brc_flow *f,
					    const struct brc_config *cfg)
{
	__u32 argc = f->rq_inline ? f->rq_argi + 1 : f->rq_argc;
	__u32 pending = f->pending;
	__u64 flags = 0;
	__u32 idx = f->rq_key_bucket & (BRC_KEYVER_BUCKETS - 1);
	struct brc_bucket *b;

	if (f->rq_inline)
		brc_count(REQ_INLINE);
	if (f->rq_class == BRC_LAT_GET)
		brc_count(REQ_GET);
	else if (f->rq_class == BRC_LAT_SET)
		brc_count(REQ_SET);
	else
		brc_count(REQ_OTHER);
	if (f->rq_kind == BRC_K_WRITE || f->rq_kind == BRC_K_GLOBAL || f->rq_kind == BRC_K_UNKNOWN)
		brc_count(REQ_WRITE);

	switch (f->rq_special) {
	case BRC_SP_GET:
		if (argc == 2)
			flags = brc_get_passed(sc, f, cfg, pending);
		else
			brc_count(GET_UNCACHEABLE_ARGS);
		break;
	case BRC_SP_SET:
	case BRC_SP_TTL:
	case BRC_SP_GETEX:
		if (f->rq_special == BRC_SP_TTL)
			f->rq_cflags |= BRC_CF_TTL;
		if (argc < 2 || f->rq_key_len > BRC_KEY_MAX)
			break;          /* such keys are never cached anyway */
		brc_key_copy(sc->ckey.key, f->rq_key, f->rq_key_len);
		sc->ckey.len = f->rq_key_len;
		if (f->rq_cflags & BRC_CF_TTL) {
			brc_count(TTL_MARKED);
			if (brc_ttlkeys.update(&sc->ckey, &sc->now) != 0) {
				b = brc_keyver.lookup(&idx);
				if (b)
					b->ttl = 1;
			}
		} else if (f->rq_special == BRC_SP_SET) {
			brc_ttlkeys.delete(&sc->ckey);
		}
		break;
	case BRC_SP_AUTH:
		flags = BRC_FIFO_F_AUTH;
		break;
	case BRC_SP_HELLO:
		if (f->rq_cflags & BRC_CF_AUTH)
			flags = BRC_FIFO_F_AUTH;
		break;
	case BRC_SP_SELECT:
		if (argc == 2)
			f->db = f->rq_val;
		break;
	case BRC_SP_RESET:
		f->db = 0;
		f->flags &= ~BRC_FF_AUTHED;
		break;
	}

	f->pending = pending + 1;
	if (f->flags & BRC_FF_FIFO_OVERFLOW) {
		/* earlier commands lost their slots: keep the order, skip this one */
	} else if (f->fifo_n < BRC_FIFO_LEN) {
		__u32 slot = (f->fifo_head + f->fifo_n) & (BRC_FIFO_LEN - 1);

		f->fifo[slot] = (sc->now & BRC_FIFO_TS_MASK) |
			((__u64)(f->rq_class & 3) << 56) | (flags << 58);
		f->fifo_n += 1;
	} else {
		f->flags |= BRC_FF_FIFO_OVERFLOW;
	}
}

/* The request parser cannot follow this flow any more: its writes are now
 * invisible, so it holds a global in-flight mark until it closes. */
static __always_inline void brc_rq_lost(struct brc_flow *f, __u32 bit)
{
	f->rq_state = BRC_RQ_LOST;
	brc_dirty(f, bit);
	brc_mark_global(f, 1);
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
	__u32 k, i, d;
	__u8 c;

	for (k = 0; k < BRC_CHUNK; k++) {
		i = brc_reload(&sc->pos);
		if (i >= brc_reload(&sc->n))
			break;
		c = sc->buf[i & (BRC_CHUNK - 1)];
		sc->pos = i + 1;
		if (f->rp_state == BRC_RP_IDLE && f->rp_depth == 0) {
			/* a top-level reply starts: is it the tracked GET's? */
			f->rp_type = c;
			f->rp_len = 0;
			f->rp_tracked = f->track != BRC_TRACK_NONE && f->pending > 0 &&
				f->fifo_n > 0 &&
				((f->fifo[f->fifo_head & (BRC_FIFO_LEN - 1)] >> 58) & BRC_FIFO_F_TRACKED);
		}
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
			else
				goto lost;      /* RESP3 types or garbage */
			break;
		case BRC_RP_LINE:
			if (c == '\r')
				f->rp_state = BRC_RP_LINE_LF;
			break;
		case BRC_RP_BULKLEN:
		case BRC_RP_ARRLEN:
			if (c >= '0' && c <= '9') {
				if (f->rp_num > BRC_MAX_BULK / 10)
					goto lost;
				f->rp_num = f->rp_num * 10 + (c - '0');
			} else if (c == '-' && f->rp_num == 0 && !f->rp_neg) {
				f->rp_neg = 1;
			} else if (c == '\r') {
				f->rp_state += 1;       /* BULKLEN_LF / ARRLEN_LF */
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
		if (f->rp_stack[d] == 0) {
			return BRC_EV_POP;
		}
	}
	return BRC_EV_MORE;
lost:
	return BRC_EV_LOST;
}

/* An array's last element completed: close it and every enclosing array that
 * this completes. Returns 1 when the top-level reply is complete. */
static __always_inline int brc_rp_pop(struct brc_flow *f)
{
	__u32 i, d;

#pragma clang loop unroll(full)
	for (i = 0; i < BRC_RESP_DEPTH; i++) {
		d = f->rp_depth;
		if (d == 0)
			return 1;
		d -= 1;
		if (f->rp_stack[d & (BRC_RESP_DEPTH - 1)] != 0)
			return 0;
		f->rp_depth = d;                 /* the array is done: an element of its parent */
		if (d == 0)
			return 1;
		f->rp_stack[(d - 1) & (BRC_RESP_DEPTH - 1)] -= 1;
	}
	return 0;
}

/* A top-level reply is complete: pair it with the oldest pending command. */
static __always_inline void brc_rp_reply_done(struct brc_scratch *sc, struct brc_flow *f,
					      const struct brc_config *cfg, struct brc_replybuf *rb)
{
	__u64 e = 0, flags = 0;
	__u32 tracked = f->rp_tracked;

	brc_count(REPLIES);
	f->rp_tracked = 0;
	if (f->pending == 0) {
		brc_count(REPLIES_UNMATCHED);
		brc_dirty(f, BRC_DIRTY_BIT_UNMATCHED);
		return;
	}
	f->pending -= 1;
	if (f->fifo_n > 0) {
		e = f->fifo[f->fifo_head & (BRC_FIFO_LEN - 1)];
		f->fifo_head = (f->fifo_head + 1) & (BRC_FIFO_LEN - 1);
		f->fifo_n -= 1;
		flags = e >> 58;
		brc_latency_add((e >> 56) & 3, (sc->now & BRC_FIFO_TS_MASK) - (e & BRC_FIFO_TS_MASK));
	} else {
		brc_count(LATENCY_UNTIMED);
	}
	if (f->pending == 0)
		f->flags &= ~BRC_FF_FIFO_OVERFLOW;
	if ((flags & BRC_FIFO_F_AUTH) && f->rp_type != '-')
		f->flags |= BRC_FF_AUTHED;
	if (flags & BRC_FIFO_F_TRACKED) {
		if (tracked)
			brc_track_done(sc, f, cfg, rb);
		f->track = BRC_TRACK_NONE;
	}
	if (f->pending == 0 && f->rq_state == BRC_RQ_IDLE && !(f->dirty & BRC_DIRTY_ACCOUNTING))
		brc_release_marks(f);
}

static __always_inline void brc_rp_lost(struct brc_flow *f, __u32 bit)
{
	f->rp_state = BRC_RP_LOST;
	f->track = BRC_TRACK_NONE;
	brc_dirty(f, bit);
}

#endif /* BRC_RESP_H */
