#!/usr/bin/env bash
# Runs every test of lethe. Installs what the compatibility tests need first: the official
# Amplitude Python SDK and DuckDB (both from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import amplitude, duckdb' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check amplitude-analytics duckdb
cargo test --workspace --all-targets
