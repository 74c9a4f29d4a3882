"""Fixtures for the BRC program tests: one real build (bcc compile + verifier,
about 20 s) shared by the module, with a fresh port range per test."""
import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import brc_testlib  # noqa: E402
from fixtures.kernel import skip_unless_kernel  # noqa: E402

_ports = itertools.count(20000)


@pytest.fixture(scope="session")
def brc_build():
    skip_unless_kernel("BPF", libs=("bcc",))
    build = brc_testlib.brc_compile.compile_programs(brc_testlib.BPF_DIR)
    yield build


@pytest.fixture
def brc(brc_build):
    b = brc_testlib.Brc(brc_build)
    b.configure()
    b.load_users()
    b.clear_holds()
    yield b
    b.configure()
    b.close_all()
    b.clear_holds()
    # every mark a test took must be gone once its connections are
    assert b.global_state()["inflight"] == 0


@pytest.fixture
def port():
    """A client port no other test used in this session (flows stay apart)."""
    return next(_ports)
