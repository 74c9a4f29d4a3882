"""Network namespaces joined by a veth, and commands run inside them (tests and bench)."""
import os
import re
import signal
import subprocess
import tempfile
import time


def sh(cmd, netns=None, check=True, input=None, timeout=30):
    """Run a command (list) inside netns; returns CompletedProcess with text output."""
    if netns:
        cmd = ["ip", "netns", "exec", netns] + list(cmd)
    proc = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), proc.returncode,
                                                   proc.stderr.strip()))
    return proc


def route_device(netns, peer):
    """The device a namespace uses to reach peer, e.g. 'brcnfc0'."""
    words = sh(["ip", "route", "get", peer], netns).stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else None


def veth_pair(a, b, mtu=None):
    """Namespaces a and b, each (netns, dev, ip), made and joined by a veth: dev in each
    with ip/24 on it, up, as is lo."""
    for ns, _dev, _ip in (a, b):
        sh(["ip", "netns", "add", ns])
        sh(["ip", "link", "set", "lo", "up"], ns)
    sh(["ip", "link", "add", a[1], "netns", a[0], "type", "veth", "peer", "name", b[1], "netns", b[0]])
    for ns, dev, ip in (a, b):
        sh(["ip", "addr", "add", ip + "/24", "dev", dev], ns)
        if mtu:
            sh(["ip", "link", "set", dev, "mtu", str(mtu)], ns)
        sh(["ip", "link", "set", dev, "up"], ns)


class NetnsPair:
    """Client and server namespaces over one veth pair.

    NetnsPair("brcnf", "10.67.0") -> namespaces brcnf<pid>-client (10.67.0.1, dev
    brcnf<pid>c0) and brcnf<pid>-server (10.67.0.2, dev brcnf<pid>s0), where <pid> is this
    process: several runs (two engineers' test suites) never touch each other's pairs, and
    the addresses may repeat since the pairs are isolated. Pairs left by a run that was
    killed (<prefix><pid> of a dead process) are removed on entry. On exit, processes
    started through popen() are killed by PID, then any process still inside the two
    namespaces (only this run starts processes there) by PID, then the namespaces go.
    Pass exact=True to use `prefix` as the whole name.
    """

    def __init__(self, prefix="brcnf", subnet="10.67.0", mtu=None, exact=False):
        name = prefix if exact else "%s%d" % (prefix, os.getpid())
        if len(name) > 13:
            raise ValueError("name too long for an interface name: %r" % name)
        if not subnet.startswith("10."):
            raise ValueError("only 10.x addresses inside the namespaces")
        self.prefix, self.name = prefix, name
        self.client, self.server = name + "-client", name + "-server"
        self.client_dev, self.server_dev = name + "c0", name + "s0"
        self.client_ip, self.server_ip = subnet + ".1", subnet + ".2"
        self.mtu = mtu
        self.procs = []

    def sweep_stale(self):
        """Remove pairs <prefix><pid>-client/-server whose creating process is gone."""
        pattern = re.compile(r"^%s(\d+)-(client|server)$" % re.escape(self.prefix))
        for ns in sh(["ip", "netns", "list"]).stdout.split():
            m = pattern.match(ns)
            if not m or os.path.exists("/proc/%s" % m.group(1)):
                continue
            for pid in sh(["ip", "netns", "pids", ns], check=False).stdout.split():
                self._kill(int(pid))
            sh(["ip", "netns", "del", ns], check=False)

    def __enter__(self):
        self.sweep_stale()
        self.destroy()
        try:
            veth_pair((self.client, self.client_dev, self.client_ip),
                      (self.server, self.server_dev, self.server_ip), mtu=self.mtu)
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False

    def popen(self, netns, cmd, **kw):
        """Start cmd inside netns; `ip netns exec` execs it, so .pid is the command's."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", netns] + list(cmd), **kw)
        self.procs.append(proc)
        return proc

    def run(self, netns, cmd, **kw):
        return sh(cmd, netns, **kw)

    def start_redis(self, port=6379, extra=()):
        """redis-server in the server namespace; returns the Popen (kill by .pid)."""
        workdir = tempfile.mkdtemp(prefix="brcnf-redis-")
        proc = self.popen(self.server, [
            "redis-server", "--bind", self.server_ip, "--port", str(port), "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", workdir,
            "--daemonize", "no"] + list(extra))
        proc.workdir = workdir
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % proc.returncode)
            if sh(["redis-cli", "-h", self.server_ip, "-p", str(port), "ping"],
                  self.client, check=False).stdout.strip() == "PONG":
                return proc
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer on %s:%d" % (self.server_ip, port))

    @staticmethod
    def _kill(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def destroy(self):
        for proc in self.procs:
            if proc.poll() is None:
                self._kill(proc.pid)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            workdir = getattr(proc, "workdir", None)
            if workdir:
                subprocess.run(["rm", "-rf", workdir])
        self.procs = []
        existing = sh(["ip", "netns", "list"]).stdout.split()
        for ns in (self.client, self.server):
            if ns not in existing:
                continue
            pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                self._kill(int(pid))
            sh(["ip", "netns", "del", ns], check=False)
