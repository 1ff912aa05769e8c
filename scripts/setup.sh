#!/usr/bin/env bash
# Installs what LabBridge's build and tests need, idempotently. Safe to run
# again: each step checks first and does nothing when its tool is present.
#
#   scripts/setup.sh          # everything the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Rust: the machine's rustup toolchain (stable) with rustfmt and clippy.
if ! have cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
fi
have cargo || { log "cargo not found: install Rust (https://rustup.rs) and run again"; exit 1; }
if have rustup; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >&2 || true
  done
fi
have python3 || { log "python3 not found: install Python 3.9+ and run again"; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked >&2
fi
if ! cargo fuzz --version 2>/dev/null | grep -q ' 0\.13\.2$'; then
  log "installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked >&2
fi
# OpenSSH server (sshd; ssh-keygen comes with it): the SFTP tests start their own sshd on 127.0.0.1.
if ! command -v /usr/sbin/sshd >/dev/null 2>&1; then
  log "installing openssh-server"
  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server) >&2
fi

# PostgreSQL server binaries (initdb, pg_ctl): the transport crate's `postgres` feature tests and
# scripts/transport-bench.sh start a throwaway cluster on 127.0.0.1 (never the system one on 5432).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing postgresql"
  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql) >&2
fi
log "ok"
