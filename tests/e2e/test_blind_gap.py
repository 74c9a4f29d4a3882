"""Writes BRC could not see must never be answered from the cache afterwards.

BRC sees writes only while its programs run: in mode off, or while a filter is missing,
Redis can change a key behind the cache's back. When BRC looks again (mode leaves off, a
missing filter is re-created), entries from before the gap must be gone. In observe mode
a stale entry shows as a `mismatch` (the oracle compares Redis's real reply with the
cached bytes); in serve mode the same entry would be answered. So: mismatch must not move.

On the lab over ssh, with traffic from the controller namespace:
  SET k v1, GET k ...      (the cache holds v1: with the host agent, once it recorded k's expiry)
  gap: mode off / ingress filter deleted by hand
  SET k v2                 (unseen)
  end of gap: brc_config mode=observe / brc_tc re-attach  -> cache_flushed > 0
  GET k, GET k             -> Redis says v2; mismatch unchanged
"""
import socket
import time

import pytest

from e2e.test_deploy import _resp, module, play

pytestmark = pytest.mark.usefixtures("lab")
KEY = b"brc:e2e:blind-gap"


def set_then_read(host, value, reads=2, pause=0.0):
    """SET then GETs on one fresh connection (tracked from its SYN), @pause s apart;
    returns the GET values."""
    with socket.create_connection((host.addr, 6379), timeout=10) as s:
        f = s.makefile("rb")
        if value is not None:
            s.sendall(_resp(b"SET", KEY, value))
            assert f.readline() == b"+OK\r\n"
        got = []
        for _ in range(reads):
            s.sendall(_resp(b"GET", KEY))
            f.readline()
            got.append(f.readline().rstrip(b"\r\n"))
            time.sleep(pause)
        return got


def cached(host, value):
    """SET @value and read it until the cache holds it: with the host agent in charge a
    fill waits for the agent's record of the key's expiry (PEXPIRETIME, read within a
    few ms of the write's report), so reads spread over 0.3 s (bounded: the assertion
    that follows is on what the cache held, cache_flushed)."""
    return set_then_read(host, value, reads=30, pause=0.01)


def mismatches(lab):
    return {h: r["counters"]["mismatch"] for h, r in module(lab, "brc_stats", "interface=eth0").items()}


def flushes_what_brc_missed(lab, name, args, missed):
    """Module name (args) on every host changes something and empties the cache, so reads
    return @missed, written while BRC could not see writes, and count no mismatch."""
    before = mismatches(lab)
    for h, r in module(lab, name, args).items():
        assert r["changed"] and r["cache_flushed"] >= 1, r
        assert name != "brc_tc" or r["flows_forgotten"] >= 0, r
    for h in lab.hosts:
        assert set_then_read(h, None) == [missed] * 2
    assert mismatches(lab) == before


@pytest.fixture(scope="module")
def deployed(lab):
    play(lab, "playbooks/undeploy.yml")
    play(lab, "deploy.yml")
    yield lab
    play(lab, "playbooks/undeploy.yml", expect_rc=None)


def test_leaving_mode_off_empties_the_cache(deployed):
    lab = deployed
    for h in lab.hosts:
        assert cached(h, b"v1-before-off") == [b"v1-before-off"] * 30
    module(lab, "brc_config", "interface=eth0 mode=off")
    for h in lab.hosts:                      # unseen by BRC: the programs are off
        assert set_then_read(h, b"v2-while-off", reads=0) == []
    flushes_what_brc_missed(lab, "brc_config", "interface=eth0 mode=observe", b"v2-while-off")


def test_recreating_a_missing_filter_empties_the_cache(deployed):
    lab = deployed
    for h in lab.hosts:
        assert cached(h, b"v3-before-gap") == [b"v3-before-gap"] * 30
        lab.exec(h.name, "tc filter del dev eth0 ingress", check=True, timeout=30)
        assert set_then_read(h, b"v4-in-gap", reads=0) == []
    flushes_what_brc_missed(lab, "brc_tc", "interface=eth0", b"v4-in-gap")
    # A second run has nothing to re-create: no flush, nothing changed.
    again = module(lab, "brc_tc", "interface=eth0")
    assert all(not r["changed"] and r["cache_flushed"] == 0 for r in again.values()), again
