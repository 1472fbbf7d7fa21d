# The few commands a person runs. `make test` and `make demo` install what they
# need on a fresh Debian machine (apt-get when run as root; crates via cargo).

CARGO      ?= cargo
CBINDGEN_VERSION := 0.29.0
RELEASE    := target/release
# Seconds per fuzz target: `make fuzz` (a session) and `make fuzz-smoke` (in `make test`).
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 5

.PHONY: all build deps header check-header lint test test-rust examples test-examples \
        nginx-module test-nginx demo bench bench-nginx-workers fuzz fuzz-smoke clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --release --lib --bins

# Regenerates include/ase.h; the only way the header changes.
header:
	@command -v cbindgen >/dev/null || $(CARGO) install cbindgen --version $(CBINDGEN_VERSION) --locked
	cbindgen --config cbindgen.toml --crate ase --output include/ase.h

# Fails when the committed header differs from a fresh generation.
check-header:
	@scripts/check-header.sh $(CBINDGEN_VERSION)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --lib

test-rust:
	$(CARGO) test --release

examples: build
	@scripts/examples.sh build

test-examples: build
	@scripts/examples.sh test

nginx-module: deps build
	@scripts/nginx-module.sh build

test-nginx: nginx-module
	@scripts/nginx-module.sh test

test: deps lint check-header test-rust test-examples test-nginx fuzz-smoke
	@echo "make test: all suites passed"

demo: deps build nginx-module
	@scripts/demo.sh

bench: build
	$(CARGO) bench --bench check

# nginx with a 1.12M-entry ABS list at 1, 4 and 8 workers against bare nginx:
# memory, threads, time to every worker, requests/s (docs/BENCHMARKS.md,
# "One copy per host"). Needs wrk and nginx-dev; not part of `make test`.
bench-nginx-workers:
	benches/nginx-workers.sh

# Every target in fuzz/ for FUZZ_SECONDS each (docs/fuzzing.md). Needs the
# nightly toolchain; installs cargo-fuzz when missing.
fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# A few seconds per target; says so and passes when nightly is missing.
fuzz-smoke:
	@scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

clean:
	$(CARGO) clean
