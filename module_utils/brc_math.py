# -*- coding: utf-8 -*-
# The arithmetic of BRC's numbers, in one place for the modules (brc_stats on each host)
# and for the controller's filters (fleet totals, gates, audit), so that a ratio or a
# percentile means the same on a host and for the fleet. Standard library only: the
# filters import it on the controller, the modules ship it to the hosts.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

# Ratios brc_stats reports: counter names as brc_contract.h's BRC_COUNTERS list has them
# (lower case). A ratio is reported when its denominator counters exist; numerator
# counters a build does not have (yet) count as 0, e.g. hit before serve mode exists.
# A ratio is 0.0 while its denominator is 0.
RATIOS = {
    "hit_ratio": {"numerator": ("hit",), "denominator": ("req_get",)},
    "would_hit_ratio": {"numerator": ("would_hit",), "denominator": ("req_get",)},
    "miss_ratio": {"numerator": ("miss",), "denominator": ("req_get",)},
    "mismatch_ratio": {"numerator": ("mismatch",), "denominator": ("would_hit", "mismatch")},
}

PERCENTILES = (50, 90, 99)


def num(value, default=0):
    """An integer from a module result or template value (strings after templating)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def percentile(buckets, p):
    """Upper bound in microseconds of the log2-ns slot holding the p-th percentile (0.0 when
    empty). Latency histograms are log2 of nanoseconds (BRC_LAT_SLOTS): slot i counts
    [2^i, 2^(i+1)) ns, slot 0 also 0 and 1 ns, the last slot everything above."""
    buckets = [num(b) for b in (buckets or [])]
    total = sum(buckets)
    if not total:
        return 0.0
    need = max(1, int(math.ceil(p / 100.0 * total)))
    seen = 0
    for slot, n in enumerate(buckets):
        seen += n
        if seen >= need:
            return round((2 ** (slot + 1)) / 1000.0, 3)
    return round((2 ** len(buckets)) / 1000.0, 3)


def sample_percentile(sorted_values, p):
    """The p-th percentile of sorted samples by nearest rank (None when there are none)."""
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, int(math.ceil(p / 100.0 * len(sorted_values))) - 1))
    return sorted_values[idx]


def percentiles(buckets, points=PERCENTILES):
    """{count, p50_us, p90_us, p99_us} of a log2-ns histogram."""
    out = {"count": sum(num(b) for b in (buckets or []))}
    for p in points:
        out["p%d_us" % p] = percentile(buckets, p)
    return out


def ratios(counters, definitions=None):
    """{name: ratio} from counters, by definitions shaped as RATIOS (the default)."""
    counters = counters or {}
    out = {}
    for name, d in sorted((definitions or RATIOS).items()):
        nums, dens = list(d.get("numerator") or []), list(d.get("denominator") or [])
        if not dens or not all(c in counters for c in dens):
            continue
        total = sum(num(counters[c]) for c in dens)
        out[name] = round(float(sum(num(counters.get(c)) for c in nums)) / total, 4) if total else 0.0
    return out
