"""Connections opened before BRC was attached (a client pool's), adopted at a command
boundary the agent proves from Redis's CLIENT LIST and the server socket, and then
answered in the kernel without reconnecting: black-box, what each client gets against
what Redis holds (read over loopback, a path BRC does not see), beside a fresh
connection, and again after an upgrade of the programs."""
import shutil
import tempfile
import time

from agent_lab import wait_for
from blackbox import Delta, RedisError, address, client, config, gets_answered, truth
from ansible.module_utils.brc_resp import encode
from serve_lab import PORT

V6_SERVER, V6_CLIENT = "fd00:bd::1", "fd00:bd::2"
CONNECTIONS = 10
LAST_GETS = 10000
CHUNK = 1000


def hello3(c):
    """HELLO 3 on @c: its reply is a RESP3 map, which the test client reads pair by pair."""
    c.send(encode("HELLO", "3"))
    head = c._line()
    assert head.startswith(b"%"), head
    return [c.read_reply() for _i in range(2 * int(head[1:]))]


def wait_answered(lab, c, key, value):
    """GET @key on @c until one is answered in the kernel (bounded), every reply checked:
    bytes of connections not adopted yet stop answers until the agent's next user load."""
    def answered():
        got, hits = gets_answered(lab, c, key, 1)
        assert got == [value], got
        return hits
    wait_for(answered, "a GET of %s answered in the kernel" % key, timeout=30, poll=0.01)


def answered_per_connection(lab, conns, keys, values, gets):
    """@gets GETs on each of @conns (its own key), in chunks taken in turn; every reply is
    checked. Returns {connection index: GETs answered in the kernel}."""
    hits = dict((i, 0) for i in range(len(conns)))
    for _round in range(gets // CHUNK):
        for i, c in enumerate(conns):
            with Delta(lab) as d:
                for _g in range(CHUNK):
                    got = c.call("GET", keys[i])
                    assert got == values[i], "connection %d GET %s: %r, Redis holds %r" % (
                        i, keys[i], got, values[i])
            hits[i] += d["hit"]
    return hits


def test_connections_opened_before_the_attach_are_adopted_and_answered(agent_lab):
    lab, tag = agent_lab, time.monotonic_ns()
    keys = ["adopt:%d:%d" % (tag, i) for i in range(CONNECTIONS + 1)]
    values = [("v%d-%d" % (i, tag)).encode() for i in range(CONNECTIONS + 1)]
    with truth(lab) as t:
        for k, v in zip(keys, values):
            assert t.call("SET", k, v) == "OK"
    lab.brc.detach()
    old = []
    try:
        # the pool: opened and used while BRC is not attached, one of them in RESP3,
        # one in db 0 after a SELECT (its state comes from CLIENT LIST, not the wire)
        for i in range(CONNECTIONS):
            c = client(lab)
            old.append(c)
            if i == 0:
                hello3(c)
            if i == 1:
                assert c.call("SELECT", "0") == "OK"
            assert c.call("GET", keys[i]) == values[i]
    finally:
        lab.brc.attach()
    fresh = client(lab)
    conns = old + [fresh]
    try:
        with Delta(lab) as d:
            # used after the attach: each is frozen, proven and adopted at its next command
            def adopted():
                for i, c in enumerate(old):
                    assert c.call("GET", keys[i]) == values[i]
                return d.now().get("flows_adopted", 0) >= CONNECTIONS
            wait_for(adopted, "the %d connections to be adopted" % CONNECTIONS, timeout=60, poll=0)
        assert d["adopt_missed"] == 0, d
        # a write through an adopted connection is a tracked write: read back at once
        values[2] = b"changed-through-an-adopted-connection"
        assert old[2].call("SET", keys[2], values[2]) == "OK"
        wait_answered(lab, fresh, keys[-1], values[-1])
        hits = answered_per_connection(lab, conns, keys, values, LAST_GETS)
        for i, n in hits.items():
            assert n >= 0.8 * LAST_GETS, "connection %d: %d of the last %d GETs answered in the kernel (%r)" % (
                i, n, LAST_GETS, hits)

        # an upgrade: the flows live in the pinned maps, so they stay adopted
        lab.brc.upgrade(lab.bpf_dir)
        lab.wait_answering()
        wait_answered(lab, fresh, keys[-1], values[-1])
        with Delta(lab) as d:
            hits = answered_per_connection(lab, conns, keys, values, LAST_GETS)
        for i, n in hits.items():
            assert n >= 0.8 * LAST_GETS, "after the upgrade, connection %d: %d of %d answered (%r)" % (
                i, n, LAST_GETS, hits)
        assert d["flows_adopted"] == 0, d
        with truth(lab) as t:
            for k, v in zip(keys, values):
                assert t.call("GET", k) == v
    finally:
        for c in conns:
            c.close()


def test_a_connection_with_replies_off_is_adopted_but_never_answered(agent_lab):
    """CLIENT REPLY OFF does not show in CLIENT LIST: the adopted connection waits for a
    reply from Redis before anything is answered, and with replies off none comes."""
    lab, key = agent_lab, "adopt:off:%d" % time.monotonic_ns()
    with truth(lab) as t:
        assert t.call("SET", key, "v") == "OK"
    other = client(lab)
    try:
        for _i in range(40):             # cached through another connection
            with Delta(lab) as d:
                assert other.call("GET", key) == b"v"
            if d["hit"]:
                break
        lab.brc.detach()
        try:
            silent = client(lab)
            silent.send(encode("CLIENT", "REPLY", "OFF"))
            silent.send(encode("SET", key + ":x", "1"))     # the last command is not CLIENT REPLY
            with truth(lab) as t:
                wait_for(lambda: t.call("GET", key + ":x") == b"1", "the silent SET to run")
        finally:
            lab.brc.attach()
        with Delta(lab) as d:
            def adopted():
                silent.send(encode("GET", key))
                return d.now().get("flows_adopted", 0) >= 1
            wait_for(adopted, "the silent connection to be adopted", timeout=30, poll=0.05)
            for _i in range(50):
                silent.send(encode("GET", key))
        assert d["hit"] == 0 and d["adopt_proven"] == 0, d
        silent.send(encode("CLIENT", "REPLY", "ON"))
        assert silent.read_reply() == "OK"     # the first byte it ever got: no GET was answered
        assert other.call("GET", key) == b"v"
    finally:
        other.close()
        if "silent" in locals():
            silent.close()


def test_a_connection_in_multi_is_not_adopted(agent_lab):
    lab, key = agent_lab, "adopt:multi:%d" % time.monotonic_ns()
    lab.brc.detach()
    try:
        c = client(lab)
        assert c.call("MULTI") == "OK"
    finally:
        lab.brc.attach()
    try:
        with Delta(lab) as d:
            for _i in range(20):
                assert c.call("GET", key) == "QUEUED"
                time.sleep(0.02)
            res = c.call("EXEC")
        assert res == [None] * 20 and not isinstance(res, RedisError), res
        assert d["flows_adopted"] == 0 and d["hit"] == 0, d
    finally:
        c.close()


def test_an_ipv6_connection_opened_before_the_attach_is_adopted_and_answered(agent_lab):
    """CLIENT LIST writes an IPv6 peer as [addr]:port; the agent finds it, and the
    programs adopt the connection as an IPv4 one."""
    lab, key = agent_lab, "adopt:v6:%d" % time.monotonic_ns()
    pair = lab.pair
    with address(pair.server, pair.server_dev, V6_SERVER + "/64", v6=True), \
            address(pair.client, pair.client_dev, V6_CLIENT + "/64", v6=True), \
            config(lab, "bind", " ".join((pair.server_ip, "127.0.0.1", V6_SERVER))):
        with truth(lab) as t:
            assert t.call("SET", key, "over-ipv6") == "OK"
        lab.brc.detach()
        try:
            c6 = client(lab, host=V6_SERVER)
            assert c6.call("GET", key) == b"over-ipv6"
        finally:
            lab.brc.attach()
        try:
            with Delta(lab) as d:
                wait_for(lambda: c6.call("GET", key) == b"over-ipv6" and d.now().get("flows_adopted", 0) >= 1,
                         "the IPv6 connection to be adopted", timeout=30, poll=0)
            # its bytes before the adoption stopped answers until the agent's next user load
            wait_answered(lab, c6, key, b"over-ipv6")
            got, hits = gets_answered(lab, c6, key, 200)
            assert got == [b"over-ipv6"] * 200, set(got)
            assert hits >= 180, hits
        finally:
            c6.close()


def test_a_replicas_link_opened_before_the_attach_is_adopted_given_up(agent_lab):
    """A replica's link to the served master predates every deploy. Its REPLCONF ACK,
    each second, is client bytes BRC cannot parse while the link is untracked: each
    moves the auth epoch and stops answers until the agent's next users load. Adopted
    given up (CLIENT LIST flags=S), as a link opened after the attach is, its ACKs are
    parsed and move nothing, and replication goes on through it."""
    lab, pair, tag = agent_lab, agent_lab.pair, time.monotonic_ns()
    port = PORT + 2
    key = "adopt:replica:%d" % tag

    def replica(*args):
        r = pair.run(pair.client, ["redis-cli", "-h", pair.client_ip, "-p", str(port)] + list(args), check=False)
        return r.stdout.strip()

    def replica_info():
        return dict(line.strip().split(":", 1) for line in replica("INFO", "replication").splitlines()
                    if ":" in line and not line.startswith("#"))

    lab.brc.detach()
    try:
        workdir = tempfile.mkdtemp(prefix="brcag-replica-")
        proc = pair.popen(pair.client, ["redis-server", "--bind", pair.client_ip, "--port", str(port),
                                        "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                        "--dir", workdir, "--daemonize", "no",
                                        "--replicaof", pair.server_ip, str(PORT)])
        wait_for(lambda: replica_info().get("master_link_status") == "up", "the replica in sync", timeout=30)
    finally:
        lab.brc.attach()
    try:
        with Delta(lab) as d:
            wait_for(lambda: d.now().get("flows_adopted", 0) >= 1, "the replica's link to be adopted",
                     timeout=30, poll=0.1)
        assert d["dirty_replication"] >= 1 and d["hit"] == 0, d
        with truth(lab) as t:
            assert t.call("SET", key, "through-the-adopted-link") == "OK"
        wait_for(lambda: replica("GET", key) == "through-the-adopted-link", "the write on the replica")
        with Delta(lab) as d:
            acked = int(replica_info()["master_repl_offset"])
            # REPLCONF ACKs (each second) pass, parsed: the master sees the replica's offset
            wait_for(lambda: any("offset=" in v and int(v.split("offset=")[1].split(",")[0]) >= acked
                                 for k, v in lab.info("replication").items() if k.startswith("slave")),
                     "the replica's ACK of the write")
            time.sleep(2.5)      # two more ACKs at least
        assert d["auth_unseen"] == 0 and d["segments_untracked"] == 0, d
        assert replica_info().get("master_link_status") == "up"
        c = client(lab)
        try:
            wait_answered(lab, c, key, b"through-the-adopted-link")
        finally:
            c.close()
    finally:
        pair._kill(proc.pid)
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
