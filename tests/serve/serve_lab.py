"""A served Redis in a namespace pair: redis-server in the server namespace, BRC
(bpf/brc.c, the real build) attached with tc on the server's veth in mode serve,
clients (consistency checker, redis-benchmark, redis-cli) run in the client namespace.
"""
import contextlib
import json
import os
import subprocess
import sys

import brc_attach

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHECKER = os.path.join(REPO, "tests", "tools", "checker.py")
PORT = 6379


@contextlib.contextmanager
def running(lab_class, prefix, subnet):
    """A @lab_class (ServeLab or a subclass) on a fresh namespace pair <prefix><pid>-client/
    -server (@subnet.0/24, only inside them); closed, and the pair removed, also on failure."""
    import netfault
    with netfault.NetnsPair(prefix=prefix, subnet=subnet) as pair:
        lab = lab_class(pair, os.path.join(REPO, "bpf"))
        try:
            yield lab
        finally:
            lab.close()


class ServeLab:
    def __init__(self, pair, bpf_dir):
        self.pair = pair
        self.redis = pair.start_redis(PORT)
        self.brc = brc_attach.Brc(bpf_dir, pair.server, pair.server_dev, PORT)
        self.brc.attach()
        self.serve()
        self.refresh_auth()

    def serve(self, **values):
        values.setdefault("max_key_len", 64)
        values.setdefault("max_value_len", 2048)
        return self.brc.configure("serve", **values)

    def refresh_auth(self, **credentials):
        """What the toolkit's brc_auth does: read Redis's users and rights into BRC
        (serve answers nobody until then, and again after ACL/CONFIG changes)."""
        return self.brc.refresh_auth(self.pair.server_ip, **credentials)

    def close(self):
        self.brc.close()

    def counters(self):
        return dict((k, v) for k, v in self.brc.counters().items() if not k.startswith("lat."))

    @staticmethod
    def delta(after, before):
        return dict((k, after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0))

    def cli(self, *args):
        r = subprocess.run(["ip", "netns", "exec", self.pair.client, "redis-cli", "-h",
                            self.pair.server_ip, "-p", str(PORT)] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.decode()

    def checker(self, seconds, connections=8, timeout=5.0):
        """Run the consistency checker in the client namespace (its own process,
        killed by PID on timeout); returns (summary, counter delta)."""
        before = self.counters()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.pair.client, sys.executable, CHECKER,
             "--host", self.pair.server_ip, "--port", str(PORT), "--connections",
             str(connections), "--seconds", str(seconds), "--timeout", str(timeout), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=seconds + timeout * 4 + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        d = self.delta(self.counters(), before)
        lines = [l for l in out.decode().splitlines() if l.startswith("{")]
        assert lines, "checker printed no summary: %s" % err.decode()[-2000:]
        return json.loads(lines[-1]), d

    def benchmark(self, *args, timeout=120):
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.pair.client, "redis-benchmark", "-h",
             self.pair.server_ip, "-p", str(PORT), "-q"] + [str(a) for a in args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("redis-benchmark %s did not complete in %ds" % (args, timeout))
        assert proc.returncode == 0, err.decode()[-2000:]
        return out.decode(errors="replace")
