#!/usr/bin/env python3
"""BRC consistency checker: prove that a Redis endpoint answers exactly as Redis would.

Runs N client connections against one Redis address for a bounded time and checks every
reply against what the checker itself knows must be true. It exists to catch what an
in-kernel cache can get wrong: a stale or foreign value, a reply that went backwards,
a desynchronised or stalled connection.

Workers (at least 8 connections by default):
  owner    each owns its keys: SET (some with TTL, some larger than one MSS), GET several
           times (read-heavy, so a cache would hit), DEL, GET -> nil; pipelined batches
           of GETs and an MGET alone, and of GETs with a write inside. A batch alone on
           a key without TTL whose reply fits one segment at MTU 1500 (ONE_SEGMENT) is
           counted as `batches_one_segment`: one a cache at tc can answer whole.
  writer   one per run: INCRs a shared counter key.
  reader   GET the shared counter: it must never go backwards.
  select   works in db 1 on a key that also exists in db 0 with another value.

Every operation has a socket timeout; a reply that does not arrive within it is a stall.
Speaks RESP over a raw socket so that any byte of desynchronisation is seen.

Usage:
  checker.py --host 10.77.0.11 --port 6379 --connections 8 --seconds 30
  checker.py --host 127.0.0.1 --port 6379 --seconds 5 --json
Exit status: 0 when every reply was right and no connection stalled, 1 otherwise.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import ansible.module_utils

# module_utils/ the way Ansible modules see it: the RESP client is the brc_probe module's
# (its names are re-exported for the tests that import them from here).
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MODULE_UTILS = os.path.join(_REPO, "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.brc_resp import (ProtocolError, RedisError, RespConnection,  # noqa: E402,F401
                                           Stall, encode)


class Result:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = 0
        self.gets = 0
        self.errors = []
        self.stalls = 0
        self.counts = {"batches": 0, "batches_one_segment": 0}

    def add(self, ops, gets=0):
        with self.lock:
            self.ops += ops
            self.gets += gets

    def count(self, name):
        with self.lock:
            self.counts[name] += 1

    def error(self, worker, message):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append("%s: %s" % (worker, message))
            else:
                self.errors.append(None)


def expect(actual, wanted, what):
    if actual != wanted:
        raise AssertionError("%s: expected %r, got %r" % (what, short(wanted), short(actual)))


def short(value):
    if isinstance(value, bytes) and len(value) > 40:
        return value[:20] + b"...(%d bytes)" % len(value)
    return value


# Reply bytes of one segment at MTU 1500 with TCP timestamps, the MSS a cache at tc must
# keep an answer within: 1500 - 20 (IP) - 32 (TCP with timestamps) - 48 to spare.
ONE_SEGMENT = 1400


def bulk_len(value):
    return len(b"$%d\r\n%s\r\n" % (len(value), value))


def value_for(rng, size):
    return ("%x:" % rng.getrandbits(64)).encode().ljust(size, b"v")


def owner_worker(conn, name, rng, result, deadline, run_id):
    keys = [("brc-check:%s:%s:%d" % (run_id, name, i)).encode() for i in range(8)]
    while time.monotonic() < deadline:
        key = rng.choice(keys)
        # Mostly small values; some span several segments (larger than one MSS).
        value = value_for(rng, rng.choice([16, 16, 64, 300, 3000]))
        with_ttl = rng.random() < 0.2
        if with_ttl:
            expect(conn.call(b"SET", key, value, b"EX", b"600"), "OK", "SET EX")
        else:
            expect(conn.call(b"SET", key, value), "OK", "SET")
        reads = rng.randint(2, 6)
        for _ in range(reads):
            expect(conn.call(b"GET", key), value, "GET after SET")
        if rng.random() < 0.3:
            n = rng.randint(2, 8)           # GETs and an MGET alone: a cache may answer them as one batch
            batch = [(b"GET", key)] * n + [(b"MGET", key, key)]
            expect(conn.pipeline(batch), [value] * n + [[value, value]], "pipelined GETs and MGET")
            reads += n + 1
            result.count("batches")
            if not with_ttl and bulk_len(value) * (n + 2) + len(b"*2\r\n") <= ONE_SEGMENT:
                result.count("batches_one_segment")
        if rng.random() < 0.3:
            batch = [(b"GET", key)] * 4 + [(b"SET", key, value + b"2"), (b"GET", key)]
            replies = conn.pipeline(batch)
            expect(replies, [value] * 4 + ["OK", value + b"2"], "pipelined batch")
            value += b"2"
            reads += 5
        expect(conn.call(b"DEL", key), 1, "DEL")
        expect(conn.call(b"GET", key), None, "GET after DEL")
        result.add(reads + 4, reads + 1)


def writer_worker(conn, name, rng, result, deadline, run_id):
    shared = shared_key(run_id)
    while time.monotonic() < deadline:
        conn.call(b"INCR", shared)
        conn.call(b"GET", shared)
        result.add(2, 1)


def reader_worker(conn, name, rng, result, deadline, run_id):
    shared = shared_key(run_id)
    last = -1
    while time.monotonic() < deadline:
        raw = conn.call(b"GET", shared)
        now = int(raw) if raw is not None else -1
        if now < last:
            raise AssertionError("shared counter went backwards: %d after %d" % (now, last))
        last = now
        result.add(1, 1)


def select_worker(conn, name, rng, result, deadline, run_id):
    key = ("brc-check:%s:%s:db" % (run_id, name)).encode()
    while time.monotonic() < deadline:
        in_db0, in_db1 = value_for(rng, 24), value_for(rng, 24)
        expect(conn.call(b"SELECT", b"0"), "OK", "SELECT 0")
        expect(conn.call(b"SET", key, in_db0), "OK", "SET db0")
        expect(conn.call(b"GET", key), in_db0, "GET db0")
        expect(conn.call(b"SELECT", b"1"), "OK", "SELECT 1")
        expect(conn.call(b"GET", key), None, "GET db1 before SET")
        expect(conn.call(b"SET", key, in_db1), "OK", "SET db1")
        expect(conn.call(b"GET", key), in_db1, "GET db1")
        expect(conn.call(b"DEL", key), 1, "DEL db1")
        expect(conn.call(b"SELECT", b"0"), "OK", "SELECT 0 again")
        expect(conn.call(b"GET", key), in_db0, "GET db0 after db1 work")
        expect(conn.call(b"DEL", key), 1, "DEL db0")
        result.add(11, 4)


def shared_key(run_id):
    return ("brc-check:%s:shared" % run_id).encode()


def plan(connections):
    """Worker kinds for N connections: one writer, one select, readers, owners."""
    kinds = ["writer", "select"]
    readers = max(2, connections // 4)
    kinds += ["reader"] * readers
    kinds += ["owner"] * max(1, connections - len(kinds))
    return kinds[:max(connections, 4)]


WORKERS = {"owner": owner_worker, "writer": writer_worker,
           "reader": reader_worker, "select": select_worker}


def run(host, port, connections=8, seconds=10.0, timeout=5.0, seed=None):
    """Run the checker; returns a summary dict (errors empty and stalls 0 on success)."""
    result = Result()
    deadline = time.monotonic() + seconds
    seed = seed if seed is not None else random.randrange(1 << 30)
    # A namespace of its own per run: a run cut short (a stall, a killed connection)
    # leaves keys behind, and a later run in the same process must not read them.
    run_id = "%d-%s" % (os.getpid(), os.urandom(6).hex())
    threads = []

    def body(kind, index):
        name = "%s%d" % (kind, index)
        rng = random.Random(seed * 1000 + index)
        conn = None
        try:
            conn = RespConnection(host, port, timeout)
            WORKERS[kind](conn, name, rng, result, deadline, run_id)
        except Stall as e:
            with result.lock:
                result.stalls += 1
            result.error(name, "stalled: %s" % e)
        except Exception as e:  # every failure is a finding, never swallowed
            result.error(name, "%s: %s" % (type(e).__name__, e))
        finally:
            if conn:
                conn.close()

    for index, kind in enumerate(plan(connections)):
        t = threading.Thread(target=body, args=(kind, index), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(seconds + timeout * 4 + 10)
    hung = sum(1 for t in threads if t.is_alive())
    try:
        cleanup = RespConnection(host, port, timeout)
        cleanup.call(b"DEL", shared_key(run_id))
        cleanup.close()
    except Exception:
        pass
    errors = [e for e in result.errors if e is not None]
    return {
        "host": host, "port": port, "connections": len(threads), "seconds": seconds,
        "seed": seed, "ops": result.ops, "gets": result.gets, **result.counts,
        "errors": len(result.errors), "stalls": result.stalls + hung,
        "first_errors": errors[:10],
        "ok": not result.errors and not hung,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="\n".join(__doc__.split("\n")[18:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds without a reply that count as a stall")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = run(args.host, args.port, args.connections, args.seconds, args.timeout, args.seed)
    if args.json:
        print(json.dumps(summary))
    else:
        print("checker: %(ops)d ops (%(gets)d GETs) on %(connections)d connections in "
              "%(seconds)gs: %(errors)d errors, %(stalls)d stalls (seed %(seed)d)" % summary)
        for e in summary["first_errors"]:
            print("  " + e)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
