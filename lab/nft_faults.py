"""nftables tables of the lab's own in a namespace: random loss on a port, handshakes by ISN half."""
import json

from netns_pair import route_device, sh

TABLE = "brc_netfault"


class Loss:
    """Random loss on one TCP port with nftables, as a context manager.

    Loss("brcnf-client", 2.0, port=6379, peer="10.67.0.2"): 2% of the port's segments are
    dropped in each direction at the client's device (netdev ingress/egress). direction is
    "both", "in" (server to client) or "out" (client to server).
    """

    def __init__(self, netns, percent, port, peer=None, device=None, direction="both",
                 table=TABLE, use_device=True):
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        self.netns, self.port, self.peer, self.table = netns, int(port), peer, table
        self.threshold = int(round(percent * 100))   # out of 10000
        self.percent = percent
        self.direction = direction
        self.device = device
        if use_device and not device and peer:
            self.device = route_device(netns, peer)
        self.family = "netdev" if self.device else "inet"

    def ruleset(self):
        ins, outs = [], []
        if self.family == "netdev":
            proto = "ip protocol tcp "
            peer_in = "ip saddr %s " % self.peer if self.peer else ""
            peer_out = "ip daddr %s " % self.peer if self.peer else ""
        else:
            proto = ""
            peer_in = "ip saddr %s " % self.peer if self.peer else ""
            peer_out = "ip daddr %s " % self.peer if self.peer else ""
        match_in = "%s%stcp sport %d" % (proto, peer_in, self.port)
        match_out = "%s%stcp dport %d" % (proto, peer_out, self.port)
        rnd = "numgen random mod 10000 < %d" % self.threshold
        if self.direction in ("both", "in"):
            ins = ['%s counter comment "seen-in"' % match_in,
                   '%s %s counter drop comment "drop-in"' % (match_in, rnd)]
        if self.direction in ("both", "out"):
            outs = ['%s counter comment "seen-out"' % match_out,
                    '%s %s counter drop comment "drop-out"' % (match_out, rnd)]
        if self.family == "netdev":
            hook_in = 'type filter hook ingress device "%s" priority -500; policy accept;' % self.device
            hook_out = 'type filter hook egress device "%s" priority -500; policy accept;' % self.device
        else:
            hook_in = "type filter hook input priority -500; policy accept;"
            hook_out = "type filter hook output priority -500; policy accept;"
        lines = ["table %s %s {" % (self.family, self.table)]
        for name, hook, rules in (("fault_in", hook_in, ins), ("fault_out", hook_out, outs)):
            if rules:
                lines += ["  chain %s {" % name, "    " + hook] + ["    " + r for r in rules] + ["  }"]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __enter__(self):
        remove_table(self.netns, self.family, self.table)
        sh(["nft", "-f", "-"], self.netns, input=self.ruleset())
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        remove_table(self.netns, self.family, self.table)

    def stats(self):
        """{'seen_in', 'drop_in', 'seen_out', 'drop_out'} packet counts."""
        return table_counters(self.netns, self.family, self.table)


def remove_table(netns, family, table=TABLE):
    """Delete our table if it exists (never anything else)."""
    listed = sh(["nft", "list", "tables", family], netns, check=False).stdout.split("\n")
    if "table %s %s" % (family, table) in [l.strip() for l in listed]:
        sh(["nft", "delete", "table", family, table], netns)


def table_counters(netns, family, table=TABLE):
    proc = sh(["nft", "-j", "list", "table", family, table], netns, check=False)
    if proc.returncode != 0:
        return {}
    out = {}
    for item in json.loads(proc.stdout)["nftables"]:
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:     # same comment in several chains: summed
                name = rule["comment"].replace("-", "_")
                out[name] = out.get(name, 0) + expr["counter"]["packets"]
    return out


class IsnCounter:
    """Count handshakes by initial sequence number half, in an inet table of its own.

    The serial-number comparisons of a TCP translator break differently for ISNs below
    and at/above 2^31, so a test should see both halves on both sides. Linux picks ISNs
    from a keyed hash, so they cannot be chosen; with a handful of connections both halves
    are likely, and this counter shows whether they happened:
    {'client_low', 'client_high', 'server_low', 'server_high'} (SYNs from the client,
    SYN-ACKs from the server, seen in the namespace it is installed in).
    """

    def __init__(self, netns, port, table=TABLE + "_isn"):
        self.netns, self.port, self.table = netns, int(port), table

    def ruleset(self):
        syn = "tcp flags & (syn | ack) == syn"
        synack = "tcp flags & (syn | ack) == syn | ack"
        rules = []
        for side, match in (("client", "tcp dport %d %s" % (self.port, syn)),
                            ("server", "tcp sport %d %s" % (self.port, synack))):
            rules.append('%s tcp sequence < 2147483648 counter comment "%s-low"' % (match, side))
            rules.append('%s tcp sequence >= 2147483648 counter comment "%s-high"' % (match, side))
        lines = ["table inet %s {" % self.table]
        for chain, hook in (("isn_in", "input"), ("isn_out", "output")):
            lines += ["  chain %s {" % chain,
                      "    type filter hook %s priority -400; policy accept;" % hook]
            lines += ["    " + r for r in rules] + ["  }"]
        return "\n".join(lines + ["}"]) + "\n"

    def __enter__(self):
        remove_table(self.netns, "inet", self.table)
        sh(["nft", "-f", "-"], self.netns, input=self.ruleset())
        return self

    def __exit__(self, *exc):
        remove_table(self.netns, "inet", self.table)
        return False

    def stats(self):
        out = {"client_low": 0, "client_high": 0, "server_low": 0, "server_high": 0}
        out.update(table_counters(self.netns, "inet", self.table))
        return out
