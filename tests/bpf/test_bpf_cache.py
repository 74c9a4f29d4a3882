"""Cache semantics through the programs: fill refusals (in flight, raced, TTL),
invalidation by key position and globally, dirty reasons, AUTH, SELECT, maximum
age, oversize keys, marks released on close."""
import time

import pytest

from brc_testlib import Conn, Delta, bulk, resp


def _filled(brc, c, key, val="v"):
    c.roundtrip(resp("GET", key), bulk(val))
    assert brc.cache_get(key) == bulk(val)


def test_write_in_flight_refuses_the_fill(brc, port):
    key = "infl:%d" % port
    w, r = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    w.send(resp("SET", key, "new"))             # passed, Redis has not answered yet
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("old"))
    assert d["fill_refused_inflight"] == 1 and d["fill"] == 0
    w.reply(b"+OK\r\n")                          # the writer is idle: marks released
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("new"))
    assert d["fill"] == 1


def test_write_between_get_and_reply_refuses_the_fill(brc, port):
    key = "race:%d" % port
    w, r = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    r.send(resp("GET", key))
    w.roundtrip(resp("SET", key, "new"), b"+OK\r\n")
    with Delta(brc) as d:
        r.reply(bulk("old"))
    assert d["fill_refused_version"] == 1 and d["fill"] == 0


def test_write_on_a_partial_command_keeps_the_mark(brc, port):
    """A SET whose key has passed but whose value has not keeps its mark even
    if the connection's earlier replies all came back."""
    key = "partial:%d" % port
    w, r = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    w.send(resp("GET", "other"))
    cmd = resp("SET", key, "new")
    w.send(cmd[:-4])
    w.reply(bulk("x"))
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("old"))
    assert d["fill_refused_inflight"] == 1


@pytest.mark.parametrize("cmd,keys", [
    (("DEL", "{k}1", "{k}2", "{k}3"), ["{k}1", "{k}2", "{k}3"]),
    (("MSET", "{k}1", "a", "{k}2", "b"), ["{k}1", "{k}2"]),
    (("RENAME", "{k}1", "{k}2"), ["{k}1", "{k}2"]),
    (("INCR", "{k}1"), ["{k}1"]),
    (("APPEND", "{k}1", "x"), ["{k}1"]),
    (("GETDEL", "{k}1"), ["{k}1"]),
    (("LMOVE", "{k}1", "{k}2", "LEFT", "RIGHT"), ["{k}1", "{k}2"]),
    (("BITOP", "AND", "{k}1", "{k}2"), ["{k}1", "{k}2"]),
    (("EXPIRE", "{k}1", "10"), ["{k}1"]),
])
def test_invalidation_by_key_position(brc, port, cmd, keys):
    tag = "pos%d" % port
    keys = [k.replace("{k}", tag) for k in keys]
    cmd = [a.replace("{k}", tag) for a in cmd]
    c = Conn(brc, port).handshake()
    for k in keys:
        _filled(brc, c, k)
    with Delta(brc) as d:
        c.roundtrip(resp(*cmd), b":1\r\n")
    assert d["invalidate_key"] == len(keys), d.nonzero()
    for k in keys:
        with Delta(brc) as d:
            c.roundtrip(resp("GET", k), bulk("v"))
        assert d["would_hit"] == 0 and d["miss"] == 1, k


def test_mset_values_are_not_keys(brc, port):
    c = Conn(brc, port).handshake()
    key = "msetval:%d" % port
    _filled(brc, c, key)
    with Delta(brc) as d:
        c.roundtrip(resp("MSET", "other:%d" % port, key), b"+OK\r\n")
    assert d["invalidate_key"] == 1
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["would_hit"] == 1


@pytest.mark.parametrize("cmd", [("FLUSHALL",), ("FLUSHDB",), ("SWAPDB", "0", "1"),
                                 ("EVAL", "return 1", "0"), ("FCALL", "f", "0"),
                                 ("NOSUCHCMD", "x"), ("MULTI",)])
def test_global_invalidation(brc, port, cmd):
    c, o = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    key = "glob:%d" % port
    _filled(brc, o, key)
    g0 = brc.global_state()["ver"]
    with Delta(brc) as d:
        c.roundtrip(resp(*cmd), b"+OK\r\n")
    assert d["invalidate_global"] == 1 and brc.global_state()["ver"] == g0 + 1
    with Delta(brc) as d:
        o.roundtrip(resp("GET", key), bulk("v"))
    assert d["would_hit"] == 0


@pytest.mark.parametrize("cmd", [("SET", "{k}", "v", "EX", "10"), ("SET", "{k}", "v", "px", "10"),
                                 ("SET", "{k}", "v", "KEEPTTL"), ("SETEX", "{k}", "10", "v"),
                                 ("PSETEX", "{k}", "10", "v"), ("EXPIRE", "{k}", "10"),
                                 ("PEXPIREAT", "{k}", "1"), ("GETEX", "{k}", "EX", "5")])
def test_ttl_keys_are_not_cached_until_overwritten(brc, port, cmd):
    key = "ttl:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp(*[a.replace("{k}", key) for a in cmd]), b"+OK\r\n")
    assert d["ttl_marked"] == 1
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["fill_refused_ttl"] == 1 and d["fill"] == 0
    c.roundtrip(resp("SET", key, "plain"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("plain"))
    assert d["fill"] == 1


@pytest.mark.parametrize("cmd,counter", [
    (("HELLO", "3"), "dirty_resp3"),
    (("SUBSCRIBE", "ch"), "dirty_pubsub"),
    (("PSUBSCRIBE", "c*"), "dirty_pubsub"),
    (("MONITOR",), "dirty_monitor"),
    (("CLIENT", "REPLY", "OFF"), "dirty_client_reply"),
    (("MULTI",), "dirty_multi"),
])
def test_dirty_reasons(brc, port, cmd, counter):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(resp(*cmd))
    assert d[counter] == 1
    with Delta(brc) as d:
        c.send(resp("GET", "dirty:%d" % port))
    assert d["get_uncacheable_dirty"] == 1


def test_select_tracks_the_db(brc, port):
    key = "sel:%d" % port
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SELECT", "1"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("db1"))
    assert d["get_uncacheable_db"] == 1 and d["fill"] == 0
    c.roundtrip(resp("SELECT", "0"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("db0"))
    assert d["fill"] == 1
    # a write in another db still invalidates the name (conservative)
    o = Conn(brc, port + 30000).handshake()
    o.roundtrip(resp("SELECT", "2"), b"+OK\r\n")
    with Delta(brc) as d:
        o.roundtrip(resp("SET", key, "x"), b"+OK\r\n")
        c.roundtrip(resp("GET", key), bulk("db0"))
    assert d["invalidate_key"] == 1 and d["would_hit"] == 0


def test_auth_required(brc, port):
    brc.configure(require_auth=1)
    key = "auth:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), b"-NOAUTH Authentication required.\r\n")
        c.roundtrip(resp("AUTH", "wrong"), b"-WRONGPASS invalid\r\n")
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["get_uncacheable_auth"] == 2
    c.roundtrip(resp("AUTH", "secretpass"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["fill"] == 1
    f = brc.flow(c)
    assert b"secret" not in bytes(f.rq_tok) and b"secret" not in bytes(f.rq_key)
    h = Conn(brc, port + 30000).handshake()
    h.roundtrip(resp("HELLO", "2", "AUTH", "default", "secretpass"), b"*0\r\n")
    with Delta(brc) as d:
        h.roundtrip(resp("GET", key), bulk("v"))
    assert d["would_hit"] == 1
    assert b"secret" not in bytes(brc.flow(h).rq_tok)


def test_max_age(brc, port):
    key = "age:%d" % port
    brc.configure(max_age_ns=50_000_000)
    c = Conn(brc, port).handshake()
    _filled(brc, c, key)
    time.sleep(0.1)
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["cache_expired"] == 1 and d["would_hit"] == 0 and d["fill"] == 1


def test_oversize_key_and_value(brc, port):
    brc.configure(max_key_len=16, max_value_len=8)
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp("GET", "k" * 17), bulk("v"))
        c.roundtrip(resp("GET", "short:%d" % port), bulk("123456789"))
    assert d["oversize_key"] == 1 and d["oversize_value"] == 1 and d["fill"] == 0


def test_long_key_invalidates_its_prefix_conservatively(brc, port):
    c = Conn(brc, port).handshake()
    key = ("L%d" % port).ljust(64, "x")
    _filled(brc, c, key)
    with Delta(brc) as d:
        c.roundtrip(resp("SET", key + "tail", "v"), b"+OK\r\n")
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["would_hit"] == 0


def test_close_releases_marks_and_flow(brc, port):
    key = "close:%d" % port
    w, r = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    w.send(resp("SET", key, "v") + resp("FLUSHALL"))
    assert brc.global_state()["inflight"] >= 1
    with Delta(brc) as d:
        w.reset()
    assert d["flows_closed"] == 1 and brc.flow(w) is None
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("v"))
    assert d["fill"] == 1


def test_server_fin_releases(brc, port):
    w = Conn(brc, port).handshake()
    w.send(resp("SET", "fin:%d" % port, "v"))
    with Delta(brc) as d:
        w.reply(b"+OK\r\n")
        w.close()
    assert d["flows_closed"] == 1 and brc.flow(w) is None


def test_unmatched_reply(brc, port):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.reply(b"+OK\r\n")
    assert d["replies_unmatched"] == 1 and d["dirty_unmatched"] == 1


def test_server_fin_with_the_last_reply_releases(brc, port):
    w = Conn(brc, port).handshake()
    w.send(resp("SET", "finreply:%d" % port, "v") + resp("QUIT"))
    assert brc.global_state()["inflight"] == 0 and brc.flow(w).nmarks == 1
    with Delta(brc) as d:
        brc.egress(w.s2c("FPA", b"+OK\r\n+OK\r\n"))
    assert d["replies"] == 2 and d["flows_closed"] == 1 and brc.flow(w) is None


def test_syn_on_a_reused_tuple_releases_the_old_marks(brc, port):
    w = Conn(brc, port).handshake()
    w.send(resp("FLUSHALL"))
    assert brc.global_state()["inflight"] == 1
    Conn(brc, port, cisn=777).handshake()
    assert brc.global_state()["inflight"] == 0


def test_flow_table_never_made_to_evict(brc, port):
    """Tracking stops (counted) before the LRU would have to evict a flow: an
    evicted flow could never release its in-flight marks."""
    import ctypes
    t = brc.bpf[b"brc_global"]
    g = t[ctypes.c_uint32(0)]
    live = g.flows_live
    c = Conn(brc, port).handshake()
    assert t[ctypes.c_uint32(0)].flows_live == live + 1
    c.reset()
    assert t[ctypes.c_uint32(0)].flows_live == live
    g = t[ctypes.c_uint32(0)]
    g.flows_live = 1 << 40
    t[ctypes.c_uint32(0)] = g
    try:
        with Delta(brc) as d:
            x = Conn(brc, port + 30000).handshake()
        assert d["flows_table_full"] == 1 and d["flows_tracked"] == 0 and brc.flow(x) is None
    finally:
        g = t[ctypes.c_uint32(0)]
        g.flows_live = live
        t[ctypes.c_uint32(0)] = g


@pytest.mark.parametrize("cmd", [("CONFIG", "SET", "requirepass", "topsecret"),
                                 ("ACL", "SETUSER", "u", ">topsecret"),
                                 ("MIGRATE", "h", "1", "k", "0", "5", "AUTH", "topsecret"),
                                 ("AUTH", "user", "topsecret")])
def test_secrets_are_never_kept(brc, port, cmd):
    c = Conn(brc, port).handshake()
    c.send(resp(*cmd))
    f = brc.flow(c)
    assert b"topsec" not in bytes(f.rq_tok) + bytes(f.rq_key)
    c.reset()
    c2 = Conn(brc, port + 30000).handshake()
    c2.send(b" ".join(a.encode() for a in cmd) + b"\r\n")       # inline too
    f = brc.flow(c2)
    assert b"topsec" not in bytes(f.rq_tok) + bytes(f.rq_key)


def test_evicted_flow_is_told_apart_from_untracked(brc, port):
    c = Conn(brc, port).handshake()
    t = brc.bpf[b"brc_flows"]
    del t[c.flow_key(t)]                 # what an LRU eviction would do
    with Delta(brc) as d:
        c.send(resp("GET", "x"))
        c.send(resp("GET", "y"))
    assert d["flows_evicted"] == 1 and d["segments_untracked"] == 1


def _bucket(key):
    h = 0xcbf29ce484222325
    for ch in key.encode()[:64]:
        h = ((h ^ ch) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 32)) & 0xFFFF


def test_plain_set_of_a_colliding_key_keeps_the_ttl(brc, port):
    """TTLs are remembered per key: a plain SET of another key in the same
    version bucket must not make a TTL'd key cacheable."""
    a = "ttlA:%d" % port
    want, i = _bucket(a), 0
    while _bucket("ttlB:%d:%d" % (port, i)) != want:
        i += 1
    b = "ttlB:%d:%d" % (port, i)
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SET", a, "v", "EX", "100"), b"+OK\r\n")
    c.roundtrip(resp("SET", b, "w"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("GET", a), bulk("v"))
        c.roundtrip(resp("GET", b), bulk("w"))
    assert d["fill_refused_ttl"] == 1 and d["fill"] == 1
