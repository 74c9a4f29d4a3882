"""Unit tests of the fleet logic that needs no lab: the gates, drift rules, fleet totals,
Prometheus rendering (checked by a strict parser), the RESP probe against a real Redis.
Syntax and ansible-lint of the fleet playbooks and roles: tests/e2e/test_lint.py (whole repo)."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import types

import pytest

import promtext
from fixtures.redis import LoopbackServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILTER_DIR = os.path.join(REPO, "plugins", "filter")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Every filter the playbooks see, by name, from the files Ansible loads (ansible.cfg's
# filter_plugins), so a test reads F.brc_drift whichever file holds it.
FILTERS = {}
for _name in sorted(os.listdir(FILTER_DIR)):
    if _name.endswith(".py"):
        FILTERS.update(_load("brc_filters_" + _name[:-3], os.path.join(FILTER_DIR, _name)).FilterModule().filters())
F = types.SimpleNamespace(**FILTERS)


def stats(mode="observe", latency=None, **counters):
    return {"mode": mode, "counters": counters, "latency": latency or {},
            "ratios": F.brc_ratios(counters), "ratio_definitions": DEFS}


def probe(ok=True, p90=100.0, wrong=0, errors=0, problems=()):
    return {"ok": ok, "ops": 200, "wrong": wrong, "errors": errors, "problems": list(problems),
            "latency": {"count": 200, "p50_us": p90 / 2, "p90_us": p90, "p99_us": p90 * 2}}


# --- percentiles, ratios, totals, rates ---------------------------------------------------

def test_percentiles_are_upper_slot_bounds_in_microseconds():
    buckets = [0] * 40
    buckets[16] = 90   # [65536, 131072) ns
    buckets[20] = 10   # [1.05, 2.1) ms
    p = F.brc_percentiles(buckets)
    assert p == {"count": 100, "p50_us": 131.072, "p90_us": 131.072, "p99_us": 2097.152}
    assert F.brc_percentiles([0] * 40)["p99_us"] == 0.0


DEFS = {"hit_ratio": {"numerator": ["hit"], "denominator": ["hit", "miss"]},
        "would_hit_ratio": {"numerator": ["would_hit"], "denominator": ["would_hit", "miss"]}}


def test_ratios_follow_the_definitions_brc_stats_returns():
    assert F.brc_ratios({"hit": 3, "miss": 1, "would_hit": 1}, DEFS) == {"hit_ratio": 0.75, "would_hit_ratio": 0.5}
    assert F.brc_ratios({"pkt_ingress": 5}, DEFS) == {}
    assert F.brc_ratios({"would_hit": 2, "miss": 2}, DEFS) == {"would_hit_ratio": 0.5}   # no hit counter: hit + miss missing
    assert F.brc_ratios({"miss": 2, "req_get": 4}, {"hit_ratio": {"numerator": ["hit"], "denominator": ["req_get"]}}) \
        == {"hit_ratio": 0.0}   # numerator counter absent from this build: 0
    assert F.brc_ratios({"hit": 0, "miss": 0}, DEFS) == {"hit_ratio": 0.0}
    # Without definitions: the fallback (over req_get).
    assert F.brc_ratios({"hit": 1, "would_hit": 2, "req_get": 4}) == {"hit_ratio": 0.25, "would_hit_ratio": 0.5}


def test_fleet_totals_are_sums_and_recomputed_percentiles():
    b1, b2 = [0] * 40, [0] * 40
    b1[10], b2[12], b2[14] = 5, 3, 2
    hosts = {
        "a": stats(hit=10, miss=5, would_hit=1, latency={"get": {"count": 5, "buckets": b1}}),
        "b": stats(hit=1, miss=4, would_hit=0, pkt_ingress=7, latency={"get": {"count": 5, "buckets": b2}}),
        "c": None,   # unreachable host: skipped
    }
    t = F.brc_fleet_totals(hosts)
    assert t["hosts"] == 2
    assert t["counters"] == {"hit": 11, "miss": 9, "would_hit": 1, "pkt_ingress": 7}
    assert t["ratios"]["hit_ratio"] == round(11 / 20, 4)   # hit / (hit + miss), from DEFS
    assert t["latency"]["get"]["buckets"] == [x + y for x, y in zip(b1, b2)]
    assert t["latency"]["get"]["count"] == 10
    assert t["latency"]["get"]["p50_us"] == F.brc_percentiles(t["latency"]["get"]["buckets"])["p50_us"]


def test_rates_and_backwards_counters():
    r = F.brc_rates(stats(hit=10, miss=100), stats(hit=30, miss=50, fill=3), 2)
    assert r == {"hit": 10.0, "miss": None, "fill": None}
    t = F.brc_fleet_totals({"a": dict(stats(hit=1), rates={"hit": 1.5}),
                            "b": dict(stats(hit=1), rates={"hit": 2.0})})
    assert t["rates"] == {"hit": 3.5}


# --- gates ------------------------------------------------------------------------------

def test_gate_before_never_blocks_turning_off_or_staying():
    """Off is the way out when Redis misbehaves, and a host already at the target changes
    nothing: a failed baseline probe is said (warnings), not a reason to stop the rollout."""
    bad = probe(ok=False, errors=1, problems=["connect timed out"])
    for current, target in (("serve", "off"), ("observe", "off"), ("off", "off"), ("observe", "observe")):
        v = F.brc_gate_before(stats(mode=current, pkt_ingress=1), bad, target)
        assert v["ok"], (current, target, v)
        assert "connect timed out" in v["warnings"][0]
    v = F.brc_gate_before(stats(mode="off", pkt_ingress=1), bad, "observe")
    assert not v["ok"] and "connect timed out" in v["failures"][0]
    # BRC unreadable still stops it: the mode could not be set.
    assert not F.brc_gate_before({"failed": True, "msg": "no pins"}, bad, "off")["ok"]


def test_gate_before_needs_redis_and_brc():
    v = F.brc_gate_before({"failed": True, "msg": "no pins"}, probe(), "observe")
    assert not v["ok"] and "not loaded" in v["failures"][0]
    v = F.brc_gate_before(stats(mode="off", pkt_ingress=1), probe(ok=False, errors=1, problems=["connect refused"]),
                          "observe")
    assert not v["ok"] and "connect refused" in v["failures"][0]
    assert F.brc_gate_before(stats(pkt_ingress=1), probe(), "observe")["ok"]
    state = {"interface": "eth0", "attached": {"ingress": {"id": 1, "tag": "aa"}}, "errors": []}
    v = F.brc_gate_before(stats(pkt_ingress=1), probe(), "observe", {"state": state})
    assert v["failures"] == ["BRC is not attached at egress on eth0: run deploy.yml first"]
    state["attached"]["egress"] = {"id": 2, "tag": "bb"}
    assert F.brc_gate_before(stats(pkt_ingress=1), probe(), "observe", {"state": state})["ok"]


def test_gate_before_serve_needs_a_beating_agent_when_one_is_in_charge():
    attached = {"ingress": {"id": 1, "tag": "aa"}, "egress": {"id": 2, "tag": "bb"}}
    ready = stats(mismatch=0, would_hit=5)
    for agent, ok in ((None, True), ({"in_charge": False, "answering": False}, True),
                      ({"in_charge": True, "answering": True, "beat_age_ms": 40.0}, True),
                      ({"in_charge": True, "answering": False, "beat_age_ms": 9000.0}, False)):
        state = {"interface": "eth0", "attached": attached, "errors": [], "agent": agent}
        v = F.brc_gate_before(ready, probe(), "serve", {"state": state})
        assert v["ok"] == ok, v
        if not ok:
            assert "not beating" in v["failures"][0] and "9000.0 ms" in v["failures"][0]
        assert F.brc_gate_before(ready, probe(), "observe", {"state": state})["ok"]


@pytest.mark.parametrize("counters,force,ok,text", [
    ({"mismatch": 0, "would_hit": 12}, False, True, None),
    ({"mismatch": 0, "would_hit": 0}, False, False, "would_hit > 0"),
    ({"mismatch": 2, "would_hit": 12}, False, False, "2 mismatches"),
    ({"pkt_ingress": 9}, False, False, "no mismatch/would_hit counters"),
    ({"pkt_ingress": 9}, True, True, None),
    ({"mismatch": 0, "would_hit": 0}, True, True, None),
])
def test_promotion_to_serve_needs_observe_history_unless_forced(counters, force, ok, text):
    v = F.brc_gate_before(stats(**counters), probe(), "serve", {"force": force})
    assert v["ok"] is ok, v
    if text:
        assert text in " ".join(v["failures"])


def test_no_would_hit_names_the_reason_and_the_fix():
    v = F.brc_gate_before(stats(mismatch=0, would_hit=0, req_get=40, segments_untracked=7,
                                dirty_resp3=2), probe(), "serve")
    text = " ".join(v["failures"])
    assert "7 payload segments of connections BRC did not see open (opened before it was attached" in text
    assert "reconnect the clients" in text
    assert "2 connections given up for resp3: HELLO with a protocol other than 2 or 3" in text
    v = F.brc_gate_before(stats(mismatch=0, would_hit=0, req_get=40, get_uncacheable_pending=30,
                                miss=10, fill=10), probe(), "serve")
    text = " ".join(v["failures"])
    assert "30 GETs sent while other commands were pending" in text and "MGETs alone" in text
    assert "first_read" not in text and "not cached yet" not in text   # a cold cache is no reason
    v = F.brc_gate_before(stats(mismatch=0, would_hit=0, req_get=0), probe(), "serve")
    assert "no GET reached Redis through BRC" in " ".join(v["failures"])


def test_disable_is_allowed_on_a_host_with_mismatches():
    assert F.brc_gate_before(stats(mismatch=3, would_hit=1), probe(), "off")["ok"]
    after = F.brc_gate_after(stats(mismatch=3), stats(mode="off", mismatch=3), probe(), probe(), {"mode": "off"})
    assert after["ok"], after


def test_gate_after_passes_clean_change():
    v = F.brc_gate_after(stats(mismatch=0, req_get=10), stats(mode="serve", mismatch=0, req_get=60),
                         probe(p90=120), probe(p90=100), {"mode": "serve"})
    assert v["ok"], v
    assert v["numbers"]["requests_delta"] == 50
    v = F.brc_gate_after(stats(flows_tracked=10, dirty_gap=0), stats(mode="serve", flows_tracked=110, dirty_gap=5),
                         probe(), probe(), {"mode": "serve"})
    assert v["ok"] and v["numbers"]["connections_delta"] == 100 and v["numbers"]["dirty_ratio"] == 0.05


@pytest.mark.parametrize("after,probe_after,text", [
    (stats(mode="serve", mismatch=1), probe(), "mismatch=1"),
    (stats(mode="serve", reset=2), probe(), "reset grew by 2"),
    (stats(mode="serve", req_get=100, dirty_parse=20), probe(), "dirty rate 0.2000 (20 dirty of 100 requests)"),
    (stats(mode="serve", flows_tracked=40, dirty_parse=3), probe(), "dirty rate 0.0750 (3 dirty of 40 connections)"),
    (stats(mode="serve", hit=0), probe(), "counters went backwards"),
    (stats(mode="observe"), probe(), "live mode is observe, expected serve"),
    (stats(mode="serve"), probe(ok=False, wrong=1, problems=["GET returned b'x', expected b'y'"]), "1 wrong"),
    (stats(mode="serve"), probe(p90=9000), "p90 latency 9000.0us"),
    ({"failed": True, "msg": "gone"}, probe(), "stats unreadable"),
])
def test_gate_after_failures_name_the_numbers(after, probe_after, text):
    before = stats(mismatch=0, reset=0, req_get=0, dirty_parse=0, hit=5)
    if "flows_tracked" in after.get("counters", {}):
        before["counters"]["flows_tracked"] = 0
    v = F.brc_gate_after(before, after, probe_after, probe(p90=100), {"mode": "serve"})
    assert not v["ok"]
    assert text in " ".join(v["failures"]), v["failures"]
    assert v["gate"] == "after"


# --- drift --------------------------------------------------------------------------------

def clean_record():
    build = {"programs": {"ingress": {"id": 1, "tag": "aa", "pin": "/p/eth0/prog_ingress"},
                          "egress": {"id": 2, "tag": "bb", "pin": "/p/eth0/prog_egress"}},
             "maps": {"brc_config": {}, "brc_stats": {}, "brc_latency": {}}}
    state = {"pins": ["brc_config", "brc_latency", "brc_stats", "prog_egress", "prog_ingress"],
             "programs": {"ingress": {"id": 1, "tag": "aa"}, "egress": {"id": 2, "tag": "bb"}},
             "attached": {"ingress": {"id": 1, "tag": "aa"}, "egress": {"id": 2, "tag": "bb"}},
             "other_filters": [], "errors": []}
    ok = {"changed": False, "failed": False}
    return {"interface": "eth0", "capabilities": {"bpffs": {"mounted": True, "path": "/sys/fs/bpf"}},
            "state": state, "build": build, "program_check": ok, "tc_check": ok, "config_check": ok,
            "stats": stats(mismatch=0)}


def test_clean_host_has_no_drift():
    assert F.brc_drift(clean_record()) == []


def _checks(record):
    return sorted(set(p["check"] for p in F.brc_drift(record)))


def test_drift_rules():
    r = clean_record()
    del r["state"]["attached"]["egress"]
    r["tc_check"] = {"changed": True, "diff": {"before": {"egress": None}, "after": {"egress": 2}}}
    probs = F.brc_drift(r)
    assert any(p["check"] == "filter" and "egress" in p["detail"] for p in probs)

    r = clean_record()
    r["state"]["attached"]["ingress"] = {"id": 99, "tag": "ff"}
    text = " ".join(p["detail"] for p in F.brc_drift(r))
    assert "tag ff differs from the toolkit's build aa" in text and "not the pinned one" in text

    r = clean_record()
    r["state"]["other_filters"] = [{"direction": "ingress", "prio": 49152, "handle": 1, "kind": "bpf",
                                    "name": "x", "tag": "cc"}]
    assert _checks(r) == ["filter"]

    r = clean_record()
    r["state"]["pins"] = ["prog_egress", "prog_ingress"]
    assert "maps not pinned: brc_config, brc_latency, brc_stats" in F.brc_drift(r)[0]["detail"]

    r = clean_record()
    r["capabilities"]["bpffs"]["mounted"] = False
    assert "bpffs" in _checks(r)

    r = clean_record()
    r["config_check"] = {"changed": True, "diff": {"before": {"mode": "serve", "port": 6379},
                                                   "after": {"mode": "observe", "port": 6379}}}
    assert F.brc_drift(r)[0]["detail"].endswith("(brc_config would change it): mode: serve -> observe")

    r = clean_record()
    r["build"] = {}
    assert "build" in _checks(r)

    assert _checks({"interface": ""}) == ["interface"]


def test_audit_fleet_reports_unreachable_hosts_and_summary():
    rec = dict(clean_record(), host="redis1", problems=[])
    out = F.brc_audit_fleet([rec, None], ["redis1", "redis2"], generated_at="t")
    assert out["clean"] == ["redis1"] and out["drifted"] == ["redis2"]
    assert out["hosts"][1]["problems"][0]["check"] == "unreachable"
    assert out["summary"][-1] == "fleet: 2 hosts, 1 clean, 1 with drift"
    json.dumps(out)


def test_audit_notes_why_an_observing_host_caches_nothing():
    cold = dict(clean_record(), host="redis1", problems=[], mode="observe",
                counters={"req_get": 50, "would_hit": 0, "segments_untracked": 9})
    warm = dict(clean_record(), host="redis2", problems=[], mode="observe",
                counters={"req_get": 50, "would_hit": 30, "segments_untracked": 9})
    out = F.brc_audit_fleet([cold, warm], ["redis1", "redis2"], generated_at="t")
    assert out["clean"] == ["redis1", "redis2"], "a note is not drift"
    (note,) = out["hosts"][0]["notes"]
    assert "9 payload segments of connections BRC did not see open" in note
    assert out["hosts"][1]["notes"] == []
    assert "note: nothing would have been answered" in out["summary"][0]
    assert "note:" not in out["summary"][1]


# --- Prometheus ----------------------------------------------------------------------------

def test_prometheus_text_parses_strictly_and_carries_the_numbers():
    buckets = [0] * 40
    buckets[15], buckets[17], buckets[39] = 4, 2, 1
    s = stats(mode="serve", hit=5, miss=2, would_hit=0, mismatch=0,
              latency={"get": {"count": 7, "buckets": buckets}, "set": {"count": 0, "buckets": [0] * 40}})
    text = F.brc_prometheus(s, 'red"is\\1', "eth0", {"hit": 1.5, "miss": None})
    fams = promtext.parse(text)
    assert fams["brc_hit_total"]["type"] == "counter"
    (name, labels, value), = fams["brc_hit_total"]["samples"]
    assert labels == {"host": 'red"is\\1', "interface": "eth0"} and value == 5
    modes = dict((l["mode"], v) for _n, l, v in fams["brc_mode"]["samples"])
    assert modes == {"off": 0, "observe": 0, "serve": 1}
    hist = [(l, v) for n, l, v in fams["brc_latency_seconds"]["samples"]
            if n.endswith("_bucket") and l["command"] == "get"]
    assert hist[-1] == (dict(host='red"is\\1', interface="eth0", command="get", le="+Inf"), 7)
    assert math.isclose(float(hist[15][0]["le"]), 2 ** 16 / 1e9)
    assert [v for _n, l, v in fams["brc_rate_per_second"]["samples"]] == [1.5]


def test_prometheus_shows_the_host_agent():
    s = dict(stats(mode="serve", hit=5), agent={
        "in_charge": True, "answering": False, "beat_age_ms": 1500.0, "feed_lag_ns": 250000,
        "feed_keys": 40, "feed_flushes": 3, "touched_keys": 7, "pid": 9, "flags": 1,
        "flushes_by_reason": {"restart": 2, "redis_down": 1, "role": 0}})
    fams = promtext.parse(F.brc_prometheus(s, "h", "eth0"))
    value = dict((n, v) for fam in fams.values() for n, _l, v in fam["samples"])
    assert value["brc_agent_in_charge"] == 1 and value["brc_agent_answering"] == 0
    assert math.isclose(value["brc_agent_beat_age_seconds"], 1.5)
    assert math.isclose(value["brc_agent_feed_lag_seconds"], 0.00025)
    assert (value["brc_agent_feed_keys_total"], value["brc_agent_feed_flushes_total"],
            value["brc_agent_touched_keys_total"]) == (40, 3, 7)
    assert fams["brc_agent_feed_flushes_total"]["type"] == "counter"
    assert fams["brc_agent_flushes_total"]["type"] == "counter"
    by_reason = dict((l["reason"], v) for _n, l, v in fams["brc_agent_flushes_total"]["samples"])
    assert by_reason == {"restart": 2, "redis_down": 1, "role": 0}   # zeros too: the series exist
    old = dict(s, agent=dict(s["agent"]))
    del old["agent"]["flushes_by_reason"]                # an older toolkit's report: no family
    assert "brc_agent_flushes_total" not in F.brc_prometheus(old, "h", "eth0")
    assert "brc_agent_in_charge" not in F.brc_prometheus(stats(mode="serve"), "h", "eth0")


def test_counter_docs_come_from_the_contract_header():
    docs = F.brc_counter_docs(open(os.path.join(REPO, "bpf", "brc_contract.h")).read())
    assert docs["pkt_ingress"] == "TCP segments to the Redis port seen at ingress"
    assert docs == contract().counter_docs            # one reading of the header, with dirty_*
    assert F.brc_counter_docs("") == {} and F.brc_counter_docs("not a header") == {}
    text = F.brc_prometheus(stats(pkt_ingress=3), "h", "eth0", None, docs)
    assert "# HELP brc_pkt_ingress_total TCP segments to the Redis port seen at ingress\n" in text
    promtext.parse(text)


@pytest.mark.parametrize("bad", [
    "x 1\n",                                             # no TYPE
    "# TYPE x counter\nx -1\n",                          # negative counter
    "# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",    # duplicate
    "# TYPE x gauge\nx{a=\"\\q\"} 1\n",                  # bad escape
    "# TYPE x gauge\nx 1",                               # no final newline
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
])
def test_the_parser_is_strict(bad):
    with pytest.raises(promtext.ParseError):
        promtext.parse(bad)


# --- the probe, against a real Redis -----------------------------------------------------------

def run_module(path, args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, path], input=json.dumps({"ANSIBLE_MODULE_ARGS": args}),
                         capture_output=True, text=True, env=env, timeout=60)
    return json.loads(out.stdout)


def test_probe_round_trips_against_real_redis(redis_server):
    res = run_module(os.path.join(REPO, "library", "brc_probe.py"),
                     {"host": redis_server.host, "port": redis_server.port, "rounds": 5})
    assert res["ok"] and not res.get("failed"), res
    assert res["ops"] == 1 + 5 * 10 and res["wrong"] == 0
    assert res["latency"]["count"] == res["ops"]


def test_probe_reports_a_dead_redis_quickly():
    res = run_module(os.path.join(REPO, "library", "brc_probe.py"),
                     {"host": "127.0.0.1", "port": 1, "rounds": 50, "timeout": 0.5})
    assert res["failed"] and not res["ok"]
    assert "connect 127.0.0.1:1" in res["problems"][0]


class FakeRedis(LoopbackServer):
    """A RESP server that answers every GET with a stale value (what a broken cache does)."""

    def handle(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                head = f.readline()
                if not head:
                    return
                args = []
                for _i in range(int(head[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2])
                cmd = args[0].upper()
                reply = {b"PING": b"+PONG\r\n", b"SET": b"+OK\r\n", b"DEL": b":1\r\n"}.get(
                    cmd, b"$5\r\nstale\r\n")
                conn.sendall(reply)
        except (OSError, ValueError):
            return
        finally:
            conn.close()


def test_probe_detects_a_wrong_value():
    fake = FakeRedis()
    try:
        res = run_module(os.path.join(REPO, "library", "brc_probe.py"),
                         {"host": "127.0.0.1", "port": fake.port, "rounds": 2, "timeout": 1.0,
                          "strict": False})
    finally:
        fake.close()
    assert not res["ok"] and res["errors"] == 0
    assert res["wrong"] == 2 * 7   # every GET of both rounds: 6 on the first connection, 1 on a second
    assert "first get" in res["problems"][0] and "stale" in res["problems"][0]


# --- the dead-man switch (module_utils/brc_guard.py; the map through a stand-in file here,
# a real pinned map in tests/modules/test_guard.py and the lab tests) -----------------------

@pytest.fixture
def guard(tmp_path, monkeypatch):
    from ansible.module_utils import brc_guard
    pin = tmp_path / "brc_config"
    pin.write_text("eb 18 00 00 01 00 00 00")
    monkeypatch.setattr(brc_guard, "read_value", lambda path: open(path).read().split())
    monkeypatch.setattr(brc_guard, "write_value", lambda path, value: open(path, "w").write(" ".join(value)))
    monkeypatch.setattr(brc_guard, "POLL_S", 0.05)
    brc_guard.pin, brc_guard.marker = pin, str(tmp_path / "state" / "rollout.armed")
    return brc_guard


def _watch_in_background(guard, timeout):
    import threading
    out = {}
    t = threading.Thread(target=lambda: out.update(guard.watch(guard.marker, timeout)))
    t.start()
    return t, out


def test_guard_reverts_when_not_confirmed(guard):
    assert guard.arm(guard.marker, str(guard.pin)) == {"armed": True, "value": ["eb", "18", "00", "00", "01", "00", "00", "00"]}
    guard.pin.write_text("eb 18 00 00 02 00 00 00")          # the change
    assert guard.watch(guard.marker, 0.3)["reverted"] is True
    assert guard.pin.read_text() == "eb 18 00 00 01 00 00 00"
    assert os.path.exists(guard.marker + ".reverted") and not os.path.exists(guard.marker)
    assert "reverted (no confirmation" in open(guard.marker + ".log").read()
    # A late confirm learns that the host already reverted (the module fails on it).
    assert guard.confirm(guard.marker) == {"confirmed": False, "reverted": True}


def test_guard_confirmed_or_superseded_does_nothing(guard):
    guard.arm(guard.marker, str(guard.pin))
    watcher, seen = _watch_in_background(guard, 3)
    guard.pin.write_text("eb 18 00 00 02 00 00 00")
    assert guard.confirm(guard.marker) == {"confirmed": True, "reverted": False}
    watcher.join(10)
    assert seen == {"confirmed": True, "reverted": False}
    assert guard.pin.read_text() == "eb 18 00 00 02 00 00 00"
    # An old watcher whose snapshot was replaced by a newer rollout's leaves it alone.
    guard.arm(guard.marker, str(guard.pin))
    old, seen = _watch_in_background(guard, 2)
    time.sleep(0.3)
    guard.arm(guard.marker, str(guard.pin))
    old.join(10)
    assert seen == {"confirmed": True, "reverted": False} and os.path.exists(guard.marker)


def test_guard_check_mode_writes_nothing(guard):
    assert guard.arm(guard.marker, str(guard.pin), check_mode=True)["armed"] is False
    assert not os.path.exists(guard.marker)
    guard.arm(guard.marker, str(guard.pin))
    guard.pin.write_text("eb 18 00 00 02 00 00 00")
    assert guard.restore(guard.marker, check_mode=True)["reverted"] is True
    assert guard.confirm(guard.marker, check_mode=True)["confirmed"] is True
    assert os.path.exists(guard.marker) and guard.pin.read_text() == "eb 18 00 00 02 00 00 00"
    assert guard.restore(guard.marker)["reverted"] is True
    assert guard.pin.read_text() == "eb 18 00 00 01 00 00 00"
    assert guard.restore(guard.marker) == {"reverted": False}


def test_drift_reports_the_host_agent_against_the_inventory():
    base = {"interface": "eth0", "build": {"maps": {}}, "state": {
        "pins": ["brc_agent"], "attached": {"ingress": {"id": 1}, "egress": {"id": 2}}}}

    def agent_problems(agent, wanted):
        rec = dict(base, agent_wanted=wanted, state=dict(base["state"], agent=agent))
        return [p["detail"] for p in F.brc_drift(rec) if p["check"] == "agent"]

    beating = {"in_charge": True, "answering": True, "beat_age_ms": 50.0}
    assert agent_problems(beating, "present") == []
    assert agent_problems({"in_charge": False, "answering": False}, "absent") == []
    assert "no host agent in charge" in agent_problems({"in_charge": False}, "present")[0]
    assert "although brc_agent is absent" in agent_problems(beating, "absent")[0]
    stale = agent_problems({"in_charge": True, "answering": False, "beat_age_ms": 7000.0}, "present")
    assert len(stale) == 1 and "not beating (last beat 7000.0 ms ago)" in stale[0]
    assert agent_problems(None, "present") == []      # a build without the agent's map


# --- GETs by outcome and reason (module_utils/brc_outcomes.py) --------------------------------

from ansible.module_utils import brc_outcomes as O  # noqa: E402 (the module brc_stats and the filters use)


def contract():
    from ansible.module_utils.brc_contract import load_contract
    return load_contract(os.path.join(REPO, "bpf"))


def test_outcome_tree_is_well_formed_and_reads_only_contract_counters():
    names = set(contract().counters)
    reasons = [leaf["reason"] for leaf in O.leaves()]
    assert len(reasons) == len(set(reasons)), "a reason appears twice"
    assert set(leaf["outcome"] for leaf in O.leaves()) == set(O.OUTCOMES)

    def walk(node):
        children = node.get("children")
        if children:
            assert children[-1]["counters"] is None, "a group must end with the rest of it: %s" % (
                node["counters"],)
            assert all(c["counters"] is not None for c in children[:-1]), node["counters"]
            for c in children:
                walk(c)
    walk(O.TREE)
    missing = sorted(O.placed_counters() - names)
    assert not missing, "the split reads counters brc_contract.h does not have: %s" % missing
    assert not set(O.NOT_PARTS) - names, "NOT_PARTS names counters the contract does not have"
    d = O.definitions(contract().constants)
    assert "BRC_VAL_MAX = 2048" in d["oversize_value"]["fix"] and "BRC_KEY_MAX = 64" in d["oversize_key"]["fix"]
    assert all(d[r]["fix"] and d[r]["doc"] for r in reasons)


def test_every_get_outcome_counter_of_the_contract_is_placed():
    """A counter about GETs appended to BRC_COUNTERS (RESP3, SACK work ...) must be placed
    in brc_outcomes.TREE (a reason) or NOT_PARTS (why not): until then this fails, and
    the reports list it as unclassified."""
    assert O.unclassified(contract().counter_docs) == []


def test_a_new_get_counter_is_reported_unclassified_not_lost():
    docs = dict(contract().counter_docs, serve_refused_sack="would-be hits passed: SACK was negotiated")
    assert O.unclassified(docs) == ["serve_refused_sack"]
    b = O.breakdown({"req_get": 5, "would_hit": 5, "serve_refused_sack": 5}, docs)
    assert b["unclassified"] == {"serve_refused_sack": 5}
    assert b["reasons"]["would_answer"]["not_served"] == 5 and b["total"] == 5


# What each kind of GET bumps, read from bpf/brc_cache.h, brc_resp.h, brc_serve.h, brc.c.
GET_EVENTS = {
    "served": {"hit": 1, "touch_sampled": 1, "serve_csum_partial": 1},
    "served_then_resent": {"hit": 1, "resent": 1},                      # one GET, its reply lost once
    "args": {"req_get": 1, "get_uncacheable_args": 1},
    "dirty": {"req_get": 1, "get_uncacheable_dirty": 1},
    "pipelined": {"req_get": 1, "get_uncacheable_pending": 1},
    "db": {"req_get": 1, "get_uncacheable_db": 1},
    "oversize_key": {"req_get": 1, "oversize_key": 1},
    "write_in_flight": {"req_get": 1, "miss": 1, "fill_refused_inflight": 1},
    "ttl_marked": {"req_get": 1, "miss": 1, "fill_refused_ttl": 1},     # refused at ingress, no agent
    "ttl_at_reply": {"req_get": 1, "miss": 1, "fill_refused_ttl": 1, "expiry_wanted": 1},
    "near_expiry_serve": {"req_get": 1, "answer_near_expiry": 2, "miss": 1, "fill_refused_ttl": 1},
    "agent": {"req_get": 1, "miss": 1, "get_uncacheable_agent": 1, "fill": 1},       # then refilled
    "auth": {"req_get": 1, "miss": 1, "get_uncacheable_auth": 1, "fill_refused_not_bulk": 1},
    "server": {"req_get": 1, "miss": 1, "get_uncacheable_server": 1, "fill": 1},
    "max_age": {"req_get": 1, "miss": 1, "cache_expired": 1, "fill": 1},
    "oversize_value": {"req_get": 1, "miss": 1, "oversize_value": 1},
    "error_reply": {"req_get": 1, "miss": 1, "fill_refused_not_bulk": 1},
    "nil_resp3_serve": {"req_get": 1, "answer_nil_resp3": 2, "miss": 1, "fill_refused_not_bulk": 1},
    "write_raced": {"req_get": 1, "miss": 1, "fill_refused_version": 1},
    "expiry_unknown": {"req_get": 1, "miss": 1, "fill_refused_expiry": 1, "expiry_wanted": 1},
    "no_space": {"req_get": 1, "miss": 1, "fill_refused_no_space": 1},
    "first_read": {"req_get": 1, "miss": 1, "fill": 1},
    "reply_unseen": {"req_get": 1, "miss": 1},                          # closed before its reply
    "observe_would_hit": {"req_get": 1, "would_hit": 1},
    "verify_sample": {"req_get": 1, "serve_verify_sampled": 1, "would_hit": 1},
    "idle_pass": {"req_get": 1, "serve_passed_idle": 1, "would_hit": 1},
    "tcp_state": {"req_get": 1, "serve_refused_tcp": 1, "would_hit": 1},
    "raced": {"req_get": 1, "verify_raced": 1},
    "mismatch": {"req_get": 1, "mismatch": 1, "mismatch_evicted": 1, "dirty_mismatch": 1},
    "off": {"req_get": 1},                                              # mode off, a served connection
}
EXPECTED = {
    "served": ("answered", "served"), "served_then_resent": ("answered", "served"),
    "observe_would_hit": ("would_answer", "not_served"), "verify_sample": ("would_answer", "verify_sample"),
    "idle_pass": ("would_answer", "idle_pass"), "tcp_state": ("would_answer", "tcp_state"),
    "raced": ("would_answer", "raced"), "ttl_marked": ("not_answered", "ttl"),
    "ttl_at_reply": ("not_answered", "ttl"), "near_expiry_serve": ("not_answered", "ttl"),
    "server": ("not_answered", "users_not_loaded"), "off": ("not_answered", "other"),
    "nil_resp3_serve": ("not_answered", "error_reply"),
}


def _counters(events):
    out = {}
    for kind, n in events.items():
        for c, k in GET_EVENTS[kind].items():
            out[c] = out.get(c, 0) + k * n
    return out


@pytest.mark.parametrize("kind", sorted(GET_EVENTS))
def test_each_kind_of_get_lands_in_its_one_bucket(kind):
    b = O.breakdown(_counters({kind: 3}))
    outcome, reason = EXPECTED.get(kind, ("not_answered", kind))
    assert b["total"] == 3
    nonzero = dict(((o, r), n) for o, rs in b["reasons"].items() for r, n in rs.items() if n)
    assert nonzero == {(outcome, reason): 3}, nonzero
    assert b["outcomes"][outcome] == 3


def test_a_mix_sums_to_the_gets_and_keeps_every_reason():
    mix = dict((kind, i + 1) for i, kind in enumerate(sorted(GET_EVENTS)))
    b = O.breakdown(_counters(mix))
    assert b["total"] == sum(mix.values())
    assert sum(b["outcomes"].values()) == b["total"]
    assert sum(n for rs in b["reasons"].values() for n in rs.values()) == b["total"]
    want = {}
    for kind, n in mix.items():
        key = EXPECTED.get(kind, ("not_answered", kind))
        want[key] = want.get(key, 0) + n
    got = dict(((o, r), n) for o, rs in b["reasons"].items() for r, n in rs.items() if n)
    assert got == want
    assert b["dirty"] == {"mismatch": mix["mismatch"]}


def test_torn_or_inconsistent_counters_still_sum_to_the_total():
    """Counters are read slot after slot under traffic: a later slot can be ahead of
    req_get. The split clamps, it never invents or loses a GET, never goes negative."""
    import random
    rnd = random.Random(11)
    names = sorted(O.placed_counters())
    for _ in range(500):
        c = dict((n, rnd.choice((0, 0, 1, 5, 50, 1000))) for n in names)
        b = O.breakdown(c)
        assert b["total"] == c["hit"] + c["req_get"]
        parts = [n for rs in b["reasons"].values() for n in rs.values()]
        assert min(parts) >= 0 and sum(parts) == b["total"]
        assert b["outcomes"]["answered"] == c["hit"]


def test_fleet_outcomes_are_the_sum_of_the_hosts():
    a = stats(**_counters({"served": 5, "pipelined": 2}))
    b = stats(**_counters({"first_read": 4, "ttl_marked": 1}))
    t = F.brc_fleet_totals({"a": a, "b": b})
    fo = t["get_outcomes"]
    assert fo["total"] == 12
    assert fo["outcomes"] == {"answered": 5, "would_answer": 0, "not_answered": 7}
    assert fo["reasons"]["not_answered"]["pipelined"] == 2 and fo["reasons"]["not_answered"]["ttl"] == 1
    # a host whose brc_stats computed it is taken as it is
    pre = dict(b, get_outcomes=dict(O.breakdown(b["counters"]), unseen={"segments_untracked": 9}))
    assert F.brc_fleet_totals({"a": a, "b": pre})["get_outcomes"]["unseen"] == {"segments_untracked": 9,
                                                                                "tls_segments": 0}


def test_prometheus_get_outcomes_sum_to_the_gets_seen():
    s = stats(mode="serve", **_counters({"served": 7, "pipelined": 2, "ttl_marked": 1, "verify_sample": 1}))
    fams = promtext.parse(F.brc_prometheus(s, "h", "eth0"))
    fam = fams["brc_get_outcomes"]
    assert fam["type"] == "gauge"           # GETs in flight move between reasons
    got = dict(((l["outcome"], l["reason"]), v) for _n, l, v in fam["samples"])
    assert len(got) == len(O.leaves())                  # every reason, zeros too
    assert sum(got.values()) == 11 == s["counters"]["hit"] + s["counters"]["req_get"]
    assert got[("answered", "served")] == 7 and got[("not_answered", "pipelined")] == 2
    assert got[("would_answer", "verify_sample")] == 1 and got[("not_answered", "ttl")] == 1
    # why a gauge: a GET waiting for its reply is in a remainder, and leaves it
    waiting = O.breakdown({"req_get": 1, "miss": 1})["reasons"]["not_answered"]
    replied = O.breakdown({"req_get": 1, "miss": 1, "fill": 1})["reasons"]["not_answered"]
    assert (waiting["reply_unseen"], replied["reply_unseen"], replied["first_read"]) == (1, 0, 1)


def _render_audit(report):
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(REPO, "roles", "brc_audit", "templates")),
                             undefined=jinja2.StrictUndefined)
    env.filters.update(FILTERS)
    env.filters["to_json"] = json.dumps
    return env.get_template("audit.html.j2").render(_brc_audit_report=report)


def test_audit_shows_gets_by_outcome_with_what_to_change():
    busy = dict(clean_record(), host="redis1", problems=[], mode="observe",
                counters=dict(_counters({"observe_would_hit": 60, "pipelined": 30, "ttl_marked": 10}),
                              dirty_resp3=2, segments_untracked=9))
    idle = dict(clean_record(), host="redis2", problems=[], mode="observe", counters={"pkt_ingress": 1})
    out = F.brc_audit_fleet([busy, idle], ["redis1", "redis2"], generated_at="t")
    h = out["hosts"][0]["get_outcomes"]
    assert h["total"] == 100 and h["outcomes"] == {"answered": 0, "would_answer": 60, "not_answered": 40}
    assert h["unseen"] == {"segments_untracked": 9, "tls_segments": 0} and h["dirty"] == {"resp3": 2}
    assert out["fleet"]["get_outcomes"]["total"] == 100
    rows = F.brc_outcome_rows(out["fleet"]["get_outcomes"], out["get_outcome_definitions"])
    assert [(r["reason"], r["gets"], r["share"]) for r in rows] == \
        [("not_served", 60, 0.6), ("pipelined", 30, 0.3), ("ttl", 10, 0.1)]
    assert "enable.yml" in rows[0]["fix"] and "brc_agent: present" in rows[2]["fix"]
    assert "GETs=100 answered=0% would=60% not=40% (top: not_served)" in out["summary"][0]
    json.dumps(out)
    html = _render_audit(out)
    text = re.sub(r"<[^>]+>", " ", html)
    assert 'id="fleet-outcomes"' in html and 'id="outcomes-redis1"' in html
    assert "deploy the host agent (brc_agent: present)" in text
    assert "connect with protocol 2 or 3" in text           # the dirty reason's fix
    assert "segments_untracked=9" in text and "reconnect the clients" in text
    assert "no GETs" in text                                # redis2 in the stacked chart
    assert html.count("<svg") >= 6


def test_audit_shows_the_host_agent_state_feed_lag_and_counters():
    agent = {"in_charge": True, "answering": True, "beat_age_ms": 42.0, "pid": 9, "feed_lag_ns": 330000,
             "feed_keys": 40, "feed_flushes": 3, "touched_keys": 7,
             "flushes_by_reason": {"agent_start": 1, "resync": 1, "restart": 1, "role": 0}}
    down = dict(agent, answering=False, beat_age_ms=9000.0)
    hosts = [dict(clean_record(), host="redis%d" % i, problems=[], stats={"counters": {}, "agent": a})
             for i, a in ((1, agent), (2, down), (3, None))]
    out = F.brc_audit_fleet(hosts, ["redis1", "redis2", "redis3"], generated_at="t")
    a = out["hosts"][0]["agent"]
    assert a["feed_lag_ms"] == 0.33 and a["feed_keys"] == 40 and a["touched_keys"] == 7
    assert a["flushes"] == {"agent_start": 1, "restart": 1, "resync": 1}     # only what happened
    assert out["hosts"][2]["agent"] is None
    assert [("agent=beating" in out["summary"][0]), ("agent=DOWN" in out["summary"][1]),
            ("agent=none" in out["summary"][2])] == [True, True, True]
    text = re.sub(r"<[^>]+>", " ", _render_audit(out))
    assert "feed lag 0.33 ms" in text and "flushes 3 (agent_start 1, restart 1, resync 1)" in text
    assert "NOT BEATING: serve answers nothing" in text
