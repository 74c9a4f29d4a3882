"""Fail closed, black-box: the findings of the serve review (D1-D19)
replayed against the session's served Redis (serve mode, verify_sample 0, the real
BRC build on the server veth). Clients speak RESP from the client namespace through
BRC; the truth is read over loopback inside the server namespace, which BRC never
sees. Each test asserts what a client saw against what Redis holds, and that the
counters show the path under test was taken (hits before the step that matters,
the dirty reason or guard that fired). The packet-level versions are in
tests/bpf/test_bpf_fail_closed.py.

Every test uses its own keys and restores what it changed (Redis settings, ACL
users, addresses, extra processes, sysctls, devices) in `finally`.
"""
import json
import os
import random
import socket
import threading
import time

import pytest

from blackbox import (Client, Delta, Sniffer, Stall, VlanTagger, address, client, config,
                      cpus, ethtool, fnv1a64, gets_answered, in_netns, is_error, link_sizes_set, ok,
                      raw_send, redis_bind, redis_server, restore_open_default as restore_requirepass,
                      requirepass, set_hot, snd_nxt, sysctl, truth, warm)
from brc_testlib import ipv4_tcp, tcp_options
from netfault import tcp_ext
from serve_lab import PORT


@pytest.fixture(autouse=True)
def counters_of_the_test(lab, request):
    """Print the counters each test moved (pytest -s), for the record."""
    before = lab.counters()
    yield
    d = lab.delta(lab.counters(), before)
    print("\nFAILCLOSED-COUNTERS %s %s" % (request.node.name, json.dumps(d, sort_keys=True)))


def _del(lab, *keys):
    """Delete through BRC (so BRC sees the writes)."""
    with client(lab) as c:
        c.call("DEL", *keys)


# --------------------------------------------------------------------------- D1

def test_d1_replies_brc_cannot_count_never_shift_a_fill(lab):
    """D1: a command with more (UNSUBSCRIBE a b: 2) or fewer (REPLCONF ACK 0: none)
    replies than one must not shift BRC's pairing of replies to commands.

    W sends UNSUBSCRIBE a b + BLMOVE src dst LEFT LEFT 0 in one write, reads the two
    unsubscribe replies, sends GET victim; Q: LPUSH src evil (BLMOVE's reply is
    `evil`). No client may ever get `evil` for victim. Then REPLCONF ACK 0 + GET a +
    GET b on one connection: b must never be filled with a's value."""
    victim, src, dst = "bb:d1:victim", "bb:d1:src", "bb:d1:dst"
    ka, kb = "bb:d1:a", "bb:d1:b"
    try:
        with client(lab) as c:
            ok(c.call("SET", victim, "good"))
            ok(c.call("SET", ka, "value-of-a"))
            ok(c.call("SET", kb, "value-of-b"))
        with client(lab) as w, client(lab) as q, Delta(lab) as d:
            w.send(w.encode("UNSUBSCRIBE", "a", "b") + w.encode("BLMOVE", src, dst, "LEFT", "LEFT", "0"))
            assert w.replies(2) == [[b"unsubscribe", b"a", 0], [b"unsubscribe", b"b", 0]]
            w.send(w.encode("GET", victim))
            time.sleep(0.1)                     # W is blocked in BLMOVE, its GET queued
            assert q.call("LPUSH", src, "evil") == 1
            assert w.replies(2) == [b"evil", b"good"]
        assert d["dirty_pubsub"] == 1, d
        with client(lab) as r:
            hits = warm(lab, r, victim, "good")
            got, more = gets_answered(lab, r, victim, 5)
        assert got == [b"good"] * 5 and hits + more >= 1
        with truth(lab) as t:
            assert t.call("GET", victim) == b"good"

        with client(lab) as w, Delta(lab) as d:
            w.send(w.encode("REPLCONF", "ACK", "0") + w.encode("GET", ka) + w.encode("GET", kb))
            assert w.replies(2) == [b"value-of-a", b"value-of-b"]    # REPLCONF ACK: no reply
            w.sock.settimeout(0.3)
            with pytest.raises(Stall):
                w.read_reply()                  # and nothing else
        assert d["dirty_replication"] == 1, d
        with client(lab) as r:
            warm(lab, r, kb, "value-of-b")
            warm(lab, r, ka, "value-of-a")
    finally:
        _del(lab, victim, src, dst, ka, kb)


# --------------------------------------------------------------------------- D18

def test_d18_a_key_whose_hash_is_zero_is_invalidated(lab):
    """D18: the key \\xd5\\x6b\\xb9\\x53\\x42\\x87\\x08\\x36 has FNV-1a-64 = 0 (it was looked
    up in bucket 1 and invalidated in bucket 0). Cache it, SET it from another
    connection through BRC: the next GET returns the new value."""
    key = b"\xd5\x6b\xb9\x53\x42\x87\x08\x36"
    assert fnv1a64(key) == 0
    try:
        with client(lab) as c, client(lab) as w:
            set_hot(lab, c, key, "old")
            with Delta(lab) as d:
                ok(w.call("SET", key, "new"))
            assert d["invalidate_key"] == 1, d
            got, _ = gets_answered(lab, c, key, 3)
            assert got == [b"new"] * 3
            hits = warm(lab, c, key, "new")       # and it is cached again, with the new value
            assert hits >= 1
        with truth(lab) as t:
            assert t.call("GET", key) == b"new"
    finally:
        _del(lab, key)


# --------------------------------------------------------------------------- D2

def test_d2_a_desynchronised_reply_never_authenticates(lab):
    """D2: with requirepass set, an unauthenticated client sends
    "\\x0b\\r\\n *1\\r\\n$5\\r\\nRESET\\r\\nAUTH wrong\\r\\n\\x0b\\r\\n" (Redis: nothing, two
    unknown inline commands, +RESET, -WRONGPASS, nothing), then GET of a key the kernel
    is answering for an authenticated client: it gets Redis's -NOAUTH, never the value."""
    key, pw = "bb:d2:cached", "bb-d2-pass"
    try:
        with client(lab) as c:
            ok(c.call("SET", key, "d2-secret"))
        with requirepass(lab, pw), client(lab) as a:
            ok(a.call("AUTH", pw))
            warm(lab, a, key, "d2-secret")
            with client(lab) as u, Delta(lab) as d:
                u.send(b"\x0b\r\n *1\r\n$5\r\nRESET\r\nAUTH wrong\r\n\x0b\r\n")
                first = u.replies(4)
                u.send(u.encode("GET", key))      # alone in its segment, nothing pending
                last = u.read_reply()
                again = u.call("GET", key)
            assert b"d2-secret" not in [r for r in first + [last, again] if isinstance(r, bytes)]
            assert all(is_error(r, "ERR unknown command") for r in first[:2]), first
            assert first[2] == "RESET" and is_error(first[3], "WRONGPASS"), first
            assert is_error(last, "NOAUTH") and is_error(again, "NOAUTH"), (last, again)
            assert d["hit"] == 0, d
            warm(lab, a, key, "d2-secret")       # the authenticated client is still answered
    finally:
        _del(lab, key)


# --------------------------------------------------------------------------- D3

def test_d3_only_users_redis_lets_read_are_answered(lab):
    """D3: the cache must follow Redis's users, rights and passwords.

    1. ACL SETUSER guest on >g ~public:* +get (loaded): the admin makes `secret` hot
       in the kernel; guest's GET secret gets -NOPERM from Redis, never the value.
    2. requirepass set before the load (as at deploy): an unauthenticated client and
       a wrong-password client get -NOAUTH, while an authenticated one is answered.
    3. requirepass set by CONFIG SET on the wire (through BRC), then loaded: the same.
    4. ACL SETUSER on the wire narrowing guest2 (who could read every key and was
       answered in the kernel) to ~public:*: guest2's very next GET gets -NOPERM."""
    secret, public = "bb:d3:secret", "public:bb:d3"
    pw1, pw2 = "bb-d3-deploy", "bb-d3-wire"
    try:
        with client(lab) as admin:
            ok(admin.call("SET", secret, "the-secret"))
            ok(admin.call("SET", public, "the-public"))
        # 1. a user limited to ~public:*
        with truth(lab) as t:
            ok(t.call("ACL", "SETUSER", "guest", "on", ">g", "~public:*", "+get"))
        lab.refresh_auth()
        with client(lab) as admin, client(lab) as guest:
            warm(lab, admin, secret, "the-secret")
            got, hits = gets_answered(lab, admin, secret, 20)
            assert got == [b"the-secret"] * 20 and hits >= 10, hits
            ok(guest.call("AUTH", "guest", "g"))
            with Delta(lab) as d:
                got = [guest.call("GET", secret) for _ in range(5)]
                pub = guest.call("GET", public)
            assert all(is_error(g, "NOPERM") for g in got), got
            assert pub == b"the-public" and d["hit"] == 0, d
            # 2. requirepass set before the toolkit loaded the users
            with truth(lab) as t:
                ok(t.call("CONFIG", "SET", "requirepass", pw1))
            lab.refresh_auth(password=pw1)
            _unauthenticated_get_noauth(lab, secret, "the-secret", pw1)
            restore_requirepass(lab, pw1)
            # 3. requirepass set on the wire, through BRC: nothing is answered
            # until the toolkit has read Redis again
            with client(lab) as reader:
                warm(lab, reader, secret, "the-secret")
                with Delta(lab) as d:
                    ok(admin.call("CONFIG", "SET", "requirepass", pw2))
                    got = [reader.call("GET", secret) for _ in range(3)]
                assert got == [b"the-secret"] * 3, got
                assert d["server_changes"] == 1 and d["hit"] == 0, d
                assert d["get_uncacheable_server"] >= 3, d
            lab.refresh_auth(password=pw2)
            _unauthenticated_get_noauth(lab, secret, "the-secret", pw2)
            restore_requirepass(lab, pw2)
        # 4. a run-time narrowing on the wire
        with truth(lab) as t:
            ok(t.call("ACL", "SETUSER", "guest2", "on", ">g2", "~*", "+get"))
        lab.refresh_auth()
        with client(lab) as admin, client(lab) as guest2:
            ok(guest2.call("AUTH", "guest2", "g2"))
            warm(lab, guest2, secret, "the-secret")
            with Delta(lab) as d:
                ok(admin.call("ACL", "SETUSER", "guest2", "resetkeys", "~public:*"))
                after = guest2.call("GET", secret)
            assert d["server_changes"] == 1 and is_error(after, "NOPERM"), (after, d)
            lab.refresh_auth()
            with Delta(lab) as d:
                got = [guest2.call("GET", secret) for _ in range(3)]
            assert all(is_error(g, "NOPERM") for g in got) and d["hit"] == 0, (got, d)
            warm(lab, admin, secret, "the-secret")
    finally:
        restore_requirepass(lab, pw1, pw2)
        with truth(lab) as t:
            t.call("ACL", "DELUSER", "guest", "guest2")
        lab.refresh_auth()
        _del(lab, secret, public)


def _unauthenticated_get_noauth(lab, key, value, password):
    """The entry is being answered for a client that sent AUTH <password>; clients
    without the password get -NOAUTH from Redis. (A connection the default user
    opened while it was nopass stays authenticated in Redis, but BRC no longer
    answers it once the password is loaded: fail closed, not tested here.)"""
    with client(lab) as authenticated:
        ok(authenticated.call("AUTH", password))
        warm(lab, authenticated, key, value)
        with client(lab) as anon, client(lab) as wrong, Delta(lab) as d:
            got = [anon.call("GET", key) for _ in range(3)]
            assert is_error(wrong.call("AUTH", "not-the-password"), "WRONGPASS")
            got += [wrong.call("GET", key) for _ in range(3)]
        assert all(is_error(g, "NOAUTH") for g in got), got
        assert d["hit"] == 0, d
        warm(lab, authenticated, key, value)


# --------------------------------------------------------------------------- D4

@pytest.mark.parametrize("raw,value", [
    (b"SET bb:d4:k\rv2\r\n", b"v2"),            # Redis splits at the CR: SET k v2
    (b"\x0bSET bb:d4:k v3\r\n", b"v3"),         # a leading vertical tab is a blank
    (b"SET\tbb:d4:k \x0cv4\r\n", b"v4"),        # a tab ends a word; \f is a blank between words
])
def test_d4_inline_writes_read_as_redis_reads_them(lab, raw, value):
    """D4: inline commands BRC parsed differently from Redis (a CR inside a line, a
    leading \\v, other blanks) wrote a key BRC did not invalidate. The key is hot in
    the kernel; W sends the inline write; every later GET through BRC returns what
    Redis holds (read over loopback)."""
    key = b"bb:d4:k"
    try:
        with client(lab) as c, client(lab) as w:
            set_hot(lab, c, key, "v1")
            with Delta(lab) as d:
                w.send(raw)
                ok(w.read_reply(), "inline write")
            with truth(lab) as t:
                assert t.call("GET", key) == value
            got, _ = gets_answered(lab, c, key, 5)
            assert got == [value] * 5, got
            with client(lab) as fresh:
                got, _ = gets_answered(lab, fresh, key, 5)
            assert got == [value] * 5, got
            assert d["dirty_inline"] == 1, d
        with client(lab) as r:                  # W closed: its marks went with it
            warm(lab, r, key, value)
    finally:
        _del(lab, key)


# --------------------------------------------------------------------------- D5

def test_d5_select_follows_what_redis_accepted(lab):
    """D5: SELECT 1, SET k db1, SELECT 00 (Redis: -ERR, the connection stays in db 1),
    GET k must return db 1's value, never db 0's (hot in the kernel). The same after
    an inline `SELECT 1 ` with a trailing blank (Redis: OK, db 1)."""
    key = "bb:d5:k"
    try:
        with client(lab) as c:
            set_hot(lab, c, key, "db0")
            ok(c.call("SELECT", "1"))
            ok(c.call("SET", key, "db1"))
            with Delta(lab) as d:
                err = c.call("SELECT", "00")
                got = [c.call("GET", key) for _ in range(5)]
            assert is_error(err, "ERR"), err
            assert got == [b"db1"] * 5 and d["hit"] == 0, (got, d)
        with client(lab) as e:
            warm(lab, e, key, "db0")
            with Delta(lab) as d:
                e.send(b"SELECT 1 \r\n")
                ok(e.read_reply(), "inline SELECT 1 ")
                got = [e.call("GET", key) for _ in range(5)]
            assert got == [b"db1"] * 5 and d["hit"] == 0, (got, d)
            assert d["dirty_inline"] + d["dirty_state"] >= 1, d
        with truth(lab) as t:
            assert t.call("GET", key) == b"db0"
            ok(t.call("SELECT", "1"))
            assert t.call("GET", key) == b"db1"
    finally:
        with client(lab) as c:
            ok(c.call("SELECT", "1"))
            c.call("DEL", key)
        _del(lab, key)


# --------------------------------------------------------------------------- D6

def test_d6_keys_with_a_ttl_expire_as_redis_says(lab):
    """D6: SET k v EX 3, then SET k o NX (not applied: the TTL stays): GETs return v,
    and 3.5 s after the SET, GET k is nil as Redis says. RENAME and COPY ... REPLACE
    of a key with a TTL onto a destination hot in the kernel: after the TTL, GET of the
    destination is nil."""
    k, s1, d1, s2, d2 = ("bb:d6:%s" % n for n in ("k", "s1", "d1", "s2", "d2"))
    try:
        with client(lab) as c:
            for dst in (d1, d2):
                set_hot(lab, c, dst, "old")
            with Delta(lab) as d:
                start = time.monotonic()
                ok(c.call("SET", k, "v", "EX", "3"))
                assert c.call("SET", k, "o", "NX") is None
                ok(c.call("SET", s1, "from-s1", "EX", "3"))
                ok(c.call("RENAME", s1, d1))
                ok(c.call("SET", s2, "from-s2", "EX", "3"))
                assert c.call("COPY", s2, d2, "REPLACE") == 1
                got = [c.call("GET", n) for n in (k, d1, d2) for _ in range(3)]
            assert got == [b"v"] * 3 + [b"from-s1"] * 3 + [b"from-s2"] * 3, got
            assert d["hit"] == 0 and d["ttl_marked"] >= 3, d
            time.sleep(max(0.0, start + 3.5 - time.monotonic()))
            with Delta(lab) as d:
                got = [c.call("GET", n) for n in (k, d1, d2, s2) for _ in range(2)]
            assert got == [None] * 8, got
        with truth(lab) as t:
            assert [t.call("GET", n) for n in (k, d1, d2)] == [None] * 3
    finally:
        _del(lab, k, s1, d1, s2, d2)


# --------------------------------------------------------------------------- D7

V6_SERVER, V6_CLIENT = "fd00:bc::1", "fd00:bc::2"


def test_d7_writes_brc_cannot_parse_invalidate(lab):
    """D7: writes BRC does not parse reach Redis unseen: over IPv6 with an extension
    header (a hop-by-hop option, setsockopt IPV6_HOPOPTS; the lab's Redis also bound
    to fd00:bc::1, a unique-local address on both veth ends, only inside the lab's
    namespaces) and over IPv4 with IP options (setsockopt IP_OPTIONS NOP NOP NOP EOL).
    The key is hot in the kernel for IPv4 clients before each write; after it, they
    get what Redis holds, never the old value (`invalidate_unparsed` grows)."""
    key = "bb:d7:k"
    pair = lab.pair
    hop_by_hop = b"\x00\x00\x01\x04\x00\x00\x00\x00"     # PadN: one 8-byte header
    try:
        with address(pair.server, pair.server_dev, V6_SERVER + "/64", v6=True), \
                address(pair.client, pair.client_dev, V6_CLIENT + "/64", v6=True), \
                redis_bind(lab, V6_SERVER), client(lab) as c:
            set_hot(lab, c, key, "v1")
            opts = [(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, hop_by_hop)]
            with client(lab, host=V6_SERVER, sockopts=opts) as w6, Delta(lab) as d:
                ok(w6.call("SET", key, "v2-over-ipv6"))
                got = [c.call("GET", key) for _ in range(5)]
            assert got == [b"v2-over-ipv6"] * 5, got
            assert d["pkt_ipv6"] >= 1 and d["invalidate_unparsed"] >= 1, d
            warm(lab, c, key, "v2-over-ipv6")
            opts = [(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")]
            with client(lab, sockopts=opts) as wo, Delta(lab) as d:
                ok(wo.call("SET", key, "v3-with-ip-options"))
                got = [c.call("GET", key) for _ in range(5)]
            assert got == [b"v3-with-ip-options"] * 5, got
            assert d["pkt_ip_options"] >= 1 and d["invalidate_unparsed"] >= 1, d
            with truth(lab) as t:
                assert t.call("GET", key) == b"v3-with-ip-options"
            warm(lab, c, key, "v3-with-ip-options")
    finally:
        _del(lab, key)


@pytest.mark.parametrize("checksum", ["offload", "full"])
def test_ipv6_connections_are_followed_and_answered_like_ipv4(lab, checksum):
    """IPv6 without extension headers is parsed, cached from and answered as IPv4 is
    (issue 11), with the client's checksum offload on (CHECKSUM_PARTIAL requests) and
    off: a write over it invalidates its key only (`invalidate_key`, nothing unparsed,
    IPv4 readers keep their hits on other keys); an IPv6 client's repeated GETs are
    >= 90% answered in the kernel, every reply what Redis holds (read over loopback),
    also right after its own write and another client's."""
    key, other = "bb:v6:k", "bb:v6:other"
    pair = lab.pair
    tx = "on" if checksum == "offload" else "off"
    try:
        with address(pair.server, pair.server_dev, V6_SERVER + "/64", v6=True), \
                address(pair.client, pair.client_dev, V6_CLIENT + "/64", v6=True), \
                ethtool(pair.client, pair.client_dev, "tx", "tx-checksumming", tx), \
                redis_bind(lab, V6_SERVER), client(lab) as c:
            set_hot(lab, c, key, "v1")
            set_hot(lab, c, other, "o1")
            with Delta(lab) as d, client(lab, host=V6_SERVER) as c6:
                ok(c6.call("SET", key, "v2-over-ipv6"))
                got = [c.call("GET", key) for _ in range(5)]
                _, hits = gets_answered(lab, c, other, 5)
            assert got == [b"v2-over-ipv6"] * 5, got
            assert hits == 5, "a parsed IPv6 write invalidated more than its key"
            # (pkt_ipv6 may count the MLD reports of the new addresses: hop-by-hop, to no port)
            assert not d["invalidate_unparsed"] and not d["invalidate_global"], d
            assert d["invalidate_key"] == 1 and d["flows_tracked"] == 1, d
            with client(lab, host=V6_SERVER) as c6:
                warm(lab, c6, key, "v2-over-ipv6")
                got, hits = gets_answered(lab, c6, key, 200)
                assert got == [b"v2-over-ipv6"] * 200, set(got)
                assert hits >= 180, hits
                ok(c6.call("SET", key, "v3-over-ipv6"))
                assert c6.call("GET", key) == b"v3-over-ipv6"
                ok(c.call("SET", key, "v4-over-ipv4"))
                assert c6.call("GET", key) == b"v4-over-ipv4"
                warm(lab, c6, key, "v4-over-ipv4")
            with truth(lab) as t:
                assert t.call("GET", key) == b"v4-over-ipv4"
    finally:
        _del(lab, key, other)


# --------------------------------------------------------------------------- D8

def test_d8_a_reset_writer_never_leaves_a_stale_value(lab):
    """D8: CLIENT PAUSE 3000 WRITE (over loopback); W (through BRC) sends SET k v2 and
    resets its connection (SO_LINGER 0) at once; R (through BRC, k hot in the
    kernel) GETs k during and after the pause. Whatever Redis does with the SET (7.0
    drops a paused client's write when the client resets), R gets what Redis holds:
    BRC passes the RST and holds k's bucket (`rst_pending`) for max_age, in case a
    busy Redis runs the write after all."""
    key = "bb:d8:k"
    paused = False
    try:
        with client(lab) as r, truth(lab) as t:
            set_hot(lab, r, key, "v1")
            with Delta(lab) as d:
                ok(t.call("CLIENT", "PAUSE", "3000", "WRITE"))
                paused = True
                start = time.monotonic()
                w = client(lab)
                w.send(w.encode("SET", key, "v2"))
                w.reset()
                seen, applied_at = [], None
                for _ in range(400):                     # about 6 s, bounded
                    before = t.call("GET", key)
                    got = r.call("GET", key)
                    after = t.call("GET", key)
                    if applied_at is None and before == b"v2":
                        applied_at = len(seen)
                    seen.append((round(time.monotonic() - start, 3), before, got, after))
                    if before == b"v2":
                        assert got == b"v2", "R got %r after Redis ran the SET: %r" % (got, seen[-5:])
                    assert got in (before, after), seen[-5:]
                    if time.monotonic() - start > 6.0:
                        break
                    time.sleep(0.015)
            paused = False
            print("D8: Redis ran the SET %s; R's GETs (t, before, R, after): first %s, last %s"
                  % ("at %.3f s" % seen[applied_at][0] if applied_at is not None else "never",
                     seen[0], seen[-1]))
            assert d["rst_pending"] >= 1, d
            final = t.call("GET", key)
            got, _ = gets_answered(lab, r, key, 5)
            assert got == [final] * 5
    finally:
        if paused:
            with truth(lab) as t:
                t.call("CLIENT", "UNPAUSE")
        _del(lab, key)


# --------------------------------------------------------------------------- D9

def test_d9_client_tracking_sees_every_read(lab):
    """D9: T subscribes to __redis__:invalidate; A: CLIENT TRACKING ON REDIRECT <T>,
    GET k (hot in the kernel for others: it must reach Redis to be tracked); B: SET k
    v2: T receives the invalidation of k. A's GETs are never answered in the kernel
    (A is given up: `dirty_tracking`)."""
    key = "bb:d9:k"
    try:
        with client(lab) as other, client(lab) as t, client(lab) as a, client(lab) as b_:
            set_hot(lab, other, key, "v1")
            tid = t.call("CLIENT", "ID")
            assert t.call("SUBSCRIBE", "__redis__:invalidate") == [b"subscribe", b"__redis__:invalidate", 1]
            with Delta(lab) as d:
                ok(a.call("CLIENT", "TRACKING", "on", "REDIRECT", tid))
                got = [a.call("GET", key) for _ in range(3)]
            assert got == [b"v1"] * 3 and d["hit"] == 0 and d["dirty_tracking"] == 1, (got, d)
            ok(b_.call("SET", key, "v2"))
            t.sock.settimeout(5.0)
            msg = t.read_reply()
            assert msg == [b"message", b"__redis__:invalidate", [key.encode()]], msg
            with Delta(lab) as d:
                got = [a.call("GET", key) for _ in range(3)]
            assert got == [b"v2"] * 3 and d["hit"] == 0, (got, d)
            warm(lab, other, key, "v2")
    finally:
        _del(lab, key)


# --------------------------------------------------------------------------- D10

D10_KEYS = 40000            # more than BRC_CACHE_MAX (32768)
D10_SECONDS = 10.0
D10_MAX_GETS = 400000       # per connection


def _d10_value(key):
    return b"<" + key + b">" + b"." * 40        # every value the same length


def test_d10_a_recycled_entry_is_never_sent_for_another_key(lab):
    """D10: serve copied an LRU element and rechecked versions and length, not the key:
    an element recycled for another key's fill meanwhile could be sent. 40000 keys
    (the cache holds 32768), values of one length that contain their own key name;
    random GETs from two connections whose client threads are pinned to different
    CPUs: every value returned is the key's own (`serve_key_recheck` may grow)."""
    cpu_list = cpus()
    assert len(cpu_list) >= 2, "needs two CPUs"
    keys = [b"bb:d10:%05d" % i for i in range(D10_KEYS)]
    try:
        with client(lab, timeout=30) as c:
            for i in range(0, D10_KEYS, 1000):
                args = []
                for k in keys[i:i + 1000]:
                    args += [k, _d10_value(k)]
                ok(c.call("MSET", *args))
        conns = [client(lab), client(lab)]
        wrong, stalls, counts = [], [], [0, 0]

        def reader(n):
            os.sched_setaffinity(0, {cpu_list[n % len(cpu_list)]})
            rng = random.Random(n)
            deadline = time.monotonic() + D10_SECONDS
            c = conns[n]
            try:
                for i in range(D10_MAX_GETS):
                    if i % 256 == 0 and time.monotonic() > deadline:
                        break
                    k = rng.choice(keys)
                    got = c.call("GET", k)
                    counts[n] += 1
                    if got != _d10_value(k) and len(wrong) < 20:
                        wrong.append((k, got))
            except Exception as e:          # a stall or a broken connection
                stalls.append("%d: %r" % (n, e))

        with Delta(lab) as d:
            threads = [threading.Thread(target=reader, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(D10_SECONDS + 60)
        for c in conns:
            c.close()
        print("D10: %d GETs, hits %d, fills %d, serve_key_recheck %d"
              % (sum(counts), d["hit"], d["fill"], d["serve_key_recheck"]))
        assert not any(t.is_alive() for t in threads), "a reader did not finish"
        assert not wrong, "values of other keys: %r" % wrong
        assert not stalls, stalls
        assert d["hit"] > 1000 and d["fill"] > D10_KEYS // 4, d
    finally:
        with client(lab, timeout=30) as c:
            for i in range(0, D10_KEYS, 1000):
                c.call("DEL", *keys[i:i + 1000])


# --------------------------------------------------------------------------- D11

SECOND_SERVER = "10.69.0.3"


def test_d11_two_servers_behind_one_interface_never_share_entries(lab):
    """D11: the cache was keyed by key only: two redis-servers on two addresses of the
    server veth, same port, one key with a different value in each: each client gets
    its own server's value, repeatedly, with GETs of both answered in the kernel."""
    key = "bb:d11:k"
    pair = lab.pair
    try:
        with address(pair.server, pair.server_dev, SECOND_SERVER + "/24"), \
                redis_server(pair.server, SECOND_SERVER, ping_from=pair.client), \
                client(lab) as c1, client(lab, host=SECOND_SERVER) as c2:
            ok(c1.call("SET", key, "from-first"))
            ok(c2.call("SET", key, "from-second"))
            warm(lab, c1, key, "from-first")
            warm(lab, c2, key, "from-second")
            hits = [0, 0]
            for _ in range(10):
                for n, (c, v) in enumerate(((c1, b"from-first"), (c2, b"from-second"))):
                    got, h = gets_answered(lab, c, key, 1)
                    assert got == [v], (n, got)
                    hits[n] += h
            assert hits[0] >= 5 and hits[1] >= 5, hits
            with client(lab) as f1, client(lab, host=SECOND_SERVER) as f2:
                assert f1.call("GET", key) == b"from-first" and f2.call("GET", key) == b"from-second"
    finally:
        _del(lab, key)


# --------------------------------------------------------------------------- D13

def test_d13_spoofed_syn_and_stray_rst_change_nothing(lab):
    """D13: a SYN with a random ISN on the live 4-tuple of a served connection, and
    RSTs not at the next sequence number (one far out of the window, one in it),
    sent from the client namespace with a raw socket (IP_HDRINCL, correct checksums):
    the server's kernel only answers with challenge ACKs, so BRC must keep its state.
    The connection keeps working and its GETs stay answered and correct."""
    key = "bb:d13:k"
    pair = lab.pair
    try:
        with client(lab) as c:
            set_hot(lab, c, key, "v1")
            cport = c.local_port()
            with Delta(lab) as d:
                syn = ipv4_tcp(pair.client_ip, pair.server_ip, cport, PORT, random.getrandbits(32), 0, "S",
                               b"", tcp_options(mss=True))[14:]
                raw_send(pair.client, syn, pair.server_ip)
                time.sleep(0.2)
                got, hits = gets_answered(lab, c, key, 5)
            assert got == [b"v1"] * 5 and hits >= 1 and d["syn_ignored"] == 1, (got, d)
            nxt = snd_nxt(c.sock)
            with Delta(lab) as d:
                for seq in (nxt + 0x40000000, nxt + 1000):
                    rst = ipv4_tcp(pair.client_ip, pair.server_ip, cport, PORT, seq, 0, "R")[14:]
                    raw_send(pair.client, rst, pair.server_ip)
                time.sleep(0.2)
                got, hits = gets_answered(lab, c, key, 5)
                assert got == [b"v1"] * 5 and hits >= 1, (got, d.now())
                ok(c.call("SET", key, "v2"))
                assert c.call("GET", key) == b"v2"
            assert d["rst_ignored"] == 2 and d["flows_closed"] == 0, d
            warm(lab, c, key, "v2")
    finally:
        _del(lab, key)


# --------------------------------------------------------------------------- D14

D14_CONNECTIONS = 4         # two per CPU
D14_SECONDS = 10.0
D14_MAX_ROUNDS = 100000     # per connection


def test_d14_pipelined_stress_on_both_cpus_stays_exact(lab):
    """D14: `pending` was updated non-atomically by ingress and egress on different
    CPUs. Four connections (client threads pinned two per CPU) send pipelined batches
    of GET/SET of their own keys and INCR of a shared counter, then single GETs (the
    ones the kernel may answer): every reply is what a per-key serialized writer
    (the owning connection) knows Redis holds; the counter never goes back and is
    never below the connection's own last INCR; no connection stalls (5 s)."""
    cpu_list = cpus()
    assert len(cpu_list) >= 2, "needs two CPUs"
    ctr = b"bb:d14:ctr"
    conns = [client(lab) for _ in range(D14_CONNECTIONS)]
    wrong, stalls, ops = [], [], [0] * D14_CONNECTIONS
    owned = [[b"bb:d14:%d:%d" % (n, j) for j in range(16)] for n in range(D14_CONNECTIONS)]

    def worker(n):
        os.sched_setaffinity(0, {cpu_list[n % 2]})
        rng = random.Random(1000 + n)
        c, keys = conns[n], owned[n]
        model = dict((k, None) for k in keys)
        seq, my_incr, last_ctr = 0, 0, 0
        deadline = time.monotonic() + D14_SECONDS

        def check(got, want, what):
            if got != want and len(wrong) < 20:
                wrong.append("conn %d %s: got %r, Redis holds %r" % (n, what, got, want))

        try:
            for _ in range(D14_MAX_ROUNDS):
                if time.monotonic() > deadline:
                    break
                batch, expect = [], []
                for _ in range(rng.randint(4, 16)):
                    k = rng.choice(keys)
                    r = rng.random()
                    if r < 0.35:
                        seq += 1
                        v = (b"%d:%d:" % (n, seq)).ljust(rng.choice((16, 64, 300, 2000)), b"x")
                        batch.append(("SET", k, v))
                        expect.append(("ok", k))
                        model[k] = v
                    elif r < 0.5:
                        batch.append(("INCR", ctr))
                        expect.append(("incr", None))
                    else:
                        batch.append(("GET", k))
                        expect.append(("get", model[k]))
                replies = c.pipeline(batch)
                for (kind, want), got, cmd in zip(expect, replies, batch):
                    if kind == "ok":
                        check(got, "OK", "SET %r" % cmd[1])
                    elif kind == "get":
                        check(got, want, "pipelined GET %r" % cmd[1])
                    else:
                        if not isinstance(got, int) or got <= my_incr:
                            check(got, "> %d" % my_incr, "INCR")
                        my_incr = got if isinstance(got, int) else my_incr
                for k in rng.sample(keys, 3):
                    check(c.call("GET", k), model[k], "GET %r" % k)
                got = c.call("GET", ctr)
                now = int(got) if got is not None else 0
                if now < max(my_incr, last_ctr):
                    check(now, ">= %d" % max(my_incr, last_ctr), "GET counter")
                last_ctr = max(last_ctr, now)
                ops[n] += len(batch) + 4
        except Exception as e:              # a stall (5 s timeout) or a broken connection
            stalls.append("conn %d: %r" % (n, e))

    try:
        with Delta(lab) as d:
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(D14_CONNECTIONS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(D14_SECONDS + 60)
        print("D14: %d operations, hits %d, fills %d" % (sum(ops), d["hit"], d["fill"]))
        assert not any(t.is_alive() for t in threads), "a worker did not finish"
        assert not wrong, wrong
        assert not stalls, stalls
        assert d["hit"] > 100 and d["mismatch"] == 0, d
        with truth(lab) as t:
            for n, c in enumerate(conns):
                for k in owned[n]:
                    assert t.call("GET", k) == c.call("GET", k)
    finally:
        for c in conns:
            c.close()
        _del(lab, ctr, *[k for keys in owned for k in keys])


# --------------------------------------------------------------------------- D16

D16_CONNECTIONS = 20000
D16_THREADS = 4


def test_d16_an_idle_pooled_connection_survives_many_short_ones(lab):
    """D16: idle live served connections could be LRU-evicted behind closed ones.
    A pooled connection is answered once and left idle; about 20000 short
    connections each GET a hot key twice (answered in the kernel) and close; then the
    pooled connection is used again: it works and is answered (no stall, no reset)."""
    hot = "bb:d16:hot"
    pair = lab.pair
    try:
        with sysctl(pair.client, "net.ipv4.ip_local_port_range", "1024 65000"), client(lab) as pooled:
            set_hot(lab, pooled, hot, "hot-value")
            errors, done = [], [0] * D16_THREADS

            def shorts(n):
                try:
                    with in_netns(pair.client):         # once per thread: setns is slow
                        for _ in range(D16_CONNECTIONS // D16_THREADS):
                            with Client.open(None, pair.server_ip) as c:
                                got = [c.call("GET", hot), c.call("GET", hot)]
                            if got != [b"hot-value"] * 2 and len(errors) < 20:
                                errors.append(got)
                            done[n] += 1
                except Exception as e:
                    errors.append("thread %d after %d connections: %r" % (n, done[n], e))

            with Delta(lab) as d:
                threads = [threading.Thread(target=shorts, args=(n,)) for n in range(D16_THREADS)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
            print("D16: %d short connections, %r" % (sum(done), dict(
                (k, d[k]) for k in ("hit", "flows_tracked", "flows_closed", "serve_flows_kept",
                                    "flows_table_full", "reset"))))
            assert not any(t.is_alive() for t in threads), "short connections did not finish"
            assert not errors, errors
            assert sum(done) == D16_CONNECTIONS and d["hit"] >= D16_CONNECTIONS, d
            assert d["flows_table_full"] == 0, d
            with Delta(lab) as d:
                got = [pooled.call("GET", hot) for _ in range(3)]
                assert pooled.call("PING") == "PONG"
            assert got == [b"hot-value"] * 3 and d["hit"] >= 1, (got, d)
    finally:
        _del(lab, hot)


# --------------------------------------------------------------------------- D17

def test_d17_redis_timeout_never_closes_a_served_connection(lab):
    """D17: Redis's `timeout` closed clients whose GETs were all answered in the
    kernel (Redis saw no activity). CONFIG SET timeout 5 (over loopback), reloaded:
    a served connection doing one GET per second for 12 s is not closed by Redis,
    and most of its GETs are answered in the kernel; BRC lets one through every
    timeout/2 (`serve_passed_idle`)."""
    hot = "bb:d17:hot"
    try:
        with config(lab, "timeout", "5"):
            lab.refresh_auth()
            with client(lab) as c:
                set_hot(lab, c, hot, "v")
                with Delta(lab) as d:
                    got = []
                    for _ in range(12):
                        time.sleep(1.0)
                        got.append(c.call("GET", hot))
                    assert c.call("PING") == "PONG"          # Redis itself still has it
                assert got == [b"v"] * 12, got
                assert d["hit"] >= 6 and d["serve_passed_idle"] >= 1, d
                with truth(lab) as t:
                    listed = t.call("CLIENT", "LIST")
                assert b"addr=%s:%d " % (lab.pair.client_ip.encode(), c.local_port()) in listed
    finally:
        lab.refresh_auth()
        _del(lab, hot)


# --------------------------------------------------------------------------- D19 / item 9

TFO_CLIENT = "1029"         # 0x405: client on, data in the SYN without a cookie
TFO_SERVER = "1538"         # 0x602: server on, no cookie needed, listeners without TCP_FASTOPEN


@pytest.mark.parametrize("server_takes_it", [False, True], ids=["server-ignores", "server-takes"])
def test_item9_data_on_a_syn_is_never_followed(lab, server_takes_it):
    """Item 9 (D19, TFO): a client sends SET k v2 in its SYN (TCP Fast Open without a
    cookie: client namespace net.ipv4.tcp_fastopen=0x405). Either the server ignores
    the data (default: the client sends it again after the handshake) or takes it
    (server namespace 0x602 and the lab's Redis re-listens: Redis runs the SET from
    the SYN, TCPFastOpenPassive grows). k was hot in the kernel: every later GET
    returns v2; the TFO connection works and is never answered in the kernel
    (`dirty_tfo`); after it closed, the kernel answers k again."""
    key = "bb:d19:tfo"
    pair = lab.pair
    try:
        with client(lab) as c:
            set_hot(lab, c, key, "v1")
            with sysctl(pair.client, "net.ipv4.tcp_fastopen", TFO_CLIENT), \
                    sysctl(pair.server, "net.ipv4.tcp_fastopen", TFO_SERVER if server_takes_it else "1"), \
                    redis_bind(lab, "127.0.0.1"), Delta(lab) as d:
                passive = tcp_ext(pair.server).get("TCPFastOpenPassive", 0)
                with client(lab, tfo_data=c.encode("SET", key, "v2")) as f:
                    ok(f.read_reply(), "SET in the SYN")
                    taken = tcp_ext(pair.server).get("TCPFastOpenPassive", 0) - passive
                    assert taken == (1 if server_takes_it else 0), "TCPFastOpenPassive +%d" % taken
                    got = [c.call("GET", key) for _ in range(5)]
                    assert got == [b"v2"] * 5, got
                    with Delta(lab) as on_f:
                        got = [f.call("GET", key) for _ in range(3)]
                        assert f.call("PING") == "PONG"
                    assert got == [b"v2"] * 3 and on_f["hit"] == 0, (got, on_f)
            assert d["dirty_tfo"] == 1, d
            with truth(lab) as t:
                assert t.call("GET", key) == b"v2"
            time.sleep(1.2)                     # its FINs passed, and the hold on its SYN's data
            warm(lab, c, key, "v2")             # its marks went with it
    finally:
        if server_takes_it:
            with redis_bind(lab, "127.0.0.1"):  # re-listen once more with the sysctls restored
                pass
        _del(lab, key)


@pytest.mark.parametrize("in_frame", [True, False], ids=["tag-in-frame", "tag-in-skb"])
def test_item9_a_served_connection_over_a_vlan(lab, in_frame):
    """Item 9 (D19, VLAN): a served connection whose frames carry 802.1Q tags both ways,
    BRC still on the lab's veth, `ethtool -K <veth> txvlan off` on both ends. This
    kernel has no 802.1Q driver (no vlan devices, no act_vlan), so the tags are VID 0
    (priority tags, which its stack accepts) pushed by a tc program that runs before
    BRC on each veth's egress: in the frame bytes (what a vlan device with reorder_hdr
    off hands its lower device: BRC's egress sees 802.1Q frames) or in the skb (the
    reorder_hdr on shape). GETs are answered in the kernel and correct, later
    commands and a multi-segment value work (no stall, no reset)."""
    key, large = "bb:d19:vlan", "bb:d19:vlan:large"
    pair = lab.pair
    value = b"L" * 3000
    try:
        with ethtool(pair.client, pair.client_dev, "txvlan", "tx-vlan-offload", "off"), \
                ethtool(pair.server, pair.server_dev, "txvlan", "tx-vlan-offload", "off"), \
                VlanTagger(pair.server, pair.server_dev, in_frame) as srv_tags, \
                VlanTagger(pair.client, pair.client_dev, in_frame) as cli_tags:
            with client(lab) as c, Delta(lab) as d:
                ok(c.call("SET", key, "over-the-vlan"))
                ok(c.call("SET", large, value))
                warm(lab, c, key, "over-the-vlan")
                got, hits = gets_answered(lab, c, key, 10)
                assert got == [b"over-the-vlan"] * 10 and hits >= 5, (got, hits)
                assert c.call("GET", large) == value and c.call("PING") == "PONG"
                ok(c.call("SET", key, "changed"))
                assert c.pipeline([("GET", key), ("PING",), ("GET", large)]) == [b"changed", "PONG", value]
                warm(lab, c, key, "changed")
                got, hits = gets_answered(lab, c, key, 10)
                assert got == [b"changed"] * 10 and hits >= 5, (got, hits)
                assert c.call("GET", large) == value
            tagged = (srv_tags.tagged(), cli_tags.tagged())
            print("VLAN %s: frames tagged (server, client) %s; %r" % (
                "in frame" if in_frame else "in skb", tagged,
                dict((k, d[k]) for k in ("hit", "fill", "pkt_malformed", "reset", "resent", "ack_held"))))
            assert tagged[0] >= 10 and tagged[1] >= 10, tagged
            assert d["reset"] == 0, d
        with client(lab) as plain:
            assert plain.call("GET", key) == b"changed"
    finally:
        _del(lab, key, large)


BIG = 185000


def test_item9_big_tcp_values_arrive_intact_on_a_served_connection(lab):
    """Item 9 (D19, BIG TCP): gso/gro_max_size and gso/gro_ipv4_max_size 185000 on both
    veth ends (set over rtnetlink: iproute2 6.1 cannot), so the server sends IPv4
    super-packets larger than 64 KB (IP total length 0). A served connection (GETs
    answered in the kernel: its sequence numbers are translated) GETs a 200 KB value
    (never cached) several times: it arrives intact each time, and the connection
    keeps being answered afterwards."""
    key, big = "bb:d19:small", "bb:d19:big"
    pair = lab.pair
    value = bytes(random.Random(19).getrandbits(8) for _ in range(200 * 1024))
    sizes = dict(gso_max_size=BIG, gso_ipv4_max_size=BIG, gro_max_size=BIG, gro_ipv4_max_size=BIG)
    sniff = None
    try:
        with client(lab) as c:
            ok(c.call("SET", key, "small"))
            ok(c.call("SET", big, value))
        with link_sizes_set(pair.server, pair.server_dev, **sizes), \
                link_sizes_set(pair.client, pair.client_dev, **sizes):
            sniff = Sniffer(pair.server, pair.server_dev)
            with client(lab, timeout=10) as c, Delta(lab) as d:
                warm(lab, c, key, "small")
                for i in range(8):
                    got = c.call("GET", big)
                    assert got == value, "GET %d of the 200 KB value: %d bytes, %s" % (
                        i, len(got or b""), "intact" if got == value else "corrupt")
                    warm(lab, c, key, "small")
                assert c.call("PING") == "PONG"
            largest = sniff.drain()
            print("BIG TCP: largest frame out of the server veth %d bytes; %r" % (largest, dict(
                (k, d[k]) for k in ("hit", "pkt_malformed", "oversize_value", "reset"))))
            assert largest > 65535, "no super-packet left the server veth (%d): BIG TCP unused" % largest
    finally:
        if sniff:
            sniff.close()
        _del(lab, key, big)
