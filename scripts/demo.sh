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
