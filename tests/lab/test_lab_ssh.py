"""The session lab over real ssh: ansible reaches every host with host-key checking on, a
wrong known_hosts is refused, and each host is its own machine (hostname, pid namespace,
private state dirs, its own redis)."""
import json
import os
import subprocess

import pytest
import redis

from fixtures.lab import ansible_env

from brclab import PRIVATE_DIRS


def ansible(lab, *args, env_extra=None, timeout=120):
    return subprocess.run(["ansible"] + list(args), env=ansible_env(lab, **(env_extra or {})),
                          capture_output=True, text=True, timeout=timeout)


def ssh(lab, host, command, timeout=30):
    return subprocess.run(lab.ssh_argv(host) + [command], capture_output=True, text=True,
                          timeout=timeout)


def test_inventory_shape(lab):
    out = subprocess.run(["ansible-inventory", "--list"], env=ansible_env(lab),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    inv = json.loads(out.stdout)
    assert sorted(inv["redis"]["hosts"]) == [h.name for h in lab.hosts]
    for h in lab.hosts:
        hv = inv["_meta"]["hostvars"][h.name]
        assert hv["ansible_host"] == h.addr
        assert hv["lab_netns"] == h.netns
        assert hv["ansible_user"] == "root"
        assert hv["ansible_python_interpreter"] == "/usr/bin/python3"
        assert "UserKnownHostsFile=%s" % lab.known_hosts in hv["ansible_ssh_common_args"]
        assert os.path.isfile(hv["ansible_ssh_private_key_file"])


def test_ansible_ping_reaches_every_host_with_host_key_checking(lab):
    out = ansible(lab, "redis", "-m", "ansible.builtin.ping")
    assert out.returncode == 0, out.stdout + out.stderr
    for h in lab.hosts:
        assert "%s | SUCCESS" % h.name in out.stdout
    assert out.stdout.count("pong") == len(lab.hosts)


@pytest.mark.parametrize("kind", ["wrong key", "unknown host"])
def test_wrong_known_hosts_is_refused(lab, tmp_path, kind):
    bad = tmp_path / "known_hosts"
    if kind == "wrong key":
        key = tmp_path / "other_host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        keytype, blob = key.with_suffix(".pub").read_text().split()[:2]
        bad.write_text("".join("%s %s %s\n" % (h.addr, keytype, blob) for h in lab.hosts))
    else:
        bad.write_text("")
    args = json.dumps({"ansible_ssh_common_args":
                       "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % bad})
    # No connection sharing: a control master opened by another test would skip the check.
    out = ansible(lab, "redis", "-m", "ansible.builtin.ping", "-e", args,
                  env_extra={"ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none"})
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert text.count("UNREACHABLE") == len(lab.hosts), text
    assert "Host key verification failed" in text or "IDENTIFICATION HAS CHANGED" in text
    assert "pong" not in text


def test_each_host_is_its_own_machine(lab):
    marker = "/var/lib/brc/lab-test-marker"
    first = lab.hosts[0]
    try:
        for h in lab.hosts:
            out = ssh(lab, h.name, "hostname; cat /proc/1/comm; command -v python3; "
                                   "findmnt -n -l -o TARGET -t tmpfs")
            assert out.returncode == 0, out.stderr
            lines = out.stdout.split("\n")
            assert lines[0] == h.name
            assert lines[1] == "sshd"            # PID 1 of the host's own pid namespace
            assert lines[2] == "/usr/bin/python3"   # Debian's (with bcc), not the machine's pyenv
            assert set(PRIVATE_DIRS) <= set(lines[3:])      # each its own tmpfs
        made = ssh(lab, first.name, "echo %s > %s" % (first.name, marker))
        assert made.returncode == 0, made.stderr
        # Next session on the same host sees it; no other host and not the root ns.
        assert ssh(lab, first.name, "cat %s" % marker).stdout.strip() == first.name
        assert lab.exec(first.name, ["cat", marker], capture_output=True,
                        text=True).stdout.strip() == first.name
        for h in lab.hosts[1:]:
            assert ssh(lab, h.name, "test -e %s" % marker).returncode == 1
        assert not os.path.exists(marker)
    finally:
        ssh(lab, first.name, "rm -f %s" % marker)


def test_each_host_runs_its_own_redis(lab):
    for h in lab.hosts:
        r = redis.Redis(host=h.addr, port=6379, socket_timeout=5)
        try:
            assert r.ping()
            r.set("brclab:test:owner", h.name)
        finally:
            r.close()
    for h in lab.hosts:
        out = lab.exec(h.name, ["redis-cli", "-h", "127.0.0.1", "get", "brclab:test:owner"],
                       capture_output=True, text=True, timeout=10)
        assert out.stdout.strip() == h.name
        lab.exec(h.name, ["redis-cli", "-h", "127.0.0.1", "del", "brclab:test:owner"],
                 capture_output=True, timeout=10)


def test_controller_route_is_only_the_lab_subnet(lab):
    routes = subprocess.run(["ip", "-4", "route", "show", "dev", lab.veth],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert [r.split()[0] for r in routes] == [lab.subnet]
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", lab.veth],
                           capture_output=True, text=True, check=True).stdout
    assert "inet %s/24" % lab.controller_addr in addrs
    # Hosts have no way out: only their /24.
    out = lab.exec(lab.hosts[0].name, ["ip", "-4", "route"], capture_output=True, text=True)
    assert [r.split()[0] for r in out.stdout.splitlines()] == [lab.subnet]
