# -*- coding: utf-8 -*-
# brc_facts's logic: what the host can do (capabilities), what BRC state is on it,
# where Redis listens and which interface that is, and the problems that stop a
# deploy, each with its fix (the brc role's preflight fails on these).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

from ansible.module_utils.brc_common import BrcError, STATE_DIR, DEBIAN_PACKAGES, build_record_path, headers_info, \
    import_bcc, import_pyroute2, kernel_config, kernel_release, read_json
from ansible.module_utils import brc_pins

KERNEL_OPTIONS = {
    "bpf_syscall": "CONFIG_BPF_SYSCALL",
    "clsact": "CONFIG_NET_SCH_INGRESS",
    "cls_bpf": "CONFIG_NET_CLS_BPF",
    "bpf_jit": "CONFIG_BPF_JIT",
}

BCC_PROBE = "int brc_probe(struct __sk_buff *skb) { return 0; }"


def _feature(conf, option, module_name=None):
    """True/False from the kernel config, or from /sys/module when the config is unreadable; None unknown."""
    if conf is not None:
        return conf.get(option) in ("y", "m")
    if module_name and os.path.isdir("/sys/module/" + module_name):
        return True
    return None


def _version(dist, mod):
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:
        v = getattr(mod, "__version__", None)
        return v if isinstance(v, str) else None


def capabilities(probe_bcc=False):
    conf = kernel_config()
    caps = {"kernel": kernel_release(), "kernel_config": conf is not None}
    mods = {"clsact": "sch_ingress", "cls_bpf": "cls_bpf"}
    for name, option in KERNEL_OPTIONS.items():
        caps[name] = _feature(conf, option, mods.get(name))
    caps["btf"] = os.path.exists("/sys/kernel/btf/vmlinux")
    try:
        with open("/proc/filesystems") as f:
            fs_ok = any(line.split()[-1] == "bpf" for line in f if line.strip())
    except IOError:
        fs_ok = None
    caps["bpffs"] = {"supported": fs_ok, "mounted": brc_pins.bpffs_at("/sys/fs/bpf"), "path": "/sys/fs/bpf"}
    caps["headers"] = headers_info()
    bcc, err = import_bcc()
    caps["bcc"] = {"available": bcc is not None,
                   "version": _version("bcc", bcc) if bcc else None,
                   "error": err.strip().splitlines()[-1] if err else None}
    if bcc is not None and probe_bcc:
        caps["bcc"]["usable"], caps["bcc"]["probe_error"] = _probe_bcc(bcc)
        caps["bcc"]["probe"] = "compiled"
    pr, err = import_pyroute2()
    caps["pyroute2"] = {"available": pr is not None,
                        "version": _version("pyroute2", pr) if pr else None,
                        "error": err.strip().splitlines()[-1] if err else None}
    try:
        brc_pins.libbpf()
        caps["libbpf"] = True
    except BrcError:
        caps["libbpf"] = False
    return caps


def bcc_proven(state, caps):
    """Why the bcc probe can be skipped, or None: the interface's pinned programs are the ones
    its build record names, built on this kernel with the headers bcc would use now, so bcc
    compiled and the verifier loaded on this host as it is (a re-deploy, a mode change)."""
    build = (state or {}).get("build") or {}
    rec_headers = build.get("headers") or {}
    now = caps["headers"]
    if not build or now["kind"] == "missing" or any(
            rec_headers.get(k) != now.get(k) for k in ("kernel", "path", "kind")):
        return None
    want = build.get("programs") or {}
    have = state.get("programs") or {}
    if not want or any(d not in have or have[d]["id"] != want[d].get("id") for d in want):
        return None
    return "skipped: the pinned build of %s (built_at %s) was compiled and loaded on this kernel " \
        "with these headers" % (state["interface"], build.get("built_at"))


def _probe_bcc(bcc):
    try:
        b = bcc.BPF(text=BCC_PROBE)
        try:
            b.load_func("brc_probe", bcc.BPF.SCHED_CLS)
        finally:
            b.cleanup()
        return True, None
    except Exception as e:
        return False, str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)


def installed_packages(status="/var/lib/dpkg/status"):
    """Names of the Debian packages dpkg has installed (parsed from its status file)."""
    out = set()
    try:
        with open(status) as f:
            text = f.read()
    except IOError:
        return None
    for block in text.split("\n\n"):
        name = installed = None
        for line in block.splitlines():
            if line.startswith("Package: "):
                name = line[9:].strip()
            elif line.startswith("Status: "):
                installed = line.split()[-1] == "installed"
        if name and installed:
            out.add(name)
    return out


# --- Redis listeners and interface detection -------------------------------------

def _parse_proc_net(path, v6):
    """[(address, port, socket inode)] of the listening sockets in /proc/net/tcp or tcp6."""
    out = []
    try:
        with open(path) as f:
            lines = f.readlines()[1:]
    except IOError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 10 or parts[3] != "0A":  # TCP_LISTEN
            continue
        addr_hex, port_hex = parts[1].split(":")
        raw = bytes.fromhex(addr_hex)
        if v6:
            raw = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
            addr = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            addr = socket.inet_ntoa(struct.pack("<I", int(addr_hex, 16)))
        out.append((addr, int(port_hex, 16), int(parts[9])))
    return out


def listening_sockets(port, proc="/proc/net"):
    """[(address, socket inode)] of the TCP sockets listening on port (IPv4 and IPv6)."""
    found = _parse_proc_net(os.path.join(proc, "tcp"), False) + _parse_proc_net(os.path.join(proc, "tcp6"), True)
    return sorted((a, inode) for a, p, inode in found if p == port)


def listeners(port, proc="/proc/net"):
    """Addresses with a TCP socket listening on port (IPv4 and IPv6)."""
    return sorted(set(a for a, _inode in listening_sockets(port, proc)))


def interface_addresses():
    """{ifname: [addresses]} via pyroute2 ({} when pyroute2 is missing)."""
    pr, _err = import_pyroute2()
    if pr is None:
        return {}
    from pyroute2 import IPRoute  # pylint: disable=import-error
    ip = IPRoute()
    try:
        names = dict((l["index"], l.get_attr("IFLA_IFNAME")) for l in ip.get_links())
        out = {}
        for a in ip.get_addr():
            out.setdefault(names.get(a["index"]), []).append(a.get_attr("IFA_ADDRESS"))
        return out
    finally:
        close = getattr(ip, "close", None)
        if close:
            close()


def detect_interface(listen, hint_address=None, addrs=None):
    """Interface carrying the address Redis listens on (or hint_address for wildcard/loopback binds)."""
    addrs = interface_addresses() if addrs is None else addrs
    owner = dict((a, name) for name, lst in addrs.items() for a in lst)
    for a in listen:
        if a in ("0.0.0.0", "::") or a.startswith("127.") or a == "::1":
            continue
        if a in owner and owner[a] != "lo":
            return owner[a]
    if hint_address and hint_address in owner and owner[hint_address] != "lo":
        return owner[hint_address]
    return None


# --- BRC state --------------------------------------------------------------

def known_interfaces(pin_root, state_dir=STATE_DIR):
    names = set(n for n in brc_pins.list_pins(pin_root) if os.path.isdir(os.path.join(pin_root, n)))
    try:
        names.update(n for n in os.listdir(state_dir) if os.path.isdir(os.path.join(state_dir, n)))
    except OSError:
        pass
    return sorted(names)


def interface_state(interface, pin_root, src_dir, state_dir=STATE_DIR):
    from ansible.module_utils import brc_maps
    pdir = brc_pins.pin_dir(pin_root, interface)
    st = {"interface": interface, "pin_dir": pdir, "pins": brc_pins.list_pins(pdir), "programs": {},
          "attached": {}, "clsact": None, "clsact_owned": False, "maps": {}, "map_fill": {}, "mode": None,
          "config": None, "agent": None, "build": None, "errors": []}
    rec = read_json(build_record_path(interface, state_dir))
    if rec:
        st["build"] = dict((k, rec.get(k)) for k in ("source_hash", "layout_digest", "programs", "headers",
                                                       "built_at", "cflags"))
    tcrec = read_json(os.path.join(state_dir, interface, "tc.json"), {}) or {}
    st["clsact_owned"] = bool(tcrec.get("clsact_owned"))
    try:
        st["programs"] = dict((d, {"id": p["id"], "tag": p["tag"]})
                              for d, p in brc_pins.pinned_programs(pdir).items())
        for name, m in brc_pins.pinned_maps(pdir).items():
            st["maps"][name] = {"id": m["id"], "type": m["type"], "max_entries": m["max_entries"]}
            if m["type"] in ("hash", "lru_hash", "percpu_hash", "lru_percpu_hash"):
                with brc_pins.PinnedMap(m["pin"]) as pm:
                    st["map_fill"][name] = pm.count()
    except BrcError as e:
        st["errors"].append(e.text)
    pr, _err = import_pyroute2()
    if pr is not None:
        from ansible.module_utils import brc_tc
        try:
            with brc_tc.Tc(interface) as tc:
                st["clsact"] = tc.clsact_present()
                for d in brc_pins.DIRECTIONS:
                    f = tc.ours(d)
                    if f:
                        st["attached"][d] = {"id": f["id"], "tag": f["tag"], "name": f["name"]}
                st["other_filters"] = [dict(f, direction=d) for d in brc_pins.DIRECTIONS for f in tc.filters(d)
                                       if not (f["prio"] == brc_tc.TC_PRIO and f["handle"] == brc_tc.TC_HANDLE)]
        except BrcError as e:
            st["errors"].append(e.text)
    if os.path.isdir(src_dir) and st["pins"]:
        try:
            contract = brc_maps.contract_for(src_dir)
            if contract.map_name("config") in st["pins"]:
                st["config"] = brc_maps.read_config(pdir, contract, src_dir)
                st["mode"] = st["config"].get("mode")
            st["agent"] = brc_maps.read_agent(pdir, contract)
        except BrcError as e:
            st["errors"].append(e.text)
    return st


def problems(caps, port=None, listen=None, interface=None, iface_exists=None):
    """[{kind, problem, fix}] that block a deploy; kind 'host' cannot be fixed by installing packages."""
    out = []

    def add(kind, problem, fix):
        out.append({"kind": kind, "problem": problem, "fix": fix})

    for name, option in sorted(KERNEL_OPTIONS.items()):
        if name != "bpf_jit" and caps.get(name) is False:
            add("host", "kernel %s lacks %s (%s)" % (caps["kernel"], name, option),
                "boot a kernel built with %s=y (or load its module)" % option)
    if caps["bpffs"]["supported"] is False:
        add("host", "the kernel has no bpf filesystem", "boot a kernel with CONFIG_BPF_SYSCALL=y")
    if port is not None and not listen:
        add("host", "Redis is not listening on TCP port %d" % port,
            "start redis-server, or set brc_port to the port it listens on")
    if interface is not None and iface_exists is False:
        add("host", "interface %s not found" % interface,
            "set brc_interface to one of the host's interfaces (ip -br link), or leave it empty to detect it")
    if caps["headers"]["kind"] == "missing":
        add("packages", "no kernel headers for %s" % caps["kernel"], caps["headers"]["fix"])
    if not caps["bcc"]["available"]:
        add("packages", "bcc is not importable: %s" % caps["bcc"]["error"],
            "apt-get install %s" % DEBIAN_PACKAGES["bcc"])
    elif caps["bcc"].get("usable") is False:
        add("packages", "bcc cannot compile a BPF program: %s" % caps["bcc"]["probe_error"],
            "check the kernel headers (scripts/kernel-headers) and clang/LLVM of %s" % DEBIAN_PACKAGES["bcc"])
    if not caps["pyroute2"]["available"]:
        add("packages", "pyroute2 is not importable: %s" % caps["pyroute2"]["error"],
            "apt-get install %s" % DEBIAN_PACKAGES["pyroute2"])
    if not caps["libbpf"]:
        add("packages", "libbpf is not loadable", "apt-get install %s" % DEBIAN_PACKAGES["libbpf"])
    return out


def gather(interface=None, pin_root="/sys/fs/bpf/brc", src_dir="/usr/local/lib/brc/bpf", port=None,
           address=None, probe_bcc=False, state_dir=STATE_DIR, packages=None):
    caps = capabilities(False)
    facts = {"capabilities": caps, "pin_root": pin_root}
    if packages is not None:
        have = installed_packages()
        facts["packages_missing"] = list(packages) if have is None else [p for p in packages if p not in have]
    listen = None
    addrs = interface_addresses()
    if port is not None:
        listen = listeners(port)
        facts["redis"] = {"port": port, "listening": listen}
        facts["detected_interface"] = detect_interface(listen, address, addrs)
    iface = interface or facts.get("detected_interface")
    facts["interface"] = iface
    iface_exists = (iface in addrs or os.path.isdir("/sys/class/net/" + iface)) if iface else None
    facts["interfaces"] = dict((n, interface_state(n, pin_root, src_dir, state_dir))
                               for n in known_interfaces(pin_root, state_dir))
    if iface and iface not in facts["interfaces"] and iface_exists:
        facts["interfaces"][iface] = interface_state(iface, pin_root, src_dir, state_dir)
    facts["state"] = facts["interfaces"].get(iface) if iface else None
    if probe_bcc and caps["bcc"]["available"]:
        # The probe is a compile (a few seconds per host on a busy fleet): not again where
        # the current build proves bcc works here.
        skip = bcc_proven(facts["state"], caps)
        if skip:
            caps["bcc"].update(usable=True, probe_error=None, probe=skip)
        else:
            caps["bcc"]["usable"], caps["bcc"]["probe_error"] = _probe_bcc(import_bcc()[0])
            caps["bcc"]["probe"] = "compiled"
    facts["problems"] = problems(caps, port, listen, iface if interface else None, iface_exists)
    if port is not None and not iface:
        facts["problems"].append({"kind": "host", "problem": "cannot tell which interface carries Redis "
                                  "(listening on %s)" % (", ".join(listen or []) or "nothing"),
                                  "fix": "set brc_interface"})
    return facts
