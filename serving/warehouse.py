"""The batch predictions table: an embedded SQLite file locally, BigQuery in production.

SQLite writes go to a staging table (`<table>__staging_<id>`) that replaces the real one in one
transaction at the end, so readers (the hybrid server) see the old predictions or the new ones,
never a partial job. One job at a time writes to a file (`writer_lock`), so staging tables
found when a job starts were left by a killed job and are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import re
import sqlite3
import uuid
from typing import Iterable, Iterator

COLUMNS = (
    ("key", "TEXT PRIMARY KEY", "STRING"),
    ("probability", "REAL", "FLOAT"),
    ("model_version", "TEXT", "STRING"),
    ("span", "INTEGER", "INTEGER"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)
BIGQUERY_SCHEMA = ",".join(f"{name}:{bq}" for name, _, bq in COLUMNS)
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STAGING_INFIX = "__staging_"


class WarehouseBusyError(RuntimeError):
    """Another job holds the file's writer lock."""


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
    """Rows as tuples in COLUMNS order, in one transaction. Keyed: a row whose key is there
    already replaces it, so a retried bundle writes the same rows again, never twice."""
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        f'INSERT OR REPLACE INTO "{table}" ({", ".join(COLUMN_NAMES)}) VALUES '
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


def staging_name(table: str) -> str:
    """A new staging table's name for `table`."""
    return f"{table}{STAGING_INFIX}{uuid.uuid4().hex[:8]}"


def staging_tables(db_path: str, table: str) -> list[str]:
    """The staging tables of `table` in the file, by name."""
    check_table_name(table)
    with connect(db_path) as connection:
        names = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    prefix = f"{table}{STAGING_INFIX}"
    return sorted(n for n in names if n.startswith(prefix) and TABLE_NAME.fullmatch(n))


def drop_staging_tables(db_path: str, table: str) -> list[str]:
    """Drops the staging tables of `table` that a killed job left, and gives the file's space
    back (VACUUM: a staging table can be as large as the table); their names. Only under
    `writer_lock`, so no live job's staging table is among them."""
    names = staging_tables(db_path, table)
    if names:
        with connect(db_path) as connection:
            connection.execute("BEGIN IMMEDIATE")
            for name in names:
                connection.execute(f'DROP TABLE IF EXISTS "{name}"')
            connection.execute("COMMIT")
            connection.execute("VACUUM")
    return names


@contextlib.contextmanager
def writer_lock(db_path: str) -> Iterator[None]:
    """Holds `<db_path>.lock` (an flock: the kernel releases it when the process dies, even
    by kill -9) while a job writes; WarehouseBusyError if another job holds it."""
    lock_path = db_path + ".lock"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise WarehouseBusyError(
                f"another batch-predict job is writing to {db_path} (it holds {lock_path}); "
                "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


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
