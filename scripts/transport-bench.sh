#!/usr/bin/env bash
# Throughput of the transport crate end to end: messages/s through
# store-and-forward with an audit event per hop (received, parsed, queued,
# sent, acknowledged), every message durably stored at each stage:
# - SQLite in WAL mode with synchronous = FULL (every commit fsynced); rows
#   compare group commit sizes (items stored per transaction; an item is
#   acknowledged upstream only after its transaction committed) and a
#   downstream that fsyncs each file;
# - PostgreSQL (when its binaries are installed): a throwaway cluster on
#   127.0.0.1 with the durable defaults (fsync = on, synchronous_commit = on),
#   shared by 1, 2 and 4 worker processes that each store their share and all
#   drain one queue through FOR UPDATE SKIP LOCKED leases.
# Prints one markdown table on standard output (the build and the server's
# chatter go to standard error).
#
# usage: scripts/transport-bench.sh [MESSAGES_PER_ROW]   (default 20000)
# env:   CARGO_TARGET_DIR   where to build (default: target/)
#        LB_BENCH_NO_PG=1   SQLite rows only
#
# The wall-clock rate depends on what else the machine does (fsync latency
# above all); the CPU µs/msg and KB written/msg columns (this process only,
# so SQLite rows only) do not. The bench profile builds with LTO: the first
# run takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export LB_BENCH_MESSAGES="${1:-20000}"
features=()
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "${LB_BENCH_NO_PG:-}" ] && [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ]; then
  features=(--features postgres)
  PGD=$(mktemp -d)
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg=()
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGD"; as_pg=(runuser -u postgres --); fi
  stop_pg() {
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PGD"
  }
  trap stop_pg EXIT
  "${as_pg[@]}" "$PGBIN/initdb" -D "$PGD/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PGD/data" -l "$PGD/server.log" -w -t 30 \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $PGD" start >&2
  export LB_BENCH_PG_URL="postgresql://postgres@127.0.0.1:$PGPORT"
fi
cargo bench -p transport "${features[@]}" --bench throughput --no-run --quiet >&2
cargo bench -p transport "${features[@]}" --bench throughput --quiet
