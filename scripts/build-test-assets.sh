#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, etcd and kubectl from the Go module proxy for the
# integration tests (kubectl: kustomize rendering and server-side dry-run of manifests/), into the per-machine cache that vworkspace.testing looks in.
# The same directory also gets the `helm` CLI (helm lint / helm template of charts/vworkspace),
# built with `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION`; it has a stamp of its own, so
# a cache built before helm was added gets helm without rebuilding the Kubernetes binaries.
#
# It first fetches the pinned third-party CRDs (scripts/fetch-third-party-crds.sh), which the
# same tests install.
#
#   scripts/build-test-assets.sh            build if the cache is empty or stale, else do nothing
#   scripts/build-test-assets.sh --force    rebuild
#   scripts/build-test-assets.sh --print-dir  print the directory the binaries go to
#
# The versions are fixed by the committed wrapper module in scripts/testenv (go.mod + go.sum);
# a stamp file holding the hash of go.sum and the build flags decides whether the cache is
# current. Nothing is downloaded except Go modules through the ordinary `go` client.
# Environment: HELM_VERSION (default v3.22.0), KUBE_VERSION (default from go.mod), VWORKSPACE_TESTENV_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/vworkspace/testenv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module="$here/testenv"
version=$(sed -n 's|^\s*k8s.io/kubernetes v\([0-9.]*\).*|\1|p' "$module/go.mod" | head -n1)
if [ -z "$version" ]; then
  echo "build-test-assets: cannot read the k8s.io/kubernetes version from $module/go.mod" >&2
  exit 1
fi
cache_root=${VWORKSPACE_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vworkspace/testenv}
bin="$cache_root/v$version/bin"

if [ "${1:-}" = "--print-dir" ]; then
  echo "$bin"
  exit 0
fi

bash "$here/fetch-third-party-crds.sh" ${1:+"$1"}
bash "$here/build-kwok.sh" ${1:+"$1"}
bash "$here/build-flux-controllers.sh" ${1:+"$1"}  # stamps of its own; before the exit below
bash "$here/build-backup-controllers.sh" ${1:+"$1"}  # weed, velero + aws plugin, argo

minor=${version#1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $p.gitVersion=v$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

# The four original binaries, named (not cmd/*) so that adding a binary with a stamp of its own,
# as kube-scheduler has, does not rebuild them.
kube_cmds=(etcd kube-apiserver kube-controller-manager kubectl)
stamp_value=$( (cat "$module/go.sum"; echo "$ldflags"; for c in "${kube_cmds[@]}"; do cat "$module/cmd/$c/main.go"; done) \
  | sha256sum | cut -d' ' -f1)
stamp="$bin/.stamp"
scheduler_stamp="$bin/.stamp-kube-scheduler"
scheduler_stamp_value=$( (cat "$module/go.sum"; echo "$ldflags"; cat "$module/cmd/kube-scheduler/main.go") \
  | sha256sum | cut -d' ' -f1)
helm_version=${HELM_VERSION:-v3.22.0}
helm_stamp="$bin/.stamp-helm"
kube_current=false
if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ] \
   && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/etcd" ] \
   && [ -x "$bin/kubectl" ]; then
  kube_current=true
fi
helm_current=false
if [ "${1:-}" != "--force" ] && [ -f "$helm_stamp" ] && [ "$(cat "$helm_stamp")" = "$helm_version" ] \
   && [ -x "$bin/helm" ]; then
  helm_current=true
fi
scheduler_current=false
if [ "${1:-}" != "--force" ] && [ -f "$scheduler_stamp" ] \
   && [ "$(cat "$scheduler_stamp")" = "$scheduler_stamp_value" ] && [ -x "$bin/kube-scheduler" ]; then
  scheduler_current=true
fi
if $kube_current && $helm_current && $scheduler_current; then
  echo "build-test-assets: Kubernetes v$version binaries and helm $helm_version are current in $bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-test-assets: 'go' is not on PATH; install Go >= 1.26 or point VWORKSPACE_TEST_ASSETS at a directory with kube-apiserver, etcd and kube-controller-manager" >&2
  exit 1
fi

# GOTOOLCHAIN=local: never let the go command download a toolchain of its own.
# CGO_ENABLED=0: static binaries, no C toolchain needed.
# -modcacherw: leave the module cache deletable.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw
# One line per component; the go command's chatter (`go: downloading ...`, dozens of lines on a
# cold module cache) goes to "$logs/build-<component>.log", whose end is printed if a build fails.
# shellcheck source=testenv/quiet-build.sh
source "$module/quiet-build.sh"
logs="$cache_root/logs"
mkdir -p "$bin"

# Each built into a scratch directory and moved in: tests may be running the binaries in $bin
# right now, and must never see half a binary. Steps chained with && (see quiet-build.sh).
build_kubernetes() {  # scratch
  cd "$module" && go mod download \
    && go build -trimpath -ldflags "$ldflags" -o "$1/" "${kube_cmds[@]/#/./cmd/}"
}
build_scheduler() {  # scratch
  cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$1/" ./cmd/kube-scheduler
}
build_helm() {  # scratch
  cd "$1" && GOBIN="$1" go install "helm.sh/helm/v3/cmd/helm@$helm_version"
}
scratch=""
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
# build <label> <log name> <function> <binaries...>: build, then move the binaries into $bin.
build() {
  local label=$1 name=$2 how=$3 binary
  shift 3
  build_start "$label"
  scratch=$(mktemp -d "$bin/.$name-build.XXXXXX")
  build_step "$logs/build-$name.log" "$how" "$scratch" || exit 1
  for binary in "$@"; do
    mv -f "$scratch/$binary" "$bin/$binary"
  done
  rm -rf "$scratch"
  scratch=""
}

if ! $kube_current; then
  build "Kubernetes v$version (${kube_cmds[*]}; tens of minutes cold on 2 cores)" \
    kubernetes build_kubernetes "${kube_cmds[@]}"
  echo "$stamp_value" > "$stamp"
  build_done "$("$bin/kube-apiserver" --version)"
fi
if ! $scheduler_current; then
  build "kube-scheduler v$version" kube-scheduler build_scheduler kube-scheduler
  echo "$scheduler_stamp_value" > "$scheduler_stamp"
  build_done "$("$bin/kube-scheduler" --version)"
fi
if ! $helm_current; then
  build "helm $helm_version (about 2 minutes on 2 cores)" helm build_helm helm
  echo "$helm_version" > "$helm_stamp"
  build_done "$("$bin/helm" version --short)"
fi
