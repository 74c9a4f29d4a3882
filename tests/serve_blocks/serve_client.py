"""Test client for the serve proof, run inside the client namespace:
request/response RESP over one TCP connection per --conns, printing a JSON summary.

Each round: GET <key> (the kernel answers it), SET k:i, GET k:i, PING, GET <key>
again, INCR ctr. Every read has a timeout: a connection that stops making
progress (a connection that stopped moving) is reported as a stall.
"""
import argparse
import json
import os
import sys
import time

import ansible.module_utils

# module_utils/ the way Ansible modules see it: the RESP client is the toolkit's one
# (module_utils/brc_resp.py); this runs as its own process in the client namespace.
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "module_utils")
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.brc_resp import ProtocolError, RespConnection, Stall, encode  # noqa: E402


def count_get(res, got, kv, rv, what):
    """Count a GET of the preloaded key as answered by the kernel (kv) or by Redis (rv)."""
    if got == kv:
        res["kernel"] += 1
    elif got == rv:
        res["redis"] += 1
    else:
        raise ValueError("%s: wrong value %r" % (what, got))


def pipeline_rounds(a, conn, c, res, kv, rv):
    """GET key and SET own leave as two segments before any reply: the GET is
    answered in the kernel while the SET goes on to Redis behind it."""
    for i in range(a.rounds):
        own = "k:%s:%d:%d" % (a.tag, c, i)
        conn.sock.sendall(encode("GET", a.key))
        conn.sock.sendall(encode("SET", own, "p:%d" % i))
        count_get(res, conn.read_reply(), kv, rv, "pipelined GET key round %d" % i)
        got = conn.read_reply()
        if got != "OK":
            raise ValueError("pipelined SET round %d: got %r" % (i, got))
        got = conn.call("GET", own)
        if got != b"p:%d" % i:
            raise ValueError("GET own round %d: got %r" % (i, got))
        res["rounds"] += 1


def reset_probe(a):
    """The test drops the reply, clears the stored bytes, then says go: the
    client's retransmitted GET must end in a connection reset, not a reply."""
    conn = RespConnection(a.host, a.port, a.timeout)
    conn.sock.sendall(encode("GET", a.key))
    print("sent %d" % conn.sock.getsockname()[1], flush=True)
    sys.stdin.readline()
    try:
        got = conn._line()
        res = {"ok": False, "outcome": "reply", "got": got.decode(errors="replace")}
    except ConnectionResetError:
        res = {"ok": True, "outcome": "reset"}
    except Stall:
        res = {"ok": False, "outcome": "stall"}
    except ProtocolError:
        res = {"ok": False, "outcome": "eof"}
    json.dump(res, sys.stdout)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--key", required=True)
    ap.add_argument("--kernel-value", required=True)
    ap.add_argument("--redis-value", required=True)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--tag", default=str(int(time.time() * 1000)), help="prefix of this run's own keys")
    ap.add_argument("--pipeline", action="store_true",
                    help="rounds of GET key + SET own sent back to back (TCP_NODELAY), then GET own")
    ap.add_argument("--reset-probe", action="store_true",
                    help="send one GET of the key, say 'sent', wait for 'go' on stdin, expect a reset")
    a = ap.parse_args()
    if a.reset_probe:
        return reset_probe(a)
    kv, rv = a.kernel_value.encode(), a.redis_value.encode()
    res = {"ok": True, "kernel": 0, "redis": 0, "rounds": 0, "errors": []}
    t0 = time.time()
    try:
        for c in range(a.conns):
            conn = RespConnection(a.host, a.port, a.timeout)
            if a.pipeline:
                pipeline_rounds(a, conn, c, res, kv, rv)
                conn.close()
                continue
            for i in range(a.rounds):
                step = "GET key"
                for step, args, check in (
                    ("GET key", ("GET", a.key), None),
                    ("SET", ("SET", "k:%s:%d:%d" % (a.tag, c, i), "v:%d" % i), "OK"),
                    ("GET own", ("GET", "k:%s:%d:%d" % (a.tag, c, i)), b"v:%d" % i),
                    ("PING", ("PING",), "PONG"),
                    ("GET key again", ("get", a.key), None),
                    ("INCR", ("INCR", "ctr:%s:%d" % (a.tag, c)), i + 1),
                ):
                    got = conn.call(*args)
                    if check is None:
                        count_get(res, got, kv, rv, step)
                    elif got != check:
                        raise ValueError("%s round %d: got %r want %r" % (step, i, got, check))
                res["rounds"] += 1
            conn.close()
    except Stall:
        res["ok"] = False
        res["errors"].append("stall: no reply within %.1fs at %s, round %d" % (a.timeout, step, res["rounds"]))
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        res["ok"] = False
        res["errors"].append("%s: %s" % (type(e).__name__, e))
    res["elapsed"] = round(time.time() - t0, 3)
    json.dump(res, sys.stdout)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
