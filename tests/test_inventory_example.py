"""inventory/example/ shows every role variable: each default of roles/*/defaults/main.yml
appears in its group_vars with the same value and a comment saying what it does (or,
for defaults computed from the role's location, as a commented-out line), and nothing
there is a variable no role has. A role that gains, drops or changes a default fails
this test until the example says so."""
import glob
import json
import os
import re
import subprocess

import yaml

from fixtures.paths import REPO

EXAMPLE = os.path.join(REPO, "inventory", "example")
GROUP_VARS = os.path.join(EXAMPLE, "group_vars", "redis.yml")


def role_defaults():
    out = {}
    for path in sorted(glob.glob(os.path.join(REPO, "roles", "*", "defaults", "main.yml"))):
        for name, value in (yaml.safe_load(open(path)) or {}).items():
            out[name] = (value, os.path.relpath(path, REPO))
    return out


def example_lines():
    return open(GROUP_VARS).read().splitlines()


def test_every_role_default_is_in_the_example_with_its_value():
    defaults = role_defaults()
    assert defaults, "no role defaults found"
    active = yaml.safe_load(open(GROUP_VARS)) or {}
    commented = set(re.findall(r"^# (brc_\w+): ", open(GROUP_VARS).read(), re.M))
    missing = sorted(n for n in defaults if n not in active and n not in commented)
    assert not missing, "add to %s: %s" % (GROUP_VARS, ", ".join("%s (%s)" % (n, defaults[n][1]) for n in missing))
    for name in commented:
        assert name not in active, "%s is both set and commented out" % name
        assert "role_path" in str(defaults[name][0]), \
            "%s is commented out but its default is not computed from the role's location: set it" % name
    differ = dict((n, (active[n], defaults[n][0])) for n in active if n in defaults and active[n] != defaults[n][0])
    assert not differ, "example value != role default (example, default): %s" % differ
    unknown = sorted(n for n in active if n.startswith("brc_") and n not in defaults)
    assert not unknown, "no role has these variables any more: %s" % unknown


def test_every_variable_says_what_it_does():
    lines = example_lines()
    for i, line in enumerate(lines):
        m = re.match(r"^(?:# )?(brc_\w+):", line)
        if not m:
            continue
        above = lines[i - 1] if i else ""
        assert above.startswith("# ") and not re.match(r"^# brc_\w+: ", above), \
            "%s (line %d) has no comment above it saying what it does" % (m.group(1), i + 1)


def test_the_example_inventory_loads_and_puts_the_settings_on_group_redis():
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-inventory"), "-i",
                          os.path.join(EXAMPLE, "hosts.yml"), "--list"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    inv = json.loads(out.stdout)
    hosts = inv["redis"]["hosts"]
    assert len(hosts) == 3
    hostvars = inv["_meta"]["hostvars"]
    for h in hosts:
        assert hostvars[h]["brc_mode"] == "observe" and hostvars[h]["brc_pin_root"] == "/sys/fs/bpf/brc"
    assert hostvars["redis-b1.example.net"]["brc_interface"] == "bond0"
