# -*- coding: utf-8 -*-
# Per host, per task timing for bench/fleet.py: one JSON line per finished task and host
# (start, duration, status, changed, action), plus brc_program's build timings. Enabled by
# bench/fleet.py with ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins,
# ANSIBLE_CALLBACKS_ENABLED=brc_timing and BRC_TIMING_LOG=<file>; stdout stays the default.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: brc_timing
type: aggregate
short_description: per host task durations as JSON lines (bench/fleet.py)
description:
  - Writes one JSON line per finished task and host to the file named by BRC_TIMING_LOG.
requirements:
  - enabled in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "brc_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._path = os.environ.get("BRC_TIMING_LOG")
        self._out = open(self._path, "a") if self._path else None
        self._starts = {}

    def _key(self, host, task):
        return (host.get_name(), task._uuid)

    def v2_runner_on_start(self, host, task):
        self._starts[self._key(host, task)] = time.time()

    def _done(self, result, status):
        if self._out is None:
            return
        now = time.time()
        host, task = result._host, result._task
        start = self._starts.pop(self._key(host, task), None)
        r = result._result or {}
        rec = {"host": host.get_name(), "task": task.get_name(), "action": task.action,
               "status": status, "changed": bool(r.get("changed")),
               "start": start, "end": now, "duration": (now - start) if start else None}
        if isinstance(r.get("timings"), dict) and task.action.endswith("brc_program"):
            rec["timings"] = r["timings"]
        if task.action.endswith("brc_facts"):
            bcc = (((r.get("ansible_facts") or {}).get("brc") or {}).get("capabilities") or {}).get("bcc") or {}
            if "probe" in bcc:
                rec["bcc_probe"] = bcc["probe"]
        self._out.write(json.dumps(rec) + "\n")
        self._out.flush()

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._done(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._done(result, "unreachable")
