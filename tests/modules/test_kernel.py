"""module_utils against the real kernel: a real bpffs, real bcc builds of bpf/, a veth
pair and real TCP traffic, each test inside its own throwaway namespaces (in_netns)."""
import pytest

pytestmark = pytest.mark.usefixtures("kernel")


def test_bpffs_mount_unmount_and_foreign_mounts(in_netns):
    r = in_netns("""
        from ansible.module_utils import brc_bpffs
        from ansible.module_utils.brc_pins import bpffs_at
        st = STATE + "/state"
        out = {}
        out["before"] = bpffs_at("/sys/fs/bpf")
        out["check"] = brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "mounted", check_mode=True, state_path=st)
        out["after_check"] = bpffs_at("/sys/fs/bpf") or os.path.exists(st)
        out["mount"] = brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "mounted", state_path=st)
        out["after"] = bpffs_at("/sys/fs/bpf")
        out["again"] = brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "mounted", state_path=st)
        out["umount"] = brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "unmounted", state_path=st)
        out["gone"] = bpffs_at("/sys/fs/bpf")
        sh("mount -t bpf nodev /sys/fs/bpf")          # someone else's bpffs, odd source name
        out["foreign"] = brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "mounted", state_path=st)
        out["foreign_umount"] = brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "unmounted", state_path=st)
        out["still"] = bpffs_at("/sys/fs/bpf")
        emit(out)
    """)
    assert r["before"] is False and r["after"] is True and r["gone"] is False
    assert r["check"]["changed"] and r["after_check"] is False
    assert r["mount"]["changed"] and r["mount"]["owned"]
    assert not r["again"]["changed"]
    assert r["umount"]["changed"]
    assert not r["foreign"]["changed"] and not r["foreign"]["owned"]
    assert not r["foreign_umount"]["changed"] and r["still"] is True


LIFECYCLE = r"""
import ctypes, json, re, shutil, tempfile
from ansible.module_utils import brc_build, brc_tc, brc_maps, brc_pins
from ansible.module_utils.brc_common import BrcError, read_json
from ansible.module_utils.brc_contract import load_contract

mount_bpffs()
veth(PEER)
srv = tcp_server()
out = {}
c = load_contract(BPF_DIR)
from ansible.module_utils.brc_compile import persistent_map_names
persistent = persistent_map_names(c)

def install(src=BPF_DIR, **kw):
    return brc_build.install(IF, src, ROOT, state_dir=STATE, **kw)

def ids():
    return {n: m["id"] for n, m in brc_pins.pinned_maps(PD).items()}

out["first"] = install()
out["pins"] = brc_pins.list_pins(PD)
out["second"] = install()
out["check_predict"] = install(check_mode=True, predict_change=True)
out["ids_after_check"] = brc_pins.pinned_programs(PD)

out["attach"] = brc_tc.attach(IF, PD, state_dir=STATE)
out["attach_again"] = brc_tc.attach(IF, PD, state_dir=STATE)
# mode off let untracked connections' packets by unseen: leaving it forgets their records
with brc_pins.PinnedMap(os.path.join(PD, c.map_name("untracked"))) as m:
    m.update(b"\x01" * m.info["key_size"], bytes(m.info["value_size"]))
out["cfg"] = brc_maps.configure(PD, c, {"mode": "observe", "port": 6379, "max_age": 30})
with brc_pins.PinnedMap(os.path.join(PD, c.map_name("untracked"))) as m:
    out["untracked_after_cfg"] = m.count()
out["cfg_again"] = brc_maps.configure(PD, c, {"mode": "observe", "port": 6379, "max_age": 30})
out["cfg_check"] = brc_maps.configure(PD, c, {"mode": "serve"}, check_mode=True)
out["mode_after_check"] = brc_maps.read_config(PD, c)["mode"]

client_traffic(PEER, n=5)
out["counters1"] = brc_maps.read_counters(PD, c)
record = read_json(brc_build.build_record_path(IF, STATE))
out["latency"] = brc_maps.latency_summary(brc_maps.read_latency(PD, c, brc_maps.latency_names(c, record)))

def upgrade(base, comment):
    # install a copy of base that differs by a comment: (result, {map: kept}, sources)
    d = tempfile.mkdtemp(prefix="brcmt-up-")
    shutil.rmtree(d); shutil.copytree(base, d)
    with open(d + "/brc.c", "a") as f:
        f.write("\n/* %s */\n" % comment)
    before = ids()
    res = install(src=d)
    return res, {n: ids().get(n) == before[n] for n in persistent}, d

# Upgrade with a harmless source change: maps (and their contents) survive.
out["upgrade"], out["maps_same"], up = upgrade(BPF_DIR, "upgrade test")
out["counters2"] = brc_maps.read_counters(PD, c)
out["reattach"] = brc_tc.attach(IF, PD, state_dir=STATE)
with brc_tc.Tc(IF) as tc:
    out["filters"] = {d: tc.filters(d) for d in ("ingress", "egress")}
client_traffic(PEER, n=3)
out["counters3"] = brc_maps.read_counters(PD, c)

# A build whose command table is numbered differently recreates only the
# histograms (their counts would carry the wrong names), without reset_maps.
rec_path = brc_build.build_record_path(IF, STATE)
rec = read_json(rec_path)
rec["latency_names"] = list(reversed(rec["latency_names"]))
with open(rec_path, "w") as f:
    json.dump(rec, f)
out["renumbered"], out["renumbered_same"], up = upgrade(up, "renumbered command table")

# Layout change (stats capacity): refused, nothing touched; then reset_maps.
lay = tempfile.mkdtemp(prefix="brcmt-lay-")
shutil.rmtree(lay); shutil.copytree(up, lay)
h = open(lay + "/brc_contract.h").read()
h = re.sub(r"#define BRC_STATS_SLOTS (\d+)", lambda m: "#define BRC_STATS_SLOTS %d" % (2 * int(m.group(1))), h)
open(lay + "/brc_contract.h", "w").write(h)
progs_before, maps_before = brc_pins.pinned_programs(PD), ids()
try:
    install(src=lay)
    out["refused"] = None
except BrcError as e:
    out["refused"] = {"text": e.text, "details": e.details}
out["untouched"] = brc_pins.pinned_programs(PD) == progs_before and ids() == maps_before
out["reset"] = install(src=lay, reset_maps=True)
out["reset_ids"] = {n: ids().get(n) != maps_before[n] for n in persistent}
c2 = load_contract(lay)
brc_tc.attach(IF, PD, state_dir=STATE)
client_traffic(PEER, n=2)
out["stats_reset_check"] = brc_maps.reset_stats(PD, c2, check_mode=True)
out["stats_reset"] = brc_maps.reset_stats(PD, c2)
out["stats_reset_again"] = brc_maps.reset_stats(PD, c2)
out["counters_after_reset"] = brc_maps.read_counters(PD, c2)

# A layout change of the flow tables while a connection answered in the kernel is open
# (its key in brc_flows and in brc_served): refused even with reset_maps, nothing
# touched; once it is gone, reset_maps drops the tables.
fl = tempfile.mkdtemp(prefix="brcmt-flow-")
shutil.rmtree(fl); shutil.copytree(lay, fl)
h = open(fl + "/brc_contract.h").read()
h = h.replace("struct brc_flow {\n", "struct brc_flow {\n\t__u64 test_layout;\n", 1)  # brc_flows' value grows
open(fl + "/brc_contract.h", "w").write(h)
served_key = b"\x5a" * ctypes.sizeof(c2.structs["brc_flow_key"])
with brc_pins.PinnedMap(PD + "/brc_flows") as m:
    m.update(served_key, b"\0" * m.info["value_size"])
with brc_pins.PinnedMap(PD + "/brc_served") as m:
    m.update(served_key, b"\0" * m.info["value_size"])
progs_before, maps_before = brc_pins.pinned_programs(PD), ids()
try:
    install(src=fl, reset_maps=True)
    out["flows_refused"] = None
except BrcError as e:
    out["flows_refused"] = {"text": e.text, "details": e.details}
out["flows_untouched"] = brc_pins.pinned_programs(PD) == progs_before and ids() == maps_before
with brc_pins.PinnedMap(PD + "/brc_served") as m:
    m.delete(served_key)
out["flows_reset"] = install(src=fl, reset_maps=True)

out["detach"] = brc_tc.detach(IF, state_dir=STATE)
out["detach_again"] = brc_tc.detach(IF, state_dir=STATE)
with brc_tc.Tc(IF) as tc:
    out["clsact_left"] = tc.clsact_present()
# A clsact that was there before is not ours: left in place on detach.
sh("tc qdisc add dev brcmt0 clsact")
out["attach_foreign"] = brc_tc.attach(IF, PD, state_dir=STATE)
out["detach_foreign"] = brc_tc.detach(IF, state_dir=STATE)
with brc_tc.Tc(IF) as tc:
    out["foreign_clsact_left"] = tc.clsact_present()
out["remove"] = brc_build.remove(IF, ROOT, state_dir=STATE)
out["pin_root_left"] = os.path.exists(ROOT)
emit(out)
"""


def test_program_tc_config_stats_lifecycle(in_netns):
    # several real builds (bcc compile + verifier, ~1 min each on a busy machine): a bound
    # for a hang, not a timing
    r = in_netns(LIFECYCLE, peer=True, timeout=900)
    first = r["first"]
    assert first["changed"] and set(first["programs"]) == {"ingress", "egress"}
    assert {"prog_ingress", "prog_egress", "brc_config", "brc_stats", "brc_latency"} <= set(r["pins"])
    assert first["headers"]["kind"] in ("exact", "fallback")
    # idempotent by source hash and program id/tag
    assert not r["second"]["changed"] and r["second"]["programs"] == first["programs"]
    # one bcc run for a first build, none when up to date (counts, never times)
    assert first["timings"]["compiles"] == 1 and r["second"]["timings"]["compiles"] == 0
    assert r["check_predict"]["changed"]
    assert {d: p["id"] for d, p in r["ids_after_check"].items()} == {d: p["id"] for d, p in first["programs"].items()}
    # tc
    assert r["attach"]["changed"] and r["attach"]["clsact_owned"]
    assert {d: a["id"] for d, a in r["attach"]["attached"].items()} == {d: p["id"] for d, p in first["programs"].items()}
    assert not r["attach_again"]["changed"]
    # config
    changed, before, after, flushed = r["cfg"]
    assert flushed == 0            # leaving off with an empty cache removes nothing
    assert changed and before["mode"] == "off" and after["mode"] == "observe" and after["max_age"] == 30
    assert r["untracked_after_cfg"] == 0
    assert not r["cfg_again"][0]
    assert r["cfg_check"][0] and r["mode_after_check"] == "observe"
    # real traffic moved the counters in both directions
    assert r["counters1"]["pkt_ingress"] > 0 and r["counters1"]["pkt_egress"] > 0
    # one histogram per command, named by the build's record: the 5 PINGs, and GET always
    assert r["latency"]["ping"]["count"] == 5 and r["latency"]["get"]["count"] == 0
    assert set(r["latency"]) == {"ping", "get"}
    # upgrade: new programs, same maps, stats kept, filter replaced in place
    up = r["upgrade"]
    assert up["changed"] and up["programs"]["ingress"]["id"] != first["programs"]["ingress"]["id"]
    assert up["timings"]["compiles"] == 2     # the layout probe, then the build
    assert all(r["maps_same"].values()) and sorted(up["maps_reused"]) == sorted(r["maps_same"])
    assert r["counters2"]["pkt_ingress"] >= r["counters1"]["pkt_ingress"]
    assert r["reattach"]["changed"]
    assert r["reattach"]["attached"]["ingress"]["id"] == up["programs"]["ingress"]["id"]
    for d in ("ingress", "egress"):
        assert len(r["filters"][d]) == 1  # replaced, not added next to the old one
    assert r["counters3"]["pkt_ingress"] > r["counters2"]["pkt_ingress"]
    renum = r["renumbered"]
    assert renum["changed"] and renum["maps_reset"] == ["brc_latency"]
    assert [n for n, same in r["renumbered_same"].items() if not same] == ["brc_latency"]
    # layout change refused with the fix, nothing touched; reset_maps drops only that map
    assert r["refused"] and "reset_maps" in r["refused"]["text"]
    assert [m["map"] for m in r["refused"]["details"]["mismatches"]] == ["brc_stats"]
    assert r["untouched"]
    assert r["reset"]["changed"] and r["reset"]["maps_reset"] == ["brc_stats"]
    assert r["reset_ids"].pop("brc_stats") is True and not any(r["reset_ids"].values())
    assert r["stats_reset_check"] is True and r["stats_reset"] is True and r["stats_reset_again"] is False
    assert not any(r["counters_after_reset"].values())
    # the flow tables are never dropped under an open served connection, even with reset_maps
    refused = r["flows_refused"]
    assert refused and refused["details"]["open_served_connections"] == 1, refused
    assert "brc_flows" in refused["text"] and "brc_mode: off" in refused["text"], refused
    assert r["flows_untouched"]
    assert {"brc_flows", "brc_transient"} <= set(r["flows_reset"]["maps_reset"]), r["flows_reset"]
    # removal
    assert r["detach"]["changed"] and not r["detach_again"]["changed"] and r["clsact_left"] is False
    assert r["attach_foreign"]["changed"] and not r["attach_foreign"]["clsact_owned"]
    assert r["detach_foreign"]["changed"] and r["foreign_clsact_left"] is True
    assert r["remove"]["changed"] and r["pin_root_left"] is False


def test_facts_find_redis_interface_and_problems(in_netns):
    r = in_netns("""
        from ansible.module_utils import brc_facts
        veth(PEER)
        srv = tcp_server(port=6379)
        emit({"ok": brc_facts.gather(port=6379, state_dir=STATE),
              "noredis": brc_facts.gather(port=6390, state_dir=STATE),
              "noiface": brc_facts.gather(interface="brcmt9", port=6379, state_dir=STATE),
              "wildcard": brc_facts.detect_interface(["0.0.0.0"], "10.251.0.1")})
    """, peer=True)
    ok = r["ok"]
    caps = ok["capabilities"]
    assert caps["bpf_syscall"] and caps["clsact"] and caps["cls_bpf"] and caps["bcc"]["available"]
    assert caps["pyroute2"]["available"] and caps["headers"]["kind"] in ("exact", "fallback")
    assert ok["redis"]["listening"] == ["10.251.0.1"] and ok["detected_interface"] == "brcmt0"
    assert ok["problems"] == []
    assert any("not listening on TCP port 6390" in p["problem"] for p in r["noredis"]["problems"])
    assert any("interface brcmt9 not found" in p["problem"] for p in r["noiface"]["problems"])
    assert r["wildcard"] == "brcmt0"


TAILCALL = r"""
import shutil, tempfile, ctypes
from bcc import BPF
from ansible.module_utils import brc_build, brc_tc, brc_pins

# A stand-in for brc_compile with a tail-call array: the entry programs tail-call slot 0,
# which counts into a pinned per-build-surviving map (slot 0: entry ran, 1: tail ran).
C = '''
#include <uapi/linux/pkt_cls.h>
#ifdef BRC_PIN_DIR
BPF_TABLE_PINNED("array", u32, u64, tc_count, 4, BRC_PIN_DIR "/tc_count");
#else
BPF_ARRAY(tc_count, u64, 4);
#endif
BPF_PROG_ARRAY(tc_jmp, 1);
static inline void bump(u32 k) { u64 *v = tc_count.lookup(&k); if (v) __sync_fetch_and_add(v, 1); }
int tail(struct __sk_buff *skb) { bump(1); return TC_ACT_OK; }
int entry(struct __sk_buff *skb) { bump(0); tc_jmp.call(skb, 0); bump(2); return TC_ACT_OK; }
'''

class Build:
    def __init__(self, src_dir, pin_dir=None, extra_cflags=()):
        flags = ['-DBRC_PIN_DIR="%s"' % pin_dir] if pin_dir else []
        text = open(src_dir + "/tc.c").read()
        self.bpf = BPF(text=text, cflags=flags)
        t = self.bpf.load_func("tail", BPF.SCHED_CLS)
        self.bpf["tc_jmp"][ctypes.c_int(0)] = ctypes.c_int(t.fd)
        fd = self.bpf.load_func("entry", BPF.SCHED_CLS).fd
        self.programs = {"ingress": fd, "egress": fd}
        self.prog_arrays = {"tc_jmp": self.bpf["tc_jmp"].get_fd()}
    def declared_layout(self):
        return {"tc_count": {"type": "array", "key_size": 4, "value_size": 8, "max_entries": 4}}

class Api:
    compile_programs = Build
    @staticmethod
    def persistent_map_names(contract):
        return ["tc_count"]

def src(tag):
    d = tempfile.mkdtemp(prefix="brcmt-tc-")
    shutil.copy(BPF_DIR + "/brc_contract.h", d)
    open(d + "/tc.c", "w").write(C + "/* %s */\n" % tag)
    return d

def counts():
    with brc_pins.PinnedMap(PD + "/tc_count") as m:
        return [sum(int.from_bytes(m.lookup(k)[i:i + 8], "little") for i in (0,)) for k in range(3)]

mount_bpffs()
veth(PEER)
srv = tcp_server()
out = {}
out["v1"] = brc_build.install(IF, src("v1"), ROOT, state_dir=STATE, api=Api)
brc_tc.attach(IF, PD, state_dir=STATE)
client_traffic(PEER, n=3); out["c1"] = counts()
out["v2"] = brc_build.install(IF, src("v2"), ROOT, state_dir=STATE, api=Api)
out["pins_between"] = brc_pins.list_pins(PD)
client_traffic(PEER, n=3); out["c2"] = counts()      # old programs still attached
out["attach"] = brc_tc.attach(IF, PD, state_dir=STATE)
out["pins_after"] = brc_pins.list_pins(PD)
client_traffic(PEER, n=3); out["c3"] = counts()      # new programs
emit(out)
"""


def test_upgrade_keeps_old_tail_calls_working_until_the_filters_move(in_netns):
    r = in_netns(TAILCALL, peer=True)
    assert r["v2"]["maps_reused"] == ["tc_count"]
    entry, tail, fell_through = 0, 1, 2
    assert r["c1"][tail] > 0 and r["c1"][tail] == r["c1"][entry] and r["c1"][fell_through] == 0
    # between brc_program and brc_tc the old programs' tail calls still land
    assert "tc_jmp_prev" in r["pins_between"]
    assert r["c2"][tail] > r["c1"][tail] and r["c2"][fell_through] == 0
    assert r["attach"]["changed"] and r["attach"]["dropped_prev_pins"] == ["tc_jmp_prev"]
    assert "tc_jmp_prev" not in r["pins_after"]
    assert r["c3"][tail] > r["c2"][tail] and r["c3"][fell_through] == 0


ROLLBACK = r"""
import tempfile
from bcc import BPF
from ansible.module_utils import brc_build, brc_tc
from ansible.module_utils.brc_common import BrcError

# A stand-in build whose egress program tc must refuse (a socket filter, not
# SCHED_CLS) when the source says so: a real error from the real kernel.
C = '''
#include <uapi/linux/pkt_cls.h>
int cls(struct __sk_buff *skb) { return TC_ACT_OK; }
int sock(struct __sk_buff *skb) { return -1; }
'''

class Build:
    def __init__(self, src_dir, pin_dir=None, extra_cflags=()):
        text = open(src_dir + "/tc.c").read()
        self.bpf = BPF(text=text)
        ingress = self.bpf.load_func("cls", BPF.SCHED_CLS).fd
        egress = self.bpf.load_func("sock", BPF.SOCKET_FILTER).fd if "bad" in text else ingress
        self.programs = {"ingress": ingress, "egress": egress}
        self.prog_arrays = {}
    def declared_layout(self):
        return {}

class Api:
    compile_programs = Build
    @staticmethod
    def persistent_map_names(contract):
        return []

def src(tag):
    d = tempfile.mkdtemp(prefix="brcmt-rb-")
    open(d + "/brc_contract.h", "w").write(open(BPF_DIR + "/brc_contract.h").read())
    open(d + "/tc.c", "w").write(C + "/* %s */\n" % tag)
    return d

def ids():
    with brc_tc.Tc(IF) as tc:
        return {"clsact": tc.clsact_present(),
                "filters": {d: [f["id"] for f in tc.filters(d)] for d in ("ingress", "egress")}}

def attach_error():
    try:
        brc_tc.attach(IF, PD, state_dir=STATE)
    except BrcError as e:
        return e.text
    return None

mount_bpffs()
veth(PEER)
out = {}
brc_build.install(IF, src("bad first"), ROOT, state_dir=STATE, api=Api)
out["fresh_error"] = attach_error()
out["fresh_after"] = ids()
out["fresh_state_file"] = os.path.exists(brc_tc.tc_state_path(IF, STATE))
good = brc_build.install(IF, src("good"), ROOT, state_dir=STATE, api=Api)
out["good_ids"] = dict((d, p["id"]) for d, p in good["programs"].items())
out["good_attach"] = brc_tc.attach(IF, PD, state_dir=STATE)["changed"]
out["good_after"] = ids()
brc_build.install(IF, src("bad upgrade"), ROOT, state_dir=STATE, api=Api)
out["upgrade_error"] = attach_error()
out["upgrade_after"] = ids()
emit(out)
"""


def test_a_failed_attach_leaves_nothing_half_attached(in_netns):
    """tc refuses the egress program: a fresh attach removes the ingress filter and
    the clsact it added; an upgrade puts the ingress filter back on the program it
    ran. Either way the error says what was done and where to look."""
    r = in_netns(ROLLBACK, peer=True)
    assert "adding the egress filter on brcmt0 failed" in r["fresh_error"]
    assert "rolled back" in r["fresh_error"] and "Fix: check the programs pinned" in r["fresh_error"]
    assert r["fresh_after"] == {"clsact": False, "filters": {"ingress": [], "egress": []}}
    assert r["fresh_state_file"] is False
    good = r["good_ids"]
    assert r["good_attach"]
    assert r["good_after"]["filters"] == {"ingress": [good["ingress"]], "egress": [good["egress"]]}
    assert "replacing the egress filter on brcmt0 failed" in r["upgrade_error"]
    assert "rolled back" in r["upgrade_error"]
    assert r["upgrade_after"] == r["good_after"], "both filters run the programs they ran before"
