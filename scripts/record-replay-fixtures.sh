#!/usr/bin/env bash
# Re-record the replay fixtures in tests/replay/ from the real tier (docs/traces.md): each
# scenario is one test of tests/real run with the operator tracing ($VWORKSPACE_TRACE_FILE,
# read by `run`, passed on by the real_operator fixture), its trace turned into a fixture by
# `python -m vworkspace trace to-fixture`. Needs what the real tier needs (the cached test
# binaries: Flux for the first two, SeaweedFS and Velero for the backup).
# Usage: scripts/record-replay-fixtures.sh [NAME...]   (default: all three)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/lib/venv.sh  # .venv with the package and its test and dev extras

declare -A SCENARIOS=(
  [install-ready]="tests/real/test_flux.py::test_the_sample_instance_of_demo_app_goes_ready"
  [upgrade-failed]="tests/real/test_flux_failures.py::test_an_upgrade_operation_to_an_invalid_value_fails_with_upgrade_failed"
  [backup-succeeded]="tests/real/test_velero_ops.py::test_a_backup_operation_completes_through_the_real_velero_into_the_bucket"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(install-ready upgrade-failed backup-succeeded)

export VWORKSPACE_REQUIRE_TESTENV=1
# The raw traces are removed at exit unless VWORKSPACE_TRACES_DIR names where to keep them.
if [ -n "${VWORKSPACE_TRACES_DIR:-}" ]; then
  traces=$VWORKSPACE_TRACES_DIR
  mkdir -p "$traces"
else
  traces=$(mktemp -d -t vworkspace-traces.XXXXXX)
  trap 'rm -rf "$traces"' EXIT
fi
for name in "${names[@]}"; do
  test=${SCENARIOS[$name]:?unknown fixture $name (known: ${!SCENARIOS[*]})}
  echo "record-replay-fixtures: $name <- $test"
  rm -f "$traces/$name.ndjson"
  VWORKSPACE_TRACE_FILE="$traces/$name.ndjson" \
    "$venv/bin/python" -m pytest "$test" -q -p no:cacheprovider
  "$venv/bin/python" -m vworkspace trace to-fixture "$traces/$name.ndjson" --name "$name" \
    --source "scripts/record-replay-fixtures.sh: $test"
done
