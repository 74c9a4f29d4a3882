"""Pipelined GETs through serve mode, black-box against the session's served Redis:
redis-py 8 pipelines (RESP3, its default, and RESP2) of 2-16 GETs of cached keys are
answered in the kernel as one reply per segment (>= 90% of their GETs), every value
the one Redis holds (read over loopback in the server namespace, a path BRC never
sees); a write to one of the keys between batches is seen by the next batch.
Packet-level cases (a miss, a write inside, a cut GET, over the MSS, resends):
test_serve_packets.py."""
import random

import pytest
import redis

from blackbox import Delta, in_netns, truth
from serve_lab import PORT

KEYS = 32
ROUNDS = 150


def redis_py(lab, **kw):
    """A redis-py client whose pool holds one connection, made in the client namespace
    (made there, it stays there; a pipeline takes it from the pool)."""
    with in_netns(lab.pair.client):
        r = redis.Redis(host=lab.pair.server_ip, port=PORT, socket_timeout=5, **kw)
        r.ping()
    return r


@pytest.mark.parametrize("protocol", [None, 2], ids=["redis-py-defaults", "protocol-2"])
def test_pipelined_gets_are_answered_as_one_reply_per_segment(lab, protocol):
    lab.serve()
    rng = random.Random(1016)
    keys = ["batch:%s:%d" % (protocol, i) for i in range(KEYS)]
    r = redis_py(lab, **({} if protocol is None else {"protocol": protocol}))
    try:
        for k in keys:                          # up to 16 x 70 bytes: one 1500-byte MTU segment
            assert r.set(k, "%s=" % k + "v" * rng.randint(0, 40))
        for k in keys:
            r.get(k)                            # fills: BRC fills from GETs with nothing pending
        sent = 0
        with truth(lab) as t, Delta(lab) as d:
            for n in range(ROUNDS):
                batch = rng.sample(keys, rng.randint(2, 16))
                p = r.pipeline(transaction=False)
                for k in batch:
                    p.get(k)
                got = p.execute()
                sent += len(batch)
                held = [t.call("GET", k) for k in batch]
                assert got == held, (n, batch)
                if n % 25 == 24:
                    # a write between batches: the next batch must see it
                    k = rng.choice(keys)
                    assert r.set(k, "%s=rewritten-%d" % (k, n))
                    r.get(k)                    # refill
        print("\nBATCHES protocol=%s gets=%d hit=%d (%.1f%%) batches=%d of %d" % (
            protocol, sent, d["hit"], 100.0 * d["hit"] / sent, d["serve_batches"], ROUNDS))
        assert d["mismatch"] == 0
        assert d["hit"] >= 0.9 * sent, (sent, d)
        assert d["serve_batches"] >= 0.9 * ROUNDS - ROUNDS // 25, d
    finally:
        r.close()
