# Every target bootstraps itself: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SCENARIO ?= dispatch_checkin

# The real LiveKit server the live suite runs against, pinned, built from the Go module proxy.
LIVEKIT_SERVER_VERSION ?= v1.13.5
LK_VERSION ?= v2.18.2
# LiveKit's SIP service (telephony), pinned; v1.8.0 speaks the same psrpc as the server above.
LIVEKIT_SIP_VERSION ?= v1.8.0
BIN := .cache/bin
UNIT_TESTS := $(PY) -m pytest -q -m "not live and not bench and not integration"

.PHONY: install test test-unit test-integration test-bench test-web test-live livekit sip sip-deps live-server redis node web browser serve-web serve-openai lint format schema dev start demo room bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The unit suite (fast: the edit-test loop), the integration tests (a real redis-server, many
# processes, real audio end to end), the benchmarks' smoke runs, then the live suite on a real
# livekit-server.
test: test-unit test-integration test-bench test-web test-live

test-unit: $(STAMP)
	$(UNIT_TESTS)

# redis-server is installed where it can be (root, apt); without it those tests skip with one
# line, and under CI=true they fail.
test-integration: $(STAMP)
	-@$(MAKE) -s redis
	$(PY) -m pytest -q -m integration

test-bench: $(STAMP)
	$(PY) -m pytest -q -m bench

# The page ships built (workers/web/static/app.js): rebuild it from the pinned packages and fail
# if the result differs from what is committed.
test-web: web
	@git diff --exit-code --stat -- workers/web/static || { \
	  echo "workers/web/static differs from a fresh \`make web\`: commit the rebuilt files" >&2; exit 1; }

# Skipped with one line where the server cannot be built or its private network made (no Go,
# not root); with CI=true that is a failure. tests/live/livenet.sh bounds and cleans up. The
# telephony cases also need livekit-sip, SIPp and redis-server (`make sip`, `make redis`):
# without them those cases skip with one line (fail under CI=true), the others still run.
test-live: $(STAMP)
	@$(MAKE) -s sip || echo "make sip failed: the telephony live tests will say why"
	@$(MAKE) -s redis >/dev/null 2>&1 || echo "no redis-server: the telephony live tests will say why"
	-@$(MAKE) -s browser
	@if ! $(MAKE) -s livekit; then \
	  if [ "$$CI" = true ]; then echo "live suite: cannot start (see above)" >&2; exit 1; fi; \
	  echo "live suite skipped: no livekit-server (see above)"; exit 0; \
	fi; \
	tests/live/livenet.sh run timeout 1500 $(PY) -m pytest -q -p no:cacheprovider tests/live; rc=$$?; \
	if [ $$rc = 77 ] && [ "$$CI" != true ]; then echo "live suite skipped (see above)"; exit 0; fi; \
	exit $$rc

# Installs into .cache/bin (gitignored), reused when present. `lk` is optional: the live suite
# does not need it, and v2.18.2 does not build from the module proxy (see tests/live/README.md).
livekit:
	@if [ ! -x $(BIN)/livekit-server ]; then \
	  command -v go >/dev/null 2>&1 || { echo "make livekit: Go is not installed; it builds livekit-server $(LIVEKIT_SERVER_VERSION) for the live suite" >&2; exit 1; }; \
	  mkdir -p $(BIN) .cache/go-bin && \
	  GOBIN=$(CURDIR)/.cache/go-bin go install github.com/livekit/livekit-server/cmd/server@$(LIVEKIT_SERVER_VERSION) && \
	  mv .cache/go-bin/server $(BIN)/livekit-server || exit 1; \
	fi
	@if [ ! -x $(BIN)/lk ] && [ ! -e $(BIN)/.lk-unavailable ] && command -v go >/dev/null 2>&1; then \
	  GOBIN=$(CURDIR)/$(BIN) go install github.com/livekit/livekit-cli/v2/cmd/lk@$(LK_VERSION) >/dev/null 2>&1 \
	  || { echo "make livekit: lk $(LK_VERSION) did not build (optional; the live suite does not need it)"; touch $(BIN)/.lk-unavailable; }; \
	fi

# livekit-sip from its module zip: `go install pkg@version` is refused by the module proxy here
# (it asks for the version list), `go mod download` of the pinned version is served. The module
# cache is read-only, so the source is copied out before building (cgo: opus, opusfile, soxr).
sip: sip-deps
	@if [ ! -x $(BIN)/livekit-sip ]; then \
	  command -v go >/dev/null 2>&1 || { echo "make sip: Go is not installed; it builds livekit-sip $(LIVEKIT_SIP_VERSION) for the telephony tests" >&2; exit 1; }; \
	  pkg-config --exists opus opusfile soxr || { echo "make sip: missing libopus-dev libopusfile-dev libsoxr-dev pkg-config (apt-get as root, or sudo make sip-deps)" >&2; exit 1; }; \
	  dir=$$(go mod download -json github.com/livekit/sip@$(LIVEKIT_SIP_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$$/\1/p') && \
	  test -n "$$dir" && rm -rf .cache/sip-src && mkdir -p $(BIN) .cache && cp -r "$$dir" .cache/sip-src && chmod -R u+w .cache/sip-src && \
	  cd .cache/sip-src && CGO_ENABLED=1 go build -buildvcs=false -o $(CURDIR)/$(BIN)/livekit-sip.tmp ./cmd/livekit-sip && \
	  cd $(CURDIR) && mv $(BIN)/livekit-sip.tmp $(BIN)/livekit-sip && rm -rf .cache/sip-src || exit 1; \
	fi

# livekit-sip's build libraries and SIPp (Debian sip-tester, the phone of the telephony tests);
# root only, like `make redis`.
sip-deps:
	@if ! pkg-config --exists opus opusfile soxr 2>/dev/null || ! command -v sipp >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make sip-deps: not root; install libopus-dev libopusfile-dev libsoxr-dev pkg-config sip-tester" >&2; exit 1; fi; \
	  apt-get update -qq && apt-get install -y -qq libopus-dev libopusfile-dev libsoxr-dev pkg-config sip-tester; \
	fi

# node and npm (Debian's, where they are missing; root), for `make web` and the browser tests.
node:
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm; }

# The page's script from the pinned livekit-client (package-lock.json), bundled by esbuild into
# workers/web/static/app.js; `npm ci` installs exactly the locked versions. No browser is
# downloaded: puppeteer-core drives the system's chromium.
CLIENT := workers/web/client
web: node
	cd $(CLIENT) && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

# What the browser tests need: Debian's chromium (root, apt) and the client's npm packages
# (puppeteer-core). Without them those tests skip with one line; under CI=true they fail.
browser: node
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	@test -d $(CLIENT)/node_modules/puppeteer-core || { cd $(CLIENT) && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error; }

# Debian's redis-server for the capacity store's tests (they skip without it, fail under
# CI=true); root only. The tests start their own on a free port: no service is left running.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  apt-get update -qq && apt-get install -y -qq redis-server && \
	  { service redis-server stop >/dev/null 2>&1 || true; }; }

# A livekit-server in a private network namespace, in the foreground: prints the URL, the keys
# and how to run `make dev` / `make room` against it (root); with telephony built, also a
# Redis-backed server with livekit-sip, and how to call in with SIPp.
live-server: livekit
	-@$(MAKE) -s sip redis
	tests/live/livenet.sh serve

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

schema: $(STAMP)
	$(PY) -m config.schema scenarios/schema.json

dev: $(STAMP)
	$(PY) -m workers.multi dev

start: $(STAMP)
	$(PY) -m workers.multi start

# The conversation printed, and spoken into transcripts/sim-$(SCENARIO).wav (offline voices).
demo: $(STAMP)
	$(PY) -m workers.simulate $(SCENARIO) --audio auto

# make room SCENARIO=dispatch_checkin [ROOM=name]: a fresh room and the page's link for it
# (`make serve-web` serves the page); with IDENTITY=caller-jamie, a join token instead.
room: $(STAMP)
	$(if $(IDENTITY),$(PY) -m workers.dispatch $(SCENARIO) --identity $(IDENTITY),$(PY) -m workers.web room $(SCENARIO)) $(if $(ROOM),--room $(ROOM))

# The page and rooms API on WEB_HOST:WEB_PORT (127.0.0.1:8090).
serve-web: $(STAMP)
	$(PY) -m workers.web

# make serve-openai [SCENARIO=...] [MODE=realtime]: the local OpenAI-compatible server on port
# 8089 for the real OpenAI plugins with no paid key; writes transcripts/served-catalog.json
# (run the worker or simulate with CATALOG_PATH set to it; LOCAL_OPENAI_KEY holds the key).
serve-openai: $(STAMP)
	mkdir -p transcripts
	LOCAL_OPENAI_KEY=$${LOCAL_OPENAI_KEY:-sk-local-dev} $(PY) -m workers.openai_server $(SCENARIO) --mode $(or $(MODE),pipeline) --write-catalog transcripts/served-catalog.json

# Every bench/*.py script except the private modules (bench/_*.py), each run as a module
# (`python -m bench.<name>`) from the project root; each prints one JSON object.
BENCH_MODULES := $(patsubst bench/%.py,bench.%,$(sort $(filter-out bench/_%,$(wildcard bench/*.py))))

# Exit 77 (bench.live_room where the live server's private network cannot be made) is a skip.
bench: $(STAMP)
	@for m in $(BENCH_MODULES); do echo "== $$m" >&2; $(PY) -m $$m; rc=$$?; \
	  if [ $$rc = 77 ]; then echo "$$m skipped (see above)" >&2; elif [ $$rc != 0 ]; then exit 1; fi; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
