# -*- coding: utf-8 -*-
# The toolkit's view of bpf/brc_contract.h: map names, value layouts, counters,
# histogram shape. Parsed from the header itself so the contract is defined once.
# Only the header's documented forms are understood; anything else is an error,
# so a change to the header that this parser would misread fails loudly.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import hashlib
import ipaddress
import os
import re
import struct

CONTRACT_HEADER = "brc_contract.h"

_CTYPES = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
    "__s32": ctypes.c_int32,
    "__s64": ctypes.c_int64,
}

_DEFINE_INT = re.compile(r"^#define\s+(BRC_\w+)\s+((?:0x[0-9a-fA-F]+)|\d+)[uUlL]*\s*$", re.M)
_DEFINE_STR = re.compile(r'^#define\s+(BRC_\w+)\s+"([^"]*)"\s*$', re.M)
_STRUCT = re.compile(r"struct\s+(brc_\w+)\s*\{(.*?)\};", re.S)
_FIELD = re.compile(r"^\s*(__[us]\d+)\s+(\w+)(?:\[(\w+)\])?\s*;", re.M)
_XLIST = re.compile(r"#define\s+(BRC_\w+)\(X\)((?:.*\\\n)*.*)")
_XITEM = re.compile(r'X\(\s*(\w+)\s*,\s*"([^"]*)"\s*\)')
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


class ContractError(Exception):
    """The header does not have the shape this parser expects."""


class Contract:
    """Everything the toolkit needs to read and write BRC's pinned maps."""

    def __init__(self, header_text):
        self.text = header_text
        code = _COMMENT.sub("", header_text)
        self.constants = {k: int(v, 0) for k, v in _DEFINE_INT.findall(code)}
        self.strings = dict(_DEFINE_STR.findall(code))
        self.structs = {}
        for name, body in _STRUCT.findall(code):
            self.structs[name] = self._make_struct(name, body)
        self.xlists = {}
        for name, body in _XLIST.findall(header_text):
            self.xlists[name] = _XITEM.findall(body)
        for required in ("BRC_COUNTERS", "BRC_DIRTY_REASONS"):
            if not self.xlists.get(required):
                raise ContractError("%s has no %s list" % (CONTRACT_HEADER, required))
        # Not required: reports read a host's shipped header, which may predate the
        # list (its brc_agent then has no flushes_by_reason either). The C compiler
        # checks the capacity too (_Static_assert), but only where programs are built.
        if len(self.xlists.get("BRC_AGENT_FLUSH_REASONS", [])) > self.constants.get("BRC_AGENT_FLUSH_SLOTS", 0):
            raise ContractError("%s: BRC_AGENT_FLUSH_REASONS has more reasons than BRC_AGENT_FLUSH_SLOTS"
                                % CONTRACT_HEADER)

    def _make_struct(self, name, body):
        fields = []
        for ctype, field, dim in _FIELD.findall(body):
            base = _CTYPES[ctype]
            if dim:
                count = int(dim) if dim.isdigit() else self.constants.get(dim)
                if count is None:
                    raise ContractError("%s.%s: unknown array size %s" % (name, field, dim))
                base = base * count
            fields.append((field, base))
        if not fields:
            raise ContractError("struct %s: no fixed-width fields found" % name)
        return type(name, (ctypes.Structure,), {"_fields_": fields})

    @property
    def counter_slots(self):
        """[(slot, name, description)] of every counter in brc_stats: the BRC_COUNTERS
        list from slot 0, then one dirty_<reason> per BRC_DIRTY_REASONS entry from
        slot BRC_DIRTY_SLOT_BASE."""
        out = [(i, name.lower(), doc) for i, (name, doc) in enumerate(self.xlists["BRC_COUNTERS"])]
        base = self.constants.get("BRC_DIRTY_SLOT_BASE")
        for i, (name, doc) in enumerate(self.xlists.get("BRC_DIRTY_REASONS", [])):
            out.append((base + i, "dirty_" + name.lower(), "connections dirty: " + doc))
        return out

    @property
    def counters(self):
        """Counter names, e.g. ['pkt_ingress', ..., 'dirty_parser', ...]."""
        return [name for _slot, name, _doc in self.counter_slots]

    @property
    def counter_docs(self):
        return dict((name, doc) for _slot, name, doc in self.counter_slots)

    @property
    def dirty_reasons(self):
        """Dirty reason names in bit order, e.g. ['parser', 'gap', ...]."""
        return [name.lower() for name, _doc in self.xlists.get("BRC_DIRTY_REASONS", [])]

    @property
    def agent_flush_reasons(self):
        """The host agent's flush reasons in slot order (brc_agent.flushes_by_reason),
        as the agent names them: ['other', 'agent_start', ...]. Slot 0 is 'other'."""
        return [name.lower() for name, _doc in self.xlists.get("BRC_AGENT_FLUSH_REASONS", [])]

    @property
    def agent_flush_docs(self):
        return dict((name.lower(), doc) for name, doc in self.xlists.get("BRC_AGENT_FLUSH_REASONS", []))

    def agent_flush_slot(self, reason):
        """The flushes_by_reason slot of @reason; a reason the contract does not name
        counts as 'other' (an agent newer than the header it was given)."""
        reasons = self.agent_flush_reasons
        return reasons.index(reason) if reason in reasons else reasons.index("other")

    @property
    def persistent_maps(self):
        """Names of the maps the loader pins and reuses across upgrades (BRC_MAP_*)."""
        return [v for k, v in self.strings.items() if k.startswith("BRC_MAP_")]

    @property
    def prog_arrays(self):
        """{tail-call array: [(slot, program name), ...]} the loader fills (BRC_JMP_SLOTS)."""
        slots = self.xlists.get("BRC_JMP_SLOTS", [])
        return {self.strings["BRC_PROG_ARRAY"]: [(i, func) for i, (_name, func) in enumerate(slots)]}

    @property
    def request_groups(self):
        """Which request counter a command bumps: ['get', 'set', 'other']."""
        return [name.lower() for name, _doc in self.xlists["BRC_REQ_GROUPS"]]

    @property
    def latency_ids(self):
        """How many histograms brc_latency holds (histogram ids)."""
        # A header from before per-command histograms had one per BRC_LAT_CLASSES entry.
        return self.constants.get("BRC_LAT_COMMANDS") or len(self.xlists.get("BRC_LAT_CLASSES", []))

    @property
    def latency_slots(self):
        return self.constants["BRC_LAT_SLOTS"]

    @property
    def modes(self):
        """{'off': 0, 'observe': 1, 'serve': 2}"""
        return dict((k[len("BRC_MODE_"):].lower(), v)
                    for k, v in self.constants.items() if k.startswith("BRC_MODE_"))

    def map_name(self, what):
        """map_name('config') -> 'brc_config' (from BRC_MAP_CONFIG)."""
        return self.strings["BRC_MAP_" + what.upper()]

    def bucket_of(self, key, buckets):
        """The version bucket of @key in a brc_keyver of @buckets entries (a power of 2),
        as the programs compute it (brc_bucket_of() in bpf/brc_flow.h): FNV-1a-64 of
        the key's first BRC_KEY_MAX bytes, folded to 32 bits."""
        key = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
        h = 0xcbf29ce484222325
        for ch in bytearray(key[:self.constants["BRC_KEY_MAX"]]):
            h = ((h ^ ch) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        return (h ^ (h >> 32)) & 0xFFFFFFFF & (buckets - 1)

    @property
    def layout_digest(self):
        """Short digest of every layout-bearing definition (structs, constants).

        Counter and histogram descriptions do not take part; counter names do
        not either, since counters are append-only into a fixed-capacity map.
        """
        parts = []
        for name in sorted(self.structs):
            parts.append("%s:%s" % (name, [(f, ctypes.sizeof(t)) for f, t in self.structs[name]._fields_]))
        for name in sorted(self.constants):
            parts.append("%s=%d" % (name, self.constants[name]))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def addr_words(ip):
    """An address (text, IPv4 or IPv6) as the contract's address fields hold it:
    BRC_ADDR_WORDS __u32 of IPv6 in network order, an IPv4 address mapped
    (::ffff:a.b.c.d). A tuple, to assign to such a field or to compare with one."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        addr = ipaddress.IPv6Address("::ffff:" + str(addr))
    return struct.unpack("=4I", addr.packed)


def addr_text(words):
    """addr_words() back to text (an IPv4 address for a mapped one)."""
    addr = ipaddress.IPv6Address(struct.pack("=4I", *words))
    return str(addr.ipv4_mapped or addr)


def load_contract(src_dir):
    """Parse <src_dir>/brc_contract.h."""
    path = os.path.join(src_dir, CONTRACT_HEADER)
    try:
        with open(path) as f:
            return Contract(f.read())
    except IOError as e:
        raise ContractError("cannot read the BRC contract at %s: %s" % (path, e))
