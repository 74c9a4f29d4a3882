"""BRC served with its host agent, for real: redis-server in the server namespace
(bound to its veth address and to 127.0.0.1, the loopback BRC cannot see), the
real build attached with tc on the server's veth in serve mode with its maps
pinned, and brc-agent (roles/brc/files/brc-agent, the script the role installs)
running as a separate process in the server namespace with its own least-rights
ACL user.

Pins: `ip netns exec` gives each process a private mount namespace with a fresh
/sys, so /sys/fs/bpf would not be shared with the agent. The lab mounts a bpffs
of its own on a temporary directory in the root mount namespace; `ip netns exec`
copies existing mounts, so the agent sees the same pins there.

Everything started here is stopped by PID (NetnsPair does it for the processes
started through it) and the bpffs is unmounted, also on failure.
"""
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time

import brc_attach
from ansible.module_utils.brc_contract import addr_words
from serve_lab import PORT, ServeLab

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
AGENT_SCRIPT = os.path.join(REPO, "roles", "brc", "files", "brc-agent")
MODULE_UTILS = os.path.join(REPO, "module_utils")
# The agent runs on the hosts' interpreter (Debian's python3 with python3-redis 4.x,
# no Ansible), as the role will run it.
HOST_PYTHON = "/usr/bin/python3"
AGENT_USER = "brc-agent"


def wait_for(predicate, what, timeout=15.0, poll=0.02):
    """Poll @predicate until true; fail naming @what after @timeout s (a bound, never
    the thing asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


class AgentLab(ServeLab):
    def __init__(self, pair, bpf_dir):    # pylint: disable=super-init-not-called
        from ansible.module_utils import brc_agent
        self.pair, self.bpf_dir = pair, bpf_dir
        self.tmp = tempfile.mkdtemp(prefix="brcag-")
        self.bpffs = os.path.join(self.tmp, "bpffs")
        os.mkdir(self.bpffs)
        subprocess.run(["mount", "-t", "bpf", "bpf", self.bpffs], check=True)
        self.pin_dir = os.path.join(self.bpffs, "brc", pair.server_dev)
        self.password_file = os.path.join(self.tmp, "agent.password")
        with open(self.password_file, "w") as f:
            f.write(os.urandom(12).hex())
        os.chmod(self.password_file, 0o600)
        self.grants = brc_agent.AGENT_GRANTS
        self.log_path = os.path.join(self.tmp, "agent.log")
        self.socket = os.path.join(self.tmp, "redis.sock")
        self.stderr_path = os.path.join(self.tmp, "agent.stderr")
        self.agent = self.brc = None
        try:
            self.redis = self.start_redis()
            self.brc = brc_attach.Brc(bpf_dir, pair.server, pair.server_dev, PORT, pin_dir=self.pin_dir)
            self.brc.attach()
            self.serve()
            self.start_agent()
        except BaseException:
            self.close()        # the bpffs mount must not outlive a lab that failed to start
            raise

    # -- Redis
    def start_redis(self, data_dir=None, extra=()):
        """A Redis on the veth address and loopback, with the agent's user (ACLs are not
        persisted: a restarted Redis needs it again, as the role would re-apply it).
        With @data_dir it works there (loads its dump.rdb, SAVE writes it), else in the
        empty directory NetnsPair made for it; proc.data_dir says which. @extra: more
        redis-server options."""
        extra = ("--bind", self.pair.server_ip, "127.0.0.1", "--unixsocket", self.socket,
                 "--unixsocketperm", "700") + tuple(extra)
        if data_dir:
            extra += ("--dir", data_dir)     # the last --dir wins over NetnsPair's
        proc = self.pair.start_redis(PORT, extra=extra)
        proc.data_dir = data_dir or proc.workdir
        with open(self.password_file) as f:
            password = f.read().strip()
        self.local("ACL", "SETUSER", AGENT_USER, "reset", "on", ">" + password, *self.grants.split())
        return proc

    def restart_redis(self, from_rdb=False, extra=()):
        """kill -9 and a start: a new run id and, without persistence, no keys; with
        @from_rdb, the keys of the last SAVE (the old process's dump.rdb, loaded from
        its directory). @extra: more redis-server options for the new process."""
        data_dir = self.redis.data_dir if from_rdb else None
        self.pair._kill(self.redis.pid)
        self.redis.wait(10)
        self.redis = self.start_redis(data_dir, extra)

    def local(self, *args, port=PORT, unix_socket=False):
        """redis-cli over loopback (or the Unix socket) in the server namespace: what
        Redis holds, by a path BRC does not see."""
        where = ["-s", self.socket] if unix_socket else ["-h", "127.0.0.1", "-p", str(port)]
        r = subprocess.run(["ip", "netns", "exec", self.pair.server, "redis-cli"] + where
                           + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode().strip()
        assert not out.startswith("ERR") and not out.startswith("(error)"), out
        return out

    def info(self, section, port=PORT):
        """INFO @section over loopback as {field: value}."""
        out = {}
        for line in self.local("INFO", section, port=port).splitlines():
            k, sep, v = line.strip().partition(":")
            if sep and not k.startswith("#"):
                out[k] = v
        return out

    # -- a second Redis in the server namespace, as the served one's master
    def start_other_redis(self, port=PORT + 1):
        """A second Redis in the server namespace (@port, on the veth address and
        loopback), started through NetnsPair: killed by PID at the latest when it closes.
        As a master it starts a full sync at once (not after the default 5 s diskless delay)."""
        return self.pair.start_redis(port, extra=("--bind", self.pair.server_ip, "127.0.0.1",
                                                  "--repl-diskless-sync-delay", "0"))

    def replica_of(self, port=PORT + 1):
        """REPLICAOF the Redis on @port: the agent's flush on the role change awaited, the
        link up, and the agent answering again (as a replica)."""
        flushes = self.agent_state()["feed_flushes"]
        self.local("REPLICAOF", self.pair.server_ip, port)
        wait_for(lambda: self.agent_state()["feed_flushes"] > flushes, "a flush on the role change")
        wait_for(lambda: self.info("replication").get("master_link_status") == "up", "the replica in sync")
        self.wait_answering()

    def back_to_master(self, other):
        """REPLICAOF NO ONE on the served Redis and @other stopped, then, if that was a
        role change, the agent's flush awaited (until it reconnected, a marker written
        meanwhile would never be reported)."""
        try:
            was_replica = self.info("replication").get("role") == "slave"
            flushes = self.agent_state()["feed_flushes"]
            self.local("REPLICAOF", "NO", "ONE")
        finally:
            self.pair._kill(other.pid)
            other.wait(10)
        if was_replica:
            wait_for(lambda: self.agent_state()["feed_flushes"] > flushes, "a flush back to master")
        self.wait_answering()

    # -- the agent
    def agent_command(self, *extra):
        args = ["--pin-dir", self.pin_dir, "--src-dir", self.bpf_dir, "--redis-host", "127.0.0.1",
                "--redis-port", str(PORT), "--user", AGENT_USER, "--password-file", self.password_file]
        for i in range(0, len(extra) - 1):
            if extra[i] in args:         # an option given again replaces the lab's
                j = args.index(extra[i])
                del args[j:j + 2]
        return [HOST_PYTHON, AGENT_SCRIPT, "--lib", MODULE_UTILS] + args + list(extra)

    def start_agent(self, *extra):
        with open(self.stderr_path, "ab") as err:   # tracebacks, should one escape the log
            self.agent = self.pair.popen(self.pair.server, self.agent_command("--log", self.log_path, *extra),
                                         stderr=err)
        self.wait_answering()
        return self.agent

    def run_agent(self, *extra, timeout=30):
        """brc-agent run to its end in the server namespace (--release, bad input)."""
        return subprocess.run(["ip", "netns", "exec", self.pair.server] + self.agent_command(*extra),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              universal_newlines=True)

    def kill_agent(self, sig=signal.SIGKILL):
        os.kill(self.agent.pid, sig)
        self.agent.wait(10)

    def agent_log(self):
        out = ""
        for path in (self.log_path, self.stderr_path):
            try:
                with open(path) as f:
                    out += f.read()
            except IOError:
                pass
        return out

    def agent_state(self):
        t = self.brc.build.bpf.get_table(b"brc_agent")
        v = t[ctypes.c_uint32(0)]
        return dict((name, getattr(v, name)) for name, _t in v._fields_)

    def flushes(self):
        """brc_agent.flushes_by_reason as {reason: count}, decoded as the reports do
        (brc_maps.agent_flushes)."""
        from ansible.module_utils.brc_maps import agent_flushes
        return agent_flushes(self.brc.contract, list(self.agent_state()["flushes_by_reason"]))

    def beat_fresh(self):
        stale = self.brc.contract.constants["BRC_AGENT_STALE_NS"]
        return time.monotonic_ns() - self.agent_state()["beat_ns"] < stale

    def wait_answering(self, timeout=20.0):
        def ready():
            if self.agent is not None and self.agent.poll() is not None:
                raise AssertionError("brc-agent exited with %s:\n%s" % (self.agent.returncode,
                                                                       self.agent_log()[-3000:]))
            return self.beat_fresh()
        try:
            wait_for(ready, "the agent's heartbeat", timeout)
        except AssertionError as e:
            raise AssertionError("%s\nagent log:\n%s" % (e, self.agent_log()[-3000:]))

    def touch_pending(self):
        """Keys the kernel recorded for the agent to TOUCH that it has not drained yet."""
        t = self.brc.build.bpf.get_table(b"brc_touched")
        return set(bytes(bytearray(k.key[:k.len])).decode("utf-8", "replace") for k in t.keys())

    # -- the feed
    def bucket_of(self, key):
        """@key's version bucket, as the programs and the agent compute it."""
        if getattr(self, "_buckets", None) is None:
            self._buckets = int(self.brc.build.bpf.get_table(b"brc_keyver").max_entries)
        return self.brc.contract.bucket_of(key, self._buckets)

    def bucket_version(self, key):
        t = self.brc.build.bpf.get_table(b"brc_keyver")
        return t[ctypes.c_uint32(self.brc.contract.bucket_of(key, int(t.max_entries)))].ver

    def marker(self, timeout=15.0, port=PORT):
        """Write a fresh key over loopback (to @port: a replica's master) and wait until
        the feed bumped its bucket: every change Redis made before it has been fed too
        (Redis reports in order)."""
        key = "agent:marker:%d" % time.monotonic_ns()
        before = self.bucket_version(key)
        self.local("SET", key, "m", port=port)
        wait_for(lambda: self.bucket_version(key) > before and self.expiry_recorded(key),
                 "the feed to report %s" % key, timeout)

    def expiry_recorded(self, key):
        """Is the agent's brc_expiry record of @key current (written after the key's and
        the global version last moved)? After a bump the agent writes the records of the
        keys reported up to it, so a marker's record means theirs are written too."""
        t = self.brc.build.bpf.get_table(b"brc_expiry")
        k = t.Key()
        raw = key.encode()
        k.srv_addr[:] = addr_words(self.pair.server_ip)
        k.len = len(raw)
        ctypes.memmove(k.key, raw, len(raw))
        try:
            x = t[k]
        except KeyError:
            return False
        g = self.brc.build.bpf.get_table(b"brc_global")[ctypes.c_uint32(0)]
        return x.ver == self.bucket_version(key) and x.gver == g.ver

    # -- clients through BRC
    def get(self, key):
        return self.cli("GET", key).strip()

    def close(self):
        try:
            if self.agent is not None and self.agent.poll() is None:
                self.kill_agent()
            if self.brc is not None:
                ServeLab.close(self)
        finally:
            subprocess.run(["umount", self.bpffs])
            shutil.rmtree(self.tmp, ignore_errors=True)

