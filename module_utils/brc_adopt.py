# -*- coding: utf-8 -*-
"""The host agent's half of adopting connections BRC did not see open.

A pooled client's connections opened before BRC was attached are untracked:
BRC cannot parse a byte stream from the middle of a command. The programs
keep a record of each such connection's sequence numbers (brc_untracked) and
adopt it at a command boundary this agent proves with Redis's own word; the
protocol is bpf/brc_contract.h's, above struct brc_untracked. In order:

  1. the record: the server acked every client byte seen (srv_ack == cli_next);
  2. the server socket (sock_diag): nothing Redis has not read;
  3. CLIENT LIST for the tuple: query buffer and output buffers empty, flags N
     (not blocked, in MULTI, subscribed, tracking, monitoring, a replica or
     paused with work queued), no subscriptions, and the last command was not
     CLIENT REPLY (a SKIP would still be pending);
  4. the socket again: every reply byte Redis wrote has been sent (so the
     record has seen it);
  5. the record again: no client byte moved.

Then Redis has executed every command before cli_next and written every reply
before srv_next, and the ticket carries CLIENT LIST's db, user and protocol and
the socket's MSS and window shift. CLIENT REPLY OFF does not show in CLIENT
LIST: the flow stays unanswered until Redis sends it a reply (BRC_FF_UNPROVEN).

A replica's link to this master (flags S) is adopted given up, as if it had
connected after the attach: steps 1, 2, 3 (query buffer only) and 5 prove its
client side alone. Until then its REPLCONF ACK, each second, is client bytes BRC
cannot parse, which may change who reads what: each moves the auth epoch, and
answers wait for the next users load.

Each connection is frozen for the proof, for up to FREEZE_S: the programs
drop its new client bytes (the client sends them again, as after a loss), so
a busy connection comes to rest and none moves while the proof is read. An
idle one loses nothing. A connection that cannot
be proven is retried with a backoff, so a busy or blocked one is not stalled
over and over.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import logging
import os
import socket
import struct
import time

from ansible.module_utils import brc_contract
from ansible.module_utils.brc_common import BrcError

log = logging.getLogger("brc-agent")

ADOPT_S = 0.05              # records looked at this often...
FREEZE_POLL_S = 0.005       # ...and this often while one is frozen
FREEZE_S = 0.05             # a freeze for the proof (the programs honour BRC_ADOPT_FREEZE_MAX_NS at most)
PROVEN_FREEZE_S = 1.0       # after it, until the segment at the boundary comes (the client's RTO)
RETRY_MIN_S = 1.0           # after a failed freeze or proof, per connection
RETRY_MAX_S = 60.0
RECORDS_MAX = 1024          # records read per round

# sock_diag (linux/inet_diag.h, linux/sock_diag.h)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
INET_DIAG_INFO = 2
TCP_ESTABLISHED = 1
TCPI_OPT_WSCALE = 4
INET_DIAG_NOCOOKIE = 0xffffffff
_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI HH16s16sIII")          # inet_diag_req_v2; ports big endian, packed apart
_MSG_LEN = 72                                       # struct inet_diag_msg
_QUEUES = struct.Struct("=II")                      # idiag_rqueue, idiag_wqueue at offset 56
_TCPI_NOTSENT_END = 148                             # tcpi_notsent_bytes is at 144


def _ip_bytes(text, family):
    if family == socket.AF_INET6 and ":" not in text:
        text = "::ffff:" + text
    return socket.inet_pton(family, text).ljust(16, b"\0")


def sock_state(srv_ip, srv_port, cli_ip, cli_port):
    """The server socket of a connection, as sock_diag reports it: {rqueue, notsent,
    mss, wscale}, or None when there is no such established socket. mss is the
    smaller of the MSS the socket sends with and the one it announced; wscale the
    client's window shift (0 without the option)."""
    families = [socket.AF_INET6] if ":" in srv_ip else [socket.AF_INET, socket.AF_INET6]
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    try:
        for family in families:
            req = _REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, 1 << TCP_ESTABLISHED,
                            0, 0, _ip_bytes(srv_ip, family), _ip_bytes(cli_ip, family), 0,
                            INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
            # the ports are __be16 inside the id: patched in network order
            req = req[:8] + struct.pack("!HH", srv_port, cli_port) + req[12:]
            s.sendto(_NLMSG.pack(_NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req,
                     (0, 0))
            out = _diag_reply(s.recv(65536))
            if out is not None:
                return out
        return None
    finally:
        s.close()


def _diag_reply(data):
    length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data)
    body = data[_NLMSG.size:length]
    if kind == NLMSG_ERROR:
        err = -struct.unpack_from("=i", body)[0]
        if err in (errno.ENOENT, 0):
            return None
        raise OSError(err, "sock_diag: %s" % os.strerror(err))
    if kind != SOCK_DIAG_BY_FAMILY or len(body) < _MSG_LEN or body[1] != TCP_ESTABLISHED:
        return None
    rqueue, _wqueue = _QUEUES.unpack_from(body, 56)
    off = _MSG_LEN
    while off + 4 <= len(body):
        alen, atype = struct.unpack_from("=HH", body, off)
        if alen < 4:
            break
        if atype == INET_DIAG_INFO and alen - 4 >= _TCPI_NOTSENT_END:
            info = body[off + 4:off + alen]
            options, wscales = info[5], info[6]
            snd_mss, = struct.unpack_from("=I", info, 16)
            advmss, = struct.unpack_from("=I", info, 84)
            notsent, = struct.unpack_from("=I", info, 144)
            return {"rqueue": rqueue, "notsent": notsent, "mss": min(snd_mss, advmss),
                    # __u8 tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4 (little endian: snd low)
                    "wscale": (wscales & 0xf) if options & TCPI_OPT_WSCALE else 0}
        off += (alen + 3) & ~3
    return None


def parse_client_list(raw):
    """CLIENT LIST's text as {(addr, laddr): {field: value}} (addresses as Redis
    writes them: a.b.c.d:port, [v6]:port)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    out = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
        if "addr" in fields and "laddr" in fields:
            out[(fields["addr"], fields["laddr"])] = fields
    return out


def peer_text(ip, port):
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


def replica_link(entry):
    """Does CLIENT LIST's @entry say it is a replica's link to this master? Such a
    link is adopted given up, as it would be had it connected after the attach: its
    client side alone needs a command boundary (the master's stream to it is no
    reply and may never rest)."""
    return entry is not None and entry.get("flags") == "S"


def not_at_boundary(entry, user_max):
    """Why CLIENT LIST's @entry is not a connection at rest that BRC can model
    (None: it is)."""
    if entry is None:
        return "not in CLIENT LIST"
    replica = replica_link(entry)
    if entry.get("flags") != "N" and not replica:
        return "flags %s" % entry.get("flags")
    for name in ("qbuf",) if replica else ("qbuf", "obl", "oll", "omem", "sub", "psub", "ssub"):
        if entry.get(name, "0") != "0":
            return "%s=%s" % (name, entry.get(name))
    if entry.get("multi") != "-1":
        return "multi=%s" % entry.get("multi")
    if entry.get("cmd", "").startswith("client|reply"):
        return "CLIENT REPLY last"
    if entry.get("resp") not in ("2", "3"):
        return "resp=%s" % entry.get("resp")
    if not entry.get("db", "").isdigit():
        return "db=%s" % entry.get("db")
    if not 0 < len(entry.get("user", "").encode()) <= user_max:
        return "user name length"
    return None


class Unsettled(BrcError):
    """Redis may not have run every byte BRC saw of a connection it does not track: a
    passing state (retry_soon)."""

    def __init__(self, msg):
        BrcError.__init__(self, msg, retry_soon=True)


def untracked_settled(maps, link):
    """Before the users are loaded again (brc_auth.load calls this after noting the
    epoch, before reading Redis): has Redis run every byte the programs saw of the
    connections they do not track? Such bytes may change who reads what, and BRC
    could not parse them (the programs bumped the epoch for each). For each record
    with client bytes: the server acked them all, its socket has nothing unread and
    CLIENT LIST shows an empty query buffer; a connection whose socket is gone runs
    nothing more. Raises Unsettled naming one that is not settled."""
    c = maps.contract
    rec_struct, key_struct = c.structs["brc_untracked"], c.structs["brc_flow_key"]
    clients = None
    for key in maps.untracked.keys(limit=RECORDS_MAX):
        raw = maps.untracked.lookup(key)
        if not raw:
            continue
        r = rec_struct.from_buffer_copy(raw[:ctypes.sizeof(rec_struct)])
        if not r.flags & c.constants["BRC_UT_F_CLI"]:
            continue
        k = key_struct.from_buffer_copy(key)
        srv_ip, cli_ip = brc_contract.addr_text(tuple(k.srv_addr)), brc_contract.addr_text(tuple(k.cli_addr))
        where = "%s -> %s" % (peer_text(cli_ip, k.cli_port), peer_text(srv_ip, k.srv_port))
        st = sock_state(srv_ip, k.srv_port, cli_ip, k.cli_port)
        if st is None:
            continue
        if r.srv_ack != r.cli_next or st["rqueue"]:
            raise Unsettled("client bytes of %s are not all read by Redis yet" % where)
        if clients is None:
            clients = parse_client_list(link.call(link.cmd, "CLIENT", "LIST"))
        entry = clients.get((peer_text(cli_ip, k.cli_port), peer_text(srv_ip, k.srv_port)))
        if entry is not None and entry.get("qbuf", "0") != "0":
            raise Unsettled("Redis has not run all of %s's commands yet (qbuf=%s)" % (where, entry["qbuf"]))


class Adopter:
    """One agent's adoption rounds on its AgentMaps (@maps) and Redis link (@link)."""

    def __init__(self, maps, link, clock=time.monotonic):
        self.maps, self.link, self.clock = maps, link, clock
        c = maps.contract
        self.rec_struct = c.structs["brc_untracked"]
        self.ticket_struct = c.structs["brc_adopt"]
        self.key_struct = c.structs["brc_flow_key"]
        self.both = c.constants["BRC_UT_F_CLI"] | c.constants["BRC_UT_F_SRV"]
        self.user_max = c.constants["BRC_USER_MAX"]
        self.freeze_ns = min(int(FREEZE_S * 1e9), c.constants["BRC_ADOPT_FREEZE_MAX_NS"])
        self.proven_freeze_ns = min(int(PROVEN_FREEZE_S * 1e9), c.constants["BRC_ADOPT_FREEZE_MAX_NS"])
        self.frozen = {}        # key -> freeze deadline (monotonic s)
        self.retry = {}         # key -> (not before, backoff s)
        self.pending = {}       # key -> (cli_next, srv_next) of its proven ticket
        self.proven = 0
        self.failed = {}        # reason -> count (log)

    def _record(self, key):
        raw = self.maps.untracked.lookup(key)
        return raw and self.rec_struct.from_buffer_copy(raw[:ctypes.sizeof(self.rec_struct)])

    def _tuple(self, key):
        k = self.key_struct.from_buffer_copy(key)
        return (brc_contract.addr_text(tuple(k.srv_addr)), k.srv_port,
                brc_contract.addr_text(tuple(k.cli_addr)), k.cli_port)

    def _ticket(self, key, **fields):
        t = self.ticket_struct()
        for name, value in fields.items():
            if name == "user":
                ctypes.memmove(t.user, value, len(value))
                t.user_len = len(value)
            else:
                setattr(t, name, value)
        self.maps.adopt.update(key, ctypes.string_at(ctypes.addressof(t), ctypes.sizeof(t)))

    def _fail(self, key, why):
        now = self.clock()
        _until, backoff = self.retry.get(key, (0, RETRY_MIN_S / 2))
        backoff = min(backoff * 2, RETRY_MAX_S)
        self.retry[key] = (now + backoff, backoff)
        self.failed[why.split(" ")[0]] = self.failed.get(why.split(" ")[0], 0) + 1
        if key in self.frozen:
            del self.frozen[key]
            self.maps.adopt.delete(key)

    def step(self):
        """One round: freeze what may be adopted, prove what rests in its freeze.
        Returns when to call again (seconds). A sock_diag failure ends the round
        (a freeze lapses by itself): adoption is an optimisation, the feed is not."""
        try:
            return self._round()
        except OSError as e:
            log.warning("adoption round failed: %s", e)
            return ADOPT_S

    def _round(self):
        now = self.clock()
        for key, until in list(self.frozen.items()):
            if now >= until:
                self._fail(key, "no rest during the freeze")
        keys = self.maps.untracked.keys(limit=RECORDS_MAX)
        live = set(keys)
        for key in [k for k in list(self.retry) + list(self.pending) if k not in live]:
            self.retry.pop(key, None)
            if self.pending.pop(key, None) is not None:
                self.maps.adopt.delete(key)     # its connection closed, or the record was evicted
        resting = {}
        for key in keys:
            if self.retry.get(key, (0, 0))[0] > now:
                continue
            r = self._record(key)
            if not r or (r.flags & self.both) != self.both:
                continue
            proven = self.pending.get(key)
            if proven and proven[0] == r.cli_next and proven[1] in (None, r.srv_next):
                continue                        # proven, its next segment not sent yet
            if key not in self.frozen:
                self._ticket(key, freeze_until_ns=time.monotonic_ns() + self.freeze_ns)
                self.frozen[key] = now + self.freeze_ns / 1e9
            elif r.srv_ack == r.cli_next:
                resting[key] = r
        if resting:
            self._prove(resting)
        return FREEZE_POLL_S if self.frozen else ADOPT_S

    def _prove(self, first):
        socks = {}
        for key in first:
            srv_ip, srv_port, cli_ip, cli_port = self._tuple(key)
            st = sock_state(srv_ip, srv_port, cli_ip, cli_port)
            if st is None or st["rqueue"]:
                self._fail(key, "socket unread" if st else "no socket")
                continue
            socks[key] = st
        if not socks:
            return
        clients = parse_client_list(self.link.call(self.link.cmd, "CLIENT", "LIST"))
        for key, st in socks.items():
            srv_ip, srv_port, cli_ip, cli_port = self._tuple(key)
            entry = clients.get((peer_text(cli_ip, cli_port), peer_text(srv_ip, srv_port)))
            why = not_at_boundary(entry, self.user_max)
            if why:
                self._fail(key, why)
                continue
            replica = replica_link(entry)
            after = sock_state(srv_ip, srv_port, cli_ip, cli_port)
            r0, r1 = first[key], self._record(key)
            if after is None or (after["notsent"] and not replica) or after["rqueue"]:
                self._fail(key, "socket busy")
                continue
            if not r1 or r1.cli_next != r0.cli_next or r1.srv_ack != r0.srv_ack:
                self._fail(key, "moved")
                continue
            user = entry["user"].encode()
            # still frozen past the boundary until the segment that starts there comes
            self._ticket(key, proven=1, freeze_until_ns=time.monotonic_ns() + self.proven_freeze_ns,
                         cli_next=r1.cli_next, srv_next=r1.srv_next, db=int(entry["db"]),
                         proto=int(entry["resp"]), mss=min(after["mss"], 0xffff), cli_wscale=after["wscale"],
                         authed=int(user != b"default"), user=user, replica=int(replica))
            self.frozen.pop(key, None)
            self.retry.pop(key, None)
            self.pending[key] = (r1.cli_next, None if replica else r1.srv_next)
            self.proven += 1
            log.info("adoption proven for %s:%d -> %s:%d (db %s, user %s, resp %s%s)", cli_ip, cli_port,
                     srv_ip, srv_port, entry["db"], entry["user"], entry["resp"],
                     ", a replica's link: given up" if replica else "")
