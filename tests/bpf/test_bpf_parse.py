"""Packet-level parsing: what passes untouched, RESP split at every byte, case,
pipelining, inline commands, malformed input, sequence gaps. Each case runs
crafted segments through the loaded programs and asserts counters and flow state."""
import pytest

from brc_testlib import Conn, Delta, bulk, ipv4_tcp, ipv6_tcp, resp, tcp_options, pending

GET_SET = resp("SET", "split:k", "value") + resp("GET", "split:k")


def test_unusual_packets_pass_untouched_and_are_counted(brc, port):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        brc.ingress(ipv6_tcp(port, 6379, resp("GET", "x"), hop_by_hop=True))
        brc.ingress(ipv4_tcp(c.client, c.server, port, 6379, c.cseq, c.sseq, "PA", resp("GET", "x"),
                             ip_opts=b"\x01\x01\x01\x00"))
        brc.ingress(ipv4_tcp(c.client, c.server, port, 6379, c.cseq, c.sseq, "PA", resp("GET", "x"),
                             frag=0x2000))            # MF set
        brc.ingress(ipv4_tcp(c.client, c.server, port, 6380, c.cseq, c.sseq, "PA", resp("GET", "x")))
    assert d["pkt_ipv6"] == 1 and d["pkt_ip_options"] == 1 and d["pkt_fragment"] == 1
    assert d["pkt_ingress"] == 0 and d["req_get"] == 0


def test_mode_off_does_nothing(brc, port):
    brc.configure(mode="off")
    with Delta(brc) as d:
        Conn(brc, port).handshake().send(resp("GET", "x"))
    assert d.nonzero() == {}


def test_untracked_connection_is_never_parsed_but_invalidates(brc, port):
    """A connection that existed before attach cannot be followed: any of its
    segments may carry a write, so each invalidates everything and holds
    everything in flight for a lease."""
    key = "untr:%d" % port
    t = Conn(brc, port + 30000).handshake()
    t.roundtrip(resp("GET", key), bulk("v"))
    c = Conn(brc, port)          # no handshake: existed before attach
    with Delta(brc) as d:
        c.send(resp("SET", key, "w"))
        c.reply(b"+OK\r\n")
    assert d["segments_untracked"] == 2 and d["req_set"] == 0
    assert d["invalidate_untracked"] == 2
    with Delta(brc) as d:
        t.roundtrip(resp("GET", key), bulk("w"))
    assert d["would_hit"] == 0 and d["fill_refused_inflight"] == 1


@pytest.mark.parametrize("timestamps", [True, False])
def test_request_split_at_every_byte(brc, port, timestamps):
    for cut in range(1, len(GET_SET)):
        c = Conn(brc, port * 1000 % 60000 + cut, timestamps=timestamps).handshake()
        with Delta(brc) as d:
            c.send(GET_SET, cuts=[cut])
        assert d["req_set"] == 1 and d["req_get"] == 1, (cut, d.nonzero())
        assert d["parse_error_request"] == 0
        f = brc.flow(c)
        assert pending(f) == 2 and f.dirty == 0, cut
        c.reply(b"+OK\r\n" + bulk("value"))
        assert pending(brc.flow(c)) == 0
        c.reset()


def test_request_one_byte_per_segment(brc, port):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(GET_SET * 2, cuts=range(1, len(GET_SET) * 2))
    assert d["req_set"] == 2 and d["req_get"] == 2 and pending(brc.flow(c)) == 4
    with Delta(brc) as d:
        rep = (b"+OK\r\n" + bulk("value")) * 2
        c.reply(rep, cuts=range(1, len(rep)))
    assert d["replies"] == 4 and pending(brc.flow(c)) == 0 and brc.flow(c).dirty == 0


def test_reply_split_at_every_byte_fills_exactly(brc, port):
    key = "rsplit:%d" % port
    rep = bulk("hello world")
    for cut in range(1, len(rep)):
        c = Conn(brc, 40000 + cut + port % 100 * 20).handshake()
        c.send(resp("SET", key, "hello world"))
        c.reply(b"+OK\r\n")
        with Delta(brc) as d:
            c.send(resp("GET", key))
            c.reply(rep, cuts=[cut])
        assert d["fill"] == 1, (cut, d.nonzero())
        assert brc.cache_get(key) == rep
        with Delta(brc) as d:
            c.send(resp("GET", key))
            c.reply(rep, cuts=[cut, cut + 1])
        assert d["would_hit"] == 1 and d["mismatch"] == 0, (cut, d.nonzero())
        c.reset()


@pytest.mark.parametrize("name", [b"GET", b"get", b"Get", b"gEt"])
def test_command_names_any_case(brc, port, name):
    key = "case:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp(name, key), bulk("v"))
        c.roundtrip(resp(name, key), bulk("v"))
    assert d["req_get"] == 2 and d["fill"] == 1 and d["would_hit"] == 1
    with Delta(brc) as d:
        c.roundtrip(resp(name.replace(b"G", b"S").replace(b"g", b"s"), key, "w"), b"+OK\r\n")
    assert d["req_set"] == 1 and d["invalidate_key"] == 1


def test_pipelined_batch(brc, port):
    key = "pipe:%d" % port
    c = Conn(brc, port).handshake()
    batch = b"".join(resp("GET", key) for _ in range(16))
    with Delta(brc) as d:
        c.send(batch)
        assert pending(brc.flow(c)) == 16
        c.reply(bulk("v") * 16)
    # only the first GET went with nothing pending: the only one tracked
    assert d["req_get"] == 16 and d["get_uncacheable_pending"] == 15 and d["fill"] == 1
    assert pending(brc.flow(c)) == 0 and brc.flow(c).dirty == 0
    assert sum(brc.latency().get("get", {}).values()) >= 16


def test_deep_pipeline_with_values(brc, port):
    c = Conn(brc, port).handshake()
    batch = b"".join(resp("SET", "deep:%d:%d" % (port, i), "x" * 100) for i in range(100))
    with Delta(brc) as d:
        c.send(batch)
        c.reply(b"+OK\r\n" * 100)
    assert d["req_set"] == 100 and d["replies"] == 100 and pending(brc.flow(c)) == 0
    assert brc.flow(c).dirty == 0


def test_arguments_nobody_reads_are_skipped_exactly(brc, port):
    """Values, MGET's keys and HSET's fields are jumped over unlexed, within a chunk
    or across chunks and segments: bytes in them that look like RESP never reach the
    lexers, every command and reply is still counted, and the keys around them are
    still invalidated and filled exactly."""
    looks_like_resp = (b"\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n" * 4)
    c = Conn(brc, port).handshake()
    cmds, replies = [], []
    for n in range(0, 70):
        v = looks_like_resp[:n]
        cmds += [resp("SET", "skip:%d:%d" % (port, n), v), resp("MGET", v, "skip:%d:0" % port),
                 resp("HSET", "skip:%d:h" % port, v, v)]
        replies += [b"+OK\r\n", b"*2\r\n" + bulk(v) + bulk(b""), b":0\r\n"]
    data, back = b"".join(cmds), b"".join(replies)
    with Delta(brc) as d:
        c.send(data, cuts=range(97, len(data), 97))
        c.reply(back, cuts=range(89, len(back), 89))
    assert d["req_set"] == 70 and d["replies"] == 210, d
    assert d["invalidate_key"] == 140, d       # each SET's key and the HSET's, nothing else
    assert pending(brc.flow(c)) == 0 and brc.flow(c).dirty == 0
    key, val = "skip:%d:after" % port, looks_like_resp
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk(val))
        c.roundtrip(resp("GET", key), bulk(val))
    assert d["fill"] == 1 and d["would_hit"] == 1, d


def test_large_value_spans_segments_and_is_skipped(brc, port):
    key = "big:%d" % port
    val = "z" * 5000
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(resp("SET", key, val), cuts=range(1400, 5100, 1400))
        c.reply(b"+OK\r\n")
        c.send(resp("GET", key))
        c.reply(bulk(val), cuts=range(1400, 5100, 1400))
    assert d["req_set"] == 1 and d["oversize_value"] == 1 and d["fill"] == 0
    assert pending(brc.flow(c)) == 0 and brc.flow(c).dirty == 0


def test_inline_commands(brc, port):
    key = "inline:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(b"PING\r\n", b"+PONG\r\n")
        c.roundtrip(b"get  %s\r\n" % key.encode(), bulk("v"))
        c.roundtrip(b"GET %s\n" % key.encode(), bulk("v"))
        c.roundtrip(b"SET %s w\r\n" % key.encode(), b"+OK\r\n")
    assert d["req_inline"] == 4 and d["req_get"] == 2 and d["fill"] == 1 and d["would_hit"] == 1
    assert d["invalidate_key"] == 1 and pending(brc.flow(c)) == 0


def test_nested_array_replies(brc, port):
    c = Conn(brc, port).handshake()
    nested = b"*3\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n$-1\r\n*0\r\n"
    with Delta(brc) as d:
        c.send(resp("XRANGE", "s", "-", "+") + resp("MGET", "a", "b"))
        c.reply(nested + b"*2\r\n$1\r\nx\r\n$-1\r\n", cuts=range(1, 40))
    assert d["replies"] == 2 and pending(brc.flow(c)) == 0 and brc.flow(c).dirty == 0


@pytest.mark.parametrize("junk", [
    b"*2\r\n$3\r\nGET\r\nxx\r\n",              # '$' expected
    b"*2\r\n$3\r\nGETX\r\n",                   # bulk longer than declared
    b"*99999999999\r\n",                       # absurd array length
    b"*1\r\n$99999999999\r\n",                 # absurd bulk length
    b'SET "a b" c\r\n',                        # quoted inline
])
def test_malformed_requests_make_the_flow_dirty_and_hold_a_global_mark(brc, port, junk):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.send(junk)
    reason = "dirty_inline" if junk.startswith(b"SET") else "dirty_parser"
    assert d["parse_error_request"] == 1 and d[reason] == 1
    assert brc.global_state()["inflight"] >= 1
    key = "afterjunk:%d" % port
    other = Conn(brc, port + 30000).handshake()
    with Delta(brc) as d:
        other.roundtrip(resp("GET", key), bulk("v"))
    assert d["fill_refused_inflight"] == 1 and d["fill"] == 0
    with Delta(brc) as d:
        c.reset()
    assert d["rst_pending"] == 1      # what it sent may still run: held a while
    brc.clear_holds()
    with Delta(brc) as d:
        other.roundtrip(resp("GET", key), bulk("v"))
    assert d["fill"] == 1


def test_malformed_reply(brc, port):
    c = Conn(brc, port).handshake()
    c.send(resp("GET", "x"))
    with Delta(brc) as d:
        c.reply(b"%1\r\n")          # RESP3 map: not followed
    assert d["parse_error_reply"] == 1 and d["dirty_parser"] == 1


def test_sequence_gap_and_retransmission(brc, port):
    c = Conn(brc, port).handshake()
    cmd = resp("GET", "gap")
    with Delta(brc) as d:
        c.send(cmd)
        brc.ingress(c.c2s("PA", cmd, seq=c.cseq - len(cmd)))       # retransmission
    assert d["segments_retransmitted"] == 1 and d["req_get"] == 1


# --- reordering: bytes after a hole are held (brc_ooo) and parsed once it fills --------

OOO_HELD = 256      # BRC_FF_OOO_HELD


def _held(brc, c):
    return bool(brc.flow(c).flags & OOO_HELD)


def test_reordered_segments_are_parsed_in_order(brc, port):
    """B overtakes A: B is held, A fills the hole, then both are parsed in order
    (SET before GET): the GET is not tracked as a fill of the old value."""
    c = Conn(brc, port).handshake()
    a, b = resp("SET", "ooo:k", "v2"), resp("GET", "ooo:k")
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", b, seq=c.cseq + len(a)))
    assert d["ooo_held"] == 1 and d["req_get"] == 0 and d["dirty_gap"] == 0
    assert _held(brc, c) and not brc.flow(c).dirty
    with Delta(brc) as d:
        c.send(a)
    c.cseq += len(b)
    assert d["req_set"] == 1 and d["req_get"] == 1 and d["ooo_resumed"] == 1, d.nonzero()
    f = brc.flow(c)
    assert pending(f) == 2 and not f.dirty and not _held(brc, c)
    assert f.cli_next == c.cseq
    # the connection goes on being followed: replies pair, the next GET fills
    c.reply(b"+OK\r\n" + bulk("v2"))
    assert pending(brc.flow(c)) == 0
    with Delta(brc) as d:
        c.roundtrip(resp("GET", "ooo:k2"), bulk("x"))
    assert d["req_get"] == 1 and d["dirty_gap"] == 0


def test_held_bytes_resume_where_the_filling_segment_ends(brc, port):
    """A filling segment that overlaps the held range: Redis's kernel keeps the
    filling bytes and trims the queued ones; so does the parser."""
    c = Conn(brc, port).handshake()
    a, b, x = resp("GET", "ovl:a"), resp("GET", "ovl:b"), resp("GET", "ovl:c")
    start = c.cseq
    brc.ingress(c.c2s("PA", b + x, seq=start + len(a)))
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", a + b, seq=start))    # covers the first held command
    assert d["req_get"] == 3 and d["ooo_resumed"] == 1, d.nonzero()
    assert pending(brc.flow(c)) == 3 and not _held(brc, c)
    assert brc.flow(c).cli_next == start + len(a + b + x)


def test_held_bytes_covered_by_the_filling_segment_are_dropped(brc, port):
    c = Conn(brc, port).handshake()
    a, b = resp("GET", "cov:a"), resp("GET", "cov:b")
    brc.ingress(c.c2s("PA", b, seq=c.cseq + len(a)))
    with Delta(brc) as d:
        c.send(a + b)
    assert d["req_get"] == 2 and d["ooo_resumed"] == 0
    assert pending(brc.flow(c)) == 2 and not _held(brc, c)


def test_held_range_grows_at_its_end_and_ignores_resends(brc, port):
    c = Conn(brc, port).handshake()
    cmds = [resp("GET", "grow:%d" % i) for i in range(4)]
    start = c.cseq
    at = [start + sum(len(x) for x in cmds[:i]) for i in range(len(cmds) + 1)]
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", cmds[1], seq=at[1]))
        brc.ingress(c.c2s("PA", cmds[2], seq=at[2]))      # contiguous: appended
        brc.ingress(c.c2s("PA", cmds[1], seq=at[1]))      # resend of held bytes
    assert d["ooo_held"] == 2 and d["ooo_resent"] == 1 and d["dirty_gap"] == 0
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", cmds[0], seq=at[0]))
    assert d["req_get"] == 3 and d["ooo_resumed"] == 1
    assert brc.flow(c).cli_next == at[3] and not brc.flow(c).dirty


def test_held_range_grows_at_its_start(brc, port):
    """Two segments overtaken: the later one is held first, the earlier one goes
    in front of it, the first fills the hole."""
    c = Conn(brc, port).handshake()
    cmds = [resp("SET", "pre:k", "v%d" % i) if i % 2 == 0 else resp("GET", "pre:k") for i in range(3)]
    at = [c.cseq + sum(len(x) for x in cmds[:i]) for i in range(len(cmds) + 1)]
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", cmds[2], seq=at[2]))
        brc.ingress(c.c2s("PA", cmds[1], seq=at[1]))      # just before the held range
    assert d["ooo_held"] == 2 and d["dirty_gap"] == 0 and d["req_set"] == 0
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", cmds[0], seq=at[0]))
    assert d["req_set"] == 2 and d["req_get"] == 1 and d["ooo_resumed"] == 1
    f = brc.flow(c)
    assert f.cli_next == at[3] and not f.dirty and pending(f) == 3


@pytest.mark.parametrize("case", ["second_range", "other_overlap", "too_far"])
def test_what_cannot_be_held_gives_the_connection_up(brc, port, case):
    c = Conn(brc, port).handshake()
    a, b = resp("GET", "no:a"), resp("GET", "no:b")
    start = c.cseq
    with Delta(brc) as d:
        if case == "too_far":       # ends past BRC_OOO_MAX bytes from the hole
            brc.ingress(c.c2s("PA", resp("SET", "no:big", "x" * 300), seq=start + 4000))
        else:
            brc.ingress(c.c2s("PA", b, seq=start + len(a)))
            if case == "second_range":
                brc.ingress(c.c2s("PA", b, seq=start + len(a + b) + 5))
            else:   # same start, more bytes: Linux would replace what it queued
                brc.ingress(c.c2s("PA", b + a, seq=start + len(a)))
    assert d["dirty_gap"] == 1 and brc.flow(c).dirty, d.nonzero()
    with Delta(brc) as d:
        c.send(a)
    assert d["req_get"] == 0 and not _held(brc, c)


def test_partial_overlap_parses_only_new_bytes(brc, port):
    c = Conn(brc, port).handshake()
    a, b = resp("GET", "ov1"), resp("GET", "ov2")
    c.send(a[:10])
    with Delta(brc) as d:
        brc.ingress(c.c2s("PA", a + b, seq=c.cseq - 10))
    assert d["req_get"] == 2 and pending(brc.flow(c)) == 2


def test_non_redis_port_ignored(brc, port):
    c = Conn(brc, port, sport=6380).handshake()
    with Delta(brc) as d:
        c.send(resp("GET", "x"))
    assert d.nonzero() == {}


def test_ip_options_on_a_tracked_flow_pass_and_are_counted(brc, port):
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        brc.ingress(ipv4_tcp(c.client, c.server, port, 6379, c.cseq, c.sseq, "PA",
                             resp("GET", "x"), opts=tcp_options(), ip_opts=b"\x94\x04\x00\x00"))
    assert d["pkt_ip_options"] == 1 and d["req_get"] == 0
