"""playbooks/profile.yml on the lab: real ssh, real perf, real redis-benchmark load.

  - under redis-benchmark (SET, GET, INCR, LPUSH, LRANGE) on every host, a flame graph per host
    with redis-server's own frames and one for the fleet; the fleet page renders in headless
    Chromium (screenshot kept in reports/test-artifacts/profile-fleet.png); nothing is left on
    the hosts; the audit page links the profiles; --check samples nothing and writes nothing;
  - with brc_profile_whole_machine every CPU is sampled and softirq time shows;
  - perf missing, kernel.perf_event_paranoid refusing an unprivileged remote user (set to 2
    and restored: one kernel for every lab host), no redis-server running, a host cut off
    mid-run: each fails that host with a message naming the fix, and leaves nothing behind.
"""
import importlib.util
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from fixtures.lab import ansible_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(REPO, "reports", "test-artifacts")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PARANOID = "/proc/sys/kernel/perf_event_paranoid"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fp = _load("brc_profile_pages", "plugins/filter/brc_profile_pages.py")                     # the role's filters
mod = _load("brc_profile_module", "library/brc_profile.py")                                # the module


def log(msg):
    sys.stderr.write("[profile %s] %s\n" % (time.strftime("%H:%M:%S"), msg))


def playbook(lab, *args, env_extra=None, timeout=600):
    start = time.monotonic()
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "playbooks/profile.yml"]
                         + list(args), cwd=REPO, env=ansible_env(lab, **(env_extra or {})),
                         capture_output=True, text=True, timeout=timeout)
    log("profile.yml %s: rc=%d in %.1fs" % (" ".join(args), out.returncode, time.monotonic() - start))
    return out


class Load(threading.Thread):
    """redis-benchmark against every host from the controller, run after run (each bounded by
    -n and a timeout, at most max_runs), until stopped."""

    def __init__(self, lab, max_runs=40):
        super().__init__(daemon=True)
        self.lab, self.max_runs, self.stop, self.runs = lab, max_runs, threading.Event(), 0

    def run(self):
        while not self.stop.is_set() and self.runs < self.max_runs:
            procs = [subprocess.Popen(["redis-benchmark", "-h", h.addr, "-n", "20000", "-c", "8", "-q",
                                       "-t", "set,get,incr,lpush,lrange_100"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in self.lab.hosts]
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.runs += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(60)


@pytest.fixture
def report_dir(tmp_path):
    path = tmp_path / "reports"
    path.mkdir()   # as reports/ is once anything ran: brc_common's report_dir creates it (changed)
    return str(path)


def leftovers(lab, host):
    """perf processes and perf.data directories on a host."""
    out = lab.exec(host, "pgrep -a -x perf; ls -d /var/tmp/brc-profile-* 2>/dev/null; true",
                   capture_output=True, text=True)
    return out.stdout.strip()


def assert_nothing_left(lab, hosts, wait=0):
    deadline = time.monotonic() + wait
    for h in hosts:
        while leftovers(lab, h) and time.monotonic() < deadline:
            time.sleep(1)
        assert leftovers(lab, h) == "", "left on %s: %s" % (h, leftovers(lab, h))


# --- the filter plugin: folding to the renderer's tree, without a lab ---------------------------

@pytest.mark.parametrize("folded, tree", [
    (["a;b 2", "a;c_[k] 1", "a 3"],
     {"n": "all", "l": "root", "v": 0, "c": [
         {"n": "a", "l": "", "v": 3, "c": [{"n": "b", "l": "", "v": 2, "c": []},
                                           {"n": "c", "l": "kernel", "v": 1, "c": []}]}]}),
    (["", "bad line", "x;y notanumber", "x 0"], {"n": "all", "l": "root", "v": 0, "c": []}),
])
def test_tree_from_folded(folded, tree):
    assert fp.brc_profile_tree(folded) == tree


def test_fleet_tree_and_softirq_summary():
    per_host = {"h2": ["redis-server;main 4"],
                "h1": ["ksoftirqd/0;run_ksoftirqd_[k];handle_softirqs_[k];net_rx_action_[k] 6",
                       "swapper;do_softirq.part.0_[k];bpf_prog_6deef7357e7b4530_brc_ingress_[k] 2"]}
    tree = fp.brc_profile_fleet_tree(per_host)
    assert [c["n"] for c in tree["c"]] == ["h1", "h2"]
    assert fp.brc_profile_fleet_folded(per_host)[-1] == "h2;redis-server;main 4"
    s = fp.brc_profile_summary(fp.brc_profile_fleet_folded(per_host))
    assert (s["samples"], s["softirq_samples"], s["brc_softirq_samples"]) == (12, 8, 2)
    assert s["brc_share_of_softirq"] == 0.25


def test_page_cannot_be_closed_by_a_frame_name():
    template = "<script>const stacks = [/** @flamegraph_json **/]; const o = [/** @options_json **/];</script>"
    page = fp.brc_profile_page(fp.brc_profile_tree(["</script><b>x 1"]), template, context="<i>")
    assert page.count("</script>") == 1 and "<b>" not in page and "<i>" not in page
    with pytest.raises(ValueError, match="make setup"):
        fp.brc_profile_page({}, "<html></html>")


@pytest.mark.parametrize("euid, paranoid, whole, owners, expect", [
    (0, 4, True, {7: 999}, None),                                # root bypasses paranoid and ownership
    (1000, 2, False, {7: 1000}, None),                           # a user's own redis-server
    (1000, 2, True, {}, "kernel.perf_event_paranoid=2 forbids"),  # every CPU needs 0 or less
    (1000, 3, False, {7: 1000}, "kernel.perf_event_paranoid=3 forbids"),
    (1000, -1, False, {7: 0, 8: 1000}, "redis-server (pid 7) runs as another user"),
])
def test_permission_problem(euid, paranoid, whole, owners, expect):
    got = mod.permission_problem(euid, paranoid, whole, owners)
    if expect is None:
        assert got is None
    else:
        assert expect in got and "become: true" in got


def test_record_argv_uses_dwarf_and_stops_by_itself():
    argv = mod.record_argv("perf", "/d/perf.data", 5, 99, 16384, False, [7, 9])
    assert argv[argv.index("--call-graph") + 1] == "dwarf,16384"
    assert argv[argv.index("-p") + 1] == "7,9" and argv[-3:] == ["--", "sleep", "5"]
    assert "-a" in mod.record_argv("perf", "/d/perf.data", 5, 99, 16384, True, [])


# --- the lab ---------------------------------------------------------------------------------

def test_flame_graph_per_host_and_fleet_under_load(lab, report_dir):
    names = [h.name for h in lab.hosts]
    with Load(lab) as load:
        time.sleep(1)
        out = playbook(lab, "-e", "brc_profile_seconds=3", "-e", "brc_report_dir=%s" % report_dir)
    assert load.runs >= 1
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert re.findall(r"changed=(\d+)", out.stdout) == ["0"] * len(names)
    pdir = os.path.join(report_dir, "profile")
    for name in names:
        folded = open(os.path.join(pdir, name + ".folded")).read().splitlines()
        assert folded and all(line.startswith("redis-server;") for line in folded), folded[:3]
        page = open(os.path.join(pdir, name + ".html")).read()
        # Redis's own functions, unwound through DWARF (no frame pointers in Debian's build).
        for frame in ('"n": "redis-server"', '"n": "main"', '"n": "aeMain"'):
            assert frame in page, "%s missing from %s.html" % (frame, name)
        assert re.search(r'"n": "(readQueryFromClient|processCommand|call|processInputBuffer)"', page)
        assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)   # self-contained
    report = json.load(open(os.path.join(pdir, "profile.json")))
    assert sorted(report["hosts"]) == names and report["missing"] == []
    assert report["fleet"]["samples"] == sum(h["samples"] for h in report["hosts"].values()) > 0
    assert "profile: %d host(s)" % len(names) in out.stdout
    assert_nothing_left(lab, names)
    check_fleet_page_renders(os.path.join(pdir, "fleet.html"), names)

    # The audit page links the profiles once they exist (read-only audit, one host is enough).
    audit = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "playbooks/audit.yml", "--check",
                            "--limit", names[0], "-e", "brc_audit_check_build=false",
                            "-e", "brc_report_dir=%s" % report_dir],
                           cwd=REPO, env=ansible_env(lab), capture_output=True, text=True, timeout=600)
    assert audit.returncode == 0, audit.stdout[-3000:]
    assert '<a href="profile/index.html">' in open(os.path.join(report_dir, "audit.html")).read()

    again = playbook(lab, "--check", "-e", "brc_profile_seconds=3", "-e", "brc_report_dir=%s/check" % report_dir)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "would sample pid" in again.stdout
    assert not os.path.exists(os.path.join(report_dir, "check", "profile"))


def check_fleet_page_renders(html, hosts):
    assert CHROMIUM, "chromium is not installed (scripts/setup installs it)"
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "profile-fleet.png")
    if os.path.exists(shot):
        os.unlink(shot)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--user-data-dir=" + os.path.join(os.path.dirname(html), "chromium-profile"),
             "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", "file://" + html], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<svg" in dom.stdout, "no flame graph drawn:\n" + dom.stdout[-2000:]
    titles = re.findall(r"<title>([^<]*)</title>", dom.stdout)
    for h in hosts:
        assert any(t.startswith(h + " (") for t in titles), "%s has no frame in the rendered graph" % h
    assert any(t.startswith("aeMain (") for t in titles)
    shutil.copy(html, os.path.join(ARTIFACTS, "profile-fleet.html"))
    out = subprocess.run(flags + ["--window-size=1400,1200", "--screenshot=" + shot, "file://" + html],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and os.path.getsize(shot) > 10000, out.stderr[-2000:]


def test_whole_machine_shows_softirq(lab, report_dir):
    host = lab.hosts[0].name
    with Load(lab):
        time.sleep(1)
        out = playbook(lab, "--limit", host, "-e", "brc_profile_seconds=2", "-e", "brc_profile_whole_machine=true",
                       "-e", "brc_report_dir=%s" % report_dir)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    report = json.load(open(os.path.join(report_dir, "profile", "profile.json")))
    h = report["hosts"][host]
    # Every process of the VM (the other engineers' too: by_command is only the top 10).
    folded = open(os.path.join(report_dir, "profile", host + ".folded")).read().splitlines()
    commands = set(line.split(";", 1)[0] for line in folded)
    assert "redis-server" in commands and len(commands) > 1, (commands, h)
    assert h["softirq_samples"] > 0, h
    assert "in softirq" in out.stdout
    assert_nothing_left(lab, [host])


def failed_host_message(out, host):
    """The module's msg for a failed host, from the yaml callback's output."""
    m = re.search(r"fatal: \[%s\]: FAILED! =>(.*?)(?:\n\S|\Z)" % re.escape(host), out.stdout, re.S)
    assert m, out.stdout[-4000:]
    return re.sub(r"\s+", " ", m.group(1))


def test_perf_missing_names_the_package(lab, report_dir):
    host = lab.hosts[1].name
    # Hide perf in this host's mount namespace only (every ssh session to it shares that one).
    lab.exec(host, ["mount", "--bind", "/dev/null", "/usr/bin/perf"], check=True)
    try:
        out = playbook(lab, "--limit", host, "-e", "brc_profile_seconds=2", "-e", "brc_report_dir=%s" % report_dir)
    finally:
        lab.exec(host, ["umount", "/usr/bin/perf"], check=True)
    assert out.returncode != 0
    msg = failed_host_message(out, host)
    assert "perf is not installed" in msg and "apt-get install linux-perf" in msg, msg
    assert_nothing_left(lab, [host])


@pytest.fixture
def unprivileged_user(lab):
    """A non-root user the lab's sshd lets in with the lab key (one /etc/passwd for every
    lab host), and kernel.perf_event_paranoid at 2 (Debian's default); both restored."""
    name = "brcprof%d" % os.getpid()
    with open(PARANOID) as f:
        saved = f.read().strip()
    # sshd reads the lab's one authorized_keys file as the user logging in: let it
    # (traverse-only on the lab's state dir, the public keys readable), restored after.
    keys = os.path.join(lab.state_dir, "authorized_keys")
    modes = dict((p, os.stat(p).st_mode & 0o7777) for p in (lab.state_dir, keys))
    # "*": no password, yet not locked ("!"), which sshd without PAM would refuse.
    subprocess.run(["useradd", "--system", "--no-create-home", "--password", "*", "--home-dir", "/nonexistent",
                    "--shell", "/bin/sh", name], check=True)
    try:
        os.chmod(lab.state_dir, modes[lab.state_dir] | 0o011)
        os.chmod(keys, modes[keys] | 0o044)
        with open(PARANOID, "w") as f:
            f.write("2\n")
        yield name
    finally:
        try:
            with open(PARANOID, "w") as f:
                f.write(saved + "\n")
        finally:
            for path, mode in modes.items():
                os.chmod(path, mode)
            gone = subprocess.run(["userdel", name], capture_output=True, text=True)
        assert gone.returncode == 0, gone.stderr
        with open(PARANOID) as f:
            assert f.read().strip() == saved


def test_paranoid_refuses_an_unprivileged_user(lab, report_dir, unprivileged_user):
    host = lab.hosts[2]
    pwd.getpwnam(unprivileged_user)
    # The kernel really refuses this user (the module's check is not a guess).
    real = subprocess.run(lab.ssh_argv(host.name)[:-1] + ["%s@%s" % (unprivileged_user, host.addr),
                          "perf record -a -o /tmp/brcprof.data -- true; rc=$?; rm -f /tmp/brcprof.data; exit $rc"],
                          capture_output=True, text=True, timeout=60)
    assert real.returncode != 0 and "perf_event_paranoid" in real.stdout + real.stderr, real.stderr[-2000:]

    as_user = ["--limit", host.name, "-e", "ansible_user=%s" % unprivileged_user, "-e", "brc_profile_seconds=2",
               "-e", "brc_report_dir=%s" % report_dir]
    no_sharing = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none"}   # no session outlives the test
    out = playbook(lab, *(as_user + ["-e", "brc_profile_whole_machine=true"]), env_extra=no_sharing)
    assert out.returncode != 0
    msg = failed_host_message(out, host.name)
    assert "kernel.perf_event_paranoid=2 forbids a non-root user" in msg and "become: true" in msg, msg

    out = playbook(lab, *as_user, env_extra=no_sharing)
    assert out.returncode != 0
    msg = failed_host_message(out, host.name)
    assert "runs as another user" in msg and "become: true" in msg, msg
    assert_nothing_left(lab, [host.name])


def test_no_redis_server_running(lab, report_dir):
    host = lab.hosts[2]
    subprocess.run(["redis-cli", "-h", host.addr, "shutdown", "nosave"], capture_output=True, timeout=30)
    try:
        deadline = time.monotonic() + 20
        while lab.exec(host.name, ["pgrep", "-x", "redis-server"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "redis-server did not stop"
            time.sleep(0.2)
        out = playbook(lab, "--limit", host.name, "-e", "brc_profile_seconds=2", "-e", "brc_report_dir=%s" % report_dir)
    finally:
        # Back as the lab started it (its config in the host's private /etc/redis).
        lab.exec(host.name, "setsid redis-server /etc/redis/redis.conf </dev/null >/dev/null 2>&1 &", check=True)
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-h", host.addr, "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not come back"
            time.sleep(0.2)
    assert out.returncode != 0
    msg = failed_host_message(out, host.name)
    assert "no redis-server is running" in msg and "systemctl start redis-server" in msg, msg
    assert_nothing_left(lab, [host.name])


def test_host_cut_off_mid_run(lab, report_dir):
    names = [h.name for h in lab.hosts]
    host = lab.hosts[0]
    nft_table = "brcprofiletest"
    seconds = 6
    env_extra = {"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none -o ConnectTimeout=5 "
                                     "-o ServerAliveInterval=2 -o ServerAliveCountMax=2"}
    stale = os.path.join(report_dir, "profile", host.name + ".html")
    os.makedirs(os.path.dirname(stale))
    with open(stale, "w") as f:
        f.write("an earlier run's page")
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "playbooks/profile.yml",
            "-e", "brc_profile_seconds=%d" % seconds, "-e", "brc_profile_timeout_margin=40",
            "-e", "brc_report_dir=%s" % report_dir]
    with Load(lab):
        proc = subprocess.Popen(argv, cwd=REPO, env=ansible_env(lab, **env_extra), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while lab.exec(host.name, ["pgrep", "-x", "perf"], capture_output=True).returncode != 0:
                assert time.monotonic() < deadline and proc.poll() is None, "perf never started on %s" % host.name
                time.sleep(0.2)
            lab.exec(host.name, "nft add table inet %s && nft add chain inet %s in "
                                "'{ type filter hook input priority -10; }' && "
                                "nft add rule inet %s in tcp dport 22 drop" % (nft_table, nft_table, nft_table),
                     check=True)
            log("cut %s off while perf runs" % host.name)
            stdout, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    try:
        assert proc.returncode != 0
        assert re.search(r"missing: %s \(failed or unreachable.*--limit %s\)" % (host.name, host.name),
                         re.sub(r"\s+", " ", stdout)), stdout[-4000:]
        report = json.load(open(os.path.join(report_dir, "profile", "profile.json")))
        assert sorted(report["hosts"]) == names[1:] and report["missing"] == [host.name]
        assert not os.path.exists(stale)   # no page from another run beside this one's
        # perf stops by itself after brc_profile_seconds and the module removes perf.data,
        # with nobody left to hear it.
        assert_nothing_left(lab, [host.name], wait=seconds + 60)
    finally:
        lab.exec(host.name, ["nft", "delete", "table", "inet", nft_table])
