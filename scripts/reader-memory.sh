#!/usr/bin/env bash
# Peak memory of the streaming reader against file size: runs
# `labbridge hl7 check` over generated batch files of growing size and
# prints one table of maximum resident set size. The reader holds at most
# one message (plus a 256 KiB read buffer), so the figure must stay flat.
#
#   scripts/reader-memory.sh            # 10 MB, 100 MB, 400 MB
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p labbridge
LB=target/release/labbridge
T=${CARGO_TARGET_DIR:-target}/reader-memory
mkdir -p "$T"
[ -s "$T/c1k.hl7" ] || python3 scripts/gen_corpus.py 1000 "$T/c1k.hl7" >/dev/null 2>&1
# gen_corpus separates messages with LF and segments with CR: a valid file of concatenated messages.
printf '| file | size | messages | max RSS |\n| --- | ---: | ---: | ---: |\n'
for mb in 10 100 400; do
  f="$T/batch-${mb}mb.hl7"
  if [ ! -s "$f" ]; then
    : > "$f"
    while [ "$(stat -c %s "$f")" -lt $((mb * 1000 * 1000)) ]; do cat "$T/c1k.hl7" >> "$f"; printf '\n' >> "$f"; done
  fi
  out=$( { /usr/bin/time -f '%M' "$LB" hl7 check "$f" >/dev/null; } 2>&1 )
  rss_kb=$(printf '%s\n' "$out" | tail -n 1)
  msgs=$(printf '%s\n' "$out" | grep -o '^[0-9]* message(s)' | cut -d' ' -f1)
  printf '| %s | %s MB | %s | %s MiB |\n' "$(basename "$f")" "$(( $(stat -c %s "$f") / 1000000 ))" "$msgs" "$(( rss_kb / 1024 ))"
done
