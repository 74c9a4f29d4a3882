# -*- coding: utf-8 -*-
# The health gates of a rolling mode change (role brc_rollout): before the change, is the
# host ready; after it, did Redis keep answering correctly and fast enough. Pure functions
# over brc_stats, brc_probe and brc_facts results.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import ansible.module_utils

# module_utils/ under the name the modules import it by (plugins/filter/README.md)
_MODULE_UTILS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "module_utils"))
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.brc_math import num  # noqa: E402
from ansible.module_utils.brc_report import why_not_answered  # noqa: E402


# Counters whose presence decides promotion to serve and the post-change gate.
DIRTY_PREFIX = "dirty"
MISMATCH = "mismatch"
WOULD_HIT = "would_hit"
RESET = "reset"
FLOWS = "flows_tracked"


def _deltas(before, after):
    a = (before or {}).get("counters") or {}
    b = (after or {}).get("counters") or {}
    return dict((k, num(b.get(k)) - num(a.get(k))) for k in sorted(set(a) | set(b)))


def _verdict(gate, failures, numbers):
    return {"ok": not failures, "gate": gate, "failures": failures, "numbers": numbers}


def brc_gate_before(stats, probe, target_mode, settings=None):
    """Gate before a change: Redis answers, BRC loaded and healthy, and (for serve)
    an observe history with mismatch == 0 and would_hit > 0 unless forced.

    stats: brc_stats result (None/failed when BRC is not readable).
    probe: brc_probe result with rounds >= 0 (strict: false).
    settings: force (bool), state (brc_facts' state of the interface: both filters
    attached, no errors, and for serve a host agent in charge that beats).
    """
    settings = settings or {}
    failures = []
    warnings = []
    numbers = {}
    probe = probe or {}
    if not probe.get("ok"):
        # Turning BRC off is the way out when Redis misbehaves, and a host already at the
        # target changes nothing: neither waits for Redis to answer well (said, not fatal).
        unchanged = (stats or {}).get("mode") == target_mode
        (warnings if target_mode == "off" or unchanged else failures).append(
            "Redis does not answer correctly before the change: %s" % (
                "; ".join(probe.get("problems") or [probe.get("msg") or "no probe result"])))
    numbers["probe_errors"] = num(probe.get("errors"))
    numbers["probe_wrong"] = num(probe.get("wrong"))
    if not stats or stats.get("failed") or "counters" not in stats:
        failures.append("BRC is not loaded or its stats cannot be read: %s" % (
            (stats or {}).get("msg") or "no stats", ))
        return dict(_verdict("before", failures, numbers), warnings=warnings)
    state = settings.get("state")
    if isinstance(state, dict):
        missing = [d for d in ("ingress", "egress") if not (state.get("attached") or {}).get(d)]
        if missing:
            failures.append("BRC is not attached at %s on %s: run deploy.yml first" % (
                " and ".join(missing), state.get("interface") or "the interface"))
        for err in state.get("errors") or []:
            failures.append("BRC state: %s" % err)
        agent = state.get("agent") or {}
        if target_mode == "serve" and agent.get("in_charge") and not agent.get("answering"):
            numbers["agent_beat_age_ms"] = agent.get("beat_age_ms")
            failures.append("the host agent in charge of %s is not beating (last beat %s ms ago): "
                            "serve would answer nothing; see brc-agent's log on the host, or "
                            "run deploy.yml to restart it" % (
                                state.get("interface") or "the interface", agent.get("beat_age_ms")))
    counters = stats.get("counters") or {}
    mism = num(counters.get(MISMATCH))
    numbers["mismatch"] = mism
    numbers["would_hit"] = num(counters.get(WOULD_HIT))
    if MISMATCH in counters and mism > 0 and target_mode != "off":
        failures.append("BRC has counted %d mismatches (cached value differed from Redis): "
                        "not healthy" % mism)
    if target_mode == "serve" and not settings.get("force"):
        if MISMATCH not in counters or WOULD_HIT not in counters:
            failures.append("promotion to serve needs observe history, but this build has no "
                            "%s/%s counters (use brc_force=true to override)" % (MISMATCH, WOULD_HIT))
        elif numbers["would_hit"] <= 0:
            failures.append("promotion to serve needs observe history with would_hit > 0; "
                            "would_hit=%d: run in observe under real traffic first "
                            "(or brc_force=true)%s" % (
                                numbers["would_hit"],
                                "".join("; " + r for r in why_not_answered(counters))))
    return dict(_verdict("before", failures, numbers), warnings=warnings)


def brc_latency_check(probe, baseline, settings=None):
    """Is the probe's latency within bounds of the baseline's?

    p90 by default: on a busy controller a p99 over ~200 samples is one outlier.
    bound = before x latency_max_factor + latency_slack_us. Also used as the `until`
    condition of the probe's retries: latency is a noisy signal, a regression persists.
    """
    settings = settings or {}
    pct = str(settings.get("latency_percentile", "p90"))
    key = pct + "_us"
    base = (((baseline or {}).get("latency")) or {}).get(key)
    now = (((probe or {}).get("latency")) or {}).get(key)
    numbers = {"latency_%s_before_us" % pct: base, "latency_%s_after_us" % pct: now}
    if base is None or now is None:
        return {"ok": True, "numbers": numbers, "failure": None}
    factor = float(settings.get("latency_max_factor", 3.0))
    slack = float(settings.get("latency_slack_us", 2000))
    bound = base * factor + slack
    numbers["latency_%s_bound_us" % pct] = round(bound, 1)
    if now <= bound:
        return {"ok": True, "numbers": numbers, "failure": None}
    return {"ok": False, "numbers": numbers,
            "failure": "Redis %s latency %.1fus after the change, above the bound %.1fus "
                       "(%.1fus before x %.2f + %.0fus)" % (pct, now, bound, base, factor, slack)}


def brc_gate_after(before, after, probe, baseline, settings=None):
    """Gate after a change.

    before/after: brc_stats results around the change and the probe;
    probe: brc_probe after the change; baseline: brc_probe before it.
    settings: dirty_max_ratio (dirty / requests seen, default 0.05),
    latency_percentile (p50|p90|p99 of the probe's command round trips, default p90),
    latency_max_factor (after <= before x factor + slack, default 3.0),
    latency_slack_us (absolute allowance added to the factor bound, default 2000).
    """
    settings = settings or {}
    failures = []
    probe = probe or {}
    numbers = {"probe_ops": num(probe.get("ops")), "probe_wrong": num(probe.get("wrong")),
               "probe_errors": num(probe.get("errors"))}
    if not probe.get("ok"):
        failures.append("correctness probe: %d wrong replies, %d errors of %d ops: %s" % (
            numbers["probe_wrong"], numbers["probe_errors"], numbers["probe_ops"],
            "; ".join((probe.get("problems") or [probe.get("msg") or "no result"])[:3])))
    if not after or after.get("failed") or "counters" not in after:
        failures.append("BRC stats unreadable after the change: %s" % ((after or {}).get("msg") or "no stats"))
    else:
        b = (before or {}).get("counters") or {}
        a = after.get("counters") or {}
        backwards = sorted(k for k in b if k in a and num(a[k]) < num(b[k]))
        if backwards:
            failures.append("counters went backwards (maps were reset during the change): %s" % (
                ", ".join(backwards[:5])))
        d = _deltas(before, after)
        numbers["mismatch_total"] = num(a.get(MISMATCH))
        numbers["mismatch_delta"] = d.get(MISMATCH, 0)
        numbers["reset_delta"] = d.get(RESET, 0)
        # Moving down (off) is always allowed to leave old mismatches behind;
        # moving up must not start from, or create, any.
        if numbers["mismatch_delta"] > 0 or (settings.get("mode") != "off" and numbers["mismatch_total"] > 0):
            failures.append("mismatch=%d (delta %d during the check): BRC saw a cached value "
                            "differ from Redis" % (numbers["mismatch_total"], numbers["mismatch_delta"]))
        want_mode = settings.get("mode")
        if want_mode and not settings.get("check_mode") and after.get("mode") != want_mode:
            failures.append("live mode is %s, expected %s" % (after.get("mode"), want_mode))
        if numbers["reset_delta"] > 0:
            failures.append("reset grew by %d during the check" % numbers["reset_delta"])
        # dirty_* count connections BRC stopped following: rate over the connections it
        # tracked (flows_tracked), or over the requests seen when the build has no such counter.
        dirty = sum(v for k, v in d.items() if k.startswith(DIRTY_PREFIX) and v > 0)
        if FLOWS in d:
            seen, unit = max(0, d[FLOWS]), "connections"
        else:
            seen, unit = sum(v for k, v in d.items() if k.startswith("req_") and v > 0), "requests"
        numbers["dirty_delta"] = dirty
        numbers["%s_delta" % unit] = seen
        ratio = dirty / float(seen) if seen else (1.0 if dirty else 0.0)
        numbers["dirty_ratio"] = round(ratio, 4)
        limit = float(settings.get("dirty_max_ratio", 0.05))
        if ratio > limit:
            failures.append("dirty rate %.4f (%d dirty of %d %s) above %.4f" % (
                ratio, dirty, seen, unit, limit))
    lat = brc_latency_check(probe, baseline, settings)
    numbers.update(lat["numbers"])
    if not lat["ok"]:
        failures.append(lat["failure"])
    return _verdict("after", failures, numbers)


class FilterModule(object):
    def filters(self):
        return {
            "brc_gate_before": brc_gate_before,
            "brc_gate_after": brc_gate_after,
            "brc_latency_check": brc_latency_check,
        }
