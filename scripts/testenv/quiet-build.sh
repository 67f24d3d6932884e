# shellcheck shell=bash
# One line per component while building; the go command's chatter in a log file.
# Sourced by scripts/build-test-assets.sh (tests/unit/test_build_output.py sources it too).
#
#   build_start <label>          print "<prefix>: <label> ... " (no newline) and start the clock
#   build_step <log> <cmd...>    run <cmd> with its stdout and stderr appended to <log>; on failure
#                                finish the line with "FAILED after Ns", print where the log is
#                                and its last $QUIET_BUILD_TAIL lines (default 25) on stderr, and
#                                return the command's status
#   build_done [note]            finish the line: "done in Ns" (and " (<note>)")
#
# Why a log rather than the terminal: a cold build prints dozens of `go: downloading ...` lines
# per component, which bury the one line a newcomer needs (what is being built, how long it
# took); the log keeps them for when a build fails, and the failure shows the log's end, which is
# where the go command names what went wrong. <cmd> may be a shell function; it runs in a
# subshell (a `cd` stays inside). `set -e` does not apply inside it (it runs as an `if`
# condition), so chain a function's steps with &&.
# The prefix is $QUIET_BUILD_PREFIX (default build-test-assets).

_quiet_build_started=0

build_start() {  # label
  _quiet_build_started=$(date +%s)
  printf '%s: %s ... ' "${QUIET_BUILD_PREFIX:-build-test-assets}" "$1"
}

_quiet_build_elapsed() {
  echo "$(( $(date +%s) - _quiet_build_started ))s"
}

build_step() {  # log command...
  local log=$1 status=0
  shift
  mkdir -p "$(dirname "$log")"
  echo "=== $(date -u +%FT%TZ) $*" >>"$log"
  if ("$@") >>"$log" 2>&1; then
    return 0
  else
    status=$?
  fi
  {
    echo "FAILED after $(_quiet_build_elapsed); the go command's output is in $log, its end:"
    tail -n "${QUIET_BUILD_TAIL:-25}" "$log"
  } >&2
  return "$status"
}

build_done() {  # [note]
  echo "done in $(_quiet_build_elapsed)${1:+ ($1)}"
}
