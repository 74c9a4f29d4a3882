"""The paced reconnect (module brc_reconnect, brc_rollout_reconnect) on the lab: real ssh,
real Redis, real BPF programs.

Before BRC is attached to redis1, the test opens there, from the controller over eth0:
a redis-py pool of POOL connections, a subscriber, a client inside MULTI, and the
replication link of redis2 (REPLICAOF redis1); on redis1 itself, a client of its own
address (over lo). Then it deploys BRC to redis1 (observe), and:

  - GETs on the pool are not seen by BRC (untracked segments, no GET counted);
  - check mode reports the pool, and only the pool, and closes nothing;
  - enable.yml promotes redis1 to serve with brc_rollout_reconnect=true: the pool's
    connections are closed in batches of BATCH, every other client is left and counted
    under its reason, the rollout's output carries the counts;
  - the pool's next commands reconnect by themselves, and its GETs are now answered in
    the kernel (the `hit` counter);
  - a second run finds nothing to close.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from fixtures.lab import ansible_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POOL = 10
BATCH = 3
KEYS = 20
PIN = "/sys/fs/bpf/brc/eth0/prog_ingress"


def log(msg):
    sys.stderr.write("[reconnect %s] %s\n" % (time.strftime("%H:%M:%S"), msg))


def run(lab, argv, timeout=900, **env):
    start = time.monotonic()
    out = subprocess.run(argv, cwd=REPO, env=ansible_env(lab, **env), capture_output=True, text=True,
                         timeout=timeout)
    log("%s: rc=%d in %.1fs" % (" ".join(argv[:4]), out.returncode, time.monotonic() - start))
    return out


def playbook(lab, path, *args):
    # JSON results: one line per message, whatever its length (YAML would fold them)
    return run(lab, [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), path] + list(args),
               ANSIBLE_CALLBACK_RESULT_FORMAT="json")


def module(lab, host, name, args, *extra):
    """An ad hoc module run on one host: (rc, its result)."""
    out = run(lab, [os.path.join(REPO, ".venv", "bin", "ansible"), host, "-m", name, "-a", args] + list(extra),
              timeout=300, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    m = re.search(r"=> (\{.*\})\s*$", out.stdout, re.S)
    assert m, out.stdout[-3000:] + out.stderr[-2000:]
    return out.returncode, json.loads(m.group(1))


def counters(lab, host):
    rc, res = module(lab, host, "brc_stats", "interface=eth0")
    assert rc == 0, res
    return res["counters"]


def clients(addr):
    """{client name: CLIENT LIST entry} of the named clients of the Redis at addr."""
    import redis
    r = redis.Redis(host=addr, port=6379, socket_timeout=5)
    try:
        return dict((c["name"], c) for c in r.client_list() if c.get("name"))
    finally:
        r.close()


def all_clients(addr):
    import redis
    r = redis.Redis(host=addr, port=6379, socket_timeout=5)
    try:
        return r.client_list()
    finally:
        r.close()


def wait_for(what, pred, tries=100, delay=0.2):
    for _ in range(tries):
        if pred():
            return
        time.sleep(delay)
    raise AssertionError("timed out waiting for " + what)


def raw_multi(addr):
    """A connection left inside MULTI (name rt-multi)."""
    s = socket.create_connection((addr, 6379), timeout=5)
    s.sendall(b"CLIENT SETNAME rt-multi\r\nMULTI\r\n")
    got = b""
    while got.count(b"\r\n") < 2:
        got += s.recv(100)
    assert got == b"+OK\r\n+OK\r\n", got
    return s


LOCAL_CLIENT = ("import socket, time\n"
                "s = socket.create_connection(('%s', 6379))\n"
                "s.sendall(b'CLIENT SETNAME rt-local\\r\\n')\n"
                "s.recv(10)\n"
                "time.sleep(1800)\n")


@pytest.fixture
def setting(lab):
    """redis1 without BRC, with the pre-attach clients open; torn down afterwards."""
    import redis
    h1, h2 = lab.hosts[0], lab.hosts[1]
    if lab.exec(h1.name, ["test", "-e", PIN]).returncode == 0:
        # The session lab is shared: the connections must predate the programs.
        out = playbook(lab, "playbooks/undeploy.yml", "-l", h1.name)
        assert out.returncode == 0, out.stdout[-4000:]
    opened = {"local_pid": None, "multi": None, "sub": None, "pool": None}
    try:
        subprocess.run(["redis-cli", "-h", h2.addr, "REPLICAOF", h1.addr, "6379"], check=True,
                       capture_output=True, timeout=10)
        wait_for("redis2's replication link", lambda: any("S" in c["flags"] for c in all_clients(h1.addr)))
        pid = lab.exec(h1.name, ["/bin/sh", "-c", 'nohup python3 -c "$0" >/dev/null 2>&1 & echo $!',
                                 LOCAL_CLIENT % h1.addr],
                       capture_output=True, text=True, check=True).stdout.strip()
        opened["local_pid"] = pid
        opened["multi"] = raw_multi(h1.addr)
        sub = redis.Redis(host=h1.addr, port=6379, client_name="rt-sub").pubsub()
        sub.subscribe("rt-channel")
        assert sub.get_message(timeout=5)["type"] == "subscribe"
        opened["sub"] = sub
        # client_name: every connection the pool opens (again) names itself rt-pool
        pool = redis.ConnectionPool(host=h1.addr, port=6379, max_connections=POOL, socket_timeout=5,
                                    socket_connect_timeout=5, client_name="rt-pool")
        conns = [pool.get_connection() for _i in range(POOL)]
        for i, c in enumerate(conns):
            c.send_command("CLIENT", "SETNAME", "rt-pool-%d" % i)
            assert c.read_response() in (b"OK", "OK")
        for c in conns:
            pool.release(c)
        opened["pool"] = pool
        wait_for("the local client", lambda: "rt-local" in clients(h1.addr))
        yield lab, h1, h2, redis.Redis(connection_pool=pool)
    finally:
        if opened["pool"]:
            opened["pool"].disconnect()
        if opened["sub"]:
            opened["sub"].close()
        if opened["multi"]:
            opened["multi"].close()
        if opened["local_pid"]:
            lab.exec(h1.name, ["kill", opened["local_pid"]])
        subprocess.run(["redis-cli", "-h", h2.addr, "REPLICAOF", "NO", "ONE"], capture_output=True, timeout=10)


def pool_ids(addr):
    return sorted(int(c["id"]) for c in all_clients(addr) if c.get("name", "").startswith("rt-pool"))


def test_reconnect_closes_only_the_pre_attach_pool_in_batches(setting):
    lab, h1, h2, client = setting
    before = clients(h1.addr)
    olds = pool_ids(h1.addr)
    assert len(olds) == POOL
    replica = [c for c in all_clients(h1.addr) if "S" in c["flags"]]
    assert len(replica) == 1 and replica[0]["addr"].startswith(h2.addr + ":"), replica

    out = playbook(lab, "deploy.yml", "-l", h1.name)
    assert out.returncode == 0, out.stdout[-6000:]
    agent = [c for c in all_clients(h1.addr) if c.get("user") == "brc-agent"]
    assert agent, "the host agent's connections are not in CLIENT LIST"

    # Keys, and observe history for the promotion, on new (followed) connections.
    import redis
    fresh = redis.Redis(host=h1.addr, port=6379, socket_timeout=5)
    for i in range(KEYS):
        fresh.set("rt:%d" % i, "value-%d" % i)
    fresh.close()
    for _round in range(4):
        fresh = redis.Redis(host=h1.addr, port=6379, socket_timeout=5)
        for i in range(KEYS):
            assert fresh.get("rt:%d" % i) == b"value-%d" % i
        fresh.close()
        time.sleep(0.3)   # the agent writes the keys' expiry records the kernel asked for

    # The pool's GETs go by unseen: untracked segments, not a GET counted.
    c0 = counters(lab, h1.name)
    for _round in range(5):
        for i in range(KEYS):
            assert client.get("rt:%d" % i) == b"value-%d" % i
    c1 = counters(lab, h1.name)
    assert c1["segments_untracked"] - c0["segments_untracked"] >= 5 * KEYS
    assert c1["req_get"] == c0["req_get"] and c1["hit"] == c0["hit"]
    assert pool_ids(h1.addr) == olds   # the pool used its old connections

    # Check mode: the pool, nothing else, and nothing closed.
    rc, plan = module(lab, h1.name, "brc_reconnect", "interface=eth0 batch_size=%d" % BATCH, "--check")
    assert rc == 0, plan
    log("check mode: %s" % plan["summary"])
    assert plan["would_kill"] == POOL and plan["killed"] == 0 and plan["changed"] is True
    assert sorted(plan["candidate_ids"]) == olds
    assert plan["batches"] == -(-POOL // BATCH)
    assert pool_ids(h1.addr) == olds

    # The promotion to serve, with the reconnect.
    up = playbook(lab, "playbooks/enable.yml", "-l", h1.name, "-e", "brc_enable_mode=serve",
                  "-e", "brc_rollout_reconnect=true", "-e", "brc_rollout_reconnect_batch_size=%d" % BATCH,
                  "-e", "brc_rollout_reconnect_pause=0.2")
    assert up.returncode == 0, up.stdout[-6000:]
    assert "%s: observe -> serve passed" % h1.name in up.stdout
    text = up.stdout.replace("\n", " ")
    m = re.search(r"%s: reconnect: reconnected (\d+) of (\d+) clients in (\d+) batches, (\d+) failed; left: ([^\"]*)"
                  % h1.name, text)
    assert m, up.stdout[-6000:]
    log("rollout: %s" % m.group(0))
    assert int(m.group(1)) == POOL and int(m.group(3)) == -(-POOL // BATCH) and int(m.group(4)) == 0
    left = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", m.group(5)))
    assert left.get("replication") == 1 and left.get("multi") == 1 and left.get("pubsub") == 1
    assert left.get("local", 0) >= 1          # rt-local, from redis1's own address
    assert left.get("loopback", 0) >= len(agent)   # the agent, over 127.0.0.1
    assert re.search(r"reconnect, hosts %s: closed %d clients in %d batches, 0 failed"
                     % (h1.name, POOL, -(-POOL // BATCH)), text), up.stdout[-4000:]

    after = all_clients(h1.addr)
    ids = set(int(c["id"]) for c in after)
    assert not ids & set(olds), "pre-attach pool connections still open"
    for name in ("rt-multi", "rt-sub", "rt-local"):
        assert before[name]["id"] in set(c["id"] for c in after), name
    assert replica[0]["id"] in set(c["id"] for c in after)
    assert set(c["id"] for c in agent) <= set(c["id"] for c in after)

    # The pool reconnects by itself; its GETs are now answered in the kernel.
    c2 = counters(lab, h1.name)
    for _round in range(5):
        for i in range(KEYS):
            assert client.get("rt:%d" % i) == b"value-%d" % i
    c3 = counters(lab, h1.name)
    # Every connection of the pool comes back on its own when next used (the pool's health
    # check finds the closed socket and connects again), with a new client id.
    conns = [client.connection_pool.get_connection() for _i in range(POOL)]
    ids = []
    for c in conns:
        c.send_command("CLIENT", "ID")
        ids.append(int(c.read_response()))
    for c in conns:
        client.connection_pool.release(c)
    news = pool_ids(h1.addr)
    log("pool ids before %s, after %s; hit +%d of %d GETs" % (olds, news, c3["hit"] - c2["hit"], 5 * KEYS))
    assert sorted(ids) == news and len(news) == POOL and not set(news) & set(olds)
    assert c3["hit"] - c2["hit"] > 0
    assert (c3["hit"] - c2["hit"]) + (c3["req_get"] - c2["req_get"]) == 5 * KEYS

    # Nothing left to close.
    rc, again = module(lab, h1.name, "brc_reconnect", "interface=eth0")
    assert rc == 0 and again["killed"] == 0 and again["changed"] is False, again
    assert again["left"]["tracked"] >= len(news)
