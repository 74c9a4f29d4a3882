# -*- coding: utf-8 -*-
# Shared by every brc_* module: argument specs, optional-import helpers that name
# the Debian package to install, the toolkit's state files under /var/lib/brc,
# the source hash, and the kernel-headers probe (same rules as scripts/kernel-headers).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import platform
import tempfile

STATE_DIR = "/var/lib/brc"
# Which bpffs mounts the toolkit made (brc_bpffs): only those are ever unmounted.
BPFFS_STATE = os.path.join(STATE_DIR, "state")
DEFAULT_PIN_ROOT = "/sys/fs/bpf/brc"
DEFAULT_SRC_DIR = "/usr/local/lib/brc/bpf"
DEFAULT_BPFFS = "/sys/fs/bpf"

# Debian packages that provide the optional Python libraries.
DEBIAN_PACKAGES = {
    "bcc": "python3-bpfcc",
    "pyroute2": "python3-pyroute2",
    "libbpf": "libbpf1",
    "redis": "python3-redis",
}


class BrcError(Exception):
    """A failure to report to the user: what went wrong and how to fix it."""

    def __init__(self, msg, fix=None, **details):
        self.msg = msg
        self.fix = fix
        self.details = details
        Exception.__init__(self, self.text)

    @property
    def text(self):
        return "%s. Fix: %s" % (self.msg, self.fix) if self.fix else self.msg


def common_spec(interface_required=False):
    """Options shared by the modules that work on one interface's pins."""
    return dict(
        interface=dict(type="str", required=interface_required),
        pin_root=dict(type="path", default=DEFAULT_PIN_ROOT),
        src_dir=dict(type="path", default=DEFAULT_SRC_DIR),
    )


def redis_spec():
    """Options of the modules that log in to Redis with a toolkit user (doc fragment brc.redis)."""
    return dict(
        redis_host=dict(type="str", default="127.0.0.1"),
        redis_port=dict(type="int", default=6379),
        redis_unix_socket=dict(type="path"),
        redis_user=dict(type="str"),
        redis_password=dict(type="str", no_log=True),
    )


def missing_lib_msg(name, reason):
    """missing_required_lib() text naming the Debian package that provides name."""
    from ansible.module_utils.basic import missing_required_lib
    return missing_required_lib(
        "%s (Debian package %s: apt-get install %s)" % (name, DEBIAN_PACKAGES[name], DEBIAN_PACKAGES[name]),
        reason=reason)


def import_bcc():
    """(bcc module, None) or (None, traceback text)."""
    try:
        import bcc  # noqa: F401  pylint: disable=import-error
        return bcc, None
    except Exception:  # ImportError, or a broken libbcc (OSError)
        import traceback
        return None, traceback.format_exc()


def import_pyroute2():
    try:
        import pyroute2  # noqa: F401  pylint: disable=import-error
        return pyroute2, None
    except Exception:
        import traceback
        return None, traceback.format_exc()


def import_redis():
    """(redis-py module, None) or (None, traceback text)."""
    try:
        import redis  # noqa: F401  pylint: disable=import-error
        return redis, None
    except Exception:
        import traceback
        return None, traceback.format_exc()


def require(module, name, reason):
    """Fail the module with missing_required_lib when name ('bcc'|'pyroute2'|'redis') is absent."""
    importer = {"bcc": import_bcc, "pyroute2": import_pyroute2, "redis": import_redis}[name]
    mod, err = importer()
    if mod is None:
        module.fail_json(msg=missing_lib_msg(name, reason), exception=err)
    return mod


def fail(module, err, **result):
    """fail_json from a BrcError, keeping its details in the result."""
    result.update(err.details)
    module.fail_json(msg=err.text, **result)


# --- state files -----------------------------------------------------------

def iface_state_dir(interface, state_dir=STATE_DIR):
    return os.path.join(state_dir, interface)


def build_record_path(interface, state_dir=STATE_DIR):
    """The build record brc_program keeps of what it pinned for @interface."""
    return os.path.join(iface_state_dir(interface, state_dir), "build.json")


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return default


def write_text(path, text, mode=0o644):
    """Atomic write (temp file + rename) so a crash never leaves half a file; the
    file has @mode from its creation (mkstemp makes it 0600 until the chmod)."""
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, 0o755)
    fd, tmp = tempfile.mkstemp(dir=d or ".", prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, data):
    """Atomic write of a JSON record."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def remove_file(path):
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


# --- sources ---------------------------------------------------------------

# What a build reads from the sources directory; everything else there (docs) is
# shipped by older toolkits at most and never changes what is built.
BUILD_SUFFIXES = (".c", ".h")


def source_files(src_dir):
    """Relative paths of every file under src_dir (hidden files and build products
    left out), sorted."""
    out = []
    for root, dirs, files in os.walk(src_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in files:
            if name.startswith(".") or name.endswith((".pyc", ".o")):
                continue
            out.append(os.path.relpath(os.path.join(root, name), src_dir))
    return sorted(out)


def source_digest(contents, extra=()):
    """sha256 over the build inputs (BUILD_SUFFIXES) among @contents, {relative path:
    bytes}, names and contents, plus extra strings (cflags)."""
    h = hashlib.sha256()
    for rel in sorted(r for r in contents if r.endswith(BUILD_SUFFIXES)):
        h.update(rel.encode() + b"\0" + contents[rel] + b"\0")
    for item in extra:
        h.update(b"cflag\0" + item.encode() + b"\0")
    return h.hexdigest()


def source_hash(src_dir, extra=()):
    """source_digest() of the files under src_dir: editing a document there changes nothing."""
    if not os.path.isdir(src_dir):
        raise BrcError("BPF sources not found at %s" % src_dir,
                       "ship the repository's bpf/ directory there (the brc role does) or set src_dir")
    contents = {}
    for rel in source_files(src_dir):
        if rel.endswith(BUILD_SUFFIXES):
            with open(os.path.join(src_dir, rel), "rb") as f:
                contents[rel] = f.read()
    return source_digest(contents, extra)


# --- kernel headers ----------------------------------------------------------

def kernel_release():
    return platform.release()


def headers_info(kver=None, modules_dir="/lib/modules"):
    """Which kernel headers bcc will compile against, by the rules of scripts/kernel-headers.

    kind: exact (the build dir belongs to this kernel), fallback (a link to another
    version's Debian headers), missing (bcc cannot compile).
    """
    kver = kver or kernel_release()
    build = os.path.join(modules_dir, kver, "build")
    info = {"kernel": kver, "build": build, "path": None, "kind": "missing",
            "fix": "run scripts/kernel-headers on the host (installs linux-headers-%s, or links "
                   "Debian's newest linux-headers as a documented fallback)" % kver}
    if not os.path.exists(os.path.join(build, "Makefile")):
        return info
    real = os.path.realpath(build)
    info["path"] = real
    info["fix"] = None
    if os.path.islink(build) and kver not in os.readlink(build):
        info["kind"] = "fallback"
    else:
        info["kind"] = "exact"
    return info


def kernel_config(kver=None):
    """{CONFIG_X: 'y'|'m'} from /proc/config.gz or /boot/config-<kver>; None when unreadable."""
    import gzip
    kver = kver or kernel_release()
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except (IOError, OSError):
        try:
            with open("/boot/config-%s" % kver) as f:
                text = f.read()
        except (IOError, OSError):
            return None
    conf = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            conf[k] = v.strip('"')
    return conf
