"""`make setup` is idempotent: a second run installs nothing (no apt, no pip) and is quick."""
import os
import subprocess
import time

from fixtures.paths import REPO

DPKG_STATUS = "/var/lib/dpkg/status"
STAMP = os.path.join(REPO, ".venv", ".requirements.sha256")


def make_setup():
    t0 = time.monotonic()
    out = subprocess.run(["make", "-C", REPO, "setup"], capture_output=True, text=True,
                         timeout=1800)
    return out, time.monotonic() - t0


def test_make_setup_twice_second_run_installs_nothing():
    first, _ = make_setup()
    assert first.returncode == 0, first.stdout + first.stderr
    dpkg_before = os.stat(DPKG_STATUS).st_mtime_ns
    stamp_before = os.stat(STAMP).st_mtime_ns
    python_before = os.stat(os.path.join(REPO, ".venv", "bin", "python")).st_ino

    second, took = make_setup()
    assert second.returncode == 0, second.stdout + second.stderr
    text = second.stdout + second.stderr
    assert "setup: Debian packages: all present" in text
    assert "setup: .venv: requirements up to date" in text
    assert "installing" not in text and "creating .venv" not in text
    assert "apt-get" not in text and "Setting up" not in text
    assert os.stat(DPKG_STATUS).st_mtime_ns == dpkg_before       # dpkg wrote nothing
    assert os.stat(STAMP).st_mtime_ns == stamp_before            # pip was not run
    assert os.stat(os.path.join(REPO, ".venv", "bin", "python")).st_ino == python_before
    assert took < 30, "second make setup took %.1fs" % took
