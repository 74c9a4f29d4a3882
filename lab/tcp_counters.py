"""A namespace's TCP counters (/proc/net/netstat and snmp), and their deltas over a body."""
from netns_pair import sh


def tcp_ext(netns=None):
    """TcpExt, Tcp and IpExt counters of a namespace as one flat dict
    ({'TCPOFOQueue': n, 'RetransSegs': n, ...}; Tcp ones also as 'Tcp.RetransSegs')."""
    out = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        text = sh(["cat", path], netns).stdout.splitlines()
        for head, vals in zip(text[0::2], text[1::2]):
            prefix, names = head.split(":", 1)
            _, values = vals.split(":", 1)
            for name, value in zip(names.split(), values.split()):
                try:
                    value = int(value)
                except ValueError:
                    continue
                out["%s.%s" % (prefix, name)] = value
                if prefix in ("TcpExt", "Tcp"):
                    out.setdefault(name, value)
    return out


class TcpDelta:
    """Counter deltas over the body, per namespace:

        with TcpDelta(pair.client, pair.server) as d:
            ...
        d.delta[pair.server]["TCPOFOQueue"], d.delta[pair.client]["RetransSegs"]
    """

    def __init__(self, *namespaces):
        self.namespaces = namespaces
        self.before, self.delta = {}, {}

    def __enter__(self):
        self.before = dict((ns, tcp_ext(ns)) for ns in self.namespaces)
        return self

    def __exit__(self, *exc):
        for ns in self.namespaces:
            after = tcp_ext(ns)
            self.delta[ns] = dict((k, after[k] - self.before[ns].get(k, 0)) for k in after)
        return False
