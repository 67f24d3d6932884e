#!/usr/bin/env bash
# The one-command local demo (README "run it"): the whole Pull loop on this machine.
#
# Prepares what it needs first, as scripts/test.sh does, so it works on a fresh clone:
#   * a virtualenv in .venv (override with VWORKSPACE_VENV) with the package and its test and
#     dev extras, reinstalled when pyproject.toml is newer than the install stamp;
#   * the control-plane binaries in ~/.cache/vworkspace/testenv (built from the Go module proxy
#     when absent, about 10 minutes on 2 cores the first time; a no-op when current), unless
#     VWORKSPACE_TEST_ASSETS/KUBEBUILDER_ASSETS is set or only --help is asked for.
# Then runs `python -m vworkspace demo` with the arguments given, e.g.
#   scripts/dev-pull-loop.sh            run, then keep everything up until Ctrl-C
#   scripts/dev-pull-loop.sh --exit     stop right after the summary
#   scripts/dev-pull-loop.sh --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/lib/venv.sh  # .venv with the package and its test and dev extras

wants_help=false
for arg in "$@"; do
  case "$arg" in -h | --help) wants_help=true ;; esac
done
if ! $wants_help && [ -z "${VWORKSPACE_TEST_ASSETS:-}" ] && [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  bash scripts/build-test-assets.sh
fi

exec "$venv/bin/python" -m vworkspace demo "$@"
