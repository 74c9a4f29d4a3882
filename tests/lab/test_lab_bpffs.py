"""Each lab host has its own bpffs view: mounted (and a map pinned) on one host through
ansible over ssh, it is there in that host's next ssh session and absent on the other hosts
and in the root namespace."""
import os
import subprocess

from fixtures.lab import ansible_env

PIN = "/sys/fs/bpf/brclab_isolation_test"


def ssh(lab, host, command):
    return subprocess.run(lab.ssh_argv(host) + [command], capture_output=True, text=True,
                          timeout=30)


def root_bpf_mounts():
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" - ")[0].split()[4] for line in f
                      if line.split(" - ")[1].startswith("bpf "))


def test_bpffs_mounted_on_one_host_only(fresh_lab):
    lab = fresh_lab
    first, others = lab.hosts[0], lab.hosts[1:]
    root_before = root_bpf_mounts()
    for h in lab.hosts:       # fresh hosts: not mounted (ip netns exec gave them a new /sys)
        assert ssh(lab, h.name, "findmnt -n /sys/fs/bpf").returncode == 1
    task = ("mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; "
            "bpftool map create %s type array key 4 value 4 entries 1 name brclab_iso" % PIN)
    try:
        out = subprocess.run(
            ["ansible", first.name, "-m", "ansible.builtin.shell", "-a", task],
            env=ansible_env(lab), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr

        # The next ssh session on that host (a new connection, no sharing) sees mount and pin.
        later = ssh(lab, first.name, "findmnt -n -o FSTYPE /sys/fs/bpf; "
                                     "bpftool -j map show pinned %s" % PIN)
        assert later.returncode == 0, later.stderr
        assert later.stdout.splitlines()[0] == "bpf"
        assert '"name":"brclab_iso"' in later.stdout
        # labctl exec (nsenter) joins the same mount namespace.
        seen = lab.exec(first.name, ["test", "-e", PIN])
        assert seen.returncode == 0

        for h in others:
            assert ssh(lab, h.name, "findmnt -n /sys/fs/bpf").returncode == 1
            assert ssh(lab, h.name, "test -e %s" % PIN).returncode == 1
        assert not os.path.exists(PIN)
        assert root_bpf_mounts() == root_before
    finally:
        ssh(lab, first.name, "rm -f %s; umount /sys/fs/bpf" % PIN)
    assert ssh(lab, first.name, "findmnt -n /sys/fs/bpf").returncode == 1
