#!/usr/bin/env bash
# Builds every fuzz target once and runs each for SECONDS with libFuzzer, on a copy of its
# committed seed corpus (what a run finds does not dirty the repository). Prints each target's
# executions per second and coverage; exits non-zero if any target crashed, hung, or went past
# the memory limit, leaving the input that did it in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# FUZZ_SANITIZER picks the sanitizer (address, the default; none for a faster build and run), and
# FUZZ_PROFILE the build (release, the default: optimized, with debug assertions; dev, unoptimized
# as fuzz/Cargo.toml says, for a quicker cold build in CI). Both check integer overflow.
# Installs cargo-fuzz when it is missing. cargo-fuzz needs nightly flags, which the stable
# toolchain accepts with RUSTC_BOOTSTRAP=1.
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
# The targets build into fuzz/target, apart from the workspace's builds (their flags differ).
unset CARGO_TARGET_DIR
sanitizer=${FUZZ_SANITIZER:-address}
case ${FUZZ_PROFILE:-release} in
    # cargo-fuzz's default build: optimized, with debug assertions (`--release` would drop them).
    release) build=(--fuzz-dir fuzz --sanitizer "$sanitizer") out=release ;;
    dev) build=(--fuzz-dir fuzz --sanitizer "$sanitizer" --dev) out=debug ;;
    *)
        echo "FUZZ_PROFILE is release or dev, not ${FUZZ_PROFILE}" >&2
        exit 2
        ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "==> building ${#targets[@]} fuzz targets (sanitizer: $sanitizer, profile: ${FUZZ_PROFILE:-release})"
start=$(date +%s)
# cargo fuzz build takes one target or all of them.
if [[ $# -gt 0 ]]; then
    for t in "${targets[@]}"; do
        cargo fuzz build "${build[@]}" "$t"
    done
else
    cargo fuzz build "${build[@]}"
fi
echo "    built in $(($(date +%s) - start)) s"

triple=$(rustc -vV | sed -n 's/^host: //p')
bin="fuzz/target/$triple/$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The targets' scratch files (tempfile) go under $work too, and are removed with it.
export TMPDIR="$work"

failed=()
printf '%-16s %10s %8s %8s %8s\n' target "exec/s" runs cov ft
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
    if [[ -d "fuzz/corpus/$t" ]]; then
        cp -r "fuzz/corpus/$t/." "$work/corpus/$t/"
    fi
    log="$work/$t.log"
    status=0
    "$bin/$t" "$work/corpus/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    runs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]+([0-9]+)/\1/p' "$log")
    rate=$(sed -nE 's/^stat::average_exec_per_sec:[[:space:]]+([0-9]+)/\1/p' "$log")
    printf '%-16s %10s %8s %8s %8s\n' "$t" "${rate:-?}" "${runs:-?}" "${cov:-?}" "${ft:-?}"
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        echo "!!! $t failed (exit $status); the input is in fuzz/artifacts/$t/:" >&2
        grep -E 'ERROR|panicked|SUMMARY|Test unit written|timeout|out-of-memory' "$log" | head -n 20 >&2 || true
        tail -n 30 "$log" >&2
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
echo "==> no crash in ${#targets[@]} targets, ${seconds} s each"
