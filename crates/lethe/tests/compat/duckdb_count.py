"""Reads a lethe data dir's segments with DuckDB and prints event counts per type as JSON.

Usage: duckdb_count.py DATA_DIR
"""
import json
import sys

import duckdb

rows = duckdb.sql(
    f"SELECT event_type, count(*) FROM read_parquet('{sys.argv[1]}/segments/*/*/*.parquet', union_by_name=true) "
    "GROUP BY event_type ORDER BY event_type"
).fetchall()
print(json.dumps({t: n for t, n in rows}))
