#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_agent
short_description: Run BRC's host agent (brc-agent) for one interface on a Redis host
description:
  - The host agent tells BRC what Redis changed (Redis's invalidation feed) and keeps the heartbeat the
    programs require before every answer (C(struct brc_agent) in C(brc_contract.h)). This module makes
    its ACL user, starts it as a daemon and checks that it beats; or, with O(state=absent), stops it,
    hands the interface back to the programs alone and removes its user.
  - "O(state=present): Redis's user O(user) is made exactly C(reset on ><password> <AGENT_GRANTS>)
    (C(AGENT_GRANTS) in C(module_utils/brc_agent.py)), compared with what Redis renders for the same
    rules, and persisted: C(ACL SAVE) when Redis has an C(aclfile), else C(CONFIG REWRITE). When neither
    works the module warns: a Redis restart loses the user, the agent can then not log in and BRC stops
    answering (fail closed)."
  - The daemon runs C(/usr/bin/python3 <lib_dir>/brc-agent) under the supervisor O(supervisor) picks.
  - "V(start-stop-daemon): started with O(pidfile); its fingerprint (the files in O(lib_dir), its
    arguments and the password) is kept next to the pidfile (C(<pidfile without .pid>.state))."
  - "V(systemd): the unit C(brc-agent@<interface>.service), a file of its own per interface in
    C(/etc/systemd/system) holding this call's options (C(--pin-dir <pin_root>/%i), never the password),
    with C(Restart=always) (a crashed agent, which stops answers, is brought back within 2 s), ordered
    after C(network.target) and C(redis-server.service) (no dependency on it), skipped while the pins are
    missing (after a reboot, until the next deploy), modest hardening that keeps bpf(2) and the pins
    usable. Written (and C(systemctl daemon-reload)) only when its text differs, then enabled. The
    fingerprint is kept in C(/var/lib/brc/<interface>/agent.json), so an agent systemd started at boot
    is not restarted for nothing. stdout and stderr go to the journal, the agent's own log to O(log)."
  - A live agent with the same fingerprint (and, under systemd, the same unit text) is left alone,
    anything else restarts it. An agent of the other supervisor is stopped (and its unit or pidfile
    removed) first. A start counts once the pinned C(brc_agent) map shows C(BRC_AGENT_F_ON) and a fresh
    beat from the new process (within 10 s); otherwise the agent is stopped again (under systemd the
    unit is also disabled) and the module fails with the tail of its log. Redis keeps serving
    meanwhile; BRC answers stay stopped (fail closed).
  - The password is never on a command line; the agent reads O(password_file).
  - "O(state=absent): stops the daemon under either supervisor (the unit stopped, disabled, its file
    removed, systemd reloaded), runs C(brc-agent --release) while C(BRC_AGENT_F_ON) is set (the
    programs then stand alone: leases and holds), removes the pidfile, the state files, the ACL user
    (persisted as above) and O(password_file)."
version_added: "1.2.0"
extends_documentation_fragment: [brc, brc.pins]
options:
  interface:
    description: Interface whose pins (C(<pin_root>/<interface>)) the agent serves.
    type: str
    required: true
  lib_dir:
    description:
      - Where the agent's files are, shipped there by an earlier task (the brc role does), namely
        C(brc-agent) (roles/brc/files) and the module_utils C(brc_agent.py), C(brc_adopt.py), C(brc_auth.py),
        C(brc_contract.py), C(brc_pins.py), C(brc_common.py), C(brc_facts.py).
    type: path
    default: /usr/local/lib/brc/agent
  state:
    description: Whether the agent runs (V(present)) or is removed (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  redis_host:
    description: Address of Redis, for the agent and for the module (ignored with O(redis_socket)).
    type: str
    default: 127.0.0.1
  redis_port:
    description: Redis's TCP port, the one BRC serves (also passed with O(redis_socket)).
    type: int
    default: 6379
  redis_socket:
    description: Reach Redis through this Unix socket instead of TCP.
    type: path
  user:
    description: The agent's ACL user.
    type: str
    default: brc-agent
  password:
    description:
      - Password of O(user). When empty, the one in O(password_file) is kept, or a random one is
        generated the first time and written there.
    type: str
  password_file:
    description: File holding the agent's password (mode 0600, directory created), read by the agent.
    type: path
    default: /etc/brc/agent.password
  admin_user:
    description:
      - Redis user the module creates and removes O(user) with; empty for the default user.
      - "It needs C(+acl|setuser +acl|getuser +acl|deluser +acl|save +config|get +config|rewrite +info)."
    type: str
  admin_password:
    description: Password of O(admin_user) (or of the default user); empty when it has none.
    type: str
  supervisor:
    description:
      - What runs the agent. V(auto) is V(systemd) when systemd runs (C(/run/systemd/system) exists),
        else V(start-stop-daemon).
      - V(systemd) on a host where systemd does not run fails before changing anything.
      - With O(state=absent) the agent is removed under both; this only names the one reported.
    type: str
    choices: [auto, systemd, start-stop-daemon]
    default: auto
  pidfile:
    description:
      - The daemon's pidfile under V(start-stop-daemon). Default C(/run/brc-agent-<interface>.pid).
      - Under V(systemd) only looked at to stop an agent started before the switch.
    type: path
  log:
    description: The agent's log file. Default C(/var/log/brc-agent-<interface>.log).
    type: path
attributes:
  check_mode:
    details: Reads Redis, the pidfile, the unit and the pins, reports what would change and changes nothing.
  diff_mode:
    support: none
requirements:
  - redis-py (Debian package python3-redis)
  - start-stop-daemon (Debian package dpkg), or systemd (systemctl) for O(supervisor=systemd)
notes:
  - C(changed) is true when the user, the password file or the unit was written, the unit enabled, the
    agent (re)started, or, with O(state=absent), anything was stopped, released or removed. Persisting
    the ACL does not count.
  - Fails with the fix in the message when the pins are missing (deploy BRC first), the agent's files
    are missing in O(lib_dir) (ship them first) or Redis refuses the admin credentials.
seealso:
  - module: brc_program
  - module: brc_auth
"""

EXAMPLES = r"""
- name: Run the host agent for eth0 (password generated and kept in /etc/brc/agent.password)
  brc_agent:
    interface: eth0
    admin_password: "{{ brc_redis_password }}"

- name: Through Redis's Unix socket, with a password from the vault
  brc_agent:
    interface: eth0
    redis_socket: /run/redis/redis-server.sock
    password: "{{ vault_brc_agent_password }}"
    admin_user: admin
    admin_password: "{{ vault_redis_admin_password }}"

- name: Under start-stop-daemon even where systemd runs
  brc_agent:
    interface: eth0
    supervisor: start-stop-daemon

- name: Remove the agent (the programs stand alone again)
  brc_agent:
    interface: eth0
    state: absent
"""

RETURN = r"""
pid:
  description: The agent's process id (null when not running, and with O(state=absent)).
  returned: always
  type: int
  sample: 4242
started:
  description: Whether the agent was (re)started (in check mode, would be).
  returned: always
  type: bool
  sample: true
user_changed:
  description: Whether the ACL user was created, rewritten or (O(state=absent)) deleted.
  returned: always
  type: bool
  sample: false
user_persisted:
  description:
    - Whether the user's state was saved for a Redis restart (ACL SAVE or CONFIG REWRITE).
    - Null when there was nothing to save (O(state=absent) without the user, or check mode before the first deploy).
  returned: always
  type: bool
  sample: true
password_changed:
  description: Whether O(password_file) was (or would be) written.
  returned: O(state=present)
  type: bool
  sample: false
beating:
  description: Whether the agent beats (C(BRC_AGENT_F_ON) and a heartbeat younger than C(BRC_AGENT_STALE_NS)).
  returned: always
  type: bool
  sample: true
agent:
  description:
    - The pinned C(brc_agent) map (null without the pin), as RV(ansible_facts.brc.interfaces) of M(brc_facts) shows it.
    - C(in_charge) is C(BRC_AGENT_F_ON); C(answering) means in charge with a heartbeat younger than C(BRC_AGENT_STALE_NS).
    - C(flushes_by_reason) counts the agent's flushes (C(feed_flushes) in all) by reason, every reason of
      C(BRC_AGENT_FLUSH_REASONS) in C(brc_contract.h) (zeros included), e.g. C(restart), C(role), C(loading),
      C(redis_down), C(agent_stop).
  returned: always
  type: dict
  sample: {"in_charge": true, "answering": true, "beat_age_ms": 42.1, "flags": 1, "pid": 4242, "feed_keys": 17,
           "feed_flushes": 2, "feed_lag_ns": 81234, "touched_keys": 0,
           "flushes_by_reason": {"other": 0, "agent_start": 1, "resync": 1, "restart": 0, "role": 0, "loading": 0}}
stopped:
  description: Whether a running agent was stopped.
  returned: O(state=absent)
  type: bool
  sample: true
released:
  description: Whether C(brc-agent --release) handed the interface back to the programs.
  returned: O(state=absent)
  type: bool
  sample: true
log:
  description: The agent's log file.
  returned: always
  type: str
  sample: /var/log/brc-agent-eth0.log
pidfile:
  description: The daemon's pidfile; null under systemd.
  returned: always
  type: str
  sample: /run/brc-agent-eth0.pid
supervisor:
  description: The supervisor used (O(supervisor) with V(auto) resolved).
  returned: always
  type: str
  sample: systemd
unit:
  description: The unit file under systemd (with O(state=absent), the one removed or that would be); null otherwise.
  returned: always
  type: str
  sample: /etc/systemd/system/brc-agent@eth0.service
password_file:
  description: The password file.
  returned: always
  type: str
  sample: /etc/brc/agent.password
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail, require
from ansible.module_utils import brc_agent_ctl, brc_discover


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            lib_dir=dict(type="path", default=brc_agent_ctl.DEFAULT_LIB_DIR),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            redis_host=dict(type="str", default="127.0.0.1"),
            redis_port=dict(type="int", default=6379),
            redis_socket=dict(type="path"),
            user=dict(type="str", default=brc_agent_ctl.DEFAULT_USER),
            password=dict(type="str", no_log=True),
            password_file=dict(type="path", default=brc_agent_ctl.DEFAULT_PASSWORD_FILE, no_log=False),
            admin_user=dict(type="str"),
            admin_password=dict(type="str", no_log=True),
            supervisor=dict(type="str", choices=list(brc_agent_ctl.SUPERVISORS), default="auto"),
            pidfile=dict(type="path"),
            log=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        brc_discover.check_interface_name(p["interface"])
        brc_discover.check_port("redis_port", p["redis_port"])
        for opt, example in (("lib_dir", brc_agent_ctl.DEFAULT_LIB_DIR),
                             ("password_file", brc_agent_ctl.DEFAULT_PASSWORD_FILE), ("redis_socket", "/run/redis/redis-server.sock"), ("pidfile", "/run/brc-agent-eth0.pid"),
                             ("log", "/var/log/brc-agent-eth0.log"), ("pin_root", "/sys/fs/bpf/brc"),
                             ("src_dir", "/usr/local/lib/brc/bpf")):
            if p[opt] is not None:
                brc_discover.check_absolute(opt, p[opt], example)
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    require(module, "redis", "to manage the agent's ACL user")
    args = dict((k, p[k]) for k in ("interface", "pin_root", "src_dir", "lib_dir", "redis_host", "redis_port",
                                    "redis_socket", "user", "password_file", "admin_user", "admin_password",
                                    "pidfile", "log", "supervisor"))
    try:
        if p["state"] == "present":
            res = brc_agent_ctl.present(password=p["password"] or None, check_mode=module.check_mode, **args)
        else:
            res = brc_agent_ctl.absent(check_mode=module.check_mode, **args)
    except BrcError as e:
        fail(module, e)
    for warning in res.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**res)


if __name__ == "__main__":
    main()
