#!/usr/bin/env python3
"""Differential fuzzer for BRC serve mode: random Redis traffic through BRC, checked
against what Redis itself executed.

BRC may answer a GET only while its model of the connection and of the server is
provably Redis's ("fail closed"). This fuzzer drives several client connections with
seeded random command streams through the BRC-attached interface and proves every
reply against an oracle that BRC cannot influence:

  history   a connection over loopback inside the server namespace (BRC is attached
            only on the veth, so it never sees it) runs MONITOR for the whole run:
            every command Redis executed, in Redis's order, with Redis's timestamps
            (the same clock as time.time() here).
  model     from that history (plus the TTLs the commands carry) the fuzzer rebuilds,
            per (db, key), the values Redis held and when. Every write stores a value
            never written before ("<run><conn>.<n>"), so a value names its write.
  checks    - a GET that Redis executed (it is in MONITOR) must have got exactly the
              value the model holds at that point of the history;
            - a GET that Redis never saw (answered in the kernel) must have got a value
              the key held, in the connection's db, at some instant between the GET's
              send and its reply, and only if the connection's user may read the key
              (else Redis's NOPERM/NOAUTH is the only right answer);
            - every command gets exactly the replies Redis gives: no stall, no missing,
              extra or foreign reply; writes' replies equal the model's prediction;
            - Redis executes nothing the clients did not send;
            - in verify mode (verify_sample=1) BRC's `mismatch` counter stays 0.

Each connection keeps its own protocol state (RESP2 or RESP3 as Redis's answer to HELLO
and RESET put it, db, user, subscribed channels, CLIENT REPLY, MULTI, blocking commands)
so it knows how many replies to read, in which protocol's form, and what they mean; a
reply in the other protocol's form (RESP2's nil on a RESP3 connection...) is a violation
("wrong_protocol"), a RESP3 push is never a reply; every read has a timeout and a
missing reply is a violation ("stall").
The run is cut into epochs: workers pause between operations, the MONITOR stream is
synchronised with a marker and checked, then traffic resumes (bounded memory).

Known blind spots: see tests/tools/FUZZ.md.

Usage (root; builds its own namespace pair brcfz<pid>-client/-server, 10.74.0.0/24):
  fuzz.py --seconds 600 --seed 7                 # run A (verify) then run B (serve), 300 s each
  fuzz.py --seconds 60 --seed 7 --verify-sample 0 --json
  fuzz.py --mode off --seconds 20                # oracle self-check: BRC attached, mode off
Exit status 0 when clean (and the kernel answered enough GETs in run B), 1 otherwise.

Library: run(lab, seconds, seed, connections, verify_sample) with a tests/serve ServeLab.
"""

import argparse
import bisect
import json
import os
import random
import re
import select
import socket
import struct
import sys
import threading
import time
from collections import Counter, defaultdict

from checker import encode

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PORT = 6379

INF = float("inf")
REPLY_TIMEOUT = 5.0          # seconds without an expected reply: a stall
# Redis 7.0 checks expiry inside a command against its cached clock (server.mstime,
# refreshed once per event loop iteration), so a key outlives its deadline by up to
# an iteration: 5.7 ms seen under the fuzzer's load. Values this close to a deadline
# are taken as ambiguous either way (BRC never caches a key with a TTL, so a stale
# answer it gave would be far outside this).
EXPIRY_SLOP = 0.1
WINDOW_SLOP = 0.0005         # widening of a GET's [send, reply] window
MAX_REPORTED = 25            # violations reported in full per run
HISTORY = 12                 # commands of the connection shown with a violation
USERS = {"fzadmin": b"fz-admin-pw", "fzguest": b"fz-guest-pw", "fzro": b"fz-ro-pw"}
DEFAULT_PW = b"fz-default-pw"

# ------------------------------------------------------------------------ RESP


class Simple(str):
    """A +status reply."""


class Err(str):
    """A -error reply."""


class BlobErr(Err):
    """RESP3: a !blob error (an error all the same)."""


class Double(float):
    """RESP3: a ,double."""


class Big(str):
    """RESP3: a (big number, kept as its digits."""


class Bool:
    """RESP3: a #t / #f boolean (not an integer: Redis never answers one for a count)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = bool(value)

    def __eq__(self, other):
        return isinstance(other, Bool) and other.value == self.value

    def __hash__(self):
        return hash(("bool", self.value))

    def __bool__(self):
        return self.value

    def __repr__(self):
        return "#t" if self.value else "#f"


class Verbatim:
    """RESP3: a =verbatim string (format, data)."""
    __slots__ = ("format", "data")

    def __init__(self, fmt, data):
        self.format, self.data = fmt, data

    def __eq__(self, other):
        return isinstance(other, Verbatim) and (other.format, other.data) == (self.format, self.data)

    def __hash__(self):
        return hash((self.format, self.data))

    def __repr__(self):
        return "=%s:%r" % (self.format.decode("latin-1"), self.data[:40])


class Map(dict):
    """RESP3: a %map (aggregate keys are frozen to tuples)."""


class Set3(list):
    """RESP3: a ~set, in the order Redis sent it."""


class Push(list):
    """RESP3: a >push (a pub/sub message, an invalidation, a (un)subscribe
    confirmation): never a command's reply."""


NOREPLY = object()           # the command's reply was suppressed (CLIENT REPLY)
UNKNOWN = object()           # the model cannot predict this reply
RESP3_TYPES = frozenset(b"_,#(!=%~|>")


class Stall(Exception):
    pass


class Closed(Exception):
    pass


class Incomplete(Exception):
    pass


class Forms:
    """What one parse() met on the way, for the protocol check: RESP2's nils ($-1,
    *-1), RESP3's type bytes, and the attributes with the value each describes."""
    __slots__ = ("nil2", "types3", "attrs", "inner_pushes")

    def __init__(self):
        self.nil2, self.types3, self.attrs = 0, set(), []
        self.inner_pushes = []       # pushes met inside an aggregate (not its elements)


def _freeze(v):
    """A map's key, hashable (RESP3 allows an aggregate as a key)."""
    if isinstance(v, dict):
        return tuple((k, _freeze(x)) for k, x in v.items())
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


def _length(kind, line, nil_kind, forms):
    """The length after kind; None for RESP2's nil, -1 after nil_kind only (counted in forms)."""
    n = int(line)
    if n >= 0:
        return n
    if kind != nil_kind:
        raise ValueError("negative length after %r" % kind)
    if forms is not None:
        forms.nil2 += 1
    return None


def parse(buf, pos, forms=None):
    """One reply from buf[pos:], RESP2 or RESP3; returns (value, new pos) or raises
    Incomplete. RESP2: +Simple -Err :int $bytes/None *list/None. RESP3 adds _ None,
    ,Double #Bool (Big !BlobErr =Verbatim %Map ~Set3 >Push, and |attributes, which
    are no value: the value that follows is returned (the attribute map goes to
    forms.attrs with it). @forms (a Forms) collects what tells the protocols apart."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete()
    kind, line = bytes(buf[pos:pos + 1]), bytes(buf[pos + 1:end])
    pos = end + 2
    if forms is not None and kind and kind[0] in RESP3_TYPES:
        forms.types3.add(kind.decode("latin-1"))
    if kind == b"+":
        return Simple(line.decode("latin-1")), pos
    if kind == b"-":
        return Err(line.decode("latin-1")), pos
    if kind == b":":
        return int(line), pos
    if kind in (b"$", b"!", b"="):
        n = _length(kind, line, b"$", forms)
        if n is None:
            return None, pos
        if len(buf) < pos + n + 2:
            raise Incomplete()
        if buf[pos + n:pos + n + 2] != b"\r\n":
            raise ValueError("bulk string not terminated by CRLF")
        data = bytes(buf[pos:pos + n])
        pos += n + 2
        if kind == b"!":
            return BlobErr(data.decode("latin-1")), pos
        if kind == b"=":
            if len(data) < 4 or data[3:4] != b":":
                raise ValueError("verbatim string without a format: %r" % data[:20])
            return Verbatim(data[:3], data[4:]), pos
        return data, pos
    if kind in (b"*", b"~", b">", b"%", b"|"):
        n = _length(kind, line, b"*", forms)
        if n is None:
            return None, pos
        items = []
        while len(items) < (n * 2 if kind in (b"%", b"|") else n):
            v, pos = parse(buf, pos, forms)
            if type(v) is Push:
                # Redis 7.0 writes an invalidation push inside EXEC's array when a
                # queued write invalidates a key the connection tracks (7.2 sends it
                # after the reply): no element of the aggregate
                if forms is not None:
                    forms.inner_pushes.append(v)
                continue
            items.append(v)
        if kind == b"|":
            attrs = Map((_freeze(items[i]), items[i + 1]) for i in range(0, len(items), 2))
            v, pos = parse(buf, pos, forms)
            if forms is not None:
                forms.attrs.append((attrs, v))
            return v, pos
        if kind == b"%":
            return Map((_freeze(items[i]), items[i + 1]) for i in range(0, len(items), 2)), pos
        return {b"*": list, b"~": Set3, b">": Push}[kind](items), pos
    if kind == b"_":
        if line:
            raise ValueError("null with a payload %r" % line)
        return None, pos
    if kind == b",":
        return Double(line.decode("latin-1")), pos
    if kind == b"#":
        if line not in (b"t", b"f"):
            raise ValueError("boolean %r" % line)
        return Bool(line == b"t"), pos
    if kind == b"(":
        if not re.match(rb"^-?[0-9]+$", line):
            raise ValueError("big number %r" % line)
        return Big(line.decode("latin-1")), pos
    raise ValueError("not a RESP reply: %r" % bytes(buf[pos - len(line) - 3:pos + 20]))


def short(v, n=60):
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v)
        return repr(v if len(v) <= n else v[:n] + b"...")
    if isinstance(v, Map):
        items = list(v.items())
        return "%{" + ", ".join("%s: %s" % (short(k, 24), short(x, 24)) for k, x in items[:6]) + (
            ", ...}" if len(items) > 6 else "}")
    if isinstance(v, list):
        return {Push: ">", Set3: "~"}.get(type(v), "") + "[" + ", ".join(
            short(x, 24) for x in v[:6]) + (", ...]" if len(v) > 6 else "]")
    if v is NOREPLY:
        return "(no reply)"
    return repr(v)


def is_push(v):
    """A pub/sub message (RESP2): never the reply to a command."""
    return (isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], bytes)
            and v[0] in (b"message", b"pmessage", b"smessage"))


SUB_CONFIRMS = (b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe")
MESSAGES = (b"message", b"pmessage", b"smessage")
TRACKING_PUSHES = (b"invalidate", b"tracking-redir-broken")


# ------------------------------------------------------------------------ records


class Cmd:
    """One command as sent: argv (as Redis parses it), times, reply, connection state."""
    __slots__ = ("inc", "argv", "name", "wire", "t_send", "t_reply", "reply", "db", "user",
                 "cauth", "subscribed", "queued", "noreply", "tracking", "how", "line",
                 "expect_err", "expect", "answered", "proto")

    def __init__(self, inc, argv, wire=None, how="resp"):
        self.inc = inc
        self.argv = [a if isinstance(a, bytes) else str(a).encode() for a in argv]
        self.name = self.argv[0].upper() if self.argv else b""
        self.wire = wire if wire is not None else encode(*self.argv)
        self.t_send = self.t_reply = None
        self.reply = None
        self.db, self.user, self.cauth = inc.db, inc.user, inc.cauth
        self.subscribed = bool(inc.channels or inc.patterns)
        self.queued = False          # sent inside MULTI: its reply is EXEC's element
        self.noreply = False         # CLIENT REPLY OFF/SKIP: no reply expected
        self.tracking = inc.tracking
        self.how = how               # resp, inline, split, pipelined, ...
        self.line = None             # the MONITOR line it was matched to
        self.expect_err = False      # Redis refuses it before executing (known here)
        self.expect = None           # the exact reply(s) Redis gives, when known here
        self.answered = False        # a reply (or EXEC's element) was received
        self.proto = inc.proto       # the protocol its reply came in (set when read)

    def brief(self):
        return {"argv": " ".join(short(a, 40) for a in self.argv[:6]) + (
            " ..." if len(self.argv) > 6 else ""), "how": self.how, "db": self.db,
            "user": self.user, "t_send": self.t_send, "t_reply": self.t_reply,
            "reply": short(self.reply) if not self.noreply else "(suppressed)",
            "resp": self.proto,
            "redis_executed": None if self.line is None else True}


class Incarnation:
    """One TCP connection's life: its address as Redis prints it, its commands."""
    _ids = iter(range(1, 1 << 40))

    def __init__(self, worker):
        self.id = next(Incarnation._ids)
        self.worker = worker
        self.addr = None
        self.t_open = time.time()
        self.t_close = None
        self.close_kind = None
        self.cmds = []
        self.done = 0                # cmds already checked by an epoch
        self.db, self.user, self.cauth = 0, "default", None
        self.channels, self.patterns = set(), set()
        self.tracking = False
        self.proto = 2               # RESP2 until Redis answers a HELLO 3 with its map
        self.ever3 = False           # was RESP3 at some point
        # a HELLO 2 whose reply was suppressed (CLIENT REPLY OFF) left RESP3: pushes
        # bypass CLIENT REPLY, so ones Redis sent before it ran may still be unread,
        # until the next reply read (which Redis wrote after them)
        self.pushes3_unread = False
        self.pushes_tracking = False  # may get invalidation pushes (tracking, a sink)
        self.sink_id = None          # its CLIENT ID, while other connections may REDIRECT here
        self.pushes = 0              # RESP3 pushes set aside so far
        self.late = set()            # argv of commands sent but never answered (RST...)


# ------------------------------------------------------------------------ timelines


class Timeline:
    """A state changed only by this fuzzer, one change at a time (under a lock):
    each change is in force from its send at the latest, the old state until its reply
    at the latest. possible(a, b): the states that may have held at some instant."""

    def __init__(self, initial):
        self.changes = [(-INF, -INF, initial)]
        self.lock = threading.Lock()

    def begin(self, t0, state):
        """A change is on the wire from t0: until it is answered, both states hold."""
        with self.lock:
            self.changes.append((t0, INF, state))
            return len(self.changes) - 1

    def finish(self, i, t1, done):
        """Answered at t1; done False (refused) makes it no change at all."""
        with self.lock:
            t0, _t1, st = self.changes[i]
            self.changes[i] = (t0, t1, st if done else self.changes[i - 1][2])

    def current(self):
        return self.changes[-1][2]

    def possible(self, a, b):
        with self.lock:
            ch = list(self.changes)
        out = set()
        for i, (t0, _t1, st) in enumerate(ch):
            end = ch[i + 1][1] if i + 1 < len(ch) else INF
            if t0 <= b and end >= a:
                out.add(st)
        return out


# ------------------------------------------------------------------------ keys, users


class Keys:
    def __init__(self, tag, connections):
        t = tag.encode()
        self.tag = t
        self.secret = [b"%s:k:%d" % (t, i) for i in range(6)]
        self.public = [b"public:%s:%d" % (t, i) for i in range(3)]
        self.strings = self.secret + self.public
        self.counters = [b"%s:n:%d" % (t, i) for i in range(connections)]
        self.lists = [b"%s:l:%d" % (t, i) for i in range(3)]
        self.channels = [b"%s:ch:%d" % (t, i) for i in range(4)]
        self.widened = self.secret[0]     # fzguest may read this one while widened
        # keys given TTLs (BRC never caches those): a subset, the rest stays cacheable
        self.ttl = [self.secret[4], self.secret[5], self.public[2]]
        self.cacheable_secret = [k for k in self.secret if k not in self.ttl]
        self.cacheable_public = [k for k in self.public if k not in self.ttl]
        # per connection, read with HGETALL / SMEMBERS / ZSCORE (RESP3: map, set,
        # double); never touched by GET or by the string commands
        self.hashes = [b"%s:h:%d" % (t, i) for i in range(connections)]
        self.sets = [b"%s:s:%d" % (t, i) for i in range(connections)]
        self.zsets = [b"%s:z:%d" % (t, i) for i in range(connections)]
        self.all = self.strings + self.counters + self.lists + self.hashes + self.sets + \
            self.zsets

    def kind(self, key):
        if key in self.lists:
            return "list"
        return "string"


def user_can_get(user, rights, keys, key):
    """rights: the fuzzer-controlled part of the user's ACL (see Board.rights)."""
    if user in ("default", "fzadmin"):
        return True
    if user == "fzro":
        return bool(rights)                       # +get / -get
    if user == "fzguest":
        return key.startswith(b"public:") or (bool(rights) and key == keys.widened)
    return False


# ------------------------------------------------------------------------ monitor


class Line:
    __slots__ = ("ts", "db", "src", "argv", "pred", "certain", "cmd")

    def __init__(self, ts, db, src, argv):
        self.ts, self.db, self.src, self.argv = ts, db, src, argv
        self.pred = None
        self.certain = False
        self.cmd = None


_LINE = re.compile(rb'^\+(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$')
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESC = re.compile(rb'\\(x[0-9a-fA-F]{2}|.)')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b",
            b"\\": b"\\", b'"': b'"'}


def _unescape(m):
    s = m.group(1)
    if s[:1] == b"x":
        return bytes([int(s[1:], 16)])
    return _ESCAPES.get(s, s)


def parse_monitor_line(raw):
    m = _LINE.match(raw)
    if not m:
        return None
    argv = [_ESC.sub(_unescape, a) for a in _ARG.findall(m.group(4))]
    return Line(float(m.group(1)), int(m.group(2)), m.group(3).decode("latin-1"), argv)


class Monitor(threading.Thread):
    """MONITOR over loopback in the server namespace, for the whole run."""

    def __init__(self, netns, host, port):
        super().__init__(daemon=True)
        import brc_attach
        with brc_attach.in_netns(netns):
            self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(encode("MONITOR"))
        self.lock = threading.Lock()
        self.lines = []
        self.stop = False
        self.error = None
        self.raw = bytearray()
        buf = b""
        deadline = time.time() + 5
        while b"\r\n" not in buf and time.time() < deadline:
            buf += self.sock.recv(4096)
        if not buf.startswith(b"+OK\r\n"):
            raise RuntimeError("MONITOR refused: %r" % buf[:200])
        self.raw += buf[5:]

    def run(self):
        self.sock.settimeout(0.2)
        try:
            while not self.stop:
                try:
                    chunk = self.sock.recv(1 << 20)
                except socket.timeout:
                    continue
                if not chunk:
                    self.error = "MONITOR connection closed"
                    return
                self.raw += chunk
                cut = self.raw.rfind(b"\r\n")
                if cut < 0:
                    continue
                block, self.raw = bytes(self.raw[:cut]), self.raw[cut + 2:]
                parsed = []
                for raw in block.split(b"\r\n"):
                    line = parse_monitor_line(raw)
                    if line is None:
                        self.error = "unparsable MONITOR line %r" % raw[:200]
                        continue
                    parsed.append(line)
                with self.lock:
                    self.lines.extend(parsed)
        except OSError as e:
            self.error = "MONITOR: %s" % e

    def take_until(self, marker, timeout=30.0):
        """All lines before the one that is `ECHO marker`; the marker is dropped."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for i, line in enumerate(self.lines):
                    if line.argv == [b"ECHO", marker] or line.argv == [b"echo", marker]:
                        out, self.lines = self.lines[:i], self.lines[i + 1:]
                        return out
            if self.error or not self.is_alive():
                break
            time.sleep(0.02)
        raise RuntimeError("MONITOR did not show marker %r (%s)" % (marker, self.error))

    def close(self):
        self.stop = True
        self.join(2)
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------------ model


class Model:
    """Per (db, key): the values Redis held and when, rebuilt from MONITOR lines.

    hist[(db, key)] = [(ts, value, expire_at, uncertain)], one entry per change; value
    None = absent, b"<list>" = a list. Expiry is logical: a value with expire_at is
    absent after it (EXPIRY_SLOP either way is ambiguous)."""

    LIST = b"<list>"

    def __init__(self, keys):
        self.keys = keys
        self.hist = defaultdict(list)
        self.origin = {}            # value -> (db, key, ts, command) that wrote it
        self.unmodeled = Counter()

    # -- state
    def state(self, db, key):
        h = self.hist.get((db, key))
        if not h:
            return None, None, False
        _ts, v, exp, unc, _line = h[-1]
        return v, exp, unc

    def live(self, db, key, ts):
        """(value, certain) at ts."""
        v, exp, unc = self.state(db, key)
        if v is not None and exp is not None:
            if ts > exp + EXPIRY_SLOP:
                return None, not unc
            if ts >= exp - EXPIRY_SLOP:
                return None, False
        return v, not unc

    def put(self, db, key, ts, value, expire, uncertain, origin=None, line=None):
        self.hist[(db, key)].append((ts, value, expire, uncertain, line))
        if origin and value is not None and value not in self.origin:
            self.origin[value] = (db, key.decode("latin-1"), ts, origin)

    def prune(self, before):
        for k, h in self.hist.items():
            i = bisect.bisect_left(h, before, key=lambda e: e[0]) - 1
            if i > 0:
                del h[:i]

    # -- window queries
    def window(self, db, key, a, b):
        """(set of values held at some instant in [a, b], certain)."""
        a, b = a - WINDOW_SLOP, b + WINDOW_SLOP
        h = self.hist.get((db, key), [])
        i = bisect.bisect_right(h, a, key=lambda e: e[0]) - 1
        vals, certain = set(), True
        seq = ([h[i]] if i >= 0 else [(-INF, None, None, False, None)]) + \
            [e for e in h[i + 1:] if e[0] <= b]
        for j, (ts, v, exp, unc, _line) in enumerate(seq):
            start = max(ts, a)
            end = seq[j + 1][0] if j + 1 < len(seq) else b
            if unc:
                certain = False
            if v is None:
                vals.add(None)
                continue
            if exp is None or start < exp + EXPIRY_SLOP:
                vals.add(v)
            if exp is not None and exp - EXPIRY_SLOP <= end:
                vals.add(None)
        return vals, certain

    def describe(self, db, key, t, n=4):
        """The key's last @n changes up to t (and the next one), as text for a report."""
        h = self.hist.get((db, key), [])
        i = bisect.bisect_right(h, t, key=lambda e: e[0])
        out = []
        for ts, v, exp, unc, line in h[max(0, i - n):i + 1]:
            what = " ".join(short(a, 24) for a in line.argv[:4]) if line is not None else "?"
            out.append("%.6f %s=%s%s%s" % (ts, what, short(v), " exp %.6f" % exp if exp else "",
                                          " (uncertain)" if unc else ""))
        return "; ".join(out) or "none"

    def superseded(self, db, key, value, t):
        """How a value stopped being the key's before t: the writes (with the way they
        were sent) and expiry, as text for a report."""
        h = self.hist.get((db, key), [])
        idx = [i for i, e in enumerate(h) if e[1] == value and e[0] <= t]
        if not idx:
            return ""
        i = idx[-1]
        out = []
        if h[i][2] is not None and h[i][2] < t:
            out.append("expired at %.6f" % h[i][2])
        for e in h[i + 1:]:
            if e[0] > t:
                break
            line = e[4]
            how = ""
            if line is not None:
                if line.src == "lua":
                    how = " (inside EVAL)"
                elif line.cmd is not None:
                    how = " (%s%s)" % (line.cmd.how, ", in MULTI" if line.cmd.queued else "")
                desc = " ".join(short(a, 24) for a in line.argv[:4])
            else:
                desc = "?"
            out.append("%s%s at %.6f" % (desc, how, e[0]))
            if len(out) >= 3:
                break
        return "; superseded by " + ", ".join(out) if out else ""

    # -- applying one executed command
    def apply(self, line):
        """Apply an executed command; sets line.pred (the reply Redis must have given)
        and line.certain."""
        argv, db, ts = line.argv, line.db, line.ts
        name = argv[0].upper() if argv else b""
        line.pred = UNKNOWN
        f = getattr(self, "_c_" + name.decode("latin-1").lower(), None)
        if f is None:
            if name not in IGNORED and any(a.startswith(self.keys.tag) or a.startswith(
                    b"public:" + self.keys.tag) for a in argv[1:]):
                self.unmodeled[name.decode("latin-1")] += 1
            return
        line.certain = True
        try:
            line.pred = f(line, db, ts, argv)
        except (IndexError, ValueError):
            line.pred, line.certain = UNKNOWN, False
        if not line.certain and name != b"GET":
            self.taint(line, db, argv)

    def taint(self, line, db, argv):
        """The model took one branch of a write whose outcome it could not tell (a key
        read at its expiry, say RENAME of a key Redis still held): whatever the write
        names may hold anything now, until a write that does not depend on it."""
        dbs = {db}
        opts = [a.upper() for a in argv]
        if b"DB" in opts[3:]:
            dbs.add(int(argv[opts.index(b"DB", 3) + 1]))
        for key in argv[1:]:
            if key.startswith(self.keys.tag) or key.startswith(b"public:" + self.keys.tag):
                for d in dbs:
                    h = self.hist.get((d, key))
                    if h and h[-1][4] is line and not h[-1][3]:
                        continue        # written blind by this very command (DEL)
                    v, exp, _unc = self.state(d, key)
                    self.put(d, key, line.ts, v, exp, True, line=line)

    def _get(self, line, db, key):
        v, certain = self.live(db, key, line.ts)
        if not certain:
            line.certain = False
        return v

    def _set(self, line, db, key, value, expire, blind=False):
        """@blind: the value written does not depend on what the model could not tell."""
        unc = not line.certain and not blind
        self.put(db, key, line.ts, value, expire, unc, origin=(
            " ".join(a.decode("latin-1") for a in line.argv[:3]) if value is not None else None),
            line=line)

    def _keep_exp(self, db, key):
        return self.state(db, key)[1]

    @staticmethod
    def _num(b):
        if not re.match(rb"^-?[1-9][0-9]*$|^0$", b):
            raise ValueError(b)
        return int(b)

    def _c_get(self, line, db, ts, argv):
        v = self._get(line, db, argv[1])
        return Err("WRONGTYPE") if v == self.LIST else v

    def _c_set(self, line, db, ts, argv):
        key, val = argv[1], argv[2]
        opts = [a.upper() for a in argv[3:]]
        nx, xx, get = b"NX" in opts, b"XX" in opts, b"GET" in opts
        blind = not (nx or xx or get or b"KEEPTTL" in opts)
        cur = self.state(db, key)[0] if blind else self._get(line, db, key)
        exp, keep = None, False
        for i, o in enumerate(opts):
            if o == b"EX":
                exp = ts + int(argv[3 + i + 1])
            elif o == b"PX":
                exp = ts + int(argv[3 + i + 1]) / 1000.0
            elif o == b"KEEPTTL":
                keep = True
        if get and cur == self.LIST:
            return Err("WRONGTYPE")
        ok = not (nx and cur is not None) and not (xx and cur is None)
        if ok:
            if keep and cur is not None:
                exp = self._keep_exp(db, key)
            self._set(line, db, key, val, exp, blind)
        if get:
            return cur
        return Simple("OK") if ok else None

    def _c_setex(self, line, db, ts, argv):
        self._set(line, db, argv[1], argv[3], ts + int(argv[2]))
        return Simple("OK")

    def _c_psetex(self, line, db, ts, argv):
        self._set(line, db, argv[1], argv[3], ts + int(argv[2]) / 1000.0)
        return Simple("OK")

    def _c_del(self, line, db, ts, argv):
        n = 0
        for key in argv[1:]:
            if self._get(line, db, key) is not None:
                n += 1
            if self.state(db, key)[0] is not None:
                self._set(line, db, key, None, None, blind=True)
        return n

    _c_unlink = _c_del

    def _c_incr(self, line, db, ts, argv):
        key = argv[1]
        cur = self._get(line, db, key)
        if cur == self.LIST:
            return Err("WRONGTYPE")
        try:
            n = 0 if cur is None else self._num(cur)
        except ValueError:
            return Err("ERR value is not an integer or out of range")
        self._set(line, db, key, b"%d" % (n + 1), self._keep_exp(db, key) if cur else None)
        return n + 1

    def _c_append(self, line, db, ts, argv):
        key = argv[1]
        cur = self._get(line, db, key)
        if cur == self.LIST:
            return Err("WRONGTYPE")
        new = (cur or b"") + argv[2]
        self._set(line, db, key, new, self._keep_exp(db, key) if cur is not None else None)
        return len(new)

    def _c_getset(self, line, db, ts, argv):
        cur = self._get(line, db, argv[1])
        if cur == self.LIST:
            return Err("WRONGTYPE")
        self._set(line, db, argv[1], argv[2], None)
        return cur

    def _c_getdel(self, line, db, ts, argv):
        cur = self._get(line, db, argv[1])
        if cur == self.LIST:
            return Err("WRONGTYPE")
        if cur is not None or self.state(db, argv[1])[0] is not None:
            self._set(line, db, argv[1], None, None)
        return cur

    def _c_getex(self, line, db, ts, argv):
        key = argv[1]
        cur = self._get(line, db, key)
        if cur == self.LIST:
            return Err("WRONGTYPE")
        opts = [a.upper() for a in argv[2:]]
        if cur is not None and opts:
            if opts[0] == b"EX":
                self._set(line, db, key, cur, ts + int(argv[3]))
            elif opts[0] == b"PX":
                self._set(line, db, key, cur, ts + int(argv[3]) / 1000.0)
            elif opts[0] == b"PERSIST":
                self._set(line, db, key, cur, None)
        return cur

    def _c_mset(self, line, db, ts, argv):
        for i in range(1, len(argv) - 1, 2):
            self._set(line, db, argv[i], argv[i + 1], None)
        return Simple("OK")

    def _c_expire(self, line, db, ts, argv, scale=1.0):
        key = argv[1]
        cur = self._get(line, db, key)
        if cur is None:
            return 0
        self._set(line, db, key, cur, ts + int(argv[2]) * scale)
        return 1

    def _c_pexpire(self, line, db, ts, argv):
        return self._c_expire(line, db, ts, argv, 0.001)

    def _c_persist(self, line, db, ts, argv):
        key = argv[1]
        cur = self._get(line, db, key)
        if cur is None or self._keep_exp(db, key) is None:
            return 0
        self._set(line, db, key, cur, None)
        return 1

    def _move(self, line, db, src, dstdb, dst, delete_src):
        cur = self._get(line, db, src)
        exp = self._keep_exp(db, src)
        self._set(line, dstdb, dst, cur, exp)
        if delete_src:
            self._set(line, db, src, None, None)

    def _c_rename(self, line, db, ts, argv, nx=False):
        src, dst = argv[1], argv[2]
        if self._get(line, db, src) is None:
            return Err("ERR no such key")
        if src == dst:
            return 0 if nx else Simple("OK")
        if nx and self._get(line, db, dst) is not None:
            return 0
        self._move(line, db, src, db, dst, True)
        return 1 if nx else Simple("OK")

    def _c_renamenx(self, line, db, ts, argv):
        return self._c_rename(line, db, ts, argv, nx=True)

    def _c_copy(self, line, db, ts, argv):
        src, dst = argv[1], argv[2]
        opts = [a.upper() for a in argv[3:]]
        dstdb = int(argv[3 + opts.index(b"DB") + 1]) if b"DB" in opts else db
        if src == dst and dstdb == db:
            return Err("ERR source and destination objects are the same")
        if self._get(line, db, src) is None:
            return 0
        if self._get(line, dstdb, dst) is not None and b"REPLACE" not in opts:
            return 0
        self._move(line, db, src, dstdb, dst, False)
        return 1

    def _list_touch(self, line, db, ts, argv, keys):
        for key in keys:
            self._set(line, db, key, self.LIST, None)
        line.certain = False

    def _c_lpush(self, line, db, ts, argv):
        self._list_touch(line, db, ts, argv, [argv[1]])
        for v in argv[2:]:
            self.origin.setdefault(v, (db, argv[1].decode("latin-1"), ts, "LPUSH (a list)"))
        return UNKNOWN

    _c_rpush = _c_lpush

    def _c_flushall(self, line, db, ts, argv):
        for (d, key), h in list(self.hist.items()):
            if h and h[-1][1] is not None:
                self._set(line, d, key, None, None)
        return Simple("OK")

    def _c_flushdb(self, line, db, ts, argv):
        for (d, key), h in list(self.hist.items()):
            if d == db and h and h[-1][1] is not None:
                self._set(line, d, key, None, None)
        return Simple("OK")


# Commands the model knows do not change string keys (lists are not modelled: their
# values are never read by GET here).
IGNORED = {b"GET", b"MGET", b"PING", b"ECHO", b"SELECT", b"MULTI", b"EXEC", b"DISCARD", b"EVAL",
           b"AUTH", b"HELLO", b"RESET", b"QUIT", b"CLIENT", b"SUBSCRIBE", b"UNSUBSCRIBE",
           b"PSUBSCRIBE", b"PUNSUBSCRIBE", b"PUBLISH", b"BLPOP", b"BLMOVE", b"LPOP",
           b"MONITOR", b"TTL", b"PTTL", b"EXISTS", b"PEXPIRETIME", b"TOUCH",
           b"HSET", b"HGETALL", b"SADD", b"SMEMBERS", b"ZADD", b"ZSCORE"}

# Commands whose execution MONITOR always shows (so: not in MONITOR = not executed).
SHOWN = {b"GET", b"MGET", b"SET", b"SETEX", b"PSETEX", b"DEL", b"UNLINK", b"INCR", b"APPEND",
         b"GETSET", b"GETDEL", b"GETEX", b"MSET", b"EXPIRE", b"PEXPIRE", b"PERSIST",
         b"RENAME", b"RENAMENX", b"COPY", b"SELECT", b"PING", b"ECHO", b"MULTI", b"EXEC",
         b"DISCARD", b"EVAL", b"LPUSH", b"RPUSH", b"BLPOP", b"BLMOVE", b"PUBLISH",
         b"SUBSCRIBE", b"UNSUBSCRIBE", b"PSUBSCRIBE", b"PUNSUBSCRIBE", b"RESET", b"QUIT",
         b"HSET", b"HGETALL", b"SADD", b"SMEMBERS", b"ZADD", b"ZSCORE"}
# Administrative commands MONITOR never shows.
HIDDEN = {b"ACL", b"CONFIG"}


def monitor_form(argv):
    """argv as MONITOR prints it (credentials redacted), or None if never shown."""
    name = argv[0].upper() if argv else b""
    if name in HIDDEN:
        return None
    if name == b"AUTH":
        return [argv[0]] + [b"(redacted)"] * (len(argv) - 1)
    if name == b"HELLO":
        out = list(argv)
        for i, a in enumerate(argv):
            if a.upper() == b"AUTH" and i + 2 < len(argv):
                out[i + 1] = out[i + 2] = b"(redacted)"
        return out
    return argv


# ------------------------------------------------------------------------ board


class Board:
    """What the workers share: locks, the fuzzer-controlled server state, requests
    between connections, results."""

    def __init__(self, keys, rng_seed):
        self.keys = keys
        self.lock = threading.Lock()
        self.auth_lock = threading.Lock()       # requirepass windows vs the auth loader
        self.acl_lock = threading.Lock()
        self.config_lock = threading.Lock()
        self.rights = {"fzguest": Timeline(False), "fzro": Timeline(True)}
        self.requirepass = Timeline(False)
        self.push_wanted = []                   # list keys a blocked connection waits on
        self.sinks = {}                         # client id -> worker id (subscribed to invalidations)
        self.violations = []
        self.vcount = Counter()
        self.suspects = Counter()
        self.first_at = {}           # suspected finding -> seconds into the run it was first seen
        self.t0 = None
        self.behind_unsub = defaultdict(list)    # key -> times of GETs sent behind
        #                                          UNSUBSCRIBE a b + a blocking command
        self.notes = Counter()
        self.incarnations = []
        self.last_auth_change = 0.0
        self.auth_changed = False        # the coordinator loads the users again soon
        self.pause = False
        self.paused = 0
        self.running = 0
        self.cond = threading.Condition()

    def violation(self, kind, inc, detail, cmd=None, suspect=None):
        if suspect is None and inc is not None and cmd is not None:
            suspect = guess_finding(kind, inc, cmd, detail, self)
        with self.lock:
            self.vcount[kind] += 1
            self.suspects[suspect or "?"] += 1
            if cmd is not None and cmd.t_send and self.t0:
                at = round(cmd.t_send - self.t0, 2)
                k = suspect or "?"
                self.first_at[k] = min(self.first_at.get(k, at), at)
            # the first ones, and the first two of every suspected finding
            if len(self.violations) < MAX_REPORTED or self.suspects[suspect or "?"] <= 2:
                v = {"kind": kind, "suspect": suspect, "conn": inc.worker.wid if inc else None,
                     "incarnation": inc.id if inc else None,
                     "addr": inc.addr if inc else None, "detail": detail}
                if cmd is not None:
                    v["cmd"] = cmd.brief()
                if inc is not None:
                    upto = inc.cmds.index(cmd) + 1 if cmd in inc.cmds else len(inc.cmds)
                    v["history"] = [c.brief() for c in inc.cmds[max(0, upto - HISTORY):upto]]
                self.violations.append(v)

    def may_change_auth(self):
        with self.lock:
            now = time.time()
            if now - self.last_auth_change < AUTH_CHANGE_GAP:
                return False
            self.last_auth_change = now
            self.auth_changed = True
            return True

    def note(self, what, n=1):
        with self.lock:
            self.notes[what] += n

    # -- epochs: workers stop between operations
    def checkpoint(self):
        with self.cond:
            if not self.pause:
                return
            self.paused += 1
            self.cond.notify_all()
            while self.pause:
                self.cond.wait(0.5)
            self.paused -= 1

    def hold(self, timeout):
        with self.cond:
            self.pause = True
            deadline = time.time() + timeout
            while self.paused < self.running and time.time() < deadline:
                self.cond.wait(0.1)
            return self.paused >= self.running

    def release(self):
        with self.cond:
            self.pause = False
            self.cond.notify_all()


# ------------------------------------------------------------------------ workers

OPS = {  # name: weight (normal mode); tuned so that GETs dominate on a small key set
    "get": 55, "set": 5, "set_opts": 2.5, "setex": 1, "del": 1, "unlink": 0.6, "incr": 2,
    "append": 0.8, "getset": 0.8, "getdel": 0.6, "getex": 0.8, "mset": 0.8, "expire": 1,
    "rename": 0.8, "select": 1.5, "multi": 0.5, "eval": 0.25, "pipeline": 2.5, "split": 2.5,
    "get_batch": 3,
    "inline": 1, "subscribe": 0.8, "publish": 1, "unsub_block": 1.2, "block": 0.8,
    "push": 1, "client_reply": 1, "tracking": 0.6, "reset": 0.8, "auth": 2, "acl": 0.5,
    "config_timeout": 0.3, "requirepass": 0.3, "quit": 0.5, "rst": 0.5, "hello": 0.6,
    "hello3": 0.5, "types": 0.8, "sink3": 0.3,
}
# ACL SETUSER and CONFIG SET change who may read what (or Redis's timeout): a fail-closed
# BRC stops answering until the toolkit loads the users again (refresh_auth, ~1/s), so
# these ops run at most once per AUTH_CHANGE_GAP seconds over all connections.
AUTH_CHANGE_GAP = 4.0
MAX_AGE_NS = 5 * 10 ** 9
# Run B (serving) draws the connections BRC must give up less often: each one holds
# its writes in flight (a global mark when its writes are invisible) until it closes,
# and a client RST on one that wrote holds everything for max_age, so at run A's
# rates almost nothing would be answered and run B would check almost no kernel
# answer. Every kind still occurs; run A keeps the full rates. RESP3 costs run B
# some answers by itself (its nil is never cached, RESP2's never answered to it:
# seed 6, run B, no new op: 11.7% all RESP2, 8% all RESP3) and its ops more (EVAL
# invalidates everything, tracking gives connections up): at run A's rates seed 6's
# run B answered 2.2% of its GETs in the kernel.
SERVING_OPS = dict(OPS, inline=0.3, unsub_block=0.4, client_reply=0.3, tracking=0.15, rst=0.2,
                   subscribe=0.3, types=0.15, sink3=0.15, hello=0.3, hello3=0.3)
SUB_OPS = {"ping": 3, "subscribe": 2, "unsubscribe": 2, "psubscribe": 1, "punsubscribe": 1,
           "get": 2, "wait": 3, "leave": 3, "reset": 1, "quit": 0.5}
# RESP3: a subscribed connection may send any command; its messages come as pushes
# between the replies (PUBLISH to its own channel: the push comes before PUBLISH's :n)
SUB3_OPS = dict(SUB_OPS, get=6, set=2, incr=1, publish=2, pipeline=1.5, types=0.7,
                multi=0.3, leave=2.5)
# Run B: SUBSCRIBE gives the connection up, and the writes of a given-up connection
# hold every fill (writes in flight) until it closes: fewer writes, shorter sessions
SERVING_SUB3_OPS = dict(SUB3_OPS, set=0.2, incr=0.1, pipeline=0.1, types=0.1, multi=0.05,
                        leave=4, quit=1.5)
# The share of connections that ask for RESP3 (HELLO 3) as they open, and after RESET
RESP3_SHARE = 0.5
# With a host agent in charge, the share of connections opened again while BRC is
# detached at the start and at each epoch (Fuzz.reopen_unseen): the agent adopts them.
UNSEEN_SHARE = 0.5

WHITESPACE = [b" ", b"  ", b"\t", b" \t "]


class Worker(threading.Thread):
    """One client connection slot: a seeded random command stream, reconnecting as the
    stream closes, resets or kills its connection."""

    def __init__(self, fz, wid, rng):
        super().__init__(daemon=True)
        self.fz, self.board, self.keys = fz, fz.board, fz.board.keys
        self.wid, self.rng = wid, rng
        self.inc = None
        self.sock = None
        self.buf = bytearray()
        self.n = 0
        self.reply_off = False
        self.skip_next = False
        self.dirty_hint = 0.0
        self.prefer3 = False         # this connection asks for RESP3 (HELLO 3)
        self.ops = Counter()
        self.crashed = None

    # -- values
    def uval(self):
        self.n += 1
        v = b"%s%d.%d" % (self.keys.tag[-3:], self.wid, self.n)
        if self.rng.random() < 0.125:
            # values about the two limits an answer has: one segment of a 1500-byte MTU
            # (1439 bytes with timestamps) and BRC_VAL_MAX (2048 bytes of reply)
            size = self.rng.choice((self.rng.randint(1380, 1460), self.rng.randint(2020, 2060)))
            v += b"~" * max(0, size - len(v))
        return v

    # -- connection
    def connect(self, auto_auth=True):
        import brc_attach
        inc = Incarnation(self)
        with brc_attach.in_netns(self.fz.client_ns):
            sock = socket.create_connection((self.fz.host, self.fz.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        inc.addr = "%s:%d" % sock.getsockname()
        self.sock, self.inc, self.buf = sock, inc, bytearray()
        self.reply_off = self.skip_next = False
        self.dirty_hint = 0.0
        with self.board.lock:
            self.board.incarnations.append(inc)
        # Redis decides "authenticated" when it accepts: nopass then, or not
        ping = self.cmd(b"PING")
        self.send([ping])
        self.read(ping)
        rp = self.board.requirepass.possible(inc.t_open, ping.t_reply)
        inc.cauth = (rp == {False}) if len(rp) == 1 else None
        if isinstance(ping.reply, Err) and inc.cauth:
            self.board.note("oracle: PING refused on a connection accepted without a password")
        if isinstance(ping.reply, Err):
            inc.cauth = False
        self.prefer3 = self.rng.random() < self.fz.resp3_share
        if auto_auth and inc.cauth is not True and self.board.requirepass.current() and \
                self.rng.random() < 0.7:
            self.auth_as("default", DEFAULT_PW, hello=self.prefer3, proto=b"3")
        elif auto_auth and self.prefer3:
            self.hello3(with_get=self.rng.random() < 0.3)

    def close(self, kind="fin"):
        if self.sock is None:
            return
        self.drop_sink()
        inc = self.inc
        if kind == "rst":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            self.sock.close()
        except OSError:
            pass
        inc.t_close, inc.close_kind = time.time(), kind
        for c in inc.cmds:
            if c.t_reply is None and not c.noreply:
                inc.late.add(tuple(c.argv))
        self.sock = None

    def cmd(self, *argv, wire=None, how="resp"):
        c = Cmd(self.inc, argv, wire, how)
        self.inc.cmds.append(c)
        return c

    def send(self, cmds, how="one"):
        """Write the commands: one write, or pieces at random byte boundaries."""
        data = b"".join(c.wire for c in cmds)
        t = time.time()
        for c in cmds:
            c.t_send = t
            if c.name == b"CLIENT" and len(c.argv) > 2 and c.argv[1].upper() == b"REPLY":
                mode = c.argv[2].upper()
                if mode == b"ON":
                    self.reply_off = self.skip_next = False
                    continue
                c.noreply = True
                self.skip_next = False
                if mode == b"OFF":
                    self.reply_off = True
                elif mode == b"SKIP" and not self.reply_off:
                    self.skip_next = True
                continue
            if self.reply_off or self.skip_next:
                c.noreply = True
                self.skip_next = False
        try:
            if how == "split" and len(data) > 2:
                cuts = sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1,
                                                                       self.rng.randint(1, 3))))
                prev = 0
                for cut in cuts + [len(data)]:
                    self.sock.sendall(data[prev:cut])
                    prev = cut
                    if cut < len(data):
                        time.sleep(self.rng.choice([0, 0.0005, 0.002]))
            else:
                self.sock.sendall(data)
        except OSError as e:
            raise Closed("send failed: %s" % e)

    def _reply(self, deadline, c=None):
        while True:
            forms = Forms()
            try:
                v, pos = parse(self.buf, 0, forms)
                del self.buf[:pos]
                self.check_forms(v, forms, c)
                for p in forms.inner_pushes:
                    self.board.note("pushes inside a reply")
                    self.aside(p, c)
                return v
            except Incomplete:
                pass
            left = deadline - time.time()
            if left <= 0:
                raise Stall("no reply within %.1fs" % self.fz.reply_timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise Stall("no reply within %.1fs" % self.fz.reply_timeout)
            except OSError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("connection closed by the server")
            self.buf += chunk

    def check_forms(self, v, forms, c):
        """A reply in the other protocol's form is never Redis's: RESP2's nil ($-1,
        *-1) on a RESP3 connection, any RESP3 type on a RESP2 one (a HELLO that
        succeeds is answered in the protocol it asks for)."""
        proto = self.inc.proto
        if c is not None and c.name == b"HELLO" and len(c.argv) > 1 and \
                c.argv[1] in (b"2", b"3") and not isinstance(v, (Err, Push)):
            proto = int(c.argv[1])
        if forms.attrs:
            raise Desync(c or self.last(), "an attribute (%s) before %s: Redis sends none to "
                         "these commands" % (short(forms.attrs[0][0]), short(v)),
                         kind="wrong_protocol")
        if proto == 3 and forms.nil2:
            raise Desync(c or self.last(), "RESP2's nil ($-1/*-1) in %s on a RESP3 connection "
                         "(Redis sends _)" % short(v), kind="wrong_protocol")
        if isinstance(v, Push) and self.inc.pushes3_unread:
            return              # sent while the connection was still RESP3
        self.inc.pushes3_unread = False
        if proto == 2 and forms.types3:
            raise Desync(c or self.last(), "RESP3 type %s in %s on a RESP2 connection" % (
                "".join(sorted(forms.types3)), short(v)), kind="wrong_protocol")
        if proto == 3:
            self.inc.ever3 = True

    def last(self):
        return self.inc.cmds[-1] if self.inc and self.inc.cmds else None

    def aside(self, v, c):
        """A RESP3 push that is no reply: a message of a subscription, an invalidation
        of tracking. Anything else pushed is not Redis's."""
        inc = self.inc
        inc.pushes += 1
        kind = v[0] if v and isinstance(v[0], bytes) else None
        if kind in MESSAGES and (inc.channels or inc.patterns or (c is not None and (
                c.name in SUBS or c.subscribed))):
            self.board.note("pubsub messages (push)")
            return
        if kind in TRACKING_PUSHES and inc.pushes_tracking:
            self.board.note("tracking pushes")
            return
        raise Desync(c or self.last(), "push %s that this connection's state does not "
                     "explain (taken for a reply?)" % short(v))

    def read(self, c, n=1, extra=0.0):
        """Read command c's n replies (pub/sub messages and RESP3 pushes are set
        aside); checks the reply's shape against what this connection's state says
        Redis gives, and follows the protocol HELLO and RESET put it in."""
        if c.noreply:
            c.reply = NOREPLY
            if c.name == b"HELLO" and len(c.argv) == 2 and c.argv[1] in (b"2", b"3") and \
                    self.inc.cauth is True:
                self.inc.pushes3_unread |= self.inc.proto == 3 and c.argv[1] == b"2"
                self.inc.proto = int(c.argv[1])     # suppressed, but it succeeded
            return c.reply
        deadline = time.time() + self.fz.reply_timeout + extra
        got = []
        while len(got) < n:
            v = self._reply(deadline, c)
            if isinstance(v, Push):
                if not (c.name in SUBS and v and v[0] in SUB_CONFIRMS):
                    self.aside(v, c)
                    continue
            elif is_push(v) and (self.inc.channels or self.inc.patterns or c.name in SUBS):
                self.board.note("pubsub messages")
                continue
            got.append(v)
            if n > 1 and len(got) == 1 and isinstance(v, Err):
                break           # refused (NOPERM, NOAUTH...): one error, not n replies
        c.t_reply = time.time()
        c.reply = got[0] if n == 1 or isinstance(got[0], Err) else got
        c.answered = True
        c.proto = self.inc.proto
        self.follow_protocol(c)
        why = expect_error(c) if c.expect is not None else shape_error(c, self.inc)
        if why:
            raise Desync(c, why)
        return c.reply

    def follow_protocol(self, c):
        """HELLO 2|3 switches on its success reply (a map in RESP3, an array in RESP2;
        an error changes nothing), RESET goes back to RESP2."""
        inc, v = self.inc, c.reply
        if c.name == b"RESET" and v == "RESET":
            inc.proto = 2
        if c.name != b"HELLO" or isinstance(v, Err):
            return
        want = c.argv[1] if len(c.argv) > 1 else None
        proto = {b"2": 2, b"3": 3}.get(want, inc.proto) if want is not None else inc.proto
        form = Map if proto == 3 else list
        if type(v) is not form:
            raise Desync(c, "HELLO%s answered %s: a successful HELLO is answered in the "
                         "protocol it asks for (RESP%d: %s)" % (
                             " " + want.decode("latin-1") if want else "", short(v), proto,
                             "a map" if proto == 3 else "an array"), kind="wrong_protocol")
        got = v.get(b"proto") if proto == 3 else dict(zip(v[::2], v[1::2])).get(b"proto")
        if got != proto:
            raise Desync(c, "HELLO's proto field %r, RESP%d asked" % (got, proto))
        inc.proto = c.proto = proto

    def quiet(self):
        """Nothing outstanding: nothing but pub/sub messages may be waiting."""
        if self.sock is None:
            return
        while True:
            r, _w, _x = select.select([self.sock], [], [], 0)
            if not r and not self.buf:
                return
            if r:
                try:
                    chunk = self.sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    raise Closed("connection closed by the server while idle")
                self.buf += chunk
            forms = Forms()
            try:
                v, pos = parse(self.buf, 0, forms)
            except Incomplete:
                if not r:
                    return
                continue
            del self.buf[:pos]
            self.check_forms(v, forms, None)
            for p in forms.inner_pushes:
                self.aside(p, None)
            if isinstance(v, Push):
                self.aside(v, None)
                continue
            if is_push(v) and (self.inc.channels or self.inc.patterns):
                continue
            raise Desync(self.inc.cmds[-1] if self.inc.cmds else None,
                         "extra reply with nothing outstanding: %s" % short(v))

    # -- the loop
    def run(self):
        fz = self.fz
        with self.board.cond:
            self.board.running += 1
        try:
            while time.time() < fz.deadline and not fz.stopping:
                self.board.checkpoint()
                if time.time() >= fz.deadline or fz.stopping:
                    break
                try:
                    if self.sock is None:
                        self.connect()
                    subscribed = self.inc.channels or self.inc.patterns
                    table = fz.weights if not subscribed else \
                        fz.sub3_weights if self.inc.proto == 3 else SUB_OPS
                    name = self.rng.choices(list(table), weights=list(table.values()))[0]
                    self.ops[("sub%s_" % ("3" if self.inc.proto == 3 else "")
                              if subscribed else "") + name] += 1
                    fn = getattr(self, "sub_" + name, None) if subscribed else None
                    (fn or getattr(self, "op_" + name))()
                    if self.sock is not None:
                        self.quiet()
                    if self.sock is not None and not subscribed:
                        self.maybe_back_to_default()
                    if self.sock is not None and self.rng.random() < self.dirty_hint:
                        self.op_quit() if self.rng.random() < 0.5 else self.close("fin")
                except Stall as e:
                    last = self.inc.cmds[-1] if self.inc and self.inc.cmds else None
                    self.board.violation("stall", self.inc, str(e), last)
                    self.close("rst")
                except Desync as e:
                    self.board.violation(e.kind, self.inc, e.why, e.cmd)
                    self.close("rst")
                except Closed as e:
                    if self.inc is not None and self.inc.close_kind is None:
                        self.board.violation("closed", self.inc, str(e),
                                             self.inc.cmds[-1] if self.inc.cmds else None)
                    self.close("rst")
                except (ConnectionError, socket.timeout) as e:
                    self.board.violation("connect", self.inc, str(e))
                    self.close("rst")
                    time.sleep(0.1)
        except Exception as e:  # a bug of the fuzzer itself: reported, never hidden
            import traceback
            self.crashed = traceback.format_exc()
            self.board.violation("fuzzer_error", self.inc, "%s: %s" % (type(e).__name__, e))
        finally:
            try:
                if self.sock is not None:
                    if self.inc.channels or self.inc.patterns or self.reply_off:
                        self.close("fin")
                    else:
                        self.op_quit()
            except Exception:
                self.close("fin")
            with self.board.cond:
                self.board.running -= 1
                self.board.cond.notify_all()

    # -- helpers for ops
    def simple(self):
        """(argv) of a random one-reply data command for pipelines, MULTI, splits."""
        r, k = self.rng, self.rng.choice(self.keys.strings)
        pick = r.random()
        if pick < 0.4:
            return [b"GET", k]
        if pick < 0.6:
            return [b"SET", k, self.uval()]
        if pick < 0.68:
            return [b"INCR", self.keys.counters[self.wid]]
        if pick < 0.76:
            return [b"APPEND", k, b"+" + self.uval()]
        if pick < 0.84:
            return [b"DEL", k]
        if pick < 0.9:
            return [b"GETSET", k, self.uval()]
        if pick < 0.95:
            return [b"PEXPIRE", r.choice(self.keys.ttl), b"%d" % r.randint(100, 1500)]
        return [b"MSET", k, self.uval(), r.choice(self.keys.strings), self.uval()]

    def get_key(self):
        r = self.rng.random()
        if r < 0.55:
            return self.rng.choice(self.keys.cacheable_secret)
        if r < 0.8:
            return self.rng.choice(self.keys.cacheable_public)
        if r < 0.9:
            return self.rng.choice(self.keys.ttl)
        return self.rng.choice(self.keys.counters)

    def one(self, *argv, extra=0.0, how="one"):
        c = self.cmd(*argv)
        self.send([c], how)
        self.read(c, extra=extra)
        return c

    # -- normal-mode ops
    def op_get(self):
        self.one(b"GET", self.get_key())

    def op_set(self):
        self.one(b"SET", self.rng.choice(self.keys.strings), self.uval())

    def op_set_opts(self):
        r = self.rng
        ttl = r.choice([None, None, b"EX", b"PX", b"KEEPTTL"])
        argv = [b"SET", r.choice(self.keys.ttl if ttl else self.keys.strings), self.uval()]
        cond = r.choice([None, b"NX", b"XX"])
        if cond:
            argv.append(cond)
        if r.random() < 0.35:
            argv.append(b"GET")
        if ttl == b"EX":
            argv += [b"EX", b"%d" % r.randint(1, 3)]
        elif ttl == b"PX":
            argv += [b"PX", b"%d" % r.randint(50, 1500)]
        elif ttl:
            argv.append(ttl)
        head, tail = argv[:3], argv[3:]
        r.shuffle(tail)   # options in any order (EX n stays a pair)
        tail = [t for t in tail if not t.isdigit()]
        out = []
        for t in tail:
            out.append(r.choice([t, t.lower()]))
            if t in (b"EX", b"PX"):
                out.append(argv[argv.index(t) + 1])
        self.one(*(head + out))

    def op_setex(self):
        r = self.rng
        if r.random() < 0.5:
            self.one(b"SETEX", r.choice(self.keys.ttl), b"%d" % r.randint(1, 2), self.uval())
        else:
            self.one(b"PSETEX", r.choice(self.keys.ttl), b"%d" % r.randint(50, 1500),
                     self.uval())

    def op_del(self):
        ks = self.rng.sample(self.keys.strings, self.rng.choice([1, 1, 2]))
        self.one(b"DEL", *ks)

    def op_unlink(self):
        self.one(b"UNLINK", self.rng.choice(self.keys.strings))

    def op_incr(self):
        key = self.keys.counters[self.wid] if self.rng.random() < 0.9 else \
            self.rng.choice(self.keys.strings)
        self.one(b"INCR", key)

    def op_append(self):
        self.one(b"APPEND", self.rng.choice(self.keys.strings), b"+" + self.uval())

    def op_getset(self):
        self.one(b"GETSET", self.rng.choice(self.keys.strings), self.uval())

    def op_getdel(self):
        self.one(b"GETDEL", self.rng.choice(self.keys.strings))

    def op_getex(self):
        r = self.rng
        opt = r.choice([[], [b"EX", b"%d" % r.randint(1, 3)], [b"PX", b"%d" % r.randint(50, 1500)],
                        [b"PERSIST"]])
        self.one(b"GETEX", r.choice(self.keys.ttl if opt else self.keys.strings), *opt)

    def op_mset(self):
        ks = self.rng.sample(self.keys.strings, self.rng.randint(1, 3))
        argv = [b"MSET"]
        for k in ks:
            argv += [k, self.uval()]
        self.one(*argv)

    def op_expire(self):
        r, k = self.rng, self.rng.choice(self.keys.ttl)
        p = r.random()
        if p < 0.35:
            self.one(b"EXPIRE", k, b"%d" % r.randint(1, 2))
        elif p < 0.7:
            self.one(b"PEXPIRE", k, b"%d" % r.randint(50, 1500))
        else:
            self.one(b"PERSIST", k)

    def op_rename(self):
        r = self.rng
        a, b = r.choice(self.keys.strings), r.choice(self.keys.strings)
        p = r.random()
        if p < 0.35:
            self.one(b"RENAME", a, b)
        elif p < 0.6:
            self.one(b"RENAMENX", a, b)
        else:
            argv = [b"COPY", a, b]
            if r.random() < 0.4:
                argv += [b"DB", r.choice([b"0", b"1"])]
            if r.random() < 0.5:
                argv.append(b"REPLACE")
            self.one(*argv)

    def select(self, target):
        r = self.rng
        if r.random() < 0.25 and target in (b"0", b"1"):
            # inline, with a trailing blank (Redis: SELECT <n>)
            wire = b"SELECT " + target + r.choice([b" ", b"  ", b"\t", b""]) + b"\r\n"
            c = self.cmd(b"SELECT", target, wire=wire, how="inline")
            self.send([c])
            # BRC follows no inline state change: the connection is given up, so
            # it does not stay open for long (as with other unfollowable input)
            self.dirty_hint = max(self.dirty_hint, 0.3)
        else:
            c = self.cmd(b"SELECT", target)
            self.send([c], r.choice(["one", "one", "split"]))
        self.read(c)
        if c.reply == "OK":
            self.inc.db = int(target)
        return c

    def op_select(self):
        """An excursion to db 1 (same key names, other values) and back; the way back
        is sometimes a SELECT Redis refuses (00, 01, -0): the connection stays in db 1."""
        r = self.rng
        if self.inc.db == 0:
            self.select(r.choice([b"1", b"1", b"1", b"00", b"+1"]))
        if self.inc.db != 1:
            return
        for _ in range(r.randint(1, 5)):
            r.choice([self.op_get, self.op_get, self.op_get, self.op_set, self.op_set,
                      self.op_del, self.op_mset, self.op_append])()
        self.select(r.choice([b"0", b"0", b"0", b"00", b"01", b"-0"]))

    def op_multi(self):
        r = self.rng
        multi = self.cmd(b"MULTI")
        inner = [self.cmd(*self.simple()) for _ in range(r.randint(1, 4))]
        end = self.cmd(b"EXEC" if r.random() < 0.8 else b"DISCARD")
        for c in inner:
            c.queued = True
        allc = [multi] + inner + [end]
        if r.random() < 0.5:
            self.send(allc)
        else:
            for c in allc:
                self.send([c])
        self.read(multi)
        if multi.reply != "OK":
            for c in inner:
                c.queued = False
        ok_inner = []
        for c in inner:
            rep = self.read_queued(c)
            if c.queued and rep == "QUEUED":
                ok_inner.append(c)
            elif c.queued:
                c.queued = False      # refused at queueing time (NOPERM, NOAUTH...)
        self.read(end)
        if end.name == b"EXEC" and isinstance(end.reply, list):
            if len(end.reply) != len(ok_inner):
                raise Desync(end, "EXEC returned %d replies for %d queued commands" % (
                    len(end.reply), len(ok_inner)))
            for c, rep in zip(ok_inner, end.reply):
                c.reply, c.t_reply, c.answered = rep, end.t_reply, True
        self.dirty_hint = max(self.dirty_hint, 0.5)

    def read_queued(self, c):
        if not c.queued:
            return self.read(c)
        deadline = time.time() + self.fz.reply_timeout
        v = self._reply(deadline, c)
        while isinstance(v, Push):
            self.aside(v, c)
            v = self._reply(deadline, c)
        c.t_reply = time.time()
        c.proto = self.inc.proto
        if v == "QUEUED":
            c.reply = None
            return v
        if not isinstance(v, Err):
            raise Desync(c, "queued command answered %s, not +QUEUED" % short(v))
        c.reply, c.answered = v, True
        return v

    SCRIPTS = [
        (b"redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])", 1, 1),
        (b"return redis.call('INCR', KEYS[1])", 1, 0),
        (b"redis.call('DEL', KEYS[1]) redis.call('SET', KEYS[2], ARGV[1]) return 1", 2, 1),
        (b"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1", 1, 2),
    ]

    def op_eval(self):
        r = self.rng
        i = r.randrange(len(self.SCRIPTS))
        src, nkeys, nargs = self.SCRIPTS[i]
        if i == 1:
            ks = [self.keys.counters[self.wid]]
        elif i == 3:
            ks = [r.choice(self.keys.ttl)]
        else:
            ks = r.sample(self.keys.strings, nkeys)
        args = [self.uval()] + ([b"%d" % r.randint(100, 1500)] if nargs == 2 else [])
        self.one(b"EVAL", src, b"%d" % nkeys, *(ks + args[:nargs]))

    def op_pipeline(self):
        cs = [self.cmd(*self.simple(), how="pipelined") for _ in range(self.rng.randint(2, 6))]
        self.send(cs, self.rng.choice(["one", "one", "split"]))
        for c in cs:
            self.read(c)

    def op_get_batch(self):
        """Pipelined GETs alone, of keys a cache may hold: BRC answers the segment as
        one batch when it can (brc_serve_batch), or it all goes to Redis."""
        r = self.rng
        kinds = [b"GET"] * r.randint(2, 8)
        if r.random() < 0.4:
            # MGETs too: answered as one array when every key is cached (and the user may)
            kinds = r.choice([[b"MGET"], kinds[:1] + [b"MGET"], [b"MGET"] + kinds])
        # made in the order they are sent: the oracle aligns commands with MONITOR in
        # the order they were made
        cs = [self.cmd(b"GET", self.get_key(), how="batch") if k == b"GET" else
              self.cmd(b"MGET", *[self.get_key() for _ in range(r.randint(1, 8))], how="batch")
              for k in kinds]
        self.send(cs, r.choice(["one", "one", "one", "split"]))
        for c in cs:
            self.read(c)

    def op_split(self):
        c = self.cmd(*self.simple(), how="split")
        self.send([c], "split")
        self.read(c)

    def op_inline(self):
        r = self.rng
        k = r.choice(self.keys.strings)
        p = r.random()
        if p < 0.4:
            argv = [b"SET", k, self.uval()]
        elif p < 0.75:
            argv = [b"GET", self.get_key()]
        elif p < 0.85:
            argv = [b"DEL", k]
        else:
            argv = [b"APPEND", k, b"+" + self.uval()]
        variant = r.random()
        if variant < 0.15 and argv[0] != b"GET":
            # a CR inside the line: Redis splits there (BRC review D4)
            wire = argv[0] + b" " + argv[1] + b"\r" + b" ".join(argv[2:]) + b"\r\n"
            how = "inline-cr"
        elif variant < 0.2:
            # a leading space before '*': Redis reads every line as an inline command
            lines = encode(*argv).split(b"\r\n")[:-1]
            wire = b" " + encode(*argv)
            cs = []
            for ln in lines:
                words = ln.split()
                if words:
                    cs.append(self.cmd(*words, wire=b"", how="space-star"))
            cs[0].wire = wire
            for c in cs:
                c.expect_err = True
            self.send(cs)
            for c in cs:
                self.read(c)
            self.dirty_hint = max(self.dirty_hint, 0.5)
            return
        else:
            lead = r.choice([b"", b"", b" ", b"\x0b", b"\x0c", b"\t"])
            sep = r.choice(WHITESPACE)
            trail = r.choice([b"", b"", b" ", b"\t"])
            wire = lead + sep.join(argv) + trail + r.choice([b"\r\n", b"\r\n", b"\n"])
            how = "inline"
        c = self.cmd(*wire.split(), wire=wire, how=how)
        self.send([c], r.choice(["one", "one", "split"]))
        self.read(c)
        if any(b in wire[:-1].rstrip(b"\r") for b in (b"\t", b"\x0b", b"\x0c", b"\r")):
            # BRC does not follow this inline form: it gives the connection up with
            # everything held in flight while it stays open. Close it soon, as a
            # program that sent it once would not be a long-lived pooled client.
            self.dirty_hint = max(self.dirty_hint, 0.5)

    def op_subscribe(self):
        r = self.rng
        chans = r.sample(self.keys.channels, r.randint(1, 3))
        sink = r.random() < 0.4
        if sink:
            cid = self.one(b"CLIENT", b"ID").reply
            chans.append(b"__redis__:invalidate")
        c = self.pubsub(b"SUBSCRIBE", chans)
        if sink and isinstance(cid, int) and not isinstance(c.reply, Err):
            self.inc.pushes_tracking = True     # RESP3: invalidations as pushes
            with self.board.lock:
                self.board.sinks[cid] = self.wid
            self.inc.sink_id = cid
        self.dirty_hint = 0.0

    def op_sink3(self):
        """A RESP3 connection, not subscribed, that other connections' CLIENT TRACKING
        REDIRECTs to: Redis pushes their invalidations here (>2 invalidate), between
        the replies of a connection BRC may serve."""
        if self.inc.proto != 3 or self.inc.sink_id is not None:
            return
        cid = self.one(b"CLIENT", b"ID").reply
        if type(cid) is int:
            self.inc.pushes_tracking = True
            self.inc.sink_id = cid
            with self.board.lock:
                self.board.sinks[cid] = self.wid

    def op_publish(self):
        self.one(b"PUBLISH", self.rng.choice(self.keys.channels), self.uval())

    # Scripts whose replies take RESP3's types (RESP2: their RESP2 forms), to put every
    # type between the GETs of a served connection: (source, RESP2 reply, RESP3 reply)
    TYPE_SCRIPTS = [
        (b"redis.setresp(3) return {double=3.5}", b"3.5", Double(3.5)),
        (b"redis.setresp(3) return {double=1/0}", b"inf", Double("inf")),
        (b"redis.setresp(3) return true", 1, Bool(True)),
        (b"redis.setresp(3) return false", 0, Bool(False)),
        (b"redis.setresp(3) return {big_number='1234567890123456789012345678901234567890'}",
         b"1234567890123456789012345678901234567890",
         Big("1234567890123456789012345678901234567890")),
        (b"redis.setresp(3) return {map={a={1,'x',{double=0.5}}}}", [b"a", [1, b"x", b"0.5"]],
         Map({b"a": [1, b"x", Double(0.5)]})),
        (b"redis.setresp(3) return {set={m=true}}", [b"m"], Set3([b"m"])),
        (b"redis.setresp(3) return {verbatim_string={format='txt',string='hi'}}", b"hi",
         Verbatim(b"txt", b"hi")),
        (b"return false", None, None),
        (b"return {1, false, 'x'}", [1, None, b"x"], [1, None, b"x"]),
        (b"redis.setresp(3) return {1, false, {map={}}}", [1, 0, []], [1, Bool(False), Map()]),
    ]

    def op_types(self):
        """Replies of RESP3's types (RESP2's forms on a RESP2 connection): scripts,
        HGETALL (map), SMEMBERS (set), ZSCORE (double, nil), CLIENT INFO (verbatim),
        each known exactly here."""
        r, k, w = self.rng, self.keys, self.wid
        p = r.random()
        if p < 0.5:
            src, two, three = r.choice(self.TYPE_SCRIPTS)
            c = self.one(b"EVAL", src, b"0")
            return self.typed(c, two, three)
        if p < 0.9:
            if p < 0.65:
                v1, v2 = self.uval(), self.uval()
                cs = [self.cmd(b"HSET", k.hashes[w], b"f1", v1, b"f2", v2),
                      self.cmd(b"HGETALL", k.hashes[w])]
                two, three = [b"f1", v1, b"f2", v2], Map({b"f1": v1, b"f2": v2})
            elif p < 0.8:
                cs = [self.cmd(b"SADD", k.sets[w], b"a", b"b"), self.cmd(b"SMEMBERS", k.sets[w])]
                two, three = [b"a", b"b"], Set3([b"a", b"b"])
            else:
                score = r.choice([b"1.5", b"-2.25", b"3"])
                cs = [self.cmd(b"ZADD", k.zsets[w], score, b"m"),
                      self.cmd(b"ZSCORE", k.zsets[w], r.choice([b"m", b"m", b"nom"]))]
                two, three = score, Double(score.decode())
                if cs[1].argv[2] == b"nom":
                    two = three = None
            self.send(cs, r.choice(["one", "one", "split"]))
            for c in cs:
                self.read(c)
            if not isinstance(cs[0].reply, Err):
                self.typed(cs[1], two, three, unordered={b"HGETALL": "pairs",
                                                         b"SMEMBERS": "set"}.get(cs[1].name))
            return
        self.one(b"CLIENT", b"INFO")

    def typed(self, c, two, three, unordered=False):
        """c's reply must be exactly @two (RESP2) or @three (RESP3), types included."""
        if isinstance(c.reply, Err) or c.reply is NOREPLY:
            return
        want = three if c.proto == 3 else two
        if not typed_equal(want, c.reply, unordered):
            raise Desync(c, "Redis answers %s in RESP%d, got %s" % (short(want), c.proto,
                                                                     short(c.reply)),
                         kind="wrong_protocol")

    def blocking(self, with_unsub):
        """A blocking command with a short timeout, maybe behind an UNSUBSCRIBE of
        channels this connection never subscribed (one reply per channel), maybe with
        GETs sent while it blocks, maybe released by another connection's push."""
        r = self.rng
        src = r.choice(self.keys.lists)
        timeout = r.choice([b"0.1", b"0.2", b"0.3"])
        if r.random() < 0.6:
            blk = self.cmd(b"BLMOVE", src, r.choice(self.keys.lists), r.choice([b"LEFT", b"RIGHT"]),
                           r.choice([b"LEFT", b"RIGHT"]), timeout)
        else:
            blk = self.cmd(b"BLPOP", src, timeout)
        cs = [blk]
        if with_unsub:
            chans = r.sample(self.keys.channels, r.randint(2, 3))
            un = self.pubsub(b"UNSUBSCRIBE", chans, send=False)
            cs = [un, blk]
            self.inc.cmds.remove(blk)
            self.inc.cmds.append(blk)
        self.send(cs)
        if with_unsub:
            self.pubsub_read(un)
        if r.random() < 0.6:
            with self.board.lock:
                self.board.push_wanted.append(src)
        gets = []
        if r.random() < 0.7:
            for _ in range(r.randint(1, 2)):
                g = self.cmd(b"GET", self.get_key(), how="behind-blocking")
                self.send([g])
                gets.append(g)
                if with_unsub:
                    with self.board.lock:
                        self.board.behind_unsub[g.argv[1]].append(g.t_send)
                time.sleep(0.002)
        self.read(blk, extra=float(timeout))
        for g in gets:
            self.read(g)
        if with_unsub:
            self.dirty_hint = max(self.dirty_hint, 0.5)

    def op_unsub_block(self):
        self.blocking(True)

    def op_block(self):
        self.blocking(False)

    def op_push(self):
        with self.board.lock:
            want = self.board.push_wanted.pop(0) if self.board.push_wanted else None
        key = want or self.rng.choice(self.keys.lists)
        self.one(self.rng.choice([b"LPUSH", b"RPUSH"]), key, self.uval())

    def op_client_reply(self):
        r = self.rng
        if self.inc.cauth is not True:
            return          # a refused CLIENT REPLY OFF is answered: count unknowable
        # sometimes a HELLO whose reply is suppressed: Redis switches all the same,
        # and nothing on the wire says so
        hello = [b"HELLO", self.pick_proto()] if r.random() < 0.3 else None
        if r.random() < 0.5:
            cs = [self.cmd(b"CLIENT", b"REPLY", b"OFF")]
            cs += [self.cmd(*self.simple()) for _ in range(r.randint(1, 3))]
            if hello:
                cs.insert(r.randint(1, len(cs)), self.cmd(*hello))
            cs.append(self.cmd(b"CLIENT", b"REPLY", b"ON"))
        else:
            cs = [self.cmd(b"CLIENT", b"REPLY", b"SKIP"), self.cmd(*(hello or self.simple())),
                  self.cmd(b"PING")]
        for c in cs:                # inc.cmds in the order sent
            if c.name == b"HELLO":
                self.inc.cmds.remove(c)
                self.inc.cmds.insert(self.inc.cmds.index(cs[0]) + cs.index(c), c)
        if r.random() < 0.5:
            self.send(cs)
        else:
            for c in cs:
                self.send([c])
                time.sleep(0.001)
        for c in cs:
            self.read(c)
        self.dirty_hint = max(self.dirty_hint, 0.5)

    def op_tracking(self):
        r = self.rng
        if self.inc.tracking and r.random() < 0.5:
            c = self.one(b"CLIENT", b"TRACKING", b"OFF")
            if c.reply == "OK":
                self.inc.tracking = False
            return
        if self.inc.proto == 3 and r.random() < 0.6:
            # RESP3: invalidations come as pushes on this very connection, between
            # (never inside) its replies, from its own writes and everyone else's
            argv = [b"CLIENT", b"TRACKING", b"ON"]
            if r.random() < 0.3:
                argv += [b"BCAST", b"PREFIX", self.keys.tag]
            elif r.random() < 0.3:
                argv.append(b"NOLOOP")
            self.inc.pushes_tracking = True
            c = self.one(*argv)
            if c.reply == "OK":
                self.inc.tracking = True
                self.dirty_hint = max(self.dirty_hint, 0.3)     # BRC gives it up
            return
        with self.board.lock:
            sinks = list(self.board.sinks)
        if not sinks:
            return
        argv = [b"CLIENT", b"TRACKING", b"ON", b"REDIRECT", b"%d" % r.choice(sinks)]
        if r.random() < 0.3:
            argv += [b"BCAST", b"PREFIX", self.keys.tag]     # every write of the run
        c = self.one(*argv)
        if c.reply == "OK":
            self.inc.tracking = True
            self.inc.pushes_tracking = True     # tracking-redir-broken (RESP3)
            self.dirty_hint = max(self.dirty_hint, 0.3)     # BRC gives it up

    def op_reset(self):
        # a GET behind RESET runs as RESET leaves the connection: db 0, user default
        inc = self.inc
        behind = inc.proto == 3 and inc.db == 0 and inc.user == "default" and \
            inc.cauth is True and self.rng.random() < 0.35
        c = self.one_behind([b"RESET"], behind)
        self.after_reset(c)
        if self.prefer3 and self.inc.cauth and self.rng.random() < 0.6:
            self.hello3()       # RESET went back to RESP2

    def after_reset(self, c):
        inc = self.inc
        inc.db, inc.user, inc.tracking = 0, "default", False
        inc.channels.clear()
        inc.patterns.clear()
        rp = self.board.requirepass.possible(c.t_send, c.t_reply)
        inc.cauth = (rp == {False}) if len(rp) == 1 else None
        self.dirty_hint = 0.0

    def pick_proto(self):
        """The version a HELLO asks for: mostly 3 on a connection meant to run RESP3."""
        return b"3" if self.rng.random() < (0.8 if self.prefer3 else 0.25) else b"2"

    def auth_as(self, user, pw, hello, proto=None):
        if pw is None:
            pw = DEFAULT_PW if user == "default" else USERS[user]
        if hello:
            c = self.one(b"HELLO", proto or self.pick_proto(), b"AUTH", user.encode(), pw)
            ok = not isinstance(c.reply, Err)
        elif user == "default" and self.rng.random() < 0.5:
            c = self.one(b"AUTH", pw)
            ok = c.reply == "OK"
        else:
            c = self.one(b"AUTH", user.encode(), pw)
            ok = c.reply == "OK"
        if ok:
            self.inc.user, self.inc.cauth = user, True
        return c

    def maybe_back_to_default(self):
        """Restricted users' GETs are never answered by a fail-closed BRC: keep them to
        excursions so that the cache stays reachable."""
        if self.inc.user in ("fzguest", "fzro") and self.rng.random() < 0.12:
            if self.rng.random() < 0.3:
                self.op_reset()
            else:
                self.auth_as(self.rng.choice(["default", "fzadmin"]),
                             None, hello=self.rng.random() < 0.3)

    def op_auth(self):
        r = self.rng
        user = r.choice(["default", "fzadmin", "fzguest", "fzguest", "fzro"])
        pw = DEFAULT_PW if user == "default" else USERS[user]
        if r.random() < 0.2:
            pw = b"wrong-" + pw
        self.auth_as(user, pw, hello=r.random() < 0.3)

    def hello3(self, with_get=False):
        """HELLO 3 (sometimes pipelined with a GET, whose reply is RESP3 already)."""
        extra = [b"SETNAME", b"fz%d" % self.wid] if self.rng.random() < 0.2 else []
        self.one_behind([b"HELLO", b"3"] + extra, with_get)

    def one_behind(self, argv, with_get):
        """A command that changes the protocol (HELLO, RESET), maybe with a GET sent
        behind it before its reply: in the same write, or alone in the next one (a GET
        BRC could answer, whose reply must be in the protocol the first one puts the
        connection in)."""
        first = self.cmd(*argv)
        if not with_get:
            self.send([first])
            self.read(first)
            return first
        how = self.rng.choice(["same-write", "next-write"])
        g = self.cmd(b"GET", self.get_key(), how="behind-%s-%s" % (first.name.decode().lower(),
                                                                  how))
        if first.name == b"RESET":
            g.subscribed, g.tracking = False, False    # it runs after RESET (db 0, default)
        if how == "same-write":
            self.send([first, g])
        else:
            self.send([first])
            self.send([g])
        self.read(first)
        self.read(g)
        return first

    def op_hello3(self):
        if self.inc.proto != 3:
            self.hello3(with_get=self.rng.random() < 0.3)

    def op_hello(self):
        """HELLO 2|3, with AUTH (sometimes a wrong password), without a version (an
        answer in the current protocol, no change) or with one Redis refuses."""
        r = self.rng
        p = r.random()
        if p < 0.1:
            self.one(b"HELLO")
        elif p < 0.15:
            self.one(b"HELLO", r.choice([b"4", b"1", b"03"]))
            self.dirty_hint = max(self.dirty_hint, 0.5)         # BRC gives it up
        elif p < 0.25:
            # inline, any case, odd blanks: Redis reads HELLO <v> all the same
            wire = r.choice([b"", b" "]) + r.choice([b"HELLO", b"hello", b"Hello"]) + \
                r.choice([b" ", b"  "]) + self.pick_proto() + r.choice([b"", b" ", b"  "]) + \
                r.choice([b"\r\n", b"\r\n", b"\n"])
            c = self.cmd(*wire.split(), wire=wire, how="inline")
            self.send([c], r.choice(["one", "split"]))
            self.read(c)
        elif p < 0.5:
            user = r.choice(["default", "fzadmin", "fzadmin", "fzguest", "fzro"])
            pw = DEFAULT_PW if user == "default" else USERS[user]
            if r.random() < 0.15:
                pw = b"wrong-" + pw
            self.auth_as(user, pw, hello=True)
        else:
            self.one_behind([b"HELLO", self.pick_proto()], r.random() < 0.35)

    def op_acl(self):
        r = self.rng
        if not self.board.may_change_auth():
            return
        with self.board.acl_lock:
            if r.random() < 0.5:
                user, new = "fzguest", not self.board.rights["fzguest"].current()
                rule = [b"resetkeys", b"~public:*"] + ([b"~" + self.keys.widened] if new else [])
            else:
                user, new = "fzro", not self.board.rights["fzro"].current()
                rule = [b"+get" if new else b"-get"]
            c = self.cmd(b"ACL", b"SETUSER", user.encode(), *rule)
            tl = self.board.rights[user]
            i = tl.begin(time.time(), new)
            self.send([c])
            self.read(c)            # no reply: the change stays possible for good
            tl.finish(i, c.t_reply, c.reply == "OK")

    def op_config_timeout(self):
        if not self.board.may_change_auth():
            return
        if not self.board.config_lock.acquire(False):
            return
        try:
            c = self.one(b"CONFIG", b"SET", b"timeout", b"%d" % self.rng.randint(2, 4))
            if c.reply != "OK":
                return
            try:
                for _ in range(self.rng.randint(5, 30)):
                    self.op_get() if self.rng.random() < 0.7 else self.op_set()
            finally:
                if self.sock is not None:
                    self.one(b"CONFIG", b"SET", b"timeout", b"0")
        finally:
            self.board.config_lock.release()

    def op_requirepass(self):
        """A short window with a password on the default user: new connections must get
        NOAUTH (never a cached value) until they authenticate."""
        if self.inc.user not in ("default", "fzadmin") or not self.inc.cauth:
            return
        if not self.board.may_change_auth():
            return
        if not self.board.auth_lock.acquire(timeout=0.5):
            return
        try:
            c = self.cmd(b"CONFIG", b"SET", b"requirepass", DEFAULT_PW)
            tl = self.board.requirepass
            i = tl.begin(time.time(), True)
            self.send([c])
            self.read(c)
            tl.finish(i, c.t_reply, c.reply == "OK")
            if c.reply != "OK":
                return
            try:
                main = (self.sock, self.inc, self.buf, self.reply_off, self.skip_next,
                        self.prefer3)
                try:
                    self.connect(auto_auth=False)   # a fresh connection: NOAUTH until AUTH
                    for _ in range(self.rng.randint(2, 8)):
                        self.op_get()
                    if self.rng.random() < 0.5:
                        self.auth_as("default", DEFAULT_PW, hello=False)
                        self.op_get()
                    self.close("fin")
                finally:
                    if self.sock is not None:
                        self.close("rst")
                    (self.sock, self.inc, self.buf, self.reply_off, self.skip_next,
                     self.prefer3) = main
            finally:
                c = self.cmd(b"CONFIG", b"SET", b"requirepass", b"")
                i = tl.begin(time.time(), False)
                self.send([c])
                self.read(c)
                tl.finish(i, c.t_reply, c.reply == "OK")
        finally:
            self.board.auth_lock.release()

    def op_quit(self):
        c = self.cmd(b"QUIT")
        self.send([c])
        self.read(c)
        self.inc.close_kind = "quit"
        deadline = time.time() + self.fz.reply_timeout
        try:
            self._reply(deadline)
            raise Desync(c, "bytes after QUIT's +OK")
        except Closed:
            pass
        except Stall:
            raise Stall("connection not closed after QUIT")
        self.close("quit")

    def op_rst(self):
        if self.dirty_hint and self.rng.random() < 0.8:
            # a given-up connection that still holds write marks makes a client RST
            # hold everything host-wide for max_age: mostly close those with a FIN
            self.close("fin")
            return
        if self.rng.random() < 0.5:
            c = self.cmd(*self.simple())
            self.send([c])
            if self.rng.random() < 0.5:
                time.sleep(0.001)
        self.inc.close_kind = "rst"
        self.close("rst")

    # -- subscribed-mode ops
    def sub_count(self):
        return len(self.inc.channels) + len(self.inc.patterns)

    def sub_ping(self):
        self.one(b"PING")

    def sub_get(self):
        self.one(b"GET", self.get_key())

    def sub_publish(self):
        mine = sorted(self.inc.channels - {b"__redis__:invalidate"})
        ch = self.rng.choice(mine) if mine and self.rng.random() < 0.6 else \
            self.rng.choice(self.keys.channels)
        self.one(b"PUBLISH", ch, self.uval())

    def sub_subscribe(self):
        self.pubsub(b"SUBSCRIBE", self.rng.sample(self.keys.channels, self.rng.randint(1, 2)))

    def sub_psubscribe(self):
        self.pubsub(b"PSUBSCRIBE", [self.keys.tag + b":ch:*"])

    def sub_unsubscribe(self, everything=False):
        if everything or self.rng.random() < 0.3:
            chans = []
        else:
            chans = self.rng.sample(self.keys.channels, self.rng.randint(1, 2))
        self.pubsub(b"UNSUBSCRIBE", chans)
        if b"__redis__:invalidate" not in self.inc.channels:
            self.drop_sink()

    def sub_punsubscribe(self, everything=False):
        self.pubsub(b"PUNSUBSCRIBE", [])

    def pubsub(self, verb, args, send=True):
        """A (P)(UN)SUBSCRIBE whose every reply is known here exactly."""
        c = self.cmd(verb, *args)
        c.expect = subs_expect(verb, args, self.inc.channels, self.inc.patterns)
        if send:
            self.send([c])
            self.pubsub_read(c)
        return c

    def pubsub_read(self, c):
        exp, _unordered, chans, pats = c.expect
        self.read(c, n=len(exp))
        if not isinstance(c.reply, Err):
            self.inc.channels, self.inc.patterns = chans, pats

    def drop_sink(self):
        sid = self.inc.sink_id if self.inc is not None else None
        if sid is not None:
            with self.board.lock:
                self.board.sinks.pop(sid, None)
            self.inc.sink_id = None

    def sub_wait(self):
        time.sleep(self.rng.choice([0.001, 0.005, 0.02]))
        self.quiet()

    def sub_leave(self):
        if self.inc.patterns:
            self.sub_punsubscribe(True)
        if self.inc.channels or not self.inc.patterns:
            self.sub_unsubscribe(True)
        self.dirty_hint = max(self.dirty_hint, 0.6)

    def sub_reset(self):
        self.drop_sink()
        self.op_reset()
        self.dirty_hint = 0.5

    def sub_quit(self):
        self.drop_sink()
        self.op_quit()


class Desync(Exception):
    def __init__(self, cmd, why, kind="protocol"):
        super().__init__(why)
        self.cmd, self.why, self.kind = cmd, why, kind


SUBS = {b"SUBSCRIBE", b"UNSUBSCRIBE", b"PSUBSCRIBE", b"PUNSUBSCRIBE"}
AUTH_ERRORS = ("NOPERM", "NOAUTH")


REFUSALS = ("NOPERM", "NOAUTH Authentication required", "ERR unknown command", "ERR wrong number of arguments",
            "ERR Can't execute", "ERR Command not allowed inside a transaction")


def refused(reply):
    """Errors Redis gives before executing a command (MONITOR does not show it)."""
    return isinstance(reply, Err) and reply.startswith(REFUSALS)


def shape_error(c, inc):
    """Why reply is not what Redis gives to c in this connection's state, or None."""
    v, name = c.reply, c.name
    subscribed = c.subscribed
    restricted = subscribed and c.proto == 2   # RESP3 lets a subscriber send anything
    if isinstance(v, Err):
        if c.expect_err or v.startswith(AUTH_ERRORS):
            return None
        if restricted and name not in SUBS | {b"PING", b"RESET", b"QUIT"}:
            return None if "only (P|S)SUBSCRIBE" in v else "unexpected error %s" % short(v)
        if name == b"SELECT" and c.argv[1:] not in ([b"0"], [b"1"]):
            return None
        return None if name not in (b"PING", b"ECHO", b"RESET", b"QUIT", b"CLIENT") or \
            v.startswith("ERR") else "unexpected error %s" % short(v)
    if c.expect_err:
        return "an error expected, got %s" % short(v)
    if restricted and name not in SUBS | {b"PING", b"RESET", b"QUIT"}:
        return "a command other than (UN)SUBSCRIBE/PING/RESET/QUIT in subscribed mode " \
            "must be refused (RESP2), got %s" % short(v)
    kinds = {
        b"GET": (bytes, type(None)), b"GETSET": (bytes, type(None)),
        b"GETDEL": (bytes, type(None)), b"GETEX": (bytes, type(None)),
        b"DEL": int, b"UNLINK": int, b"INCR": int, b"APPEND": int, b"EXPIRE": int,
        b"PEXPIRE": int, b"PERSIST": int, b"RENAMENX": int, b"COPY": int, b"LPUSH": int,
        b"RPUSH": int, b"PUBLISH": int, b"SETEX": Simple, b"PSETEX": Simple, b"MSET": Simple,
        b"RENAME": Simple, b"MULTI": Simple, b"DISCARD": Simple, b"AUTH": Simple,
        b"ACL": Simple, b"CONFIG": Simple, b"QUIT": Simple, b"RESET": Simple,
        b"SELECT": Simple, b"EXEC": (list, type(None)), b"HELLO": (list, Map),
        b"BLPOP": (list, type(None)), b"BLMOVE": (bytes, type(None)),
        b"SET": (Simple, bytes, type(None)),
    }
    if name in SUBS:
        return None               # pubsub() knows them exactly
    if name == b"PING":
        if restricted:
            return None if v == [b"pong", b""] else "PING in subscribed mode: %s" % short(v)
        return None if v == "PONG" else "PING answered %s" % short(v)
    if name == b"ECHO":
        return None if v == c.argv[1] else "ECHO answered %s" % short(v)
    if name == b"RESET":
        return None if v == "RESET" else "RESET answered %s" % short(v)
    if name == b"CLIENT":
        sub = c.argv[1].upper() if len(c.argv) > 1 else b""
        if sub == b"ID":
            return None if type(v) is int else "CLIENT ID answered %s" % short(v)
        if sub == b"INFO":
            form = Verbatim if c.proto == 3 else bytes
            return None if type(v) is form and (v.format == b"txt" if form is Verbatim else
                                                True) else "CLIENT INFO answered %s" % short(v)
        return None if v == "OK" else "CLIENT %s answered %s" % (sub.decode(), short(v))
    if name == b"SET" and isinstance(v, bytes) and b"GET" not in [a.upper() for a in c.argv[3:]]:
        return "SET without GET answered a bulk string %s" % short(v)
    if name == b"SET" and isinstance(v, Simple) and v != "OK":
        return "SET answered %s" % short(v)
    want = kinds.get(name)
    if want is not None and not isinstance(v, want):
        return "%s answered %s" % (name.decode(), short(v))
    if want is not None and isinstance(v, (Set3, Push)):
        return "%s answered a RESP3 %s" % (name.decode(), short(v))
    if want is Simple and v not in ("OK",) and name not in (b"QUIT",):
        return "%s answered %s" % (name.decode(), short(v))
    return None


def subs_expect(verb, args, channels, patterns):
    """Redis's replies to a (P)(UN)SUBSCRIBE: (replies, unordered, channels after,
    patterns after). UNSUBSCRIBE without arguments answers in Redis's dict order."""
    ch, pa = set(channels), set(patterns)
    kind = verb.lower()
    target = ch if verb in (b"SUBSCRIBE", b"UNSUBSCRIBE") else pa
    out, unordered = [], False
    if verb in (b"SUBSCRIBE", b"PSUBSCRIBE"):
        for a in args:
            target.add(a)
            out.append([kind, a, len(ch) + len(pa)])
    elif args:
        for a in args:
            target.discard(a)
            out.append([kind, a, len(ch) + len(pa)])
    elif not target:
        out.append([kind, None, len(ch) + len(pa)])
    else:
        unordered = True
        for a in sorted(target):
            target.discard(a)
            out.append([kind, a, len(ch) + len(pa)])
    return out, unordered, ch, pa


def typed_equal(a, b, unordered=False):
    """Equal values of the same RESP types, all the way down; @unordered: a set's (or a
    map's RESP2 array's pairs') order does not matter."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Map):
        return a.keys() == b.keys() and all(typed_equal(a[x], b[x]) for x in a)
    if isinstance(a, list):
        if len(a) != len(b):
            return False
        if unordered == "pairs":
            a, b = [list(p) for p in zip(a[::2], a[1::2])], [list(p) for p in zip(b[::2], b[1::2])]
        if unordered:
            a, b = sorted(a, key=repr), sorted(b, key=repr)
        return all(typed_equal(x, y) for x, y in zip(a, b))
    return a == b


def expect_error(c):
    """Why c's reply is not exactly c.expect, or None."""
    v = c.reply
    exp, unordered = c.expect[0], c.expect[1]
    if isinstance(v, Err):
        return None if v.startswith(AUTH_ERRORS) else "unexpected error %s" % short(v)
    got = v if len(exp) > 1 else [v]
    if unordered and isinstance(got, list) and len(got) == len(exp) and \
            all(isinstance(g, list) and len(g) == 3 for g in got):
        same = [g[2] for g in got] == [e[2] for e in exp] and \
            [g[0] for g in got] == [e[0] for e in exp] and \
            sorted(g[1] for g in got) == sorted(e[1] for e in exp)
    else:
        same = got == exp
    if same:
        return None
    return "Redis answers %s, got %s" % (short(exp), short(v))


# ------------------------------------------------------------------------ oracle


class Oracle:
    """Consumes epochs: MONITOR lines (Redis's order) and the commands sent meanwhile."""

    def __init__(self, board, model, kernel_may_answer=True):
        self.board, self.model = board, model
        self.kernel_may_answer = kernel_may_answer
        self.stats = Counter()
        self.by_how = Counter()          # GETs answered in the kernel, by the way sent

    def epoch(self, lines, t_start):
        b, m = self.board, self.model
        for line in lines:
            m.apply(line)
        by_addr = defaultdict(list)
        for line in lines:
            if line.src != "lua":
                by_addr[line.src].append(line)
        with b.lock:
            incs = list(b.incarnations)
        # a local port can be reused by a later connection: a line belongs to the
        # newest connection of that address opened before it
        owner = defaultdict(list)
        same = defaultdict(list)
        for inc in incs:
            if inc.addr:
                same[inc.addr].append(inc)
        for addr, group in same.items():
            group.sort(key=lambda i: i.t_open)
            starts = [i.t_open - 0.001 for i in group]
            for line in by_addr.pop(addr, []):
                k = bisect.bisect_right(starts, line.ts) - 1
                if k >= 0:
                    owner[group[k].id].append(line)
                else:
                    by_addr[addr].append(line)
        for inc in incs:
            cmds = inc.cmds[inc.done:]
            self.align(inc, cmds, owner.get(inc.id, []))
            for c in cmds:
                self.check(inc, c)
            inc.done += len(cmds)
        # lines of connections that are not workers': set-up, markers, the auth loader
        self.stats["lines_of_other_clients"] += sum(len(ls) for ls in by_addr.values())
        m.prune(t_start - 10.0)
        with b.lock:
            keep = [i for i in b.incarnations if i.t_close is None or i.done < len(i.cmds)]
            for i in b.incarnations:
                if i not in keep:
                    self.stats["connections"] += 1
                    self.stats["connections_resp3"] += i.ever3
            b.incarnations = keep
            for inc in b.incarnations:      # workers are paused: keep a little history
                cut = max(0, inc.done - HISTORY)
                if cut:
                    del inc.cmds[:cut]
                    inc.done -= cut

    def align(self, inc, cmds, lines):
        j, n = 0, len(lines)
        for idx, c in enumerate(cmds):
            if c.t_send is None:
                continue
            form = monitor_form(c.argv)
            while j < n and lines[j].ts < c.t_send - 0.001:
                self.unexpected(inc, lines[j])
                j += 1
            if form is None or j >= n or (c.answered and refused(c.reply)):
                continue
            upper = c.t_reply
            if upper is None:
                later = [x.t_reply for x in cmds[idx + 1:] if x.t_reply is not None]
                upper = later[0] if later else (inc.t_close or time.time()) + 2.0
            # Redis runs a command before its reply is read (one clock): no slack after
            # t_reply, or the next command's line, sent right after a reply answered in
            # the kernel, is taken for this one's
            nxt = next((x.t_send for x in cmds[idx + 1:] if x.t_send is not None), None)
            if c.t_reply is not None and nxt is not None and nxt >= c.t_reply:
                upper = min(upper, nxt)
            line = lines[j]
            if line.ts <= upper and [a.upper() for a in line.argv[:1]] == [c.name] and \
                    line.argv[1:] == form[1:]:
                c.line, line.cmd = line, c
                j += 1
        for line in lines[j:]:
            self.unexpected(inc, line)

    def unexpected(self, inc, line):
        if tuple(line.argv) in inc.late:
            self.stats["late_lines"] += 1
            return
        self.board.violation("unexpected_command", inc,
                             "Redis executed %s (db %d, %.6f) that this connection did not "
                             "send at that point" % (" ".join(short(a, 30) for a in line.argv),
                                                     line.db, line.ts))

    def check(self, inc, c):
        s = self.stats
        s["cmds"] += 1
        if not c.answered or c.reply is NOREPLY:
            return                      # never answered (RST, suppressed, discarded)
        s["cmds_resp%d" % c.proto] += 1
        if c.name == b"GET" and (not c.subscribed or c.proto == 3) and not c.expect_err:
            return self.check_get(inc, c)
        if c.name == b"MGET" and not c.subscribed and not c.expect_err:
            return self.check_mget(inc, c)
        line = c.line
        if line is None:
            # Not executed by Redis: only a refusal (an error) may have answered it.
            if c.name in SHOWN and not isinstance(c.reply, Err):
                self.board.violation("answer_without_execution", inc,
                                     "a reply %s to a command Redis never executed" %
                                     short(c.reply), c)
            return
        if line.certain and line.pred is not UNKNOWN and not same_reply(line.pred, c.reply):
            self.board.violation("wrong_reply", inc,
                                 "Redis's reply must have been %s" % short(line.pred), c)

    def check_get(self, inc, c):
        s, m = self.stats, self.model
        s["gets"] += 1
        s["gets_resp%d" % c.proto] += 1
        key = c.argv[1]
        if isinstance(c.reply, Err):
            s["gets_refused"] += 1
            return
        line = c.line
        if line is None and c.queued:
            self.board.violation("answer_without_execution", inc, "EXEC answered this queued "
                                 "GET but Redis never executed it", c)
            return
        if line is not None:
            s["gets_executed"] += 1
            if line.db != c.db:
                self.board.violation("oracle", inc, "MONITOR db %d, connection believed %d" %
                                     (line.db, c.db), c)
                return
            if not line.certain or line.pred is UNKNOWN:
                s["gets_unchecked"] += 1
                return
            if not same_reply(line.pred, c.reply) and self.kernel_may_answer and \
                    self.give_line_to_a_later_twin(inc, c, line):
                # Two identical GETs in flight at once (sent behind a blocking command)
                # and one MONITOR line: it is the later one's, and this one was
                # answered in the kernel; check it as such.
                s["gets_executed"] -= 1
                return self.check_get(inc, c)
            if not same_reply(line.pred, c.reply):
                self.board.violation("wrong_value", inc, "Redis held %s for %s in db %d when it "
                                     "executed this GET (%.6f)%s; the key's history: %s" % (
                                         short(line.pred), short(key), c.db, line.ts,
                                         self.origin(c.reply), m.describe(c.db, key, line.ts)), c)
            return
        s["gets_unseen"] += 1
        s["gets_unseen_resp%d" % c.proto] += 1
        if c.how != "resp":
            self.by_how[c.how] += 1
        if c.proto == 3 and inc.pushes:
            s["gets_unseen_after_pushes"] += 1
        if not self.kernel_may_answer:
            self.board.violation("answer_without_execution", inc, "GET answered %s but Redis "
                                 "never executed it (BRC does not answer in this mode)" %
                                 short(c.reply), c)
            return
        # Never reached Redis: answered by BRC. Redis would have answered it only if
        # this connection's user could read the key at some instant of the window.
        if self.forbidden(c, key):
            self.board.violation("acl", inc, "answered %s although user %s%s may not read %s "
                                 "(Redis answers NOPERM/NOAUTH)" % (
                                     short(c.reply), c.user,
                                     "" if c.cauth is not False else " (not authenticated)",
                                     short(key)), c)
            return
        wrong = self.out_of_window(c, key, c.reply)
        if wrong is UNKNOWN:
            s["gets_unchecked"] += 1
        elif wrong:
            self.board.violation("wrong_value", inc, "answered in the kernel with %s; %s" % (
                short(c.reply), wrong), c)

    def out_of_window(self, c, key, value):
        """None when @key held @value at some instant between @c's send and reply (the
        only values an answer Redis never saw may carry); UNKNOWN when the model cannot
        tell; else what the key held then, for the report."""
        m = self.model
        vals, certain = m.window(c.db, key, c.t_send, c.t_reply)
        if value in vals:
            return None
        if not certain:
            return UNKNOWN
        return "%s in db %d held only %s between send and reply%s%s" % (
            short(key), c.db, "/".join(short(v) for v in list(vals)[:4]), self.origin(value),
            m.superseded(c.db, key, value, c.t_send))

    def check_mget(self, inc, c):
        """Each element as a GET of its key would be checked: a value the key held at some
        instant between send and reply; answered in the kernel (no MONITOR line) only
        where BRC answers and the user may read every key."""
        s = self.stats
        s["mgets"] += 1
        if isinstance(c.reply, Err):
            return
        keys = c.argv[1:]
        if not isinstance(c.reply, list) or len(c.reply) != len(keys):
            self.board.violation("wrong_reply", inc, "MGET of %d keys answered %s" % (
                len(keys), short(c.reply)), c)
            return
        if c.line is None:
            s["mgets_unseen"] += 1
            self.by_how["mget"] += 1
            if not self.kernel_may_answer:
                self.board.violation("answer_without_execution", inc, "MGET answered but Redis "
                                     "never executed it (BRC does not answer in this mode)", c)
                return
        for key, v in zip(keys, c.reply):
            if c.line is None and self.forbidden(c, key):
                self.board.violation("acl", inc, "MGET answered %s although user %s may not "
                                     "read %s" % (short(v), c.user, short(key)), c)
                return
            wrong = self.out_of_window(c, key, v)
            if wrong is UNKNOWN:
                s["mget_keys_unchecked"] += 1
            elif wrong:
                self.board.violation("wrong_value", inc, "MGET gave %s; %s" % (short(v), wrong), c)
                return

    @staticmethod
    def give_line_to_a_later_twin(inc, c, line):
        """If @line can be Redis's run of a later identical command of @inc (sent before
        it ran, matched to no line of its own, and whose reply it explains), it is that
        one's: move it there and return True; @c then has no line."""
        for later in inc.cmds[inc.cmds.index(c) + 1:]:
            if later.argv == c.argv and later.line is None and later.t_send is not None and \
                    later.t_send <= line.ts and same_reply(line.pred, later.reply):
                c.line, later.line, line.cmd = None, line, later
                return True
        return False

    def origin(self, value):
        o = self.model.origin.get(value)
        if not o:
            return ""
        return "; that value was written to db %d key %s at %.6f by %s" % o

    def forbidden(self, c, key):
        b = self.board
        rp = b.requirepass.possible(c.t_send, c.t_reply)
        rights = b.rights[c.user].possible(c.t_send, c.t_reply) if c.user in b.rights else {True}
        allowed = set()
        for on in rp:
            for rt in rights:
                ok = user_can_get(c.user, rt, b.keys, key)
                if on and c.cauth is False:
                    ok = False
                if on and c.cauth is None:
                    allowed.add(True)
                allowed.add(ok)
        return allowed == {False}


def guess_finding(kind, inc, c, detail, board):
    """Which finding of the BRC serve review (D1..D19) a violation most likely is: a
    hint for the report, never part of the verdict."""
    hist = inc.cmds[:inc.cmds.index(c) + 1] if c in inc.cmds else inc.cmds
    if kind == "acl":
        return "D3"
    unsub = any(h.name == b"UNSUBSCRIBE" and len(h.argv) > 2 and not h.subscribed
                for h in hist)
    if kind == "protocol":
        return "D1" if unsub else None
    if kind != "wrong_value":
        return None
    if "LPUSH (a list)" in detail:
        return "D1"
    if "inline-cr" in detail:
        return "D4"
    m = re.search(r"written to db (\d+) key (\S+) ", detail)
    if m and int(m.group(1)) != c.db:
        return "D5"
    if m and m.group(2) != c.argv[1].decode("latin-1"):
        return "D1"
    if "expired at" in detail:
        return "D6"
    with board.lock:
        if any(t < c.t_send for t in board.behind_unsub.get(c.argv[1], ())):
            return "D1"
    return None


def same_reply(pred, got):
    if isinstance(pred, Err):
        return isinstance(got, Err) and got.split(" ")[0] == pred.split(" ")[0]
    if isinstance(pred, Simple):
        return isinstance(got, Simple) and str(got) == str(pred)
    return pred == got and type(pred) is type(got) or (pred is None and got is None)


# ------------------------------------------------------------------------ the run


class Fuzz:
    def __init__(self, lab, seconds, seed, connections, label, weights=None,
                 reply_timeout=REPLY_TIMEOUT, kernel_may_answer=True, resp3_share=RESP3_SHARE):
        self.lab = lab
        self.pair = lab.pair
        self.client_ns, self.server_ns = lab.pair.client, lab.pair.server
        self.host, self.port = lab.pair.server_ip, getattr(lab, "port", PORT)
        self.seconds, self.seed, self.connections = seconds, seed, connections
        self.label = label
        self.weights = dict(weights or OPS)
        self.reply_timeout = reply_timeout
        self.resp3_share = resp3_share
        self.sub3_weights = SERVING_SUB3_OPS if kernel_may_answer else SUB3_OPS
        self.stopping = False
        self.deadline = INF
        tag = "fz%s%d" % (label, seed % 10000)
        self.board = Board(Keys(tag, connections), seed)
        self.model = Model(self.board.keys)
        self.oracle = Oracle(self.board, self.model, kernel_may_answer)
        self.marker = 0

    def control(self, *cmds):
        """Commands from the client namespace (through BRC) on a fresh connection."""
        import brc_attach
        with brc_attach.in_netns(self.client_ns):
            s = socket.create_connection((self.host, self.port), timeout=10)
        try:
            buf = bytearray()
            out = []
            for argv in cmds:
                s.sendall(encode(*argv))
                while True:
                    try:
                        v, pos = parse(buf, 0)
                        del buf[:pos]
                        break
                    except Incomplete:
                        chunk = s.recv(65536)
                        if not chunk:
                            raise Closed("control connection closed")
                        buf += chunk
                out.append(v)
            return out
        finally:
            s.close()

    def sync(self):
        """Everything Redis executed so far, in its order."""
        self.marker += 1
        m = b"fzmark:%s:%d" % (self.board.keys.tag, self.marker)
        import brc_attach
        with brc_attach.in_netns(self.server_ns):
            s = socket.create_connection((self.host, self.port), timeout=10)
        try:
            if self.board.requirepass.current():
                s.sendall(encode("AUTH", DEFAULT_PW))
                s.recv(1024)
            s.sendall(encode("ECHO", m))
            s.recv(1024)
        finally:
            s.close()
        return self.monitor.take_until(m)

    def refresh(self, wait_out_holds=False):
        """Load Redis's users into BRC, as the toolkit does about once a second while
        the run goes on (a hold left by a reset is not waited for then: the next one
        loads), and waiting out holds at the end, so the lab serves again after. A lab
        whose host agent is in charge loads them itself, as on a host."""
        hook = getattr(self.lab, "refresh_auth", None)
        if hook is None or agent_in_charge(self.lab):
            return
        with self.board.auth_lock:
            hook(**({} if wait_out_holds else {"hold_wait_s": 0}))

    def setup(self):
        k = self.board.keys
        users = [[b"ACL", b"SETUSER", b"fzadmin", b"reset", b"on", b">" + USERS["fzadmin"],
                  b"~*", b"&*", b"+@all"],
                 [b"ACL", b"SETUSER", b"fzguest", b"reset", b"on", b">" + USERS["fzguest"],
                  b"~public:*", b"&*", b"-@all", b"+get", b"+ping", b"+echo", b"+select",
                  b"+client", b"+hello", b"+auth", b"+reset", b"+quit"],
                 [b"ACL", b"SETUSER", b"fzro", b"reset", b"on", b">" + USERS["fzro"], b"~*",
                  b"&*", b"-@all", b"+@read", b"+@connection", b"+select", b"+client",
                  b"+reset"]]
        dels = [[b"SELECT", b"1"], [b"DEL"] + k.all, [b"SELECT", b"0"], [b"DEL"] + k.all]
        out = self.control([b"CONFIG", b"SET", b"requirepass", b""],
                           [b"CONFIG", b"SET", b"timeout", b"0"], *(users + dels))
        bad = [o for o in out if isinstance(o, Err)]
        if bad:
            raise RuntimeError("set-up refused: %s" % bad)

    def reopen_unseen(self, workers, rng):
        """With a host agent in charge: some workers' connections are opened again while
        BRC is detached, as a client pool opened before the attach would be, so that the
        agent has connections to adopt (module_utils/brc_adopt.py) and the oracle checks
        what they get. Called with no worker running (before they start, or paused). The
        old connections close while BRC still sees them: their closes release their flows
        (a flow whose close went unseen would hold its marks for ever)."""
        if not agent_in_charge(self.lab) or not hasattr(getattr(self.lab, "brc", None), "detach"):
            return
        chosen = [w for w in workers if rng.random() < UNSEEN_SHARE]
        if not chosen:
            return
        before = self.lab.counters().get("flows_closed", 0)
        open_before = [w for w in chosen if w.sock is not None]
        for w in open_before:
            w.close("fin")
        deadline = time.time() + 5.0
        while self.lab.counters().get("flows_closed", 0) - before < len(open_before) and \
                time.time() < deadline:
            time.sleep(0.01)
        self.lab.brc.detach()
        try:
            for w in chosen:
                try:
                    w.connect()
                except (ConnectionError, socket.timeout, Stall, Closed, Desync) as e:
                    self.board.violation("connect", w.inc, "opened while detached: %s" % e)
                    w.close("rst")
        finally:
            self.lab.brc.attach()
        self.board.note("connections opened while BRC was detached", len(chosen))

    def teardown(self):
        cmds = []
        if self.board.requirepass.current():
            cmds.append([b"AUTH", DEFAULT_PW])
        cmds += [[b"CONFIG", b"SET", b"requirepass", b""], [b"CONFIG", b"SET", b"timeout", b"0"],
                 [b"ACL", b"DELUSER", b"fzadmin", b"fzguest", b"fzro"],
                 [b"SELECT", b"1"], [b"DEL"] + self.board.keys.all, [b"SELECT", b"0"],
                 [b"DEL"] + self.board.keys.all]
        self.control(*cmds)

    def run(self, epoch_seconds=10.0, log=None):
        b = self.board
        self.monitor = Monitor(self.server_ns, self.host, self.port)
        self.monitor.start()
        workers = []
        t_start = time.time()
        try:
            self.setup()
            self.refresh()
            lines = self.sync()
            self.oracle.epoch(lines, t_start)
            self.deadline = time.time() + self.seconds
            b.t0 = time.time()
            for i in range(self.connections):
                rng = random.Random("%d/%s/%d" % (self.seed, self.label, i))
                workers.append(Worker(self, i, rng))
            unseen_rng = random.Random("%d/%s/unseen" % (self.seed, self.label))
            self.reopen_unseen(workers, unseen_rng)
            for w in workers:
                w.start()
            next_epoch = time.time() + epoch_seconds
            next_refresh = time.time() + 1.0
            while time.time() < self.deadline:
                time.sleep(0.05)
                now = time.time()
                if now >= next_refresh or (b.auth_changed and
                                           now - b.last_auth_change > 0.2):
                    b.auth_changed = False
                    self.refresh()
                    next_refresh = now + 1.0
                if now >= next_epoch and self.deadline - now > 2.0:
                    t0 = time.time()
                    if not b.hold(self.reply_timeout * 3 + 5):
                        b.note("epoch: some worker did not pause")
                    try:
                        self.oracle.epoch(self.sync(), t0)
                        if b.paused >= b.running:
                            self.reopen_unseen(workers, unseen_rng)
                    finally:
                        b.release()
                    self.deadline += time.time() - t0     # the pause is not traffic time
                    next_epoch = time.time() + epoch_seconds
            self.stopping = True
            for w in workers:
                w.join(self.reply_timeout * 3 + 10)
            hung = [w.wid for w in workers if w.is_alive()]
            for wid in hung:
                b.violation("stall", None, "worker %d did not finish" % wid)
            self.oracle.epoch(self.sync(), time.time())
        finally:
            self.stopping = True
            try:
                self.teardown()
                self.refresh(wait_out_holds=True)   # the teardown changed the users again
            finally:
                self.monitor.close()
        if self.monitor.error:
            b.note("monitor: %s" % self.monitor.error)
        crashed = [w.crashed for w in workers if w.crashed]
        ops = Counter()
        for w in workers:
            ops.update(w.ops)
        return ops, crashed


KEY_COUNTERS = ("hit", "would_hit", "mismatch", "verify_raced", "fill", "miss", "req_get",
                "serve_refused_tcp", "serve_verify_sampled", "resent", "reset",
                "serve_err_build", "replies_unmatched", "dirty_unmatched", "dirty_pubsub",
                "dirty_multi", "dirty_client_reply", "dirty_resp3", "dirty_parser",
                "invalidate_global", "get_uncacheable_pending", "get_uncacheable_dirty",
                "get_uncacheable_db", "fill_refused_ttl", "flows_tracked", "tailcall_failed",
                "get_uncacheable_agent", "fill_refused_expiry", "expiry_wanted",
                "answer_near_expiry", "feed_keys", "feed_flushes", "flows_adopted", "adopt_frozen",
                "adopt_missed", "adopt_proven")


def agent_in_charge(lab):
    """Does a host agent (tests/agent's AgentLab) run for @lab: it loads the users, its
    feed reports every write, and keys with a TTL are answered until their deadline."""
    agent = getattr(lab, "agent", None)
    return agent is not None and agent.poll() is None


# Run B must check enough kernel answers to test anything: a share of its GETs
# (the floor) or, since that share swings with the command mix drawn (global
# invalidations, RESP3 nils), this many answers checked.
MIN_KERNEL_ANSWERS = 300


def wait_out_holds(lab):
    """A run leaves everything held for up to max_age (a client reset with writes
    unanswered): wait it out, bounded, so the lab caches again for what comes next."""
    held = getattr(getattr(lab, "brc", None), "held_s", None)
    if held is not None:
        time.sleep(min(held(), MAX_AGE_NS / 1e9 + 1.0))


def run(lab, seconds, seed, connections=8, verify_sample=0, mode="serve", floor=0.03,
        label=None, epoch_seconds=10.0, weights=None, resp3_share=RESP3_SHARE):
    """One fuzzer run against a ServeLab-like `lab` (pair, brc, counters(), serve()).
    Returns the summary dict; summary["ok"] says whether it was clean."""
    if label is None:
        label = mode if mode != "serve" else ("A" if verify_sample else "B")
        if agent_in_charge(lab):
            label += "agent"
    print("fuzz: run %s mode %s verify_sample %s seed %d, %d connections, %gs" % (
        label, mode, verify_sample, seed, connections, seconds), file=sys.stderr)
    if mode == "serve":
        # a short max_age: entries expire within the run, and a hold after a client
        # RST that left writes unanswered (max_age) does not last the whole run
        lab.serve(verify_sample=verify_sample, max_age_ns=MAX_AGE_NS)
    elif getattr(lab, "brc", None) is not None:
        lab.brc.configure(mode, max_key_len=64, max_value_len=2048)
    before = lab.counters() if getattr(lab, "brc", None) is not None else {}
    serving = mode == "serve" and not verify_sample
    with_agent = agent_in_charge(lab)
    fz = Fuzz(lab, seconds, seed, connections, label,
              weights or (SERVING_OPS if serving else OPS), kernel_may_answer=serving,
              resp3_share=resp3_share)
    t0 = time.time()
    ops, crashed = fz.run(epoch_seconds)
    wait_out_holds(lab)
    elapsed = time.time() - t0
    after = lab.counters() if getattr(lab, "brc", None) is not None else {}
    delta = dict((k, after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0))
    st, b = fz.oracle.stats, fz.board
    gets, cmds = st["gets"], st["cmds"]
    hit = delta.get("hit", 0)
    summary = {
        "run": label, "mode": mode, "verify_sample": verify_sample, "seed": seed,
        "agent": agent_in_charge(lab),
        "seconds": seconds, "connections": connections, "ops": cmds,
        "ops_per_s": round(cmds / max(seconds, 1e-9), 1), "gets": gets,
        "get_share": round(gets / cmds, 3) if cmds else 0.0,
        "gets_executed_by_redis": st["gets_executed"], "gets_unseen_by_redis": st["gets_unseen"],
        "gets_refused": st["gets_refused"], "gets_unchecked": st["gets_unchecked"],
        "kernel_hits": hit, "kernel_hit_share": round(hit / gets, 3) if gets else 0.0,
        "would_hit_share": round(delta.get("would_hit", 0) / gets, 3) if gets else 0.0,
        "counters": dict((k, delta.get(k, 0)) for k in KEY_COUNTERS),
        "counters_nonzero": dict((k, v) for k, v in sorted(delta.items()) if v),
        "violations": sum(b.vcount.values()), "violation_kinds": dict(b.vcount),
        "suspected_findings": dict(b.suspects), "first_seen_s": dict(b.first_at),
        "first_violations": b.violations, "notes": dict(b.notes),
        "unmodeled": dict(fz.model.unmodeled), "ops_by_kind": dict(ops.most_common()),
        "late_lines": st["late_lines"], "elapsed": round(elapsed, 1),
        # RESP2 and RESP3 side by side: replies read in each, GETs, GETs Redis never
        # executed (answered in the kernel), connections that went RESP3
        "by_protocol": dict(("resp%d" % p, {
            "replies": st["cmds_resp%d" % p], "gets": st["gets_resp%d" % p],
            "kernel_answers": st["gets_unseen_resp%d" % p]}) for p in (2, 3)),
        "kernel_answers_resp3_after_pushes": st["gets_unseen_after_pushes"],
        "kernel_answers_by_how": dict(fz.oracle.by_how),
        "connections_opened": st["connections"], "connections_resp3": st["connections_resp3"],
    }
    problems = []
    if b.vcount:
        problems.append("violations")
    if crashed:
        summary["fuzzer_crashes"] = crashed[:3]
        problems.append("fuzzer crashed")
    if with_agent and not agent_in_charge(lab):
        problems.append("the host agent exited during the run")
    if fz.model.unmodeled:
        problems.append("commands the model does not know touched fuzz keys")
    if mode == "serve" and delta.get("mismatch", 0):
        problems.append("BRC counted mismatch %d" % delta["mismatch"])
    if mode == "serve" and verify_sample == 0 and summary["kernel_hit_share"] < floor and \
            hit < MIN_KERNEL_ANSWERS:
        problems.append("kernel answered %.1f%% of GETs (%d), below the floor %.0f%% and %d answers" % (
            100.0 * summary["kernel_hit_share"], hit, 100.0 * floor, MIN_KERNEL_ANSWERS))
    if mode != "serve" and st["gets_unseen"]:
        problems.append("GETs Redis never executed while BRC was %s" % mode)
    if gets == 0:
        problems.append("no GET checked")
    if serving and resp3_share and st["gets_resp3"] >= 200 and not st["gets_unseen_resp3"]:
        problems.append("no RESP3 GET answered in the kernel (%d RESP3 GETs)" % st["gets_resp3"])
    summary["floor"] = floor
    summary["problems"] = problems
    summary["ok"] = not problems
    return summary


# ------------------------------------------------------------------------ CLI


class CliLab:
    """The CLI's own served Redis (as tests/serve/conftest.py builds it)."""

    def __init__(self, pair, mode):
        self.pair = pair
        self.redis = pair.start_redis(PORT)
        self.brc = None
        if mode != "none":
            import brc_attach
            self.brc = brc_attach.Brc(os.path.join(REPO, "bpf"), pair.server, pair.server_dev,
                                      PORT)
            self.brc.attach()

    def serve(self, **values):
        values.setdefault("max_key_len", 64)
        values.setdefault("max_value_len", 2048)
        return self.brc.configure("serve", **values)

    def counters(self):
        if self.brc is None:
            return {}
        return dict((k, v) for k, v in self.brc.counters().items() if not k.startswith("lat."))

    def refresh_auth(self, **load_args):
        if self.brc is not None:
            self.brc.refresh_auth(self.pair.server_ip, **load_args)

    def close(self):
        if self.brc is not None:
            self.brc.close()


def _imports():
    """bench/brc_attach.py imports module_utils the way Ansible sees it."""
    for p in (HERE, os.path.join(REPO, "bench"), os.path.join(REPO, "tests", "serve"),
              os.path.join(REPO, "tests", "agent"), os.path.join(REPO, "lab")):
        if p not in sys.path:
            sys.path.append(p)


def main(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                epilog=__doc__[__doc__.index("Usage"):__doc__.index("Library")],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600,
                   help="traffic time; without --verify-sample split between run A and B")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--verify-sample", type=int, choices=(0, 1), default=None,
                   help="run only A (1: every would-be answer goes to Redis) or B (0)")
    p.add_argument("--mode", choices=("serve", "off", "none"), default="serve",
                   help="off: BRC attached in mode off (oracle self-check); none: not attached")
    p.add_argument("--agent", action="store_true",
                   help="BRC pinned with brc-agent in charge (tests/agent's lab): the feed, "
                        "its user loads and keys with a TTL answered until their deadline")
    p.add_argument("--floor", type=float, default=0.03,
                   help="minimum share of GETs answered in the kernel in run B")
    p.add_argument("--epoch", type=float, default=10.0, help="seconds between oracle checks")
    p.add_argument("--resp3", type=float, default=RESP3_SHARE,
                   help="share of connections that ask for RESP3 as they open (default %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="no human-readable report on stderr (stdout: always one JSON line)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("fuzz.py needs root (namespaces, BPF)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print("fuzz: seed %d" % seed, file=sys.stderr, flush=True)
    _imports()
    import netfault
    if args.mode != "serve":
        plan = [(args.mode, 0, args.seconds)]
    elif args.verify_sample is not None:
        plan = [("serve", args.verify_sample, args.seconds)]
    else:
        plan = [("serve", 1, args.seconds / 2.0), ("serve", 0, args.seconds / 2.0)]
    summaries = []
    if args.agent and args.mode != "serve":
        print("--agent needs --mode serve", file=sys.stderr)
        return 2
    with netfault.NetnsPair(prefix="brcfz", subnet="10.74.0") as pair:
        if args.agent:
            from agent_lab import AgentLab
            lab = AgentLab(pair, os.path.join(REPO, "bpf"))
        else:
            lab = CliLab(pair, args.mode)
        try:
            for mode, vs, secs in plan:
                s = run(lab, secs, seed, args.connections, vs, mode, args.floor,
                        epoch_seconds=args.epoch, resp3_share=args.resp3)
                summaries.append(s)
                if not args.json:
                    report(s, sys.stderr)
        finally:
            lab.close()
    ok = all(s["ok"] for s in summaries)
    out = {"seed": seed, "ok": ok, "runs": [dict((k, v) for k, v in s.items()
                                                 if k not in ("first_violations",))
                                            for s in summaries]}
    out["first_violations"] = [v for s in summaries for v in examples(s["first_violations"])]
    print(json.dumps(out, sort_keys=True))
    return 0 if ok else 1


def examples(violations):
    """The first violation of each suspected finding, then the first ones, 10 at most."""
    out, seen = [], set()
    for v in violations:
        if v.get("suspect") not in seen:
            seen.add(v.get("suspect"))
            out.append(v)
    for v in violations:
        if len(out) >= 10:
            break
        if v not in out:
            out.append(v)
    return out


def report(s, f):
    print("fuzz run %s: %d ops (%.0f/s), %d GETs (%.0f%%), %d answered in the kernel (%.1f%%),"
          " %d violations %s, problems: %s" % (
              s["run"], s["ops"], s["ops_per_s"], s["gets"], 100 * s["get_share"],
              s["kernel_hits"], 100 * s["kernel_hit_share"], s["violations"],
              s["violation_kinds"], s["problems"] or "none"), file=f)
    bp = s["by_protocol"]
    print("  by protocol: RESP2 %d replies, %d GETs, %d answered in the kernel; RESP3 %d "
          "replies, %d GETs, %d answered in the kernel; %d of %d connections went RESP3" % (
              bp["resp2"]["replies"], bp["resp2"]["gets"], bp["resp2"]["kernel_answers"],
              bp["resp3"]["replies"], bp["resp3"]["gets"], bp["resp3"]["kernel_answers"],
              s["connections_resp3"], s["connections_opened"]), file=f)
    if s["kernel_answers_by_how"] or s["kernel_answers_resp3_after_pushes"]:
        print("  kernel answers on RESP3 connections that had got pushes: %d; by how sent: %s" % (
            s["kernel_answers_resp3_after_pushes"], s["kernel_answers_by_how"]), file=f)
    print("  suspected findings: %s" % s.get("suspected_findings"), file=f)
    for v in examples(s["first_violations"]):
        print("  VIOLATION %s (%s) conn %s: %s" % (v["kind"], v.get("suspect") or "?",
                                                 v["conn"], v["detail"]), file=f)
        if "cmd" in v:
            print("    command: %s" % json.dumps(v["cmd"]), file=f)
        for h in v.get("history", [])[-8:]:
            print("    | %s%s -> %s" % (h["argv"], "" if h["how"] == "resp" else
                                       " [%s]" % h["how"], h["reply"]), file=f)


if __name__ == "__main__":
    sys.exit(main())
