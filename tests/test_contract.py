"""The contract header parses, and its layouts are what the C compiler sees."""
import ctypes

from ansible.module_utils.brc_contract import load_contract

from fixtures.paths import BPF_DIR


def test_contract_parses_names_and_modes():
    contract = load_contract(BPF_DIR)
    assert contract.modes == {"off": 0, "observe": 1, "serve": 2}
    assert len(contract.counters) == len(set(contract.counters))
    assert len(contract.counters) <= contract.constants["BRC_STATS_SLOTS"]
    assert contract.latency_classes[:3] == ["get", "set", "other"]
    assert ctypes.sizeof(contract.structs["brc_config"]) % 8 == 0


def test_layout_digest_ignores_counter_docs_but_not_struct_changes():
    text = open(BPF_DIR + "/brc_contract.h").read()
    from ansible.module_utils.brc_contract import Contract
    base = Contract(text).layout_digest
    assert Contract(text.replace("TCP segments", "Segments")).layout_digest == base
    assert Contract(text.replace("__u32 verify_sample;", "__u64 verify_sample;")).layout_digest != base


def test_every_contract_map_is_pinned_and_reused():
    """The maps the contract names (BRC_MAP_*) are exactly the ones the loader
    pins and reuses across upgrades: a map added to one list only would either
    lose its contents on every upgrade or escape the layout check."""
    from ansible.module_utils.brc_bpf import persistent_map_names
    contract = load_contract(BPF_DIR)
    named = sorted(v for k, v in contract.strings.items() if k.startswith("BRC_MAP_"))
    assert named == sorted(persistent_map_names())
