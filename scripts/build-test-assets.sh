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
bash "$here/build-flux-controllers.sh" ${1:+"$1"}  # stamps of its own; before the exit below

minor=${version#1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $p.gitVersion=v$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

stamp_value=$( (cat "$module/go.sum"; echo "$ldflags"; cat "$module"/cmd/*/main.go) | sha256sum | cut -d' ' -f1)
stamp="$bin/.stamp"
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
if $kube_current && $helm_current; then
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
mkdir -p "$bin"
if ! $kube_current; then
  start=$(date +%s)
  echo "build-test-assets: building Kubernetes v$version (kube-apiserver, kube-controller-manager, etcd, kubectl) into $bin"
  echo "build-test-assets: a cold build takes tens of minutes on 2 cores; later builds reuse Go's caches"
  (cd "$module" && go mod download && go build -trimpath -ldflags "$ldflags" -o "$bin/" ./cmd/...)
  echo "$stamp_value" > "$stamp"
  echo "build-test-assets: done in $(( $(date +%s) - start ))s"
  "$bin/kube-apiserver" --version
fi
if ! $helm_current; then
  start=$(date +%s)
  echo "build-test-assets: building helm $helm_version into $bin (about 2 minutes on 2 cores)"
  # Built into a scratch directory and moved in, so a concurrent reader never sees half a binary.
  scratch=$(mktemp -d "$bin/.helm-build.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  (cd "$scratch" && GOBIN="$scratch" go install "helm.sh/helm/v3/cmd/helm@$helm_version")
  mv -f "$scratch/helm" "$bin/helm"
  echo "$helm_version" > "$helm_stamp"
  echo "build-test-assets: helm done in $(( $(date +%s) - start ))s"
  "$bin/helm" version --short
fi
