"""brc_pins parsing that needs no kernel (mountinfo text, the CPU list), and the one
brc_bpffs error path that cannot be produced for real (mount(8) failing as root).
The real mount/unmount behaviour is tested in test_kernel.py."""
import pytest

from ansible.module_utils import brc_bpffs
from ansible.module_utils.brc_common import BrcError
from ansible.module_utils.brc_pins import bpffs_at, bpffs_covering, mounts, possible_cpus

BASE = (
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n"
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
)
BPF_ODD_SOURCE = "40 23 0:40 / /sys/fs/bpf rw,relatime - bpf none rw,mode=700\n"
TMPFS_AT_BPF = "41 23 0:41 / /sys/fs/bpf rw,relatime - tmpfs bpf rw\n"
SPACE = "42 27 0:42 / /mnt/with\\040space rw - bpf bpf rw\n"


def _mi(tmp_path, text):
    p = tmp_path / "mountinfo"
    p.write_text(text)
    return str(p)


def test_detects_bpffs_by_type_not_source(tmp_path):
    assert bpffs_at("/sys/fs/bpf", _mi(tmp_path, BASE + BPF_ODD_SOURCE))
    # a tmpfs whose *source* is called "bpf" is not a bpffs
    assert not bpffs_at("/sys/fs/bpf", _mi(tmp_path, BASE + TMPFS_AT_BPF))
    # the topmost of stacked mounts wins
    assert not bpffs_at("/sys/fs/bpf", _mi(tmp_path, BASE + BPF_ODD_SOURCE + TMPFS_AT_BPF))
    assert bpffs_at("/sys/fs/bpf", _mi(tmp_path, BASE + TMPFS_AT_BPF + BPF_ODD_SOURCE))


def test_mountinfo_unescapes_and_covering(tmp_path):
    mi = _mi(tmp_path, BASE + BPF_ODD_SOURCE + SPACE)
    assert ("/mnt/with space", "bpf", "bpf") in mounts(mi)
    assert bpffs_covering("/sys/fs/bpf/brc/eth0", mi) == "/sys/fs/bpf"
    assert bpffs_covering("/sys/fs/bpfx", mi) is None
    assert bpffs_covering("/tmp", mi) is None


def test_possible_cpus(tmp_path):
    for text, n in (("0-1\n", 2), ("0\n", 1), ("0-3,5\n", 6)):
        p = tmp_path / "possible"
        p.write_text(text)
        assert possible_cpus(str(p)) == n


class FakeMounter:
    """run_command double: records argv and edits the fake mountinfo like the kernel would."""

    def __init__(self, mi_path, rc=0):
        self.mi, self.rc, self.calls = mi_path, rc, []

    def run_command(self, argv):
        self.calls.append(argv)
        if self.rc == 0:
            text = open(self.mi).read()
            if argv[0] == "mount":
                text += "50 23 0:50 / %s rw - bpf bpf rw\n" % argv[-1]
            else:
                text = "".join(l for l in text.splitlines(True) if " %s " % argv[-1] not in l)
            open(self.mi, "w").write(text)
        return self.rc, "", "" if self.rc == 0 else "mount: permission denied"


def test_mount_failure_names_problem_and_fix(tmp_path):
    # A failing mount(8) cannot be produced for real as root on this kernel: simulated.
    mi = _mi(tmp_path, BASE)
    with pytest.raises(BrcError) as e:
        brc_bpffs.ensure_bpffs(FakeMounter(mi, rc=32), str(tmp_path / "b"), "mounted",
                               state_path=str(tmp_path / "s"), mountinfo=mi)
    assert "permission denied" in e.value.text and "CONFIG_BPF_SYSCALL" in e.value.text
