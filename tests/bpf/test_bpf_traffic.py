"""Real traffic, observe mode: a namespace pair of our own (10.66.0.0/24,
interfaces brcbt*), a real redis-server, the programs attached with pyroute2
(clsact, direct-action) on the server-side veth, and real clients:
redis-benchmark (GET/SET, -P 1 and -P 16, -r) and the consistency checker.

Asserts the oracle (mismatch == 0, would_hit > 0), populated latency
histograms, and that idle connections have nothing pending and hold no marks.
Everything is torn down in finally blocks (namespaces, processes by PID).
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from brc_testlib import REPO, Brc, marks, pending
import netfault

SRV_IP, CLI_IP = "10.66.0.1", "10.66.0.2"
CHECKER = os.path.join(REPO, "tests", "tools", "checker.py")


def _run(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


class NetnsPair:
    """Two namespaces joined by a veth: server side brcbtS<id>, client side brcbtC<id>."""

    def __init__(self):
        tag = "%d" % (os.getpid() % 100000)
        self.srv, self.cli = "brcbt-s%s" % tag, "brcbt-c%s" % tag
        self.srv_if, self.cli_if = "brcbtS%s" % tag, "brcbtC%s" % tag

    def up(self):
        netfault.veth_pair((self.srv, self.srv_if, SRV_IP), (self.cli, self.cli_if, CLI_IP))

    def down(self):
        for ns in (self.srv, self.cli):
            _run("ip", "netns", "del", ns, check=False)

    def exec_args(self, ns, *cmd):
        return ["ip", "netns", "exec", ns] + list(cmd)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _attach(nsname, ifname, build):
    from pyroute2 import NetNS
    ns = NetNS(nsname)
    try:
        idx = ns.link_lookup(ifname=ifname)[0]
        ns.tc("add", "clsact", idx)
        ns.tc("add-filter", "bpf", idx, ":1", fd=build.programs["ingress"], name="brc_ingress",
              parent="ffff:fff2", classid=1, direct_action=True)
        ns.tc("add-filter", "bpf", idx, ":1", fd=build.programs["egress"], name="brc_egress",
              parent="ffff:fff3", classid=1, direct_action=True)
    finally:
        ns.close()


@pytest.fixture(scope="module")
def lab(brc_build):
    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        pytest.skip("needs redis-server and redis-benchmark")
    pair = NetnsPair()
    redis = None
    try:
        pair.down()
        pair.up()
        port = _free_port()
        redis = subprocess.Popen(pair.exec_args(
            pair.srv, "redis-server", "--port", str(port), "--bind", SRV_IP, "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
            "--loglevel", "warning"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while _run(*pair.exec_args(pair.cli, "redis-cli", "-h", SRV_IP, "-p", str(port), "PING"),
                   check=False).stdout.strip() != "PONG":
            assert time.time() < deadline, "redis-server did not start"
            assert redis.poll() is None, "redis-server exited"
            time.sleep(0.1)
        brc = Brc(brc_build)
        brc.configure(port=port)
        brc.refresh_auth(pair.srv, SRV_IP, port)
        _attach(pair.srv, pair.srv_if, brc_build)
        yield pair, port, brc
    finally:
        if redis is not None:
            redis.kill()
            redis.wait(timeout=10)
        pair.down()


def _bench(pair, port, *args):
    r = _run(*pair.exec_args(pair.cli, "redis-benchmark", "-h", SRV_IP, "-p", str(port), "-q",
                             *args), timeout=120)
    return r.stdout


def _idle_flows_clean(brc, port):
    bad = []
    for k, f in brc.flows():
        if k.srv_port != port:
            continue
        if pending(f) or marks(f):
            bad.append((k.cli_port, pending(f), marks(f), f.flags, f.dirty))
    return bad


def test_benchmark_observe(lab):
    pair, port, brc = lab
    before = brc.stats()
    _bench(pair, port, "-t", "set,get", "-n", "20000", "-r", "1000", "-c", "20")
    _bench(pair, port, "-t", "get", "-n", "100000", "-r", "1000", "-c", "20", "-P", "16")
    _bench(pair, port, "-t", "get", "-n", "20000", "-c", "10")
    deadline = time.time() + 5      # the server's FINs may trail the client's exit
    while time.time() < deadline:
        after = brc.stats()
        if after["flows_closed"] - before["flows_closed"] == after["flows_tracked"] - before["flows_tracked"]:
            break
        time.sleep(0.1)
    d = {k: after[k] - before[k] for k in after}
    print({k: v for k, v in d.items() if v})
    assert d["mismatch"] == 0
    assert d["would_hit"] > 1000
    assert d["req_get"] >= 140000 and d["req_set"] >= 20000
    assert d["flows_tracked"] > 0 and d["flows_closed"] == d["flows_tracked"]
    assert d["dirty_parser"] == 0 and d["dirty_budget"] == 0 and d["parse_error_reply"] == 0
    lat = brc.latency()
    assert sum(lat.get("get", {}).values()) >= 140000 and lat.get("set")
    assert brc.global_state()["inflight"] == 0


def test_checker_observe_and_idle_connections(lab):
    pair, port, brc = lab
    before = brc.stats()
    r = _run(*pair.exec_args(pair.cli, sys.executable, CHECKER, "--host", SRV_IP, "--port",
                             str(port), "--connections", "8", "--seconds", "15"),
             check=False, timeout=120)
    after = brc.stats()
    d = {k: after[k] - before[k] for k in after}
    print(r.stdout[-2000:], r.stderr[-2000:])
    print({k: v for k, v in d.items() if v})
    assert r.returncode == 0, "checker found errors with BRC attached in observe mode"
    assert d["mismatch"] == 0
    assert d["would_hit"] > 0

    # idle connections: open a few, run pipelined traffic, leave them open
    script = (
        "import socket,sys\n"
        "socks=[socket.create_connection(('%s',%d)) for _ in range(4)]\n"
        "for i,s in enumerate(socks):\n"
        "  s.sendall(b''.join(b'*2\\r\\n$3\\r\\nGET\\r\\n$4\\r\\nk%%03d\\r\\n' %% j for j in range(50)))\n"
        "  s.sendall(b'*3\\r\\n$3\\r\\nSET\\r\\n$3\\r\\nidl\\r\\n$1\\r\\n1\\r\\n')\n"
        "  need=51; buf=b''\n"
        "  while buf.count(b'\\r\\n') < 51 and not buf.endswith(b'+OK\\r\\n'): buf+=s.recv(65536)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n") % (SRV_IP, port)
    p = subprocess.Popen(pair.exec_args(pair.cli, sys.executable, "-c", script),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        flows = [f for k, f in brc.flows() if k.srv_port == port]
        assert len(flows) >= 4
        assert _idle_flows_clean(brc, port) == []
    finally:
        p.kill()
        p.wait(timeout=10)
