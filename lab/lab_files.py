"""Files the lab writes, and the hosts' mount points it creates and the last lab down removes."""
import json
import os

from lab_procs import list_netns

LAB_DIR = os.path.dirname(os.path.abspath(__file__))
STATE_ROOT = os.path.join(LAB_DIR, ".state")


def _tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _write(path, text, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# Mount points for the private tmpfs dirs that did not exist on the machine: created once,
# removed again (when empty) by the last lab to go down.
_CREATED_DIRS = os.path.join(STATE_ROOT, "created-dirs.json")


def _ensure_dirs(paths):
    created = []
    for p in paths:
        if not os.path.isdir(p):
            missing = []
            d = p
            while not os.path.exists(d):
                missing.append(d)
                d = os.path.dirname(d)
            os.makedirs(p, mode=0o755)
            created += missing
    return created


def _record_created_dirs(created):
    try:
        with open(_CREATED_DIRS) as f:
            have = json.load(f)
    except (OSError, ValueError):
        have = []
    _write(_CREATED_DIRS, json.dumps(sorted(set(have) | set(created))) + "\n")


def _remove_created_dirs_if_last():
    try:
        with open(_CREATED_DIRS) as f:
            dirs = json.load(f)
    except (OSError, ValueError):
        return
    # Any other lab (of this checkout or another) may have hosts with tmpfs mounted on these;
    # removing a directory that is a mount point in another mount namespace detaches the mount
    # there, so leave them while any lab namespace exists.
    others = [n for n in os.listdir(STATE_ROOT)
              if os.path.isfile(os.path.join(STATE_ROOT, n, "lab.json"))]
    if others or any(n.startswith("brc") for n in list_netns()):
        return
    for d in sorted(dirs, key=len, reverse=True):   # deepest first
        try:
            os.rmdir(d)
        except OSError:
            pass    # not empty (someone uses it) or gone: leave it
    os.unlink(_CREATED_DIRS)
