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
    CPUs, and returns named counters, hit ratios and latency percentiles per command class.
  - Counter names, histogram classes and slot count come from C(brc_contract.h) in O(src_dir).
  - Splits every GET the programs saw into answered, would answer and not answered, by reason
    (C(get_outcomes)), with what an operator can change for each reason (C(get_outcome_definitions)).
  - With O(reset=true), zeroes both maps after reading; C(changed) is true only when something was non-zero.
version_added: "1.0.0"
author: BRC fleet toolkit
extends_documentation_fragment:
  - brc
options:
  interface:
    description: Interface whose pins to read.
    type: str
    required: true
  reset:
    description: Zero the counters and histograms after reading them.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
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

- name: Show the hit ratio
  ansible.builtin.debug:
    msg: "{{ stats.ratios.hit_ratio | default('n/a') }}"

- name: Start a measurement window
  brc_stats:
    interface: eth0
    reset: true
"""

RETURN = r"""
counters:
  description: Every counter of the contract, summed over CPUs (values before a reset).
  returned: success
  type: dict
  sample: {"pkt_ingress": 1024, "pkt_egress": 998}
ratios:
  description: Ratios derived from the counters that exist in the contract (0.0 while the denominator is 0).
  returned: success
  type: dict
  sample: {"hit_ratio": 0.82, "would_hit_ratio": 0.0}
latency:
  description: Per command class, request count, p50/p90/p99 in microseconds, and the log2-ns buckets.
  returned: success
  type: dict
  sample: {"get": {"count": 10, "p50_us": 65.536, "p90_us": 131.072, "p99_us": 131.072, "buckets": [0, 0]}}
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
  returned: success
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
  returned: success
  type: str
  sample: observe
agent:
  description:
    - The host agent's C(brc_agent) entry (null when the build has none), as M(brc_facts) reports it.
    - C(answering) false while C(in_charge) means serve answers nothing (agent down, Redis restarted or loading, role change).
    - C(flushes_by_reason) splits C(feed_flushes) by why the agent flushed, one entry per reason of
      C(BRC_AGENT_FLUSH_REASONS) in C(brc_contract.h) (zeros included; C(slot_<n>) for a slot the contract does not name).
  returned: success
  type: dict
  sample: {"in_charge": true, "answering": true, "beat_age_ms": 38.2, "pid": 311, "feed_keys": 1204,
           "feed_flushes": 2, "feed_lag_ns": 71000, "touched_keys": 96, "flags": 1,
           "flushes_by_reason": {"other": 0, "agent_start": 1, "resync": 1, "restart": 0, "role": 0, "loading": 0}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail
from ansible.module_utils import brc_maps, brc_outcomes, brc_pins


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            reset=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    pdir = brc_pins.pin_dir(p["pin_root"], p["interface"])
    try:
        contract = brc_maps.contract_for(p["src_dir"])
        counters = brc_maps.read_counters(pdir, contract)
        hist = brc_maps.read_latency(pdir, contract)
        mode = brc_maps.read_config(pdir, contract, p["src_dir"]).get("mode")
        agent = brc_maps.read_agent(pdir, contract)
        changed = False
        if p["reset"]:
            changed = brc_maps.reset_stats(pdir, contract, module.check_mode)
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    module.exit_json(changed=changed, counters=counters, ratios=brc_maps.ratios(counters),
                     latency=brc_maps.latency_summary(hist), mode=mode, agent=agent,
                     get_outcomes=brc_outcomes.breakdown(counters, contract.counter_docs),
                     get_outcome_definitions=brc_outcomes.definitions(contract.constants),
                     ratio_definitions=dict((k, {"numerator": list(n), "denominator": list(d)})
                                            for k, (n, d) in brc_maps.RATIOS.items()))


if __name__ == "__main__":
    main()
