"""The kernel side of the host agent (brc_agent, brc_feed, brc_touched): with an
agent in charge, answers need its fresh heartbeat, Redis's reports reach the key
versions through the feed program, and writes BRC cannot see (or see finish) need
no lease or hold, since the feed reports them. Crafted segments through the loaded
programs: the agent daemon that will drive them is issue 10's, not built yet."""
import time

from brc_testlib import (CONTRACT, Conn, Delta, answerable, bulk, dirty_reasons, filled, ipv6_tcp,
                        marks, resp)

STALE_NS = CONTRACT.constants["BRC_AGENT_STALE_NS"]


def test_answers_need_a_fresh_heartbeat_when_an_agent_is_in_charge(brc, port):
    key = "agent:beat:%d" % port
    c = Conn(brc, port).handshake()
    filled(brc, c, key)
    try:
        brc.set_agent(on=True)
        assert answerable(brc, c, key)
        brc.set_agent(on=True, beat_ns=time.monotonic_ns() - STALE_NS - 1)
        with Delta(brc) as d:
            c.roundtrip(resp("GET", key), bulk("v"))
        assert d["would_hit"] == 0 and d["get_uncacheable_agent"] == 1
        brc.set_agent(on=False, beat_ns=0)        # no agent: the programs alone
        assert answerable(brc, c, key)
    finally:
        brc.set_agent(on=False, beat_ns=0)


def test_the_feed_bumps_the_keys_redis_reported_and_flushes(brc, port):
    key, other = "agent:feed:%d" % port, "agent:other:%d" % port
    c = Conn(brc, port).handshake()
    filled(brc, c, key)
    filled(brc, c, other)
    with Delta(brc) as d:
        assert brc.feed([key]) == 1
    assert d["feed_keys"] == 1
    assert not answerable(brc, c, key) and answerable(brc, c, other)
    filled(brc, c, key)
    with Delta(brc) as d:
        assert brc.feed([], flush=True) == 0
    assert d["feed_flushes"] == 1 and d["invalidate_global"] == 1
    assert not answerable(brc, c, key) and not answerable(brc, c, other)


def test_with_an_agent_untracked_and_unparsed_traffic_needs_no_lease(brc, port):
    """D15: with the feed, connections BRC did not see open (and packets it cannot
    parse) no longer invalidate everything and hold it for a lease."""
    key = "agent:lease:%d" % port
    c = Conn(brc, port).handshake()
    filled(brc, c, key)
    u = Conn(brc, port + 30000)                  # opened before the attach
    try:
        brc.set_agent(on=True)
        with Delta(brc) as d:
            u.send(resp("SET", "agent:elsewhere", "x"))
            brc.ingress(ipv6_tcp(port, 6379, resp("SET", "agent:v6", "x")))
        assert d["segments_untracked"] == 1 and d["invalidate_untracked"] == 0
        assert d["invalidate_unparsed"] == 0 and brc.global_state()["hold_until_ns"] == 0
        assert answerable(brc, c, key)
    finally:
        brc.set_agent(on=False, beat_ns=0)


def test_with_an_agent_a_lost_parser_or_a_reset_writer_holds_nothing(brc, port):
    key = "agent:lost:%d" % port
    c = Conn(brc, port).handshake()
    filled(brc, c, key)
    try:
        brc.set_agent(on=True)
        j = Conn(brc, port + 30000).handshake()
        j.send(b"SET\tk v\r\n")                   # given up, parser stopped
        assert "inline" in dirty_reasons(brc.flow(j)) and marks(brc.flow(j)) == 0
        w = Conn(brc, port + 31000).handshake()
        w.send(resp("SET", key + ":w", "v2"))
        with Delta(brc) as d:
            w.reset()                             # a write unanswered
        assert d["rst_pending"] == 0
        assert brc.global_state()["inflight"] == 0 and brc.global_state()["hold_until_ns"] == 0
        assert answerable(brc, c, key)
        j.reset()
    finally:
        brc.set_agent(on=False, beat_ns=0)
