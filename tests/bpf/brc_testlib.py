"""Test support for the BRC programs on a real kernel: a build with its maps,
BPF_PROG_TEST_RUN through bpf(2), a small Ethernet/IPv4/TCP packet builder, and
simulated TCP connections that drive brc_ingress / brc_egress segment by segment.

No mocks: every packet runs through the loaded programs; assertions read the
programs' own maps.
"""
import ctypes
import os
import socket
import struct

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "bpf")

# Imported the way Ansible modules see them (tests/conftest.py extends that package path);
# putting module_utils/ itself on sys.path would shadow library/ modules of the same name.
from ansible.module_utils import brc_compile, brc_contract  # noqa: E402
from ansible.module_utils.brc_commands import LATENCY_NAMES  # noqa: E402
from tools.bpf_run import prog_test_run  # noqa: E402,F401  (re-exported for tests/serve)
from tools.checker import encode as resp  # noqa: E402  (a RESP array of bulk strings)
from serve_blocks.packets import csum16  # noqa: E402

CONTRACT = brc_contract.load_contract(BPF_DIR)
TC_ACT_OK = 0
KEYVER_BUCKETS = 65536   # brc_maps.h's default; tests build without overriding it
REDIS_PORT = 6379


# ---- packets ---------------------------------------------------------------

def _csum(data):
    """The Internet checksum of data (complemented), by the serve blocks' RFC 1071 sum."""
    return ~csum16(data) & 0xFFFF


def tcp_options(timestamps=True, mss=False, sack_perm=False):
    opts = b""
    if mss:
        opts += struct.pack("!BBH", 2, 4, 1460)
    if sack_perm:
        opts += b"\x04\x02"
    if timestamps:
        opts += b"\x01\x01" + struct.pack("!BBII", 8, 10, 123456, 654321)
    while len(opts) % 4:
        opts += b"\x01"
    return opts


def ipv4_tcp(src, dst, sport, dport, seq, ack, flags, payload=b"", opts=b"",
             ip_opts=b"", frag=0, mac_src=b"\x02\0\0\0\0\x01", mac_dst=b"\x02\0\0\0\0\x02", window=65535):
    """An Ethernet frame with IPv4 + TCP. flags: a string of F S R P A."""
    bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
    fl = sum(bits[c] for c in flags)
    doff = (20 + len(opts)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      doff << 4, fl, window, 0, 0) + opts
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    cs = _csum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", cs) + tcp[18:]
    ihl = (20 + len(ip_opts)) // 4
    tot = ihl * 4 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, 1, frag, 64, 6, 0, saddr, daddr) + ip_opts
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return mac_dst + mac_src + b"\x08\x00" + ip + tcp + payload


def ipv6_tcp(sport, dport, payload=b"", hop_by_hop=False):
    """An IPv6 TCP frame ::1 -> ::2; @hop_by_hop: behind a hop-by-hop options header
    (PadN), which BRC does not parse."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    ext = b"\x06\x00\x01\x04\x00\x00\x00\x00" if hop_by_hop else b""
    ip6 = struct.pack("!IHBB", 6 << 28, len(ext) + len(tcp) + len(payload), 0 if hop_by_hop else 6, 64) \
        + b"\0" * 15 + b"\1" + b"\0" * 15 + b"\2"
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x86\xdd" + ip6 + ext + tcp + payload


def bulk(v):
    if v is None:
        return b"$-1\r\n"
    v = v if isinstance(v, bytes) else v.encode()
    return b"$%d\r\n%s\r\n" % (len(v), v)


# ---- the kernel side -------------------------------------------------------

class Brc:
    """One loaded build plus helpers to configure it and read its maps."""

    def __init__(self, build):
        self.build = build
        self.bpf = build.bpf
        self.conns = []
        self.configure()

    def close_all(self):
        """RST every connection a test opened: releases their in-flight marks."""
        for c in self.conns:
            if self.flow(c) is not None:
                c.reset()
        self.conns = []

    def configure(self, port=REDIS_PORT, mode="observe", max_key_len=64, max_value_len=2048,
                  max_age_ns=0, verify_sample=0):
        t = self.bpf[b"brc_config"]
        v = t.Leaf()
        v.port, v.mode = port, CONTRACT.modes[mode]
        v.max_key_len, v.max_value_len = max_key_len, max_value_len
        v.max_age_ns, v.verify_sample = max_age_ns, verify_sample
        t[ctypes.c_uint32(0)] = v

    def load_users(self, users=None, idle_pass_ns=0):
        """What the toolkit's loader writes after reading Redis (module_utils/brc_auth.py
        does it from a real Redis): brc_users = {name: flags}, brc_server's epoch =
        brc_global's. Default: the default user, open and allowed every key."""
        if users is None:
            users = {"default": CONTRACT.constants["BRC_USER_READ_ALL"] | CONTRACT.constants["BRC_USER_OPEN"]}
        t = self.bpf[b"brc_users"]
        t.clear()
        for name, flags in users.items():
            k = t.Key()
            raw = name.encode() if isinstance(name, str) else name
            k.len = len(raw)
            for i, ch in enumerate(raw[:CONTRACT.constants["BRC_USER_MAX"]]):
                k.name[i] = ch
            v = t.Leaf()
            v.flags = flags
            t[k] = v
        s = self.bpf[b"brc_server"]
        v = s.Leaf()
        v.auth_epoch = self.bpf[b"brc_global"][ctypes.c_uint32(0)].auth_epoch
        v.idle_pass_ns = idle_pass_ns
        s[ctypes.c_uint32(0)] = v

    def ingress(self, frame):
        rv, out, _ = prog_test_run(self.build.programs["ingress"], frame)
        assert rv == TC_ACT_OK
        assert out == frame, "observe mode must never alter a packet"
        return rv

    def egress(self, frame):
        rv, out, _ = prog_test_run(self.build.programs["egress"], frame)
        assert rv == TC_ACT_OK
        assert out == frame, "observe mode must never alter a packet"
        return rv

    def stats(self):
        t = self.bpf[b"brc_stats"]
        out = {}
        for slot, name, _doc in CONTRACT.counter_slots:
            out[name] = sum(t[ctypes.c_uint32(slot)])
        return out

    def latency(self):
        """{command: {slot: count}} of non-empty slots."""
        t = self.bpf[b"brc_latency"]
        slots = CONTRACT.latency_slots
        out = {}
        for ci, cls in enumerate(LATENCY_NAMES):
            for s in range(slots):
                n = sum(t[ctypes.c_uint32(ci * slots + s)])
                if n:
                    out.setdefault(cls, {})[s] = n
        return out

    def refresh_auth(self, netns, host, port):
        """Load the users and rights of the Redis at host:port in @netns with the
        toolkit's own loader (module_utils/brc_auth.py), as brc_auth does on a host."""
        from ansible.module_utils import brc_auth
        from pyroute2.netns import popns, pushns
        maps = brc_auth.BccAuthMaps(self.bpf, CONTRACT)
        pushns(netns)
        try:
            return brc_auth.load(maps, CONTRACT, lambda: brc_auth.read_state(CONTRACT, host=host, port=port))
        finally:
            popns()

    def set_agent(self, on=True, beat_ns=None):
        """What the host agent writes in brc_agent: in charge (@on) with a heartbeat at
        @beat_ns (CLOCK_MONOTONIC, now when None); off = no agent (the programs alone)."""
        import time
        t = self.bpf[b"brc_agent"]
        v = t.Leaf()
        v.flags = CONTRACT.constants["BRC_AGENT_F_ON"] if on else 0
        v.beat_ns = time.monotonic_ns() if beat_ns is None else beat_ns
        t[ctypes.c_uint32(0)] = v

    def feed(self, keys=(), flush=False):
        """What the host agent does with Redis's invalidations: run brc_feed on the key
        buckets (and a flush). Returns the program's value (buckets bumped)."""
        n = len(keys)
        assert n <= CONTRACT.constants["BRC_FEED_BATCH"]
        batch = struct.pack("<II", n, CONTRACT.constants["BRC_FEED_F_FLUSH"] if flush else 0)
        batch += b"".join(struct.pack("<I", bucket_of(k)) for k in keys)
        rv, _out, _ns = prog_test_run(self.build.helpers["feed"], b"\0" * 14 + batch)
        return rv

    def _cache_key(self, t, key, server):
        k = t.Key()
        key = key if isinstance(key, bytes) else key.encode()
        k.srv_addr[:] = brc_contract.addr_words(server)
        k.len = len(key)
        for i, ch in enumerate(key):
            k.key[i] = ch
        return k

    def set_expiry(self, key, expire_ns, server="10.66.1.2", stale=False, torn=False, other_key=None):
        """What the host agent writes in brc_expiry after asking Redis PEXPIRETIME: @key's
        deadline (CLOCK_MONOTONIC; BRC_EXPIRY_NEVER) at the versions the kernel holds
        now (@stale: one behind). @torn and @other_key make a copy the kernel must
        refuse: write_id's two ends differ, or the record is another key's."""
        t = self.bpf[b"brc_expiry"]
        k = self._cache_key(t, key, server)
        own = self._cache_key(t, other_key or key, server)
        v = t.Leaf()
        v.write_id = 0x1234
        v.write_id_end = 0x4321 if torn else 0x1234
        v.ver = self.bpf[b"brc_keyver"][ctypes.c_uint32(bucket_of(key))].ver - (1 if stale else 0)
        v.gver = self.global_state()["ver"]
        v.expire_ns = expire_ns
        v.srv_addr[:], v.key_len = own.srv_addr, own.len
        ctypes.memmove(v.key, own.key, ctypes.sizeof(v.key))
        t[k] = v

    def expiry_wanted(self):
        """The keys in brc_expiry_wanted, as bytes."""
        return sorted(bytes(k.key[:k.len]) for k in self.bpf[b"brc_expiry_wanted"].keys())

    def clear_holds(self, *keys):
        """End the holds that refuse fills for a while (untracked traffic's lease, a
        client RST with writes unanswered): host-wide, the auth state's, and the
        version buckets of @keys."""
        t = self.bpf[b"brc_global"]
        g = t[ctypes.c_uint32(0)]
        g.hold_until_ns = 0
        g.auth_hold_until_ns = 0
        t[ctypes.c_uint32(0)] = g
        kv = self.bpf[b"brc_keyver"]
        for key in keys:
            idx = ctypes.c_uint32(bucket_of(key))
            b = kv[idx]
            b.hold_until_ns = 0
            kv[idx] = b

    def global_state(self):
        g = self.bpf[b"brc_global"][ctypes.c_uint32(0)]
        return {"ver": g.ver, "inflight": g.inflight, "auth_epoch": g.auth_epoch,
                "auth_inflight": g.auth_inflight, "hold_until_ns": g.hold_until_ns}

    def flow(self, conn):
        """The connection's flow: live (brc_flows), else half-open or closed served
        (brc_transient), else None."""
        for name in (b"brc_flows", b"brc_transient"):
            t = self.bpf[name]
            try:
                return t[conn.flow_key(t)]
            except KeyError:
                pass
        return None

    def flows(self):
        return list(self.bpf[b"brc_flows"].items())

    def cache_get(self, key, server="10.66.1.2"):
        t = self.bpf[b"brc_cache"]
        k = self._cache_key(t, key, server)
        try:
            e = t[k]
        except KeyError:
            return None
        return bytes(e.reply[:e.len])


def bucket_of(key):
    """The version bucket of @key in this build's brc_keyver (the default
    BRC_KEYVER_BUCKETS of bpf/brc_maps.h): the contract's hash, defined once."""
    return CONTRACT.bucket_of(key, KEYVER_BUCKETS)


def filled(brc, c, key, val="v"):
    """GET @key on connection @c with Redis answering @val: the cache holds it after."""
    c.roundtrip(resp("GET", key), bulk(val))
    assert brc.cache_get(key) == bulk(val), key


def filled_conn(brc, port, key):
    """A new connection to @port (handshake done) on which @key was filled."""
    c = Conn(brc, port).handshake()
    filled(brc, c, key)
    return c


def counted_get(brc, c, key, val="v"):
    """GET @key on connection @c with Redis answering @val; the counters it moved (a Delta)."""
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk(val))
    return d


def answerable(brc, c, key, val="v"):
    """Would serve answer @c's GET of @key now (a verified would-hit)?"""
    return counted_get(brc, c, key, val)["would_hit"] == 1


def pending(flow):
    """Commands passed to Redis and not answered yet."""
    return (flow.sent - flow.replied) & 0xFFFFFFFF


def marks(flow):
    """Write-in-flight marks the flow holds: key buckets, plus 1 for a global mark."""
    return sum(1 for m in flow.marks if m) + (1 if flow.gmark else 0)


def dirty_reasons(flow):
    """Names of the dirty bits set on @flow, e.g. ['pubsub']."""
    return [r for i, r in enumerate(CONTRACT.dirty_reasons) if flow.dirty >> i & 1]


def user(flow):
    """The flow's user as BRC holds it, and whether Redis authenticated it."""
    return bytes(flow.user[:min(flow.user_len, len(flow.user))]), bool(flow.flags & CONTRACT.constants["BRC_FF_AUTHED"])


class Delta:
    """Counter changes across a with-block: `with Delta(brc) as d: ...; d["fill"]`."""

    def __init__(self, brc):
        self.brc = brc

    def __enter__(self):
        self.before = self.brc.stats()
        return self

    def __exit__(self, *exc):
        self.after = self.brc.stats()

    def __getitem__(self, name):
        if name not in self.before:
            raise KeyError("no counter %r" % name)
        return self.after[name] - self.before[name]

    def nonzero(self):
        return {k: self.after[k] - self.before[k] for k in self.before if self.after[k] != self.before[k]}


class Conn:
    """A simulated TCP connection client:cport -> server:6379 through the programs."""

    def __init__(self, brc, cport, cisn=1000, sisn=5000, client="10.66.1.1", server="10.66.1.2",
                 sport=REDIS_PORT, timestamps=True):
        self.brc, self.cport, self.sport = brc, cport, sport
        self.client, self.server = client, server
        self.cisn, self.sisn = cisn, sisn
        self.cseq, self.sseq = cisn, sisn
        self.opts = tcp_options(timestamps=timestamps)
        brc.conns.append(self)

    def flow_key(self, table):
        k = table.Key()
        k.cli_addr[:] = brc_contract.addr_words(self.client)
        k.srv_addr[:] = brc_contract.addr_words(self.server)
        k.cli_port, k.srv_port = self.cport, self.sport
        return k

    def c2s(self, flags, payload=b"", seq=None):
        s = self.cseq if seq is None else seq
        return ipv4_tcp(self.client, self.server, self.cport, self.sport, s, self.sseq,
                        flags, payload, self.opts)

    def s2c(self, flags, payload=b"", seq=None):
        s = self.sseq if seq is None else seq
        return ipv4_tcp(self.server, self.client, self.sport, self.cport, s, self.cseq,
                        flags, payload, self.opts)

    def handshake(self):
        self.brc.ingress(ipv4_tcp(self.client, self.server, self.cport, self.sport, self.cisn, 0,
                                  "S", b"", tcp_options(mss=True, sack_perm=True)))
        self.cseq = self.cisn + 1
        self.brc.egress(ipv4_tcp(self.server, self.client, self.sport, self.cport, self.sisn,
                                 self.cseq, "SA", b"", tcp_options(mss=True, sack_perm=True)))
        self.sseq = self.sisn + 1
        self.brc.ingress(self.c2s("A"))
        return self

    def send(self, data, cuts=()):
        """Client -> server: @data in segments cut at the offsets in @cuts."""
        for part in _split(data, cuts):
            self.brc.ingress(self.c2s("PA", part))
            self.cseq = (self.cseq + len(part)) & 0xFFFFFFFF

    def reply(self, data, cuts=()):
        for part in _split(data, cuts):
            self.brc.egress(self.s2c("PA", part))
            self.sseq = (self.sseq + len(part)) & 0xFFFFFFFF

    def roundtrip(self, cmd, rep):
        self.send(cmd)
        self.reply(rep)

    def close(self):
        self.brc.ingress(self.c2s("FA"))
        self.cseq = (self.cseq + 1) & 0xFFFFFFFF
        self.brc.egress(self.s2c("FA"))
        self.sseq = (self.sseq + 1) & 0xFFFFFFFF

    def reset(self):
        self.brc.ingress(self.c2s("R"))


MSS = 1400     # BPF_PROG_TEST_RUN takes frames up to about a page


def _split(data, cuts):
    cuts = set(c for c in cuts if 0 < c < len(data))
    cuts = sorted(cuts)
    # never hand the kernel a frame larger than an MSS
    extra, prev = [], 0
    for c in cuts + [len(data)]:
        while c - prev > MSS:
            prev += MSS
            extra.append(prev)
        prev = c
    cuts = sorted(set(cuts) | set(extra))
    prev, out = 0, []
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return [p for p in out if p]
