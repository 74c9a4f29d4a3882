"""brc_agent: the host agent's install-time management, for real. A real redis-server
(fixtures.redis.RedisServer), the real build pinned by brc_build.install (what
brc_program does) in a bpffs this module mounts on a temporary directory, and the
real agent (roles/brc/files/brc-agent plus the module_utils it imports, copied into
a temporary lib_dir as the role ships them) started by the module through
start-stop-daemon on /usr/bin/python3.

Every agent started here is killed by the pid its pidfile names, the users made are
deleted, and the bpffs is unmounted, also on failure."""
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import redis

import brc_agent as brc_agent_module
from ansible.module_utils import brc_agent, brc_agent_ctl, brc_build, brc_maps, brc_pins

from fixtures.kernel import skip_unless_kernel
from fixtures.paths import BPF_DIR, REPO
from fixtures.redis import RedisServer
from modules.conftest import run_module

IFACE = "brcag0"      # only a pin directory name: the agent needs the maps, not an attachment
USER = "brc-agent"


@pytest.fixture(scope="module")
def pin_root():
    """The real build's pins for IFACE in a bpffs of this module's own."""
    skip_unless_kernel()
    tmp = tempfile.mkdtemp(prefix="brcagm-")
    bpffs = os.path.join(tmp, "bpffs")
    os.mkdir(bpffs)
    subprocess.run(["mount", "-t", "bpf", "bpf", bpffs], check=True)
    try:
        root = os.path.join(bpffs, "brc")
        brc_build.install(IFACE, BPF_DIR, root, state_dir=os.path.join(tmp, "state"))
        yield root
    finally:
        subprocess.run(["umount", bpffs], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = RedisServer()
    yield s
    s.stop()


def ship_agent(d):
    """What the role ships into @d: the launcher and the module_utils the agent imports."""
    d.mkdir()
    shutil.copy(os.path.join(REPO, "roles", "brc", "files", "brc-agent"), str(d))
    for name in brc_agent_ctl.AGENT_FILES[1:]:
        shutil.copy(os.path.join(REPO, "module_utils", name), str(d))
    return str(d)


@pytest.fixture
def lib_dir(tmp_path):
    return ship_agent(tmp_path / "lib")


@pytest.fixture
def env(tmp_path, pin_root, server, lib_dir):
    """Module arguments for one test; afterwards: any agent left running killed, users deleted."""
    args = {"interface": IFACE, "pin_root": pin_root, "src_dir": BPF_DIR, "lib_dir": lib_dir,
            "redis_host": server.host, "redis_port": server.port, "user": USER,
            "password_file": str(tmp_path / "etc" / "agent.password"),
            "pidfile": str(tmp_path / "run" / "brc-agent.pid"), "log": str(tmp_path / "agent.log")}
    client = redis.Redis(host=server.host, port=server.port, protocol=2)
    before = set(client.execute_command("ACL", "USERS"))
    pids = []
    yield {"args": args, "redis": client, "pids": pids}
    pid = brc_agent_ctl.running_pid(args["pidfile"])
    for p in set(pids + ([pid] if pid else [])):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    for name in set(client.execute_command("ACL", "USERS")) - before:
        client.execute_command("ACL", "DELUSER", name)
    client.close()


def run(env, check_mode=False, **over):
    args = dict(env["args"], **over)
    r = run_module(brc_agent_module, args, check_mode=check_mode)
    if r.get("pid"):
        env["pids"].append(r["pid"])
    return r


def warnings(result):
    """The module's warnings as text (ansible-core 2.19+ returns them as structured summaries)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


def getuser(client, name):
    reply = client.execute_command("ACL", "GETUSER", name)
    if reply is None:
        return None
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2]))


def agent_map(pin_root, contract):
    """The pinned brc_agent, read here with the pins library (not the module's reader)."""
    with brc_pins.PinnedMap(os.path.join(pin_root, IFACE, contract.map_name("agent"))) as m:
        raw = m.lookup(0)
    return contract.structs["brc_agent"].from_buffer_copy(raw[:m.info["value_size"]])


def beat_fresh(pin_root, contract, pid):
    st = agent_map(pin_root, contract)
    return bool(st.flags & contract.constants["BRC_AGENT_F_ON"]) and st.pid == pid and \
        time.monotonic_ns() - st.beat_ns < contract.constants["BRC_AGENT_STALE_NS"]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except IOError:
        return False


def password_of(env):
    with open(env["args"]["password_file"]) as f:
        return f.read().strip()


def assert_exact_user(env, password):
    """The user is what `ACL SETUSER x reset on ><password> <AGENT_GRANTS>` gives (Redis's own rendering)."""
    c = env["redis"]
    have = getuser(c, USER)
    c.execute_command("ACL", "SETUSER", "brc-test-ref", "reset", "on", ">" + password,
                      *brc_agent.AGENT_GRANTS.split())
    try:
        want = getuser(c, "brc-test-ref")
    finally:
        c.execute_command("ACL", "DELUSER", "brc-test-ref")
    assert have is not None
    assert b"on" in have[b"flags"]
    assert have[b"passwords"] == [hashlib.sha256(password.encode()).hexdigest().encode()]
    assert dict((k, v) for k, v in have.items() if k != b"passwords") == \
        dict((k, v) for k, v in want.items() if k != b"passwords")


def test_present_restarts_on_changes_and_absent_releases(env, pin_root, contract):
    first = run(env)
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] and first["started"] and first["user_changed"] and first["beating"]
    # no systemd running here: auto is start-stop-daemon (tests/modules/test_agent_systemd.py for systemd)
    assert first["supervisor"] == "start-stop-daemon" and first["unit"] is None
    assert first["pidfile"] == env["args"]["pidfile"]
    pid = first["pid"]
    assert alive(pid) and beat_fresh(pin_root, contract, pid)
    assert first["agent"]["in_charge"] and first["agent"]["answering"] and first["agent"]["pid"] == pid
    by_reason = first["agent"]["flushes_by_reason"]
    assert set(by_reason) == set(contract.agent_flush_reasons)
    assert by_reason["agent_start"] >= 1 and by_reason["resync"] >= 1
    assert sum(by_reason.values()) == first["agent"]["feed_flushes"]
    # generated password, kept 0600, and the user exactly the grants
    assert os.stat(env["args"]["password_file"]).st_mode & 0o777 == 0o600
    password = password_of(env)
    assert len(password) >= 32
    assert_exact_user(env, password)
    # no config file, no aclfile: not persisted, and said so
    assert first["user_persisted"] is False
    assert any("not persisted" in w and "fail closed" in w for w in warnings(first))
    # the password is never on a command line
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert password.encode() not in f.read()

    again = run(env)
    assert not again["changed"] and not again["started"] and not again["user_changed"]
    assert again["pid"] == pid and again["beating"]

    # a new password: the user rewritten, the agent restarted with it
    new_pw = run(env, password="another-pw-123")
    assert new_pw["changed"] and new_pw["started"] and new_pw["user_changed"]
    assert new_pw["pid"] != pid and not alive(pid) and beat_fresh(pin_root, contract, new_pw["pid"])
    assert password_of(env) == "another-pw-123"
    assert_exact_user(env, "another-pw-123")
    pid = new_pw["pid"]
    assert not run(env, password="another-pw-123")["changed"]

    # an upgrade (a file in lib_dir changed): restarted, the user left alone
    with open(os.path.join(env["args"]["lib_dir"], "brc_agent.py"), "a") as f:
        f.write("\n# upgraded\n")
    upgraded = run(env)           # password empty: the file's is kept
    assert upgraded["changed"] and upgraded["started"] and not upgraded["user_changed"]
    assert upgraded["pid"] != pid and beat_fresh(pin_root, contract, upgraded["pid"])
    pid = upgraded["pid"]

    # someone changed the user behind the module's back: rewritten, agent kept
    env["redis"].execute_command("ACL", "SETUSER", USER, "+get")
    fixed = run(env)
    assert fixed["changed"] and fixed["user_changed"] and not fixed["started"] and fixed["pid"] == pid
    assert_exact_user(env, "another-pw-123")

    before = fixed["agent"]["flushes_by_reason"]
    gone = run(env, state="absent")
    assert not gone.get("failed"), gone.get("msg")
    assert gone["changed"] and gone["stopped"] and gone["released"] and gone["user_changed"]
    assert not alive(pid)
    st = agent_map(pin_root, contract)
    assert not st.flags & contract.constants["BRC_AGENT_F_ON"]
    after = brc_maps.agent_flushes(contract, list(st.flushes_by_reason))
    assert dict((r, n - before[r]) for r, n in after.items() if n != before[r]) == \
        {"agent_stop": 1, "agent_release": 1}       # the daemon's SIGTERM, then --release
    assert getuser(env["redis"], USER) is None
    for path in (env["args"]["password_file"], env["args"]["pidfile"],
                 brc_agent_ctl.state_file(env["args"]["pidfile"])):
        assert not os.path.exists(path)
    second = run(env, state="absent")
    assert not second["changed"] and not second["stopped"] and not second["released"]


def test_check_mode_changes_nothing(env, pin_root, contract):
    r = run(env, check_mode=True)
    assert r["changed"] and r["started"] and r["user_changed"] and r["pid"] is None
    assert getuser(env["redis"], USER) is None
    for path in (env["args"]["password_file"], env["args"]["pidfile"]):
        assert not os.path.exists(path)

    real = run(env)
    pid = real["pid"]
    assert real["beating"]
    assert not run(env, check_mode=True)["changed"]
    would = run(env, check_mode=True, password="new-one")
    assert would["changed"] and would["started"] and would["user_changed"]
    assert brc_agent_ctl.running_pid(env["args"]["pidfile"]) == pid and beat_fresh(pin_root, contract, pid)
    assert_exact_user(env, password_of(env))

    would_go = run(env, check_mode=True, state="absent")
    assert would_go["changed"] and would_go["stopped"] and would_go["released"] and would_go["user_changed"]
    assert alive(pid) and beat_fresh(pin_root, contract, pid)
    assert getuser(env["redis"], USER) is not None and os.path.exists(env["args"]["password_file"])
    assert run(env, state="absent")["changed"]


@pytest.mark.skipif(os.path.isdir(brc_agent_ctl.SYSTEMD_RUN_DIR), reason="systemd runs here")
def test_systemd_where_it_does_not_run_fails_and_leaves_nothing(env):
    for check_mode in (True, False):
        r = run(env, check_mode=check_mode, supervisor="systemd")
        assert r["failed"] and "systemd does not run" in r["msg"]
        assert "set supervisor to start-stop-daemon, or to auto" in r["msg"]
    assert getuser(env["redis"], USER) is None
    for path in (env["args"]["password_file"], env["args"]["pidfile"], brc_agent_ctl.unit_path(IFACE),
                 brc_agent_ctl.systemd_state_file(IFACE)):
        assert not os.path.exists(path)
    # absent removes under both supervisors whatever it is told: nothing to do, no error
    gone = run(env, state="absent", supervisor="systemd")
    assert not gone.get("failed"), gone.get("msg")
    assert not gone["changed"] and gone["supervisor"] == "systemd"


def test_missing_pins_fail_clearly_and_start_nothing(env):
    r = run(env, interface="brcnone0")
    assert r["failed"] and "deploy BRC first" in r["msg"]
    assert getuser(env["redis"], USER) is None
    assert not os.path.exists(env["args"]["pidfile"]) and not os.path.exists(env["args"]["password_file"])
    # check mode before the first deploy (brc_program would pin them): would start, no error
    would = run(env, check_mode=True, interface="brcnone0")
    assert not would.get("failed") and would["changed"] and would["started"]
    assert getuser(env["redis"], USER) is None and not os.path.exists(env["args"]["password_file"])


def test_missing_agent_files_say_ship_them(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(env, lib_dir=str(empty))
    assert r["failed"] and "ship them first" in r["msg"] and "brc_agent.py" in r["msg"]
    assert getuser(env["redis"], USER) is None and not os.path.exists(env["args"]["pidfile"])


def test_unreachable_redis_names_the_options_and_starts_nothing(env):
    import socket
    with socket.socket() as s:          # a loopback port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    r = run(env, redis_port=closed_port)
    assert r["failed"] and "is not reachable" in r["msg"] and "redis_port" in r["msg"], r["msg"]
    assert getuser(env["redis"], USER) is None
    assert not os.path.exists(env["args"]["pidfile"]) and not os.path.exists(env["args"]["password_file"])


def test_refused_admin_credentials_name_the_option(env):
    r = run(env, admin_user="nobody", admin_password="wrong")
    assert r["failed"] and "refused the admin credentials" in r["msg"] and "admin_password" in r["msg"]
    assert not os.path.exists(env["args"]["pidfile"])


def test_agent_that_dies_is_reported_and_not_left_half_started(env, pin_root, contract):
    with open(os.path.join(env["args"]["lib_dir"], "brc_agent.py"), "a") as f:
        f.write("\nraise SystemExit('broken on purpose')\n")
    r = run(env)
    assert r["failed"] and "did not start" in r["msg"] and "broken on purpose" in r["msg"]
    assert "fail closed" in r["msg"]
    assert brc_agent_ctl.running_pid(env["args"]["pidfile"]) is None
    assert not os.path.exists(env["args"]["pidfile"])
    assert not os.path.exists(brc_agent_ctl.state_file(env["args"]["pidfile"]))


def test_user_persisted_with_an_aclfile(tmp_path, pin_root, lib_dir):
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("user default on nopass ~* &* +@all\n")
    s = RedisServer(extra=["--aclfile", str(aclfile)])
    env = {"args": {"interface": IFACE, "pin_root": pin_root, "src_dir": BPF_DIR, "lib_dir": lib_dir,
                    "redis_host": s.host, "redis_port": s.port, "user": USER,
                    "password_file": str(tmp_path / "agent.password"),
                    "pidfile": str(tmp_path / "agent.pid"), "log": str(tmp_path / "agent.log")},
           "pids": []}
    try:
        r = run(env)
        assert not r.get("failed"), r.get("msg")
        # (warnings accumulate in-process across module runs: only this Redis's count)
        assert r["user_persisted"] is True and not [w for w in warnings(r) if ":%d " % s.port in w]
        assert "user %s on" % USER in aclfile.read_text()
        gone = run(env, state="absent")
        assert gone["user_changed"] and gone["user_persisted"] is True
        assert "user %s " % USER not in aclfile.read_text()
    finally:
        for p in env["pids"]:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        s.stop()
