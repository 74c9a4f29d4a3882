# -*- coding: utf-8 -*-
# Who may read what: Redis's ACL users and rights, read from Redis itself and
# loaded into the programs' brc_users / brc_server maps (bpf/brc_contract.h).
#
# The rule the programs apply: a GET is answered in the kernel only for a
# connection whose ACL user Redis would let GET *every* key (an MGET: MGET every
# key, BRC_USER_MGET, decided the same way). This file decides,
# per user, from Redis's own replies (ACL GETUSER with its selectors, COMMAND
# INFO GET for GET's categories, ACL DRYRUN as a cross-check), and loads the
# result with the loader protocol of struct brc_server, so that a change Redis
# completes during or after the read stops answers until the next load.
#
#   state = read_state(contract, port=6379, password="...")   # talks to Redis
#   with PinnedAuthMaps(pin_dir, contract) as maps:
#       result = load(maps, contract, lambda: read_state(contract, ...))
#
# Standard library only at import time; redis-py (Debian's python3-redis, 4.3 on
# the hosts; 8.x in the controller's .venv) is imported by read_state(). Replies
# are read raw through execute_command and parsed here, in both their RESP2
# (flat lists) and RESP3 (maps) shapes, so no version-specific helper is used.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import re
import time

from ansible.module_utils.brc_common import BrcError, import_redis
from ansible.module_utils import brc_facts, brc_pins

# What the toolkit's Redis user needs (ACL SETUSER <user> on >pw <these>).
TOOLKIT_GRANTS = "+acl|getuser +acl|users +acl|dryrun +config|get +command|info"

# Key rules that let a selector read every key, as ACL GETUSER renders them
# (7.0 renders %RW~* and allkeys as ~*; the others are accepted as written).
ALL_KEYS_READ = frozenset(("~*", "%R~*", "%RW~*", "%WR~*", "allkeys"))

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.:\-]*$")

# A load gives up after this many attempts (each one restarted by an auth change
# or a stuck auth command) and waits at most this long for auth_inflight == 0.
LOAD_ATTEMPTS = 5
INFLIGHT_WAIT_S = 2.0
# An auth command whose client reset the connection may still run until
# brc_global.auth_hold_until_ns (brc_max_age after the reset, 30 s without one):
# a load read before then cannot make the programs answer, so the loader waits
# that out, up to this long, and reads after it.
HOLD_WAIT_S = 35.0
POLL_S = 0.01


# --- raw replies ---------------------------------------------------------------

def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _fields(reply):
    """A reply that is a map: RESP3 dict or RESP2 flat [k1, v1, k2, v2 ...] -> {str: value}."""
    if isinstance(reply, dict):
        return dict((_text(k), v) for k, v in reply.items())
    if isinstance(reply, (list, tuple)) and len(reply) % 2 == 0:
        return dict((_text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2))
    raise BrcError("unexpected reply shape from Redis: %r" % (reply,),
                   "report this with the Redis version: the toolkit refuses what it cannot read")


def _tokens(value):
    """A rule string ('-@all +get') or a list of rules -> ['-@all', '+get']."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            out.extend(_text(item).split())
        return out
    return _text(value).split()


def parse_getuser(reply):
    """An ACL GETUSER reply -> {"flags": [...], "selectors": [{"commands": [...], "keys": [...]}]}.

    The root selector (the user's own commands/keys) comes first, then the ones
    of `selectors`. `allkeys` among the flags (how Redis 6 rendered ~*) counts as
    a key rule of the root selector.
    """
    user = _fields(reply)
    flags = [_text(f) for f in (user.get("flags") or [])]
    root_keys = _tokens(user.get("keys"))
    if "allkeys" in flags:
        root_keys.append("allkeys")
    selectors = [{"commands": _tokens(user.get("commands")), "keys": root_keys}]
    for sel in user.get("selectors") or []:
        s = _fields(sel)
        selectors.append({"commands": _tokens(s.get("commands")), "keys": _tokens(s.get("keys"))})
    return {"flags": flags, "selectors": selectors}


def get_categories(reply, command="GET"):
    """COMMAND INFO <command> reply -> its ACL categories ['@read', '@string', '@fast'], or
    None when Redis has no such command (renamed or disabled: then it is never answered)."""
    if not reply or reply[0] is None:
        return None
    info = reply[0]
    if not isinstance(info, (list, tuple)) or len(info) < 7 or not isinstance(info[6], (list, tuple)):
        raise BrcError("unexpected COMMAND INFO %s reply from Redis: %r" % (command, reply),
                       "BRC needs Redis 7.0 or later")
    return [_text(c).lower() for c in info[6]]


# --- the decision ----------------------------------------------------------------

def commands_allow_get(rules, categories, command="get"):
    """Evaluate a selector's command rules left to right for GET (or @command, MGET).

    Returns (allowed, why). Understood: +@all/allcommands, -@all/nocommands,
    +@cat/-@cat (effective when cat is one of the command's categories), +get/-get,
    and rules naming other commands or their subcommands (no effect on it). Anything
    else, including a rule on its first argument (+get|x), makes the answer
    "not allowed": an unknown rule could be one that narrows it.
    """
    name = command.upper()
    allowed, why = False, "no rule allows %s" % name
    for tok in rules:
        t = tok.lower()
        if t in ("+@all", "allcommands"):
            allowed, why = True, t
        elif t in ("-@all", "nocommands"):
            allowed, why = False, "%s denied by %s" % (name, t)
        elif len(t) > 1 and t[0] in "+-":
            sign, body = t[0] == "+", t[1:]
            if body.startswith("@"):
                if not _NAME.match(body[1:]):
                    return False, "rule %r not understood" % tok
                if body in categories:
                    allowed, why = sign, (t if sign else "%s denied by %s" % (name, t))
            elif "|" in body:
                cmd, _sep, sub = body.partition("|")
                if cmd == command:
                    return False, "rule %r limits %s to some arguments" % (tok, name)
                if not (_NAME.match(cmd) and sub):
                    return False, "rule %r not understood" % tok
            elif body == command:
                allowed, why = sign, (t if sign else "%s denied by %s" % (name, t))
            elif not _NAME.match(body):
                return False, "rule %r not understood" % tok
        else:
            return False, "rule %r not understood" % tok
    return allowed, why


def read_all_by_rules(getuser_reply, categories, command="get"):
    """(True, why) when some selector both reads every key and allows GET (or @command).

    getuser_reply: the raw ACL GETUSER reply; categories: the command's ACL categories
    (get_categories()), None when Redis has no such command. Pure: no Redis needed.
    Whether the user is on or off does not matter: Redis keeps the existing
    connections of a disabled user working with its current rights.
    """
    name = command.upper()
    if getuser_reply is None:
        return False, "no such user"
    if not categories:
        return False, "Redis has no %s command" % name
    user = parse_getuser(getuser_reply)
    reasons = []
    for i, sel in enumerate(user["selectors"]):
        where = "root" if i == 0 else "selector %d" % i
        if not ALL_KEYS_READ.intersection(sel["keys"]):
            reasons.append("%s: no key rule reads every key" % where)
            continue
        ok, why = commands_allow_get(sel["commands"], categories, command)
        if ok:
            return True, "%s: every key readable, %s allowed (%s)" % (where, name, why)
        reasons.append("%s: %s" % (where, why))
    return False, "; ".join(reasons)


def is_open(name, getuser_reply):
    """The default user, on and nopass: connections are it without AUTH."""
    if name != "default" or getuser_reply is None:
        return False
    flags = parse_getuser(getuser_reply)["flags"]
    return "on" in flags and "nopass" in flags


def user_flags(contract, read_all, open_, mget=False):
    c = contract.constants
    return ((c["BRC_USER_READ_ALL"] if read_all else 0) | (c["BRC_USER_OPEN"] if open_ else 0) |
            (c["BRC_USER_MGET"] if read_all and mget else 0))


# --- one Redis server on the port -----------------------------------------------------

WILDCARDS = ("0.0.0.0", "::")


def socket_owners(inodes, proc="/proc"):
    """{inode: set(pid)} for the given socket inodes, from /proc/<pid>/fd."""
    want = dict(("socket:[%d]" % i, i) for i in inodes)
    owners = dict((i, set()) for i in inodes)
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link in want:
                owners[want[link]].add(int(pid))
    return owners


def check_one_server(port, proc="/proc"):
    """Refuse when the sockets listening on port may belong to more than one Redis.

    The toolkit reads ACLs from the Redis it reaches at redis_host:port (or the
    Unix socket), while the programs answer for every connection to the port on
    the interface. With two servers on one port (e.g. 10.0.0.5:6379 and
    127.0.0.1:6379, one per address), the users read could be the other server's:
    a user with every right on one could read keys it may not read on the other.

    Several addresses are fine when one process holds every listening socket
    (Debian's default `bind 127.0.0.1 -::1`, the lab's `bind <addr> 127.0.0.1`,
    a forked BGSAVE child holds them too). When the owners cannot be told (no
    /proc access), the rule falls back to: more than one distinct address and
    none of them a wildcard is refused.
    """
    socks = brc_facts.listening_sockets(port, os.path.join(proc, "net"))
    if len(socks) <= 1:
        return
    addrs = sorted(set(a for a, _i in socks))
    owners = socket_owners([i for _a, i in socks], proc)
    if all(owners.values()):
        common = set.intersection(*owners.values())
        if common:
            return
        pids = sorted(set.union(*owners.values()))
        raise BrcError("%d processes (pids %s) listen on TCP port %d (%s): the users read from one "
                       "Redis could be another's" % (len(pids), ", ".join(map(str, pids)), port,
                                                     ", ".join(addrs)),
                       "run one Redis per port on a BRC host")
    if len(addrs) > 1 and not any(a in WILDCARDS for a in addrs):
        raise BrcError("TCP port %d is listened on at %s and which processes hold those sockets "
                       "cannot be read: the users read from one Redis could be another's"
                       % (port, ", ".join(addrs)),
                       "run one Redis per port on a BRC host (and run the toolkit as root)")


# --- reading Redis ------------------------------------------------------------------

def _where(host, port, unix_socket):
    return unix_socket if unix_socket else "%s:%d" % (host, port)


def _client(redis, host, port, unix_socket, user, password, timeout):
    kw = dict(username=user or None, password=password or None, socket_timeout=timeout,
              socket_connect_timeout=timeout, decode_responses=False)
    if unix_socket:
        kw["unix_socket_path"] = unix_socket
    else:
        kw.update(host=host, port=port)
    try:
        # redis-py >= 5: RESP2 (8.x would send HELLO 3), and no retries (6.x+ retry a
        # refused AUTH three times with backoff: seconds to learn the password is wrong).
        # Its CLIENT SETINFO at connect may be refused (7.0 does not know it; the
        # toolkit user lacks it): redis-py ignores that.
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        client = redis.Redis(protocol=2, retry=Retry(NoBackoff(), 0), **kw)
    except TypeError:
        client = redis.Redis(**kw)   # redis-py 4.x (Debian 12's python3-redis)
    # COMMAND has a reply callback in every redis-py version; keep its raw reply.
    client.set_response_callback("COMMAND", lambda reply, **_kw: reply)
    return client


# Replies that mean "not these credentials" (AUTH at connect time, or a command before it).
AUTH_ERRORS = ("WRONGPASS", "NOAUTH", "invalid password", "invalid username-password",
               "AUTH <password> called without", "Authentication required")


class _Redis:
    """execute_command with every failure turned into a BrcError that names the fix."""

    CREDENTIALS_FIX = ("set brc_redis_password (and brc_redis_user) to a user Redis accepts, or leave them "
                       "empty when the default user has no password (module options redis_user, redis_password)")

    def __init__(self, redis, client, where, user):
        self.redis, self.client, self.where, self.user = redis, client, where, user or "default"

    def __call__(self, *args):
        ex = self.redis.exceptions
        what = " ".join(a if isinstance(a, str) else "<arg>" for a in args[:2])
        try:
            return self.client.execute_command(*args)
        except ex.AuthenticationError as e:
            raise BrcError("Redis at %s refused the toolkit's credentials (user %s): %s"
                           % (self.where, self.user, str(e).rstrip(".")), self.CREDENTIALS_FIX)
        except (ex.ConnectionError, ex.TimeoutError) as e:
            raise BrcError("cannot reach Redis at %s: %s" % (self.where, str(e).rstrip(".")),
                           "check that Redis runs and the module's redis_host/redis_port or "
                           "redis_unix_socket point at it")
        except ex.ResponseError as e:
            msg = str(e).rstrip(".")
            if msg.startswith(AUTH_ERRORS):   # redis-py 4.x raises these as plain ResponseError
                raise BrcError("Redis at %s refused the toolkit's credentials (user %s): %s"
                               % (self.where, self.user, msg), self.CREDENTIALS_FIX)
            if isinstance(e, getattr(ex, "NoPermissionError", ())) or msg.startswith("NOPERM") \
                    or "no permissions" in msg:
                raise BrcError("Redis at %s refused %s to the toolkit's user %s: %s"
                               % (self.where, what, self.user, msg),
                               "grant the toolkit user %s (ACL SETUSER %s %s)"
                               % (TOOLKIT_GRANTS, self.user, TOOLKIT_GRANTS))
            if "unknown command" in msg.lower() or "unknown subcommand" in msg.lower():
                raise BrcError("Redis at %s does not know %s (%s): BRC reads users with ACL GETUSER "
                               "and checks them with ACL DRYRUN" % (self.where, what, msg),
                               "upgrade Redis to 7.0 or later (keep BRC in observe until then)")
            raise BrcError("Redis at %s answered %s with an error: %s" % (self.where, what, msg))


def _config_int(call, name, missing=None):
    """CONFIG GET name as an int; missing: the value when this Redis has no such
    setting (tls-port on a build without TLS), else that is an error too."""
    reply = _fields(call("CONFIG", "GET", name))
    value = reply.get(name)
    if value is None and missing is not None:
        return missing
    try:
        return int(_text(value))
    except (TypeError, ValueError):
        raise BrcError("CONFIG GET %s returned %r" % (name, value))


def _dryrun_keys():
    """Keys no sensible ACL pattern names: random text, and random bytes."""
    return [b"brc-dryrun:" + os.urandom(8).hex().encode(), b"\xff\x00" + os.urandom(8)]


def read_state(contract, host="127.0.0.1", port=6379, unix_socket=None, user=None, password=None,
               timeout=5.0, proc="/proc", check_listeners=True):
    """Read Redis's users and rights.

    Returns {"users": {name: flags}, "timeout": seconds, "tls_port": port or 0,
    "reasons": {name: why}}:
    flags are BRC_USER_* bits; users whose name is longer than BRC_USER_MAX bytes
    are left out (never answered for). READ_ALL needs both the rules (some
    selector reads every key and allows GET) and Redis itself (ACL DRYRUN <user>
    GET <random key> answers OK); MGET likewise, for a READ_ALL user. Raises
    BrcError on anything unexpected.
    """
    redis, err = import_redis()
    if redis is None:
        raise BrcError("redis-py is not importable: %s" % err.strip().splitlines()[-1],
                       "install the Debian package python3-redis")
    where = _where(host, port, unix_socket)
    call = _Redis(redis, _client(redis, host, port, unix_socket, user, password, timeout), where, user)
    try:
        names = [_text(n) for n in call("ACL", "USERS")]
        categories = get_categories(call("COMMAND", "INFO", "GET"))
        mget_categories = get_categories(call("COMMAND", "INFO", "MGET"), "MGET")
        idle = _config_int(call, "timeout")
        tls_port = _config_int(call, "tls-port", missing=0)
        served_port = _config_int(call, "port")
        if served_port != port:
            raise BrcError("the Redis at %s serves TCP port %d, not %d: its users are not the ones "
                           "of the connections BRC sees" % (where, served_port, port),
                           "point redis_unix_socket/redis_host at the Redis listening on port %d" % port)
        if check_listeners:
            check_one_server(port, proc)
        limit = contract.constants["BRC_USER_MAX"]
        users, reasons = {}, {}
        for name in names:
            raw_name = name.encode("utf-8", "surrogateescape")   # names are bytes to Redis
            if len(raw_name) > limit:
                continue
            reply = call("ACL", "GETUSER", raw_name)
            if reply is None:
                continue  # deleted since ACL USERS: a deletion bumps the epoch anyway
            read_all, why = read_all_by_rules(reply, categories)
            if read_all:
                for key in _dryrun_keys():
                    answer = call("ACL", "DRYRUN", raw_name, "GET", key)
                    if _text(answer) != "OK":
                        read_all, why = False, "ACL DRYRUN GET: %s" % _text(answer)
                        break
            mget = False
            if read_all:
                mget, mget_why = read_all_by_rules(reply, mget_categories, "mget")
                if mget:
                    answer = call("ACL", "DRYRUN", raw_name, "MGET", *_dryrun_keys())
                    if _text(answer) != "OK":
                        mget, mget_why = False, "ACL DRYRUN MGET: %s" % _text(answer)
                why += "; MGET: %s" % mget_why
            users[name] = user_flags(contract, read_all, is_open(name, reply), mget)
            reasons[name] = why
    finally:
        try:
            call.client.close()
        except Exception:  # pylint: disable=broad-except
            pass
    return {"users": users, "timeout": idle, "tls_port": tls_port, "reasons": reasons}


# --- map accessors --------------------------------------------------------------------

class PinnedAuthMaps:
    """brc_users, brc_server and brc_global of one interface, through their pins."""

    def __init__(self, pdir, contract):
        self.maps = []
        try:
            for attr, what in (("users", "users"), ("server", "server"), ("global_", "global")):
                m = brc_pins.PinnedMap(os.path.join(pdir, contract.map_name(what)))
                self.maps.append(m)
                setattr(self, attr, m)
            _check_sizes(self, contract, pdir)
        except BrcError:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for m in self.maps:
            m.close()


class _BccTable:
    """A bcc table with PinnedMap's raw-bytes API (keys, lookup, update, delete, info)."""

    def __init__(self, table):
        self.table = table
        self.info = {"key_size": ctypes.sizeof(table.Key), "value_size": ctypes.sizeof(table.Leaf),
                     "max_entries": int(table.max_entries)}

    def _key(self, key):
        k = self.table.Key()
        raw = key.to_bytes(ctypes.sizeof(k), "little") if isinstance(key, int) else bytes(key)
        ctypes.memmove(ctypes.addressof(k), raw, min(len(raw), ctypes.sizeof(k)))
        return k

    def keys(self):
        return [ctypes.string_at(ctypes.addressof(k), ctypes.sizeof(k)) for k in self.table.keys()]

    def lookup(self, key):
        try:
            v = self.table[self._key(key)]
        except KeyError:
            return None
        return ctypes.string_at(ctypes.addressof(v), ctypes.sizeof(v))

    def update(self, key, value):
        v = self.table.Leaf()
        ctypes.memmove(ctypes.addressof(v), bytes(value), min(len(value), ctypes.sizeof(v)))
        self.table[self._key(key)] = v

    def delete(self, key):
        try:
            del self.table[self._key(key)]
            return True
        except KeyError:
            return False


class BccAuthMaps:
    """The same maps in a bcc BPF object loaded without pins (tests, bench)."""

    def __init__(self, bpf, contract):
        self.users = _BccTable(bpf.get_table(contract.map_name("users").encode()))
        self.server = _BccTable(bpf.get_table(contract.map_name("server").encode()))
        self.global_ = _BccTable(bpf.get_table(contract.map_name("global").encode()))
        _check_sizes(self, contract, "the bcc object")


def _check_sizes(maps, contract, where):
    for attr, key_struct, value_struct in (("users", "brc_user_key", "brc_user"),
                                           ("server", None, "brc_server"),
                                           ("global_", None, "brc_global")):
        info = getattr(maps, attr).info
        want_v = ctypes.sizeof(contract.structs[value_struct])
        want_k = ctypes.sizeof(contract.structs[key_struct]) if key_struct else 4
        if info["value_size"] != want_v or info["key_size"] != want_k:
            raise BrcError("%s in %s has %d/%d-byte keys/values, the contract says %d/%d"
                           % (contract.map_name(attr.rstrip("_")), where, info["key_size"],
                              info["value_size"], want_k, want_v),
                           "redeploy the programs from these sources (brc_program, reset_maps=true "
                           "if the layout changed)")


# --- encoding --------------------------------------------------------------------------

def _pack(st):
    return ctypes.string_at(ctypes.addressof(st), ctypes.sizeof(st))


def _unpack(cls, raw):
    return cls.from_buffer_copy(raw[:ctypes.sizeof(cls)].ljust(ctypes.sizeof(cls), b"\0"))


def user_key(contract, name):
    cls = contract.structs["brc_user_key"]
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > cls.name.size:
        raise ValueError("user name longer than BRC_USER_MAX: %r" % name)
    k = cls()
    k.len = len(raw)
    ctypes.memmove(ctypes.addressof(k) + cls.name.offset, raw, len(raw))
    return _pack(k)


def user_name(contract, raw):
    k = _unpack(contract.structs["brc_user_key"], raw)
    return bytes(bytearray(k.name))[:k.len].decode("utf-8", "surrogateescape")


def read_users(maps, contract):
    """{name: flags} as brc_users holds them now."""
    cls = contract.structs["brc_user"]
    out = {}
    for raw_key in maps.users.keys():
        raw = maps.users.lookup(raw_key)
        if raw is not None:
            out[user_name(contract, raw_key)] = _unpack(cls, raw).flags
    return out


def _read_struct(m, cls):
    raw = m.lookup(0)
    st = _unpack(cls, raw or b"")
    return dict((f, getattr(st, f)) for f, _t in cls._fields_)


def read_server(maps, contract):
    return _read_struct(maps.server, contract.structs["brc_server"])


def read_global(maps, contract):
    return _read_struct(maps.global_, contract.structs["brc_global"])


def _write_server(maps, contract, values):
    cls = contract.structs["brc_server"]
    st = cls()
    for f, _t in cls._fields_:
        setattr(st, f, values.get(f, 0))
    maps.server.update(0, _pack(st))


def idle_pass_ns(timeout_s):
    """Redis's `timeout` (s) -> brc_server.idle_pass_ns: half of it, 0 = no timeout."""
    return int(timeout_s) * 1000000000 // 2 if timeout_s else 0


# brc_server fields a load sets from what Redis said (loaded_ns is when, not what).
SERVER_READ_FIELDS = ("auth_epoch", "idle_pass_ns", "tls_port")


def server_settings(current):
    """brc_server's fields taken from Redis's own settings (read_state()'s dict)."""
    return {"idle_pass_ns": idle_pass_ns(current["timeout"]), "tls_port": current.get("tls_port", 0)}


def _apply_users(maps, contract, want):
    """Make brc_users hold exactly want ({name: flags}): deletions first (room for adds)."""
    cls = contract.structs["brc_user"]
    have = read_users(maps, contract)
    for name in sorted(set(have) - set(want)):
        maps.users.delete(user_key(contract, name))
    for name in sorted(want):
        if have.get(name) != want[name]:
            v = cls()
            v.flags = want[name]
            maps.users.update(user_key(contract, name), _pack(v))


def user_changes(before, after):
    """{"added": [...], "changed": [...], "removed": [...]} between two {name: flags}."""
    return {"added": sorted(set(after) - set(before)),
            "changed": sorted(n for n in set(after) & set(before) if after[n] != before[n]),
            "removed": sorted(set(before) - set(after))}


# --- the loader ---------------------------------------------------------------------------

def load(maps, contract, state, check_mode=False, attempts=LOAD_ATTEMPTS, inflight_wait_s=INFLIGHT_WAIT_S,
         poll_s=POLL_S, sleep=time.sleep, clock=time.monotonic, hold_wait_s=HOLD_WAIT_S):
    """Load Redis's users into the programs' maps with the protocol of struct brc_server.

    maps: an accessor with .users, .server, .global_ (PinnedAuthMaps, BccAuthMaps).
    state: a callable returning read_state()'s dict. It is a callable, not the dict,
    because the protocol needs the read made *after* brc_global.auth_epoch is
    noted: a change Redis completes before that note and read before it would be
    loaded as current. It is called once before anything is written (so a wrong
    password or missing grant fails with the maps untouched), then once per attempt.

    Returns {"changed", "users": {name: flags}, "reasons", "timeout", "before",
    "after", "users_added", "users_changed", "users_removed", "epoch_changed",
    "auth_epoch", "answering", "attempts"}. changed is True only when brc_users or
    brc_server's auth_epoch/idle_pass_ns/tls_port end up different from before (loaded_ns
    and the temporary BRC_EPOCH_NONE do not count). check_mode reads and writes nothing.
    A hold (brc_global.auth_hold_until_ns) is waited out up to hold_wait_s before
    Redis is read; a longer one leaves answering False.
    """
    none = contract.constants["BRC_EPOCH_NONE"]
    before_users = read_users(maps, contract)
    before_server = read_server(maps, contract)
    current = state()
    capacity = maps.users.info["max_entries"]
    if len(current["users"]) > capacity:
        raise BrcError("Redis has %d users and %s holds %d (nothing was changed)"
                       % (len(current["users"]), contract.map_name("users"), capacity),
                       "rebuild the programs with brc_cflags: ['-DBRC_USERS_MAX=<more>'] and reset_maps")

    def result(users, server, answering, tries):
        diff = user_changes(before_users, users)
        epoch_changed = any(server.get(f) != before_server.get(f) for f in SERVER_READ_FIELDS)
        return {"changed": epoch_changed or any(diff.values()), "users": dict(users),
                "reasons": dict(current.get("reasons", {})), "timeout": current["timeout"],
                "before": {"users": before_users, "server": before_server},
                "after": {"users": dict(users), "server": server},
                "users_added": diff["added"], "users_changed": diff["changed"],
                "users_removed": diff["removed"], "epoch_changed": epoch_changed,
                "auth_epoch": server["auth_epoch"], "answering": answering, "attempts": tries}

    if check_mode:
        g = read_global(maps, contract)
        server = dict(before_server, auth_epoch=g["auth_epoch"], **server_settings(current))
        return result(current["users"], server, g["auth_inflight"] == 0, 0)

    why, tried, moved = "no attempt made", 0, False
    for attempt in range(1, attempts + 1):
        tried = attempt
        # 1. stop answering, note the epoch, let in-flight auth commands complete
        _write_server(maps, contract, dict(read_server(maps, contract), auth_epoch=none))
        e0 = read_global(maps, contract)["auth_epoch"]
        deadline = clock() + inflight_wait_s
        inflight = read_global(maps, contract)["auth_inflight"]
        while inflight and clock() < deadline:
            sleep(poll_s)
            inflight = read_global(maps, contract)["auth_inflight"]
        if inflight:
            why = ("%d auth-changing commands stayed in flight for %.1f s (a client that sent one and "
                   "never read the reply?)" % (inflight, inflight_wait_s))
            continue
        hold_s = read_global(maps, contract).get("auth_hold_until_ns", 0) / 1e9 - clock()
        if hold_s > 0:
            sleep(min(hold_s, hold_wait_s))
        # 2. read Redis now, and make brc_users hold exactly what it says
        try:
            current = state()
            if len(current["users"]) > capacity:
                raise BrcError("Redis now has %d users, %s holds %d" % (
                    len(current["users"]), contract.map_name("users"), capacity))
            _apply_users(maps, contract, current["users"])
        except BrcError as e:
            raise BrcError("%s. Serve answers stay stopped (brc_server.auth_epoch is BRC_EPOCH_NONE) "
                           "until a load succeeds" % e.msg, e.fix, **dict(e.details, serve_stopped=True))
        # 3. valid only if nothing that changes who can read what completed meanwhile
        g = read_global(maps, contract)
        if g["auth_epoch"] == e0 and g["auth_inflight"] == 0:
            server = dict(server_settings(current), auth_epoch=e0, loaded_ns=time.monotonic_ns())
            _write_server(maps, contract, server)
            g = read_global(maps, contract)
            answering = g["auth_epoch"] == e0 and g["auth_inflight"] == 0 and \
                server["loaded_ns"] >= g.get("auth_hold_until_ns", 0)
            return result(read_users(maps, contract), server, answering, attempt)
        why = ("an auth change completed during the read (brc_global.auth_epoch %d -> %d, %d in flight)"
               % (e0, g["auth_epoch"], g["auth_inflight"]))
        moved = True
        sleep(poll_s)
    raise BrcError("could not load Redis's users into BRC after %d attempts: %s. Serve answers stay "
                   "stopped (brc_server.auth_epoch is BRC_EPOCH_NONE) until a load succeeds"
                   % (tried, why),
                   "retry brc_auth once ACL changes and AUTH traffic settle (re-run the play)",
                   serve_stopped=True, **({"retry_soon": True} if moved else {}))


def pin_interfaces(pin_root):
    """Interfaces with BRC pins under pin_root (directories holding at least one pin)."""
    return [name for name in brc_pins.list_pins(pin_root)
            if os.path.isdir(os.path.join(pin_root, name)) and brc_pins.list_pins(os.path.join(pin_root, name))]
