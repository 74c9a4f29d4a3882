# -*- coding: utf-8 -*-
"""brc-agent: the host agent that tells BRC what Redis changed.

BRC learns about writes from the traffic on its interface; everything else
(loopback and Unix-socket writes, expiry, eviction, scripts, a replica's stream,
a restart, a role change) only Redis itself can report. This agent runs next to
Redis, turns Redis's reports into key-version bumps in the pinned maps, and keeps
a heartbeat the programs require before every answer (struct brc_agent in
bpf/brc_contract.h: while BRC_AGENT_F_ON is set, nothing is answered once beat_ns
is older than BRC_AGENT_STALE_NS).

The feed: CLIENT TRACKING ON BCAST (no prefixes) REDIRECT to a second connection
SUBSCRIBEd to __redis__:invalidate (RESP2). Chosen over keyspace notifications
because it needs no server setting (notify-keyspace-events is the user's: nothing
to merge, nothing to re-apply after a restart), it reports every way a key
changes (writes from any client, expiry, eviction, the replication stream on a
replica, scripts and functions), one message carries many keys, and a nil key
list means FLUSHALL/FLUSHDB. Each key becomes a bucket (Contract.bucket_of, the
kernel's own hash) and brc_feed bumps the buckets, run with BPF_PROG_TEST_RUN in
batches of BRC_FEED_BATCH.

Liveness fails closed. The agent beats (every --beat-ms, 100 ms by default) only
while both connections are up, CLIENT TRACKINGINFO shows tracking on in bcast mode
redirected to the live subscriber, the subscriber answers a PING in its
subscribed form (so every invalidation sent before it has been fed), Redis is not
`loading`, a replica's link to its master is up (before and during a full sync it
holds its own old data), and Redis's run_id, role and master are the ones it last
flushed at. On any change it feeds a FLUSH, writes beat_ns = 0 (answers stop at once, not
after BRC_AGENT_STALE_NS), reconnects with backoff and, once consistent again,
flushes and beats. Flushes are counted in the log and in brc_agent: feed_flushes
in all, flushes_by_reason per reason (its slots are bpf/brc_contract.h's
BRC_AGENT_FLUSH_REASONS, named as the reason strings here; one the contract
lacks counts as `other`).

Stopping: SIGTERM/SIGINT flush and write beat_ns = 0 but keep BRC_AGENT_F_ON. An
agent that stops, crashes or is killed must stop answers (the programs would
otherwise return to standalone mode, where writes the wire does not show go
unnoticed until max_age). Only a deliberate removal (`brc-agent --release`, what
the role's `absent` runs after stopping the daemon) flushes and clears F_ON,
handing the interface back to the programs alone (leases and holds).

Auth state: brc_auth.load() runs after every (re)connection, whenever the digest
of ACL LIST (read with every beat, one short reply) changes, at the first beat
after a command on the wire that may change who reads what completed (the
programs stop answering until a load at that epoch: brc_global.auth_epoch moved
past brc_server's), and every --auth-every seconds as a backstop (anything else
ACL LIST does not show). Polling one digest is simpler than ACL LOG (which records failures,
not changes) and catches local changes within a beat. A failed load leaves
brc_server's epoch at BRC_EPOCH_NONE (no answers) and is retried every second.

Expiry: served GETs never make Redis expire a key lazily, and the report of an
expiry can come late (the active cycle samples), so under an agent a fill needs
the key's deadline as Redis holds it (struct brc_expiry): the agent reads the
key's bucket and global versions, then asks Redis PEXPIRETIME (db 0, the only one
cached), and writes the record with those versions. Any write to the key after
the read bumps a version (on the wire at once, otherwise through this feed), so
a record the kernel finds at its GET's versions is Redis's current deadline, up
to the feed's lag like every value. Records are written for the keys the kernel
asks for (brc_expiry_wanted, every --expiry-ms) and, after each bump, for the keys
the feed reported, for every IPv4 address of the host (the cache key carries the
address the client reached Redis at). Deadlines are converted from Redis's wall
clock to CLOCK_MONOTONIC (the programs' clock): a step of the wall clock would
move Redis's deadlines under the records, so it flushes (`clock_step`).

Adoption: connections BRC did not see open (a pool opened before the attach)
are adopted at a command boundary proven by Redis's CLIENT LIST and the
socket's sock_diag state (module_utils/brc_adopt.py), so that they are
answered without reconnecting. Until then their writes reach BRC through the
feed, like any write it cannot see.

TOUCH: every --touch-ms (1 s) the keys the kernel answered (brc_touched, sampled
1 in BRC_TOUCH_SAMPLE) are read, deleted and TOUCHed in Redis in batches, so
maxmemory's LRU/LFU clocks see the reads Redis no longer serves. Only db 0 is
cached, and the agent's connection stays in db 0.

feed_lag_ns is the agent's part of the lag: from the invalidation's arrival on
the subscriber socket to the bucket bumps. bench/agent.py measures the whole
path, from a write over loopback to the bump.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import ctypes
import hashlib
import inspect
import logging
import os
import signal
import struct
import sys
import time

from ansible.module_utils.brc_common import BrcError, import_redis
from ansible.module_utils import brc_adopt, brc_auth, brc_contract, brc_pins

INVALIDATE_CHANNEL = b"__redis__:invalidate"
PROBE_KEY = "brc-agent:probe"

# The agent user's least rights. The role creates the user with these
# (ACL SETUSER <user> reset on ><password> <AGENT_GRANTS>); brc_auth's reader
# needs TOOLKIT_GRANTS on top.
AGENT_GRANTS = ("+client|id +client|tracking +client|trackinginfo +client|list +subscribe +ping +info "
                "+touch +pexpiretime +acl|list resetchannels &__redis__:invalidate resetkeys %R~* "
                + brc_auth.TOOLKIT_GRANTS)

BEAT_S = 0.1
TOUCH_S = 1.0
EXPIRY_S = 0.005
CLOCK_STEP_NS = 1000000    # wall clock vs CLOCK_MONOTONIC moving more than this: a step
AUTH_EVERY_S = 30.0
AUTH_RETRY_S = 1.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
IO_TIMEOUT_S = 2.0
TOUCH_BATCH = 128
NOT_READY = ("loading", "replica_link_down")
DRAIN_MAX = 1000           # messages read before the beat's checks get a turn

log = logging.getLogger("brc-agent")


class Lost(Exception):
    """Redis or the feed is no longer what the agent last flushed at: flush, stop beating."""

    def __init__(self, reason, detail=""):
        Exception.__init__(self, "%s%s" % (reason, ": " + detail if detail else ""))
        self.reason = reason


def redis_lost(ex, e):
    """The Lost that redis-py's error @e means (@ex: its exceptions module). A
    -LOADING reply is a BusyLoadingError, which redis-py makes a ConnectionError:
    Redis is up but loading (the subscriber's PING is refused first), and the
    reason counted must say so."""
    if isinstance(e, ex.BusyLoadingError):
        return Lost("loading", str(e))
    if isinstance(e, (ex.ConnectionError, ex.TimeoutError)):     # AuthenticationError included
        return Lost("redis_down", str(e))
    return Lost("redis_error", str(e))


# --- the pinned side ----------------------------------------------------------------------

class AgentMaps:
    """The pins the agent uses in one interface's pin directory."""

    def __init__(self, pdir, contract):
        self.pdir, self.contract = pdir, contract
        self.agent_struct = contract.structs["brc_agent"]
        self.batch_struct = contract.structs["brc_feed_batch"]
        self.key_struct = contract.structs["brc_cache_key"]
        self.expiry_struct = contract.structs["brc_expiry"]
        self.bucket_struct = contract.structs["brc_bucket"]
        self.global_struct = contract.structs["brc_global"]
        self.server_struct = contract.structs["brc_server"]
        self.never = contract.constants["BRC_EXPIRY_NEVER"]
        self.batch_max = contract.constants["BRC_FEED_BATCH"]
        self.key_max = contract.constants["BRC_KEY_MAX"]
        self.flush_flag = contract.constants["BRC_FEED_F_FLUSH"]
        self._open = []
        try:
            self.agent = self._map("agent")
            keyver = self._map("keyver")
            self.buckets = keyver.info["max_entries"]
            self.touched = self._map("touched")
            self.keyver = keyver
            self.globals = self._map("global")
            self.server = self._map("server")
            self.expiry = self._map("expiry")
            self.expiry_wanted = self._map("expiry_wanted")
            self.untracked = self._map("untracked")
            self.adopt = self._map("adopt")
            self.feed_fd = brc_pins.obj_get(brc_pins.prog_pin(pdir, "feed"))
        except BrcError as e:
            self.close()
            if e.details.get("missing"):
                raise BrcError("no BRC pins for the agent in %s (%s)" % (pdir, e.msg),
                               "deploy BRC first on this interface (the brc role, or brc_program "
                               "state=present), then start the agent with --pin-dir <pin_root>/<iface>")
            raise
        if self.agent.info["value_size"] != ctypes.sizeof(self.agent_struct):
            self.close()
            raise BrcError("the pinned brc_agent in %s does not have this contract's layout" % pdir,
                           "install the agent from the same toolkit version as the programs")
        self.opened = self._pinned_ids()

    def _pinned_ids(self):
        """Ids of the objects pinned now at brc_agent and prog_feed (None: no pin)."""
        out = []
        for path, kind in ((os.path.join(self.pdir, self.contract.map_name("agent")), "map"),
                           (brc_pins.prog_pin(self.pdir, "feed"), "prog")):
            try:
                info = brc_pins.pinned_info(path, kind)
            except BrcError:
                info = None
            out.append(info and info["id"])
        return out

    def replaced(self):
        """Were the pins replaced or removed since they were opened (a redeploy that
        reset the maps, an undeploy)? The agent would be feeding maps nobody reads."""
        return self._pinned_ids() != self.opened

    def _map(self, what):
        m = brc_pins.PinnedMap(os.path.join(self.pdir, self.contract.map_name(what)))
        self._open.append(m)
        return m

    def close(self):
        for m in self._open:
            m.close()
        self._open = []
        if getattr(self, "feed_fd", None) is not None:
            os.close(self.feed_fd)
            self.feed_fd = None

    def read_agent(self):
        raw = self.agent.lookup(0)
        return self.agent_struct.from_buffer_copy(raw[:ctypes.sizeof(self.agent_struct)])

    def write_agent(self, st):
        self.agent.update(0, ctypes.string_at(ctypes.addressof(st), ctypes.sizeof(st)))

    def bucket_of(self, key):
        return self.contract.bucket_of(key, self.buckets)

    def feed(self, buckets, flush=False):
        """Bump @buckets (and everything with @flush) through brc_feed; returns buckets bumped."""
        buckets = list(buckets)
        done = 0
        while True:
            chunk, buckets = buckets[:self.batch_max], buckets[self.batch_max:]
            batch = self.batch_struct()
            batch.count = len(chunk)
            batch.flags = self.flush_flag if flush else 0
            for i, b in enumerate(chunk):
                batch.buckets[i] = b
            rv, _out, _ns = brc_pins.prog_test_run(
                self.feed_fd, b"\0" * 14 + ctypes.string_at(ctypes.addressof(batch), ctypes.sizeof(batch)))
            done += rv
            flush = False
            if not buckets:
                return done

    def _read(self, m, cls):
        return cls.from_buffer_copy(m.lookup(0)[:ctypes.sizeof(cls)])

    def auth_behind(self):
        """Has a command that may change who reads what completed on the wire since the
        users were loaded (brc_server's epoch is not brc_global's, none in flight)?"""
        g = self._read(self.globals, self.global_struct)
        return g.auth_inflight == 0 and self._read(self.server, self.server_struct).auth_epoch != g.auth_epoch

    def versions(self, keys):
        """(global version, {key: its bucket's version}) as the kernel holds them now."""
        g = self._read(self.globals, self.global_struct)
        out = {}
        for key in keys:
            raw = self.keyver.lookup(self.bucket_of(key))
            out[key] = self.bucket_struct.from_buffer_copy(raw[:ctypes.sizeof(self.bucket_struct)]).ver
        return g.ver, out

    def write_expiries(self, records):
        """Write brc_expiry records: (key, srv_addr, ver, gver, expire_ns) each."""
        for key, addr, ver, gver, expire_ns in records:
            k = self.key_struct()
            k.srv_addr[:], k.len = addr, len(key)
            ctypes.memmove(k.key, key, len(key))
            x = self.expiry_struct()
            x.write_id = x.write_id_end = struct.unpack("<Q", os.urandom(8))[0]
            x.ver, x.gver, x.expire_ns = ver, gver, expire_ns
            x.srv_addr[:], x.key_len = addr, len(key)
            ctypes.memmove(x.key, key, len(key))
            self.expiry.update(ctypes.string_at(ctypes.addressof(k), ctypes.sizeof(k)),
                               ctypes.string_at(ctypes.addressof(x), ctypes.sizeof(x)))

    def _drain_keys(self, m, limit):
        """(key bytes, srv_addr) of the entries of @m (deleted from it)."""
        out = []
        for raw in m.keys(limit=limit):
            if m.delete(raw):
                k = self.key_struct.from_buffer_copy(raw)
                out.append((bytes(bytearray(k.key[:min(k.len, len(k.key))])), tuple(k.srv_addr)))
        return out

    def drain_wanted(self, limit):
        """Keys whose expiry a fill waits for, as (key, srv_addr) (deleted from brc_expiry_wanted)."""
        return self._drain_keys(self.expiry_wanted, limit)

    def drain_touched(self, limit):
        """Keys the kernel answered since the last call (deleted from brc_touched)."""
        return [key for key, _addr in self._drain_keys(self.touched, limit)]


# --- the Redis side -------------------------------------------------------------------------

def host_addrs():
    """Every IPv4 and IPv6 address of this host (its network namespace), as a struct
    brc_cache_key holds them (brc_contract.addr_words): the addresses a client may
    reach Redis at."""
    from pyroute2 import IPRoute
    ipr = IPRoute()
    try:
        addrs = set()
        for msg in ipr.get_addr():
            a = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if a:
                addrs.add(brc_contract.addr_words(a.split("%")[0]))
        return sorted(addrs)
    finally:
        ipr.close()


def wall_offset_ns(tries=5):
    """CLOCK_REALTIME - CLOCK_MONOTONIC, ns: Redis's deadlines are wall-clock ms, the
    programs' clock is CLOCK_MONOTONIC. The tightest of a few bracketed reads, so a
    preemption between two reads does not pass for a step of the clock."""
    best = None
    for _i in range(tries):
        m0 = time.monotonic_ns()
        wall = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, wall - (m0 + m1) // 2)
    return best[1]


def parse_info(raw):
    """INFO's text as {field: value} (strings)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, _sep, v = line.partition(":")
            out[k] = v.strip()
    return out


def server_state(info):
    """What the cached answers depend on besides the keys themselves: a change in any
    of these means the data set may have been replaced without per-key reports."""
    role = info.get("role", "?")
    master = (info.get("master_host"), info.get("master_port"), info.get("master_link_status")) \
        if role == "slave" else None
    return {"run_id": info.get("run_id"), "role": role, "master": master}


def not_ready(info):
    """Why Redis's data set is not one to answer from yet (None: it is): loading an
    RDB/AOF, or a replica whose link to its master is not up (before and during a
    full sync it holds its old data, which the new master may not have)."""
    if info.get("loading") == "1":
        return "loading"
    if info.get("role") == "slave" and info.get("master_link_status") != "up":
        return "replica_link_down"
    return None


def change_reason(before, after):
    if before is None:
        return "resync"
    if before["run_id"] != after["run_id"]:
        return "restart"
    if before["role"] != after["role"]:
        return "role"
    if before["master"] != after["master"]:
        return "replication"
    return None


def _pairs(reply):
    """A RESP2 flat [k, v, k, v] reply as {str: value}."""
    out = {}
    for i in range(0, len(reply) - 1, 2):
        k = reply[i]
        out[k.decode() if isinstance(k, bytes) else str(k)] = reply[i + 1]
    return out


def tracking_live(info_reply, sub_id):
    """Is CLIENT TRACKINGINFO's reply tracking on, bcast, redirected to @sub_id, unbroken?"""
    info = _pairs(info_reply)
    flags = set(f.decode() if isinstance(f, bytes) else str(f) for f in (info.get("flags") or []))
    return {"on", "bcast"} <= flags and "broken_redirect" not in flags and info.get("redirect") == sub_id


class RedisLink:
    """The agent's two connections: `cmd` (tracking, checks, TOUCH) and `sub` (the feed)."""

    def __init__(self, host="127.0.0.1", port=6379, unix_socket=None, user=None, password=None,
                 timeout=IO_TIMEOUT_S):
        self.redis, err = import_redis()
        if self.redis is None:
            raise BrcError("redis-py is not importable: %s" % err.strip().splitlines()[-1],
                           "install the Debian package python3-redis")
        self.host, self.port, self.unix_socket = host, port, unix_socket
        self.user, self.password, self.timeout = user, password, timeout
        self.where = unix_socket or "%s:%d" % (host, port)
        self.cmd = self.sub = None
        self.sub_id = None

    def _connection(self):
        conn_mod = self.redis.connection
        kw = dict(username=self.user or None, password=self.password or None,
                  socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        if self.unix_socket:
            cls, kw["path"] = conn_mod.UnixDomainSocketConnection, self.unix_socket
        else:
            cls = conn_mod.Connection
            kw.update(host=self.host, port=self.port)
        # RESP2 (redis-py 5+ may default to 3), and no silent reconnect-and-retry: a new
        # connection would carry neither the tracking nor the subscription. Options this
        # redis-py does not know are left out (4.x: no protocol; its Unix socket
        # connection has no connect timeout; RESP2 and no retries are its defaults).
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry
            kw.update(protocol=2, retry=Retry(NoBackoff(), 0))
        except ImportError:
            pass
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kw = dict((k, v) for k, v in kw.items() if k in params)
        conn = cls(**kw)
        conn.connect()
        return conn

    def call(self, conn, *args):
        conn.send_command(*args)
        return conn.read_response()

    def open(self):
        """Connect both, subscribe, turn tracking on. Errors as raised by redis-py."""
        self.close()
        self.sub = self._connection()
        self.sub_id = self.call(self.sub, "CLIENT", "ID")
        reply = self.call(self.sub, "SUBSCRIBE", INVALIDATE_CHANNEL)
        if not (isinstance(reply, list) and reply[0] == b"subscribe"):
            raise Lost("feed", "SUBSCRIBE answered %r" % (reply,))
        self.cmd = self._connection()
        self.call(self.cmd, "CLIENT", "TRACKING", "ON", "REDIRECT", self.sub_id, "BCAST")

    def close(self):
        for conn in (self.cmd, self.sub):
            if conn is not None:
                try:
                    conn.disconnect()
                except Exception:  # pylint: disable=broad-except
                    pass
        self.cmd = self.sub = None

    def checks(self):
        """(tracking live?, INFO fields, ACL LIST digest) in one round trip of `cmd`."""
        cmds = [("CLIENT", "TRACKINGINFO"), ("INFO", "server", "replication", "persistence"),
                ("ACL", "LIST")]
        self.cmd.send_packed_command(self.cmd.pack_commands(cmds))
        tracking = self.cmd.read_response()
        info = parse_info(self.cmd.read_response())
        acl = hashlib.sha256(b"\n".join(self.cmd.read_response())).hexdigest()
        return tracking_live(tracking, self.sub_id), info, acl

    def probe_commands(self):
        """The per-key commands the feed and TOUCH use, on a key that does not exist
        (no effect): a Redis without them fails here, at start, not while serving."""
        self.call(self.cmd, "PEXPIRETIME", PROBE_KEY)
        self.call(self.cmd, "TOUCH", PROBE_KEY)

    def expiretimes(self, keys):
        """PEXPIRETIME of each of @keys (Unix ms; -1 none, -2 no such key), pipelined."""
        out = []
        for i in range(0, len(keys), TOUCH_BATCH):
            chunk = keys[i:i + TOUCH_BATCH]
            self.cmd.send_packed_command(self.cmd.pack_commands([("PEXPIRETIME", k) for k in chunk]))
            out += [self.cmd.read_response() for _k in chunk]
        return out

    def touch(self, keys):
        n = 0
        for i in range(0, len(keys), TOUCH_BATCH):
            n += self.call(self.cmd, "TOUCH", *keys[i:i + TOUCH_BATCH])
        return n


# --- the agent ---------------------------------------------------------------------------------

class Agent:
    def __init__(self, maps, link, auth_load, beat_s=BEAT_S, touch_s=TOUCH_S, auth_every_s=AUTH_EVERY_S,
                 expiry_s=EXPIRY_S):
        self.maps, self.link, self.auth_load = maps, link, auth_load
        self.beat_s, self.touch_s, self.auth_every_s = beat_s, touch_s, auth_every_s
        self.expiry_s = expiry_s
        self.clock_offset = None      # wall_offset_ns() at the last flush: records' deadlines use it
        self.auth_retry_at = 0.0      # after a failed user load, none before then
        self.flushed_at = None        # server_state() the last flush was made at
        self.beating = False
        self.flushes = {}             # reason -> count (this process)
        self.acl_digest = None
        st = maps.read_agent()        # counters continue across agent restarts (reports)
        self.st = maps.agent_struct()
        for name in ("feed_keys", "feed_flushes", "feed_lag_ns", "touched_keys", "flushes_by_reason"):
            setattr(self.st, name, getattr(st, name))
        self.st.pid = os.getpid()
        self.st.started_ns = time.monotonic_ns()
        self.st.flags = maps.contract.constants["BRC_AGENT_F_ON"]

    # -- the map entry
    def _write(self, beat_ns):
        self.st.beat_ns = beat_ns
        self.maps.write_agent(self.st)

    def flush(self, reason):
        self.maps.feed([], flush=True)
        self.st.feed_flushes += 1
        contract = self.maps.contract
        slot = contract.agent_flush_slot(reason)
        if contract.agent_flush_reasons[slot] != reason:
            log.warning("flush reason %s is not in the contract's BRC_AGENT_FLUSH_REASONS: counted as %s",
                        reason, contract.agent_flush_reasons[slot])
        self.st.flushes_by_reason[slot] += 1
        self.flushes[reason] = self.flushes.get(reason, 0) + 1
        log.info("flush reason=%s (%d for this reason, %d in all)", reason, self.flushes[reason],
                 self.st.feed_flushes)

    def stop_answers(self, reason):
        """Flush and stop beating: answers stop now, not after BRC_AGENT_STALE_NS."""
        self.flush(reason)
        self.beating = False
        self._write(0)

    def take_charge(self):
        """At start: in charge (F_ON) but not answering until Redis is consistent."""
        self.stop_answers("agent_start")

    def release(self):
        """A deliberate removal: flush and hand the interface back to the programs alone."""
        self.flush("agent_release")
        self.st.flags = 0
        self._write(0)

    # -- Redis
    def establish(self):
        """Connect, track, read Redis's state, flush, load users: then beating may start."""
        ex = self.link.redis.exceptions
        try:
            self.link.open()
            _live, info, acl = self.link.checks()
        except Lost:
            raise
        except ex.RedisError as e:
            raise redis_lost(ex, e)
        why = not_ready(info)
        if why:
            raise Lost(why)
        state = server_state(info)
        self.flush(change_reason(self.flushed_at, state) or "reconnect")
        self.flushed_at = state
        self.clock_offset = wall_offset_ns()
        self.server_addrs = host_addrs()
        self.acl_digest = acl          # read before the load: a change after it reloads again
        self.reload_auth("connected")
        self.check_and_beat()

    def untracked_settled(self):
        try:
            brc_adopt.untracked_settled(self.maps, self.link)
        except OSError as e:
            raise brc_adopt.Unsettled("sock_diag failed: %s" % e)

    def reload_auth(self, why):
        try:
            res = self.auth_load(self.untracked_settled)
            log.info("users reloaded (%s): %d users, answering=%s", why, len(res["users"]), res["answering"])
            if res["answering"]:
                self.next_auth, self.auth_retry_at = time.monotonic() + self.auth_every_s, 0.0
            else:
                # a hold (bytes BRC could not parse may still run until then) outlived the
                # load: nothing else may come to move the epoch, so load again after it
                self.next_auth = self.auth_retry_at = time.monotonic() + AUTH_RETRY_S
        except BrcError as e:
            if e.details.get("retry_soon"):
                # bytes that may change who reads what are still on their way into Redis,
                # or kept passing (an untracked connection before its adoption): the next
                # beat tries again
                log.info("reloading users waits (%s): %s", why, e.msg)
                self.next_auth = self.auth_retry_at = time.monotonic() + self.beat_s
                return
            log.error("reloading users failed (%s): %s", why, e.text)
            self.next_auth = self.auth_retry_at = time.monotonic() + AUTH_RETRY_S

    def check_and_beat(self):
        ex = self.link.redis.exceptions
        try:
            live, info, acl = self.link.checks()
            self.link.sub.send_command("PING")
            self.drain(until_pong=True)
        except ex.RedisError as e:
            raise redis_lost(ex, e)
        if self.maps.replaced():
            raise Lost("pins_replaced", "BRC was redeployed or removed on %s" % self.maps.pdir)
        if not live:
            raise Lost("feed", "CLIENT TRACKINGINFO: tracking off or redirect broken")
        why = not_ready(info)
        if why:
            raise Lost(why)
        reason = change_reason(self.flushed_at, server_state(info))
        if reason:
            raise Lost(reason, "%s -> %s" % (self.flushed_at, server_state(info)))
        step = wall_offset_ns() - self.clock_offset
        if abs(step) > CLOCK_STEP_NS:
            raise Lost("clock_step", "the wall clock moved %+d ms against CLOCK_MONOTONIC" % (step // 1000000))
        if acl != self.acl_digest:
            self.reload_auth("ACL LIST changed")
        elif self.maps.auth_behind() and time.monotonic() >= self.auth_retry_at:
            self.reload_auth("a change on the wire")
        self.acl_digest = acl
        if not self.beating:
            log.info("consistent with Redis run_id=%s role=%s: answering", self.flushed_at["run_id"],
                     self.flushed_at["role"])
        self.beating = True
        self._write(time.monotonic_ns())

    def drain(self, until_pong=False, limit=DRAIN_MAX):
        """Read the subscriber's messages and feed them; with @until_pong, up to the PING's reply."""
        start = time.monotonic_ns()
        buckets, keys, flush = set(), 0, False
        cacheable = {}                # arrival order: a record written means earlier keys' are
        read = 0
        while until_pong or (read < limit and self.link.sub.can_read(timeout=0)):
            read += 1
            msg = self.link.sub.read_response()
            if not isinstance(msg, list) or not msg:
                raise Lost("feed", "unexpected reply on the subscriber: %r" % (msg,))
            if msg[0] == b"pong":
                break
            if msg[0] != b"message" or msg[1] != INVALIDATE_CHANNEL:
                continue
            if msg[2] is None:
                flush = True          # FLUSHALL / FLUSHDB
                continue
            keys += len(msg[2])
            buckets.update(self.maps.bucket_of(k) for k in msg[2])
            cacheable.update((k, None) for k in msg[2] if len(k) <= self.maps.key_max)
        if flush:
            self.flush("flushall")
        if buckets:
            self.maps.feed(sorted(buckets))
            self.st.feed_keys += keys
            self.st.feed_lag_ns = time.monotonic_ns() - start
            if self.beating:
                self._write(self.st.beat_ns)   # reports only; the beat is check_and_beat's
        if cacheable:                          # after the bump: read at the new versions
            self.record_expiries([(k, a) for k in cacheable for a in self.server_addrs])

    def record_expiries(self, wanted):
        """brc_expiry records for @wanted, (key, srv_addr) pairs: the versions first,
        then Redis's PEXPIRETIME (a write in between bumps past the record)."""
        keys = list(dict.fromkeys(k for k, _a in wanted))
        gver, vers = self.maps.versions(keys)
        offset = wall_offset_ns()
        deadline = {}
        for key, ms in zip(keys, self.link.expiretimes(keys)):
            # -1 no TTL, -2 no such key (its creation is a write): neither expires
            deadline[key] = self.maps.never if ms < 0 else max(1, ms * 1000000 - offset)
        self.maps.write_expiries([(k, a, vers[k], gver, deadline[k]) for k, a in wanted])

    def answer_wanted(self):
        wanted = self.maps.drain_wanted(self.maps.expiry_wanted.info["max_entries"])
        if wanted:
            self.record_expiries(wanted)

    def touch(self):
        keys = self.maps.drain_touched(self.maps.touched.info["max_entries"])
        if keys:
            self.link.touch(keys)
            self.st.touched_keys += len(keys)

    def serve(self, should_stop):
        """Feed, beat, touch, adopt and reload until something changes (raises Lost) or a stop."""
        ex = self.link.redis.exceptions
        now = time.monotonic()
        next_beat, next_touch, next_expiry = now + self.beat_s, now + self.touch_s, now
        adopter, next_adopt = brc_adopt.Adopter(self.maps, self.link), now
        while not should_stop():
            now = time.monotonic()
            wait = max(0.0, min(next_beat, next_touch, next_expiry, next_adopt, self.next_auth) - now)
            try:
                if self.link.sub.can_read(timeout=wait):
                    self.drain()          # at most DRAIN_MAX: a busy feed never starves the beat
                now = time.monotonic()
                if now >= next_beat:
                    self.check_and_beat()
                    next_beat = now + self.beat_s
                if now >= next_touch:
                    self.touch()
                    next_touch = now + self.touch_s
                if now >= next_expiry:
                    self.answer_wanted()
                    next_expiry = now + self.expiry_s
                if now >= next_adopt and self.beating:
                    next_adopt = now + adopter.step()
            except ex.RedisError as e:
                raise redis_lost(ex, e)
            if now >= self.next_auth:
                self.reload_auth("periodic")

    def reopen_maps(self):
        """Take charge of the pins there are now; none (an undeploy) ends the agent."""
        pdir, contract = self.maps.pdir, self.maps.contract
        self.maps.close()
        self.maps = None
        self.maps = AgentMaps(pdir, contract)
        log.info("pins in %s replaced: reopened", pdir)
        self.take_charge()

    def run(self, should_stop, sleep=time.sleep):
        self.take_charge()
        backoff, last = BACKOFF_MIN_S, None
        self.next_auth = time.monotonic()
        try:
            while not should_stop():
                try:
                    self.establish()
                    backoff, last = BACKOFF_MIN_S, None
                    self.serve(should_stop)
                except Lost as e:
                    if self.beating:
                        self.stop_answers(e.reason)
                    if e.reason == "pins_replaced":
                        self.reopen_maps()
                    # Redis up but not ready is polled at the beat's pace (answers
                    # resume soon after it is); a failure backs off
                    wait = self.beat_s if e.reason in NOT_READY else backoff
                    if str(e) != last:         # once per distinct cause, not per retry
                        log.warning("not answering: %s (retrying every %.2f s or less)", e, wait)
                    last = str(e)
                    self.link.close()
                    end = time.monotonic() + wait
                    while not should_stop() and time.monotonic() < end:
                        sleep(min(0.05, wait))
                    if e.reason not in NOT_READY:
                        backoff = min(backoff * 2, BACKOFF_MAX_S)
        finally:
            if self.maps is not None:
                self.stop_answers("agent_stop")
            self.link.close()
            log.info("stopped; flushes by reason: %s", self.flushes)


# --- start-up -----------------------------------------------------------------------------------

def read_password(path=None, env="BRC_AGENT_PASSWORD"):
    if path:
        try:
            with open(path) as f:
                return f.read().strip()
        except IOError as e:
            raise BrcError("cannot read the agent's password file %s: %s" % (path, e),
                           "write the agent user's password to %s (mode 0600, owned by root)" % path)
    return os.environ.get(env) or None


def check_credentials(link):
    """Connect once at start so a wrong password or a missing right is a clear error
    naming the fix, not a retry loop; Redis merely down is retried (not answering)."""
    ex = link.redis.exceptions
    who = link.user or "default"
    try:
        link.open()
        link.checks()
        link.probe_commands()
    except (ex.ConnectionError, ex.ResponseError) as e:
        msg = str(e)
        # redis-py 4.x reports a refused AUTH as a plain ResponseError, later ones as
        # AuthenticationError (a ConnectionError)
        if isinstance(e, ex.AuthenticationError) or msg.startswith(brc_auth.AUTH_ERRORS):
            raise BrcError("Redis at %s refused the agent's credentials (user %s): %s" % (link.where, who, msg),
                           "create the agent user (ACL SETUSER <user> reset on ><password> %s) and "
                           "pass --user and --password-file" % AGENT_GRANTS)
        if isinstance(e, ex.ConnectionError):
            log.warning("Redis at %s is not reachable yet (%s): the agent keeps trying, BRC does not "
                        "answer meanwhile", link.where, msg)
            return
        if "NOPERM" in msg or "no permissions" in msg:
            raise BrcError("Redis at %s refused a command to the agent's user %s: %s" % (link.where, who, msg),
                           "grant it: ACL SETUSER %s %s" % (who, AGENT_GRANTS))
        if "unknown" in msg.lower():
            raise BrcError("Redis at %s lacks a command the agent needs: %s" % (link.where, msg),
                           "upgrade Redis to 7.0 or later, or drop the rename-command of it "
                           "(the agent needs %s)" % " ".join(g[1:].upper() for g in AGENT_GRANTS.split()
                                                              if g.startswith("+")))
        raise BrcError("Redis at %s answered the agent with an error: %s" % (link.where, msg))
    finally:
        link.close()


def parse_args(argv):
    p = argparse.ArgumentParser(prog="brc-agent", description=__doc__.split("\n\n")[0])
    p.add_argument("--pin-dir", required=True, help="the interface's pins, e.g. /sys/fs/bpf/brc/eth0")
    where = p.add_argument_group("contract")
    where.add_argument("--src-dir", default="/usr/local/lib/brc/bpf", help="directory of brc_contract.h")
    where.add_argument("--contract", help="path of brc_contract.h (overrides --src-dir)")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379,
                   help="Redis's TCP port (also with --redis-socket: the port BRC serves)")
    p.add_argument("--redis-socket", help="Unix socket of Redis (instead of host/port)")
    p.add_argument("--user", help="the agent's ACL user")
    p.add_argument("--password-file", help="file holding its password (else $BRC_AGENT_PASSWORD)")
    p.add_argument("--beat-ms", type=int, default=int(BEAT_S * 1000))
    p.add_argument("--touch-ms", type=int, default=int(TOUCH_S * 1000))
    p.add_argument("--expiry-ms", type=int, default=int(EXPIRY_S * 1000),
                   help="how often the keys the kernel asks the expiry of are read from Redis")
    p.add_argument("--auth-every", type=float, default=AUTH_EVERY_S, help="seconds between user reloads")
    p.add_argument("--log", help="log file (default: stderr)")
    p.add_argument("--release", action="store_true",
                   help="flush and hand the interface back to the programs alone, then exit "
                        "(a deliberate removal; a stopped agent otherwise keeps answers stopped)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s brc-agent[%(process)d] %(levelname)s %(message)s")
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    maps = None
    try:
        src_dir = os.path.dirname(os.path.abspath(args.contract)) if args.contract else args.src_dir
        contract = brc_contract.load_contract(src_dir)
        if not 0 < args.beat_ms * 10 ** 6 < contract.constants["BRC_AGENT_STALE_NS"] // 2:
            raise BrcError("--beat-ms %d is not below half of BRC_AGENT_STALE_NS (%d ms)"
                           % (args.beat_ms, contract.constants["BRC_AGENT_STALE_NS"] // 10 ** 6),
                           "use the default 100")
        maps = AgentMaps(args.pin_dir, contract)
        if args.release:
            Agent(maps, None, None).release()
            log.info("released %s: the programs stand alone", args.pin_dir)
            return 0
        password = read_password(args.password_file)
        link = RedisLink(args.redis_host, args.redis_port, args.redis_socket, args.user, password)
        check_credentials(link)

        def auth_load(settled):
            def state():
                settled()       # after the epoch is noted: bytes that pass later move it
                return brc_auth.read_state(contract, host=args.redis_host, port=args.redis_port,
                                           unix_socket=args.redis_socket, user=args.user, password=password)
            with brc_auth.PinnedAuthMaps(args.pin_dir, contract) as auth_maps:
                # a hold (a client reset with an auth change unanswered) is not waited
                # out here, where it would stop the beat: the load is retried
                return brc_auth.load(auth_maps, contract, state, hold_wait_s=0)

        agent = Agent(maps, link, auth_load, beat_s=args.beat_ms / 1000.0, touch_s=args.touch_ms / 1000.0,
                      auth_every_s=args.auth_every, expiry_s=args.expiry_ms / 1000.0)
        log.info("started on %s for Redis at %s", args.pin_dir, link.where)
        try:
            agent.run(lambda: bool(stop))
        finally:
            maps = agent.maps          # reopened ones, if the pins were replaced
        return 0
    except (BrcError, brc_contract.ContractError) as e:
        log.error("%s", getattr(e, "text", str(e)))
        return 2
    finally:
        if maps is not None:
            maps.close()


if __name__ == "__main__":
    sys.exit(main())
