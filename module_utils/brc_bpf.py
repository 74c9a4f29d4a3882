# -*- coding: utf-8 -*-
# Build the BRC tc programs with bcc and describe their maps.
#
# Imported by the Ansible modules as ansible.module_utils.brc_bpf. Uses only the
# standard library at import time; bcc (Debian's python3-bpfcc, never the PyPI
# package of the same name) is imported inside the functions that need it, so a
# module can report a missing library cleanly.
#
#   build = compile_programs("/opt/brc/bpf", pin_dir="/sys/fs/bpf/brc/eth0")
#   build.programs      -> {"ingress": fd, "egress": fd}
#   build.prog_arrays   -> {"brc_jmp_ingress": fd, ...}  (caller pins these)
#   build.declared_layout() -> {"brc_config": {"type": "array", ...}, ...}

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ctypes.util
import errno
import os
import re
import time

try:
    from ansible.module_utils.brc_contract import load_contract
    from ansible.module_utils.brc_commands import COMMANDS, LATENCY_NAMES, SUBCOMMANDS, command_numbers
except ImportError:     # bench/ runs with module_utils/ itself on sys.path
    from brc_contract import load_contract
    from brc_commands import COMMANDS, LATENCY_NAMES, SUBCOMMANDS, command_numbers

# Maps pinned under <pin_root>/<ifname>/ and reused across upgrades: everything
# whose content must outlive one loader run. Tail-call arrays and scratch maps
# belong to one build. Names are the C variable names (= kernel map names).
PERSISTENT_MAPS = (
    "brc_config",
    "brc_stats",
    "brc_latency",
    "brc_flows",
    "brc_cache",
    "brc_keyver",
    "brc_global",
    "brc_replybuf",
    "brc_transient",
    "brc_agent",
    "brc_touched",
    "brc_ttlkeys",
    "brc_expiry",
    "brc_expiry_wanted",
    "brc_served",
    "brc_users",
    "brc_server",
    "brc_ooo",
)

# Entry programs, by hook.
ENTRY_PROGRAMS = {"ingress": "brc_ingress", "egress": "brc_egress"}

# Programs that are never attached, by name: the host agent runs brc_feed with
# BPF_PROG_TEST_RUN (pinned as prog_feed next to prog_ingress and prog_egress).
HELPER_PROGRAMS = {"feed": "brc_feed"}

# Tail-call arrays: {array name: [(slot, function name), ...]}.
PROG_ARRAYS = {"brc_jmp": [(0, "brc_parse_req"), (1, "brc_parse_rep"), (2, "brc_serve_in"),
                           (3, "brc_parse_req_held")]}

def fill_command_table(bpf, contract):
    """Write COMMANDS into the build's brc_cmds and SUBCOMMANDS into brc_subcmds."""
    if (len(LATENCY_NAMES) > contract.constants["BRC_LAT_COMMANDS"] or
            LATENCY_NAMES.index("get") != contract.constants["BRC_LAT_ID_GET"] or
            LATENCY_NAMES.index("other") != contract.constants["BRC_LAT_ID_OTHER"]):
        raise ValueError("brc_commands.LATENCY_NAMES does not fit brc_latency: %d names for "
                         "BRC_LAT_COMMANDS %d, get and other at BRC_LAT_ID_GET and BRC_LAT_ID_OTHER"
                         % (len(LATENCY_NAMES), contract.constants["BRC_LAT_COMMANDS"]))
    table = bpf.get_table(b"brc_cmds")
    for name in COMMANDS:
        key = table.Key()
        for i, ch in enumerate(name.encode()):
            key.name[i] = ch
        val = table.Leaf()
        (val.kind, val.first, val.last, val.step, val.special, val.group, val.flags,
         val.id) = command_numbers(contract, name)
        table[key] = val
    table = bpf.get_table(b"brc_subcmds")
    for (command, sub), action in SUBCOMMANDS.items():
        key = table.Key()
        key.special = contract.constants["BRC_SP_" + command.upper()]
        for i, ch in enumerate(sub.encode()):
            key.name[i] = ch
        val = table.Leaf()
        val.action = contract.constants["BRC_SUB_" + action.upper()]
        table[key] = val


# Kernel map type numbers (uapi enum bpf_map_type) to the names bcc uses.
MAP_TYPE_NAMES = {
    1: "hash",
    2: "array",
    3: "prog_array",
    5: "percpu_hash",
    6: "percpu_array",
    9: "lru_hash",
    10: "lru_percpu_hash",
}


def persistent_map_names():
    """Names of the maps that are pinned and reused across upgrades."""
    return list(PERSISTENT_MAPS)


class BrcBuild:
    """One compiled and loaded set of BRC programs.

    bpf          the bcc.BPF object; keep it alive while the fds are in use
    programs     {"ingress": prog_fd, "egress": prog_fd}, tail calls installed
    prog_arrays  {name: map_fd}: tail-call arrays owned by this build; not
                 pinned here -- the kernel empties a prog array when its last
                 user reference goes, so the caller pins them with the programs
    """

    def __init__(self, bpf, programs, prog_arrays, helpers=None, timings=None):
        self.bpf = bpf
        self.programs = programs
        self.prog_arrays = prog_arrays
        self.helpers = helpers or {}
        # {"compile_s": bcc/clang (BPF(text=...)), "load_s": verifier loads (load_func)}
        self.timings = timings or {}

    def declared_layout(self):
        """{map_name: {"type", "key_size", "value_size", "max_entries"}} for every
        persistent map, as this build declares it (not as a reused pin has it:
        compare with pinned_map_layout() before building with pin_dir)."""
        import ctypes as ct
        out = {}
        for name in PERSISTENT_MAPS:
            table = self.bpf.get_table(name.encode())
            leaf = getattr(table, "sLeaf", table.Leaf)
            out[name] = {
                "type": MAP_TYPE_NAMES.get(table.ttype, str(table.ttype)),
                "key_size": ct.sizeof(table.Key),
                "value_size": ct.sizeof(leaf),
                "max_entries": int(table.max_entries),
            }
        return out

    def map_fd(self, name):
        """fd of any map of this build (persistent or not)."""
        return self.bpf.get_table(name.encode()).get_fd()


def compile_programs(src_dir, pin_dir=None, extra_cflags=(), load=True):
    """Compile <src_dir>/brc.c with bcc and load the entry programs.

    With pin_dir, every persistent map is declared BPF_TABLE_PINNED at
    <pin_dir>/<name>: bcc creates the pin if missing and REUSES it if present,
    without checking its layout (check declared_layout() against
    pinned_map_layout() first). Returns a BrcBuild.

    load=False compiles and creates the maps but loads no program (the
    verifier pass is most of a build's 15-20 s): enough for declared_layout()
    as a quick probe; programs and prog_arrays are then empty.
    """
    from bcc import BPF

    src_dir = os.path.abspath(src_dir)
    cflags = ["-I" + src_dir, "-Wno-unused-function"]
    if pin_dir:
        pin_dir = pin_dir.rstrip("/")
        if '"' in pin_dir or "\\" in pin_dir:
            raise ValueError("pin_dir must not contain quotes or backslashes: %r" % pin_dir)
        _makedirs(pin_dir)
        cflags.append('-DBRC_PIN_DIR="%s"' % pin_dir)
    cflags.extend(extra_cflags)
    if not load:
        cflags.append("-DBRC_LAYOUT_PROBE")   # maps only: no program is loaded anyway
    t0 = time.monotonic()
    text = amalgamate(os.path.join(src_dir, "brc.c"))
    bpf = BPF(text=text.encode(), cflags=cflags)
    timings = {"compile_s": time.monotonic() - t0}
    if not load:
        return BrcBuild(bpf, {}, {}, timings=timings)
    t0 = time.monotonic()
    fill_command_table(bpf, load_contract(src_dir))
    prog_arrays = {}
    for array_name, slots in PROG_ARRAYS.items():
        table = bpf.get_table(array_name.encode())
        for slot, func_name in slots:
            fn = bpf.load_func(func_name.encode(), BPF.SCHED_CLS)
            table[ctypes.c_int(slot)] = ctypes.c_int(fn.fd)
        prog_arrays[array_name] = table.get_fd()
    programs = {}
    for hook, func_name in ENTRY_PROGRAMS.items():
        programs[hook] = bpf.load_func(func_name.encode(), BPF.SCHED_CLS).fd
    helpers = dict((name, bpf.load_func(func_name.encode(), BPF.SCHED_CLS).fd)
                   for name, func_name in HELPER_PROGRAMS.items())
    timings["load_s"] = time.monotonic() - t0
    return BrcBuild(bpf, programs, prog_arrays, helpers, timings=timings)


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def amalgamate(path, _seen=None):
    """The text of @path with its local `#include "x.h"` files expanded in place
    (each once), with #line markers so compiler messages name the real file.

    bcc rewrites map method calls (map.lookup(), map.increment()) only in the
    main translation unit's own text, never in included headers; expanding the
    local headers keeps one header per concern and still lets bcc rewrite them.
    """
    seen = set() if _seen is None else _seen
    base = os.path.dirname(path)
    out = ['#line 1 "%s"\n' % path]
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            m = _INCLUDE.match(line)
            if m and os.path.exists(os.path.join(base, m.group(1))):
                inc = os.path.abspath(os.path.join(base, m.group(1)))
                if inc not in seen:
                    seen.add(inc)
                    out.append(amalgamate(inc, seen))
                    out.append('#line %d "%s"\n' % (lineno + 1, path))
                continue
            out.append(line)
    return "".join(out)


def _makedirs(path):
    try:
        os.makedirs(path)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


# --- bpf(2) without bcc: layouts of pinned maps -----------------------------

_BPF_OBJ_GET = 7
_BPF_OBJ_GET_INFO_BY_FD = 15
_SYS_BPF = {"x86_64": 321, "aarch64": 280}


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16), ("_rest", ctypes.c_uint8 * 64),
    ]


def bpf_syscall(cmd, attr):
    """Call bpf(2) with a ctypes structure @attr; returns the result or raises OSError."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    nr = _SYS_BPF.get(os.uname()[4])
    if nr is None:
        raise OSError(errno.ENOSYS, "unknown bpf syscall number for %s" % os.uname()[4])
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                       ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def map_layout_by_fd(fd):
    """{"type", "key_size", "value_size", "max_entries", "name", "id"} of map @fd."""
    info = _MapInfo()

    class Attr(ctypes.Structure):
        _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                    ("info", ctypes.c_uint64)]

    attr = Attr(fd, ctypes.sizeof(info), ctypes.addressof(info))
    bpf_syscall(_BPF_OBJ_GET_INFO_BY_FD, attr)
    return {
        "type": MAP_TYPE_NAMES.get(info.type, str(info.type)),
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "name": info.name.decode(errors="replace"),
        "id": info.id,
    }


def obj_get(path):
    """Open a pinned object; returns an fd (caller closes) or raises OSError."""

    class Attr(ctypes.Structure):
        _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                    ("file_flags", ctypes.c_uint32)]

    buf = ctypes.create_string_buffer(path.encode() if not isinstance(path, bytes) else path)
    return bpf_syscall(_BPF_OBJ_GET, Attr(ctypes.addressof(buf), 0, 0))


def pinned_map_layout(path):
    """Layout of the map pinned at @path (same keys as declared_layout()), or
    None if nothing is pinned there."""
    try:
        fd = obj_get(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        layout = map_layout_by_fd(fd)
    finally:
        os.close(fd)
    layout.pop("name", None)
    layout.pop("id", None)
    return layout
