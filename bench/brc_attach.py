"""BRC on one interface of a network namespace, for the benchmark.

Compiles bpf/brc.c with module_utils/brc_bpf.py (bcc), attaches the two entry programs
with pyroute2 (clsact + direct-action bpf filters) on a device inside a namespace,
writes the config map through the layout in bpf/brc_contract.h and reads the counters.
Nothing is pinned: the programs and maps live as long as this object (and the namespace).
"""
import ctypes
import ctypes.util
import os
import re
import time
from contextlib import contextmanager

import ansible.module_utils

# module_utils/ the way Ansible modules see it (ansible.module_utils.<name>); a
# caller that wants another revision's module_utils puts it first beforehand.
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

CLONE_NEWNET = 0x40000000
PARENTS = {"ingress": 0xfffffff2, "egress": 0xfffffff3}
HANDLE = 0xbc0
PRIO = 1


@contextmanager
def in_netns(name):
    """Run the body with this thread in network namespace `name` (sockets opened inside
    stay there after the switch back)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/%s" % name, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "setns back: %s" % os.strerror(err))
    finally:
        os.close(target)
        os.close(home)


# The floor's build (bench/brc_floor.c, built on bpf/'s headers): its entry programs
# by hook, and the capacities of brc_maps.h's maps it declares but never uses (the
# headers are the product's; their preallocated maps need not be).
FLOOR_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "brc_floor.c")
FLOOR_PROGRAMS = {"ingress": "brc_floor_in", "egress": "brc_floor_out"}
FLOOR_CFLAGS = ["-DBRC_FLOWS_MAX=64", "-DBRC_TRANSIENT_MAX=64", "-DBRC_CACHE_MAX=64",
                "-DBRC_REPLYBUF_MAX=64", "-DBRC_TTLKEYS_MAX=64", "-DBRC_OOO_FLOWS=16",
                "-DBRC_USERS_MAX=16", "-DBRC_TOUCHED_MAX=64", "-DBRC_EXPIRY_WANTED_MAX=64"]
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def floor_text(src_dir):
    """bench/brc_floor.c with its `#include "x.h"` lines expanded from <src_dir> (bpf/),
    as brc_bpf.amalgamate() expands brc.c's: bcc rewrites map calls only in the text
    it is given. The floor lives in bench/, not bpf/: the toolkit ships bpf/* to every
    Redis host, and the floor is no part of the product."""
    from ansible.module_utils import brc_bpf
    seen, out = set(), ['#line 1 "%s"\n' % FLOOR_SRC]
    with open(FLOOR_SRC) as f:
        for lineno, line in enumerate(f, 1):
            m = _INCLUDE.match(line)
            inc = os.path.join(src_dir, m.group(1)) if m else None
            if inc and os.path.exists(inc):
                if inc not in seen:
                    seen.add(inc)
                    out.append(brc_bpf.amalgamate(inc, seen))
                    out.append('#line %d "%s"\n' % (lineno + 1, FLOOR_SRC))
                continue
            out.append(line)
    return "".join(out)


def compile_floor(src_dir):
    """Compile the floor against <src_dir>'s headers and load its two entry programs;
    a BrcBuild without tail-call arrays."""
    from bcc import BPF
    from ansible.module_utils import brc_bpf
    src_dir = os.path.abspath(src_dir)
    bpf = BPF(text=floor_text(src_dir).encode(),
              cflags=["-I" + src_dir, "-Wno-unused-function"] + FLOOR_CFLAGS)
    programs = dict((hook, bpf.load_func(name.encode(), BPF.SCHED_CLS).fd)
                    for hook, name in FLOOR_PROGRAMS.items())
    return brc_bpf.BrcBuild(bpf, brc_bpf.load_contract(src_dir), programs, {})


class Brc:
    def __init__(self, src_dir, netns, device, port, floor=False):
        from ansible.module_utils import brc_bpf
        from ansible.module_utils.brc_contract import load_contract
        self.netns, self.device, self.port = netns, device, port
        self.contract = load_contract(src_dir)
        self.floor = floor
        self.build = compile_floor(src_dir) if floor else brc_bpf.compile_programs(src_dir)
        self.attached = False
        self.gap = False            # detached after running: the next attach ends a blind gap
        with in_netns(netns):
            from pyroute2 import IPRoute
            self.ipr = IPRoute()
        self.index = self.ipr.link_lookup(ifname=device)[0]

    # -- tc
    def attach(self):
        if self.attached:
            return
        if self.gap:
            self.end_blind_gap()
        self.ipr.tc("add", "clsact", self.index)
        for hook, fd in sorted(self.build.programs.items()):
            self.ipr.tc("add-filter", "bpf", self.index, HANDLE, fd=fd, name="brc_" + hook,
                        parent=PARENTS[hook], classid=1, direct_action=True, prio=PRIO)
        self.attached = True

    def detach(self):
        if not self.attached:
            return
        self.ipr.tc("del", "clsact", self.index)   # our own qdisc on our own veth
        self.attached = False
        self.gap = True

    def end_blind_gap(self):
        """What brc_tc does before re-creating a missing filter (brc_maps.end_blind_gap),
        on this build's unpinned maps."""
        from ansible.module_utils.brc_maps import BLIND_GAP_MAPS
        for role, _counted in BLIND_GAP_MAPS:
            self.build.bpf.get_table(self.contract.map_name(role).encode()).clear()

    def close(self):
        try:
            self.detach()
        except Exception:
            pass
        self.ipr.close()

    # -- maps
    def configure(self, mode, **values):
        """Write brc_config: port, mode by name, sensible limits; unknown fields stay 0."""
        cls = self.contract.structs["brc_config"]
        cfg = cls()
        defaults = {"port": self.port, "mode": self.contract.modes[mode], "max_key_len": 250,
                    "max_value_len": 4096, "max_age_ns": 60 * 10 ** 9, "verify_sample": 0,
                    "require_auth": 0}
        defaults.update(values)
        names = [f for f, _t in cls._fields_]
        for name, value in defaults.items():
            if name in names:
                setattr(cfg, name, value)
        table = self.build.bpf.get_table(self.contract.map_name("config").encode())
        leaf = table.Leaf()
        size = min(ctypes.sizeof(leaf), ctypes.sizeof(cfg))
        ctypes.memmove(ctypes.addressof(leaf), ctypes.addressof(cfg), size)
        table[table.Key(0)] = leaf
        return dict((n, getattr(cfg, n)) for n in names)

    def set_floor_reply(self, reply):
        """The floor's one reply (RESP bytes, at most BRC_REPLY_MAX)."""
        table = self.build.bpf.get_table(b"brc_floor_reply")
        leaf = table.Leaf()
        if len(reply) > len(leaf.data):
            raise ValueError("floor reply of %d bytes, the reply path takes %d at most"
                             % (len(reply), len(leaf.data)))
        leaf.len = len(reply)
        ctypes.memmove(ctypes.addressof(leaf.data), reply, len(reply))
        table[table.Key(0)] = leaf

    def refresh_auth(self, host, unix_socket=None, user=None, password=None, **load_args):
        """Load the Redis's users and rights into the programs, as the toolkit's brc_auth
        module does on a host (same loader, module_utils/brc_auth.py), reading Redis
        from inside its namespace. Returns the loader's result."""
        if "BRC_MAP_USERS" not in self.contract.strings:
            return None         # an older build (--bpf-rev) answers without users
        from ansible.module_utils import brc_auth
        maps = brc_auth.BccAuthMaps(self.build.bpf, self.contract)
        with in_netns(self.netns):
            return brc_auth.load(maps, self.contract, lambda: brc_auth.read_state(
                self.contract, host=host, port=self.port, unix_socket=unix_socket, user=user,
                password=password), **load_args)

    def held_s(self):
        """Seconds until everything stops counting as in flight (brc_global.hold_until_ns,
        left by a client reset with writes unanswered or untracked traffic); 0 if not held."""
        table = self.build.bpf.get_table(self.contract.map_name("global").encode())
        left = table[table.Key(0)].hold_until_ns - time.monotonic_ns()
        return max(0.0, left / 1e9)

    def counters(self):
        """Named counters, plus the latency histogram buckets as 'lat.<command>.<slot>'
        (only non-zero ones), so one before/after delta covers both."""
        table = self.build.bpf.get_table(self.contract.map_name("stats").encode())
        out = {}
        for slot, name, _doc in self.contract.counter_slots:
            out[name] = int(sum(table[table.Key(slot)]))
        try:
            lat = self.build.bpf.get_table(self.contract.map_name("latency").encode())
        except Exception:
            return out
        if "BRC_LAT_COMMANDS" in self.contract.constants:
            from ansible.module_utils.brc_commands import LATENCY_NAMES as names
        else:                   # --bpf-rev of a build from before per-command histograms
            names = [n.lower() for n, _doc in self.contract.xlists.get("BRC_LAT_CLASSES", [])]
        slots = self.contract.latency_slots
        for c, cls in enumerate(names):
            for slot in range(slots):
                n = int(sum(lat[lat.Key(c * slots + slot)]))
                if n:
                    out["lat.%s.%d" % (cls, slot)] = n
        return out


def histogram_summary(counters):
    """{'get': {'count', 'p50_us', 'p99_us'}, ...} from 'lat.<command>.<slot>' deltas; a
    percentile is the upper bound of its log2-nanosecond bucket."""
    classes = {}
    for key, n in counters.items():
        if key.startswith("lat."):
            _, cls, slot = key.split(".")
            classes.setdefault(cls, {})[int(slot)] = n
    out = {}
    for cls, buckets in classes.items():
        total = sum(buckets.values())
        entry = {"count": total}
        for p in (50, 99):
            seen = 0
            for slot in sorted(buckets):
                seen += buckets[slot]
                if seen >= total * p / 100.0:
                    entry["p%d_us" % p] = round(2 ** (slot + 1) / 1000.0, 3)
                    break
        out[cls] = entry
    return out
