"""Fixtures for the host agent: the real BRC build pinned in a bpffs of the
lab's own and attached in serve mode on the server veth of a namespace pair
brcag<pid>-client/-server (10.71.0.0/24, only inside them), a real redis-server,
and brc-agent as a separate process. Everything started here is killed by PID,
the bpffs unmounted and the namespaces removed, also on failure."""
import os

import pytest

from fixtures.paths import helper_dirs

# module_utils is imported the way Ansible sees it (tests/conftest.py).
helper_dirs(os.path.join("tests", "agent"), os.path.join("tests", "serve"),
            os.path.join("tests", "tools"), "bench")


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF, namespaces, mounts)")
    from agent_lab import AgentLab
    from serve_lab import running
    with running(AgentLab, "brcag", "10.71.0") as lab:
        yield lab


@pytest.fixture
def agent_lab(lab):
    """The lab with its agent running and answering at the start of each test."""
    if lab.agent is None or lab.agent.poll() is not None:
        lab.start_agent()
    lab.wait_answering()
    return lab


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, the agent's log goes into the report (it runs as its own process)."""
    outcome = yield
    rep = outcome.get_result()
    lab = item.funcargs.get("agent_lab") if hasattr(item, "funcargs") else None
    if rep.failed and lab is not None:
        rep.sections.append(("brc-agent log", lab.agent_log()[-4000:]))
