#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_tc
short_description: Attach the pinned BRC programs to an interface with tc clsact
description:
  - Ensures a C(clsact) qdisc on O(interface) and two direct-action C(bpf) filters, at ingress
    (parent C(ffff:fff2)) and egress (C(ffff:fff3)), running the programs pinned by M(brc_program)
    under C(<pin_root>/<interface>/).
  - Idempotent by the attached program id. A new build is attached with C(tc filter replace) on the
    same prio and handle, so traffic never passes without a filter.
  - O(state=detached) removes the BRC filters first, then the C(clsact) qdisc only when the toolkit
    created it (recorded in C(/var/lib/brc/<interface>/tc.json)) and no other filter uses it.
  - When a filter has to be created rather than replaced, BRC has not been seeing packets, so the
    cache map (named by C(brc_contract.h) in O(src_dir)) and the flows kept for closed connections
    and the records of untracked connections are emptied before the filter goes in (see
    RV(cache_flushed), RV(flows_forgotten) and RV(untracked_forgotten)).
version_added: "1.0.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description: Network interface.
    type: str
    required: true
  state:
    description: V(attached) or V(detached).
    type: str
    choices: [attached, detached]
    default: attached
  predict_change:
    description:
      - Check mode only. Set when an earlier task of the same run rebuilds the programs, so the module
        predicts a filter replacement. Ignored outside check mode.
    type: bool
    default: false
attributes:
  diff_mode:
    support: full
requirements:
  - pyroute2 (Debian package python3-pyroute2)
seealso:
  - module: brc_program
"""

EXAMPLES = r"""
- name: Attach BRC to eth0
  brc_tc:
    interface: eth0

- name: Detach it
  brc_tc:
    interface: eth0
    state: detached
"""

RETURN = r"""
would_change:
  description: Whether filters were (in check mode, would be) attached, replaced or removed; C(changed), kept under C(changed_when).
  returned: always
  type: bool
  sample: false
attached:
  description: Program id and tag of the BRC filter at each hook after the task (empty when detached).
  returned: always
  type: dict
  sample: {"ingress": {"id": 41, "tag": "a1b2c3d4e5f60718"}, "egress": {"id": 42, "tag": "0f1e2d3c4b5a6978"}}
clsact_owned:
  description: Whether the clsact qdisc was created by the toolkit.
  returned: always
  type: bool
cache_flushed:
  description:
    - Cache entries removed before a missing filter was created. While a filter was missing BRC
      could not see writes, so entries from before may be stale. A replaced filter (upgrade)
      leaves no gap and keeps the cache.
  returned: when attached
  type: int
  sample: 0
flows_forgotten:
  description:
    - Flows kept outside the live table (half-open connections, and served connections that closed,
      kept to translate their last packets) removed before a missing filter was created. Their last
      packets went by untranslated during the gap, and a client reusing such a connection's ports
      would otherwise be translated by the old connection's offsets and stall.
  returned: when attached
  type: int
  sample: 0
untracked_forgotten:
  description:
    - Records of connections BRC did not see open, and the host agent's tickets to adopt them,
      removed before a missing filter was created. A record that missed packets during the gap
      could prove a command boundary the connection has already passed.
  returned: when attached
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail, require
from ansible.module_utils import brc_discover, brc_maps, brc_pins, brc_tc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            state=dict(type="str", choices=["attached", "detached"], default="attached"),
            predict_change=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    require(module, "pyroute2", "to manage tc clsact filters")
    try:
        if p["state"] == "attached":
            brc_discover.check_shared(p, module.check_mode, interface="exists")
            if not module.check_mode:
                brc_discover.check_interface_has_pins(p["interface"], p["pin_root"])
        else:
            brc_discover.check_shared(p, True, interface="name", src_dir=False)
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    try:
        if p["state"] == "attached":
            pdir = brc_pins.pin_dir(p["pin_root"], p["interface"])
            try:
                gap_pins = brc_maps.blind_gap_pins(pdir, brc_maps.contract_for(p["src_dir"]))
            except BrcError:
                if not module.check_mode:   # check mode before the first deploy: no sources yet
                    raise
                gap_pins = None
            result = brc_tc.attach(p["interface"], pdir, module.check_mode, p["predict_change"],
                                   gap_pins=gap_pins)
        else:
            result = brc_tc.detach(p["interface"], module.check_mode)
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    result["would_change"] = bool(result.get("changed"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
