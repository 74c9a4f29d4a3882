"""The agent's decisions on Redis's replies, without a Redis: what counts as a
change that needs a flush, when the data set is not one to answer from, when the
tracking redirect is live, and the feed's batches (run through the real programs
in tests/agent/test_agent.py)."""
from ansible.module_utils import brc_agent

MASTER = "# Server\r\nrun_id:aaa\r\n# Replication\r\nrole:master\r\n# Persistence\r\nloading:0\r\n"


def info(**fields):
    out = brc_agent.parse_info(MASTER)
    out.update(fields)
    return out


def test_info_parses_fields_and_skips_section_headers():
    assert brc_agent.parse_info(MASTER.encode()) == {"run_id": "aaa", "role": "master", "loading": "0"}


def test_a_new_run_id_role_or_master_is_a_change_needing_a_flush():
    base = brc_agent.server_state(info())
    assert brc_agent.change_reason(None, base) == "resync"
    assert brc_agent.change_reason(base, brc_agent.server_state(info())) is None
    assert brc_agent.change_reason(base, brc_agent.server_state(info(run_id="bbb"))) == "restart"
    replica = brc_agent.server_state(info(role="slave", master_host="10.0.0.9", master_port="6379",
                                          master_link_status="up"))
    assert brc_agent.change_reason(base, replica) == "role"
    moved = dict(replica, master=("10.0.0.8", "6379", "up"))
    assert brc_agent.change_reason(replica, moved) == "replication"


def test_loading_and_a_replica_without_its_master_link_are_not_answered_from():
    assert brc_agent.not_ready(info()) is None
    assert brc_agent.not_ready(info(loading="1")) == "loading"
    assert brc_agent.not_ready(info(role="slave", master_link_status="down")) == "replica_link_down"
    assert brc_agent.not_ready(info(role="slave", master_link_status="up")) is None


def test_tracking_is_live_only_bcast_on_and_redirected_to_the_subscriber():
    live = [b"flags", [b"on", b"bcast"], b"redirect", 7, b"prefixes", []]
    assert brc_agent.tracking_live(live, 7)
    assert not brc_agent.tracking_live(live, 8)
    assert not brc_agent.tracking_live([b"flags", [b"off"], b"redirect", -1, b"prefixes", []], 7)
    assert not brc_agent.tracking_live([b"flags", [b"on", b"bcast", b"broken_redirect"], b"redirect", 7,
                                        b"prefixes", []], 7)



def _reasons_in_agent_code():
    """Every reason string module_utils/brc_agent.py can flush with, read from its
    source: the first argument of Lost(), flush() and stop_answers() calls (a
    string, or `call() or "string"`), and what not_ready() and change_reason()
    return (the calls pass those on by variable). Any other kind of argument is
    returned apart, so a new path the walk cannot follow fails the test instead
    of escaping it."""
    import ast
    tree = ast.parse(open(brc_agent.__file__.replace(".pyc", ".py")).read())
    found, unfollowed = set(), []

    def strings(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.BoolOp):
            return set().union(*(strings(v) for v in node.values))
        return set()

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in ("not_ready", "change_reason"):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    found |= strings(ret.value)
        if not isinstance(node, ast.Call) or not node.args:
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name not in ("Lost", "flush", "stop_answers"):
            continue
        arg = node.args[0]
        got = strings(arg)
        found |= got
        by_variable = (isinstance(arg, ast.Name) and arg.id in ("why", "reason")) or \
            (isinstance(arg, ast.Attribute) and arg.attr == "reason")
        if not got and not by_variable:
            unfollowed.append(ast.dump(arg))
    return found, unfollowed


def test_every_reason_the_agent_flushes_with_has_its_own_counter_in_the_contract():
    """A reason missing from BRC_AGENT_FLUSH_REASONS would be counted as `other`
    (and a typo would hide there); a reason the contract names but the agent never
    uses is a dead slot (retire it as RETIRED_n instead)."""
    from ansible.module_utils.brc_contract import load_contract
    from fixtures.paths import BPF_DIR
    contract = load_contract(BPF_DIR)
    used, unfollowed = _reasons_in_agent_code()
    assert not unfollowed, "reasons passed in a form the test cannot read: %s" % unfollowed
    assert len(used) >= 15, used              # the walk found the agent's reasons at all
    named = set(contract.agent_flush_reasons)
    assert not used - named, "reasons the contract lacks: %s" % sorted(used - named)
    unused = set(r for r in named - used if r != "other" and not r.startswith("retired_"))
    assert not unused, "contract reasons the agent never uses: %s" % sorted(unused)
    assert set(brc_agent.NOT_READY) <= named


def test_a_loading_reply_is_lost_for_loading_not_for_redis_down():
    """redis-py makes -LOADING a BusyLoadingError, a ConnectionError: without care a
    restart's or DEBUG RELOAD's loading would be counted as Redis down."""
    import redis
    ex = redis.exceptions
    assert brc_agent.redis_lost(ex, ex.BusyLoadingError("Redis is loading")).reason == "loading"
    assert brc_agent.redis_lost(ex, ex.ConnectionError("refused")).reason == "redis_down"
    assert brc_agent.redis_lost(ex, ex.TimeoutError("timed out")).reason == "redis_down"
    assert brc_agent.redis_lost(ex, ex.AuthenticationError("WRONGPASS")).reason == "redis_down"
    assert brc_agent.redis_lost(ex, ex.ResponseError("NOPERM")).reason == "redis_error"
