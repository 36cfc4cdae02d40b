#!/usr/bin/env bash
# The fuzz suite (tests/fuzz/): builds the libFuzzer targets with clang,
# ASan and UBSan in build-fuzz/, and runs each for SECONDS (default 30).
#   scripts/fuzz.sh              30 s per target
#   scripts/fuzz.sh 3600         an hour per target
#   scripts/fuzz.sh 60 json      only the named targets
# New inputs the fuzzer finds go to build-fuzz/corpus/TARGET (the checked-in
# seeds in tests/fuzz/corpus/TARGET are read, never written); a crash leaves
# its input in build-fuzz/artifacts/. Exits 1 if any target failed, after
# running them all, with one line per target: runs, seconds, result.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(query json record config retry_after import_line mdb_open)
case "$seconds" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

# clang and its libFuzzer runtime, through setup.sh's list of extras
CG_SETUP_EXTRA="clang libclang-rt-dev ${CG_SETUP_EXTRA:-}" scripts/setup.sh
CC=clang scripts/build.sh build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCG_FUZZ=ON \
  -DCG_WERROR=OFF >/dev/null 2>&1 || CC=clang scripts/build.sh build-fuzz \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCG_FUZZ=ON -DCG_WERROR=OFF

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p build-fuzz/artifacts
failed=0
for t in "${targets[@]}"; do
  bin=build-fuzz/tests/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "fuzz: no target $t" >&2; failed=1; continue; }
  mkdir -p "build-fuzz/corpus/$t"
  extra=()
  case "$t" in
    mdb_open) extra=(-max_len=131072) ;;   # data.mdb files of a few pages
    import_line|json) extra=(-max_len=16384) ;;
  esac
  log=build-fuzz/fuzz_$t.log
  # -timeout: one input taking longer is a failure (a hang); rss bounds memory
  if "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/artifacts/${t}-" "${extra[@]}" \
       "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (log: $log; input: build-fuzz/artifacts/${t}-*)"
    failed=1
    tail -40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  echo "fuzz: $t: ${runs:-?} runs in ${seconds} s (${secs:-?}/s): $result"
done
exit $failed
