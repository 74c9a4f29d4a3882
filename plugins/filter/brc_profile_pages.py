"""Controller side of playbooks/profile.yml: folded stacks (perf's stackcollapse.py, kernel
frames marked `_[k]`) to d3-flame-graph's tree, a self-contained page from d3-flame-graph's
own template (the one `perf script report flamegraph` fills), and the softirq summary.

The tree is the one perf's flamegraph.py builds: {"n": name, "l": libtype ("root", "kernel"
or "" for user space), "v": samples ending in this frame (the template sets selfValue), "c":
children}.
"""
import json

KERNEL_MARK = "_[k]"
# Frames that mean "this sample was taken in softirq context" (kernel 6.1 .. 6.18 names).
SOFTIRQ_FRAMES = ("__do_softirq", "handle_softirqs", "do_softirq", "__irq_exit_rcu", "run_ksoftirqd",
                  "net_rx_action")
# BRC's tc programs show up as bpf_prog_<tag>_<name>; their names start with brc.
BRC_MARK = "brc"


def parse_folded(lines):
    """[(frames, count)] from `a;b;c 12` lines; malformed lines are skipped."""
    out = []
    for line in lines or []:
        stack, _sep, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        try:
            n = int(count)
        except ValueError:
            continue
        if n > 0:
            out.append((stack.split(";"), n))
    return out


def _frame(name):
    if name.endswith(KERNEL_MARK):
        return name[:-len(KERNEL_MARK)], "kernel"
    return name, ""


def _add(root, frames, count):
    node = root
    for raw in frames:
        name, libtype = _frame(raw)
        children = node.setdefault("_index", {})
        child = children.get((name, libtype))
        if child is None:
            child = {"n": name, "l": libtype, "v": 0, "c": []}
            children[(name, libtype)] = child
            node["c"].append(child)
        node = child
    node["v"] += count


def _strip(node):
    node.pop("_index", None)
    for child in node["c"]:
        _strip(child)
    return node


def brc_profile_tree(folded, root="all"):
    """d3-flame-graph tree of one host's folded stacks."""
    tree = {"n": root, "l": "root", "v": 0, "c": []}
    for frames, count in parse_folded(folded):
        _add(tree, frames, count)
    return _strip(tree)


def brc_profile_fleet_tree(per_host, root="fleet"):
    """One tree for the fleet: a child per host (its name as a frame) over its stacks.
    per_host: {host: folded lines}."""
    tree = {"n": root, "l": "root", "v": 0, "c": []}
    for host in sorted(per_host):
        for frames, count in parse_folded(per_host[host]):
            _add(tree, [host] + frames, count)
    return _strip(tree)


def brc_profile_fleet_folded(per_host):
    """The fleet's folded stacks, each prefixed with its host (for other renderers)."""
    return ["%s;%s" % (host, line) for host in sorted(per_host) for line in per_host[host] or []]


def brc_profile_summary(folded):
    """Samples in total, per command, in softirq context and BRC's part of those."""
    total = softirq = brc = brc_softirq = 0
    by_comm = {}
    for frames, count in parse_folded(folded):
        total += count
        by_comm[frames[0]] = by_comm.get(frames[0], 0) + count
        names = [_frame(f)[0].split(".")[0] for f in frames]   # do_softirq.part.0
        in_softirq = any(n in SOFTIRQ_FRAMES for n in names)
        in_brc = any(n.startswith("bpf_prog_") and BRC_MARK in n for n in names)
        softirq += count if in_softirq else 0
        brc += count if in_brc else 0
        brc_softirq += count if (in_brc and in_softirq) else 0
    top = sorted(by_comm.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {
        "samples": total,
        "by_command": [{"command": c, "samples": n} for c, n in top],
        "softirq_samples": softirq,
        "brc_samples": brc,
        "brc_softirq_samples": brc_softirq,
        "brc_share_of_softirq": round(float(brc_softirq) / softirq, 4) if softirq else None,
    }


def _script_json(value):
    """JSON safe inside an HTML <script>: no `</script>` or `<!--` can end it early."""
    return json.dumps(value, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")


def brc_profile_page(tree, template, context="", colorscheme="blue-green"):
    """d3-flame-graph's base template filled as perf's flamegraph.py fills it."""
    if "/** @flamegraph_json **/" not in template or "/** @options_json **/" not in template:
        raise ValueError("not d3-flame-graph's base template (placeholders missing): run make setup")
    options = {"colorscheme": colorscheme, "context": context}
    return template.replace("/** @options_json **/", _script_json(options)) \
        .replace("/** @flamegraph_json **/", _script_json(tree))


def _share(part, whole):
    return "%.1f%%" % (100.0 * part / whole) if whole else "-"


def brc_profile_summary_lines(report):
    """The play's closing summary, a line per host, then the hosts missing with the fix."""
    fleet = report["fleet"]
    lines = ["profile: %d host(s), %d samples, %s in softirq, BRC %s of softirq" % (
        len(report["hosts"]), fleet["samples"], _share(fleet["softirq_samples"], fleet["samples"]),
        _share(fleet["brc_softirq_samples"], fleet["softirq_samples"]))]
    for host in sorted(report["hosts"]):
        h = report["hosts"][host]
        top = ", ".join("%s %s" % (c["command"], _share(c["samples"], h["samples"])) for c in h["by_command"][:3])
        lines.append("  %s: %d samples (%s)" % (host, h["samples"], top))
    if report.get("missing"):
        lines.append("missing: %s (failed or unreachable: see the error above, fix it, then rerun with "
                     "--limit %s)" % (", ".join(report["missing"]), ",".join(report["missing"])))
    return lines


class FilterModule:  # pylint: disable=too-few-public-methods
    def filters(self):
        return {
            "brc_profile_tree": brc_profile_tree,
            "brc_profile_fleet_tree": brc_profile_fleet_tree,
            "brc_profile_fleet_folded": brc_profile_fleet_folded,
            "brc_profile_summary": brc_profile_summary,
            "brc_profile_page": brc_profile_page,
            "brc_profile_summary_lines": brc_profile_summary_lines,
        }
