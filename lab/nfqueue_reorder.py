"""Reordering on a port: iptables NFQUEUE rules and a holder speaking nfnetlink_queue that delays a fraction of verdicts."""
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from netns_pair import sh

CHAIN = "BRC_NETFAULT"
NETFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netfault.py")  # the CLI, run inside a namespace


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
            ["ip", "netns", "exec", self.netns, self.python, NETFAULT, "reorder",
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
