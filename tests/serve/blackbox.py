"""Black-box helpers for the serve lab (tests/serve/serve_lab.py): RESP clients opened
in a namespace, the truth read over loopback inside the server namespace (BRC never
sees `lo`), counter deltas, and context managers that change Redis, sysctls, addresses
and devices for a test and restore them on the way out, also on failure.

Only what a test created is touched: its own addresses, devices, processes (by PID).
"""
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from contextlib import contextmanager

from brc_attach import in_netns  # noqa: F401 (re-exported)
from checker import ProtocolError, RedisError, RespConnection, Stall  # noqa: F401 (re-exported)
from serve_lab import PORT

TIMEOUT = 5.0
MSG_FASTOPEN = getattr(socket, "MSG_FASTOPEN", 0x20000000)


# --------------------------------------------------------------------------- clients

class Client(RespConnection):
    """checker.RespConnection on a socket made here: opened in a namespace, with socket
    options set before connect, optionally sending its first bytes in the SYN (TFO)."""

    def __init__(self, sock):           # pylint: disable=super-init-not-called
        self.sock, self.buf = sock, b""

    @classmethod
    def open(cls, netns, host, port=PORT, timeout=TIMEOUT, sockopts=(), tfo_data=None):
        """netns None: the calling thread's namespace (setns costs milliseconds: a
        thread opening many connections enters the namespace once, see in_netns)."""
        if netns is None:
            return cls._open(host, port, timeout, sockopts, tfo_data)
        with in_netns(netns):
            return cls._open(host, port, timeout, sockopts, tfo_data)

    @classmethod
    def _open(cls, host, port, timeout, sockopts, tfo_data):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for opt in sockopts:
                s.setsockopt(*opt)
            if tfo_data is not None:
                s.sendto(tfo_data, MSG_FASTOPEN, (host, port))
            else:
                s.connect((host, port))
        except BaseException:
            s.close()
            raise
        return cls(s)

    def send(self, raw):
        self.sock.sendall(raw)

    def replies(self, n):
        return [self.read_reply() for _ in range(n)]

    def local_port(self):
        return self.sock.getsockname()[1]

    def reset(self):
        """Close with a RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def client(lab, host=None, **kw):
    """A connection from the client namespace through BRC (to the lab's Redis by default)."""
    return Client.open(lab.pair.client, host or lab.pair.server_ip, **kw)


def truth(lab, password=None, host=None, port=PORT):
    """A connection inside the server namespace to the Redis address: it goes over `lo`,
    which BRC never sees. What it reads is what Redis holds."""
    c = Client.open(lab.pair.server, host or lab.pair.server_ip, port=port)
    if password:
        ok(c.call("AUTH", password))
    return c


def ok(reply, what=""):
    assert reply == "OK", "%s: %r" % (what, reply)
    return reply


def is_error(reply, prefix):
    return isinstance(reply, RedisError) and reply.startswith(prefix)


def as_bytes(value):
    return value if isinstance(value, bytes) else str(value).encode()


# --------------------------------------------------------------------------- counters

class Delta:
    """Counter deltas over a block: `with Delta(lab) as d: ...; d["hit"]`; d.now() inside."""

    def __init__(self, lab):
        self.lab, self.before, self.d = lab, None, {}

    def __enter__(self):
        self.before = self.lab.counters()
        return self

    def now(self):
        return self.lab.delta(self.lab.counters(), self.before)

    def __exit__(self, *exc):
        self.d = self.now()
        return False

    def __getitem__(self, name):
        return self.d.get(name, 0)

    def __repr__(self):
        return repr(self.d)


def warm(lab, c, key, value, tries=40, pause=0.05):
    """GET key on c until the kernel answers one (bounded), checking every reply is
    value. Returns the number of hits seen (>= 1 or the assertion fails)."""
    key, value = as_bytes(key), as_bytes(value)
    with Delta(lab) as total:
        for _ in range(tries):
            with Delta(lab) as d:
                got = c.call("GET", key)
            assert got == value, "GET %r: %r, Redis holds %r" % (key, got, value)
            if d["hit"]:
                return d["hit"]
            time.sleep(pause)
    raise AssertionError("no GET of %r was answered in the kernel in %d tries; counters moved: %r"
                         % (key, tries, total.d))


def set_hot(lab, c, key, value):
    """SET key value through c, then warm() it: the kernel answers its GETs from now on."""
    ok(c.call("SET", key, value))
    return warm(lab, c, key, value)


def gets_answered(lab, c, key, n):
    """n GETs on c; returns (replies, hits)."""
    with Delta(lab) as d:
        got = [c.call("GET", key) for _ in range(n)]
    return got, d["hit"]


# --------------------------------------------------------------------------- restoring state

def sh(cmd, netns=None, check=True, timeout=30):
    if netns:
        cmd = ["ip", "netns", "exec", netns] + list(cmd)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       universal_newlines=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout


@contextmanager
def config(lab, name, value, password=None):
    """CONFIG SET over loopback (BRC does not see it), restored on exit."""
    with truth(lab, password) as t:
        old = t.call("CONFIG", "GET", name)[1]
        ok(t.call("CONFIG", "SET", name, value), "CONFIG SET %s" % name)
    try:
        yield old
    finally:
        with truth(lab, password) as t:
            ok(t.call("CONFIG", "SET", name, old), "restore %s" % name)


@contextmanager
def redis_bind(lab, *extra):
    """The lab's Redis also listens on extra addresses (CONFIG SET bind re-listens;
    established connections stay)."""
    with config(lab, "bind", " ".join((lab.pair.server_ip,) + extra)):
        yield


@contextmanager
def sysctl(netns, name, value):
    path = "/proc/sys/" + name.replace(".", "/")
    old = sh(["cat", path], netns).strip()
    sh(["sysctl", "-q", "-w", "%s=%s" % (name, value)], netns)
    try:
        yield old
    finally:
        sh(["sysctl", "-q", "-w", "%s=%s" % (name, old.replace("\t", " "))], netns)


@contextmanager
def address(netns, dev, cidr, v6=False):
    cmd = ["ip"] + (["-6"] if v6 else []) + ["addr", "add", cidr, "dev", dev] + (["nodad"] if v6 else [])
    sh(cmd, netns)
    try:
        yield
    finally:
        sh(["ip"] + (["-6"] if v6 else []) + ["addr", "del", cidr, "dev", dev], netns, check=False)


@contextmanager
def redis_server(netns, addr, port=PORT, ping_from=None):
    """Another redis-server in netns bound to addr; killed by PID, its dir removed."""
    workdir = tempfile.mkdtemp(prefix="brc-bb-redis-")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "redis-server", "--bind", addr, "--port",
                             str(port), "--save", "", "--appendonly", "no", "--protected-mode", "no",
                             "--dir", workdir, "--daemonize", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server on %s exited with %s" % (addr, proc.returncode)
            r = subprocess.run(["ip", "netns", "exec", ping_from or netns, "redis-cli", "-h", addr, "-p",
                                str(port), "ping"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               timeout=10)
            if r.stdout.strip() == b"PONG":
                break
            assert time.monotonic() < deadline, "redis-server on %s did not answer" % addr
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        subprocess.run(["rm", "-rf", workdir])


@contextmanager
def requirepass(lab, password):
    """requirepass set over loopback (as at deploy) and loaded; restored and reloaded on exit."""
    with truth(lab) as t:
        ok(t.call("CONFIG", "SET", "requirepass", password))
    try:
        lab.refresh_auth(password=password)
        yield
    finally:
        restore_open_default(lab, password)


def restore_open_default(lab, *passwords):
    """Make the default user nopass again (whatever password it has of these) and reload."""
    last = None
    for pw in (None,) + tuple(p for p in passwords if p):
        try:
            with truth(lab, pw) as t:
                if pw is None and is_error(t.call("PING"), "NOAUTH"):
                    continue
                ok(t.call("CONFIG", "SET", "requirepass", ""))
                break
        except AssertionError as e:
            last = e
    else:
        raise AssertionError("could not restore requirepass: %s" % last)
    lab.refresh_auth()


# --------------------------------------------------------------------------- devices

def ethtool_feature(netns, dev, name):
    """'on'/'off' of an ethtool -k feature (e.g. tx-vlan-offload)."""
    for line in sh(["ethtool", "-k", dev], netns).splitlines():
        k, _, v = line.strip().partition(":")
        if k == name:
            return v.split()[0]
    raise AssertionError("ethtool -k %s has no %s" % (dev, name))


@contextmanager
def ethtool(netns, dev, short, long_name, value):
    """ethtool -K dev <short> value, restored on exit."""
    old = ethtool_feature(netns, dev, long_name)
    sh(["ethtool", "-K", dev, short, value], netns)
    try:
        yield old
    finally:
        sh(["ethtool", "-K", dev, short, old], netns, check=False)


# rtnetlink, for what iproute2 6.1 and pyroute2 cannot set (BIG TCP's IPv4 sizes)
IFLA_GSO_MAX_SIZE, IFLA_GRO_MAX_SIZE = 41, 58
IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE = 63, 64
SIZE_ATTRS = {"gso_max_size": IFLA_GSO_MAX_SIZE, "gro_max_size": IFLA_GRO_MAX_SIZE,
              "gso_ipv4_max_size": IFLA_GSO_IPV4_MAX_SIZE, "gro_ipv4_max_size": IFLA_GRO_IPV4_MAX_SIZE}
RTM_NEWLINK, RTM_GETLINK = 16, 18
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def _rtnl(netns, msg_type, index, attrs=()):
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    for kind, value in attrs:
        body += struct.pack("HHI", 8, kind, value)
    hdr = struct.pack("IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    with in_netns(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    try:
        s.settimeout(5)
        s.sendto(hdr + body, (0, 0))
        out = {}
        while True:
            data = s.recv(65536)
            off = 0
            while off < len(data):
                ln, typ = struct.unpack_from("IH", data, off)
                if typ == NLMSG_ERROR:
                    err = struct.unpack_from("i", data, off + 16)[0]
                    if err:
                        raise OSError(-err, "rtnetlink: %s" % os.strerror(-err))
                    return out
                if typ == RTM_NEWLINK:
                    a = off + 16 + 16
                    while a < off + ln:
                        alen, akind = struct.unpack_from("HH", data, a)
                        if alen < 4:
                            break
                        if akind in SIZE_ATTRS.values() and alen == 8:
                            out[akind] = struct.unpack_from("I", data, a + 4)[0]
                        a += (alen + 3) & ~3
                off += (ln + 3) & ~3
    finally:
        s.close()


def link_sizes(netns, dev):
    index = int(sh(["cat", "/sys/class/net/%s/ifindex" % dev], netns))
    got = _rtnl(netns, RTM_GETLINK, index)
    return dict((name, got.get(kind)) for name, kind in SIZE_ATTRS.items())


def set_link_sizes(netns, dev, **sizes):
    index = int(sh(["cat", "/sys/class/net/%s/ifindex" % dev], netns))
    # gso_max_size first: the IPv4 size may not exceed it (and the other way on the way down)
    order = sorted(sizes.items(), key=lambda kv: kv[0].find("ipv4") >= 0)
    if any(v < 65536 for v in sizes.values()):
        order.reverse()
    for name, value in order:
        _rtnl(netns, RTM_NEWLINK, index, [(SIZE_ATTRS[name], value)])
    return link_sizes(netns, dev)


@contextmanager
def link_sizes_set(netns, dev, **sizes):
    old = link_sizes(netns, dev)
    missing = [n for n in sizes if old.get(n) is None]
    assert not missing, "this kernel does not report %s on %s" % (missing, dev)
    try:
        yield set_link_sizes(netns, dev, **sizes)
    finally:
        back = set_link_sizes(netns, dev, **dict((n, old[n]) for n in sizes))
        assert back == old, "%s: sizes %r not restored to %r" % (dev, back, old)


class Sniffer:
    """An AF_PACKET socket on dev (in netns) that notes the largest frame leaving it."""

    ETH_P_ALL = 3
    PACKET_OUTGOING = 4

    def __init__(self, netns, dev):
        with in_netns(netns):
            self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.ETH_P_ALL))
        self.s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)     # SO_RCVBUFFORCE
        self.s.bind((dev, 0))
        self.s.setblocking(False)
        self.largest = 0

    def drain(self, limit=200000):
        for _ in range(limit):
            try:
                data, addr = self.s.recvfrom(262144, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            if addr[2] == self.PACKET_OUTGOING:
                self.largest = max(self.largest, len(data) if isinstance(data, bytes) else data)
        return self.largest

    def close(self):
        self.s.close()


# --------------------------------------------------------------------------- raw packets

def raw_send(netns, ip_packet, dst):
    """Send an IPv4 packet as built (IP_HDRINCL) from netns."""
    with in_netns(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        s.sendto(ip_packet, (dst, 0))
    finally:
        s.close()


TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_SEND_QUEUE = 2
TCP_REPAIR_OFF_NO_WP = -1


def snd_nxt(sock):
    """The next sequence number this (idle) socket sends, read with TCP_REPAIR (root)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        return struct.unpack("I", sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ, 4))[0]
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for ch in data:
        h = ((h ^ ch) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def cpus():
    return sorted(os.sched_getaffinity(0))



# --------------------------------------------------------------------------- 802.1Q tags

# This kernel has no 802.1Q driver (CONFIG_VLAN_8021Q and act_vlan are off), so no vlan
# device can be made. Its stack still accepts priority-tagged frames (802.1Q, VID 0:
# the tag is stripped in __netif_receive_skb_core), so a small tc program tags the
# IPv4 frames a device sends, either in the frame bytes (push, push, pop: what a vlan
# device with reorder_hdr off hands its lower device) or in the skb's tag field (what
# a vlan device with reorder_hdr on does; veth writes it into the frame on the wire
# when txvlan is off).
VLAN_TAGGER_C = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/pkt_cls.h>

BPF_ARRAY(bb_tagged, u64, 1);

static __always_inline int tag(struct __sk_buff *skb, int in_frame)
{
	u32 zero = 0;
	u64 *n;

	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->vlan_present)
		return TC_ACT_UNSPEC;   /* one tag per frame; BRC's own replies keep theirs */
	if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), TCI))
		return TC_ACT_UNSPEC;
	if (in_frame) {
		/* a second push moves the first tag into the frame, the pop drops the second */
		if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), TCI) || bpf_skb_vlan_pop(skb))
			return TC_ACT_SHOT;
	}
	n = bb_tagged.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return TC_ACT_UNSPEC;       /* go on to the next filter (BRC's) */
}

int bb_tag_in_frame(struct __sk_buff *skb) { return tag(skb, 1); }
int bb_tag_in_skb(struct __sk_buff *skb) { return tag(skb, 0); }
"""
VLAN_TCI = 0x6000               # PCP 3, VID 0
TAGGER_HANDLE = 0xbb1
EGRESS = 0xfffffff3


class VlanTagger:
    """Tag the IPv4 frames leaving dev (in netns) with an 802.1Q VID 0 tag, in the
    frame (in_frame=True) or in the skb. The filter goes in the egress list at BRC's
    priority, where cls_bpf puts a new program first (checked with `tc filter show`),
    so BRC sees the frames tagged. Removed (and a clsact made here) on exit."""

    def __init__(self, netns, dev, in_frame, brc_handle=None):
        self.netns, self.dev, self.in_frame, self.brc_handle = netns, dev, in_frame, brc_handle
        self.bpf, self.ipr, self.made_clsact = None, None, False

    def __enter__(self):
        from bcc import BPF
        from pyroute2 import IPRoute
        try:
            self.bpf = BPF(text=VLAN_TAGGER_C.encode(), cflags=["-DTCI=%d" % VLAN_TCI])
            fn = self.bpf.load_func(b"bb_tag_in_frame" if self.in_frame else b"bb_tag_in_skb",
                                    BPF.SCHED_CLS)
            with in_netns(self.netns):
                self.ipr = IPRoute()
            idx = self.ipr.link_lookup(ifname=self.dev)[0]
            if "clsact" not in sh(["tc", "qdisc", "show", "dev", self.dev], self.netns):
                self.ipr.tc("add", "clsact", idx)
                self.made_clsact = True
            self.ipr.tc("add-filter", "bpf", idx, TAGGER_HANDLE, fd=fn.fd, name="bb_vlan_tag",
                        parent=EGRESS, classid=1, direct_action=True, prio=1)
            order = [l.split("handle ")[1].split()[0] for l in
                     sh(["tc", "filter", "show", "dev", self.dev, "egress"], self.netns).splitlines()
                     if "handle " in l]
            assert order and order[0] == hex(TAGGER_HANDLE), "the tagger does not run first: %s" % order
        except BaseException:
            self.__exit__()
            raise
        return self

    def tagged(self):
        t = self.bpf.get_table(b"bb_tagged")
        return int(t[t.Key(0)].value)

    def __exit__(self, *exc):
        if self.ipr is not None:
            idx = self.ipr.link_lookup(ifname=self.dev)[0]
            if self.made_clsact:
                self.ipr.tc("del", "clsact", idx)
            else:
                sh(["tc", "filter", "del", "dev", self.dev, "egress", "pref", "1", "handle",
                    hex(TAGGER_HANDLE), "bpf"], self.netns, check=False)
            self.ipr.close()
            self.ipr = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
        return False
