"""BPF_PROG_TEST_RUN for the test suites: run a loaded SCHED_CLS program once on a frame.

bcc 0.26 has no Python wrapper for it, so this goes through bpf(2) with the
toolkit's own syscall helper (module_utils/brc_bpf.py).
"""
import ctypes

from ansible.module_utils.brc_bpf import bpf_syscall

BPF_PROG_TEST_RUN = 10


class _TestRunAttr(ctypes.Structure):
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


def prog_test_run(prog_fd, data, repeat=1, out_size=None):
    """Returns (retval, output frame, duration ns).

    The output buffer leaves room for programs that grow the frame (a GET rebuilt into
    its reply); raises OSError when the kernel refuses the run.
    """
    out_size = out_size or len(data) + 4096
    inbuf = ctypes.create_string_buffer(bytes(data), len(data))
    outbuf = ctypes.create_string_buffer(out_size)
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_size_out=out_size,
                        data_in=ctypes.addressof(inbuf), data_out=ctypes.addressof(outbuf),
                        repeat=repeat)
    bpf_syscall(BPF_PROG_TEST_RUN, attr)
    return attr.retval, outbuf.raw[:attr.data_size_out], attr.duration
