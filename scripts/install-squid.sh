#!/usr/bin/env bash
# Install Debian's squid for the egress tests (tests/integration/test_squid.py and
# test_egress_blackbox.py run the operator behind a real authenticating forward proxy; see
# docs/development.md, "The egress tests: a real squid"). Called by scripts/test.sh.
#
# Idempotent and quiet when squid is already there. Uses apt-get (as root, or through sudo when
# available); refreshes the package lists only if the first install attempt fails without them.
# Needs nothing but the Debian mirror. The package's postinst may start a system squid where an
# init system runs one; the tests start their own, on a free port, and never need it, so a
# squid the install started is stopped again (through systemd, else by its pid file; never by
# name). VWORKSPACE_SQUID, when set to an executable, is the squid the tests use: nothing to do.
set -euo pipefail

# Where Debian puts squid (often not on a user's PATH); a variable only so that
# tests/unit/test_install_squid.py can run this script against fake apt-get and sudo.
sbin_squid=${INSTALL_SQUID_SBIN:-/usr/sbin/squid}
if [ -n "${VWORKSPACE_SQUID:-}" ] && [ -x "$VWORKSPACE_SQUID" ]; then
  exit 0
fi
if command -v squid >/dev/null 2>&1 || [ -x "$sbin_squid" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "install-squid.sh: squid is missing and this user cannot install packages (not root, no" \
    "sudo); install Debian's 'squid' package (apt-get install squid), or set VWORKSPACE_SQUID" \
    "to a squid binary" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-squid.sh: squid is missing and there is no apt-get; install squid 5 or later" \
    "with this system's package manager (the tests use it and its basic_ncsa_auth helper)," \
    "or set VWORKSPACE_SQUID to a squid binary" >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
install() {
  # env after sudo: sudo resets the environment, DEBIAN_FRONTEND would not reach apt-get.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends squid >"$log" 2>&1
}

start=$(date +%s)
echo "install-squid.sh: installing Debian's squid (the egress tests' forward proxy)"
if ! install; then
  # Stale or missing package lists (a fresh container): refresh them once and try again.
  if ! "${as_root[@]}" apt-get update -qq >>"$log" 2>&1 || ! install; then
    cat "$log" >&2
    echo "install-squid.sh: installing squid with apt-get failed (output above)" >&2
    exit 1
  fi
fi

# Debian's postinst starts the service where an init system runs (invoke-rc.d); without one
# (a container) nothing starts. Either way the tests need no system squid listening on 3128:
# stop one that the install started, through systemd when it runs, else by its pid file.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  "${as_root[@]}" systemctl stop squid >/dev/null 2>&1 || true
elif [ -s /run/squid.pid ]; then
  pid=$(cat /run/squid.pid)
  if "${as_root[@]}" kill "$pid" 2>/dev/null; then
    echo "install-squid.sh: stopped the system squid the package started (pid $pid)"
  fi
fi
echo "install-squid.sh: squid $("$sbin_squid" -v | sed -n 's/.*Version //p' | head -1)" \
  "installed in $(( $(date +%s) - start ))s"
