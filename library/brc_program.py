#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_program
short_description: Compile, load and pin the BRC eBPF programs and maps for one interface
description:
  - Compiles the BRC sources in O(src_dir) with bcc against the host's kernel headers and pins
    the tc programs (C(prog_ingress), C(prog_egress)), the tail-call arrays and the persistent
    maps under C(<pin_root>/<interface>/).
  - Idempotent by source hash (sha256 of the C(.c) and C(.h) files in O(src_dir), O(cflags) and the
    command table of C(module_utils/brc_commands.py)) and by the
    pinned programs' ids and tags, as recorded in C(/var/lib/brc/<interface>/build.json).
  - On an upgrade, pinned maps whose layout (type, key and value size, max entries) equals the new
    build's are reused, so the cache and stats survive; a differing layout is refused unless
    O(reset_maps=true). The latency histograms are recreated instead, without O(reset_maps), when
    their layout or the numbering of the command table changed (their counts would be misnamed).
    Program pins are replaced atomically (pinned under a temporary name,
    then renamed over the old pin). Attaching the new programs is M(brc_tc)'s job.
version_added: "1.0.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description: Interface the programs are built for (names the pin directory).
    type: str
    required: true
  state:
    description: V(present) builds and pins; V(absent) removes every pin of the interface and the record.
    type: str
    choices: [present, absent]
    default: present
  reset_maps:
    description:
      - Drop and recreate pinned maps whose layout differs from the new build (their contents are lost).
      - Maps whose layout matches are reused either way.
      - Never the flow tables while a connection answered in the kernel is open on the interface,
        as its sequence translation is there. The module then fails with the number of such
        connections and the fix (mode V(off), let them close, then upgrade).
    type: bool
    default: false
  cflags:
    description: Extra compiler flags for bcc, such as V(-DBRC_CACHE_ENTRIES=65536). Part of the source hash.
    type: list
    elements: str
    default: []
  predict_change:
    description:
      - Check mode only. Set when an earlier task of the same run changes O(src_dir) (in check mode the
        host still has the old sources), so the module predicts a rebuild. Ignored outside check mode.
    type: bool
    default: false
attributes:
  check_mode:
    details: Check mode does not compile; it compares the source hash and pins with the record.
  diff_mode:
    support: full
requirements:
  - bcc (Debian package python3-bpfcc) and kernel headers for the running kernel
notes:
  - Kernel headers are the exact C(linux-headers-$(uname -r)) when it exists, otherwise Debian's newest
    headers linked as C(/lib/modules/$(uname -r)/build) (see C(scripts/kernel-headers)); RV(headers) says which.
seealso:
  - module: brc_tc
  - module: brc_bpffs
"""

EXAMPLES = r"""
- name: Build and pin BRC for eth0
  brc_program:
    interface: eth0
    src_dir: /usr/local/lib/brc/bpf

- name: Upgrade accepting that the cache layout changed
  brc_program:
    interface: eth0
    reset_maps: true

- name: Remove the pins
  brc_program:
    interface: eth0
    state: absent
"""

RETURN = r"""
would_change:
  description: Whether pins were (in check mode, would be) made, replaced or removed; C(changed), kept under C(changed_when).
  returned: always
  type: bool
  sample: false
pin_dir:
  description: Directory holding this interface's pins.
  returned: always
  type: str
  sample: /sys/fs/bpf/brc/eth0
source_hash:
  description: sha256 of the sources, cflags and command table that the pinned programs were built from.
  returned: always
  type: str
layout_digest:
  description: Digest of the map layouts defined by the contract header (brc_contract.h).
  returned: always
  type: str
programs:
  description: The pinned programs by direction.
  returned: always
  type: dict
  sample: {"ingress": {"id": 41, "tag": "a1b2c3d4e5f60718", "pin": "/sys/fs/bpf/brc/eth0/prog_ingress"}}
maps:
  description: Pinned maps (persistent maps and tail-call arrays) by name.
  returned: always
  type: dict
  sample: {"brc_stats": {"id": 12, "pin": "/sys/fs/bpf/brc/eth0/brc_stats", "kind": "persistent"}}
headers:
  description: Kernel headers used (kind exact, fallback or missing, and their path).
  returned: always
  type: dict
  sample: {"kind": "fallback", "path": "/usr/src/linux-headers-6.1.0-26-amd64", "kernel": "6.18.4"}
maps_reused:
  description: Persistent maps kept from the previous build (same map id).
  returned: when a build ran
  type: list
  elements: str
maps_reset:
  description:
    - Persistent maps dropped because their layout changed (O(reset_maps=true)), and latency
      histograms recreated because their layout or command numbering changed.
  returned: when a build ran
  type: list
  elements: str
timings:
  description:
    - Time this run spent building, in seconds. C(compile_s) is bcc's C(BPF(text=...)) (clang to
      BPF bytecode, and the maps created or reopened); C(load_s) is the verifier loading the
      programs (C(load_func)) and the command table written; C(compiles) counts bcc runs (2 on an
      upgrade with pinned maps, a layout probe without programs and then the build).
    - All zero when nothing was built (sources and pins up to date, or check mode).
  returned: when O(state=present)
  type: dict
  sample: {"compiles": 1, "compile_s": 6.1, "load_s": 9.8}
removed:
  description: Pins removed (O(state=absent)).
  returned: when O(state=absent)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail, require
from ansible.module_utils import brc_build, brc_discover


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            reset_maps=dict(type="bool", default=False),
            cflags=dict(type="list", elements="str", default=[]),
            predict_change=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "present" and not module.check_mode:
        require(module, "bcc", "to compile and load the BRC programs")
    try:
        if p["state"] == "present":
            brc_discover.check_shared(p, module.check_mode, interface="exists")
            brc_discover.check_cflags(p["cflags"])
        else:
            brc_discover.check_shared(p, True, interface="name", src_dir=False)
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    try:
        if p["state"] == "absent":
            result = brc_build.remove(p["interface"], p["pin_root"], module.check_mode)
        else:
            result = brc_build.install(p["interface"], p["src_dir"], p["pin_root"], p["cflags"],
                                       p["reset_maps"], module.check_mode, p["predict_change"])
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    result["would_change"] = bool(result.get("changed"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
