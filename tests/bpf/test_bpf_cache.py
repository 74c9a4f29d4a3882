"""Cache semantics through the programs: fill refusals (in flight, raced, TTL),
invalidation by key position and globally, dirty reasons, AUTH, SELECT, maximum
age, oversize keys, marks released on close."""
import time

import pytest

import brc_testlib
from ansible.module_utils.brc_contract import addr_words
from brc_testlib import (Conn, Delta, bulk, counted_get, filled, filled_conn, ipv4_tcp, marks, pending,
                        resp, tcp_options, user)


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
        filled(brc, c, k)
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
    filled(brc, c, key)
    with Delta(brc) as d:
        c.roundtrip(resp("MSET", "other:%d" % port, key), b"+OK\r\n")
    assert d["invalidate_key"] == 1
    d = counted_get(brc, c, key)
    assert d["would_hit"] == 1


@pytest.mark.parametrize("cmd", [("FLUSHALL",), ("FLUSHDB",), ("SWAPDB", "0", "1"),
                                 ("EVAL", "return 1", "0"), ("FCALL", "f", "0"),
                                 ("NOSUCHCMD", "x"), ("MULTI",)])
def test_global_invalidation(brc, port, cmd):
    c, o = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    key = "glob:%d" % port
    filled(brc, o, key)
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
    d = counted_get(brc, c, key)
    assert d["fill_refused_ttl"] == 1 and d["fill"] == 0
    c.roundtrip(resp("SET", key, "plain"), b"+OK\r\n")
    d = counted_get(brc, c, key, "plain")
    assert d["fill"] == 1


@pytest.mark.parametrize("cmd,counter", [
    (("HELLO", "4"), "dirty_resp3"),
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
    d = counted_get(brc, c, key, "db1")
    assert d["get_uncacheable_db"] == 1 and d["fill"] == 0
    c.roundtrip(resp("SELECT", "0"), b"+OK\r\n")
    d = counted_get(brc, c, key, "db0")
    assert d["fill"] == 1
    # a write in another db still invalidates the name (conservative)
    o = Conn(brc, port + 30000).handshake()
    o.roundtrip(resp("SELECT", "2"), b"+OK\r\n")
    with Delta(brc) as d:
        o.roundtrip(resp("SET", key, "x"), b"+OK\r\n")
        c.roundtrip(resp("GET", key), bulk("db0"))
    assert d["invalidate_key"] == 1 and d["would_hit"] == 0


def test_answers_only_for_users_redis_authenticated_and_lets_read_every_key(brc, port):
    """Who may be answered comes from Redis (brc_users, loaded by the toolkit): a
    connection's user is proven only by Redis's success reply to its AUTH or
    HELLO ... AUTH, and must be one Redis lets GET every key."""
    read_all = brc_testlib.CONTRACT.constants["BRC_USER_READ_ALL"]
    brc.load_users({"default": read_all, "app": read_all})      # requirepass: default not open
    key = "auth:%d" % port
    app = Conn(brc, port + 30000).handshake()
    app.roundtrip(resp("AUTH", "app", "pw"), b"+OK\r\n")
    assert user(brc.flow(app)) == (b"app", True)
    filled(brc, app, key)
    with Delta(brc) as d:
        app.roundtrip(resp("GET", key), bulk("v"))
    assert d["would_hit"] == 1

    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), b"-NOAUTH Authentication required.\r\n")
        c.roundtrip(resp("AUTH", "wrong"), b"-WRONGPASS invalid\r\n")
        c.roundtrip(resp("GET", key), b"-NOAUTH Authentication required.\r\n")
    assert d["get_uncacheable_auth"] == 2 and d["would_hit"] == 0 and d["fill"] == 0
    assert user(brc.flow(c)) == (b"default", False)
    c.roundtrip(resp("AUTH", "secretpass"), b"+OK\r\n")
    assert user(brc.flow(c)) == (b"default", True)
    d = counted_get(brc, c, key)
    assert d["would_hit"] == 1
    f = brc.flow(c)
    assert b"secret" not in bytes(f.rq_tok) + bytes(f.rq_key) + bytes(f.chg_buf)

    # a user Redis restricts (not in brc_users with READ_ALL) is never answered
    g = Conn(brc, port + 31000).handshake()
    g.roundtrip(resp("HELLO", "2", "AUTH", "guest", "secretpass"), b"*0\r\n")
    assert user(brc.flow(g)) == (b"guest", True)
    with Delta(brc) as d:
        g.roundtrip(resp("GET", key), b"-NOPERM this user has no permissions\r\n")
    assert d["get_uncacheable_auth"] == 1 and d["would_hit"] == 0
    assert b"secret" not in bytes(brc.flow(g).rq_tok) + bytes(brc.flow(g).chg_buf)
    # SETNAME AUTH is a client name, not an AUTH option
    n = Conn(brc, port + 32000).handshake()
    n.roundtrip(resp("HELLO", "2", "SETNAME", "AUTH"), b"*0\r\n")
    assert user(brc.flow(n)) == (b"default", False)
    # RESET: back to the default user, not authenticated
    c.roundtrip(resp("RESET"), b"+RESET\r\n")
    assert user(brc.flow(c)) == (b"default", False)


def test_max_age(brc, port):
    key = "age:%d" % port
    brc.configure(max_age_ns=50_000_000)
    c = filled_conn(brc, port, key)
    time.sleep(0.1)
    d = counted_get(brc, c, key)
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
    filled(brc, c, key)
    with Delta(brc) as d:
        c.roundtrip(resp("SET", key + "tail", "v"), b"+OK\r\n")
        c.roundtrip(resp("GET", key), bulk("v"))
    assert d["would_hit"] == 0


def test_client_rst_releases_marks_and_flow_when_nothing_is_pending(brc, port):
    key = "close:%d" % port
    w, r = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    w.roundtrip(resp("SET", key, "v") + resp("FLUSHALL"), b"+OK\r\n+OK\r\n")
    with Delta(brc) as d:
        w.reset()
    assert d["flows_closed"] == 1 and d["rst_pending"] == 0 and brc.flow(w) is None
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("v"))
    assert d["fill"] == 1


def test_client_rst_with_writes_unanswered_holds_what_they_write(brc, port):
    """D8: Redis may still run what a connection sent before its RST (it sits in
    the socket's queue, or the client is paused): its marks cannot simply go. The
    buckets it wrote stay held for a while (max_age, else 30 s); other keys do not."""
    key, other = "rstpend:%d" % port, "rstother:%d" % port
    w, r = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    w.send(resp("SET", key, "v2"))
    with Delta(brc) as d:
        w.reset()
    assert d["rst_pending"] == 1 and d["flows_closed"] == 1 and brc.flow(w) is None
    assert brc.global_state()["inflight"] == 0
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("v1"))
        r.roundtrip(resp("GET", other), bulk("o"))
    assert d["fill"] == 1 and d["fill_refused_inflight"] == 1 and brc.cache_get(other) == bulk("o")
    brc.clear_holds(key)                 # the hold is over
    with Delta(brc) as d:
        r.roundtrip(resp("GET", key), bulk("v2"))
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
    assert brc.global_state()["inflight"] == 0 and marks(brc.flow(w)) == 1
    with Delta(brc) as d:
        brc.egress(w.s2c("FPA", b"+OK\r\n+OK\r\n"))
    assert d["replies"] == 2 and d["flows_closed"] == 1 and brc.flow(w) is None


def test_syn_or_rst_the_kernel_would_ignore_changes_nothing(brc, port):
    """D13: a SYN on a live connection only earns a challenge ACK (RFC 5961), and
    so does a RST not exactly at the next sequence number: BRC's state stays."""
    w = Conn(brc, port).handshake()
    w.send(resp("FLUSHALL"))
    assert brc.global_state()["inflight"] == 1
    with Delta(brc) as d:
        brc.ingress(ipv4_tcp(w.client, w.server, w.cport, w.sport, 777, 0, "S", b"", tcp_options(mss=True)))
        brc.ingress(w.c2s("R", seq=w.cseq + 1000))
        brc.ingress(w.c2s("R", seq=w.cseq - 1))
    assert d["syn_ignored"] == 1 and d["rst_ignored"] == 2 and d["flows_closed"] == 0
    assert brc.global_state()["inflight"] == 1 and pending(brc.flow(w)) == 1
    w.reply(b"+OK\r\n")
    assert brc.global_state()["inflight"] == 0
    with Delta(brc) as d:
        w.reset()                        # exactly at the next sequence number
    assert d["flows_closed"] == 1 and brc.flow(w) is None
    # after the close, the tuple may start a new connection
    with Delta(brc) as d:
        Conn(brc, port, cisn=777).handshake()
    assert d["flows_tracked"] == 1


def test_a_full_flow_table_never_evicts_a_live_connection(brc, port):
    """D16: when brc_flows is full, a new connection is simply not tracked (counted);
    a live one, served or not, keeps its state."""
    import ctypes
    live = Conn(brc, port).handshake()
    t = brc.bpf[b"brc_flows"]
    capacity = t.max_entries - len(t.items())
    filler = []
    try:
        with Delta(brc) as d:
            for i in range(capacity + 10):
                cport = 1024 + i % 60000
                client = "10.67.%d.%d" % (i // 60000 // 250, i // 60000 % 250 + 1)
                brc.ingress(ipv4_tcp(client, live.server, cport, 6379, 1, 0, "S", b"", tcp_options(mss=True)))
                brc.egress(ipv4_tcp(live.server, client, 6379, cport, 9, 2, "SA", b"", tcp_options(mss=True)))
                filler.append((client, cport))
        assert d["flows_table_full"] >= 10 and brc.flow(live) is not None
        with Delta(brc) as d:
            live.roundtrip(resp("SET", "full:%d" % port, "v"), b"+OK\r\n")
        assert d["req_set"] == 1 and pending(brc.flow(live)) == 0
    finally:
        for client, cport in filler:
            k = t.Key()
            k.cli_addr[:] = addr_words(client)
            k.srv_addr[:] = addr_words(live.server)
            k.cli_port, k.srv_port = cport, 6379
            for name in (b"brc_flows", b"brc_transient"):
                try:
                    del brc.bpf[name][k]
                except KeyError:
                    pass
        g = brc.bpf[b"brc_global"]
        v = g[ctypes.c_uint32(0)]
        v.flows_live = len(t.items())
        g[ctypes.c_uint32(0)] = v


def test_half_open_connections_never_take_the_flow_table(brc, port):
    """SYNs that are never answered (a flood, a filtered port) wait in an LRU of their
    own: they cannot fill brc_flows, and a connection that completes is tracked."""
    t = brc.bpf[b"brc_flows"]
    before = len(t.items())
    server = "10.66.1.2"
    for i in range(brc.bpf[b"brc_transient"].max_entries + 100):
        brc.ingress(ipv4_tcp("10.68.%d.%d" % (i // 250 // 250 % 250, i // 250 % 250 + 1), server,
                             1024 + i % 250, 6379, 1, 0, "S", b"", tcp_options(mss=True)))
    assert len(t.items()) == before
    with Delta(brc) as d:
        c = Conn(brc, port).handshake()
    assert d["flows_tracked"] == 1 and brc.flow(c).state == 2


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


def test_plain_set_of_a_colliding_key_keeps_the_ttl(brc, port):
    """TTLs are remembered per key: a plain SET of another key in the same
    version bucket must not make a TTL'd key cacheable."""
    a = "ttlA:%d" % port
    want, i = brc_testlib.bucket_of(a), 0
    while brc_testlib.bucket_of("ttlB:%d:%d" % (port, i)) != want:
        i += 1
    b = "ttlB:%d:%d" % (port, i)
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SET", a, "v", "EX", "100"), b"+OK\r\n")
    c.roundtrip(resp("SET", b, "w"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("GET", a), bulk("v"))
        c.roundtrip(resp("GET", b), bulk("w"))
    assert d["fill_refused_ttl"] == 1 and d["fill"] == 1
