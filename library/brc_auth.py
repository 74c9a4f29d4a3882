#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_auth
short_description: Load Redis's users and rights into BRC
description:
  - Serve mode answers a GET in the kernel only for a connection whose ACL user Redis would let GET
    every key. This module asks Redis who those users are and loads them into the pinned maps
    C(brc_users) and C(brc_server) of each interface, which the programs read.
  - Per user, from Redis itself, never guessed. C(read_all) means that some selector of the user (the
    root one, or one of its C(selectors)) reads every key (V(~*), V(%R~*), V(%RW~*), V(allkeys)) and
    its command rules, read left to right, allow GET (GET's ACL categories come from
    C(COMMAND INFO GET)); then C(ACL DRYRUN <user> GET <random key>) must answer OK. A rule the
    module does not understand means no. C(open) means the C(default) user is V(on) and V(nopass), so
    connections are it without AUTH. Users whose name is longer than C(BRC_USER_MAX) bytes are left
    out and never answered for.
  - The load follows the loader protocol of C(struct brc_server) in C(brc_contract.h) in O(src_dir).
    The programs stop answering, the module waits for auth commands in flight, reads Redis, fills
    C(brc_users), and lets the programs answer again only if no command that may change who can read
    what completed meanwhile (else it starts again, a bounded number of times). Any such command that
    completes later stops answers until the next load. When a client reset its connection with such a
    command unanswered, Redis may still run it for a while (brc_max_age, 30 s without one), so the module
    waits that out (up to 35 s) before reading Redis.
  - Fails closed, with the fix in the message, on anything unexpected, such as an unreachable Redis,
    refused credentials, a Redis without C(ACL DRYRUN) (before 7.0), a toolkit user without the rights,
    or more than one Redis process listening on O(redis_port).
  - Also reads Redis's C(timeout) with C(CONFIG GET). Served connections send Redis a request at least every
    half of it so that Redis does not close them as idle.
version_added: "1.1.0"
extends_documentation_fragment: [brc, brc.pins, brc.redis]
options:
  interface:
    description:
      - Interface whose pins to load.
      - When omitted, every interface with BRC pins under O(pin_root); when there is none, the module
        says so and reports no change.
    type: str
  redis_port:
    description:
      - Redis's TCP port, the one BRC watches. The Redis reached must report this port (C(CONFIG GET port)),
        also through O(redis_unix_socket).
  redis_user:
    description:
      - ACL user the module authenticates as; empty for the default user.
      - "It needs C(+acl|getuser +acl|users +acl|dryrun +config|get +command|info)."
attributes:
  check_mode:
    details: Check mode reads Redis and the maps, reports what would change and writes nothing.
  diff_mode:
    support: full
notes:
  - C(changed) is true only when the users loaded, or the epoch or idle interval in C(brc_server), differ
    from before; the load time and the temporary stop during the load do not count.
seealso:
  - module: brc_program
  - module: brc_config
"""

EXAMPLES = r"""
- name: Load Redis's users into BRC on every interface with pins
  brc_auth:
    redis_password: "{{ brc_redis_password }}"
  no_log: true

- name: Load through a Unix socket with a dedicated toolkit user
  brc_auth:
    interface: eth0
    redis_unix_socket: /run/redis/redis-server.sock
    redis_port: 6379
    redis_user: brc
    redis_password: "{{ vault_brc_password }}"
  no_log: true
"""

RETURN = r"""
users:
  description:
    - Every user Redis has (names up to C(BRC_USER_MAX) bytes), as loaded (or as would be, in check mode).
    - C(why) says which selector and rule decided C(read_all), then C(mget) (a user who reads every key and may MGET every key,
      whose MGETs can be answered in the kernel).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "default", "read_all": true, "open": false, "mget": true,
            "why": "root: every key readable, GET allowed (+@all); MGET: root: every key readable, MGET allowed (+@all)"},
           {"name": "app", "read_all": false, "open": false, "mget": false, "why": "root: no key rule reads every key"}]
auth_epoch:
  description: Per interface, the C(brc_global.auth_epoch) the users were loaded at (what C(brc_server.auth_epoch) now holds).
  returned: success
  type: dict
  sample: {"eth0": 3}
timeout:
  description: Redis's C(timeout) in seconds (0 = none).
  returned: success
  type: int
  sample: 0
tls_port:
  description:
    - Redis's C(tls-port) (0 = none). BRC passes its connections untouched, since they are
      encrypted, and counts them (C(tls_connections), C(tls_segments)) as never answered.
  returned: success
  type: int
  sample: 0
answering:
  description:
    - Whether the programs can answer after the load on every interface (the loaded epoch is current
      and no auth command is in flight). Serve also needs users with C(read_all).
  returned: success
  type: bool
  sample: true
interfaces:
  description: Per interface, what changed.
  returned: success
  type: dict
  sample: {"eth0": {"users_added": ["app"], "users_changed": [], "users_removed": [], "epoch_changed": true,
           "auth_epoch": 3, "idle_pass_ns": 0, "tls_port": 0, "answering": true, "attempts": 1}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail, redis_spec, require
from ansible.module_utils import brc_auth, brc_discover, brc_maps, brc_pins


def _printable(name):
    """A user name for the result: Redis names are bytes; non-UTF-8 ones show as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _user_view(flags, contract):
    c = contract.constants
    return {"read_all": bool(flags & c["BRC_USER_READ_ALL"]), "open": bool(flags & c["BRC_USER_OPEN"]),
            "mget": bool(flags & c["BRC_USER_MGET"])}


def _users_view(users, contract):
    return dict((_printable(n), _user_view(f, contract)) for n, f in sorted(users.items()))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(),
            **redis_spec()
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        brc_discover.check_pin_root(p["pin_root"], need_bpffs=False)   # no pins there: nothing to load, said plainly
        brc_discover.check_shared(p, module.check_mode, interface="pins", pin_root=False, src_dir=False)
        brc_discover.check_absolute("src_dir", p["src_dir"], "/usr/local/lib/brc/bpf")
        brc_discover.check_not_empty("redis_host", p["redis_host"],
                                     "set redis_host to the address Redis listens on (127.0.0.1 by default)")
        brc_discover.check_port("redis_port", p["redis_port"])
        brc_discover.check_unix_socket("redis_unix_socket", p["redis_unix_socket"])
        brc_discover.check_not_empty("redis_user", p["redis_user"],
                                     "set redis_user to the toolkit's ACL user, or leave it out for the default user")
    except BrcError as e:
        fail(module, e, interface=p["interface"])
    require(module, "redis", "to read Redis's ACL users")
    interfaces = [p["interface"]] if p["interface"] else brc_auth.pin_interfaces(p["pin_root"])
    if not interfaces:
        module.exit_json(changed=False, users=[], auth_epoch={}, timeout=None, answering=False, interfaces={},
                         msg="no BRC pins under %s: nothing to load (deploy BRC first)" % p["pin_root"])
    try:
        contract = brc_maps.contract_for(p["src_dir"])
    except BrcError as e:
        if module.check_mode:   # check mode before the first deploy: no sources yet
            module.exit_json(changed=True, users=[], auth_epoch={}, timeout=None, answering=False,
                             interfaces={}, msg="would load Redis's users once the programs are deployed")
        fail(module, e)

    def state():
        return brc_auth.read_state(contract, host=p["redis_host"], port=p["redis_port"],
                                   unix_socket=p["redis_unix_socket"], user=p["redis_user"],
                                   password=p["redis_password"])

    results, before, after = {}, {}, {}
    last = None
    for iface in interfaces:
        pdir = brc_pins.pin_dir(p["pin_root"], iface)
        try:
            try:
                maps = brc_auth.PinnedAuthMaps(pdir, contract)
            except BrcError as e:
                if not (module.check_mode and e.details.get("missing")):
                    raise
                # Check mode before the first deploy: brc_program would create the maps.
                last = state()
                results[iface] = {"changed": True, "users": last["users"], "reasons": last["reasons"],
                                  "timeout": last["timeout"], "auth_epoch": None, "answering": False,
                                  "users_added": sorted(last["users"]), "users_changed": [],
                                  "users_removed": [], "epoch_changed": True, "attempts": 0,
                                  "before": {"users": {}}, "after": {"users": last["users"]},
                                  "msg": "would load into the maps that brc_program creates"}
            else:
                with maps:
                    results[iface] = brc_auth.load(maps, contract, state, check_mode=module.check_mode)
                last = results[iface]
        except BrcError as e:
            done = dict((i, r["auth_epoch"]) for i, r in results.items())
            # A load that failed after stopping answers (serve_stopped) did change the maps.
            fail(module, e, interface=iface, loaded=done,
                 changed=bool(e.details.get("serve_stopped")) or any(r["changed"] for r in results.values()))
        r = results[iface]
        before[iface] = _users_view(r["before"]["users"], contract)
        after[iface] = _users_view(r["after"]["users"], contract)
        if "server" in r["before"]:
            before[iface] = dict(((f, r["before"]["server"].get(f)) for f in brc_auth.SERVER_READ_FIELDS),
                                 users=before[iface])
            after[iface] = dict(((f, r["after"]["server"].get(f)) for f in brc_auth.SERVER_READ_FIELDS),
                                users=after[iface])

    users = [dict(_user_view(f, contract), name=_printable(n), why=last["reasons"].get(n, ""))
             for n, f in sorted(last["users"].items())]
    module.exit_json(
        changed=any(r["changed"] for r in results.values()),
        users=users,
        auth_epoch=dict((i, r["auth_epoch"]) for i, r in results.items()),
        timeout=last["timeout"],
        tls_port=last.get("tls_port", 0),
        answering=all(r["answering"] for r in results.values()),
        interfaces=dict((i, {"users_added": [_printable(n) for n in r["users_added"]],
                             "users_changed": [_printable(n) for n in r["users_changed"]],
                             "users_removed": [_printable(n) for n in r["users_removed"]],
                             "epoch_changed": r["epoch_changed"],
                             "auth_epoch": r["auth_epoch"],
                             "idle_pass_ns": r["after"].get("server", {}).get("idle_pass_ns"),
                             "tls_port": r["after"].get("server", {}).get("tls_port"),
                             "answering": r["answering"], "attempts": r["attempts"]})
                        for i, r in results.items()),
        diff={"before": before, "after": after})


if __name__ == "__main__":
    main()
