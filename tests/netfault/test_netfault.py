"""Fault injection against plain Redis: the faults are real, TCP recovers, nothing is left.

These tests establish the tools that BRC's loss and reordering tests stand on: with plain
Redis the consistency checker must pass under the same faults, and the faults must be seen
(nftables drop counters, retransmissions, out-of-order queueing at the receiver).
"""
import os
import subprocess

import netfault

PORT = 6379


def counters(pair):
    return netfault.tcp_ext(pair.client), netfault.tcp_ext(pair.server)


def delta(after, before, name):
    return after[name] - before[name]


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_loss_both_directions_checker_passes(pair, checker):
    with netfault.TcpDelta(pair.client, pair.server) as tcp, \
            netfault.Loss(pair.client, 2.0, PORT, peer=pair.server_ip) as loss:
        assert loss.family == "netdev" and loss.device == pair.client_dev
        summary = checker(pair, seconds=15)
        stats = loss.stats()
    assert summary["ok"], summary
    assert summary["ops"] > 1000, summary
    # The drops happened in both directions, at roughly the configured rate...
    assert stats["drop_in"] > 0 and stats["drop_out"] > 0, stats
    for way in ("in", "out"):
        rate = stats["drop_" + way] / float(stats["seen_" + way])
        assert 0.005 < rate < 0.05, (way, rate, stats)
    # ...and both TCP senders had to retransmit.
    assert tcp.delta[pair.client]["RetransSegs"] > 0 and tcp.delta[pair.server]["RetransSegs"] > 0
    assert netfault.table_counters(pair.client, "netdev") == {}


def test_loss_inet_hooks_drop(pair):
    with netfault.Loss(pair.client, 5.0, PORT, peer=pair.server_ip, use_device=False) as loss:
        assert loss.family == "inet"
        pair.run(pair.client, ["redis-benchmark", "-h", pair.server_ip, "-p", str(PORT),
                               "-t", "get", "-n", "600", "-c", "4", "-q"], timeout=60)
        stats = loss.stats()
    assert stats["drop_in"] > 0 and stats["drop_out"] > 0, stats
    assert netfault.table_counters(pair.client, "inet") == {}


def test_reorder_receivers_see_out_of_order_and_checker_passes(pair, checker):
    c0, s0 = counters(pair)
    with netfault.Reorder(pair.client, PORT, fraction=0.1, delay_ms=4, max_seconds=60) as ro:
        assert netfault.queue_rules_present(pair.client)
        summary = checker(pair, seconds=12)
        mid_c, mid_s = counters(pair)
        # Pipelined traffic with values of several segments: many segments in flight.
        pair.run(pair.client, ["redis-benchmark", "-h", pair.server_ip, "-p", str(PORT),
                               "-t", "set,get", "-n", "20000", "-P", "16", "-c", "8",
                               "-d", "3000", "-q"], timeout=90)
        live = ro.stats()
    final = ro.final
    c1, s1 = counters(pair)
    assert summary["ok"], summary
    assert live["seen"] > 1000 and live["delayed"] > 0, live
    assert final["delayed"] == live["delayed"] or final["delayed"] > live["delayed"]
    assert final["accepted"] == final["seen"], final      # every held packet was released
    # The checker's own traffic (pipelined batches, 3000-byte values) arrived out of order...
    checker_ofo = delta(mid_c, c0, "TCPOFOQueue") + delta(mid_s, s0, "TCPOFOQueue")
    assert checker_ofo > 0, "no out-of-order segment during the checker run"
    # ...and with 16-deep pipelining both receivers queue segments out of order.
    assert delta(c1, mid_c, "TCPOFOQueue") > 0, "client saw no out-of-order segment"
    assert delta(s1, mid_s, "TCPOFOQueue") > 0, "server saw no out-of-order segment"
    assert not netfault.queue_rules_present(pair.client)
    assert not alive(ro.proc.pid)


def test_reorder_stops_by_itself(pair):
    ro = netfault.Reorder(pair.client, PORT, fraction=0.5, delay_ms=2, max_seconds=1.5)
    with ro:
        pid = ro.proc.pid
        pair.run(pair.client, ["redis-cli", "-h", pair.server_ip, "-p", str(PORT), "ping"])
        ro.proc.wait(10)                    # ends on its own at max_seconds
        assert ro.proc.returncode == 0
        assert not netfault.queue_rules_present(pair.client), "rules left after deadline"
        out = pair.run(pair.client, ["redis-cli", "-h", pair.server_ip, "-p", str(PORT),
                                     "ping"]).stdout
        assert out.strip() == "PONG"
    assert not alive(pid)


def test_killed_holder_leaves_traffic_flowing_and_rules_removed_on_exit(pair):
    with netfault.Reorder(pair.client, PORT, fraction=0.2, delay_ms=3, max_seconds=60) as ro:
        os.kill(ro.proc.pid, 9)
        ro.proc.wait(5)
        # --queue-bypass: no holder bound, packets pass.
        assert netfault.queue_rules_present(pair.client)
        out = pair.run(pair.client, ["redis-cli", "-h", pair.server_ip, "-p", str(PORT),
                                     "ping"], timeout=10).stdout
        assert out.strip() == "PONG"
    assert not netfault.queue_rules_present(pair.client)


def test_offloads_toggle_without_ethtool(pair):
    before = netfault.get_offloads(pair.client, pair.client_dev)
    assert before["tx"] is True
    try:
        state = netfault.set_offloads(pair.client, pair.client_dev, tx=False, tso=False)
        assert state["tx"] is False and state["tso"] is False
        out = pair.run(pair.client, ["redis-cli", "-h", pair.server_ip, "-p", str(PORT),
                                     "ping"]).stdout
        assert out.strip() == "PONG"
    finally:
        state = netfault.set_offloads(pair.client, pair.client_dev, tx=before["tx"],
                                      tso=before["tso"])
    assert state["tx"] == before["tx"] and state["tso"] == before["tso"]


def test_loss_with_offloads_off_on_both_sides_checker_passes(pair, checker):
    """BRC's tests run with default offloads and with them off (checksums then computed
    in software and verified by the receiver): the faults must work in both."""
    with netfault.Offloads(pair.client, pair.client_dev, tx=False, rx=False, tso=False), \
            netfault.Offloads(pair.server, pair.server_dev, tx=False, rx=False, tso=False) as o:
        assert o.state["tx"] is False and o.state["tso"] is False
        with netfault.Loss(pair.client, 2.0, PORT, peer=pair.server_ip) as loss:
            summary = checker(pair, seconds=8)
            stats = loss.stats()
    assert summary["ok"], summary
    assert stats["drop_in"] > 0 and stats["drop_out"] > 0, stats
    after = netfault.get_offloads(pair.client, pair.client_dev)
    assert after["tx"] is True and after["tso"] is True      # restored


def test_isn_counter_sees_both_halves(pair):
    with netfault.IsnCounter(pair.client, PORT) as isn:
        # -k 0: a new connection per request, 300 handshakes.
        pair.run(pair.client, ["redis-benchmark", "-h", pair.server_ip, "-p", str(PORT),
                               "-t", "ping", "-n", "300", "-c", "4", "-k", "0", "-q"],
                 timeout=60)
        stats = isn.stats()
    assert stats["client_low"] + stats["client_high"] >= 300, stats
    assert stats["server_low"] + stats["server_high"] >= 300, stats
    assert min(stats.values()) > 0, stats
    assert netfault.status(pair.client)["nft"] == {}


def test_pair_cleanup_leaves_nothing():
    with netfault.NetnsPair("brcnz", "10.67.1") as p:
        redis = p.start_redis(PORT)
        with netfault.Loss(p.client, 1.0, PORT, peer=p.server_ip):
            pass
        ro = netfault.Reorder(p.client, PORT, max_seconds=30)
        ro.__enter__()                       # left running on purpose: the pair must cope
        holder = ro.proc.pid
    listed = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                            universal_newlines=True).stdout
    assert p.client not in listed and p.server not in listed
    assert redis.poll() is not None
    ro.proc.wait(5)                          # killed with its namespace (reaped here)
    ro.proc.stderr.close()
    if os.path.exists(ro.stats_path):
        os.unlink(ro.stats_path)
    assert not alive(redis.pid) and not alive(holder)
    links = subprocess.run(["ip", "-o", "link"], stdout=subprocess.PIPE,
                           universal_newlines=True).stdout
    assert p.client_dev not in links and p.server_dev not in links
