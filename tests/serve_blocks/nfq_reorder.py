"""Reorder packets with NFQUEUE: run inside a network namespace whose iptables
rules send TCP to a queue; a fraction of packets get their ACCEPT verdict a few
milliseconds late, so later packets overtake them. Speaks nfnetlink_queue over
a raw netlink socket (no library). Stops on SIGTERM, releasing everything held,
and prints {"seen": n, "delayed": n} as JSON.

    ip netns exec NS python3 nfq_reorder.py --queue 7 --fraction 0.2 --delay-ms 4
"""
import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def msg(mtype, queue, attrs, flags=NLM_F_REQUEST, seq=0):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, seq, 0) + body


def parse_attrs(data):
    out, i = {}, 0
    while i + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, i)
        if n < 4:
            break
        out[kind & 0x7FFF] = data[i + 4:i + n]
        i += (n + 3) & ~3
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--delay-ms", type=float, default=4.0)
    a = ap.parse_args()
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    s.sendmsg([msg(NFQNL_MSG_CONFIG, a.queue,
                   [attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))],
                   NLM_F_REQUEST | NLM_F_ACK, 1)])
    s.sendmsg([msg(NFQNL_MSG_CONFIG, a.queue,
                   [attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))],
                   NLM_F_REQUEST | NLM_F_ACK, 2)])
    for _ in range(2):
        d = s.recv(65536)
        ln, mtype = struct.unpack_from("=IH", d)
        if mtype == NLMSG_ERROR and struct.unpack_from("=i", d, 16)[0] != 0:
            print(json.dumps({"error": "bind failed: %d" % struct.unpack_from("=i", d, 16)[0]}))
            return 1
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    held, seen, delayed = [], 0, 0
    print("ready", flush=True)

    def verdict(pid):
        s.sendmsg([msg(NFQNL_MSG_VERDICT, a.queue,
                       [attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid))])])

    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            verdict(heapq.heappop(held)[1])
        timeout = max(0.0, held[0][0] - now) if held else 0.2
        try:
            r, _, _ = select.select([s], [], [], timeout)
        except InterruptedError:
            continue
        if not r:
            continue
        data = s.recv(1 << 20)
        i = 0
        while i + 16 <= len(data):
            ln, mtype = struct.unpack_from("=IH", data, i)
            if ln < 16:
                break
            if mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                attrs = parse_attrs(data[i + 20:i + ln])
                pid = struct.unpack("!I", attrs[NFQA_PACKET_HDR][:4])[0]
                seen += 1
                if random.random() < a.fraction:
                    delayed += 1
                    heapq.heappush(held, (time.monotonic() + a.delay_ms / 1000.0 * random.uniform(0.5, 1.5), pid))
                else:
                    verdict(pid)
            i += (ln + 3) & ~3
    while held:
        verdict(heapq.heappop(held)[1])
    print(json.dumps({"seen": seen, "delayed": delayed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
