#!/usr/bin/env bash
# `sam local invoke` of every function with its shipped SQS test events (events/sqs/
# <function>.<DetailType>.json), against an AWS-API emulator and the simulators on the
# host — where a Docker engine exists. Without one it says so and skips (exit 0), so
# `make test` stays green on machines without Docker; with one, any failed invoke fails.
#
#   scripts/sam_local.sh              # build with sam, then invoke each sample
#   SAM_LOCAL_SKIP_BUILD=1 scripts/sam_local.sh
#
# The functions reach the host through host.docker.internal (infra/env.local.json): start
# `.venv/bin/python scripts/moto_server.py -p 5000` and `o2c sim serve --addr 0.0.0.0:4020`
# first, and `o2c bootstrap --stage local` against the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "sam local: SKIPPED — no Docker engine here (sam local invoke runs each function in a container)."
  echo "sam local: the same bootstraps run under the Lambda runtime interface emulator in scripts/lambda_smoke.sh."
  exit 0
fi
command -v sam >/dev/null || { echo "sam local: sam CLI missing (scripts/venv.sh installs it)" >&2; exit 1; }

cd infra
if [ -z "${SAM_LOCAL_SKIP_BUILD:-}" ]; then
  sam build
fi
# Function logical id for each binary name, from the template's BuildProperties.
map=$(python3 - <<'PY'
import re
text = open("template.yaml").read()
for m in re.finditer(r"^  (\w+Function):\n    Type: AWS::Serverless::Function\n    Metadata:\n(?:      .*\n)*?        Binary: ([\w-]+)", text, re.M):
    print(m.group(2), m.group(1))
PY
)
failed=0
for event in ../events/sqs/*.json; do
  name=$(basename "$event" .json); binary=${name%%.*}
  fn=$(awk -v b="$binary" '$1 == b { print $2 }' <<<"$map")
  [ -n "$fn" ] || { echo "sam local: no function builds $binary" >&2; failed=1; continue; }
  out=$(sam local invoke "$fn" -e "$event" --region "${AWS_REGION:-eu-west-1}" 2>/dev/null | tail -1)
  if [[ "$out" == *'"batchItemFailures"'* ]]; then
    echo "sam local: $fn ← $name → $out"
  else
    echo "sam local: $fn ← $name FAILED: $out" >&2; failed=1
  fi
done
exit "$failed"
