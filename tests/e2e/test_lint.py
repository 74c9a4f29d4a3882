"""Every playbook passes `ansible-playbook --syntax-check`, and the repository passes
`ansible-lint --profile production` (the same command as `make lint`)."""
import glob
import os
import subprocess

import pytest

from fixtures.paths import REPO

VENV_BIN = os.path.join(REPO, ".venv", "bin")


def _env():
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="True",
               PATH=VENV_BIN + os.pathsep + env.get("PATH", ""))
    return env


def _playbooks():
    found = [os.path.join(REPO, "deploy.yml")] + sorted(glob.glob(os.path.join(REPO, "playbooks", "*.yml")))
    return [os.path.relpath(p, REPO) for p in found if os.path.exists(p)]


@pytest.mark.parametrize("playbook", _playbooks())
def test_syntax_check(playbook):
    p = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "--syntax-check", "-i", "localhost,", playbook],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ansible_lint_production_profile():
    lint = os.path.join(VENV_BIN, "ansible-lint")
    if not os.path.exists(lint):
        pytest.skip("ansible-lint is not in .venv (make setup)")
    p = subprocess.run([lint, "--profile", "production", "--nocolor"], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]


def test_module_docs_render():
    for path in sorted(glob.glob(os.path.join(REPO, "library", "brc_*.py"))):
        name = os.path.basename(path)[:-3]
        p = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "-M", "library", name], cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "EXAMPLES" in p.stdout and "RETURN VALUES" in p.stdout, name + p.stderr
