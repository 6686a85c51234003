#!/usr/bin/env bash
# Creates / refreshes .venv with the pinned tools of infra/requirements.txt (moto_server,
# cfn-lint, aws-sam-cli with its translator and the Lambda runtime-interface emulator,
# cargo-lambda, zig). Re-installs only when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements.sha256
want=$(sha256sum infra/requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "tools up to date in .venv"
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r infra/requirements.txt
echo "$want" > "$stamp"
echo "tools installed in .venv: $(.venv/bin/moto_server --version 2>/dev/null | head -1) $(.venv/bin/cfn-lint --version) $(.venv/bin/sam --version) $(.venv/bin/cargo-lambda lambda --version)"
