#!/usr/bin/env bash
# Fetch the upstream Flux, Velero and Argo Workflows CRDs that the tests and the demo install,
# pinned and verified, into the per-machine cache that vworkspace.testing.crds looks in.
#
#   scripts/fetch-third-party-crds.sh              fetch if the cache is missing or stale, else nothing
#   scripts/fetch-third-party-crds.sh --force      fetch again
#   scripts/fetch-third-party-crds.sh --print-dir  print the directory the CRDs go to
#
# The modules, versions, files and their sha256 are in scripts/testenv/third-party-crds.txt.
# Modules come from the Go module proxy through the ordinary `go mod download -json`, which also
# checks them against the Go checksum database; the sha256 of every copied file is then checked
# against the list, and a mismatch stops the script naming the file (the cache is left as it
# was). A stamp (the hash of the list) plus a re-hash of the cached files make a warm run a
# no-op that downloads nothing. Called by scripts/build-test-assets.sh.
#
# Environment: VWORKSPACE_THIRD_PARTY_CRDS (a folder of CRDs you chose: nothing is fetched),
# VWORKSPACE_THIRD_PARTY_CRDS_LIST (another list; used by the tests of this script),
# VWORKSPACE_TESTENV_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/vworkspace/testenv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
list=${VWORKSPACE_THIRD_PARTY_CRDS_LIST:-$here/testenv/third-party-crds.txt}
cache_root=${VWORKSPACE_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vworkspace/testenv}
dest="$cache_root/crds"
me=fetch-third-party-crds

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dest"
  exit 0
fi
if [ -n "${VWORKSPACE_THIRD_PARTY_CRDS:-}" ]; then
  echo "$me: using VWORKSPACE_THIRD_PARTY_CRDS=$VWORKSPACE_THIRD_PARTY_CRDS; nothing fetched"
  exit 0
fi
if [ ! -f "$list" ]; then
  echo "$me: the list $list does not exist" >&2
  exit 1
fi

# One entry per line: module version path sha256 (comments and blank lines skipped).
entries=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list")
if [ -z "$entries" ]; then
  echo "$me: $list names no file" >&2
  exit 1
fi

# The sha256sum check file for a tree rooted at $1: "<sha256>  <module>@<version>/<file name>".
checklist() {
  while read -r module version path sum; do
    if [ -z "$sum" ]; then
      echo "$me: $list: a line needs four fields (module version path sha256): $module $version $path" >&2
      return 1
    fi
    printf '%s  %s@%s/%s\n' "$sum" "$module" "$version" "$(basename "$path")"
  done <<<"$entries"
}
expected=$(checklist)
stamp_value=$(printf '%s\n' "$expected" | sha256sum | cut -d' ' -f1)

if [ "${1:-}" != "--force" ] && [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$stamp_value" ] \
   && (cd "$dest" && printf '%s\n' "$expected" | sha256sum --check --quiet --status); then
  echo "$me: $(wc -l <<<"$expected") CRDs are current in $dest"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "$me: 'go' is not on PATH; install Go >= 1.26, or set VWORKSPACE_THIRD_PARTY_CRDS to a folder holding the Flux, Velero and Argo Workflows CRDs" >&2
  exit 1
fi

# GOTOOLCHAIN=local: never download a toolchain. -modcacherw: leave the module cache deletable.
# Run outside any module so no go.mod is read or changed.
export GOTOOLCHAIN=local GOFLAGS=-modcacherw
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
staging="$work/crds"
mkdir -p "$staging"
echo "$me: fetching $(wc -l <<<"$expected") CRDs from the Go module proxy into $dest"
declare -A module_dirs=()
while read -r module version path sum; do
  key="$module@$version"
  if [ -z "${module_dirs[$key]:-}" ]; then
    json=$(cd "$work" && go mod download -json "$key") || {
      echo "$me: go mod download $key failed" >&2
      exit 1
    }
    module_dirs[$key]=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
    if [ -z "${module_dirs[$key]}" ] || [ ! -d "${module_dirs[$key]}" ]; then
      echo "$me: go mod download $key gave no module directory" >&2
      exit 1
    fi
  fi
  source_file="${module_dirs[$key]}/$path"
  if [ ! -f "$source_file" ]; then
    echo "$me: $key has no file $path" >&2
    exit 1
  fi
  mkdir -p "$staging/$key"
  target="$staging/$key/$(basename "$path")"
  cp "$source_file" "$target"
  chmod u+w "$target"
  got=$(sha256sum "$target" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "$me: $key/$path: sha256 is $got, but $list expects $sum" >&2
    exit 1
  fi
done <<<"$entries"

echo "$stamp_value" >"$staging/.stamp"
mkdir -p "$cache_root"
rm -rf "$dest"
mv "$staging" "$dest"
echo "$me: done; $(wc -l <<<"$expected") CRDs in $dest"
