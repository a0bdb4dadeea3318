# s5jtransfer developer tasks. `make help` lists them. Needs GNU make and python3 (3.11).

PY ?= python3
VENV = .venv
PYTHON = $(VENV)/bin/python
STAMP = $(VENV)/.installed
PYTEST = $(PYTHON) -m pytest -q -p no:cacheprovider

.DEFAULT_GOAL := help
.PHONY: help venv test unit demo bench chaos clean distclean

help:
	@echo "Targets:"
	@echo "  venv       create $(VENV) and install requirements-dev.txt (no-op when up to date)"
	@echo "  test       run the whole test suite (unit + integration)"
	@echo "  unit       run only tests/unit"
	@echo "  demo       run a complete transfer against a local moto S3 server in demo/"
	@echo "  bench      run tools/bench.py (root): the suite against s5cmd on kernel-shaped links (about 35 minutes; BENCH_ARGS=--quick: about 4)"
	@echo "  chaos      the power-cut test, long: 40 SIGKILLs over 300 objects, s5cmd cp and s5cmd cat modes (S5J_CHAOS_ROUNDS/OBJECTS/SEED)"
	@echo "  clean      remove demo/ and Python/pytest caches (keeps $(VENV))"
	@echo "  distclean  clean, and remove $(VENV) too"
	@echo "Variables: PY=$(PY) (the interpreter that creates $(VENV))"

venv: $(STAMP)

$(PYTHON):
	$(PY) -m venv $(VENV)

# Reinstall only when a requirements file changes; the venv itself is order-only.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt | $(PYTHON)
	$(VENV)/bin/pip install --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	touch $@

# Twelve pytest workers: each has its own moto server; most of a test's time is spent waiting on
# the scripts it runs (on 2 cores: 12 took 203-212 s, 8 took 240 s, 16 took 193 s at more CPU).
test: venv
	$(PYTEST) -n 12 tests

unit: venv
	$(PYTEST) tests/unit

chaos: venv
	for mode in s5cmd cat; do \
		S5J_CHAOS_MODE=$$mode S5J_CHAOS_ROUNDS=$${S5J_CHAOS_ROUNDS:-40} S5J_CHAOS_OBJECTS=$${S5J_CHAOS_OBJECTS:-300} \
			$(PYTEST) -s tests/integration/test_chaos.py || exit 1; \
	done

demo: venv
	$(PYTHON) tools/demo.py

# Not part of `make test`: tools/bench.py --help lists its options (--quick, --scenario, --json ...).
# Needs root (a network namespace, tc); SeaweedFS comes with requirements-dev.txt.
bench: venv
	$(PYTHON) tools/bench.py $(BENCH_ARGS)

clean:
	rm -rf demo .pytest_cache
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o \
		-type d -name __pycache__ -prune -exec rm -rf {} + -o \
		-type f -name '*.py[co]' -exec rm -f {} +

distclean: clean
	rm -rf $(VENV)
