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


def _mget_latency_samples(lab):
    return sum(v for k, v in lab.brc.counters().items() if k.startswith("lat.mget."))


@pytest.mark.parametrize("protocol", [None, 2], ids=["redis-py-defaults", "protocol-2"])
def test_mget_of_cached_keys_is_answered_in_the_kernel(lab, protocol):
    """redis-py's MGET of 2-16 cached keys (a missing one among them: its nil is cached
    from a GET) is answered as one array, the values Redis holds."""
    lab.serve()
    rng = random.Random(2016)
    keys = ["mget:%s:%d" % (protocol, i) for i in range(KEYS)]
    missing = "mget:%s:missing" % protocol
    r = redis_py(lab, **({} if protocol is None else {"protocol": protocol}))
    r2 = redis_py(lab, protocol=2)
    try:
        for k in keys:
            assert r.set(k, "%s=" % k + "m" * rng.randint(0, 40))
        for k in keys:
            r.get(k)
        r2.get(missing)                         # a nil is cached from RESP2 only
        sent = 0
        with truth(lab) as t, Delta(lab) as d:
            latency = _mget_latency_samples(lab)
            for n in range(ROUNDS):
                batch = rng.sample(keys, rng.randint(1, 15)) + [missing]
                rng.shuffle(batch)
                got = r.mget(batch)
                held = [t.call("GET", k) for k in batch]
                assert got == held, (n, batch)
                sent += 1
            latency = _mget_latency_samples(lab) - latency
        print("\nMGET protocol=%s mgets=%d answered=%d" % (protocol, sent, d["serve_mgets"]))
        assert d["mismatch"] == 0
        assert d["serve_mgets"] >= 0.9 * sent, d
        # every MGET is one sample of the mget histogram, answered here or by Redis
        assert latency == sent, (latency, sent)
    finally:
        r.close()
        r2.close()


def test_mget_is_not_answered_for_a_user_redis_does_not_let_mget(lab):
    """A user who may GET every key but not MGET: Redis refuses its MGET, and so the
    kernel never answers it (its GETs still are)."""
    lab.serve()
    with truth(lab) as t:
        assert t.call("ACL", "SETUSER", "getonly", "on", ">pw", "~*", "+@all", "-mget") == "OK"
        assert t.call("SET", "mget:acl:a", "A") == "OK"
    lab.refresh_auth()
    r = redis_py(lab, username="getonly", password="pw")
    try:
        for _ in range(3):
            assert r.get("mget:acl:a") == b"A"
        with Delta(lab) as d:
            for _ in range(5):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    r.mget(["mget:acl:a", "mget:acl:a"])
                assert r.get("mget:acl:a") == b"A"
        assert d["serve_mgets"] == 0 and d["hit"] >= 4, d
    finally:
        r.close()
        with truth(lab) as t:
            t.call("ACL", "DELUSER", "getonly")
        lab.refresh_auth()
