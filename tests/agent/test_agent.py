"""brc-agent against the real thing: what a client through BRC gets,
compared with what Redis holds (read over loopback in the server namespace, a path
BRC does not see). No timed waits: every wait is a bounded poll for an agent
report (a marker write's bucket bumped by the feed, a heartbeat, a counter)."""
import os
import signal
import socket
import subprocess
import threading
import time

from agent_lab import PORT, wait_for


def served(lab, key, marker_port=PORT, marker=True):
    """GET @key through BRC until filled, then once more: was that one answered in
    the kernel? Returns (value, answered). The feed reports the test's own writes
    too, so a marker first (unless no agent feeds): a late report of them would
    invalidate the fill. A fill under a beating agent needs its record of the key's
    expiry, which a GET asks for when missing (a restart flushes them all)."""
    if marker:
        lab.marker(port=marker_port)
    before = lab.counters()
    lab.get(key)
    d = lab.delta(lab.counters(), before)
    if lab.beat_fresh() and not d.get("fill") and not d.get("hit"):
        wait_for(lambda: lab.expiry_recorded(key), "the agent to record the expiry of %s" % key)
        lab.get(key)
    before = lab.counters()
    value = lab.get(key)
    return value, lab.delta(lab.counters(), before).get("hit", 0) > 0


def flushed(lab, before):
    """Flushes counted per reason since @before (lab.flushes()), the non-zero ones."""
    return dict((r, n - before.get(r, 0)) for r, n in lab.flushes().items() if n != before.get(r, 0))


def test_a_loopback_write_is_not_served_stale_once_fed(agent_lab):
    lab, key = agent_lab, "agent:a:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v1")
    assert served(lab, key) == ("v1", True)
    lab.local("SET", key, "v2")          # BRC does not see loopback
    lab.marker()
    assert lab.get(key) == "v2"
    assert lab.get(key) == lab.local("GET", key) == "v2"
    assert lab.agent_state()["feed_keys"] > 0


def test_b_a_killed_agent_stops_answers(agent_lab):
    lab, key = agent_lab, "agent:b:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v1")
    assert served(lab, key) == ("v1", True)
    lab.kill_agent()
    wait_for(lambda: not lab.beat_fresh(), "the heartbeat to go stale")
    before = lab.counters()
    assert lab.get(key) == "v1" and lab.get(key) == "v1"
    d = lab.delta(lab.counters(), before)
    assert d.get("hit", 0) == 0 and d.get("get_uncacheable_agent", 0) >= 1, d
    before = lab.flushes()               # a killed agent counts nothing: its successor does
    lab.start_agent()                    # back in charge: answers resume
    assert flushed(lab, before) == {"agent_start": 1, "resync": 1}
    assert served(lab, key) == ("v1", True)


def test_c_a_redis_restart_flushes_and_serving_resumes(agent_lab):
    lab, key = agent_lab, "agent:c:%d" % time.monotonic_ns()
    lab.cli("SET", key, "old")
    assert served(lab, key) == ("old", True)
    flushes, before = lab.agent_state()["feed_flushes"], lab.flushes()
    lab.restart_redis()                  # no persistence: the key is gone
    wait_for(lambda: lab.agent_state()["feed_flushes"] > flushes, "a flush after the restart")
    assert lab.get(key) == "" and lab.local("EXISTS", key) == "0"
    lab.wait_answering()
    assert "flush reason=restart" in lab.agent_log()
    # the dropped connections stop answers at once, the new run id flushes again
    # once the agent is back
    assert flushed(lab, before) == {"redis_down": 1, "restart": 1}
    assert sum(lab.flushes().values()) == lab.agent_state()["feed_flushes"]
    lab.cli("SET", key, "new")
    assert served(lab, key) == ("new", True)


def test_loading_stops_answers_until_redis_has_loaded_and_is_counted_as_loading(agent_lab):
    """DEBUG RELOAD (SAVE, empty, load) with Redis's own key-load-delay (microseconds
    per key) over a few thousand keys keeps it `loading` for about 1.5 s, with events
    processed every 1 KiB of RDB: the agent's connections stay open, its subscriber's
    PING gets -LOADING. The agent flushes for `loading` (not `redis_down`), and while
    INFO says loading:1 a client through BRC gets Redis's own -LOADING, never a kernel
    answer; once loaded, it flushes again (same run id: `reconnect`) and serves."""
    lab, key = agent_lab, "agent:loading:%d" % time.monotonic_ns()
    lab.restart_redis(extra=("--enable-debug-command", "local"))   # lab.local is loopback
    reload = None
    try:
        lab.wait_answering()
        lab.local("EVAL", POPULATE, 0, "agent:loading:fill:", 1, 3000, "x" * 100)
        lab.cli("SET", key, "v")
        assert served(lab, key) == ("v", True)
        lab.local("CONFIG", "SET", "key-load-delay", "500")
        lab.local("CONFIG", "SET", "loading-process-events-interval-bytes", "1024")
        before = lab.flushes()
        reload = subprocess.Popen(["ip", "netns", "exec", lab.pair.server, "redis-cli", "-h", "127.0.0.1",
                                   "-p", str(PORT), "DEBUG", "RELOAD"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        wait_for(lambda: lab.flushes()["loading"] > before["loading"], "the agent's flush for loading",
                 timeout=10, poll=0.01)
        during = []                      # GETs through BRC with loading:1 before and after
        while lab.info("persistence").get("loading") == "1":
            b = lab.counters()
            out = lab.cli("GET", key).strip()
            d = lab.delta(lab.counters(), b)
            if lab.info("persistence").get("loading") == "1":
                during.append((out, d.get("hit", 0)))
        assert reload.wait(30) == 0 and reload.stdout.read().strip() == b"OK"
        assert during, "no GET fell inside the loading (it ended too soon)"
        # Redis's own refusal, never the cached "v" (the flush left nothing to answer from)
        assert all(out.startswith("LOADING") and hits == 0 for out, hits in during), during
        lab.wait_answering()
        # RELOAD empties the data set first, which Redis reports as a FLUSHALL: counted
        # too when the agent read it before its PING was refused
        d = flushed(lab, before)
        assert d.get("loading") == 1 and d.get("reconnect") == 1, d
        assert not set(d) - {"loading", "reconnect", "flushall"}, d
        assert "flush reason=loading" in lab.agent_log()
        assert served(lab, key) == ("v", True)
    finally:
        if reload is not None and reload.poll() is None:
            reload.kill()
            reload.wait(10)
        lab.restart_redis()              # the lab's Redis again: no DEBUG, no delay, no keys


def test_d_replicaof_flushes_and_serves_the_masters_data(agent_lab):
    lab, key = agent_lab, "agent:d:%d" % time.monotonic_ns()
    other = lab.start_other_redis()
    try:
        lab.local("SET", key, "from-master", port=PORT + 1)
        lab.cli("SET", key, "local")
        assert served(lab, key) == ("local", True)
        before = lab.flushes()
        lab.replica_of(PORT + 1)
        assert "flush reason=role" in lab.agent_log()
        # the role change flushes; answers also stop while the new replica's link is
        # down, if the agent looks meanwhile, and its full sync empties the data set
        # (Redis reports a flush)
        d = flushed(lab, before)
        assert d.get("role", 0) >= 1, d
        assert not set(d) - {"replica_link_down", "role", "flushall"}, d
        assert lab.get(key) == lab.local("GET", key) == "from-master"
        lab.local("SET", key, "newer", port=PORT + 1)   # reaches the replica by its stream,
        # and served() waits for a marker written after it to come through the feed
        assert served(lab, key, marker_port=PORT + 1) == ("newer", True)
        assert lab.local("GET", key) == "newer"
        flushes = lab.agent_state()["feed_flushes"]
    finally:
        lab.local("REPLICAOF", "NO", "ONE")
        lab.pair._kill(other.pid)
        other.wait(10)
    wait_for(lambda: lab.agent_state()["feed_flushes"] > flushes, "a flush back to master")
    lab.wait_answering()


def test_e_served_reads_are_touched_in_redis(agent_lab):
    lab, key = agent_lab, "agent:e:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v")
    assert served(lab, key) == ("v", True)
    # line-buffered: through a pipe redis-cli's stdout would hold MONITOR lines back
    monitor = subprocess.Popen(["ip", "netns", "exec", lab.pair.server, "stdbuf", "-oL", "redis-cli", "-h",
                                "127.0.0.1", "-p", str(PORT), "monitor"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(monitor.stdout.readline, b"")), daemon=True)
    reader.start()
    want = (' "%s"' % key).encode()       # batched: among other keys in one TOUCH
    try:
        wait_for(lambda: lines, "MONITOR to start")   # its +OK: commands from now on are shown
        sampled = 0
        for _attempt in range(10):       # 1 in BRC_TOUCH_SAMPLE answers is recorded
            before = lab.counters()
            lab.cli("-r", "40", "GET", key)
            sampled = lab.delta(lab.counters(), before).get("touch_sampled", 0)
            if sampled:
                break
        assert sampled, "no answer of %s was sampled for TOUCH" % key
        wait_for(lambda: any(b'"TOUCH" ' in line and want in line for line in list(lines)),
                 "the agent's TOUCH of %s" % key)
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(10)
        reader.join(10)
    # reported at the agent's next beat
    wait_for(lambda: lab.agent_state()["touched_keys"] > 0, "the agent's report of its TOUCHes")

def test_sigterm_stops_answers_and_release_hands_back_to_the_programs(agent_lab):
    lab, key = agent_lab, "agent:stop:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v")
    assert served(lab, key) == ("v", True)
    on = lab.brc.contract.constants["BRC_AGENT_F_ON"]
    before = lab.flushes()
    lab.kill_agent(signal.SIGTERM)
    assert lab.agent.returncode == 0
    st = lab.agent_state()
    assert st["flags"] & on and st["beat_ns"] == 0      # still in charge: nothing answered
    assert flushed(lab, before) == {"agent_stop": 1}
    assert served(lab, key, marker=False) == ("v", False)
    release = lab.run_agent("--release")
    assert release.returncode == 0, release.stderr
    assert not lab.agent_state()["flags"] & on           # the programs alone again
    assert flushed(lab, before) == {"agent_stop": 1, "agent_release": 1}
    assert served(lab, key, marker=False) == ("v", True)


def test_a_refused_password_is_a_clear_error(agent_lab):
    lab = agent_lab
    bad = os.path.join(lab.tmp, "wrong.password")
    with open(bad, "w") as f:
        f.write("not-the-password")
    r = lab.run_agent("--password-file", bad)
    assert r.returncode == 2
    assert "refused the agent's credentials" in r.stderr and "create the agent user" in r.stderr
    lab.wait_answering()                 # the running agent is not disturbed


def test_a_redis_without_a_needed_command_is_a_clear_error(agent_lab):
    """A Redis whose PEXPIRETIME was renamed away (or older than 7.0) fails the agent at
    start with the fix, not in a retry loop later."""
    lab, port = agent_lab, PORT + 2
    other = lab.pair.start_redis(port, extra=("--bind", lab.pair.server_ip, "127.0.0.1",
                                              "--rename-command", "PEXPIRETIME", ""))
    try:
        with open(lab.password_file) as f:
            password = f.read().strip()
        lab.local("ACL", "SETUSER", "brc-agent", "reset", "on", ">" + password, *lab.grants.split(), port=port)
        r = lab.run_agent("--redis-port", str(port))
        assert r.returncode == 2, r.stderr
        assert "lacks a command the agent needs" in r.stderr and "upgrade Redis to 7.0" in r.stderr, r.stderr
        assert "PEXPIRETIME" in r.stderr
        lab.wait_answering()                 # the running agent is not disturbed
    finally:
        lab.pair._kill(other.pid)
        other.wait(10)


def test_an_acl_change_over_loopback_reaches_brc(agent_lab):
    """Users changed where BRC cannot see (loopback) are reloaded from ACL LIST's digest."""
    lab, key = agent_lab, "agent:acl:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v")
    assert served(lab, key) == ("v", True)
    try:
        lab.local("ACL", "SETUSER", "default", "resetkeys", "~agent:other:*")
        wait_for(lambda: "ACL LIST changed" in lab.agent_log(), "the agent's reload")
        lab.wait_answering()
        before = lab.counters()
        out = lab.cli("GET", key)
        assert "NOPERM" in out or "permission" in out, out
        assert lab.delta(lab.counters(), before).get("hit", 0) == 0
    finally:
        lab.local("ACL", "SETUSER", "default", "allkeys")
    wait_for(lambda: lab.agent_log().count("ACL LIST changed") >= 2, "the reload after the revert")
    assert served(lab, key) == ("v", True)


def test_a_config_change_on_the_wire_is_reloaded_at_the_next_beat(agent_lab):
    """CONFIG SET through BRC may change who reads what: the programs stop answering
    until the users are loaded at the new epoch. ACL LIST does not change, so the
    agent notices the epoch itself rather than waiting for its periodic reload."""
    lab, key = agent_lab, "agent:cfg:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v")
    assert served(lab, key) == ("v", True)
    reloads = lab.agent_log().count("a change on the wire")
    assert lab.cli("CONFIG", "SET", "timeout", "0").strip() == "OK"
    wait_for(lambda: lab.agent_log().count("a change on the wire") > reloads, "the agent's reload")
    assert served(lab, key) == ("v", True)


def test_removed_pins_end_the_agent_with_the_fix(agent_lab):
    """An undeploy (or a redeploy that reset the maps) while the agent runs: it does not
    go on feeding maps nobody reads."""
    lab = agent_lab
    pin = os.path.join(lab.pin_dir, "brc_agent")
    os.rename(pin, pin + "_away")
    try:
        lab.agent.wait(15)
        assert lab.agent.returncode == 2
        assert "deploy BRC first" in lab.agent_log()
    finally:
        os.rename(pin + "_away", pin)
    lab.start_agent()


def test_unix_socket_writes_are_fed_and_the_agent_can_use_the_socket(agent_lab):
    lab, key = agent_lab, "agent:sock:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v1")
    assert served(lab, key) == ("v1", True)
    lab.local("SET", key, "v2", unix_socket=True)
    lab.marker()
    assert lab.get(key) == "v2"
    lab.kill_agent(signal.SIGTERM)
    lab.start_agent("--redis-socket", lab.socket)   # the agent itself over the socket
    try:
        assert served(lab, key) == ("v2", True)
        lab.local("SET", key, "v3", unix_socket=True)
        lab.marker()
        assert lab.get(key) == "v3"
    finally:
        lab.kill_agent(signal.SIGTERM)
        lab.start_agent()


def wait_past(deadline_ms):
    """Until Redis's own clock (this host's wall clock) is past @deadline_ms."""
    while time.time() * 1000 <= deadline_ms + 5:
        time.sleep(0.02)


def test_a_ttl_set_over_loopback_is_served_until_its_deadline_and_never_past_it(agent_lab):
    """A TTL BRC does not see (PEXPIRE over loopback): the feed reports the key, the
    agent reads its PEXPIRETIME into brc_expiry, and the kernel answers it only
    before that deadline (served GETs never expire it lazily, and with hz 1 Redis's
    active cycle comes late: only the deadline stops the answers)."""
    lab, key = agent_lab, "agent:ttl:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v1")
    assert served(lab, key) == ("v1", True)
    lab.local("CONFIG", "SET", "hz", "1")
    try:
        lab.local("PEXPIRE", key, "1500")
        deadline_ms = int(lab.local("PEXPIRETIME", key))
        assert served(lab, key) == ("v1", True)
        wait_past(deadline_ms)
        before = lab.counters()
        assert lab.get(key) == ""         # what Redis answers for an expired key
        assert lab.delta(lab.counters(), before).get("hit", 0) == 0
    finally:
        lab.local("CONFIG", "SET", "hz", "10")


def test_keys_set_with_px_through_brc_and_over_loopback_are_served_until_their_deadline(agent_lab):
    """SET ... PX on a served key, through BRC (the programs see the write) and over
    loopback (only the feed reports it): each is answered in the kernel with the
    deadline Redis reports, and Redis's nil is what clients get once it passed."""
    lab, t = agent_lab, time.monotonic_ns()
    keys = ("agent:px-wire:%d" % t, "agent:px-loop:%d" % t)
    for key in keys:
        lab.cli("SET", key, "v1")
        assert served(lab, key) == ("v1", True)
    lab.local("CONFIG", "SET", "hz", "1")
    try:
        assert lab.cli("SET", keys[0], "v2", "PX", "1500").strip() == "OK"
        lab.local("SET", keys[1], "v2", "PX", "1500")
        deadline_ms = max(int(lab.local("PEXPIRETIME", key)) for key in keys)
        lab.marker()
        for key in keys:
            assert served(lab, key, marker=False) == ("v2", True), key
        wait_past(deadline_ms)
        for key in keys:
            assert lab.get(key) == "", key   # what Redis answers for an expired key
        lab.marker()                         # expired keys are reported too: still nil
        for key in keys:
            assert lab.get(key) == "" and lab.local("EXISTS", key) == "0", key
    finally:
        lab.local("CONFIG", "SET", "hz", "10")


def test_a_key_given_its_ttl_before_the_agent_started_is_never_served_past_it(agent_lab):
    """Nothing reports a TTL set while no agent ran: the kernel asks for the key's
    expiry (brc_expiry_wanted) at its first GET, and fills only once the agent has
    read it from Redis."""
    lab, key = agent_lab, "agent:ttl-before:%d" % time.monotonic_ns()
    lab.kill_agent(signal.SIGTERM)
    try:
        lab.local("SET", key, "v1", "PX", "1500")
    finally:
        lab.start_agent()
    lab.local("CONFIG", "SET", "hz", "1")
    try:
        deadline_ms = int(lab.local("PEXPIRETIME", key))
        before = lab.counters()
        assert lab.get(key) == "v1"
        assert lab.delta(lab.counters(), before).get("expiry_wanted", 0) == 1
        wait_for(lambda: lab.expiry_recorded(key), "the agent to record the expiry of %s" % key)
        assert served(lab, key, marker=False) == ("v1", True)
        wait_past(deadline_ms)
        assert lab.get(key) == ""
    finally:
        lab.local("CONFIG", "SET", "hz", "10")


def test_a_key_evicted_under_maxmemory_is_not_served_once_fed(agent_lab):
    """Eviction deletes keys no client asked to delete. maxmemory 1 with allkeys-lru
    makes Redis evict every key (the served one too) at once; the feed reports each
    evicted key (per key: no flush), and once a marker written after it is fed the
    client gets nil, as Redis holds."""
    lab, key = agent_lab, "agent:evict:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v1")
    assert served(lab, key) == ("v1", True)
    flushes = lab.agent_state()["feed_flushes"]
    evicted = int(lab.info("stats")["evicted_keys"])
    try:
        lab.local("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        lab.local("CONFIG", "SET", "maxmemory", "1")
        # EXISTS neither refreshes the key's LRU clock nor is refused when out of memory
        wait_for(lambda: lab.local("EXISTS", key) == "0", "Redis to evict %s" % key)
    finally:
        lab.local("CONFIG", "SET", "maxmemory", "0")
        lab.local("CONFIG", "SET", "maxmemory-policy", "noeviction")
    assert int(lab.info("stats")["evicted_keys"]) > evicted
    lab.marker()
    assert lab.get(key) == "" and lab.get(key) == ""
    assert lab.local("EXISTS", key) == "0"
    assert lab.agent_state()["feed_flushes"] == flushes     # reported key by key


def test_a_restart_from_an_older_rdb_serves_what_redis_loaded(agent_lab):
    """SAVE with v1 served, v2 written and served through BRC, kill -9 and a restart
    from that RDB: Redis holds v1 again; clients never get the cached v2."""
    lab, key = agent_lab, "agent:rdb:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v1")
    assert served(lab, key) == ("v1", True)
    assert lab.local("SAVE") == "OK"
    lab.cli("SET", key, "v2")
    assert served(lab, key) == ("v2", True)
    flushes = lab.agent_state()["feed_flushes"]
    restarts = lab.agent_log().count("flush reason=restart")
    lab.restart_redis(from_rdb=True)
    # whether the agent answers again yet or not, never the v2 cached before the kill
    assert lab.get(key) == "v1"
    assert lab.local("GET", key) == "v1"
    wait_for(lambda: lab.agent_state()["feed_flushes"] > flushes, "a flush after the restart")
    lab.wait_answering()
    assert lab.agent_log().count("flush reason=restart") > restarts
    assert served(lab, key) == ("v1", True)
    assert lab.local("EXISTS", key) == "1"


def test_replicaof_no_one_flushes_and_serves_the_promoted_hosts_own_data(agent_lab):
    """The way back from test_d's REPLICAOF: REPLICAOF NO ONE is a role change (flush,
    then answers once consistent as a master); the promoted host keeps the data it
    replicated, no longer follows the old master, and its own writes over loopback
    are fed."""
    lab, key = agent_lab, "agent:back:%d" % time.monotonic_ns()
    other = lab.start_other_redis()
    try:
        lab.local("SET", key, "from-master", port=PORT + 1)
        lab.replica_of(PORT + 1)
        assert served(lab, key, marker_port=PORT + 1) == ("from-master", True)
        flushes, log_at = lab.agent_state()["feed_flushes"], len(lab.agent_log())
        before = lab.flushes()
        lab.local("REPLICAOF", "NO", "ONE")
        wait_for(lambda: lab.agent_state()["feed_flushes"] > flushes, "a flush back to master")
        lab.wait_answering()
        since = lab.agent_log()[log_at:]
        assert "flush reason=role" in since and "role=master: answering" in since, since
        # at the change (answers stop) and again once reconnected: all for the role
        d = flushed(lab, before)
        assert d.get("role", 0) >= 1 and set(d) == {"role"}, d
        lab.local("SET", key, "old-master-moves-on", port=PORT + 1)   # no longer replicated here
        lab.marker()
        assert lab.get(key) == lab.local("GET", key) == "from-master"
        lab.local("SET", key, "promoted")    # over loopback on the promoted host
        lab.marker()
        assert lab.get(key) == lab.local("GET", key) == "promoted"
        assert served(lab, key) == ("promoted", True)
    finally:
        lab.back_to_master(other)


def test_failover_turns_the_served_master_into_a_replica_that_serves_the_new_masters_writes(agent_lab):
    """A replica of the served Redis (PORT + 1), then FAILOVER on the served master: it
    becomes a replica of the other. The agent flushes (reason role) and answers again
    only as a replica with its link up; a write to the new master reaches the served
    host by the replication stream, the feed reports it, clients through BRC get it."""
    lab, key = agent_lab, "agent:failover:%d" % time.monotonic_ns()
    other = lab.start_other_redis()
    try:
        lab.local("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        lab.cli("SET", key, "v1")
        assert served(lab, key) == ("v1", True)
        lab.local("REPLICAOF", "127.0.0.1", PORT, port=PORT + 1)
        wait_for(lambda: lab.info("replication", port=PORT + 1).get("master_link_status") == "up",
                 "the other Redis in sync as a replica")
        wait_for(lambda: "state=online" in lab.info("replication").get("slave0", ""),
                 "the served master to see its replica online")
        flushes, log_at = lab.agent_state()["feed_flushes"], len(lab.agent_log())
        assert lab.local("FAILOVER", "TIMEOUT", "10000") == "OK"

        def swapped():
            mine, theirs = lab.info("replication"), lab.info("replication", port=PORT + 1)
            return (mine.get("role") == "slave" and mine.get("master_port") == str(PORT + 1)
                    and mine.get("master_link_status") == "up"
                    and mine.get("master_failover_state") == "no-failover"
                    and theirs.get("role") == "master")
        wait_for(swapped, "FAILOVER to complete")
        wait_for(lambda: lab.agent_state()["feed_flushes"] > flushes, "a flush on the role change")
        lab.wait_answering()
        since = lab.agent_log()[log_at:]
        assert "flush reason=role" in since and "role=slave: answering" in since, since
        assert lab.get(key) == lab.local("GET", key) == "v1"
        lab.local("SET", key, "v2", port=PORT + 1)      # the new master
        assert served(lab, key, marker_port=PORT + 1) == ("v2", True)
        assert lab.local("GET", key) == "v2"
    finally:
        try:
            lab.local("CONFIG", "SET", "repl-diskless-sync-delay", "5")
        finally:
            lab.back_to_master(other)


# Lua: SET ARGV[1]..i = ARGV[4] for i in ARGV[2]..ARGV[3] (one command, no per-key round trip)
POPULATE = ("for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do "
            "redis.call('SET', ARGV[1] .. i, ARGV[4]) end return 1")
HOT, COLD, LOAD, VALUE = 16, 4000, 1600, "x" * 400


def _populate(lab, prefix, first, last):
    out = lab.local("EVAL", POPULATE, 0, prefix, first, last, VALUE)
    assert out == "1", out                # an OOM refusal is printed, not exit status 1


def _idle_s(lab, key):
    return int(lab.local("OBJECT", "IDLETIME", key))   # does not refresh the key's clock


def _hot_keys_surviving_eviction(lab, run, serve):
    """One run of the scenario (see the test); returns (hot keys left, keys evicted)."""
    p = "agent:lru:%s:%d:" % (run, time.monotonic_ns())
    cold_buckets = set(lab.bucket_of("%scold:%d" % (p, i)) for i in range(COLD))
    hot = [k for k in ("%shot:%d" % (p, j) for j in range(HOT * 4))
           if lab.bucket_of(k) not in cold_buckets][:HOT]
    lab.local("CONFIG", "SET", "maxmemory", "0")
    lab.local("FLUSHALL")                  # the same start for both runs
    lab.local("MSET", *[x for k in hot for x in (k, VALUE)])
    lab.marker()                           # their writes fed: the fills are cached
    for k in hot:
        lab.get(k)
    wait_for(lambda: _idle_s(lab, hot[-1]) >= 1, "the hot keys a second older than what follows",
             timeout=5, poll=0.05)
    _populate(lab, p + "cold:", 0, COLD - 1)
    lab.marker()
    wait_for(lambda: _idle_s(lab, "%scold:%d" % (p, COLD - 1)) >= 1,
             "the cold keys a second older than the hot reads", timeout=5, poll=0.05)
    before, touched = lab.counters(), lab.agent_state()["touched_keys"]
    for k in hot:
        for _attempt in range(10):
            b = lab.counters()
            lab.cli("-r", "40", "GET", k)
            if not serve or lab.delta(lab.counters(), b).get("touch_sampled", 0):
                break
        else:
            raise AssertionError("no answer of %s was sampled for TOUCH" % k)
    d = lab.delta(lab.counters(), before)
    if serve:
        # answered in the kernel: Redis saw (almost) none of these reads. A stray miss
        # (a marker sharing a hot key's bucket, a periodic user reload) refreshes that
        # one key's clock as without BRC: a couple are tolerated, not more.
        assert d.get("hit", 0) >= 30 * HOT and d.get("req_get", 0) <= 2, d
        pending = set(hot)
        wait_for(lambda: lab.agent_state()["touched_keys"] - touched >= HOT
                 and not pending & lab.touch_pending(), "the agent's TOUCH of the hot keys")
    else:
        assert d.get("hit", 0) == 0, d
    used = int(lab.info("memory")["used_memory"])
    evicted = int(lab.info("stats")["evicted_keys"])
    lab.local("CONFIG", "SET", "maxmemory", used + 128 * 1024)
    for first in range(0, LOAD, 100):
        _populate(lab, p + "load:", first, first + 99)
    left = int(lab.local("EXISTS", *hot))  # EXISTS does not refresh clocks either
    idle = [_idle_s(lab, k) for k in hot if lab.local("EXISTS", k) == "1"]
    return left, int(lab.info("stats")["evicted_keys"]) - evicted, idle


def test_hot_keys_answered_in_the_kernel_survive_eviction_as_without_brc(agent_lab):
    """maxmemory with allkeys-lru and a hot set: the same scenario with BRC off (the
    reads reach Redis) and serving (the reads are answered in the kernel; Redis learns
    of them only from the agent's sampled, batched TOUCH).

    Deterministic without sleeps: Redis's LRU clock has 1 s resolution, so the order
    is made with bounded polls of OBJECT IDLETIME (which does not refresh the clock):
    hot keys written and filled, then (idle >= 1) the cold keys written, then (their
    idle >= 1) the hot reads, each key until one answer is sampled for TOUCH, and in
    serve mode a wait until the agent reports every hot key TOUCHed. Hot keys are
    chosen in buckets no cold key bumps, so their reads stay kernel answers (the
    test asserts it). The cold load (LOAD keys, maxmemory 128 KiB above use) evicts
    fewer keys than COLD holds, with 10 samples per eviction: true LRU evicts cold
    keys only, so every hot key survives both runs; without the TOUCH the hot keys
    are the oldest in Redis's eyes and go first."""
    lab = agent_lab
    try:
        lab.local("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        lab.local("CONFIG", "SET", "maxmemory-samples", "10")
        lab.brc.configure("off")
        base = _hot_keys_surviving_eviction(lab, "off", serve=False)
        lab.serve()
        with_brc = _hot_keys_surviving_eviction(lab, "serve", serve=True)
    finally:
        lab.local("CONFIG", "SET", "maxmemory", "0")
        lab.local("CONFIG", "SET", "maxmemory-policy", "noeviction")
        lab.local("CONFIG", "SET", "maxmemory-samples", "5")
        lab.serve()
        lab.local("FLUSHALL")
    for _left, evicted, _idle in (base, with_brc):
        assert evicted >= 500, (base, with_brc)          # the load did evict
    assert base[0] == HOT, base                          # the scenario holds without BRC
    assert with_brc[0] == HOT, (with_brc, base)          # and so with BRC serving


def test_a_hold_that_outlives_a_users_load_is_followed_by_another_load(agent_lab):
    """A client segment BRC cannot parse (it carries IP options) reaches Redis: it may
    change who reads what, so answers wait for a users load made after its hold. The
    load the epoch's move starts at once comes too early to count; the agent loads again
    after the hold instead of leaving answers stopped until its periodic reload."""
    from ansible.module_utils import brc_agent
    from blackbox import Delta, client, gets_answered
    lab, key = agent_lab, "agent:hold:%d" % time.monotonic_ns()
    lab.cli("SET", key, "v")
    c = client(lab)
    try:
        wait_for(lambda: gets_answered(lab, c, key, 1) == ([b"v"], 1), "a GET of %s answered" % key)
        nops = b"\x01\x01\x01\x00"      # three IPOPT_NOOP and IPOPT_END: options, changing nothing
        with Delta(lab) as d:
            odd = client(lab, sockopts=[(socket.IPPROTO_IP, socket.IP_OPTIONS, nops)])
            try:
                assert odd.call("PING") == "PONG"
            finally:
                odd.close()
        assert d["pkt_ip_options"] >= 1 and d["auth_unseen"] >= 1, d
        # bounded well below the periodic reload: the wait is for the load after the hold
        wait_for(lambda: gets_answered(lab, c, key, 1) == ([b"v"], 1), "answers after the hold",
                 timeout=brc_agent.AUTH_EVERY_S / 3, poll=0.05)
    finally:
        c.close()
