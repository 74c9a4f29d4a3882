# -*- coding: utf-8 -*-
# The Redis command table BRC's parser follows (brc_cmds and brc_subcmds, written
# at build time), and the latency histogram id of each command.
#
# Plain data and the standard library only: the build (brc_compile) and the readers
# of its histograms (brc_maps, bench) import it without bcc.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json


# The Redis command table written to brc_cmds at build time: name -> (kind,
# first, last, step, special, request group), each named as in the contract
# (BRC_K_<KIND>, BRC_SP_<SPECIAL>, BRC_REQ_GROUPS) and turned into numbers
# from bpf/brc_contract.h by command_numbers().
# kind: nokey (no key is invalidated: also every read-only command but GET) /
# read (GET) / write (keys invalidated by position) / global (everything
# invalidated). A command missing here is unknown: it invalidates everything
# and gives its connection up (its replies are unknown), so an omission costs
# hit rate, never correctness; tests/bpf/test_bpf_commands.py checks the table
# against the running Redis's own COMMAND INFO. Key positions as there: first,
# last (-1 = through the end), step. special: handled by name in bpf/brc_resp.h.
def _cmds():
    t = {}

    def add(kind, names, first=0, last=0, step=1, special="none", group="other"):
        for name in names.split():
            t[name] = (kind, first, last, step, special, group)

    # read-only: nothing to invalidate, nothing to read (only GET is cached)
    add("nokey", "MGET EXISTS TTL PTTL EXPIRETIME PEXPIRETIME TYPE STRLEN GETRANGE SUBSTR "
        "GETBIT BITCOUNT BITPOS BITFIELD_RO LLEN LRANGE LINDEX LPOS HGET HMGET HGETALL HKEYS "
        "HVALS HLEN HEXISTS HSTRLEN HRANDFIELD SMEMBERS SISMEMBER SMISMEMBER SCARD "
        "SRANDMEMBER SINTER SUNION SDIFF SINTERCARD ZRANGE ZRANGEBYSCORE ZREVRANGE "
        "ZREVRANGEBYSCORE ZRANGEBYLEX ZREVRANGEBYLEX ZSCORE ZMSCORE ZCARD ZCOUNT ZLEXCOUNT "
        "ZRANK ZREVRANK ZRANDMEMBER ZDIFF ZINTER ZUNION ZINTERCARD XRANGE XREVRANGE XLEN "
        "XPENDING XINFO XREAD GEOPOS GEODIST GEOHASH GEOSEARCH GEORADIUS_RO DUMP TOUCH LCS "
        "SORT_RO SSCAN HSCAN ZSCAN WATCH")
    add("read", "GET", 1, 1, special="get", group="get")
    add("nokey", "PING ECHO INFO TIME COMMAND QUIT LASTSAVE SAVE BGSAVE BGREWRITEAOF "
        "SLOWLOG LATENCY ROLE READONLY READWRITE WAIT PUBLISH SPUBLISH DISCARD UNWATCH "
        "DBSIZE KEYS SCAN RANDOMKEY OBJECT MEMORY LOLWUT PUBSUB SCRIPT FUNCTION CLUSTER "
        "ASKING PFSELFTEST")
    # connection state: applied on Redis's success reply
    add("nokey", "AUTH", special="auth")
    add("nokey", "HELLO", special="hello")
    add("nokey", "SELECT", special="select")
    add("nokey", "RESET", special="reset")
    add("nokey", "CLIENT", special="client")
    # replies that stop pairing with commands: the connection is given up
    add("nokey", "SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE",
        special="subscribe")
    add("nokey", "MONITOR", special="monitor")
    add("nokey", "REPLCONF SYNC PSYNC", special="replication")
    # who may read what, and what the server is
    add("nokey", "CONFIG", special="config")
    add("nokey", "ACL", special="acl")
    add("global", "REPLICAOF SLAVEOF FAILOVER SHUTDOWN MODULE DEBUG", special="server")
    # writes, keys by position
    add("write", "SET", 1, 1, special="set", group="set")
    add("write", "SETNX", 1, 1, group="set")
    add("write", "SETEX PSETEX", 1, 1, special="ttl", group="set")
    add("write", "EXPIRE PEXPIRE EXPIREAT PEXPIREAT RESTORE RESTORE-ASKING MOVE", 1, 1,
        special="ttl")
    add("write", "GETEX", 1, 1, special="getex")
    add("write", "GETSET GETDEL APPEND SETRANGE INCR DECR INCRBY DECRBY INCRBYFLOAT SETBIT "
        "BITFIELD PERSIST LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LSET LREM LTRIM LINSERT "
        "HSET HSETNX HMSET HDEL HINCRBY HINCRBYFLOAT SADD SREM SPOP ZADD ZINCRBY ZREM "
        "ZREMRANGEBYSCORE ZREMRANGEBYRANK ZREMRANGEBYLEX ZPOPMIN ZPOPMAX GEOADD XADD XDEL "
        "XTRIM XACK XCLAIM XAUTOCLAIM XSETID", 1, 1)
    add("write", "DEL UNLINK PFADD PFCOUNT PFMERGE BLPOP BRPOP BZPOPMIN BZPOPMAX "
        "SINTERSTORE SUNIONSTORE SDIFFSTORE ZUNIONSTORE ZINTERSTORE ZDIFFSTORE", 1, -1)
    add("write", "MSET MSETNX", 1, -1, 2, group="set")
    add("write", "RENAME RENAMENX COPY", 1, 2, special="carry_ttl")
    add("write", "LMOVE BLMOVE RPOPLPUSH BRPOPLPUSH SMOVE ZRANGESTORE GEOSEARCHSTORE", 1, 2)
    add("write", "PFDEBUG", 2, 2)
    add("write", "BITOP LMPOP ZMPOP XGROUP", 2, -1)
    add("write", "BLMPOP BZMPOP", 3, -1)
    # may write anything
    add("global", "FLUSHALL FLUSHDB SWAPDB EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO "
        "EXEC SORT GEORADIUS XREADGROUP")
    add("global", "MIGRATE", special="secret")      # may carry AUTH / AUTH2 passwords
    add("global", "MULTI", special="multi")
    return t


COMMANDS = _cmds()

# Specials whose inline form BRC follows (BRC_CMDF_INLINE); any other special
# arriving inline gives its connection up.
INLINE_SPECIALS = ("none", "get", "set", "ttl", "getex", "carry_ttl")

# What argument 1 of CLIENT, CONFIG and ACL means (brc_subcmds, BRC_SUB_*). A
# CONFIG or ACL subcommand missing here is taken to change who may read what.
SUBCOMMANDS = {
    ("client", "REPLY"): "giveup_reply",
    ("client", "TRACKING"): "giveup_tracking",
    ("client", "CACHING"): "giveup_tracking",
    ("config", "GET"): "read_only",
    ("config", "HELP"): "read_only",
}
SUBCOMMANDS.update((("acl", name), "read_only") for name in
                   "WHOAMI LIST USERS GETUSER CAT LOG GENPASS DRYRUN HELP".split())


def _histogram_order():
    """Command names in latency histogram id order (brc_cmd.id, bpf/brc_contract.h):
    'other' (id BRC_LAT_ID_OTHER, commands missing from the table), 'get'
    (BRC_LAT_ID_GET), 'mget' (BRC_LAT_ID_MGET: both answered in the kernel too), then
    the rest sorted. A build records this list beside its pins, and readers label
    brc_latency with the recorded list, not this one."""
    first = ["other", "get", "mget"]
    return first + sorted(name.lower() for name in COMMANDS if name.lower() not in first)


def command_numbers(contract, name):
    """(kind, first, last, step, special, group, flags, id) of command @name as
    numbers, from the contract's BRC_K_*, BRC_SP_*, BRC_REQ_GROUPS, BRC_CMDF_*
    and LATENCY_NAMES."""
    kind, first, last, step, special, group = COMMANDS[name]
    flags = contract.constants["BRC_CMDF_INLINE"] if special in INLINE_SPECIALS else 0
    return (contract.constants["BRC_K_" + kind.upper()], first, 255 if last < 0 else last, step,
            contract.constants["BRC_SP_" + special.upper()], contract.request_groups.index(group),
            flags, LATENCY_NAMES.index(name.lower()))


LATENCY_NAMES = _histogram_order()


def table_digest():
    """sha256 of everything the build writes into brc_cmds and brc_subcmds: part of
    the build's hash, so a changed table rebuilds as a changed source does."""
    table = [sorted(COMMANDS.items()), sorted(["%s %s" % k, v] for k, v in SUBCOMMANDS.items()),
             sorted(INLINE_SPECIALS), LATENCY_NAMES]
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()
