#!/usr/bin/env bash
# Cold init, first and warm invoke latency and peak RSS of an o2c Lambda function next to
# the references of ../shared/bench/initbench (a bare Rust function that builds the same
# SDK clients, and a Python function on Powertools), locally against moto: no AWS, no
# Docker. initbench acts as the Lambda Runtime API and times every step.
#
# usage: scripts/initbench.sh [FUNCTION] [COLD] [WARM]     (default: intake 10 20)
# Needs ../shared/bench/initbench/setup.sh run once (its venv and rust-ref build) and the
# function's release bootstrap (cargo lambda build --release -p o2c-fn-FUNCTION ...).
# Each invoke is an SQS batch of one closed-won with fresh ids, so o2c does the whole
# intake step every time: idempotency reservation, reference data, validation and
# enrichment, a DynamoDB transaction, PutEvents. Writes target/benchmarks/initbench-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=$(cd "${INITBENCH:-../shared/bench/initbench}" && pwd)
fn=${1:-intake} cold=${2:-10} warm=${3:-20}
bootstrap=$PWD/target/lambda/$fn/bootstrap
[ -x "$bootstrap" ] || { echo "no $bootstrap: build it with cargo lambda build --release first" >&2; exit 2; }
[ -x /tmp/initbench/target/release/bootstrap ] || { echo "run $bench/setup.sh first" >&2; exit 2; }
out=$PWD/target/benchmarks
mkdir -p "$out"

"$bench/start-moto.sh" >/dev/null
export AWS_ENDPOINT_URL=http://127.0.0.1:5056 AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
cargo build --quiet -p o2c-cli
target/debug/o2c bootstrap --stage initbench >/dev/null

# The function's environment as the template gives it (connectors unused by intake).
env_file=$out/initbench-$fn.env
{
  grep -v '^#' "$bench/moto.env" | grep -v '_TABLE=\|EVENT_BUS_NAME='
  echo "EVENT_BUS_NAME=o2c-initbench"
  echo "STATE_TABLE=o2c-initbench-state"
  echo "IDEMPOTENCY_TABLE=o2c-initbench-idempotency"
  echo "O2C_STAGE=initbench"
  for s in psa erp crm tax; do echo "$(echo "$s" | tr a-z A-Z)_BASE_URL=http://127.0.0.1:9/$s"; done
} > "$env_file"

# An SQS event whose message, event id, idempotency key and opportunity are new per invoke.
event=$out/initbench-$fn.event.json
python3 - "events/sqs/intake.OpportunityClosedWon.json" "$event" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
r = e["Records"][0]
body = json.loads(r["body"])
body["id"] = "${INVOKE_ID}"
d = body["detail"]
d["event_id"] = "${INVOKE_ID}"
opp = "006IB${INVOKE_ID}"
d["payload"]["opportunity_id"] = opp
d["idempotency_key"] = f"crm:opportunity:{opp}:closed-won:r1"
r["messageId"] = "${INVOKE_ID}"
r["body"] = json.dumps(body)
json.dump(e, open(sys.argv[2], "w"))
PY

py="/tmp/initbench/venv/bin/python -m awslambdaric handler.lambda_handler"
for peer in rust-ref python-peer; do
  if [ "$peer" = rust-ref ]; then b=/tmp/initbench/target/release/bootstrap cwd=(); else b=$py cwd=(--cwd-b "$bench/peer"); fi
  # B keeps its own tables and bus (moto.env); A's are in the env file's later lines.
  python3 "$bench/initbench.py" "$bootstrap" --name-a "o2c-$fn" --vs "$b" --name-b "$peer" "${cwd[@]}" \
    --env-file "$bench/moto.env" $(grep -v '^#' "$env_file" | sed 's/^/--env-a /') \
    --event "$event" -n "$cold" -m "$warm" --json "$out/initbench-$fn-vs-$peer.json" || true
  # (initbench exits 1 when B errs: the references expect their own EventBridge event, not
  # o2c's SQS batch, so only the init and RSS rows compare; the JSON says which side erred.)
done
"$bench/start-moto.sh" stop >/dev/null
