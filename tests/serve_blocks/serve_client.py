"""Test client for the serve proof, run inside the client namespace:
request/response RESP over one TCP connection per --conns, printing a JSON summary.

Each round: GET <key> (the kernel answers it), SET k:i, GET k:i, PING, GET <key>
again, INCR ctr. Every read has a timeout: a connection that stops making
progress (a connection that stopped moving) is reported as a stall.
"""
import argparse
import json
import socket
import sys
import time


class Conn:
    def __init__(self, host, port, timeout):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("connection closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("connection closed")
            self.buf += d
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    @staticmethod
    def encode(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        return out

    def send(self, *args):
        self.s.sendall(self.encode(*args))

    def cmd(self, *args):
        self.send(*args)
        return self.read()

    def read(self):
        line = self._line()
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else self._exact(n)
        return line

    def close(self):
        self.s.close()


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
    conn.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(a.rounds):
        own = "k:%s:%d:%d" % (a.tag, c, i)
        conn.send("GET", a.key)
        conn.send("SET", own, "p:%d" % i)
        count_get(res, conn.read(), kv, rv, "pipelined GET key round %d" % i)
        got = conn.read()
        if got != b"+OK":
            raise ValueError("pipelined SET round %d: got %r" % (i, got))
        got = conn.cmd("GET", own)
        if got != b"p:%d" % i:
            raise ValueError("GET own round %d: got %r" % (i, got))
        res["rounds"] += 1


def reset_probe(a):
    """The test drops the reply, clears the stored bytes, then says go: the
    client's retransmitted GET must end in a connection reset, not a reply."""
    conn = Conn(a.host, a.port, a.timeout)
    conn.s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(a.key), a.key.encode()))
    print("sent %d" % conn.s.getsockname()[1], flush=True)
    sys.stdin.readline()
    try:
        got = conn._line()
        res = {"ok": False, "outcome": "reply", "got": got.decode(errors="replace")}
    except ConnectionResetError:
        res = {"ok": True, "outcome": "reset"}
    except socket.timeout:
        res = {"ok": False, "outcome": "stall"}
    except EOFError:
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
            conn = Conn(a.host, a.port, a.timeout)
            if a.pipeline:
                pipeline_rounds(a, conn, c, res, kv, rv)
                conn.close()
                continue
            for i in range(a.rounds):
                step = "GET key"
                for step, args, check in (
                    ("GET key", ("GET", a.key), None),
                    ("SET", ("SET", "k:%s:%d:%d" % (a.tag, c, i), "v:%d" % i), b"+OK"),
                    ("GET own", ("GET", "k:%s:%d:%d" % (a.tag, c, i)), b"v:%d" % i),
                    ("PING", ("PING",), b"+PONG"),
                    ("GET key again", ("get", a.key), None),
                    ("INCR", ("INCR", "ctr:%s:%d" % (a.tag, c)), b":%d" % (i + 1)),
                ):
                    got = conn.cmd(*args)
                    if check is None:
                        count_get(res, got, kv, rv, step)
                    elif got != check:
                        raise ValueError("%s round %d: got %r want %r" % (step, i, got, check))
                res["rounds"] += 1
            conn.close()
    except socket.timeout:
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
