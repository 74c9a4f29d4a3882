"""Module brc_guard against the real kernel: a config-shaped array map pinned in a
throwaway namespace's bpffs (in_netns), armed, changed, restored by the watcher or
confirmed; check mode leaves the map and the marker as they were."""
import pytest

pytestmark = pytest.mark.usefixtures("kernel")


def test_guard_snapshots_and_restores_a_pinned_map(in_netns):
    r = in_netns("""
        import ctypes
        import brc_guard
        from ansible.module_utils import brc_pins
        from ansible.module_utils.brc_maps import contract_for
        mount_bpffs()
        os.makedirs(PD)
        contract = contract_for(BPF_DIR)
        lib = brc_pins.libbpf()
        lib.bpf_map_create.restype = ctypes.c_int
        lib.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                                       ctypes.c_uint32, ctypes.c_void_p]
        size = ctypes.sizeof(contract.structs["brc_config"])
        fd = lib.bpf_map_create(2, b"brc_config", 4, size, 1, None)     # BPF_MAP_TYPE_ARRAY
        assert fd >= 0, ctypes.get_errno()
        pin = PD + "/" + contract.map_name("config")
        brc_pins.obj_pin(fd, pin)
        os.close(fd)
        # the cache a revert empties, with one entry (a plain hash of the contract's sizes)
        ksize = ctypes.sizeof(contract.structs["brc_cache_key"])
        vsize = ctypes.sizeof(contract.structs["brc_cache_entry"])
        fd = lib.bpf_map_create(1, b"brc_cache", ksize, vsize, 16, None)   # BPF_MAP_TYPE_HASH
        assert fd >= 0, ctypes.get_errno()
        cache = PD + "/" + contract.map_name("cache")
        brc_pins.obj_pin(fd, cache)
        os.close(fd)

        # and a record of an untracked connection (mode off let its packets by unseen)
        usize = ctypes.sizeof(contract.structs["brc_flow_key"])
        fd = lib.bpf_map_create(1, b"brc_untracked", usize,
                                ctypes.sizeof(contract.structs["brc_untracked"]), 16, None)
        assert fd >= 0, ctypes.get_errno()
        untracked = PD + "/" + contract.map_name("untracked")
        brc_pins.obj_pin(fd, untracked)
        os.close(fd)

        def cached(n):
            with brc_pins.PinnedMap(cache) as m:
                for i in range(n):
                    m.update(bytes([i + 1]) * ksize, bytes(vsize))
                return m.count()

        def records(n):
            with brc_pins.PinnedMap(untracked) as m:
                for i in range(n):
                    m.update(bytes([i + 1]) * usize, bytes(m.info["value_size"]))
                return m.count()

        def value():
            with brc_pins.PinnedMap(pin) as m:
                return m.lookup(0)

        def put(b):
            with brc_pins.PinnedMap(pin) as m:
                m.update(0, bytes([b]) * size)

        args = dict(interface=IF, pin_root=ROOT, guard_dir=STATE)
        put(1)
        out = {}
        out["check_arm"] = run_main(brc_guard, check=True, state="armed", **args)
        out["marker_after_check"] = os.path.exists(out["check_arm"]["marker"])
        out["arm"] = run_main(brc_guard, state="armed", **args)
        put(2)                                              # the change
        out["cached_before_revert"] = cached(3)
        out["records_before_revert"] = records(2)
        out["watch"] = run_main(brc_guard, state="watching", timeout=1, **args)
        out["restored"] = value() == bytes([1]) * size
        out["cached_after_revert"] = cached(0)
        out["records_after_revert"] = records(0)
        out["late_confirm"] = run_main(brc_guard, state="confirmed", **args)

        out["arm2"] = run_main(brc_guard, state="armed", **args)
        put(3)
        # The watcher in a process of its own, as async runs it (run_main redirects stdout).
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(wfd, json.dumps(run_main(brc_guard, state="watching", timeout=20, **args)).encode())
            os._exit(0)
        os.close(wfd)
        time.sleep(1)
        out["check_confirm"] = run_main(brc_guard, check=True, state="confirmed", **args)
        out["confirm"] = run_main(brc_guard, state="confirmed", **args)
        os.waitpid(pid, 0)
        out["watcher"] = json.loads(os.read(rfd, 65536))
        out["kept"] = value() == bytes([3]) * size
        out["again"] = run_main(brc_guard, state="confirmed", **args)

        out["arm3"] = run_main(brc_guard, state="armed", **args)
        put(4)
        out["check_restore"] = run_main(brc_guard, check=True, state="restored", **args)
        out["unchanged_by_check"] = value() == bytes([4]) * size
        out["restore"] = run_main(brc_guard, state="restored", **args)
        out["restored_now"] = value() == bytes([3]) * size
        out["bad"] = run_main(brc_guard, state="armed", interface="nosuch0", pin_root=ROOT, guard_dir=STATE)
        out["log"] = open(out["arm"]["marker"] + ".log").read()
        emit(out)
    """)
    assert r["check_arm"]["changed"] and r["check_arm"]["armed"] is False and not r["marker_after_check"]
    assert r["check_arm"]["value"][:2] == ["01", "01"]
    assert r["arm"]["changed"] and r["arm"]["armed"] and r["arm"]["map"].endswith("/brcmt0/brc_config")
    assert r["watch"]["changed"] and r["watch"]["reverted"] and not r["watch"]["confirmed"] and r["restored"]
    # the change undone may have been to mode off: what the cache held before it is gone
    assert r["cached_before_revert"] == 3 and r["cached_after_revert"] == 0 and r["watch"]["cache_flushed"] == 3
    assert r["records_before_revert"] == 2 and r["records_after_revert"] == 0
    assert r["late_confirm"]["failed"] and "already reverted" in r["late_confirm"]["msg"]
    assert r["check_confirm"]["changed"] and r["check_confirm"]["confirmed"]
    assert r["confirm"]["changed"] and r["confirm"]["confirmed"]
    assert r["watcher"]["confirmed"] and not r["watcher"]["changed"] and r["kept"]
    assert not r["again"]["changed"] and not r["again"].get("failed")
    assert r["check_restore"]["changed"] and r["unchanged_by_check"]
    assert r["restore"]["changed"] and r["restored_now"]
    assert r["bad"]["failed"] and "nosuch0" in r["bad"]["msg"]
    assert "armed: saved" in r["log"] and "reverted (no confirmation" in r["log"] and "confirmed by the controller" in r["log"]
