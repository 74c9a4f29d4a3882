"""Fail closed, packet by packet: where BRC's model of a connection or of the server
could disagree with Redis (the serve review's findings D1-D19), the connection is
given up (never answered or filled from, its marks held until it closes) and what it
could affect is invalidated. Each case runs crafted segments through the loaded
programs; the black-box versions against a real Redis are in tests/serve/."""
import ctypes

import pytest

import brc_testlib
from brc_testlib import (CONTRACT, Conn, Delta, bulk, dirty_reasons, ipv4_tcp, ipv6_tcp, marks,
                         pending, resp, tcp_options, user, answerable, counted_get, filled_conn, filled)

READ_ALL = CONTRACT.constants["BRC_USER_READ_ALL"]
OPEN = CONTRACT.constants["BRC_USER_OPEN"]


@pytest.mark.parametrize("cmd,reason", [
    (resp("UNSUBSCRIBE", "a", "b"), "pubsub"),
    (resp("PUNSUBSCRIBE"), "pubsub"),
    (resp("SSUBSCRIBE", "ch"), "pubsub"),
    (resp("MONITOR"), "monitor"),
    (resp("REPLCONF", "ACK", "0"), "replication"),
    (resp("PSYNC", "?", "-1"), "replication"),
    (resp("CLIENT", "REPLY", "SKIP"), "client_reply"),
    (resp("client", "tracking", "on"), "tracking"),
    (resp("CLIENT", "CACHING", "yes"), "tracking"),
    (resp("NOSUCHCOMMAND", "x"), "unknown"),
    (resp(b"RESET\0"), "unknown"),
    (resp("HELLO", "4"), "resp3"),
])
def test_commands_whose_replies_do_not_pair_give_the_connection_up(brc, port, cmd, reason):
    """D1, D9: any command whose replies BRC cannot count (or that needs Redis to
    see the connection's reads) gives the connection up for good."""
    key = "giveup:%d" % port
    c = filled_conn(brc, port, key)
    with Delta(brc) as d:
        c.send(cmd)
    assert reason in dirty_reasons(brc.flow(c)) and d["dirty_" + reason] == 1
    with Delta(brc) as d:
        c.send(resp("GET", key))
    assert d["would_hit"] == 0
    if reason != "unknown":         # an unknown command also stops the parser (global mark)
        assert d["get_uncacheable_dirty"] == 1


def test_d1_a_shifted_reply_is_neverfilled(brc, port):
    """D1's repro: UNSUBSCRIBE a b (two replies) + BLMOVE in one write, two replies
    read, then GET victim: the blocking command's reply must never fill victim."""
    victim = "victim:%d" % port
    w = Conn(brc, port).handshake()
    w.send(resp("UNSUBSCRIBE", "a", "b") + resp("BLMOVE", "src", "dst", "LEFT", "LEFT", "0"))
    w.reply(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n")
    with Delta(brc) as d:
        w.send(resp("GET", victim))
        w.reply(bulk("evil"))          # BLMOVE's reply, released by another client's LPUSH
        w.reply(bulk("good"))
    assert d["fill"] == 0 and brc.cache_get(victim) is None
    # its write marks (src, dst) stay until it closes: replies no longer say when
    assert marks(brc.flow(w)) == 2


def test_a_reply_with_nothing_pending_gives_up(brc, port):
    key = "unm:%d" % port
    c = filled_conn(brc, port, key)
    with Delta(brc) as d:
        c.reply(b"+OK\r\n")
    assert d["replies_unmatched"] == 1 and "unmatched" in dirty_reasons(brc.flow(c))
    c.send(resp("SET", "other:%d" % port, "v"))
    c.reply(b"+OK\r\n")
    assert marks(brc.flow(c)) == 1     # its replies no longer say when a write is done


def test_a_get_answered_by_something_else_gives_up(brc, port):
    key = "shape:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), b"*1\r\n$1\r\nx\r\n")
    assert d["fill"] == 0 and "reply_shape" in dirty_reasons(brc.flow(c))


@pytest.mark.parametrize("raw,what", [
    (b"SET k\rv2\r\n", "a CR inside an inline line (Redis splits there)"),
    (b"\x0bSET k v\r\n", "a leading vertical tab"),
    (b"SET\tk v\r\n", "a tab between words"),
    (b"SET k v\x00x\r\n", "a NUL inside a line"),
    (b"SET k \xc3\xa9\r\n", "a byte above ASCII"),
])
def test_inline_commands_outside_the_exact_subset_give_up(brc, port, raw, what):
    """D4: inline parsing follows Redis exactly or not at all."""
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(raw)
    assert d["dirty_inline"] == 1, what
    assert brc.global_state()["inflight"] >= 1, "its writes are invisible: global mark"


def test_the_first_byte_decides_inline_or_multibulk(brc, port):
    """D4: ' *1...' is an inline command '*1' for Redis (unknown), never a RESP array."""
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(b" *1\r\n$4\r\nPING\r\n")
    assert d["dirty_unknown"] == 1 and d["req_other"] == 0


@pytest.mark.parametrize("header", [b"*01\r\n$4\r\nPING\r\n", b"*1\r\n$04\r\nPING\r\n",
                                    b"*-1\r\n", b"*1\r\n$-1\r\n", b"*1 \r\n"])
def test_lengths_are_read_as_redis_reads_them(brc, port, header):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(header)
    assert d["dirty_parser"] == 1 and d["parse_error_request"] == 1


def test_inline_commands_redis_reads_the_same_way_are_followed(brc, port):
    key = "inl:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(b"\r\n  \r\n", b"")                   # blank lines: Redis runs nothing
        c.roundtrip(b"  SET %s w  \r\n" % key.encode(), b"+OK\r\n")
        c.roundtrip(b"GET %s\n" % key.encode(), bulk("w"))
    assert d["req_set"] == 1 and d["req_get"] == 1 and d["fill"] == 1
    assert brc.flow(c).dirty == 0 and pending(brc.flow(c)) == 0


@pytest.mark.parametrize("arg", ["00", "01", "+1", " 1", "1 ", "-0"])
def test_select_takes_effect_only_on_redis_ok(brc, port, arg):
    """D5: SELECT 00 is refused by Redis: the connection stays in its db."""
    key = "sel:%d" % port
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SELECT", "1"), b"+OK\r\n")
    assert brc.flow(c).db == 1
    c.roundtrip(resp("SELECT", arg), b"-ERR value is not an integer or out of range\r\n")
    assert brc.flow(c).db == 1
    d = counted_get(brc, c, key, "db1")
    assert d["get_uncacheable_db"] == 1 and d["fill"] == 0


def test_select_ok_to_an_index_brc_cannot_read_gives_up(brc, port):
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SELECT", "00"), b"+OK\r\n")     # a Redis that read it
    assert "state" in dirty_reasons(brc.flow(c))


def test_select_applies_at_its_reply_not_its_request(brc, port):
    key = "selreply:%d" % port
    c = Conn(brc, port).handshake()
    c.send(resp("SELECT", "1"))
    assert brc.flow(c).db == 0
    c.reply(b"+OK\r\n")
    assert brc.flow(c).db == 1


def test_pipelined_state_changes_apply_in_order(brc, port):
    c = Conn(brc, port).handshake()
    c.send(resp("SELECT", "1") + resp("SELECT", "2") + resp("AUTH", "u", "p") + resp("SELECT", "0"))
    assert brc.flow(c).dirty == 0 and brc.flow(c).db == 0
    c.reply(b"+OK\r\n+OK\r\n")
    assert brc.flow(c).db == 2
    c.reply(b"-WRONGPASS invalid\r\n+OK\r\n")
    assert brc.flow(c).db == 0 and user(brc.flow(c)) == (b"default", False)


def test_more_state_changes_in_flight_than_brc_keeps_give_up(brc, port):
    c = Conn(brc, port).handshake()
    c.send(b"".join(resp("SELECT", str(i % 2)) for i in range(5)))
    assert "state" in dirty_reasons(brc.flow(c))


def test_state_changes_inside_multi_are_not_followed(brc, port):
    """A MULTI connection is never cached from: SELECT's +QUEUED is not a disagreement."""
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("MULTI"), b"+OK\r\n")
    c.roundtrip(resp("SELECT", "1"), b"+QUEUED\r\n")
    c.roundtrip(resp("EXEC"), b"*1\r\n+OK\r\n")
    assert dirty_reasons(brc.flow(c)) == ["multi"] and marks(brc.flow(c)) == 0


def test_inline_auth_and_select_give_up(brc, port):
    for i, raw in enumerate((b"AUTH secretpass\r\n", b"SELECT 1\r\n", b"CONFIG SET a b\r\n")):
        c = Conn(brc, port + i * 1000).handshake()
        c.send(raw)
        f = brc.flow(c)
        assert "state" in dirty_reasons(f) and b"secret" not in bytes(f.rq_tok) + bytes(f.rq_key)


def test_d2_auth_is_proven_only_by_its_exact_ok(brc, port):
    """D2: a desynchronised +RESET (or anything but +OK) paired with AUTH never
    authenticates."""
    brc.load_users({"default": READ_ALL})
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("AUTH", "wrong"), b"+RESET\r\n")
    assert user(brc.flow(c)) == (b"default", False)
    assert "reply_shape" in dirty_reasons(brc.flow(c))


def test_a_user_name_brc_cannot_hold_is_never_answered(brc, port):
    key = "longuser:%d" % port
    name = "u" * 65
    brc.load_users({"default": READ_ALL | OPEN, name[:64]: READ_ALL})
    c = filled_conn(brc, port, key)
    c.roundtrip(resp("AUTH", name, "pw"), b"+OK\r\n")
    d = counted_get(brc, c, key)
    assert d["would_hit"] == 0 and d["get_uncacheable_auth"] == 1


@pytest.mark.parametrize("cmd", [("CONFIG", "SET", "requirepass", "x"), ("ACL", "SETUSER", "u", "on"),
                                 ("ACL", "LOAD"), ("CONFIG", "RESETSTAT"),
                                 ("REPLICAOF", "10.0.0.1", "6379"), ("FAILOVER",), ("MODULE", "LOAD", "x")])
def test_commands_that_may_change_who_reads_what_stop_answers_until_reloaded(brc, port, cmd):
    """D3: the toolkit's copy of Redis's users and rights is current only until a
    command that may change them completes; then nothing is answered until the
    toolkit has read them again (brc_server.auth_epoch)."""
    key = "srv:%d" % port
    c, a = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    filled(brc, c, key)
    assert answerable(brc, c, key)
    with Delta(brc) as d:
        a.send(resp(*cmd))
    assert d["server_changes"] == 1 and brc.global_state()["auth_inflight"] == 1
    assert not answerable(brc, c, key)
    epoch = brc.global_state()["auth_epoch"]
    a.reply(b"+OK\r\n")
    assert brc.global_state()["auth_inflight"] == 0 and brc.global_state()["auth_epoch"] == epoch + 1
    d = counted_get(brc, c, key)
    assert d["would_hit"] == 0
    if cmd[0] in ("CONFIG", "ACL"):     # the others also invalidate everything
        assert d["get_uncacheable_server"] == 1
    brc.load_users()                    # the toolkit reads Redis again
    filled(brc, c, key)
    assert answerable(brc, c, key)


@pytest.mark.parametrize("cmd", [("CONFIG", "GET", "timeout"), ("ACL", "WHOAMI"), ("acl", "getuser", "x"),
                                 ("CLIENT", "SETNAME", "n"), ("ACL", "DRYRUN", "u", "GET", "k")])
def test_read_only_subcommands_change_nothing(brc, port, cmd):
    key = "ro:%d" % port
    c = filled_conn(brc, port, key)
    with Delta(brc) as d:
        c.roundtrip(resp(*cmd), b"+OK\r\n")
    assert d["server_changes"] == 0 and brc.flow(c).dirty == 0
    assert answerable(brc, c, key)


def test_a_server_change_on_a_connection_given_up_holds_until_it_closes(brc, port):
    c = Conn(brc, port).handshake()
    c.send(resp("CLIENT", "REPLY", "OFF") + resp("ACL", "SETUSER", "u", "on"))
    assert brc.global_state()["auth_inflight"] == 1
    epoch = brc.global_state()["auth_epoch"]
    c.reply(b"")                        # CLIENT REPLY OFF: Redis answers nothing
    assert brc.global_state()["auth_inflight"] == 1
    c.reset()
    assert brc.global_state()["auth_inflight"] == 0 and brc.global_state()["auth_epoch"] == epoch + 1
    brc.clear_holds()


@pytest.mark.parametrize("cmd,reply,cleared", [
    (("SET", "{k}", "new"), b"+OK\r\n", True),
    (("SET", "{k}", "new", "NX"), b"$-1\r\n", False),          # not applied: the TTL stays
    (("SET", "{k}", "new"), b"-OOM command not allowed\r\n", False),
    (("SET", "{k}", "new", "GET"), b"$1\r\nv\r\n", False),      # options: not followed
    (("SETNX", "{k}", "new"), b":0\r\n", False),
])
def test_a_ttl_record_goes_only_when_redis_applied_a_plain_set(brc, port, cmd, reply, cleared):
    """D6: SET clears BRC's TTL record only when Redis applied it without keeping
    the TTL, in db 0."""
    key = "ttl:%d" % port
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SET", key, "v", "EX", "100"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp(*[a.replace("{k}", key) for a in cmd]), reply)
    assert d["ttl_cleared"] == (1 if cleared else 0)
    d = counted_get(brc, c, key, "new")
    assert (d["fill"], d["fill_refused_ttl"]) == ((1, 0) if cleared else (0, 1))


def test_a_plain_set_in_another_db_keeps_db0s_ttl_record(brc, port):
    key = "ttldb:%d" % port
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("SET", key, "v", "EX", "100"), b"+OK\r\n")
    c.roundtrip(resp("SELECT", "1"), b"+OK\r\n")
    with Delta(brc) as d:
        c.roundtrip(resp("SET", key, "db1"), b"+OK\r\n")
    assert d["ttl_cleared"] == 0
    c.roundtrip(resp("SELECT", "0"), b"+OK\r\n")
    d = counted_get(brc, c, key)
    assert d["fill_refused_ttl"] == 1


@pytest.mark.parametrize("cmd", [("RENAME", "{s}", "{d}"), ("RENAMENX", "{s}", "{d}"), ("COPY", "{s}", "{d}"),
                                 ("MOVE", "{d}", "0")])
def test_renamed_copied_and_moved_keys_may_carry_a_ttl(brc, port, cmd):
    """D6: the destination of RENAME/RENAMENX/COPY (and a MOVEd key) gets its
    source's TTL: it is not cached until a plain SET."""
    src, dst = "src:%d" % port, "dst:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp(*[a.replace("{s}", src).replace("{d}", dst) for a in cmd]), b"+OK\r\n")
    assert d["ttl_marked"] == 1
    with Delta(brc) as d:
        c.roundtrip(resp("GET", dst), bulk("v"))
    assert d["fill_refused_ttl"] == 1 and d["fill"] == 0


def test_entries_are_per_server_address(brc, port):
    """D11: two Redis behind one interface never share an entry."""
    key = "srvaddr:%d" % port
    a = Conn(brc, port).handshake()
    b = Conn(brc, port + 30000, server="10.66.1.3").handshake()
    filled(brc, a, key, "from-a")
    with Delta(brc) as d:
        b.roundtrip(resp("GET", key), bulk("from-b"))
    assert d["would_hit"] == 0 and d["fill"] == 1
    assert brc.cache_get(key) == bulk("from-a") and brc.cache_get(key, server="10.66.1.3") == bulk("from-b")


def test_a_key_whose_hash_is_zero_is_invalidated_where_it_is_looked_up(brc, port):
    """D18: FNV-1a-64 of this key is 0."""
    key = b"\xd5\x6b\xb9\x53\x42\x87\x08\x36"
    h = 0xcbf29ce484222325
    for ch in key:
        h = ((h ^ ch) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    assert h == 0
    c, w = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    filled(brc, c, key)
    w.roundtrip(resp("SET", key, "w"), b"+OK\r\n")
    d = counted_get(brc, c, key, "w")
    assert d["would_hit"] == 0 and d["fill"] == 1


@pytest.mark.parametrize("server_takes_it", [False, True])
def test_data_on_a_syn_gives_the_connection_up(brc, port, server_takes_it):
    """D19: TCP Fast Open data reaches Redis unparsed: everything is invalidated and
    held a while, the connection is given up; whether the server acks the data or
    not, the connection is then tracked as established (and released at its close)."""
    key = "tfo:%d" % port
    other = Conn(brc, port + 30000).handshake()
    filled(brc, other, key)
    c = Conn(brc, port)
    data = resp("SET", key, "x")
    with Delta(brc) as d:
        brc.ingress(ipv4_tcp(c.client, c.server, port, 6379, 1000, 0, "S", data, tcp_options(mss=True)))
    f = brc.flow(c)
    assert "tfo" in dirty_reasons(f) and d["invalidate_global"] == 1
    assert brc.global_state()["hold_until_ns"] > 0 and not answerable(brc, other, key)
    c.cseq = 1001 + len(data) if server_takes_it else 1001
    brc.egress(ipv4_tcp(c.server, c.client, 6379, port, 5000, c.cseq, "SA", b"", tcp_options(mss=True)))
    c.sseq = 5001
    f = brc.flow(c)
    assert f.state == 2 and "tfo" in dirty_reasons(f) and f.gmark   # its later writes: unparsed too
    c.close()
    assert brc.flow(c) is None and brc.global_state()["inflight"] == 0
    brc.clear_holds()


@pytest.mark.parametrize("frame_of", [
    lambda c: ipv6_tcp(c.cport, 6379, resp("SET", "k", "v"), hop_by_hop=True),
    lambda c: ipv4_tcp(c.client, c.server, c.cport, 6379, c.cseq, c.sseq, "PA", resp("SET", "k", "v"),
                       ip_opts=b"\x01\x01\x01\x00"),
    lambda c: ipv4_tcp(c.client, c.server, c.cport, 6379, c.cseq, c.sseq, "PA", resp("SET", "k", "v"),
                       frag=0x2000),
    lambda c: ipv4_tcp(c.client, c.server, c.cport, 6379, c.cseq, c.sseq, "PA", resp("SET", "k", "v"),
                       frag=0x0010),
])
def test_packets_brc_does_not_parse_invalidate_what_they_could_write(brc, port, frame_of):
    """D7: IPv6 with extension headers, IPv4 with options and fragments to the Redis
    port pass unparsed: everything is invalidated and held in flight for a while."""
    key = "unparsed:%d" % port
    c = filled_conn(brc, port, key)
    with Delta(brc) as d:
        brc.ingress(frame_of(c))
    assert d["invalidate_unparsed"] == 1
    d = counted_get(brc, c, key)
    assert d["would_hit"] == 0 and d["fill_refused_inflight"] == 1


def test_ipv6_traffic_to_other_ports_changes_nothing(brc, port):
    key = "v6other:%d" % port
    c = filled_conn(brc, port, key)
    with Delta(brc) as d:
        brc.ingress(ipv6_tcp(c.cport, 22, b"ssh", hop_by_hop=True))
        brc.ingress(ipv6_tcp(c.cport, 22, b"ssh"))
    assert d["invalidate_unparsed"] == 0 and answerable(brc, c, key)


def test_a_verify_mismatch_evicts_invalidates_and_gives_up(brc, port):
    """D19: a would-be answer that differs from Redis's reply means BRC's model was
    wrong: the entry goes, everything is invalidated, the connection is given up."""
    key = "mm:%d" % port
    c, o = Conn(brc, port).handshake(), Conn(brc, port + 30000).handshake()
    filled(brc, c, key)
    ver = brc.global_state()["ver"]
    d = counted_get(brc, c, key, "other")
    assert d["mismatch"] == 1 and d["mismatch_evicted"] == 1 and brc.cache_get(key) is None
    assert brc.global_state()["ver"] == ver + 1 and "mismatch" in dirty_reasons(brc.flow(c))
    assert brc.flow(o).dirty == 0


def test_mode_off_tracks_and_fills_nothing(brc, port):
    """D19: writes go unseen while off, so nothing read then may fill later."""
    key = "off:%d" % port
    c = Conn(brc, port).handshake()
    c.send(resp("GET", key))
    brc.configure(mode="off")
    with Delta(brc) as d:
        c.reply(bulk("v"))
    brc.configure()
    assert d["fill"] == 0 and brc.cache_get(key) is None


def test_pending_and_marks_stay_right_with_two_cpus(brc, port):
    """D14: ingress and egress of one connection on two CPUs at once: sent is
    written only at ingress and replied only at egress, marks by compare-and-swap.
    Each reply runs as soon as its command has passed (as on the wire), while the
    next commands are being parsed on the other CPU."""
    import os
    import threading
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("needs two CPUs")
    c = Conn(brc, port).handshake()
    key = "twocpu:%d" % port
    cmd, rep = resp("SET", key, "v"), b"+OK\r\n"
    n = 4000
    frames_in, frames_out = [], []
    for _ in range(n):
        frames_in.append(c.c2s("PA", cmd))
        c.cseq = (c.cseq + len(cmd)) & 0xFFFFFFFF
        frames_out.append(c.s2c("PA", rep))
        c.sseq = (c.sseq + len(rep)) & 0xFFFFFFFF
    done_in = [0]
    cpus = sorted(os.sched_getaffinity(0))[:2]

    def ingress():
        os.sched_setaffinity(0, {cpus[0]})
        for fr in frames_in:
            brc_testlib.prog_test_run(brc.build.programs["ingress"], fr)
            done_in[0] += 1

    def egress():
        os.sched_setaffinity(0, {cpus[1]})
        for i, fr in enumerate(frames_out):
            while done_in[0] <= i:
                pass
            brc_testlib.prog_test_run(brc.build.programs["egress"], fr)

    threads = [threading.Thread(target=ingress), threading.Thread(target=egress)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    f = brc.flow(c)
    assert (f.sent, f.replied, f.dirty) == (n, n, 0)
    assert marks(f) == 0 and brc.global_state()["inflight"] == 0


def test_a_key_longer_than_the_maximum_is_oversize_even_when_its_tail_is_skipped(brc, port):
    """The parser skips a long argument's bytes past its chunk without lexing them: a
    key over BRC_KEY_MAX must still count its real length (else it is tracked, filled
    and answered as its own first 64 bytes, another key)."""
    short = ("long:%d:" % port).ljust(CONTRACT.constants["BRC_KEY_MAX"], "k")
    long_ = short + "x" * 40
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp("GET", long_), bulk("long-value"))
    assert d["oversize_key"] == 1 and d["fill"] == 0
    assert brc.cache_get(short) is None
    with Delta(brc) as d:
        c.roundtrip(resp("GET", short), bulk("short-value"))
    assert d["would_hit"] == 0 and d["fill"] == 1
