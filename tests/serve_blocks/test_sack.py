"""SACK blocks through bpf/seqadj.h (brc_seqadj_rewrite_sack, brc_seqadj_sack_buf) and the
pure ACK of tcp_reply.h, driven through the one-flow harness with crafted segments.

SACK-permitted is kept on the SYN, so both ends may send SACK blocks; they name the *other*
direction's stream and must be translated like that direction's ack:

  client blocks (server stream, client space -> server space): minus the bytes BRC injected;
      an edge inside an injected reply clamps to where it was inserted (the server never sent
      those bytes); a block wholly inside one (the D-SACK of a resent reply) is removed;
  server blocks (client stream, server space -> client space): plus the bytes BRC consumed;
      never covering a consumed request (the client would not retransmit it);
  a D-SACK block from before the latest correction point, while an earlier one exists, is
      removed (its offset is no longer known).

Expected numbers come from the rules above, computed here mod 2^32, for ISN pairs on both
sides of 2^31 and across the 2^32 wrap; every output segment's TCP checksum is verified
independently (packets.py).
"""
import struct

import pytest

from packets import (ACK, FIN, GET, GET2, H_CONSUMED, H_INIT, H_PASS, H_REFUSED, H_RESEND, M, PING, PSH,
                     REPLY, REPLY2, SET, SYN, Pkt, linux_syn_opts, linux_ts_opts, opt_nop, opt_sack, opt_ts,
                     tcp_packet)

ISNS = [
    (0x00001000, 0x7FFFF000),
    (0xFFFFF000, 0x80000100),
    (0x7FFFFFF0, 0xFFFFFFE0),   # the server stream wraps 2^32 right where the reply goes
    (0xFFFFFFE0, 0x7FFFFFFF),   # the client stream wraps 2^32 inside the consumed GET
]


def m(x):
    return x & M


@pytest.fixture(scope="module")
def h(harness):
    return harness("harness_seqadj.c")


def sack_opts(tsval, tsecr, blocks):
    """Linux's layout with SACK: NOP NOP TS NOP NOP SACK (blocks at a 4-byte boundary)."""
    return linux_ts_opts(tsval, tsecr) + opt_nop() * 2 + opt_sack(*[(m(a), m(b)) for a, b in blocks])


def blocks_of(p):
    v = p.opt(5)
    if v is None:
        return None
    assert len(v) % 8 == 0
    return [struct.unpack("!II", v[i:i + 8]) for i in range(0, len(v), 8)]


class Flow:
    def __init__(self, h):
        self.h = h
        self.tsc, self.tss = 1000, 50000

    def ingress(self, seq, ack, flags, payload=b"", blocks=(), options=None, consume=0,
                reply_len=0, pure_ack=0):
        self.tsc += 1
        self.h.set0("sa_ctl", consume=consume, reply_len=reply_len, keep_sackperm=1,
                    pure_ack=pure_ack)
        if options is None:
            options = sack_opts(self.tsc, self.tss, blocks) if blocks else \
                linux_ts_opts(self.tsc, self.tss)
        self.frame = tcp_packet(seq, ack, flags, payload, options=options)
        rv, out = self.h.run("h_sa_ingress", self.frame)
        self.out = self.h.get0("sa_out")
        self.raw = out
        return Pkt(out)

    def egress(self, seq, ack, flags, payload=b"", blocks=()):
        self.tss += 1
        options = sack_opts(self.tss, self.tsc, blocks) if blocks else \
            linux_ts_opts(self.tss, self.tsc)
        self.frame = tcp_packet(seq, ack, flags, payload, to_server=False, options=options)
        rv, out = self.h.run("h_sa_egress", self.frame)
        self.out = self.h.get0("sa_out")
        self.raw = out
        return Pkt(out)


def check(f, p, seq, ack, blocks, removed=0):
    """The segment came out with these numbers and blocks, a valid checksum, and every other
    byte as it went in (options apart from the SACK option unchanged, NOP padded)."""
    assert f.out.verdict in (H_PASS, H_REFUSED), f.out.verdict
    assert f.out.sack_removed == removed
    assert (p.seq, p.ack) == (m(seq), m(ack))
    assert blocks_of(p) == ([(m(a), m(b)) for a, b in blocks] if blocks else None)
    assert p.tcp_csum_ok
    before = Pkt(f.frame)
    assert p.thl == before.thl and p.payload == before.payload and p.ts == before.ts
    assert [k for k, _ in p.options if k not in (1, 5)] == [k for k, _ in before.options
                                                            if k not in (1, 5)]


@pytest.mark.parametrize("cisn,sisn", ISNS, ids=["%08x-%08x" % p for p in ISNS])
def test_sack_both_ways(h, cisn, sisn):
    f = Flow(h)
    # the SYN keeps SACK-permitted (kind 4), checksum untouched
    p = f.ingress(cisn, 0, SYN, options=linux_syn_opts(f.tsc))
    assert f.out.verdict == H_INIT and p.opt(4) == b"" and p.raw == f.frame
    f.egress(sisn, m(cisn + 1), SYN | ACK)
    c, s = m(cisn + 1), m(sisn + 1)

    # no offsets yet: blocks pass byte for byte both ways (the cheap path)
    p = f.ingress(c, s, ACK, blocks=[(s + 100, s + 200), (s + 300, s + 310)])
    assert f.out.sack_removed == 0 and f.raw == f.frame
    p = f.egress(s, c, ACK, blocks=[(c + 50, c + 60)])
    assert f.out.sack_removed == 0 and f.raw == f.frame

    f.ingress(c, s, ACK | PSH, PING)
    c = m(c + len(PING))
    f.egress(s, c, ACK | PSH, b"+PONG\r\n")
    s = m(s + 7)

    # GET consumed; the reply occupies [Is, Ie) of the server stream in client space
    g, L, R = c, len(GET), len(REPLY)
    f.ingress(g, s, ACK | PSH, GET, consume=1, reply_len=R)
    assert f.out.verdict == H_CONSUMED
    Is, Ie = s, m(s + R)
    # a pipelined SET (server space: -L) and the server's +OK for it (client space: +R)
    f.ingress(m(g + L), s, ACK | PSH, SET)
    c2 = m(g + L + len(SET))
    f.egress(s, m(g + len(SET)), ACK | PSH, b"+OK\r\n")

    # -- client blocks, server stream: client space -> server space --
    # the client got the +OK but not the reply: [Ie, Ie+5) is the server's [s, s+5)
    p = f.ingress(c2, Is, ACK, blocks=[(Ie, Ie + 5)])
    check(f, p, g + len(SET), s, [(s, s + 5)])
    # an edge inside the injected reply clamps to where it was inserted
    p = f.ingress(c2, Is, ACK, blocks=[(Is + 3, Ie + 5)])
    check(f, p, g + len(SET), s, [(s, s + 5)])
    # three blocks, the middle one removed, order kept
    p = f.ingress(c2, Is, ACK, blocks=[(Ie + 30, Ie + 40), (Is, Ie), (Ie + 10, Ie + 20)])
    check(f, p, g + len(SET), s, [(s + 30, s + 40), (s + 10, s + 20)], removed=1)
    # four blocks (no TS: room for four), all after the reply
    four = [(Ie + 10 * k + 5, Ie + 10 * k + 9) for k in range(4)]
    p = f.ingress(c2, Is, ACK, options=opt_nop() * 2 + opt_sack(*[(m(a), m(b)) for a, b in four]))
    check(f, p, g + len(SET), s, [(a - R, b - R) for a, b in four])
    # a D-SACK below the first correction point: offset 0 there, kept exactly
    p = f.ingress(c2, Is, ACK, blocks=[(s - 7, s)])
    check(f, p, g + len(SET), s, [(s - 7, s)])

    # -- server blocks, client stream: server space -> client space --
    # an ordinary block after the consumed GET: + L
    p = f.egress(m(s + 5), m(g + len(SET)), ACK, blocks=[(g + len(SET) + 10, g + len(SET) + 20)])
    check(f, p, s + R + 5, g, [(g + L + len(SET) + 10, g + L + len(SET) + 20)])
    assert f.out.held == 1          # the reply is not acked yet: the ack is held back
    # a block starting exactly at the GET's place starts after it in client space
    p = f.egress(m(s + 5), g, ACK, blocks=[(g, g + 4)])
    check(f, p, s + R + 5, g, [(g + L, g + L + 4)])
    # a D-SACK across the GET's place keeps only its part before the GET
    p = f.egress(m(s + 5), g, ACK, blocks=[(g - 5, g + 3)])
    check(f, p, s + R + 5, g, [(g - 5, g)])
    # a D-SACK wholly before it: offset 0, exactly
    p = f.egress(m(s + 5), g, ACK, blocks=[(g - 14, g)])
    check(f, p, s + R + 5, g, [(g - 14, g)])

    # -- the GET retransmitted (reply lost): its pure ACK carries translated blocks --
    p = f.ingress(g, Is, ACK | PSH, GET, blocks=[(Ie, Ie + 5)], pure_ack=1)
    assert f.out.verdict == H_RESEND
    assert (p.seq, p.ack, p.flags, p.payload) == (g, s, ACK, b"")
    assert blocks_of(p) == [(s, m(s + 5))] and p.tcp_csum_ok
    p = f.ingress(g, Is, ACK | PSH, GET, blocks=[(Is, Ie), (Ie, Ie + 5)], pure_ack=1)
    assert blocks_of(p) == [(s, m(s + 5))] and p.tcp_csum_ok

    # the D-SACK of a resent reply names only injected bytes: removed, the next moves up,
    # the option shrinks to one block and the freed bytes become NOPs
    p = f.ingress(c2, Ie + 5, ACK, blocks=[(Is, Ie), (Ie + 10, Ie + 20)])
    check(f, p, g + len(SET), s + 5, [(s + 10, s + 20)], removed=1)
    assert p.opt(5) is not None and len(p.optbytes) == len(Pkt(f.frame).optbytes)
    # ...alone: the whole option becomes NOPs
    p = f.ingress(c2, Ie + 5, ACK, blocks=[(Is, Ie)])
    check(f, p, g + len(SET), s + 5, None, removed=1)
    assert set(p.optbytes[12:]) == {1}
    # the client acks the reply and the +OK
    f.ingress(c2, m(Ie + 5), ACK)
    sv = m(s + 5)                   # server's next, server space

    # -- a second GET: offsets stack, older D-SACKs lose their offset --
    g2, L2, R2 = c2, len(GET2), len(REPLY2)
    f.ingress(g2, m(sv + R), ACK | PSH, GET2, consume=1, reply_len=R2)
    assert f.out.verdict == H_CONSUMED
    Is2, Ie2 = m(sv + R), m(sv + R + R2)
    c3 = m(g2 + L2)
    # a D-SACK before the latest injection while an earlier one exists: removed
    p = f.ingress(c3, Ie2, ACK, blocks=[(Is2 - 3, Is2)])
    check(f, p, c3 - L - L2, sv, None, removed=1)
    # an ordinary block after the second reply: - (R + R2)
    p = f.ingress(c3, Is2, ACK, blocks=[(Ie2 + 4, Ie2 + 9)])
    check(f, p, c3 - L - L2, sv, [(sv + 4, sv + 9)])
    # the same block with the SACK option at an odd offset (blocks at odd offsets)
    opts = opt_nop() + opt_sack((Ie2 + 4, Ie2 + 9)) + opt_ts(f.tsc, f.tss) + opt_nop()
    p = f.ingress(c3, Is2, ACK, options=opts)
    assert p.optbytes.index(5) == 1
    check(f, p, c3 - L - L2, sv, [(sv + 4, sv + 9)])
    # server side: gap2 = the second GET's place in server space
    # (the client acked the second reply above: the server's ack at gap2 is c3)
    gap2 = m(g2 - L)
    p = f.egress(sv, gap2, ACK, blocks=[(gap2 - 5, gap2)])
    check(f, p, sv + R + R2, c3, None, removed=1)
    p = f.egress(sv, gap2, ACK, blocks=[(gap2 + 3, gap2 + 8), (gap2 - 9, gap2 - 2)])
    check(f, p, sv + R + R2, c3, [(gap2 + 3 + L + L2, gap2 + 8 + L + L2)], removed=1)

    # -- closing: the client's FIN, then blocks on its last ACKs are still translated --
    f.ingress(c3, Ie2, ACK | FIN)
    assert f.h.get0("sa_state").flags & 8
    p = f.ingress(m(c3 + 1), Ie2, ACK, blocks=[(Ie2 + 4, Ie2 + 9)])
    check(f, p, c3 + 1 - L - L2, sv, [(sv + 4, sv + 9)])


def test_malformed_sack_length_passes_untouched(h):
    """A SACK option whose length is not 2 + 8n is ignored by Linux's receiver; it is left
    as it is (nothing to translate), the rest of the segment translated."""
    f = Flow(h)
    cisn, sisn = 0x10, 0x20
    f.ingress(cisn, 0, SYN, options=linux_syn_opts(f.tsc))
    f.egress(sisn, cisn + 1, SYN | ACK)
    g, s = cisn + 1, sisn + 1
    f.ingress(g, s, ACK | PSH, GET, consume=1, reply_len=len(REPLY))
    bad = bytes([5, 7, 0, 0, 0, 1, 0])       # kind 5, length 7
    p = f.ingress(g + len(GET), s + len(REPLY), ACK, options=linux_ts_opts(f.tsc, f.tss) + bad)
    assert f.out.sack_removed == 0 and p.tcp_csum_ok
    assert p.optbytes == Pkt(f.frame).optbytes
    assert (p.seq, p.ack) == (g, s)
