#!/usr/bin/python3
"""Measure candidate map types for brc_cache (see bpf/README.md).

Each candidate holds struct brc_cache_entry values (the contract's shape) under
brc_cache_key keys. Programs are timed with BPF_PROG_TEST_RUN (repeat=N): the
kernel reports the mean ns per run. Runs once on one CPU and once on every CPU
at the same time (threads; ctypes releases the GIL), with 4096 live keys.

Usage: sudo .venv/bin/python bpf/tools/cachebench.py [--repeat 200000]
"""
import argparse
import os
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

import ansible.module_utils  # noqa: E402

# module_utils/ the way Ansible modules see it: BPF_PROG_TEST_RUN through the toolkit's libbpf layer.
ansible.module_utils.__path__.append(os.path.join(REPO, "module_utils"))
from ansible.module_utils.brc_pins import prog_test_run  # noqa: E402

MAPS = [("c_hash", "hash"), ("c_lru", "lru_hash"), ("c_pchash", "percpu_hash"),
        ("c_lrupc", "lru_percpu_hash"), ("c_array", "array + bpf_spin_lock")]
FRAME = b"\x02" * 12 + b"\x08\x00" + b"\x45" + b"\0" * 60


def main():
    from bcc import BPF
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200000)
    args = ap.parse_args()
    b = BPF(src_file=os.path.join(HERE, "cachebench.c").encode(),
            cflags=["-I" + os.path.join(REPO, "bpf"), "-Wno-unused-function"])
    ncpu = os.cpu_count()
    print("%-24s %12s %12s %16s %16s" % ("map", "update ns", "lookup ns",
                                         "lookup ns x%d" % ncpu, "1 updater x%d" % ncpu))
    for var, label in MAPS:
        up = b.load_func(("update_" + var).encode(), BPF.SCHED_CLS).fd
        lk = b.load_func(("lookup_" + var).encode(), BPF.SCHED_CLS).fd
        t_up = prog_test_run(up, FRAME, repeat=8192)[2]        # also fills the keys
        t_up = prog_test_run(up, FRAME, repeat=args.repeat)[2]
        t_lk = prog_test_run(lk, FRAME, repeat=args.repeat)[2]
        res = {}

        def worker(i, fd, key):
            res[key] = prog_test_run(fd, FRAME, repeat=args.repeat)[2]

        th = [threading.Thread(target=worker, args=(i, lk, "l%d" % i)) for i in range(ncpu)]
        [t.start() for t in th]
        [t.join() for t in th]
        t_par = sum(res[k] for k in res) / len(res)
        res.clear()
        th = [threading.Thread(target=worker, args=(i, up if i == 0 else lk, "m%d" % i))
              for i in range(ncpu)]
        [t.start() for t in th]
        [t.join() for t in th]
        t_mix = sum(res[k] for k in res) / len(res)
        print("%-24s %12d %12d %16d %16d" % (label, t_up, t_lk, t_par, t_mix))


if __name__ == "__main__":
    main()
