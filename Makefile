# Every target bootstraps itself: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SCENARIO ?= dispatch_checkin

.PHONY: install test lint format schema dev start demo room bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

schema: $(STAMP)
	$(PY) -m config.schema scenarios/schema.json

dev: $(STAMP)
	$(PY) -m workers.multi dev

start: $(STAMP)
	$(PY) -m workers.multi start

demo: $(STAMP)
	$(PY) -m workers.simulate $(SCENARIO)

room: $(STAMP)  # make room SCENARIO=dispatch_checkin IDENTITY=caller-jamie [ROOM=name]
	$(PY) -m workers.dispatch $(SCENARIO) $(if $(IDENTITY),--identity $(IDENTITY)) $(if $(ROOM),--room $(ROOM))

# Every bench/*.py script except the private modules (bench/_*.py); each prints one JSON object.
BENCH_SCRIPTS := $(sort $(filter-out bench/_%,$(wildcard bench/*.py)))

bench: $(STAMP)
	@for f in $(BENCH_SCRIPTS); do echo "== $$f" >&2; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
