#!/usr/bin/env bash
# Seeds CORPUS/<target>/ (default fuzz/corpus) from testdata/. The corpus is
# gitignored: seeds are made on the fly, and whatever the fuzzer adds stays
# local. Idempotent.
# Usage: fuzz/seed.sh [CORPUS]
set -euo pipefail
corpus="$(realpath -m "${1:-$(dirname "$0")/corpus}")"
cd "$(dirname "$0")"
data=../testdata

for t in parse reader builder_roundtrip scan escape path map; do mkdir -p "$corpus/$t"; done

for f in "$data"/conformance/*.hl7 "$data"/samples/*.hl7 "$data"/profiles/*.hl7; do
  name="$(basename "$(dirname "$f")")-$(basename "$f" .hl7)"
  for t in parse reader builder_roundtrip map; do cp "$f" "$corpus/$t/$name"; done
  # scan fuzzes what follows a fixed `MSH|^~\&|`
  tail -c +10 "$f" > "$corpus/scan/$name"
done

# escape: leaf values, one per file
i=0
while IFS= read -r v; do
  printf '%s' "$v" > "$corpus/escape/seed-$i"; i=$((i + 1))
done <<'VALUES'
O\S\NEIL
Pipe\F\Caret\S\Amp\T\Tilde\R\end C:\E\LAB
JOS\XC3A9\ \XC3\\XA9\ \X0D0A\ \XFF\ \XZZ\ \X1\
First line\.br\Second \H\HIGH\N\ \Zlocal\ \Cxxyy\ \Mxxyyzz\
trailing backslash \
APT \P\4 #
Salt & Pepper | 2 ~ x ^ y
VALUES

# path: the contract's examples and near misses
i=0
while IFS= read -r p; do
  printf '%s' "$p" > "$corpus/path/seed-$i"; i=$((i + 1))
done <<'PATHS'
PID-5-1
OBX(2)-5
PID-3(2)-4
ORC-12-2-1
MSH-1
ZA1-1-2
OBX(12)
PID.5.1
PID(1)-3(1)-1-1
IN1-3-4-2
PID-4294967295
PID-99999999999
PID-5-1-1-1
PATHS
echo "seeded $(find "$corpus" -type f | wc -l) files under $corpus" >&2
