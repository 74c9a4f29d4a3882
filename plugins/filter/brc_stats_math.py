# -*- coding: utf-8 -*-
# The numbers of playbooks/stats.yml and the audit: percentiles, ratios, rates and fleet
# totals, computed as brc_stats computes them on each host (module_utils/brc_math.py).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import ansible.module_utils

# module_utils/ under the name the modules import it by (plugins/filter/README.md)
_MODULE_UTILS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "module_utils"))
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.brc_math import PERCENTILES, num, percentiles, ratios  # noqa: E402
from ansible.module_utils.brc_report import FALLBACK_RATIOS, fleet_totals  # noqa: E402


def brc_percentiles(buckets, points=PERCENTILES):
    """Percentiles (microseconds, upper slot bound) of a log2-ns histogram."""
    return percentiles(buckets, points)


def brc_ratios(counters, definitions=None):
    """Ratios from counters as brc_stats computes them per host, by the definitions it
    returns (ratio_definitions), else the two every build has."""
    return ratios(counters, definitions or FALLBACK_RATIOS)


def brc_fleet_totals(per_host):
    """Sum counters and histograms over hosts; ratios and percentiles recomputed
    from the sums (never averaged)."""
    return fleet_totals(per_host)


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
        delta = num(b[name]) - num(a[name])
        out[name] = None if delta < 0 else round(delta / seconds, 3)
    return out


class FilterModule(object):
    def filters(self):
        return {
            "brc_percentiles": brc_percentiles,
            "brc_ratios": brc_ratios,
            "brc_fleet_totals": brc_fleet_totals,
            "brc_rates": brc_rates,
        }
