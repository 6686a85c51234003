#!/usr/bin/env bash
# The real Lambda binaries, without Docker:
#  1. builds the 14 `bootstrap` binaries with cargo-lambda for provided.al2023
#     (x86_64, glibc 2.34 via zig) and checks no symbol needs a newer glibc;
#  2. creates a stage on the AWS-API emulator from the template (o2c bootstrap), serves
#     the PSA/ERP/CRM/tax simulators over HTTP (o2c sim serve);
#  3. runs `intake` and then `provision` under the Lambda Runtime Interface Emulator (the
#     aws-lambda-rie binary shipped in the aws-sam-cli wheel) and invokes each with a
#     shipped SQS test event, then checks the engagement in DynamoDB; runs `ingest` with the
#     shipped HTTP API event (a DocuSign Connect webhook signed with the local key) and the
#     same event tampered with: published, then refused 401.
# Needs AWS_ENDPOINT_URL (scripts/test.sh starts moto_server and exports it).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AWS_ENDPOINT_URL:?AWS_ENDPOINT_URL must point at the AWS-API emulator}"
export PATH="$PWD/.venv/bin:$PATH"
functions=(intake provision billing-setup crm-writeback delivery-intake invoice-run invoice-approval invoice-posting cash-application revenue-recognition crm-invoice-sync exceptions reconciliation)
# The HTTP API function (not behind a queue).
http_functions=(ingest)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The `smoke` profile (Cargo.toml): the same binaries for the same target, unoptimised, so a
# change to a shared crate relinks 13 bootstraps in about a minute instead of re-running thin
# LTO 13 times. LAMBDA_PROFILE=release checks the shipped build (what `sam build` makes).
profile=${LAMBDA_PROFILE:-smoke}
started=$(date +%s)
cargo lambda build --profile "$profile" --target x86_64-unknown-linux-gnu.2.34 $(printf -- '-p o2c-fn-%s ' "${functions[@]}" "${http_functions[@]}")
echo "lambda build ($profile profile): $(( $(date +%s) - started ))s"
for f in "${functions[@]}" "${http_functions[@]}"; do
  b="target/lambda/$f/bootstrap"
  glibc=$(objdump -T "$b" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  if [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | tail -1)" != "2.34" ]; then
    echo "$b needs GLIBC_$glibc, newer than provided.al2023's 2.34" >&2
    exit 1
  fi
  printf 'bootstrap %-17s %6s KiB, highest glibc symbol %s\n' "$f" "$(( $(stat -c %s "$b") / 1024 ))" "$glibc"
done

# The CLI: `make test` passes the one its test build made (O2C_BIN), built with the
# workspace's features; `cargo build -p o2c-cli` would compile every shared crate again
# with the CLI's own feature set.
o2c=${O2C_BIN:-}
if [ -z "$o2c" ]; then cargo build --quiet -p o2c-cli; o2c=target/debug/o2c; fi
stage="smoke$(date +%s | tail -c 6)"
tmp=$(mktemp -d)
$o2c bootstrap --stage "$stage"

sim_port=$(free_port)
$o2c sim serve --db "$tmp/sims.db" --addr "127.0.0.1:$sim_port" > "$tmp/sim.log" 2>&1 &
pids+=($!)
wait_port "$sim_port"

rie=$(find .venv -name aws-lambda-rie-x86_64 | head -1)
invoke() { # function, event file → prints the response
  local fn=$1 event=$2 port
  port=$(free_port)
  env EVENT_BUS_NAME="o2c-$stage" STATE_TABLE="o2c-$stage-state" IDEMPOTENCY_TABLE="o2c-$stage-idempotency" O2C_STAGE="$stage" \
    PSA_BASE_URL="http://127.0.0.1:$sim_port/psa" ERP_BASE_URL="http://127.0.0.1:$sim_port/erp" CRM_BASE_URL="http://127.0.0.1:$sim_port/crm" TAX_BASE_URL="http://127.0.0.1:$sim_port/tax" \
    WEBHOOK_SECRETS='{"docusign": "o2c-local-connect-key"}' \
    RUST_LOG=info "$rie" --log-level error --runtime-interface-emulator-address "127.0.0.1:$port" "target/lambda/$fn/bootstrap" > "$tmp/$fn.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  wait_port "$port"
  python3 - "http://127.0.0.1:$port/2015-03-31/functions/function/invocations" "$event" <<'PY'
import sys, urllib.request
with open(sys.argv[2], "rb") as f:
    body = f.read()
with urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=body, method="POST"), timeout=60) as r:
    sys.stdout.write(r.read().decode())
PY
  kill "$pid" 2>/dev/null || true
}
status() { $o2c status --target aws --stage "$stage" 0068d00000GLBX01 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["engagement"]["status"])'; }

# Every bootstrap starts, and answers an SQS event without records (a console test
# invoke) with no failures rather than an invocation error.
echo '{"Records":[]}' > "$tmp/empty.json"
for f in "${functions[@]}"; do
  resp=$(invoke "$f" "$tmp/empty.json")
  [ "$resp" = '{"batchItemFailures":[]}' ] || { echo "$f answered an empty batch with: $resp"; cat "$tmp/$f.log"; exit 1; }
done
echo "lambda smoke: all ${#functions[@]} bootstraps answered an empty batch with {\"batchItemFailures\":[]}"

resp=$(invoke intake events/sqs/intake.OpportunityClosedWon.json)
echo "intake → $resp"
[ "$resp" = '{"batchItemFailures":[]}' ] || { cat "$tmp/intake.log"; exit 1; }
[ "$(status)" = "contract_created" ] || { echo "intake did not create the contract: $(status)"; exit 1; }

resp=$(invoke provision events/sqs/provision.ContractApproved.json)
echo "provision → $resp"
[ "$resp" = '{"batchItemFailures":[]}' ] || { cat "$tmp/provision.log"; exit 1; }
[ "$(status)" = "provisioned" ] || { echo "provision did not provision: $(status)"; cat "$tmp/provision.log"; exit 1; }
echo "lambda smoke: intake and provision bootstraps ran under aws-lambda-rie against the emulator; engagement provisioned"

# The ingestion function: the shipped DocuSign Connect webhook (signed with the local key of
# infra/env.local.json) is published; the same body with one byte changed is refused.
resp=$(invoke ingest events/apigw/ingest.docusign.envelope-completed.json)
echo "ingest → $resp"
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); b=json.loads(r["body"]); assert r["statusCode"]==200 and b["FailedEntryCount"]==0 and b["Entries"][0]["EventId"], r' "$resp" \
  || { cat "$tmp/ingest.log"; exit 1; }
python3 - events/apigw/ingest.docusign.envelope-completed.json "$tmp/forged.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
e["body"] = e["body"].replace("completed", "Completed", 1)
json.dump(e, open(sys.argv[2], "w"))
PY
resp=$(invoke ingest "$tmp/forged.json")
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["statusCode"]==401 and json.loads(r["body"])["ErrorCode"]=="InvalidSignature", r' "$resp" \
  || { echo "a tampered webhook was not refused: $resp"; cat "$tmp/ingest.log"; exit 1; }
echo "lambda smoke: the ingest bootstrap published a signed DocuSign webhook and refused it tampered (401)"

# The IAM route: NetSuite's invoice record from an integration flow with AWS credentials
# (the identity API Gateway passes after checking SigV4) is published as ErpInvoicePosted;
# without that identity it is refused.
resp=$(invoke ingest events/apigw/ingest.netsuite.invoice.json)
echo "ingest (IAM) → $resp"
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); b=json.loads(r["body"]); assert r["statusCode"]==200 and b["FailedEntryCount"]==0 and b["Mapping"]=="netsuite/invoice", r' "$resp" \
  || { cat "$tmp/ingest.log"; exit 1; }
python3 - events/apigw/ingest.netsuite.invoice.json "$tmp/anonymous.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
del e["requestContext"]["authorizer"]
json.dump(e, open(sys.argv[2], "w"))
PY
resp=$(invoke ingest "$tmp/anonymous.json")
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["statusCode"]==401 and json.loads(r["body"])["ErrorCode"]=="MissingAuthenticationToken", r' "$resp" \
  || { echo "a request without an IAM identity was not refused: $resp"; cat "$tmp/ingest.log"; exit 1; }
echo "lambda smoke: the ingest bootstrap published an IAM-signed NetSuite invoice and refused it without an identity (401)"
