#!/usr/bin/env bash
# Writes the fuzz suite's seed corpora into tests/fuzz/corpus/ (checked in):
# the text seeds by make_corpus.py, the binary ones (records, data.mdb
# files) by cg-fuzz-seeds from a normal build. Usage: tests/fuzz/make_corpus.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
cmake --build "$build" --target cg-fuzz-seeds >&2
python3 tests/fuzz/make_corpus.py tests/fuzz/corpus
"$build/tests/fuzz/cg-fuzz-seeds" tests/fuzz/corpus
du -sh tests/fuzz/corpus >&2
