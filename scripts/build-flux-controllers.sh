#!/usr/bin/env bash
# Build Flux's source-controller and helm-controller from their Go modules into the test-asset
# cache (next to kube-apiserver), for the `real` test tier, the `flux` pytest fixture and
# `testenv start --with flux`. Called by scripts/build-test-assets.sh.
#
#   scripts/build-flux-controllers.sh          build what is missing or stale, else do nothing
#   scripts/build-flux-controllers.sh --force  rebuild both
#
# Pinned versions, and why these:
# - source-controller v1.9.1: the version whose CRDs scripts/testenv/third-party-crds.txt pins
#   (all six of them: source-controller refuses to start without every one).
# - helm-controller v1.4.5, not v1.6.3 (whose HelmRelease CRD the project installs): v1.6.3
#   requires github.com/fluxcd/helm/v4 v4.2.4-flux.1, a fork named only in its replace lines,
#   which the Go module proxy refuses, so it cannot be built here. v1.4.5 uses upstream
#   helm.sh/helm/v3 v3.19.2, serves the same helm.toolkit.fluxcd.io/v2 API, and works with
#   source-controller v1.9.1 and the v1.6.3 CRDs.
#
# Neither can be `go install`ed: each go.mod says `replace <module>/api => ./api`, a nested
# module the module zip leaves out. So: `go mod download -json` the module, copy its folder to a
# scratch directory, drop that one replace (the api module then comes from the proxy at the
# version go.mod requires) and `go build` there. The binary is moved into the cache only when
# complete (others may be running it). One line per component on the terminal; the go command's
# own output (`go: downloading ...`) goes to a log file in the cache, whose tail is printed if a
# build fails. A stamp per component (.stamp-<name>, holding the version) makes a warm run a no-op.
#
# Environment: VWORKSPACE_TESTENV_CACHE (see build-test-assets.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
me=build-test-assets
SOURCE_CONTROLLER_VERSION=v1.9.1
HELM_CONTROLLER_VERSION=v1.4.5
components=(
  "source-controller github.com/fluxcd/source-controller $SOURCE_CONTROLLER_VERSION"
  "helm-controller github.com/fluxcd/helm-controller $HELM_CONTROLLER_VERSION"
)

bin=$(bash "$here/build-test-assets.sh" --print-dir)
log="$(dirname "$bin")/build-flux-controllers.log"

current() {  # name version
  [ "${force:-}" != "--force" ] && [ -x "$bin/$1" ] && [ -f "$bin/.stamp-$1" ] \
    && [ "$(cat "$bin/.stamp-$1")" = "$2" ]
}

# What the binary was built from, for the record: its main module's version is "(devel)" (a
# copied folder), so name the helm library and Go it carries.
built_from() {  # binary
  go version -m "$1" | awk '
    NR == 1 { go = $2 }
    $1 == "dep" && $2 ~ /^helm\.sh\/helm\// { helm = $2 " " $3 }
    END { print go (helm ? ", " helm : "") }'
}

# Every step chained with &&: `set -e` does not apply inside the `||` list of the caller.
compile() {  # name module version scratch
  local name=$1 module=$2 version=$3 scratch=$4 json dir
  echo "=== $(date -u +%FT%TZ) $name $version" &&
    json=$(cd "$scratch" && go mod download -json "$module@$version") &&
    dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json") &&
    [ -d "$dir" ] &&
    cp -r "$dir" "$scratch/src" &&
    chmod -R u+w "$scratch/src" &&
    cd "$scratch/src" &&
    go mod edit -dropreplace="$module/api" &&
    GOFLAGS="-mod=mod -modcacherw" go build -trimpath -ldflags "-s -w" -o "$scratch/$name" .
}

build_one() {  # name module version
  local name=$1 module=$2 version=$3 start scratch
  start=$(date +%s)
  scratch=$(mktemp -d "$bin/.$name-build.XXXXXX")
  # Runs in a subshell (see the caller), so this trap removes the scratch folder on any exit.
  # Expanded now: $scratch is local and gone by the time the trap runs.
  # shellcheck disable=SC2064
  trap "chmod -R u+w '$scratch' 2>/dev/null; rm -rf '$scratch'" EXIT
  printf '%s: %s %s ... ' "$me" "$name" "$version"
  if ! (compile "$name" "$module" "$version" "$scratch") >>"$log" 2>&1; then
    echo "FAILED after $(( $(date +%s) - start ))s; the end of $log:"
    tail -n 25 "$log"
    return 1
  fi >&2
  mv -f "$scratch/$name" "$bin/$name"
  echo "$version" >"$bin/.stamp-$name"
  echo "done in $(( $(date +%s) - start ))s ($(built_from "$bin/$name"))"
}

force=${1:-}
todo=()
for entry in "${components[@]}"; do
  read -r name module version <<<"$entry"
  if current "$name" "$version"; then
    echo "$me: $name $version is current in $bin"
  else
    todo+=("$entry")
  fi
done
[ ${#todo[@]} -eq 0 ] && exit 0

if ! command -v go >/dev/null 2>&1; then
  echo "$me: 'go' is not on PATH; install Go >= 1.26 to build the Flux controllers" >&2
  exit 1
fi
# As build-test-assets.sh: no toolchain download, static binaries.
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$bin"
for entry in "${todo[@]}"; do
  read -r name module version <<<"$entry"
  (build_one "$name" "$module" "$version")
done
