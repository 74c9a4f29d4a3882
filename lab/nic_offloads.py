"""Device offloads (checksum, sg, tso, gso, gro) read and set with ethtool's ioctls, no ethtool binary."""
import ctypes
import fcntl
import json
import os
import socket
import struct
import sys

from netns_pair import sh

NETFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netfault.py")  # the CLI, run inside a namespace


SIOCETHTOOL = 0x8946
OFFLOADS = {  # name: (get, set)
    "rx": (0x14, 0x15), "tx": (0x16, 0x17), "sg": (0x18, 0x19),
    "tso": (0x1e, 0x1f), "gso": (0x23, 0x24), "gro": (0x2b, 0x2c),
}


def _ethtool(dev, cmd, data=0):
    value = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
    ifreq = struct.pack("=16sQ16x", dev.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    return struct.unpack("=II", value.raw)[1]


def get_offloads_here(dev):
    return dict((name, bool(_ethtool(dev, get))) for name, (get, _s) in OFFLOADS.items())


def set_offloads_here(dev, **wanted):
    for name, on in wanted.items():
        if on is not None:
            _ethtool(dev, OFFLOADS[name][1], 1 if on else 0)
    return get_offloads_here(dev)


def set_offloads(netns, dev, **wanted):
    """Set offloads (tx=False, tso=False, ...) of dev inside netns; returns the new state."""
    args = []
    for name, on in wanted.items():
        if name not in OFFLOADS:
            raise ValueError("unknown offload %s" % name)
        if on is not None:
            args += ["--" + name, "on" if on else "off"]
    out = sh([sys.executable, NETFAULT, "offload", "--device", dev, "--json"] + args, netns)
    return json.loads(out.stdout)


def get_offloads(netns, dev):
    return set_offloads(netns, dev)


class Offloads:
    """Offloads set for the body and restored on exit: Offloads(ns, dev, tx=False, tso=False).
    Turning tx checksum off also turns off what depends on it (sg/tso), as ethtool does."""

    def __init__(self, netns, dev, **wanted):
        self.netns, self.dev, self.wanted = netns, dev, wanted
        self.before = None

    def __enter__(self):
        self.before = get_offloads(self.netns, self.dev)
        self.state = set_offloads(self.netns, self.dev, **self.wanted)
        return self

    def __exit__(self, *exc):
        # Restore in dependency order: checksum and sg before tso/gso.
        order = ("tx", "rx", "sg", "tso", "gso", "gro")
        set_offloads(self.netns, self.dev, **dict((k, self.before[k]) for k in order))
        return False
