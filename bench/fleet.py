"""Fleet operations timed on lab hosts (issue 13), measured, never asserted.

For each fleet size (--hosts, default 4,16) this brings up a lab of its own (lab/brclab.py,
name --lab, default "bf": its own namespaces, /24 and lab/.state/bf/, so it never touches the
demo lab or the tests' t1-t4/l1-l3), runs, each timed end to end:

  deploy        deploy.yml on fresh hosts (bcc compiles and the verifier loads on every host)
  redeploy      deploy.yml again, nothing changed: must build nothing (brc_program changed=0,
                0 bcc runs), checked and reported
  audit         playbooks/audit.yml
  stats         playbooks/stats.yml (one sample)
  enable_serve  playbooks/enable.yml -e brc_enable_mode=serve: the rolling enable (canary, 50%,
                100%), after unmeasured observe traffic from the controller so the hosts have the
                observe history the gate requires; a mode change must build nothing either
  deploy_mode   deploy.yml -e brc_mode=observe: the other way to change the mode (serve back to
                observe); builds nothing either

then tears the lab down. A callback plugin (bench/callback_plugins/brc_timing.py) records every
task's start and end per host; brc_program returns its own split (timings: compile_s = bcc's
BPF(text=...), load_s = the verifier loads). Per host: busy = the sum of its task durations,
Ansible overhead = busy - compile - load (connection, module transfer and start, the other
modules' own work, gates' probes). One JSON line per step on stdout and in
bench/results/fleet-<timestamp>.jsonl, and a markdown table (bench/results/fleet-latest.md).

    sudo .venv/bin/python bench/fleet.py [--hosts 4,16] [--lab bf] [--keep-lab]
"""
import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(REPO, "lab"))
from brclab import LOCK_DIR, Lab  # noqa: E402

RESULTS = os.path.join(BENCH, "results")
PLAYBOOK = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
STEP_TIMEOUT = 3600     # a bound for a hang, not a timing

# (step, playbook, extra args). enable_serve's latency slack: the gate compares probe latency
# before and after on a 2-core machine shared with other work; its correctness checks stay strict.
STEPS = [
    ("deploy", "deploy.yml", []),
    ("redeploy", "deploy.yml", []),
    ("audit", "playbooks/audit.yml", []),
    ("stats", "playbooks/stats.yml", []),
    ("enable_serve", "playbooks/enable.yml", ["-e", "brc_enable_mode=serve",
                                              "-e", "brc_rollout_latency_slack_us=20000"]),
    ("deploy_mode", "deploy.yml", ["-e", "brc_mode=observe"]),
]
# Steps that change no source: a bcc build in them is a finding.
NO_BUILD = ("redeploy", "enable_serve", "deploy_mode")


def log(msg):
    sys.stderr.write("[fleet %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def cpu_busy():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


@contextlib.contextmanager
def lease(name):
    """The same machine-wide lease on a lab name as the test fixtures take."""
    d = os.path.join(LOCK_DIR, "leases")
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit("lab name %r is leased by another running process; use --lab" % name)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def warm_up(lab, keys=50, rounds=4):
    """Observe traffic from the controller (new connections): writes, then repeated reads."""
    import redis
    for h in lab.hosts:
        r = redis.Redis(host=h.addr, port=6379, socket_timeout=5)
        for i in range(keys):
            r.set("bench:fleet:%d" % i, "v%d" % i)
        r.close()
        for _ in range(rounds):
            r = redis.Redis(host=h.addr, port=6379, socket_timeout=5)
            for i in range(keys):
                r.get("bench:fleet:%d" % i)
            r.close()


def run_step(lab, step, playbook, extra, outdir):
    tlog = os.path.join(outdir, "%dh-%s.tasks.jsonl" % (len(lab.hosts), step))
    env = lab.ansible_env(ANSIBLE_CALLBACK_PLUGINS=os.path.join(BENCH, "callback_plugins"),
                          ANSIBLE_CALLBACKS_ENABLED="brc_timing", BRC_TIMING_LOG=tlog)
    args = [PLAYBOOK, playbook] + extra + ["-e", "brc_report_dir=%s" % os.path.join(outdir, "reports")]
    b0, t0 = cpu_busy()
    start = time.monotonic()
    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=STEP_TIMEOUT)
    wall = time.monotonic() - start
    b1, t1 = cpu_busy()
    with open(os.path.join(outdir, "%dh-%s.out" % (len(lab.hosts), step)), "w") as f:
        f.write(out.stdout + "\n--- stderr\n" + out.stderr)
    tasks = []
    if os.path.exists(tlog):
        with open(tlog) as f:
            tasks = [json.loads(line) for line in f if line.strip()]
    return summarize(lab, step, out, wall, tasks, (b1 - b0) / max(1, t1 - t0))


def med(xs):
    return round(statistics.median(xs), 2) if xs else None


def summarize(lab, step, out, wall, tasks, busy_frac):
    hosts = [h.name for h in lab.hosts]
    per = dict((h, {"busy_s": 0.0, "compile_s": 0.0, "load_s": 0.0, "tasks": 0}) for h in hosts)
    programs = []
    facts = []
    probes = {"compiled": 0, "skipped": 0}
    for t in tasks:
        p = per.get(t["host"])
        if p is None or t["duration"] is None:
            continue
        p["busy_s"] += t["duration"]
        if t["status"] != "skipped":
            p["tasks"] += 1
        if t.get("timings") is not None:
            p["compile_s"] += t["timings"].get("compile_s", 0.0)
            p["load_s"] += t["timings"].get("load_s", 0.0)
            programs.append(t)
        if "bcc_probe" in t:    # the preflight's brc_facts (probe_bcc: true)
            facts.append(t["duration"])
            probes["compiled" if t["bcc_probe"] == "compiled" else "skipped"] += 1
    for p in per.values():
        p["overhead_s"] = p["busy_s"] - p["compile_s"] - p["load_s"]
    rec = {
        "hosts": len(hosts), "step": step, "rc": out.returncode, "wall_s": round(wall, 2),
        "machine_busy": round(busy_frac, 2),
        "per_host_median": dict((k, med([p[k] for p in per.values()]))
                                for k in ("busy_s", "compile_s", "load_s", "overhead_s", "tasks")),
        "per_host_max": dict((k, round(max(p[k] for p in per.values()), 2))
                             for k in ("busy_s", "compile_s", "load_s", "overhead_s")),
        "brc_program": {"ran": len(programs), "changed": sum(1 for t in programs if t["changed"]),
                        "bcc_builds": sum(t["timings"].get("compiles", 0) for t in programs)},
    }
    if facts:
        rec["preflight_facts"] = dict(probes, median_s=med(facts))
    notes = []
    if out.returncode != 0:
        notes.append("playbook failed: %s" % out.stdout[-1500:].replace("\n", " | "))
    if step in NO_BUILD and rec["brc_program"]["bcc_builds"]:
        notes.append("BUILT on a run that must build nothing: %s" % rec["brc_program"])
    if step == "deploy_mode":
        changed = sum(1 for t in tasks if t["action"].endswith("brc_config") and t["changed"])
        rec["config_changed"] = changed
        if changed != len(hosts):
            notes.append("the mode changed on %d of %d hosts" % (changed, len(hosts)))
    if step == "enable_serve":
        passed = sum(1 for h in hosts if "%s: observe -> serve passed" % h in out.stdout)
        rec["promoted"] = passed
        if passed != len(hosts):
            notes.append("only %d of %d hosts promoted to serve" % (passed, len(hosts)))
    if notes:
        rec["notes"] = notes
    return rec


def fmt(x, nd=1):
    return "-" if x is None else ("%.*f" % (nd, x))


def markdown(records, meta):
    sizes = sorted(set(r["hosts"] for r in records))
    by = dict(((r["hosts"], r["step"]), r) for r in records)
    steps = [s for s, _p, _e in STEPS if any((n, s) in by for n in sizes)]
    base = sizes[0]
    lines = ["# bench/fleet.py at %s, %s" % (meta["commit"], meta["date"]), "",
             "Machine: %d CPUs, load average before %s. Seconds; medians over hosts; "
             "overhead = a host's task time - compile - load." % (os.cpu_count(), meta["loadavg"]), ""]
    head = "| step | hosts | wall s | wall vs %d hosts | wall vs deploy | per host: tasks | busy s | bcc compile s | verifier load s | Ansible overhead s | overhead share | bcc builds | machine busy |" % base
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for s in steps:
        for n in sizes:
            r = by.get((n, s))
            if not r:
                continue
            b = by.get((base, s))
            d = by.get((n, "deploy"))
            ph = r["per_host_median"]
            share = (ph["overhead_s"] / ph["busy_s"]) if ph["busy_s"] else None
            lines.append("| %s%s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |" % (
                s, "" if r["rc"] == 0 else " (FAILED)", n, fmt(r["wall_s"]),
                "%.2fx" % (r["wall_s"] / b["wall_s"]) if b else "-",
                "%.2fx" % (r["wall_s"] / d["wall_s"]) if d else "-",
                fmt(ph["tasks"], 0), fmt(ph["busy_s"]), fmt(ph["compile_s"]), fmt(ph["load_s"]),
                fmt(ph["overhead_s"]), "%.0f%%" % (100 * share) if share is not None else "-",
                r["brc_program"]["bcc_builds"], "%.0f%%" % (100 * r["machine_busy"])))
    notes = [(r["hosts"], r["step"], n) for r in records for n in r.get("notes", [])]
    if notes:
        lines += ["", "Notes:"] + ["- %d hosts, %s: %s" % n for n in notes]
    pf = [(r["hosts"], r["step"], r["preflight_facts"]) for r in records if "preflight_facts" in r]
    if pf:
        lines += ["", "Preflight facts task (brc_facts probe_bcc=true: a one-line program compiled and loaded "
                  "unless the pinned build proves bcc works), median per host: " + "; ".join(
                      "%s %dh %.1f s (probe compiled on %d, skipped on %d)" % (
                          s, n, p["median_s"], p["compiled"], p["skipped"]) for n, s, p in pf)]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", default="4,16", help="fleet sizes, comma-separated (default 4,16)")
    ap.add_argument("--lab", default="bf", help="lab name (default bf; not the demo lab or tests')")
    ap.add_argument("--steps", default=",".join(s for s, _p, _e in STEPS),
                    help="steps to run, in order (default all)")
    ap.add_argument("--keep-lab", action="store_true", help="leave the last lab up (debugging)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/fleet.py needs root (the lab's namespaces)")
    sizes = [int(x) for x in args.hosts.split(",") if x.strip()]
    wanted = args.steps.split(",")
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(RESULTS, "fleet-%s" % stamp)
    os.makedirs(outdir)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    with open("/proc/loadavg") as f:
        loadavg = " ".join(f.read().split()[:3])
    meta = {"commit": commit + ("+dirty" if dirty else ""), "date": time.strftime("%Y-%m-%d %H:%M"),
            "loadavg": loadavg}
    records = []
    jsonl = os.path.join(RESULTS, "fleet-%s.jsonl" % stamp)
    with lease(args.lab):
        lab = Lab(args.lab)
        for i, n in enumerate(sizes):
            lab.down()      # whatever a crashed run left under this name
            t0 = time.monotonic()
            lab.up(n)
            log("lab %s up with %d hosts in %.1fs" % (lab.name, n, time.monotonic() - t0))
            try:
                for step, playbook, extra in STEPS:
                    if step not in wanted:
                        continue
                    if step == "enable_serve":
                        warm_up(lab)
                    rec = run_step(lab, step, playbook, extra, outdir)
                    records.append(rec)
                    line = json.dumps(rec)
                    print(line, flush=True)
                    with open(jsonl, "a") as f:
                        f.write(line + "\n")
                    if rec["rc"] != 0 and step == "deploy":
                        log("deploy failed on %d hosts; skipping the rest of this size" % n)
                        break
            finally:
                if not (args.keep_lab and i == len(sizes) - 1):
                    lab.down()
    md = markdown(records, meta)
    for path in (os.path.join(RESULTS, "fleet-latest.md"), os.path.join(outdir, "table.md")):
        with open(path, "w") as f:
            f.write(md)
    print(md)
    log("results: %s, %s" % (jsonl, outdir))


if __name__ == "__main__":
    main()
