"""bpf/tcp_opts.h on crafted segments: walk (SACK blocks found), SACK-permitted -> NOPs, TS rewrite."""
import pytest

from packets import (ACK, SYN, Pkt, linux_syn_opts, linux_ts_opts, opt_mss, opt_nop, opt_sack,
                     opt_sackperm, opt_ts, opt_ws, tcp_packet)

F_MSS, F_WS, F_SACKPERM, F_SACK, F_TS, F_OTHER, F_BAD = 1, 2, 4, 8, 16, 32, 128


@pytest.fixture(scope="module")
def h(harness):
    return harness("harness_opts.c")


def run(h, prog, frame, tsval=0, tsecr=0):
    h.set0("opts_ctl", tsval=tsval, tsecr=tsecr)
    rv, out = h.run(prog, frame)
    assert rv == 0
    return h.get0("opts_out"), out


def test_walk_linux_syn(h):
    out, frame = run(h, "h_opts_parse", tcp_packet(1, 0, SYN, options=linux_syn_opts(0xdeadbeef)))
    o = out.o
    assert out.ret == 0
    assert o.flags == F_MSS | F_WS | F_SACKPERM | F_TS
    assert (o.mss, o.wscale, o.sackperm_off, o.ts_off) == (1460, 7, 24, 26)
    assert (o.tsval, o.tsecr) == (0xdeadbeef, 0)


def test_walk_established_and_unknown(h):
    opts = linux_ts_opts(5, 0xffffffff) + bytes([30, 4, 0, 0])  # + an unknown kind (MPTCP)
    out, _ = run(h, "h_opts_parse", tcp_packet(1, 2, ACK, options=opts))
    assert out.ret == 0
    assert out.o.flags == F_TS | F_OTHER
    assert (out.o.ts_off, out.o.tsval, out.o.tsecr) == (22, 5, 0xffffffff)


@pytest.mark.parametrize("opts", [
    bytes([2, 0, 0, 0]),                    # length 0
    opt_nop() * 3 + bytes([8, 10, 1, 2]),   # TS running past the header
    bytes([8, 9]) + b"\0" * 7 + b"\1" * 3,  # TS with a wrong length
])
def test_walk_malformed(h, opts):
    out, _ = run(h, "h_opts_parse", tcp_packet(1, 2, ACK, options=opts))
    assert out.ret == -1
    assert out.o.flags & F_BAD


@pytest.mark.parametrize("opts", [
    linux_syn_opts(77),                                            # SACK-perm at offset 24
    opt_nop() + opt_sackperm() + opt_nop() + opt_mss(1400) + opt_ts(9, 0) + opt_ws(2),  # offset 21
    opt_mss() + opt_ws(3) + opt_sackperm() + opt_nop() * 3,         # offset 27
])
def test_sackperm_becomes_nops(h, opts):
    frame = tcp_packet(0xfffffff0, 0, SYN, options=opts)
    before = Pkt(frame)
    out, after_raw = run(h, "h_opts_strip", frame)
    after = Pkt(after_raw)
    assert out.ret == 1
    off = out.o.sackperm_off
    assert before.seg[off:off + 2] == b"\x04\x02"
    assert after.seg[off:off + 2] == b"\x01\x01"
    # nothing else changed but the checksum, which is still right
    assert after.seg[:16] + after.seg[18:off] + after.seg[off + 2:] == \
        before.seg[:16] + before.seg[18:off] + before.seg[off + 2:]
    assert after.tcp_csum_ok
    assert after.opt(4) is None
    assert after.opt(2) == before.opt(2) and after.opt(8) == before.opt(8)


def test_no_sackperm_untouched(h):
    frame = tcp_packet(5, 0, SYN, options=opt_mss() + opt_nop() + opt_ws(7))
    out, after = run(h, "h_opts_strip", frame)
    assert out.ret == 0 and after == frame


@pytest.mark.parametrize("lead", [2, 1, 3, 0])   # TS at offsets 22, 21, 23, 20
def test_set_ts(h, lead):
    opts = opt_nop() * lead + opt_ts(0x01020304, 0x05060708)
    frame = tcp_packet(100, 200, ACK, options=opts, payload=b"+OK\r\n")
    out, after_raw = run(h, "h_opts_set_ts", frame, tsval=0xfffffffe, tsecr=0x80000001)
    after = Pkt(after_raw)
    assert out.ret == 0 and out.o.ts_off == 20 + lead
    assert after.ts == (0xfffffffe, 0x80000001)
    assert after.tcp_csum_ok
    assert after.payload == b"+OK\r\n"


@pytest.mark.parametrize("opts,off,n", [
    (linux_ts_opts(1, 2) + opt_nop() * 2 + opt_sack((1, 2), (3, 4)), 34, 2),   # Linux's layout
    (opt_nop() * 2 + opt_sack((1, 2), (3, 4), (5, 6), (7, 8)), 22, 4),           # four blocks
    (opt_nop() + opt_sack((1, 2)) + opt_ts(1, 2), 21, 1),                         # odd offset
    (linux_ts_opts(1, 2) + bytes([5, 7, 0, 0, 0, 1, 0]), 32, 0),                 # length Linux ignores
])
def test_walk_finds_sack_blocks(h, opts, off, n):
    out, _ = run(h, "h_opts_parse", tcp_packet(1, 2, ACK, options=opts))
    assert out.ret == 0 and out.o.flags & F_SACK
    assert out.o.sack_n == n
    if n:
        assert out.o.sack_off == off
