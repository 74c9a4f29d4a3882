#!/usr/bin/env python3
"""Network faults for a client network namespace: loss, reordering, offloads.

This kernel has no netem and no fq qdisc, so faults are made with netfilter:

  Loss       nftables table `brc_netfault` in the namespace. With a device (the default when
             the peer's route names one) it is a `netdev` table whose ingress and egress
             chains drop `numgen random mod 10000 < N` of the TCP segments of one port, i.e.
             real loss on the wire: the sender's TCP believes the segment left and must
             retransmit it. Without a device it falls back to an `inet` table on input and
             output; note that a drop at local output is reported back to the sending socket
             (-EPERM), which TCP treats as "try again later", not as loss.
             Counters: segments seen and dropped per direction.

  Reorder    iptables NFQUEUE (nftables has no `queue` statement here) in an own chain
             BRC_NETFAULT jumped to from OUTPUT (dport) and/or INPUT (sport), with
             --queue-bypass so that traffic flows on if no holder is bound. A holder speaks
             nfnetlink_queue over a raw AF_NETLINK socket (stdlib only): it binds the queue,
             copies 80 bytes per packet (headers only), accepts most packets at once and
             holds a fraction of the data-bearing ones for a few milliseconds in a bounded
             heap, so that later segments of the same flow overtake them. GSO packets are
             split by the kernel before queueing, so reordering is per MSS-sized segment.
             The holder runs as a subprocess (killed by PID), stops by itself after
             max_seconds, releases every held packet and removes its iptables rules.
             Out-of-order arrival is measured at the receiver: tcp_ext(netns)
             ["TCPOFOQueue"].

  Offloads   ethtool's legacy ioctls (SIOCETHTOOL) from Python, so the `ethtool` binary is
             not needed: tx/rx checksum, sg, tso, gso, gro; Offloads() restores on exit.

  IsnCounter handshakes counted by ISN half (below / at or above 2^31), client and server:
             ISNs cannot be chosen, so a test shows that both halves were exercised.

  NetnsPair  two namespaces joined by a veth, named after this process, for tests and bench.

Everything is removed on exit and only what this module created is touched: its own nft
table, its own iptables chain and the jumps to it, processes it started (by PID).

CLI (run as root):
  netfault.py loss    --netns NS --port 6379 --percent 2 [--peer IP | --device DEV] --seconds 30
  netfault.py reorder --netns NS --port 6379 --fraction 0.1 --delay-ms 4 --seconds 30
  netfault.py offload --netns NS --device DEV [--tx off] [--rx off] [--tso off] [--gro on] ...
  netfault.py isn     --netns NS --port 6379 --seconds 30
  netfault.py status  --netns NS
  netfault.py cleanup --netns NS
"""

import argparse
import ctypes
import errno
import fcntl
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

TABLE = "brc_netfault"
CHAIN = "BRC_NETFAULT"
HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------- helpers

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


def tcp_ext(netns=None):
    """TcpExt, Tcp and IpExt counters of a namespace as one flat dict
    ({'TCPOFOQueue': n, 'RetransSegs': n, ...}; Tcp ones also as 'Tcp.RetransSegs')."""
    out = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        text = sh(["cat", path], netns).stdout.splitlines()
        for head, vals in zip(text[0::2], text[1::2]):
            prefix, names = head.split(":", 1)
            _, values = vals.split(":", 1)
            for name, value in zip(names.split(), values.split()):
                try:
                    value = int(value)
                except ValueError:
                    continue
                out["%s.%s" % (prefix, name)] = value
                if prefix in ("TcpExt", "Tcp"):
                    out.setdefault(name, value)
    return out


class TcpDelta:
    """Counter deltas over the body, per namespace:

        with TcpDelta(pair.client, pair.server) as d:
            ...
        d.delta[pair.server]["TCPOFOQueue"], d.delta[pair.client]["RetransSegs"]
    """

    def __init__(self, *namespaces):
        self.namespaces = namespaces
        self.before, self.delta = {}, {}

    def __enter__(self):
        self.before = dict((ns, tcp_ext(ns)) for ns in self.namespaces)
        return self

    def __exit__(self, *exc):
        for ns in self.namespaces:
            after = tcp_ext(ns)
            self.delta[ns] = dict((k, after[k] - self.before[ns].get(k, 0)) for k in after)
        return False


def route_device(netns, peer):
    """The device a namespace uses to reach peer, e.g. 'brcnfc0'."""
    words = sh(["ip", "route", "get", peer], netns).stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else None


# --------------------------------------------------------------------------- namespaces

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


# --------------------------------------------------------------------------- loss

class Loss:
    """Random loss on one TCP port with nftables, as a context manager.

    Loss("brcnf-client", 2.0, port=6379, peer="10.67.0.2"): 2% of the port's segments are
    dropped in each direction at the client's device (netdev ingress/egress). direction is
    "both", "in" (server to client) or "out" (client to server).
    """

    def __init__(self, netns, percent, port, peer=None, device=None, direction="both",
                 table=TABLE, use_device=True):
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        self.netns, self.port, self.peer, self.table = netns, int(port), peer, table
        self.threshold = int(round(percent * 100))   # out of 10000
        self.percent = percent
        self.direction = direction
        self.device = device
        if use_device and not device and peer:
            self.device = route_device(netns, peer)
        self.family = "netdev" if self.device else "inet"

    def ruleset(self):
        ins, outs = [], []
        if self.family == "netdev":
            proto = "ip protocol tcp "
            peer_in = "ip saddr %s " % self.peer if self.peer else ""
            peer_out = "ip daddr %s " % self.peer if self.peer else ""
        else:
            proto = ""
            peer_in = "ip saddr %s " % self.peer if self.peer else ""
            peer_out = "ip daddr %s " % self.peer if self.peer else ""
        match_in = "%s%stcp sport %d" % (proto, peer_in, self.port)
        match_out = "%s%stcp dport %d" % (proto, peer_out, self.port)
        rnd = "numgen random mod 10000 < %d" % self.threshold
        if self.direction in ("both", "in"):
            ins = ['%s counter comment "seen-in"' % match_in,
                   '%s %s counter drop comment "drop-in"' % (match_in, rnd)]
        if self.direction in ("both", "out"):
            outs = ['%s counter comment "seen-out"' % match_out,
                    '%s %s counter drop comment "drop-out"' % (match_out, rnd)]
        if self.family == "netdev":
            hook_in = 'type filter hook ingress device "%s" priority -500; policy accept;' % self.device
            hook_out = 'type filter hook egress device "%s" priority -500; policy accept;' % self.device
        else:
            hook_in = "type filter hook input priority -500; policy accept;"
            hook_out = "type filter hook output priority -500; policy accept;"
        lines = ["table %s %s {" % (self.family, self.table)]
        for name, hook, rules in (("fault_in", hook_in, ins), ("fault_out", hook_out, outs)):
            if rules:
                lines += ["  chain %s {" % name, "    " + hook] + ["    " + r for r in rules] + ["  }"]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __enter__(self):
        remove_table(self.netns, self.family, self.table)
        sh(["nft", "-f", "-"], self.netns, input=self.ruleset())
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        remove_table(self.netns, self.family, self.table)

    def stats(self):
        """{'seen_in', 'drop_in', 'seen_out', 'drop_out'} packet counts."""
        return table_counters(self.netns, self.family, self.table)


def remove_table(netns, family, table=TABLE):
    """Delete our table if it exists (never anything else)."""
    listed = sh(["nft", "list", "tables", family], netns, check=False).stdout.split("\n")
    if "table %s %s" % (family, table) in [l.strip() for l in listed]:
        sh(["nft", "delete", "table", family, table], netns)


def table_counters(netns, family, table=TABLE):
    proc = sh(["nft", "-j", "list", "table", family, table], netns, check=False)
    if proc.returncode != 0:
        return {}
    out = {}
    for item in json.loads(proc.stdout)["nftables"]:
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:     # same comment in several chains: summed
                name = rule["comment"].replace("-", "_")
                out[name] = out.get(name, 0) + expr["counter"]["packets"]
    return out


# --------------------------------------------------------------------------- nfnetlink_queue

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_CFG_MASK, NFQA_CFG_FLAGS = 4, 5
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 1
NF_ACCEPT = 1


def _nla(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _nfmsg(msg, queue, attrs, seq=0, flags=NLM_F_REQUEST):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg,
                       flags, seq, 0) + body


def _attrs(data):
    out, off = {}, 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out[kind & 0x3fff] = data[off + 4:off + length]
        off += (length + 3) & ~3
    return out


class QueueHolder:
    """Bind one NFQUEUE number and issue verdicts, delaying a fraction of them.

    fraction   share of data-bearing segments (or of all, data_only=False) to hold back
    delay_ms   a held packet is released after uniform(delay_ms/2, delay_ms) ms
    max_held   bound of the heap; beyond it packets are accepted at once
    """

    def __init__(self, queue=0, fraction=0.1, delay_ms=4.0, max_held=256, data_only=True,
                 seed=None):
        self.queue, self.fraction, self.delay = queue, fraction, delay_ms / 1000.0
        self.max_held, self.data_only = max_held, data_only
        self.rng = random.Random(seed)
        self.held = []
        self.stats = {"seen": 0, "data": 0, "delayed": 0, "accepted": 0, "max_held": 0,
                      "enobufs": 0, "bound": False}
        self.sock = None
        self._seq = 0

    def _request(self, attrs):
        """Send a config message and wait for its ack; raise OSError on an error."""
        self._seq += 1
        self.sock.send(_nfmsg(NFQNL_MSG_CONFIG, self.queue, attrs, self._seq,
                              NLM_F_REQUEST | NLM_F_ACK))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _f, seq, _p = struct.unpack_from("=IHHII", data, off)
                if kind == NLMSG_ERROR and seq == self._seq:
                    code = struct.unpack_from("=i", data, off + 16)[0]
                    if code:
                        raise OSError(-code, "nfqueue config: %s" % os.strerror(-code))
                    return
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:   # early packet
                    early = []
                    self._on_packet(data[off + 16:off + length], time.monotonic(), early)
                    for msg in early:
                        self.sock.send(msg)
                off += (length + 3) & ~3
        raise OSError(errno.ETIMEDOUT, "no ack from nfnetlink_queue")

    def open(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)   # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self._request([_nla(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))])
        self._request([_nla(NFQA_CFG_PARAMS, struct.pack("!IB", 80, NFQNL_COPY_PACKET)),
                       _nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 8192)),
                       _nla(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
                       _nla(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))])
        self.sock.setblocking(False)
        self.stats["bound"] = True

    def _verdict(self, packet_id):
        return _nfmsg(NFQNL_MSG_VERDICT, self.queue,
                      [_nla(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))])

    def _on_packet(self, body, now, out):
        attrs = _attrs(body[4:])            # skip nfgenmsg
        hdr = attrs.get(NFQA_PACKET_HDR)
        if hdr is None:
            return
        packet_id = struct.unpack_from("!I", hdr)[0]
        self.stats["seen"] += 1
        payload = attrs.get(NFQA_PAYLOAD, b"")
        has_data = True
        if len(payload) >= 20 and payload[0] >> 4 == 4:
            ihl = (payload[0] & 15) * 4
            total = struct.unpack_from("!H", payload, 2)[0]
            if len(payload) >= ihl + 13:
                doff = (payload[ihl + 12] >> 4) * 4
                has_data = total - ihl - doff > 0
        if has_data:
            self.stats["data"] += 1
        if ((has_data or not self.data_only) and len(self.held) < self.max_held
                and self.rng.random() < self.fraction):
            due = now + self.rng.uniform(self.delay / 2, self.delay)
            heapq.heappush(self.held, (due, packet_id))
            self.stats["delayed"] += 1
            self.stats["max_held"] = max(self.stats["max_held"], len(self.held))
        else:
            out.append(self._verdict(packet_id))
            self.stats["accepted"] += 1

    def _send(self, msgs):
        # Several netlink messages in one datagram; keep each send well under 64 KiB.
        for i in range(0, len(msgs), 256):
            chunk = b"".join(msgs[i:i + 256])
            while True:
                try:
                    self.sock.send(chunk)
                    break
                except BlockingIOError:
                    select.select([], [self.sock], [], 0.01)

    def release_due(self, now, everything=False):
        out = []
        while self.held and (everything or self.held[0][0] <= now):
            _, packet_id = heapq.heappop(self.held)
            out.append(self._verdict(packet_id))
            self.stats["accepted"] += 1
        if out:
            self._send(out)

    def run(self, deadline, should_stop=lambda: False, on_tick=None, tick=0.25):
        """Serve verdicts until deadline (monotonic) or should_stop(); then release all."""
        next_tick = time.monotonic() + tick
        try:
            while True:
                now = time.monotonic()
                if now >= deadline or should_stop():
                    break
                wait = min(deadline - now, next_tick - now)
                if self.held:
                    wait = min(wait, max(0.0, self.held[0][0] - now))
                readable, _, _ = select.select([self.sock], [], [], max(0.0, wait))
                out = []
                if readable:
                    for _ in range(512):
                        try:
                            data = self.sock.recv(1 << 16)
                        except BlockingIOError:
                            break
                        except OSError as e:
                            if e.errno == errno.ENOBUFS:
                                self.stats["enobufs"] += 1
                                continue
                            raise
                        now = time.monotonic()
                        off = 0
                        while off + 16 <= len(data):
                            length, kind = struct.unpack_from("=IH", data, off)
                            if length < 16:
                                break
                            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                                self._on_packet(data[off + 16:off + length], now, out)
                            off += (length + 3) & ~3
                if out:
                    self._send(out)
                self.release_due(time.monotonic())
                if on_tick and time.monotonic() >= next_tick:
                    on_tick(self.stats)
                    next_tick = time.monotonic() + tick
        finally:
            self.close()
            if on_tick:
                on_tick(self.stats)

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.setblocking(True)
            self.release_due(0, everything=True)
            self.sock.send(_nfmsg(NFQNL_MSG_CONFIG, self.queue, [
                _nla(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_UNBIND, 0, 0))]))
        except OSError:
            pass
        self.sock.close()
        self.sock = None
        self.stats["bound"] = False


def _iptables(netns, *args, check=True):
    return sh(["iptables", "-w", "5"] + list(args), netns, check=check)


def install_queue_rules(netns, port, queue=0, direction="both", chain=CHAIN):
    """Own chain with NFQUEUE rules for one port, jumped to from OUTPUT/INPUT."""
    remove_queue_rules(netns, chain)
    _iptables(netns, "-N", chain)
    target = ["-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
    if direction in ("both", "out"):
        _iptables(netns, "-A", chain, "-p", "tcp", "--dport", str(port), *target)
        _iptables(netns, "-I", "OUTPUT", "-j", chain)
    if direction in ("both", "in"):
        _iptables(netns, "-A", chain, "-p", "tcp", "--sport", str(port), *target)
        _iptables(netns, "-I", "INPUT", "-j", chain)


def remove_queue_rules(netns, chain=CHAIN):
    """Remove the jumps to our chain and the chain itself; touches nothing else."""
    for builtin in ("OUTPUT", "INPUT"):
        for _ in range(16):
            if _iptables(netns, "-D", builtin, "-j", chain, check=False).returncode:
                break
    if _iptables(netns, "-S", chain, check=False).returncode == 0:
        _iptables(netns, "-F", chain)
        _iptables(netns, "-X", chain)


def queue_rules_present(netns, chain=CHAIN):
    rules = _iptables(netns, "-S", check=False).stdout
    return chain in rules


class Reorder:
    """Reordering for one TCP port in a namespace, as a context manager.

    Starts `netfault.py reorder` inside the namespace as a subprocess (it installs the
    iptables rules, holds verdicts, removes the rules when done, and stops by itself after
    max_seconds). stats() reads its counters; exit stops it by PID and removes the rules
    again in case it was killed hard.
    """

    def __init__(self, netns, port, fraction=0.1, delay_ms=4.0, max_seconds=60, queue=0,
                 direction="both", max_held=256, data_only=True, python=None):
        self.netns, self.port, self.queue = netns, int(port), queue
        self.args = ["--fraction", str(fraction), "--delay-ms", str(delay_ms),
                     "--seconds", str(max_seconds), "--queue", str(queue),
                     "--direction", direction, "--max-held", str(max_held)]
        if not data_only:
            self.args.append("--all-packets")
        self.max_seconds = max_seconds
        self.python = python or sys.executable
        self.proc = None
        self.stats_path = None

    def __enter__(self):
        fd, self.stats_path = tempfile.mkstemp(prefix="brcnf-reorder-", suffix=".json")
        os.close(fd)
        os.unlink(self.stats_path)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, self.python, HERE, "reorder",
             "--port", str(self.port), "--stats-file", self.stats_path] + self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.stats().get("bound"):
                return self
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                self._cleanup()
                raise RuntimeError("reorder holder exited: %s" % err.strip())
            time.sleep(0.05)
        self._cleanup()
        raise RuntimeError("reorder holder did not bind its queue")

    def stats(self):
        try:
            with open(self.stats_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def stop(self, timeout=5):
        """Ask the holder to release everything and exit; returns its final stats."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.stats()

    def _cleanup(self):
        self.stop()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        remove_queue_rules(self.netns)

    def __exit__(self, *exc):
        try:
            self.final = self.stop()
        finally:
            self._cleanup()
            if self.stats_path and os.path.exists(self.stats_path):
                os.unlink(self.stats_path)
        return False


def reorder_main(args):
    """The holder process: rules in, verdicts until deadline or SIGTERM, rules out."""
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def write_stats(stats):
        if not args.stats_file:
            return
        tmp = args.stats_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.rename(tmp, args.stats_file)

    holder = QueueHolder(args.queue, args.fraction, args.delay_ms, args.max_held,
                         not args.all_packets)
    deadline = time.monotonic() + args.seconds
    try:
        holder.open()               # bind before the rules point at the queue
        install_queue_rules(None, args.port, args.queue, args.direction)
        write_stats(holder.stats)
        holder.run(deadline, lambda: stop["flag"], write_stats)
    finally:
        holder.close()
        remove_queue_rules(None)
        write_stats(holder.stats)
    if not args.stats_file:
        print(json.dumps(holder.stats))
    return 0


# --------------------------------------------------------------------------- offloads

SIOCETHTOOL = 0x8946
OFFLOADS = {  # name: (get, set)
    "rx": (0x14, 0x15), "tx": (0x16, 0x17), "sg": (0x18, 0x19),
    "tso": (0x1e, 0x1f), "gso": (0x23, 0x24), "gro": (0x2b, 0x2c),
}


def _ethtool(dev, cmd, data=0):
    value = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
    ifreq = struct.pack("=16sQ16x", dev.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    return struct.unpack("=II", value.raw)[1]


def get_offloads_here(dev):
    return dict((name, bool(_ethtool(dev, get))) for name, (get, _s) in OFFLOADS.items())


def set_offloads_here(dev, **wanted):
    for name, on in wanted.items():
        if on is not None:
            _ethtool(dev, OFFLOADS[name][1], 1 if on else 0)
    return get_offloads_here(dev)


def set_offloads(netns, dev, **wanted):
    """Set offloads (tx=False, tso=False, ...) of dev inside netns; returns the new state."""
    args = []
    for name, on in wanted.items():
        if name not in OFFLOADS:
            raise ValueError("unknown offload %s" % name)
        if on is not None:
            args += ["--" + name, "on" if on else "off"]
    out = sh([sys.executable, HERE, "offload", "--device", dev, "--json"] + args, netns)
    return json.loads(out.stdout)


def get_offloads(netns, dev):
    return set_offloads(netns, dev)


class Offloads:
    """Offloads set for the body and restored on exit: Offloads(ns, dev, tx=False, tso=False).
    Turning tx checksum off also turns off what depends on it (sg/tso), as ethtool does."""

    def __init__(self, netns, dev, **wanted):
        self.netns, self.dev, self.wanted = netns, dev, wanted
        self.before = None

    def __enter__(self):
        self.before = get_offloads(self.netns, self.dev)
        self.state = set_offloads(self.netns, self.dev, **self.wanted)
        return self

    def __exit__(self, *exc):
        # Restore in dependency order: checksum and sg before tso/gso.
        order = ("tx", "rx", "sg", "tso", "gso", "gro")
        set_offloads(self.netns, self.dev, **dict((k, self.before[k]) for k in order))
        return False


class IsnCounter:
    """Count handshakes by initial sequence number half, in an inet table of its own.

    The serial-number comparisons of a TCP translator break differently for ISNs below
    and at/above 2^31, so a test should see both halves on both sides. Linux picks ISNs
    from a keyed hash, so they cannot be chosen; with a handful of connections both halves
    are likely, and this counter shows whether they happened:
    {'client_low', 'client_high', 'server_low', 'server_high'} (SYNs from the client,
    SYN-ACKs from the server, seen in the namespace it is installed in).
    """

    def __init__(self, netns, port, table=TABLE + "_isn"):
        self.netns, self.port, self.table = netns, int(port), table

    def ruleset(self):
        syn = "tcp flags & (syn | ack) == syn"
        synack = "tcp flags & (syn | ack) == syn | ack"
        rules = []
        for side, match in (("client", "tcp dport %d %s" % (self.port, syn)),
                            ("server", "tcp sport %d %s" % (self.port, synack))):
            rules.append('%s tcp sequence < 2147483648 counter comment "%s-low"' % (match, side))
            rules.append('%s tcp sequence >= 2147483648 counter comment "%s-high"' % (match, side))
        lines = ["table inet %s {" % self.table]
        for chain, hook in (("isn_in", "input"), ("isn_out", "output")):
            lines += ["  chain %s {" % chain,
                      "    type filter hook %s priority -400; policy accept;" % hook]
            lines += ["    " + r for r in rules] + ["  }"]
        return "\n".join(lines + ["}"]) + "\n"

    def __enter__(self):
        remove_table(self.netns, "inet", self.table)
        sh(["nft", "-f", "-"], self.netns, input=self.ruleset())
        return self

    def __exit__(self, *exc):
        remove_table(self.netns, "inet", self.table)
        return False

    def stats(self):
        out = {"client_low": 0, "client_high": 0, "server_low": 0, "server_high": 0}
        out.update(table_counters(self.netns, "inet", self.table))
        return out


# --------------------------------------------------------------------------- CLI

def status(netns):
    out = {"nft": {}, "iptables_chain": queue_rules_present(netns)}
    for family, table in (("netdev", TABLE), ("inet", TABLE), ("inet", TABLE + "_isn")):
        counters = table_counters(netns, family, table)
        if counters:
            out["nft"]["%s %s" % (family, table)] = counters
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog=__doc__[__doc__.index("CLI"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("loss", help="random loss for a while, then remove it")
    p.add_argument("--netns", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--percent", type=float, required=True)
    p.add_argument("--peer")
    p.add_argument("--device")
    p.add_argument("--direction", choices=("both", "in", "out"), default="both")
    p.add_argument("--inet", action="store_true", help="input/output hooks, not the device")
    p.add_argument("--seconds", type=float, default=30)

    p = sub.add_parser("reorder", help="hold back a fraction of NFQUEUE verdicts")
    p.add_argument("--netns", help="run inside this namespace (default: the current one)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--delay-ms", type=float, default=4.0)
    p.add_argument("--max-held", type=int, default=256)
    p.add_argument("--all-packets", action="store_true", help="also hold pure ACKs")
    p.add_argument("--direction", choices=("both", "in", "out"), default="both")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--stats-file")

    p = sub.add_parser("offload", help="show or set device offloads (no ethtool needed)")
    p.add_argument("--netns")
    p.add_argument("--device", required=True)
    for name in OFFLOADS:
        p.add_argument("--" + name, choices=("on", "off"))
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("isn", help="count handshakes by ISN half for a while")
    p.add_argument("--netns", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=30)

    for name in ("status", "cleanup"):
        p = sub.add_parser(name)
        p.add_argument("--netns", required=True)

    args = parser.parse_args(argv)

    def hold(fault):
        # Keep fault in place for --seconds (or until ^C), then print its counts.
        with fault:
            try:
                time.sleep(args.seconds)
            except KeyboardInterrupt:
                pass
            print(json.dumps(fault.stats()))
        return 0

    def again_without_netns():
        # This command line without "--netns NS", to run again inside NS.
        cmd = [sys.executable, HERE] + list(argv or sys.argv[1:])
        i = cmd.index("--netns")
        del cmd[i:i + 2]
        return cmd

    if args.cmd == "loss":
        return hold(Loss(args.netns, args.percent, args.port, args.peer, args.device,
                         args.direction, use_device=not args.inet))
    if args.cmd == "reorder":
        if args.netns:
            return subprocess.call(["ip", "netns", "exec", args.netns] + again_without_netns())
        return reorder_main(args)
    if args.cmd == "offload":
        if args.netns:
            proc = sh(again_without_netns(), args.netns, check=False)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
        wanted = dict((n, getattr(args, n) == "on") for n in OFFLOADS
                      if getattr(args, n) is not None)
        state = set_offloads_here(args.device, **wanted)
        print(json.dumps(state) if args.json else
              " ".join("%s %s" % (k, "on" if v else "off") for k, v in state.items()))
        return 0
    if args.cmd == "isn":
        return hold(IsnCounter(args.netns, args.port))
    if args.cmd == "status":
        print(json.dumps(status(args.netns)))
        return 0
    if args.cmd == "cleanup":
        for family in ("netdev", "inet"):
            remove_table(args.netns, family)
        remove_table(args.netns, "inet", TABLE + "_isn")
        remove_queue_rules(args.netns)
        print(json.dumps(status(args.netns)))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
