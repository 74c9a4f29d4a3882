#!/usr/bin/env python3
"""Network faults for a client network namespace: loss, reordering, offloads.

This module is their CLI and the one import tests and bench use; each kind lives in a module
of its own: nft_faults (Loss, IsnCounter), nfqueue_reorder (Reorder), nic_offloads (Offloads),
netns_pair (NetnsPair), tcp_counters (tcp_ext, TcpDelta).

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
import json
import os
import subprocess
import sys
import time

# The names tests and bench use, one import for all of them.
from netns_pair import NetnsPair, route_device, sh, veth_pair  # noqa: F401
from nft_faults import TABLE, IsnCounter, Loss, remove_table, table_counters  # noqa: F401
from nfqueue_reorder import (CHAIN, Reorder, install_queue_rules, queue_rules_present,  # noqa: F401
                             remove_queue_rules, reorder_main)
from nic_offloads import OFFLOADS, Offloads, get_offloads, set_offloads, set_offloads_here  # noqa: F401
from tcp_counters import TcpDelta, tcp_ext  # noqa: F401

HERE = os.path.abspath(__file__)


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
