# -*- coding: utf-8 -*-
# Why GETs were (not) answered: every GET the programs saw, in exactly one bucket,
# derived from the counters of bpf/brc_contract.h's BRC_COUNTERS. Defined here once;
# brc_stats returns it, and the fleet's stats.json, Prometheus textfiles and audit
# report (plugins/filter, module_utils/brc_report.py) sum and show what brc_stats returned.
#
# Why not an X-macro in brc_contract.h: the kernel never reads this table (that
# header is the contract of what crosses the kernel/user boundary), the split is an
# interpretation of the code paths in bpf/brc_cache.h, brc_resp.h, brc_serve.h and
# brc.c that needs an order and remainders the header's X(NAME, "doc") form cannot
# say, and the fixes name the toolkit's variables. The counters it reads are the
# header's own; a GET-outcome counter the header gains and this table does not place
# is listed under `unclassified` (and fails tests/fleet/test_fleet_logic.py).
#
# How one GET reaches the counters (a GET may bump several, hence the tree):
#   answered in the kernel (brc_serve_in, or     hit, never req_get
#   brc_serve_batch: one hit per GET)
#   passed to Redis, parsed (brc_rq_cmd_done)    req_get, then exactly one of, in order:
#     argc != 2                                  get_uncacheable_args
#     given-up connection                        get_uncacheable_dirty
#     commands pending before it (pipelined)     get_uncacheable_pending
#     SELECTed db != 0                           get_uncacheable_db
#     key over max_key_len                       oversize_key
#     tracked for a fill                         miss (+ at most one ingress reason:
#                                                fill_refused_inflight, _ttl, cache_expired,
#                                                answer_near_expiry, answer_nil_resp3,
#                                                get_uncacheable_agent/server/auth; + at most
#                                                one reply outcome: fill, fill_refused_*,
#                                                oversize_value; the connection may close first)
#     tracked as a would-be hit                  at the reply one of would_hit, verify_raced,
#                                                mismatch (or none: closed first); in serve
#                                                mode a would_hit was first passed by the
#                                                serve stage, maybe for a counted reason
#                                                (serve_verify_sampled, _passed_idle, ...)
#     none of these                              mode off (served connections only), before
#                                                the handshake completed
# GETs of connections BRC does not follow (opened before it was attached, or whose
# request parser was lost) bump none of them: they are reported apart (unseen).
#
# The tree below follows that path. Each node takes min(its counters, what is left of
# its parent), in order; the last child of every group takes the rest. So the leaves
# always sum to the total, also when counters are read while traffic runs (per-CPU
# slots are read one after the other): an inconsistency shrinks the last leaves, never
# the sum. Where a GET bumps two counters (a cached GET not answerable for the user,
# then refilled from its reply), the earlier leaf takes it and says which later counters
# it also bumped (`also`), so those are not read twice. Which of them it was is a best
# guess (`also` lists the likely one first): the total and the earlier leaf are exact,
# the split between the reply outcomes may be off by those GETs.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

OUTCOMES = ("answered", "would_answer", "not_answered")

# The GETs the programs saw: answered in the kernel (hit) plus passed to Redis and
# parsed (req_get). A GET answered in the kernel never reaches the request parser.
TOTAL = ("hit", "req_get")


def _leaf(counters, outcome, reason, doc, fix, also=()):
    """@also: counters the GETs of this leaf bump a second time, later (at their reply),
    most likely first: taken off those counters before later leaves read them."""
    return {"counters": counters, "outcome": outcome, "reason": reason, "doc": doc, "fix": fix,
            "also": also}


def _group(counters, children):
    return {"counters": counters, "children": children}


# A GET found cached but not answerable (agent, users_not_loaded, auth, max_age) is
# tracked for a fill anyway: its reply bumps one reply-outcome counter too (fill, most
# likely: the same value again; an error for a user denied the key).
_REPLY = ("fill", "fill_refused_ttl", "oversize_value", "fill_refused_not_bulk", "fill_refused_version",
          "fill_refused_expiry", "fill_refused_no_space")
_REFILL = _REPLY
_REFILL_DENIED = ("fill_refused_not_bulk",) + tuple(c for c in _REPLY if c != "fill_refused_not_bulk")

# counters None: the rest of the parent. Fixes may use %(BRC_<NAME>)d from the contract.
TREE = _group(TOTAL, [
    _leaf(("hit",), "answered", "served",
          "answered in the kernel (serve mode)",
          "nothing: these never reached Redis"),
    _group(None, [      # the rest of the total: req_get, the GETs passed to Redis and parsed
        _leaf(("get_uncacheable_args",), "not_answered", "args",
              "GET with other than one argument (Redis answers an error)",
              "nothing: a client bug, Redis answers these with an error"),
        _leaf(("get_uncacheable_dirty",), "not_answered", "dirty",
              "on connections BRC gave up for good (see dirty_<reason>: MULTI, CLIENT TRACKING, a gap, ...)",
              "see the dirty reasons (connections given up, by reason) and their fixes"),
        _leaf(("get_uncacheable_pending",), "not_answered", "pipelined",
              "sent while other commands were pending on the connection (pipelined)",
              "pipelined GETs are answered when a segment holds GETs and MGETs alone (at most "
              "%(BRC_BATCH_GETS)d keys), "
              "every one cached, and their replies fit one segment; behind a write or any other "
              "command they go to Redis, by design"),
        _leaf(("get_uncacheable_db",), "not_answered", "db",
              "on connections using a database other than 0 (SELECT)",
              "keep cacheable keys in database 0"),
        _leaf(("oversize_key",), "not_answered", "oversize_key",
              "key longer than max_key_len",
              "raise brc_max_key_len (at most BRC_KEY_MAX = %(BRC_KEY_MAX)d bytes); longer keys are never cached"),
        _group(("miss",), [
            _leaf(("fill_refused_inflight",), "not_answered", "write_in_flight",
                  "a write to the key (or one that may touch any key) was in flight",
                  "nothing: keys written as often as they are read cannot be cached"),
            _leaf(("get_uncacheable_agent",), "not_answered", "agent",
                  "cached, but the host agent in charge was not beating (down, Redis down, feed lost)",
                  "bring brc-agent back (its log on the host; deploy.yml restarts it)",
                  also=_REFILL),
            _leaf(("get_uncacheable_server",), "not_answered", "users_not_loaded",
                  "cached, but Redis's users and rights were not loaded, or a change to them was in flight",
                  "run deploy.yml (brc_auth loads them); avoid ACL SETUSER / CONFIG SET under load",
                  also=_REFILL),
            _leaf(("get_uncacheable_auth",), "not_answered", "auth",
                  "cached, but the connection's user is not authenticated or may not read every key",
                  "nothing for users limited to some keys (~prefix:*): never answered for, by design; "
                  "authenticate the others",
                  also=_REFILL_DENIED),
            _leaf(("cache_expired",), "not_answered", "max_age",
                  "cached, but older than max_age",
                  "raise brc_max_age (with the host agent in charge staleness is bounded by its feed)",
                  also=_REFILL),
            _leaf(("fill_refused_ttl",), "not_answered", "ttl",
                  "the key has a TTL (or is about to expire)",
                  "deploy the host agent (brc_agent: present): it caches keys with a TTL until Redis's deadline"),
            _leaf(("oversize_value",), "not_answered", "oversize_value",
                  "value longer than max_value_len",
                  "raise brc_max_value_len (at most BRC_VAL_MAX = %(BRC_VAL_MAX)d bytes of reply); "
                  "larger values are never cached"),
            _leaf(("fill_refused_not_bulk",), "not_answered", "error_reply",
                  "Redis answered with an error (wrong type, ...) or RESP3's nil (_), not a bulk string",
                  "nothing: errors are not cached, nor a missing key read over RESP3 (its nil is _)"),
            _leaf(("fill_refused_version",), "not_answered", "write_raced",
                  "a write to the key passed between the GET and its reply",
                  "nothing: keys written as often as they are read cannot be cached"),
            _leaf(("fill_refused_expiry",), "not_answered", "expiry_unknown",
                  "the host agent had not read the key's expiry yet (first reads of a key)",
                  "nothing: a later read fills once the agent has read it"),
            _leaf(("fill_refused_no_space",), "not_answered", "no_space",
                  "the cache or reply buffer could not take the entry",
                  "nothing to set in the toolkit: the cache map is full or under pressure"),
            _leaf(("fill",), "not_answered", "first_read",
                  "not cached yet: the reply filled the cache (a cold or recently written key)",
                  "nothing: the next GETs of the key can be answered"),
            _leaf(None, "not_answered", "reply_unseen",
                  "tracked for a fill, but no reply was followed (the connection closed or was given up "
                  "first, or the mode was switched off)",
                  "nothing, unless it is large: then see the dirty reasons"),
        ]),
        _group(None, [
            _group(("would_hit",), [
                _leaf(("serve_verify_sampled",), "would_answer", "verify_sample",
                      "serve mode: sent to Redis anyway by verify_sample, and compared",
                      "nothing: brc_verify_sample = N sends 1 in N (0 stops the check; not advised)"),
                _leaf(("serve_passed_idle",), "would_answer", "idle_pass",
                      "serve mode: passed so that Redis's `timeout` sees the connection active",
                      "nothing, or raise Redis's timeout (0 = none)"),
                _leaf(("serve_refused_tcp",), "would_answer", "tcp_state",
                      "serve mode: the TCP conditions refused an answer (an unacknowledged answer, window, ...)",
                      "nothing: transient"),
                _leaf(("serve_over_mss",), "would_answer", "over_mss",
                      "serve mode: cached, but the reply does not fit one TCP segment of the connection (its MSS)",
                      "nothing in BRC: an answer is one segment (1439 bytes of value at MTU 1500 with timestamps); "
                      "a larger MTU on the Redis network (jumbo frames) raises it"),
                _leaf(("serve_key_recheck",), "would_answer", "recycled",
                      "serve mode: the entry was recycled for another fill while being copied",
                      "nothing: transient"),
                _leaf(None, "would_answer", "not_served",
                      "proven answerable against Redis's reply, but not answered: observe mode, or in serve mode a "
                      "request the serve stage does not take (no TCP timestamps, not one GET alone in its segment)",
                      "observe: promote to serve (playbooks/enable.yml -e brc_enable_mode=serve); "
                      "serve: clients must use TCP timestamps and send one GET per segment (bpf/SERVE.md)"),
            ]),
            _leaf(("verify_raced",), "would_answer", "raced",
                  "cached, but a write passed before Redis's reply, so not comparable",
                  "nothing: the answer would have preceded the write"),
            _leaf(("mismatch",), "not_answered", "mismatch",
                  "cached, and Redis's reply differed (a cache bug: the entry is evicted, the connection given up)",
                  "report it: BRC's model disagreed with Redis; keep the host in observe"),
            _leaf(None, "not_answered", "other",
                  "none of the above: passed while the mode was off (served connections), before the handshake "
                  "completed, or tracked as a would-be hit whose reply was not followed",
                  "nothing, unless it is large"),
        ]),
    ]),
])

# Counters about GETs that take no part in the split, and why (anything else whose
# name or description says GET, hit or fill must be placed in TREE or here).
NOT_PARTS = {
    "answer_near_expiry": "counted twice for one GET in serve mode (serve stage, then the parser): "
                          "such GETs end in ttl (their refill is refused)",
    "answer_nil_resp3": "counted twice for one GET in serve mode (serve stage, then the parser), like "
                        "answer_near_expiry: such GETs end in error_reply (RESP3's nil is not cached)",
    "resent": "a retransmitted GET already answered (hit), not a new GET",
    "serve_batches": "segments, not GETs: each GET of an answered batch is a hit",
    "serve_mgets": "MGETs answered in the kernel: not GETs (Redis counts them apart too)",
    "serve_dup_dropped": "a stale duplicate of an answered GET, not a new GET",
    "serve_err_build": "the answer was not sent: the GET is either retransmitted (resent) or passed (req_get)",
    "serve_csum_partial": "a property of answered GETs (hit)",
    "touch_sampled": "a sample of answered GETs (hit)",
    "mismatch_evicted": "a consequence of mismatch",
    "expiry_wanted": "a request to the agent made while a GET passed (the GET is counted elsewhere)",
    "latency_untimed": "replies without a timestamp, any command",
    "segments_untracked": "segments, not GETs: reported as unseen",
    "serve_err_clone": "the server's pure ACK of an answered GET (hit) failed, not the answer",
    "serve_flows_kept": "connections, not GETs",
    "tls_connections": "connections, not GETs (their segments are reported as unseen)",
    "serve_busy_dropped": "segments dropped and sent again by the client, not GETs",
    "ooo_held": "segments held until a hole before them fills, not GETs (their GETs are parsed then)",
}

# Seen apart: traffic whose GETs bump no counter (not in the total).
UNSEEN = (
    ("segments_untracked", "payload segments of connections BRC did not see open (opened before it was "
                           "attached, or when its flow table was full): their GETs are in none of the numbers",
     "reconnect the clients: restart the application's connection pool, or let the rollout close "
     "them in paced batches (enable.yml -e brc_rollout_reconnect=true)"),
    ("tls_segments", "payload segments of TLS connections (Redis's tls-port): encrypted, so passed untouched; "
                     "their GETs are in none of the numbers",
     "nothing in BRC: TLS is never answered in the kernel; clients on a trusted network can use the "
     "plain port to be served"),
)

# What to do about a dirty reason, where its description alone does not say.
DIRTY_FIXES = {
    "resp3": "HELLO with a protocol other than 2 or 3: connect with protocol 2 or 3",
    "tracking": "client-side caching (CLIENT TRACKING): turn it off for these clients, BRC is the cache",
    "multi": "transactions (MULTI): reads inside them are not cached; read outside the transaction",
    "pubsub": "pub/sub connections: use separate connections for GETs",
    "monitor": "MONITOR connections: nothing to cache",
    "client_reply": "CLIENT REPLY OFF/SKIP: reads on such connections are not cached",
    "gap": "packet loss or reordering on the way to Redis: look at the network",
    "unknown": "commands BRC's table does not know (modules, new commands)",
    "state": "SELECT / AUTH / HELLO pipelined or inline: send them alone",
}

_GET_LIKE = re.compile(r"\bGETs?\b|would-be hits?|\bhits?\b|\bfills?\b")


def _nodes(node=TREE):
    yield node
    for child in node.get("children", ()):
        for n in _nodes(child):
            yield n


def leaves():
    """The leaves ({counters, outcome, reason, doc, fix}) in tree order."""
    return [n for n in _nodes() if "children" not in n]


def placed_counters():
    """Counters the split reads."""
    return set(c for n in _nodes() for c in tuple(n["counters"] or ()) + tuple(n.get("also") or ()))


def is_get_outcome(name, doc):
    """Does counter @name (with description @doc) say something about GETs' outcomes?"""
    return name.startswith(("get_", "fill", "serve_")) or name in ("hit", "miss", "would_hit") or \
        bool(_GET_LIKE.search(doc or ""))


def unclassified(counter_docs):
    """GET-outcome counters of a contract ({name: doc}) this split neither reads nor excludes."""
    placed = placed_counters()
    return sorted(n for n, doc in counter_docs.items()
                  if not n.startswith("dirty_") and is_get_outcome(n, doc)
                  and n not in placed and n not in NOT_PARTS)


def _value(counters, names):
    return sum(int(counters.get(c) or 0) for c in names)


def _split(node, budget, counters, out):
    """Give @budget GETs to @node's leaves; @counters (a copy) loses what leaves take
    twice (also)."""
    children = node.get("children")
    if not children:
        out[node["outcome"]][node["reason"]] += budget
        left = budget
        for c in node.get("also") or ():
            took = min(left, int(counters.get(c) or 0))
            counters[c] = int(counters.get(c) or 0) - took
            left -= took
        return
    left = budget
    for child in children:
        share = left if child["counters"] is None else min(_value(counters, child["counters"]), left)
        _split(child, share, counters, out)
        left -= share


def breakdown(counters, counter_docs=None):
    """Every GET the programs saw in one bucket: {total, outcomes: {outcome: n},
    reasons: {outcome: {reason: n}} (every reason, zeros too), unseen: {counter: n},
    dirty: {reason: connections} (non-zero), unclassified: {counter: n} (non-zero
    GET-outcome counters this split does not place; @counter_docs from the contract)."""
    counters = counters or {}
    reasons = dict((o, {}) for o in OUTCOMES)
    for leaf in leaves():
        reasons[leaf["outcome"]][leaf["reason"]] = 0
    total = _value(counters, TOTAL)
    _split(TREE, total, dict(counters), reasons)
    docs = counter_docs or {}
    return {
        "total": total,
        "outcomes": dict((o, sum(reasons[o].values())) for o in OUTCOMES),
        "reasons": reasons,
        "unseen": dict((name, int(counters.get(name) or 0)) for name, _doc, _fix in UNSEEN),
        "dirty": dict((n[len("dirty_"):], int(v)) for n, v in sorted(counters.items())
                      if n.startswith("dirty_") and v),
        "unclassified": dict((n, int(counters.get(n) or 0)) for n in unclassified(docs)
                             if counters.get(n)),
    }


def definitions(constants=None):
    """{reason: {outcome, doc, fix, counters}} plus, under "_unseen" and "_dirty", how to
    read and fix those; fixes filled in from the contract's constants."""
    constants = dict(constants or {})
    constants.setdefault("BRC_KEY_MAX", 64)
    constants.setdefault("BRC_VAL_MAX", 2048)
    constants.setdefault("BRC_BATCH_GETS", 16)
    out = {}
    for leaf in leaves():
        out[leaf["reason"]] = {"outcome": leaf["outcome"], "doc": leaf["doc"], "fix": leaf["fix"] % constants,
                               "counters": list(leaf["counters"] or [])}
    out["_unseen"] = dict((name, {"doc": doc, "fix": fix}) for name, doc, fix in UNSEEN)
    out["_dirty"] = dict(DIRTY_FIXES)
    return out


def add(parts):
    """Sum breakdowns (hosts into the fleet): each host's split is exact, so their sum is."""
    out = {"total": 0, "outcomes": dict((o, 0) for o in OUTCOMES), "reasons": dict((o, {}) for o in OUTCOMES),
           "unseen": {}, "dirty": {}, "unclassified": {}}
    for part in parts:
        if not part:
            continue
        out["total"] += int(part.get("total") or 0)
        for o in OUTCOMES:
            out["outcomes"][o] += int((part.get("outcomes") or {}).get(o) or 0)
            for r, n in ((part.get("reasons") or {}).get(o) or {}).items():
                out["reasons"][o][r] = out["reasons"][o].get(r, 0) + int(n or 0)
        for key in ("unseen", "dirty", "unclassified"):
            for k, n in (part.get(key) or {}).items():
                out[key][k] = out[key].get(k, 0) + int(n or 0)
    return out
