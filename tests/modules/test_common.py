"""brc_common: source hash, kernel-headers classification, state files."""
import os

import pytest

from ansible.module_utils.brc_common import BrcError, headers_info, read_json, source_hash, write_json


def _tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("change, differs", [
    (lambda d: (d / "brc.c").write_text("int x;\n"), False),        # same content
    (lambda d: (d / "brc.c").write_text("int y;\n"), True),         # content
    (lambda d: (d / "brc.c").rename(d / "brc2.c"), True),           # name
    (lambda d: (d / "new.h").write_text(""), True),                 # new file
    (lambda d: (d / ".swp").write_text("junk"), False),             # hidden files ignored
    (lambda d: (d / "x.o").write_text("junk"), False),              # build products ignored
    (lambda d: (d / "README.md").write_text("docs"), False),        # documents build nothing
])
def test_source_hash_tracks_names_and_contents(tmp_path, change, differs):
    d = _tree(tmp_path, {"brc.c": "int x;\n", "brc_contract.h": "/* c */\n"})
    before = source_hash(d)
    change(tmp_path)
    assert (source_hash(d) != before) is differs


def test_source_hash_includes_cflags(tmp_path):
    d = _tree(tmp_path, {"brc.c": "int x;\n"})
    assert source_hash(d) != source_hash(d, ["-DBRC_CACHE_ENTRIES=1"])
    assert source_hash(d, ["-DA"]) == source_hash(d, ["-DA"])


def test_source_hash_missing_dir_names_the_fix(tmp_path):
    with pytest.raises(BrcError) as e:
        source_hash(str(tmp_path / "nope"))
    assert "not found" in e.value.text and "Fix:" in e.value.text


@pytest.mark.parametrize("layout, kind", [
    ("exact", "exact"),        # real directory of this kernel's headers
    ("link-same", "exact"),    # link to a dir named after this kernel
    ("link-other", "fallback"),  # Debian's newest headers linked in
    ("none", "missing"),
])
def test_headers_info_matches_kernel_headers_script_rules(tmp_path, layout, kind):
    kver = "6.18.4-test"
    mods = tmp_path / "modules"
    (mods / kver).mkdir(parents=True)
    build = mods / kver / "build"
    if layout == "exact":
        build.mkdir()
        (build / "Makefile").write_text("")
    elif layout.startswith("link"):
        target = tmp_path / ("linux-headers-%s" % (kver if layout == "link-same" else "6.1.0-26-amd64"))
        target.mkdir()
        (target / "Makefile").write_text("")
        build.symlink_to(target)
    info = headers_info(kver, str(mods))
    assert info["kind"] == kind
    assert (info["fix"] is None) is (kind != "missing")
    if kind == "missing":
        assert "scripts/kernel-headers" in info["fix"]


def test_write_json_is_atomic_and_readable(tmp_path):
    p = str(tmp_path / "a" / "b.json")
    write_json(p, {"x": 1})
    assert read_json(p) == {"x": 1}
    assert [n for n in os.listdir(str(tmp_path / "a"))] == ["b.json"]
    assert read_json(str(tmp_path / "none.json"), {}) == {}


def test_build_hash_covers_the_command_table(tmp_path, monkeypatch):
    from ansible.module_utils import brc_build, brc_commands
    d = _tree(tmp_path, {"brc.c": "int x;\n"})
    before = brc_build.build_hash(d, [])
    assert before == brc_build.build_hash(d, []) and before != source_hash(d)
    monkeypatch.setitem(brc_commands.COMMANDS, "NEWCMD", ("nokey", 0, 0, 1, "none", "other"))
    assert brc_build.build_hash(d, []) != before
