#!/usr/bin/env bash
# The main job on the embedded default (local files, nothing to install):
# builds the labbridge binary and runs it on the samples in testdata/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet -p labbridge
LB=target/release/labbridge
run() { printf '\n$ labbridge %s\n' "$*"; "$LB" "$@" || printf '(exit %d)\n' "$?"; }

run hl7 get testdata/samples/oru_r01_lri.hl7 MSH-10 PID-5-1 OBR-4-2 'OBX(1)-5' 'OBX(1)-6-1' 'OBX(3)-5-2' NTE-3 SPM-4-2
run hl7 get testdata/samples/batch_oru.hl7 MSH-10 PID-3-1 OBX-5 OBR-25
run hl7 check testdata/samples/batch_oru.hl7
printf '\n$ labbridge hl7 ack testdata/samples/orm_o01_v23.hl7 --code CA   (segments shown one per line)\n'
"$LB" hl7 ack testdata/samples/orm_o01_v23.hl7 --code CA | tr '\r' '\n'

printf '\n$ labbridge profile check testdata/profiles/elm-street-ehr.toml testdata/profiles/elm-street-ehr.hl7\n'
"$LB" profile check testdata/profiles/elm-street-ehr.toml testdata/profiles/elm-street-ehr.hl7 || true
printf '\n$ labbridge map testdata/profiles/elm-street-ehr.hl7 --profile testdata/profiles/elm-street-ehr.toml   (first order)\n'
"$LB" map testdata/profiles/elm-street-ehr.hl7 --profile testdata/profiles/elm-street-ehr.toml | head -n 1

C=$(mktemp -d)/compendium.json
run compendium import testdata/compendium/tests_v1.csv --panels testdata/compendium/panels_v1.csv --out "$C"
run compendium import testdata/compendium/tests_v2.csv --panels testdata/compendium/panels_v2.csv --out "$C"
printf '\n$ labbridge compendium diff C@1 C@2   (first lines)\n'
"$LB" compendium diff "$C@1" "$C@2" 2>&1 | head -n 6
printf '\n$ labbridge compendium validate-order C testdata/compendium/orders.hl7 --profile loi-oml-o21 --client ACCT1001\n'
"$LB" compendium validate-order "$C" testdata/compendium/orders.hl7 --profile loi-oml-o21 --client ACCT1001 2>/dev/null | cut -c1-200 || true

printf '\n$ labbridge compendium validate-order C testdata/profiles/northwind-ehr.hl7 --profile testdata/profiles/northwind-ehr.toml --client ACCT1002\n'
"$LB" compendium validate-order "$C" testdata/profiles/northwind-ehr.hl7 --profile testdata/profiles/northwind-ehr.toml --client ACCT1002 || true

OUT=$(mktemp -d)
printf '\n$ labbridge transport send testdata/samples/batch_oru.hl7 file://%s   (the bad message is quarantined, the good ones delivered)\n' "$OUT"
"$LB" transport send testdata/samples/batch_oru.hl7 "file://$OUT" --store "$OUT.db" || printf '(exit %d)\n' "$?"
ls "$OUT"
