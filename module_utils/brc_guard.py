# -*- coding: utf-8 -*-
# Dead-man switch of a live config change (the iptables_state pattern): before the change
# the host saves the config map's value in a marker file (arm); a watcher started in the
# background (async, poll 0) writes it back when the controller has not deleted the
# marker (confirm) within its timeout, so a controller that loses the host mid-change
# leaves it as it was. The map is read and written through brc_pins (libbpf), the
# toolkit's one kernel layer.
#
# A revert empties the cache first (cache, when the marker names it): the change it undoes
# may have been to mode off, in which BRC sees no writes, and leaving off must not answer
# from entries older than that gap (brc_maps.flush_cache, as brc_config does). Likewise the
# records of untracked connections (forget: brc_maps.untracked_pins), which mode off let
# packets by.
#
# The marker is JSON {map, cache, forget, value (hex bytes), armed_at, token}; <marker>.reverted is a
# marker the watcher acted on, <marker>.log one line per event, for the operator.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import json
import os
import time

from ansible.module_utils import brc_maps, brc_pins
from ansible.module_utils.brc_common import BrcError

KEY = 0             # the config map has one entry (bpf/brc_contract.h: brc_config)
POLL_S = 0.5


def _log(marker, text):
    with open(marker + ".log", "a") as f:
        f.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), text))


def _hex(raw):
    return [binascii.hexlify(raw[i:i + 1]).decode() for i in range(len(raw))]


def read_value(map_path):
    """The map's value at KEY as hex bytes."""
    with brc_pins.PinnedMap(map_path) as m:
        raw = m.lookup(KEY)
    if raw is None:
        raise BrcError("the map %s has no entry %d" % (map_path, KEY),
                       "point map at BRC's config map (<pin_root>/<interface>/brc_config)")
    return _hex(raw)


def write_value(map_path, value):
    with brc_pins.PinnedMap(map_path) as m:
        m.update(KEY, binascii.unhexlify("".join(value)))


def token_of(marker):
    try:
        with open(marker) as f:
            return json.load(f).get("token")
    except (IOError, OSError, ValueError):
        return None


def arm(marker, map_path, check_mode=False, cache_path=None, forget_paths=()):
    """Save the map's current value in marker, with the cache and the maps (@forget_paths)
    a revert empties; a newer arm replaces an older one (and its watcher, which finds
    another token, leaves)."""
    value = read_value(map_path)
    if check_mode:
        return {"armed": False, "value": value}
    parent = os.path.dirname(marker)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    tmp = marker + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"map": map_path, "cache": cache_path, "forget": list(forget_paths), "value": value,
                   "armed_at": time.time(),
                   "token": binascii.hexlify(os.urandom(8)).decode()}, f)
    os.rename(tmp, marker)
    if os.path.exists(marker + ".reverted"):
        os.unlink(marker + ".reverted")
    _log(marker, "armed: saved %s" % " ".join(value))
    return {"armed": True, "value": value}


def _restore(marker, reason):
    with open(marker) as f:
        saved = json.load(f)
    flushed = 0
    if saved.get("cache") and os.path.exists(saved["cache"]):
        flushed = brc_maps.flush_cache(saved["cache"])
    brc_maps.forget_pins(saved.get("forget", ()))
    write_value(saved["map"], saved["value"])
    os.rename(marker, marker + ".reverted")
    _log(marker, "reverted (%s): restored %s, %d cache entries emptied first"
         % (reason, " ".join(saved["value"]), flushed))
    return {"value": saved["value"], "cache_flushed": flushed}


def watch(marker, timeout, sleep=time.sleep, clock=time.time):
    """Wait for the confirmation of the snapshot found at start; restore it when none came
    within timeout seconds. {confirmed, reverted}."""
    mine = token_of(marker)
    deadline = clock() + timeout
    while mine is not None and clock() < deadline:
        if token_of(marker) != mine:
            break
        sleep(POLL_S)
    if mine is None or token_of(marker) != mine:
        return {"confirmed": True, "reverted": False}
    out = _restore(marker, "no confirmation from the controller within %ss" % timeout)
    return dict(out, confirmed=False, reverted=True)


def confirm(marker, check_mode=False):
    """Disarm: {confirmed, reverted}. confirmed False and reverted True: the host already
    restored the saved value by itself (the change is gone)."""
    if os.path.exists(marker):
        if not check_mode:
            os.unlink(marker)
            _log(marker, "confirmed by the controller")
        return {"confirmed": True, "reverted": False}
    return {"confirmed": False, "reverted": os.path.exists(marker + ".reverted")}


def restore(marker, check_mode=False):
    """Write the saved value back now (the controller asks): {reverted, value}."""
    if not os.path.exists(marker):
        return {"reverted": False}
    if check_mode:
        with open(marker) as f:
            return {"reverted": True, "value": json.load(f)["value"]}
    return dict(_restore(marker, "asked by the controller"), reverted=True)
