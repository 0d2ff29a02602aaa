#!/usr/bin/env bash
# The per-ISA kernel objects (core/kernels/isa_target.h) must not run code at program start: a
# static initialiser there is compiled for that path's instruction set and would crash every CPU
# that lacks it (SIGILL before main) - invisible on a machine that has it. Fails on any
# _GLOBAL__sub_I_ (dynamic initialisation) symbol in the objects given.
set -euo pipefail
bad=0
for o in "$@"; do
  if nm "$o" | grep -q '_GLOBAL__sub_I'; then
    echo "check-isa-objects: $o has a static initialiser (a global that needs dynamic initialisation)" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] && echo "check-isa-objects: $# objects, no static initialisers"
exit "$bad"
