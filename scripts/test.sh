#!/usr/bin/env bash
# Runs every test of lethe. Installs what the tests need first: the official Amplitude Python
# SDK and DuckDB (PyPI) for the compatibility tests, moto's S3 server (PyPI) for segments on
# object storage, Debian's Chromium and playwright-core
# (npm) for the console's end-to-end tests. The disk-full test mounts a small tmpfs (root).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import amplitude, duckdb, moto.server' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check amplitude-analytics duckdb 'moto[server]==5.2.5'
if ! command -v chromium >/dev/null; then
  sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
(cd e2e && npm ci --no-audit --no-fund --silent)
# Hygiene is checked, not hoped for: formatting, lints, and no dependency left unused.
cargo fmt --all -- --check
command -v cargo-machete >/dev/null || cargo install --quiet --locked cargo-machete --version 0.9.2
cargo machete
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The crash and fault tests need the failpoints feature (fault injection in the binary).
cargo test --workspace --all-targets --all-features
# The console in headless Chromium, against the binary the tests just built.
LETHE_BIN="${CARGO_TARGET_DIR:-target}/debug/lethe" node --test --test-concurrency=1 e2e/
echo "console screenshots: e2e/artifacts/"
