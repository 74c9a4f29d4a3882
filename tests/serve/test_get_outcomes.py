"""Why GETs are not answered, on real traffic: the real BRC build serving a real
redis-server (serve_lab, no host agent), a known mix of GETs sent from the client
namespace over raw RESP, then module_utils/brc_outcomes.py's split of the counters'
delta (what brc_stats returns) must put every GET sent on a tracked connection in one
bucket, the expected reasons non-zero, and the Prometheus text must parse and sum to
the same number. GETs of a connection opened while BRC was detached are in no bucket:
they show as unseen segments.

  plain        GETs alone, each waiting for its reply: the first of a key fills, the
               rest are answered in the kernel (served)
  pipelined    PING and two GETs in one send: the GETs had a command pending; three GETs
               alone in one send: answered as one batch (served)
  oversize     a 3000-byte value (over BRC_VAL_MAX, 2048): oversize_value
  one segment  a 1400-byte value (its reply fits a 1500-byte MTU): served; an 1800-byte one:
               cached, but over the connection's MSS (over_mss)
  ttl          a key SET with EX: ttl (no agent)
  RESP3        HELLO 3: followed (answered), a missing key's nil (_) is error_reply
  given up     HELLO 3 + CLIENT TRACKING ON (client-side caching): dirty_tracking, its GETs dirty
  also         GET with two arguments (args), a 100-byte key (oversize_key), SELECT 1 (db)
"""
import importlib.util
import os
import sys
import time

import brc_attach
from checker import RespConnection
from serve_lab import PORT

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FLEET = os.path.join(REPO, "tests", "fleet")
if FLEET not in sys.path:
    sys.path.append(FLEET)
import promtext  # noqa: E402


def _filters():
    path = os.path.join(REPO, "plugins", "filter", "brc_prometheus.py")
    spec = importlib.util.spec_from_file_location("brc_fleet_filters_serve", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Resp(RespConnection):
    """One raw RESP connection from the client namespace (RESP2 or RESP3 replies, raw: a
    status line is its bytes); the checker's connection reads the lines."""

    def __init__(self, lab):
        with brc_attach.in_netns(lab.pair.client):
            RespConnection.__init__(self, lab.pair.server_ip, PORT, timeout=10)

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"$", b"="):
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind in (b"*", b"~", b">", b"%"):
            n = int(rest)
            return [self.reply() for _ in range(max(n, 0) * (2 if kind == b"%" else 1))]
        if kind == b"-":
            return Exception(rest.decode())
        if kind == b"_":
            return None
        return rest

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reply()


def test_every_get_sent_lands_in_one_bucket(lab):
    lab.serve()
    lab.refresh_auth()
    time.sleep(1.5)         # past the lease of any untracked traffic before (BRC_UNTRACKED_LEASE_NS)
    keys = ["why:k%d" % i for i in range(5)]
    setup = Resp(lab)
    for k in keys:
        assert setup.call("SET", k, "v-" + k) == b"OK"
    assert setup.call("SET", "why:big", "x" * 3000) == b"OK"
    assert setup.call("SET", "why:fits", "f" * 1400) == b"OK"
    assert setup.call("SET", "why:seg", "s" * 1800) == b"OK"
    assert setup.call("SET", "why:ttl", "t", "EX", "300") == b"OK"
    setup.close()

    before = lab.counters()
    sent = 0
    c = Resp(lab)
    for k in keys:                                        # plain: first fills, then served
        for _ in range(6):
            assert c.call("GET", k) == b"v-" + k.encode()
            sent += 1
    c.sock.sendall(Resp.encode("PING") + b"".join(Resp.encode("GET", k) for k in keys[:2]))
    assert [c.reply() for _ in range(3)][1:] == [b"v-" + k.encode() for k in keys[:2]]  # pipelined
    sent += 2
    c.sock.sendall(b"".join(Resp.encode("GET", k) for k in keys[:3]))   # GETs alone: one batch
    assert [c.reply() for _ in range(3)] == [b"v-" + k.encode() for k in keys[:3]]
    sent += 3
    for _ in range(2):
        assert c.call("GET", "why:big") == b"x" * 3000   # oversize_value
        assert c.call("GET", "why:ttl") == b"t"          # ttl
        sent += 2
    for _ in range(3):                                   # fills, then served / over_mss
        assert c.call("GET", "why:fits") == b"f" * 1400
        assert c.call("GET", "why:seg") == b"s" * 1800
        sent += 2
    assert isinstance(c.call("GET", "why:k0", "extra"), Exception)   # args
    assert c.call("GET", "why:" + "k" * 100) is None    # oversize_key
    sent += 2
    assert c.call("SELECT", "1") == b"OK"
    assert c.call("GET", "why:k0") is None               # db 1
    sent += 1
    c.close()
    r3 = Resp(lab)                                         # RESP3: followed, answered
    assert isinstance(r3.call("HELLO", "3"), list)
    for _ in range(3):
        assert r3.call("GET", "why:k1") == b"v-why:k1"
        sent += 1
    assert r3.call("GET", "why:missing") is None         # RESP3's nil (_): error_reply, not cached
    sent += 1
    r3.close()
    gone = Resp(lab)                                       # given up: client-side caching
    assert isinstance(gone.call("HELLO", "3"), list)
    assert gone.call("CLIENT", "TRACKING", "ON") == b"OK"
    for _ in range(3):
        assert gone.call("GET", "why:k1") == b"v-why:k1"
        sent += 1
    gone.close()
    time.sleep(0.5)         # their FIN/ACKs through BRC (served flows are translated to the end)

    # a connection opened while BRC was detached: its GETs are unseen
    lab.brc.detach()
    try:
        old = Resp(lab)
    finally:
        lab.brc.attach()
    for _ in range(3):
        assert old.call("GET", "why:k2") == b"v-why:k2"
    old.close()

    delta = lab.delta(lab.counters(), before)
    from ansible.module_utils import brc_outcomes
    b = brc_outcomes.breakdown(delta, lab.brc.contract.counter_docs)
    reasons = dict((r, n) for rs in b["reasons"].values() for r, n in rs.items() if n)
    print("\nGET-OUTCOMES sent=%d %s unseen=%s dirty=%s" % (sent, reasons, b["unseen"], b["dirty"]))
    assert b["total"] == sent, (b, delta)
    assert sum(n for rs in b["reasons"].values() for n in rs.values()) == sent
    assert sum(b["outcomes"].values()) == sent
    assert b["unclassified"] == {}
    assert reasons.get("served", 0) >= 20, reasons     # 5 keys x 6 GETs (first fills), the batch, RESP3's 3, why:fits
    assert reasons.get("over_mss") == 2, reasons
    assert reasons.get("first_read", 0) >= 7, reasons
    assert reasons.get("pipelined") == 2, reasons
    assert reasons.get("oversize_value") == 2, reasons
    assert reasons.get("ttl") == 2, reasons
    assert reasons.get("dirty") == 3 and b["dirty"].get("tracking") == 1, (reasons, b["dirty"])
    assert reasons.get("error_reply") == 1, reasons
    assert reasons.get("args") == 1 and reasons.get("oversize_key") == 1 and reasons.get("db") == 1, reasons
    assert b["unseen"]["segments_untracked"] >= 3

    F = _filters()
    stats = {"mode": "serve", "counters": delta, "get_outcomes": b}
    fams = promtext.parse(F.brc_prometheus(stats, "lab", lab.pair.server_dev))
    samples = fams["brc_get_outcomes"]["samples"]
    assert sum(v for _n, _l, v in samples) == sent
    served = [v for _n, l, v in samples if l["reason"] == "served"]
    assert served == [reasons["served"]]


def test_a_key_longer_than_the_maximum_is_never_a_shorter_keys_answer(lab):
    """Found by the mix above: a GET key longer than BRC_KEY_MAX whose bytes ran past the
    parser's chunk was skipped without counting them, so it was tracked as its first 64
    bytes: the reply filled the entry of that other, shorter key, and serve answered the
    shorter key with the longer one's value. Now it is oversize_key, never filled."""
    lab.serve()
    lab.refresh_auth()
    time.sleep(1.5)         # past the lease of any untracked traffic before (BRC_UNTRACKED_LEASE_NS)
    short = "why:" + "L" * 60                            # exactly BRC_KEY_MAX bytes
    long_ = short + "x" * 40
    s = Resp(lab)
    assert s.call("SET", short, "value-of-short") == b"OK"
    assert s.call("SET", long_, "value-of-long") == b"OK"
    s.close()
    before = lab.counters()
    c = Resp(lab)
    for _ in range(3):
        assert c.call("GET", long_) == b"value-of-long"
    for _ in range(4):
        assert c.call("GET", short) == b"value-of-short"
    c.close()
    d = lab.delta(lab.counters(), before)
    assert d.get("oversize_key") == 3, d
    assert d.get("hit", 0) == 3 and d.get("fill") == 1, d    # the short key: filled once, then answered
