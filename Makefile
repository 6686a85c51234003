# The two stable entry points (see README):
#   make demo  - the seed scenario end to end on the embedded runtime (no AWS, no Docker)
#   make test  - every check and test CI runs (installs what it needs)
.PHONY: demo test build lint fmt bench

demo:
	cargo run --quiet --package o2c-cli --bin o2c -- demo

test:
	./scripts/test.sh

build:
	cargo build --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
