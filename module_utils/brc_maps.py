# -*- coding: utf-8 -*-
# Reading and writing BRC's live maps (config, stats, latency) through their pins,
# with layouts, counter names and histogram shape taken from the contract header
# (module_utils/brc_contract.py parses bpf/brc_contract.h).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import struct
import time

from ansible.module_utils.brc_commands import LATENCY_NAMES
from ansible.module_utils.brc_common import BrcError
from ansible.module_utils.brc_contract import ContractError, load_contract
from ansible.module_utils import brc_pins
from ansible.module_utils.brc_math import percentiles

NS_PER_S = 1000000000

def contract_for(src_dir):
    try:
        return load_contract(src_dir)
    except ContractError as e:
        raise BrcError(str(e), "ship the bpf/ sources to src_dir (the brc role does) or point src_dir at them")


def open_map(pdir, contract, what):
    path = os.path.join(pdir, contract.map_name(what))
    return brc_pins.PinnedMap(path)


# --- config ----------------------------------------------------------------

def _config_struct(contract):
    return contract.structs["brc_config"]


def decode_config(contract, raw):
    """Config map value -> user-facing dict (mode by name, max_age in seconds, other fields as ints)."""
    st = _config_struct(contract).from_buffer_copy(raw[:ctypes.sizeof(_config_struct(contract))])
    names = dict((v, k) for k, v in contract.modes.items())
    out = {}
    for field, _t in st._fields_:
        val = getattr(st, field)
        if field == "mode":
            out["mode"] = names.get(val, str(val))
        elif field == "max_age_ns":
            out["max_age"] = val // NS_PER_S
        elif isinstance(val, int):
            out[field] = val
    return out


def encode_config(contract, values):
    """User-facing dict (as decode_config returns) -> struct bytes."""
    cls = _config_struct(contract)
    st = cls()
    for field, _t in cls._fields_:
        if field == "mode":
            mode = values.get("mode", "off")
            if mode not in contract.modes:
                raise BrcError("unknown mode %r" % mode, "use one of %s" % ", ".join(sorted(contract.modes)))
            setattr(st, field, contract.modes[mode])
        elif field == "max_age_ns":
            setattr(st, field, int(values.get("max_age", 0)) * NS_PER_S)
        elif field in values:
            setattr(st, field, int(values[field]))
    return ctypes.string_at(ctypes.addressof(st), ctypes.sizeof(st))


def _check_value_size(m, cls, what, src_dir):
    if m.info["value_size"] != ctypes.sizeof(cls):
        raise BrcError("the pinned %s map (%s) has %d-byte values but the contract in %s defines %d"
                       % (what, m.path, m.info["value_size"], src_dir, ctypes.sizeof(cls)),
                       "redeploy the programs from these sources (brc_program, reset_maps=true if the layout changed)")


def read_config(pdir, contract, src_dir=""):
    with open_map(pdir, contract, "config") as m:
        _check_value_size(m, _config_struct(contract), "config", src_dir)
        raw = m.lookup(0)
    return decode_config(contract, raw or b"\0" * ctypes.sizeof(_config_struct(contract)))


def read_agent(pdir, contract, now_ns=None):
    """What the host agent last wrote in brc_agent, with what the programs make of it:
    in_charge (BRC_AGENT_F_ON), beat_age_ms, answering (in charge and beat younger
    than BRC_AGENT_STALE_NS: else serve answers nothing). None when the build has no
    brc_agent pin. flushes_by_reason is {reason: count} for every reason the contract
    names (zeros too: the same keys on every host and in every report), plus
    slot_<n> for a non-zero slot it does not name (written by a newer agent)."""
    if contract.map_name("agent") not in brc_pins.list_pins(pdir):
        return None
    cls = contract.structs["brc_agent"]
    with open_map(pdir, contract, "agent") as m:
        raw = m.lookup(0) or b""
    st = cls.from_buffer_copy(raw[:ctypes.sizeof(cls)].ljust(ctypes.sizeof(cls), b"\0"))
    now_ns = time.monotonic_ns() if now_ns is None else now_ns
    in_charge = bool(st.flags & contract.constants["BRC_AGENT_F_ON"])
    age_ns = now_ns - st.beat_ns if st.beat_ns else None
    out = dict((name, int(getattr(st, name))) for name, _t in cls._fields_
               if name not in ("beat_ns", "started_ns", "flushes_by_reason") and not name.startswith("pad"))
    if hasattr(st, "flushes_by_reason"):
        out["flushes_by_reason"] = agent_flushes(contract, list(st.flushes_by_reason))
    out.update(in_charge=in_charge, beat_age_ms=None if age_ns is None else round(age_ns / 1e6, 1),
               answering=in_charge and age_ns is not None and age_ns < contract.constants["BRC_AGENT_STALE_NS"])
    return out


def agent_flushes(contract, slots):
    """brc_agent.flushes_by_reason's slots as {reason: count} (see read_agent)."""
    names = contract.agent_flush_reasons
    out = dict((name, 0) for name in names)
    for slot, n in enumerate(slots):
        if slot < len(names):
            out[names[slot]] = int(n)
        elif n:
            out["slot_%d" % slot] = int(n)
    return out


def write_config(pdir, contract, values):
    with open_map(pdir, contract, "config") as m:
        m.update(0, encode_config(contract, values))


def flush_cache(cache_pin):
    """Empty the shadow cache pinned at cache_pin; returns how many entries it removed.

    The programs see writes only while they run: in mode off, or while a filter is
    missing, Redis can change a key behind the cache's back. Entries from before such a
    blind gap must go before BRC looks again, or observe counts a false mismatch and
    serve answers a stale value (until max age). Nothing fills the cache during the gap
    (no GET is tracked), so emptying it once, before the gap ends, is enough.
    """
    return _empty(cache_pin)


def _empty(pin):
    with brc_pins.PinnedMap(pin) as m:
        return sum(1 for key in m.keys() if m.delete(key))


def cache_pin(pdir, contract):
    return os.path.join(pdir, contract.map_name("cache"))


# What a blind gap (a filter missing) makes stale, by the contract's map role, with the
# result key that counts the entries end_blind_gap() removed: the cache (flush_cache), and
# the flows kept outside brc_flows (half-open ones, and served connections that closed,
# kept to translate their last FIN/ACKs). Those flows' last packets went by untranslated,
# and a client that reused such a tuple during the gap opened a connection whose SYN BRC
# never saw: the old entry would translate it by the closed connection's offsets and Redis
# would drop every segment (a stuck connection). None of them holds marks or counts as
# live, so removing them needs nothing else. Likewise the records of untracked
# connections and the adoption tickets built on them (bpf/brc_adopt.h): a record that
# missed segments could prove a boundary the connection has long passed.
UNTRACKED_MAPS = ("untracked", "adopt")
BLIND_GAP_MAPS = (("cache", "cache_flushed"), ("transient", "flows_forgotten")) + \
    tuple((role, "untracked_forgotten") for role in UNTRACKED_MAPS)


def untracked_pins(pdir, contract):
    """The pins of the records of untracked connections and of the adoption tickets (those
    @contract has)."""
    return [os.path.join(pdir, contract.map_name(role)) for role in UNTRACKED_MAPS
            if "BRC_MAP_" + role.upper() in contract.strings]


def forget_pins(pins):
    """Empty the maps pinned at @pins (those that exist); returns the entries removed."""
    return sum(_empty(pin) for pin in pins if os.path.exists(pin))


def forget_untracked(pdir, contract):
    """Empty the records of untracked connections and the adoption tickets: mode off, like a
    missing filter, lets their packets by unseen. Returns the entries removed."""
    return forget_pins(untracked_pins(pdir, contract))


def blind_gap_pins(pdir, contract):
    """[(result key, pin)] of the maps end_blind_gap() empties (those @contract has:
    an older build's lacks the adoption maps)."""
    return [(counted, os.path.join(pdir, contract.map_name(role))) for role, counted in BLIND_GAP_MAPS
            if "BRC_MAP_" + role.upper() in contract.strings]


def end_blind_gap(pins):
    """What a filter that has to be created again does before it runs: empty the maps of
    BLIND_GAP_MAPS. Returns {result key: entries removed}; a pin that does not exist (a
    build without the map) counts 0."""
    out = {}
    for counted, pin in pins:
        out[counted] = out.get(counted, 0) + (_empty(pin) if os.path.exists(pin) else 0)
    return out


def configure(pdir, contract, wanted, check_mode=False, src_dir=""):
    """Merge wanted (None = keep) into the live config.

    Returns (changed, before, after, cache_flushed). Leaving mode off empties the cache
    first (see flush_cache), and the records of untracked connections (forget_untracked),
    before the programs look again; cache_flushed counts the cache entries removed (0
    otherwise, and in check mode).
    """
    before = read_config(pdir, contract, src_dir)
    after = dict(before)
    for k, v in wanted.items():
        if v is None:
            continue
        if k not in after:
            raise BrcError("the contract's brc_config has no field for %s" % k,
                           "update the bpf/ sources or drop the option")
        after[k] = v
    encode_config(contract, after)  # validates (unknown mode)
    changed = after != before
    flushed = 0
    if changed and not check_mode:
        if before.get("mode") == "off" and after.get("mode") != "off":
            flushed = flush_cache(cache_pin(pdir, contract))
            forget_untracked(pdir, contract)
        write_config(pdir, contract, after)
    return changed, before, after, flushed


# --- stats and latency -------------------------------------------------------

def _sum_u64(m, raw):
    return sum(struct.unpack("<Q", v[:8])[0] for v in m.per_cpu(raw)) if raw else 0


def read_counters(pdir, contract):
    with open_map(pdir, contract, "stats") as m:
        return dict((name, _sum_u64(m, m.lookup(slot))) for slot, name, _doc in contract.counter_slots)


def latency_names(contract, record=None):
    """Names of brc_latency's histograms in id order: the list the build of
    @record (its build record) numbered its command table with, else this
    toolkit's; for a build from before per-command histograms, its header's
    classes (get, set, other)."""
    names = (record or {}).get("latency_names")
    if names:
        return list(names)
    if "BRC_LAT_COMMANDS" in contract.constants:    # built without a record (tests)
        return list(LATENCY_NAMES)
    return [name.lower() for name, _doc in contract.xlists.get("BRC_LAT_CLASSES", [])]


def read_latency(pdir, contract, names):
    """{command: [count per log2-ns slot]} for 'get' and every command with a count.
    @names labels the histogram ids (latency_names(contract, build record))."""
    slots = contract.latency_slots
    out = {}
    with open_map(pdir, contract, "latency") as m:
        for i, name in enumerate(names[:contract.latency_ids]):
            buckets = [_sum_u64(m, m.lookup(i * slots + s)) for s in range(slots)]
            if name == "get" or any(buckets):
                out[name] = buckets
    return out


def latency_summary(hist):
    out = {}
    for name, buckets in hist.items():
        out[name] = dict(percentiles(buckets), buckets=buckets)
    return out


def reset_stats(pdir, contract, check_mode=False):
    """Zero every non-zero slot of stats and latency. Returns True when something was non-zero."""
    nonzero = False
    for what in ("stats", "latency"):
        with open_map(pdir, contract, what) as m:
            zero = b"\0" * (m.slot * m.ncpus)
            for key in range(m.info["max_entries"]):
                raw = m.lookup(key)
                if raw and raw.strip(b"\0"):
                    nonzero = True
                    if not check_mode:
                        m.update(key, zero)
    return nonzero
