"""The consistency checker passes against real Redis and catches what a broken cache does.

A faulty forwarding proxy stands in for a broken in-kernel cache: it sits between the
checker and a real Redis and either alters one reply byte or stops forwarding. The
checker must report a wrong reply, respectively a stall, and exit non-zero.
"""
import socket
import threading

from fixtures.redis import LoopbackServer
from tools import checker


class FaultyProxy(LoopbackServer):
    """Forwards TCP to Redis; after `after` reply bytes, corrupts one byte or stalls."""

    def __init__(self, upstream, fault, after=20000):
        self.upstream, self.fault, self.after = upstream, fault, after
        self.sent = 0
        self.lock = threading.Lock()
        LoopbackServer.__init__(self)

    def handle(self, conn):
        server = socket.create_connection(self.upstream)
        threading.Thread(target=self._pump, args=(conn, server, False), daemon=True).start()
        self._pump(server, conn, True)

    def _pump(self, src, dst, is_reply):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if is_reply:
                with self.lock:
                    self.sent += len(data)
                    tripped = self.sent > self.after
                    if tripped and self.fault == "corrupt" and b"v" in data:
                        data = data.replace(b"v", b"w", 1)
                        self.fault = "done"
                if tripped and self.fault == "stall":
                    return
            try:
                dst.sendall(data)
            except OSError:
                return


def test_checker_passes_against_real_redis(redis_server):
    summary = checker.run(redis_server.host, redis_server.port, connections=8, seconds=2)
    assert summary["ok"], summary
    assert summary["connections"] >= 8 and summary["gets"] > 1000


def test_checker_reports_a_corrupted_reply(redis_server):
    proxy = FaultyProxy((redis_server.host, redis_server.port), "corrupt")
    try:
        summary = checker.run("127.0.0.1", proxy.port, connections=8, seconds=2)
    finally:
        proxy.close()
    assert not summary["ok"]
    assert summary["errors"] >= 1


def test_checker_reports_a_stalled_connection(redis_server):
    proxy = FaultyProxy((redis_server.host, redis_server.port), "stall")
    try:
        summary = checker.run("127.0.0.1", proxy.port, connections=8, seconds=2, timeout=1)
    finally:
        proxy.close()
    assert summary["stalls"] >= 1 and not summary["ok"]


def test_checker_cli_exit_status(redis_server):
    assert checker.main(["--host", redis_server.host, "--port", str(redis_server.port),
                         "--seconds", "0.5"]) == 0
