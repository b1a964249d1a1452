#!/usr/bin/env bash
# The whole gcbatch flow, offline, against the built-in sandbox:
#   install → validate → plan → apply → wait → download (results.csv).
# Run from anywhere: bash examples/quickstart/run.sh
# State (the sandbox's database) goes to examples/quickstart/.gcbatch/, the lockfile to
# examples/quickstart/study.sandbox.lock, results to examples/quickstart/results/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${GCBATCH_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/gcbatch" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "$root"
fi
gcbatch="$venv/bin/gcbatch"
cd "$here"
set -x
"$gcbatch" validate study.yaml
"$gcbatch" plan --sandbox study.yaml
"$gcbatch" apply --sandbox study.yaml
"$gcbatch" wait --sandbox study.yaml --timeout 2m
"$gcbatch" status --sandbox study.yaml
"$gcbatch" download --sandbox study.yaml --out results
cat results/results.csv
