# The two commands of a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := edge,train,cloud,broker,demo,dev
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export SPARK_LOCAL_IP := 127.0.0.1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test test-faults soak check lint typecheck unit bench venv mosquitto java chromium clean

demo: $(STAMP) mosquitto java
	$(BIN)/hyperfleet demo $(ARGS)

test: $(STAMP) mosquitto java chromium lint typecheck
	$(BIN)/python -m pytest -q -ra --ignore=tests/faults $(PYTEST_ARGS)

# Faults and bad input against real processes (kill -9, partitions, garbage, fuzzing); .ci/run runs
# it after `make test`, apart so that each stays under 15 minutes.
test-faults: $(STAMP) mosquitto java
	$(BIN)/python -m pytest -q -ra tests/faults $(PYTEST_ARGS)

check: lint typecheck

# The fast half: pure code, no broker, no Keras job (seconds).
unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# 30 minutes of the fleet demo with agents killed and restarted; memory and connections must stay
# flat (bench/results/soak.json). Not part of CI.
soak: $(STAMP) mosquitto
	$(BIN)/python bench/soak.py $(ARGS)

bench: $(STAMP) mosquitto
	$(BIN)/python bench/protocol.py

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Mosquitto is a system package. As root we install it with apt; otherwise say how.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else \
	    echo "mosquitto is not installed and this is not root: install it (sudo apt-get install mosquitto," \
	         "brew install mosquitto) or the embedded broker is used where a test allows it"; \
	  fi; }

# Spark needs a Java 17 runtime; the same rule as for Mosquitto.
java:
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing a Java 17 runtime with apt-get (for Spark)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  else \
	    echo "java is not installed and this is not root: install a Java 17 runtime" \
	         "(sudo apt-get install openjdk-17-jre-headless) or the Spark tests are skipped"; \
	  fi; }

# The dashboard's browser test drives Debian's chromium through Playwright's driver (never
# `playwright install`, which downloads a browser); the same rule as for Mosquitto.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get (for the dashboard's browser test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not installed and this is not root: install it (sudo apt-get install" \
	         "chromium) or the dashboard's browser test is skipped"; \
	  fi; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache results
