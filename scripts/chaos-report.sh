#!/usr/bin/env bash
# Run the chaos tier (tests/chaos, marker `chaos`) and print one table: scenario, load, faults
# injected, outcome, figure. Each scenario appends a JSON line to $VWORKSPACE_CHAOS_REPORT
# (tests/chaos/report.py); the table is printed from those lines, also when scenarios fail.
# The table in docs/operations.md ("What we test") comes from this script.
# Extra arguments go to pytest, e.g. `scripts/chaos-report.sh -k sigkill`;
# CHAOS_SEED=<n> replays the seeded randomness.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/lib/venv.sh  # .venv with the package and its test and dev extras

if [ -z "${VWORKSPACE_TEST_ASSETS:-}" ] && [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  bash scripts/build-test-assets.sh || exit 1
else
  bash scripts/fetch-third-party-crds.sh || exit 1
fi
export VWORKSPACE_REQUIRE_TESTENV=${VWORKSPACE_REQUIRE_TESTENV:-1}

report=$(mktemp -t vworkspace-chaos.XXXXXX.jsonl)
trap 'rm -f "$report"' EXIT
export VWORKSPACE_CHAOS_REPORT=$report
start=$(date +%s)
"$venv/bin/python" -m pytest tests/chaos -m chaos -p no:cacheprovider "$@"
tests=$?
echo
echo "chaos tier: pytest exit $tests, wall time $(( $(date +%s) - start ))s"
echo
"$venv/bin/python" -m tests.chaos.report "$report"
table=$?
exit $(( tests != 0 ? tests : table ))
