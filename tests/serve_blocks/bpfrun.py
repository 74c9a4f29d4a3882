"""Load a test harness with bcc and run its programs on crafted frames with
BPF_PROG_TEST_RUN through the bpf(2) syscall (bcc 0.26 has no wrapper for it).
"""
import ctypes
import os

from ansible.module_utils.brc_pins import obj_pin  # noqa: F401  (for `tc ... object-pinned`)
from tools.bpf_run import prog_test_run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BPF_DIR = os.path.join(REPO, "bpf")


def test_run(prog_fd, frame, out_size=4096):
    """Run a SCHED_CLS program once on frame; returns (retval, output frame)."""
    return prog_test_run(prog_fd, frame, out_size=out_size)[:2]


class Harness:
    """A harness C file from this directory compiled by bcc with bpf/ on the
    include path; programs loaded as SCHED_CLS on first use."""

    def __init__(self, name, cflags=()):
        from bcc import BPF
        self.BPF = BPF
        self.bpf = BPF(src_file=os.path.join(HERE, name).encode(),
                       cflags=["-I" + BPF_DIR, "-I" + HERE, "-Wno-unused-function"] + list(cflags))
        self._fns = {}

    def fn(self, name):
        if name not in self._fns:
            self._fns[name] = self.bpf.load_func(name.encode(), self.BPF.SCHED_CLS)
        return self._fns[name]

    def run(self, prog, frame):
        return test_run(self.fn(prog).fd, frame)

    def __getitem__(self, name):
        return self.bpf[name.encode()]

    def set0(self, table, **fields):
        """Write key 0 of an ARRAY map from keyword fields (others zero)."""
        t = self[table]
        leaf = t.Leaf()
        for k, v in fields.items():
            setattr(leaf, k, v)
        t[ctypes.c_int(0)] = leaf

    def get0(self, table):
        return self[table][ctypes.c_int(0)]

    def cleanup(self):
        self.bpf.cleanup()
