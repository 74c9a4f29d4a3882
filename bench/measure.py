"""redis-benchmark runs and CPU accounting for bench/run.py.

Three CPU figures per run, each divided by the requests of the run:
  all cores   the aggregate `cpu` line of /proc/stat (busy = all but idle and iowait):
              everything the machine did, including other people's work on a shared box;
  processes   cgroup-v1 cpuacct usage (ns, scheduler-exact) of two groups made for the
              bench: redis-server, and every redis-benchmark process; with tick-based
              accounting (no CONFIG_IRQ_TIME_ACCOUNTING) softirq work done in a task's
              context -- the veth receive path and the tc programs -- is charged to that
              task; plus the ksoftirqd threads' time (deferred softirq work);
  redis       utime+stime of /proc/<redis pid>/stat (clock ticks).
The difference between all cores and processes, per second of wall time, is reported as
background load so a noisy run can be recognised.
"""
import csv
import io
import os
import re
import signal
import subprocess
import time

HZ = os.sysconf("SC_CLK_TCK")


def cpu_all():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle     # user nice system idle iowait irq softirq steal


def cpu_pid(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])    # utime, stime (fields 14, 15)


def background(seconds=1.0):
    """CPUs busy (whole machine, /proc/stat) during `seconds` while the bench is idle."""
    a0, t0 = cpu_all(), time.monotonic()
    time.sleep(seconds)
    return round((cpu_all() - a0) / float(HZ) / (time.monotonic() - t0), 2)


def parse_csv(text):
    """redis-benchmark --csv -> {test: {rps, avg_ms, p50_ms, p95_ms, p99_ms, max_ms}}."""
    out = {}
    lines = [l for l in text.splitlines() if l.startswith('"')]
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        out[row["test"]] = {
            "rps": float(row["rps"]), "avg_ms": float(row["avg_latency_ms"]),
            "p50_ms": float(row["p50_latency_ms"]), "p95_ms": float(row["p95_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]), "max_ms": float(row["max_latency_ms"]),
        }
    return out


CPUACCT = "/sys/fs/cgroup/cpuacct"


class CpuGroups:
    """Own cpuacct groups (cgroup v1): <root>/brcbench-<pid>-{redis,client}."""

    def __init__(self, names=("redis", "client")):
        self.dirs = {}
        if not os.path.exists(os.path.join(CPUACCT, "cpuacct.usage")):
            return
        for entry in os.listdir(CPUACCT):          # groups of benches that were killed
            m = re.match(r"^brcbench-(\d+)-(redis|client)$", entry)
            if m and not os.path.exists("/proc/" + m.group(1)):
                try:
                    os.rmdir(os.path.join(CPUACCT, entry))
                except OSError:
                    pass
        for name in names:
            path = os.path.join(CPUACCT, "brcbench-%d-%s" % (os.getpid(), name))
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            except OSError:
                continue
            self.dirs[name] = path

    def add(self, name, pid):
        if name in self.dirs:
            with open(os.path.join(self.dirs[name], "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def joiner(self, name):
        """preexec_fn for Popen: the child joins the group before it execs."""
        path = self.dirs.get(name)
        if not path:
            return None

        def join():
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        return join

    def usage_ns(self):
        out = {}
        for name, path in self.dirs.items():
            with open(os.path.join(path, "cpuacct.usage")) as f:
                out[name] = int(f.read())
        return out

    def remove(self):
        for path in self.dirs.values():
            for _ in range(50):
                try:
                    os.rmdir(path)      # only empty groups can go: our processes are dead
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        self.dirs = {}


def ksoftirqd_ticks():
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                if not f.read().startswith("ksoftirqd/"):
                    continue
            total += cpu_pid(int(pid))
        except OSError:
            continue
    return total


class Timeout(Exception):
    pass


def start_benchmark(netns, host, port, args, groups=None):
    cmd = ["ip", "netns", "exec", netns, "redis-benchmark", "-h", host, "-p", str(port),
           "--csv"] + [str(a) for a in args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True,
                            preexec_fn=groups.joiner("client") if groups else None)


def finish(procs, timeout):
    """Wait for every process; kill all (by PID) when the deadline passes."""
    deadline = time.monotonic() + timeout
    outs = []
    try:
        for p in procs:
            left = max(0.1, deadline - time.monotonic())
            out, err = p.communicate(timeout=left)
            if p.returncode != 0:
                raise RuntimeError("redis-benchmark exited %d: %s" % (p.returncode, err.strip()[-300:]))
            outs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        raise Timeout("redis-benchmark did not finish within %ds" % timeout)
    return outs


def measured(netns, host, port, redis_pid, jobs, timeout=90, counters=None, groups=None):
    """Run the redis-benchmark argument lists in `jobs` concurrently and measure.

    Returns {tests: {name: csv row}, requests, wall_s, cpu_all_us_per_req,
    cpu_procs_us_per_req, cpu_redis_us_per_req, background_cpus, counters: deltas of
    counters() when given}.
    """
    c0 = counters() if counters else None
    g0 = groups.usage_ns() if groups else {}
    k0 = ksoftirqd_ticks()
    a0, r0, t0 = cpu_all(), cpu_pid(redis_pid), time.monotonic()
    procs = [start_benchmark(netns, host, port, args, groups) for args, _n in jobs]
    outs = finish(procs, timeout)
    a1, r1, t1 = cpu_all(), cpu_pid(redis_pid), time.monotonic()
    k1 = ksoftirqd_ticks()
    g1 = groups.usage_ns() if groups else {}
    c1 = counters() if counters else None
    requests = sum(n for _a, n in jobs)
    tests = {}
    for out in outs:
        tests.update(parse_csv(out))
    result = {
        "tests": tests, "requests": requests, "wall_s": round(t1 - t0, 3),
        "cpu_all_ticks": a1 - a0, "cpu_redis_ticks": r1 - r0,
        "cpu_all_us_per_req": round((a1 - a0) * 1e6 / HZ / requests, 3),
        "cpu_redis_us_per_req": round((r1 - r0) * 1e6 / HZ / requests, 3),
        "ksoftirqd_ticks": k1 - k0,
    }
    if g1 and "client" in g1 and "redis" in g1:
        procs_ns = sum(g1[k] - g0[k] for k in g1) + (k1 - k0) * 1e9 / HZ
        result["cpu_groups_ns"] = dict((k, g1[k] - g0[k]) for k in g1)
        result["cpu_procs_us_per_req"] = round(procs_ns / 1e3 / requests, 3)
        busy_ns = (a1 - a0) * 1e9 / HZ
        result["background_cpus"] = round(max(0.0, busy_ns - procs_ns) / 1e9 / (t1 - t0), 2)
    if counters:
        result["counters"] = dict((k, c1[k] - c0.get(k, 0)) for k in c1 if c1[k] != c0.get(k, 0))
    return result
