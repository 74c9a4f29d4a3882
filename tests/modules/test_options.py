"""Every option of the operator-facing modules answers a bad value with what is wrong and
how to fix it, before the module touches anything.

Each case runs the real module's main() on this machine (run_module) and checks the
failure names the option and carries a fix; a few also go through `ansible localhost`
the way an operator types them. Choices and booleans are checked by Ansible itself
("must be one of", "Valid booleans include"): their cases pin that its message still
names the valid values."""
import os
import socket
import subprocess

import pytest

import brc_agent
import brc_auth
import brc_bpffs
import brc_config
import brc_facts
import brc_guard
import brc_program
import brc_stats
import brc_tc

from fixtures.paths import BPF_DIR, REPO
from modules.conftest import run_module

MODULES = {m.__name__: m for m in (brc_agent, brc_auth, brc_bpffs, brc_config, brc_facts, brc_guard, brc_program,
                                   brc_stats, brc_tc)}


@pytest.fixture
def paths(tmp_path):
    """A pin root (a plain directory, not a bpffs) with pins for eth0, a file and an empty dir."""
    root = tmp_path / "pins"
    (root / "eth0").mkdir(parents=True)
    (root / "eth0" / "brc_config").write_text("")
    f = tmp_path / "a-file"
    f.write_text("x")
    return {"root": str(root), "file": str(f), "tmp": str(tmp_path)}


def fill(value, paths):
    return value.format(**paths) if isinstance(value, str) else value


# (module, args, check mode, [substrings of msg]): each list names the problem and the fix.
CASES = [
    # brc_bpffs
    ("brc_bpffs", {"path": "/etc/hostname"}, False,
     ["path /etc/hostname is a file, not a directory", "Fix: set path to /sys/fs/bpf"]),
    ("brc_bpffs", {"path": "relative/dir"}, False,
     ["path must be an absolute path, got 'relative/dir'", "Fix: set path to a path such as /sys/fs/bpf"]),
    ("brc_bpffs", {"path": "/etc"}, False,
     ["path /etc is a non-empty directory that is not a bpffs", "would hide", "Fix: set path to /sys/fs/bpf"]),
    ("brc_bpffs", {"path": "/etc"}, True, ["non-empty directory", "Fix:"]),
    ("brc_bpffs", {"state": "gone"}, False, ["value of state must be one of: mounted, unmounted, got: gone"]),
    ("brc_bpffs", {"force": "maybe"}, False, ["force", "Valid booleans include"]),
    # brc_stats
    ("brc_stats", {"interface": "eth0/x"}, False, ["interface 'eth0/x' contains '/'", "Fix: set interface"]),
    ("brc_stats", {"interface": "a-very-long-interface"}, False, ["Linux allows at most 15", "Fix:"]),
    ("brc_stats", {"interface": "eth9", "pin_root": "{root}", "src_dir": BPF_DIR}, False,
     ["no BRC pins for interface eth9 under {root}", "BRC is pinned for eth0 there",
      "Fix: set interface to eth0, or leave it out"]),
    ("brc_stats", {"interface": "eth0", "pin_root": "{file}"}, False,
     ["pin_root {file} is a file, not a directory", "Fix: set pin_root to a directory on a bpffs"]),
    ("brc_stats", {"pin_root": "pins"}, False, ["pin_root must be an absolute path", "Fix:"]),
    ("brc_stats", {"interface": "eth0", "pin_root": "{root}", "src_dir": "{tmp}/nothing"}, False,
     ["src_dir {tmp}/nothing does not exist", "Fix: ship the repository's bpf/ directory there"]),
    ("brc_stats", {"interface": "eth0", "pin_root": "{root}", "src_dir": "{tmp}"}, False,
     ["src_dir {tmp} holds no brc_contract.h", "Fix:"]),
    ("brc_stats", {"reset": "perhaps"}, False, ["reset", "Valid booleans include"]),
    # brc_facts
    ("brc_facts", {"interface": "bad name"}, False, ["contains '/', ':' or white space", "Fix:"]),
    ("brc_facts", {"port": 70000}, False, ["port must be 1-65535 (a TCP port), got 70000", "Fix: set port"]),
    ("brc_facts", {"pin_root": "{file}"}, False, ["pin_root {file} is a file", "Fix:"]),
    ("brc_facts", {"src_dir": "bpf"}, False, ["src_dir must be an absolute path", "Fix:"]),
    ("brc_facts", {"probe_bcc": "sometimes"}, False, ["probe_bcc", "Valid booleans include"]),
    ("brc_facts", {"packages": {"a": 1}}, False, ["packages", "list"]),
    # brc_config
    ("brc_config", {"interface": "eth9", "pin_root": "{root}", "mode": "observe"}, False,
     ["no BRC pins for interface eth9", "Fix: set interface to eth0"]),
    ("brc_config", {"interface": "eth0", "pin_root": "{root}", "mode": "observe"}, False,
     ["pin_root {root} is not on a mounted bpffs", "Fix: mount one with brc_bpffs"]),
    ("brc_config", {"interface": "eth0", "pin_root": "{root}", "src_dir": "{file}"}, True,
     ["src_dir {file} is not a directory", "Fix:"]),
    ("brc_config", {"interface": "eth0", "mode": "fast"}, False,
     ["value of mode must be one of: off, observe, serve, got: fast"]),
    ("brc_config", {"interface": "eth0", "port": 0}, True, ["port must be 1-65535 (a TCP port), got 0", "Fix:"]),
    ("brc_config", {"interface": "eth0", "max_key_len": -1}, True,
     ["max_key_len must be 0-4294967295, got -1", "Fix: set max_key_len in bytes"]),
    ("brc_config", {"interface": "eth0", "max_value_len": 2 ** 32}, True,
     ["max_value_len must be 0-4294967295, got 4294967296", "Fix:"]),
    ("brc_config", {"interface": "eth0", "max_age": -5}, True, ["max_age must be 0-", "Fix: set max_age in seconds"]),
    ("brc_config", {"interface": "eth0", "verify_sample": -1}, True, ["verify_sample must be 0-", "Fix:"]),
    ("brc_config", {}, True, ["missing required arguments: interface"]),
    # brc_tc
    ("brc_tc", {"interface": "nosuch0"}, True,
     ["interface nosuch0 does not exist on this host", "Fix: set interface to one of", "lo"]),
    ("brc_tc", {"interface": "lo", "pin_root": "{root}", "src_dir": BPF_DIR}, False,
     ["pin_root {root} is not on a mounted bpffs", "Fix:"]),
    ("brc_tc", {"interface": "lo", "pin_root": "pins"}, True, ["pin_root must be an absolute path", "Fix:"]),
    ("brc_tc", {"interface": "lo", "src_dir": "{file}"}, True, ["src_dir {file} is not a directory", "Fix:"]),
    ("brc_tc", {"interface": "lo", "state": "on"}, True, ["value of state must be one of: attached, detached"]),
    ("brc_tc", {"interface": "lo", "predict_change": "yes please"}, True, ["predict_change", "Valid booleans"]),
    # brc_program
    ("brc_program", {"interface": "nosuch0"}, True, ["interface nosuch0 does not exist on this host", "Fix:"]),
    ("brc_program", {"interface": "lo", "pin_root": "{file}"}, True, ["pin_root {file} is a file", "Fix:"]),
    ("brc_program", {"interface": "lo", "src_dir": "{tmp}"}, False, ["holds no brc_contract.h", "Fix:"]),
    ("brc_program", {"interface": "lo", "cflags": ["DBRC_CACHE_ENTRIES=1"]}, True,
     ["cflags entry 'DBRC_CACHE_ENTRIES=1' is not a compiler flag", "Fix: write each entry as a flag"]),
    ("brc_program", {"interface": "lo", "cflags": ["-DA=1 -DB=2"]}, True,
     ["holds several words", "Fix: give one flag per list element"]),
    ("brc_program", {"interface": "lo", "state": "built"}, True, ["value of state must be one of: present, absent"]),
    ("brc_program", {"interface": "lo", "reset_maps": "often"}, True, ["reset_maps", "Valid booleans"]),
    ("brc_program", {"interface": "lo", "predict_change": "often"}, True, ["predict_change", "Valid booleans"]),
    ("brc_program", {"interface": "../etc", "state": "absent"}, True, ["interface '../etc' contains '/'", "Fix:"]),
    # brc_auth
    ("brc_auth", {"interface": "eth9", "pin_root": "{root}"}, False,
     ["no BRC pins for interface eth9", "Fix: set interface to eth0"]),
    ("brc_auth", {"pin_root": "{file}"}, False, ["pin_root {file} is a file", "Fix:"]),
    ("brc_auth", {"redis_host": " "}, False, ["redis_host is empty", "Fix: set redis_host"]),
    ("brc_auth", {"redis_port": 70000}, False, ["redis_port must be 1-65535 (a TCP port), got 70000", "Fix:"]),
    ("brc_auth", {"redis_unix_socket": "/etc/hostname"}, False,
     ["redis_unix_socket /etc/hostname is not a Unix socket", "Fix: set redis_unix_socket", "CONFIG GET unixsocket"]),
    ("brc_auth", {"redis_unix_socket": "{tmp}/no.sock"}, False, ["redis_unix_socket {tmp}/no.sock does not exist",
                                                                 "Fix:"]),
    ("brc_auth", {"redis_unix_socket": "redis.sock"}, False, ["redis_unix_socket must be an absolute path", "Fix:"]),
    ("brc_auth", {"redis_user": ""}, False, ["redis_user is empty", "Fix: set redis_user"]),
    ("brc_auth", {"src_dir": "bpf"}, False, ["src_dir must be an absolute path", "Fix:"]),
    # brc_agent (validation only)
    ("brc_agent", {"interface": "eth 0"}, True, ["interface 'eth 0' contains", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "redis_port": 0}, True, ["redis_port must be 1-65535", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "lib_dir": "agent"}, True, ["lib_dir must be an absolute path", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "pidfile": "x.pid"}, True, ["pidfile must be an absolute path", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "log": "x.log"}, True, ["log must be an absolute path", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "redis_socket": "r.sock"}, True, ["redis_socket must be an absolute", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "password_file": "pw"}, True, ["password_file must be an absolute", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "supervisor": "cron"}, True, ["value of supervisor must be one of"]),
    ("brc_agent", {"interface": "eth0", "state": "running"}, True, ["value of state must be one of: present, absent"]),
    ("brc_agent", {"interface": "eth0", "pin_root": "pins"}, True, ["pin_root must be an absolute path", "Fix:"]),
    ("brc_agent", {"interface": "eth0", "src_dir": "bpf"}, True, ["src_dir must be an absolute path", "Fix:"]),
    # brc_guard
    ("brc_guard", {"interface": "eth9", "pin_root": "{root}", "state": "armed"}, False,
     ["no BRC pins for interface eth9", "Fix: set interface to eth0"]),
    ("brc_guard", {"interface": "eth0/x", "state": "confirmed"}, False, ["interface 'eth0/x' contains '/'", "Fix:"]),
    ("brc_guard", {"interface": "eth0", "pin_root": "pins", "state": "armed"}, True,
     ["pin_root must be an absolute path", "Fix:"]),
    ("brc_guard", {"interface": "eth0", "pin_root": "{root}", "state": "armed"}, False,
     ["pin_root {root} is not on a mounted bpffs", "Fix:"]),
    ("brc_guard", {"interface": "eth0", "src_dir": "bpf", "state": "armed"}, True,
     ["src_dir must be an absolute path", "Fix:"]),
    ("brc_guard", {"interface": "eth0", "guard_dir": "state", "state": "confirmed"}, False,
     ["guard_dir must be an absolute path", "Fix: set guard_dir"]),
    ("brc_guard", {"interface": "eth0", "timeout": 0, "state": "watching"}, False,
     ["timeout must be above 0 seconds, got 0", "Fix: set timeout"]),
    ("brc_guard", {"interface": "eth0", "state": "disarmed"}, False,
     ["value of state must be one of: armed, watching, confirmed, restored"]),
    ("brc_guard", {"interface": "eth0"}, False, ["missing required arguments: state"]),
]


def _id(case):
    module, args, check, _want = case
    return "%s-%s%s" % (module, "-".join(sorted(args)) or "none", "-check" if check else "")


@pytest.mark.parametrize("module,args,check,want", CASES, ids=[_id(c) for c in CASES])
def test_bad_value_names_problem_and_fix(module, args, check, want, paths):
    args = dict((k, fill(v, paths)) for k, v in args.items())
    before = sorted(os.listdir(paths["tmp"]))
    r = run_module(MODULES[module], args, check_mode=check)
    assert r.get("failed"), r
    for w in want:
        assert fill(w, paths) in r["msg"], r["msg"]
    assert not r.get("changed")
    assert sorted(os.listdir(paths["tmp"])) == before   # nothing made or removed


def documented_options(mod):
    """The options ansible-doc shows for mod: its DOCUMENTATION with the doc fragments it
    extends (plugins/doc_fragments) merged in by Ansible's own loader."""
    from ansible.plugins.loader import fragment_loader
    from ansible.utils.plugin_docs import get_docstring
    fragment_loader.add_directory(os.path.join(REPO, "plugins", "doc_fragments"))
    doc = get_docstring(mod.__file__, fragment_loader, is_module=True)[0]
    return doc["options"]


def test_every_option_has_a_case():
    """Adding an option to one of these modules needs a bad-value case above."""
    covered = {}
    for module, args, _check, _want in CASES:
        covered.setdefault(module, set()).update(args)
    # Free text that only the host's Redis or network can judge (the module's later errors do).
    no_bad_value = {"address", "redis_password", "password", "admin_user", "admin_password", "user",
                    "redis_host@brc_agent"}
    for name, mod in MODULES.items():
        options = set(documented_options(mod))
        missing = sorted(o for o in options - covered.get(name, set())
                         if o not in no_bad_value and "%s@%s" % (o, name) not in no_bad_value)
        assert not missing, "%s: no bad-value case for %s" % (name, missing)


def test_a_unix_socket_passes_the_check(tmp_path):
    """The socket check accepts a real socket (and fails further on, reaching no Redis there)."""
    path = str(tmp_path / "redis.sock")
    (tmp_path / "pins").mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    try:
        r = run_module(brc_auth, {"redis_unix_socket": path, "pin_root": str(tmp_path / "pins")})
    finally:
        s.close()
    assert "Unix socket" not in r.get("msg", "") and not r.get("failed"), r   # no pins: nothing to load


def adhoc(module, args=None):
    cmd = [os.path.join(REPO, ".venv", "bin", "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-m", module]
    if args:
        cmd += ["-a", args]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_adhoc_bpffs_on_a_file_says_what_to_do():
    """The issue's example: `ansible redis1 -m brc_bpffs -a path=/etc/hostname`."""
    rc, out = adhoc("brc_bpffs", "path=/etc/hostname")
    assert rc != 0
    assert "path /etc/hostname is a file, not a directory" in out, out
    assert "Fix: set path to /sys/fs/bpf" in out
    assert "Errno" not in out
