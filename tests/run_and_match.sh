#!/usr/bin/env bash
# run_and_match.sh REGEX COMMAND...: runs COMMAND, prints its output, and passes only when it exits 0
# AND its output matches the extended REGEX. (CTest's PASS_REGULAR_EXPRESSION alone ignores the exit
# code: a command that printed the table and then failed would pass.)
set -uo pipefail
regex=$1
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ]; then
  echo "run_and_match.sh: the command exited $rc (expected 0)" >&2
  exit 1
fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then
  echo "run_and_match.sh: the output does not match /$regex/" >&2
  exit 1
fi
