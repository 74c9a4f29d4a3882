# -*- coding: utf-8 -*-
# The fleet audit (role brc_audit): drift of each host against what the toolkit deployed
# and the inventory asks for, and the report assembled for audit.json, audit.html and stdout.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os

import ansible.module_utils

# module_utils/ under the name the modules import it by (plugins/filter/README.md)
_MODULE_UTILS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "module_utils"))
if _MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(_MODULE_UTILS)

from ansible.module_utils.brc_math import num  # noqa: E402
from ansible.module_utils.brc_report import (  # noqa: E402
    fleet_totals, get_outcomes, outcome_definitions, outcome_summary, why_not_answered)


# The counters a healthy host keeps at 0 (mismatch) and those that show it caches.
MISMATCH = "mismatch"
WOULD_HIT = "would_hit"


def brc_cache_notes(mode, counters):
    """For the audit: why a host in observe or serve caches nothing (not drift)."""
    counters = counters or {}
    if mode not in ("observe", "serve"):
        return []
    if num(counters.get(WOULD_HIT)) > 0 or num(counters.get("hit")) > 0:
        return []
    return ["nothing would have been answered from the cache: " + r
            for r in why_not_answered(counters)]


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
    if num(counters.get(MISMATCH)) > 0:
        add("mismatch", "mismatch=%d: a cached value differed from Redis" % num(counters.get(MISMATCH)))
    return problems


def _compact(value):
    if isinstance(value, dict):
        return "{" + ", ".join("%s: %s" % (k, value[k]) for k in sorted(value)) + "}"
    text = str(value).strip()
    return text if len(text) < 200 else text[:200] + "..."


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
            outcome_summary(r.get("get_outcomes")),
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
            "feed_lag_ms": None if lag is None else round(num(lag) / 1e6, 3),
            "feed_keys": num(agent.get("feed_keys")), "feed_flushes": num(agent.get("feed_flushes")),
            "touched_keys": num(agent.get("touched_keys")),
            "flushes": dict((k, num(v)) for k, v in sorted((agent.get("flushes_by_reason") or {}).items())
                            if num(v))}


def _agent_word(agent):
    if not agent or not agent.get("in_charge"):
        return "none"
    return "beating" if agent.get("answering") else "DOWN"


def brc_audit_fleet(records, hosts, generated_at=None):
    """The whole audit: trimmed per-host records (in inventory order), fleet totals,
    the hosts with drift and the stdout summary."""
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
        out_hosts[-1]["get_outcomes"] = get_outcomes(
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
        "fleet": fleet_totals(per_host),
        "get_outcome_definitions": outcome_definitions(defs_from),
        "drifted": drifted,
        "clean": [h["host"] for h in out_hosts if not h["problems"]],
        "summary": brc_audit_summary(out_hosts),
    }


class FilterModule(object):
    def filters(self):
        return {
            "brc_drift": brc_drift,
            "brc_audit_summary": brc_audit_summary,
            "brc_audit_fleet": brc_audit_fleet,
        }
