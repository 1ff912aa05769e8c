#!/usr/bin/env bash
# Fuzz smoke run: builds fuzz/ and runs every target for SECONDS each
# (default 10), one fuzzer process at a time, from seeds made from testdata/.
# Prints one line per target; exits non-zero on a crash, leaving the input in
# fuzz/artifacts/<target>/ and the fuzzer's output in fuzz/target/smoke-<target>.log.
#
#   scripts/fuzz-smoke.sh        # ~10 s per target
#   scripts/fuzz-smoke.sh 60     # a longer hunt
#
# Reproduce a crash: (cd fuzz && cargo +nightly fuzz run -a TARGET artifacts/TARGET/crash-...)
# Hunt longer with the growing corpus: (cd fuzz && ./seed.sh && cargo +nightly fuzz run -a TARGET -- -dict=hl7.dict)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
targets=(parse reader escape path builder_roundtrip scan map)

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo fuzz --version 2>/dev/null | grep -q ' 0\.13\.2$'; then
  log "installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked >&2
fi
# cargo-fuzz needs unstable sanitizer flags: nightly if there is one, else
# stable with RUSTC_BOOTSTRAP (its rust-std ships the ASan runtime).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  fuzz=(env RUSTC_BOOTSTRAP=1 cargo +stable fuzz)
fi

cd fuzz
# A fresh corpus of seeds only, so a run takes the same time however much
# fuzz/corpus has grown from longer runs.
corpus=target/smoke-corpus
rm -rf "$corpus"
./seed.sh "$corpus" 2>/dev/null
start=$SECONDS
# -a: debug assertions and overflow checks on, as in the test profile.
"${fuzz[@]}" build -a >&2
log "built in $((SECONDS - start)) s"

failed=0
for t in "${targets[@]}"; do
  # -timeout: one input running for minutes is a bug too (a hang, or worse than linear).
  args=(-max_total_time="$secs" -timeout=120 -print_final_stats=1)
  case "$t" in parse | reader | builder_roundtrip | scan | map) args+=(-dict=hl7.dict) ;; esac
  out="target/smoke-$t.log"
  t0=$SECONDS
  # No -jobs/-workers: libFuzzer then runs in this one process.
  if "${fuzz[@]}" run -a "$t" "$corpus/$t" -- "${args[@]}" >"$out" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n 1)
    printf 'fuzz %-18s ok     %8s runs in %3s s\n' "$t" "${runs:-?}" "$((SECONDS - t0))"
  else
    failed=1
    crash=$(sed -n 's/.*Test unit written to //p' "$out" | tail -n 1)
    printf 'fuzz %-18s CRASH  %s (log: fuzz/%s)\n' "$t" "${crash:-see log}" "$out"
    grep -m 1 -A 2 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$out" >&2 || true
  fi
done
log "all targets in $((SECONDS - start)) s"
exit "$failed"
