"""Where BRC's CPU goes, per program and per tail-called stage, for bench/run.py.

kernel.bpf_stats_enabled accounts entry programs only (a tail call's time is
charged to the program that made it), so the split comes from perf samples:
`perf record -a -g` (cpu-clock, all CPUs) over a run, and each sample is charged
to the innermost BRC program in its call chain, found by the sampled addresses
falling into that program's JITed image. A program's figure therefore includes
the helpers and kernel functions it calls (map lookups, bpf_skb_load_bytes,
checksums, the clone of bpf_clone_redirect); `self` counts only samples whose
leaf frame is the JITed code itself. Addresses, not the `bpf_prog_<tag>_<name>`
symbols, decide: identical programs loaded by someone else on the machine (same
source, same tag) are not counted as ours.

A tail call reuses its caller's frame, so a sample inside brc_serve_in or a
helper it called shows brc_serve_in, never brc_ingress: the stages are split.
"""
import ctypes
import os
import select
import signal
import subprocess
import time

FREQ = 999          # samples per second per CPU (cpu-clock: one sample = 1/FREQ s of CPU)


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to jited_func_lens (uapi/linux/bpf.h)."""
    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
    ]


def _prog_info(fd, ksyms=None, lens=None):
    from ansible.module_utils import brc_pins
    info = _ProgInfo()
    if ksyms is not None:
        info.nr_jited_ksyms, info.jited_ksyms = len(ksyms), ctypes.addressof(ksyms)
        info.nr_jited_func_lens, info.jited_func_lens = len(lens), ctypes.addressof(lens)
    size = ctypes.c_uint32(ctypes.sizeof(info))
    ret = brc_pins.libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if ret != 0:    # libbpf returns -errno
        raise OSError(-ret, "BPF_OBJ_GET_INFO_BY_FD: %s" % os.strerror(-ret))
    return info


def prog_ranges(bpf):
    """[(start, end, name)] of the JITed images of every program bcc loaded in `bpf`
    (entry programs and tail-call targets alike)."""
    out = []
    for name, fn in bpf.funcs.items():
        name = name.decode() if isinstance(name, bytes) else name
        first = _prog_info(fn.fd)
        n = max(1, first.nr_jited_ksyms)
        ksyms, lens = (ctypes.c_uint64 * n)(), (ctypes.c_uint32 * n)()
        _prog_info(fn.fd, ksyms, lens)
        for i in range(n):
            if ksyms[i]:
                out.append((ksyms[i], ksyms[i] + (lens[i] or first.jited_prog_len), name))
    return sorted(out)


class JitKallsyms:
    """net.core.bpf_jit_kallsyms = 1 for the run (perf needs the JITed symbols to
    unwind through them), restored afterwards."""
    PATH = "/proc/sys/net/core/bpf_jit_kallsyms"

    def __enter__(self):
        with open(self.PATH) as f:
            self.old = f.read().strip()
        if self.old != "1":
            with open(self.PATH, "w") as f:
                f.write("1")
        return self

    def __exit__(self, *exc):
        if self.old != "1":
            with open(self.PATH, "w") as f:
                f.write(self.old)


class Recording:
    """perf record -a -g over exactly the body of a `with`: perf starts with its events
    disabled (-D -1) and is enabled and disabled through its control FIFO, so the
    seconds perf takes to start and stop are not sampled; .data is the file."""

    def __init__(self, path, freq=FREQ):
        self.data, self.freq = path, freq

    def _cmd(self, word):
        os.write(self.ctl, word.encode() + b"\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _w, _x = select.select([self.ack], [], [], 0.5)
            if r and os.read(self.ack, 16).startswith(b"ack"):
                return
            if self.proc.poll() is not None:
                break
        raise RuntimeError("perf did not acknowledge %r: %s" % (
            word, self.proc.stderr.read().decode(errors="replace")[-300:]
            if self.proc.poll() is not None else "timeout"))

    def __enter__(self):
        base = self.data + ".ctl"
        os.mkfifo(base)
        os.mkfifo(base + ".ack")
        # O_RDWR: a FIFO opened so never blocks waiting for the other end
        self.ctl = os.open(base, os.O_RDWR)
        self.ack = os.open(base + ".ack", os.O_RDWR | os.O_NONBLOCK)
        self.proc = subprocess.Popen(["perf", "record", "-a", "-g", "-F", str(self.freq), "-q",
                                      "-D", "-1", "--control",
                                      "fifo:%s,%s" % (base, base + ".ack"), "-o", self.data],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._cmd("enable")
        except Exception:
            self._stop()
            raise
        return self

    def _stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        os.close(self.ctl)
        os.close(self.ack)

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                self._cmd("disable")
        finally:
            self._stop()


def attribute(data, ranges, timeout=120):
    """{'samples': all samples, 'brc': samples charged to a program of `ranges`,
    'programs': {name: {'samples', 'self', 'calls': {function: samples}}}} from a
    perf.data file. `calls` splits what is not `self` by the function the program
    called (the frame just below its own: a helper such as bpf_skb_load_bytes, or the
    kernel function a map lookup inlines to), so a cost is placed at the call site."""
    proc = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, universal_newlines=True, timeout=timeout)
    starts = [r[0] for r in ranges]
    import bisect

    def owner(ip):
        i = bisect.bisect_right(starts, ip) - 1
        if i >= 0 and ip < ranges[i][1]:
            return ranges[i][2]
        return None

    programs, total, brc = {}, 0, 0
    chain = []

    def flush():
        nonlocal total, brc
        if not chain:
            return
        total += 1
        for depth, (ip, _sym) in enumerate(chain):
            name = owner(ip)
            if name:
                p = programs.setdefault(name, {"samples": 0, "self": 0, "calls": {}})
                p["samples"] += 1
                p["self"] += depth == 0
                if depth:
                    callee = chain[depth - 1][1] or "[unknown]"
                    p["calls"][callee] = p["calls"].get(callee, 0) + 1
                brc += 1
                break
        del chain[:]

    for line in proc.stdout.splitlines():
        fields = line.split()
        if not fields:
            flush()
            continue
        try:
            ip = int(fields[0], 16)
        except ValueError:
            continue
        chain.append((ip, fields[1] if len(fields) > 1 else None))
    flush()
    return {"samples": total, "brc": brc, "programs": programs}


def available():
    try:
        return subprocess.run(["perf", "--version"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False
