"""The differential fuzzer (tests/tools/fuzz.py) inside `make test`: a bounded run
against the session's served Redis (the real BRC build on the veth of brcsi<pid>).

  run A   verify_sample=1: every would-be kernel answer still goes to Redis and BRC
          compares it (`mismatch` must stay 0); every reply must be what Redis held.
  run B   verify_sample=0: GETs answered in the kernel must carry a value the key held
          in the connection's db during the GET, only for users Redis lets read it;
          every command gets exactly Redis's replies; and the kernel must answer at
          least fuzz.run's floor (3%) of the GETs or fuzz.MIN_KERNEL_ANSWERS of them, or
          the run tested nothing.

25 s each. The seed is random unless BRC_FUZZ_SEED is set, and printed first:
`BRC_FUZZ_SEED=<seed> make test PYTEST_ARGS="-k fuzz -s"` replays the command streams
(the interleaving of connections is the machine's). `make fuzz` is the long run.
"""
import json
import os
import random

import fuzz

SECONDS = 25
CONNECTIONS = 8


def _seed():
    seed = os.environ.get("BRC_FUZZ_SEED")
    return int(seed) if seed else random.SystemRandom().randrange(1 << 31)


def _print(summary):
    line = dict((k, v) for k, v in summary.items() if k != "first_violations")
    print("\nFUZZ-RUN " + json.dumps(line, sort_keys=True))
    for v in fuzz.examples(summary["first_violations"]):
        print("FUZZ-VIOLATION " + json.dumps(v, sort_keys=True))


def test_fuzz_verify_then_serve(lab):
    seed = _seed()
    print("\nFUZZ seed %d (BRC_FUZZ_SEED=%d replays it)" % (seed, seed))
    try:
        a = fuzz.run(lab, SECONDS, seed, CONNECTIONS, verify_sample=1)
        _print(a)
        b = fuzz.run(lab, SECONDS, seed, CONNECTIONS, verify_sample=0)
        _print(b)
    finally:
        lab.serve()
    failed = ["run %s: %s; violations %s (suspected findings %s); first: %s" % (
        s["run"], s["problems"], s["violation_kinds"], s["suspected_findings"],
        json.dumps(s["first_violations"][:2])[:3000]) for s in (a, b) if not s["ok"]]
    assert not failed, "seed %d\n" % seed + "\n".join(failed)
    assert b["kernel_hit_share"] >= b["floor"] or b["kernel_hits"] >= fuzz.MIN_KERNEL_ANSWERS, b
