# avoviirscollector: the two commands.
#   make run    the whole suite in the foreground (supervisord), state under ./var; Ctrl-C stops everything
#   make test   lint and the full test suite (in a loopback-only network namespace)
#   make check  lint and the tests that run in pytest's own process (no daemons, no container): the edit loop
#   make demo   the suite against the GINA double (two stations) in a loopback-only namespace; its monitor on
#               http://127.0.0.1:29093/ of this host (PAIR=1: two hosts and a failover; root, keepalived, ping)
# Everything they need is installed into ./.venv from setup.py (the one place where versions are pinned).

PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
LEGACY_VENV := .venv-legacy
LEGACY_STAMP := $(LEGACY_VENV)/.installed
VIIRS_BASE ?= $(CURDIR)/var
PYTEST_ARGS ?=
# pytest-xdist workers (each moves into a loopback-only network namespace of its own: tests/conftest.py); most
# tests wait on processes, so four keep 2 cores busy (two workers used a third of them: pytest 11 min; four: 6, make test 7)
TEST_WORKERS ?= 4

.PHONY: run test check lint bench demo clean container-image test-tools

$(STAMP): setup.py pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python 3.12+ found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# posttroll 1.5, the version the workers in the field run, needs Python < 3.12: a second small venv lets the tests
# decode our messages with it. Skipped (and the tests that need it say so) when no such Python is installed.
$(LEGACY_STAMP): $(STAMP)
	@mkdir -p $(LEGACY_VENV); legacy=$$(scripts/find-legacy-python); \
	if [ -z "$$legacy" ]; then echo "make: no Python 3.8-3.11 here; posttroll 1.5 decoding tests will be skipped"; \
	else \
	  pins=$$($(BIN)/python -c "import importlib.metadata as m; print(' '.join(r.split(';')[0].strip() for r in m.requires('avoviirscollector') if 'legacy-client' in r))"); \
	  $$legacy -m venv $(LEGACY_VENV) && $(LEGACY_VENV)/bin/python -m pip install --quiet $$pins; \
	fi
	touch $@

run: $(STAMP)
	VIIRS_BASE="$(VIIRS_BASE)" $(BIN)/avoviirscollector supervise -c supervisord.conf

lint: $(STAMP)
	$(BIN)/ruff check avoviirscollector tests bench

# The container test needs podman, buildah, runc, debootstrap (and docker-compose for the compose checks): installed
# with apt-get and the images built (cached) here, before the tests enter their network namespace: the suite's, and
# the pair's keepalived image on it.
# AVO_CONTAINER_TEST=0 skips installing, building and the test.
container-image: $(STAMP)
	@if [ "$${AVO_CONTAINER_TEST:-1}" != 0 ]; then \
	  scripts/container-image tools >/dev/null && scripts/container-image build >/dev/null \
	  && scripts/container-image keepalived >/dev/null \
	  || echo "make: WARNING: the container image could not be built; the container test will skip and say why"; fi

# monitor's tests need Debian's chromium (the page in a headless browser) and prometheus (promtool for the rules), the
# pair's tests keepalived and ping: installed here when missing, like the container tools; AVO_TEST_TOOLS=0 skips it
# (those tests then skip).
test-tools:
	@scripts/test-tools

# Two runs: the tests on TEST_WORKERS workers, then those marked `alone` (they judge a reply time in milliseconds,
# which other tests' processes on the same 2 cores would decide instead) with nothing else running. Exit status 5 of
# pytest ("no tests collected": PYTEST_ARGS chose none of that run's) is not a failure.
test: $(STAMP) $(LEGACY_STAMP) lint container-image test-tools
	scripts/loopback-netns $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15 -m "not alone" \
	  $(PYTEST_ARGS) || [ $$? = 5 ]
	scripts/loopback-netns $(BIN)/python -m pytest -m alone $(PYTEST_ARGS) || [ $$? = 5 ]

# tests/conftest.py: --in-process leaves out the tests marked `processes` (tests/e2e, the nameserver's and the
# network namespace's users) and skips any other test when it starts a process
check: $(STAMP) lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --in-process $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m tests.$(if $(PAIR),demo_pair,demo) $(DEMO_ARGS)

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; scripts/loopback-netns $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LEGACY_VENV) var build *.egg-info test-artifacts
