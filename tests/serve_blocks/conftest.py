"""Fixtures for the serve-block tests: the bcc-compiled harnesses (needs root,
the BPF syscall and python3-bpfcc; skipped otherwise)."""

import pytest

from fixtures.kernel import skip_unless_kernel


@pytest.fixture(scope="module")
def harness():
    """harness(name) -> Harness, compiled once per module, cleaned up after it."""
    skip_unless_kernel("BPF_PROG_TEST_RUN", libs=("bcc",))
    from bpfrun import Harness
    made = {}

    def get(name):
        if name not in made:
            made[name] = Harness(name)
        return made[name]
    yield get
    for h in made.values():
        h.cleanup()
