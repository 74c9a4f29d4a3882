#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_bpffs
short_description: Mount or unmount the BPF filesystem (bpffs) that BRC pins live in
description:
  - Makes sure a bpffs is mounted at O(path), detected by filesystem type C(bpf) in
    C(/proc/self/mountinfo) (the mount source name is irrelevant).
  - Mounts it made are recorded in C(/var/lib/brc/state); O(state=unmounted) only unmounts
    such a mount, unless O(force=true). A bpffs that was already there is left alone.
  - Unmounting drops every pin under it; programs still attached with tc keep running.
version_added: "1.0.0"
extends_documentation_fragment: [brc]
options:
  path:
    description:
      - Mount point, an absolute path.
      - To mount, an empty directory (created when missing) or one that already holds a bpffs.
    type: path
    default: /sys/fs/bpf
  state:
    description: V(mounted) to ensure a bpffs at O(path); V(unmounted) to remove the one the toolkit mounted.
    type: str
    choices: [mounted, unmounted]
    default: mounted
  force:
    description: With O(state=unmounted), also unmount a bpffs the toolkit did not mount.
    type: bool
    default: false
attributes:
  diff_mode:
    support: full
notes:
  - Requires root (CAP_SYS_ADMIN) to mount.
"""

EXAMPLES = r"""
- name: Ensure bpffs is mounted
  brc_bpffs:
    path: /sys/fs/bpf

- name: Unmount it again, only if the toolkit mounted it
  brc_bpffs:
    path: /sys/fs/bpf
    state: unmounted
"""

RETURN = r"""
path:
  description: The mount point.
  returned: always
  type: str
  sample: /sys/fs/bpf
mounted:
  description: Whether a bpffs is mounted at O(path) after the task.
  returned: always
  type: bool
  sample: true
owned:
  description: Whether that mount was made by the toolkit (and may be unmounted by it).
  returned: always
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_bpffs import ensure_bpffs
from ansible.module_utils.brc_common import BrcError, fail
from ansible.module_utils.brc_discover import check_bpffs_path


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/sys/fs/bpf"),
            state=dict(type="str", choices=["mounted", "unmounted"], default="mounted"),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        check_bpffs_path(p["path"], p["state"])
        result = ensure_bpffs(module, p["path"], p["state"], p["force"], module.check_mode)
    except BrcError as e:
        fail(module, e, path=p["path"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
