# -*- coding: utf-8 -*-
"""Paced reconnect of Redis clients BRC cannot adopt (module brc_reconnect).

BRC follows a connection only from its SYN on (brc_flows). A connection a client pool
opened before the programs were attached is never answered: its segments are counted
as `segments_untracked` until the client reconnects. This closes such connections with
`CLIENT KILL ID <id>`, a few at a time, so that their clients reconnect (through BRC).

Which clients, one reason each (the first that applies, in REASONS order); a client
with no reason is a candidate:
  - a TCP client that reached Redis over one of the BRC interface's addresses on
    the Redis port, from an address that is not the host's own (traffic between a
    host's own addresses goes over `lo`, never through BRC);
  - not a replication link (flags S, M), not blocked (b), not in MULTI (x), not
    subscribed (P, or sub/psub/ssub) nor MONITOR (O) unless asked for, not one of
    `keep_users` (the host agent's ACL user), not this module's own connection;
  - absent from BRC's flow tables (brc_flows, brc_transient): BRC does not follow it;
  - and older than the attached programs (CLIENT LIST `age` > seconds since the later
    of the ingress and egress programs' load_time): a younger untracked connection
    (flow table full) would come back untracked, reconnecting it does not help.

Each batch re-reads CLIENT LIST and re-judges its clients (one that entered MULTI or
subscribed meanwhile is left open), then sends one `CLIENT KILL ID <id>` per client
(Redis 7.0 takes one ID per filter and ANDs filters), and pauses before the next.
Client ids are never reused by a Redis process, so a kill cannot hit another client.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ipaddress
import os
import time

from ansible.module_utils.brc_common import BrcError
from ansible.module_utils import brc_auth, brc_contract, brc_pins

# Skip reasons, in the order they are judged (each client is counted under the first).
REASONS = (
    ("self", "this module's own connection"),
    ("unix", "Unix socket client: never through BRC"),
    ("replication", "replication link (flags S or M)"),
    ("other_port", "connected to another port than the one BRC watches"),
    ("loopback", "over loopback: never through BRC"),
    ("other_address", "connected to an address that is not on the BRC interface"),
    ("local", "from one of the host's own addresses: over lo, never through BRC"),
    ("kept_user", "ACL user in keep_users (the host agent's)"),
    ("multi", "in MULTI: killing it would drop its transaction"),
    ("blocked", "blocked in a command (BLPOP ...)"),
    ("monitor", "MONITOR client (include_monitor=false)"),
    ("pubsub", "subscribed (include_pubsub=false)"),
    ("tracked", "followed by BRC already (in its flow table)"),
    ("after_attach", "opened after the programs were attached yet not followed "
                     "(flow table full?): reconnecting would not help"),
    ("gone", "closed before its batch"),
    ("over_limit", "beyond max_clients for this run"),
)
REASON_DOCS = dict(REASONS)

CLIENT_GRANTS = "+client|list +client|kill +client|id"


# --- CLIENT LIST -----------------------------------------------------------------------

def parse_client_list(text):
    """CLIENT LIST's reply as [{field: value}] (values as text)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        fields = {}
        for part in line.split(" "):
            k, sep, v = part.partition("=")
            if sep:
                fields[k] = v
        if "id" in fields:
            out.append(fields)
    return out


def split_addr(addr):
    """'10.0.0.2:5000' -> ('10.0.0.2', 5000); '[::1]:5000' or '::1:5000' -> ('::1', 5000);
    None when it is not ip:port (a Unix socket path)."""
    if not addr or addr.startswith("/"):
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, int(port)


def _canonical(addr):
    """One text per address (IPv6 has several), without a link-local scope."""
    return str(ipaddress.ip_address(addr.split("%")[0]))


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class Judge:
    """Decides, per CLIENT LIST entry, the reason to leave it (None: reconnect it).

    brc_addrs: addresses of the BRC interface; local_addrs: every address of the
    host; tracked(cli_ip, cli_port, srv_ip, srv_port) -> bool; since_attach_s: seconds
    since the programs were attached (a client older than that predates them).
    """

    def __init__(self, port, brc_addrs, local_addrs, tracked, since_attach_s, self_id=None,
                 keep_users=(), include_pubsub=False, include_monitor=False):
        self.port = port
        self.brc_addrs = set(_canonical(a) for a in brc_addrs)
        self.local_addrs = set(_canonical(a) for a in local_addrs)
        self.tracked = tracked
        self.since_attach_s = since_attach_s
        self.self_id = self_id
        self.keep_users = set(keep_users or ())
        self.include_pubsub = include_pubsub
        self.include_monitor = include_monitor

    def reason(self, c):
        flags = c.get("flags", "")
        if self.self_id is not None and c.get("id") == str(self.self_id):
            return "self"
        cli = split_addr(c.get("addr", ""))
        srv = split_addr(c.get("laddr", ""))
        if "U" in flags or cli is None or srv is None:
            return "unix"
        if "S" in flags or "M" in flags:
            return "replication"
        if srv[1] != self.port:
            return "other_port"
        if ipaddress.ip_address(cli[0]).is_loopback or ipaddress.ip_address(srv[0]).is_loopback:
            return "loopback"
        if _canonical(srv[0]) not in self.brc_addrs:
            return "other_address"
        if _canonical(cli[0]) in self.local_addrs:
            return "local"
        if c.get("user") in self.keep_users:
            return "kept_user"
        if "x" in flags or _int(c.get("multi"), -1) >= 0:
            return "multi"
        if "b" in flags:
            return "blocked"
        if "O" in flags and not self.include_monitor:
            return "monitor"
        if ("P" in flags or any(_int(c.get(k)) > 0 for k in ("sub", "psub", "ssub"))) \
                and not self.include_pubsub:
            return "pubsub"
        if self.tracked(cli[0], cli[1], srv[0], srv[1]):
            return "tracked"
        if _int(c.get("age"), -1) <= self.since_attach_s:
            return "after_attach"
        return None


# --- what BRC follows ------------------------------------------------------------------

def _prog_load_time_ns(prog_id):
    fd = brc_pins.prog_fd_by_id(prog_id)
    try:
        return brc_pins._info(fd, brc_pins._ProgInfo).load_time   # pylint: disable=protected-access
    finally:
        os.close(fd)


def attached_programs(interface):
    """{direction: prog id} of BRC's filters on interface (brc_tc)."""
    from ansible.module_utils.brc_common import import_pyroute2
    if import_pyroute2()[0] is None:
        raise BrcError("pyroute2 is not importable: cannot read BRC's filters on %s" % interface,
                       "install the Debian package python3-pyroute2")
    from ansible.module_utils import brc_tc
    with brc_tc.Tc(interface) as tc:
        out = {}
        for d in brc_pins.DIRECTIONS:
            f = tc.ours(d)
            if f:
                out[d] = f["id"]
    return out


def seconds_since_attach(interface, clock=time.clock_gettime):
    """Seconds since the later of BRC's attached programs was loaded (load_time is
    CLOCK_BOOTTIME); a connection older than that predates the programs."""
    progs = attached_programs(interface)
    missing = [d for d in brc_pins.DIRECTIONS if d not in progs]
    if missing:
        raise BrcError("BRC is not attached on %s (no %s filter): no connection is followed, reconnecting "
                       "clients would not help" % (interface, " and ".join(missing)),
                       "deploy BRC (deploy.yml) before reconnecting clients")
    loaded = max(_prog_load_time_ns(pid) for pid in progs.values())
    now = clock(time.CLOCK_BOOTTIME)
    return max(0.0, now - loaded / 1e9), progs


class FlowTables:
    """Membership of a connection in brc_flows / brc_transient (struct brc_flow_key)."""

    def __init__(self, pdir, contract):
        self.key_cls = contract.structs["brc_flow_key"]
        self.maps = []
        for what in ("flows", "transient"):
            path = os.path.join(pdir, contract.map_name(what))
            if what == "flows" or os.path.lexists(path):
                if not os.path.lexists(path):
                    raise BrcError("no flow table pinned at %s" % path,
                                   "deploy BRC (deploy.yml) on this host first")
                self.maps.append(brc_pins.PinnedMap(path))

    def close(self):
        for m in self.maps:
            m.close()

    def key(self, cli_ip, cli_port, srv_ip, srv_port):
        k = self.key_cls()
        k.cli_addr[:] = brc_contract.addr_words(cli_ip)
        k.srv_addr[:] = brc_contract.addr_words(srv_ip)
        k.cli_port, k.srv_port = cli_port, srv_port
        return ctypes.string_at(ctypes.addressof(k), ctypes.sizeof(k))

    def __call__(self, cli_ip, cli_port, srv_ip, srv_port):
        key = self.key(cli_ip, cli_port, srv_ip, srv_port)
        return any(m.lookup(key) is not None for m in self.maps)


# --- talking to Redis ------------------------------------------------------------------

class RedisCall(brc_auth._Redis):   # pylint: disable=protected-access
    """brc_auth's redis-py wrapper (errors as BrcError naming the fix), with the fixes for
    the CLIENT commands this module needs. A BrcError that no later command can get past
    (unreachable, credentials, rights, renamed command) carries details fatal=True."""

    def __call__(self, *args):
        ex = self.redis.exceptions
        try:
            return brc_auth._Redis.__call__(self, *args)   # pylint: disable=protected-access
        except BrcError as e:
            cause = e.__context__
            what = " ".join(a for a in args[:2] if isinstance(a, str))
            msg = str(cause).rstrip(".") if cause is not None else ""
            if isinstance(cause, ex.ResponseError) and not msg.startswith(brc_auth.AUTH_ERRORS):
                if isinstance(cause, getattr(ex, "NoPermissionError", ())) or msg.startswith("NOPERM") \
                        or "no permissions" in msg:
                    raise BrcError("Redis at %s refused %s to the toolkit's user %s: %s"
                                   % (self.where, what, self.user, msg),
                                   "grant it %s (ACL SETUSER %s %s), or leave brc_rollout_reconnect off"
                                   % (CLIENT_GRANTS, self.user, CLIENT_GRANTS), fatal=True)
                if "unknown command" in msg.lower() or "unknown subcommand" in msg.lower():
                    raise BrcError("Redis at %s does not know %s (%s): CLIENT is renamed or disabled "
                                   "(rename-command)" % (self.where, what, msg),
                                   "restore CLIENT LIST/ID/KILL under their own names, or leave "
                                   "brc_rollout_reconnect off and restart the clients yourself", fatal=True)
                raise   # another error reply: this command failed, the next may not
            e.details["fatal"] = True
            raise


def connect(host="127.0.0.1", port=6379, unix_socket=None, user=None, password=None, timeout=5.0):
    redis, err = brc_auth.import_redis()
    if redis is None:
        raise BrcError("redis-py is not importable: %s" % err.strip().splitlines()[-1],
                       "install the Debian package python3-redis")
    where = brc_auth._where(host, port, unix_socket)   # pylint: disable=protected-access
    client = brc_auth._client(redis, host, port, unix_socket, user, password, timeout)  # pylint: disable=protected-access
    return RedisCall(redis, client, where, user)


# --- the run ---------------------------------------------------------------------------

def empty_result():
    return {"clients": 0, "candidates": 0, "killed": 0, "kill_failed": 0, "batches": 0,
            "left": dict((r, 0) for r, _doc in REASONS), "killed_ids": [], "kill_failed_ids": [],
            "errors": [], "would_kill": 0, "candidate_ids": []}


def run(call, judge, batch_size=10, pause_s=1.0, max_clients=1000, check_mode=False, sleep=time.sleep):
    """Judge every client, then kill the candidates in batches. Returns the counts
    (see empty_result); in check mode kills nothing and reports `would_kill`."""
    res = empty_result()
    clients = parse_client_list(call("CLIENT", "LIST"))
    res["clients"] = len(clients)
    targets = []
    for c in clients:
        why = judge.reason(c)
        if why:
            res["left"][why] += 1
        else:
            targets.append(int(c["id"]))
    targets.sort()   # oldest first (ids grow with time)
    res["candidates"] = len(targets)
    res["candidate_ids"] = list(targets)
    over = targets[max_clients:]
    targets = targets[:max_clients]
    res["left"]["over_limit"] += len(over)
    batches = [targets[i:i + batch_size] for i in range(0, len(targets), batch_size)]
    if check_mode:
        res["would_kill"] = len(targets)
        res["batches"] = len(batches)
        return res
    try:
        for n, batch in enumerate(batches):
            if n:
                sleep(pause_s)
            res["batches"] += 1
            now = dict((c["id"], c) for c in parse_client_list(call("CLIENT", "LIST")))
            for cid in batch:
                _kill_one(call, judge, res, cid, now.get(str(cid)))
    except BrcError as e:
        e.details.update(result=res)   # what was closed before it stopped
        raise
    return res


def _kill_one(call, judge, res, cid, client):
    why = "gone" if client is None else judge.reason(client)
    if why:
        res["left"][why] += 1
        return
    try:
        got = call("CLIENT", "KILL", "ID", str(cid))
    except BrcError as e:
        if e.details.get("fatal"):
            raise
        res["kill_failed"] += 1
        res["kill_failed_ids"].append(cid)
        res["errors"].append("%d: %s" % (cid, e.msg))
        return
    if _int(got) >= 1:
        res["killed"] += 1
        res["killed_ids"].append(cid)
    else:
        res["left"]["gone"] += 1   # closed between CLIENT LIST and the kill


def summary(res, check_mode=False):
    left = ", ".join("%s %d" % (k, v) for k, v in sorted(res["left"].items()) if v)
    if check_mode:
        head = "would reconnect %d of %d clients in %d batches" % (res["would_kill"], res["clients"],
                                                                  res["batches"])
    else:
        head = "reconnected %d of %d clients in %d batches, %d failed" % (res["killed"], res["clients"],
                                                                         res["batches"], res["kill_failed"])
    return "%s; left: %s" % (head, left or "none")
