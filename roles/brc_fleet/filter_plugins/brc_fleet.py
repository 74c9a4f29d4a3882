# -*- coding: utf-8 -*-
# Controller-side logic of the fleet playbooks (enable/disable gates, audit, stats),
# as Jinja filters so the playbooks stay declarative and this stays unit-testable.
# Pure functions over the results of brc_stats, brc_facts, brc_probe and check-mode
# runs of brc_program/brc_tc/brc_config: nothing here touches a host.
#
#   brc_gate_before(stats, probe, target_mode, settings)              -> verdict
#   brc_gate_after(before, after, probe, baseline, settings)          -> verdict
#       verdict = {"ok": bool, "gate": name, "failures": [text], "numbers": {...}}
#   brc_ratios(counters, definitions) -> {hit_ratio, would_hit_ratio, ...}
#   brc_percentiles(buckets)         -> {count, p50_us, p90_us, p99_us}
#   brc_fleet_totals({host: stats})  -> stats-shaped totals over the fleet
#   brc_get_outcomes(stats)          -> GETs by outcome and reason (module_utils/brc_outcomes.py)
#   brc_rates(first, second, secs)   -> {counter: per-second rate}
#   brc_prometheus(stats, host, interface, rates) -> node_exporter textfile text
#   brc_drift(record)                -> [{check, detail}] for the audit
#   brc_audit_fleet(records, hosts)  -> the whole audit (audit.json, audit.html input)
#   brc_audit_summary(records)       -> short text for stdout
#   brc_latency_check(probe, baseline, settings) -> is latency within bounds (retries)
#   brc_counter_docs(header_text)    -> counter descriptions for Prometheus HELP

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import math
import os
import re


def _load_outcomes():
    """module_utils/brc_outcomes.py, the one definition of the GET breakdown that
    brc_stats also returns (no Ansible imports: loadable by path from this repo)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                        "module_utils", "brc_outcomes.py")
    spec = importlib.util.spec_from_file_location("brc_outcomes_for_filters", os.path.normpath(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


OUTCOMES = _load_outcomes()

# Latency histograms are log2 of nanoseconds (bpf/brc_contract.h, BRC_LAT_SLOTS):
# slot i counts samples in [2^i, 2^(i+1)) ns; slot 0 also holds 0 and 1 ns and the
# last slot everything above. Percentiles report a slot's upper bound.
DIRTY_PREFIX = "dirty"
# Counters whose presence decides promotion to serve and the post-change gate.
MISMATCH = "mismatch"
WOULD_HIT = "would_hit"
RESET = "reset"
FLOWS = "flows_tracked"


def _num(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def brc_percentiles(buckets, points=(50, 90, 99)):
    """Percentiles (microseconds, upper slot bound) of a log2-ns histogram."""
    buckets = [_num(b) for b in (buckets or [])]
    count = sum(buckets)
    out = {"count": count}
    for p in points:
        key = "p%d_us" % p
        if count == 0:
            out[key] = 0.0  # as brc_stats reports an empty histogram
            continue
        need = max(1, int(math.ceil(p / 100.0 * count)))
        cum = 0
        for slot, n in enumerate(buckets):
            cum += n
            if cum >= need:
                out[key] = round((2 ** (slot + 1)) / 1000.0, 3)
                break
    return out


# Fallback only: brc_stats returns ratio_definitions (module_utils/brc_maps.py RATIOS)
# and fleet ratios use those, so that they mean exactly what the hosts report.
FALLBACK_RATIOS = {
    "hit_ratio": {"numerator": ["hit"], "denominator": ["req_get"]},
    "would_hit_ratio": {"numerator": ["would_hit"], "denominator": ["req_get"]},
}


def brc_ratios(counters, definitions=None):
    """Ratios from counters as brc_stats computes them per host: reported when the
    denominator's counters exist (a numerator counter the build lacks counts 0), 0.0
    while the denominator is 0."""
    counters = counters or {}
    out = {}
    for name, d in sorted((definitions or FALLBACK_RATIOS).items()):
        num, den = list(d.get("numerator") or []), list(d.get("denominator") or [])
        if not den or not all(c in counters for c in den):
            continue
        total = sum(_num(counters[c]) for c in den)
        out[name] = round(float(sum(_num(counters.get(c)) for c in num)) / total, 4) if total else 0.0
    return out


def brc_get_outcomes(stats):
    """The GETs of one brc_stats result by outcome and reason: what brc_stats computed on
    the host, else the same split (module_utils/brc_outcomes.py) of its counters."""
    stats = stats or {}
    if stats.get("get_outcomes"):
        return stats["get_outcomes"]
    if not stats.get("counters"):
        return None
    return OUTCOMES.breakdown(stats["counters"])


def brc_get_outcome_definitions(stats=None):
    """What each reason means and what to change (brc_stats' get_outcome_definitions,
    else this toolkit's, with the default contract constants)."""
    return (stats or {}).get("get_outcome_definitions") or OUTCOMES.definitions()


def brc_fleet_totals(per_host):
    """Sum counters and histograms over hosts; ratios and percentiles recomputed
    from the sums (never averaged); GET outcomes summed over the hosts' splits (each
    exact, so their sum is)."""
    counters = {}
    latency = {}
    hosts = 0
    for _host, stats in sorted((per_host or {}).items()):
        if not stats:
            continue
        hosts += 1
        for name, value in (stats.get("counters") or {}).items():
            counters[name] = counters.get(name, 0) + _num(value)
        for cls, hist in (stats.get("latency") or {}).items():
            buckets = [_num(b) for b in (hist or {}).get("buckets") or []]
            acc = latency.setdefault(cls, [])
            if len(acc) < len(buckets):
                acc.extend([0] * (len(buckets) - len(acc)))
            for i, n in enumerate(buckets):
                acc[i] += n
    rates = None
    for _host, stats in sorted((per_host or {}).items()):
        host_rates = (stats or {}).get("rates")
        if not host_rates:
            continue
        rates = rates if rates is not None else {}
        for name, value in host_rates.items():
            if value is None or rates.get(name, 0) is None:
                rates[name] = None  # one host's counter went backwards: no fleet rate
            else:
                rates[name] = round(rates.get(name, 0) + float(value), 3)
    lat_out = {}
    for cls, buckets in sorted(latency.items()):
        entry = brc_percentiles(buckets)
        entry["buckets"] = buckets
        lat_out[cls] = entry
    definitions = None
    for _host, stats in sorted((per_host or {}).items()):
        if stats and stats.get("ratio_definitions"):
            definitions = stats["ratio_definitions"]
            break
    ratios = brc_ratios(counters, definitions)
    outcomes = [brc_get_outcomes(stats) for _host, stats in sorted((per_host or {}).items()) if stats]
    out = {"hosts": hosts, "counters": dict(sorted(counters.items())), "ratios": ratios,
           "latency": lat_out, "get_outcomes": OUTCOMES.add(outcomes)}
    if rates is not None:
        out["rates"] = dict(sorted(rates.items()))
    return out


def brc_rates(first, second, seconds):
    """Per-second rates between two brc_stats samples; a counter that went
    backwards (maps reset between the samples) is reported as None."""
    seconds = float(seconds or 0)
    a = (first or {}).get("counters") or {}
    b = (second or {}).get("counters") or {}
    out = {}
    for name in sorted(b):
        if name not in a or seconds <= 0:
            out[name] = None
            continue
        delta = _num(b[name]) - _num(a[name])
        out[name] = None if delta < 0 else round(delta / seconds, 3)
    return out


def _deltas(before, after):
    a = (before or {}).get("counters") or {}
    b = (after or {}).get("counters") or {}
    return dict((k, _num(b.get(k)) - _num(a.get(k))) for k in sorted(set(a) | set(b)))


def _why_no_would_hit(counters):
    """What the counters say about why nothing would have been answered, largest first,
    each with its fix: the GET breakdown's reasons (module_utils/brc_outcomes.py), the
    dirty reasons behind `dirty`, and traffic BRC does not see (unseen)."""
    counters = counters or {}
    split = OUTCOMES.breakdown(counters)
    defs = OUTCOMES.definitions()
    reasons = []
    for name, n in sorted(split["unseen"].items()):
        if n > 0:
            d = defs["_unseen"][name]
            reasons.append("%d %s (%s)" % (n, d["doc"], d["fix"]))
    for row in brc_outcome_rows(split, defs):
        if row["outcome"] == "not_answered" and row["reason"] not in ("first_read", "other"):
            reasons.append("%d GETs %s (%s)" % (row["gets"], row["doc"], row["fix"]))
    for name, n in sorted(split["dirty"].items(), key=lambda kv: (-kv[1], kv[0])):
        if name in defs["_dirty"]:
            reasons.append("%d connections given up for %s: %s" % (n, name, defs["_dirty"][name]))
    if not reasons and split["total"] == 0:
        reasons.append("no GET reached Redis through BRC")
    return reasons


def brc_cache_notes(mode, counters):
    """For the audit: why a host in observe or serve caches nothing (not drift)."""
    counters = counters or {}
    if mode not in ("observe", "serve"):
        return []
    if _num(counters.get(WOULD_HIT)) > 0 or _num(counters.get("hit")) > 0:
        return []
    return ["nothing would have been answered from the cache: " + r
            for r in _why_no_would_hit(counters)]


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
    numbers["probe_errors"] = _num(probe.get("errors"))
    numbers["probe_wrong"] = _num(probe.get("wrong"))
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
    mism = _num(counters.get(MISMATCH))
    numbers["mismatch"] = mism
    numbers["would_hit"] = _num(counters.get(WOULD_HIT))
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
                                "".join("; " + r for r in _why_no_would_hit(counters))))
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
    numbers = {"probe_ops": _num(probe.get("ops")), "probe_wrong": _num(probe.get("wrong")),
               "probe_errors": _num(probe.get("errors"))}
    if not probe.get("ok"):
        failures.append("correctness probe: %d wrong replies, %d errors of %d ops: %s" % (
            numbers["probe_wrong"], numbers["probe_errors"], numbers["probe_ops"],
            "; ".join((probe.get("problems") or [probe.get("msg") or "no result"])[:3])))
    if not after or after.get("failed") or "counters" not in after:
        failures.append("BRC stats unreadable after the change: %s" % ((after or {}).get("msg") or "no stats"))
    else:
        b = (before or {}).get("counters") or {}
        a = after.get("counters") or {}
        backwards = sorted(k for k in b if k in a and _num(a[k]) < _num(b[k]))
        if backwards:
            failures.append("counters went backwards (maps were reset during the change): %s" % (
                ", ".join(backwards[:5])))
        d = _deltas(before, after)
        numbers["mismatch_total"] = _num(a.get(MISMATCH))
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


# --- Prometheus textfile -------------------------------------------------------

_METRIC_OK = re.compile(r"[^a-zA-Z0-9_]")


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(base, **extra):
    items = list(base.items()) + sorted(extra.items())
    return "{" + ",".join('%s="%s"' % (k, _label_value(v)) for k, v in items) + "}"


def _fmt(value):
    if value is None:
        return "NaN"
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


_XLIST = re.compile(r"#define\s+BRC_COUNTERS\(X\)((?:.*\\\n)*.*)")
_XITEM = re.compile(r'X\(\s*(\w+)\s*,\s*"([^"]*)"\s*\)')


def brc_counter_docs(header_text):
    """{counter: description} from the BRC_COUNTERS list of bpf/brc_contract.h (for HELP)."""
    m = _XLIST.search(header_text or "")
    if not m:
        return {}
    return dict((name.lower(), doc) for name, doc in _XITEM.findall(m.group(1)))


def brc_prometheus(stats, host, interface, rates=None, docs=None):
    """node_exporter textfile collector text (Prometheus text format 0.0.4)."""
    docs = docs or {}
    stats = stats or {}
    base = {"host": host, "interface": interface or ""}
    lines = []
    for name, value in sorted((stats.get("counters") or {}).items()):
        metric = "brc_%s_total" % _METRIC_OK.sub("_", name)
        lines.append("# HELP %s %s" % (metric, (docs.get(name) or "BRC counter %s" % name).replace("\n", " ")))
        lines.append("# TYPE %s counter" % metric)
        lines.append("%s%s %s" % (metric, _labels(base), _fmt(_num(value))))
    outcomes = brc_get_outcomes(stats)
    if outcomes:
        # every reason, zeros too, so a reason has a series from its first GET. A gauge, not
        # a counter: a GET passed to Redis sits in a remainder (reply_unseen, other) until
        # its reply moves it to its reason, so a series can step down by the GETs in
        # flight, which rate() would take for a counter reset (a spike of the whole value).
        metric = "brc_get_outcomes"
        lines.append("# HELP %s Every GET BRC saw (hit + req_get) by outcome (answered, would_answer, "
                     "not_answered) and reason, each GET once: the series sum to the GETs seen "
                     "(module_utils/brc_outcomes.py). A gauge: GETs in flight move between reasons "
                     "when their reply arrives; use delta() or shares of the sum." % metric)
        lines.append("# TYPE %s gauge" % metric)
        for outcome in OUTCOMES.OUTCOMES:
            for reason, n in sorted(((outcomes.get("reasons") or {}).get(outcome) or {}).items()):
                lines.append("%s%s %s" % (metric, _labels(base, outcome=outcome, reason=reason), _fmt(_num(n))))
    mode = stats.get("mode")
    lines.append("# HELP brc_mode Current BRC mode (1 for the active one).")
    lines.append("# TYPE brc_mode gauge")
    for m in ("off", "observe", "serve"):
        lines.append("brc_mode%s %d" % (_labels(base, mode=m), 1 if mode == m else 0))
    ratios = stats.get("ratios") or {}
    for key in ("hit_ratio", "would_hit_ratio"):
        if ratios.get(key) is None:
            continue
        metric = "brc_%s" % key
        lines.append("# HELP %s BRC %s over the GETs seen since the maps were created." % (metric, key.replace("_", " ")))
        lines.append("# TYPE %s gauge" % metric)
        lines.append("%s%s %s" % (metric, _labels(base), _fmt(float(ratios[key]))))
    latency = stats.get("latency") or {}
    if latency:
        metric = "brc_latency_seconds"
        lines.append("# HELP %s Request ingress to reply egress time seen by BRC per Redis command "
                     "(GETs answered in the kernel included), log2 buckets." % metric)
        lines.append("# TYPE %s histogram" % metric)
        for cls in sorted(latency):
            buckets = [_num(b) for b in (latency[cls] or {}).get("buckets") or []]
            cum = 0
            # The last slot is open-ended (clamped), so it only feeds +Inf.
            for slot, n in enumerate(buckets[:-1]):
                cum += n
                le = (2 ** (slot + 1)) / 1e9
                lines.append("%s_bucket%s %d" % (metric, _labels(base, command=cls, le=repr(le)), cum))
            total = sum(buckets)
            lines.append("%s_bucket%s %d" % (metric, _labels(base, command=cls, le="+Inf"), total))
            lines.append("%s_count%s %d" % (metric, _labels(base, command=cls), total))
    agent = stats.get("agent")
    if agent:
        for metric, what, value in (
                ("brc_agent_in_charge", "1 while a host agent is in charge (serve then needs its heartbeat).",
                 1 if agent.get("in_charge") else 0),
                ("brc_agent_answering", "1 while the agent in charge beats: 0 means serve answers nothing.",
                 1 if agent.get("answering") else 0),
                ("brc_agent_beat_age_seconds", "Age of the agent's last heartbeat.",
                 None if agent.get("beat_age_ms") is None else agent["beat_age_ms"] / 1e3),
                ("brc_agent_feed_lag_seconds", "The agent's last feed batch, Redis's report to the version bump.",
                 _num(agent.get("feed_lag_ns")) / 1e9)):
            if value is None:
                continue
            lines.append("# HELP %s %s" % (metric, what))
            lines.append("# TYPE %s gauge" % metric)
            lines.append("%s%s %s" % (metric, _labels(base), _fmt(float(value))))
        for name, what in (("feed_keys", "Keys Redis reported changed, fed to the kernel by the agent."),
                           ("feed_flushes", "Everything invalidated by the agent (restart, role change, lost feed, FLUSH)."),
                           ("touched_keys", "TOUCHes the agent sent for keys answered in the kernel.")):
            metric = "brc_agent_%s_total" % name
            lines.append("# HELP %s %s" % (metric, what))
            lines.append("# TYPE %s counter" % metric)
            lines.append("%s%s %s" % (metric, _labels(base), _fmt(_num(agent.get(name)))))
        # one series per reason the contract names, zeros included (read_agent
        # reports them all), so rate() and alerts see a reason from its first flush
        by_reason = agent.get("flushes_by_reason") or {}
        if by_reason:
            metric = "brc_agent_flushes_total"
            lines.append("# HELP %s The agent's flushes by reason (BRC_AGENT_FLUSH_REASONS in brc_contract.h); "
                         "brc_agent_feed_flushes_total is their sum." % metric)
            lines.append("# TYPE %s counter" % metric)
            for reason, n in sorted(by_reason.items()):
                lines.append("%s%s %s" % (metric, _labels(base, reason=reason), _fmt(_num(n))))
    if rates:
        metric = "brc_rate_per_second"
        lines.append("# HELP %s Counter rate over the sampling interval of playbooks/stats.yml." % metric)
        lines.append("# TYPE %s gauge" % metric)
        for name, value in sorted(rates.items()):
            if value is None:
                continue
            lines.append("%s%s %s" % (metric, _labels(base, counter=name), _fmt(float(value))))
    return "\n".join(lines) + "\n"


# --- audit ---------------------------------------------------------------------

def _tag_of(entry):
    if isinstance(entry, dict):
        return entry.get("tag")
    return None


def brc_drift(record):
    """Drift found in one host's audit record.

    record keys (all optional; missing input is itself reported):
      interface: the interface audited
      capabilities: ansible_facts.brc.capabilities
      state: ansible_facts.brc.interfaces[interface] (pins, programs, attached,
        other_filters, mode, errors)
      build: /var/lib/brc/<interface>/build.json (what the toolkit pinned)
      program_check / tc_check / config_check: check-mode results of brc_program,
        brc_tc and brc_config with the inventory's settings (changed = would change)
      stats: brc_stats result
      agent_wanted: the inventory's brc_agent (present/absent), against state's agent
    Returns [{check, detail}], each distinct problem once.
    """
    problems = []

    def add(check, detail):
        if not any(p["check"] == check and p["detail"] == detail for p in problems):
            problems.append({"check": check, "detail": detail})

    caps = record.get("capabilities") or {}
    state = record.get("state") or {}
    iface = record.get("interface")
    if record.get("facts_error"):
        add("facts", record["facts_error"])
    if not iface:
        add("interface", "no BRC interface found on this host (not deployed?)")
        return problems
    bpffs = caps.get("bpffs")
    if isinstance(bpffs, dict) and bpffs.get("mounted") is False:
        add("bpffs", "bpffs is not mounted at %s: pins and maps are gone" % bpffs.get("path", "/sys/fs/bpf"))
    elif bpffs is False:
        add("bpffs", "bpffs is not mounted: pins and maps are gone")
    build = record.get("build") or {}
    if not build:
        add("build", "no build record (/var/lib/brc/%s/build.json): BRC was not deployed by the toolkit" % iface)
    pins = state.get("pins")
    if pins is not None:
        pins = set(pins)
        want = sorted(set(build.get("maps") or {}))
        missing_maps = [m for m in want if m not in pins]
        if missing_maps:
            add("pins", "maps not pinned: %s" % ", ".join(missing_maps))
        missing_progs = sorted(d for d, p in (build.get("programs") or {}).items()
                               if p.get("pin") and p["pin"].rsplit("/", 1)[-1] not in pins)
        if missing_progs:
            add("pins", "programs not pinned: %s" % ", ".join(missing_progs))
        if not pins:
            add("pins", "nothing pinned under %s" % (state.get("pin_dir") or "the pin root"))
    attached = state.get("attached") or {}
    pinned = state.get("programs") or {}
    for direction in ("ingress", "egress"):
        f = attached.get(direction)
        if not f:
            add("filter", "%s: BRC filter missing on %s" % (direction, iface))
            continue
        want_tag = _tag_of((build.get("programs") or {}).get(direction))
        if want_tag and f.get("tag") != want_tag:
            add("program", "%s: attached program tag %s differs from the toolkit's build %s" % (
                direction, f.get("tag"), want_tag))
        p = pinned.get(direction)
        if p and p.get("id") != f.get("id"):
            add("program", "%s: attached program id %s is not the pinned one (id %s, tag %s)" % (
                direction, f.get("id"), p.get("id"), p.get("tag")))
    for f in state.get("other_filters") or []:
        add("filter", "%s: extra filter on %s (prio %s handle %s %s %s tag %s)" % (
            f.get("direction"), iface, f.get("prio"), f.get("handle"), f.get("kind"),
            f.get("name") or "", f.get("tag")))
    for err in state.get("errors") or []:
        add("state", err)
    for key, check, what, differs in (
            ("program_check", "build", "pinned build",
             "pinned build differs from the host's sources (brc_program would rebuild)"),
            ("tc_check", "filter", "tc attachment",
             "attached filters differ from the pinned programs (brc_tc would re-attach)"),
            ("config_check", "config", "live config",
             "live config differs from the inventory (brc_config would change it)")):
        res = record.get(key)
        if res is None:
            continue
        if res.get("failed"):
            add(check, "%s cannot be verified: %s" % (what, res.get("msg") or "failed"))
        elif res.get("changed"):
            detail = differs
            diff = res.get("diff")
            if isinstance(diff, dict) and "before" in diff:
                before, after = diff.get("before"), diff.get("after")
                if isinstance(before, dict) and isinstance(after, dict):
                    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
                    detail += ": " + "; ".join("%s: %s -> %s" % (k, _compact(before.get(k)), _compact(after.get(k)))
                                               for k in keys)
                else:
                    detail += ": %s -> %s" % (_compact(before), _compact(after))
            add(check, detail)
    agent, wanted = state.get("agent"), record.get("agent_wanted")
    in_charge = bool(agent and agent.get("in_charge"))
    if wanted == "present" and agent is not None and not in_charge:
        add("agent", "no host agent in charge of %s (brc_agent: present): writes the wire does not "
                     "show are bounded only by brc_max_age; run deploy.yml" % iface)
    elif wanted == "absent" and in_charge:
        add("agent", "a host agent is in charge of %s although brc_agent is absent" % iface)
    if in_charge and not agent.get("answering"):
        add("agent", "the host agent in charge of %s is not beating (last beat %s ms ago): serve "
                     "answers nothing; see brc-agent's log on the host" % (iface, agent.get("beat_age_ms")))
    stats = record.get("stats") or {}
    if record.get("stats_error"):
        add("stats", "stats unreadable: %s" % record["stats_error"])
    counters = stats.get("counters") or {}
    if _num(counters.get(MISMATCH)) > 0:
        add("mismatch", "mismatch=%d: a cached value differed from Redis" % _num(counters.get(MISMATCH)))
    return problems


def _compact(value):
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (k, value[k]) for k in sorted(value)) + "}"
    text = str(value).strip()
    return text if len(text) < 200 else text[:200] + "..."


def brc_outcome_rows(outcomes, definitions=None):
    """The non-zero reasons of a GET breakdown, largest first, as
    [{outcome, reason, gets, share, doc, fix}] (share of the total, 0..1)."""
    outcomes = outcomes or {}
    definitions = definitions or brc_get_outcome_definitions()
    total = _num(outcomes.get("total"))
    rows = []
    for outcome in OUTCOMES.OUTCOMES:
        for reason, n in ((outcomes.get("reasons") or {}).get(outcome) or {}).items():
            if _num(n) <= 0:
                continue
            d = definitions.get(reason) or {}
            rows.append({"outcome": outcome, "reason": reason, "gets": _num(n),
                         "share": round(_num(n) / float(total), 4) if total else 0.0,
                         "doc": d.get("doc") or reason, "fix": d.get("fix") or ""})
    rows.sort(key=lambda r: (-r["gets"], OUTCOMES.OUTCOMES.index(r["outcome"]), r["reason"]))
    return rows


def brc_outcome_summary(outcomes):
    """'GETs=N answered=a% would=w% not=n% (top: reason) ' for the stdout summaries."""
    if not outcomes or not _num(outcomes.get("total")):
        return ""
    total = float(_num(outcomes["total"]))
    parts = " ".join("%s=%.0f%%" % (short, 100.0 * _num((outcomes.get("outcomes") or {}).get(o)) / total)
                     for o, short in (("answered", "answered"), ("would_answer", "would"),
                                      ("not_answered", "not")))
    top = [r for r in brc_outcome_rows(outcomes) if r["outcome"] != "answered"][:1]
    return "GETs=%d %s%s " % (total, parts, (" (top: %s)" % top[0]["reason"]) if top else "")


def brc_audit_summary(records):
    """One line per host plus a fleet line, for stdout."""
    lines = []
    drifted = 0
    for r in records:
        probs = r.get("problems") or []
        if probs:
            drifted += 1
        hr = (r.get("ratios") or {}).get("hit_ratio")
        whr = (r.get("ratios") or {}).get("would_hit_ratio")
        lines.append("%-12s %-8s mode=%-7s hit=%-6s would_hit=%-6s agent=%-7s %s%s%s" % (
            r.get("host"), r.get("interface") or "-", r.get("mode") or "?",
            "-" if hr is None else "%.3f" % hr, "-" if whr is None else "%.3f" % whr,
            _agent_word(r.get("agent")),
            brc_outcome_summary(r.get("get_outcomes")),
            "OK" if not probs else "DRIFT: " + "; ".join("%s: %s" % (p["check"], p["detail"]) for p in probs),
            "".join(" | note: " + n for n in r.get("notes") or [])))
    lines.append("fleet: %d hosts, %d clean, %d with drift" % (len(records), len(records) - drifted, drifted))
    return lines


def _check_summary(res):
    if res is None:
        return None
    out = {"changed": bool(res.get("changed")), "failed": bool(res.get("failed"))}
    if res.get("msg"):
        out["msg"] = res.get("msg")
    if res.get("diff"):
        out["diff"] = res.get("diff")
    return out


def brc_audit_agent(agent):
    """The host agent as the audit shows it: None without one, else its state, feed lag
    and counters, the flushes only for reasons that happened."""
    if not agent:
        return None
    lag = agent.get("feed_lag_ns")
    return {"in_charge": bool(agent.get("in_charge")), "answering": bool(agent.get("answering")),
            "beat_age_ms": agent.get("beat_age_ms"), "pid": agent.get("pid"),
            "feed_lag_ms": None if lag is None else round(_num(lag) / 1e6, 3),
            "feed_keys": _num(agent.get("feed_keys")), "feed_flushes": _num(agent.get("feed_flushes")),
            "touched_keys": _num(agent.get("touched_keys")),
            "flushes": dict((k, _num(v)) for k, v in sorted((agent.get("flushes_by_reason") or {}).items())
                            if _num(v))}


def _agent_word(agent):
    if not agent or not agent.get("in_charge"):
        return "none"
    return "beating" if agent.get("answering") else "DOWN"


def brc_audit_fleet(records, hosts, generated_at=None):
    """The whole audit: trimmed per-host records (in inventory order), fleet totals,
    the hosts with drift and the stdout summary."""
    import datetime
    by_host = dict((r.get("host"), r) for r in (records or []) if r)
    out_hosts = []
    for host in hosts or []:
        r = by_host.get(host)
        if r is None:
            out_hosts.append({"host": host, "reachable": False, "mode": None, "interface": None,
                              "problems": [{"check": "unreachable",
                                            "detail": "no audit data: the host failed or was unreachable"}]})
            continue
        stats = r.get("stats") or {}
        out_hosts.append({
            "host": host,
            "reachable": True,
            "address": r.get("address"),
            "interface": r.get("interface") or None,
            "mode": r.get("mode") or stats.get("mode"),
            "capabilities": r.get("capabilities") or {},
            "state": r.get("state") or {},
            "build": r.get("build") or {},
            "counters": r.get("counters") or stats.get("counters") or {},
            "ratios": r.get("ratios") or stats.get("ratios") or {},
            "latency": r.get("latency") or stats.get("latency") or {},
            "agent": brc_audit_agent(stats.get("agent") or (r.get("state") or {}).get("agent")),
            "stats_error": r.get("stats_error") or None,
            "checks": {
                "program": _check_summary(r.get("program_check")),
                "tc": _check_summary(r.get("tc_check")),
                "config": _check_summary(r.get("config_check")),
            },
            "problems": r.get("problems") if r.get("problems") is not None else brc_drift(r),
        })
        out_hosts[-1]["notes"] = brc_cache_notes(out_hosts[-1]["mode"], out_hosts[-1]["counters"])
        out_hosts[-1]["get_outcomes"] = brc_get_outcomes(
            stats if stats.get("get_outcomes") else {"counters": out_hosts[-1]["counters"]})
    per_host = dict((h["host"], {"counters": h.get("counters"), "latency": h.get("latency"),
                                 "get_outcomes": h.get("get_outcomes"),
                                 "ratio_definitions": (by_host[h["host"]].get("stats") or {}).get("ratio_definitions")})
                    for h in out_hosts if h.get("reachable"))
    defs_from = next((by_host[h["host"]].get("stats") for h in out_hosts if h.get("reachable")
                      and (by_host[h["host"]].get("stats") or {}).get("get_outcome_definitions")), None)
    drifted = [h["host"] for h in out_hosts if h["problems"]]
    return {
        "generated_at": generated_at or datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z",
        "hosts": out_hosts,
        "fleet": brc_fleet_totals(per_host),
        "get_outcome_definitions": brc_get_outcome_definitions(defs_from),
        "drifted": drifted,
        "clean": [h["host"] for h in out_hosts if not h["problems"]],
        "summary": brc_audit_summary(out_hosts),
    }


class FilterModule(object):
    def filters(self):
        return {
            "brc_percentiles": brc_percentiles,
            "brc_ratios": brc_ratios,
            "brc_fleet_totals": brc_fleet_totals,
            "brc_get_outcomes": brc_get_outcomes,
            "brc_get_outcome_definitions": brc_get_outcome_definitions,
            "brc_outcome_rows": brc_outcome_rows,
            "brc_outcome_summary": brc_outcome_summary,
            "brc_rates": brc_rates,
            "brc_gate_before": brc_gate_before,
            "brc_gate_after": brc_gate_after,
            "brc_latency_check": brc_latency_check,
            "brc_prometheus": brc_prometheus,
            "brc_counter_docs": brc_counter_docs,
            "brc_drift": brc_drift,
            "brc_audit_summary": brc_audit_summary,
            "brc_audit_fleet": brc_audit_fleet,
        }
