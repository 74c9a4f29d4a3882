"""bpf/tcp_reply.h on crafted requests: the reply to the client and the pure ACK
to the server, checked field by field and with an independent checksum, for a
CHECKSUM_NONE-style request (complete checksum -> full recompute) and a
CHECKSUM_PARTIAL-style one (pseudo-header sum -> pseudo-header sum of the new
length). BPF_PROG_TEST_RUN skbs are always CHECKSUM_NONE in the kernel, so the
kernel probe (brc_csum_is_partial) must say "not PARTIAL" for every one of them,
whatever the check field holds; the builders' PARTIAL output is reached by
overriding the probe's answer. Real PARTIAL skbs (veth with tx offload on) are
detected in test_serve_netns.py and tests/serve."""
import ctypes

import pytest

from packets import (ACK, RST, CLI_IP, CLI_MAC, CLI_PORT, PSH, SRV_IP, SRV_MAC, SRV_PORT, Pkt,
                     linux_ts_opts, opt_nop, opt_sack, opt_ts, pseudo_sum, tcp_packet)

GET = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
REPLY_MAX = 1536
E_LEN = -2


@pytest.fixture(scope="module")
def h(harness):
    return harness("harness_reply.c")


def set_reply(h, data):
    t = h["rp_buf"]
    leaf = t.Leaf()
    leaf.len = len(data)
    ctypes.memmove(ctypes.addressof(leaf.data), data, len(data))
    t[ctypes.c_int(0)] = leaf


def set_ctl(h, seq=0, ack=0, tsval=0, window=0, srv_seq=0, srv_ack=0):
    t = h["rp_ctl"]
    leaf = t.Leaf()
    leaf.f.seq, leaf.f.ack, leaf.f.tsval, leaf.f.window = seq, ack, tsval, window
    leaf.srv_seq, leaf.srv_ack = srv_seq, srv_ack
    t[ctypes.c_int(0)] = leaf


def request(csum="full", tsval=0x11223344, tsecr=0x99, options=None, seq=0xFFFFFFF0, ack=0x80000010,
            payload=GET):
    opts = linux_ts_opts(tsval, tsecr) if options is None else options
    return tcp_packet(seq, ack, ACK | PSH, payload, options=opts, csum=csum, window=1234)


def build(h, prog, frame, as_partial=None):
    """Run @prog on @frame; the builders treat it as PARTIAL or not as told
    (None: as the kernel probe says). Returns (ret, probe said PARTIAL, frame out)."""
    t = h["rp_ctl"]
    leaf = t[ctypes.c_int(0)]
    leaf.partial_as = 0 if as_partial is None else (2 if as_partial else 1)
    t[ctypes.c_int(0)] = leaf
    rv, out = h.run(prog, frame)
    assert rv == 0
    o = h.get0("rp_out")
    return o.ret, o.partial, out


def check_tcp_csum(p, partial):
    if partial:
        assert p.tcp_csum_is_pseudo, "PARTIAL skb needs the pseudo-header sum"
        assert p.check == pseudo_sum(p.saddr, p.daddr, len(p.seg))
    else:
        assert p.tcp_csum_ok, "full TCP checksum wrong"


@pytest.mark.parametrize("csum", ["full", "partial"])
@pytest.mark.parametrize("length", [1, 3, 11, 13, 512, 513, 1030, REPLY_MAX])
def test_reply(h, csum, length):
    data = bytes((i * 7 + 3) & 0xFF for i in range(length))
    set_reply(h, data)
    set_ctl(h, seq=0xFFFFFFFA, ack=0x00000008, tsval=0x80000001, window=0xABCD)
    req = request(csum)
    partial = csum == "partial"
    ret, detected, out = build(h, "h_reply", req, as_partial=partial)
    assert ret == 0
    assert detected == 0, "a BPF_PROG_TEST_RUN skb is CHECKSUM_NONE"
    p = Pkt(out)
    assert (p.dmac, p.smac) == (CLI_MAC, SRV_MAC)
    assert (p.saddr, p.daddr, p.sport, p.dport) == (SRV_IP, CLI_IP, SRV_PORT, CLI_PORT)
    assert (p.seq, p.ack, p.flags, p.window, p.urg) == (0xFFFFFFFA, 8, ACK | PSH, 0xABCD, 0)
    assert p.ts == (0x80000001, 0x11223344)
    assert p.payload == data
    assert p.tot_len == 20 + p.thl + length and len(out) == 14 + p.tot_len
    assert (p.ttl, p.frag, p.ip_id) == (64, 0x4000, 0)
    assert p.ip_csum_ok
    check_tcp_csum(p, partial)


def test_reply_too_long_refused(h):
    set_reply(h, b"x" * 8)
    t = h["rp_buf"]
    leaf = t[ctypes.c_int(0)]
    leaf.len = REPLY_MAX + 1
    t[ctypes.c_int(0)] = leaf
    ret, _, out = build(h, "h_reply", request())
    assert ret == E_LEN


def test_reply_options_only_ts(h):
    """SACK blocks or anything else of the client's must not travel back."""
    opts = opt_nop() + opt_nop() + opt_ts(5, 6) + opt_nop() + opt_nop() + opt_sack((1, 2), (3, 4))
    set_reply(h, b"+OK\r\n")
    set_ctl(h, seq=1, ack=2, tsval=77, window=9)
    ret, _, out = build(h, "h_reply", request(options=opts))
    p = Pkt(out)
    assert ret == 0 and p.thl == 20 + len(opts)
    assert [k for k, _ in p.options] == [1, 1, 8] + [1] * (len(opts) - 12)
    assert p.ts == (77, 5) and p.tcp_csum_ok


def test_reply_without_timestamps(h):
    set_reply(h, b"+OK\r\n")
    set_ctl(h, seq=1, ack=2, tsval=77, window=9)
    ret, _, out = build(h, "h_reply", request(options=b""))
    p = Pkt(out)
    assert ret == 0 and p.thl == 20 and p.ts is None and p.tcp_csum_ok


@pytest.mark.parametrize("csum", ["full", "partial"])
def test_retransmitted_get_gets_identical_bytes(h, csum):
    """The same stored reply and flow facts give the same payload at the same
    seq/ack for a retransmission (only the TS option differs: TSecr echoes the
    retransmission's TSval)."""
    data = b"$5\r\nhello\r\n"
    set_reply(h, data)
    set_ctl(h, seq=0x7FFFFFFE, ack=0x80000005, tsval=500, window=100)
    _, _, first = build(h, "h_reply", request(csum, tsval=1000), as_partial=csum == "partial")
    _, _, again = build(h, "h_reply", request(csum, tsval=1200), as_partial=csum == "partial")
    a, b = Pkt(first), Pkt(again)
    assert (a.payload, a.seq, a.ack) == (b.payload, b.seq, b.ack) == (data, 0x7FFFFFFE, 0x80000005)
    assert a.ts == (500, 1000) and b.ts == (500, 1200)
    # byte-identical apart from TSecr and the TCP checksum
    diff = [i for i in range(len(first)) if first[i] != again[i]]
    ts_ecr = 14 + 20 + 22 + 6
    assert all(i in range(ts_ecr, ts_ecr + 4) or i in (14 + 20 + 16, 14 + 20 + 17) for i in diff)


@pytest.mark.parametrize("csum", ["full", "partial"])
def test_pure_ack(h, csum):
    set_ctl(h, srv_seq=0x80000000, srv_ack=0xFFFFFFFF)
    req = request(csum, payload=GET)
    partial = csum == "partial"
    ret, detected, out = build(h, "h_pure_ack", req, as_partial=partial)
    assert ret == 0 and detected == 0
    p, q = Pkt(out), Pkt(req)
    assert p.payload == b"" and len(out) == 14 + 20 + p.thl
    assert (p.dmac, p.smac, p.saddr, p.daddr, p.sport, p.dport) == \
        (q.dmac, q.smac, q.saddr, q.daddr, q.sport, q.dport)
    assert (p.seq, p.ack, p.flags, p.window) == (0x80000000, 0xFFFFFFFF, ACK, 1234)
    assert p.ts == q.ts                     # the client's own TSval/TSecr
    assert p.tot_len == 20 + p.thl and p.ip_csum_ok
    check_tcp_csum(p, partial)


def complete_csum_equal_to_pseudo_sum():
    """A request whose complete, valid checksum happens to equal its folded
    pseudo-header sum (about one segment in 65536): the case a field comparison
    takes for PARTIAL. Found by trying window values."""
    for window in range(1, 1 << 16):
        frame = tcp_packet(0xFFFFFFF0, 0x80000010, ACK | PSH, GET,
                           options=linux_ts_opts(0x11223344, 0x99), window=window)
        p = Pkt(frame)
        if p.tcp_csum_ok and p.tcp_csum_is_pseudo:
            return frame
    raise AssertionError("no window value gives such a checksum")


@pytest.mark.parametrize("csum", ["full", "zero", "partial", "full-equal-to-pseudo-sum"])
def test_partial_probe_asks_the_kernel(h, csum):
    """BPF_PROG_TEST_RUN skbs are CHECKSUM_NONE: the probe says so whatever the
    check field holds, and leaves the frame byte-identical."""
    set_ctl(h)
    frame = complete_csum_equal_to_pseudo_sum() if csum.startswith("full-") else request(csum)
    ret, detected, out = build(h, "h_detect", frame)
    assert (ret, detected) == (0, 0)
    assert out == frame


@pytest.mark.parametrize("csum", ["full", "partial"])
@pytest.mark.parametrize("to_client", [True, False], ids=["to-client", "to-server"])
def test_rst(h, csum, to_client):
    """When identical reply bytes are gone: RST|ACK at the peer's exact rcv_nxt."""
    set_ctl(h, seq=0xFFFFFFFF, ack=0x10, srv_seq=0x7FFFFFFF, srv_ack=0x80000000)
    req = request(csum)
    partial = csum == "partial"
    ret, _, out = build(h, "h_rst_client" if to_client else "h_rst_server", req, as_partial=partial)
    assert ret == 0
    p, q = Pkt(out), Pkt(req)
    if to_client:
        assert (p.dmac, p.saddr, p.daddr, p.sport, p.dport) == (q.smac, q.daddr, q.saddr, q.dport, q.sport)
        assert (p.seq, p.ack) == (0xFFFFFFFF, 0x10)
    else:
        assert (p.dmac, p.saddr, p.daddr, p.sport, p.dport) == (q.dmac, q.saddr, q.daddr, q.sport, q.dport)
        assert (p.seq, p.ack) == (0x7FFFFFFF, 0x80000000)
    assert (p.flags, p.window, p.payload, p.ts) == (RST | ACK, 0, b"", None)
    assert all(k == 1 for k, _ in p.options)
    assert p.ip_csum_ok and p.tot_len == 20 + p.thl
    check_tcp_csum(p, partial)
