# Switchyard: the two commands of the README, and their parts.
#   make run    set up, build, and run the gateway on the embedded default config
#   make test   set up, build, and run the whole test suite
# CONFIG=path/to.toml make run  runs with a configuration file instead.

CARGO ?= cargo
CONFIG ?=

.PHONY: setup build run test lint bench bench-proxy cuda-check clean-cache

setup:
	@./scripts/bootstrap.sh

build: setup
	$(CARGO) build --release -p switchyard

run: build
	./target/release/switchyard serve $(if $(CONFIG),--config $(CONFIG),)

test: setup
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

# Pass-through proxy benchmark against the upstream directly and nginx (installs nginx and wrk).
bench-proxy: setup
	./benches/proxy/run.sh

bench: bench-proxy

# The CUDA path, on a machine with an NVIDIA GPU, CUDA 13 and cuDNN 9 (fetches onnxruntime-gpu):
# detections and transcripts against the CPU's, the gateway on cuda:0, timings.
cuda-check: build
	python3 scripts/fetch_assets.py --cuda
	./scripts/cuda-check.sh

clean-cache:
	rm -rf .cache/downloads
