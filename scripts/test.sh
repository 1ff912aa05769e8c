#!/usr/bin/env bash
# Runs every check and test of the project; what .ci/run calls. Ends with the
# test runner's summary. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

step() { printf '\n==> %s\n' "$*" >&2; }
export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=0

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "cargo doc (RUSTDOCFLAGS=-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "conformance: labbridge hl7 get on testdata/conformance"
cargo build --release --quiet -p labbridge
T=${CARGO_TARGET_DIR:-target}
python3 scripts/conformance.py --cases testdata/conformance -- "$T/release/labbridge" hl7 get > "$T/conformance.log" \
  || { cat "$T/conformance.log"; exit 1; }
tail -n 1 "$T/conformance.log"

step "doctests"
cargo test --workspace --doc --quiet

step "fuzz smoke (scripts/fuzz-smoke.sh)"
scripts/fuzz-smoke.sh

step "tests (cargo nextest)"
cargo nextest run --workspace --all-features --no-fail-fast --no-tests=pass --status-level=fail --final-status-level=fail
