#!/usr/bin/env bash
# The first command: installs what is missing, builds, and runs the gateway in
# the foreground with the arguments given (see build/contacts-gateway --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
exec build/contacts-gateway "$@"
