"""Fixtures for the serve-mode tests: the real BRC build (bpf/brc.c through
module_utils/brc_compile.py) on the server veth of a namespace pair brcsi<pid>-client/-server
(10.69.0.0/24, only inside them) with a real redis-server; everything started here is
killed by PID and the namespaces are removed, also on failure."""
import os
import sys

import pytest

from fixtures.kernel import skip_unless_kernel

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# module_utils is imported the way Ansible sees it (tests/conftest.py), never put on
# sys.path (it would shadow library/ modules). The helper directories go last on sys.path.
for p in (os.path.join(REPO, "tests", "tools"), os.path.join(REPO, "bench"),
          os.path.join(REPO, "tests", "bpf")):
    if p not in sys.path:
        sys.path.append(p)


@pytest.fixture(scope="session")
def lab():
    skip_unless_kernel("BPF, namespaces")
    from serve_lab import ServeLab, running
    with running(ServeLab, "brcsi", "10.69.0") as lab:
        yield lab
