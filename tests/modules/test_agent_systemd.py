"""brc_agent's systemd supervisor, as far as this machine can check it for real.

systemd-analyze and systemctl are installed here but systemd does not run (no
/run/systemd/system). So the unit brc_agent writes is rendered for real options and
checked with `systemd-analyze verify` (offline: it parses the unit and checks the
executable), the choice of supervisor and the refusal of systemd where it does not run
are run through the module, and the removal of a unit is run on files in a temporary
unit directory. The success path (systemctl enable/restart, the heartbeat under
systemd) cannot run here and is deliberately not mocked."""
import os
import shutil
import subprocess

import pytest

import brc_agent as brc_agent_module
from ansible.module_utils import brc_agent_ctl, brc_pins
from ansible.module_utils.brc_common import BrcError

from fixtures.paths import BPF_DIR, REPO
from modules.conftest import run_module
from modules.test_agent_module import ship_agent

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NO_SYSTEMD = not os.path.isdir(brc_agent_ctl.SYSTEMD_RUN_DIR)


@pytest.fixture
def lib_dir(tmp_path):
    """What the role ships, in a path with a space."""
    return ship_agent(tmp_path / "agent lib")


def render(lib_dir, pin_root="/sys/fs/bpf/brc", interface="eth0", python=brc_agent_ctl.PYTHON, **kw):
    argv = brc_agent_ctl.agent_argv(lib_dir, brc_pins.pin_dir(pin_root, interface), BPF_DIR,
                                    kw.get("redis_host", "127.0.0.1"), kw.get("redis_port", 6379),
                                    kw.get("redis_socket"), "brc-agent", "/etc/brc/agent.password",
                                    kw.get("log", "/var/log/brc-agent-%s.log" % interface))
    return brc_agent_ctl.render_unit(argv, pin_root, interface, python)


def verify(tmp_path, text, interface="eth0"):
    """systemd-analyze verify on the unit written as brc-agent@<interface>.service.
    Returns (rc, the lines about it, all output)."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("needs systemd-analyze (Debian package systemd)")
    d = tmp_path / "units"
    d.mkdir(exist_ok=True)
    path = d / brc_agent_ctl.unit_name(interface)
    path.write_text(text)
    p = subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    out = p.stdout + p.stderr
    about = [line for line in out.splitlines() if "brc-agent@" in line or str(d) in line]
    return p.returncode, about, out


def test_unit_for_real_options_verifies(tmp_path, lib_dir):
    text = render(lib_dir)
    script = os.path.join(lib_dir, "brc-agent")
    assert ('ExecStart=/usr/bin/python3 "%s" --pin-dir /sys/fs/bpf/brc/%%i --src-dir %s --redis-host 127.0.0.1 '
            "--redis-port 6379 --user brc-agent --password-file /etc/brc/agent.password "
            "--log /var/log/brc-agent-eth0.log\n" % (script, BPF_DIR)) in text
    for line in ("Restart=always", "RestartSec=2", "StartLimitIntervalSec=0",
                 "After=network.target redis-server.service", "ConditionPathIsDirectory=/sys/fs/bpf/brc/%i",
                 "WantedBy=multi-user.target"):
        assert line + "\n" in text
    assert "Requires=" not in text and "Wants=" not in text       # Redis is ordered after, not depended on
    # nothing that would take bpf(2) or the pins away from the agent
    for bad in ("User=", "DynamicUser", "CapabilityBoundingSet", "ProtectKernelTunables", "PrivateTmp",
                "ProtectSystem=strict", "SystemCallFilter", "PrivateDevices"):
        assert bad not in text
    rc, about, out = verify(tmp_path, text)
    assert rc == 0 and not about, out
    # the same for a Unix socket and an interface with a VLAN's dot
    rc, about, out = verify(tmp_path, render(lib_dir, interface="eth0.100", redis_socket="/run/redis/r.sock"),
                            interface="eth0.100")
    assert rc == 0 and not about, out


def test_unit_is_deterministic_and_holds_no_password(lib_dir):
    assert render(lib_dir) == render(lib_dir)
    assert render(lib_dir) != render(lib_dir, redis_port=6380)     # new options: a new unit (and a restart)
    assert "password-file" in render(lib_dir) and "BRC_AGENT_PASSWORD" not in render(lib_dir)


def test_unit_quoting_survives_systemd(tmp_path, lib_dir):
    """Spaces and % in the executable and the pins: systemd-analyze checks the executable it
    parsed exists, so a wrong escape is an error here."""
    weird = tmp_path / "py dir %i 100%"
    weird.mkdir()
    python = weird / "python 3"
    python.symlink_to("/usr/bin/python3")
    text = render(lib_dir, pin_root="/sys/fs/bpf/b rc%n", python=str(python), log="/var/log/a$b.log")
    assert '--pin-dir "/sys/fs/bpf/b rc%%n/%i"' in text and '--log "/var/log/a$$b.log"' in text
    rc, about, out = verify(tmp_path, text)
    assert rc == 0 and not about, out
    # the control: an executable that does not exist is reported (the check is real)
    rc, about, out = verify(tmp_path, render(lib_dir, python=str(tmp_path / "nope" / "python3")))
    assert rc != 0 and any("nope/python3" in line for line in about), out
    # what systemd cannot take is refused before anything is written
    with pytest.raises(BrcError, match="cannot be written"):
        render(lib_dir, python='/opt/"py"/python3')
    with pytest.raises(BrcError, match="cannot be a systemd instance name"):
        brc_agent_ctl.unit_name("eth 0")


def test_supervisor_choice(tmp_path):
    run_dir = tmp_path / "run-systemd-system"
    assert brc_agent_ctl.resolve_supervisor("auto", str(run_dir)) == "start-stop-daemon"
    assert brc_agent_ctl.resolve_supervisor("start-stop-daemon", str(run_dir)) == "start-stop-daemon"
    with pytest.raises(BrcError) as e:
        brc_agent_ctl.resolve_supervisor("systemd", str(run_dir))
    assert "systemd does not run" in e.value.msg and "start-stop-daemon" in e.value.fix and "auto" in e.value.fix
    run_dir.mkdir()
    assert brc_agent_ctl.resolve_supervisor("auto", str(run_dir)) == "systemd"
    if shutil.which("systemctl"):
        assert brc_agent_ctl.resolve_supervisor("systemd", str(run_dir)) == "systemd"


@pytest.mark.skipif(not NO_SYSTEMD, reason="systemd runs here: auto would pick it")
def test_auto_is_start_stop_daemon_here():
    assert brc_agent_ctl.resolve_supervisor("auto") == "start-stop-daemon"


@pytest.mark.skipif(not NO_SYSTEMD, reason="systemd runs here")
def test_module_refuses_systemd_where_it_does_not_run(tmp_path, lib_dir):
    """Fails first, in check mode too, naming the fix; nothing written (the unit, the password
    file, the pidfile, the record). Redis is never reached: the refusal comes before it."""
    args = {"interface": "brcsd0", "pin_root": str(tmp_path / "pins"), "src_dir": BPF_DIR, "lib_dir": lib_dir,
            "redis_port": 1, "password_file": str(tmp_path / "agent.password"),
            "pidfile": str(tmp_path / "agent.pid"), "log": str(tmp_path / "agent.log"), "supervisor": "systemd"}
    for check_mode in (True, False):
        r = run_module(brc_agent_module, args, check_mode=check_mode)
        assert r["failed"] and "systemd does not run" in r["msg"], r
        assert "start-stop-daemon" in r["msg"] and "auto" in r["msg"] and "brc_agent_supervisor" in r["msg"]
    assert sorted(os.listdir(str(tmp_path))) == ["agent lib"]
    assert not os.path.exists(brc_agent_ctl.unit_path("brcsd0"))
    assert not os.path.exists(brc_agent_ctl.systemd_state_file("brcsd0"))


def test_remove_unit_without_systemd(tmp_path):
    """What absent (and a switch to start-stop-daemon) does to a unit where systemd does not run:
    the file and its .wants link removed, check mode removes nothing, a second run has nothing to do."""
    unit_dir, run_dir = tmp_path / "system", str(tmp_path / "no-systemd")
    wants = unit_dir / "multi-user.target.wants"
    wants.mkdir(parents=True)
    unit = unit_dir / "brc-agent@eth0.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    (wants / unit.name).symlink_to(unit)
    other = unit_dir / "brc-agent@eth1.service"
    other.write_text("[Service]\nExecStart=/bin/true\n")
    assert brc_agent_ctl.remove_unit("eth0", True, str(unit_dir), run_dir) == (False, True)
    assert unit.exists() and os.path.islink(str(wants / unit.name))
    assert brc_agent_ctl.remove_unit("eth0", False, str(unit_dir), run_dir) == (False, True)
    assert not unit.exists() and not os.path.lexists(str(wants / unit.name))
    assert other.exists()
    assert brc_agent_ctl.remove_unit("eth0", False, str(unit_dir), run_dir) == (False, False)
