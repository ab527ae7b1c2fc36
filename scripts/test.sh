#!/usr/bin/env bash
# Runs every test of lethe. Installs what the tests need first: the official Amplitude Python
# SDK and DuckDB (PyPI) for the compatibility tests, moto's S3 server (PyPI) and Debian's
# PostgreSQL for deployments beyond one machine (the server, deletion, privacy and crash suites
# run four times: local, S3 + SQLite, S3 + PostgreSQL, and S3 + PostgreSQL with every server a
# one-node cluster; tests/cluster.rs runs three nodes), Debian's Chromium and playwright-core
# (npm) for the console's end-to-end tests. The disk-full test mounts a small tmpfs (root).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import amplitude, duckdb, moto.server' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check amplitude-analytics duckdb 'moto[server]==5.2.5'
missing=()
command -v chromium >/dev/null || missing+=(chromium chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null \
  || missing+=(postgresql postgresql-client)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
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
# Beyond one machine: moto's S3 server and a throwaway PostgreSQL cluster, both on loopback.
moto_out=$(mktemp)
python3 scripts/s3_server.py >"$moto_out" 2>"$moto_out.log" &
moto_pid=$!
pg=$(bash scripts/pg_server.sh)
trap 'kill "$moto_pid" 2>/dev/null || true; bash scripts/pg_server.sh stop "${pg#* }"' EXIT
for _ in $(seq 1 300); do [ -s "$moto_out" ] && break; sleep 0.1; done
[ -s "$moto_out" ] || { echo "moto's S3 server did not start" >&2; exit 1; }
export LETHE_TEST_S3_ENDPOINT="http://$(head -n1 "$moto_out")"
# The metadata API's conformance tests, on SQLite and on PostgreSQL.
LETHE_TEST_POSTGRES="${pg%% *}" cargo test -p lethe-meta --test conformance
# The server, deletion, privacy and crash suites, again with every server's segments on S3
# (common::deployment gives each data dir a prefix; DuckDB reads the files the published
# manifests name), first with SQLite and then with PostgreSQL (a database each) for the
# metadata.
suites=(--test access --test console_api --test crash --test deletion --test dsar --test durability
  --test blocks --test groups --test identify --test import --test ingestion --test limits
  --test management --test predicates --test privacy --test retention --test segmentation
  --test webhooks)
cargo test -p lethe --all-features "${suites[@]}"
LETHE_TEST_POSTGRES="${pg%% *}" cargo test -p lethe --all-features "${suites[@]}"
# ...and with every server a one-node cluster (--cluster: its WAL in the bucket, the lease).
LETHE_TEST_POSTGRES="${pg%% *}" LETHE_TEST_CLUSTER=1 cargo test -p lethe --all-features "${suites[@]}"
kill "$moto_pid"
unset LETHE_TEST_S3_ENDPOINT
# The console in headless Chromium, against the binary the tests just built.
LETHE_BIN="${CARGO_TARGET_DIR:-target}/debug/lethe" node --test --test-concurrency=1 e2e/
echo "console screenshots: e2e/artifacts/"
