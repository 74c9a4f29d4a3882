"""bpf/seqadj.h driven through a one-flow harness with crafted segments.

Each scenario runs a whole conversation for ISN pairs on both sides of 2^31 and
across the 2^32 wrap: handshake, a passed command, a consumed GET, pipelined data
behind it, the server's acks held back until the client acks the injected reply,
acks inside the reply clamped, a retransmitted GET classified as a resend, a
second consumption stacking offsets, and refusals when TCP state does not allow
an injection. Expected numbers are computed here, mod 2^32.
"""
import pytest

from packets import (ACK, FIN, GET, GET2, H_CONSUMED, H_INIT, H_PASS, H_REFUSED, H_RESEND, M, PING, PSH,
                     REPLY, REPLY2, SET, SYN, Pkt, linux_syn_opts, linux_ts_opts, opt_nop, opt_ws, tcp_packet)

ISNS = [
    (0x00001000, 0x7FFFF000),   # both below 2^31
    (0xFFFFF000, 0x80000100),   # both at or above 2^31
    (0x7FFFFFF0, 0xFFFFFFE0),   # client crosses 2^31, server wraps 2^32 mid-flow
    (0xFFFFFFE0, 0x7FFFFFFF),   # client wraps 2^32 mid-flow, server crosses 2^31
    (0x80000000, 0x00000001),
]


@pytest.fixture(scope="module")
def h(harness):
    return harness("harness_seqadj.c")


class Flow:
    """Drives the harness; remembers the last verdict/out."""

    def __init__(self, h):
        self.h = h
        self.tsc, self.tss = 1000, 50000

    def ingress(self, seq, ack, flags, payload=b"", consume=0, reply_len=0, options=None):
        self.tsc += 1
        self.h.set0("sa_ctl", consume=consume, reply_len=reply_len)
        frame = tcp_packet(seq, ack, flags, payload,
                           options=linux_ts_opts(self.tsc, self.tss) if options is None else options)
        rv, out = self.h.run("h_sa_ingress", frame)
        self.out = self.h.get0("sa_out")
        return rv, Pkt(out)

    def egress(self, seq, ack, flags, payload=b"", options=None):
        self.tss += 1
        frame = tcp_packet(seq, ack, flags, payload, to_server=False,
                           options=linux_ts_opts(self.tss, self.tsc) if options is None else options)
        rv, out = self.h.run("h_sa_egress", frame)
        self.out = self.h.get0("sa_out")
        return rv, Pkt(out)

    @property
    def state(self):
        return self.h.get0("sa_state")


def m(x):
    return x & M


@pytest.mark.parametrize("cisn,sisn", ISNS, ids=["%08x-%08x" % p for p in ISNS])
def test_conversation(h, cisn, sisn):
    f = Flow(h)
    # handshake: SACK-perm stripped on the SYN, state initialised from both halves
    rv, p = f.ingress(cisn, 0, SYN, options=linux_syn_opts(f.tsc))
    assert f.out.verdict == H_INIT and p.opt(4) is None and p.tcp_csum_ok and p.seq == cisn
    synack_ts = f.tss + 1   # the value egress() will be at
    rv, p = f.egress(sisn, m(cisn + 1), SYN | ACK,
                     options=linux_syn_opts(synack_ts)[:4] + linux_ts_opts(synack_ts, f.tsc) + opt_nop() + opt_ws(7))
    assert f.out.verdict == H_INIT and p.seq == sisn and p.ack == m(cisn + 1)
    st = f.state
    assert (st.cli_nxt, st.srv_nxt, st.srv_max_ack, st.cli_max_ack) == (m(cisn + 1), m(sisn + 1), m(cisn + 1), sisn)
    assert st.srv_tsval == synack_ts
    # the SYN-ACK's unscaled window (502) stored as a later segment would carry it
    # (shift 7 from its WS option)
    assert st.srv_win == 502 >> 7

    c, s = m(cisn + 1), m(sisn + 1)           # next client / server seq, client space
    rv, p = f.ingress(c, s, ACK)
    assert f.out.verdict == H_PASS and (p.seq, p.ack) == (c, s)

    # a passed command and its reply: nothing consumed yet, nothing translated
    rv, p = f.ingress(c, s, ACK | PSH, PING, consume=0)
    assert f.out.verdict == H_PASS and (p.seq, p.ack) == (c, s)
    c = m(c + len(PING))
    rv, p = f.egress(s, c, ACK | PSH, b"+PONG\r\n")
    assert (p.seq, p.ack, f.out.held) == (s, c, 0)
    s = m(s + 7)

    # the GET is consumed: reply at s (client space), acking the GET; pure ACK at c (server space)
    g = c
    rv, p = f.ingress(g, s, ACK | PSH, GET, consume=1, reply_len=len(REPLY))
    assert f.out.verdict == H_CONSUMED
    assert (f.out.reply_seq, f.out.reply_ack) == (s, m(g + len(GET)))
    assert (f.out.pure_ack_seq, f.out.pure_ack_ack) == (g, s)
    L, R = len(GET), len(REPLY)

    # the client pipelines a SET behind it before the reply arrives: server space = -L
    c = m(g + L)
    rv, p = f.ingress(c, s, ACK | PSH, SET)
    assert f.out.verdict == H_PASS and (p.seq, p.ack) == (g, s) and p.tcp_csum_ok
    # the server answers it: its data goes after the injected reply; its ack would
    # cover the GET, but the client has not acked the reply: held back to g
    rv, p = f.egress(s, m(g + len(SET)), ACK | PSH, b"+OK\r\n")
    assert (p.seq, p.ack, f.out.held) == (m(s + R), g, 1) and p.tcp_csum_ok
    # a pure ACK from the server exactly at the GET is held too
    rv, p = f.egress(m(s + 5), g, ACK)
    assert (p.seq, p.ack, f.out.held) == (m(s + R + 5), g, 1)

    # the reply was lost: the client retransmits the GET -> resend, same numbers
    rv, p = f.ingress(g, s, ACK | PSH, GET)
    assert f.out.verdict == H_RESEND
    assert (f.out.reply_seq, f.out.reply_ack, f.out.pure_ack_seq) == (s, m(g + L), g)
    # ...also when collapsed with the SET behind it
    rv, p = f.ingress(g, s, ACK | PSH, GET + SET)
    assert f.out.verdict == H_RESEND

    # an ack inside the injected reply is clamped to where it was inserted
    c2 = m(c + len(SET))
    rv, p = f.ingress(c2, m(s + 3), ACK)
    assert (p.seq, p.ack) == (m(g + len(SET)), s) and p.tcp_csum_ok
    assert f.out.verdict == H_PASS
    # the held state persists until the client acks all of the reply
    rv, p = f.egress(m(s + 5), m(g + len(SET)), ACK)
    assert f.out.held == 1
    # the client acks the reply and the +OK: ack translated by -R
    rv, p = f.ingress(c2, m(s + R + 5), ACK)
    assert (p.seq, p.ack) == (m(g + len(SET)), m(s + 5))
    # now the server's acks go through, shifted by +L
    rv, p = f.egress(m(s + 5), m(g + len(SET)), ACK)
    assert (p.seq, p.ack, f.out.held) == (m(s + R + 5), c2, 0)
    s = m(s + 5)                               # server space from here on: sv
    sv = s

    # a second GET: offsets stack (client seq - L - L2, server seq + R + R2)
    g2 = c2
    rv, p = f.ingress(g2, m(sv + R), ACK | PSH, GET2, consume=1, reply_len=len(REPLY2))
    assert f.out.verdict == H_CONSUMED
    L2, R2 = len(GET2), len(REPLY2)
    assert (f.out.reply_seq, f.out.reply_ack) == (m(sv + R), m(g2 + L2))
    assert (f.out.pure_ack_seq, f.out.pure_ack_ack) == (m(g2 - L), sv)
    st = f.state
    assert (st.cons_before, st.cons_after, st.inj_before, st.inj_after) == (L, L + L2, R, R + R2)
    # the client acks the second reply and sends PING
    c3 = m(g2 + L2)
    rv, p = f.ingress(c3, m(sv + R + R2), ACK | PSH, PING)
    assert (p.seq, p.ack) == (m(c3 - L - L2), sv)
    rv, p = f.egress(sv, m(c3 - L - L2 + len(PING)), ACK | PSH, b"+PONG\r\n")
    assert (p.seq, p.ack, f.out.held) == (m(sv + R + R2), m(c3 + len(PING)), 0)
    # an old retransmission from before the second GET keeps the first offset
    # (its ack, the second GET's server-space position, now covers that GET)
    rv, p = f.egress(m(sv - 5), m(g + len(SET)), ACK | PSH, b"+OK\r\n")
    assert (p.seq, p.ack) == (m(sv - 5 + R), m(c2 + L2))
    rv, p = f.egress(m(sv - 5), m(g + len(SET) - 1), ACK | PSH, b"+OK\r\n")
    assert (p.seq, p.ack) == (m(sv - 5 + R), m(c2 - 1))

    # FIN both ways translated, and closing stops injections
    c4 = m(c3 + len(PING))
    rv, p = f.ingress(c4, m(sv + R + R2 + 7), ACK | FIN)
    assert (p.seq, p.ack) == (m(c4 - L - L2), m(sv + 7))
    assert f.state.flags & 8
    rv, p = f.ingress(m(c4 + 1), m(sv + R + R2 + 7), ACK | PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_REFUSED


@pytest.mark.parametrize("cisn,sisn", ISNS[:2], ids=["%08x-%08x" % p for p in ISNS[:2]])
def test_refusals(h, cisn, sisn):
    """can_inject: in order, everything acked both ways, handshake seen."""
    f = Flow(h)
    f.ingress(cisn, 0, SYN, options=linux_syn_opts(f.tsc))
    # before the SYN-ACK: no injection
    rv, p = f.ingress(m(cisn + 1), 0, PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_REFUSED
    f.ingress(cisn, 0, SYN, options=linux_syn_opts(f.tsc))  # a new SYN starts over
    f.egress(sisn, m(cisn + 1), SYN | ACK)
    c, s = m(cisn + 1), m(sisn + 1)
    # out of order (a gap before it): refused, passed untranslated
    rv, p = f.ingress(m(c + 5), s, ACK | PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_REFUSED and (p.seq, p.ack) == (m(c + 5), s)
    # the server has not acked the client's earlier bytes
    f.ingress(c, s, ACK | PSH, PING)
    c = m(c + len(PING))
    rv, p = f.ingress(c, s, ACK | PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_REFUSED
    # the server sent data the client has not acked
    f.egress(s, m(c + len(GET)), ACK | PSH, b"$-1\r\n")
    rv, p = f.ingress(m(c + len(GET)), s, ACK | PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_REFUSED
    # all acked: accepted
    c = m(c + 2 * len(GET))
    f.egress(m(s + 5), c, ACK)
    rv, p = f.ingress(c, m(s + 5), ACK | PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_CONSUMED
    # the next GET while that reply is unacked (client ack still before it): refused
    rv, p = f.ingress(m(c + len(GET)), m(s + 5), ACK | PSH, GET, consume=1, reply_len=9)
    assert f.out.verdict == H_REFUSED


def test_seq_inside_consumed_request(h):
    """Zero-length segments: a keepalive at snd_una - 1 after the GET was acked
    maps just before the server's rcv_nxt; one at the GET's start maps to it."""
    f = Flow(h)
    cisn, sisn = 0xFFFFFFF0, 0x10
    f.ingress(cisn, 0, SYN, options=linux_syn_opts(f.tsc))
    f.egress(sisn, m(cisn + 1), SYN | ACK)
    g, s = m(cisn + 1), sisn + 1
    f.ingress(g, s, ACK | PSH, GET, consume=1, reply_len=11)
    assert f.out.verdict == H_CONSUMED
    rv, p = f.ingress(m(g + len(GET) - 1), s + 11, ACK)       # keepalive
    assert (p.seq, p.ack) == (m(g - 1), s)
    rv, p = f.ingress(g, s, ACK)                               # zero-length at g
    assert f.out.verdict == H_PASS and p.seq == g
