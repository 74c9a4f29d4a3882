#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Dead-man switch for a BRC mode change (the iptables_state pattern).

The controller, before it changes a host's live config:
  brc_guard.py --marker <file> snapshot <pin>/brc_config
      saves the current config map value (raw bytes, via bpftool) in <file>;
  brc_guard.py --marker <file> watch --timeout N      (started async, poll 0)
      waits; if <file> still exists after N seconds, the controller never came
      back to confirm the host: the saved value is written back, <file> is
      renamed to <file>.reverted and a line is logged to <file>.log.
After the change the controller confirms the host by deleting <file>
(brc_guard.py --marker <file> confirm), which ends the watcher without touching anything.

Usage: brc_guard.py --marker FILE {snapshot|watch|confirm|restore} [--map PIN] [--timeout S]
The playbooks run it as `python3 -c <this file> ...`, so nothing is installed on hosts.
Uses only the standard library and bpftool, so it runs on any host BRC runs on.
"""

import argparse
import json
import os
import subprocess
import sys
import time

KEY0 = ["hex", "00", "00", "00", "00"]


def log(marker, text):
    with open(marker + ".log", "a") as f:
        f.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), text))


def lookup(pin):
    out = subprocess.check_output(["bpftool", "-j", "map", "lookup", "pinned", pin, "key"] + KEY0)
    data = json.loads(out.decode())
    if isinstance(data, list):
        data = data[0]
    return [b[2:] if b.startswith("0x") else b for b in data["value"]]


def update(pin, value_hex):
    subprocess.check_call(["bpftool", "map", "update", "pinned", pin, "key"] + KEY0 + ["value", "hex"] + value_hex)


def snapshot(args):
    value = lookup(args.map)
    if not os.path.isdir(os.path.dirname(args.marker)):
        os.makedirs(os.path.dirname(args.marker), 0o755)
    tmp = args.marker + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"map": args.map, "value": value, "armed_at": time.time(),
                   "token": os.urandom(8).hex()}, f)
    os.rename(tmp, args.marker)
    for stale in (args.marker + ".reverted",):
        if os.path.exists(stale):
            os.unlink(stale)
    log(args.marker, "armed: saved %s" % " ".join(value))
    print(json.dumps({"armed": True, "value": value}))
    return 0


def restore_from(marker, reason):
    with open(marker) as f:
        saved = json.load(f)
    update(saved["map"], saved["value"])
    os.rename(marker, marker + ".reverted")
    log(marker, "reverted (%s): restored %s" % (reason, " ".join(saved["value"])))


def token_of(marker):
    try:
        with open(marker) as f:
            return json.load(f).get("token")
    except (IOError, OSError, ValueError):
        return None


def watch(args):
    # The watcher belongs to the snapshot it found; a newer snapshot (another rollout
    # armed the switch again) has its own watcher, so this one must not act on it.
    mine = token_of(args.marker)
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        if token_of(args.marker) != mine or mine is None:
            print(json.dumps({"confirmed": True}))
            return 0
        time.sleep(0.5)
    if token_of(args.marker) != mine:
        print(json.dumps({"confirmed": True}))
        return 0
    restore_from(args.marker, "no confirmation from the controller within %ss" % args.timeout)
    print(json.dumps({"confirmed": False, "reverted": True}))
    return 0


def confirm(args):
    if os.path.exists(args.marker):
        os.unlink(args.marker)
        log(args.marker, "confirmed by the controller")
        print(json.dumps({"confirmed": True, "changed": True}))
    else:
        reverted = os.path.exists(args.marker + ".reverted")
        print(json.dumps({"confirmed": False, "changed": False, "reverted": reverted}))
        if reverted:
            sys.stderr.write("the host already reverted by itself (see %s.log)\n" % args.marker)
            return 3
    return 0


def restore(args):
    if os.path.exists(args.marker):
        restore_from(args.marker, "asked by the controller")
        print(json.dumps({"reverted": True}))
    else:
        print(json.dumps({"reverted": False}))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="brc_guard", description="dead-man switch for a BRC mode change")
    p.add_argument("--marker", required=True)
    p.add_argument("action", choices=["snapshot", "watch", "confirm", "restore"])
    p.add_argument("--map")
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args(argv)
    if args.action == "snapshot" and not args.map:
        p.error("snapshot needs --map")
    return {"snapshot": snapshot, "watch": watch, "confirm": confirm, "restore": restore}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
