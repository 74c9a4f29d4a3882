"""Real traffic through the serve blocks: two network namespaces joined by a veth
pair (10.68.0.0/24, names prefixed brcsv), a real redis-server in one, the
test-only serving program (harness_serve.c) on the server's veth with tc
clsact, and serve_client.py in the other sending GET of the preloaded key
followed by other commands on the same connection. Proves the connection does
not stall and every reply is right, with veth tx checksum offload on (default)
and off, with and without 2% random loss both ways (nftables in the client
namespace). Everything created here is removed by name/PID in a finally.
"""
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import netfault

HERE = os.path.dirname(os.path.abspath(__file__))
SUBNET = "10.68.0"
CLI_IP, SRV_IP, PORT = SUBNET + ".1", SUBNET + ".2", 6379
KEY = "brcsv:key"
KERNEL_VALUE = "served-by-the-kernel"
REDIS_VALUE = "served-by-redis"
SV = ["hit", "resent", "held", "refused", "pass_in", "pass_out", "syn",
      "err_build", "err_clone", "csum_partial", "reset", "dup"]


def sh(*cmd, check=True, timeout=20):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


class Topology:
    def __init__(self):
        tag = str(os.getpid())[-7:]
        self.cns, self.sns = "brcsv-c" + tag, "brcsv-s" + tag
        self.cdev, self.sdev = "brcsvc" + tag, "brcsvs" + tag
        self.pins = ["/sys/fs/bpf/brcsv-%s-%s" % (tag, d) for d in ("in", "eg")]
        self.redis = None
        self.dir = tempfile.mkdtemp(prefix="brcsv-")

    def up(self):
        netfault.veth_pair((self.cns, self.cdev, CLI_IP), (self.sns, self.sdev, SRV_IP))
        self.redis = subprocess.Popen(
            ["ip", "netns", "exec", self.sns, "redis-server", "--bind", SRV_IP, "--port", str(PORT),
             "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.rcli("PING", check=False).strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not come up in " + self.sns)

    def rcli(self, *args, check=True):
        return sh("ip", "netns", "exec", self.sns, "redis-cli", "-h", SRV_IP, "-p", str(PORT),
                  *args, check=check)

    def attach(self, in_fd, eg_fd):
        from bpfrun import obj_pin
        for fd, pin in zip((in_fd, eg_fd), self.pins):
            obj_pin(fd, pin)
        # nsenter, not `ip netns exec`: that remounts /sys and hides /sys/fs/bpf
        tc = ("nsenter", "--net=/run/netns/" + self.sns, "tc")
        sh(*tc, "qdisc", "add", "dev", self.sdev, "clsact")
        for hook, pin in zip(("ingress", "egress"), self.pins):
            sh(*tc, "filter", "add", "dev", self.sdev, hook,
               "bpf", "direct-action", "object-pinned", pin)

    def offload(self, on):
        for ns, dev in ((self.cns, self.cdev), (self.sns, self.sdev)):
            sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "on" if on else "off")

    def loss(self, percent):
        sh("ip", "netns", "exec", self.cns, "nft", "delete", "table", "inet", "brcsv", check=False)
        if not percent:
            return
        rules = ("table inet brcsv {\n"
                 " chain in { type filter hook input priority 0; meta l4proto tcp numgen random mod 100 < %d drop; }\n"
                 " chain out { type filter hook output priority 0; meta l4proto tcp numgen random mod 100 < %d drop; }\n"
                 "}\n") % (percent, percent)
        path = os.path.join(self.dir, "loss.nft")
        with open(path, "w") as f:
            f.write(rules)
        sh("ip", "netns", "exec", self.cns, "nft", "-f", path)

    def client(self, rounds, conns, timeout=8.0, extra=()):
        r = subprocess.run(
            ["ip", "netns", "exec", self.cns, sys.executable, os.path.join(HERE, "serve_client.py"),
             SRV_IP, str(PORT), "--key", KEY, "--kernel-value", KERNEL_VALUE,
             "--redis-value", REDIS_VALUE, "--rounds", str(rounds), "--conns", str(conns),
             "--timeout", str(timeout), *extra],
            capture_output=True, text=True, timeout=170)
        return json.loads(r.stdout)

    def get_calls(self):
        m = re.search(r"cmdstat_get:calls=(\d+)", self.rcli("INFO", "commandstats"))
        return int(m.group(1)) if m else 0

    def down(self):
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(10)
        for ns in (self.cns, self.sns):
            sh("ip", "netns", "del", ns, check=False)
        for pin in self.pins:
            if os.path.exists(pin):
                os.unlink(pin)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def served(harness):
    for tool in ("redis-server", "redis-cli", "ethtool", "nft", "tc", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(tool + " not installed")
    h = harness("harness_serve.c")
    topo = Topology()
    try:
        topo.up()
        topo.rcli("SET", KEY, REDIS_VALUE)
        topo.attach(h.fn("sv_ingress").fd, h.fn("sv_egress").fd)
        req = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(KEY), KEY.encode())
        cfg = h["sv_cfg"].Leaf()
        cfg.port, cfg.req_len = PORT, len(req)
        ctypes.memmove(ctypes.addressof(cfg.req), req, len(req))
        h["sv_cfg"][ctypes.c_int(0)] = cfg
        rep = h["sv_reply"].Leaf()
        data = b"$%d\r\n%s\r\n" % (len(KERNEL_VALUE), KERNEL_VALUE.encode())
        rep.len = len(data)
        ctypes.memmove(ctypes.addressof(rep.data), data, len(data))
        h["sv_reply"][ctypes.c_int(0)] = rep
        yield h, topo
    finally:
        topo.down()


def stats(h):
    t = h["sv_stats"]
    return {name: t[ctypes.c_int(i)].value for i, name in enumerate(SV)}


def run_case(served, offload_on, loss, rounds, conns=2, pipeline=False):
    h, topo = served
    topo.offload(offload_on)
    topo.loss(loss)
    h["sv_stats"].clear() if hasattr(h["sv_stats"], "clear") else None
    for i in range(len(SV)):
        h["sv_stats"][ctypes.c_int(i)] = ctypes.c_ulonglong(0)
    calls0 = topo.get_calls()
    try:
        res = topo.client(rounds, conns, extra=("--pipeline",) if pipeline else ())
    finally:
        topo.loss(0)
    st = stats(h)
    calls = topo.get_calls() - calls0
    print("offload=%s loss=%d%% client=%s stats=%s redis GET calls=%d"
          % (offload_on, loss, res, st, calls))
    assert res["ok"], res["errors"]
    assert res["rounds"] == rounds * conns
    gets = (1 if pipeline else 2) * rounds * conns
    assert res["kernel"] + res["redis"] == gets
    # every kernel answer is a GET Redis never saw; the others reached Redis
    assert calls == rounds * conns + res["redis"]
    assert st["hit"] == res["kernel"] or loss  # a hit whose reply was lost is counted once
    assert st["err_build"] == 0
    return res, st


@pytest.mark.parametrize("offload_on", [True, False], ids=["offload-on", "offload-off"])
def test_served_connection_keeps_going(served, offload_on):
    res, st = run_case(served, offload_on, loss=0, rounds=150)
    assert res["kernel"] == 2 * 150 * 2, "every GET of the key answered in the kernel"
    assert st["csum_partial"] == (st["hit"] + st["resent"] if offload_on else 0)


@pytest.mark.parametrize("offload_on", [True, False], ids=["offload-on", "offload-off"])
def test_served_connection_survives_loss(served, offload_on):
    res, st = run_case(served, offload_on, loss=2, rounds=60)
    assert res["kernel"] > 0.5 * 2 * 60 * 2


@pytest.mark.parametrize("loss", [0, 2], ids=["no-loss", "loss-2pct"])
def test_pipelined_set_behind_served_get(served, loss):
    """GET key and SET own back to back: the SET is translated past the consumed
    GET, the server's ack for it is held back while the injected reply is
    unacked, and nothing stalls."""
    res, st = run_case(served, True, loss=loss, rounds=60 if loss else 200, pipeline=True)
    if not loss:
        assert res["kernel"] == 200 * 2


@pytest.mark.parametrize("offload_on,loss", [(True, 0), (False, 0), (True, 2)],
                         ids=["offload-on", "offload-off", "offload-on-loss-2pct"])
def test_pipelined_under_reordering(served, offload_on, loss):
    """NFQUEUE in the client namespace (lab/netfault.py) delays 20% of
    TCP packets both ways by 3-6 ms, so later segments overtake them (requests
    at the server, replies at the client), once also with 2% loss: all replies
    right, no stall. A GET overtaken by the SET behind it is not in order and
    goes to Redis, which is the rule."""
    h, topo = served
    if not shutil.which("iptables"):
        pytest.skip("iptables not installed")
    with netfault.Reorder(topo.cns, PORT, fraction=0.2, delay_ms=6, max_seconds=150,
                          queue=7, data_only=False) as reorder:
        res, st = run_case(served, offload_on, loss=loss, rounds=100, pipeline=True)
    print("reorder:", reorder.final)
    assert reorder.final["delayed"] > 50, "the holder must actually have delayed packets"
    assert res["kernel"] > 0.5 * 100 * 2


def test_no_connection_left_behind(served):
    """Every earlier client closed its connections; a FIN translated wrongly
    (or passed untranslated) would leave Redis holding them open forever."""
    h, topo = served
    for _ in range(100):
        clients = [c for c in topo.rcli("CLIENT", "LIST").splitlines() if "addr=%s:" % CLI_IP in c]
        if not clients:
            break
        time.sleep(0.05)
    assert not clients, clients


def test_reset_when_reply_bytes_are_gone(served):
    """The injected reply is lost (nft drops it in the client namespace), the
    stored bytes are cleared, the client retransmits the GET: both ends get a
    RST (counted), nobody gets different bytes, the client sees a reset."""
    h, topo = served
    topo.offload(True)
    for i in range(len(SV)):
        h["sv_stats"][ctypes.c_int(i)] = ctypes.c_ulonglong(0)
    saved = h["sv_reply"][ctypes.c_int(0)]
    reply_len = saved.len
    rules = ("table inet brcsv {\n chain in { type filter hook input priority 0;"
             " tcp sport %d ip length %d drop; }\n}\n") % (PORT, 20 + 32 + reply_len)
    path = os.path.join(topo.dir, "dropreply.nft")
    with open(path, "w") as f:
        f.write(rules)
    sh("ip", "netns", "exec", topo.cns, "nft", "-f", path)
    p = subprocess.Popen(
        ["ip", "netns", "exec", topo.cns, sys.executable, os.path.join(HERE, "serve_client.py"),
         SRV_IP, str(PORT), "--key", KEY, "--kernel-value", KERNEL_VALUE,
         "--redis-value", REDIS_VALUE, "--reset-probe", "--timeout", "10"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        assert line[:1] == ["sent"], line
        probe = "addr=%s:%s " % (CLI_IP, line[1])
        for _ in range(250):                     # the kernel answered (and nft dropped it)
            if stats(h)["hit"] == 1:
                break
            time.sleep(0.02)
        assert stats(h)["hit"] == 1, stats(h)
        empty = h["sv_reply"].Leaf()
        h["sv_reply"][ctypes.c_int(0)] = empty   # the stored bytes are gone
        topo.loss(0)                             # deletes table inet brcsv
        p.stdin.write("go\n")
        p.stdin.flush()
        res = json.loads(p.stdout.read())
        p.wait(20)
    finally:
        if p.poll() is None:
            p.kill()
        h["sv_reply"][ctypes.c_int(0)] = saved
        topo.loss(0)
    st = stats(h)
    print("reset probe:", res, st)
    assert res["outcome"] == "reset", res
    assert st["reset"] >= 1 and st["resent"] == 0
    # the server side was reset too: Redis drops that connection (on its next
    # event-loop pass, so poll)
    for _ in range(100):
        clients = topo.rcli("CLIENT", "LIST")
        if probe not in clients:
            break
        time.sleep(0.05)
    assert probe not in clients, clients
