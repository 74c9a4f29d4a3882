#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_guard
short_description: Dead-man switch around a change of BRC's live config
description:
  - Protects a change of the live config map C(<pin_root>/<interface>/brc_config) against a
    controller that loses the host in the middle of it, the way C(ansible.posix.iptables_state)
    protects firewall rules.
  - V(armed) saves the map's current value in a marker file on the host. V(watching), started
    with C(async) and C(poll=0) right after, waits O(timeout) seconds and writes the saved value
    back unless the marker was removed meanwhile. V(confirmed), run by the controller once it
    has reached the host again after the change, removes the marker, which ends the watcher.
    V(restored) writes the saved value back at once.
  - A newer V(armed) replaces the marker; a watcher started for the older one then leaves
    without touching the map.
  - The map is read and written with libbpf (no bpftool). Each event is logged to
    C(<marker>.log); a marker the watcher acted on is kept as C(<marker>.reverted).
version_added: "1.0.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description: Interface whose config map to guard.
    type: str
    required: true
  state:
    description:
      - V(armed) saves the current value; V(watching) waits for the confirmation and restores
        the saved value without one; V(confirmed) disarms; V(restored) restores the saved value now.
    type: str
    choices: [armed, watching, confirmed, restored]
    required: true
  guard_dir:
    description: Directory on the host for the marker, C(<guard_dir>/<interface>/rollout.armed).
    type: path
    default: /var/lib/brc
  timeout:
    description: With O(state=watching), seconds to wait for the confirmation before restoring.
    type: float
    default: 60
attributes:
  check_mode:
    details: >-
      V(armed) reads the map but writes no marker; V(confirmed) and V(restored) report what they
      would do; V(watching) returns at once.
notes:
  - V(confirmed) fails when the host has already restored the saved value by itself, since the
    change the controller is confirming is no longer live.
  - Requires root (the map is opened through its pin).
seealso:
  - module: brc_config
"""

EXAMPLES = r"""
- name: Arm the switch with the current config
  brc_guard:
    interface: eth0
    state: armed

- name: Start the host-side revert timer
  brc_guard:
    interface: eth0
    state: watching
    timeout: 60
  async: 120
  poll: 0

- name: Change the mode
  brc_config:
    interface: eth0
    mode: serve

- name: The controller still reaches the host: disarm
  brc_guard:
    interface: eth0
    state: confirmed
"""

RETURN = r"""
marker:
  description: The marker file.
  returned: always
  type: str
  sample: /var/lib/brc/eth0/rollout.armed
map:
  description: The config map's pin, whose value was saved.
  returned: when O(state=armed)
  type: str
  sample: /sys/fs/bpf/brc/eth0/brc_config
armed:
  description: With O(state=armed), whether the marker was written (false in check mode).
  returned: when O(state=armed)
  type: bool
  sample: true
value:
  description: The saved value, hex bytes (what V(armed) saved, or what was restored).
  returned: when a value was saved or restored
  type: list
  elements: str
  sample: ["eb", "18", "00", "00", "01", "00", "00", "00"]
confirmed:
  description: Whether the controller's confirmation was there (the marker was removed by it).
  returned: when O(state=watching) or O(state=confirmed)
  type: bool
  sample: true
reverted:
  description: Whether the saved value was written back (for V(confirmed), by the watcher earlier).
  returned: when O(state) is not V(armed)
  type: bool
  sample: false
cache_flushed:
  description:
    - Cache entries removed before the saved value was written back. The change being undone may have
      been to mode off, in which BRC sees no writes, so entries from before it may be stale.
  returned: when the saved value was written back
  type: int
  sample: 0
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail
from ansible.module_utils import brc_discover, brc_guard, brc_maps, brc_pins


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            state=dict(type="str", choices=["armed", "watching", "confirmed", "restored"], required=True),
            guard_dir=dict(type="path", default="/var/lib/brc"),
            timeout=dict(type="float", default=60),
        ),
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    marker = os.path.join(p["guard_dir"], p["interface"], "rollout.armed")
    out = dict(marker=marker)
    try:
        brc_discover.check_interface_name(p["interface"])
        brc_discover.check_absolute("guard_dir", p["guard_dir"], "/var/lib/brc")
        if not p["timeout"] > 0:
            raise BrcError("timeout must be above 0 seconds, got %s" % p["timeout"],
                           "set timeout to how long the host waits for the controller (60 by default)")
        if p["state"] == "armed":
            # Only arming reads the live map; the others work on the marker, which names it.
            brc_discover.check_shared(p, check, interface="pins")
            pdir = brc_pins.pin_dir(p["pin_root"], p["interface"])
            contract = brc_maps.contract_for(p["src_dir"])
            out["map"] = os.path.join(pdir, contract.map_name("config"))
            out.update(brc_guard.arm(marker, out["map"], check, brc_maps.cache_pin(pdir, contract),
                                     brc_maps.untracked_pins(pdir, contract)))
            module.exit_json(changed=True, **out)
        if p["state"] == "watching":
            if check:
                module.exit_json(changed=False, confirmed=False, reverted=False,
                                 msg="check mode: not watching", **out)
            out.update(brc_guard.watch(marker, p["timeout"]))
        elif p["state"] == "confirmed":
            out.update(brc_guard.confirm(marker, check))
            if out["reverted"]:
                module.fail_json(msg="the host already reverted by itself (see %s.log)" % marker, **out)
            module.exit_json(changed=out["confirmed"], **out)
        else:
            out.update(brc_guard.restore(marker, check))
    except BrcError as e:
        fail(module, e, **out)
    except (IOError, OSError, ValueError) as e:
        module.fail_json(msg="%s: %s" % (marker, e), **out)
    module.exit_json(changed=out["reverted"], **out)


if __name__ == "__main__":
    main()
