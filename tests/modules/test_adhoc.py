"""brc_stats and brc_facts with no arguments (`ansible redis -m brc_stats`) find where BRC
is: nowhere (said plainly, not a failure), one interface (reported as if named), several
(each reported), and an interface whose filter is attached but whose pins are elsewhere.
Also brc_config's would_change, which the audit's check-mode probes report drift with.
Real bpffs, real bcc builds of bpf/ and real tc filters on veths, in a throwaway namespace."""
import pytest

pytestmark = pytest.mark.usefixtures("kernel")

ADHOC = r"""
from ansible.module_utils import brc_build, brc_maps, brc_pins, brc_tc
from ansible.module_utils.brc_contract import load_contract
import brc_config, brc_facts, brc_stats

def facts(**args):
    r = run_main(brc_facts, **args)
    b = r["ansible_facts"]["brc"]
    return {"msg": r["msg"], "failed": r.get("failed", False), "changed": r["changed"],
            "on": b["on_interfaces"], "interface": b["interface"],
            "state_interface": (b["state"] or {}).get("interface"), "mode": (b["state"] or {}).get("mode")}

mount_bpffs()
c = load_contract(BPF_DIR)
sh("ip link set lo up")
for i in ("brcd0", "brcd1"):
    sh("ip link add %s type veth peer name %sp && ip link set %s up" % (i, i, i))
out = {}
out["none_stats"] = run_main(brc_stats)
out["none_facts"] = facts()

brc_build.install("brcd0", BPF_DIR, ROOT, state_dir=STATE)
brc_tc.attach("brcd0", brc_pins.pin_dir(ROOT, "brcd0"), state_dir=STATE)
brc_maps.configure(brc_pins.pin_dir(ROOT, "brcd0"), c, {"mode": "observe", "port": 6379})
out["one_stats"] = run_main(brc_stats)
out["one_facts"] = facts()
out["named"] = run_main(brc_stats, interface="brcd0")
# What the audit's probes rely on: would_change says what changed says, in and out of check mode.
out["cfg_same"] = run_main(brc_config, interface="brcd0", mode="observe", _ansible_check_mode=True)
out["cfg_other"] = run_main(brc_config, interface="brcd0", mode="serve", _ansible_check_mode=True)

# A second interface's pins: the same programs and maps pinned again under brcd1/ (one
# build is enough to show both are found; a second compile would only cost time).
os.mkdir(ROOT + "/brcd1")
for name in brc_pins.list_pins(ROOT + "/brcd0"):
    fd = brc_pins.obj_get(ROOT + "/brcd0/" + name)
    brc_pins.obj_pin(fd, ROOT + "/brcd1/" + name)
    os.close(fd)
out["two_stats"] = run_main(brc_stats)
out["two_facts"] = facts()
out["reset_check"] = run_main(brc_stats, reset=True, _ansible_check_mode=True)

# brcd0's filters stay attached but its pins are looked for under another root.
sh("mkdir -p /sys/fs/bpf/elsewhere")
out["elsewhere_stats"] = run_main(brc_stats, pin_root="/sys/fs/bpf/elsewhere")
out["elsewhere_facts"] = facts(pin_root="/sys/fs/bpf/elsewhere")
emit(out)
"""


def test_adhoc_stats_and_facts_find_where_brc_is(in_netns):
    r = in_netns(ADHOC, timeout=900)   # one bcc build, slow on a busy 2-core machine

    none = r["none_stats"]
    assert not none.get("failed") and not none["changed"], none
    assert none["msg"].startswith("BRC is not on this host: no pins under /sys/fs/bpf/brc")
    assert none["interfaces"] == {} and none["interface"] is None and "counters" not in none
    nf = r["none_facts"]
    assert not nf["failed"] and nf["on"] == {} and nf["interface"] is None
    assert nf["msg"].startswith("BRC is not on this host")

    one = r["one_stats"]
    assert not one.get("failed") and one["interface"] == "brcd0" and one["msg"] == "read the stats of brcd0"
    assert one["mode"] == "observe" and set(one["counters"]) == set(r["named"]["counters"])
    assert set(one["interfaces"]) == {"brcd0"}
    of = r["one_facts"]
    assert of["on"] == {"brcd0": {"pinned": True, "attached": ["ingress", "egress"], "exists": True}}
    assert of["interface"] == of["state_interface"] == "brcd0" and of["mode"] == "observe"
    assert of["msg"] == "BRC is on brcd0"

    for name, want in (("cfg_same", False), ("cfg_other", True)):
        assert not r[name].get("failed") and r[name]["changed"] is r[name]["would_change"] is want, r[name]

    two = r["two_stats"]
    assert not two.get("failed") and two["interface"] is None and "counters" not in two
    assert two["msg"].startswith("BRC is on 2 interfaces: brcd0, brcd1")
    assert two["interfaces"]["brcd0"]["mode"] == two["interfaces"]["brcd1"]["mode"] == "observe"
    assert set(two["interfaces"]["brcd1"]["counters"]) == set(one["counters"])
    assert "get_outcome_definitions" in two and "ratio_definitions" in two
    tf = r["two_facts"]
    assert tf["on"]["brcd1"] == {"pinned": True, "attached": [], "exists": True}
    assert tf["interface"] is None and tf["state_interface"] is None   # several: none picked
    assert not r["reset_check"].get("failed") and set(r["reset_check"]["interfaces"]) == {"brcd0", "brcd1"}

    el = r["elsewhere_stats"]
    assert not el.get("failed"), el
    assert el["interfaces"]["brcd0"]["error"] == ("BRC's tc filter is attached on brcd0 but nothing is pinned "
                                                  "under /sys/fs/bpf/elsewhere/brcd0")
    assert "pin_root" in el["interfaces"]["brcd0"]["fix"]
    warnings = [w["event"]["msg"] if isinstance(w, dict) else w for w in el.get("warnings", [])]  # 2.19: structured
    assert any("nothing is pinned" in w for w in warnings), el.get("warnings")
    assert r["elsewhere_facts"]["on"] == {"brcd0": {"pinned": False, "attached": ["ingress", "egress"],
                                                    "exists": True}}
