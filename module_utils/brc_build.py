# -*- coding: utf-8 -*-
# brc_program's logic: compile the bpf/ sources with bcc (module_utils/brc_compile.py),
# pin programs, tail-call arrays and persistent maps under <pin_root>/<interface>/,
# and keep /var/lib/brc/<interface>/build.json as the record of what is pinned.
#
# Upgrade rules:
#   - unchanged when the build hash (sources + cflags + command table) matches the record and the
#     pinned programs are the recorded ones (id and tag);
#   - persistent maps are reused when their pinned layout equals the new build's
#     declared layout (cache and stats survive); a differing layout is refused
#     unless reset_maps, which removes only the differing pins;
#   - histograms (HISTOGRAM_MAPS) are the exception: a differing layout, or a
#     command table numbered differently (latency_names in the record), drops
#     and recreates them without reset_maps, since counts labelled with another
#     build's names would be wrong and losing them costs no cache;
#   - programs and tail-call arrays are pinned under a temporary name and renamed
#     over the old pins, so a reader always finds a complete program;
#   - reset_maps never drops the flow tables while a connection answered in the kernel
#     is open: its segments need the table's sequence offsets until it closes, and
#     without them they would pass untranslated (a stuck connection).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible.module_utils.brc_common import BrcError, STATE_DIR, build_record_path, iface_state_dir, read_json, \
    write_json, remove_file, source_hash, headers_info
from ansible.module_utils.brc_commands import LATENCY_NAMES, table_digest
from ansible.module_utils.brc_contract import ContractError, load_contract
from ansible.module_utils import brc_pins

LAYOUT_KEYS = ("type", "key_size", "value_size", "max_entries")

# Persistent maps holding only histograms: recreated rather than refused (see above).
HISTOGRAM_MAPS = ("brc_latency",)


def build_hash(src_dir, cflags):
    """source_hash of the sources and cflags plus the command table the build writes
    (module_utils/brc_commands.py): a change to any of them rebuilds."""
    return source_hash(src_dir, list(cflags) + ["brc_commands " + table_digest()])


def _bpf_api():
    """compile_programs and persistent_map_names from module_utils/brc_compile.py."""
    from ansible.module_utils import brc_compile
    return brc_compile


def _norm_type(t):
    t = str(t).lower()
    return t[len("bpf_map_type_"):] if t.startswith("bpf_map_type_") else t


# The maps a served connection's sequence translation lives in, by contract role.
TRANSLATION_MAPS = ("flows", "transient")


def open_served_connections(pdir, contract):
    """Connections open in the pinned flow table that were answered in the kernel (their
    key is in brc_served too; the two keys share one layout, the pinned one): each needs
    the table's offsets until it closes. 0 when either map is not pinned."""
    flows = os.path.join(pdir, contract.map_name("flows"))
    served = os.path.join(pdir, contract.map_name("served"))
    if not (os.path.exists(flows) and os.path.exists(served)):
        return 0
    with brc_pins.PinnedMap(flows) as f, brc_pins.PinnedMap(served) as s:
        return sum(1 for key in f.keys() if s.lookup(key) is not None)


def layout_mismatches(declared, pinned):
    """[(name, field, pinned value, declared value)] for maps whose pinned layout differs."""
    out = []
    for name in sorted(declared):
        have = pinned.get(name)
        if not have:
            continue
        want = declared[name]
        for key in LAYOUT_KEYS:
            if key not in want:
                continue
            a, b = have.get(key), want[key]
            if key == "type":
                a, b = _norm_type(a), _norm_type(b)
            if a != b:
                out.append((name, key, a, b))
    return out


def _close_build(build):
    bpf = getattr(build, "bpf", None)
    cleanup = getattr(bpf, "cleanup", None)
    if cleanup:
        try:
            cleanup()
        except Exception:
            pass


def current_state(interface, pin_root, state_dir=STATE_DIR):
    pdir = brc_pins.pin_dir(pin_root, interface)
    return {"pin_dir": pdir,
            "record": read_json(build_record_path(interface, state_dir)),
            "programs": brc_pins.pinned_programs(pdir) if os.path.isdir(pdir) else {},
            "maps": brc_pins.pinned_maps(pdir) if os.path.isdir(pdir) else {}}


def _up_to_date(record, programs, maps, shash):
    if not record or record.get("source_hash") != shash:
        return False
    for d in brc_pins.DIRECTIONS:
        want = record.get("programs", {}).get(d)
        have = programs.get(d)
        if not want or not have or want["id"] != have["id"] or want["tag"] != have["tag"]:
            return False
    for name, want in record.get("maps", {}).items():
        have = maps.get(name)
        if not have or have["id"] != want["id"]:
            return False
    return True


def _no_build():
    """timings of a run that compiled and loaded nothing."""
    return {"compiles": 0, "compile_s": 0.0, "load_s": 0.0}


def _add_timings(timings, build):
    """Add one compile_programs run (BrcBuild.timings) to the run's totals."""
    t = getattr(build, "timings", None) or {}
    timings["compiles"] += 1
    timings["compile_s"] = round(timings["compile_s"] + t.get("compile_s", 0.0), 3)
    timings["load_s"] = round(timings["load_s"] + t.get("load_s", 0.0), 3)


def _result_from_record(record, changed):
    return {"changed": changed, "pin_dir": record["pin_dir"], "source_hash": record["source_hash"],
            "layout_digest": record["layout_digest"], "programs": record["programs"],
            "maps": record["maps"], "headers": record.get("headers"), "timings": _no_build()}


def install(interface, src_dir, pin_root, cflags=(), reset_maps=False, check_mode=False,
            predict_change=False, state_dir=STATE_DIR, api=None):
    """brc_program state=present. Returns the module result (without 'msg')."""
    cflags = list(cflags or [])
    pdir = brc_pins.pin_dir(pin_root, interface)
    on_bpffs = brc_pins.bpffs_covering(pin_root)
    have_src = os.path.isdir(src_dir)
    if check_mode and (not on_bpffs or not have_src):
        # An earlier task (bpffs mount, source copy) would have prepared these.
        return {"changed": True, "pin_dir": pdir, "source_hash": None, "layout_digest": None,
                "programs": {}, "maps": {}, "headers": headers_info(), "timings": _no_build(),
                "msg": "would compile and pin the programs (bpffs or sources not in place yet)"}
    if not on_bpffs:
        raise BrcError("%s is not on a mounted bpffs" % pin_root,
                       "mount one first (brc_bpffs path=/sys/fs/bpf) or set pin_root under a bpffs")
    shash = build_hash(src_dir, cflags)
    try:
        contract = load_contract(src_dir)
    except ContractError as e:
        raise BrcError(str(e), "ship the complete bpf/ directory to %s" % src_dir)
    cur = current_state(interface, pin_root, state_dir)
    record = cur["record"]
    if _up_to_date(record, cur["programs"], cur["maps"], shash) and not (check_mode and predict_change):
        res = _result_from_record(record, False)
        res["diff"] = {"before": {"source_hash": shash}, "after": {"source_hash": shash}}
        return res
    diff = {"before": {"source_hash": (record or {}).get("source_hash"),
                       "programs": dict((d, p["tag"]) for d, p in cur["programs"].items())},
            "after": {"source_hash": shash, "programs": "rebuilt"}}
    headers = headers_info()
    if check_mode:
        return {"changed": True, "pin_dir": pdir, "source_hash": shash,
                "layout_digest": contract.layout_digest, "programs": {}, "maps": {},
                "headers": headers, "diff": diff, "timings": _no_build()}
    if headers["kind"] == "missing":
        raise BrcError("no kernel headers for %s at %s" % (headers["kernel"], headers["build"]),
                       headers["fix"])

    api = api or _bpf_api()
    persistent = list(api.persistent_map_names(contract))
    pinned_persistent = dict((n, cur["maps"][n]) for n in persistent if n in cur["maps"])
    dropped = []
    timings = _no_build()
    if pinned_persistent:
        probe = _compile(api, src_dir, None, cflags)
        _add_timings(timings, probe)
        try:
            declared = probe.declared_layout()
        finally:
            _close_build(probe)
        bad = layout_mismatches(declared, pinned_persistent)
        stale_histograms = set(b[0] for b in bad if b[0] in HISTOGRAM_MAPS)
        if (record or {}).get("latency_names") != LATENCY_NAMES:
            stale_histograms.update(n for n in HISTOGRAM_MAPS if n in pinned_persistent)
        bad = [b for b in bad if b[0] not in HISTOGRAM_MAPS]
        if bad and not reset_maps:
            raise BrcError(
                "the pinned maps in %s have a different layout than the new build: %s" % (
                    pdir, "; ".join("%s.%s pinned %s, new %s" % b for b in bad)),
                "set reset_maps: true to drop and recreate those maps (their cache entries and "
                "stats are lost), or deploy sources with the pinned layout",
                mismatches=[dict(zip(("map", "field", "pinned", "new"), b)) for b in bad])
        translation = set(contract.map_name(r) for r in TRANSLATION_MAPS)
        if translation & set(b[0] for b in bad):
            n = open_served_connections(pdir, contract)
            if n:
                raise BrcError(
                    "%d connection(s) answered in the kernel are open on %s, and the new build "
                    "changes the layout of the flow tables (%s) that keep their sequence "
                    "translation: dropping them would stall those connections" % (
                        n, interface, ", ".join(sorted(translation & set(b[0] for b in bad)))),
                    "set the mode to off (brc_mode: off; served connections stay translated), "
                    "let them close (restart the clients' connection pools), then upgrade "
                    "with reset_maps: true",
                    open_served_connections=n)
        for name in sorted(set(b[0] for b in bad) | stale_histograms):
            os.unlink(os.path.join(pdir, name))
            dropped.append(name)

    if not os.path.isdir(pdir):
        os.makedirs(pdir, 0o700)
    build = _compile(api, src_dir, pdir, cflags)
    _add_timings(timings, build)
    try:
        declared = build.declared_layout()
        now_maps = brc_pins.pinned_maps(pdir)
        bad = layout_mismatches(declared, dict((n, now_maps[n]) for n in persistent if n in now_maps))
        if bad:  # bcc reused a pin without checking; never leave programs on a wrong layout
            raise BrcError("after loading, pinned maps in %s do not match the declared layout: %s"
                           % (pdir, "; ".join("%s.%s pinned %s, new %s" % b for b in bad)),
                           "rerun with reset_maps: true")
        keep = set()
        programs = {}
        for d in brc_pins.DIRECTIONS:
            if d not in build.programs:
                raise BrcError("the build has no %s program" % d, "check bpf/ (brc_compile.compile_programs)")
            path = brc_pins.prog_pin(pdir, d)
            brc_pins.pin_replace(build.programs[d], path)
            info = brc_pins.prog_info(build.programs[d])
            programs[d] = {"id": info["id"], "tag": info["tag"], "pin": path}
            keep.add(os.path.basename(path))
        helpers = {}
        for name, fd in sorted((getattr(build, "helpers", None) or {}).items()):
            path = brc_pins.prog_pin(pdir, name)
            brc_pins.pin_replace(fd, path)
            info = brc_pins.prog_info(fd)
            helpers[name] = {"id": info["id"], "tag": info["tag"], "pin": path}
            keep.add(os.path.basename(path))
        maps = {}
        for name, fd in sorted((getattr(build, "prog_arrays", None) or {}).items()):
            path = os.path.join(pdir, name)
            if os.path.lexists(path):
                # The kernel empties a prog array when its last pin/user ref goes, and the
                # attached (old) programs still tail-call through the old array until brc_tc
                # swaps the filters: keep it pinned as <name>_prev until then.
                prev = path + brc_pins.PREV_SUFFIX
                os.rename(path, prev)
                keep.add(os.path.basename(prev))
            brc_pins.pin_replace(fd, path)
            maps[name] = {"id": brc_pins.map_info(fd)["id"], "pin": path, "kind": "prog_array"}
            keep.add(name)
        now_maps = brc_pins.pinned_maps(pdir)
        for name in persistent:
            if name not in now_maps:
                raise BrcError("the build did not pin the persistent map %s in %s" % (name, pdir),
                               "check brc_compile.compile_programs(pin_dir=...)")
            maps[name] = {"id": now_maps[name]["id"], "pin": now_maps[name]["pin"], "kind": "persistent"}
            keep.add(name)
    finally:
        _close_build(build)
    stale = [n for n in brc_pins.list_pins(pdir) if n not in keep]
    for name in stale:
        path = os.path.join(pdir, name)
        if not os.path.isdir(path):
            os.unlink(path)
    reused = sorted(n for n in pinned_persistent if n not in dropped
                    and maps.get(n, {}).get("id") == pinned_persistent[n]["id"])
    record = {"interface": interface, "pin_dir": pdir, "source_hash": shash, "cflags": cflags,
              "src_dir": src_dir, "layout_digest": contract.layout_digest, "programs": programs,
              "helpers": helpers, "maps": maps, "headers": headers, "built_at": int(time.time()),
              "maps_reused": reused, "maps_reset": dropped, "latency_names": list(LATENCY_NAMES)}
    write_json(build_record_path(interface, state_dir), record)
    res = _result_from_record(record, True)
    res.update(diff=diff, maps_reused=reused, maps_reset=dropped, stale_pins_removed=stale,
               timings=timings)
    return res


def _compile(api, src_dir, pdir, cflags):
    """api.compile_programs with the compiler's and verifier's stderr captured for the error."""
    import tempfile
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            return api.compile_programs(src_dir, pin_dir=pdir, extra_cflags=tuple(cflags))
        except BrcError:
            raise
        except Exception as e:  # bcc raises plain Exceptions; the details went to stderr
            os.dup2(saved, 2)
            log.seek(0)
            output = log.read().decode(errors="replace").splitlines()
            raise BrcError("compiling or loading the BPF programs in %s failed: %s" % (src_dir, str(e) or repr(e)),
                           "see compiler_output (the last lines of the compiler and verifier log); "
                           "check the sources, the kernel headers (scripts/kernel-headers) and bcc (python3-bpfcc)",
                           compiler_output=output[-60:])
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def remove(interface, pin_root, check_mode=False, state_dir=STATE_DIR):
    """brc_program state=absent: unlink every pin under <pin_root>/<interface> and the record."""
    pdir = brc_pins.pin_dir(pin_root, interface)
    rec_path = build_record_path(interface, state_dir)
    pins = brc_pins.list_pins(pdir)
    changed = os.path.isdir(pdir) or os.path.exists(rec_path)
    res = {"changed": changed, "pin_dir": pdir, "removed": pins, "programs": {}, "maps": {},
           "source_hash": None, "layout_digest": None, "headers": None,
           "diff": {"before": {"pins": pins}, "after": {"pins": []}}}
    if check_mode or not changed:
        return res
    brc_pins.remove_pin_dir(pdir)
    remove_file(rec_path)
    try:
        os.rmdir(iface_state_dir(interface, state_dir))
    except OSError:
        pass
    try:
        os.rmdir(pin_root)  # only when no other interface is pinned
    except OSError:
        pass
    return res
