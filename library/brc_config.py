#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_config
short_description: Set BRC's mode, Redis port and limits in the live config map
description:
  - Reads the pinned config map C(<pin_root>/<interface>/brc_config), merges the given options
    (options left unset keep their live value) and writes it back only when something differs.
  - The value layout comes from the contract header C(brc_contract.h) in O(src_dir).
  - The programs read the config per packet, so a change takes effect without a reload.
version_added: "1.0.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description: Interface whose pins to configure.
    type: str
    required: true
  mode:
    description: V(off) passes everything through, V(observe) counts would-be hits, V(serve) answers hits.
    type: str
    choices: [off, observe, serve]
  port:
    description: Redis TCP port.
    type: int
  max_key_len:
    description: Keys longer than this (bytes) are never cached. The programs clamp it to C(BRC_KEY_MAX) of the contract (0 means that maximum).
    type: int
  max_value_len:
    description: Values longer than this (bytes) are never cached. The programs clamp it to C(BRC_VAL_MAX) of the contract.
    type: int
  max_age:
    description: Cache entries older than this many seconds are treated as absent.
    type: int
  verify_sample:
    description: In serve mode, 1 in N would-be hits still goes to Redis to verify the cached value; 0 disables.
    type: int
notes:
  - Who serve mode may answer is not a setting here; M(brc_auth) loads it from Redis's ACL users.
  - Fields of the contract's C(brc_config) that this module has no option for are kept as they are
    and returned as integers.
attributes:
  diff_mode:
    support: full
seealso:
  - module: brc_program
  - module: brc_stats
  - module: brc_auth
"""

EXAMPLES = r"""
- name: Observe on eth0
  brc_config:
    interface: eth0
    mode: observe
    port: 6379
    max_key_len: 64
    max_value_len: 512
    max_age: 30

- name: Switch to serve (other settings kept)
  brc_config:
    interface: eth0
    mode: serve
"""

RETURN = r"""
would_change:
  description: Whether the live config was (in check mode, would be) written; C(changed), kept under C(changed_when).
  returned: always
  type: bool
  sample: false
config:
  description: Live configuration after the task.
  returned: success
  type: dict
  sample: {"mode": "observe", "port": 6379, "max_key_len": 64, "max_value_len": 512, "max_age": 30,
           "verify_sample": 100}
previous:
  description: Live configuration before the task.
  returned: success
  type: dict
cache_flushed:
  description:
    - Cache entries removed because the task moved the mode away from C(off).
    - BRC does not see writes while off, so entries from before may be stale; they
      are removed before the programs look again. So are the records of connections BRC
      did not see open (the host agent adopts them from those), which off let by unseen.
  returned: success
  type: int
  sample: 0
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail
from ansible.module_utils import brc_discover, brc_maps, brc_pins

SETTINGS = ("mode", "port", "max_key_len", "max_value_len", "max_age", "verify_sample")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            mode=dict(type="str", choices=["off", "observe", "serve"]),
            port=dict(type="int"),
            max_key_len=dict(type="int"),
            max_value_len=dict(type="int"),
            max_age=dict(type="int"),
            verify_sample=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    u32 = 2 ** 32 - 1
    try:
        brc_discover.check_port("port", p["port"])
        brc_discover.check_range("max_key_len", p["max_key_len"], 0, u32,
                                 "set max_key_len in bytes, 0 for the compiled maximum (BRC_KEY_MAX)")
        brc_discover.check_range("max_value_len", p["max_value_len"], 0, u32,
                                 "set max_value_len in bytes, up to the compiled maximum (BRC_VAL_MAX)")
        brc_discover.check_range("max_age", p["max_age"], 0, u32,
                                 "set max_age in seconds (the role's default is 30)")
        brc_discover.check_range("verify_sample", p["verify_sample"], 0, u32,
                                 "set verify_sample to N for 1 in N would-be hits, or 0 for none")
        brc_discover.check_shared(p, module.check_mode, interface="pins")
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    pdir = brc_pins.pin_dir(p["pin_root"], p["interface"])
    wanted = dict((k, p[k]) for k in SETTINGS)
    try:
        try:
            contract = brc_maps.contract_for(p["src_dir"])
            changed, before, after, flushed = brc_maps.configure(
                pdir, contract, wanted, module.check_mode, p["src_dir"])
        except BrcError as e:
            if not (module.check_mode and (e.details.get("missing") or not os.path.isdir(p["src_dir"]))):
                raise
            # Check mode before the first deploy: no sources or map yet (earlier tasks would create them).
            after = dict((k, v) for k, v in wanted.items() if v is not None)
            module.exit_json(changed=True, would_change=True, config=after, previous={},
                             msg="would configure the map that brc_program creates",
                             diff={"before": {}, "after": after})
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    for opt, const in (("max_key_len", "BRC_KEY_MAX"), ("max_value_len", "BRC_VAL_MAX")):
        limit = contract.constants.get(const)
        if limit is not None and after.get(opt) and after[opt] > limit:
            module.warn("%s=%d is above the programs' compiled maximum %s=%d; they use %d"
                        % (opt, after[opt], const, limit, limit))
    module.exit_json(changed=changed, would_change=changed, config=after, previous=before, cache_flushed=flushed,
                     diff={"before": before, "after": after})


if __name__ == "__main__":
    main()
