#!/usr/bin/env bash
# Compares hl7-core with a memchr delimiter scan and the other Rust HL7 v2
# crates, in one build and one run (the `compare` bench of benches/), and
# prints a markdown table of MB/s for parse, touch and walk. The output ends
# with three lines:
#   ratio parse/memchr-scan: X
#   ratio parse/fastest-crate-parse: X
#   ratio walk/fastest-crate-walk: X
#
# usage: scripts/bench-compare.sh [--runs N] [--warmup N] [--only IMPL,...] [--wall]
#   (options go to the harness; see benches/benches/compare.rs)
# env:   CARGO_TARGET_DIR   where to build (default: target/)
#
# The corpus is 10,000 messages from scripts/gen_corpus.py (deterministic),
# written to <target dir>/bench-corpus/c10k.hl7 when missing; the criterion
# benches use it too once it is there. Takes a few minutes on 2 cores, most
# of it the LTO build and the slowest peers.
set -euo pipefail
cd "$(dirname "$0")/.."

# Absolute, because cargo runs bench executables in the package's directory.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$PWD/$CARGO_TARGET_DIR ;; esac
export CARGO_TARGET_DIR
mkdir -p "$CARGO_TARGET_DIR/bench-corpus"
corpus=$(cd "$CARGO_TARGET_DIR/bench-corpus" && pwd -P)/c10k.hl7
if [ ! -s "$corpus" ]; then
  python3 scripts/gen_corpus.py 10000 "$corpus.tmp" >&2
  mv "$corpus.tmp" "$corpus"
fi

echo "# bench-compare"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- host: $(uname -sm); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs || true); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
echo "- rustc: $(rustc --version)"
echo "- build: cargo bench profile (lto = true, codegen-units = 1); peers at the versions in Cargo.lock"

cargo bench --quiet -p labbridge-benches --bench compare -- --corpus "$corpus" "$@"
