#!/usr/bin/env bash
# DICOM through the sandbox, offline: synthetic CT series with (made-up) patient data are
# de-identified on this machine, uploaded, turned into jobs; then everything the sandbox
# stored is searched for the patient data (none may be there).
# Run from anywhere: bash examples/dicom/run.sh
# State goes to examples/dicom/.gcbatch/, the lockfiles beside the manifests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${GCBATCH_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/gcbatch" ] || ! "$venv/bin/python" -c "import grand_challenge_dicom_de_identifier" 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "$root[dicom]"
fi
gcbatch="$venv/bin/gcbatch"
cd "$here"
set -x
"$venv/bin/python" make_series.py data
"$gcbatch" validate study.yaml image-set.yaml
"$gcbatch" plan --sandbox study.yaml
"$gcbatch" apply --sandbox study.yaml
"$gcbatch" apply --sandbox image-set.yaml
"$gcbatch" wait --sandbox study.yaml --timeout 2m
"$gcbatch" wait --sandbox image-set.yaml --timeout 2m
"$gcbatch" status --sandbox study.yaml
"$gcbatch" status --sandbox image-set.yaml
"$venv/bin/python" check_no_patient_data.py .gcbatch
