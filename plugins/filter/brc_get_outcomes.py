# -*- coding: utf-8 -*-
# Every GET BRC saw by outcome and reason (module_utils/brc_outcomes.py), for the stats
# summary and the audit page.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import ansible.module_utils

# module_utils/ under the name the modules import it by (plugins/filter/README.md)
_MODULE_UTILS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "module_utils"))
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.brc_report import get_outcomes, outcome_definitions, outcome_rows, outcome_summary  # noqa: E402


def brc_get_outcomes(stats):
    """The GETs of one brc_stats result by outcome and reason: what brc_stats computed on
    the host, else the same split (module_utils/brc_outcomes.py) of its counters."""
    return get_outcomes(stats)


def brc_get_outcome_definitions(stats=None):
    """What each reason means and what to change (brc_stats' get_outcome_definitions,
    else this toolkit's, with the default contract constants)."""
    return outcome_definitions(stats)


def brc_outcome_rows(outcomes, definitions=None):
    """The non-zero reasons of a GET breakdown, largest first, as
    [{outcome, reason, gets, share, doc, fix}] (share of the total, 0..1)."""
    return outcome_rows(outcomes, definitions)


def brc_outcome_summary(outcomes):
    """'GETs=N answered=a% would=w% not=n% (top: reason) ' for the stdout summaries."""
    return outcome_summary(outcomes)


class FilterModule(object):
    def filters(self):
        return {
            "brc_get_outcomes": brc_get_outcomes,
            "brc_get_outcome_definitions": brc_get_outcome_definitions,
            "brc_outcome_rows": brc_outcome_rows,
            "brc_outcome_summary": brc_outcome_summary,
        }
