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

