"""Module logic without a kernel: config encoding from the contract, percentiles,
ratios, argument checks, missing libraries, and brc_sources on a real directory."""
import ctypes
import os

import pytest

import brc_config
import brc_program
import brc_sources
import brc_stats
import brc_tc
from ansible.module_utils import brc_common, brc_maps, brc_math
from ansible.module_utils.brc_common import source_hash

from fixtures.paths import BPF_DIR
from modules.conftest import run_module


def test_config_roundtrip_uses_contract_layout(contract):
    values = {"mode": "serve", "port": 6380, "max_key_len": 100, "max_value_len": 2000, "max_age": 7,
              "verify_sample": 10}
    raw = brc_maps.encode_config(contract, values)
    assert len(raw) == ctypes.sizeof(contract.structs["brc_config"])
    st = contract.structs["brc_config"].from_buffer_copy(raw)
    assert st.mode == contract.modes["serve"] and st.max_age_ns == 7 * 10 ** 9
    decoded = brc_maps.decode_config(contract, raw)
    assert dict((k, decoded[k]) for k in values) == values
    assert all(v == 0 for k, v in decoded.items() if k not in values)   # fields without an option


def test_config_fields_without_an_option_are_carried_as_ints(contract):
    """Whatever else the contract's brc_config holds (today a require_auth the programs
    are dropping, tomorrow something new) is read and written back as an int."""
    from ansible.module_utils.brc_contract import Contract
    text = open(os.path.join(BPF_DIR, "brc_contract.h")).read()
    old = [line for line in text.splitlines() if "__u32 verify_sample;" in line][0]
    variant = Contract(text.replace(old, old + "\n\t__u32 future_knob;\n\t__u32 future_pad;"))
    raw = bytearray(brc_maps.encode_config(variant, {"mode": "observe", "future_knob": 5}))
    decoded = brc_maps.decode_config(variant, bytes(raw))
    assert decoded["future_knob"] == 5 and decoded["mode"] == "observe"
    assert brc_maps.decode_config(variant, brc_maps.encode_config(variant, decoded)) == decoded


def test_unknown_mode_is_refused(contract):
    with pytest.raises(brc_common.BrcError):
        brc_maps.encode_config(contract, {"mode": "turbo"})


@pytest.mark.parametrize("buckets, p, want", [
    ([0, 0, 0], 50, 0.0),                      # empty
    ([0] * 10 + [10], 50, 2.048),              # all in slot 10: [1024, 2048) ns
    ([0] * 10 + [5] + [0] * 3 + [5], 50, 2.048),
    ([0] * 10 + [5] + [0] * 3 + [5], 90, 32.768),
    ([0] * 10 + [99] + [0] * 3 + [1], 99, 2.048),
    ([0] * 10 + [98] + [0] * 3 + [2], 99, 32.768),
])
def test_percentile_is_bucket_upper_bound_in_us(buckets, p, want):
    assert brc_math.percentile(buckets, p) == want


def test_ratios_need_their_denominator_counters():
    assert brc_math.ratios({"pkt_ingress": 3}) == {}
    r = brc_math.ratios({"req_get": 4, "miss": 1, "would_hit": 3, "mismatch": 0})
    assert r == {"hit_ratio": 0.0, "would_hit_ratio": 0.75, "miss_ratio": 0.25, "mismatch_ratio": 0.0}
    assert brc_math.ratios({"req_get": 0, "hit": 0})["hit_ratio"] == 0.0


def test_brc_config_rejects_bad_port(tmp_path):
    r = run_module(brc_config, {"interface": "eth0", "port": 70000, "src_dir": BPF_DIR,
                                "pin_root": str(tmp_path)})
    assert r["failed"] and "port must be 1-65535" in r["msg"]


def test_brc_config_without_pins_names_the_fix(tmp_path):
    r = run_module(brc_config, {"interface": "eth0", "mode": "observe", "src_dir": BPF_DIR,
                                "pin_root": str(tmp_path)})
    assert r["failed"] and "brc_program" in r["msg"]


def test_brc_config_check_mode_before_first_deploy_predicts_change(tmp_path):
    r = run_module(brc_config, {"interface": "eth0", "mode": "observe", "port": 6379, "src_dir": BPF_DIR,
                                "pin_root": str(tmp_path)}, check_mode=True)
    assert r["changed"] and r["config"] == {"mode": "observe", "port": 6379}


def test_brc_stats_without_sources_names_the_fix(tmp_path):
    r = run_module(brc_stats, {"interface": "eth0", "src_dir": str(tmp_path / "none"), "pin_root": str(tmp_path)})
    assert r["failed"] and "brc_contract.h" in r["msg"] and "Fix:" in r["msg"]


def test_missing_bcc_names_the_debian_package(monkeypatch, tmp_path):
    # bcc is installed here; its absence can only be simulated.
    monkeypatch.setattr(brc_common, "import_bcc", lambda: (None, "ImportError: No module named 'bcc'"))
    r = run_module(brc_program, {"interface": "eth0", "src_dir": BPF_DIR, "pin_root": str(tmp_path)})
    assert r["failed"] and "python3-bpfcc" in r["msg"] and "Failed to import the required Python library" in r["msg"]


def test_missing_pyroute2_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(brc_common, "import_pyroute2", lambda: (None, "ImportError"))
    r = run_module(brc_tc, {"interface": "eth0"})
    assert r["failed"] and "python3-pyroute2" in r["msg"]


def test_brc_program_check_mode_without_bpffs_predicts_build(tmp_path):
    r = run_module(brc_program, {"interface": "eth0", "src_dir": BPF_DIR, "pin_root": str(tmp_path / "pins")},
                   check_mode=True)
    assert r["changed"] and not r.get("failed") and not (tmp_path / "pins").exists()


def test_brc_program_refuses_pin_root_off_bpffs(tmp_path):
    r = run_module(brc_program, {"interface": "eth0", "src_dir": BPF_DIR, "pin_root": str(tmp_path)})
    assert r["failed"] and "not on a mounted bpffs" in r["msg"] and "brc_bpffs" in r["msg"]


def test_brc_sources_mirrors_directory_and_hash_matches_brc_program(tmp_path):
    dest = tmp_path / "bpf"
    files = {"brc.c": "int x;\n", "brc_contract.h": "/* c */\n"}
    r = run_module(brc_sources, {"dest": str(dest), "files": files}, check_mode=True)
    assert r["changed"] and r["written"] == ["brc.c", "brc_contract.h"] and not dest.exists()
    r = run_module(brc_sources, {"dest": str(dest), "files": files})
    assert r["changed"] and r["source_hash"] == source_hash(str(dest))
    assert oct(os.stat(str(dest / "brc.c")).st_mode & 0o777) == "0o644"
    r = run_module(brc_sources, {"dest": str(dest), "files": files})
    assert not r["changed"] and r["written"] == [] and r["removed"] == []
    (dest / "old.h").write_text("stale")
    r = run_module(brc_sources, {"dest": str(dest), "files": dict(files, **{"brc.c": "int y;\n"})})
    assert r["changed"] and r["written"] == ["brc.c"] and r["removed"] == ["old.h"]
    assert sorted(os.listdir(str(dest))) == ["brc.c", "brc_contract.h"]
    r = run_module(brc_sources, {"dest": str(dest), "files": {"../escape": "x"}})
    assert r["failed"]


class _Opts(dict):
    def get_attr(self, name):
        return dict(self["attrs"]).get(name)


class _Msg:
    def __init__(self, attrs):
        self.opts = _Opts(attrs=attrs)

    def get_attr(self, name):
        return self.opts if name == "TCA_OPTIONS" else None


def test_bpf_filter_id_and_tag_when_pyroute2_decodes_them():
    # pyroute2 0.9 decodes TCA_BPF_ID/TAG; 0.7 (Debian 12) does not (covered by test_kernel.py).
    from ansible.module_utils.brc_tc import _bpf_options
    msg = _Msg([("TCA_BPF_NAME", "brc_ingress"), ("TCA_BPF_ID", 42), ("TCA_BPF_TAG", "a1:b2:c3:d4:e5:f6:07:18")])
    assert _bpf_options(msg) == ("brc_ingress", 42, "a1b2c3d4e5f60718")


def test_installed_packages_reads_dpkg_status(tmp_path):
    from ansible.module_utils.brc_facts import installed_packages
    status = tmp_path / "status"
    status.write_text("Package: bpftool\nStatus: install ok installed\nVersion: 7\n\n"
                      "Package: python3-bpfcc\nStatus: deinstall ok config-files\n\n"
                      "Package: iproute2\nStatus: install ok installed\n")
    assert installed_packages(str(status)) == {"bpftool", "iproute2"}
    assert installed_packages(str(tmp_path / "none")) is None


def test_bcc_probe_is_skipped_only_for_a_current_build_on_this_kernel():
    from ansible.module_utils.brc_facts import bcc_proven
    headers = {"kernel": "6.1.0-26-amd64", "path": "/usr/src/linux-headers-6.1.0-26-amd64", "kind": "exact",
               "build": "/lib/modules/6.1.0-26-amd64/build", "fix": None}
    caps = {"kernel": headers["kernel"], "headers": dict(headers)}
    progs = {"ingress": {"id": 41, "tag": "a"}, "egress": {"id": 42, "tag": "b"}}

    def state(**build):
        b = {"headers": dict(headers), "programs": progs, "built_at": 1}
        b.update(build)
        return {"interface": "eth0", "build": b, "programs": dict(progs)}

    assert "skipped" in bcc_proven(state(), caps)
    assert bcc_proven(None, caps) is None                                    # first deploy
    assert bcc_proven({"interface": "eth0", "build": None, "programs": {}}, caps) is None
    assert bcc_proven(state(headers=dict(headers, kernel="6.12.0")), caps) is None     # new kernel
    assert bcc_proven(state(headers=dict(headers, path="/usr/src/other")), caps) is None
    assert bcc_proven(state(programs={"ingress": {"id": 7}, "egress": {"id": 42}}), caps) is None
    assert bcc_proven(state(), dict(caps, headers=dict(headers, kind="missing"))) is None
