#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_facts
short_description: Gather BRC capabilities and state as ansible_facts.brc
description:
  - Capabilities of the host (kernel version, BPF syscall, BTF, clsact and cls_bpf support, bpffs,
    kernel headers exact/fallback/missing, bcc, pyroute2, libbpf).
  - BRC state per interface that has pins or records (mode and config, pinned program ids and tags,
    BRC filters attached with tc, pins, map ids and fill), plus the build record.
  - With O(port), where Redis listens and the interface carrying that address (RV(ansible_facts.brc.detected_interface)).
  - RV(ansible_facts.brc.problems) lists what blocks a deploy, each with its fix.
  - Without O(interface) and O(port) (such as C(ansible redis -m brc_facts)), RV(ansible_facts.brc.state)
    describes the interface BRC is on when there is one; RV(ansible_facts.brc.on_interfaces) lists every
    interface BRC is on and RV(msg) says where it is, or that it is on none (not a failure).
  - Never changes anything.
version_added: "1.0.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description:
      - Interface to report as RV(ansible_facts.brc.state); default the detected one (O(port)), else
        the one BRC is on when it is on exactly one.
    type: str
  port:
    description: Redis TCP port, to find its listening addresses and interface.
    type: int
  address:
    description: Address the host is reached at (such as C(ansible_host)); picks the interface when Redis binds a wildcard.
    type: str
  packages:
    description: Debian packages to look up in dpkg's status; the ones not installed are returned in RV(ansible_facts.brc.packages_missing).
    type: list
    elements: str
  probe_bcc:
    description:
      - Compile and load a trivial program with bcc to prove it works (half a second on an idle
        host, several seconds with a fleet deploying at once).
      - Skipped when the interface's pinned programs are the ones its build record names, built on
        this kernel with the headers bcc would use now (a re-deploy, a mode change), since that
        build proved bcc works. C(capabilities.bcc.probe) says C(compiled) or why it was skipped.
    type: bool
    default: false
attributes:
  diff_mode:
    support: none
  facts:
    support: full
"""

EXAMPLES = r"""
- name: Gather BRC facts
  brc_facts:
    port: 6379
    address: "{{ ansible_host }}"

- name: Fail early on problems
  ansible.builtin.assert:
    that: ansible_facts.brc.problems | length == 0
    fail_msg: "{{ ansible_facts.brc.problems }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts under the C(brc) key.
  returned: always
  type: complex
  contains:
    brc:
      description: BRC facts.
      type: complex
      returned: always
      contains:
        capabilities:
          description: kernel, bpf_syscall, btf, clsact, cls_bpf, bpf_jit, bpffs, headers, bcc, pyroute2, libbpf.
          type: dict
          returned: always
        state:
          description: >-
            State of the selected interface - mode, config, programs (pinned ids/tags), attached
            (BRC filters' ids/tags), pins, maps, map_fill (entries in hash maps), clsact, clsact_owned, build,
            agent (the host agent's brc_agent entry - in_charge, answering, beat_age_ms, pid, feed_keys,
            feed_flushes, feed_lag_ns, touched_keys, flushes_by_reason - or null without one).
            flushes_by_reason splits feed_flushes by why the agent flushed ({reason: count}, every reason
            of BRC_AGENT_FLUSH_REASONS in brc_contract.h, zeros included, e.g. restart, role, loading,
            redis_down, agent_stop).
          type: dict
          returned: always
        interfaces:
          description: The same state for every interface with BRC pins or records.
          type: dict
          returned: always
        on_interfaces:
          description:
            - Every interface BRC is on, with whether it has pins under O(pin_root) (C(pinned)), the hooks
              BRC's tc filter is attached at (C(attached)) and whether the interface C(exists).
          type: dict
          returned: always
          sample: {"eth0": {"pinned": true, "attached": ["ingress", "egress"], "exists": true}}
        interface:
          description: The interface RV(ansible_facts.brc.state) describes.
          type: str
          returned: always
        detected_interface:
          description: Interface carrying the address Redis listens on.
          type: str
          returned: when O(port) is given
        redis:
          description: The port and listening addresses.
          type: dict
          returned: when O(port) is given
        packages_missing:
          description: Those of O(packages) that dpkg does not have installed.
          type: list
          elements: str
          returned: when O(packages) is given
        problems:
          description: What blocks a deploy, as a list of dicts with kind (host or packages), problem and fix.
          type: list
          elements: dict
          returned: always
msg:
  description: Which interfaces BRC is on, or that it is on none.
  returned: always
  type: str
  sample: "BRC is on eth0"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail
from ansible.module_utils import brc_discover, brc_facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(),
            port=dict(type="int"),
            address=dict(type="str"),
            probe_bcc=dict(type="bool", default=False),
            packages=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["interface"]:
            brc_discover.check_interface_name(p["interface"])
        brc_discover.check_port("port", p["port"])
        brc_discover.check_pin_root(p["pin_root"], need_bpffs=False)
        brc_discover.check_absolute("src_dir", p["src_dir"], "/usr/local/lib/brc/bpf")
    except BrcError as e:
        fail(module, e)
    found = brc_discover.discover(p["pin_root"])
    interface = p["interface"] or None
    if interface is None and p["port"] is None and len(found) == 1:
        interface = list(found)[0]
    facts = brc_facts.gather(interface, p["pin_root"], p["src_dir"], p["port"],
                             p["address"], p["probe_bcc"], packages=p["packages"])
    facts["on_interfaces"] = found
    msg = brc_discover.found_msg(found) if found else brc_discover.not_found_msg(p["pin_root"])
    module.exit_json(changed=False, msg=msg, ansible_facts={"brc": facts})


if __name__ == "__main__":
    main()
