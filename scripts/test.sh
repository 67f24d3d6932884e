#!/usr/bin/env bash
# The project's test command (README): lint, type-check, layer contracts, then unit and
# integration tests against a real kube-apiserver + etcd + kube-controller-manager.
#
# It prepares what it needs first, so it works on a fresh clone:
#   * a virtualenv in .venv (override with VWORKSPACE_VENV) with the package and its test extras;
#   * the control-plane binaries in ~/.cache/vworkspace/testenv (built from the Go module proxy
#     when absent; a no-op when current), unless VWORKSPACE_TEST_ASSETS/KUBEBUILDER_ASSETS is set;
#   * the pinned Flux, Velero and Argo Workflows CRDs in ~/.cache/vworkspace/testenv/crds
#     (scripts/fetch-third-party-crds.sh), unless VWORKSPACE_THIRD_PARTY_CRDS is set;
#   * Debian's squid, the egress tests' forward proxy (scripts/install-squid.sh; quiet if present).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -k queue`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/lib/venv.sh  # .venv with the package and its test and dev extras

if [ -z "${VWORKSPACE_TEST_ASSETS:-}" ] && [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  bash scripts/build-test-assets.sh  # the binaries, and the third-party CRDs
else
  bash scripts/fetch-third-party-crds.sh
fi

bash scripts/install-squid.sh

echo "test.sh: ruff"
"$venv/bin/ruff" check vworkspace tests e2e bench
echo "test.sh: mypy --strict vworkspace"
"$venv/bin/mypy"
echo "test.sh: lint-imports (layer contracts in pyproject.toml)"
"$venv/bin/lint-imports" --no-cache | sed -n '/^Contracts:/p;/BROKEN/,$p'

# The integration tier must run here: a control plane that cannot start is a failure, not a skip.
export VWORKSPACE_REQUIRE_TESTENV=${VWORKSPACE_REQUIRE_TESTENV:-1}
echo "test.sh: pytest"
exec "$venv/bin/python" -m pytest "$@"
