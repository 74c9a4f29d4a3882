"""Feed lag of the host agent (issue 10), measured, not asserted.

Builds the agent lab of tests/agent (redis-server, the pinned BRC build in serve
mode, brc-agent as its own process), then writes keys over loopback in the
server namespace, one at a time, and times each from just before the SET to the
moment its key's bucket version in brc_keyver has been bumped by the feed. Also
prints the agent's own part (brc_agent.feed_lag_ns, arrival to bump, last batch)
and the CPU the agent used meanwhile.

    sudo .venv/bin/python bench/agent.py [--writes 300]
"""
import argparse
import ctypes
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for p in (HERE, os.path.join(REPO, "tests", "agent"), os.path.join(REPO, "tests", "serve"),
          os.path.join(REPO, "tests", "tools")):
    if p not in sys.path:
        sys.path.append(p)

import brc_attach  # noqa: E402  (puts module_utils on ansible.module_utils' path)
from agent_lab import PORT, AgentLab  # noqa: E402
from serve_lab import running  # noqa: E402

MAX_WAIT_S = 2.0        # one write's report never takes this long; counted as lost if it does


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100.0))]


def start_load(lab, clients, requests):
    """redis-benchmark SETs on random keys over loopback in the server namespace (what
    the feed must keep up with), bounded by @requests; returns the Popen."""
    return lab.pair.popen(lab.pair.server, [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(PORT), "-c", str(clients), "-n", str(requests),
        "-r", "100000", "-t", "set", "-q"])


def measure(lab, writes):
    import redis
    with brc_attach.in_netns(lab.pair.server):
        client = redis.Redis(host="127.0.0.1", port=PORT, single_connection_client=True)
        client.ping()                     # connected inside the namespace: it stays there
    keyver = lab.brc.build.bpf.get_table(b"brc_keyver")
    buckets = int(keyver.max_entries)
    lags, lost = [], 0
    cpu0, t0 = cpu_seconds(lab.agent.pid), time.monotonic()
    try:
        for i in range(writes):
            key = "bench:agent:%d:%d" % (os.getpid(), i)
            idx = ctypes.c_uint32(lab.brc.contract.bucket_of(key, buckets))
            before = keyver[idx].ver
            start = time.monotonic_ns()
            client.set(key, "v")
            deadline = start + int(MAX_WAIT_S * 1e9)
            while keyver[idx].ver == before and time.monotonic_ns() < deadline:
                pass                      # bounded busy poll: the lag is well under a ms
            end = time.monotonic_ns()
            if keyver[idx].ver == before:
                lost += 1
            else:
                lags.append(end - start)
    finally:
        client.close()
    cpu = cpu_seconds(lab.agent.pid) - cpu0
    wall = time.monotonic() - t0
    lags.sort()
    us = lambda ns: round(ns / 1000.0, 1)  # noqa: E731
    return {"writes": writes, "reported": len(lags), "lost": lost,
            "feed_lag_us": {"p50": us(percentile(lags, 50)), "p99": us(percentile(lags, 99)),
                            "max": us(lags[-1])} if lags else None,
            "agent_last_batch_lag_us": us(lab.agent_state()["feed_lag_ns"]),
            "agent_cpu_pct": round(100.0 * cpu / wall, 1), "seconds": round(wall, 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--load-clients", type=int, default=0,
                    help="also run redis-benchmark SETs over loopback with this many clients")
    ap.add_argument("--load-requests", type=int, default=2000000, help="its bound")
    args = ap.parse_args(argv)
    if not 0 < args.writes <= 100000:
        ap.error("--writes between 1 and 100000")
    with running(AgentLab, "brcab", "10.72.0") as lab:
        load = start_load(lab, args.load_clients, args.load_requests) if args.load_clients else None
        try:
            before = lab.counters()
            result = measure(lab, args.writes)
            d = lab.delta(lab.counters(), before)
            result["get_uncacheable_agent"] = d.get("get_uncacheable_agent", 0)
            result["load_clients"] = args.load_clients
            result["load_still_running"] = load is not None and load.poll() is None
            result["agent_answering_at_end"] = lab.beat_fresh()
        finally:
            if load is not None and load.poll() is None:
                os.kill(load.pid, 9)
                load.wait(10)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
