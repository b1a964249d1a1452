#!/bin/bash
# Submit a study as N shards, then the merge once every shard has ended.
#
#   ./submit.sh study.yaml 8
set -euo pipefail
MANIFEST=${1:?usage: submit.sh MANIFEST SHARDS}
SHARDS=${2:?usage: submit.sh MANIFEST SHARDS}
here=$(cd "$(dirname "$0")" && pwd)
array=$(sbatch --parsable --array=0-$((SHARDS - 1)) \
    --export=ALL,MANIFEST="$MANIFEST",SHARDS="$SHARDS" "$here/apply-shard.sbatch")
sbatch --dependency=afterany:"${array%%;*}" --export=ALL,MANIFEST="$MANIFEST" \
    "$here/merge.sbatch"
