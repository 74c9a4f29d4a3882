"""RESP3, packet by packet: a connection follows the protocol Redis's answer to
HELLO puts it in (a map for HELLO 3, an array for HELLO 2; an error changes
nothing), the reply lexer follows every RESP3 type, pushes and attributes pair with
no command, and one protocol's nil is never sent to the other."""
import pytest

from brc_testlib import (Conn, Delta, answerable, bulk, dirty_reasons, filled, pending,
                         resp, user)

HELLO3_MAP = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
HELLO2_ARRAY = b"*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:2\r\n"
PROTO_RESP3 = 3


def resp3(brc, port):
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("HELLO", "3"), HELLO3_MAP)
    assert brc.flow(c).rp_proto == PROTO_RESP3 and not dirty_reasons(brc.flow(c))
    return c


def get_replied_after(brc, c, key, frame):
    """GET @key on @c, Redis sending @frame (no reply) before the reply v: the GET stays
    pending through @frame. The counters it all moved (a Delta)."""
    with Delta(brc) as d:
        c.send(resp("GET", key))
        c.reply(frame)
        assert pending(brc.flow(c)) == 1
        c.reply(bulk("v"))
    return d


def test_hello_3_answered_with_a_map_makes_the_connection_resp3_and_it_is_served(brc, port):
    key = "r3:get:%d" % port
    c = resp3(brc, port)
    filled(brc, c, key, "v3")
    assert answerable(brc, c, key, "v3")
    other = Conn(brc, port + 30000).handshake()      # a bulk string is the same bytes in RESP2
    assert answerable(brc, other, key, "v3")


def test_a_failed_hello_changes_nothing_and_hello_2_goes_back(brc, port):
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("HELLO", "3"), b"-NOPROTO sorry, this protocol version is not supported.\r\n")
    assert brc.flow(c).rp_proto != PROTO_RESP3 and not dirty_reasons(brc.flow(c))
    c.roundtrip(resp("HELLO", "3"), HELLO3_MAP)
    c.roundtrip(resp("HELLO", "2"), HELLO2_ARRAY)
    assert brc.flow(c).rp_proto == 2 and not dirty_reasons(brc.flow(c))
    c.roundtrip(resp("HELLO"), HELLO2_ARRAY)          # no version: nothing changes
    assert brc.flow(c).rp_proto == 2 and pending(brc.flow(c)) == 0


def test_reset_goes_back_to_resp2(brc, port):
    c = resp3(brc, port)
    c.roundtrip(resp("RESET"), b"+RESET\r\n")
    assert brc.flow(c).rp_proto == 2 and not dirty_reasons(brc.flow(c))
    c.roundtrip(resp("CONFIG", "GET", "x"), b"_\r\n")     # RESP3 bytes: not RESP2 any more
    assert "parser" in dirty_reasons(brc.flow(c))


def test_hello_3_auth_takes_the_user_on_the_map(brc, port):
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("HELLO", "3", "AUTH", "someone", "pw"), HELLO3_MAP)
    assert user(brc.flow(c)) == (b"someone", True)
    assert brc.flow(c).rp_proto == PROTO_RESP3


@pytest.mark.parametrize("reply", [
    b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",                  # RESP2's array for a RESP3 HELLO
    b"+OK\r\n",
])
def test_hello_answered_in_another_shape_gives_the_connection_up(brc, port, reply):
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("HELLO", "3"), reply)
    assert "reply_shape" in dirty_reasons(brc.flow(c))


@pytest.mark.parametrize("reply", [
    b"_\r\n", b",3.14\r\n", b",inf\r\n", b"#t\r\n", b"(3492890328409238509324850943850943825024385\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n", b"=15\r\ntxt:Some string\r\n",
    b"%2\r\n+first\r\n:1\r\n+second\r\n%1\r\n+x\r\n~2\r\n#f\r\n_\r\n",
    b"~0\r\n", b"%0\r\n", b"*2\r\n%1\r\n$1\r\nk\r\n*0\r\n~1\r\n,1e3\r\n",
])
def test_every_resp3_type_pairs_with_its_command(brc, port, reply):
    """The lexer follows each type (and nested maps and sets): the next GET's reply
    is still the next GET's."""
    key = "r3:types:%d" % port
    c = resp3(brc, port)
    c.roundtrip(resp("CONFIG", "GET", "x"), reply)
    assert pending(brc.flow(c)) == 0 and not dirty_reasons(brc.flow(c)), reply
    filled(brc, c, key)
    assert answerable(brc, c, key)


def test_pushes_between_replies_pair_with_nothing(brc, port):
    key = "r3:push:%d" % port
    c = resp3(brc, port)
    d = get_replied_after(brc, c, key, b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n")
    assert d["resp3_not_replies"] == 1 and d["fill"] == 1 and pending(brc.flow(c)) == 0
    assert not dirty_reasons(brc.flow(c))
    c.reply(b">0\r\n")                                  # an empty push, with nothing pending
    assert not dirty_reasons(brc.flow(c))


def test_an_attribute_is_not_a_reply_and_the_reply_it_describes_fills_nothing(brc, port):
    key = "r3:attr:%d" % port
    c = resp3(brc, port)
    d = get_replied_after(brc, c, key, b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n")
    assert d["fill"] == 0 and pending(brc.flow(c)) == 0 and not dirty_reasons(brc.flow(c))
    # inside an aggregate, an attribute is not one of its elements
    c.roundtrip(resp("CONFIG", "GET", "x"), b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n")
    assert pending(brc.flow(c)) == 0 and not dirty_reasons(brc.flow(c))
    filled(brc, c, key)


@pytest.mark.parametrize("reply", [b"_\r\n", b"%1\r\n+a\r\n+b\r\n", b">1\r\n+x\r\n", b"#t\r\n"])
def test_resp3_bytes_on_a_resp2_connection_lose_it(brc, port, reply):
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("CONFIG", "GET", "x"), reply)
    assert "parser" in dirty_reasons(brc.flow(c))


def test_a_push_inside_an_aggregate_loses_the_connection(brc, port):
    c = resp3(brc, port)
    c.roundtrip(resp("CONFIG", "GET", "x"), b"*1\r\n>1\r\n+x\r\n")
    assert "parser" in dirty_reasons(brc.flow(c))


def test_nil_is_never_sent_across_protocols(brc, port):
    """RESP2's nil ($-1) is not RESP3's (_): a RESP3 connection is never answered a
    RESP2 nil, and its own nil is never cached."""
    key = "r3:nil:%d" % port
    two = Conn(brc, port).handshake()
    two.roundtrip(resp("GET", key), b"$-1\r\n")
    assert brc.cache_get(key) == b"$-1\r\n"
    three = resp3(brc, port + 30000)
    with Delta(brc) as d:
        three.roundtrip(resp("GET", key), b"_\r\n")
    assert d["would_hit"] == 0 and d["answer_nil_resp3"] == 1 and d["mismatch"] == 0
    key2 = key + ":3"
    with Delta(brc) as d:
        three.roundtrip(resp("GET", key2), b"_\r\n")
    assert d["fill"] == 0 and brc.cache_get(key2) is None
    assert not dirty_reasons(brc.flow(three))


def test_hello_3_pipelined_with_a_get_reads_its_reply_as_resp3(brc, port):
    key = "r3:pipe:%d" % port
    c = Conn(brc, port).handshake()
    c.send(resp("HELLO", "3") + resp("GET", key))
    c.reply(HELLO3_MAP + b"_\r\n")
    assert pending(brc.flow(c)) == 0 and not dirty_reasons(brc.flow(c))
    assert brc.flow(c).rp_proto == PROTO_RESP3
