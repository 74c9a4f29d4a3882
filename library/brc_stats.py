#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_stats
short_description: Read (and optionally reset) BRC's counters and latency histograms
description:
  - Reads the pinned per-CPU stats and latency maps under C(<pin_root>/<interface>/), sums the
    CPUs, and returns named counters, hit ratios and latency percentiles per Redis command.
  - Counter names and slot count come from C(brc_contract.h) in O(src_dir); histogram names from the build record.
  - Splits every GET the programs saw into answered, would answer and not answered, by reason
    (C(get_outcomes)), with what an operator can change for each reason (C(get_outcome_definitions)).
  - With O(reset=true), zeroes both maps after reading; C(changed) is true only when something was non-zero.
  - Without O(interface) (such as C(ansible redis -m brc_stats)), reads every interface BRC is on (those
    with pins under O(pin_root) or BRC's tc filter). One found is reported as with O(interface); several
    are each reported under RV(interfaces); none is not a failure, RV(msg) says so.
version_added: "1.0.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description:
      - Interface whose pins to read.
      - Default every interface BRC is on (see above).
    type: str
  reset:
    description: Zero the counters and histograms after reading them (without O(interface), of every interface read).
    type: bool
    default: false
attributes:
  diff_mode:
    support: none
notes:
  - Latency percentiles are the upper bound of the log2 bucket that holds them, in microseconds.
"""

EXAMPLES = r"""
- name: Read stats
  brc_stats:
    interface: eth0
  register: stats

- name: Read the stats of wherever BRC is attached (ad hoc, ansible redis -m brc_stats)
  brc_stats:

- name: Show the hit ratio
  ansible.builtin.debug:
    msg: "{{ stats.ratios.hit_ratio | default('n/a') }}"

- name: Start a measurement window
  brc_stats:
    interface: eth0
    reset: true
"""

RETURN = r"""
interface:
  description: The interface read; null when none or several were read.
  returned: always
  type: str
  sample: eth0
interfaces:
  description:
    - Every interface read, one entry per interface BRC is on, holding the results below for it
      (C(counters), C(ratios), C(latency), C(get_outcomes), C(mode), C(agent)); or C(error) and
      C(fix) for an interface with BRC's tc filter but no pins under O(pin_root).
  returned: always
  type: dict
  sample: {"eth0": {"mode": "observe", "counters": {"pkt_ingress": 1024}}}
msg:
  description: What was read, or that BRC is not on this host.
  returned: always
  type: str
  sample: "BRC is not on this host: no pins under /sys/fs/bpf/brc and no BRC tc filter on any interface"
counters:
  description: Every counter of the contract, summed over CPUs (values before a reset).
  returned: when one interface is read
  type: dict
  sample: {"pkt_ingress": 1024, "pkt_egress": 998}
ratios:
  description: Ratios derived from the counters that exist in the contract (0.0 while the denominator is 0).
  returned: when one interface is read
  type: dict
  sample: {"hit_ratio": 0.82, "would_hit_ratio": 0.0}
latency:
  description:
    - Per Redis command, from request ingress to reply egress as seen on the wire (GETs answered in
      the kernel included, which Redis's C(INFO commandstats) never sees), with the count of timed replies,
      p50/p90/p99 in microseconds, and the log2-ns buckets.
    - One entry per command of BRC's command table that has a count, and C(get) always; C(other) counts
      commands missing from the table. Named as the build that is pinned numbered them (its record).
    - Replies to commands pipelined deeper than the per-connection FIFO have no timestamp and are
      counted in C(counters.latency_untimed) instead.
  returned: when one interface is read
  type: dict
  sample: {"get": {"count": 10, "p50_us": 65.536, "p90_us": 131.072, "p99_us": 131.072, "buckets": [0, 0]},
           "hset": {"count": 2, "p50_us": 32.768, "p90_us": 65.536, "p99_us": 65.536, "buckets": [0, 0]}}
ratio_definitions:
  description:
    - How each ratio is computed, so that fleet tools can recompute them from summed counters
      without keeping their own copy. A ratio is reported when its denominator counters exist;
      missing numerator counters count as 0; 0.0 while the denominator is 0.
  returned: success
  type: dict
  sample: {"would_hit_ratio": {"numerator": ["would_hit"], "denominator": ["req_get"]}}
get_outcomes:
  description:
    - Every GET the programs saw (C(total) = C(hit) + C(req_get)) in exactly one bucket, derived from
      the counters by C(module_utils/brc_outcomes.py); C(reasons) has every reason, zeros included,
      and sums to C(total).
    - C(unseen) counts traffic whose GETs are in none of the numbers (connections opened before BRC
      was attached); C(dirty) the connections given up, by reason; C(unclassified) non-zero
      GET-outcome counters this toolkit does not place (a contract newer than the toolkit).
  returned: when one interface is read
  type: dict
  sample: {"total": 150, "outcomes": {"answered": 50, "would_answer": 40, "not_answered": 60},
           "reasons": {"answered": {"served": 50}, "would_answer": {"not_served": 40},
                       "not_answered": {"pipelined": 10, "first_read": 20, "ttl": 30}},
           "unseen": {"segments_untracked": 0}, "dirty": {"resp3": 2}, "unclassified": {}}
get_outcome_definitions:
  description:
    - Per reason of C(get_outcomes), its outcome, what it means, what an operator can change and the
      counters it is taken from; C(_unseen) and C(_dirty) say the same for those.
  returned: success
  type: dict
  sample: {"pipelined": {"outcome": "not_answered", "counters": ["get_uncacheable_pending"],
                         "doc": "sent while other commands were pending on the connection (pipelined)",
                         "fix": "nothing: a GET is answerable only with nothing pending, by design"}}
mode:
  description: Live mode from the config map.
  returned: when one interface is read
  type: str
  sample: observe
agent:
  description:
    - The host agent's C(brc_agent) entry (null when the build has none), as M(brc_facts) reports it.
    - C(answering) false while C(in_charge) means serve answers nothing (agent down, Redis restarted or loading, role change).
    - C(flushes_by_reason) splits C(feed_flushes) by why the agent flushed, one entry per reason of
      C(BRC_AGENT_FLUSH_REASONS) in C(brc_contract.h) (zeros included; C(slot_<n>) for a slot the contract does not name).
  returned: when one interface is read
  type: dict
  sample: {"in_charge": true, "answering": true, "beat_age_ms": 38.2, "pid": 311, "feed_keys": 1204,
           "feed_flushes": 2, "feed_lag_ns": 71000, "touched_keys": 96, "flags": 1,
           "flushes_by_reason": {"other": 0, "agent_start": 1, "resync": 1, "restart": 0, "role": 0, "loading": 0}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, build_record_path, common_spec, fail, read_json
from ansible.module_utils import brc_discover, brc_maps, brc_math, brc_outcomes, brc_pins


def read_one(iface, pdir, contract, src_dir, reset, check_mode):
    """(changed, result) for the pins in pdir."""
    counters = brc_maps.read_counters(pdir, contract)
    record = read_json(build_record_path(iface))
    hist = brc_maps.read_latency(pdir, contract, brc_maps.latency_names(contract, record))
    mode = brc_maps.read_config(pdir, contract, src_dir).get("mode")
    agent = brc_maps.read_agent(pdir, contract)
    changed = brc_maps.reset_stats(pdir, contract, check_mode) if reset else False
    return changed, dict(counters=counters, ratios=brc_math.ratios(counters),
                         latency=brc_maps.latency_summary(hist), mode=mode, agent=agent,
                         get_outcomes=brc_outcomes.breakdown(counters, contract.counter_docs))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(),
            reset=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        brc_discover.check_pin_root(p["pin_root"], need_bpffs=False)
        if p["interface"]:
            brc_discover.check_interface_name(p["interface"])
            brc_discover.check_src_dir(p["src_dir"])
            brc_discover.check_interface_has_pins(p["interface"], p["pin_root"])
            found = {p["interface"]: {"pinned": True}}
        else:
            found = brc_discover.discover(p["pin_root"])
        if not found:
            module.exit_json(changed=False, interface=None, interfaces={},
                             msg=brc_discover.not_found_msg(p["pin_root"]))
        brc_discover.check_src_dir(p["src_dir"])
        contract = brc_maps.contract_for(p["src_dir"])
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    changed, results = False, {}
    for iface, where in sorted(found.items()):
        if not where["pinned"]:
            results[iface] = {"error": "BRC's tc filter is attached on %s but nothing is pinned under %s" % (
                iface, brc_pins.pin_dir(p["pin_root"], iface)),
                "fix": "pass the pin_root it was deployed with, or redeploy BRC on %s" % iface}
            module.warn("%s. Fix: %s" % (results[iface]["error"], results[iface]["fix"]))
            continue
        try:
            one_changed, results[iface] = read_one(iface, brc_pins.pin_dir(p["pin_root"], iface), contract, p["src_dir"],
                                                   p["reset"], module.check_mode)
        except BrcError as e:
            fail(module, e, interface=iface, changed=changed, interfaces=results)
        changed = changed or one_changed
    extra = dict(ratio_definitions=dict((k, {"numerator": list(d["numerator"]), "denominator": list(d["denominator"])})
                                        for k, d in brc_math.RATIOS.items()),
                 get_outcome_definitions=brc_outcomes.definitions(contract.constants))
    readable = [i for i, r in results.items() if "error" not in r]
    if len(results) == 1 and readable:
        iface = readable[0]
        extra.update(results[iface])
        module.exit_json(changed=changed, interface=iface, interfaces=results,
                         msg="read the stats of %s" % iface, **extra)
    module.exit_json(changed=changed, interface=None, interfaces=results, msg=brc_discover.found_msg(results), **extra)


if __name__ == "__main__":
    main()
