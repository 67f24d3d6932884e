#!/usr/bin/env bash
# Build the storage and backup side of the real test tier from their Go modules into the
# test-asset cache (next to kube-apiserver): SeaweedFS's `weed` (the S3 endpoint), the Velero
# server with velero-plugin-for-aws, and Argo Workflows' workflow-controller. For the `real`
# tier, the pytest fixtures `seaweed_s3`, `velero` and `argo`, and `testenv start --with
# s3,velero,argo`. Called by scripts/build-test-assets.sh.
#
#   scripts/build-backup-controllers.sh          build what is missing or stale, else do nothing
#   scripts/build-backup-controllers.sh --force  rebuild all four
#
# Pinned versions, and why these:
# - seaweedfs v0.0.0-20261109003541-7506e5f91cd6: the module publishes no semver tags the proxy
#   serves; this pseudo-version is the one it serves. Its go.mod has `replace` lines (a
#   maintained fork of go-bip39), which `go install` refuses: built in a copy of the module.
# - velero v1.18.1: go.mod has a `replace` (its kopia fork), so built in a copy of the module.
#   Its go.mod requires k8s.io/cli-runtime and k8s.io/kube-aggregator v0.33.11, which the Go
#   module proxy refuses ("not available"); the copy's go.mod is pinned to the nearest served
#   patch versions (cli-runtime v0.33.10, kube-aggregator v0.33.5: same minor release as the
#   rest of its k8s.io modules, so the same APIs).
# - velero-plugin-for-aws v1.14.3: the release made for Velero 1.18; plain `go install` of its
#   main package (the velero-plugin-for-aws subfolder).
# - argo-workflows v3.6.10: `go install` fails here (the proxy refuses the module's version list,
#   which `go install` reads for deprecation notices); built in a copy of the module.
#
# Every build: `go mod download -json` the module, copy its folder to a scratch directory, make
# it writable, apply the pins above, `GOFLAGS=-mod=mod go build` there. A binary is moved into the
# cache only when complete (others may be running it). One line per component on the terminal;
# the go command's own output goes to <cache>/logs/build-<name>.log, whose tail is printed if a
# build fails. A stamp per component (.stamp-<name>, holding what it was built from) makes a warm
# run a no-op.
#
# Environment: VWORKSPACE_TESTENV_CACHE (see build-test-assets.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
VELERO_VERSION=v1.18.1
VELERO_AWS_PLUGIN_VERSION=v1.14.3
ARGO_VERSION=v3.6.10
VELERO_PINS=(k8s.io/cli-runtime@v0.33.10 k8s.io/kube-aggregator@v0.33.5)

# name | module | version | package to build | what the stamp holds beyond the version
components=(
  "weed|github.com/seaweedfs/seaweedfs|$SEAWEEDFS_VERSION|./weed|"
  "velero|github.com/vmware-tanzu/velero|$VELERO_VERSION|./cmd/velero|${VELERO_PINS[*]}"
  "velero-plugin-for-aws|github.com/vmware-tanzu/velero-plugin-for-aws|$VELERO_AWS_PLUGIN_VERSION|./velero-plugin-for-aws|"
  "workflow-controller|github.com/argoproj/argo-workflows/v3|$ARGO_VERSION|./cmd/workflow-controller|"
)

bin=$(bash "$here/build-test-assets.sh" --print-dir)
logs="$(dirname "$(dirname "$bin")")/logs"
# shellcheck source=testenv/quiet-build.sh
source "$here/testenv/quiet-build.sh"

stamp_of() {  # version extra
  echo "$1${2:+ $2}"
}

current() {  # name stamp
  [ "${force:-}" != "--force" ] && [ -x "$bin/$1" ] && [ -f "$bin/.stamp-$1" ] \
    && [ "$(cat "$bin/.stamp-$1")" = "$2" ]
}

# Every step chained with && (quiet-build.sh: `set -e` does not apply inside build_step).
compile() {  # scratch name module version package
  local scratch=$1 name=$2 module=$3 version=$4 package=$5 json dir pin
  json=$(cd "$scratch" && go mod download -json "$module@$version") &&
    dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json") &&
    [ -d "$dir" ] &&
    cp -r "$dir" "$scratch/src" &&
    chmod -R u+w "$scratch/src" &&
    cd "$scratch/src" || return 1
  if [ "$name" = velero ]; then
    for pin in "${VELERO_PINS[@]}"; do
      go mod edit -replace="${pin%@*}=$pin" || return 1
    done
  fi
  GOFLAGS="-mod=mod -modcacherw -buildvcs=false" \
    go build -trimpath -ldflags "-s -w" -o "$scratch/$name" "$package"
}

build_one() {  # name module version package stamp
  local name=$1 module=$2 version=$3 package=$4 stamp=$5 scratch
  scratch=$(mktemp -d "$bin/.$name-build.XXXXXX")
  # Runs in a subshell (see the caller), so this trap removes the scratch folder on any exit.
  # shellcheck disable=SC2064
  trap "chmod -R u+w '$scratch' 2>/dev/null; rm -rf '$scratch'" EXIT
  build_start "$name $version"
  build_step "$logs/build-$name.log" compile "$scratch" "$name" "$module" "$version" "$package" \
    || return 1
  mv -f "$scratch/$name" "$bin/$name"
  echo "$stamp" >"$bin/.stamp-$name"
  build_done
}

force=${1:-}
todo=()
for entry in "${components[@]}"; do
  IFS='|' read -r name module version package extra <<<"$entry"
  if current "$name" "$(stamp_of "$version" "$extra")"; then
    echo "build-test-assets: $name $version is current in $bin"
  else
    todo+=("$entry")
  fi
done
[ ${#todo[@]} -eq 0 ] && exit 0

if ! command -v go >/dev/null 2>&1; then
  echo "build-test-assets: 'go' is not on PATH; install Go >= 1.26 to build weed, velero and argo" >&2
  exit 1
fi
# As build-test-assets.sh: no toolchain download, static binaries.
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$bin"
for entry in "${todo[@]}"; do
  IFS='|' read -r name module version package extra <<<"$entry"
  (build_one "$name" "$module" "$version" "$package" "$(stamp_of "$version" "$extra")")
done
