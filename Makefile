# Stable entry points: setup, demo, test, lab-up HOSTS=N, lab-status, lab-down, bench.
SHELL := /bin/bash
HOSTS ?= 3
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup demo test lab-up lab-status lab-down bench bench-faults bench-agent bench-fleet lint fuzz fuzz-agent profile

setup:
	@bash scripts/setup

lab-up: setup
	@$(VENV)/bin/python lab/labctl up --hosts $(HOSTS)

lab-status:
	@$(VENV)/bin/python lab/labctl status || [ $$? -eq 3 ]  # 3 = down: not an error here

lab-down:
	@$(VENV)/bin/python lab/labctl down

demo: setup
	@bash scripts/demo $(HOSTS)

test: setup
	@$(VENV)/bin/python -m pytest -p no:cacheprovider tests $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ansible-lint --profile production

bench: setup
	@$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# The host agent's feed lag (a loopback write to its key's version bump) and CPU, idle
# and under 4 redis-benchmark writers, on a master, then on a replica (writes on its
# master, and a client's first correct read through BRC); BENCH_ARGS="--no-replica".
bench-agent: setup
	@$(VENV)/bin/python bench/agent.py $(BENCH_ARGS)

# Fleet operations timed on a lab of its own (name bf) per size: deploy, re-deploy (builds
# nothing), audit, stats, rolling enable to serve, with the per-host split (bcc compile,
# verifier load, Ansible overhead). BENCH_FLEET_HOSTS=4 for one size (16 takes long).
BENCH_FLEET_HOSTS ?= 4,16
bench-fleet: setup
	@$(VENV)/bin/python bench/fleet.py --hosts $(BENCH_FLEET_HOSTS) $(BENCH_ARGS)

# Checker through plain/observe/serve x clean/2% loss/reordering x offloads on/off.
bench-faults: setup
	@$(VENV)/bin/python bench/faults.py $(BENCH_ARGS)

# The differential fuzzer for serve mode, long run: run A (verify_sample=1) then run B
# (serving), FUZZ_SECONDS split between them; FUZZ_SEED random unless given, printed.
FUZZ_SECONDS ?= 600
FUZZ_SEED ?=
fuzz: setup
	@seed="$(FUZZ_SEED)"; [ -n "$$seed" ] || seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	echo "fuzz: FUZZ_SEED=$$seed FUZZ_SECONDS=$(FUZZ_SECONDS)"; \
	$(VENV)/bin/python tests/tools/fuzz.py --seconds $(FUZZ_SECONDS) --seed $$seed $(FUZZ_ARGS)

# The same with brc-agent in charge (tests/agent's lab): its feed, its user loads and
# keys with a TTL answered until Redis's deadline.
fuzz-agent: setup
	@$(MAKE) --no-print-directory fuzz FUZZ_ARGS="--agent $(FUZZ_ARGS)"

# perf flame graphs of redis-server per host and for the fleet (reports/profile/); run it
# under load. PROFILE_ARGS="-e brc_profile_whole_machine=true -e brc_profile_seconds=30".
profile: setup
	@$(VENV)/bin/ansible-playbook playbooks/profile.yml $(PROFILE_ARGS)
