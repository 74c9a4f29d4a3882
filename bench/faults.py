#!/usr/bin/env python3
"""BRC under faults: the consistency checker through loss, reordering and offload settings.

For each BRC mode (plain = not attached, observe, serve if it really answers) and each cell
of the fault matrix, runs tests/tools/checker.py from a client namespace against a real
redis-server behind BRC, and reports the checker's verdict (wrong replies, stalls) next to
BRC's counter deltas (hits, mismatches, dirty connections, resent, reset). Faults come from
lab/netfault.py: nftables loss at the client's veth, NFQUEUE reordering, offloads via
ioctl. A report, not a test: it never fails on a number, it shows what happened; the exit status
is 1 when any checker run saw a wrong reply or a stall.

Usage: bench/faults.py [--modes plain,observe,serve] [--seconds 15] [--bpf-rev HEAD]
       [--cells clean,loss,reorder,loss+reorder] [--offloads default,off]
Writes bench/results/faults-<timestamp>.json and .md.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "lab"))   # netfault: namespaces and faults

import netfault  # noqa: E402
import run as bench_run  # noqa: E402  (before --bpf-rev puts its module_utils first)

PORT = 6379
CHECKER = os.path.join(REPO, "tests", "tools", "checker.py")
SHOWN = ("hit", "resent", "reset", "would_hit", "mismatch", "miss", "fill",
         "segments_retransmitted", "replies_unmatched")


def checker(pair, seconds, connections, timeout=5.0):
    proc = pair.run(pair.client, [sys.executable, CHECKER, "--host", pair.server_ip,
                                  "--port", str(PORT), "--connections", str(connections),
                                  "--seconds", str(seconds), "--timeout", str(timeout), "--json"],
                    check=False, timeout=seconds + timeout * 6 + 60)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "errors": -1, "stalls": -1, "ops": 0, "gets": 0,
                "first_errors": ["checker printed no summary: %s" % proc.stderr[-300:]]}


def cell(pair, brc, name, offloads, args):
    faults = []
    if offloads == "off":
        for ns, dev in ((pair.client, pair.client_dev), (pair.server, pair.server_dev)):
            faults.append(netfault.Offloads(ns, dev, tx=False, rx=False, tso=False))
    if "loss" in name:
        faults.append(netfault.Loss(pair.client, args.loss, PORT, peer=pair.server_ip))
    if "reorder" in name:
        faults.append(netfault.Reorder(pair.client, PORT, fraction=args.reorder_fraction,
                                       delay_ms=args.reorder_delay_ms,
                                       max_seconds=args.seconds + 120))
    tcp = netfault.TcpDelta(pair.client, pair.server)
    entered = []
    before = brc.counters() if brc else {}
    try:
        for f in faults + [tcp]:
            f.__enter__()
            entered.append(f)
        summary = checker(pair, args.seconds, args.connections)
        fault_stats = dict((type(f).__name__, f.stats()) for f in faults
                           if not isinstance(f, netfault.Offloads))
    finally:
        for f in reversed(entered):
            try:
                f.__exit__(None, None, None)
            except Exception as e:   # keep unwinding: the rest must be removed too
                sys.stderr.write("cleanup of %s failed: %s\n" % (type(f).__name__, e))
    after = brc.counters() if brc else {}
    counters = dict((k, after[k] - before.get(k, 0)) for k in after
                    if not k.startswith("lat.") and after[k] != before.get(k, 0))
    return {"checker": summary, "faults": fault_stats, "brc": counters,
            "tcp": dict((ns.rsplit("-", 1)[1], dict((k, tcp.delta[ns].get(k, 0)) for k in
                        ("TCPOFOQueue", "RetransSegs", "InCsumErrors")))
                        for ns in tcp.delta)}


def markdown(meta, rows, notes):
    lines = ["# BRC under faults %s" % meta["timestamp"], "",
             "%d checker connections x %gs per cell; loss %.1f%% each way at the client veth; "
             "reorder: %.0f%% of data segments held %g ms; BRC at %s." % (
                 meta["connections"], meta["seconds"], meta["loss"],
                 meta["reorder_fraction"] * 100, meta["reorder_delay_ms"], meta["git"]), "",
             "| mode | faults | offloads | checker | ops | GETs | wrong | stalls | OFO (srv/cli) "
             "| retrans (srv/cli) | BRC counters |",
             "|---|---|---|---|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        c, t = r["checker"], r["tcp"]
        always = ("mismatch",) if r["mode"] != "plain" else ()     # 0 is the finding
        shown = ", ".join("%s=%d" % (k, r["brc"].get(k, 0)) for k in SHOWN
                          if k in r["brc"] or k in always)
        dirty = sum(v for k, v in r["brc"].items() if k.startswith("dirty_"))
        if dirty:
            shown += ", dirty=%d" % dirty
        lines.append("| %s | %s | %s | %s | %d | %d | %d | %d | %d/%d | %d/%d | %s |" % (
            r["mode"], r["cell"], r["offloads"], "PASS" if c["ok"] else "**FAIL**", c["ops"],
            c["gets"], c["errors"], c["stalls"], t.get("server", {}).get("TCPOFOQueue", 0),
            t.get("client", {}).get("TCPOFOQueue", 0), t.get("server", {}).get("RetransSegs", 0),
            t.get("client", {}).get("RetransSegs", 0), shown or "-"))
    lines.append("")
    for r in rows:
        if r["checker"].get("first_errors"):
            lines.append("- %s/%s/%s first errors: %s" % (r["mode"], r["cell"], r["offloads"],
                                                           "; ".join(r["checker"]["first_errors"][:3])))
    if notes:
        lines += ["", "## Skipped", ""] + ["- **%s**: %s" % kv for kv in sorted(notes.items())]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default="plain,observe,serve")
    p.add_argument("--cells", default="clean,loss,reorder")
    p.add_argument("--offloads", default="default,off")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--loss", type=float, default=2.0)
    p.add_argument("--reorder-fraction", type=float, default=0.1)
    p.add_argument("--reorder-delay-ms", type=float, default=4.0)
    p.add_argument("--bpf-rev")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root")
    tmp = None
    src = os.path.join(REPO, "bpf")
    if args.bpf_rev:
        tmp = tempfile.mkdtemp(prefix="brcfaults-src-")
        archive = subprocess.run(["git", "-C", REPO, "archive", args.bpf_rev, "bpf",
                                  "module_utils"], stdout=subprocess.PIPE, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        src = os.path.join(tmp, "bpf")
        import ansible.module_utils      # the loader of that revision, before ours
        ansible.module_utils.__path__.insert(0, os.path.join(tmp, "module_utils"))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    meta = {"timestamp": stamp, "seconds": args.seconds, "connections": args.connections,
            "loss": args.loss, "reorder_fraction": args.reorder_fraction,
            "reorder_delay_ms": args.reorder_delay_ms,
            "git": ("bpf/ at %s" % args.bpf_rev) if args.bpf_rev else bench_run.git_head()}
    rows, notes = [], {}
    modes = [m for m in args.modes.split(",") if m]
    try:
        with netfault.NetnsPair("brcf", "10.71.0") as pair:
            pair.start_redis(PORT)
            brc = None
            if set(modes) - {"plain"}:
                try:
                    import brc_attach
                    brc = brc_attach.Brc(src, pair.server, pair.server_dev, PORT)
                except Exception as e:
                    for m in modes:
                        if m != "plain":
                            notes[m] = "BRC did not load: %s" % bench_run._last_line(e)
            try:
                for mode in modes:
                    if mode in notes:
                        continue
                    if mode == "plain":
                        if brc:
                            brc.detach()
                    else:
                        if mode == "serve" and "hit" not in brc.contract.counters:
                            notes[mode] = "no `hit` counter in the contract: serve not implemented"
                            continue
                        brc.attach()
                        brc.configure(mode)
                        brc.refresh_auth(pair.server_ip)
                    for offloads in args.offloads.split(","):
                        for name in args.cells.split(","):
                            r = cell(pair, brc if mode != "plain" else None, name, offloads, args)
                            r.update(mode=mode, cell=name, offloads=offloads)
                            rows.append(r)
                            sys.stderr.write("%s %s %s: %s %d ops, %d wrong, %d stalls\n" % (
                                mode, name, offloads, "PASS" if r["checker"]["ok"] else "FAIL",
                                r["checker"]["ops"], r["checker"]["errors"],
                                r["checker"]["stalls"]))
                            if mode == "serve" and r["brc"].get("hit", 0) == 0 and name == "clean":
                                notes.setdefault("serve", "hit counter stayed 0 in a clean cell: "
                                                 "GETs were not answered in the kernel")
            finally:
                if brc:
                    brc.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    text = markdown(meta, rows, notes)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "faults-%s.json" % stamp), "w") as f:
        json.dump({"meta": meta, "rows": rows, "notes": notes}, f, indent=1, default=str)
    with open(os.path.join(args.out, "faults-%s.md" % stamp), "w") as f:
        f.write(text)
    print(text)
    return 0 if all(r["checker"]["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
