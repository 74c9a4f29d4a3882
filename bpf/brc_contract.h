/* SPDX-License-Identifier: GPL-2.0 */
/* The pinned-map contract between the BRC programs and the toolkit.
 *
 * This file is the single definition of everything that crosses the kernel/user
 * boundary: map names, key/value layouts, modes, counter names, histogram shape.
 * module_utils/brc_contract.py parses it (it does not keep a copy), so keep to the
 * forms it understands:
 *   - `#define BRC_NAME <integer>` constants (decimal or 0x hex, optional U/L suffix),
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

/* Persistent map names as seen by bpftool and as pinned under
 * <pin_root>/<ifname>/ (the loader pins and reuses exactly these: brc_maps.h
 * declares each with BRC_PERSISTENT). */
#define BRC_MAP_CONFIG "brc_config"
#define BRC_MAP_STATS "brc_stats"
#define BRC_MAP_LATENCY "brc_latency"
#define BRC_MAP_FLOWS "brc_flows"
#define BRC_MAP_CACHE "brc_cache"
#define BRC_MAP_KEYVER "brc_keyver"
#define BRC_MAP_GLOBAL "brc_global"
#define BRC_MAP_REPLYBUF "brc_replybuf"
#define BRC_MAP_TRANSIENT "brc_transient"
#define BRC_MAP_AGENT "brc_agent"
#define BRC_MAP_TOUCHED "brc_touched"
#define BRC_MAP_TTLKEYS "brc_ttlkeys"
#define BRC_MAP_EXPIRY "brc_expiry"
#define BRC_MAP_EXPIRY_WANTED "brc_expiry_wanted"
#define BRC_MAP_SERVED "brc_served"
#define BRC_MAP_USERS "brc_users"
#define BRC_MAP_SERVER "brc_server"
#define BRC_MAP_OOO "brc_ooo"
#define BRC_MAP_UNTRACKED "brc_untracked"
#define BRC_MAP_ADOPT "brc_adopt"

/* The tail-call array the loader fills (one build's, pinned beside the
 * programs), slot n = the n-th entry: the program (function) it calls. */
#define BRC_PROG_ARRAY "brc_jmp"
#define BRC_JMP_SLOTS(X) \
	X(PARSE_REQ, "brc_parse_req") \
	X(PARSE_REP, "brc_parse_rep") \
	X(SERVE, "brc_serve_in") \
	X(PARSE_REQ_HELD, "brc_parse_req_held") \
	X(SERVE_BATCH, "brc_serve_batch") \
	X(SERVE_EMIT6, "brc_serve_emit6")
#define BRC_JMP_ENUM(name, func) BRC_JMP_##name,
enum brc_jmp_slot { BRC_JMP_SLOTS(BRC_JMP_ENUM) BRC_JMP__MAX };
#undef BRC_JMP_ENUM

/* Layout-bearing sizes (fixed here, not overridable: they shape the values of
 * the pinned maps). Map capacities live in brc_maps.h and are overridable. */
#define BRC_KEY_MAX 64          /* longest cacheable key, bytes (a power of 2) */
#define BRC_VAL_MAX 2048        /* longest cacheable GET reply, RESP bytes (power of 2) */
#define BRC_FIFO_LEN 64         /* pending commands whose ingress time is kept, per flow */
#define BRC_FLOW_MARKS 8        /* key buckets one flow can hold "write in flight" */
#define BRC_RESP_DEPTH 8        /* nested reply arrays followed; deeper = parser lost */
#define BRC_TOK_LEN 16          /* leading bytes of each argument kept (command names, options) */
#define BRC_USER_MAX 64         /* longest ACL user name BRC can answer for, bytes */
#define BRC_CHG_RING 4          /* connection-state changes in flight per flow (a power of 2) */
#define BRC_CHG_BUF 256         /* BRC_CHG_RING * BRC_KEY_MAX */
#define BRC_BATCH_GETS 16       /* GETs one segment may hold to be answered as one batch (reported) */

/* brc_config: ARRAY, one entry at key 0. Written by the toolkit only (the
 * operator's settings; what Redis itself reports goes to brc_server). */
struct brc_config {
	__u32 port;            /* Redis TCP port, host byte order */
	__u32 mode;            /* BRC_MODE_* */
	__u32 max_key_len;     /* keys longer than this are never cached (counted) */
	__u32 max_value_len;   /* values longer than this are never cached (counted) */
	__u64 max_age_ns;      /* entries older than this are treated as absent */
	__u32 verify_sample;   /* serve mode: 1 in N would-be hits still goes to Redis; 0 = none */
	__u32 pad0;
};

/* brc_flows: HASH (never evicts a live connection: when full, new connections
 * are simply not tracked), key struct brc_flow_key, value struct brc_flow.
 * One entry per TCP connection to Redis seen from its SYN; released on an
 * acceptable RST or the server's FIN. Between the SYN and the SYN-ACK a flow
 * lives in brc_transient (an LRU: half-open connections that never complete
 * must not fill brc_flows, and they hold no marks to lose); a served
 * connection's entry moves there again at its close (its last FIN/ACKs still
 * need translating).
 * Addresses as IPv6 in network order, an IPv4 address mapped (::ffff:a.b.c.d,
 * RFC 4291), so that one key serves both families; ports in host order. */
#define BRC_ADDR_WORDS 4
struct brc_flow_key {
	__u32 cli_addr[BRC_ADDR_WORDS];
	__u32 srv_addr[BRC_ADDR_WORDS];
	__u16 cli_port;
	__u16 srv_port;
};

/* Flow states (brc_flow.state). */
#define BRC_FS_SYN 1            /* client SYN seen */
#define BRC_FS_EST 2            /* server SYN-ACK seen: sequence space known both ways */

/* brc_flow.flags bits. Both hooks change flags, so only with atomic or/and. */
#define BRC_FF_AUTHED 1         /* Redis answered an AUTH / HELLO ... AUTH with success */
#define BRC_FF_CLI_FIN 4
#define BRC_FF_SRV_FIN 8
#define BRC_FF_SERVE 32         /* serve mode at the SYN: seqadj state in serve_reserved is live */
#define BRC_FF_SERVED 64        /* answered at least once: translation for the rest of its life */
#define BRC_FF_CLOSED 128       /* closed, kept (in brc_transient) only to translate its last FIN/ACKs */
#define BRC_FF_OOO_HELD 256     /* client bytes after a hole are held in brc_ooo: never answered until parsed */
#define BRC_FF_UNPROVEN 512     /* adopted (struct brc_adopt): never answered before Redis has sent it a
				 * reply, the only proof that its replies are on (CLIENT REPLY OFF
				 * does not show in CLIENT LIST) */

/* brc_flow.track: what the flow does with the reply to its tracked GET. */
#define BRC_TRACK_NONE 0
#define BRC_TRACK_FILL 1        /* miss: the reply may fill the cache */
#define BRC_TRACK_VERIFY 2      /* would-hit: the reply is compared with the entry */

/* brc_flow.chg_kind: a connection-state change in flight, taken from the
 * request at ingress, applied at egress only when Redis's reply says it
 * happened (never on a flow already dirty: it is never cached from). */
#define BRC_CHG_NONE 0
#define BRC_CHG_SELECT 1        /* +OK: db = chg_db */
#define BRC_CHG_AUTH 2          /* +OK: user = chg_buf, authenticated */
#define BRC_CHG_HELLO_AUTH 3    /* HELLO <proto> AUTH: its reply in that protocol (a map in
				 * RESP3, an array in RESP2): protocol = chg_db, user as AUTH */
#define BRC_CHG_RESET 4         /* +RESET: db 0, user default, not authenticated, RESP2 */
#define BRC_CHG_SET_CLEARS_TTL 5 /* +OK to a plain SET k v in db 0: k has no TTL any more */
#define BRC_CHG_HELLO 6         /* HELLO <proto> without AUTH: protocol = chg_db on its reply */
#define BRC_DB_INVALID 0xffffffff /* a SELECT argument BRC cannot read as Redis does */

struct brc_flow {
	/* TCP, host byte order, initialised at the handshake (never zero-guessed:
	 * half of all ISNs are >= 2^31 and serial comparisons need real values) */
	__u32 state;            /* BRC_FS_* */
	__u32 db;               /* SELECTed database (written at egress, on Redis's +OK); only db 0 is cached */
	__u64 dirty;            /* BRC_DIRTY_* bits (atomic or); 0 = clean (cacheable) */
	__u64 flags;            /* BRC_FF_* (atomic or/and) */
	__u32 cli_next;         /* next client->server sequence number expected */
	__u32 srv_next;         /* next server->client sequence number expected */
	__u32 cli_ack;          /* highest ack the client sent (server space) */
	__u32 srv_ack;          /* highest ack the server sent (client space) */
	__u64 created_ns;
	__u64 last_ns;
	__u64 last_pass_ns;     /* last client payload passed to Redis (Redis's `timeout` counts from it) */
	__u64 in_busy;          /* while a CPU processes a client segment, when it began (cmpxchg from 0) */
	/* serve phase: struct brc_seqadj (bpf/seqadj.h) lives here */
	__u32 serve_reserved[12];
	/* Request accounting. `sent` is written only at ingress, `replied` only
	 * at egress: pending = sent - replied, and neither side ever loses the
	 * other's update when the two hooks run on different CPUs. */
	__u32 sent;             /* commands passed to Redis */
	__u32 replied;          /* replies paired with them */
	__u64 fifo[BRC_FIFO_LEN]; /* command n at [n % LEN]: ingress time in 16 ns units (low 36 bits) | (n & 0xffff) << 36 | brc_cmd.id << 52 | BRC_FIFO_F_* << 60 */
	/* Writes in flight, one word each: (bucket + 1) << 32 | number of the
	 * command that wrote it last; 0 = free. Taken at ingress, released at
	 * egress once that command's reply is seen (compare-and-swap both ways). */
	__u64 marks[BRC_FLOW_MARKS];
	__u64 gmark;            /* 1 << 32 | command number: a write that may touch anything */
	__u64 smark;            /* 1 << 32 | command number: a command that may change users, rights or role */
	/* the connection's user as Redis knows it (a struct brc_user_key): "default"
	 * at the SYN, changed at egress only by Redis's success reply */
	__u32 user_len;
	__u8 user[BRC_USER_MAX];
	/* state changes in flight, a ring in command order: written at ingress
	 * (slot chg_sent % BRC_CHG_RING), applied at egress (slot chg_done % ...) */
	__u32 chg_sent;         /* state changes issued (ingress) */
	__u32 chg_done;         /* state changes answered (egress) */
	__u32 chg_kind[BRC_CHG_RING]; /* BRC_CHG_* */
	__u32 chg_db[BRC_CHG_RING];
	__u32 chg_len[BRC_CHG_RING];
	__u8 chg_buf[BRC_CHG_BUF]; /* per slot BRC_KEY_MAX bytes: an AUTH's user name, or the key a SET clears the TTL of */
	/* the GET this flow tracks (passed with nothing pending: its reply is next) */
	__u32 track;            /* BRC_TRACK_* */
	__u32 track_key_len;
	__u32 track_bucket;
	/* an answer is one segment the client's window takes (serve mode, set at the handshake) */
	__u16 mss;              /* the smaller MSS the two SYNs announced (536 for one without the option) */
	__u8 cli_wscale;        /* the client's window shift (0 unless both SYNs carried the option) */
	__u8 seg_pad;
	__u64 track_ver;        /* bucket version when the GET passed */
	__u64 track_gver;       /* global version when the GET passed */
	__u8 track_key[BRC_KEY_MAX];
	/* request parser (client->server), resumable at any byte */
	__u32 rq_state;         /* BRC_RQ_* (brc_resp.h) */
	__u32 rq_argc;          /* arguments in this command (RESP array length) */
	__u32 rq_argi;          /* argument being read */
	__u32 rq_num;           /* number being read (array or bulk length) */
	__u32 rq_left;          /* bulk bytes left in the current argument */
	__u32 rq_arglen;        /* bytes of the current argument seen */
	__u32 rq_opt;           /* BRC_OPT_*: where an option walk is (HELLO, AUTH) */
	__u32 rq_val;           /* a number argument (SELECT's db) */
	__u32 rq_keep;          /* leading bytes of the current argument read (0 = none) */
	__u32 rq_copy;          /* 1 = the current argument's bytes go to rq_key */
	__u8 rq_kind;           /* command table entry of argument 0: BRC_K_* */
	__u8 rq_first;          /* first key argument */
	__u8 rq_last;           /* last key argument, 255 = through the end */
	__u8 rq_step;
	__u8 rq_special;        /* BRC_SP_* */
	__u8 rq_group;          /* BRC_REQ_*: which request counter */
	__u8 rq_cflags;         /* BRC_CF_*: observations about this command */
	__u8 rq_inline;         /* 1 = this command is inline (space separated) */
	__u32 rq_key_len;       /* the copied argument (a key, or a user name) */
	__u32 rq_key_bucket;    /* its version bucket */
	__u32 rq_keyarg;        /* which argument is copied (1, or 2 for RENAME/COPY) */
	__u8 rq_cmd;            /* its latency histogram: brc_cmd.id (0 = not in the table) */
	__u8 rq_pad[3];
	__u64 rq_hash;          /* FNV-1a of the current argument's first BRC_KEY_MAX bytes */
	__u8 rq_tok[BRC_TOK_LEN]; /* current argument's first bytes, upper-cased */
	__u8 rq_key[BRC_KEY_MAX]; /* the copied argument's first bytes, as sent */
	/* reply parser (server->client) */
	__u32 rp_state;
	__u32 rp_num;
	__u32 rp_neg;
	__u32 rp_left;          /* bulk bytes left */
	__u32 rp_depth;         /* open arrays */
	__u32 rp_type;          /* first byte of the current top-level reply */
	__u32 rp_len;           /* bytes of the tracked reply buffered so far */
	__u32 rp_tracked;       /* 1 = the current reply answers the tracked GET */
	__u32 rp_hlen;          /* bytes of the current top-level reply lexed (capped) */
	__u16 rp_proto;         /* 3 once Redis answered HELLO 3 (RESP3 replies), else RESP2 (2, or 0
				 * for a flow from before RESP3 was followed); written at egress */
	__u16 rp_agg;           /* type byte of the aggregate header being lexed */
	__u64 rp_head;          /* its first 8 bytes, little-endian ("+OK\r\n", "+RESET\r\n") */
	__u32 rp_stack[BRC_RESP_DEPTH]; /* elements left per open aggregate | BRC_RP_AGG_* */
};

/* Flow is dirty (never cached from or answered) for these reasons; each has a
 * counter DIRTY_<NAME> at stats slot BRC_DIRTY_SLOT_BASE + n. Bit n of
 * brc_flow.dirty = reason n. Every reason but MULTI means the connection is
 * given up for good: BRC's model of it may disagree with Redis's, so it is
 * never answered or filled from again and its write marks are held until it
 * closes (its replies can no longer be trusted to say when a write is done).
 * Append only: a retired reason keeps its bit. */
#define BRC_DIRTY_REASONS(X) \
	X(PARSER, "the RESP parser could not follow the client's or the server's bytes") \
	X(GAP, "a sequence gap or reordering: bytes were not seen in order") \
	X(BUDGET, "a segment held more RESP than one pass of the parser may read") \
	X(RESP3, "HELLO with a protocol BRC does not follow (neither 2 nor 3)") \
	X(PUBSUB, "SUBSCRIBE / UNSUBSCRIBE families: replies no longer pair with commands") \
	X(MONITOR, "MONITOR: replies no longer pair with commands") \
	X(CLIENT_REPLY, "CLIENT REPLY: replies no longer pair with commands") \
	X(MULTI, "MULTI: a transaction (its replies pair, but it is never cached from)") \
	X(UNMATCHED, "a reply arrived with nothing pending") \
	X(REPLY_SHAPE, "a reply that cannot answer the command at the head of the queue") \
	X(REPLICATION, "REPLCONF / SYNC / PSYNC: a replication link, not request/reply") \
	X(TRACKING, "CLIENT TRACKING / CACHING: Redis must see this connection's reads") \
	X(UNKNOWN, "a command BRC's table does not know (its replies are unknown)") \
	X(INLINE, "an inline command outside what BRC reads exactly as Redis does") \
	X(STATE, "a connection-state change BRC cannot follow (pipelined, inline, unreadable)") \
	X(TAILCALL, "a parser continuation or the serve stage failed to run") \
	X(TFO, "data on a SYN (TCP Fast Open): bytes BRC did not parse") \
	X(MISMATCH, "a verified would-be answer differed from Redis's reply") \
	X(CONCURRENT, "two CPUs processed this connection's client segments at once") \
	X(STALE_BUSY, "a client segment found the connection held by a CPU for longer than any runs one (a lock never released): it was taken over")

/* brc_cmds: HASH written by module_utils/brc_compile.py at build time (a table of
 * Redis commands; build-owned, not pinned). Key: the command name upper-cased
 * and zero-padded to BRC_TOK_LEN; a command missing from it is "unknown": it
 * invalidates everything and gives its connection up. */
struct brc_cmd_name {
	__u8 name[BRC_TOK_LEN];
};

struct brc_cmd {
	__u8 kind;              /* BRC_K_* */
	__u8 first;             /* key arguments: first, last (255 = to the end), step */
	__u8 last;
	__u8 step;
	__u8 special;           /* BRC_SP_*: handled by name in brc_resp.h */
	__u8 group;             /* BRC_REQ_*: which request counter */
	__u8 flags;             /* BRC_CMDF_* */
	__u8 id;                /* its latency histogram in brc_latency, 1 .. BRC_LAT_COMMANDS - 1 */
};

#define BRC_CMDF_INLINE 1       /* its inline form is followed (others inline give up:
				 * AUTH, SELECT, CONFIG ... whose secrets or arity matter) */

/* brc_subcmds: HASH written at build time: what argument 1 of CLIENT, CONFIG
 * and ACL means to BRC. Key: the command's BRC_SP_* and the subcommand
 * upper-cased, zero-padded. For CONFIG and ACL a subcommand missing here may
 * change who can read what (answers stop until the toolkit reloads); for
 * CLIENT it changes nothing BRC models. */
struct brc_subcmd_key {
	__u32 special;
	__u8 name[BRC_TOK_LEN];
};

struct brc_subcmd {
	__u32 action;           /* BRC_SUB_* */
};

#define BRC_SUB_READ_ONLY 1     /* CONFIG GET, ACL WHOAMI ...: changes nothing */
#define BRC_SUB_GIVEUP_REPLY 2  /* CLIENT REPLY: replies stop pairing */
#define BRC_SUB_GIVEUP_TRACKING 3 /* CLIENT TRACKING / CACHING: Redis must see the reads */

#define BRC_K_UNKNOWN 0         /* not in the table: global invalidation, connection given up */
#define BRC_K_NOKEY 1           /* touches no keys (PING, INFO, CLIENT ...) */
#define BRC_K_READ 2            /* reads its keys */
#define BRC_K_WRITE 3           /* writes its keys: invalidated by position */
#define BRC_K_GLOBAL 4          /* may write anything: global invalidation */

#define BRC_SP_NONE 0
#define BRC_SP_GET 1            /* the one cacheable command */
#define BRC_SP_SET 2            /* SET: EX/PX/EXAT/PXAT/KEEPTTL give the key a TTL; plain SET k v clears it */
#define BRC_SP_TTL 3            /* gives its first key a TTL (SETEX, EXPIRE, MOVE, RESTORE ...) */
#define BRC_SP_GETEX 4          /* GETEX with options: TTL */
#define BRC_SP_AUTH 5           /* AUTH [user] pass: +OK makes user the connection's user */
#define BRC_SP_HELLO 6          /* HELLO [2|3 [AUTH user pass] [SETNAME n]]; another protocol gives up */
#define BRC_SP_SELECT 7
#define BRC_SP_MULTI 8
#define BRC_SP_SUBSCRIBE 9      /* (P|S)(UN)SUBSCRIBE: gives up */
#define BRC_SP_MONITOR 10       /* gives up */
#define BRC_SP_CLIENT 11        /* CLIENT REPLY / TRACKING / CACHING give up */
#define BRC_SP_RESET 12         /* RESET: +RESET makes it db 0, user default, not authenticated */
#define BRC_SP_SECRET 13        /* arguments may hold secrets (MIGRATE): never read */
#define BRC_SP_CONFIG 14        /* CONFIG: all but GET/HELP may change who reads what; args 2+ never read */
#define BRC_SP_ACL 15           /* ACL: all but the read-only subcommands change rights; args 2+ never read */
#define BRC_SP_SERVER 16        /* REPLICAOF, FAILOVER, SHUTDOWN, MODULE, DEBUG: the server itself changes */
#define BRC_SP_REPLICATION 17   /* REPLCONF, SYNC, PSYNC: gives up */
#define BRC_SP_CARRY_TTL 18     /* RENAME, RENAMENX, COPY: the destination (argument 2) may get a TTL */

/* brc_cache: LRU_HASH (see bpf/README.md for the measurement), key struct
 * brc_cache_key, value struct brc_cache_entry. Valid only while ver/gver equal
 * the key's bucket version and the global version and neither has a write in
 * flight, and while younger than brc_config.max_age_ns. Entries are per
 * server address: two Redis behind one interface never share one. */
struct brc_cache_key {
	__u32 srv_addr[BRC_ADDR_WORDS]; /* the Redis address the entry came from (as in brc_flow_key) */
	__u32 len;
	__u8 key[BRC_KEY_MAX];  /* zero-padded after len */
};

/* A reader copies an entry out of the map and then checks it: LRU elements are
 * recycled for other keys under a reader, so the copy must be one fill (fill_id
 * at both ends, still the live element's) of the key asked for (key again). */
struct brc_cache_entry {
	__u64 fill_id;          /* unique per fill */
	__u64 ver;              /* bucket version at fill */
	__u64 gver;             /* global version at fill */
	__u64 fill_ns;
	__u64 expire_ns;        /* filled under an agent: Redis's deadline for the key
				 * (CLOCK_MONOTONIC, BRC_EXPIRY_NEVER without a TTL),
				 * from its brc_expiry record; 0 = filled with no agent
				 * in charge (brc_ttlkeys decides, as at the fill) */
	__u32 bucket;
	__u32 srv_addr[BRC_ADDR_WORDS];
	__u32 key_len;
	__u8 key[BRC_KEY_MAX];
	__u32 len;              /* bytes of reply[]; len and reply are a struct brc_served */
	__u8 reply[BRC_VAL_MAX]; /* the exact RESP reply, e.g. "$3\r\nbar\r\n" */
	__u64 fill_id_end;      /* fill_id again, written after everything else */
};

/* brc_keyver: ARRAY of key buckets, index = FNV-1a(key) % max_entries. */
struct brc_bucket {
	__u64 ver;              /* bumped when a write to a key here passes ingress */
	__u32 inflight;         /* flows holding a write-in-flight mark on this bucket */
	__u32 ttl;              /* 1 = brc_ttlkeys was full when a key here got a TTL:
				 * nothing in this bucket is cached any more */
	__u64 hold_until_ns;    /* a write here may still run until then (its client
				 * reset the connection before Redis answered it) */
};

/* brc_ttlkeys: HASH keyed by struct brc_cache_key, value __u64 (ns the TTL
 * was seen): keys given a TTL (or possibly carrying one: RENAME, COPY, MOVE),
 * never filled until a plain SET that Redis applied in db 0 overwrites them.
 * The rule of the programs alone: with an agent in charge, brc_expiry's is. */

/* brc_expiry: LRU_HASH keyed by struct brc_cache_key, value struct brc_expiry,
 * written only by the host agent: Redis's PEXPIRETIME of a key, read after the
 * versions recorded with it. While an agent is in charge a fill needs the key's
 * record at the versions the GET was tracked at (no write to the key since the
 * agent asked Redis, or the feed's bump makes the record stale), and the entry
 * keeps the deadline: answers stop BRC_EXPIRY_MARGIN_NS before it, since served
 * GETs never make Redis expire a key lazily and the expiry's report can come
 * late. A key without a current record is put in brc_expiry_wanted (LRU_HASH,
 * value __u64 CLOCK_MONOTONIC ns) for the agent to read; an evicted record costs
 * a miss, never a wrong answer. */
struct brc_expiry {
	__u64 write_id;         /* unique per write by the agent */
	__u64 ver;              /* the key bucket's version, read before Redis was asked */
	__u64 gver;             /* the global version, likewise */
	__u64 expire_ns;        /* CLOCK_MONOTONIC of Redis's deadline, or BRC_EXPIRY_NEVER */
	__u32 srv_addr[BRC_ADDR_WORDS]; /* the record's own key again: LRU elements are recycled */
	__u32 key_len;          /* under a reader, so a copy counts only as one write */
	__u8 key[BRC_KEY_MAX];  /* (write_id at both ends) of the key asked for */
	__u64 write_id_end;     /* write_id again, written after everything else */
};

#define BRC_EXPIRY_NEVER 0xffffffffffffffffULL
#define BRC_EXPIRY_MARGIN_NS 10000000ULL  /* answers end this long before Redis's deadline */

/* brc_served: LRU_HASH keyed by struct brc_flow_key: the reply injected last on
 * a served flow, resent byte for byte when the client retransmits its GET.
 * Pinned like the flows whose sequence offsets it matches, so a reload does not
 * turn such a retransmission into a reset. Only a reply the client has not
 * acknowledged can be needed again, so losing an old entry to the LRU costs
 * nothing. */
struct brc_served {
	__u32 len;
	__u8 data[BRC_VAL_MAX];
};

/* brc_global: ARRAY, one entry: writes that touch everything. */
struct brc_global {
	__u64 ver;              /* bumped by FLUSHALL, FLUSHDB, SWAPDB, EVAL, FCALL, MULTI, EXEC, unknown */
	__u64 inflight;         /* flows holding a global write-in-flight mark */
	__u64 flows_live;       /* tracked flows (for reports: brc_flows refuses inserts when full) */
	__u64 hold_until_ns;    /* until then everything counts as in flight: writes
				 * BRC could not see (connections not tracked from their
				 * SYN, packets it cannot parse) or could not see finish
				 * (a client RST with commands pending) */
	__u64 auth_epoch;       /* bumped when a command that may change who can read
				 * what, or the server's role, completes (or its
				 * connection closes before the reply is seen), and
				 * under an agent by client bytes BRC cannot parse */
	__u64 auth_inflight;    /* such commands passed and not complete */
	__u64 auth_hold_until_ns; /* such a command may still run until then (its client
				   * reset the connection first): a load of brc_server
				   * from before then is stale */
};

/* brc_users: HASH keyed by struct brc_user_key (the ACL user name, zero-padded),
 * value struct brc_user. Written only by the toolkit from what Redis reports
 * (ACL GETUSER, ACL DRYRUN): a GET is answered only for a connection whose
 * user is here with BRC_USER_READ_ALL, and that Redis has authenticated (or
 * the user is BRC_USER_OPEN). A user missing here is never answered for. */
struct brc_user_key {
	__u32 len;
	__u8 name[BRC_USER_MAX];
};

struct brc_user {
	__u32 flags;            /* BRC_USER_* */
	__u32 pad;
};

#define BRC_USER_READ_ALL 1     /* Redis lets this user GET every key */
#define BRC_USER_OPEN 2         /* the default user with nopass, on: connections are it without AUTH */
#define BRC_USER_MGET 4         /* ... and MGET every key (an MGET is answered only then) */

/* brc_server: ARRAY, one entry: what the toolkit last read from Redis itself.
 * Written only by the toolkit's loader (module_utils/brc_auth.py), never by
 * the operator's config. The loader protocol, against brc_global:
 *   1. write auth_epoch = BRC_EPOCH_NONE (stop answering), read e0 =
 *      brc_global.auth_epoch, wait for brc_global.auth_inflight == 0;
 *   2. read Redis's users and rights, fill brc_users;
 *   3. if brc_global.auth_epoch is still e0 and nothing is in flight, write
 *      auth_epoch = e0 (else start again).
 * The programs answer only while auth_epoch == brc_global.auth_epoch,
 * brc_global.auth_inflight == 0 and loaded_ns >= brc_global.auth_hold_until_ns:
 * a command that may change who can read what completes with an epoch bump,
 * so a change made after the read stops answers until the next load. */
struct brc_server {
	__u64 auth_epoch;       /* brc_global.auth_epoch brc_users was read at */
	__u64 idle_pass_ns;     /* Redis's `timeout` / 2: a served connection sends
				 * Redis a request at least this often (0 = no timeout) */
	__u64 loaded_ns;        /* CLOCK_MONOTONIC of the load (the programs' clock) */
	__u32 tls_port;         /* Redis's `tls-port` (0 = none): its segments are
				 * encrypted, so they are passed untouched and only
				 * counted, to say why those clients are never answered */
	__u32 pad;
};

#define BRC_EPOCH_NONE 0xffffffffffffffffULL

/* brc_agent: ARRAY, one entry, written only by the host agent (brc-agent, in
 * module_utils/brc_agent.py). While BRC_AGENT_F_ON is set the agent is in charge
 * of this interface: Redis's own invalidation feed (CLIENT TRACKING BCAST) reports
 * every key that changes, so writes the wire does not show (loopback, a Unix
 * socket, expiry, eviction, scripts, a replica's stream) and those of traffic BRC
 * cannot follow at all (connections not seen from their SYN, IPv6 extension headers, IP options,
 * fragments) are invalidated within the feed's lag, with no lease. Who may read what has
 * no feed: such bytes stop answers until the agent has loaded the users again after
 * Redis ran them (proven from brc_untracked, or after a lease for unparsed packets). Connections
 * BRC tracks never lean on that lag: a lost parser's global mark and a reset
 * writer's hold stay as without an agent (the fuzzer found answers stale for
 * the feed's lag without them). Nothing is answered unless beat_ns is younger than
 * BRC_AGENT_STALE_NS: the agent beats only while it is connected to Redis, its
 * feed is live, and Redis's run id, role and loading state are the ones it last
 * flushed at (a change flushes everything first). Without BRC_AGENT_F_ON the
 * programs stand alone (leases and holds, answers bounded by max_age). */

/* Why the agent flushed: the reason strings it logs, upper-cased here, one
 * flushes_by_reason slot each in list order. Only the agent counts them; the
 * programs never read them. The capacity is fixed so that a reason appended
 * later keeps the map's layout (and the counts) across an upgrade. Append only:
 * a retired reason keeps its slot (rename it RETIRED_n). OTHER is slot 0 so a
 * reason string this list lacks (an agent newer than its contract) is still
 * counted somewhere stable. */
#define BRC_AGENT_FLUSH_SLOTS 32
#define BRC_AGENT_FLUSH_REASONS(X) \
	X(OTHER, "a reason this contract does not name") \
	X(AGENT_START, "the agent took charge (started, or reopened replaced pins): answers wait for Redis to be consistent") \
	X(AGENT_STOP, "the agent stopped (SIGTERM, SIGINT, an error): still in charge, so answers stay stopped") \
	X(AGENT_RELEASE, "brc-agent --release: the interface handed back to the programs alone") \
	X(RESYNC, "the agent's first consistent view of Redis: writes made before it watched were not reported") \
	X(RECONNECT, "consistent again with the same run id, role and master: reports sent while disconnected were lost") \
	X(RESTART, "Redis's run_id changed: it restarted, with its data set reloaded or empty") \
	X(ROLE, "Redis's role changed (REPLICAOF, FAILOVER): its data set may have been replaced") \
	X(REPLICATION, "a replica's master or link changed: it may resync to another data set") \
	X(LOADING, "Redis is loading an RDB or AOF (a restart, DEBUG RELOAD): nothing to answer from yet") \
	X(REPLICA_LINK_DOWN, "a replica's link to its master is down: before and during a full sync it holds old data") \
	X(REDIS_DOWN, "a connection to Redis failed, closed or timed out") \
	X(REDIS_ERROR, "Redis answered the agent's checks with an error") \
	X(FEED, "the invalidation feed is not live (tracking off, redirect broken, an unexpected message)") \
	X(FLUSHALL, "Redis reported FLUSHALL or FLUSHDB (an invalidation with no keys)") \
	X(PINS_REPLACED, "BRC was redeployed or removed under the agent: the maps it fed are not the ones read") \
	X(CLOCK_STEP, "the wall clock stepped against CLOCK_MONOTONIC: Redis's key deadlines moved under the expiry records")

struct brc_agent {
	__u64 beat_ns;          /* CLOCK_MONOTONIC of the last heartbeat */
	__u64 flags;            /* BRC_AGENT_F_* */
	__u64 pid;              /* the agent's process id (reports) */
	__u64 started_ns;       /* CLOCK_MONOTONIC when it took charge (reports) */
	__u64 feed_keys;        /* keys invalidated from the feed (reports) */
	__u64 feed_flushes;     /* everything invalidated, all reasons (reports) */
	__u64 feed_lag_ns;      /* the last batch's lag, Redis's report to the bump (reports) */
	__u64 touched_keys;     /* TOUCHes sent for keys answered in the kernel (reports) */
	/* feed_flushes split by BRC_AGENT_FLUSH_REASONS slot: the total alone cannot
	 * tell a flapping link from Redis restarts or role changes. Last, so the
	 * fields above keep their offsets (reports). */
	__u64 flushes_by_reason[BRC_AGENT_FLUSH_SLOTS];
};

#define BRC_AGENT_F_ON 1        /* an agent is in charge: its heartbeat is required */
#define BRC_AGENT_STALE_NS 500000000ULL /* a heartbeat older than this stops answers */

#define BRC_AGENT_FLUSH_ENUM(name, doc) BRC_AGENT_FLUSH_##name,
enum brc_agent_flush_reason { BRC_AGENT_FLUSH_REASONS(BRC_AGENT_FLUSH_ENUM) BRC_AGENT_FLUSH__MAX };
#undef BRC_AGENT_FLUSH_ENUM
_Static_assert(BRC_AGENT_FLUSH__MAX <= BRC_AGENT_FLUSH_SLOTS,
	       "agent flush reasons outgrew brc_agent.flushes_by_reason (a layout change)");

/* The feed program (brc_feed, pinned as prog_feed next to prog_ingress and
 * prog_egress, never attached): the agent runs it with BPF_PROG_TEST_RUN on a
 * 14-byte Ethernet header followed by a struct brc_feed_batch, and it bumps the
 * listed key buckets' versions in the kernel, atomically, as a write seen on
 * the wire does (bucket = FNV-1a-64 of the key's first BRC_KEY_MAX bytes, folded
 * to 32 bits, modulo brc_keyver's max_entries). Its return value is the number
 * of buckets bumped. */
#define BRC_FEED_BATCH 64
#define BRC_FEED_F_FLUSH 1      /* also invalidate everything (a global version bump) */

struct brc_feed_batch {
	__u32 count;            /* buckets[] entries used (<= BRC_FEED_BATCH) */
	__u32 flags;            /* BRC_FEED_F_* */
	__u32 buckets[BRC_FEED_BATCH];
};

/* brc_touched: LRU_HASH keyed by struct brc_cache_key, value __u64 (CLOCK_MONOTONIC
 * ns): keys answered in the kernel, 1 in BRC_TOUCH_SAMPLE answers while an agent
 * is in charge. The agent TOUCHes them in batches and deletes them, so Redis's
 * LRU/LFU clocks see the reads it no longer serves (maxmemory eviction would
 * otherwise take the hottest keys first). */
#define BRC_TOUCH_SAMPLE 8

/* Adopting connections BRC did not see open (opened before the attach, or
 * their SYN unseen), while an agent is in charge. Their bytes cannot be
 * parsed from the middle of a command, so they are adopted at a command
 * boundary Redis itself proves:
 *   1. brc_untracked (LRU_HASH keyed by struct brc_flow_key, written only by
 *      the programs): the sequence numbers each side sent and acked last.
 *   2. The agent reads the record, then the server socket (sock_diag: nothing
 *      unread, nothing unsent), then Redis's CLIENT LIST entry of the tuple
 *      (query buffer and output buffers empty, no flags: not blocked, in
 *      MULTI, subscribed, tracking or monitoring; no CLIENT REPLY SKIP last),
 *      then the socket and the record again. If the server had acked every
 *      client byte the record saw and no client byte moved since, Redis has
 *      executed every command before cli_next and written every reply before
 *      srv_next.
 *   3. It writes a proven brc_adopt (HASH keyed by struct brc_flow_key) with
 *      what CLIENT LIST said (db, user, protocol) and the socket's MSS and
 *      window shift. The programs adopt the flow at the next client payload
 *      segment that starts exactly at cli_next while the record still ends
 *      at both numbers; any other segment spends the ticket unused.
 * A connection that never rests is frozen first: an unproven brc_adopt with
 * freeze_until_ns, until which its new client bytes are dropped (the client
 * sends them again), so Redis catches up. A proven ticket keeps dropping new
 * bytes past the boundary until the segment that starts there (a tail loss
 * probe resends the last segment first). An adopted flow is BRC_FF_UNPROVEN
 * until Redis's first reply.
 * A replica's link (flags S) is adopted too, given up from the start, as it
 * would be had it connected after the attach: its commands (REPLCONF ACK each
 * second) are then parsed, and no longer move the auth epoch as unseen bytes.
 * Only its client side is proven: the master's stream to it may never rest
 * and is never paired with requests. */
struct brc_untracked {
	__u32 cli_next;         /* one past the highest client byte seen (BRC_UT_F_CLI) */
	__u32 srv_next;         /* one past the highest server byte seen (BRC_UT_F_SRV) */
	__u32 cli_ack;          /* highest ack the client sent */
	__u32 srv_ack;          /* highest ack the server sent */
	__u64 flags;            /* BRC_UT_F_*: which halves were seen (atomic or) */
	__u64 seen_ns;          /* CLOCK_MONOTONIC of the last segment either way */
	__u16 srv_win;          /* the server's last raw window */
	__u16 pad[3];
};

#define BRC_UT_F_CLI 1
#define BRC_UT_F_SRV 2
#define BRC_ADOPT_FREEZE_MAX_NS 1000000000ULL /* a freeze the programs honour at most */

struct brc_adopt {
	__u64 freeze_until_ns;  /* unproven: drop the client's new bytes until then */
	__u32 proven;           /* 1: what follows is Redis's word at cli_next / srv_next */
	__u32 cli_next;
	__u32 srv_next;
	__u32 db;               /* CLIENT LIST db= */
	__u16 proto;            /* resp= (2 or 3) */
	__u16 mss;              /* the socket's smaller MSS (sock_diag: snd_mss, advmss) */
	__u8 cli_wscale;        /* the client's window shift (sock_diag: snd_wscale) */
	__u8 authed;            /* a user other than default: Redis authenticated it */
	__u8 replica;           /* 1: a replica's link to this master (CLIENT LIST flags=S): adopted
				 * given up (BRC_DIRTY_BIT_REPLICATION), its server side unmatched */
	__u8 pad[1];
	__u32 user_len;         /* CLIENT LIST user= */
	__u8 user[BRC_USER_MAX];
};

/* brc_replybuf: LRU_HASH keyed by struct brc_flow_key: the tracked GET's reply
 * bytes as they stream out (a reply can span segments). */
struct brc_replybuf {
	__u32 len;
	__u32 pad;
	__u8 data[4096];        /* 2 * BRC_VAL_MAX: bounded copies need the headroom */
};
_Static_assert(sizeof(((struct brc_replybuf *)0)->data) == 2 * BRC_VAL_MAX,
	       "brc_replybuf.data is twice BRC_VAL_MAX");

/* brc_ooo: LRU_HASH keyed by struct brc_flow_key: client bytes that arrived
 * after a hole in the sequence (reordering, or a lost segment the client will
 * resend), passed to Redis (whose kernel queues them likewise) and held here
 * until the hole fills; the request parser then reads them after the filling
 * segment, so out-of-order segments no longer give the connection up. Held
 * bytes sit at their distance from `base` (the first missing byte when the
 * first was held), at most BRC_OOO_MAX from it, as one contiguous range
 * [lo, hi) that grows at either end; anything else (a second range, a
 * different overlap, more bytes) gives the connection up (GAP), as before.
 * Holding bytes Redis also holds is only sound because Linux keeps the bytes
 * it queued first for a range it already has, as this does. */
#define BRC_OOO_MAX 4096        /* window of held bytes per connection (a power of 2) */
struct brc_ooo {
	__u32 base;             /* client sequence number of data[0] */
	__u16 lo, hi;           /* held: data[lo, hi) */
	__u8 data[2 * BRC_OOO_MAX];   /* bounded copies need the headroom */
};

/* Counters: brc_stats is a PERCPU_ARRAY of BRC_STATS_SLOTS __u64 indexed by
 * BRC_C_<NAME>; the toolkit sums the CPUs and reports each under the lower-case
 * name. The capacity is fixed so that appending a counter keeps the map layout
 * (and the stats) across an upgrade. Slots from BRC_DIRTY_SLOT_BASE on hold one
 * counter per dirty reason (DIRTY_<reason>, connections that became dirty for
 * it), so both lists can grow at their ends independently. Append only: a
 * retired counter keeps its slot (rename it RETIRED_n). */
#define BRC_STATS_SLOTS 128
#define BRC_DIRTY_SLOT_BASE 96
#define BRC_COUNTERS(X) \
	X(PKT_INGRESS, "TCP segments to the Redis port seen at ingress") \
	X(PKT_EGRESS, "TCP segments from the Redis port seen at egress") \
	X(PKT_IPV6, "IPv6 packets BRC does not parse seen at ingress: extension headers (to the Redis port: invalidate everything)") \
	X(PKT_IP_OPTIONS, "IPv4 packets with IP options seen at ingress (to the Redis port: invalidate everything)") \
	X(PKT_FRAGMENT, "IPv4 fragments seen at ingress (that may be to the Redis port: invalidate everything)") \
	X(PKT_MALFORMED, "IP packets whose lengths do not add up, passed untouched") \
	X(FLOWS_TRACKED, "connections tracked from their SYN") \
	X(FLOWS_CLOSED, "tracked connections released on RST or FIN") \
	X(SYN_IGNORED, "SYNs on a live tracked connection: ignored, as the kernel does (challenge ACK)") \
	X(FLOWS_TABLE_FULL, "SYNs that could not be tracked: flow table insert failed") \
	X(SEGMENTS_UNTRACKED, "payload segments of connections not seen from their SYN") \
	X(SEGMENTS_RETRANSMITTED, "payload segments already seen (retransmissions), not parsed again") \
	X(REQ_GET, "GET commands passed to Redis") \
	X(REQ_SET, "SET-family commands (SET, SETNX, SETEX, PSETEX) passed to Redis") \
	X(REQ_OTHER, "other commands passed to Redis") \
	X(REQ_WRITE, "commands that invalidate keys (any class)") \
	X(REQ_INLINE, "inline (non-RESP) commands") \
	X(REPLIES, "replies seen") \
	X(REPLIES_UNMATCHED, "replies seen with nothing pending") \
	X(WOULD_HIT, "GETs the cache would have answered, and Redis's reply matched") \
	X(MISMATCH, "GETs the cache would have answered, and Redis's reply differed (a cache bug)") \
	X(VERIFY_RACED, "would-hits not comparable: a write to the key passed before the reply") \
	X(MISS, "cacheable GETs the cache could not answer") \
	X(GET_UNCACHEABLE_PENDING, "GETs sent while commands were pending on the connection") \
	X(GET_UNCACHEABLE_DIRTY, "GETs on dirty connections") \
	X(GET_UNCACHEABLE_AUTH, "GETs of a user Redis has not authenticated or does not let read every key") \
	X(GET_UNCACHEABLE_DB, "GETs on connections using a database other than 0") \
	X(GET_UNCACHEABLE_ARGS, "GETs with other than one argument") \
	X(OVERSIZE_KEY, "GET keys longer than the cacheable maximum") \
	X(OVERSIZE_VALUE, "GET replies larger than the cacheable maximum") \
	X(FILL, "cache entries filled from Redis's reply") \
	X(FILL_REFUSED_INFLIGHT, "fills refused: a write to the key was in flight when the GET passed") \
	X(FILL_REFUSED_VERSION, "fills refused: a write to the key passed between the GET and its reply") \
	X(FILL_REFUSED_TTL, "fills refused: the key was given a TTL") \
	X(FILL_REFUSED_NOT_BULK, "fills refused: the reply was not a bulk string (error, wrong type)") \
	X(FILL_REFUSED_NO_SPACE, "fills refused: the cache or reply buffer update failed") \
	X(CACHE_EXPIRED, "entries found older than the maximum age") \
	X(INVALIDATE_KEY, "key invalidations (bucket version bumps by a write)") \
	X(INVALIDATE_GLOBAL, "global invalidations (FLUSHALL, EVAL, unknown commands, given-up parsers ...)") \
	X(TTL_MARKED, "keys given a TTL (SET EX/PX..., SETEX, EXPIRE, RENAME ...): not cached") \
	X(MARKS_OVERFLOW, "writes that took a global in-flight mark because the flow's key marks were full") \
	X(PARSE_ERROR_REQUEST, "client bytes that are not RESP or inline commands as Redis reads them") \
	X(PARSE_ERROR_REPLY, "server bytes that are not RESP2 replies") \
	X(LATENCY_UNTIMED, "replies with no ingress timestamp (FIFO overflow)") \
	X(TAILCALL_FAILED, "parser continuations or serve stages that failed to run (the flow is given up)") \
	X(INVALIDATE_UNTRACKED, "global invalidations by payload of connections not tracked from their SYN") \
	X(HIT, "GETs answered in the kernel (serve mode)") \
	X(RESENT, "identical stored replies resent for a retransmitted GET") \
	X(RESET, "served connections reset because the identical reply bytes were gone") \
	X(ACK_HELD, "server acks held back until the client acked an injected reply") \
	X(SERVE_REFUSED_TCP, "would-be hits passed to Redis: the TCP conditions refused") \
	X(SERVE_ERR_BUILD, "answer builder failures (request dropped, the client retransmits)") \
	X(SERVE_ERR_CLONE, "pure-ACK clones that failed (the server's snd_una lags to RTO)") \
	X(SERVE_CSUM_PARTIAL, "answered requests that were CHECKSUM_PARTIAL") \
	X(SERVE_DUP_DROPPED, "stale duplicates of an answered request, dropped") \
	X(SACK_PERM_STRIPPED, "client SYNs whose SACK-permitted option became NOPs (serve mode built with BRC_SERVE_STRIP_SACK; by default SACK is kept and translated)") \
	X(SERVE_VERIFY_SAMPLED, "would-be hits sent to Redis anyway by verify_sample (compared)") \
	X(SERVE_FLOWS_KEPT, "served connections kept after close for their last FIN/ACK translation") \
	X(GET_UNCACHEABLE_SERVER, "GETs not answerable: Redis's users and rights are not loaded, or a change to them is in flight") \
	X(SERVE_PASSED_IDLE, "would-be hits passed to Redis so that its `timeout` sees the connection active") \
	X(SERVE_KEY_RECHECK, "would-be hits passed: the entry copied was recycled for another fill meanwhile") \
	X(RST_IGNORED, "RSTs not exactly at the next sequence number: ignored, as the kernel does") \
	X(RST_PENDING, "client RSTs with writes unanswered: what they could change is held for a while") \
	X(SERVER_CHANGES, "commands that may change users, rights or the server's role (answers stop until reloaded)") \
	X(INVALIDATE_UNPARSED, "global invalidations by IPv6, IPv4-with-options or fragments to the Redis port") \
	X(TTL_CLEARED, "TTL records removed by a plain SET that Redis applied") \
	X(MISMATCH_EVICTED, "entries removed because a verified answer differed from Redis's reply") \
	X(GET_UNCACHEABLE_AGENT, "GETs not answerable: the host agent in charge has not beaten recently (down, Redis down, feed lost)") \
	X(FEED_KEYS, "key buckets invalidated by the host agent's feed (writes Redis reported)") \
	X(FEED_FLUSHES, "global invalidations by the host agent (Redis restarted, changed role, lost its feed)") \
	X(TOUCH_SAMPLED, "answered keys recorded for the agent to TOUCH in Redis") \
	X(FILL_REFUSED_EXPIRY, "fills refused: the agent in charge has no current record of the key's expiry (asked for)") \
	X(EXPIRY_WANTED, "keys put in brc_expiry_wanted for the agent to read their expiry") \
	X(ANSWER_NEAR_EXPIRY, "would-be hits passed: the key expires in Redis within the margin") \
	X(RESP3_NOT_REPLIES, "RESP3 pushes and top-level attributes seen (they pair with no command)") \
	X(ANSWER_NIL_RESP3, "would-be hits passed: RESP2's nil for a RESP3 connection (whose nil is _)") \
	X(TLS_CONNECTIONS, "SYNs to Redis's tls-port: TLS connections, passed untouched (never parsed, never answered)") \
	X(TLS_SEGMENTS, "payload segments to Redis's tls-port, passed untouched") \
	X(OOO_HELD, "client segments after a sequence hole, held in brc_ooo until the hole fills") \
	X(OOO_RESENT, "client segments after a hole whose bytes were already held (a resend)") \
	X(OOO_RESUMED, "held bytes parsed once the hole before them filled") \
	X(SERVE_BUSY_DROPPED, "serve mode: client segments dropped while another CPU parsed the connection (sent again by the client)") \
	X(SACK_TRANSLATED, "segments of served connections whose SACK blocks were translated (serve mode)") \
	X(SACK_BLOCKS_REMOVED, "SACK blocks removed in translation: inside an injected reply, or a D-SACK older than the latest offset change") \
	X(SERVE_OVER_MSS, "would-be hits passed: the reply does not fit one segment of the connection's MSS") \
	X(SERVE_BATCHES, "segments of several GETs or of MGETs answered in the kernel with one reply (each GET is a hit)") \
	X(SERVE_MGETS, "MGETs answered in the kernel, every key from the cache (in serve_batches)") \
	X(FLOWS_ADOPTED, "connections not seen from their SYN, adopted at a command boundary the agent proved") \
	X(ADOPT_FROZEN, "client segments of a connection being adopted dropped during its freeze (sent again)") \
	X(ADOPT_MISSED, "adoption tickets spent by a segment not at the proven boundary (not adopted)") \
	X(ADOPT_PROVEN, "adopted connections whose first reply from Redis was seen (answerable from then on)") \
	X(AUTH_UNSEEN, "client segments BRC cannot parse under an agent: answers wait for users loaded after Redis ran them")

#define BRC_COUNTER_ENUM(name, doc) BRC_C_##name,
enum brc_counter { BRC_COUNTERS(BRC_COUNTER_ENUM) BRC_C__MAX };
#undef BRC_COUNTER_ENUM
_Static_assert(BRC_C__MAX <= BRC_DIRTY_SLOT_BASE, "counters reached the dirty-reason slots");

/* Latency histograms, one per command: brc_latency is a PERCPU_ARRAY of __u64
 * indexed by id * BRC_LAT_SLOTS + slot, slot = log2(nanoseconds from request
 * ingress to reply egress; for a GET answered in the kernel, to the reply's
 * redirect), clamped to BRC_LAT_SLOTS - 1. id is the command's brc_cmd.id:
 * the build numbers its command table (module_utils/brc_commands.py) and
 * records the names in id order as latency_names in its build record, which
 * is how readers label the histograms. Id 0 counts commands missing from the
 * table; GET is always BRC_LAT_ID_GET and MGET BRC_LAT_ID_MGET, so the serve
 * path needs no lookup. */
#define BRC_LAT_SLOTS 40
#define BRC_LAT_COMMANDS 256    /* ids fit brc_cmd.id and the FIFO's 8 bits */
#define BRC_LAT_ID_OTHER 0
#define BRC_LAT_ID_GET 1
#define BRC_LAT_ID_MGET 2

/* Request counters (REQ_GET, REQ_SET, REQ_OTHER): which one a command bumps. */
#define BRC_REQ_GROUPS(X) \
	X(GET, "GET") \
	X(SET, "SET and its variants") \
	X(OTHER, "every other command")

#define BRC_DIRTY_ENUM(name, doc) BRC_DIRTY_BIT_##name,
enum brc_dirty_bit { BRC_DIRTY_REASONS(BRC_DIRTY_ENUM) BRC_DIRTY__MAX };
#undef BRC_DIRTY_ENUM
#define BRC_DIRTY(name) (1ULL << BRC_DIRTY_BIT_##name)
_Static_assert(BRC_DIRTY_SLOT_BASE + BRC_DIRTY__MAX <= BRC_STATS_SLOTS,
	       "dirty reasons reached the end of brc_stats (a layout change)");
/* Every reason but MULTI gives the connection up (see BRC_DIRTY_REASONS). */
#define BRC_DIRTY_GIVEUP (((1ULL << BRC_DIRTY__MAX) - 1) & ~BRC_DIRTY(MULTI))

#define BRC_REQ_ENUM(name, doc) BRC_REQ_##name,
enum brc_req_group { BRC_REQ_GROUPS(BRC_REQ_ENUM) BRC_REQ__MAX };
#undef BRC_REQ_ENUM

#endif /* BRC_CONTRACT_H */
