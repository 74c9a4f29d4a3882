#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_reconnect
short_description: Reconnect, in small paced batches, the Redis clients BRC cannot adopt
description:
  - BRC follows a connection only from its SYN on. Connections a client pool opened before the programs
    were attached are never answered in the kernel (their traffic is counted as C(segments_untracked))
    until the client reconnects. This module closes them with C(CLIENT KILL ID <id>), O(batch_size) at a
    time with O(pause) seconds between batches, so that their clients reconnect through BRC. Clients with
    a connection pool (redis-py, Jedis, Lettuce, go-redis ...) reconnect on their next command.
  - Only TCP clients that reached Redis on O(redis_port) over an address of O(interface), from an
    address that is not the host's own, that are absent from BRC's flow tables (C(brc_flows),
    C(brc_transient)) and older than the attached programs (CLIENT LIST C(age) greater than the seconds
    since the later of the ingress and egress programs was loaded).
  - Never closed, each counted under its reason in C(left) - C(self) (this module's connection),
    C(unix), C(replication) (flags S or M), C(other_port), C(loopback), C(other_address), C(local) (from one
    of the host's own addresses; that traffic goes over lo), C(kept_user) (O(keep_users), the host agent's
    user), C(multi) (a transaction open), C(blocked), C(monitor) and C(pubsub) (unless O(include_monitor),
    O(include_pubsub)), C(tracked) (BRC follows it already), C(after_attach) (younger than the programs
    yet not followed, e.g. the flow table was full, so it would come back unfollowed), C(gone) (closed before
    its batch) and C(over_limit) (beyond O(max_clients)).
  - Each batch reads CLIENT LIST again and judges its clients again (one that opened a MULTI meanwhile is
    left). Client ids are never reused by a Redis process, so a kill cannot hit another client.
  - In check mode, reports what it would close and closes nothing.
  - Fails, naming the fix, when Redis is unreachable, refuses the credentials, denies the toolkit's user
    C(CLIENT LIST), C(CLIENT ID) or C(CLIENT KILL), or has CLIENT renamed; when BRC is not attached on
    O(interface) or its flow table is not pinned. The counts of a run stopped midway are in the result.
version_added: "1.2.0"
extends_documentation_fragment: [brc, brc.pins, brc.redis]
options:
  interface:
    description: The BRC interface (the one carrying the address clients reach Redis at).
    type: str
    required: true
  redis_port:
    description: Redis's TCP port, the one BRC watches. Only clients connected to it are closed.
  redis_user:
    description:
      - ACL user the module logs in as (empty - the default user). It needs C(+client|list +client|kill
        +client|id).
  batch_size:
    description: Clients closed per batch.
    type: int
    default: 10
  pause:
    description: Seconds between two batches.
    type: float
    default: 1.0
  max_clients:
    description: At most this many clients closed in one run; the rest are counted as C(over_limit).
    type: int
    default: 1000
  keep_users:
    description: ACL users whose connections are never closed (the host agent's, C(brc_agent_user)).
    type: list
    elements: str
    default: [brc-agent]
  include_pubsub:
    description: Also close subscribed clients (a subscriber must subscribe again after reconnecting).
    type: bool
    default: false
  include_monitor:
    description: Also close MONITOR clients.
    type: bool
    default: false
  timeout:
    description: Seconds to wait for Redis on each command.
    type: float
    default: 5.0
attributes:
  diff_mode:
    support: none
notes:
  - Run it after the host is in serve mode, so that the clients reconnect to a serving host; role
    C(brc_rollout) does with C(brc_rollout_reconnect=true).
  - Clients that open their connections again through another address (a proxy, NAT) than BRC sees are not
    told apart; only the 4-tuple Redis reports is compared with BRC's flow tables.
"""

EXAMPLES = r"""
- name: What would be reconnected
  brc_reconnect:
    interface: eth0
  check_mode: true
  register: plan

- name: Reconnect the clients opened before BRC, 5 at a time, 2 s apart
  brc_reconnect:
    interface: eth0
    batch_size: 5
    pause: 2
    max_clients: 200
"""

RETURN = r"""
clients:
  description: Clients in CLIENT LIST when the run began.
  returned: always
  type: int
  sample: 14
candidates:
  description: Clients that qualified (before O(max_clients)).
  returned: always
  type: int
  sample: 10
killed:
  description: Clients closed (C(CLIENT KILL ID) answered 1). 0 in check mode.
  returned: always
  type: int
  sample: 10
would_kill:
  description: In check mode, the clients that would be closed; 0 otherwise.
  returned: always
  type: int
  sample: 0
kill_failed:
  description:
    - Clients whose C(CLIENT KILL ID) answered an error (C(errors) says which). Not named C(failed), which
      Ansible would take for a failed task.
  returned: always
  type: int
  sample: 0
batches:
  description: Batches sent (planned, in check mode).
  returned: always
  type: int
  sample: 2
left:
  description: Clients left open, per reason (every reason, zeros included; see the description). Not named C(skipped), which Ansible would take for a skipped task.
  returned: always
  type: dict
  sample: {"replication": 1, "loopback": 2, "tracked": 3, "pubsub": 0, "multi": 0}
left_definitions:
  description: What each reason of C(left) means.
  returned: always
  type: dict
candidate_ids:
  description: Redis client ids of the candidates, oldest first.
  returned: always
  type: list
  elements: int
killed_ids:
  description: Redis client ids closed.
  returned: always
  type: list
  elements: int
kill_failed_ids:
  description: Redis client ids whose kill failed.
  returned: always
  type: list
  elements: int
errors:
  description: One line per failed kill.
  returned: always
  type: list
  elements: str
attached_s:
  description: Seconds since the later of BRC's attached programs was loaded.
  returned: always
  type: float
  sample: 312.5
summary:
  description: One line for the rollout summary.
  returned: always
  type: str
  sample: "reconnected 10 of 14 clients in 2 batches, 0 failed; left: loopback 2, replication 1, self 1"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.brc_common import BrcError, common_spec, fail, redis_spec
from ansible.module_utils import brc_facts, brc_maps, brc_pins, brc_reconnect


def main():
    module = AnsibleModule(
        argument_spec=dict(
            common_spec(interface_required=True),
            **redis_spec(),
            batch_size=dict(type="int", default=10),
            pause=dict(type="float", default=1.0),
            max_clients=dict(type="int", default=1000),
            keep_users=dict(type="list", elements="str", default=["brc-agent"]),
            include_pubsub=dict(type="bool", default=False),
            include_monitor=dict(type="bool", default=False),
            timeout=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    iface = p["interface"]
    if p["batch_size"] < 1 or p["max_clients"] < 0 or p["pause"] < 0:
        module.fail_json(msg="batch_size must be >= 1, max_clients and pause >= 0 (got %d, %d, %s)"
                         % (p["batch_size"], p["max_clients"], p["pause"]))
    result = dict(brc_reconnect.empty_result(), interface=iface, changed=False,
                  left_definitions=brc_reconnect.REASON_DOCS)
    flows = call = None
    try:
        contract = brc_maps.contract_for(p["src_dir"])
        addrs = brc_facts.interface_addresses()
        if iface not in addrs:
            raise BrcError("interface %s has no address (or does not exist)" % iface,
                           "set brc_interface to the interface clients reach Redis on")
        brc_addrs = addrs[iface]
        local = [a for lst in addrs.values() for a in lst]
        since, _progs = brc_reconnect.seconds_since_attach(iface)
        result["attached_s"] = round(since, 3)
        flows = brc_reconnect.FlowTables(brc_pins.pin_dir(p["pin_root"], iface), contract)
        call = brc_reconnect.connect(p["redis_host"], p["redis_port"], p["redis_unix_socket"],
                                     p["redis_user"], p["redis_password"], p["timeout"])
        judge = brc_reconnect.Judge(p["redis_port"], brc_addrs, local, flows, since,
                                    self_id=call("CLIENT", "ID"), keep_users=p["keep_users"],
                                    include_pubsub=p["include_pubsub"], include_monitor=p["include_monitor"])
        result.update(brc_reconnect.run(call, judge, p["batch_size"], p["pause"], p["max_clients"],
                                        module.check_mode))
    except BrcError as e:
        partial = e.details.pop("result", None)
        if partial:
            result.update(partial)
            result["changed"] = partial["killed"] > 0
        result.pop("summary", None)
        fail(module, e, **result)
    finally:
        if flows is not None:
            flows.close()
        if call is not None:
            try:
                call.client.close()
            except Exception:  # pylint: disable=broad-except
                pass
    result["changed"] = (result["would_kill"] if module.check_mode else result["killed"]) > 0
    result["summary"] = brc_reconnect.summary(result, module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
