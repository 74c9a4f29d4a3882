"""Fixtures for the fault-injection tests: a namespace pair with a real redis-server.

Namespaces brcnf<pid>-client / -server (10.67.0.1 / 10.67.0.2 over veth brcnf<pid>c0/s0).
The pair and everything started in it are removed even when a test fails.
"""
import json
import os
import shutil
import sys

import pytest

import netfault

CHECKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "tools", "checker.py")
PORT = 6379


def _missing():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "iptables", "redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            return "%s not installed" % tool
    return None


@pytest.fixture(scope="module")
def pair():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    with netfault.NetnsPair("brcnf", "10.67.0") as p:
        p.redis = p.start_redis(PORT)
        yield p


@pytest.fixture
def checker():
    """checker(pair, seconds): the consistency checker run from inside the client namespace."""
    return run_checker


def run_checker(pair, seconds, connections=8, timeout=5.0):
    proc = pair.run(pair.client, [sys.executable, CHECKER, "--host", pair.server_ip,
                                  "--port", str(PORT), "--connections", str(connections),
                                  "--seconds", str(seconds), "--timeout", str(timeout),
                                  "--json"],
                    check=False, timeout=seconds + timeout * 6 + 30)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError("checker printed no summary: %r %r" % (proc.stdout, proc.stderr))
