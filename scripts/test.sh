#!/usr/bin/env bash
# Runs every test of lethe. Installs what the tests need first: the official Amplitude Python
# SDK and DuckDB (PyPI) for the compatibility tests, moto's S3 server (PyPI) for segments on
# object storage (the server, deletion, privacy and crash suites run twice: local and S3), Debian's Chromium and playwright-core
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
# The suites that do not read segment files themselves, again with every server's segments
# on S3 (moto on loopback; common::s3_deployment). Skipped there: the three checks that read
# segment files from the data dir with DuckDB.
moto_out=$(mktemp)
python3 scripts/s3_server.py >"$moto_out" 2>"$moto_out.log" &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do [ -s "$moto_out" ] && break; sleep 0.1; done
[ -s "$moto_out" ] || { echo "moto's S3 server did not start" >&2; exit 1; }
LETHE_TEST_S3_ENDPOINT="http://$(head -n1 "$moto_out")" cargo test -p lethe --all-features \
  --test access --test console_api --test crash --test deletion --test durability \
  --test groups --test identify --test import --test ingestion --test limits \
  --test management --test privacy --test segmentation -- \
  --skip a_rare_key_in_the_tail_column_is_removed_exactly_and_nothing_else \
  --skip a_property_only_task_rewrites_columns_leaves_no_residue_and_stays_readable \
  --skip erasure_removes_every_trace_of_the_users_and_nothing_else
kill "$moto_pid"
# The console in headless Chromium, against the binary the tests just built.
LETHE_BIN="${CARGO_TARGET_DIR:-target}/debug/lethe" node --test --test-concurrency=1 e2e/
echo "console screenshots: e2e/artifacts/"
