"""bench/run.py end to end at a tiny size: it reports, explains what it skipped, cleans up.

Numbers are not asserted (timings are reported, never asserted); structure and cleanup are.
"""
import glob
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench(script, args, out, timeout):
    """Run bench/<script> with args, its report written under out; the finished process."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", script)] + args + ["--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, tc, bpf)")
def test_bench_quick_run_reports_and_cleans_up(tmp_path):
    proc = bench("run.py", ["--rounds", "1", "--requests", "3000", "--keys", "200",
                            "--configs", "plain,observe,serve", "--no-profile"], tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [path] = glob.glob(str(tmp_path / "*.json"))
    report = json.load(open(path))
    assert "## get_p1" in (tmp_path / "latest.md").read_text()
    assert "## get_p1" in proc.stdout
    plain = report["summary"]["plain"]
    for workload in ("get_p1", "get_p16", "mix", "mget_k8"):
        assert plain[workload]["rps"] > 0 and plain[workload]["cpu_all_us"] > 0
    # Every configuration either ran or says why not.
    for config in ("observe", "serve"):
        assert config in report["summary"] or report["notes"].get(config), config
    if "serve" in report["summary"]:
        # the MGET workload ran in serve and reports what the kernel answered (whether it
        # is answered is tests/serve/test_serve_batches.py's to prove, on a known cache)
        mget = report["summary"]["serve"]["mget_k8"]
        assert "error" not in mget and not mget["errors"], mget
        assert mget["counters"].get("replies", 0) + mget["counters"].get("serve_mgets", 0) > 0, mget
    assert report["meta"]["values_after"]["ok"], report["meta"]["values_after"]
    # Nothing left: this run's namespaces and cpuacct groups.
    pid = int(os.path.basename(report["meta"]["cpu_groups"][0]).split("-")[1]) \
        if report["meta"]["cpu_groups"] else None
    if pid:
        listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                                universal_newlines=True).stdout
        assert "brcb%d-" % pid not in listed
        assert not glob.glob("/sys/fs/cgroup/cpuacct/brcbench-%d-*" % pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, tc, bpf)")
def test_bench_floor_answers_gets(tmp_path):
    """The floor configuration (bench/brc_floor.c) runs and answers: its probe read the
    fixed reply back on a fresh connection, every workload ran without a
    redis-benchmark error, GETs were answered (`hit`), values are intact. No timing."""
    proc = bench("run.py", ["--rounds", "1", "--requests", "2000", "--keys", "100", "--configs", "floor"],
                 tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [path] = glob.glob(str(tmp_path / "*.json"))
    report = json.load(open(path))
    assert "floor" in report["summary"], report["notes"]
    probe = report["floor_probe"]
    assert probe["reply_ok"] and probe["hit"] > 0, probe
    floor = report["summary"]["floor"]
    for workload in ("get_p1", "get_p16", "mix", "mget_k8"):
        assert "error" not in floor[workload] and not floor[workload]["errors"], floor[workload]
    # one lone GET at a time per connection: answered in the kernel
    assert floor["get_p1"]["counters"].get("hit", 0) > 0, floor["get_p1"]
    assert report["meta"]["values_after"]["ok"], report["meta"]["values_after"]
    # the per-program split ran (its figures are not asserted)
    if report["profile"]:
        assert "error" not in report["profile"]["floor"], report["profile"]
        # what each program's samples went to: itself, or the functions it called
        for program in report["profile"]["floor"]["get_p1"]["programs"].values():
            assert program["self"] + sum(program["calls"].values()) == program["samples"], program


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nft, iptables)")
def test_faults_report_runs_and_cleans_up(tmp_path):
    proc = bench("faults.py", ["--modes", "plain", "--cells", "clean,loss", "--offloads", "default",
                               "--seconds", "2"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    [path] = glob.glob(str(tmp_path / "faults-*.json"))
    rows = json.load(open(path))["rows"]
    assert [(r["mode"], r["cell"]) for r in rows] == [("plain", "clean"), ("plain", "loss")]
    assert rows[1]["faults"]["Loss"]["drop_in"] + rows[1]["faults"]["Loss"]["drop_out"] > 0
    # The report's namespaces (brcf<its pid>-...) went with it: none of a dead process left.
    listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout.split()
    leftovers = [ns for ns in listed if re.match(r"^brcf\d+-", ns)
                 and not os.path.exists("/proc/" + re.match(r"^brcf(\d+)", ns).group(1))]
    assert not leftovers, leftovers
