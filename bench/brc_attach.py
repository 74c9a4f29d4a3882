"""BRC on one interface of a network namespace, for the benchmark and the kernel tests.

Compiles bpf/brc.c with module_utils/brc_compile.py (bcc) and attaches, configures and reads
it with the modules' own kernel layer (brc_pins, brc_tc, brc_maps) on a device inside a
namespace. The pins live in a private bpffs for as long as the object.
"""
import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager

import ansible.module_utils

# module_utils/ the way Ansible modules see it (ansible.module_utils.<name>); a
# caller that wants another revision's module_utils puts it first beforehand.
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

CLONE_NEWNET = 0x40000000
NS_PER_S = 10 ** 9


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
                "-DBRC_USERS_MAX=16", "-DBRC_TOUCHED_MAX=64", "-DBRC_EXPIRY_WANTED_MAX=64",
                "-DBRC_UNTRACKED_MAX=16", "-DBRC_ADOPT_MAX=16"]
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def floor_text(src_dir):
    """bench/brc_floor.c with its `#include "x.h"` lines expanded from <src_dir> (bpf/),
    as brc_compile.amalgamate() expands brc.c's: bcc rewrites map calls only in the text
    it is given. The floor lives in bench/, not bpf/: the toolkit ships bpf/* to every
    Redis host, and the floor is no part of the product."""
    from ansible.module_utils import brc_compile
    seen, out = set(), ['#line 1 "%s"\n' % FLOOR_SRC]
    with open(FLOOR_SRC) as f:
        for lineno, line in enumerate(f, 1):
            m = _INCLUDE.match(line)
            inc = os.path.join(src_dir, m.group(1)) if m else None
            if inc and os.path.exists(inc):
                if inc not in seen:
                    seen.add(inc)
                    out.append(brc_compile.amalgamate(inc, seen))
                    out.append('#line %d "%s"\n' % (lineno + 1, FLOOR_SRC))
                continue
            out.append(line)
    return "".join(out)


def compile_floor(src_dir, pin_dir):
    """Compile the floor against <src_dir>'s headers, its persistent maps pinned in
    <pin_dir> as brc_compile.compile_programs pins BRC's, and load its two entry programs;
    a BrcBuild without tail-call arrays."""
    from bcc import BPF
    from ansible.module_utils import brc_compile
    src_dir = os.path.abspath(src_dir)
    os.makedirs(pin_dir, exist_ok=True)
    bpf = BPF(text=floor_text(src_dir).encode(),
              cflags=["-I" + src_dir, "-Wno-unused-function", '-DBRC_PIN_DIR="%s"' % pin_dir]
              + FLOOR_CFLAGS)
    programs = dict((hook, bpf.load_func(name.encode(), BPF.SCHED_CLS).fd)
                    for hook, name in FLOOR_PROGRAMS.items())
    return brc_compile.BrcBuild(bpf, brc_compile.load_contract(src_dir), programs, {})


class Brc:
    """One build of BRC (or the floor) for one device of a namespace, attached, configured
    and read through the toolkit's own kernel layer (module_utils/brc_pins, brc_tc and
    brc_maps), as the modules do on a host: the bench then measures what production runs.
    The programs and persistent maps are pinned under @pin_dir, by default a bpffs of the
    object's own that close() unmounts (a caller passing @pin_dir owns that directory)."""

    def __init__(self, src_dir, netns, device, port, floor=False, pin_dir=None):
        from ansible.module_utils import brc_compile, brc_pins, brc_tc
        from ansible.module_utils.brc_contract import load_contract
        self.netns, self.device, self.port = netns, device, port
        self.contract = load_contract(src_dir)
        self.floor = floor
        self.attached = False
        self.tc = None
        self.scratch = tempfile.mkdtemp(prefix="brc-attach-")
        self.state_dir = os.path.join(self.scratch, "state")     # brc_tc's tc.json
        self.bpffs = None
        try:
            if pin_dir is None:
                self.bpffs = os.path.join(self.scratch, "bpffs")
                os.mkdir(self.bpffs)
                subprocess.run(["mount", "-t", "bpf", "bpf", self.bpffs], check=True)
                pin_dir = os.path.join(self.bpffs, device)
            self.pin_dir = pin_dir
            if floor:
                self.build = compile_floor(src_dir, pin_dir)
            else:
                self.build = brc_compile.compile_programs(src_dir, pin_dir=pin_dir)
            for name, fd in list(self.build.programs.items()) + list(self.build.helpers.items()):
                brc_pins.pin_replace(fd, brc_pins.prog_pin(pin_dir, name))
            with in_netns(netns):
                from pyroute2 import IPRoute
                ipr = IPRoute()
            self.tc = brc_tc.Tc(device, ipr)
        except BaseException:
            self._release()
            raise

    # -- tc
    def attach(self):
        """As brc_tc attaches on a host: filters created again after a detach end a blind
        gap, so the maps it leaves stale (brc_maps.BLIND_GAP_MAPS) are emptied first."""
        from ansible.module_utils import brc_maps, brc_tc
        if self.attached:
            return
        gap = {}
        if hasattr(brc_maps, "blind_gap_pins"):     # not in a --bpf-rev from before it
            gap["gap_pins"] = brc_maps.blind_gap_pins(self.pin_dir, self.contract)
        brc_tc.attach(self.device, self.pin_dir, tc=self.tc, state_dir=self.state_dir, **gap)
        self.attached = True

    def upgrade(self, src_dir):
        """A new build of @src_dir attached in place of this one, as brc_program and
        brc_tc upgrade a host: the pinned maps reused (the layout unchanged), the
        programs pinned over the old ones, the filters replaced (no gap)."""
        from ansible.module_utils import brc_compile, brc_pins, brc_tc
        self.build = brc_compile.compile_programs(src_dir, pin_dir=self.pin_dir)
        for name, fd in list(self.build.programs.items()) + list(self.build.helpers.items()):
            brc_pins.pin_replace(fd, brc_pins.prog_pin(self.pin_dir, name))
        brc_tc.attach(self.device, self.pin_dir, tc=self.tc, state_dir=self.state_dir)

    def detach(self):
        from ansible.module_utils import brc_tc
        if self.attached:
            brc_tc.detach(self.device, tc=self.tc, state_dir=self.state_dir)
            self.attached = False

    def close(self):
        try:
            self.detach()
        except Exception:
            pass
        self._release()

    def _release(self):
        if self.tc is not None:
            self.tc.close()
            self.tc = None
        if self.bpffs and os.path.ismount(self.bpffs):
            subprocess.run(["umount", self.bpffs], check=False)
        shutil.rmtree(self.scratch, ignore_errors=True)

    # -- maps
    def configure(self, mode, **values):
        """Write brc_config: port, mode by name, sensible limits; unknown fields stay 0.
        max_age_ns is taken in whole seconds (brc_maps' unit). Returns the fields written."""
        from ansible.module_utils import brc_maps
        fields = {"port": self.port, "mode": mode, "max_key_len": 250, "max_value_len": 4096,
                  "max_age_ns": 60 * NS_PER_S, "verify_sample": 0, "require_auth": 0}
        fields.update(values)
        seconds, rest = divmod(fields.pop("max_age_ns"), NS_PER_S)
        if rest:
            raise ValueError("max_age_ns=%d: brc_maps sets the age limit in whole seconds"
                             % values["max_age_ns"])
        fields["max_age"] = seconds
        raw = brc_maps.encode_config(self.contract, fields)
        brc_maps.write_config(self.pin_dir, self.contract, fields)
        st = self.contract.structs["brc_config"].from_buffer_copy(raw)
        return dict((name, getattr(st, name)) for name, _t in st._fields_)

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
        from ansible.module_utils import brc_maps
        cls = self.contract.structs["brc_global"]
        with brc_maps.open_map(self.pin_dir, self.contract, "global") as m:
            raw = m.lookup(0)
        left = cls.from_buffer_copy(raw[:ctypes.sizeof(cls)]).hold_until_ns - time.monotonic_ns()
        return max(0.0, left / 1e9)

    def clear_hold(self):
        """End brc_global's hold now: for tests whose connections never reached Redis
        (BPF_PROG_TEST_RUN), so that nothing they sent can still be in flight."""
        from ansible.module_utils import brc_maps
        cls = self.contract.structs["brc_global"]
        with brc_maps.open_map(self.pin_dir, self.contract, "global") as m:
            raw = bytearray(m.lookup(0))
            g = cls.from_buffer(raw)
            g.hold_until_ns = 0
            m.update(0, bytes(raw))

    def counters(self):
        """Named counters, plus the latency histogram buckets as 'lat.<command>.<slot>'
        (only non-zero ones), so one before/after delta covers both."""
        from ansible.module_utils import brc_maps, brc_pins
        out = brc_maps.read_counters(self.pin_dir, self.contract)
        if self.contract.map_name("latency") not in brc_pins.list_pins(self.pin_dir):
            return out
        if hasattr(brc_maps, "latency_names"):
            hist = brc_maps.read_latency(self.pin_dir, self.contract, brc_maps.latency_names(self.contract))
        else:                   # --bpf-rev of a module_utils from before per-command histograms
            hist = brc_maps.read_latency(self.pin_dir, self.contract)
        for command, buckets in hist.items():
            for slot, n in enumerate(buckets):
                if n:
                    out["lat.%s.%d" % (command, slot)] = n
        return out


def histogram_summary(counters):
    """{'get': {'count', 'p50_us', 'p99_us'}, ...} from 'lat.<command>.<slot>' deltas; a
    percentile is the upper bound of its log2-nanosecond bucket (brc_math.percentile)."""
    from ansible.module_utils.brc_math import percentile
    classes = {}
    for key, n in counters.items():
        if key.startswith("lat."):
            _, cls, slot = key.split(".")
            classes.setdefault(cls, {})[int(slot)] = n
    out = {}
    for cls, slots in classes.items():
        buckets = [slots.get(slot, 0) for slot in range(max(slots) + 1)]
        out[cls] = {"count": sum(buckets), "p50_us": percentile(buckets, 50),
                    "p99_us": percentile(buckets, 99)}
    return out
