#!/usr/bin/env bash
# Build kwok (sigs.k8s.io/kwok, simulated Nodes and Pods) into the test-asset cache, next to
# kube-apiserver, and copy its stage files there. Called by scripts/build-test-assets.sh.
#
# kwok refuses to start without stages (the rules that move a Node or Pod from one status to the
# next). The stages come from two places, both copied into "$bin/kwok-stages/":
#   * kwok's own, from the downloaded module (kustomize/stage/node/fast/node-initialize.yaml,
#     kustomize/stage/pod/fast/{pod-ready,pod-complete,pod-delete}.yaml), unmodified;
#   * ours, scripts/testenv/kwok-stages/*.yaml (pod-fail: a Pod annotated
#     pod-fail.stage.vworkspace.io/exit-code fails with that exit code; pod-shell-exit: a Job's
#     Pod running `sh -c "exit N"` fails with exit code N; pod-argo-exit: an Argo Workflow's Pod
#     finishes, failed with N when its step runs `sh -c "exit N"`). KwokNodes refuses a cache whose
#     copies differ from the checkout's, so a changed stage needs a rerun of this script.
#
#   scripts/build-kwok.sh            build if missing or stale, else do nothing
#   scripts/build-kwok.sh --force    rebuild
#
# `go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION` (pinned; kwok's go.mod has no replace
# lines) into a scratch GOBIN, then `mv` into place, so a test that is running kwok never sees
# half a binary. The go command's chatter goes to "$cache_root/logs/build-kwok.log"; on failure
# the script says so and prints its tail. A stamp (version + hash of our stage files) makes a
# second run a no-op.
# Environment: KWOK_VERSION (default v0.8.0), VWORKSPACE_TESTENV_CACHE (as build-test-assets.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=${KWOK_VERSION:-v0.8.0}
bin=$(bash "$here/build-test-assets.sh" --print-dir)
cache_root=${VWORKSPACE_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vworkspace/testenv}
log_dir="$cache_root/logs"
log="$log_dir/build-kwok.log"
ours="$here/testenv/kwok-stages"
# kwok's own stages, as paths inside its module.
upstream_stages=(
  kustomize/stage/node/fast/node-initialize.yaml
  kustomize/stage/pod/fast/pod-ready.yaml
  kustomize/stage/pod/fast/pod-complete.yaml
  kustomize/stage/pod/fast/pod-delete.yaml
)

stamp="$bin/.stamp-kwok"
stamp_value="$version $( (printf '%s\n' "${upstream_stages[@]}"; cat "$ours"/*.yaml) | sha256sum | cut -d' ' -f1)"
if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ] \
   && [ -x "$bin/kwok" ] && [ -d "$bin/kwok-stages" ]; then
  echo "build-test-assets: kwok $version is current in $bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build-test-assets: 'go' is not on PATH; kwok $version needs Go >= 1.26 to build" >&2
  exit 1
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw
mkdir -p "$bin" "$log_dir"
start=$(date +%s)
printf 'build-test-assets: kwok %s ... ' "$version"
scratch=$(mktemp -d "$bin/.kwok-build.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
fail() {
  echo "failed"
  echo "build-test-assets: $1; the go command's output is in $log, its end:" >&2
  tail -n 20 "$log" >&2
  exit 1
}
{
  echo "== $(date -u +%FT%TZ) go install sigs.k8s.io/kwok/cmd/kwok@$version"
} > "$log"
(cd "$scratch" && GOBIN="$scratch" go install "sigs.k8s.io/kwok/cmd/kwok@$version") >> "$log" 2>&1 \
  || fail "building kwok $version failed"
module_dir=$(cd "$scratch" && go mod download -json "sigs.k8s.io/kwok@$version" 2>> "$log" \
  | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p') || true
[ -n "$module_dir" ] && [ -d "$module_dir" ] || fail "cannot find the kwok $version module folder"

mkdir "$scratch/kwok-stages"
for file in "${upstream_stages[@]}"; do
  [ -f "$module_dir/$file" ] || fail "kwok $version has no $file"
  # Named after the folder too: pod/fast/pod-ready.yaml -> kwok-pod-fast-pod-ready.yaml.
  rel=${file#kustomize/stage/}
  cp "$module_dir/$file" "$scratch/kwok-stages/kwok-${rel//\//-}"
done
for file in "$ours"/*.yaml; do
  cp "$file" "$scratch/kwok-stages/vworkspace-$(basename "$file")"
done
chmod -R u+w "$scratch/kwok-stages"

mv -f "$scratch/kwok" "$bin/kwok"
# A directory cannot be swapped atomically; the old one is moved aside first, so the window in
# which a reader finds no stages is two renames long.
if [ -d "$bin/kwok-stages" ]; then
  mv "$bin/kwok-stages" "$scratch/kwok-stages.old"
fi
mv "$scratch/kwok-stages" "$bin/kwok-stages"
echo "$stamp_value" > "$stamp"
echo "done in $(( $(date +%s) - start ))s ($("$bin/kwok" --version 2>/dev/null | head -n1))"
