"""module_utils/brc_reconnect: which clients it closes (table-driven, over real CLIENT
LIST lines), how it paces and counts them (a scripted Redis that answers CLIENT LIST and
CLIENT KILL), and its errors against real redis-servers (credentials refused, rights
denied, CLIENT renamed, nothing listening). The lab test (tests/fleet/test_reconnect_lab.py)
covers the module on a real BRC host."""
import pytest

from ansible.module_utils.brc_common import BrcError
from ansible.module_utils import brc_reconnect as rc

from fixtures.redis import RedisServer, free_port

BRC = "10.9.0.11"
PORT = 6379


def line(cid, addr, laddr="%s:%d" % (BRC, PORT), flags="N", age=100, user="default", multi=-1, sub=0, psub=0):
    return ("id=%d addr=%s laddr=%s fd=8 name= age=%d idle=0 flags=%s db=0 sub=%d psub=%d ssub=0 multi=%d "
            "qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=1 events=r cmd=get "
            "user=%s redir=-1 resp=2" % (cid, addr, laddr, age, flags, sub, psub, multi, user))


def judge(tracked=(), since=50.0, **kw):
    return rc.Judge(PORT, [BRC, "2001:db8::2"], [BRC, "127.0.0.1", "10.9.0.99", "2001:db8::2", "2001:db8::99"], lambda ci, cp, si, sp: (ci, cp) in tracked,
                    since, self_id=kw.pop("self_id", 1), **kw)


CASES = [
    # (what, CLIENT LIST line, judge options, expected reason)
    ("pre-attach client over eth0", line(7, "10.9.0.1:40000"), {}, None),
    ("this module", line(1, "127.0.0.1:5000", "127.0.0.1:6379"), {}, "self"),
    ("unix socket", line(7, "/run/redis.sock:0", "/run/redis.sock:0", flags="U"), {}, "unix"),
    ("replica link", line(7, "10.9.0.2:40000", flags="S"), {}, "replication"),
    ("master link", line(7, "10.9.0.2:6379", flags="M"), {}, "replication"),
    ("other port", line(7, "10.9.0.1:40000", "%s:6380" % BRC), {}, "other_port"),
    ("loopback", line(7, "127.0.0.1:40000", "127.0.0.1:6379"), {}, "loopback"),
    ("other address of the host", line(7, "10.9.0.1:40000", "10.9.0.99:6379"), {}, "other_address"),
    ("ipv6 to the BRC interface", line(7, "[2001:db8::1]:40000", "[2001:db8:0::2]:6379"), {}, None),
    ("ipv6 to another address", line(7, "[2001:db8::1]:40000", "[2001:db8::99]:6379"), {}, "other_address"),
    ("from the host itself", line(7, "%s:40000" % BRC), {}, "local"),
    ("the agent's user", line(7, "10.9.0.1:40000", user="brc-agent"), {"keep_users": ["brc-agent"]}, "kept_user"),
    ("in MULTI", line(7, "10.9.0.1:40000", flags="x", multi=2), {}, "multi"),
    ("blocked", line(7, "10.9.0.1:40000", flags="b"), {}, "blocked"),
    ("monitor", line(7, "10.9.0.1:40000", flags="O"), {}, "monitor"),
    ("monitor, opted in", line(7, "10.9.0.1:40000", flags="O"), {"include_monitor": True}, None),
    ("subscriber", line(7, "10.9.0.1:40000", flags="P", sub=1), {}, "pubsub"),
    ("pattern subscriber", line(7, "10.9.0.1:40000", flags="P", psub=2), {}, "pubsub"),
    ("subscriber, opted in", line(7, "10.9.0.1:40000", flags="P", sub=1), {"include_pubsub": True}, None),
    ("followed by BRC", line(7, "10.9.0.1:40000"), {"tracked": {("10.9.0.1", 40000)}}, "tracked"),
    ("younger than the programs, not followed", line(7, "10.9.0.1:40000", age=50), {}, "after_attach"),
    ("one second older", line(7, "10.9.0.1:40000", age=51), {}, None),
]


@pytest.mark.parametrize("what,text,opts,expected", CASES, ids=[c[0] for c in CASES])
def test_judge(what, text, opts, expected):
    (client,) = rc.parse_client_list(text + "\n")
    assert judge(**opts).reason(client) == expected, what


class ScriptedRedis:
    """Answers CLIENT LIST from its clients and CLIENT KILL ID by removing one; on_list
    runs before each CLIENT LIST after the first (a client changing between batches)."""

    def __init__(self, lines, kill_errors=()):
        self.clients = dict((int(l.split()[0][3:]), l) for l in lines)
        self.lists = 0
        self.kills = []
        self.on_list = []
        self.kill_errors = dict(kill_errors)

    def __call__(self, *args):
        if args[:2] == ("CLIENT", "LIST"):
            if self.lists and self.on_list:
                self.on_list.pop(0)(self)
            self.lists += 1
            return ("\n".join(self.clients.values()) + "\n").encode()
        assert args[:3] == ("CLIENT", "KILL", "ID"), args
        cid = int(args[3])
        self.kills.append(cid)
        if cid in self.kill_errors:
            raise self.kill_errors[cid]
        return 1 if self.clients.pop(cid, None) else 0


def pool(n, first=10):
    return [line(first + i, "10.9.0.1:%d" % (40000 + i)) for i in range(n)]


def test_run_closes_the_candidates_in_paced_batches_and_counts_the_rest():
    others = [line(1, "127.0.0.1:5000", "127.0.0.1:6379"), line(2, "10.9.0.2:40000", flags="S"),
              line(3, "127.0.0.1:5001", "127.0.0.1:6379", user="brc-agent")]
    redis = ScriptedRedis(others + pool(7))
    pauses = []
    res = rc.run(redis, judge(), batch_size=3, pause_s=0.5, sleep=pauses.append)
    assert redis.kills == list(range(10, 17))
    assert res["killed"] == 7 and res["killed_ids"] == list(range(10, 17)) and res["kill_failed"] == 0
    assert res["batches"] == 3 and pauses == [0.5, 0.5] and redis.lists == 4
    assert res["clients"] == 10 and res["candidates"] == 7
    assert dict((k, v) for k, v in res["left"].items() if v) == {"self": 1, "replication": 1, "loopback": 1}
    assert rc.summary(res) == "reconnected 7 of 10 clients in 3 batches, 0 failed; left: loopback 1, replication 1, self 1"


def test_check_mode_closes_nothing():
    redis = ScriptedRedis(pool(5))
    res = rc.run(redis, judge(), batch_size=2, check_mode=True, sleep=pytest.fail)
    assert redis.kills == [] and redis.lists == 1
    assert res["would_kill"] == 5 and res["killed"] == 0 and res["batches"] == 3
    assert res["candidate_ids"] == list(range(10, 15))
    assert rc.summary(res, check_mode=True).startswith("would reconnect 5 of 5 clients in 3 batches")


def test_the_result_keeps_clear_of_the_keys_ansible_reads():
    # a count named `failed` or `skipped` would fail or skip the task whenever non-zero
    assert not set(rc.empty_result()) & {"failed", "skipped", "changed", "unreachable", "rc", "msg"}


def test_each_batch_judges_its_clients_again():
    redis = ScriptedRedis(pool(6))

    def change(r):
        r.clients[13] = line(13, "10.9.0.1:40003", flags="x", multi=1)   # opened a MULTI
        del r.clients[14]                                                # went away
    redis.on_list.append(change)
    res = rc.run(redis, judge(), batch_size=3, pause_s=0, sleep=lambda s: None)
    assert redis.kills == [10, 11, 12, 15]
    assert res["killed"] == 4 and res["left"]["multi"] == 1 and res["left"]["gone"] == 1


def test_max_clients_and_a_client_gone_at_the_kill():
    redis = ScriptedRedis(pool(5))
    real = redis.__call__

    def racing(*args):
        if args[:3] == ("CLIENT", "KILL", "ID") and args[3] == "11":
            redis.clients.pop(11)       # closed between CLIENT LIST and the kill: Redis answers 0
        return real(*args)
    res = rc.run(racing, judge(), batch_size=10, max_clients=3, sleep=lambda s: None)
    assert res["killed_ids"] == [10, 12] and res["left"]["gone"] == 1 and res["left"]["over_limit"] == 2


def test_a_failed_kill_is_counted_and_the_run_goes_on():
    redis = ScriptedRedis(pool(3), kill_errors={11: BrcError("Redis at x answered CLIENT KILL with an error: ERR x")})
    res = rc.run(redis, judge(), sleep=lambda s: None)
    assert res["killed_ids"] == [10, 12] and res["kill_failed_ids"] == [11] and res["kill_failed"] == 1
    assert res["errors"] == ["11: Redis at x answered CLIENT KILL with an error: ERR x"]


def test_a_fatal_error_stops_the_run_with_the_counts_so_far():
    redis = ScriptedRedis(pool(3), kill_errors={11: BrcError("denied", "grant", fatal=True)})
    with pytest.raises(BrcError) as e:
        rc.run(redis, judge(), sleep=lambda s: None)
    assert e.value.details["result"]["killed_ids"] == [10]


def test_redis_lost_between_batches_stops_the_run_with_the_counts_so_far():
    redis = ScriptedRedis(pool(4))

    def lost(_r):
        raise BrcError("cannot reach Redis at x", "start it", fatal=True)
    redis.on_list += [lambda r: None, lost]   # the first batch goes through, the second finds Redis gone
    with pytest.raises(BrcError) as e:
        rc.run(redis, judge(), batch_size=2, sleep=lambda s: None)
    assert e.value.details["result"]["killed_ids"] == [10, 11] and e.value.details["result"]["batches"] == 2


def test_flow_key_layout():
    from ansible.module_utils.brc_maps import contract_for
    from fixtures.paths import BPF_DIR

    class Tables(rc.FlowTables):
        def __init__(self):   # the key only: no pinned maps here
            self.key_cls = contract_for(BPF_DIR).structs["brc_flow_key"]
    ports = (40000).to_bytes(2, "little") + (6379).to_bytes(2, "little")
    # struct brc_flow_key: addresses as IPv6 in network order, IPv4 mapped (::ffff:a.b.c.d),
    # ports in host order (little endian here)
    mapped = bytes(10) + b"\xff\xff"
    key = Tables().key("10.0.0.1", 40000, "10.0.0.2", 6379)
    assert key == mapped + bytes([10, 0, 0, 1]) + mapped + bytes([10, 0, 0, 2]) + ports
    key = Tables().key("fd00:bc::2", 40000, "fd00:bc::1", 6379)
    v6 = bytes([0xfd, 0, 0, 0xbc]) + bytes(11)
    assert key == v6 + b"\x02" + v6 + b"\x01" + ports


# --- errors, from real redis-servers ------------------------------------------------------

def _call(server, user=None, password=None):
    return rc.connect("127.0.0.1", server.port, None, user, password, 2.0)


def test_real_redis_lists_and_kills_one_client():
    import redis
    server = RedisServer()
    try:
        victim = redis.Redis(port=server.port, client_name="victim")
        victim.ping()
        call = _call(server)
        me = call("CLIENT", "ID")
        (entry,) = [c for c in rc.parse_client_list(call("CLIENT", "LIST")) if c.get("name") == "victim"]
        assert int(call("CLIENT", "KILL", "ID", entry["id"])) == 1
        assert int(call("CLIENT", "KILL", "ID", entry["id"])) == 0   # gone: 0, not an error
        assert [c["id"] for c in rc.parse_client_list(call("CLIENT", "LIST"))] == [str(me)]
        call.client.close()
    finally:
        server.stop()


def test_errors_name_the_fix():
    import redis
    server = RedisServer(extra=["--requirepass", "pw"])
    try:
        with pytest.raises(BrcError) as e:
            _call(server, password="wrong")("CLIENT", "ID")
        assert "refused the toolkit's credentials" in e.value.msg and e.value.details["fatal"]
        admin = redis.Redis(port=server.port, password="pw")
        admin.acl_setuser("weak", enabled=True, passwords=["+weakpw"], commands=["+client|id", "+client|list"])
        call = _call(server, user="weak", password="weakpw")
        call("CLIENT", "LIST")
        with pytest.raises(BrcError) as e:
            call("CLIENT", "KILL", "ID", "12345")
        assert "refused CLIENT KILL to the toolkit's user weak" in e.value.msg
        assert "+client|kill" in e.value.fix and e.value.details["fatal"]
    finally:
        server.stop()
    renamed = RedisServer(extra=["--rename-command", "CLIENT", ""])
    try:
        with pytest.raises(BrcError) as e:
            _call(renamed)("CLIENT", "LIST")
        assert "CLIENT is renamed or disabled" in e.value.msg and "restore CLIENT" in e.value.fix
    finally:
        renamed.stop()
    with pytest.raises(BrcError) as e:
        rc.connect("127.0.0.1", free_port(), None, None, None, 1.0)("CLIENT", "ID")
    assert e.value.msg.startswith("cannot reach Redis at 127.0.0.1:") and e.value.details["fatal"]
