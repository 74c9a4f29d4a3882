"""Lab up/down on real namespaces: nothing is left behind, a stale or half-built lab is
recovered, and `up` on a running lab is a no-op or a clear refusal.

These build their own small labs (names l*/s*, leased so concurrent sessions never share one),
so they never disturb the session lab or a user's demo lab.
"""
import ipaddress
import os
import signal
import subprocess
import sys
import time

import pytest

from fixtures.lab import lease_lab_name
from fixtures.paths import LAB_DIR

from brclab import Lab, _alive, _netns_id, _probe_redis, _probe_ssh, list_netns

LABCTL = [sys.executable, os.path.join(LAB_DIR, "labctl")]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


@pytest.fixture
def own_lab(request):
    """A Lab object on a leased name of the given family, torn down before and after."""
    lease = lease_lab_name(request.param, skip_running=True)
    lab = Lab(lease.name)
    lab.down()
    try:
        yield lab
    finally:
        try:
            lab.down()
        finally:
            lease.close()


def labctl(*args):
    return subprocess.run(LABCTL + list(args), capture_output=True, text=True, timeout=120)


def footprint(lab):
    """Everything of `lab` visible from the root namespace: empty means nothing is there."""
    out = {}
    out["netns"] = [n for n in list_netns() if n.startswith(lab.prefix)]
    out["links"] = [line for line in subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
        if (" %s@" % lab.veth) in line or (" %s:" % lab.veth) in line]
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"],
                            capture_output=True, text=True).stdout
    out["routes"] = [r for r in routes.splitlines() if lab.subnet in r or lab.veth in r]
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                           text=True).stdout
    out["addrs"] = [a for a in addrs.splitlines() if lab.controller_addr + "/" in a]
    with open("/proc/self/mountinfo") as f:
        out["mounts"] = [m for m in f if lab.prefix in m or lab.state_dir in m]
    out["procs"] = [p for p in os.listdir("/proc") if p.isdigit() and _alive(int(p))
                    and lab.state_dir in _cmdline(int(p))]
    out["files"] = [p for p in (lab.state_dir, lab.inventory_path) if os.path.exists(p)]
    return {k: v for k, v in out.items() if v}


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_in(netns_names):
    ids = {_netns_id(n) for n in netns_names} - {None}
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink("/proc/%s/ns/net" % p) in ids:
                    found.append(int(p))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("own_lab", [("l1", "l2", "l3")], indirect=True)
def test_up_then_down_leaves_nothing_behind(own_lab):
    lab = own_lab
    assert footprint(lab) == {}

    t0 = time.monotonic()
    assert lab.up(2) == "started"
    up_s = time.monotonic() - t0
    assert up_s < 10, "2 hosts took %.1fs to come up" % up_s

    there = footprint(lab)
    # The footprint check itself must see a running lab, or its emptiness proves nothing.
    assert set(there) >= {"netns", "links", "routes", "addrs", "mounts", "procs", "files"}
    assert sorted(there["netns"]) == sorted([lab.bridge_netns] + [h.netns for h in lab.hosts])
    assert [r.split()[0] for r in there["routes"] if "table" not in r] == [lab.subnet]
    pids = pids_in(there["netns"])
    assert {h.pid for h in lab.hosts} <= set(pids)
    assert len(pids) >= 3 * 2     # per host at least: unshare, sshd, redis-server

    assert lab.down() is True
    assert footprint(lab) == {}
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if _alive(p)] == []
    assert lab.inspect()["state"] == "down"
    assert lab.down() is False        # a second down finds nothing and does not fail


@pytest.mark.parametrize("own_lab", [("s1", "s2", "s3")], indirect=True)
def test_stale_lab_is_detected_and_up_recovers_it(own_lab):
    lab = own_lab
    lab.up(2)
    old = lab.hosts
    for h in old:                                 # a crash: processes gone, namespaces stay
        os.kill(h.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(h.pid) for h in old) and time.monotonic() < deadline:
        time.sleep(0.02)

    info = lab.inspect()
    assert info["state"] == "stale"
    assert set(footprint(lab)["netns"]) == {lab.bridge_netns} | {h.netns for h in old}
    status = labctl("status", "--name", lab.name)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "stale" in status.stdout

    assert lab.up(2) == "started"
    assert lab.is_up()
    new = lab.hosts
    assert {h.pid for h in new}.isdisjoint({h.pid for h in old})
    for h in new:
        assert (_probe_ssh(h.addr) or "").startswith("SSH-2.0")
        assert _probe_redis(h.addr)


@pytest.mark.parametrize("own_lab", [("s1", "s2", "s3")], indirect=True)
def test_down_cleans_a_half_built_lab_without_state(own_lab):
    """What a crash in the middle of `up` leaves: namespaces, the controller veth and a process
    inside a lab namespace, but no lab.json.  labctl down removes all of it."""
    lab = own_lab
    for ns in (lab.bridge_netns, lab.host_netns(1)):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "link", "add", lab.veth, "type", "veth", "peer", "name", "ctl",
                    "netns", lab.bridge_netns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", lab.host_netns(1), "sleep", "300"],
                               start_new_session=True)
    try:
        assert lab.inspect()["state"] == "stale"
        down = labctl("down", "--name", lab.name)
        assert down.returncode == 0, down.stderr
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert footprint(lab) == {}
        assert lab.inspect()["state"] == "down"
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_up_on_running_lab_is_noop_or_refused(lab):
    pids = [h.pid for h in lab.hosts]
    same = labctl("up", "--name", lab.name, "--hosts", str(len(pids)))
    assert same.returncode == 0, same.stderr
    assert "already up" in same.stderr
    other = labctl("up", "--name", lab.name, "--hosts", str(len(pids) + 1))
    assert other.returncode != 0
    assert "down" in other.stderr and "first" in other.stderr
    assert [h.pid for h in lab.hosts] == pids
    assert lab.is_up()


def test_labctl_status_exec_inventory(lab):
    status = labctl("status", "--name", lab.name)
    assert status.returncode == 0, status.stdout + status.stderr
    for h in lab.hosts:
        assert h.name in status.stdout and h.addr in status.stdout
    assert status.stdout.count("ssh ok  redis ok") == len(lab.hosts)
    inv = labctl("inventory", "--name", lab.name)
    assert inv.stdout.strip() == lab.inventory_path
    assert os.path.isfile(lab.inventory_path)
    out = labctl("exec", "--name", lab.name, "redis2", "--", "sh", "-c", "hostname; exit 7")
    assert out.returncode == 7
    assert out.stdout.strip() == "redis2"
    down = labctl("status", "--name", "zz")      # never created in this test session
    assert down.returncode == 3 and "down" in down.stdout


def test_hosts_reach_each_others_redis_over_ipv6(lab):
    """Each host has its unique-local IPv6 address, and Redis listens on it: an IPv6
    client in one host reaches another host's Redis (issue 11's IPv6 clients)."""
    h1, h2 = lab.hosts[0], lab.hosts[1]
    addr6 = lab.host_addr6(h2.index)
    assert addr6.startswith("fd00:bc:") and ipaddress.ip_address(addr6).is_private
    out = labctl("exec", "--name", lab.name, h1.name, "--", "redis-cli", "-h", addr6, "PING")
    assert out.returncode == 0 and out.stdout.strip() == "PONG", out.stdout + out.stderr


def test_lab_names_and_subnets_are_distinct():
    names = ["lab", "t1", "t2", "t3", "t4", "l1", "l2", "l3", "s1", "s2", "s3"]
    labs = [Lab(n) for n in names]
    assert Lab("lab").subnet == "10.77.0.0/24" and Lab("lab").veth == "brclab0"
    assert Lab("lab").bridge_netns == "brclab-br" and Lab("lab").host_netns(2) == "brclab-h2"
    assert len({la.subnet for la in labs}) == len(labs)
    assert all(len(la.veth) <= 15 and len(la.host_netns(64)) <= 15 for la in labs)
    for bad in ("toolong7", "Lab", "1ab", "a-b", ""):
        with pytest.raises(Exception):
            Lab(bad)
