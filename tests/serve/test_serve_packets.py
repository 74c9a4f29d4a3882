"""Packet-level serve tests through BPF_PROG_TEST_RUN (tests/bpf's harness) on the
lab's build (its own flow keys, 10.66.9.x, never on the wire): the reply's addresses,
seq/ack, TSval/TSecr, window and checksums; translation of later segments both ways;
a retransmitted GET gets identical bytes; the client SYN keeps SACK-permitted (SACK
blocks are translated, tests/serve_blocks/test_sack.py)."""
import contextlib
import socket
import struct
import time

import pytest

from ansible.module_utils.brc_contract import addr_words
from brc_testlib import _csum, ipv4_tcp, prog_test_run, resp, bulk

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
CLI, SRV = "10.66.9.1", "10.66.9.2"
PORT = 6379


@pytest.fixture(scope="module", autouse=True)
def no_hold_left(lab):
    """These tests expect fills and answers, so they start once no hold is left by the
    lab's earlier tests (untracked traffic holds everything for a second after it).
    Their own connections exist only in BPF_PROG_TEST_RUN: nothing they sent reached
    Redis. A reset with writes pending among them leaves BRC holding everything as in
    flight for a minute, rightly for a real client; the lab's later tests would see it,
    so the hold goes with this module."""
    deadline = time.monotonic() + 90
    while lab.brc.held_s() > 0 and time.monotonic() < deadline:
        time.sleep(min(lab.brc.held_s(), 5))
    yield
    lab.brc.clear_hold()


def ts_opts(tsval, tsecr, sack_perm=False):
    return (b"\x04\x02" if sack_perm else b"\x01\x01") + b"\x08\x0a" + struct.pack("!II", tsval, tsecr)


def fields(frame):
    ip = frame[14:34]
    ihl = (ip[0] & 15) * 4
    tcp = frame[14 + ihl:]
    doff = (tcp[12] >> 4) * 4
    tot = struct.unpack("!H", ip[2:4])[0]
    seq, ack = struct.unpack("!II", tcp[4:12])
    out = {"src": socket.inet_ntoa(ip[12:16]), "dst": socket.inet_ntoa(ip[16:20]),
           "sport": struct.unpack("!H", tcp[0:2])[0], "dport": struct.unpack("!H", tcp[2:4])[0],
           "seq": seq, "ack": ack, "flags": tcp[13], "win": struct.unpack("!H", tcp[14:16])[0],
           "opts": bytes(tcp[20:doff]), "payload": bytes(frame[14 + ihl + doff:14 + tot]),
           "ip_ok": _csum(bytes(ip[:ihl])) == 0}
    seg = bytes(frame[14 + ihl:14 + tot])
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    out["tcp_ok"] = _csum(pseudo + seg) == 0
    i = 0
    while i < len(out["opts"]):
        k = out["opts"][i]
        if k == 1:
            i += 1
            continue
        if k == 0 or i + 1 >= len(out["opts"]):
            break
        if k == 8:
            out["tsval"], out["tsecr"] = struct.unpack("!II", out["opts"][i + 2:i + 10])
        i += max(2, out["opts"][i + 1])
    return out


class Peer:
    def __init__(self, lab, cport, cisn, sisn):
        self.lab, self.cport = lab, cport
        self.prog = lab.brc.build.programs
        self.cseq, self.sseq = cisn, sisn
        self.cts, self.sts = 1000, 77000

    def run(self, hook, frame):
        return prog_test_run(self.prog[hook], frame)[:2]

    def c2s(self, flags, payload=b"", seq=None, ack=None, opts=None, window=65535):
        return ipv4_tcp(CLI, SRV, self.cport, PORT, self.cseq if seq is None else seq,
                        self.sseq if ack is None else ack, flags, payload,
                        opts if opts is not None else ts_opts(self.cts, self.sts), window=window)

    def s2c(self, flags, payload=b"", seq=None, ack=None):
        return ipv4_tcp(SRV, CLI, PORT, self.cport, self.sseq if seq is None else seq,
                        self.cseq if ack is None else ack, flags, payload,
                        ts_opts(self.sts, self.cts))


def _conn(lab, cport, cisn, sisn):
    p = Peer(lab, cport, cisn, sisn)
    rv, out = p.run("ingress", ipv4_tcp(CLI, SRV, cport, PORT, cisn, 0, "S", b"",
                                        ts_opts(p.cts, 0, sack_perm=True)))
    assert rv == TC_ACT_OK
    f = fields(out)
    assert f["opts"][:2] == b"\x04\x02" and f["tcp_ok"], "SACK-permitted kept, checksum kept"
    p.cseq = cisn + 1
    rv, _ = p.run("egress", ipv4_tcp(SRV, CLI, PORT, cport, sisn, p.cseq, "SA", b"",
                                     ts_opts(p.sts, p.cts)))
    assert rv == TC_ACT_OK
    p.sseq = sisn + 1
    assert p.run("ingress", p.c2s("A"))[0] == TC_ACT_OK
    return p


@contextlib.contextmanager
def _connection(lab, cport, cisn, sisn):
    """_conn() for a with-block: the client's RST releases the flow (and any mark it
    holds) after it, whatever happened."""
    p = _conn(lab, cport, cisn, sisn)
    try:
        yield p
    finally:
        p.run("ingress", p.c2s("R"))


def test_reply_fields_translation_and_resend(lab):
    for n, (cisn, sisn) in enumerate(((1000, 5000), (0xFFFFFF00, 0x7FFFFFF0),
                                      (0x80000010, 0xFFFFFFF0))):
        lab.serve()
        with _connection(lab, 41000 + n, cisn, sisn) as p:
            _one_conversation(lab, p, n)


def _get_latency_samples(lab):
    return sum(v for k, v in lab.brc.counters().items() if k.startswith("lat.get."))


def redis_answers(p, get, val):
    """@get, just passed to Redis, is answered by it: the reply @val passes untouched
    and the client acks it. Returns the reply's frame as it left."""
    p.cseq = (p.cseq + len(get)) & 0xFFFFFFFF
    p.sts += 1
    rv, out = p.run("egress", p.s2c("PA", val))
    assert rv == TC_ACT_OK
    p.sseq = (p.sseq + len(val)) & 0xFFFFFFFF
    p.cts += 1
    assert p.run("ingress", p.c2s("A"))[0] == TC_ACT_OK
    return out


def miss_and_fill(p, get, val):
    """A miss: passed untouched to Redis, whose reply fills the cache; the
    client acks it."""
    rv, out = p.run("ingress", p.c2s("PA", get))
    assert rv == TC_ACT_OK and out[:len(p.c2s("PA", get))] == p.c2s("PA", get)
    redis_answers(p, get, val)


def _one_conversation(lab, p, n):
    """Miss and fill, hit, resend, translation both ways, stale duplicate dropped."""
    key = "brcsi:pkt:%d" % n
    get = resp("GET", key)
    val = bulk("kernel-value-%d" % n)
    miss_and_fill(p, get, val)
    # the hit: the request skb comes back as the reply
    p.cts += 1
    req = p.c2s("PA", get)
    before = _get_latency_samples(lab)
    rv, out = p.run("ingress", req)
    assert rv == TC_ACT_REDIRECT
    assert _get_latency_samples(lab) == before + 1, "a served GET is a GET latency sample"
    f = fields(out)
    assert (f["src"], f["dst"], f["sport"], f["dport"]) == (SRV, CLI, PORT, p.cport)
    assert f["seq"] == p.sseq and f["ack"] == (p.cseq + len(get)) & 0xFFFFFFFF
    assert f["tsval"] == p.sts and f["tsecr"] == p.cts
    assert f["win"] == 65535 and f["flags"] & 0x10
    assert f["payload"] == val and f["ip_ok"] and f["tcp_ok"]
    # the client retransmits the GET (the reply was lost): identical bytes
    rv, again = p.run("ingress", req)
    assert rv == TC_ACT_REDIRECT and again == out
    assert _get_latency_samples(lab) == before + 1, "a resend is not a new request"
    consumed, injected = len(get), len(val)
    p.cseq = (p.cseq + consumed) & 0xFFFFFFFF
    cli_view_srv = (p.sseq + injected) & 0xFFFFFFFF   # client space
    # later client segment: seq minus the consumed GET, ack minus the reply
    ping = resp("PING")
    p.cts += 1
    rv, out = p.run("ingress", p.c2s("PA", ping, ack=cli_view_srv))
    f = fields(out)
    assert rv == TC_ACT_OK
    assert f["seq"] == (p.cseq - consumed) & 0xFFFFFFFF and f["ack"] == p.sseq
    assert f["payload"] == ping and f["tcp_ok"]
    # later server segment: seq plus the reply, ack plus the GET
    p.sts += 1
    pong = b"+PONG\r\n"
    srv_ack = (p.cseq - consumed + len(ping)) & 0xFFFFFFFF
    rv, out = p.run("egress", p.s2c("PA", pong, ack=srv_ack))
    f = fields(out)
    assert rv == TC_ACT_OK
    assert f["seq"] == cli_view_srv and f["ack"] == (p.cseq + len(ping)) & 0xFFFFFFFF
    assert f["payload"] == pong and f["tcp_ok"]
    # after the client acked the reply, a stale duplicate GET is dropped
    rv, _ = p.run("ingress", req)
    assert rv == TC_ACT_SHOT
    p.cseq = (p.cseq + len(ping)) & 0xFFFFFFFF


def test_mode_off_a_new_connection_on_a_served_tuple_passes_untouched(lab):
    """A client reuses the port of a served connection that closed (its entry is kept to
    translate the connection's last packets) after serve was switched off: the new
    handshake must pass untouched. The old offsets made the SYN-ACK's ack wrong and the
    connection was reset (the rollout's probe saw it while stepping down to off)."""
    lab.serve(verify_sample=0)
    with _connection(lab, 42300, 7000, 17000) as p:
        _one_conversation(lab, p, 7)        # answered in the kernel: offsets on the flow
    try:
        lab.brc.configure("off")
        q = Peer(lab, 42300, 90000, 190000)
        syn = ipv4_tcp(CLI, SRV, q.cport, PORT, 90000, 0, "S", b"", ts_opts(q.cts, 0, sack_perm=True))
        rv, out = q.run("ingress", syn)
        assert rv == TC_ACT_OK and out[:len(syn)] == syn
        synack = ipv4_tcp(SRV, CLI, PORT, q.cport, 190000, 90001, "SA", b"", ts_opts(q.sts, q.cts))
        rv, out = q.run("egress", synack)
        assert rv == TC_ACT_OK and out[:len(synack)] == synack, "the new handshake passes untouched"
    finally:
        lab.serve(verify_sample=0)


def test_verify_sample_passes_would_hits_to_redis(lab):
    """verify_sample=1: every would-be hit still goes to Redis and is compared."""
    lab.serve(verify_sample=1)
    try:
        with _connection(lab, 41100, 0x7FFFFFF0, 0x12345678) as p:
            key = "brcsi:pkt:verify"
            get, val = resp("GET", key), bulk("verified-by-redis")
            before = lab.counters()
            for _ in range(2):                 # a fill, then a would-be hit: both reach Redis
                p.cts += 1
                miss_and_fill(p, get, val)
            d = lab.delta(lab.counters(), before)
            assert d.get("fill") == 1 and d.get("serve_verify_sampled") == 1
            assert d.get("would_hit") == 1 and not d.get("hit") and not d.get("mismatch")
    finally:
        lab.serve()


def test_nothing_is_answered_while_bytes_after_a_hole_are_held(lab):
    """A GET that overtook the one before it is passed and held (brc_ooo); the GET
    that fills the hole is passed too, though its key is cached (answering it would
    shift the sequence space of the bytes already passed); both are parsed in order,
    and once their replies are through the connection is answered again."""
    lab.serve(verify_sample=0)
    with _connection(lab, 42100, 3000, 9000) as p:
        get = resp("GET", "brcsi:ooo")
        val = bulk("ooo-value")
        miss_and_fill(p, get, val)
        before = lab.brc.counters()
        later = p.c2s("PA", get, seq=(p.cseq + len(get)) & 0xFFFFFFFF)
        rv, out = p.run("ingress", later)
        assert rv == TC_ACT_OK and out[:len(later)] == later
        rv, out = p.run("ingress", p.c2s("PA", get))
        assert rv == TC_ACT_OK, "a cached GET is not answered while bytes after it are held"
        d = lab.delta(lab.brc.counters(), before)
        assert d.get("ooo_held") == 1 and d.get("ooo_resumed") == 1 and d.get("req_get") == 2, d
        assert d.get("hit", 0) == 0 and d.get("dirty_gap", 0) == 0, d
        p.cseq = (p.cseq + 2 * len(get)) & 0xFFFFFFFF
        p.sts += 1
        assert p.run("egress", p.s2c("PA", val + val))[0] == TC_ACT_OK
        p.sseq = (p.sseq + 2 * len(val)) & 0xFFFFFFFF
        p.cts += 1
        assert p.run("ingress", p.c2s("A"))[0] == TC_ACT_OK
        p.cts += 1
        rv, out = p.run("ingress", p.c2s("PA", get))
        assert rv == TC_ACT_REDIRECT and fields(out)["payload"] == val


def _flows(lab):
    return lab.brc.build.bpf.get_table(b"brc_flows")


def _flow_key(table, cport):
    k = table.Key()
    k.cli_addr[:] = addr_words(CLI)
    k.srv_addr[:] = addr_words(SRV)
    k.cli_port, k.srv_port = cport, PORT
    return k


def _set_busy(lab, cport, since_ns):
    t = _flows(lab)
    k = _flow_key(t, cport)
    f = t[k]
    f.in_busy = since_ns
    t[k] = f


def test_a_segment_beside_another_cpu_is_dropped_not_the_connection(lab):
    """A client segment that arrives while another CPU parses the connection (a
    retransmission timer's send beside the application's): serve mode drops it and
    the client sends it again, so the connection is kept (giving it up held a global
    mark: no fill for anyone while it lived). Also when that CPU has held it for 50 ms:
    a guest CPU its host stopped keeps its lock that long (CI gave a connection up at
    1 ms). A lock older than any CPU holds one was never released: it is taken over
    and the connection given up, and its segments still pass, translated (dropping
    them all stalled it)."""
    lab.serve(verify_sample=0)
    with _connection(lab, 42200, 4000, 11000) as p:
        try:
            get = resp("GET", "brcsi:busy")
            val = bulk("busy-value")
            miss_and_fill(p, get, val)
            before = lab.brc.counters()
            # a lock another CPU holds now: dated ahead, so that the time this test's own
            # map reads take cannot age it past BRC_BUSY_STALE_NS on a busy machine
            _set_busy(lab, p.cport, time.monotonic_ns() + 10 ** 9)
            p.cts += 1
            rv, _ = p.run("ingress", p.c2s("PA", get))
            assert rv == TC_ACT_SHOT
            d = lab.delta(lab.brc.counters(), before)
            assert d.get("serve_busy_dropped") == 1 and not d.get("dirty_concurrent"), d
            assert _flows(lab)[_flow_key(_flows(lab), p.cport)].dirty == 0
            _set_busy(lab, p.cport, 0)        # the other CPU is done: the resend is answered
            rv, out = p.run("ingress", p.c2s("PA", get))
            assert rv == TC_ACT_REDIRECT and fields(out)["payload"] == val
            p.cseq = (p.cseq + len(get)) & 0xFFFFFFFF
            before = lab.brc.counters()
            _set_busy(lab, p.cport, time.monotonic_ns() - 50 * 10 ** 6)   # a CPU stopped 50 ms
            p.cts += 1
            ping = resp("PING")
            rv, _ = p.run("ingress", p.c2s("PA", ping))
            assert rv == TC_ACT_SHOT
            d = lab.delta(lab.brc.counters(), before)
            assert d.get("serve_busy_dropped") == 1 and not d.get("dirty_concurrent"), d
            before = lab.brc.counters()
            _set_busy(lab, p.cport, time.monotonic_ns() - 5 * 10 ** 9)    # never released
            rv, out = p.run("ingress", p.c2s("PA", ping))
            assert rv == TC_ACT_OK and fields(out)["payload"] == ping
            p.cseq = (p.cseq + len(ping)) & 0xFFFFFFFF      # the closing RST's sequence
            d = lab.delta(lab.brc.counters(), before)
            assert d.get("dirty_stale_busy") == 1 and not d.get("serve_busy_dropped"), d
            assert not d.get("dirty_concurrent"), d
            assert _flows(lab)[_flow_key(_flows(lab), p.cport)].in_busy == 0
        finally:
            _set_busy(lab, p.cport, 0)


def _mss_opt(mss):
    return b"\x02\x04" + struct.pack("!H", mss)


def _handshake(lab, cport, cisn, sisn, cli_opts, srv_opts):
    p = Peer(lab, cport, cisn, sisn)
    syn = ipv4_tcp(CLI, SRV, cport, PORT, cisn, 0, "S", b"", cli_opts + ts_opts(p.cts, 0, sack_perm=True))
    assert p.run("ingress", syn)[0] == TC_ACT_OK
    p.cseq = cisn + 1
    synack = ipv4_tcp(SRV, CLI, PORT, cport, sisn, p.cseq, "SA", b"", srv_opts + ts_opts(p.sts, p.cts))
    assert p.run("egress", synack)[0] == TC_ACT_OK
    p.sseq = sisn + 1
    assert p.run("ingress", p.c2s("A"))[0] == TC_ACT_OK
    return p


@pytest.mark.parametrize("cli_mss,srv_mss", [(1460, 1400), (1400, 1460)])
def test_an_answer_fits_one_segment_of_the_smaller_mss(lab, cli_mss, srv_mss):
    """An answer is one segment carrying the request's options, so its payload fits the
    smaller MSS the two SYNs announced less those options (12 bytes of NOP,NOP,TS here):
    a value whose reply takes exactly that is answered, one byte more is passed to Redis
    (counted serve_over_mss) and Redis's own reply stays what the client gets."""
    lab.serve()
    lab.brc.clear_hold()    # an earlier test's reset with writes pending (see no_hold_left)
    cport, cisn, sisn = 41600 + (cli_mss > srv_mss), 3000, 9000
    limit = min(cli_mss, srv_mss) - len(ts_opts(0, 0))
    p = _handshake(lab, cport, cisn, sisn, _mss_opt(cli_mss), _mss_opt(srv_mss))
    try:
        for extra in (1, 0):    # one byte over first: nothing answered yet, nothing translated
            size = limit + extra
            val = bulk("m" * (size - len(b"$\r\n\r\n") - len(str(size))))
            assert len(val) == size
            get = resp("GET", "brcsi:mss:%d:%d" % (cli_mss, extra))
            miss_and_fill(p, get, val)
            before = lab.brc.counters().get("serve_over_mss", 0)
            p.cts += 1
            rv, out = p.run("ingress", p.c2s("PA", get))
            over = lab.brc.counters().get("serve_over_mss", 0) - before
            if extra:
                assert rv == TC_ACT_OK and over == 1, size
                # to Redis, whose reply the client gets
                assert fields(redis_answers(p, get, val))["payload"] == val
            else:
                f = fields(out)
                assert rv == TC_ACT_REDIRECT and over == 0, size
                assert f["payload"] == val and f["tcp_ok"] and f["ip_ok"]
    finally:
        p.run("ingress", p.c2s("R"))


def test_an_answer_fits_the_clients_window(lab):
    """A client whose receive window (raw window << its shift, 7 here) is smaller than the
    answer would drop it yet take the ack of its GET, and nobody would send the answer
    again: such a GET is passed to Redis (serve_refused_tcp); with the window open it
    is answered."""
    lab.serve()
    lab.brc.clear_hold()    # an earlier test's reset with writes pending (see no_hold_left)
    wscale = b"\x01\x03\x03\x07"    # NOP, window scale 7
    p = _handshake(lab, 41700, 7000, 11000, _mss_opt(1460) + wscale, _mss_opt(1460) + wscale)
    val = bulk("w" * 1290)              # 1300 bytes: 10 << 7 = 1280 is short, 11 << 7 is not
    get = resp("GET", "brcsi:win")
    try:
        miss_and_fill(p, get, val)
        before = lab.brc.counters().get("serve_refused_tcp", 0)
        p.cts += 1
        rv, _ = p.run("ingress", p.c2s("PA", get, window=10))
        assert rv == TC_ACT_OK and lab.brc.counters().get("serve_refused_tcp", 0) == before + 1
        redis_answers(p, get, val)
        p.cts += 1
        rv, out = p.run("ingress", p.c2s("PA", get, window=11))
        assert rv == TC_ACT_REDIRECT and fields(out)["payload"] == val
    finally:
        p.run("ingress", p.c2s("R"))


def _counts(lab, *names):
    c = lab.brc.counters()
    return [c.get(n, 0) for n in names]


def test_a_batch_of_cached_gets_is_answered_as_one_reply(lab):
    """Pipelined GETs alone in a segment, all cached, nothing pending: one answer with
    every value in order (each GET a hit); the client's retransmission of the segment
    gets the identical bytes; the next segment is translated by the whole batch."""
    lab.serve()
    lab.brc.clear_hold()    # an earlier test's reset with writes pending (see no_hold_left)
    p = _handshake(lab, 41800, 100, 200, _mss_opt(1460), _mss_opt(1460))
    keys = ["brcsi:batch:%d" % i for i in range(5)]
    vals = [bulk("v%d" % i * (50 * i + 1)) for i in range(5)]
    try:
        for k, v in zip(keys, vals):
            miss_and_fill(p, resp("GET", k), v)
        batch = b"".join(resp("GET", k) for k in keys)
        hits, batches = _counts(lab, "hit", "serve_batches")
        p.cts += 1
        req = p.c2s("PA", batch)
        rv, out = p.run("ingress", req)
        f = fields(out)
        assert rv == TC_ACT_REDIRECT and f["payload"] == b"".join(vals) and f["tcp_ok"]
        assert f["seq"] == p.sseq and f["ack"] == (p.cseq + len(batch)) & 0xFFFFFFFF
        assert _counts(lab, "hit", "serve_batches") == [hits + 5, batches + 1]
        rv, again = p.run("ingress", req)
        assert rv == TC_ACT_REDIRECT and again == out, "a resend is byte-identical"
        reply = len(f["payload"])
        ping = resp("PING")
        p.cts += 1
        rv, out = p.run("ingress", p.c2s("PA", ping, seq=(p.cseq + len(batch)) & 0xFFFFFFFF,
                                         ack=(p.sseq + reply) & 0xFFFFFFFF))
        f = fields(out)
        assert rv == TC_ACT_OK and f["seq"] == p.cseq and f["ack"] == p.sseq and f["payload"] == ping
    finally:
        p.run("ingress", p.c2s("R", seq=(p.cseq + len(batch) + len(ping)) & 0xFFFFFFFF))


@pytest.mark.parametrize("case", ["miss", "write", "split", "over_mss", "one"])
def test_a_batch_goes_whole_to_redis_unless_every_get_can_be_answered(lab, case):
    """One miss, a write inside, a GET cut at the segment's end, a reply over the MSS:
    the whole segment goes to Redis untouched (no partial answers); a single GET with
    nothing after it is no batch either."""
    lab.serve()
    lab.brc.clear_hold()
    cport = 41810 + ["miss", "write", "split", "over_mss", "one"].index(case)
    p = _handshake(lab, cport, 1000, 2000, _mss_opt(1460), _mss_opt(1460 if case != "over_mss" else 600))
    keys = ["brcsi:whole:%s:%d" % (case, i) for i in range(3)]
    try:
        for k in keys:
            miss_and_fill(p, resp("GET", k), bulk(k * (10 if case == "over_mss" else 1)))
        parts = [resp("GET", k) for k in keys]
        if case == "miss":
            parts.insert(1, resp("GET", "brcsi:whole:never-set"))
        elif case == "write":
            parts.insert(1, resp("SET", "brcsi:whole:other", "x"))
        elif case == "split":
            parts[-1] = parts[-1][:-3]
        elif case == "one":
            parts = parts[:1] + [b"*1\r\n$4\r\nPI"]
        seg = b"".join(parts)
        hits, batches = _counts(lab, "hit", "serve_batches")
        p.cts += 1
        frame = p.c2s("PA", seg)
        rv, out = p.run("ingress", frame)
        assert rv == TC_ACT_OK and out[:len(frame)] == frame
        assert _counts(lab, "hit", "serve_batches") == [hits, batches]
        p.cseq = (p.cseq + len(seg)) & 0xFFFFFFFF
    finally:
        p.run("ingress", p.c2s("R"))


@pytest.mark.parametrize("proto", [2, 3])
def test_mget_of_cached_keys_and_nils_is_answered_as_one_array(lab, proto):
    """MGET with every key cached (a cached nil included: $-1 in RESP2, _ in RESP3),
    alone or beside GETs in the segment, for a user Redis lets MGET: one array reply;
    one key not cached: the whole segment goes to Redis."""
    lab.serve()
    lab.brc.clear_hold()
    p = _handshake(lab, 41830 + proto, 5000, 6000, _mss_opt(1460), _mss_opt(1460))
    keys = ["brcsi:mget:%d:%d" % (proto, i) for i in range(3)]
    vals = [bulk("m%d" % i * (i + 3)) for i in range(2)] + [b"$-1\r\n"]   # the last: a missing key
    nil = b"_\r\n" if proto == 3 else b"$-1\r\n"
    try:
        if proto == 3:
            hello = resp("HELLO", "3")
            p.cts += 1
            assert p.run("ingress", p.c2s("PA", hello))[0] == TC_ACT_OK
            p.cseq = (p.cseq + len(hello)) & 0xFFFFFFFF
            reply = b"%1\r\n$5\r\nproto\r\n:3\r\n"
            p.sts += 1
            assert p.run("egress", p.s2c("PA", reply))[0] == TC_ACT_OK
            p.sseq = (p.sseq + len(reply)) & 0xFFFFFFFF
            p.cts += 1
            assert p.run("ingress", p.c2s("A"))[0] == TC_ACT_OK
            vals[2] = b"_\r\n"                  # what Redis itself sends a RESP3 client: not cached
        for k, v in zip(keys, vals):
            miss_and_fill(p, resp("GET", k), v)
        if proto == 3:
            # RESP3's nil is never cached: fill the missing key's nil over a RESP2 connection
            q = _handshake(lab, 41840, 15000, 16000, _mss_opt(1460), _mss_opt(1460))
            miss_and_fill(q, resp("GET", keys[2]), b"$-1\r\n")
            q.run("ingress", q.c2s("R"))
        hits, batches, mgets = _counts(lab, "hit", "serve_batches", "serve_mgets")
        seg = resp("MGET", *keys) + resp("GET", keys[0])
        p.cts += 1
        rv, out = p.run("ingress", p.c2s("PA", seg))
        f = fields(out)
        want = b"*3\r\n" + vals[0] + vals[1] + nil + vals[0]
        assert rv == TC_ACT_REDIRECT and f["payload"] == want and f["tcp_ok"], f["payload"]
        assert _counts(lab, "hit", "serve_batches", "serve_mgets") == [hits + 1, batches + 1, mgets + 1]
    finally:
        p.run("ingress", p.c2s("R"))
    # one key not cached: to Redis, untouched
    q = _handshake(lab, 41845 + proto, 25000, 26000, _mss_opt(1460), _mss_opt(1460))
    try:
        seg = resp("MGET", keys[0], "brcsi:mget:never-set")
        q.cts += 1
        frame = q.c2s("PA", seg)
        rv, out = q.run("ingress", frame)
        assert rv == TC_ACT_OK and out[:len(frame)] == frame
    finally:
        q.run("ingress", q.c2s("R"))


@pytest.mark.parametrize("mgets", [8, 12])
def test_many_small_mgets_stay_within_the_tail_call_budget(lab, mgets):
    """Every key and every MGET header is one tail-called step: a segment of one-key
    MGETs is answered up to the step budget (8: 16 steps) and beyond it goes to Redis
    untouched (12), its parser left passes enough: never a failed tail call, which
    would give the connection up or drop the segment for good."""
    lab.serve()
    lab.brc.clear_hold()
    p = _handshake(lab, 41850 + mgets, 35000, 36000, _mss_opt(1460), _mss_opt(1460))
    key = "brcsi:steps:%d" % mgets
    val = bulk("s" * 10)
    try:
        miss_and_fill(p, resp("GET", key), val)
        seg = resp("MGET", key) * mgets
        hits, failed = _counts(lab, "serve_mgets", "tailcall_failed")
        p.cts += 1
        frame = p.c2s("PA", seg)
        rv, out = p.run("ingress", frame)
        if mgets == 8:
            assert rv == TC_ACT_REDIRECT and fields(out)["payload"] == (b"*1\r\n" + val) * mgets
            assert _counts(lab, "serve_mgets", "tailcall_failed") == [hits + mgets, failed]
        else:
            assert rv == TC_ACT_OK and out[:len(frame)] == frame
            assert _counts(lab, "serve_mgets", "tailcall_failed") == [hits, failed]
    finally:
        p.run("ingress", p.c2s("R"))
