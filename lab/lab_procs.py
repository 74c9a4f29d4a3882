"""Commands, processes, namespaces and service probes on this machine (subprocess, /proc, /run/netns)."""
import os
import signal
import socket
import subprocess

SSH_PORT = 22
REDIS_PORT = 6379


class LabError(Exception):
    """A lab operation could not be done; the message says what to do."""


def _run(argv, check=True, input=None, quiet=False):
    """Run a command, capture output; on failure raise LabError with its stderr."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError("command failed (%d): %s\n%s" % (
            proc.returncode, " ".join(argv), (proc.stderr or proc.stdout).strip()))
    return proc


def _proc_stat(pid):
    """(state, ppid, starttime) of a process, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = data.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid, start=None):
    """True when pid runs (not a zombie) and, if start is given, is that same process."""
    if not pid:
        return False
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[2] == start


def _netns_of(pid):
    try:
        return os.readlink("/proc/%d/ns/net" % pid)
    except OSError:
        return None


def _all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def list_netns():
    """Names of the named network namespaces on the machine (under /run/netns)."""
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _netns_id(name):
    """The 'net:[inode]' link text of a named namespace, as /proc/PID/ns/net shows it."""
    try:
        return "net:[%d]" % os.stat(os.path.join("/run/netns", name)).st_ino
    except OSError:
        return None


def _link_exists(name):
    return os.path.exists("/sys/class/net/%s" % name)


def _listening(pid, port):
    """True when the network namespace of pid has a TCP socket listening on port."""
    want = ":%04X" % port
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except (OSError, StopIteration):
            pass
    return False


def _probe_ssh(addr, port=SSH_PORT, timeout=2.0):
    """The ssh banner of addr:port, or None."""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(64)
            return data.decode(errors="replace").strip() if data.startswith(b"SSH-") else None
    except OSError:
        return None


def _probe_redis(addr, port=REDIS_PORT, timeout=2.0):
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _require_root():
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts, veths)")
