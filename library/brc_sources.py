#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_sources
short_description: Ship the BRC BPF sources to a host in one round trip
description:
  - Writes every file given in O(files) under O(dest) when its content differs and, with
    O(exact=true), removes files under O(dest) that are not in O(files), so O(dest) mirrors the
    controller's C(bpf/) directory exactly.
  - One module call for the whole directory (M(ansible.builtin.copy) costs round trips per file).
  - Returns the same source hash M(brc_program) computes (without cflags), so a playbook can tell
    which build a host should run.
version_added: "1.0.0"
extends_documentation_fragment: [brc]
options:
  dest:
    description: Directory on the host.
    type: path
    default: /usr/local/lib/brc/bpf
  files:
    description: Relative path to text content, such as built from the controller's C(bpf/) with the file lookup.
    type: dict
    required: true
  exact:
    description: Remove files under O(dest) that are not in O(files).
    type: bool
    default: true
  mode:
    description: Permissions of the files written.
    type: raw
    default: "0644"
attributes:
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Ship bpf/
  brc_sources:
    dest: /usr/local/lib/brc/bpf
    files: "{{ dict(paths | map('basename') | zip(query('ansible.builtin.file', *paths, rstrip=false))) }}"
  vars:
    paths: "{{ query('ansible.builtin.fileglob', playbook_dir ~ '/bpf/*') | sort }}"
"""

RETURN = r"""
written:
  description: Files written (new or changed), relative to O(dest).
  returned: always
  type: list
  elements: str
removed:
  description: Files removed because they are not in O(files).
  returned: always
  type: list
  elements: str
source_hash:
  description:
    - sha256 of the shipped build inputs (the C(.c) and C(.h) files; documents change nothing), as
      M(brc_program) computes it before adding its cflags and the command table.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import source_digest, source_files


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", default="/usr/local/lib/brc/bpf"),
            files=dict(type="dict", required=True),
            exact=dict(type="bool", default=True),
            mode=dict(type="raw", default="0644"),
        ),
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    files = {}
    for rel, content in module.params["files"].items():
        norm = os.path.normpath(rel)
        if norm.startswith("..") or os.path.isabs(norm):
            module.fail_json(msg="file name %r leaves dest; use paths relative to the sources directory" % rel)
        files[norm] = (content if isinstance(content, str) else str(content)).encode()
    present = source_files(dest) if os.path.isdir(dest) else []
    written = []
    for rel in sorted(files):
        path = os.path.join(dest, rel)
        try:
            with open(path, "rb") as f:
                same = f.read() == files[rel]
        except IOError:
            same = False
        if not same:
            written.append(rel)
    removed = sorted(set(present) - set(files)) if module.params["exact"] else []
    # brc_common.source_hash over the files as they will be.
    final = dict(files)
    if not module.params["exact"]:
        for rel in present:
            if rel not in final:
                with open(os.path.join(dest, rel), "rb") as f:
                    final[rel] = f.read()
    changed = bool(written or removed)
    result = dict(changed=changed, written=written, removed=removed, source_hash=source_digest(final), dest=dest,
                  diff={"before": {"files": sorted(present)}, "after": {"files": sorted(final)}})
    if changed and not module.check_mode:
        for rel in written:
            path = os.path.join(dest, rel)
            d = os.path.dirname(path)
            if not os.path.isdir(d):
                os.makedirs(d, 0o755)
            tmp = path + ".brc-tmp"
            with open(tmp, "wb") as f:
                f.write(files[rel])
            os.rename(tmp, path)
        for rel in removed:
            os.unlink(os.path.join(dest, rel))
    if os.path.isdir(dest) and not module.check_mode:
        for rel in files:
            changed = module.set_mode_if_different(os.path.join(dest, rel), module.params["mode"], changed)
        result["changed"] = changed
    module.exit_json(**result)


if __name__ == "__main__":
    main()
