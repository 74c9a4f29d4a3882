# -*- coding: utf-8 -*-
# Kernel objects in bpffs: the bpffs mount itself, pinning and opening programs and
# maps, their info (id, tag, layout), and map element access. Uses libbpf through
# ctypes (libbpf1 is what libbcc links against), so reading and writing pinned maps
# needs neither bcc nor a compiler.
#
# Pin layout under <pin_root>/<interface>/ (the toolkit's own contract, read by
# brc_tc, brc_config, brc_stats, brc_facts and the fleet playbooks):
#   prog_ingress, prog_egress   the tc programs
#   <prog array name>           tail-call arrays (pinned so the kernel keeps their entries)
#   <map name>                  persistent maps (BPF_TABLE_PINNED by the build)
#   <prog array name>_prev      the previous build's tail-call arrays during an upgrade,
#                               until brc_tc has moved the filters to the new programs
# bpffs refuses names with a dot, so temporary pins use a "_new" suffix.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ctypes.util
import errno
import os

from ansible.module_utils.brc_common import BrcError

PROG_PREFIX = "prog_"
NEW_SUFFIX = "_new"
# Previous build's tail-call arrays, kept pinned until the new programs are attached.
PREV_SUFFIX = "_prev"
DIRECTIONS = ("ingress", "egress")

BPF_MAP_TYPES = {
    1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 7: "stack_trace", 8: "cgroup_array", 9: "lru_hash",
    10: "lru_percpu_hash", 11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps",
    27: "ringbuf",
}
PERCPU_TYPES = ("percpu_hash", "percpu_array", "lru_percpu_hash")


# --- bpffs mounts ------------------------------------------------------------

def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts(mountinfo="/proc/self/mountinfo"):
    """[(mount point, fs type, source)] in mount order."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            left, _sep, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) < 5 or len(rfields) < 2:
                continue
            out.append((_unescape(fields[4]), rfields[0], _unescape(rfields[1])))
    return out


def bpffs_at(path, mountinfo="/proc/self/mountinfo"):
    """True when the topmost mount at path is a bpf filesystem (by type, not source name)."""
    path = os.path.realpath(path) if os.path.exists(path) else os.path.normpath(path)
    fstype = None
    for mnt, fs, _src in mounts(mountinfo):
        if mnt == path:
            fstype = fs  # later entries stack over earlier ones
    return fstype == "bpf"


def bpffs_covering(path, mountinfo="/proc/self/mountinfo"):
    """The bpffs mount point that contains path, or None."""
    path = os.path.normpath(path)
    best, best_fs = None, None
    for mnt, fs, _src in mounts(mountinfo):
        if path == mnt or path.startswith(mnt.rstrip("/") + "/"):
            if best is None or len(mnt) >= len(best):
                best, best_fs = mnt, fs
    return best if best_fs == "bpf" else None


# --- libbpf via ctypes ---------------------------------------------------------

class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class _ProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", ctypes.c_uint32),
                ("xlated_prog_len", ctypes.c_uint32), ("jited_prog_insns", ctypes.c_uint64),
                ("xlated_prog_insns", ctypes.c_uint64), ("load_time", ctypes.c_uint64),
                ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16)]


_LIB = []


def libbpf():
    """The libbpf shared library (libbpf1), loaded once."""
    if _LIB:
        return _LIB[0]
    names = ["libbpf.so.1", ctypes.util.find_library("bpf") or "libbpf.so"]
    last = None
    for name in names:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            break
        except OSError as e:
            last = e
    else:
        raise BrcError("libbpf is not loadable (%s)" % last,
                       "install the Debian package libbpf1 (pulled in by python3-bpfcc)")
    c_int, c_uint32, vp, cp = ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_char_p
    for fname, res, args in (
            ("bpf_obj_pin", c_int, [c_int, cp]),
            ("bpf_obj_get", c_int, [cp]),
            ("bpf_obj_get_info_by_fd", c_int, [c_int, vp, ctypes.POINTER(c_uint32)]),
            ("bpf_map_lookup_elem", c_int, [c_int, vp, vp]),
            ("bpf_map_update_elem", c_int, [c_int, vp, vp, ctypes.c_uint64]),
            ("bpf_map_delete_elem", c_int, [c_int, vp]),
            ("bpf_map_get_next_key", c_int, [c_int, vp, vp]),
            ("bpf_prog_get_fd_by_id", c_int, [c_uint32]),
            ("bpf_map_get_fd_by_id", c_int, [c_uint32]),
            ("bpf_prog_test_run_opts", c_int, [c_int, vp])):
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = res, args
    _LIB.append(lib)
    return lib


def _err(ret):
    e = ctypes.get_errno()
    return e or (-ret if ret < 0 else errno.EIO)


def obj_pin(fd, path):
    ret = libbpf().bpf_obj_pin(fd, path.encode())
    if ret != 0:
        e = _err(ret)
        raise BrcError("cannot pin at %s: %s" % (path, os.strerror(e)),
                       "make sure %s is on a mounted bpffs (brc_bpffs) and the name has no dot"
                       % os.path.dirname(path))


def obj_get(path):
    """fd of the object pinned at path (caller closes), or raise BrcError."""
    fd = libbpf().bpf_obj_get(path.encode())
    if fd < 0:
        e = _err(fd)
        raise BrcError("cannot open the pin %s: %s" % (path, os.strerror(e)),
                       "deploy the programs first (brc_program state=present)",
                       missing=(e == errno.ENOENT))
    return fd


def pin_replace(fd, path):
    """Pin fd at path, atomically replacing an existing pin (pin under a temp name, rename)."""
    tmp = path + NEW_SUFFIX
    if os.path.lexists(tmp):
        os.unlink(tmp)
    obj_pin(fd, tmp)
    os.rename(tmp, path)


def _info(fd, struct):
    info = struct()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    ret = libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if ret != 0:
        raise BrcError("BPF_OBJ_GET_INFO_BY_FD failed: %s" % os.strerror(_err(ret)))
    return info


def map_info(fd):
    i = _info(fd, _MapInfo)
    return {"id": i.id, "type": BPF_MAP_TYPES.get(i.type, str(i.type)), "key_size": i.key_size,
            "value_size": i.value_size, "max_entries": i.max_entries, "flags": i.map_flags,
            "name": i.name.decode(errors="replace")}


class _TestRunOpts(ctypes.Structure):
    """libbpf's struct bpf_test_run_opts."""
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


def prog_test_run(fd, data, out_size=None, repeat=1):
    """Run program @fd on @data (BPF_PROG_TEST_RUN) @repeat times: (return value, output
    data, mean ns per run). The output buffer leaves room for a program that grows its packet."""
    out_size = out_size or len(data) + 4096
    inbuf = ctypes.create_string_buffer(bytes(data), len(data))
    outbuf = ctypes.create_string_buffer(out_size)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(inbuf),
                        data_out=ctypes.addressof(outbuf), data_size_in=len(data),
                        data_size_out=out_size, repeat=repeat)
    ret = libbpf().bpf_prog_test_run_opts(fd, ctypes.byref(opts))
    if ret != 0:
        e = _err(ret)
        raise BrcError("BPF_PROG_TEST_RUN failed: %s" % os.strerror(e))
    return opts.retval, outbuf.raw[:opts.data_size_out], opts.duration


def prog_info(fd):
    i = _info(fd, _ProgInfo)
    return {"id": i.id, "tag": bytes(bytearray(i.tag)).hex(), "name": i.name.decode(errors="replace"),
            "type": i.type}


def prog_fd_by_id(prog_id):
    fd = libbpf().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise BrcError("no BPF program with id %d: %s" % (prog_id, os.strerror(_err(fd))))
    return fd


def pinned_info(path, kind):
    """Info of the object pinned at path ('prog' or 'map'), or None when there is no pin."""
    if not os.path.lexists(path):
        return None
    fd = obj_get(path)
    try:
        info = prog_info(fd) if kind == "prog" else map_info(fd)
    finally:
        os.close(fd)
    info["pin"] = path
    return info


def possible_cpus(path="/sys/devices/system/cpu/possible"):
    """Number of possible CPUs (the per-CPU value count), from e.g. '0-3,5'."""
    with open(path) as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _sep, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


class PinnedMap:
    """A pinned map opened by path; use as a context manager."""

    def __init__(self, path):
        self.path = path
        self.fd = obj_get(path)
        self.info = map_info(self.fd)
        self.percpu = self.info["type"] in PERCPU_TYPES
        self.ncpus = possible_cpus() if self.percpu else 1
        self.slot = (self.info["value_size"] + 7) // 8 * 8 if self.percpu else self.info["value_size"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _key(self, key):
        if isinstance(key, int):
            return ctypes.c_uint32(key) if self.info["key_size"] == 4 else ctypes.c_uint64(key)
        return ctypes.create_string_buffer(bytes(key), self.info["key_size"])

    def lookup(self, key):
        """Raw value bytes (per-CPU: ncpus slots back to back), or None when absent."""
        buf = ctypes.create_string_buffer(self.slot * self.ncpus)
        k = self._key(key)
        ret = libbpf().bpf_map_lookup_elem(self.fd, ctypes.byref(k), buf)
        if ret != 0:
            if _err(ret) == errno.ENOENT:
                return None
            raise BrcError("lookup in %s failed: %s" % (self.path, os.strerror(_err(ret))))
        return buf.raw

    def per_cpu(self, raw):
        """Split a per-CPU value into one bytes object per CPU."""
        size = self.info["value_size"]
        return [raw[i * self.slot:i * self.slot + size] for i in range(self.ncpus)]

    def update(self, key, value):
        """Write value bytes (per-CPU maps: one value for every CPU, or all slots)."""
        if self.percpu and len(value) == self.info["value_size"]:
            value = b"".join(value.ljust(self.slot, b"\0") for _i in range(self.ncpus))
        buf = ctypes.create_string_buffer(bytes(value), max(len(value), 1))
        k = self._key(key)
        ret = libbpf().bpf_map_update_elem(self.fd, ctypes.byref(k), buf, 0)
        if ret != 0:
            raise BrcError("update of %s failed: %s" % (self.path, os.strerror(_err(ret))))

    def delete(self, key):
        """Delete key; False when it was already gone (e.g. evicted meanwhile)."""
        buf = ctypes.create_string_buffer(bytes(key), self.info["key_size"])
        ret = libbpf().bpf_map_delete_elem(self.fd, buf)
        if ret != 0:
            if _err(ret) == errno.ENOENT:
                return False
            raise BrcError("delete in %s failed: %s" % (self.path, os.strerror(_err(ret))))
        return True

    def count(self, limit=1000000):
        """Number of keys (for hash/LRU maps: how full; arrays: max_entries)."""
        if self.info["type"] in ("array", "percpu_array", "prog_array"):
            return self.info["max_entries"]
        ks = self.info["key_size"]
        cur = ctypes.create_string_buffer(ks)
        nxt = ctypes.create_string_buffer(ks)
        n = 0
        ret = libbpf().bpf_map_get_next_key(self.fd, None, nxt)
        while ret == 0 and n < limit:
            n += 1
            ctypes.memmove(cur, nxt, ks)
            ret = libbpf().bpf_map_get_next_key(self.fd, cur, nxt)
        return n

    def keys(self, limit=1000000):
        ks = self.info["key_size"]
        cur = ctypes.create_string_buffer(ks)
        nxt = ctypes.create_string_buffer(ks)
        out = []
        ret = libbpf().bpf_map_get_next_key(self.fd, None, nxt)
        while ret == 0 and len(out) < limit:
            out.append(nxt.raw)
            ctypes.memmove(cur, nxt, ks)
            ret = libbpf().bpf_map_get_next_key(self.fd, cur, nxt)
        return out


# --- the per-interface pin directory -------------------------------------------

def pin_dir(pin_root, interface):
    return os.path.join(pin_root, interface)


def prog_pin(pdir, direction):
    return os.path.join(pdir, PROG_PREFIX + direction)


def list_pins(pdir):
    """Sorted names pinned in pdir ([] when the directory is absent)."""
    try:
        return sorted(os.listdir(pdir))
    except OSError:
        return []


def pinned_programs(pdir):
    """{direction: {id, tag, name, pin}} for the program pins present."""
    out = {}
    for d in DIRECTIONS:
        info = pinned_info(prog_pin(pdir, d), "prog")
        if info:
            out[d] = info
    return out


def pinned_maps(pdir):
    """{name: map info + pin} for every non-program pin in pdir."""
    out = {}
    for name in list_pins(pdir):
        path = os.path.join(pdir, name)
        if name.startswith(PROG_PREFIX) or os.path.isdir(path):
            continue
        try:
            out[name] = pinned_info(path, "map")
        except BrcError:
            continue  # not a map (or unreadable): left to the caller's listing
    return out


def drop_prev_pins(pdir):
    """Unlink the previous build's tail-call array pins (after the filters moved on)."""
    dropped = []
    for name in list_pins(pdir):
        if name.endswith(PREV_SUFFIX):
            os.unlink(os.path.join(pdir, name))
            dropped.append(name)
    return dropped


def remove_pin_dir(pdir):
    """Unlink every pin in pdir and the directory; returns the names removed."""
    removed = []
    for name in list_pins(pdir):
        path = os.path.join(pdir, name)
        if os.path.isdir(path):
            removed.extend(name + "/" + n for n in remove_pin_dir(path))
            continue
        os.unlink(path)
        removed.append(name)
    if os.path.isdir(pdir):
        os.rmdir(pdir)
    return removed
