"""Reads a lethe deployment's live segments with DuckDB, through its published manifests, and
prints event counts per type as JSON.

Usage: duckdb_count.py DATA_DIR [CONDITION]   (CONDITION: an SQL filter on the rows)
"""
import json
import os
import sys

import duckdb

sys.path.insert(0, os.path.dirname(__file__))
from published import live_files  # noqa: E402

files = live_files(sys.argv[1])
condition = sys.argv[2] if len(sys.argv) > 2 else "true"
rows = duckdb.sql(
    f"SELECT event_type, count(*) FROM read_parquet({files!r}, union_by_name=true) "
    f"WHERE {condition} GROUP BY event_type ORDER BY event_type"
).fetchall() if files else []
print(json.dumps({t: n for t, n in rows}))
