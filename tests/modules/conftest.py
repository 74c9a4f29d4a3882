"""Helpers for the brc_* module tests.

run_module() runs a module's main() in-process with patch_module_args and returns its
JSON result (exit_json and fail_json both end in SystemExit).

in_netns() runs a Python snippet as root inside a fresh network namespace (named
brcmt-*) through `ip netns exec`, which also gives it a private mount namespace with a
fresh /sys: the snippet can mount bpffs at /sys/fs/bpf, create veths and pin programs
without touching the machine's namespaces, and everything vanishes when it exits.
Only 10.x addresses inside those namespaces are used.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from ansible.module_utils.testing import patch_module_args

from fixtures.kernel import skip_unless_kernel
from fixtures.paths import BPF_DIR, REPO

PRELUDE = textwrap.dedent("""
    import json, os, subprocess, sys, time, socket, threading
    import ansible.module_utils
    ansible.module_utils.__path__.append(%(mu)r)
    REPO, BPF_DIR = %(repo)r, %(bpf)r
    sys.path.insert(0, REPO + "/library")     # the modules themselves, for run_main()
    STATE = "/tmp/brcmt-state-" + str(os.getpid())
    ROOT, IF = "/sys/fs/bpf/brc", "brcmt0"    # the pin root and the interface (veth) snippets use
    PD = ROOT + "/" + IF

    def sh(cmd):
        subprocess.run(cmd, shell=True, check=True)

    def emit(obj):
        sys.stdout.write("\\n@@RESULT@@" + json.dumps(obj, default=str) + "\\n")

    class Runner:
        def run_command(self, argv):
            p = subprocess.run(argv, capture_output=True, text=True)
            return p.returncode, p.stdout, p.stderr

    def mount_bpffs():
        # bpffs at /sys/fs/bpf of this namespace's private /sys, recorded under STATE.
        from ansible.module_utils import brc_bpffs
        return brc_bpffs.ensure_bpffs(Runner(), "/sys/fs/bpf", "mounted", state_path=STATE + "/state")

    def run_main(module, check=False, **args):
        # run_module() inside the snippet: module.main() with args (src_dir the repository's
        # bpf/ unless given), its JSON result; fail_json's too.
        import contextlib, io
        from ansible.module_utils.testing import patch_module_args
        args.setdefault("src_dir", BPF_DIR)
        if check:
            args["_ansible_check_mode"] = True
        out = io.StringIO()
        with patch_module_args(args), contextlib.redirect_stdout(out):
            try:
                module.main()
            except SystemExit:
                pass
        return json.loads(out.getvalue())

    def veth(peer_ns):
        # brcmt0 (10.251.0.1) here, brcmt1 (10.251.0.2) in peer_ns: traffic between them
        # crosses brcmt0's tc ingress/egress hooks.
        sh("ip link set lo up")
        sh("ip link add brcmt0 type veth peer name brcmt1 netns %%s" %% peer_ns)
        sh("ip addr add 10.251.0.1/24 dev brcmt0 && ip link set brcmt0 up")
        sh("ip netns exec %%s sh -c 'ip link set lo up; ip addr add 10.251.0.2/24 dev brcmt1; ip link set brcmt1 up'" %% peer_ns)

    def tcp_server(port=6379, addr="10.251.0.1"):
        # A tiny Redis stand-in: answers every read with +PONG.
        srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, port)); srv.listen(16)
        def loop():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                def serve(c=c):
                    with c:
                        while c.recv(4096):
                            c.sendall(b"+PONG\\r\\n")
                threading.Thread(target=serve, daemon=True).start()
        threading.Thread(target=loop, daemon=True).start()
        return srv

    def client_traffic(peer_ns, n=5, port=6379, addr="10.251.0.1"):
        code = ("import socket\\ns=socket.create_connection((%%r,%%d),timeout=5)\\n"
                "for i in range(%%d):\\n s.sendall(b'*1\\\\r\\\\n$4\\\\r\\\\nPING\\\\r\\\\n'); s.recv(64)\\ns.close()"
                %% (addr, port, n))
        subprocess.run(["ip", "netns", "exec", peer_ns, sys.executable, "-c", code], check=True, timeout=20)
""")


@pytest.fixture
def kernel():
    """Skip unless real-kernel tests can run here (root, bcc, pyroute2)."""
    skip_unless_kernel()


@pytest.fixture
def in_netns(kernel):
    """in_netns(code, peer=False) -> the object the snippet passed to emit()."""
    made = []

    def run(code, peer=False, timeout=240):
        ns = "brcmt-%s" % uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", ns], check=True)
        made.append(ns)
        peer_ns = None
        if peer:
            peer_ns = ns + "p"
            subprocess.run(["ip", "netns", "add", peer_ns], check=True)
            made.append(peer_ns)
        script = PRELUDE % {"mu": os.path.join(REPO, "module_utils"), "repo": REPO, "bpf": BPF_DIR}
        script += "PEER = %r\n" % peer_ns + textwrap.dedent(code)
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script],
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0 or "@@RESULT@@" not in p.stdout:
            raise AssertionError("snippet failed (rc=%d)\nstdout:\n%s\nstderr:\n%s"
                                 % (p.returncode, p.stdout[-4000:], p.stderr[-6000:]))
        return json.loads(p.stdout.rsplit("@@RESULT@@", 1)[1])

    yield run
    for ns in made:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def run_module(module, args, check_mode=False):
    """Run module.main() with args; returns the result dict (failed=True on fail_json)."""
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(out.getvalue())
