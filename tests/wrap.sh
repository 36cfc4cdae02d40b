#!/bin/sh
# Runs a test binary, under $CG_WRAP (e.g. valgrind) when it is set.
exec ${CG_WRAP:-} "$@"
