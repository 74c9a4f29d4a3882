"""RESP3 clients through serve mode, black-box against the session's served
Redis: redis-py 8 as installed (it sends HELLO 3 unless told protocol=2) and
`redis-cli -3` get their repeated GETs answered in the kernel with the values Redis
holds (read over loopback in the server namespace, a path BRC never sees), and a
RESP3 connection subscribed to a channel, with pushes arriving between its replies,
never gets a reply that is not its own."""
import subprocess
import threading

import pytest
import redis

from blackbox import Delta, in_netns, truth
from serve_lab import PORT

GETS = 200


def redis_py(lab, **kw):
    """A redis-py client on one connection from the client namespace (made there, it
    stays there)."""
    with in_netns(lab.pair.client):
        r = redis.Redis(host=lab.pair.server_ip, port=PORT, single_connection_client=True,
                        socket_timeout=5, **kw)
        r.ping()
    return r


@pytest.mark.parametrize("protocol", [None, 2], ids=["redis-py-defaults", "protocol-2"])
def test_redis_py_gets_are_answered_in_the_kernel(lab, protocol):
    key = "r3:py:%s" % protocol
    r = redis_py(lab, **({} if protocol is None else {"protocol": protocol}))
    try:
        assert r.connection.protocol == (3 if protocol is None else 2)
        assert r.set(key, "value-%s" % protocol)
        with Delta(lab) as d:
            got = [r.get(key) for _ in range(GETS)]
        with truth(lab) as t:
            held = t.call("GET", key)
        assert got == [held] * GETS
        assert d["hit"] >= 0.9 * GETS, d
        with Delta(lab) as d:
            assert r.get(key + ":missing") is None      # RESP3's nil, from Redis
            assert r.get(key + ":missing") is None
        assert d["mismatch"] == 0
    finally:
        r.close()


def test_redis_cli_3_gets_are_answered_in_the_kernel(lab):
    key = "r3:cli"
    r = redis_py(lab)
    try:
        r.set(key, "from-cli-test")
    finally:
        r.close()
    with Delta(lab) as d:
        out = subprocess.run(["ip", "netns", "exec", lab.pair.client, "redis-cli", "-3", "-h", lab.pair.server_ip,
                              "-p", str(PORT), "-r", str(GETS), "GET", key],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             timeout=60, check=True).stdout.split()
    assert out == ['"from-cli-test"'] * GETS or out == ["from-cli-test"] * GETS, out[:5]
    assert d["hit"] >= 0.9 * GETS, d


def test_a_subscribed_resp3_connection_with_pushes_between_its_replies_never_desyncs(lab):
    """In RESP3 a subscribed connection may send any command; the channel's messages
    arrive as pushes between its replies. BRC gives the connection up (SUBSCRIBE) but
    must keep every reply its own: GETs on it read what Redis holds, none is lost.
    (Pushes on a connection BRC still follows: tests/bpf/test_bpf_resp3.py.)"""
    key, channel = "r3:sub", "r3:chan"
    with in_netns(lab.pair.client):
        sub = redis.Connection(host=lab.pair.server_ip, port=PORT, protocol=3, socket_timeout=5)
        sub.connect()
    pub = redis_py(lab)
    stop = threading.Event()
    # The publisher runs beside the GETs, so pushes land anywhere between replies, but
    # only a few ahead of the reader: redis-py reads each push queued before a reply one
    # recursion level deeper, and a thousand of them (a slow reader on a busy machine)
    # overflowed its stack.
    permits = threading.Semaphore(0)

    def publish():
        n = 0
        while not stop.is_set() and n < 2000:
            if permits.acquire(timeout=0.1):
                pub.publish(channel, "m%d" % n)
                n += 1

    publisher = threading.Thread(target=publish, daemon=True)
    try:
        sub.send_command("SUBSCRIBE", channel)
        assert sub.read_response(push_request=True)[0] == b"subscribe"
        publisher.start()
        with Delta(lab) as d:
            for i in range(100):
                for _ in range(5):
                    permits.release()
                pub.set(key, "v%d" % i)
                sub.send_command("GET", key)
                assert sub.read_response() == b"v%d" % i        # pushes skipped, never taken for it
                sub.send_command("PING")
                assert sub.read_response() in (b"PONG", "PONG", [b"pong", b""])
        # given up at SUBSCRIBE: never answered in the kernel, passed through untouched
        assert d["hit"] == 0 and d["get_uncacheable_dirty"] == 100, d
    finally:
        stop.set()
        publisher.join(10)
        sub.disconnect()
        pub.close()
