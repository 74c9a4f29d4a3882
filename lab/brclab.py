"""brclab: a local fleet of Redis hosts in Linux namespaces, reached over real ssh.

Shape:

    root netns (controller)          netns <p>br                 netns <p>h<i>   (i = 1..N)
    veth brc<name>0 10.77.0.1/24 --- ctl ] br0 [ h<i> ----------- eth0 10.77.0.<10+i>/24
                                                                  fd00:bc:77::<10+i>/64

where <p> is ``brc<name>-``.  Each host's first process is started as
``ip netns exec <p>h<i> unshare --uts --pid --fork --mount-proc --mount sh init.sh``; init.sh
sets the hostname, mounts private tmpfs over the directories hosts must not share, starts
redis-server and execs the host's own sshd.  Every ssh session is a child of that sshd, so it
shares the host's mount namespace (a bpffs mounted in one task is there in the next, and only
on that host).  ``Lab.exec`` joins the same namespaces with nsenter.

Only the lab's own /24 is used, only inside namespaces the lab creates; the root namespace gets
one veth whose connected route is the only route added. Hosts also get a unique-local IPv6
address (fd00:bc:<second octet of the /24>::/64), so IPv6 clients can be tried between them;
the controller's veth has IPv6 disabled, so it never leaves the lab's namespaces.  ``down`` removes every namespace, link,
process (by PID) and file the lab created, also after a crash or a half-finished ``up``.

Stdlib only: the CLI (``labctl``) runs under any python3 on the machine.
"""
import fcntl
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

# The lab's other modules, each one job; names tests and labctl import from brclab stay here.
from lab_files import (LAB_DIR, STATE_ROOT, _ensure_dirs, _record_created_dirs,  # noqa: F401
                       _remove_created_dirs_if_last, _tail, _write)
from lab_hostconf import INVENTORY_HEADER, PRIVATE_DIRS, HostConfig  # noqa: F401
from lab_procs import (REDIS_PORT, SSH_PORT, LabError, _alive, _all_pids, _cmdline,  # noqa: F401
                       _kill, _link_exists, _listening, _netns_id, _netns_of, _probe_redis,
                       _probe_ssh, _proc_stat, _require_root, _run, list_netns)

REPO = os.path.dirname(LAB_DIR)
# Namespaces, links and routes are machine-wide, so the lock that serialises up/down (and the
# test fixtures' leases on lab names) is too: it holds for every checkout on this machine.
LOCK_DIR = "/run/lock/brclab" if os.path.isdir("/run/lock") else STATE_ROOT
DEFAULT_NAME = "lab"
DEFAULT_INVENTORY = os.path.join(REPO, "inventory", "lab", "hosts.yml")

# Fixed subnets for the names people and tests use, so two labs never share a /24 and the
# default lab is always 10.77.0.0/24.  Other names get one derived from a CRC of the name
# (checked against the machine's routes before use), or an explicit --subnet.
SUBNETS = {"lab": "10.77.0.0/24"}
SUBNETS.update({"t%d" % i: "10.%d.0.0/24" % (77 + i) for i in range(1, 10)})   # 78..86
SUBNETS.update({"l%d" % i: "10.%d.0.0/24" % (86 + i) for i in range(1, 4)})    # 87..89
SUBNETS.update({"s%d" % i: "10.%d.0.0/24" % (89 + i) for i in range(1, 4)})    # 90..92
DERIVED_SECOND_OCTETS = (100, 200)   # derived subnets: 10.100.0.0/24 .. 10.199.0.0/24

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
MAX_HOSTS = 64
HOST_ADDR_OFFSET = 10

# What an ssh session on a host gets (sshd's compiled-in default PATH); Lab.exec uses the same.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Bounds for every wait (seconds).
LOCK_WAIT = 120.0
START_WAIT = 10.0      # launcher -> host first process visible
READY_WAIT = 30.0      # host first process -> sshd and redis answering
KILL_WAIT = 10.0


class Host:
    """One lab host as recorded in lab.json."""

    def __init__(self, name, index, addr, netns, pid=None, pid_start=None,
                 launcher_pid=None, launcher_start=None):
        self.name = name
        self.index = index
        self.addr = addr
        self.netns = netns
        self.pid = pid                    # host's first process (PID 1 inside it), root-ns PID
        self.pid_start = pid_start        # its start time, to never signal a reused PID
        self.launcher_pid = launcher_pid  # the `unshare` parent that waits for it
        self.launcher_start = launcher_start
        self.ssh_port = SSH_PORT
        self.redis_port = REDIS_PORT

    def to_dict(self):
        return {k: getattr(self, k) for k in
                ("name", "index", "addr", "netns", "pid", "pid_start", "launcher_pid",
                 "launcher_start")}

    def __repr__(self):
        return "Host(%s %s netns=%s pid=%s)" % (self.name, self.addr, self.netns, self.pid)


def _stderr_log(msg):
    print("labctl: %s" % msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the lab

class Lab(HostConfig):
    """A named lab.  All state lives under lab/.state/<name>/; see the module doc."""

    def __init__(self, name=DEFAULT_NAME, subnet=None, log=None):
        if not NAME_RE.match(name or ""):
            raise LabError("lab name %r: use 1-6 characters, a lowercase letter then letters "
                           "or digits" % (name,))
        self.name = name
        self.log = log or _stderr_log
        self.prefix = "brc%s-" % name
        self.bridge_netns = self.prefix + "br"
        self.veth = "brc%s0" % name
        self.state_dir = os.path.join(STATE_ROOT, name)
        self.state_file = os.path.join(self.state_dir, "lab.json")
        self.inventory_path = (DEFAULT_INVENTORY if name == DEFAULT_NAME
                               else os.path.join(self.state_dir, "hosts.yml"))
        self.ssh_key = os.path.join(self.state_dir, "id_ed25519")
        self.known_hosts = os.path.join(self.state_dir, "known_hosts")
        self.log_dir = os.path.join(self.state_dir, "logs")
        self._launchers = {}    # pid -> Popen, for launchers this process started (reaped here)
        state = self._load()
        if subnet is None:
            subnet = state["subnet"] if state else self.default_subnet(name)
        net = ipaddress.ip_network(subnet, strict=True)
        if net.version != 4 or net.prefixlen != 24 or not net.subnet_of(
                ipaddress.ip_network("10.0.0.0/8")):
            raise LabError("subnet %s: the lab needs a /24 inside 10.0.0.0/8" % subnet)
        self.subnet = str(net)
        self._net = net
        self.controller_addr = str(net[1])

    # ------------------------------------------------------------------ naming

    @staticmethod
    def default_subnet(name):
        if name in SUBNETS:
            return SUBNETS[name]
        lo, hi = DERIVED_SECOND_OCTETS
        return "10.%d.0.0/24" % (lo + zlib.crc32(name.encode()) % (hi - lo))

    def host_addr(self, index):
        return str(self._net[HOST_ADDR_OFFSET + index])

    def host_addr6(self, index):
        """The host's unique-local IPv6 address (its /24's second octet names the /64)."""
        return "fd00:bc:%d::%d" % (self._net.network_address.packed[1], HOST_ADDR_OFFSET + index)

    def host_netns(self, index):
        return "%sh%d" % (self.prefix, index)

    # ------------------------------------------------------------------ state

    def _load(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _save(self, state):
        _write(self.state_file, json.dumps(state, indent=2) + "\n", 0o600)

    @property
    def hosts(self):
        state = self._load()
        return [Host(**h) for h in state["hosts"]] if state else []

    def host(self, name):
        for h in self.hosts:
            if name in (h.name, h.netns, h.addr, str(h.index)):
                return h
        raise LabError("lab %r has no host %r (hosts: %s)" % (
            self.name, name, ", ".join(h.name for h in self.hosts) or "none, it is down"))

    def _present_netns(self):
        return [n for n in list_netns() if n.startswith(self.prefix)]

    def inspect(self, probe=False):
        """What is there: {'state': 'up'|'down'|'stale', 'problems': [...], 'hosts': [...]}.

        'stale' means something of the lab exists but it is not a complete running lab
        (crashed, killed, half-finished up); `up` and `down` both clean that up.
        With probe=True each host's ssh banner and redis PING are checked over the network.
        """
        state = self._load()
        present = self._present_netns()
        veth = _link_exists(self.veth)
        problems = []
        hosts = []
        if not state and not present and not veth:
            return {"state": "down", "problems": [], "hosts": [], "netns": [], "veth": False}
        if not state:
            problems.append("no lab.json")
        else:
            if not state.get("ready"):
                problems.append("up did not finish")
            if state["bridge_netns"] not in present:
                problems.append("bridge namespace %s missing" % state["bridge_netns"])
            if not veth:
                problems.append("veth %s missing" % self.veth)
            for h in state["hosts"]:
                host = Host(**h)
                info = {"host": host, "alive": _alive(host.pid, host.pid_start)}
                if host.netns not in present:
                    problems.append("%s: namespace %s missing" % (host.name, host.netns))
                elif info["alive"] and _netns_of(host.pid) != _netns_id(host.netns):
                    info["alive"] = False
                if not info["alive"]:
                    problems.append("%s: process %s gone" % (host.name, host.pid))
                if probe and info["alive"]:
                    info["ssh"] = _probe_ssh(host.addr)
                    info["redis"] = _probe_redis(host.addr)
                    if not info["ssh"]:
                        problems.append("%s: sshd not answering" % host.name)
                    if not info["redis"]:
                        problems.append("%s: redis not answering" % host.name)
                hosts.append(info)
        return {"state": "stale" if problems else "up", "problems": problems, "hosts": hosts,
                "netns": present, "veth": veth}

    def is_up(self):
        return self.inspect()["state"] == "up"

    # ------------------------------------------------------------------ locking

    def _lock(self):
        """Serialise up/down across processes (one lock for all labs: they share routes)."""
        os.makedirs(LOCK_DIR, exist_ok=True)
        fd = os.open(os.path.join(LOCK_DIR, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _Locked(fd)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LabError("another labctl has held %s/lock for %ds; try again" % (
                        LOCK_DIR, LOCK_WAIT))
                time.sleep(0.1)

    # ------------------------------------------------------------------ up

    def up(self, n=3):
        """Bring the lab up with n hosts.  Returns 'started' or 'already up'.

        Same host count on a running lab: no-op.  Different count: LabError (down first).
        A stale lab (see inspect) is torn down first.
        """
        if not isinstance(n, int) or not 1 <= n <= MAX_HOSTS:
            raise LabError("--hosts %r: use 1..%d" % (n, MAX_HOSTS))
        _require_root()
        with self._lock():
            info = self.inspect()
            if info["state"] == "up":
                have = len(info["hosts"])
                if have == n:
                    if not os.path.exists(self.inventory_path):
                        self._write_inventory(self.hosts)
                    self.log("lab %r is already up with %d hosts; nothing to do" % (self.name, n))
                    return "already up"
                raise LabError("lab %r is up with %d hosts, not %d: run `make lab-down` "
                               "(or `labctl down --name %s`) first" % (self.name, have, n,
                                                                        self.name))
            if info["state"] == "stale":
                self.log("lab %r is stale (%s); cleaning it up first" % (
                    self.name, "; ".join(info["problems"][:4])))
                self._teardown()
            self._check_subnet_free()
            t0 = time.monotonic()
            try:
                self._build(n)
            except BaseException:
                self.log("lab %r: up failed; removing what was made" % self.name)
                try:
                    self._teardown()
                except Exception as exc:   # report the original failure, not this one
                    self.log("cleanup after failed up: %s" % exc)
                raise
            self.log("lab %r up: %d hosts on %s in %.2fs; inventory %s" % (
                self.name, n, self.subnet, time.monotonic() - t0, self.inventory_path))
            return "started"

    def _check_subnet_free(self):
        """Refuse a /24 that the root namespace already routes or addresses, or another lab uses."""
        for kind in ("route", "addr"):
            out = _run(["ip", "-j", "-4", kind, "show"] + (["table", "all"] if kind == "route"
                                                           else [])).stdout
            for entry in json.loads(out or "[]"):
                prefixes = []
                if kind == "route":
                    if entry.get("dst") and entry["dst"] != "default":
                        prefixes.append(entry["dst"])
                else:
                    prefixes += ["%s/%s" % (a["local"], a["prefixlen"])
                                 for a in entry.get("addr_info", []) if a.get("local")]
                for p in prefixes:
                    try:
                        other = ipaddress.ip_network(p, strict=False)
                    except ValueError:
                        continue
                    if other.overlaps(self._net):
                        raise LabError("subnet %s overlaps %s %s already on this machine; "
                                       "pick another with --subnet" % (self.subnet, kind, p))
        if os.path.isdir(STATE_ROOT):
            for other in os.listdir(STATE_ROOT):
                if other == self.name:
                    continue
                try:
                    with open(os.path.join(STATE_ROOT, other, "lab.json")) as f:
                        if json.load(f)["subnet"] == self.subnet:
                            raise LabError("lab %r already uses %s; pick another with --subnet"
                                           % (other, self.subnet))
                except (OSError, ValueError, KeyError):
                    pass

    def _build(self, n):
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        hosts = [Host("redis%d" % i, i, self.host_addr(i), self.host_netns(i))
                 for i in range(1, n + 1)]
        state = {"name": self.name, "subnet": self.subnet, "controller_addr": self.controller_addr,
                 "veth": self.veth, "bridge_netns": self.bridge_netns, "ready": False,
                 "inventory": self.inventory_path, "created_at": time.time(),
                 "hosts": [h.to_dict() for h in hosts]}
        self._save(state)   # from here on a crash leaves a record for down

        self._make_keys(hosts)
        created = _ensure_dirs(PRIVATE_DIRS)
        if created:
            _record_created_dirs(created)

        # Network: namespaces, bridge, one veth per host, and the controller's veth.
        for ns in [self.bridge_netns] + [h.netns for h in hosts]:
            _run(["ip", "netns", "add", ns])
        batch = ["link set lo up", "link add br0 type bridge forward_delay 0 stp_state 0",
                 "link set br0 up"]
        for h in hosts:
            batch += ["link add h%d type veth peer name eth0 netns %s" % (h.index, h.netns),
                      "link set h%d master br0" % h.index, "link set h%d up" % h.index]
        _run(["ip", "-n", self.bridge_netns, "-batch", "-"], input="\n".join(batch) + "\n")
        for h in hosts:
            _run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join([
                "link set lo up", "addr add %s/24 dev eth0" % h.addr,
                "addr add %s/64 dev eth0 nodad" % self.host_addr6(h.index), "link set eth0 up"]) + "\n")
        _run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "ctl",
              "netns", self.bridge_netns])
        try:   # no IPv6 chatter from the root namespace into the lab
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % self.veth, "w") as f:
                f.write("1")
        except OSError:
            pass
        _run(["ip", "-n", self.bridge_netns, "-batch", "-"],
             input="link set ctl master br0\nlink set ctl up\n")
        _run(["ip", "addr", "add", "%s/24" % self.controller_addr, "dev", self.veth])
        _run(["ip", "link", "set", self.veth, "up"])

        # Hosts: config files, then one process tree each.
        for h in hosts:
            self._write_host_files(h)
        for h in hosts:
            hdir = os.path.join(self.state_dir, h.name)
            logf = open(os.path.join(self.log_dir, "%s.log" % h.name), "ab")
            try:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", h.netns, "unshare", "--uts", "--pid", "--fork",
                     "--mount-proc", "--mount", "--propagation", "private",
                     "/bin/sh", os.path.join(hdir, "init.sh")],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, cwd="/")
            finally:
                logf.close()
            self._launchers[proc.pid] = proc
            h.launcher_pid = proc.pid
            st = _proc_stat(proc.pid)
            h.launcher_start = st[2] if st else None
        state["hosts"] = [h.to_dict() for h in hosts]
        self._save(state)
        self._find_first_processes(hosts)
        state["hosts"] = [h.to_dict() for h in hosts]
        self._save(state)
        self._wait_ready(hosts)
        self._write_inventory(hosts)
        state["ready"] = True
        self._save(state)


    def _find_first_processes(self, hosts):
        """Each launcher (unshare, in the host netns) forks the host's first process."""
        want = {h.launcher_pid: h for h in hosts}
        deadline = time.monotonic() + START_WAIT
        while want:
            for pid in _all_pids():
                st = _proc_stat(pid)
                if st and st[1] in want:
                    h = want.pop(st[1])
                    h.pid, h.pid_start = pid, st[2]
            for lpid, h in list(want.items()):
                if not _alive(lpid):
                    raise LabError("host %s: launcher exited early:\n%s" % (
                        h.name, _tail(os.path.join(self.log_dir, h.name + ".log"))))
            if want and time.monotonic() > deadline:
                raise LabError("hosts %s did not start within %ds" % (
                    ", ".join(h.name for h in want.values()), START_WAIT))
            if want:
                time.sleep(0.01)

    def _wait_ready(self, hosts):
        pending = {(h.name, port): h for h in hosts for port in (SSH_PORT, REDIS_PORT)}
        deadline = time.monotonic() + READY_WAIT
        while pending:
            for (name, port), h in list(pending.items()):
                if not _alive(h.pid, h.pid_start):
                    raise LabError("host %s exited during start-up:\n%s" % (
                        name, _tail(os.path.join(self.log_dir, name + ".log"))))
                if _listening(h.pid, port):
                    del pending[(name, port)]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise LabError("not listening after %ds: %s" % (READY_WAIT, ", ".join(
                    "%s:%d" % k for k in sorted(pending))))
            time.sleep(0.01)
        # One real round trip each, from this (the controller's) namespace through the bridge.
        for h in hosts:
            if not _probe_ssh(h.addr):
                raise LabError("host %s: no ssh banner from %s:22 through %s" % (
                    h.name, h.addr, self.veth))
            if not _probe_redis(h.addr):
                raise LabError("host %s: no redis PONG from %s:6379" % (h.name, h.addr))


    # ------------------------------------------------------------------ down

    def down(self):
        """Remove everything of this lab.  Returns True when there was something to remove."""
        _require_root()
        with self._lock():
            return self._teardown()

    def _teardown(self):
        state = self._load()
        names = set(self._present_netns())
        recorded = []
        if state:
            names.add(state["bridge_netns"])
            recorded = [Host(**h) for h in state["hosts"]]
            names.update(h.netns for h in recorded)
        names = {n for n in names if n in list_netns()}
        ours = {_netns_id(n) for n in names} - {None}
        found = bool(names or state or _link_exists(self.veth) or os.path.exists(self.state_dir)
                     or self._own_inventory())

        # 1. Processes.  Killing a host's first process (PID 1 of its pid namespace) takes every
        #    process of that namespace with it (redis, sshd, ssh sessions, nsenter'd commands).
        #    `unshare --fork` ignores SIGTERM, hence SIGKILL.  Only recorded PIDs whose start
        #    time matches are signalled, then anything still inside this lab's namespaces.
        for h in recorded:
            if _alive(h.pid, h.pid_start):
                _kill(h.pid)
        # Their launchers exit by themselves once the first process is gone.
        self._wait_gone([h.launcher_pid for h in recorded if h.launcher_pid and h.pid], 3.0)
        deadline = time.monotonic() + KILL_WAIT
        while True:
            stray = [p for p in _all_pids() if _alive(p) and _netns_of(p) in ours]
            if not stray:
                break
            if time.monotonic() > deadline:
                raise LabError("processes still in lab %r namespaces after %ds: %s" % (
                    self.name, KILL_WAIT, ", ".join("%d (%s)" % (p, _cmdline(p)[:60])
                                                      for p in stray)))
            for p in stray:
                if _netns_of(p) in ours:
                    _kill(p)
            self._reap()
            time.sleep(0.02)
        self._reap()

        # 2. Links and namespaces.  Deleting the controller veth removes its route.
        if _link_exists(self.veth):
            _run(["ip", "link", "del", self.veth], check=False)
        hosts_first = sorted(names, key=lambda n: n == self.bridge_netns)
        for ns in hosts_first:
            _run(["ip", "netns", "del", ns], check=False)

        # 3. Files.
        if self._own_inventory():
            os.unlink(self.inventory_path)
        if os.path.isdir(self.state_dir):
            shutil.rmtree(self.state_dir)
        _remove_created_dirs_if_last()

        left = self._present_netns() + ([self.veth] if _link_exists(self.veth) else [])
        if left:
            raise LabError("lab %r: could not remove %s" % (self.name, ", ".join(left)))
        if found:
            self.log("lab %r down" % self.name)
        return found


    def _reap(self):
        for pid, proc in list(self._launchers.items()):
            if proc.poll() is not None:
                del self._launchers[pid]

    def _wait_gone(self, pids, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            left = [p for p in pids if _alive(p)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.01)

    # ------------------------------------------------------------------ exec

    def ansible_env(self, **extra):
        """Environment for ansible / ansible-playbook run against this lab from the repo
        (its ansible.cfg, this lab's inventory, the project's .venv first on PATH)."""
        env = dict(os.environ)
        env.update({
            "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
            "ANSIBLE_INVENTORY": self.inventory_path,
            "PATH": os.path.join(REPO, ".venv", "bin") + os.pathsep + env.get("PATH", ""),
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_NOCOLOR": "True",
        })
        env.update(extra)
        return env

    def exec(self, host_name, argv, **kwargs):
        """Run argv inside a host's namespaces (mount, net, uts, pid), as its ssh sessions see
        them.  argv may be a string (run with /bin/sh -c).  kwargs go to subprocess.run;
        by default cwd is / and env is host_env() (PATH and HOME as in an ssh session)."""
        h = self.host(host_name)
        if not _alive(h.pid, h.pid_start):
            raise LabError("host %s of lab %r is not running (run labctl status)" % (
                h.name, self.name))
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        kwargs.setdefault("cwd", "/")
        kwargs.setdefault("env", host_env())
        return subprocess.run(self.exec_argv(h) + list(argv), **kwargs)

    def ssh_argv(self, host_name, *options):
        """argv prefix for a plain ssh session to a host, as the inventory connects (host keys
        checked against the lab's known_hosts), without connection sharing."""
        h = self.host(host_name)
        argv = ["ssh", "-i", self.ssh_key, "-o", "UserKnownHostsFile=%s" % self.known_hosts,
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=10"]
        for opt in options:
            argv += ["-o", opt]
        return argv + ["root@%s" % h.addr]

    def exec_argv(self, host):
        h = host if isinstance(host, Host) else self.host(host)
        return ["nsenter", "-t", str(h.pid), "-m", "-n", "-u", "-p", "--"]


def host_env(environ=None):
    """The environment for a command run inside a host: the caller's, minus virtualenv and
    pyenv settings, with the PATH and HOME an ssh session on the host gets."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if not k.startswith(("VIRTUAL_ENV", "PYENV", "PYTHONHOME", "PYTHONPATH"))}
    env.update(PATH=HOST_PATH, HOME="/root")
    return env


class _Locked:
    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


