"""Fleet operations end to end on the lab: real ssh, real Redis, real BPF programs.

  - a canary whose Redis stops answering right after its change is rolled back, the
    rollout stops there, every host ends in its previous mode and Redis serves again;
  - a host cut off from the controller right after its change restores its previous
    mode by itself (the dead-man switch);
  - a rolling enable to serve across 3 hosts, then disable: every gate passes and
    checker clients running through the whole rollout see no wrong reply and no stall;
  - the audit flags an egress filter removed by hand and an ingress program replaced by
    another build, reports the third host clean, fails in strict mode, and its HTML
    renders in headless Chromium naming every host (screenshot kept in reports/);
  - stats.json fleet totals equal the sum of the hosts; the Prometheus files parse.

The modes are read straight from the pinned config map (bpftool, decoded with the
contract header), not through the toolkit under test.
"""
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

import promtext
from fixtures.lab import ansible_env

from ansible.module_utils.brc_commands import LATENCY_NAMES
from ansible.module_utils.brc_contract import load_contract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(REPO, "reports", "test-artifacts")


def tree_under_test():
    """The tree whose playbooks, roles, modules and bpf/ run: the working tree, or with
    BRC_FLEET_TEST_TREE=head an export of the committed HEAD, for a developer whose working
    tree holds other people's half-done work (one shared tree). In CI both are the same."""
    if os.environ.get("BRC_FLEET_TEST_TREE") != "head":
        return REPO
    import tempfile
    dest = tempfile.mkdtemp(prefix="brc-fleet-head-")
    archive = subprocess.run(["git", "-C", REPO, "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    os.symlink(os.path.join(REPO, ".venv"), os.path.join(dest, ".venv"))
    return dest


TREE = tree_under_test()
BPF_SRC = os.path.join(TREE, "bpf")
CONTRACT = load_contract(BPF_SRC)
MODES = dict((v, k) for k, v in CONTRACT.modes.items())
CONFIG_PIN = "/sys/fs/bpf/brc/eth0/brc_config"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GUARD_LOG = "/var/lib/brc/eth0/rollout.armed.log"


def log(msg):
    sys.stderr.write("[fleet %s] %s\n" % (time.strftime("%H:%M:%S"), msg))


def env(lab, **extra):
    return ansible_env(lab, ANSIBLE_CONFIG=os.path.join(TREE, "ansible.cfg"), **extra)


def playbook(lab, path, *args, env_extra=None, timeout=900):
    start = time.monotonic()
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-playbook"), path] + list(args),
                         cwd=TREE, env=env(lab, **(env_extra or {})), capture_output=True,
                         text=True, timeout=timeout)
    took = time.monotonic() - start
    log("%s %s: rc=%d in %.1fs" % (path, " ".join(args), out.returncode, took))
    return out, took


def adhoc(lab, module, args, pattern="redis"):
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible"), pattern, "-m", module, "-a", args],
                         cwd=TREE, env=env(lab), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def live_mode(lab, host):
    out = lab.exec(host, ["bpftool", "-j", "map", "lookup", "pinned", CONFIG_PIN, "key", "0", "0", "0", "0"],
                   capture_output=True, text=True)
    if out.returncode != 0:
        return None
    data = json.loads(out.stdout)
    raw = bytes(int(b, 16) for b in data["value"])
    cfg = CONTRACT.structs["brc_config"].from_buffer_copy(raw[:ctypes.sizeof(CONTRACT.structs["brc_config"])])
    return MODES.get(cfg.mode, cfg.mode)


def modes(lab):
    return dict((h.name, live_mode(lab, h.name)) for h in lab.hosts)


def set_all(lab, mode):
    adhoc(lab, "brc_config", "interface=eth0 mode=%s" % mode)
    assert set(modes(lab).values()) == {mode}


def redis_ok(addr, tries=20):
    """Redis answers a PING and a SET/GET round trip on a new connection."""
    import redis
    last = None
    for _ in range(tries):
        try:
            r = redis.Redis(host=addr, port=6379, socket_timeout=2, socket_connect_timeout=2)
            r.set("fleet:test:alive", "yes")
            ok = r.ping() and r.get("fleet:test:alive") == b"yes"
            r.close()
            if ok:
                return True
        except Exception as e:  # noqa: BLE001 - report the last one
            last = e
        time.sleep(0.5)
    raise AssertionError("Redis at %s does not serve: %s" % (addr, last))


# redis-benchmark tests (-t) that send one command each, named as BRC's histograms are.
LOADED_COMMANDS = ("incr", "lpush", "rpush", "sadd", "hset")


def warm_up(lab, rounds=200):
    """Observe-mode traffic from the controller: writes, then repeated reads, on new connections."""
    import redis
    for h in lab.hosts:
        r = redis.Redis(host=h.addr, port=6379, socket_timeout=2)
        for i in range(50):
            r.set("fleet:warm:%d" % i, "v%d" % i)
        r.close()
        for n in range(rounds // 50):
            r = redis.Redis(host=h.addr, port=6379, socket_timeout=2)
            for i in range(50):
                assert r.get("fleet:warm:%d" % i) == ("v%d" % i).encode()
            r.close()


def guard_log(lab, host):
    out = lab.exec(host, ["cat", GUARD_LOG], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else ""


def host_ran(stdout, host):
    return re.search(r"^%s\s+:" % re.escape(host), stdout, re.M) is not None


@pytest.fixture(scope="module")
def fleet(lab):
    """The lab with BRC deployed by deploy.yml (observe mode)."""
    out, took = deploy(lab)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert set(modes(lab).values()) == {"observe"}
    return lab


def deploy(lab):
    return playbook(lab, "deploy.yml")


@pytest.fixture
def report_dir(tmp_path):
    path = tmp_path / "reports"
    path.mkdir()
    return str(path)


class WatchMode(threading.Thread):
    """Run action() once, as soon as host's live mode becomes `mode`."""

    def __init__(self, lab, host, mode, action, timeout=300):
        threading.Thread.__init__(self, daemon=True)
        self.lab, self.host, self.mode, self.action, self.timeout = lab, host, mode, action, timeout
        self.fired_at = None
        self.stop = threading.Event()

    def run(self):
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            if live_mode(self.lab, self.host) == self.mode:
                self.fired_at = time.monotonic()
                self.action()
                return
            time.sleep(0.03)


# --- rollback --------------------------------------------------------------------------

def test_canary_whose_redis_stops_answering_is_rolled_back(fleet, report_dir):
    lab = fleet
    set_all(lab, "off")
    canary = lab.hosts[0]
    before = {h.name: guard_log(lab, h.name) for h in lab.hosts}

    def pause_redis():
        # Redis on the canary stops answering every client for 8 s, right after its change.
        subprocess.run(["redis-cli", "-h", canary.addr, "CLIENT", "PAUSE", "8000", "ALL"],
                       check=True, capture_output=True, timeout=10)
        log("paused Redis on %s" % canary.name)

    watch = WatchMode(lab, canary.name, "observe", pause_redis)
    watch.start()
    out, took = playbook(lab, "playbooks/enable.yml", "-e", "brc_enable_mode=observe")
    watch.stop.set()
    watch.join(10)
    text = out.stdout + out.stderr
    assert watch.fired_at, "the canary never reached observe:\n" + text[-4000:]
    assert out.returncode != 0, text[-4000:]
    # The failure names the host, the gate and the numbers.
    m = re.search(r"ROLLED BACK %s \(eth0\) to off after trying observe: gate after failed: (.*?) numbers=(\{.*?\})"
                  % canary.name, text.replace("\n", " "))
    assert m, text[-4000:]
    assert "correctness probe" in m.group(1)
    assert json.loads(m.group(2))["probe_errors"] >= 1
    # The rollout stopped at the canary: the other hosts never ran a task.
    for h in lab.hosts[1:]:
        assert not host_ran(out.stdout, h.name), out.stdout[-3000:]
        assert guard_log(lab, h.name) == before[h.name]
    # Every host is in its previous mode, and serving once the pause is over.
    assert modes(lab) == dict((h.name, "off") for h in lab.hosts)
    assert "confirmed by the controller" in guard_log(lab, canary.name)[len(before[canary.name]):]
    for h in lab.hosts:
        redis_ok(h.addr)


def refused_before(lab, out, canary, why, mode):
    """The rollout failed at the canary's gate before (regex @why) and changed nothing:
    every host is still in @mode."""
    assert out.returncode != 0
    assert re.search(r"%s: gate before failed \(nothing was changed\): " % canary.name + why,
                     out.stdout.replace("\n", " ")), out.stdout[-3000:]
    assert modes(lab) == dict((h.name, mode) for h in lab.hosts)


def test_gates_before_refuse_and_change_nothing(fleet):
    lab = fleet
    set_all(lab, "observe")
    canary = lab.hosts[0]
    # No observe history (counters zeroed): promotion to serve is refused unless forced.
    adhoc(lab, "brc_stats", "interface=eth0 reset=true")
    out, _t = playbook(lab, "playbooks/enable.yml", "-e", "brc_enable_mode=serve")
    refused_before(lab, out, canary, r"promotion to serve needs observe history", "observe")
    assert not any(host_ran(out.stdout, h.name) for h in lab.hosts[1:])
    # Redis stopped on the canary: the rollout stops before touching anything.
    set_all(lab, "off")
    lab.exec(canary.name, ["redis-cli", "-h", canary.addr, "SHUTDOWN", "NOSAVE"], capture_output=True)
    try:
        out, _t = playbook(lab, "playbooks/enable.yml")
    finally:
        # The lab's own config (private /etc/redis of the host), as labctl started it.
        lab.exec(canary.name, ["redis-server", "/etc/redis/redis.conf", "--daemonize", "yes"], check=True)
    refused_before(lab, out, canary, r"Redis does not answer correctly.*connect %s:6379: \[Errno 111\] "
                   r"Connection refused" % canary.addr, "off")
    for h in lab.hosts:
        redis_ok(h.addr)


def test_host_cut_off_after_its_change_reverts_by_itself(fleet):
    lab = fleet
    set_all(lab, "off")
    host = lab.hosts[0]
    nft_table = "brcfleettest"

    def cut_off():
        # Drop the controller's ssh to the host, after brc_config set the new mode
        # but before the controller could confirm it.
        lab.exec(host.name, "nft add table inet %s && nft add chain inet %s in "
                            "'{ type filter hook input priority -10; }' && "
                            "nft add rule inet %s in tcp dport 22 drop" % (nft_table, nft_table, nft_table),
                 check=True)
        log("cut %s off" % host.name)

    watch = WatchMode(lab, host.name, "observe", cut_off)
    watch.start()
    try:
        out, took = playbook(lab, "playbooks/enable.yml", "-e", "brc_enable_mode=observe",
                             "-e", "brc_rollout_guard_timeout=10", "-e", "brc_rollout_task_timeout=8",
                             env_extra={"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none "
                                                            "-o ConnectTimeout=5"})
        watch.stop.set()
        watch.join(10)
        assert watch.fired_at, "the host never reached observe:\n" + out.stdout[-4000:]
        assert out.returncode != 0
        # The host restored its previous mode by itself (at most guard timeout after arming).
        deadline = time.monotonic() + 30
        while live_mode(lab, host.name) != "off" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert live_mode(lab, host.name) == "off"
        assert "reverted (no confirmation from the controller" in guard_log(lab, host.name)
        for h in lab.hosts[1:]:
            assert live_mode(lab, h.name) == "off"
    finally:
        lab.exec(host.name, ["nft", "delete", "table", "inet", nft_table])
    redis_ok(host.addr)


# --- a normal rolling enable / disable -------------------------------------------------------

class Checkers(threading.Thread):
    """tests/tools/checker.py against every host, in back-to-back runs, until stopped."""

    def __init__(self, lab):
        threading.Thread.__init__(self, daemon=True)
        self.lab = lab
        self.stop = threading.Event()
        self.results = []

    def run(self):
        checker = os.path.join(TREE, "tests", "tools", "checker.py")
        while not self.stop.is_set():
            procs = [(h.name, subprocess.Popen([sys.executable, checker, "--host", h.addr, "--connections", "8",
                                                "--seconds", "30", "--json"],
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                     for h in self.lab.hosts]
            for name, p in procs:
                stdout, stderr = p.communicate(timeout=120)
                self.results.append((name, p.returncode, stdout[-2000:], stderr[-2000:]))


def test_rolling_enable_to_serve_then_disable(fleet):
    lab = fleet
    set_all(lab, "observe")
    warm_up(lab)
    extra = []
    if "would_hit" not in CONTRACT.counters or "mismatch" not in CONTRACT.counters:
        # This build has no observe-history counters yet: the gate would (rightly) refuse.
        extra = ["-e", "brc_rollout_force=true"]
        log("contract has no would_hit/mismatch counters: promoting with brc_rollout_force=true")
    # 3 x 8 checker connections saturate both cores of this machine for the whole
    # rollout, so the latency gate gets a wider absolute allowance here (the
    # correctness probe and the counter checks are as strict as ever).
    extra += ["-e", "brc_rollout_latency_slack_us=20000"]
    checkers = Checkers(lab)
    checkers.start()
    time.sleep(2)   # the baseline probe of the canary is taken under the same load
    try:
        up, took_up = playbook(lab, "playbooks/enable.yml", "-e", "brc_enable_mode=serve", *extra)
        assert up.returncode == 0, up.stdout[-6000:]
        for h in lab.hosts:
            assert "%s: observe -> serve passed" % h.name in up.stdout
        assert modes(lab) == dict((h.name, "serve") for h in lab.hosts)
        down, took_down = playbook(lab, "playbooks/disable.yml", "-e", "brc_rollout_latency_slack_us=20000")
        assert down.returncode == 0, down.stdout[-6000:]
        for h in lab.hosts:
            assert "%s: serve -> off passed" % h.name in down.stdout
        assert modes(lab) == dict((h.name, "off") for h in lab.hosts)
    finally:
        checkers.stop.set()
        checkers.join(180)
    assert checkers.results, "no checker ran"
    bad = [r for r in checkers.results if r[1] != 0]
    assert not bad, bad[:3]
    log("checker runs during the rollout: %d, all clean; enable %.0fs, disable %.0fs"
        % (len(checkers.results), took_up, took_down))
    # A second disable changes nothing.
    again, _t = playbook(lab, "playbooks/disable.yml")
    assert again.returncode == 0, again.stdout[-6000:]
    assert re.findall(r"changed=(\d+)", again.stdout) == ["0"] * len(lab.hosts)


# --- audit -----------------------------------------------------------------------------------

DIFFERENT_BUILD = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
__attribute__((section("tc"), used)) int other_build(struct __sk_buff *skb) { return TC_ACT_OK; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


def test_audit_flags_drift_and_reports_the_rest_clean(fleet, report_dir):
    lab = fleet
    set_all(lab, "observe")
    clean, _t = playbook(lab, "playbooks/audit.yml", "--check", "-e", "brc_audit_strict=true",
                         "-e", "brc_report_dir=%s" % report_dir)
    assert clean.returncode == 0, clean.stdout[-5000:]
    assert "fleet: 3 hosts, 3 clean, 0 with drift" in clean.stdout
    assert re.findall(r"changed=(\d+)", clean.stdout) == ["0"] * len(lab.hosts)

    h1, h2, h3 = lab.hosts
    build = ("cat > /tmp/other.c <<'EOF'\n%s\nEOF\n"
             "clang -O2 -target bpf -I/usr/include/$(uname -m)-linux-gnu -c /tmp/other.c -o /tmp/other.o"
             % DIFFERENT_BUILD)
    # Hand-made drift: h2 loses its egress filter and gains a foreign one at ingress,
    # h3 gets another build of the program in place of BRC's at ingress.
    lab.exec(h2.name, ["tc", "filter", "del", "dev", "eth0", "egress", "pref", "1", "handle", "0xbc0", "bpf"],
             check=True)
    lab.exec(h2.name, build + " && tc filter add dev eth0 ingress pref 49 handle 0x7 bpf da obj /tmp/other.o sec tc",
             check=True)
    lab.exec(h3.name, build + " && tc filter replace dev eth0 ingress pref 1 handle 0xbc0 bpf da obj /tmp/other.o sec tc",
             check=True)
    try:
        out, took = playbook(lab, "playbooks/audit.yml", "-e", "brc_audit_strict=true",
                             "-e", "brc_report_dir=%s" % report_dir)
        assert out.returncode != 0, out.stdout[-5000:]
        assert "drift on %s, %s (brc_audit_strict=true)" % (h2.name, h3.name) in out.stdout
        assert "fleet: 3 hosts, 1 clean, 2 with drift" in out.stdout
        audit = json.load(open(os.path.join(report_dir, "audit.json")))
        by = dict((h["host"], h) for h in audit["hosts"])
        assert by[h1.name]["problems"] == []
        assert any(p["check"] == "filter" and p["detail"].startswith("egress: BRC filter missing")
                   for p in by[h2.name]["problems"]), by[h2.name]["problems"]
        assert any(p["check"] == "filter" and p["detail"].startswith("ingress: extra filter on eth0 (prio 49")
                   for p in by[h2.name]["problems"]), by[h2.name]["problems"]
        assert any(p["check"] == "program" and p["detail"].startswith("ingress: attached program tag")
                   for p in by[h3.name]["problems"]), by[h3.name]["problems"]
        assert not any(p["detail"].startswith("egress:") for p in by[h3.name]["problems"])
        log("drift found: %s" % json.dumps(dict((h, by[h]["problems"]) for h in (h2.name, h3.name)))[:1500])
        for h in audit["hosts"]:
            assert h["mode"] == "observe" and h["capabilities"]["clsact"] is True
            assert "get" in h["latency"] and set(h["latency"]) <= set(LATENCY_NAMES), h["latency"]
        # The HTML report renders and names every host.
        html = os.path.join(report_dir, "audit.html")
        check_html_renders(html, [h.name for h in lab.hosts], expect_drift=True)
    finally:
        # The toolkit repairs what is its own (brc_tc re-attaches the pinned programs); the
    # foreign filter is not its to remove.
        fix, _t = deploy(lab)
        lab.exec(h2.name, ["tc", "filter", "del", "dev", "eth0", "ingress", "pref", "49"])
        assert fix.returncode == 0, fix.stdout[-4000:]
    again, _t = playbook(lab, "playbooks/audit.yml", "-e", "brc_audit_strict=true",
                         "-e", "brc_report_dir=%s" % report_dir)
    assert again.returncode == 0, again.stdout[-4000:]
    # A live config that differs from the inventory (brc_mode defaults to observe) is drift too.
    adhoc(lab, "brc_config", "interface=eth0 mode=off", pattern=h1.name)
    cfg, _t = playbook(lab, "playbooks/audit.yml", "-e", "brc_report_dir=%s" % report_dir)
    assert cfg.returncode == 0   # not strict: report only
    audit = json.load(open(os.path.join(report_dir, "audit.json")))
    assert audit["drifted"] == [h1.name]
    assert any(p["check"] == "config" and re.search(r"live config differs from the inventory.*: mode: off -> observe$",
                                                    p["detail"]) for p in audit["hosts"][0]["problems"]), audit["hosts"][0]
    set_all(lab, "observe")


def check_html_renders(html, hosts, expect_drift):
    assert CHROMIUM, "chromium is not installed (scripts/setup installs it)"
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "audit.png")
    if os.path.exists(shot):
        os.unlink(shot)
    profile = os.path.join(os.path.dirname(html), "chromium-profile")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + profile]
    dom = subprocess.run(flags + ["--dump-dom", "file://" + html], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    for h in hosts:
        assert h in text, "%s missing from the rendered page" % h
    assert ("DRIFT" in text) is expect_drift
    assert dom.stdout.count("<svg") >= 3          # the charts are there
    shutil.copy(html, os.path.join(ARTIFACTS, "audit.html"))
    out = subprocess.run(flags + ["--window-size=1280,2000", "--screenshot=" + shot, "file://" + html],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and os.path.getsize(shot) > 10000, out.stderr[-2000:]


# --- stats -----------------------------------------------------------------------------------

def test_stats_fleet_totals_and_prometheus_files(fleet, report_dir):
    lab = fleet
    set_all(lab, "observe")
    adhoc(lab, "brc_stats", "reset=true")     # histograms counted from here: exact counts below
    warm_up(lab, rounds=100)                   # 50 SET and 100 GET per host
    per_command = 300
    for h in lab.hosts:                        # five more commands, on connections opened now
        bench = subprocess.run(["redis-benchmark", "-h", h.addr, "-p", "6379", "-c", "2", "-P", "1",
                                "-n", str(per_command), "-t", ",".join(LOADED_COMMANDS), "-q"],
                               capture_output=True, text=True, timeout=120)
        assert bench.returncode == 0, bench.stdout + bench.stderr
    out, took = playbook(lab, "playbooks/stats.yml", "-e", "brc_stats_interval=2",
                         "-e", "brc_report_dir=%s" % report_dir)
    assert out.returncode == 0, out.stdout[-5000:]
    stats = json.load(open(os.path.join(report_dir, "stats.json")))
    hosts = stats["hosts"]
    assert sorted(hosts) == sorted(h.name for h in lab.hosts)
    assert stats["missing"] == []
    fleet_counters = stats["fleet"]["counters"]
    assert fleet_counters
    for name, total in fleet_counters.items():
        assert total == sum(h["counters"][name] for h in hosts.values()), name
    assert any(v > 0 for v in fleet_counters.values()), "no counter moved under real traffic"
    for h in hosts.values():
        # one histogram per command, as many timed replies as the load sent
        counts = dict((cmd, hist["count"]) for cmd, hist in h["latency"].items())
        assert counts["set"] == 50 and counts["get"] == 100, counts
        assert all(counts.get(cmd) == per_command for cmd in LOADED_COMMANDS), counts
    for cls, hist in stats["fleet"]["latency"].items():
        per_host = [h["latency"].get(cls, {}).get("buckets") or [0] * len(hist["buckets"])
                    for h in hosts.values()]
        assert hist["buckets"] == [sum(col) for col in zip(*per_host)], cls
        assert hist["count"] == sum(hist["buckets"])
    for h in hosts.values():
        assert h["interval_s"] == 2 and isinstance(h["rates"], dict)
    for h in lab.hosts:
        path = os.path.join(report_dir, "prometheus", "%s.prom" % h.name)
        fams = promtext.parse(open(path).read())
        for name, value in hosts[h.name]["counters"].items():
            (_n, labels, got), = fams["brc_%s_total" % name]["samples"]
            assert labels == {"host": h.name, "interface": "eth0"}
            assert got == value
        assert fams["brc_latency_seconds"]["type"] == "histogram"
        counts = dict((labels["command"], v) for n, labels, v in fams["brc_latency_seconds"]["samples"]
                      if n == "brc_latency_seconds_count")
        assert all(counts[cmd] == per_command for cmd in LOADED_COMMANDS), counts
        # the host agent the role runs: in charge and beating
        assert [v for _n, _l, v in fams["brc_agent_in_charge"]["samples"]] == [1]
        assert [v for _n, _l, v in fams["brc_agent_answering"]["samples"]] == [1]
        assert hosts[h.name]["agent"]["in_charge"] and hosts[h.name]["agent"]["answering"]
