"""Feed lag of the host agent, measured, not asserted.

Builds the agent lab of tests/agent (redis-server, the pinned BRC build in serve
mode, brc-agent as its own process), then writes keys over loopback in the
server namespace, one at a time, and times each from just before the SET to the
moment its key's bucket version in brc_keyver has been bumped by the feed. Also
prints the agent's own part (brc_agent.feed_lag_ns, arrival to bump, last batch)
and the CPU the agent used meanwhile.

With --replica (the default), the same host's Redis is then made a REPLICAOF a
second Redis in its namespace (as tests/agent does), its agent and BRC running as
usual, and the same keys are written on that master instead: each is timed from
just before the SET on the master to its bucket's bump in the replica's brc_keyver
(replication stream, tracking, the replica's agent), the staleness bound of a key
served on the replica. Then what a client sees: a key served from the replica's
kernel cache is rewritten on the master and a client in the client namespace GETs
it through BRC until it reads the new value (time to first correct read).

Keys with a TTL (--ttl-keys): the share of their GETs answered in the kernel, and how
close to Redis's deadline the kernel's last answer of a short-lived key comes.

Every part runs idle, then with --load-clients redis-benchmark writers on the
host's (then the master's) Redis; one JSON line per part, and a last one with
the CPUs other work kept busy before and after (bench/measure.py's background).

    sudo .venv/bin/python bench/agent.py [--writes 1000] [--reads 300] [--load-clients 4] [--no-replica]
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
          os.path.join(REPO, "lab")):
    if p not in sys.path:
        sys.path.append(p)

import brc_attach  # noqa: E402  (puts module_utils on ansible.module_utils' path)
from ansible.module_utils.brc_math import sample_percentile as percentile  # noqa: E402
import measure as measure_cpu  # noqa: E402  (bench/measure.py: /proc CPU readings)
from agent_lab import PORT, AgentLab  # noqa: E402
from serve_lab import running  # noqa: E402

MAX_WAIT_S = 2.0        # one write's report never takes this long; counted as lost if it does
MAX_POLLS = 50000       # GETs through BRC per client read, at most (with MAX_WAIT_S)


def cpu_seconds(pid):
    return measure_cpu.cpu_pid(pid) / float(measure_cpu.HZ)


def us(ns):
    return round(ns / 1000.0, 1)


def distribution(values_ns):
    values = sorted(values_ns)
    return {"p50": us(percentile(values, 50)), "p99": us(percentile(values, 99)),
            "max": us(values[-1])} if values else None


def start_load(lab, clients, requests, port=PORT):
    """redis-benchmark SETs on random keys over loopback in the server namespace (what
    the feed must keep up with) to the Redis on @port, bounded by @requests; returns the Popen."""
    return lab.pair.popen(lab.pair.server, [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests),
        "-r", "100000", "-t", "set", "-q"])


def loopback_client(lab, port):
    """redis-py on one connection to 127.0.0.1:@port, opened in the server namespace
    (it stays there): writes BRC does not see."""
    import redis
    with brc_attach.in_netns(lab.pair.server):
        client = redis.Redis(host="127.0.0.1", port=port, single_connection_client=True)
        client.ping()
    return client


class Feed:
    """brc_keyver of the served host's BRC: a write timed to its bucket's bump."""

    def __init__(self, lab):
        self.lab = lab
        self.keyver = lab.brc.build.bpf.get_table(b"brc_keyver")

    def version(self, key):
        """(bucket index, its version now) of @key."""
        idx = ctypes.c_uint32(self.lab.bucket_of(key))
        return idx, self.keyver[idx].ver

    def set_and_wait(self, client, key, value):
        """SET @key through @client, then busy-poll its bucket: ns from just before the
        SET to the bump, or None when none came within MAX_WAIT_S (lost)."""
        idx, before = self.version(key)
        start = time.monotonic_ns()
        client.set(key, value)
        deadline = start + int(MAX_WAIT_S * 1e9)
        while self.keyver[idx].ver == before and time.monotonic_ns() < deadline:
            pass                      # bounded busy poll: the lag is well under a ms idle
        end = time.monotonic_ns()
        return None if self.keyver[idx].ver == before else end - start


def measure(lab, writes, port=PORT, tag="local"):
    """@writes keys SET one at a time on the Redis at @port (the served host's own, or
    its master), each timed to its bucket's bump in the served host's brc_keyver."""
    client = loopback_client(lab, port)
    feed = Feed(lab)
    lags, lost = [], 0
    fed0 = lab.agent_state()["feed_keys"]
    cpu0, t0 = cpu_seconds(lab.agent.pid), time.monotonic()
    try:
        for i in range(writes):
            lag = feed.set_and_wait(client, "bench:agent:%s:%d:%d" % (tag, os.getpid(), i), "v")
            if lag is None:
                lost += 1
            else:
                lags.append(lag)
    finally:
        client.close()
    cpu = cpu_seconds(lab.agent.pid) - cpu0
    wall = time.monotonic() - t0
    state = lab.agent_state()
    return {"writes": writes, "reported": len(lags), "lost": lost,
            "feed_lag_us": distribution(lags),
            "agent_last_batch_lag_us": us(state["feed_lag_ns"]),
            "feed_keys_per_s": round((state["feed_keys"] - fed0) / wall),
            "agent_cpu_pct": round(100.0 * cpu / wall, 1), "seconds": round(wall, 2)}


def measure_reads(lab, reads, port, tag="read"):
    """What a client through BRC sees: per key, SET "old" on the Redis at @port (the
    master), wait for the feed, GET it twice through BRC from the client namespace
    (fill, then answered in the kernel: 'primed' counts those), then SET "new" on the
    master and GET through BRC until it returns "new": time from just before that SET
    to the first correct reply, at most MAX_POLLS GETs and MAX_WAIT_S (else 'never_read').
    Between GETs the key's bucket is checked: 'bump_seen_us' is when the replica's
    agent had bumped it (to a GET's round trip; 'read_new_before_bump' counts reads
    where the bump came during the GET that read "new"), 'stale_after_bump' old values
    read by GETs sent after it (should be none, bar a bump of the same bucket by
    another key, under load)."""
    from checker import RespConnection
    master = loopback_client(lab, port)
    with brc_attach.in_netns(lab.pair.client):
        conn = RespConnection(lab.pair.server_ip, PORT, timeout=5.0)
    feed = Feed(lab)
    times, polls, bumps, primed, stale_reads, never, unfed = [], [], [], 0, 0, 0, 0
    stale_after_bump, before_bump = 0, 0
    before_all = lab.counters()
    try:
        for i in range(reads):
            key = "bench:agent:%s:%d:%d" % (tag, os.getpid(), i)
            if feed.set_and_wait(master, key, "old") is None:
                unfed += 1            # a late report would invalidate the fill: skip the key
                continue
            conn.call("GET", key)     # fill
            hits = lab.counters().get("hit", 0)
            conn.call("GET", key)
            primed += lab.counters().get("hit", 0) > hits
            idx, ver0 = feed.version(key)
            start = time.monotonic_ns()
            master.set(key, "new")
            deadline, bumped = start + int(MAX_WAIT_S * 1e9), None
            for n in range(1, MAX_POLLS + 1):
                if bumped is None and feed.keyver[idx].ver != ver0:
                    bumped = time.monotonic_ns()      # seen between two GETs
                value = conn.call("GET", key)
                if value == b"new" or time.monotonic_ns() >= deadline:
                    break
                stale_reads += 1
                stale_after_bump += bumped is not None
            end = time.monotonic_ns()
            if value == b"new":
                times.append(end - start)
                polls.append(n)
                if bumped is None:
                    before_bump += 1
                else:
                    bumps.append(bumped - start)
            else:
                never += 1
    finally:
        conn.close()
        master.close()
    d = lab.delta(lab.counters(), before_all)
    polls.sort()
    return {"reads": reads, "read_new": len(times), "never_read": never, "unfed_old": unfed,
            "primed": primed, "stale_replies": stale_reads, "stale_after_bump": stale_after_bump,
            "first_correct_read_us": distribution(times),
            "bump_seen_us": distribution(bumps), "read_new_before_bump": before_bump,
            "gets_per_read": {"p50": percentile(polls, 50), "p99": percentile(polls, 99),
                              "max": polls[-1]} if polls else None,
            "hit": d.get("hit", 0)}


def measure_ttl(lab, keys, gets, short_keys):
    """Keys with a TTL under the agent (a fill needs Redis's deadline, PEXPIRETIME read by
    the agent; answers end BRC_EXPIRY_MARGIN_NS before it). @keys keys SET with a
    10-minute TTL over loopback (only the feed reports them), each then read @gets
    times through BRC: the share answered in the kernel ('answered_share'; the first
    GET of a key asks the agent for its deadline, so at most (gets - 2) / gets).
    Then @short_keys keys with a 300 ms TTL, each read through BRC back to back until
    Redis's nil: per key, how long before Redis's deadline the kernel's last answer
    was ('last_answer_before_deadline_us', the margin in practice), and answers in the
    kernel after the deadline ('answered_after_deadline': must be 0)."""
    from checker import RespConnection
    master = loopback_client(lab, PORT)
    with brc_attach.in_netns(lab.pair.client):
        conn = RespConnection(lab.pair.server_ip, PORT, timeout=5.0)
    stats = lab.brc.build.bpf.get_table(b"brc_stats")
    hit_slot = ctypes.c_uint32(dict((name, slot) for slot, name, _doc in lab.brc.contract.counter_slots)["hit"])

    def hits():
        return sum(stats[hit_slot])

    out = {"part": "ttl", "keys": keys, "gets_per_key": gets, "short_keys": short_keys}
    try:
        tag = "bench:agent:ttl:%d" % os.getpid()
        for i in range(keys):
            master.set("%s:%d" % (tag, i), "v%d" % i, px=600000)
        lab.marker()
        before = lab.counters()
        for i in range(keys):
            for _ in range(gets):
                assert conn.call("GET", "%s:%d" % (tag, i)) == b"v%d" % i
        d = lab.delta(lab.counters(), before)
        out["answered_share"] = round(d.get("hit", 0) / float(keys * gets), 3)
        out["expiry_wanted"] = d.get("expiry_wanted", 0)
        early, after = [], 0
        for i in range(short_keys):
            key = "%s:short:%d" % (tag, i)
            master.set(key, "s", px=300)
            deadline_ns = master.pexpiretime(key) * 1000000
            lab.marker()
            last_answer = None
            for _n in range(MAX_POLLS):
                h0 = hits()
                value = conn.call("GET", key)
                t = time.time_ns()
                if hits() > h0:
                    if t > deadline_ns:
                        after += 1
                    last_answer = t
                if value is None:
                    break
            if last_answer is not None:
                early.append(deadline_ns - last_answer)
        out["last_answer_before_deadline_us"] = distribution(early)
        out["keys_answered_before_expiry"] = len(early)
        out["answered_after_deadline"] = after
    finally:
        conn.close()
        master.close()
    return out


def run_part(lab, args, load_clients, port=PORT, role="local"):
    """One part: writes (and, on a replica, reads) with @load_clients writers on the
    Redis at @port meanwhile (none when 0); returns its JSON record."""
    load = start_load(lab, load_clients, args.load_requests, port) if load_clients else None
    try:
        before = lab.counters()
        tag = "%s%d" % (role, load_clients)
        result = {"part": role, "load_clients": load_clients}
        result.update(measure(lab, args.writes, port, tag))
        if role == "replica" and args.reads:
            result["client"] = measure_reads(lab, args.reads, port, tag + "r")
        d = lab.delta(lab.counters(), before)
        result["get_uncacheable_agent"] = d.get("get_uncacheable_agent", 0)
        result["load_still_running"] = load is not None and load.poll() is None
        result["agent_answering_at_end"] = lab.beat_fresh()
    finally:
        if load is not None and load.poll() is None:
            os.kill(load.pid, 9)
            load.wait(10)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=1000, help="timed writes per part")
    ap.add_argument("--reads", type=int, default=300,
                    help="timed client reads per replica part (0: none)")
    ap.add_argument("--load-clients", type=int, default=4,
                    help="each part again with redis-benchmark SETs over loopback by this many "
                         "clients (0: idle only)")
    ap.add_argument("--load-requests", type=int, default=2000000, help="their bound, per part")
    ap.add_argument("--ttl-keys", type=int, default=200,
                    help="keys with a 10-minute TTL read through BRC (0: no TTL part)")
    ap.add_argument("--replica", action="store_true", default=True,
                    help="also measure the host as a replica of a second Redis (the default)")
    ap.add_argument("--no-replica", dest="replica", action="store_false",
                    help="the host as a master only")
    args = ap.parse_args(argv)
    if not 0 < args.writes <= 100000 or not 0 <= args.reads <= 10000:
        ap.error("--writes between 1 and 100000, --reads between 0 and 10000")
    loads = [0] + ([args.load_clients] if args.load_clients > 0 else [])
    machine = {"part": "machine", "cpus": os.cpu_count(),
               "background_cpus_before": measure_cpu.background(1.0)}
    with running(AgentLab, "brcab", "10.72.0") as lab:
        for clients in loads:
            print(json.dumps(run_part(lab, args, clients)), flush=True)
        if args.ttl_keys:
            print(json.dumps(measure_ttl(lab, args.ttl_keys, 20, 20)), flush=True)
        if args.replica:
            other = lab.start_other_redis(PORT + 1)
            try:
                lab.replica_of(PORT + 1)
                for clients in loads:
                    print(json.dumps(run_part(lab, args, clients, PORT + 1, "replica")), flush=True)
            finally:
                lab.back_to_master(other)
    machine["background_cpus_after"] = measure_cpu.background(1.0)
    print(json.dumps(machine))      # other work on the machine, with the bench idle
    return 0


if __name__ == "__main__":
    sys.exit(main())
