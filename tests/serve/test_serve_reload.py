"""A reload (an upgrade of the programs) between a served GET and the client's
retransmission of it: the new build reuses the pinned maps, brc_served among
them, so the retransmission gets the identical bytes, not a reset. Two real bcc
builds share one pin directory on bpffs; packets go through BPF_PROG_TEST_RUN
with the flow keys of test_serve_packets.py (never on the wire)."""
import os
import shutil
import subprocess
from types import SimpleNamespace

from ansible.module_utils import brc_auth, brc_maps
from brc_testlib import BPF_DIR, CONTRACT, brc_compile, bulk, resp
from test_serve_packets import TC_ACT_REDIRECT, _conn, miss_and_fill


def test_resend_after_a_reload_gets_identical_bytes():
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    pin = "/sys/fs/bpf/brcsr-test-%d" % os.getpid()
    try:
        old = brc_compile.compile_programs(BPF_DIR, pin_dir=pin)
        brc_maps.configure(pin, CONTRACT, {"mode": "serve", "port": 6379, "max_key_len": 64,
                                           "max_value_len": 512, "max_age": 60})
        # what brc_auth loads from a Redis whose default user is open (no Redis here)
        everyone = CONTRACT.constants["BRC_USER_READ_ALL"] | CONTRACT.constants["BRC_USER_OPEN"]
        with brc_auth.PinnedAuthMaps(pin, CONTRACT) as maps:
            brc_auth.load(maps, CONTRACT, lambda: {"users": {"default": everyone}, "timeout": 0})
        p = _conn(SimpleNamespace(brc=SimpleNamespace(build=old)), 41300, 0xFFFFFFF0, 0x1000)
        get, val = resp("GET", "brcsr:key"), bulk("answered-before-the-reload")
        miss_and_fill(p, get, val)
        # the old build answers the next GET in the kernel
        p.cts += 1
        req = p.c2s("PA", get)
        rv, served = p.run("ingress", req)
        assert rv == TC_ACT_REDIRECT

        new = brc_compile.compile_programs(BPF_DIR, pin_dir=pin)
        p.prog = new.programs
        before = brc_maps.read_counters(pin, CONTRACT)
        rv, again = p.run("ingress", req)        # the reply was lost: the client retransmits
        after = brc_maps.read_counters(pin, CONTRACT)
        assert rv == TC_ACT_REDIRECT and again == served
        assert after["resent"] - before["resent"] == 1 and after["reset"] == before["reset"]
        p.run("ingress", p.c2s("R"))
    finally:
        shutil.rmtree(pin, ignore_errors=True)
