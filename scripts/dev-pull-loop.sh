#!/usr/bin/env bash
# The one-command local demo (README "run it"): the whole Pull loop on this machine, with the
# application installed for real by Flux onto simulated Nodes.
#
# Prepares what it needs first, as scripts/test.sh does, so it works on a fresh clone:
#   * a virtualenv in .venv (override with VWORKSPACE_VENV) with the package and its test and
#     dev extras, reinstalled when pyproject.toml is newer than the install stamp;
#   * the binaries in ~/.cache/vworkspace/testenv: Kubernetes (kube-apiserver, etcd,
#     kube-controller-manager, kube-scheduler, kubectl), kwok, helm, Flux's source-controller and
#     helm-controller, SeaweedFS's weed, Velero and velero-plugin-for-aws (for --backup; Argo's
#     workflow-controller is built too), and the pinned third-party CRDs (built from the Go
#     module proxy when absent, tens of minutes on 2 cores the first time; a no-op of about a
#     second when current),
#     unless VWORKSPACE_TEST_ASSETS/KUBEBUILDER_ASSETS is set or only --help is asked for.
# Then runs `python -m vworkspace demo` with the arguments given, e.g.
#   scripts/dev-pull-loop.sh            run, then keep everything up until Ctrl-C
#   scripts/dev-pull-loop.sh --exit     stop once Ready=True is at the control plane; exit 0 only
#                                       if the instance went Ready through the real
#                                       helm-controller with its Deployment Available, else 1
#                                       naming the step that did not happen and the log to read
#   scripts/dev-pull-loop.sh --backup --exit
#                                       also back the application up: SeaweedFS S3 and the real
#                                       Velero start, a Backup Operation goes the same Pull path,
#                                       and the backup's objects in the bucket are listed
#   scripts/dev-pull-loop.sh --help
# Every process it starts is stopped at exit, also on Ctrl-C or SIGTERM (the demo replaces this
# shell, so the signal reaches it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/lib/venv.sh  # .venv with the package and its test and dev extras

wants_help=false
for arg in "$@"; do
  case "$arg" in -h | --help) wants_help=true ;; esac
done
if ! $wants_help && [ -z "${VWORKSPACE_TEST_ASSETS:-}" ] && [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  # A warm cache's "... is current in ..." lines are dropped (step 1 of the demo names the
  # directory); a build's progress and any error still show.
  bash scripts/build-test-assets.sh | sed -u '/ \(is\|are\) current in /d'
fi

exec "$venv/bin/python" -m vworkspace demo "$@"
