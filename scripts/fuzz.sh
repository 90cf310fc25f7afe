#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and reports executions and
# findings. Not part of CI (it builds libFuzzer and takes minutes per target).
#
#   bash scripts/fuzz.sh            # 600 s per target (the release check)
#   bash scripts/fuzz.sh 30         # a quick look
#   bash scripts/fuzz.sh 60 route   # one target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, installed here if missing). The stable
# toolchain runs it with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly -Z flags). The
# committed seeds in fuzz/corpus/TARGET are read only; what libFuzzer learns goes to
# target/fuzz-corpus/TARGET, crashes to fuzz/artifacts/TARGET. No sanitizer: rpcgate
# forbids `unsafe`, and debug assertions (overflow checks) stay on.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config grpc_timeout route grpc_framing)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

status=0
for target in "${targets[@]}"; do
    work="target/fuzz-corpus/$target"
    mkdir -p "$work"
    log="target/fuzz-$target.log"
    echo "== $target: ${seconds}s"
    if cargo fuzz run --sanitizer none --release "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 >"$log" 2>&1; then
        result="no finding"
    else
        result="FINDING (see $log and fuzz/artifacts/$target)"
        status=1
    fi
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
    corpus=$(find "$work" -type f | wc -l)
    echo "   $result; ${execs:-?} executions (${rate:-?}/s), corpus $corpus inputs"
done
exit $status
