# -*- coding: utf-8 -*-
# brc_bpffs's logic: mount state by filesystem type, and the record of which
# mounts the toolkit made (/var/lib/brc/state), so that only those are unmounted.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.module_utils.brc_common import BrcError, BPFFS_STATE, read_json, write_json, remove_file
from ansible.module_utils.brc_pins import bpffs_at


def owned_mounts(state_path=BPFFS_STATE):
    return list((read_json(state_path, {}) or {}).get("bpffs_mounted", []))


def _record(path, owned, state_path=BPFFS_STATE):
    data = read_json(state_path, {}) or {}
    mounts = [m for m in data.get("bpffs_mounted", []) if m != path]
    if owned:
        mounts.append(path)
    data["bpffs_mounted"] = sorted(mounts)
    if not mounts and set(data) == {"bpffs_mounted"}:
        remove_file(state_path)  # nothing of ours left: leave no record behind
        return
    write_json(state_path, data)


def ensure_bpffs(module, path, state, force=False, check_mode=False, state_path=BPFFS_STATE,
                 mountinfo="/proc/self/mountinfo"):
    """Result dict for brc_bpffs; runs mount/umount through module.run_command."""
    path = os.path.normpath(path)
    mounted = bpffs_at(path, mountinfo)
    owned = path in owned_mounts(state_path)
    if mounted is False and owned:
        # Someone unmounted it behind our back: the record is stale.
        owned = False
        if not check_mode:
            _record(path, False, state_path)
    result = {"path": path, "mounted": mounted, "owned": owned, "changed": False,
              "diff": {"before": {"mounted": mounted}, "after": {"mounted": mounted}}}
    if state == "mounted":
        if mounted:
            return result
        result.update(changed=True, mounted=True, owned=True)
        result["diff"]["after"]["mounted"] = True
        if check_mode:
            return result
        if not os.path.isdir(path):
            os.makedirs(path, 0o755)
        rc, _out, err = module.run_command(["mount", "-t", "bpf", "bpf", path])
        if rc != 0 or not bpffs_at(path, mountinfo):
            raise BrcError("mounting bpffs at %s failed: %s" % (path, err.strip() or "rc=%d" % rc),
                           "run as root on a kernel with CONFIG_BPF_SYSCALL (check 'mount -t bpf bpf %s')" % path)
        _record(path, True, state_path)
        return result
    # unmounted
    if not mounted:
        return result
    if not owned and not force:
        result["msg"] = ("left the bpffs at %s mounted: the toolkit did not mount it (force=true to unmount anyway)"
                         % path)
        return result
    result.update(changed=True, mounted=False, owned=False)
    result["diff"]["after"]["mounted"] = False
    if check_mode:
        return result
    rc, _out, err = module.run_command(["umount", path])
    if rc != 0:
        raise BrcError("unmounting the bpffs at %s failed: %s" % (path, err.strip()),
                       "check what is using it (fuser -m %s)" % path)
    _record(path, False, state_path)
    return result
