# -*- coding: utf-8 -*-
# tc clsact and the two BRC direct-action bpf filters, with pyroute2.
#
# BRC's filters are recognised by (prio, handle) = (TC_PRIO, TC_HANDLE) on the
# clsact ingress (ffff:fff2) and egress (ffff:fff3) hooks; 'replace' on the same
# prio/handle swaps the program atomically (no window without a filter). Whether
# the clsact qdisc was created by the toolkit is recorded in
# /var/lib/brc/<interface>/tc.json, so removal never deletes someone else's clsact.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from ansible.module_utils.brc_common import BrcError, STATE_DIR, iface_state_dir, read_json, \
    write_json, remove_file
from ansible.module_utils import brc_maps, brc_pins

TC_PRIO = 1
TC_HANDLE = 0xbc0
PARENTS = {"ingress": 0xfffffff2, "egress": 0xfffffff3}
CLSACT_HANDLE = 0xffff0000
CLSACT_PARENT = 0xfffffff1
TCA_BPF_TAG = 10
TCA_BPF_ID = 11


def filter_name(direction):
    return "brc_" + direction


def _bpf_options(msg):
    """(name, prog id, tag) of a bpf filter message; pyroute2 0.7 leaves ID/TAG undecoded."""
    opts = msg.get_attr("TCA_OPTIONS")
    name, prog_id, tag = None, None, None
    if not opts:
        return name, prog_id, tag
    name = opts.get_attr("TCA_BPF_NAME")
    prog_id = opts.get_attr("TCA_BPF_ID")
    tag = opts.get_attr("TCA_BPF_TAG")
    if isinstance(tag, (bytes, bytearray)):
        tag = tag.hex()
    elif tag is not None:
        tag = str(tag).replace(":", "")
    for slot in opts["attrs"]:
        key, val = slot.cell if hasattr(slot, "cell") else (slot[0], slot[1])
        if key != "UNKNOWN" or not hasattr(val, "data"):
            continue
        raw = bytes(val.data[val.offset:val.offset + val.length])
        if len(raw) < 4:
            continue
        _length, nla_type = struct.unpack("HH", raw[:4])
        if nla_type == TCA_BPF_ID and len(raw) >= 8:
            prog_id = struct.unpack("I", raw[4:8])[0]
        elif nla_type == TCA_BPF_TAG and len(raw) >= 12:
            tag = raw[4:12].hex()
    return name, prog_id, tag


class Tc:
    """pyroute2 view of one interface's clsact hooks."""

    def __init__(self, interface, ipr=None):
        from pyroute2 import IPRoute  # pylint: disable=import-error
        self.interface = interface
        self.ip = ipr or IPRoute()
        found = self.ip.link_lookup(ifname=interface)
        if not found:
            self.close()
            raise BrcError("interface %s not found on this host" % interface,
                           "set brc_interface / interface to an existing interface (ip -br link)")
        self.index = found[0]

    def close(self):
        close = getattr(self.ip, "close", None)
        if close:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def clsact_present(self):
        for q in self.ip.get_qdiscs(self.index):
            if q.get_attr("TCA_KIND") == "clsact":
                return True
        return False

    def filters(self, direction):
        """Every filter on a clsact hook: [{prio, handle, kind, name, id, tag}]."""
        out = []
        if not self.clsact_present():
            return out
        for f in self.ip.get_filters(self.index, parent=PARENTS[direction]):
            if not f["handle"]:
                continue  # the per-prio chain header, not a filter
            name, prog_id, tag = _bpf_options(f)
            out.append({"prio": f["info"] >> 16, "handle": f["handle"], "kind": f.get_attr("TCA_KIND"),
                        "name": name, "id": prog_id, "tag": tag})
        return out

    def ours(self, direction):
        for f in self.filters(direction):
            if f["prio"] == TC_PRIO and f["handle"] == TC_HANDLE:
                return f
        return None

    def add_clsact(self):
        self.ip.tc("add", "clsact", self.index)

    def del_clsact(self):
        self.ip.tc("del", "clsact", self.index)

    def set_filter(self, direction, fd, replace):
        self.ip.tc("replace-filter" if replace else "add-filter", "bpf", self.index, TC_HANDLE,
                   fd=fd, name=filter_name(direction), parent=PARENTS[direction], classid=1,
                   direct_action=True, prio=TC_PRIO)

    def del_filter(self, direction):
        self.ip.tc("del-filter", "bpf", self.index, TC_HANDLE, parent=PARENTS[direction], prio=TC_PRIO)


def tc_state_path(interface, state_dir=STATE_DIR):
    return os.path.join(iface_state_dir(interface, state_dir), "tc.json")


def _short(f):
    return {"id": f["id"], "tag": f["tag"]} if f else None


def _set_filters(tc, interface, pdir, todo, before, add_clsact, state_dir, gap_pins, result):
    """Point the filters in todo at the pinned programs, all or none: when one step
    fails, the ones done are put back (a replaced filter to the program it ran, held
    by id until then; a created one removed, with the clsact this call added)."""
    old_fds, done, step = {}, [], "adding the clsact qdisc"
    try:
        if add_clsact:
            tc.add_clsact()
            done.append("clsact")
            write_json(tc_state_path(interface, state_dir), {"clsact_owned": True, "interface": interface})
        if gap_pins:
            step = "emptying the cache and the transient flows"
            result.update(brc_maps.end_blind_gap(gap_pins))
        for d in todo:
            step = "%s the %s filter" % ("replacing" if before[d] else "adding", d)
            if before[d]:
                old_fds[d] = brc_pins.prog_fd_by_id(before[d]["id"])
            fd = brc_pins.obj_get(brc_pins.prog_pin(pdir, d))
            try:
                tc.set_filter(d, fd, replace=before[d] is not None)
            finally:
                os.close(fd)
            done.append(d)
    except Exception as e:  # netlink, bpf syscall or pin errors alike: undo, then report
        undone = _undo_filters(tc, interface, done, old_fds, state_dir)
        raise BrcError("%s on %s failed (%s); %s" % (step, interface, e, undone),
                       "check the programs pinned in %s (brc_program) and "
                       "'tc filter show dev %s ingress/egress'" % (pdir, interface))
    finally:
        for fd in old_fds.values():
            os.close(fd)


def _undo_filters(tc, interface, done, old_fds, state_dir):
    problems = []
    for what in reversed(done):
        try:
            if what == "clsact":
                tc.del_clsact()
                if os.path.exists(tc_state_path(interface, state_dir)):
                    os.unlink(tc_state_path(interface, state_dir))
            elif what in old_fds:
                tc.set_filter(what, old_fds[what], replace=True)
            else:
                tc.del_filter(what)
        except Exception as e:  # report every step that could not be undone
            problems.append("%s: %s" % (what, e))
    if problems:
        return "rolling back failed too (%s): inspect the interface by hand" % "; ".join(problems)
    return "rolled back: the filters run what they ran before" if done else "nothing was changed"


def attach(interface, pdir, check_mode=False, predict_change=False, tc=None, state_dir=STATE_DIR,
           gap_pins=None):
    """Make BRC's ingress/egress filters run the programs pinned in pdir. Returns a result dict.

    A filter that is replaced keeps BRC watching without a gap. A filter that has to be
    created ends a gap in which BRC saw nothing: with gap_pins given
    (brc_maps.blind_gap_pins), brc_maps.end_blind_gap empties the cache and the transient
    flows first, so no entry from before the gap is used again.
    """
    progs = {}
    missing = []
    for d in brc_pins.DIRECTIONS:
        info = brc_pins.pinned_info(brc_pins.prog_pin(pdir, d), "prog")
        if info:
            progs[d] = info
        else:
            missing.append(brc_pins.prog_pin(pdir, d))
    tc = tc or Tc(interface)
    state = read_json(tc_state_path(interface, state_dir), {}) or {}
    before = {d: _short(tc.ours(d)) for d in brc_pins.DIRECTIONS}
    clsact = tc.clsact_present()
    result = {"changed": False, "clsact_owned": bool(state.get("clsact_owned")),
              "cache_flushed": 0, "flows_forgotten": 0, "untracked_forgotten": 0,
              "diff": {"before": {"clsact": clsact, "filters": before}}}
    if missing:
        if check_mode:
            result.update(changed=True, attached=before, msg="would attach the programs brc_program pins")
            result["diff"]["after"] = {"clsact": True, "filters": "programs not pinned yet"}
            return result
        raise BrcError("no BRC programs pinned at %s" % ", ".join(missing),
                       "run brc_program (state=present) for interface %s first" % interface)
    todo = [d for d in brc_pins.DIRECTIONS if not before[d] or before[d]["id"] != progs[d]["id"]]
    after = {d: {"id": progs[d]["id"], "tag": progs[d]["tag"]} for d in brc_pins.DIRECTIONS}
    result["diff"]["after"] = {"clsact": True, "filters": after}
    if not clsact:
        result["clsact_owned"] = True
    if not todo and clsact and not (check_mode and predict_change):
        result["attached"] = before
        if not check_mode:
            brc_pins.drop_prev_pins(pdir)
        return result
    result["changed"] = True
    result["attached"] = after
    if check_mode:
        return result
    _set_filters(tc, interface, pdir, todo, before, not clsact, state_dir,
                 gap_pins if any(before[d] is None for d in todo) else None, result)
    now = {d: _short(tc.ours(d)) for d in brc_pins.DIRECTIONS}
    for d in brc_pins.DIRECTIONS:
        if not now[d] or now[d]["id"] != progs[d]["id"]:
            raise BrcError("the %s filter on %s runs program %s, expected %s after attaching"
                           % (d, interface, now[d], progs[d]["id"]),
                           "check 'tc filter show dev %s %s' for a conflicting filter at prio %d"
                           % (interface, d, TC_PRIO))
    result["attached"] = now
    result["dropped_prev_pins"] = brc_pins.drop_prev_pins(pdir)
    return result


def detach(interface, check_mode=False, tc=None, state_dir=STATE_DIR):
    """Remove BRC's filters; remove clsact only if the toolkit created it and it is empty."""
    spath = tc_state_path(interface, state_dir)
    state = read_json(spath, {}) or {}
    owned = bool(state.get("clsact_owned"))
    try:
        tc = tc or Tc(interface)
    except BrcError:
        # Interface gone: nothing attached any more; forget the record.
        changed = os.path.exists(spath)
        if changed and not check_mode:
            remove_file(spath)
        return {"changed": changed, "attached": {}, "clsact_owned": False,
                "msg": "interface %s does not exist" % interface}
    before = {d: _short(tc.ours(d)) for d in brc_pins.DIRECTIONS}
    clsact = tc.clsact_present()
    present = [d for d in brc_pins.DIRECTIONS if before[d]]
    others = [f for d in brc_pins.DIRECTIONS for f in tc.filters(d)
              if not (f["prio"] == TC_PRIO and f["handle"] == TC_HANDLE)]
    drop_clsact = clsact and owned and not others
    result = {"changed": bool(present or drop_clsact), "attached": {}, "clsact_owned": owned,
              "diff": {"before": {"clsact": clsact, "filters": before},
                       "after": {"clsact": clsact and not drop_clsact, "filters": {}}}}
    if clsact and owned and others:
        result["msg"] = "left clsact on %s in place: other filters use it" % interface
    if check_mode:
        return result
    for d in present:
        tc.del_filter(d)
    if drop_clsact:
        tc.del_clsact()
    if os.path.exists(spath) and (drop_clsact or not clsact):
        remove_file(spath)
    return result
