"""Load a test harness with bcc and run its programs on crafted frames with
BPF_PROG_TEST_RUN through the bpf(2) syscall (bcc 0.26 has no wrapper for it).
"""
import ctypes
import os

BPF_PROG_TEST_RUN = 10
SYS_BPF = 321  # x86_64

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BPF_DIR = os.path.join(REPO, "bpf")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _TestAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
    ]


def test_run(prog_fd, frame, out_size=4096):
    """Run a SCHED_CLS program once on frame; returns (retval, output frame)."""
    inbuf = ctypes.create_string_buffer(bytes(frame), len(frame))
    outbuf = ctypes.create_string_buffer(out_size)
    attr = _TestAttr(prog_fd=prog_fd, data_size_in=len(frame), data_size_out=out_size,
                     data_in=ctypes.addressof(inbuf), data_out=ctypes.addressof(outbuf),
                     repeat=1)
    rc = _libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, "BPF_PROG_TEST_RUN: " + os.strerror(err))
    return attr.retval, outbuf.raw[:attr.data_size_out]


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


BPF_OBJ_PIN = 6


class _PinAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32),
                ("_pad", ctypes.c_uint32)]


def obj_pin(fd, path):
    """Pin a program or map fd at path on bpffs (for `tc ... object-pinned`)."""
    p = ctypes.create_string_buffer(path.encode())
    attr = _PinAttr(pathname=ctypes.addressof(p), bpf_fd=fd)
    if _libc.syscall(SYS_BPF, BPF_OBJ_PIN, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, "BPF_OBJ_PIN %s: %s" % (path, os.strerror(err)))
