#!/usr/bin/env bash
# Runs the fuzz targets for a while each, on a copy of their seed corpus (so a run never dirties
# the tree), and fails if any of them finds a crash, a hang or a broken invariant.
#
#   bash fuzz/run.sh                      # every target, 60 s each
#   FUZZ_SECONDS=600 bash fuzz/run.sh config
#   FUZZ_SECONDS=600 bash fuzz/run.sh mqtt_connect
#
# FUZZ_SECONDS  time per target (default 60)
# FUZZ_TIMEOUT  seconds one input may take before it counts as a hang (default 10)
#
# Prints, per target, the executions, the coverage (libFuzzer's `cov` and `ft`) and the size the
# corpus grew to. A crashing input is kept in fuzz/artifacts/<target>/ (ignored by git); see
# fuzz/README.md to reproduce and minimize it.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seconds=${FUZZ_SECONDS:-60}
timeout=${FUZZ_TIMEOUT:-10}
all_targets=(proxy_protocol config admin_route mqtt_connect tls_handshake tls_records)
if (($# > 0)); then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz needs nightly features (-Z sanitizer flags): a nightly toolchain if there is one,
# else the stable compiler with nightly features unlocked.
toolchain=()
if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

# Inputs longer than what the parser buffers must be tried too (its "need more bytes" answer is
# only allowed below 4096 bytes); the other targets take libFuzzer's default (the largest seed,
# at least 4096).
extra_args() {
    case $1 in
        proxy_protocol) echo "-max_len=8192" ;;
        *) ;;
    esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/brokerside-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

cd "$fuzz_dir"
for target in "${targets[@]}"; do
    if [[ ! -d "corpus/$target" ]]; then
        echo "unknown target \`$target\`: expected one of ${all_targets[*]}" >&2
        exit 2
    fi
done
# One build serves every target, so that all of them test the same code even if the tree changes
# while they run; -a keeps debug assertions (and so overflow checks) on.
cargo "${toolchain[@]}" fuzz build -a >/dev/null 2>"$work/build.log" || {
    cat "$work/build.log" >&2
    echo "fuzz build failed" >&2
    exit 1
}
host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
bin_dir="${CARGO_TARGET_DIR:-$fuzz_dir/target}/$host/release"
# What `cargo fuzz run` sets for an AddressSanitizer build.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

failed=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    cp -R "corpus/$target/." "$corpus/"
    log="$work/$target.log"
    status=0
    mkdir -p "artifacts/$target"
    # shellcheck disable=SC2046 # extra_args prints zero or more separate flags
    "$bin_dir/$target" "$corpus" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 \
        -dict="dict/$target.dict" $(extra_args "$target") >"$log" 2>&1 || status=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    files=$(find "$corpus" -type f | wc -l)
    if ((status == 0)); then
        echo "$target: ok in ${seconds}s: ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?}, corpus $files files"
        echo "  $done_line"
    else
        failed+=("$target")
        echo "$target: FAILED (exit $status) after ${execs:-?} execs; the end of its log:"
        # The panic message, libFuzzer's verdict and where the input was written.
        tail -n 40 "$log" | sed 's/^/  | /'
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
