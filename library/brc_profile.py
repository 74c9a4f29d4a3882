#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: brc_profile
short_description: Sample redis-server (or the whole machine) with perf and return folded stacks
description:
  - Runs C(perf record) with DWARF call graphs (Debian's redis-server has no frame pointers) for
    O(seconds), on the running O(process) or, with O(whole_machine), on every CPU, then folds the
    samples with perf's own C(stackcollapse.py) script and returns them as C(stack;frames count) lines.
  - The event is perf's default (C(cycles), or C(cpu-clock) where there is no hardware PMU, as in
    most VMs); RV(event) says which one was sampled.
  - perf writes its data in a private directory under O(work_dir) that is removed before the module
    returns, also when it fails, times out or is signalled (SIGTERM, SIGHUP, SIGINT); perf is
    started in its own process group and killed with it. perf itself stops after O(seconds).
  - Checks first and fails with the fix named (perf missing, C(kernel.perf_event_paranoid)
    forbidding a non-root user, the process not running or owned by another user).
  - Reads only, so never reports C(changed). In check mode only the checks run.
version_added: "1.0.0"
extends_documentation_fragment: [brc]
options:
  seconds:
    description: How long to sample.
    type: int
    default: 10
  whole_machine:
    description:
      - Sample every CPU (C(perf record -a)), not only O(process); shows softirq time, where BRC's tc
        programs run. In a namespaced lab that is the whole VM.
    type: bool
    default: false
  process:
    description: Command name (C(/proc/PID/comm)) of the processes to sample.
    type: str
    default: redis-server
  frequency:
    description: Samples per second per CPU (C(perf record -F)).
    type: int
    default: 99
  stack_size:
    description: Bytes of user stack copied per sample for DWARF unwinding (C(--call-graph dwarf,SIZE)).
    type: int
    default: 16384
  perf:
    description: The perf command (a name looked up in C(PATH), or a path).
    type: str
    default: perf
  work_dir:
    description: Where the private, temporary directory for C(perf.data) is made.
    type: path
    default: /var/tmp
attributes:
  diff_mode:
    support: none
notes:
  - Needs root, or C(CAP_PERFMON) with C(CAP_SYS_PTRACE), or a C(kernel.perf_event_paranoid) low
    enough for the user (2 for its own processes, 0 or less for O(whole_machine)).
"""

EXAMPLES = r"""
- name: Profile redis-server for 10 seconds
  brc_profile:
    seconds: 10
  register: profile

- name: The whole machine, to see softirq time
  brc_profile:
    seconds: 10
    whole_machine: true
"""

RETURN = r"""
folded:
  description: Folded stacks, C(comm;outermost;...;innermost count); kernel frames end in C(_[k]).
  returned: success, not in check mode
  type: list
  elements: str
  sample: ["redis-server;main;aeMain;readQueryFromClient 12"]
samples:
  description: Number of samples in RV(folded).
  returned: success, not in check mode
  type: int
pids:
  description: The sampled processes' ids (empty with O(whole_machine)).
  returned: success
  type: list
  elements: int
event:
  description: The event perf sampled (such as C(cpu-clock)).
  returned: success, not in check mode
  type: str
perf_version:
  description: C(perf version) output.
  returned: success
  type: str
command:
  description: The perf record command line that ran.
  returned: success
  type: list
  elements: str
"""

import os
import shutil
import signal
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

PARANOID = "/proc/sys/kernel/perf_event_paranoid"
FIX_ROOT = ("run the play as root (become: true, or ansible_user root), or grant the user CAP_PERFMON "
            "and CAP_SYS_PTRACE")


class Interrupted(Exception):
    pass


def _raise_interrupted(signum, _frame):
    raise Interrupted("signal %d" % signum)


def find_pids(name, proc="/proc"):
    """Pids whose comm is `name` (comm is cut at 15 characters)."""
    pids = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm")) as f:
                comm = f.read().strip()
        except (IOError, OSError):
            continue
        if comm == name[:15]:
            pids.append(int(entry))
    return sorted(pids)


def read_paranoid(path=PARANOID):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (IOError, OSError, ValueError):
        return None


def permission_problem(euid, paranoid, whole_machine, owners):
    """Why a user cannot profile, with the fix; None when it can. owners: {pid: uid}."""
    if euid == 0:
        return None
    if paranoid is not None:
        need = 0 if whole_machine else 2
        if paranoid > need:
            return ("kernel.perf_event_paranoid=%d forbids a non-root user (uid %d) to %s (needs %d or less): "
                    "%s; or lower it with `sysctl kernel.perf_event_paranoid=%d` (machine-wide)"
                    % (paranoid, euid, "sample every CPU" if whole_machine else "sample a process",
                       need, FIX_ROOT, need))
    others = sorted(pid for pid, uid in owners.items() if uid != euid)
    if others:
        return ("redis-server (pid %s) runs as another user than uid %d, and perf may only sample a "
                "non-root user's own processes: %s" % (", ".join(str(p) for p in others), euid, FIX_ROOT))
    return None


def _uid_of(pid):
    try:
        return os.stat("/proc/%d" % pid).st_uid
    except OSError:
        return None


def record_argv(perf, data, seconds, frequency, stack_size, whole_machine, pids):
    argv = [perf, "record", "--quiet", "--no-buildid", "-F", str(frequency), "--call-graph", "dwarf,%d" % stack_size,
            "-o", data]
    argv += ["-a"] if whole_machine else ["-p", ",".join(str(p) for p in pids)]
    return argv + ["--", "sleep", str(seconds)]


def explain_perf_failure(stderr):
    text = stderr.strip()
    if "perf_event_paranoid" in text or "Permission denied" in text or "EACCES" in text:
        return "perf was refused by the kernel: %s (perf said: %s)" % (FIX_ROOT, text[-600:])
    if "No such process" in text:
        return "the process exited while perf started; is redis-server restarting? (perf said: %s)" % text[-600:]
    return "perf record failed: %s" % text[-1000:]


def _kill_group(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _run(argv, timeout, **kwargs):
    """Run argv in its own process group; kill the group on timeout or interruption."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise
    finally:
        _kill_group(proc)
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            seconds=dict(type="int", default=10),
            whole_machine=dict(type="bool", default=False),
            process=dict(type="str", default="redis-server"),
            frequency=dict(type="int", default=99),
            stack_size=dict(type="int", default=16384),
            perf=dict(type="str", default="perf"),
            work_dir=dict(type="path", default="/var/tmp"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["seconds"] < 1 or p["frequency"] < 1 or p["stack_size"] < 8:
        module.fail_json(msg="seconds and frequency must be 1 or more, stack_size 8 or more")

    perf = shutil.which(p["perf"]) if os.sep not in p["perf"] else (
        p["perf"] if os.access(p["perf"], os.X_OK) else None)
    if not perf:
        module.fail_json(msg="perf is not installed on this host (%r not found): install Debian's linux-perf "
                             "(apt-get install linux-perf), or set brc_profile_perf to its path" % p["perf"])
    rc, version, err = _run([perf, "version"], 30)
    if rc != 0:
        module.fail_json(msg="%s does not run (%s): install Debian's linux-perf matching this system "
                             "(apt-get install linux-perf)" % (perf, (err or version).strip()[-300:]))
    version = version.strip()

    pids = find_pids(p["process"])
    if not pids and not p["whole_machine"]:
        module.fail_json(msg="no %s is running on this host: start it (systemctl start redis-server) "
                             "or leave this host out (--limit)" % p["process"], perf_version=version)
    owners = dict((pid, _uid_of(pid)) for pid in pids)
    problem = permission_problem(os.geteuid(), read_paranoid(), p["whole_machine"], owners)
    if problem:
        module.fail_json(msg=problem, perf_version=version, pids=pids)

    collapse = os.path.join(_exec_path(perf), "scripts", "python", "stackcollapse.py")
    if not os.path.isfile(collapse):
        module.fail_json(msg="perf's stackcollapse.py is missing (%s): install Debian's linux-perf, whose perf "
                             "has Python scripting" % collapse, perf_version=version)

    result = dict(changed=False, pids=pids, perf_version=version, whole_machine=p["whole_machine"])
    if module.check_mode:
        module.exit_json(msg="would sample %s for %d s" % (
            "every CPU" if p["whole_machine"] else "pid " + ",".join(str(x) for x in pids), p["seconds"]),
            **result)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        previous[sig] = signal.signal(sig, _raise_interrupted)
    tmp = None
    failure = None
    try:
        tmp = tempfile.mkdtemp(prefix="brc-profile-", dir=p["work_dir"])
        data = os.path.join(tmp, "perf.data")
        argv = record_argv(perf, data, p["seconds"], p["frequency"], p["stack_size"], p["whole_machine"], pids)
        result["command"] = argv
        rc, _out, err = _run(argv, p["seconds"] + 60, cwd=tmp)
        if rc != 0 or not os.path.exists(data):
            failure = explain_perf_failure(err)
        else:
            rc, evlist, err = _run([perf, "evlist", "-i", data], 60, cwd=tmp)
            result["event"] = evlist.strip().splitlines()[0].split(":")[0] if rc == 0 and evlist.strip() else ""
            # perf script needs a timeout of its own: DWARF unwinding is slow on big recordings.
            rc, folded, err = _run([perf, "script", "-i", data, "-s", collapse, "--", "--kernel"],
                                   max(120, 10 * p["seconds"]), cwd=tmp)
            if rc != 0:
                failure = "perf script could not fold the samples: %s" % err.strip()[-1000:]
            else:
                lines = [ln for ln in folded.splitlines() if ln.strip()]
                result["folded"] = lines
                result["samples"] = sum(_count(ln) for ln in lines)
    except subprocess.TimeoutExpired as e:
        failure = "perf did not finish in time (%s s): killed, nothing left on the host" % e.timeout
    except Interrupted as e:
        failure = "interrupted by %s: perf killed, nothing left on the host" % e
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        module.fail_json(msg=failure, **result)
    if not result["samples"]:
        module.fail_json(msg="perf recorded no samples of %s in %d s: is it idle? put load on it while "
                             "profiling, or raise brc_profile_seconds" % (p["process"], p["seconds"]), **result)
    module.exit_json(**result)


def _count(line):
    try:
        return int(line.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


def _exec_path(perf):
    try:
        out = subprocess.run([perf, "--exec-path"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "/usr/lib/perf-core"


if __name__ == "__main__":
    main()
