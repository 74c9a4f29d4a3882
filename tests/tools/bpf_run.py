"""BPF_PROG_TEST_RUN for the test suites: run a loaded SCHED_CLS program once on a frame,
through the toolkit's one kernel layer (module_utils/brc_pins.py, libbpf)."""
from ansible.module_utils.brc_pins import prog_test_run  # noqa: F401  (re-exported)
