"""The differential fuzzer (tests/tools/fuzz.py) with brc-agent in charge, inside
`make test`: what serve does differently under an agent (its feed instead of the
untracked lease, its user loads, keys with a TTL answered until Redis's deadline)
checked against what Redis executed, as tests/serve/test_fuzz.py does without one.

  run Aagent  verify_sample=1: every would-be kernel answer still goes to Redis and
              is compared (`mismatch` must stay 0).
  run Bagent  verify_sample=0: GETs answered in the kernel must carry a value the key
              held during the GET (a TTL'd key: before its expiry), only for users
              Redis lets read it, and at least fuzz.run's floor of GETs (or
              fuzz.MIN_KERNEL_ANSWERS of them) is answered.

20 s each, seed random unless BRC_FUZZ_SEED is set (printed first);
`make fuzz-agent` is the long run.
"""
import json
import os
import random

import fuzz

SECONDS = 20
CONNECTIONS = 8


def test_fuzz_under_the_agent_verify_then_serve(agent_lab):
    seed = int(os.environ.get("BRC_FUZZ_SEED") or random.SystemRandom().randrange(1 << 31))
    print("\nFUZZ seed %d (BRC_FUZZ_SEED=%d replays it)" % (seed, seed))
    runs = []
    try:
        for verify_sample in (1, 0):
            s = fuzz.run(agent_lab, SECONDS, seed, CONNECTIONS, verify_sample=verify_sample)
            print("FUZZ-RUN " + json.dumps(dict((k, v) for k, v in s.items()
                                                if k != "first_violations"), sort_keys=True))
            runs.append(s)
    finally:
        agent_lab.serve()
    assert all(s["agent"] for s in runs)
    failed = ["run %s: %s; violations %s (suspected findings %s); first: %s" % (
        s["run"], s["problems"], s["violation_kinds"], s["suspected_findings"],
        json.dumps(fuzz.examples(s["first_violations"])[:2])[:3000]) for s in runs if not s["ok"]]
    assert not failed, "seed %d\n" % seed + "\n".join(failed)
