# -*- coding: utf-8 -*-
# What the controller's reports make of brc_stats results, shared by the stats, audit and
# gate filters (plugins/filter/): fleet totals recomputed from summed counters, and the
# GET breakdown as rows, a summary line and reasons why nothing would be answered.
# Pure functions over module results; nothing here touches a host.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils import brc_outcomes
from ansible.module_utils.brc_math import RATIOS, num, percentiles, ratios

# When no host returned ratio_definitions (every brc_stats failed, or an older toolkit's
# results), the fleet reports the two ratios every build has.
FALLBACK_RATIOS = dict((k, RATIOS[k]) for k in ("hit_ratio", "would_hit_ratio"))


def get_outcomes(stats):
    """The GETs of one brc_stats result by outcome and reason: what brc_stats computed on
    the host, else the same split (module_utils/brc_outcomes.py) of its counters."""
    stats = stats or {}
    if stats.get("get_outcomes"):
        return stats["get_outcomes"]
    if not stats.get("counters"):
        return None
    return brc_outcomes.breakdown(stats["counters"])


def outcome_definitions(stats=None):
    """What each reason means and what to change (brc_stats' get_outcome_definitions,
    else this toolkit's, with the default contract constants)."""
    return (stats or {}).get("get_outcome_definitions") or brc_outcomes.definitions()


def fleet_totals(per_host):
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
            counters[name] = counters.get(name, 0) + num(value)
        for cls, hist in (stats.get("latency") or {}).items():
            buckets = [num(b) for b in (hist or {}).get("buckets") or []]
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
        entry = percentiles(buckets)
        entry["buckets"] = buckets
        lat_out[cls] = entry
    definitions = None
    for _host, stats in sorted((per_host or {}).items()):
        if stats and stats.get("ratio_definitions"):
            definitions = stats["ratio_definitions"]
            break
    outcomes = [get_outcomes(stats) for _host, stats in sorted((per_host or {}).items()) if stats]
    out = {"hosts": hosts, "counters": dict(sorted(counters.items())),
           "ratios": ratios(counters, definitions or FALLBACK_RATIOS),
           "latency": lat_out, "get_outcomes": brc_outcomes.add(outcomes)}
    if rates is not None:
        out["rates"] = dict(sorted(rates.items()))
    return out


def why_not_answered(counters):
    """What the counters say about why nothing would have been answered, largest first,
    each with its fix: the GET breakdown's reasons (module_utils/brc_outcomes.py), the
    dirty reasons behind `dirty`, and traffic BRC does not see (unseen)."""
    counters = counters or {}
    split = brc_outcomes.breakdown(counters)
    defs = brc_outcomes.definitions()
    reasons = []
    for name, n in sorted(split["unseen"].items()):
        if n > 0:
            d = defs["_unseen"][name]
            reasons.append("%d %s (%s)" % (n, d["doc"], d["fix"]))
    for row in outcome_rows(split, defs):
        if row["outcome"] == "not_answered" and row["reason"] not in ("first_read", "other"):
            reasons.append("%d GETs %s (%s)" % (row["gets"], row["doc"], row["fix"]))
    for name, n in sorted(split["dirty"].items(), key=lambda kv: (-kv[1], kv[0])):
        if name in defs["_dirty"]:
            reasons.append("%d connections given up for %s: %s" % (n, name, defs["_dirty"][name]))
    if not reasons and split["total"] == 0:
        reasons.append("no GET reached Redis through BRC")
    return reasons


def outcome_rows(outcomes, definitions=None):
    """The non-zero reasons of a GET breakdown, largest first, as
    [{outcome, reason, gets, share, doc, fix}] (share of the total, 0..1)."""
    outcomes = outcomes or {}
    definitions = definitions or outcome_definitions()
    total = num(outcomes.get("total"))
    rows = []
    for outcome in brc_outcomes.OUTCOMES:
        for reason, n in ((outcomes.get("reasons") or {}).get(outcome) or {}).items():
            if num(n) <= 0:
                continue
            d = definitions.get(reason) or {}
            rows.append({"outcome": outcome, "reason": reason, "gets": num(n),
                         "share": round(num(n) / float(total), 4) if total else 0.0,
                         "doc": d.get("doc") or reason, "fix": d.get("fix") or ""})
    rows.sort(key=lambda r: (-r["gets"], brc_outcomes.OUTCOMES.index(r["outcome"]), r["reason"]))
    return rows


def outcome_summary(outcomes):
    """'GETs=N answered=a% would=w% not=n% (top: reason) ' for the stdout summaries."""
    if not outcomes or not num(outcomes.get("total")):
        return ""
    total = float(num(outcomes["total"]))
    parts = " ".join("%s=%.0f%%" % (short, 100.0 * num((outcomes.get("outcomes") or {}).get(o)) / total)
                     for o, short in (("answered", "answered"), ("would_answer", "would"),
                                      ("not_answered", "not")))
    top = [r for r in outcome_rows(outcomes) if r["outcome"] != "answered"][:1]
    return "GETs=%d %s%s " % (total, parts, (" (top: %s)" % top[0]["reason"]) if top else "")
