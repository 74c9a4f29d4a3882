"""redis-benchmark through the served path completes (GET hits with -P 1 and
-P 16, mixed SET/GET with -r), then every key has the right value: written with
values recorded here, read through BRC (served), and read again with BRC detached."""
import os
import subprocess

KEYS = 300


def _keyname(i):
    return "key:%012d" % i      # redis-benchmark's -r key names


def _pipe(lab, commands):
    """Send commands one per line through one redis-cli (request/response, so GETs
    after a fill are answered by the kernel); returns the output lines."""
    r = subprocess.run(["ip", "netns", "exec", lab.pair.client, "redis-cli", "-h",
                        lab.pair.server_ip, "-p", "6379"],
                       input="\n".join(commands) + "\n", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


READER = r"""
import json, sys
sys.path.insert(0, %r)
from checker import RespConnection
keys, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
c = RespConnection(sys.argv[3], 6379, 10.0)
out = []
for k in keys:
    for _ in range(rounds):
        v = c.call(b"GET", k.encode())
        out.append(v.decode() if isinstance(v, bytes) else v)
print(json.dumps(out))
"""


def _read(lab, keys, rounds):
    """GET every key @rounds times, one request at a time on one connection (so the
    reads after a fill are answerable in the kernel); returns the values."""
    import json
    import sys
    from serve_lab import REPO
    code = READER % os.path.join(REPO, "tests", "tools")
    r = subprocess.run(["ip", "netns", "exec", lab.pair.client, sys.executable, "-c", code,
                        json.dumps(keys), str(rounds), lab.pair.server_ip],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_benchmark_then_values(lab):
    lab.serve()
    _pipe(lab, ["SET %s pre%d" % (_keyname(i), i) for i in range(KEYS)])
    before = lab.counters()
    lab.benchmark("-t", "get", "-r", KEYS, "-n", 20000, "-c", 20, "-P", 1)
    lab.benchmark("-t", "get", "-r", KEYS, "-n", 100000, "-c", 20, "-P", 16)
    lab.benchmark("-t", "set,get", "-r", KEYS, "-n", 20000, "-c", 20, "-d", 8)
    mid = lab.counters()
    hits = mid["hit"] - before["hit"]
    print("\nSERVE-RUN benchmark hits=%d mismatch=%d resent=%d reset=%d" % (
        hits, mid["mismatch"] - before["mismatch"], mid["resent"] - before["resent"],
        mid["reset"] - before["reset"]))
    assert hits > 0 and mid["mismatch"] == before["mismatch"]
    record = dict((_keyname(i), "v%d-%s" % (i, os.urandom(4).hex())) for i in range(KEYS))
    _pipe(lab, ["SET %s %s" % (k, v) for k, v in record.items()])
    keys = sorted(record)
    served = _read(lab, keys, 3)
    assert served == [record[k] for k in keys for _ in range(3)]
    assert lab.counters()["hit"] - mid["hit"] >= KEYS      # the 2nd and 3rd reads hit
    lab.brc.detach()
    try:
        plain = _read(lab, keys, 1)
        assert plain == [record[k] for k in keys]
    finally:
        lab.brc.attach()
        lab.serve()
