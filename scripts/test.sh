#!/usr/bin/env bash
# The second command: installs what is missing, builds, and runs every test.
#   scripts/test.sh              Release build in build/, whole suite, then each
#                                fuzz target for CG_FUZZ_SECONDS (10) s (fuzz.sh)
#   scripts/test.sh --sanitize   ASan+UBSan build in build-asan/, whole suite
#   scripts/test.sh --tsan       ThreadSanitizer build in build-tsan/, whole suite
#   scripts/test.sh --helgrind   build/, the threaded scenario files under helgrind
#   scripts/test.sh --valgrind   build/, unit tests under valgrind memcheck,
#                                scenario tests with the gateway under valgrind
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-plain}
case "$mode" in
  plain)
    scripts/setup.sh
    scripts/build.sh build
    (cd build && ctest --output-on-failure -j 2 --timeout 300)
    scripts/fuzz.sh "${CG_FUZZ_SECONDS:-10}" ;;
  --sanitize)
    scripts/setup.sh
    scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCG_SANITIZE=ON
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export CG_IT_SLOW=2
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    cd build-asan && ctest --output-on-failure -j 2 --timeout 300 ;;
  --tsan)
    scripts/setup.sh
    scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCG_TSAN=ON
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
    export CG_IT_SLOW=3
    cd build-tsan && ctest --output-on-failure -j 2 --timeout 300 ;;
  --valgrind)
    CG_SETUP_EXTRA=valgrind scripts/setup.sh
    scripts/build.sh build
    export CG_WRAP="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99"
    # the unit tests under memcheck themselves (ctest runs them bare), then
    # the suite with every gateway the scenario tests start under it
    for t in build/tests/test_*; do
      [ -x "$t" ] || continue
      $CG_WRAP "$t" > "build/Testing/valgrind-$(basename "$t").log" 2>&1 ||
        { cat "build/Testing/valgrind-$(basename "$t").log"; echo "valgrind: $t failed" >&2; exit 1; }
    done
    export CG_IT_SLOW=4
    cd build && ctest --output-on-failure -j 2 --timeout 900 ;;
  --helgrind)
    # the threaded paths (front loops, the fetch layer, reloads) under
    # helgrind; the library races it cannot see through are named in
    # tests/helgrind.supp. Slow: a few scenario files, not the suite.
    CG_SETUP_EXTRA=valgrind scripts/setup.sh
    scripts/build.sh build
    export CG_WRAP="valgrind --tool=helgrind --quiet --error-exitcode=99 --suppressions=$PWD/tests/helgrind.supp"
    export CG_IT_WATCHDOG=900
    cd build && ctest --output-on-failure -j 1 --timeout 1000 \
      -R '^it_(cache|compress|observability|reload|protection|derive)$' ;;
  *) echo "usage: scripts/test.sh [--sanitize|--tsan|--valgrind|--helgrind]" >&2; exit 2 ;;
esac
