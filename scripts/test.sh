#!/usr/bin/env bash
# Runs every check and test. Used by `make test` and by CI (.ci/run). Installs what it
# needs into .venv, starts moto_server on a free loopback port and stops it on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export SAM_CLI_TELEMETRY=0
# Incremental compilation: off for a clean clone, which builds once (its caches would only
# add gigabytes to the disk); on in a working copy that has built before, where a change to
# a shared crate then rebuilds the tests in about half the time. The variable overrides the
# profiles, so the `smoke` Lambda build is incremental there too (a few more GB of caches,
# a faster relink). CARGO_INCREMENTAL set by the caller wins.
if [ -z "${CARGO_INCREMENTAL:-}" ]; then
  if [ -d target/debug/deps ]; then export CARGO_INCREMENTAL=1; else export CARGO_INCREMENTAL=0; fi
fi
echo "incremental compilation: $([ "$CARGO_INCREMENTAL" = 1 ] && echo on || echo off)"
mkdir -p target
# The cores this run may use: nproc (the affinity mask), capped by a cgroup v2 CPU quota
# (a container limited with --cpus on a larger host).
cores() {
  local n quota period
  n=$(nproc)
  if [ -r /sys/fs/cgroup/cpu.max ] && read -r quota period < /sys/fs/cgroup/cpu.max && [ "$quota" != "max" ]; then
    quota=$(( (quota + period - 1) / period ))
    [ "$quota" -ge 1 ] && [ "$quota" -lt "$n" ] && n=$quota
  fi
  echo "$n"
}
disk() { printf 'disk: %s free; target/ %s\n' "$(df -h --output=avail . | tail -1 | tr -d ' ')" "$(du -sh target 2>/dev/null | cut -f1)"; }

# Each step prints how long the one before it took (and the total so far), so a slow
# `make test` says where its time went.
started=$(date +%s); last=$started; previous=""
step() {
  local now; now=$(date +%s)
  [ -z "$previous" ] || printf -- '-- %s: %ss (total %ss)\n' "$previous" "$((now - last))" "$((now - started))"
  last=$now; previous=${1%%:*}; previous=${previous%% (*}
  [ "$1" = "done" ] || printf '\n== %s\n' "$*"
}

disk
step "format"
cargo fmt --all -- --check

step "tools"
scripts/venv.sh

# The template and OpenAPI checks are single-threaded Python: they run beside clippy and
# report at their own step.
template_checks() {
  .venv/bin/cfn-lint infra/template.yaml
  .venv/bin/python scripts/check_template.py infra/template.yaml target/template.translated.json
  .venv/bin/cfn-lint target/template.translated.json
  AWS_DEFAULT_REGION=eu-west-1 .venv/bin/sam validate --lint --template infra/template.yaml
  .venv/bin/openapi-spec-validator cli/openapi.yaml
}
template_checks > target/template-checks.log 2>&1 &
template_pid=$!
trap 'kill "$template_pid" 2>/dev/null || true' EXIT

step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# What `cargo build -p o2c-cli` and `make demo` compile: the shared crates with the CLI's
# features alone. Clippy and the test build unify them with the tests' (conformance,
# ingest), and the Lambda build never has the CLI's, so only this checks their gates.
cargo check --quiet -p o2c-cli

step "template: cfn-lint (SAM), SAM → CloudFormation translation + cfn-lint, sam validate --lint; o2c serve's OpenAPI document (cli/openapi.yaml; its examples are tested against a server by cli/tests/openapi.rs)"
if ! wait "$template_pid"; then cat target/template-checks.log; echo "template or OpenAPI check failed" >&2; exit 1; fi
cat target/template-checks.log

step "AWS API emulator (moto_server, DynamoDB requests serialised like DynamoDB's item-level atomicity)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" "$template_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
echo "moto_server on $AWS_ENDPOINT_URL"

step "test build (unit, contract, embedded flows, CLI, emulator-backed AWS adapters; also the o2c binary the smoke below drives)"
if cargo nextest --version >/dev/null 2>&1; then nextest=1; else nextest=""; fi
if [ -n "$nextest" ]; then cargo nextest run --workspace --no-run; else cargo test --workspace --no-run; fi

step "Lambda binaries: cargo-lambda build, glibc check, invoke under aws-lambda-rie"
O2C_BIN=target/debug/o2c scripts/lambda_smoke.sh
disk

step "sam local invoke of every shipped SQS event (skips, saying so, without Docker)"
O2C_BIN=target/debug/o2c scripts/sam_local.sh

step "headless browser for the console tests (Debian's chromium and chromedriver)"
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromium --version
# The console's browser test fails rather than skips when they are missing here.
export O2C_REQUIRE_BROWSER=1

step "tests (unit, contract, embedded flows, CLI, emulator-backed AWS adapters)"
if [ -n "$nextest" ]; then
  # One test more than the machine has cores: many tests spend part of their time waiting
  # on the AWS-API emulator, child processes or a browser.
  cargo nextest run --workspace --no-fail-fast --test-threads "$(( $(cores) + 1 ))"
else
  cargo test --workspace --no-fail-fast
fi
disk
step done
