# -*- coding: utf-8 -*-
# node_exporter textfiles (Prometheus text format 0.0.4) from brc_stats results, with HELP
# lines from the counter descriptions of bpf/brc_contract.h (role brc_stats).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import re

import ansible.module_utils

# module_utils/ under the name the modules import it by (plugins/filter/README.md)
_MODULE_UTILS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "module_utils"))
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils import brc_outcomes  # noqa: E402
from ansible.module_utils.brc_contract import Contract, ContractError  # noqa: E402
from ansible.module_utils.brc_math import num  # noqa: E402
from ansible.module_utils.brc_report import get_outcomes  # noqa: E402


_METRIC_OK = re.compile(r"[^a-zA-Z0-9_]")


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(base, **extra):
    items = list(base.items()) + sorted(extra.items())
    return "{" + ",".join('%s="%s"' % (k, _label_value(v)) for k, v in items) + "}"


def _family(lines, metric, kind, text):
    """A metric family's HELP and TYPE lines."""
    lines.append("# HELP %s %s" % (metric, text))
    lines.append("# TYPE %s %s" % (metric, kind))


def _fmt(value):
    if value is None:
        return "NaN"
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


def brc_counter_docs(header_text):
    """{counter: description} from the text of bpf/brc_contract.h, read by the contract's
    own parser (for HELP); {} when there is no header or it is not one."""
    if not header_text:
        return {}
    try:
        return Contract(header_text).counter_docs
    except ContractError:
        return {}


def brc_prometheus(stats, host, interface, rates=None, docs=None):
    """node_exporter textfile collector text (Prometheus text format 0.0.4)."""
    docs = docs or {}
    stats = stats or {}
    base = {"host": host, "interface": interface or ""}
    lines = []
    for name, value in sorted((stats.get("counters") or {}).items()):
        metric = "brc_%s_total" % _METRIC_OK.sub("_", name)
        _family(lines, metric, "counter", (docs.get(name) or "BRC counter %s" % name).replace("\n", " "))
        lines.append("%s%s %s" % (metric, _labels(base), _fmt(num(value))))
    outcomes = get_outcomes(stats)
    if outcomes:
        # every reason, zeros too, so a reason has a series from its first GET. A gauge, not
        # a counter: a GET passed to Redis sits in a remainder (reply_unseen, other) until
        # its reply moves it to its reason, so a series can step down by the GETs in
        # flight, which rate() would take for a counter reset (a spike of the whole value).
        metric = "brc_get_outcomes"
        _family(lines, metric, "gauge", "Every GET BRC saw (hit + req_get) by outcome (answered, would_answer, "
                "not_answered) and reason, each GET once: the series sum to the GETs seen "
                "(module_utils/brc_outcomes.py). A gauge: GETs in flight move between reasons "
                "when their reply arrives; use delta() or shares of the sum.")
        for outcome in brc_outcomes.OUTCOMES:
            for reason, n in sorted(((outcomes.get("reasons") or {}).get(outcome) or {}).items()):
                lines.append("%s%s %s" % (metric, _labels(base, outcome=outcome, reason=reason), _fmt(num(n))))
    mode = stats.get("mode")
    _family(lines, "brc_mode", "gauge", "Current BRC mode (1 for the active one).")
    for m in ("off", "observe", "serve"):
        lines.append("brc_mode%s %d" % (_labels(base, mode=m), 1 if mode == m else 0))
    ratios = stats.get("ratios") or {}
    for key in ("hit_ratio", "would_hit_ratio"):
        if ratios.get(key) is None:
            continue
        metric = "brc_%s" % key
        _family(lines, metric, "gauge", "BRC %s over the GETs seen since the maps were created." % key.replace("_", " "))
        lines.append("%s%s %s" % (metric, _labels(base), _fmt(float(ratios[key]))))
    latency = stats.get("latency") or {}
    if latency:
        metric = "brc_latency_seconds"
        _family(lines, metric, "histogram", "Request ingress to reply egress time seen by BRC per Redis command "
                "(GETs answered in the kernel included), log2 buckets.")
        for cls in sorted(latency):
            buckets = [num(b) for b in (latency[cls] or {}).get("buckets") or []]
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
                 num(agent.get("feed_lag_ns")) / 1e9)):
            if value is None:
                continue
            _family(lines, metric, "gauge", what)
            lines.append("%s%s %s" % (metric, _labels(base), _fmt(float(value))))
        for name, what in (("feed_keys", "Keys Redis reported changed, fed to the kernel by the agent."),
                           ("feed_flushes", "Everything invalidated by the agent (restart, role change, lost feed, FLUSH)."),
                           ("touched_keys", "TOUCHes the agent sent for keys answered in the kernel.")):
            metric = "brc_agent_%s_total" % name
            _family(lines, metric, "counter", what)
            lines.append("%s%s %s" % (metric, _labels(base), _fmt(num(agent.get(name)))))
        # one series per reason the contract names, zeros included (read_agent
        # reports them all), so rate() and alerts see a reason from its first flush
        by_reason = agent.get("flushes_by_reason") or {}
        if by_reason:
            metric = "brc_agent_flushes_total"
            _family(lines, metric, "counter", "The agent's flushes by reason (BRC_AGENT_FLUSH_REASONS in "
                    "brc_contract.h); brc_agent_feed_flushes_total is their sum.")
            for reason, n in sorted(by_reason.items()):
                lines.append("%s%s %s" % (metric, _labels(base, reason=reason), _fmt(num(n))))
    if rates:
        metric = "brc_rate_per_second"
        _family(lines, metric, "gauge", "Counter rate over the sampling interval of playbooks/stats.yml.")
        for name, value in sorted(rates.items()):
            if value is None:
                continue
            lines.append("%s%s %s" % (metric, _labels(base, counter=name), _fmt(float(value))))
    return "\n".join(lines) + "\n"


class FilterModule(object):
    def filters(self):
        return {
            "brc_prometheus": brc_prometheus,
            "brc_counter_docs": brc_counter_docs,
        }
