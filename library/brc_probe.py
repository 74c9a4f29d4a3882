#!/usr/bin/python
# -*- coding: utf-8 -*-
# Controller-side correctness probe for a Redis host behind BRC.
# Run it with delegate_to: localhost so that its traffic crosses the host's
# interface (and the BRC programs on it) like a real client's would.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_probe
short_description: Check that Redis behind BRC answers correctly, from the outside
description:
  - Opens fresh TCP connections to a Redis server and runs SET/GET/DEL round trips
    with random binary values, including repeated GETs that a warm cache should
    answer and an overwrite followed by a GET that must see the new value.
  - Every reply is compared with what Redis must answer; wrong replies, protocol
    errors and timeouts are reported with the command and the expected value.
  - Meant to run on the controller (with C(delegate_to) set to C(localhost)) so that the probe
    traffic passes through the BRC programs on the host's interface. Flows that
    existed before a program was attached are never answered by BRC, so every
    round uses a new connection.
  - Changes nothing on managed hosts; the probe keys it writes are deleted again.
    Supports check mode (the probe still runs; it is read-and-restore traffic).
options:
  host:
    description: Address of the Redis server (the host's interface address).
    type: str
    required: true
  port:
    description: Redis TCP port.
    type: int
    default: 6379
  password:
    description: Password for AUTH, when Redis requires it.
    type: str
  rounds:
    description:
      - Number of probe rounds, each on its own connection. C(0) only checks
        that Redis answers PING.
    type: int
    default: 20
  max_value_len:
    description: Largest random value written (bytes). The default is about the largest value BRC answers at MTU 1500 (one segment).
    type: int
    default: 1400
  timeout:
    description: Seconds to wait for any single reply before calling it a stall.
    type: float
    default: 2.0
  max_errors:
    description:
      - Stop after this many connection errors or stalls (wrong replies never stop
        the probe early). Keeps a probe of a Redis that stopped answering short.
    type: int
    default: 3
  key_prefix:
    description: Prefix of the probe keys; each key also carries a random part.
    type: str
    default: "brc:probe:"
  strict:
    description:
      - Fail the task when any problem was found. With C(false) the result is
        returned for a gate to judge.
    type: bool
    default: true
extends_documentation_fragment: [brc]
"""

EXAMPLES = r"""
- name: Probe Redis through the host's interface
  brc_probe:
    host: "{{ ansible_host }}"
    port: 6379
    rounds: 20
  delegate_to: localhost

- name: Only check that Redis answers
  brc_probe:
    host: 10.77.0.11
    rounds: 0
  delegate_to: localhost
"""

RETURN = r"""
ok:
  description: No wrong reply, no error, no stall.
  type: bool
  returned: always
ops:
  description: Commands sent and checked.
  type: int
  returned: always
problems:
  description: One line per wrong reply, protocol error or stall (first 20).
  type: list
  elements: str
  returned: always
wrong:
  description: Number of replies that differed from what Redis must answer.
  type: int
  returned: always
errors:
  description: Number of connection errors, protocol errors and stalls.
  type: int
  returned: always
latency:
  description: Round-trip time of single commands, microseconds.
  type: dict
  returned: always
  sample: {"count": 120, "p50_us": 95.0, "p90_us": 140.0, "p99_us": 310.0, "max_us": 420.0}
"""

import os
import random
import time

from ansible.module_utils.basic import AnsibleModule
try:
    from ansible.module_utils.brc_math import sample_percentile
    from ansible.module_utils.brc_resp import RedisError, RespConnection, RespError, Stall
except ImportError:     # run as a plain script from the repository: its module_utils/
    import ansible.module_utils
    ansible.module_utils.__path__.append(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils"))
    from ansible.module_utils.brc_math import sample_percentile
    from ansible.module_utils.brc_resp import RedisError, RespConnection, RespError, Stall


class ProbeError(Exception):
    """A stall, a closed connection or a reply that is not RESP."""


class Conn(RespConnection):
    """The shared RESP client, each call timed; what ends the connection is a ProbeError."""

    def call(self, *args):
        """Send one command, return (reply, seconds)."""
        start = time.monotonic()
        try:
            reply = RespConnection.call(self, *args)
        except Stall as e:
            raise ProbeError("stall: %s" % e)
        except (RespError, OSError) as e:
            raise ProbeError("connection error: %s" % e)
        return reply, time.monotonic() - start


def short(value):
    if value is None:
        return "nil"
    if isinstance(value, RedisError):
        return "error %r" % str(value)
    if isinstance(value, bytes):
        text = repr(value[:24])
        return text + ("...(%d bytes)" % len(value) if len(value) > 24 else "")
    return repr(value)


class Probe:
    def __init__(self, host, port, password, timeout, rng):
        self.host, self.port, self.password, self.timeout = host, port, password, timeout
        self.rng = rng
        self.ops = 0
        self.wrong = 0
        self.errors = 0
        self.problems = []
        self.lat = []

    def note(self, kind, text):
        if kind == "wrong":
            self.wrong += 1
        else:
            self.errors += 1
        if len(self.problems) < 20:
            self.problems.append(text)

    def connect(self):
        conn = Conn(self.host, self.port, self.timeout)
        if self.password:
            reply, _t = conn.call("AUTH", self.password)
            if reply != "OK":
                conn.close()
                raise ProbeError("AUTH refused: %s" % (reply,))
        return conn

    def expect(self, conn, args, want, label):
        reply, took = conn.call(*args)
        self.ops += 1
        self.lat.append(took * 1e6)
        if reply != want:
            self.note("wrong", "%s: %s returned %s, expected %s" % (
                label, args[0].decode() if isinstance(args[0], bytes) else args[0], short(reply), short(want)))
            return False
        return True

    def value(self, max_len):
        n = self.rng.randint(1, max(1, max_len))
        # Binary values with CRLF and '$' inside exercise the parser on both sides.
        raw = bytearray(self.rng.getrandbits(8) for _i in range(n))
        if n > 4:
            raw[n // 2:n // 2 + 2] = b"\r\n"
        return bytes(raw)

    def ping(self):
        try:
            conn = self.connect()
        except (OSError, ProbeError) as e:
            self.note("error", "connect %s:%d: %s" % (self.host, self.port, e))
            return
        try:
            self.expect(conn, (b"PING",), "PONG", "ping")
        except ProbeError as e:
            self.note("error", "ping: %s" % e)
        finally:
            conn.close()

    def round(self, n, prefix, max_len):
        key = ("%s%s:%d" % (prefix, os.urandom(6).hex(), n)).encode()
        v1, v2 = self.value(max_len), self.value(max_len)
        try:
            conn = self.connect()
        except (OSError, ProbeError) as e:
            self.note("error", "round %d: connect %s:%d: %s" % (n, self.host, self.port, e))
            return
        try:
            steps = [
                ((b"SET", key, v1), "OK", "set"),
                ((b"GET", key), v1, "first get"),
                ((b"GET", key), v1, "repeated get (cacheable)"),
                ((b"GET", key), v1, "repeated get (cacheable)"),
                ((b"SET", key, v2), "OK", "overwrite"),
                ((b"GET", key), v2, "get after overwrite"),
                ((b"GET", key), v2, "repeated get after overwrite"),
                ((b"DEL", key), 1, "del"),
                ((b"GET", key), None, "get after del"),
            ]
            for args, want, label in steps:
                self.expect(conn, args, want, "round %d %s key %s" % (n, label, key.decode()))
        except ProbeError as e:
            self.note("error", "round %d: %s" % (n, e))
        finally:
            conn.close()
        # A second connection must see the same data as the first one did.
        try:
            conn = self.connect()
            try:
                self.expect(conn, (b"GET", key), None, "round %d new connection get after del" % n)
            finally:
                conn.close()
        except (OSError, ProbeError) as e:
            self.note("error", "round %d: second connection: %s" % (n, e))

    def result(self):
        lat = sorted(self.lat)
        latency = {"count": len(lat)}
        for p in (50, 90, 99):
            v = sample_percentile(lat, p)
            latency["p%d_us" % p] = None if v is None else round(v, 1)
        latency["max_us"] = round(lat[-1], 1) if lat else None
        return {
            "ok": self.wrong == 0 and self.errors == 0,
            "ops": self.ops,
            "wrong": self.wrong,
            "errors": self.errors,
            "problems": self.problems,
            "latency": latency,
        }


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type="str", required=True),
            port=dict(type="int", default=6379),
            password=dict(type="str", no_log=True),
            rounds=dict(type="int", default=20),
            max_value_len=dict(type="int", default=1400),
            timeout=dict(type="float", default=2.0),
            key_prefix=dict(type="str", default="brc:probe:"),
            max_errors=dict(type="int", default=3),
            strict=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    probe = Probe(p["host"], p["port"], p["password"], p["timeout"], random.Random(os.urandom(16)))
    probe.ping()
    if probe.errors == 0:
        for n in range(p["rounds"]):
            if probe.errors >= p["max_errors"]:
                probe.problems.append("stopped after %d errors" % probe.errors)
                break
            probe.round(n, p["key_prefix"], p["max_value_len"])
    result = probe.result()
    result["target"] = "%s:%d" % (p["host"], p["port"])
    if p["strict"] and not result["ok"]:
        module.fail_json(msg="Redis at %s failed the probe: %d wrong replies, %d errors; first: %s" % (
            result["target"], result["wrong"], result["errors"],
            "; ".join(result["problems"][:3])), **result)
    module.exit_json(changed=False, **result)


def main():
    run_module()


if __name__ == "__main__":
    main()
