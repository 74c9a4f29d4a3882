"""The contract header parses, and its layouts are what the C compiler sees."""
import ctypes

import pytest

from ansible.module_utils.brc_commands import LATENCY_NAMES
from ansible.module_utils.brc_contract import load_contract

from fixtures.paths import BPF_DIR


def test_contract_parses_names_and_modes():
    contract = load_contract(BPF_DIR)
    assert contract.modes == {"off": 0, "observe": 1, "serve": 2}
    assert len(contract.counters) == len(set(contract.counters))
    assert len(contract.counters) <= contract.constants["BRC_STATS_SLOTS"]
    assert contract.request_groups == ["get", "set", "other"]
    names = LATENCY_NAMES
    assert names[contract.constants["BRC_LAT_ID_OTHER"]] == "other"
    assert names[contract.constants["BRC_LAT_ID_GET"]] == "get"
    assert names[contract.constants["BRC_LAT_ID_MGET"]] == "mget"
    assert len(names) == len(set(names)) <= contract.latency_ids
    assert ctypes.sizeof(contract.structs["brc_config"]) % 8 == 0


def test_layout_digest_ignores_counter_docs_but_not_struct_changes():
    text = open(BPF_DIR + "/brc_contract.h").read()
    from ansible.module_utils.brc_contract import Contract
    base = Contract(text).layout_digest
    assert Contract(text.replace("TCP segments", "Segments")).layout_digest == base
    assert Contract(text.replace("__u32 verify_sample;", "__u64 verify_sample;")).layout_digest != base


def test_every_contract_map_is_pinned_and_reused():
    """The maps the contract names (BRC_MAP_*) are exactly the ones brc_maps.h
    declares persistent (BRC_PERSISTENT), and every tail-call slot names a program
    of brc.c: a map in one list only would either lose its contents on every
    upgrade or escape the layout check (tests/bpf checks the pins of a real build)."""
    import os
    import re
    contract = load_contract(BPF_DIR)
    maps_h = open(os.path.join(BPF_DIR, "brc_maps.h")).read()
    declared = re.findall(r"^BRC_PERSISTENT(?:_F)?\([^,]+,[^,]+,[^,]+,\s*(\w+)\s*,", maps_h, re.M)
    assert sorted(declared) == sorted(contract.persistent_maps)
    brc_c = open(os.path.join(BPF_DIR, "brc.c")).read()
    (array, slots), = contract.prog_arrays.items()
    assert array == "brc_jmp" and [slot for slot, _f in slots] == list(range(len(slots)))
    for _slot, func in slots:
        assert re.search(r"^int %s\(struct __sk_buff \*skb\)" % func, brc_c, re.M), func


def test_agent_flush_reasons_come_from_the_header_with_other_at_slot_0():
    """The reasons are the header's BRC_AGENT_FLUSH_REASONS (no copy in Python), in
    slot order; a reason the header lacks counts as `other`, whose slot never moves;
    the fixed-capacity array in struct brc_agent holds them all."""
    contract = load_contract(BPF_DIR)
    reasons = contract.agent_flush_reasons
    assert reasons[0] == "other" and len(reasons) == len(set(reasons))
    assert {"restart", "role", "loading", "redis_down", "agent_stop", "agent_release"} <= set(reasons)
    assert [contract.agent_flush_slot(r) for r in reasons] == list(range(len(reasons)))
    assert contract.agent_flush_slot("no_such_reason") == 0
    slots = contract.constants["BRC_AGENT_FLUSH_SLOTS"]
    assert len(reasons) <= slots
    agent = contract.structs["brc_agent"]
    assert agent.flushes_by_reason.size == slots * 8
    # appended at the end: the reports' fields keep their offsets
    assert [f for f, _t in agent._fields_][-1] == "flushes_by_reason"
    assert agent.touched_keys.offset == 7 * 8
    assert all(contract.agent_flush_docs[r] for r in reasons)


def test_an_appended_flush_reason_keeps_the_layout_and_too_many_fail_loudly():
    from ansible.module_utils.brc_contract import Contract, ContractError
    text = open(BPF_DIR + "/brc_contract.h").read()
    block = text[text.index("#define BRC_AGENT_FLUSH_REASONS(X)"):]
    last = next(line for line in block.split("\n")[1:] if not line.endswith("\\"))
    assert last.startswith("\tX(")
    grown = text.replace(last, last + ' \\\n\tX(NEW_ONE, "appended later")')
    assert Contract(grown).agent_flush_reasons[-1] == "new_one"
    assert Contract(grown).layout_digest == Contract(text).layout_digest
    many = "".join(' \\\n\tX(R%d, "r")' % i for i in range(40))
    with pytest.raises(ContractError, match="BRC_AGENT_FLUSH_SLOTS"):
        Contract(text.replace(last, last + many))


def test_a_header_from_before_the_flush_reasons_still_reads():
    """Reports (brc_facts, brc_stats) parse the header shipped to a host, which may be
    an older deploy's: no reason list and no flushes_by_reason field, nothing to report."""
    import re
    from ansible.module_utils.brc_contract import Contract
    text = open(BPF_DIR + "/brc_contract.h").read()
    old = re.sub(r"#define BRC_AGENT_FLUSH_REASONS\(X\)(?:.*\\\n)*.*\n", "", text)
    old = old.replace("__u64 flushes_by_reason[BRC_AGENT_FLUSH_SLOTS];", "")
    contract = Contract(old)
    assert contract.agent_flush_reasons == []
    assert not hasattr(contract.structs["brc_agent"], "flushes_by_reason")


def test_agent_flushes_decode_names_every_reason_and_keeps_unnamed_slots():
    from ansible.module_utils.brc_maps import agent_flushes
    contract = load_contract(BPF_DIR)
    slots = [0] * contract.constants["BRC_AGENT_FLUSH_SLOTS"]
    slots[contract.agent_flush_slot("restart")] = 2
    slots[30] = 5                          # written by a newer agent's longer list
    out = agent_flushes(contract, slots)
    assert out["restart"] == 2 and out["slot_30"] == 5 and out["other"] == 0
    assert set(out) == set(contract.agent_flush_reasons) | {"slot_30"}
