"""A whole connection through brc_ingress + brc_egress (BPF_PROG_TEST_RUN):
handshake, fill, would-hit, invalidation, close -- with ISNs on both sides of
2^31, with and without TCP options.

    client                      programs                       server
      SYN ----------------> ingress: flow created
                            egress:  sequence space known <---- SYN-ACK
      SET k v1 -----------> pending 1, bucket(k) bumped + in flight
                            egress: pending 0, marks released <- +OK
      GET k --------------> miss, tracked (fill)
                            egress: fill "$2\\r\\nv1\\r\\n"  <----- $2 v1
      GET k --------------> would answer: tracked (verify)
                            egress: bytes equal: would_hit <--- $2 v1
      SET k v2 -----------> invalidation
      GET k --------------> miss (version changed)
      FIN, FIN -----------> flow released
"""
import pytest

from brc_testlib import Conn, Delta, bulk, counted_get, resp, pending, marks

ISNS = [(1000, 5000), (0xFFFFFFF0, 0x80000010), (0x80000000, 0x7FFFFFF0), (0xFFFFFFFF, 0xFFFFFFFF)]


@pytest.mark.parametrize("cisn,sisn", ISNS)
@pytest.mark.parametrize("timestamps", [True, False])
def test_full_flow(brc, port, cisn, sisn, timestamps):
    key = "flow:%d" % port
    with Delta(brc) as d:
        c = Conn(brc, port, cisn=cisn, sisn=sisn, timestamps=timestamps).handshake()
    assert d["flows_tracked"] == 1
    f = brc.flow(c)
    assert f.state == 2 and f.cli_next == (cisn + 1) & 0xFFFFFFFF and f.srv_next == (sisn + 1) & 0xFFFFFFFF

    with Delta(brc) as d:
        c.send(resp("SET", key, "v1"))
        assert pending(brc.flow(c)) == 1
        assert marks(brc.flow(c)) == 1
        c.reply(b"+OK\r\n")
    assert d["req_set"] == 1 and d["invalidate_key"] == 1 and d["replies"] == 1
    assert pending(brc.flow(c)) == 0 and marks(brc.flow(c)) == 0

    d = counted_get(brc, c, key, "v1")
    assert d["req_get"] == 1 and d["miss"] == 1 and d["fill"] == 1, d.nonzero()
    assert brc.cache_get(key) == b"$2\r\nv1\r\n"

    d = counted_get(brc, c, key, "v1")
    assert d["would_hit"] == 1 and d["mismatch"] == 0 and d["miss"] == 0, d.nonzero()

    with Delta(brc) as d:
        c.roundtrip(resp("SET", key, "v2"), b"+OK\r\n")
        c.roundtrip(resp("GET", key), bulk("v2"))
        c.roundtrip(resp("GET", key), bulk("v2"))
    assert d["invalidate_key"] == 1 and d["miss"] == 1 and d["fill"] == 1 and d["would_hit"] == 1
    assert d["mismatch"] == 0
    assert pending(brc.flow(c)) == 0
    lat = brc.latency()
    assert lat.get("get") and lat.get("set")

    with Delta(brc) as d:
        c.close()
    assert d["flows_closed"] == 1
    assert brc.flow(c) is None


def test_oracle_reports_a_wrong_cache(brc, port):
    """A write BRC cannot see (another port, expiry) changes the value: the next
    would-be hit is compared with Redis's real reply and counted as mismatch."""
    key = "oracle:%d" % port
    c = Conn(brc, port).handshake()
    c.roundtrip(resp("GET", key), bulk("old"))
    d = counted_get(brc, c, key, "new")
    assert d["mismatch"] == 1 and d["would_hit"] == 0


def test_nil_reply_fills_and_verifies(brc, port):
    key = "nil:%d" % port
    c = Conn(brc, port).handshake()
    with Delta(brc) as d:
        c.roundtrip(resp("GET", key), bulk(None))
        c.roundtrip(resp("GET", key), bulk(None))
    assert d["fill"] == 1 and d["would_hit"] == 1


def test_layout_probe_without_loading(brc_build):
    """load=False: maps only, quick; the same declared layout as a full build."""
    import time
    from brc_testlib import BPF_DIR, brc_compile
    t = time.time()
    probe = brc_compile.compile_programs(BPF_DIR, load=False)
    assert probe.programs == {} and time.time() - t < 15
    assert probe.declared_layout() == brc_build.declared_layout()
    assert set(brc_build.declared_layout()) == set(brc_compile.persistent_map_names(brc_compile.load_contract(BPF_DIR)))


def test_pinned_maps_are_created_and_reused(brc_build, tmp_path):
    import os
    import subprocess
    from brc_testlib import BPF_DIR, brc_compile
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    pin = "/sys/fs/bpf/brcbt-test-%d" % os.getpid()
    try:
        a = brc_compile.compile_programs(BPF_DIR, pin_dir=pin, load=False)
        names = sorted(os.listdir(pin))
        assert names == sorted(brc_compile.persistent_map_names(brc_compile.load_contract(BPF_DIR)))
        from ansible.module_utils import brc_pins
        for n in names:
            want = a.declared_layout()[n]
            info = brc_pins.pinned_info(os.path.join(pin, n), "map")
            assert dict((k, info[k]) for k in want) == want
        a.map_fd("brc_stats")
        b = brc_compile.compile_programs(BPF_DIR, pin_dir=pin, load=False)
        for name in names:
            ids = [brc_pins.map_info(x.map_fd(name))["id"] for x in (a, b)]
            assert ids[0] == ids[1], "%s was not reused" % name
    finally:
        import shutil
        shutil.rmtree(pin, ignore_errors=True)


def test_contract_layouts_match_what_the_compiler_built(brc_build):
    """module_utils/brc_contract.py's ctypes structs have the sizes clang gave
    the maps (the toolkit reads and writes these maps through them)."""
    import ctypes
    from brc_testlib import CONTRACT
    layout = brc_build.declared_layout()
    shapes = {"brc_config": (None, "brc_config"), "brc_flows": ("brc_flow_key", "brc_flow"),
              "brc_cache": ("brc_cache_key", "brc_cache_entry"), "brc_keyver": (None, "brc_bucket"),
              "brc_global": (None, "brc_global"), "brc_replybuf": ("brc_flow_key", "brc_replybuf"),
              "brc_served": ("brc_flow_key", "brc_served")}
    for name, (key, value) in shapes.items():
        assert layout[name]["value_size"] == ctypes.sizeof(CONTRACT.structs[value]), name
        if key:
            assert layout[name]["key_size"] == ctypes.sizeof(CONTRACT.structs[key]), name
    assert layout["brc_stats"]["max_entries"] == CONTRACT.constants["BRC_STATS_SLOTS"]
    assert layout["brc_latency"]["max_entries"] == CONTRACT.latency_ids * CONTRACT.latency_slots
