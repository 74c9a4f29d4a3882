"""Fixtures for the serve-block tests: the bcc-compiled harnesses (needs root,
the BPF syscall and python3-bpfcc; skipped otherwise)."""
import os

import pytest


def _need_bpf():
    if os.geteuid() != 0:
        pytest.skip("needs root for BPF_PROG_TEST_RUN")
    try:
        import bcc  # noqa: F401
    except ImportError:
        pytest.skip("python3-bpfcc (bcc) not importable")


@pytest.fixture(scope="module")
def harness():
    """harness(name) -> Harness, compiled once per module, cleaned up after it."""
    _need_bpf()
    from bpfrun import Harness
    made = {}

    def get(name):
        if name not in made:
            made[name] = Harness(name)
        return made[name]
    yield get
    for h in made.values():
        h.cleanup()
