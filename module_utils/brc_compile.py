# -*- coding: utf-8 -*-
# Build the BRC tc programs with bcc and describe their maps.
#
# Imported by the Ansible modules as ansible.module_utils.brc_compile. Uses only the
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
import errno
import os
import re
import time

try:
    from ansible.module_utils.brc_contract import load_contract
    from ansible.module_utils.brc_pins import BPF_MAP_TYPES
    from ansible.module_utils.brc_commands import COMMANDS, LATENCY_NAMES, SUBCOMMANDS, command_numbers
except ImportError:     # bench/ runs with module_utils/ itself on sys.path
    from brc_contract import load_contract
    from brc_pins import BPF_MAP_TYPES
    from brc_commands import COMMANDS, LATENCY_NAMES, SUBCOMMANDS, command_numbers

# Entry programs, by hook.
ENTRY_PROGRAMS = {"ingress": "brc_ingress", "egress": "brc_egress"}

# Programs that are never attached, by name: the host agent runs brc_feed with
# BPF_PROG_TEST_RUN (pinned as prog_feed next to prog_ingress and prog_egress).
HELPER_PROGRAMS = {"feed": "brc_feed"}

# Persistent maps (pinned, reused across upgrades) and tail-call arrays come from
# the contract: Contract.persistent_maps and Contract.prog_arrays.

def fill_command_table(bpf, contract):
    """Write COMMANDS into the build's brc_cmds and SUBCOMMANDS into brc_subcmds."""
    if (len(LATENCY_NAMES) > contract.constants["BRC_LAT_COMMANDS"] or
            any(LATENCY_NAMES.index(name) != contract.constants["BRC_LAT_ID_" + name.upper()]
                for name in ("other", "get", "mget"))):
        raise ValueError("brc_commands.LATENCY_NAMES does not fit brc_latency: %d names for "
                         "BRC_LAT_COMMANDS %d, other, get and mget at BRC_LAT_ID_OTHER, _GET, _MGET"
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


def persistent_map_names(contract):
    """Names of the maps that are pinned and reused across upgrades (the contract's
    BRC_MAP_*; everything else, tail-call arrays and scratch, belongs to one build)."""
    return list(contract.persistent_maps)


class BrcBuild:
    """One compiled and loaded set of BRC programs.

    bpf          the bcc.BPF object; keep it alive while the fds are in use
    programs     {"ingress": prog_fd, "egress": prog_fd}, tail calls installed
    prog_arrays  {name: map_fd}: tail-call arrays owned by this build; not
                 pinned here -- the kernel empties a prog array when its last
                 user reference goes, so the caller pins them with the programs
    """

    def __init__(self, bpf, contract, programs, prog_arrays, helpers=None, timings=None):
        self.bpf = bpf
        self.contract = contract
        self.programs = programs
        self.prog_arrays = prog_arrays
        self.helpers = helpers or {}
        # {"compile_s": bcc/clang (BPF(text=...)), "load_s": verifier loads (load_func)}
        self.timings = timings or {}

    def declared_layout(self):
        """{map_name: {"type", "key_size", "value_size", "max_entries"}} for every
        persistent map, as this build declares it (not as a reused pin has it:
        compare with the pins' brc_pins.map_info() before building with pin_dir)."""
        import ctypes as ct
        out = {}
        for name in persistent_map_names(self.contract):
            table = self.bpf.get_table(name.encode())
            leaf = getattr(table, "sLeaf", table.Leaf)
            out[name] = {
                "type": BPF_MAP_TYPES.get(table.ttype, str(table.ttype)),
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
    the pins' brc_pins.map_info() first). Returns a BrcBuild.

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
    contract = load_contract(src_dir)
    timings = {"compile_s": time.monotonic() - t0}
    if not load:
        return BrcBuild(bpf, contract, {}, {}, timings=timings)
    t0 = time.monotonic()
    fill_command_table(bpf, contract)
    prog_arrays = {}
    for array_name, slots in contract.prog_arrays.items():
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
    return BrcBuild(bpf, contract, programs, prog_arrays, helpers, timings=timings)


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
