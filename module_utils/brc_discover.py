# -*- coding: utf-8 -*-
# Which interfaces BRC is on (so that brc_stats and brc_facts work ad hoc, with no
# arguments), and the checks of the options the modules share, each failing with
# what is wrong and how to fix it (BrcError) before anything touches the host.
#
# BRC is "on" an interface when <pin_root>/<interface>/ holds pins (the layout of
# module_utils/brc_pins.py) or when its tc filter (brc_tc.TC_PRIO / TC_HANDLE) is
# attached there; the second finds programs pinned under another pin_root.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.module_utils.brc_common import BrcError, import_pyroute2
from ansible.module_utils import brc_pins

SYS_NET = "/sys/class/net"
IFNAMSIZ = 16  # the kernel's limit, NUL included
CONTRACT_FILE = "brc_contract.h"


# --- option checks -------------------------------------------------------------

def host_interfaces(sys_net=SYS_NET):
    try:
        return sorted(os.listdir(sys_net))
    except OSError:
        return []


def check_interface_name(name):
    """The kernel's rules for a device name (dev_valid_name)."""
    bad = None
    if not name:
        bad = "is empty"
    elif len(name) >= IFNAMSIZ:
        bad = "is %d characters long; Linux allows at most %d" % (len(name), IFNAMSIZ - 1)
    elif name in (".", ".."):
        bad = "is not a device name"
    elif any(c == "/" or c == ":" or c.isspace() for c in name):
        bad = "contains '/', ':' or white space, which Linux does not allow in a device name"
    if bad:
        raise BrcError("interface %r %s" % (name, bad),
                       "set interface to a device name as 'ip -br link' lists it (such as eth0)")


def check_interface_exists(name, sys_net=SYS_NET):
    check_interface_name(name)
    if not os.path.exists(os.path.join(sys_net, name)):
        have = ", ".join(host_interfaces(sys_net)) or "the host's interfaces"
        raise BrcError("interface %s does not exist on this host" % name,
                       "set interface to one of %s (ip -br link)" % have)


def check_interface_has_pins(name, pin_root, sys_net=SYS_NET):
    """For modules that read or write an existing build: its pin directory must be there."""
    check_interface_name(name)
    if os.path.isdir(brc_pins.pin_dir(pin_root, name)) and brc_pins.list_pins(brc_pins.pin_dir(pin_root, name)):
        return
    on = pinned_interfaces(pin_root)
    where = ("BRC is pinned for %s there" % ", ".join(on)) if on else "there are no BRC pins there at all"
    exists = os.path.exists(os.path.join(sys_net, name))
    raise BrcError("no BRC pins for interface %s under %s (%s%s)"
                   % (name, pin_root, where, "" if exists else "; the host has no interface %s either" % name),
                   ("set interface to %s, or leave it out to use every interface BRC is on" % " or ".join(on))
                   if on else "deploy BRC on %s first (deploy.yml, or brc_program then brc_tc)" % name)


def check_absolute(option, path, example):
    if not os.path.isabs(path):
        raise BrcError("%s must be an absolute path, got %r (a relative path would be taken from the "
                       "module's working directory)" % (option, path),
                       "set %s to a path such as %s" % (option, example))


def check_range(option, value, low, high, fix):
    if value is not None and not low <= value <= high:
        raise BrcError("%s must be %d-%d, got %d" % (option, low, high, value), fix)


def check_cflags(cflags):
    """brc_program's cflags: one compiler flag per element."""
    for flag in cflags or []:
        if not flag.startswith("-") or len(flag) < 2:
            raise BrcError("cflags entry %r is not a compiler flag" % flag,
                           "write each entry as a flag, such as -DBRC_CACHE_ENTRIES=65536")
        if any(c.isspace() for c in flag):
            raise BrcError("cflags entry %r holds several words" % flag,
                           "give one flag per list element (cflags: [-DA=1, -DB=2])")


def check_unix_socket(option, path):
    import stat
    if path is None:
        return
    check_absolute(option, path, "/run/redis/redis-server.sock")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise BrcError("%s %s does not exist" % (option, path),
                       "set %s to the unixsocket of Redis's config (redis-cli CONFIG GET unixsocket), "
                       "or leave it out to connect over TCP" % option)
    if not stat.S_ISSOCK(mode):
        raise BrcError("%s %s is not a Unix socket" % (option, path),
                       "set %s to the unixsocket of Redis's config (redis-cli CONFIG GET unixsocket), "
                       "or leave it out to connect over TCP" % option)


def check_not_empty(option, value, fix):
    if value is not None and not value.strip():
        raise BrcError("%s is empty" % option, fix)


def check_shared(p, check_mode, interface="name", pin_root=True, src_dir=True):
    """The options of common_spec(): interface per the module's need ('name', 'exists', 'pins' or None),
    pin_root and src_dir as paths; outside check mode pin_root on a bpffs and src_dir holding the
    sources (in check mode earlier tasks of the run would create them)."""
    if pin_root:
        check_pin_root(p["pin_root"], need_bpffs=False)
    if p.get("interface") is not None and interface:
        if interface == "exists":
            check_interface_exists(p["interface"])
        elif interface == "pins" and not (check_mode and not os.path.isdir(brc_pins.pin_dir(p["pin_root"],
                                                                                             p["interface"]))):
            check_interface_has_pins(p["interface"], p["pin_root"])
        else:
            check_interface_name(p["interface"])
    if pin_root and not check_mode:
        check_pin_root(p["pin_root"], need_bpffs=True)
    if src_dir:
        if check_mode:
            check_absolute("src_dir", p["src_dir"], "/usr/local/lib/brc/bpf")
            if os.path.isfile(p["src_dir"]):
                check_src_dir(p["src_dir"])
        else:
            check_src_dir(p["src_dir"])


def check_pin_root(path, need_bpffs=True, mountinfo="/proc/self/mountinfo"):
    """pin_root: absolute, a directory when it exists, and (need_bpffs) on a bpf filesystem."""
    check_absolute("pin_root", path, "/sys/fs/bpf/brc")
    if os.path.exists(path) and not os.path.isdir(path):
        raise BrcError("pin_root %s is a file, not a directory" % path,
                       "set pin_root to a directory on a bpffs, such as /sys/fs/bpf/brc (the default)")
    if need_bpffs and brc_pins.bpffs_covering(path, mountinfo) is None:
        raise BrcError("pin_root %s is not on a mounted bpffs, so nothing can be pinned or read there" % path,
                       "mount one with brc_bpffs (path=/sys/fs/bpf) or set pin_root to a directory under a "
                       "bpffs mount, such as /sys/fs/bpf/brc (the default)")


def check_src_dir(path):
    """src_dir: a directory holding the BPF sources (their brc_contract.h)."""
    check_absolute("src_dir", path, "/usr/local/lib/brc/bpf")
    fix = "ship the repository's bpf/ directory there with brc_sources (the brc role does) or point src_dir at it"
    if not os.path.isdir(path):
        raise BrcError("src_dir %s %s (it should hold BRC's bpf/ sources and their %s)"
                       % (path, "is not a directory" if os.path.exists(path) else "does not exist", CONTRACT_FILE), fix)
    if not os.path.isfile(os.path.join(path, CONTRACT_FILE)):
        raise BrcError("src_dir %s holds no %s: it is not a copy of BRC's bpf/ sources" % (path, CONTRACT_FILE), fix)


def check_port(option, value):
    if value is not None and not 0 < value < 65536:
        raise BrcError("%s must be 1-65535 (a TCP port), got %d" % (option, value),
                       "set %s to the port Redis listens on (6379 by default)" % option)


def check_bpffs_path(path, state):
    """brc_bpffs' path: absolute; for a mount, a directory that is empty or already a bpffs."""
    check_absolute("path", path, "/sys/fs/bpf")
    if state != "mounted" or not os.path.exists(path) or brc_pins.bpffs_at(path):
        return
    fix = "set path to /sys/fs/bpf (the default) or to an empty directory"
    if not os.path.isdir(path):
        raise BrcError("path %s is a file, not a directory: a bpffs can only be mounted on a directory" % path, fix)
    entries = os.listdir(path)
    if entries:
        raise BrcError("path %s is a non-empty directory that is not a bpffs: mounting one there would hide "
                       "its %d entries" % (path, len(entries)), fix)


# --- where BRC is -------------------------------------------------------------------

def pinned_interfaces(pin_root):
    """Names of the directories under pin_root that hold pins."""
    out = []
    for name in brc_pins.list_pins(pin_root):
        pdir = brc_pins.pin_dir(pin_root, name)
        if os.path.isdir(pdir) and brc_pins.list_pins(pdir):
            out.append(name)
    return out


def filtered_interfaces(sys_net=SYS_NET):
    """{interface: [directions]} with BRC's tc filter attached ({} without pyroute2)."""
    pr, _err = import_pyroute2()
    if pr is None:
        return {}
    from ansible.module_utils import brc_tc
    out = {}
    for name in host_interfaces(sys_net):
        try:
            with brc_tc.Tc(name) as tc:
                dirs = [d for d in brc_pins.DIRECTIONS if tc.ours(d)]
        except Exception:  # pylint: disable=broad-except
            continue  # gone since the listing, or not a netlink device: not ours
        if dirs:
            out[name] = dirs
    return out


def discover(pin_root, sys_net=SYS_NET):
    """{interface: {pinned, attached: [directions], exists}} for every interface BRC is on."""
    pinned = pinned_interfaces(pin_root)
    attached = filtered_interfaces(sys_net)
    out = {}
    for name in sorted(set(pinned) | set(attached)):
        out[name] = {"pinned": name in pinned, "attached": attached.get(name, []),
                     "exists": os.path.exists(os.path.join(sys_net, name))}
    return out


def not_found_msg(pin_root):
    return ("BRC is not on this host: no pins under %s and no BRC tc filter on any interface "
            "(deploy it with deploy.yml; pass pin_root if it was pinned elsewhere)" % pin_root)


def found_msg(found):
    if len(found) == 1:
        return "BRC is on %s" % list(found)[0]
    return "BRC is on %d interfaces: %s (each is reported under interfaces)" % (len(found), ", ".join(sorted(found)))
