"""deploy.yml and playbooks/undeploy.yml on the 3-host lab over real ssh.

One ordered story (each step relies on the previous one):
preflight failure -> --check on fresh hosts -> deploy -> second run changed=0 ->
--check after deploy -> stats grow under real traffic from the controller ->
the host agent feeds a loopback write -> upgrade from changed sources keeps maps and
counters -> undeploy leaves nothing (no agent, no agent user).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from ansible.module_utils.brc_resp import encode as _resp
from fixtures.lab import ansible_env
from fixtures.paths import BPF_DIR, REPO

pytestmark = pytest.mark.usefixtures("lab")

PLAYBOOK = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
TIMINGS = {}


def play(lab, playbook, *args, expect_rc=0):
    t0 = time.monotonic()
    p = subprocess.run([PLAYBOOK, playbook] + list(args), cwd=REPO, env=ansible_env(lab),
                       capture_output=True, text=True, timeout=900)
    TIMINGS["%d. %s %s" % (len(TIMINGS) + 1, playbook, " ".join(args))] = round(time.monotonic() - t0, 1)
    out = p.stdout + p.stderr
    if expect_rc is not None:
        assert p.returncode == expect_rc, out[-8000:]
    recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                          "failed": int(m.group(5))} for m in RECAP.finditer(p.stdout)}
    return recap, out


def module(lab, name, args=""):
    """Run one module ad hoc on every host; {host: result}."""
    env = ansible_env(lab, ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    p = subprocess.run([ANSIBLE, "redis", "-o", "-m", name, "-a", args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    out = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(\S+) \| (\w+) => (\{.*\})\s*$", line)
        if m:
            out[m.group(1)] = json.loads(m.group(3))
    assert sorted(out) == sorted(hosts(lab)), p.stdout[-3000:]
    return out


def host_view(lab, host):
    """What the toolkit could have left on a host: bpffs mounts, tc state, files."""
    script = ("grep -c ' - bpf ' /proc/self/mountinfo || true; echo ==; tc qdisc show dev eth0; "
              "echo ==; tc filter show dev eth0 ingress; tc filter show dev eth0 egress; echo ==; "
              "ls -A /var/lib/brc; ls -A /usr/local/lib/brc; echo ==; ls -A /sys/fs/bpf 2>/dev/null || true")
    p = lab.exec(host, script, capture_output=True, text=True, timeout=60)
    parts = [s.strip() for s in p.stdout.split("==")]
    return {"bpffs_mounts": int(parts[0] or 0), "qdisc": parts[1], "filters": parts[2],
            "files": parts[3], "bpffs_ls": parts[4]}




def redis_traffic(lab, rounds=20, passes=3):
    """From the controller (root) namespace, plain RESP2 over one connection per host:
    SET k for each round, then @passes passes of GET k over them, 50 ms apart (the
    host agent records each key's expiry a few ms after its write: a fill waits for
    that, and the GETs after it are ones a warm cache would answer)."""
    for h in lab.hosts:
        with socket.create_connection((h.addr, 6379), timeout=10) as s:
            f = s.makefile("rb")
            for i in range(rounds):
                s.sendall(_resp(b"SET", b"brc:e2e:%d" % i, b"value-%d" % i))
                assert f.readline() == b"+OK\r\n"
            for _ in range(passes):
                time.sleep(0.05)
                for i in range(rounds):
                    key, val = b"brc:e2e:%d" % i, b"value-%d" % i
                    s.sendall(_resp(b"GET", key))
                    assert f.readline() == b"$%d\r\n" % len(val) and f.readline() == val + b"\r\n"


def hosts(lab):
    return [h.name for h in lab.hosts]


@pytest.fixture(scope="module", autouse=True)
def _undeploy_at_the_end(lab):
    """Leave the shared session lab without BRC even when a step failed half-way."""
    yield
    play(lab, "playbooks/undeploy.yml", expect_rc=None)


def test_00_start_from_hosts_without_brc(lab):
    # The session lab is shared with other test modules: undeploy whatever they left.
    play(lab, "playbooks/undeploy.yml")
    for h in hosts(lab):
        assert host_view(lab, h)["bpffs_mounts"] == 0


def test_01_preflight_fails_early_with_reason_and_fix(lab):
    recap, out = play(lab, "deploy.yml", "-e", "brc_port=6390", expect_rc=2)
    assert all(recap[h]["failed"] == 1 and recap[h]["changed"] == 0 for h in hosts(lab)), out[-3000:]
    assert "Redis is not listening on TCP port 6390" in out and "fix: start redis-server" in out
    assert host_view(lab, hosts(lab)[0])["bpffs_mounts"] == 0


def test_02_check_mode_on_fresh_hosts_predicts_and_changes_nothing(lab):
    before = {h: host_view(lab, h) for h in hosts(lab)}
    recap, out = play(lab, "deploy.yml", "--check", "--diff")
    for h in hosts(lab):
        assert recap[h]["failed"] == 0 and recap[h]["changed"] >= 5, (h, recap[h], out[-4000:])
        assert host_view(lab, h) == before[h]
        assert before[h]["bpffs_mounts"] == 0 and "clsact" not in before[h]["qdisc"]


def test_03_deploy(lab):
    recap, out = play(lab, "deploy.yml")
    for h in hosts(lab):
        assert recap[h]["failed"] == 0 and recap[h]["changed"] >= 5, (h, recap[h])
        view = host_view(lab, h)
        assert view["bpffs_mounts"] == 1 and "clsact" in view["qdisc"]
        assert "brc_ingress" in view["filters"] and "brc_egress" in view["filters"]
    assert re.search(r"headers: (exact|fallback) ", out)
    report = json.load(open(os.path.join(REPO, "reports", "deploy", "redis1.json")))
    assert report["mode"] == "observe" and report["counters"]["pkt_ingress"] > 0
    for h, st in _brc_state(lab).items():     # the host agent is in charge and beating
        assert st["agent"]["in_charge"] and st["agent"]["answering"], (h, st["agent"])
        assert "brc-agent" in _agent_processes(lab, h)


def test_04_second_run_changes_nothing(lab):
    recap, out = play(lab, "deploy.yml")
    assert {h: recap[h]["changed"] for h in hosts(lab)} == {h: 0 for h in hosts(lab)}, out[-4000:]


def test_05_check_mode_after_deploy_predicts_no_change(lab):
    recap, out = play(lab, "deploy.yml", "--check")
    assert {h: recap[h]["changed"] for h in hosts(lab)} == {h: 0 for h in hosts(lab)}, out[-4000:]


def test_06_stats_grow_under_real_traffic_from_the_controller(lab):
    before = module(lab, "brc_stats", "interface=eth0")
    redis_traffic(lab)
    after = module(lab, "brc_stats", "interface=eth0")
    for h in hosts(lab):
        b, a = before[h]["counters"], after[h]["counters"]
        assert a["pkt_ingress"] >= b["pkt_ingress"] + 40 and a["pkt_egress"] >= b["pkt_egress"] + 40, (h, b, a)
        if "req_get" in a:
            assert a["req_get"] >= b["req_get"] + 40
        if "would_hit" in a:  # observe mode: the second GET of each key is a would-hit
            assert a["would_hit"] > b["would_hit"] and a.get("mismatch", 0) == 0, (h, b, a)
        assert after[h]["mode"] == "observe" and set(after[h]["latency"]) >= {"get", "set"}
        assert not after[h]["changed"]
        assert "would_hit_ratio" in after[h]["ratio_definitions"]


def test_06b_the_agent_reports_writes_the_wire_does_not_show(lab):
    """A write over loopback on the host (BRC on eth0 cannot see it) reaches the kernel
    through the agent's feed: the key's version bucket is bumped."""
    before = {h: st["agent"]["feed_keys"] for h, st in _brc_state(lab).items()}
    for h in hosts(lab):
        lab.exec(h, ["redis-cli", "-h", "127.0.0.1", "SET", "brc:e2e:loopback", h], check=True,
                 capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while True:
        after = {h: st["agent"]["feed_keys"] for h, st in _brc_state(lab).items()}
        if all(after[h] > before[h] for h in hosts(lab)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(after[h] > before[h] for h in hosts(lab)), (before, after)


def _agent_processes(lab, host):
    p = lab.exec(host, ["sh", "-c", "ps -eo args | grep [b]rc-agent || true"], capture_output=True,
                 text=True, timeout=30)
    return p.stdout


def _brc_state(lab):
    facts = module(lab, "brc_facts", "interface=eth0")
    return {h: facts[h]["ansible_facts"]["brc"]["state"] for h in facts}


def _dump(lab, host, name):
    """Entries of a pinned map on a host (bpftool), or None when the build has no such map."""
    path = "/sys/fs/bpf/brc/eth0/" + name
    p = lab.exec(host, ["sh", "-c", "test -e %s && bpftool -j map dump pinned %s" % (path, path)],
                 capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return None
    return sorted(json.dumps(e, sort_keys=True) for e in json.loads(p.stdout))


def test_07_upgrade_keeps_maps_and_stats(lab, tmp_path):
    src = str(tmp_path / "bpf")
    shutil.copytree(BPF_DIR, src)
    with open(os.path.join(src, "brc.c"), "a") as f:
        f.write("\n/* e2e upgrade: a harmless change that changes the source hash */\n")
    redis_traffic(lab, rounds=5)
    state = _brc_state(lab)
    stats = module(lab, "brc_stats", "interface=eth0")
    cache = {h: _dump(lab, h, "brc_cache") for h in hosts(lab)}
    recap, out = play(lab, "deploy.yml", "-e", "brc_src_local=%s" % src)
    new_state = _brc_state(lab)
    new_stats = module(lab, "brc_stats", "interface=eth0")
    new_cache = {h: _dump(lab, h, "brc_cache") for h in hosts(lab)}
    for h in hosts(lab):
        assert recap[h]["changed"] >= 3 and recap[h]["failed"] == 0, (h, recap[h])
        old, new = state[h], new_state[h]
        # new programs, attached in place of the old ones
        assert new["programs"]["ingress"]["id"] != old["programs"]["ingress"]["id"]
        assert {d: a["id"] for d, a in new["attached"].items()} == {d: p["id"] for d, p in new["programs"].items()}
        # the same persistent maps (ids), with their fill and counters kept
        persistent = [n for n in old["maps"] if n not in ("prog_ingress", "prog_egress")
                      and old["maps"][n]["type"] != "prog_array"]
        assert persistent and all(new["maps"][n]["id"] == old["maps"][n]["id"] for n in persistent), (old, new)
        for name, fill in old["map_fill"].items():
            # the agent drains its queues (keys to TOUCH, keys whose expiry is asked for)
            if name in persistent and name not in ("brc_touched", "brc_expiry_wanted"):
                assert new["map_fill"][name] >= fill, (h, name)
        for name, value in stats[h]["counters"].items():
            assert new_stats[h]["counters"][name] >= value, (h, name)
        assert new["config"]["mode"] == "observe"
        # the cache's entries themselves (keys and values) are the same
        assert new_cache[h] == cache[h]
        if stats[h]["counters"].get("fill"):
            assert cache[h], "fill counted but the cache dump is empty"
        if "brc_cache" in old["maps"]:
            assert old["map_fill"]["brc_cache"] > 0 and cache[h]


def test_08_undeploy_leaves_no_filters_pins_or_mounts(lab):
    recap, out = play(lab, "playbooks/undeploy.yml")
    for h in hosts(lab):
        assert recap[h]["failed"] == 0 and recap[h]["changed"] >= 3, (h, recap[h])
        view = host_view(lab, h)
        assert view["bpffs_mounts"] == 0, view
        assert "clsact" not in view["qdisc"] and view["filters"] == "", view
        assert view["files"] == "", view
        assert _agent_processes(lab, h) == ""
        users = lab.exec(h, ["redis-cli", "-h", "127.0.0.1", "ACL", "USERS"], capture_output=True,
                         text=True, timeout=30).stdout.split()
        assert "brc-agent" not in users, users
    redis_traffic(lab, rounds=3)  # Redis still serving through eth0
    recap, out = play(lab, "playbooks/undeploy.yml")
    assert {h: recap[h]["changed"] for h in hosts(lab)} == {h: 0 for h in hosts(lab)}, out[-4000:]


def test_99_timings(lab, capsys):
    with capsys.disabled():
        for k, v in TIMINGS.items():
            print("\n  e2e timing %5.1fs  %s" % (v, k), end="")
        print()
