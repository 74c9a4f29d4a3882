"""The kernel side of the host agent (brc_agent, brc_feed, brc_touched): with an
agent in charge, answers need its fresh heartbeat, Redis's reports reach the key
versions through the feed program, traffic BRC cannot follow at all needs no lease
(the feed reports its writes), and fills need Redis's deadline for the key
(brc_expiry). Crafted segments through the loaded programs; tests/agent drives
them with the real agent."""
import contextlib
import time

from brc_testlib import (CONTRACT, Conn, Delta, answerable, counted_get, dirty_reasons, filled,
                        filled_conn, ipv6_tcp, marks, resp)

STALE_NS = CONTRACT.constants["BRC_AGENT_STALE_NS"]


@contextlib.contextmanager
def agent_in_charge(brc):
    """An agent in charge, beating now, through the with-block; the programs alone after it
    (also when the block fails)."""
    try:
        brc.set_agent(on=True)
        yield
    finally:
        brc.set_agent(on=False, beat_ns=0)


def test_answers_need_a_fresh_heartbeat_when_an_agent_is_in_charge(brc, port):
    key = "agent:beat:%d" % port
    c = filled_conn(brc, port, key)
    with agent_in_charge(brc):
        assert answerable(brc, c, key)
        brc.set_agent(on=True, beat_ns=time.monotonic_ns() - STALE_NS - 1)
        d = counted_get(brc, c, key)
        assert d["would_hit"] == 0 and d["get_uncacheable_agent"] == 1
        brc.set_agent(on=False, beat_ns=0)        # no agent: the programs alone
        assert answerable(brc, c, key)


def test_the_feed_bumps_the_keys_redis_reported_and_flushes(brc, port):
    key, other = "agent:feed:%d" % port, "agent:other:%d" % port
    c = filled_conn(brc, port, key)
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
    parse) no longer invalidate everything and hold it for a lease. Who may read what
    has no feed: answers wait for users loaded after Redis ran those bytes (the agent
    proves it, or waits out the auth hold of a packet BRC cannot parse)."""
    key = "agent:lease:%d" % port
    c = filled_conn(brc, port, key)
    u = Conn(brc, port + 30000)                  # opened before the attach
    with agent_in_charge(brc):
        with Delta(brc) as d:
            u.send(resp("SET", "agent:elsewhere", "x"))
            brc.ingress(ipv6_tcp(port, 6379, resp("SET", "agent:v6", "x"), hop_by_hop=True))
        assert d["segments_untracked"] == 1 and d["invalidate_untracked"] == 0
        assert d["invalidate_unparsed"] == 0 and brc.global_state()["hold_until_ns"] == 0
        assert d["auth_unseen"] == 2 and not answerable(brc, c, key)
        brc.load_users()
        assert not answerable(brc, c, key)      # the unparsed packet's auth hold
        brc.clear_holds()
        assert answerable(brc, c, key)


def test_with_an_agent_a_lost_parser_and_a_reset_writer_still_hold(brc, port):
    """Connections BRC tracks do not lean on the feed's lag: a parser lost on a
    connection it saw open keeps a global mark until it closes, and a client RST with
    a write unanswered holds what it could change, as with no agent (answers in
    between would be stale until Redis's report arrives)."""
    key = "agent:lost:%d" % port
    c = filled_conn(brc, port, key)
    try:
        brc.set_agent(on=True)
        j = Conn(brc, port + 30000).handshake()
        j.send(b"SET\tk v\r\n")                   # given up, parser stopped
        assert "inline" in dirty_reasons(brc.flow(j)) and marks(brc.flow(j)) == 1
        assert not answerable(brc, c, key)
        j.reset()
        brc.clear_holds(key)
        filled(brc, c, key)
        w = Conn(brc, port + 31000).handshake()
        w.send(resp("SET", key, "v2"))
        with Delta(brc) as d:
            w.reset()                             # a write unanswered
        assert d["rst_pending"] == 1
        assert not answerable(brc, c, key, "v2")
    finally:
        brc.clear_holds(key)
        brc.set_agent(on=False, beat_ns=0)


NEVER = CONTRACT.constants["BRC_EXPIRY_NEVER"]
MARGIN_NS = CONTRACT.constants["BRC_EXPIRY_MARGIN_NS"]


def test_under_an_agent_a_fill_waits_for_the_keys_expiry_record(brc, port):
    """With an agent in charge a fill needs Redis's deadline for the key, read by the
    agent at the versions the GET saw: without a record the key is asked for
    (brc_expiry_wanted) and not filled; with one it is, and answered."""
    key = "agent:exp:%d" % port
    c = Conn(brc, port).handshake()
    with agent_in_charge(brc):
        d = counted_get(brc, c, key)
        assert d["expiry_wanted"] == 1 and d["fill_refused_expiry"] == 1 and d["fill"] == 0
        assert key.encode() in brc.expiry_wanted()
        brc.set_expiry(key, NEVER)
        d = counted_get(brc, c, key)
        assert d["expiry_wanted"] == 0 and d["fill"] == 1
        assert answerable(brc, c, key)


def test_a_stale_torn_or_foreign_expiry_record_fills_nothing(brc, port):
    """A record from before a write to the key (its version moved on), a copy that is
    not one write, or another key's record recycled under the reader: no fill."""
    key = "agent:exp-bad:%d" % port
    c = Conn(brc, port).handshake()
    with agent_in_charge(brc):
        for bad in ({"stale": True}, {"torn": True}, {"other_key": key + ":x"}):
            brc.set_expiry(key, NEVER, **bad)
            d = counted_get(brc, c, key)
            assert d["fill_refused_expiry"] == 1 and d["fill"] == 0, bad


def test_a_key_with_a_ttl_is_answered_only_until_its_deadline_less_the_margin(brc, port):
    """A TTL seen on the wire marks the key (the programs' own rule) but, under an
    agent, the deadline Redis reports rules: filled and answered before it, not
    within BRC_EXPIRY_MARGIN_NS of it (served GETs never make Redis expire a key)."""
    key = "agent:exp-ttl:%d" % port
    c = Conn(brc, port).handshake()
    with agent_in_charge(brc):
        with Delta(brc) as d:
            c.roundtrip(resp("SET", key, "v", "PX", "200"), b"+OK\r\n")
        assert d["ttl_marked"] == 1
        brc.set_expiry(key, time.monotonic_ns() + MARGIN_NS // 2)
        d = counted_get(brc, c, key)
        assert d["fill_refused_ttl"] == 1 and d["fill"] == 0
        deadline = time.monotonic_ns() + MARGIN_NS + 150000000
        brc.set_expiry(key, deadline)
        d = counted_get(brc, c, key)
        assert d["fill"] == 1
        assert answerable(brc, c, key)
        while time.monotonic_ns() < deadline - MARGIN_NS:
            time.sleep(0.01)
        with Delta(brc) as d:
            c.roundtrip(resp("GET", key), b"$-1\r\n")
        assert d["would_hit"] == 0 and d["answer_near_expiry"] == 1 and d["mismatch"] == 0


def test_entries_filled_by_the_programs_alone_keep_the_ttl_marks_under_an_agent(brc, port):
    """An entry filled with no agent in charge has no deadline: the TTL marks decide."""
    key = "agent:exp-alone:%d" % port
    c = filled_conn(brc, port, key)
    with agent_in_charge(brc):
        assert answerable(brc, c, key)
