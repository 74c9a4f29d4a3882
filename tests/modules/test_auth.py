"""brc_auth: who Redis lets GET every key, decided from Redis's own replies (ACL
GETUSER, COMMAND INFO GET, ACL DRYRUN) against real redis-servers, and loaded into the
programs' maps with the loader protocol of struct brc_server: into a bcc build's
tables here, and through pins by the module in test_auth_module_in_netns."""
import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

import brc_auth as brc_auth_module
from ansible.module_utils import brc_auth, brc_common
from ansible.module_utils.brc_common import BrcError
from ansible.module_utils.brc_contract import load_contract

from fixtures.kernel import skip_unless_kernel
from fixtures.paths import BPF_DIR, REPO
from fixtures.redis import RedisServer, free_port
from modules.conftest import run_module

PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def acl_server():
    """A Redis whose default user is on and nopass; tests add their own users."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pw_server():
    """A Redis with requirepass: the default user needs AUTH."""
    server = RedisServer(extra=["--requirepass", PASSWORD])
    yield server
    server.stop()


@pytest.fixture
def admin(acl_server):
    """A client for set-up that deletes the users a test made."""
    client = redis.Redis(host=acl_server.host, port=acl_server.port, protocol=2)
    before = set(client.execute_command("ACL", "USERS"))
    yield client
    for name in set(client.execute_command("ACL", "USERS")) - before:
        client.execute_command("ACL", "DELUSER", name)
    client.execute_command("CONFIG", "SET", "timeout", "0")
    client.close()


def flags_of(contract, read_all, open_=False, mget=None):
    """mget None: as read_all (the users here that read every key may MGET too)."""
    return brc_auth.user_flags(contract, read_all, open_, read_all if mget is None else mget)


def dryrun_all_ok(client, user, command="GET"):
    """What Redis itself says: may user GET (MGET) each of a few unrelated keys?"""
    keys = ["k", "app:1", "public:x", os.urandom(6).hex(), b"\xff\x00bin"]
    return all(client.execute_command("ACL", "DRYRUN", user, command, k) in (b"OK", "OK") for k in keys)


# --- the decision against real ACL users -------------------------------------------------

# (user, ACL SETUSER rules after `reset`, READ_ALL expected)
CASES = [
    ("app_prefix", ["on", "nopass", "~app:*", "+get"], False),
    ("all_keys_no_get", ["on", "nopass", "~*", "-get"], False),
    ("all_but_get", ["on", "nopass", "~*", "+@all", "-get"], False),
    ("read_category", ["on", "nopass", "~*", "+@read"], True),
    ("all_but_string", ["on", "nopass", "+@all", "-@string", "~*"], False),
    ("read_keys", ["on", "nopass", "%R~*", "+get"], True),
    ("readwrite_keys", ["on", "nopass", "%RW~*", "+get"], True),
    ("write_keys", ["on", "nopass", "%W~*", "+get"], False),
    ("selector_only", ["on", "nopass", "resetkeys", "(~* +get)"], True),
    ("selector_denies", ["on", "nopass", "~app:*", "+get", "(~* -get)"], False),
    ("keys_and_get_apart", ["on", "nopass", "resetkeys", "+get", "(~* +set)"], False),
    ("off_user", ["off", "nopass", "~*", "+get"], True),
    ("no_keys", ["on", "nopass", "resetkeys", "+get"], False),
    ("get_first_arg", ["on", "nopass", "~*", "+get|foo"], False),
    ("get_back_after_read", ["on", "nopass", "~*", "+@all", "-@read", "+get"], True),
    ("string_minus_fast", ["on", "nopass", "~*", "-@all", "+@string", "-@fast"], False),
    ("public_and_all", ["on", "nopass", "~public:*", "%R~*", "+@all"], True),
]


@pytest.mark.parametrize("user, rules, read_all", CASES, ids=[c[0] for c in CASES])
def test_decision_matches_what_redis_answers(acl_server, admin, contract, user, rules, read_all):
    admin.execute_command("ACL", "SETUSER", user, "reset", *rules)
    # The raw reply in both shapes redis-py can give: RESP2 flat lists, RESP3 maps.
    resp2 = brc_auth._client(redis, acl_server.host, acl_server.port, None, None, None, 5)
    resp3 = redis.Redis(host=acl_server.host, port=acl_server.port, protocol=3)
    cats = brc_auth.get_categories(resp2.execute_command("COMMAND", "INFO", "GET"))
    assert cats == ["@read", "@string", "@fast"]        # Redis 7.0
    for client in (resp2, resp3):
        ok, why = brc_auth.read_all_by_rules(client.execute_command("ACL", "GETUSER", user), cats)
        assert ok is read_all, why
    # Redis itself agrees (DRYRUN on keys no pattern above singles out) ...
    assert dryrun_all_ok(admin, user) is read_all
    # ... MGET (answered as a batch) is decided alike, and Redis agrees there too ...
    mget = read_all and dryrun_all_ok(admin, user, "MGET")
    mget_cats = brc_auth.get_categories(resp2.execute_command("COMMAND", "INFO", "MGET"), "MGET")
    if read_all:
        ok, why = brc_auth.read_all_by_rules(resp2.execute_command("ACL", "GETUSER", user), mget_cats, "mget")
        assert ok is mget, why
    # ... and so does the whole read.
    state = brc_auth.read_state(contract, port=acl_server.port)
    assert state["users"][user] == flags_of(contract, read_all, mget=mget), state["reasons"][user]


def test_default_user_nopass_is_read_all_and_open(acl_server, admin, contract):
    state = brc_auth.read_state(contract, port=acl_server.port)
    assert state["users"]["default"] == flags_of(contract, True, True)
    assert state["timeout"] == 0
    assert dryrun_all_ok(admin, "default")


def test_default_user_with_requirepass_is_read_all_not_open(pw_server, contract):
    state = brc_auth.read_state(contract, port=pw_server.port, password=PASSWORD)
    assert state["users"] == {"default": flags_of(contract, True, False)}
    client = redis.Redis(port=pw_server.port, password=PASSWORD, protocol=2)
    assert dryrun_all_ok(client, "default")
    assert b"nopass" not in client.execute_command("ACL", "GETUSER", "default")[1]


def test_names_longer_than_the_map_key_are_left_out(acl_server, admin, contract):
    limit = contract.constants["BRC_USER_MAX"]
    fits, too_long = "u" * limit, "v" * (limit + 1)
    for name in (fits, too_long):
        admin.execute_command("ACL", "SETUSER", name, "on", "nopass", "~*", "+get")
    users = brc_auth.read_state(contract, port=acl_server.port)["users"]
    assert users[fits] == flags_of(contract, True, mget=False)     # +get alone: no MGET
    assert too_long not in users


def test_names_are_bytes_not_text(acl_server, admin, contract):
    admin.execute_command("ACL", "SETUSER", b"bin\xffuser", "on", "nopass", "~*", "+get")
    users = brc_auth.read_state(contract, port=acl_server.port)["users"]
    name = b"bin\xffuser".decode("utf-8", "surrogateescape")
    assert users[name] == flags_of(contract, True, mget=False)
    assert b"bin\xffuser\0" in brc_auth.user_key(contract, name)
    assert brc_auth.user_name(contract, brc_auth.user_key(contract, name)) == name


def test_timeout_gives_half_of_it_as_idle_pass(acl_server, admin, contract):
    admin.execute_command("CONFIG", "SET", "timeout", "7")
    state = brc_auth.read_state(contract, port=acl_server.port)
    assert state["timeout"] == 7 and brc_auth.idle_pass_ns(7) == 3500000000
    assert brc_auth.idle_pass_ns(0) == 0


def test_the_toolkit_user_needs_only_the_documented_grants(acl_server, admin, contract):
    admin.execute_command("ACL", "SETUSER", "brc_toolkit", "on", ">tk-pw", *brc_auth.TOOLKIT_GRANTS.split())
    as_toolkit = brc_auth.read_state(contract, port=acl_server.port, user="brc_toolkit", password="tk-pw")
    as_default = brc_auth.read_state(contract, port=acl_server.port)
    assert as_toolkit["users"] == as_default["users"]
    assert as_toolkit["users"]["brc_toolkit"] == 0


@pytest.mark.parametrize("reply, want", [
    # RESP2 and RESP3 shapes of the same user
    ([b"flags", [b"on"], b"commands", b"+@all", b"keys", b"~*", b"selectors", []], True),
    ({b"flags": [b"on"], b"commands": b"+@all", b"keys": b"~*", b"selectors": []}, True),
    # Redis 6 rendered all keys as a flag
    ({"flags": ["on", "allkeys"], "commands": "+@all", "keys": []}, True),
    # a rule this module does not know: no
    ({"flags": ["on"], "commands": "+@all %frobnicate", "keys": "~*"}, False),
    ({"flags": ["on"], "commands": "+@all -GET|x", "keys": "~*"}, False),
    # key patterns that match a lot are still not every key
    ({"flags": ["on"], "commands": "+@all", "keys": "~** ~?* %R~app:*"}, False),
    # rules on other commands' subcommands do not touch GET
    ({"flags": ["on"], "commands": "-@all +get -config|set +client|id", "keys": "~*"}, True),
    (None, False),
])
def test_rules_without_redis(reply, want):
    ok, why = brc_auth.read_all_by_rules(reply, ["@read", "@string", "@fast"])
    assert ok is want, why


def test_no_get_command_means_no_user_reads_all():
    reply = {"flags": ["on", "nopass"], "commands": "+@all", "keys": "~*"}
    assert brc_auth.read_all_by_rules(reply, None) == (False, "Redis has no GET command")
    assert brc_auth.get_categories([None]) is None


@pytest.mark.parametrize("rules, want", [
    ("+@all", True), ("-@all", False), ("allcommands", True), ("nocommands +get", True),
    ("+@all -@string", False), ("+@all -@string +get", True), ("-@all +@fast", True),
    ("+@all -get +@string", True), ("-@all +@read -get", False), ("+@all -@read +@geo", False),
    ("+@all -@fast +set", False), ("", False), ("+get extra", False),
])
def test_command_rules_read_left_to_right(rules, want):
    ok, why = brc_auth.commands_allow_get(rules.split(), ["@read", "@string", "@fast"])
    assert ok is want, why


def test_dryrun_vetoes_what_the_rules_allow(acl_server, contract, monkeypatch):
    """Redis has the last word. The rules and DRYRUN agree for every real user (above),
    so a disagreement cannot be produced: DRYRUN's answer is replaced here."""
    real_call = brc_auth._Redis.__call__

    def call(self, *args):
        if args[:2] == ("ACL", "DRYRUN"):
            return b"This user has no permissions to access the key"
        return real_call(self, *args)

    monkeypatch.setattr(brc_auth._Redis, "__call__", call)
    state = brc_auth.read_state(contract, port=acl_server.port)
    assert state["users"]["default"] == flags_of(contract, False, True)
    assert "ACL DRYRUN" in state["reasons"]["default"]


# --- failing closed ---------------------------------------------------------------------

def brc_error(**kw):
    with pytest.raises(BrcError) as e:
        brc_auth.read_state(load_contract(BPF_DIR), **kw)
    return e.value.text


def test_unreachable_redis():
    text = brc_error(port=free_port())
    assert "cannot reach Redis" in text and "redis_host/redis_port" in text


def test_wrong_or_missing_password(pw_server):
    assert "set brc_redis_password" in brc_error(port=pw_server.port, password="wrong")
    assert "set brc_redis_password" in brc_error(port=pw_server.port)


def test_password_for_a_nopass_default_user(acl_server):
    assert "refused the toolkit's credentials" in brc_error(port=acl_server.port, password="unneeded")


def test_toolkit_user_without_the_rights(acl_server, admin):
    admin.execute_command("ACL", "SETUSER", "weak", "on", ">weak-pw", "+acl|users")
    text = brc_error(port=acl_server.port, user="weak", password="weak-pw")
    assert "grant the toolkit user " + brc_auth.TOOLKIT_GRANTS in text


def test_redis_without_acl():
    server = RedisServer(extra=["--rename-command", "ACL", ""])
    try:
        text = brc_error(port=server.port)
    finally:
        server.stop()
    assert "does not know ACL USERS" in text and "7.0 or later" in text


def test_unix_socket_must_be_the_watched_ports_redis():
    sock = os.path.join(tempfile.mkdtemp(prefix="brc-sock-"), "redis.sock")
    server = RedisServer(extra=["--unixsocket", sock])
    try:
        c = load_contract(BPF_DIR)
        state = brc_auth.read_state(c, unix_socket=sock, port=server.port)
        assert state["users"]["default"] == flags_of(c, True, True)
        other = server.port + 1 if server.port < 65535 else server.port - 1
        text = brc_error(unix_socket=sock, port=other)
        assert "serves TCP port %d, not %d" % (server.port, other) in text
    finally:
        server.stop()
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)


def test_two_servers_on_one_port_are_refused_one_server_on_two_addresses_is_not():
    port = free_port()
    one = RedisServer(port=port, bind=["127.0.0.1", "127.0.0.2"])
    try:
        c = load_contract(BPF_DIR)
        assert "default" in brc_auth.read_state(c, port=port)["users"]
    finally:
        one.stop()
    a = RedisServer(port=port)
    b = RedisServer(host="127.0.0.2", port=port)
    try:
        text = brc_error(port=port)
        assert "2 processes (pids %s) listen on TCP port %d" % (
            ", ".join(map(str, sorted([a.proc.pid, b.proc.pid]))), port) in text
        assert "could be another's" in text
    finally:
        a.stop()
        b.stop()


def _fake_proc(tmp_path, port, addrs):
    """A /proc with /proc/net/tcp listing listeners and no process to own them."""
    net = tmp_path / "net"
    net.mkdir()
    lines = ["  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"]
    for i, a in enumerate(addrs):
        hexaddr = "%08X" % int.from_bytes(bytes(map(int, a.split("."))), "little")
        lines.append("   %d: %s:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1"
                     % (i, hexaddr, port, 9000 + i))
    (net / "tcp").write_text("\n".join(lines) + "\n")
    (net / "tcp6").write_text(lines[0] + "\n")
    return str(tmp_path)


@pytest.mark.parametrize("addrs, refused", [
    (["10.0.0.5"], False),
    (["10.0.0.5", "127.0.0.1"], True),
    (["0.0.0.0", "127.0.0.1"], False),
])
def test_listeners_whose_owner_is_unknown_fall_back_to_addresses(tmp_path, addrs, refused):
    proc = _fake_proc(tmp_path, 6379, addrs)
    if refused:
        with pytest.raises(BrcError) as e:
            brc_auth.check_one_server(6379, proc)
        assert "cannot be read" in e.value.text
    else:
        brc_auth.check_one_server(6379, proc)


SHIM = r"""
import json, sys, types
mu = sys.argv[1]
a = types.ModuleType("ansible"); a.__path__ = []
m = types.ModuleType("ansible.module_utils"); m.__path__ = [mu]
sys.modules["ansible"], sys.modules["ansible.module_utils"], a.module_utils = a, m, m
from ansible.module_utils import brc_auth
from ansible.module_utils.brc_common import BrcError
from ansible.module_utils.brc_contract import load_contract
import redis
c = load_contract(sys.argv[2])
st = brc_auth.read_state(c, port=int(sys.argv[3]))
errors = []
for port, password in json.loads(sys.argv[4]):
    try:
        brc_auth.read_state(c, port=port, password=password)
        errors.append(None)
    except BrcError as e:
        errors.append(e.text)
print(json.dumps({"version": redis.__version__, "users": st["users"], "timeout": st["timeout"],
                  "errors": errors}))
"""


def test_hosts_redis_py_reads_the_same(acl_server, pw_server, admin, contract):
    """The hosts run the module with Debian's python3-redis (4.3), the controller has 8.x."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import redis; print(redis.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("/usr/bin/python3 has no redis-py (apt-get install python3-redis)")
    for user, rules, _want in CASES:
        admin.execute_command("ACL", "SETUSER", user, "reset", *rules)
    failing = [[pw_server.port, "wrong"], [pw_server.port, None], [acl_server.port, "unneeded"], [free_port(), None]]
    p = subprocess.run(["/usr/bin/python3", "-c", SHIM, os.path.join(REPO, "module_utils"), BPF_DIR,
                        str(acl_server.port), json.dumps(failing)], capture_output=True, text=True, check=True)
    host = json.loads(p.stdout)
    here = brc_auth.read_state(contract, port=acl_server.port)
    assert host["users"] == here["users"] and host["timeout"] == here["timeout"]
    assert host["version"] != redis.__version__
    # redis-py 4.3 raises refused credentials as plain ResponseErrors: same messages
    wrong, missing, unneeded, unreachable = host["errors"]
    for text in (wrong, missing, unneeded):
        assert "refused the toolkit's credentials" in text and "set brc_redis_password" in text
    assert "cannot reach Redis" in unreachable


# --- the loader against a real build's maps (bcc, no pins) ----------------------------------

@pytest.fixture(scope="module")
def build():
    skip_unless_kernel()
    from ansible.module_utils.brc_compile import compile_programs
    return compile_programs(BPF_DIR)


@pytest.fixture
def maps(build, contract):
    m = brc_auth.BccAuthMaps(build.bpf, contract)
    yield m
    for key in m.users.keys():
        m.users.delete(key)
    m.server.update(0, b"")
    m.global_.update(0, b"")


def set_global(maps, contract, **fields):
    cls = contract.structs["brc_global"]
    st = cls.from_buffer_copy(maps.global_.lookup(0))
    for k, v in fields.items():
        setattr(st, k, v)
    maps.global_.update(0, bytes(st))


def reader(contract, server, **kw):
    return lambda: brc_auth.read_state(contract, port=server.port, **kw)


def test_load_fills_users_and_server_then_is_idempotent(maps, contract, acl_server, admin):
    admin.execute_command("ACL", "SETUSER", "app", "on", ">p", "~app:*", "+get")
    admin.execute_command("CONFIG", "SET", "timeout", "10")
    set_global(maps, contract, auth_epoch=3)
    r = brc_auth.load(maps, contract, reader(contract, acl_server))
    assert r["changed"] and r["attempts"] == 1 and r["answering"]
    assert r["users_added"] == ["app", "default"]
    assert brc_auth.read_users(maps, contract) == {"app": 0, "default": flags_of(contract, True, True)}
    server = brc_auth.read_server(maps, contract)
    assert server["auth_epoch"] == 3 and server["idle_pass_ns"] == 5 * 10 ** 9 and server["loaded_ns"] > 0
    # the raw key layout the programs look up: len, then the name zero-padded
    raw = brc_auth.user_key(contract, "app")
    assert raw == (3).to_bytes(4, "little") + b"app".ljust(contract.constants["BRC_USER_MAX"], b"\0")
    assert maps.users.lookup(raw) is not None

    again = brc_auth.load(maps, contract, reader(contract, acl_server))
    assert not again["changed"] and not again["epoch_changed"]
    assert brc_auth.read_server(maps, contract)["loaded_ns"] > server["loaded_ns"]

    admin.execute_command("ACL", "DELUSER", "app")
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">p", "%R~*", "+@read")
    r = brc_auth.load(maps, contract, reader(contract, acl_server))
    assert r["changed"] and r["users_added"] == ["reader"] and r["users_removed"] == ["app"]
    assert brc_auth.read_users(maps, contract) == {"default": flags_of(contract, True, True),
                                                   "reader": flags_of(contract, True)}


def test_a_completed_auth_change_is_picked_up_as_the_new_epoch(maps, contract, acl_server):
    """The programs bump brc_global.auth_epoch when an auth-changing command completes;
    without traffic the test writes it, as if one had."""
    brc_auth.load(maps, contract, reader(contract, acl_server))
    set_global(maps, contract, auth_epoch=41)
    r = brc_auth.load(maps, contract, reader(contract, acl_server))
    assert r["changed"] and r["epoch_changed"] and not (r["users_added"] or r["users_removed"])
    assert r["auth_epoch"] == 41 and brc_auth.read_server(maps, contract)["auth_epoch"] == 41


def test_a_change_during_the_read_restarts_the_load(maps, contract, acl_server):
    calls = []

    def state():
        calls.append(1)
        if len(calls) == 2:   # the first read inside the protocol: an ACL change completes
            set_global(maps, contract, auth_epoch=brc_auth.read_global(maps, contract)["auth_epoch"] + 1)
        return brc_auth.read_state(contract, port=acl_server.port)

    e_before = brc_auth.read_global(maps, contract)["auth_epoch"]
    r = brc_auth.load(maps, contract, state)
    assert r["attempts"] == 2 and r["auth_epoch"] == e_before + 1 and r["answering"]


def test_stuck_auth_command_leaves_serve_stopped(maps, contract, acl_server):
    brc_auth.load(maps, contract, reader(contract, acl_server))
    set_global(maps, contract, auth_inflight=1)
    with pytest.raises(BrcError) as e:
        brc_auth.load(maps, contract, reader(contract, acl_server), attempts=2, inflight_wait_s=0.05)
    assert "Serve answers stay stopped" in e.value.text and "retry brc_auth" in e.value.text
    assert e.value.details["serve_stopped"]
    assert brc_auth.read_server(maps, contract)["auth_epoch"] == contract.constants["BRC_EPOCH_NONE"]


def test_inflight_command_completing_during_the_wait(maps, contract, acl_server):
    set_global(maps, contract, auth_epoch=5, auth_inflight=1)
    ticks = []

    def sleep(_s):
        ticks.append(1)
        if len(ticks) == 3:   # the command completes: inflight back to 0, epoch bumped
            set_global(maps, contract, auth_epoch=6, auth_inflight=0)

    r = brc_auth.load(maps, contract, reader(contract, acl_server), sleep=sleep)
    # e0 was 5 when the wait began: the bump to 6 restarts the load once
    assert r["auth_epoch"] == 6 and r["attempts"] == 2 and r["answering"]


def test_check_mode_writes_nothing(maps, contract, acl_server, admin):
    brc_auth.load(maps, contract, reader(contract, acl_server))
    before = (brc_auth.read_users(maps, contract), brc_auth.read_server(maps, contract))
    admin.execute_command("ACL", "SETUSER", "newbie", "on", ">p", "~*", "+get")
    set_global(maps, contract, auth_epoch=9)
    r = brc_auth.load(maps, contract, reader(contract, acl_server), check_mode=True)
    assert r["changed"] and r["users_added"] == ["newbie"] and r["auth_epoch"] == 9
    assert (brc_auth.read_users(maps, contract), brc_auth.read_server(maps, contract)) == before


def test_a_failed_read_changes_nothing(maps, contract, acl_server, pw_server):
    brc_auth.load(maps, contract, reader(contract, acl_server))
    before = (brc_auth.read_users(maps, contract), brc_auth.read_server(maps, contract))
    with pytest.raises(BrcError) as e:
        brc_auth.load(maps, contract, reader(contract, pw_server, password="wrong"))
    assert "set brc_redis_password" in e.value.text
    assert (brc_auth.read_users(maps, contract), brc_auth.read_server(maps, contract)) == before


def test_redis_failing_during_the_load_leaves_serve_stopped(maps, contract, acl_server, pw_server):
    """The read before anything is written passes; the one inside the protocol (after
    answers were stopped) fails, as when the password changes in between."""
    reads = [reader(contract, acl_server), reader(contract, pw_server, password="wrong")]
    with pytest.raises(BrcError) as e:
        brc_auth.load(maps, contract, lambda: reads.pop(0)())
    assert "refused the toolkit's credentials" in e.value.text and "Serve answers stay stopped" in e.value.text
    assert e.value.details["serve_stopped"]
    assert brc_auth.read_server(maps, contract)["auth_epoch"] == contract.constants["BRC_EPOCH_NONE"]


def test_maps_of_another_layout_are_refused(build, contract):
    text = open(os.path.join(BPF_DIR, "brc_contract.h")).read()
    from ansible.module_utils.brc_contract import Contract
    other = Contract(text.replace("__u32 flags;            /* BRC_USER_* */", "__u64 flags;"))
    assert ctypes.sizeof(other.structs["brc_user"]) != ctypes.sizeof(contract.structs["brc_user"])
    with pytest.raises(BrcError) as e:
        brc_auth.BccAuthMaps(build.bpf, other)
    assert "brc_users" in e.value.text and "redeploy" in e.value.text


# --- the module --------------------------------------------------------------------------------

def test_module_without_pins_says_so_unchanged(tmp_path, acl_server):
    r = run_module(brc_auth_module, {"pin_root": str(tmp_path), "src_dir": BPF_DIR,
                                     "redis_port": acl_server.port})
    assert not r.get("failed") and not r["changed"]
    assert "no BRC pins under %s" % tmp_path in r["msg"]


def test_module_check_mode_before_the_first_deploy(tmp_path, acl_server, admin):
    """No maps yet (brc_program would create them): reads Redis, predicts the load, and
    shows a user name that is not UTF-8 (Redis names are bytes) the way Ansible can carry."""
    admin.execute_command("ACL", "SETUSER", b"bin\xffuser", "on", "nopass", "~*", "+get")
    r = run_module(brc_auth_module, {"interface": "eth0", "pin_root": str(tmp_path), "src_dir": BPF_DIR,
                                     "redis_port": acl_server.port}, check_mode=True)
    assert not r.get("failed") and r["changed"] and not os.listdir(str(tmp_path))
    assert {"name": "bin\\xffuser", "read_all": True, "open": False, "mget": False,
            "why": "root: every key readable, GET allowed (+get); MGET: root: MGET denied by -@all"} in r["users"]
    assert "bin\\xffuser" in r["interfaces"]["eth0"]["users_added"]
    assert "\\udc" not in json.dumps(r)


def test_module_without_redis_py(tmp_path, monkeypatch):
    """redis-py is installed here: its absence is simulated."""
    monkeypatch.setattr(brc_common, "import_redis", lambda: (None, "ImportError: No module named 'redis'"))
    r = run_module(brc_auth_module, {"pin_root": str(tmp_path), "src_dir": BPF_DIR})
    assert r["failed"] and "python3-redis" in r["msg"]


MODULE_E2E = r"""
import shutil, tempfile
from ansible.module_utils import brc_auth as ba, brc_build, brc_pins
from ansible.module_utils.brc_contract import load_contract
import brc_auth

def run(check=False, **args):
    args.setdefault("redis_password", "s3cret-pw")
    return run_main(brc_auth, check=check, _ansible_diff=True, **args)

def rcli(*args):
    return subprocess.run(["redis-cli", "-a", "s3cret-pw", "--no-auth-warning"] + list(args),
                          capture_output=True, text=True, check=True).stdout.strip()

sh("ip link set lo up")
d = tempfile.mkdtemp(prefix="brcmt-redis-")
redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
                          "--appendonly", "no", "--dir", d, "--requirepass", "s3cret-pw"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.2).close()
        break
    except OSError:
        time.sleep(0.05)
mount_bpffs()
c = load_contract(BPF_DIR)
out = {}
out["no_pins"] = run()
out["check_no_maps"] = run(check=True, interface=IF)
brc_build.install(IF, BPF_DIR, ROOT, state_dir=STATE)
PD = brc_pins.pin_dir(ROOT, IF)

def maps_now():
    with ba.PinnedAuthMaps(PD, c) as m:
        return {"users": ba.read_users(m, c), "server": ba.read_server(m, c)}

def bump_epoch(e):
    with brc_pins.PinnedMap(PD + "/" + c.map_name("global")) as g:
        st = c.structs["brc_global"].from_buffer_copy(g.lookup(0))
        st.auth_epoch = e
        g.update(0, bytes(st))

out["maps_fresh"] = maps_now()
out["first"] = run()
out["maps_first"] = maps_now()
out["second"] = run(interface=IF)
rcli("ACL", "SETUSER", "reader", "on", ">r", "%R~*", "+@read")
out["maps_before_check"] = maps_now()
out["check"] = run(check=True)
out["maps_after_check"] = maps_now()
out["third"] = run()
bump_epoch(7)
out["after_bump"] = run()
out["maps_bumped"] = maps_now()
out["again"] = run()
out["wrong_pw"] = run(redis_password="nope")
out["maps_after_wrong_pw"] = maps_now()
rcli("CONFIG", "SET", "timeout", "30")
out["timeout"] = run()
out["maps_timeout"] = maps_now()
redis.kill(); redis.wait()
out["down"] = run()
shutil.rmtree(d, ignore_errors=True)
emit(out)
"""


def test_module_in_netns_with_pinned_maps(in_netns, contract):
    r = in_netns(MODULE_E2E)
    none = contract.constants["BRC_EPOCH_NONE"]
    read_all = flags_of(contract, True)
    assert not r["no_pins"]["changed"] and "no BRC pins" in r["no_pins"]["msg"]
    assert r["check_no_maps"]["changed"] and not r["check_no_maps"].get("failed")
    # fresh maps: nothing in brc_users (nothing answered)
    assert r["maps_fresh"]["users"] == {}
    first = r["first"]
    assert first["changed"] and first["answering"] and first["auth_epoch"] == {"brcmt0": 0}
    assert first["users"] == [{"name": "default", "read_all": True, "open": False, "mget": True,
                               "why": "root: every key readable, GET allowed (+@all); "
                                      "MGET: root: every key readable, MGET allowed (+@all)"}]
    assert first["diff"]["before"]["brcmt0"]["users"] == {}
    assert first["diff"]["after"]["brcmt0"]["users"] == {"default": {"read_all": True, "open": False,
                                                                      "mget": True}}
    assert r["maps_first"]["users"] == {"default": read_all}
    assert not r["second"]["changed"]
    # check mode reports the new user and writes nothing
    check = r["check"]
    assert check["changed"] and check["interfaces"]["brcmt0"]["users_added"] == ["reader"]
    assert r["maps_after_check"] == r["maps_before_check"]
    assert r["third"]["changed"] and {u["name"] for u in r["third"]["users"]} == {"default", "reader"}
    # a completed auth change (the programs' epoch bump) is loaded as the new epoch
    assert r["after_bump"]["changed"] and r["after_bump"]["auth_epoch"] == {"brcmt0": 7}
    assert r["maps_bumped"]["server"]["auth_epoch"] == 7
    assert not r["again"]["changed"]
    # a wrong password fails clearly and stops nothing that was answering
    wrong = r["wrong_pw"]
    assert wrong["failed"] and "set brc_redis_password" in wrong["msg"]
    assert "s3cret-pw" not in json.dumps(wrong)
    assert r["maps_after_wrong_pw"]["server"]["auth_epoch"] == 7 != none
    assert r["timeout"]["changed"] and r["maps_timeout"]["server"]["idle_pass_ns"] == 15 * 10 ** 9
    assert r["timeout"]["interfaces"]["brcmt0"]["idle_pass_ns"] == 15 * 10 ** 9
    down = r["down"]
    assert down["failed"] and "cannot reach Redis at 127.0.0.1:6379" in down["msg"]


def test_a_hold_is_waited_out_before_redis_is_read(maps, contract, acl_server):
    # A client reset its connection with an auth command unanswered: Redis may run
    # it until the hold. A read made before then could miss it, so the loader reads
    # after the hold, and the programs answer.
    hold = time.monotonic_ns() + 300_000_000
    set_global(maps, contract, auth_hold_until_ns=hold)
    r = brc_auth.load(maps, contract, reader(contract, acl_server))
    assert r["answering"] and r["after"]["server"]["loaded_ns"] >= hold


def test_a_hold_longer_than_the_wait_leaves_answers_stopped(maps, contract, acl_server):
    set_global(maps, contract, auth_hold_until_ns=time.monotonic_ns() + 60_000_000_000)
    r = brc_auth.load(maps, contract, reader(contract, acl_server), hold_wait_s=0)
    assert not r["answering"]
    set_global(maps, contract, auth_hold_until_ns=0)
