"""The batch predictions table: an embedded SQLite file locally, BigQuery in production.

SQLite writes go to a staging table that replaces the real one in one transaction at the end,
so readers (the hybrid server) see the old predictions or the new ones, never a partial job.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Iterable

COLUMNS = (
    ("key", "TEXT PRIMARY KEY", "STRING"),
    ("probability", "REAL", "FLOAT"),
    ("model_version", "TEXT", "STRING"),
    ("span", "INTEGER", "INTEGER"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)
BIGQUERY_SCHEMA = ",".join(f"{name}:{bq}" for name, _, bq in COLUMNS)
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_table_name(table: str) -> None:
    if not TABLE_NAME.fullmatch(table):
        raise ValueError(
            f"PIPELINE_BATCH_PREDICT_TABLE={table!r}: use letters, digits and "
            "underscores (an SQLite table name)"
        )


def connect(db_path: str) -> sqlite3.Connection:
    # Autocommit mode with explicit transactions; wait for other writers instead of failing.
    connection = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 60000")
    return connection


def create_table(connection: sqlite3.Connection, table: str) -> None:
    check_table_name(table)
    columns = ", ".join(f"{name} {sql}" for name, sql, _ in COLUMNS)
    connection.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({columns})')


def insert(connection: sqlite3.Connection, table: str, rows: Iterable[tuple]) -> None:
    """Rows as tuples in COLUMNS order, in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        f'INSERT INTO "{table}" ({", ".join(COLUMN_NAMES)}) VALUES '
        f"({', '.join('?' for _ in COLUMN_NAMES)})",
        rows,
    )
    connection.execute("COMMIT")


def replace_table(db_path: str, staging: str, table: str) -> None:
    """The staging table becomes `table`, in one transaction."""
    check_table_name(table)
    with connect(db_path) as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(f'DROP TABLE IF EXISTS "{table}"')
        connection.execute(f'ALTER TABLE "{staging}" RENAME TO "{table}"')
        connection.execute("COMMIT")


def drop_table(db_path: str, table: str) -> None:
    with connect(db_path) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{table}"')


def count_rows(db_path: str, table: str) -> int:
    check_table_name(table)
    with connect(db_path) as connection:
        return connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]


def read_table(db_path: str, table: str) -> dict[str, dict]:
    check_table_name(table)
    with connect(db_path) as connection:
        connection.row_factory = sqlite3.Row
        return {row["key"]: dict(row) for row in connection.execute(f'SELECT * FROM "{table}"')}
