#!/usr/bin/env python3
"""BRC benchmark: plain Redis vs BRC observe vs BRC serve, side by side in one run.

Creates a client and a server network namespace (brcb<pid>-client/-server) over a veth
(10.68.0.1 -> 10.68.0.2),
starts a real redis-server in the server namespace, preloads the keys, and for each
configuration runs the same redis-benchmark workloads from the client namespace:

  plain     no BRC attached
  observe   BRC attached (tc clsact on the server's veth), mode observe
  serve     BRC attached, mode serve; used only if GETs are really answered in the kernel
            (the `hit` counter moves), otherwise skipped with the reason
  floor     bench/brc_floor.c instead of BRC: one fixed reply (redis-benchmark's payload)
            for every lone GET, through serve's reply path, nothing else; serve's CPU is
            reported as a multiple of it
  off       (only when asked for) BRC attached in mode off: what the hooks alone cost

Configurations are interleaved over several rounds (order rotated) and each figure is the
median over rounds. Timings are reported, never asserted. See bench/README.md.

Usage: bench/run.py [--rounds 3] [--quick] [--configs plain,observe,serve]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "lab"))   # netfault: namespaces and redis-server

import measure  # noqa: E402
import profile as brc_profile  # noqa: E402
import netfault  # noqa: E402

PORT = 6379
MGET_KEYS = 8       # keys per MGET: half the kernel's batch limit, a reply far below one MSS
CONFIGS = ("plain", "observe", "serve", "floor")
OPTIONAL_CONFIGS = ("off",)     # BRC attached in mode off: the cost of the hooks alone
RESULTS = os.path.join(HERE, "results")


def workloads(args):
    k, d = args.keys, args.value_size
    common = ["-r", k, "-d", d]
    n1, n16, nm = args.requests, args.requests * 10, args.requests
    return [
        ("get_p1", "GET hits, 50 clients, no pipelining",
         [(["-t", "get", "-c", 50, "-n", n1] + common, n1)]),
        ("get_p16", "GET hits, 50 clients, 16-deep pipelining",
         [(["-t", "get", "-c", 50, "-n", n16, "-P", 16] + common, n16)]),
        ("mix", "GET (40 clients) and SET (10 clients) at once, same keys",
         [(["-t", "get", "-c", 40, "-n", nm * 4 // 5] + common, nm * 4 // 5),
          (["-t", "set", "-c", 10, "-n", nm // 5] + common, nm // 5)]),
        ("mget_k%d" % MGET_KEYS, "MGET of %d random keys, 50 clients, no pipelining (a request "
         "is one MGET: per key, divide by %d)" % (MGET_KEYS, MGET_KEYS),
         [(["-c", 50, "-n", n1] + common + ["MGET"] + ["key:__rand_int__"] * MGET_KEYS, n1)]),
    ]


def answered(counters):
    """Requests answered in the kernel: every GET (`hit`, alone or in a batch) and every
    MGET (`serve_mgets`), as redis-benchmark counts requests."""
    return counters.get("hit", 0) + counters.get("serve_mgets", 0)


def benchmark_payload(size):
    """The value redis-benchmark's SET writes: genBenchmarkRandomData() of Redis 7, a fixed
    LCG seeded with 1234, so every run writes the same bytes."""
    state, out = 1234, bytearray()
    for _ in range(size):
        state = (state * 1103515245 + 12345) & 0xffffffff
        out.append(ord("0") + ((state >> 16) & 63))
    return bytes(out)


def preload(pair, keys, size):
    """SET key:%012d (redis-benchmark's -r key names) to redis-benchmark's own payload, so
    every GET hits and the SETs of the mix rewrite identical values: a value can never
    change while BRC is detached (plain runs), which would leave its shadow cache stale."""
    value = benchmark_payload(size)
    out = []
    for i in range(keys):
        key = b"key:%012d" % i
        out.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
    proc = subprocess.run(["ip", "netns", "exec", pair.client, "redis-cli", "-h", pair.server_ip,
                           "-p", str(PORT), "--pipe"], input=b"".join(out),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("preload failed: %s" % proc.stderr.decode(errors="replace"))


def warm(pair, redis_pid, args, counters=None, timeout=60):
    """Unmeasured GETs, one at a time per connection, so a cache can fill."""
    n = max(args.keys * 5, 5000)
    return measure.measured(pair.client, pair.server_ip, PORT, redis_pid,
                            [(["-t", "get", "-c", 10, "-n", n, "-r", args.keys,
                               "-d", args.value_size], n)], timeout=timeout, counters=counters)


class Bench:
    def __init__(self, args, pair, redis, groups):
        self.args, self.pair, self.redis, self.groups = args, pair, redis, groups
        self.brc = None
        self.floor = None       # the floor's own build (bench/brc_floor.c)
        self.profiled = {}
        self.floor_probe = None
        self.notes = {}
        self.available = []
        self.values = None
        self.written = {}

    def setup_brc(self, wanted):
        if "floor" in wanted:
            self.setup_floor()
        brc_configs = [c for c in wanted if c not in ("plain", "floor")]
        if not brc_configs:
            return
        try:
            import brc_attach
            self.brc = brc_attach.Brc(self.args.bpf_src, self.pair.server,
                                      self.pair.server_dev, PORT)
        except Exception as e:  # reported, never hidden
            reason = "BRC did not load: %s" % _last_line(e)
            for c in brc_configs:
                self.notes[c] = reason
            return
        try:
            self.brc.attach()
            self.brc.configure("observe")
            self.brc.refresh_auth(self.pair.server_ip)
            moved = warm(self.pair, self.redis.pid, self.args, self.brc.counters)["counters"]
        except Exception as e:
            reason = "observe mode failed its probe: %s" % _last_line(e)
            for c in brc_configs:
                self.notes[c] = reason
            self.brc.detach()
            return
        if "off" in wanted:
            self.available.append("off")
        if "observe" in wanted:
            if moved:
                self.available.append("observe")
            else:
                self.notes["observe"] = "attached in observe mode, but no counter moved"
        if "serve" in wanted:
            self.probe_serve()
        self.brc.detach()

    def setup_floor(self):
        """Build the floor, write its reply (what every key holds here), and use it only
        if it answers: `hit` moves over warm-up GETs and a fresh redis-cli GET reads
        back exactly that reply."""
        reply = resp_bulk(benchmark_payload(self.args.value_size))
        try:
            import brc_attach
            self.floor = brc_attach.Brc(self.args.bpf_src, self.pair.server,
                                        self.pair.server_dev, PORT, floor=True)
            self.floor.configure("serve")
            self.floor.set_floor_reply(reply)
        except Exception as e:
            self.notes["floor"] = "the floor did not load: %s" % _last_line(e)
            self.floor = None
            return
        try:
            self.floor.attach()
            w = warm(self.pair, self.redis.pid, self.args, self.floor.counters, timeout=30)
            got = redis_cli(self.pair, ["GET", "key:%012d" % 0])
        except Exception as e:
            self.notes["floor"] = "the floor failed its probe: %s" % _last_line(e)
            return
        finally:
            self.floor.detach()
        hits = w["counters"].get("hit", 0)
        want = benchmark_payload(self.args.value_size)
        self.floor_probe = {"warm_gets": w["requests"], "hit": hits, "reply_ok": got == want}
        if hits > 0 and got == want:
            self.available.append("floor")
        else:
            self.notes["floor"] = ("attached, but %d of %d warm GETs answered, and a fresh "
                                   "GET read %r" % (hits, w["requests"], got[:60]))

    def probe_serve(self):
        if "hit" not in self.brc.contract.counters:
            self.notes["serve"] = ("not implemented yet: bpf/brc_contract.h has no `hit` "
                                   "counter (kernel answers cannot be counted)")
            return
        try:
            self.brc.configure("serve")
            w = warm(self.pair, self.redis.pid, self.args, self.brc.counters, timeout=30)
            w2 = warm(self.pair, self.redis.pid, self.args, self.brc.counters, timeout=30)
        except Exception as e:
            self.notes["serve"] = "mode serve failed its probe: %s" % _last_line(e)
            return
        finally:
            self.brc.configure("observe")
        hits = w2["counters"].get("hit", 0)
        if hits > 0:
            self.available.append("serve")
        else:
            self.notes["serve"] = ("mode serve set, but the `hit` counter stayed 0 over %d "
                                   "warm GETs (counters: %s)" % (
                                       w["requests"] + w2["requests"],
                                       dict((k, v) for k, v in w2["counters"].items()
                                            if not k.startswith("lat."))))

    def use(self, config):
        """Attach what `config` runs (one clsact on the veth: the other build goes)."""
        if self.floor and config != "floor":
            self.floor.detach()
        if self.brc and config in ("plain", "floor"):
            self.brc.detach()
        if config == "plain":
            return None
        if config == "floor":
            self.floor.attach()
            return self.floor.counters
        self.brc.attach()
        self.written[config] = self.brc.configure(config, verify_sample=self.args.verify_sample)
        return self.brc.counters

    def run(self, configs):
        """Interleaved rounds. A configuration whose redis-benchmark stalls (timeout) is
        dropped from the remaining runs with a note: a stall is a finding, not noise."""
        rounds = []
        order = list(configs)
        dropped = set()
        for r in range(self.args.rounds):
            rotated = order[r % len(order):] + order[:r % len(order)]
            this = {}
            for config in rotated:
                if config in dropped:
                    continue
                counters = self.use(config)
                this[config] = {}
                try:
                    warm(self.pair, self.redis.pid, self.args, counters)
                except Exception as e:
                    self._drop(config, dropped, "warm-up GETs, round %d" % (r + 1), e)
                    this[config] = dict((n, {"error": _last_line(e)})
                                        for n, _d, _j in workloads(self.args))
                    continue
                for name, _desc, jobs in workloads(self.args):
                    try:
                        this[config][name] = measure.measured(
                            self.pair.client, self.pair.server_ip, PORT, self.redis.pid, jobs,
                            timeout=self.args.timeout, counters=counters, groups=self.groups)
                    except Exception as e:
                        this[config][name] = {"error": _last_line(e)}
                        if isinstance(e, measure.Timeout):
                            self._drop(config, dropped, "%s, round %d" % (name, r + 1), e)
                    _progress("round %d %-8s %-8s %s" % (r + 1, config, name,
                                                         _brief(this[config][name])))
                    if config in dropped:
                        break
            rounds.append(this)
        self.use("plain")
        return rounds

    def profile(self, configs):
        """One more run of every workload per BRC configuration, under perf record -a -g
        (not the measured runs: perf's own cost stays out of the table), split by
        program and tail-called stage (bench/profile.py)."""
        out = {}
        with brc_profile.JitKallsyms(), tempfile.TemporaryDirectory(prefix="brcprof-") as tmp:
            for config in configs:
                if config == "plain":
                    continue
                counters = self.use(config)
                build = self.floor if config == "floor" else self.brc
                ranges = brc_profile.prog_ranges(build.build.bpf)
                out[config] = {}
                try:
                    warm(self.pair, self.redis.pid, self.args, counters)
                except Exception as e:
                    out[config] = {"error": _last_line(e)}
                    continue
                for name, _desc, jobs in workloads(self.args):
                    data = os.path.join(tmp, "%s-%s.data" % (config, name))
                    try:
                        with brc_profile.Recording(data):
                            run = measure.measured(self.pair.client, self.pair.server_ip, PORT,
                                                   self.redis.pid, jobs, counters=counters,
                                                   timeout=self.args.timeout)
                        entry = brc_profile.attribute(data, ranges)
                        entry["requests"] = run["requests"]
                        entry["wall_s"] = run["wall_s"]
                        entry["answered"] = answered(run.get("counters", {}))
                        # cpu-clock: one sample = 1/freq s of CPU where it landed
                        entry["brc_us_per_req"] = (entry["brc"] * 1e6 / brc_profile.FREQ /
                                                   run["requests"])
                    except Exception as e:
                        entry = {"error": _last_line(e)}
                    out[config][name] = entry
                    _progress("profile %-8s %-8s %s" % (config, name, _brief_profile(entry)))
        self.use("plain")
        return out

    def _drop(self, config, dropped, where, e):
        dropped.add(config)
        self.notes[config] = "stopped after %s: %s; not run again" % (where, _last_line(e))
        _progress("%s: %s" % (config, self.notes[config]))

    def verify_values(self):
        """With BRC detached, every preloaded key must still hold redis-benchmark's payload
        (the preload and every SET write exactly that). A sanity check that nothing was
        lost or mangled on the way, not the correctness test of serving (tests/ is)."""
        self.use("plain")
        keys = ["key:%012d" % i for i in range(self.args.keys)]
        proc = subprocess.run(["ip", "netns", "exec", self.pair.client, "redis-cli", "-h",
                               self.pair.server_ip, "-p", str(PORT), "MGET"] + keys,
                              stdout=subprocess.PIPE, timeout=30)
        want = benchmark_payload(self.args.value_size)
        values = proc.stdout.split(b"\n")[:len(keys)]
        values += [b""] * (len(keys) - len(values))
        wrong = [k for k, v in zip(keys, values) if v != want]
        return {"keys": len(keys), "wrong": len(wrong), "first_wrong": wrong[:5],
                "ok": not wrong}


def resp_bulk(value):
    return b"$%d\r\n%s\r\n" % (len(value), value)


def redis_cli(pair, args):
    """One redis-cli command from the client namespace, on its own new connection;
    its raw reply line (bytes, no trailing newline)."""
    proc = subprocess.run(["ip", "netns", "exec", pair.client, "redis-cli", "-h", pair.server_ip,
                           "-p", str(PORT)] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=20)
    return proc.stdout.rstrip(b"\n")


def _brief_profile(entry):
    if "error" in entry:
        return "ERROR " + entry["error"]
    return "%d samples, BRC %d (%s)" % (entry["samples"], entry["brc"], ", ".join(
        "%s %d" % (n, p["samples"]) for n, p in sorted(entry["programs"].items())))


def floor_ratios(summary, configs, prof=None):
    """Serve's CPU per request answered in the kernel as a multiple of the floor's, per
    workload: CPU of the run / requests answered (`answered`), all cores and bench
    processes; and, from the perf run when there is one, the CPU of the BRC programs alone
    (with the helpers they call) / requests answered in that run. The floor answers only
    lone GETs: a workload it answers nothing of (MGET) is set against its get_p1, the cost
    of one reply at tc (`floor_of`)."""
    prof = prof or {}
    out = {}
    if "serve" not in configs or "floor" not in configs:
        return out
    rows = {}
    for name, _desc, jobs in WORKLOADS_FOR_SUMMARY:
        per_run = sum(n for _a, n in jobs)
        row = {}
        for config in ("serve", "floor"):
            e = summary[config][name]
            if "error" in e:
                break
            requests = per_run * e["rounds"]
            hits = answered(e.get("counters", {}))
            row[config] = {"answered": hits / float(requests) if requests else 0.0,
                           "cpu_all_us_per_answered":
                               e["cpu_all_us"] * requests / hits if hits else None,
                           "cpu_procs_us_per_answered":
                               e["cpu_procs_us"] * requests / hits
                               if hits and e["cpu_procs_us"] is not None else None}
            p = prof.get(config, {}).get(name, {})
            row[config]["brc_us_per_answered"] = (
                p["brc"] * 1e6 / brc_profile.FREQ / p["answered"]
                if p.get("answered") and "error" not in p else None)
        else:
            rows[name] = row
    for name, row in rows.items():
        s, f = row["serve"], row["floor"]
        if not f["answered"] and name != "get_p1" and "get_p1" in rows:
            row["floor_of"] = "get_p1"
            f = rows["get_p1"]["floor"]
        for key in ("cpu_all_us_per_answered", "cpu_procs_us_per_answered",
                    "brc_us_per_answered"):
            row[key.replace("_per_answered", "_x_floor")] = (
                s[key] / f[key] if s[key] and f[key] else None)
        out[name] = row
    return out


def _histograms(counters):
    try:
        import brc_attach
    except ImportError:
        return {}
    return brc_attach.histogram_summary(counters)


def _last_line(e):
    text = str(e).strip()
    text = text.splitlines()[-1] if text else ""
    return ("%s: %s" % (type(e).__name__, text))[:300]


def _progress(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _brief(res):
    if "error" in res:
        return "ERROR " + res["error"]
    rps = _rps(res)
    return "%.0f req/s, CPU/req %.2f us all cores, %s us processes, %.2f us redis" % (
        rps, res["cpu_all_us_per_req"], res.get("cpu_procs_us_per_req", "-"),
        res["cpu_redis_us_per_req"])


def summarise(rounds, configs):
    """Median over rounds per (config, workload)."""
    out = {}
    for config in configs:
        out[config] = {}
        for name, _desc, jobs in WORKLOADS_FOR_SUMMARY:
            runs = [r[config][name] for r in rounds if config in r and name in r[config]]
            good = [x for x in runs if "error" not in x]
            if not good:
                out[config][name] = {"error": runs[0]["error"] if runs else "not run"}
                continue
            first = "GET" if "GET" in good[0]["tests"] else sorted(good[0]["tests"])[0]
            entry = {
                "rounds": len(good), "errors": [x["error"] for x in runs if "error" in x],
                "rps": statistics.median(_rps(x) for x in good),
                "rps_all": [round(_rps(x)) for x in good],
                "p50_ms": statistics.median(x["tests"][first]["p50_ms"] for x in good),
                "p99_ms": statistics.median(x["tests"][first]["p99_ms"] for x in good),
                "cpu_all_us": statistics.median(x["cpu_all_us_per_req"] for x in good),
                "cpu_all_us_all": [x["cpu_all_us_per_req"] for x in good],
                "cpu_redis_us": statistics.median(x["cpu_redis_us_per_req"] for x in good),
                "cpu_procs_us": _median_of(good, "cpu_procs_us_per_req"),
                "cpu_procs_us_all": [x.get("cpu_procs_us_per_req") for x in good],
                "background_cpus": _median_of(good, "background_cpus"),
                "latency_of": first,
            }
            counters = {}
            for x in good:
                for k, v in x.get("counters", {}).items():
                    counters[k] = counters.get(k, 0) + v
            if counters:
                entry["counters"] = counters
            out[config][name] = entry
    return out


WORKLOADS_FOR_SUMMARY = []


def _rps(run):
    """redis-benchmark's own figure for one process; for concurrent processes (mix) the
    sum of their rates would overstate (they do not end together): requests / wall time."""
    if len(run["tests"]) == 1:
        return list(run["tests"].values())[0]["rps"]
    return run["requests"] / run["wall_s"]


def _median_of(runs, key):
    values = [x[key] for x in runs if key in x]
    return statistics.median(values) if values else None


def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"


def num(v, fmt="%.2f"):
    return fmt % v if v is not None else "-"


def _xf(v):
    return "%.2fx" % v if v else "-"


def floor_markdown(ratios):
    if not ratios:
        return []
    lines = ["## serve vs floor: CPU per request answered in the kernel", "",
             "floor = bench/brc_floor.c: one fixed reply for every lone GET through serve's "
             "reply path, no parsing, lookups or accounting; the cost of answering at tc at all. "
             "CPU of the run / requests answered (GETs: `hit`, MGETs: `serve_mgets`), medians "
             "over rounds; BRC programs = perf samples in the BRC (or floor) programs and what "
             "they call / requests answered, from the perf run (next section). Where not "
             "everything is answered (mix), the run's CPU includes what went to Redis: read the "
             "BRC-programs column there. The floor answers only lone GETs: a workload it answers "
             "nothing of (pipelined GETs, MGET) is set against the CPU of the floor's get_p1 "
             "(one reply at tc), marked so. -: nothing answered.", "",
             "| workload | answered serve | answered floor | all cores us/req serve | floor "
             "| serve x floor | bench processes us/req serve | floor | serve x floor "
             "| BRC programs us/req serve | floor | serve x floor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in ratios.items():
        s, f = r["serve"], r["floor"]
        label = name
        if r.get("floor_of"):
            label = "%s (floor CPU: its %s)" % (name, r["floor_of"])
            f = dict(ratios[r["floor_of"]]["floor"], answered=f["answered"])
        lines.append("| %s | %.1f%% | %.1f%% | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, 100 * s["answered"], 100 * f["answered"],
            num(s["cpu_all_us_per_answered"]), num(f["cpu_all_us_per_answered"]),
            _xf(r["cpu_all_us_x_floor"]), num(s["cpu_procs_us_per_answered"]),
            num(f["cpu_procs_us_per_answered"]), _xf(r["cpu_procs_us_x_floor"]),
            num(s["brc_us_per_answered"]), num(f["brc_us_per_answered"]),
            _xf(r["brc_us_x_floor"])))
    return lines + [""]


def profile_markdown(prof):
    if not prof:
        return []
    lines = ["## Where the CPU goes: perf samples per program and tail-called stage", "",
             "One extra run of each workload per configuration under `perf record -a -g` "
             "(cpu-clock, 999 Hz, all CPUs; not the measured runs). A sample is charged to the "
             "innermost BRC program on its call chain, by JITed address: helpers and kernel "
             "functions a program calls count as its own (`self`: the JITed code alone). "
             "Shares: of BRC's samples, and of all samples of all CPUs (idle included); "
             "us/req: the program's samples as CPU time (1 sample = 1/999 s) / requests of "
             "that run. calls: the functions it called that took the most of its samples "
             "(share of the program's samples; a map lookup shows as the kernel function it "
             "inlines to).", ""]
    for name, _desc, _jobs in WORKLOADS_FOR_SUMMARY:
        lines += ["### %s" % name, "",
                  "| config | program | share of BRC | share of all CPU | self, of all CPU | "
                  "us/req | samples | calls |", "|---|---|---:|---:|---:|---:|---:|---|"]
        for config, per in prof.items():
            e = per.get(name) if "error" not in per else per
            if not e or "error" in e:
                lines.append("| %s | error: %s | | | | | |" % (config, (e or {}).get("error")))
                continue
            total, brc = e["samples"] or 1, e["brc"] or 1
            per_req = 1e6 / brc_profile.FREQ / e["requests"]
            lines.append("| %s | **all BRC** | 100%% | %.1f%% | %.1f%% | %.2f | %d | |" % (
                config, 100.0 * e["brc"] / total,
                100.0 * sum(p["self"] for p in e["programs"].values()) / total,
                e["brc"] * per_req, e["brc"]))
            for prog, p in sorted(e["programs"].items(), key=lambda kv: -kv[1]["samples"]):
                lines.append("| %s | %s | %.1f%% | %.1f%% | %.1f%% | %.2f | %d | %s |" % (
                    config, prog, 100.0 * p["samples"] / brc, 100.0 * p["samples"] / total,
                    100.0 * p["self"] / total, p["samples"] * per_req, p["samples"],
                    _top_calls(p)))
        lines.append("")
    return lines


def _top_calls(program, top=4):
    calls = sorted(program.get("calls", {}).items(), key=lambda kv: -kv[1])[:top]
    return ", ".join("`%s` %.0f%%" % (name, 100.0 * n / program["samples"]) for name, n in calls)


def markdown(meta, summary, configs, notes, ratios=None, prof=None):
    lines = ["# BRC bench %s" % meta["timestamp"], "",
             "Kernel %s, %d CPUs, %s; %d keys of %d bytes; median of %d rounds; "
             "BRC at %s. Other load on the machine with the bench idle: %.2f CPUs before, "
             "%.2f after." % (meta["kernel"], meta["cpus"], meta["redis"], meta["keys"],
                              meta["value_size"], meta["rounds"], meta["git"],
                              meta["idle_background_cpus_before"],
                              meta["idle_background_cpus_after"]), ""]
    for name, desc, jobs in WORKLOADS_FOR_SUMMARY:
        lines += ["## %s: %s" % (name, desc), "",
                  "| config | req/s | p50 ms | p99 ms | CPU us/req all cores | CPU us/req bench "
                  "processes | Redis CPU us/req | req/s vs plain | all-core CPU vs plain "
                  "| process CPU vs plain | Redis CPU vs plain | background CPUs |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = summary.get("plain", {}).get(name, {})
        for config in configs:
            e = summary[config][name]
            if "error" in e:
                lines.append("| %s | error: %s |%s" % (config, e["error"], " |" * 10))
                continue
            lines.append("| %s | %.0f | %.3f | %.3f | %.2f | %s | %.2f | %s | %s | %s | %s | %s |" % (
                config, e["rps"], e["p50_ms"], e["p99_ms"], e["cpu_all_us"],
                num(e["cpu_procs_us"]), e["cpu_redis_us"],
                ratio(e["rps"], base.get("rps")), ratio(e["cpu_all_us"], base.get("cpu_all_us")),
                ratio(e["cpu_procs_us"], base.get("cpu_procs_us")),
                ratio(e["cpu_redis_us"], base.get("cpu_redis_us")), num(e["background_cpus"])))
        lines.append("")
        for config in configs:
            e = summary[config][name]
            if "error" not in e and config != "plain":
                requests = sum(n for _a, n in jobs) * e["rounds"]
                lines.append("- %s answered in the kernel: %.1f%% of requests" % (
                    config, 100.0 * answered(e.get("counters", {})) / requests))
        for config in configs:
            c = summary[config][name].get("counters")
            if c:
                lines.append("- %s BRC counters (sum over rounds): %s" % (
                    config, ", ".join("%s=%d" % kv for kv in sorted(c.items())
                                      if not kv[0].startswith("lat."))))
                hist = _histograms(c)
                if hist:
                    lines.append("- %s BRC latency, request ingress to reply egress (log2 "
                                 "bucket upper bounds): %s" % (config, "; ".join(
                                     "%s n=%d p50<=%sus p99<=%sus" % (
                                         cls, h["count"], h.get("p50_us"), h.get("p99_us"))
                                     for cls, h in sorted(hist.items()))))
        lines.append("")
    lines += floor_markdown(ratios)
    lines += profile_markdown(prof)
    v = meta.get("values_after")
    if v:
        lines += ["After the runs, with BRC detached: %s (%d of %d keys do not hold the "
                  "payload every writer wrote%s)." % (
                      "values OK" if v["ok"] else "**VALUES WRONG**", v["wrong"], v["keys"],
                      (": " + ", ".join(v["first_wrong"])) if v["wrong"] else ""), ""]
    if notes:
        lines += ["## Skipped or limited", ""]
        for config, note in sorted(notes.items()):
            lines.append("- **%s**: %s" % (config, note))
        lines.append("")
    lines += ["Latency columns are redis-benchmark's (of the GET process in `mix`). CPU per "
              "request: all cores = /proc/stat busy time of the whole machine; bench processes "
              "= cpuacct time of redis-server and redis-benchmark (softirq in their context "
              "included) plus ksoftirqd; Redis = its utime+stime. background CPUs = all-core "
              "busy time not spent by the bench processes, in CPUs: when it is well above 0, "
              "other work shared the machine and the all-core and req/s columns are noisy. "
              "Every round's figures are in the JSON.", ""]
    return "\n".join(lines)


def run_all(args, pair, redis, groups, configs):
    bench = Bench(args, pair, redis, groups)
    try:
        preload(pair, args.keys, args.value_size)
        bench.setup_brc(configs)
        usable = [c for c in configs if c == "plain" or c in bench.available]
        for c in configs:
            if c not in usable and c not in bench.notes:
                bench.notes[c] = "unavailable"
        if not usable:
            raise SystemExit("bench: no configuration could run (%s); fix what each note says and run again"
                             % "; ".join("%s: %s" % kv for kv in sorted(bench.notes.items())))
        rounds = bench.run(usable)
        if args.profile:
            bench.profiled = bench.profile(usable)
        bench.values = bench.verify_values()
        return bench, usable, rounds
    finally:
        for build in (bench.brc, bench.floor):
            if build:
                build.close()


def git_head():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "bpf", "module_utils"],
                               stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        return head + ("+local changes" if dirty else "")
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150000,
                        help="requests per -P 1 and mix run (-P 16 runs 10x as many)")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--value-size", type=int, default=32)
    parser.add_argument("--timeout", type=int, default=90, help="per redis-benchmark run")
    parser.add_argument("--quick", action="store_true", help="1 round, 50k requests")
    parser.add_argument("--verify-sample", type=int, default=0,
                        help="brc_config.verify_sample in serve (1 in N would-be hits still "
                        "goes to Redis; 0 = none, the default, to measure serving alone)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the perf run per configuration (per-program CPU split)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--bpf-src", default=os.path.join(REPO, "bpf"),
                        help="BRC sources to compile (default: the working tree's bpf/)")
    parser.add_argument("--bpf-rev", help="use bpf/ and module_utils/ as committed at this git "
                        "revision (e.g. HEAD), for a run that does not follow work in progress")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 1, 50000
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS + OPTIONAL_CONFIGS:
            parser.error("unknown configuration %s" % c)
    if os.geteuid() != 0:
        parser.error("needs root (namespaces, tc, bpf)")
    WORKLOADS_FOR_SUMMARY[:] = workloads(args)
    if args.profile and not brc_profile.available():
        args.profile = False
        _progress("perf not found: no per-program split (Debian: linux-perf)")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)   # unwinds through the cleanups below

    signal.signal(signal.SIGTERM, on_term)
    tmp = None
    if args.bpf_rev:
        tmp = tempfile.mkdtemp(prefix="brcbench-src-")
        archive = subprocess.run(["git", "-C", REPO, "archive", args.bpf_rev, "bpf",
                                  "module_utils"], stdout=subprocess.PIPE, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        args.bpf_src = os.path.join(tmp, "bpf")
        import ansible.module_utils      # the loader of that revision, before ours
        ansible.module_utils.__path__.insert(0, os.path.join(tmp, "module_utils"))
    try:
        return bench_main(args, configs)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_main(args, configs):
    started = time.time()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    meta = {"timestamp": stamp, "kernel": platform.release(), "cpus": os.cpu_count(),
            "redis": subprocess.run(["redis-server", "--version"], stdout=subprocess.PIPE,
                                    universal_newlines=True).stdout.split()[2],
            "keys": args.keys, "value_size": args.value_size, "rounds": args.rounds,
            "requests": args.requests, "configs": configs,
            "git": ("bpf/ at %s" % args.bpf_rev) if args.bpf_rev else git_head(),
            "bpf_src": args.bpf_src}
    groups = measure.CpuGroups()
    meta["cpu_groups"] = sorted(groups.dirs.values())
    meta["idle_background_cpus_before"] = measure.background(1.0)
    try:
        with netfault.NetnsPair("brcb", "10.68.0") as pair:
            redis = pair.start_redis(PORT)
            groups.add("redis", redis.pid)
            rounds = run_all(args, pair, redis, groups, configs)
            bench, usable, rounds = rounds
    finally:
        groups.remove()
    meta["idle_background_cpus_after"] = measure.background(1.0)
    summary = summarise(rounds, usable)
    meta["seconds"] = round(time.time() - started, 1)
    meta["values_after"] = bench.values
    meta["brc_config"] = bench.written
    ratios = floor_ratios(summary, usable, bench.profiled)
    report = {"meta": meta, "notes": bench.notes, "summary": summary, "rounds": rounds,
              "floor_ratios": ratios, "floor_probe": bench.floor_probe,
              "profile": bench.profiled,
              "workloads": dict((n, {"description": d, "redis_benchmark": [j[0] for j in jobs]})
                                for n, d, jobs in WORKLOADS_FOR_SUMMARY)}
    text = markdown(meta, summary, usable, bench.notes, ratios, bench.profiled)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stamp + ".json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(text)
    print(text)
    _progress("bench: %ss, results in %s" % (meta["seconds"], os.path.join(args.out, stamp + ".json")))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        sys.exit(1)
