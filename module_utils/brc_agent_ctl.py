# -*- coding: utf-8 -*-
"""Install-time management of one interface's brc-agent on a Redis host (the
brc_agent module's logic; usable without Ansible: plain functions, plain arguments).

present():
  1. the agent's ACL user, exactly `reset on ><password> <AGENT_GRANTS>`. Compared
     with what Redis itself renders for the same rules (a throwaway user made with
     them, ACL GETUSER of both), so a Redis that orders or spells rules its own way
     is never "changed" on every run. Then persisted (ACL SAVE with an aclfile,
     else CONFIG REWRITE); when neither works the user is lost at a Redis restart,
     the agent cannot log in and BRC stops answering (fail closed): a warning says so.
  2. the daemon, under one of two supervisors (`supervisor`; auto = systemd when
     /run/systemd/system exists, else start-stop-daemon):
     - start-stop-daemon with a pidfile. Its fingerprint (sha256 of lib_dir's files,
       the argv and the password) is kept in a state file next to the pidfile.
     - systemd: the unit brc-agent@<interface>.service, a file of its own per
       interface in /etc/systemd/system (render_unit: Restart=always, so a crashed
       agent, which leaves answers stopped, is brought back), written and
       daemon-reloaded only when its text differs, enabled. Its fingerprint is kept
       in /var/lib/brc/<interface>/agent.json (persistent: an agent systemd started
       at boot with the same code, options and password is not restarted).
     The same fingerprint and a live process means nothing to do; anything else (an
     upgrade, new options, a new unit text, a new password, not running) restarts
     it. A start counts only once the pinned brc_agent shows BRC_AGENT_F_ON and a
     fresh beat from the new pid; otherwise it is stopped again (and the unit
     disabled: answers stay stopped, fail closed, Redis keeps serving) and the error
     carries the tail of its log. An agent of the other supervisor is stopped first
     (a switch never leaves two agents on one interface).

absent(): stops the daemon (under either supervisor; the unit is disabled, its file
removed and systemd reloaded), `brc-agent --release` while BRC_AGENT_F_ON is set
(hands the interface back to the programs alone), removes the pidfile, the state
file, the fingerprint record, the ACL user (persisted as above) and the password file.

The password is never on a command line: the agent reads --password-file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time

from ansible.module_utils.brc_common import STATE_DIR, BrcError, import_redis, remove_file, write_text
from ansible.module_utils import brc_pins

PYTHON = "/usr/bin/python3"
START_STOP_DAEMON = "start-stop-daemon"
AGENT_SCRIPT = "brc-agent"
# What the launcher imports (brc_agent and, transitively, brc_adopt, brc_auth -> brc_facts).
AGENT_FILES = (AGENT_SCRIPT, "brc_agent.py", "brc_adopt.py", "brc_auth.py", "brc_contract.py", "brc_pins.py",
               "brc_common.py", "brc_facts.py")
DEFAULT_LIB_DIR = "/usr/local/lib/brc/agent"
DEFAULT_PASSWORD_FILE = "/etc/brc/agent.password"
DEFAULT_USER = "brc-agent"
START_TIMEOUT_S = 10.0
STOP_RETRY = "TERM/5/KILL/2"
PROBE_PREFIX = "brc-agent-probe-"
CREDENTIALS_FIX = ("set the module options admin_user and admin_password to a Redis user allowed to "
                   "run ACL SETUSER/GETUSER/DELUSER/SAVE and CONFIG GET/REWRITE (empty: the default user)")


SUPERVISORS = ("auto", "systemd", "start-stop-daemon")
SYSTEMD_RUN_DIR = "/run/systemd/system"     # exists only while systemd is PID 1 (sd_booted())
SYSTEMCTL = "systemctl"
UNIT_DIR = "/etc/systemd/system"
UNIT_PREFIX = "brc-agent@"
SUPERVISOR_FIX = ("set supervisor to start-stop-daemon, or to auto (systemd where it runs, else start-stop-daemon); "
                  "in the brc role: brc_agent_supervisor")


def default_pidfile(interface):
    return "/run/brc-agent-%s.pid" % interface


def default_log(interface):
    return "/var/log/brc-agent-%s.log" % interface


def state_file(pidfile):
    """The fingerprint record, next to the pidfile."""
    base = pidfile[:-4] if pidfile.endswith(".pid") else pidfile
    return base + ".state"


# --- Redis (the admin connection) -----------------------------------------------------------

class Admin:
    """execute_command on the admin connection, every failure a BrcError with its fix."""

    def __init__(self, host="127.0.0.1", port=6379, unix_socket=None, user=None, password=None, timeout=5.0):
        redis, err = import_redis()
        if redis is None:
            raise BrcError("redis-py is missing", "apt-get install python3-redis", missing_lib=err)
        from ansible.module_utils import brc_auth
        self.redis, self.auth_errors = redis, brc_auth.AUTH_ERRORS
        self.where = unix_socket or "%s:%s" % (host, port)
        self.user = user or "default"
        self.client = brc_auth._client(redis, host, port, unix_socket, user, password, timeout)

    def __call__(self, *args):
        ex = self.redis.exceptions
        try:
            return self.client.execute_command(*args)
        except (ex.ConnectionError, ex.ResponseError, ex.TimeoutError) as e:
            msg = str(e)
            what = " ".join(str(a) for a in args[:2])
            if isinstance(e, getattr(ex, "AuthenticationError", ())) or msg.startswith(self.auth_errors):
                raise BrcError("Redis at %s refused the admin credentials (user %s): %s" % (self.where, self.user, msg),
                               CREDENTIALS_FIX)
            if "NOPERM" in msg or "no permissions" in msg:
                raise BrcError("Redis at %s refused %s to the admin user %s: %s" % (self.where, what, self.user, msg),
                               CREDENTIALS_FIX)
            if isinstance(e, (ex.ConnectionError, ex.TimeoutError)):
                raise BrcError("Redis at %s is not reachable: %s" % (self.where, msg),
                               "start Redis, or set redis_host/redis_port (or redis_socket) to where it listens")
            raise BrcError("Redis at %s answered %s with an error: %s" % (self.where, what, msg))

    def close(self):
        try:
            self.client.close()
        except Exception:   # pylint: disable=broad-except  (closing; nothing to report)
            pass


def _text(v):
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return dict((_text(k), _norm(x)) for k, x in v.items())
    return _text(v)


def getuser(admin, user):
    """ACL GETUSER as a dict of text (None: no such user)."""
    reply = admin("ACL", "GETUSER", user)
    if reply is None:
        return None
    if isinstance(reply, dict):       # some redis-py versions parse it
        return _norm(reply)
    reply = _norm(reply)
    return dict(zip(reply[0::2], reply[1::2]))


def agent_rules(password):
    from ansible.module_utils.brc_agent import AGENT_GRANTS
    return ["reset", "on", ">" + password] + AGENT_GRANTS.split()


def user_matches(admin, user, password):
    """(exists, same): is @user exactly `reset on ><password> <AGENT_GRANTS>`, as Redis renders it?"""
    have = getuser(admin, user)
    if have is None:
        return False, False
    probe = PROBE_PREFIX + secrets.token_hex(6)
    try:
        admin("ACL", "SETUSER", probe, *agent_rules(password))
        want = getuser(admin, probe)
    finally:
        admin("ACL", "DELUSER", probe)
    strip = lambda d: dict((k, v) for k, v in d.items() if k != "passwords")  # noqa: E731
    same = strip(have) == strip(want) and \
        list(have.get("passwords") or []) == [hashlib.sha256(password.encode()).hexdigest()]
    return True, same


def persist_acl(admin, check_mode=False, removing=False):
    """(persisted, how, warning). ACL SAVE with an aclfile, else CONFIG REWRITE."""
    aclfile = admin("CONFIG", "GET", "aclfile")
    aclfile = _norm(aclfile)
    aclfile = aclfile.get("aclfile") if isinstance(aclfile, dict) else (aclfile[1] if len(aclfile) > 1 else "")
    if aclfile:
        if not check_mode:
            admin("ACL", "SAVE")
        return True, "acl save", None
    if check_mode:
        info = _norm(admin("INFO", "server"))
        conf = info.get("config_file") if isinstance(info, dict) else None
        if conf:
            return True, "config rewrite", None
        why = "Redis runs without a config file"
    else:
        try:
            admin("CONFIG", "REWRITE")
            return True, "config rewrite", None
        except BrcError as e:
            why = e.msg
    lost = ("the removed user comes back at a Redis restart if a config file still names it" if removing else
            "a Redis restart loses it, the agent can then not log in and BRC stops answering (fail closed) "
            "until this module runs again")
    return False, None, (
        "the agent's ACL user is not persisted (no aclfile, and CONFIG REWRITE failed: %s): %s. Fix: give "
        "Redis an aclfile (aclfile /etc/redis/users.acl) or start it from a config file "
        "(redis-server /etc/redis/redis.conf)" % (why, lost))


def ensure_user(admin, user, password, check_mode=False):
    """The ACL user exactly as the agent needs it. Returns (changed, persisted, warning)."""
    exists, same = user_matches(admin, user, password) if password is not None else (
        getuser(admin, user) is not None, False)
    changed = not same
    if changed and not check_mode:
        admin("ACL", "SETUSER", user, *agent_rules(password))
        exists, same = user_matches(admin, user, password)
        if not same:
            raise BrcError("ACL SETUSER %s did not give the user the agent's rules" % user,
                           "check that no ACL file reload or module on this Redis rewrites users")
    persisted, _how, warning = persist_acl(admin, check_mode)
    return changed, persisted, warning


def remove_user(admin, user, check_mode=False):
    """(changed, persisted, warning)"""
    if getuser(admin, user) is None:
        return False, None, None
    if not check_mode:
        admin("ACL", "DELUSER", user)
    persisted, _how, warning = persist_acl(admin, check_mode, removing=True)
    return True, persisted, warning


# --- the password file ----------------------------------------------------------------------

def read_password_file(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except IOError:
        return None


def write_password_file(path, password):
    write_text(path, password + "\n", 0o600)


def ensure_password(password, password_file, check_mode=False):
    """(password, changed). Given: kept in the file. Empty: the file's, else a new random one.
    In check mode a password that would be generated is None."""
    have = read_password_file(password_file)
    mode_ok = have is not None and (os.stat(password_file).st_mode & 0o777) == 0o600
    want = password or have
    if want is None:
        if check_mode:
            return None, True
        want = secrets.token_urlsafe(32)
    if have == want and mode_ok:
        return want, False
    if not check_mode:
        write_password_file(password_file, want)
    return want, True


# --- the daemon -----------------------------------------------------------------------------

def check_lib_dir(lib_dir):
    missing = [f for f in AGENT_FILES if not os.path.isfile(os.path.join(lib_dir, f))]
    if missing:
        raise BrcError("the agent's files are missing in %s: %s" % (lib_dir, ", ".join(missing)),
                       "ship them first (roles/brc/files/brc-agent and module_utils/%s to lib_dir, the brc "
                       "role does) or set lib_dir" % ", ".join(f for f in AGENT_FILES if f.endswith(".py")),
                       missing_files=missing)


def check_pins(pdir, contract):
    need = [contract.map_name("agent"), brc_pins.PROG_PREFIX + "feed"]
    missing = [n for n in need if not os.path.exists(os.path.join(pdir, n))]
    if missing:
        raise BrcError("no BRC pins for the agent in %s (missing %s)" % (pdir, ", ".join(missing)),
                       "deploy BRC first (the brc role, or brc_program state=present on this interface)",
                       missing_pins=missing)


def agent_argv(lib_dir, pin_dir, src_dir, redis_host="127.0.0.1", redis_port=6379, redis_socket=None,
               user=DEFAULT_USER, password_file=DEFAULT_PASSWORD_FILE, log=None):
    argv = [os.path.join(lib_dir, AGENT_SCRIPT), "--pin-dir", pin_dir, "--src-dir", src_dir]
    if redis_socket:
        argv += ["--redis-socket", redis_socket, "--redis-port", str(redis_port)]
    else:
        argv += ["--redis-host", redis_host, "--redis-port", str(redis_port)]
    argv += ["--user", user, "--password-file", password_file]
    if log:
        argv += ["--log", log]
    return argv


def fingerprint(lib_dir, argv, password):
    h = hashlib.sha256()
    for name in sorted(os.listdir(lib_dir)):
        path = os.path.join(lib_dir, name)
        if name.startswith(".") or name.endswith(".pyc") or not os.path.isfile(path):
            continue
        h.update(b"file\0" + name.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    for arg in argv:
        h.update(b"arg\0" + arg.encode() + b"\0")
    h.update(b"password\0" + (password or "").encode())
    return h.hexdigest()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (IOError, IndexError):
        return False


def running_pid(pidfile):
    """The agent's pid when the pidfile names a live brc-agent, else None."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (IOError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except IOError:
        return None
    return pid if AGENT_SCRIPT.encode() in cmdline else None


def _run(argv, timeout=30):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).strip()


def stop_daemon(pidfile):
    """Stop the agent the pidfile names (TERM, then KILL). True when one was running."""
    if running_pid(pidfile) is None:
        return False
    rc, out = _run([START_STOP_DAEMON, "--stop", "--quiet", "--pidfile", pidfile, "--retry", STOP_RETRY], timeout=20)
    if rc not in (0, 1):
        raise BrcError("start-stop-daemon could not stop the agent of %s (rc %d): %s" % (pidfile, rc, out),
                       "stop it by hand (kill $(cat %s)) and run again" % pidfile)
    return rc == 0


def start_daemon(argv, pidfile, log, python=PYTHON):
    d = os.path.dirname(pidfile)
    if d and not os.path.isdir(d):
        os.makedirs(d, 0o755)
    if log and os.path.dirname(log) and not os.path.isdir(os.path.dirname(log)):
        os.makedirs(os.path.dirname(log), 0o755)
    remove_file(pidfile)
    cmd = [START_STOP_DAEMON, "--start", "--quiet", "--background", "--make-pidfile", "--pidfile", pidfile]
    if log:
        cmd += ["--output", log]       # what escapes the agent's logging (a traceback)
    rc, out = _run(cmd + ["--startas", python, "--"] + argv)
    if rc != 0:
        raise BrcError("start-stop-daemon could not start the agent (rc %d): %s" % (rc, out),
                       "check that %s exists and that nothing else holds %s" % (python, pidfile))
    for _i in range(100):            # --make-pidfile writes it from the child: bounded wait
        try:
            with open(pidfile) as f:
                return int(f.read().strip())
        except (IOError, ValueError):
            time.sleep(0.02)
    raise BrcError("start-stop-daemon started the agent but wrote no pidfile %s" % pidfile,
                   "check that %s is writable" % os.path.dirname(pidfile))


def read_agent(pdir, contract):
    """The pinned brc_agent as brc_maps.read_agent reports it, or None without the pin."""
    from ansible.module_utils import brc_maps
    return brc_maps.read_agent(pdir, contract)


def is_beating(agent, pid=None):
    """The agent in charge beats (the programs answer), from @pid when given."""
    return bool(agent and agent["answering"] and (pid is None or agent["pid"] == pid))


def log_tail(log, n=30):
    try:
        with open(log) as f:
            return "".join(f.readlines()[-n:]).strip()
    except (IOError, TypeError):
        return ""


def wait_beating(pid, pdir, contract, log, timeout=START_TIMEOUT_S):
    """Bounded poll until @pid is alive and beats in the pinned brc_agent. Returns the map's dict."""
    deadline = time.monotonic() + timeout
    agent = None
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False, agent, "it exited"
        agent = read_agent(pdir, contract)
        if is_beating(agent, pid):
            return True, agent, None
        time.sleep(0.05)
    return False, agent, "no heartbeat within %.0f s" % timeout


# --- systemd ----------------------------------------------------------------------------------

def systemd_running(run_dir=SYSTEMD_RUN_DIR):
    return os.path.isdir(run_dir)


def resolve_supervisor(supervisor, run_dir=SYSTEMD_RUN_DIR):
    """auto -> systemd when it runs, else start-stop-daemon. An explicit systemd on a host
    without it is an error naming the fix (checked before anything is changed)."""
    supervisor = supervisor or "auto"
    if supervisor not in SUPERVISORS:
        raise BrcError("unknown supervisor %r (one of %s)" % (supervisor, ", ".join(SUPERVISORS)), SUPERVISOR_FIX)
    if supervisor == "auto":
        return "systemd" if systemd_running(run_dir) else "start-stop-daemon"
    if supervisor == "systemd":
        if not systemd_running(run_dir):
            raise BrcError("supervisor is systemd but systemd does not run on this host (no %s)" % run_dir,
                           SUPERVISOR_FIX)
        if shutil.which(SYSTEMCTL) is None:
            raise BrcError("supervisor is systemd but %s is not installed" % SYSTEMCTL, SUPERVISOR_FIX)
    return supervisor


def unit_name(interface):
    if not re.match(r"^[A-Za-z0-9:_.-]+$", interface):
        raise BrcError("interface %r cannot be a systemd instance name (letters, digits, : _ . - only)" % interface,
                       SUPERVISOR_FIX)
    return "%s%s.service" % (UNIT_PREFIX, interface)


def unit_path(interface, unit_dir=UNIT_DIR):
    return os.path.join(unit_dir, unit_name(interface))


def systemd_state_file(interface, state_dir=STATE_DIR):
    """The fingerprint record under systemd: persistent, as the unit is."""
    return os.path.join(state_dir, interface, "agent.json")


def _unit_word(text, tail="", exe=False):
    """One ExecStart= word: \\ and % (and $ in arguments: systemd expands no variable in the
    executable) escaped, quoted when it holds anything but plain path characters."""
    if any(ord(c) < 32 for c in text) or (exe and any(c in text for c in "$\"'\\")):
        # systemd refuses an executable name with quotes or backslashes, and expands no $ in it
        raise BrcError("%r cannot be written in a systemd unit (control characters, or $ \" ' \\ in the "
                       "executable)" % text, SUPERVISOR_FIX)
    esc = text.replace("\\", "\\\\").replace("%", "%%")
    esc = (esc if exe else esc.replace("$", "$$")) + tail
    if re.match(r"^[A-Za-z0-9_./:@+=,%-]+$", esc):
        return esc
    return '"%s"' % esc.replace('"', '\\"')


def render_unit(argv, pin_root, interface, python=PYTHON):
    """The text of brc-agent@<interface>.service, from the agent's argv (agent_argv): the pin
    directory is written <pin_root>/%i. Only the module's options are in it, never the password."""
    if not os.path.isabs(python):
        raise BrcError("python must be an absolute path for systemd, got %r" % python)
    pdir = brc_pins.pin_dir(pin_root, interface)
    pin_word = _unit_word(os.path.join(pin_root, ""), "%i")
    words = [_unit_word(python, exe=True)] + [pin_word if a == pdir else _unit_word(a) for a in argv]
    cond = os.path.join(pin_root, "").replace("%", "%%") + "%i"
    return "\n".join([
        "# brc-agent@%s.service: written by the BRC fleet toolkit (module brc_agent), rewritten when it" % interface,
        "# differs. Remove it with brc_agent state=absent (the brc role's undeploy).",
        "[Unit]",
        "Description=BRC host agent for %i (Redis invalidation feed, heartbeat)",
        # ordering only: Redis may be elsewhere or named otherwise; the agent retries meanwhile
        "After=network.target redis-server.service",
        # no pins (after a reboot, before the role deploys again): nothing to serve, not a failure
        "ConditionPathIsDirectory=%s" % cond,
        # a crash-looping agent keeps being retried (answers stay stopped meanwhile)
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=%s" % " ".join(words),
        # a crashed agent leaves answers stopped (fail closed): bring it back
        "Restart=always",
        "RestartSec=2",
        # SIGTERM: the agent flushes and stops its beat; TERM/5/KILL as with start-stop-daemon
        "TimeoutStopSec=5",
        "SyslogIdentifier=brc-agent-%i",
        # root with its capabilities (bpf(2): CAP_BPF or CAP_SYS_ADMIN) and /sys/fs/bpf writable
        # (BPF_OBJ_GET needs write access to the pins): only what does not touch those.
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "ProtectHome=read-only",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except (IOError, OSError):
        return None


def write_unit(path, text):
    write_text(path, text, 0o644)


def systemctl(*args, **kw):
    rc, out = _run([SYSTEMCTL] + list(args), timeout=kw.get("timeout", 60))
    if rc != 0 and kw.get("check", True):
        raise BrcError("systemctl %s failed (rc %d): %s" % (" ".join(args), rc, out),
                       "see systemctl status %s and journalctl -u %s" % (args[-1], args[-1]))
    return rc, out


def unit_status(name):
    """{'active': bool, 'pid': int or None, 'enabled': bool} from systemctl show (one call)."""
    _rc, out = systemctl("show", "-p", "ActiveState", "-p", "MainPID", "-p", "UnitFileState", name, check=False)
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    try:
        pid = int(props.get("MainPID") or 0) or None
    except ValueError:
        pid = None
    return {"active": props.get("ActiveState") in ("active", "activating", "reloading"), "pid": pid,
            "enabled": props.get("UnitFileState") == "enabled"}


def main_pid(name, timeout=3.0):
    """The unit's MainPID right after a start (None once it exited)."""
    deadline = time.monotonic() + timeout
    while True:
        pid = unit_status(name)["pid"]
        if pid or time.monotonic() >= deadline:
            return pid
        time.sleep(0.05)


def journal_tail(name, n=20):
    try:
        _rc, out = _run(["journalctl", "-u", name, "-n", str(n), "--no-pager", "-o", "cat"], timeout=10)
        return out
    except (OSError, subprocess.SubprocessError):
        return ""


def remove_unit(interface, check_mode=False, unit_dir=UNIT_DIR, run_dir=SYSTEMD_RUN_DIR):
    """Stop and disable brc-agent@<interface> and remove its file. (stopped, changed)."""
    path = os.path.join(unit_dir, UNIT_PREFIX + interface + ".service")
    name = os.path.basename(path)
    running = systemd_running(run_dir) and shutil.which(SYSTEMCTL) is not None
    st = unit_status(name) if running else {"active": False, "enabled": False, "pid": None}
    # without systemd running nothing can run the unit: what `systemctl disable` would remove offline
    links = os.path.join(glob.escape(unit_dir), "*.wants", glob.escape(name))
    wants = [] if running else [w for w in glob.glob(links) if os.path.islink(w)]
    exists = os.path.exists(path)
    if not (exists or st["active"] or st["enabled"] or wants):
        return False, False
    if not check_mode:
        if running and st["active"]:
            systemctl("stop", name)
        if running and (exists or st["enabled"]):
            systemctl("disable", name, check=exists)    # a file removed by hand: its links may remain
        for w in wants:
            remove_file(w)
        remove_file(path)
        if running:
            systemctl("daemon-reload")
    return st["active"], True


# --- present / absent -------------------------------------------------------------------------

def present(interface, pin_root, src_dir, lib_dir=DEFAULT_LIB_DIR, redis_host="127.0.0.1", redis_port=6379,
            redis_socket=None, user=DEFAULT_USER, password=None, password_file=DEFAULT_PASSWORD_FILE,
            admin_user=None, admin_password=None, pidfile=None, log=None, supervisor="auto", check_mode=False,
            python=PYTHON, start_timeout=START_TIMEOUT_S, unit_dir=UNIT_DIR, state_dir=STATE_DIR,
            run_dir=SYSTEMD_RUN_DIR):
    from ansible.module_utils.brc_contract import ContractError, load_contract
    # first: systemd asked for on a host without it changes nothing, check mode or not
    supervisor = resolve_supervisor(supervisor, run_dir)
    systemd = supervisor == "systemd"
    pidfile = pidfile or default_pidfile(interface)
    log = log or default_log(interface)
    pdir = brc_pins.pin_dir(pin_root, interface)
    res = {"changed": False, "pid": None, "started": False, "user_changed": False, "user_persisted": None,
           "beating": False, "agent": None, "log": log, "pidfile": None if systemd else pidfile,
           "password_file": password_file, "password_changed": False, "supervisor": supervisor,
           "unit": unit_path(interface, unit_dir) if systemd else None, "warnings": []}
    try:
        contract = load_contract(src_dir)
    except ContractError as e:
        raise BrcError(str(e), "ship the bpf/ sources to src_dir (the brc role does) or point src_dir at them")
    try:
        check_pins(pdir, contract)
        check_lib_dir(lib_dir)
    except BrcError:
        if not check_mode:
            raise
        # check mode before the first deploy: earlier tasks would create the pins and ship the files
        res.update(changed=True, started=True, msg="would start the agent once BRC is deployed and its files shipped")
        return res

    argv = agent_argv(lib_dir, pdir, src_dir, redis_host, redis_port, redis_socket, user, password_file, log)
    unit_text = render_unit(argv, pin_root, interface, python) if systemd else None   # may refuse: before changes

    admin = Admin(redis_host, redis_port, redis_socket, admin_user, admin_password)
    try:
        admin("PING")   # Redis reachable and the credentials good before anything is written
        password, res["password_changed"] = ensure_password(password, password_file, check_mode)
        res["user_changed"], res["user_persisted"], warning = ensure_user(admin, user, password, check_mode)
    finally:
        admin.close()
    if warning:
        res["warnings"].append(warning)

    fp = fingerprint(lib_dir, argv, password) if password is not None else None
    if systemd:
        other = _present_systemd(res, interface, unit_text, argv, fp, pdir, contract, pidfile, log, check_mode,
                                 start_timeout, state_dir)
    else:
        other = _present_sdd(res, interface, argv, fp, pdir, contract, pidfile, log, check_mode, python,
                             start_timeout, unit_dir, run_dir)
    res["changed"] = bool(res["started"] or res["user_changed"] or res["password_changed"] or other)
    return res


def _start_failed(res, interface, why, log, password_file, extra=""):
    return BrcError(
        "brc-agent for %s did not start (%s); it was stopped again, Redis keeps serving and BRC does "
        "not answer on %s (fail closed). The tail of its log %s:\n%s%s"
        % (interface, why, interface, log, log_tail(log), extra),
        "fix what the log says (a refused password: remove %s and run again with password empty, or "
        "set password; Redis unreachable: redis_host/redis_port/redis_socket; a contract mismatch: ship "
        "lib_dir from the same toolkit version as the programs), then run again"
        % password_file, user_changed=res["user_changed"], changed=True)


def _keep_running(res, interface, pid, pdir, contract, log):
    res["pid"] = pid
    res["agent"] = read_agent(pdir, contract)
    res["beating"] = is_beating(res["agent"], pid)
    if not res["beating"]:
        res["warnings"].append("the agent (pid %d) runs but does not beat: BRC does not answer on %s until "
                               "it does. Its log %s says:\n%s" % (pid, interface, log, log_tail(log, 10)))


def _present_sdd(res, interface, argv, fp, pdir, contract, pidfile, log, check_mode, python, start_timeout,
                 unit_dir, run_dir):
    """start-stop-daemon. Returns whether anything besides a start changed (a systemd unit removed)."""
    from ansible.module_utils.brc_common import read_json, write_json
    # a switch from systemd: its agent stopped, its unit gone (never two agents on one interface)
    unit_stopped, unit_removed = remove_unit(interface, check_mode, unit_dir, run_dir)
    pid = running_pid(pidfile)
    record = read_json(state_file(pidfile), {}) or {}
    if pid is not None and fp is not None and record.get("fingerprint") == fp and not unit_stopped:
        _keep_running(res, interface, pid, pdir, contract, log)
    elif check_mode:
        res["pid"], res["started"] = pid, True
        res["agent"] = read_agent(pdir, contract)
    else:
        stop_daemon(pidfile)
        remove_file(state_file(pidfile))
        new = start_daemon(argv, pidfile, log, python)
        ok, agent, why = wait_beating(new, pdir, contract, log, start_timeout)
        if not ok:
            stop_daemon(pidfile)
            remove_file(pidfile)
            raise _start_failed(res, interface, why, log, res["password_file"])
        write_json(state_file(pidfile), {"fingerprint": fp, "pid": new, "argv": argv})
        res.update(pid=new, started=True, beating=True, agent=agent)
    return unit_removed


def _present_systemd(res, interface, text, argv, fp, pdir, contract, pidfile, log, check_mode, start_timeout,
                     state_dir):
    """systemd: the unit written when it differs, enabled, (re)started when the fingerprint, the unit
    or the process say so. Returns whether anything besides a start changed (unit written, enabled,
    a start-stop-daemon agent stopped)."""
    from ansible.module_utils.brc_common import read_json, write_json
    path, name = res["unit"], os.path.basename(res["unit"])
    unit_changed = _read_text(path) != text
    st = unit_status(name)
    record_path = systemd_state_file(interface, state_dir)
    record = read_json(record_path, {}) or {}
    old_pid = running_pid(pidfile)           # the agent start-stop-daemon ran before the switch
    restart = (unit_changed or not st["active"] or st["pid"] is None or fp is None
               or record.get("fingerprint") != fp or old_pid is not None)
    leftovers = [f for f in (pidfile, state_file(pidfile)) if os.path.exists(f)]
    other = unit_changed or not st["enabled"] or bool(leftovers)
    if check_mode:
        if restart:
            res["pid"], res["started"] = st["pid"], True
            res["agent"] = read_agent(pdir, contract)
        else:
            _keep_running(res, interface, st["pid"], pdir, contract, log)
        return other
    if old_pid is not None:
        stop_daemon(pidfile)
    for stale in leftovers:
        remove_file(stale)
    if not restart:
        if not st["enabled"]:
            systemctl("enable", name)
        _keep_running(res, interface, st["pid"], pdir, contract, log)
        return other
    remove_file(record_path)
    if unit_changed:
        write_unit(path, text)
        systemctl("daemon-reload")
    if not st["enabled"]:
        systemctl("enable", name)
    systemctl("restart", name)
    new = main_pid(name)
    if new is None:
        ok, agent, why = False, None, "it exited"
    else:
        ok, agent, why = wait_beating(new, pdir, contract, log, start_timeout)
    if not ok:
        # stopped and disabled: a reboot does not bring back an agent known not to start
        systemctl("disable", "--now", name, check=False)
        raise _start_failed(res, interface, why, log, res["password_file"],
                            "\njournalctl -u %s:\n%s" % (name, journal_tail(name)))
    write_json(record_path, {"fingerprint": fp, "unit": path, "argv": argv})
    res.update(pid=new, started=True, beating=True, agent=agent)
    return other


def release(lib_dir, pdir, src_dir, python=PYTHON):
    check_lib_dir(lib_dir)
    rc, out = _run([python, os.path.join(lib_dir, AGENT_SCRIPT), "--release", "--pin-dir", pdir,
                    "--src-dir", src_dir])
    if rc != 0:
        raise BrcError("brc-agent --release on %s failed (rc %d): %s" % (pdir, rc, out),
                       "run it by hand to see why: %s %s --release --pin-dir %s --src-dir %s"
                       % (python, os.path.join(lib_dir, AGENT_SCRIPT), pdir, src_dir))


def absent(interface, pin_root, src_dir, lib_dir=DEFAULT_LIB_DIR, redis_host="127.0.0.1", redis_port=6379,
           redis_socket=None, user=DEFAULT_USER, password_file=DEFAULT_PASSWORD_FILE, admin_user=None,
           admin_password=None, pidfile=None, log=None, supervisor="auto", check_mode=False, python=PYTHON,
           unit_dir=UNIT_DIR, state_dir=STATE_DIR, run_dir=SYSTEMD_RUN_DIR):
    """Removes the agent under both supervisors whatever `supervisor` says (it only names which
    one is reported): an undeploy must not leave one behind after a switch."""
    from ansible.module_utils.brc_contract import ContractError, load_contract
    supervisor = supervisor or "auto"
    if supervisor not in SUPERVISORS:
        raise BrcError("unknown supervisor %r (one of %s)" % (supervisor, ", ".join(SUPERVISORS)), SUPERVISOR_FIX)
    if supervisor == "auto":
        supervisor = "systemd" if systemd_running(run_dir) else "start-stop-daemon"
    pidfile = pidfile or default_pidfile(interface)
    log = log or default_log(interface)
    pdir = brc_pins.pin_dir(pin_root, interface)
    upath = os.path.join(unit_dir, UNIT_PREFIX + interface + ".service")
    res = {"changed": False, "pid": None, "started": False, "stopped": False, "released": False,
           "user_changed": False, "user_persisted": None, "beating": False, "agent": None, "log": log,
           "pidfile": None if supervisor == "systemd" else pidfile, "password_file": password_file,
           "supervisor": supervisor, "unit": upath if supervisor == "systemd" else None, "warnings": []}
    # 1. the daemon: the unit (stopped, disabled, its file removed) and the pidfile's
    unit_stopped, res["changed"] = remove_unit(interface, check_mode, unit_dir, run_dir)
    pid = running_pid(pidfile)
    if pid is not None:
        if not check_mode:
            stop_daemon(pidfile)
    res["stopped"] = bool(unit_stopped or pid is not None)
    # 2. hand the interface back to the programs
    contract = None
    try:
        contract = load_contract(src_dir)
    except ContractError:
        pass                              # no sources: no pins to release either
    agent = read_agent(pdir, contract) if contract is not None else None
    if agent is not None and agent["in_charge"]:
        res["released"] = True
        if not check_mode:
            release(lib_dir, pdir, src_dir, python)
            agent = read_agent(pdir, contract)
    res["agent"] = agent
    # 3. files
    for path in (pidfile, state_file(pidfile), systemd_state_file(interface, state_dir)):
        if os.path.exists(path):
            res["changed"] = True
            if not check_mode:
                remove_file(path)
    # 4. the user and its password
    admin = Admin(redis_host, redis_port, redis_socket, admin_user, admin_password)
    try:
        res["user_changed"], res["user_persisted"], warning = remove_user(admin, user, check_mode)
    finally:
        admin.close()
    if warning:
        res["warnings"].append(warning)
    if os.path.exists(password_file):
        res["changed"] = True
        if not check_mode:
            remove_file(password_file)
    res["changed"] = bool(res["changed"] or res["stopped"] or res["released"] or res["user_changed"])
    return res
