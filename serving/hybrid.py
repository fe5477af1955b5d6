"""Hybrid serving: keys found in the batch predictions table are answered from it (the head of
a peaked workload), the others by the model (the long tail). Counts hits for the hit rate."""

from __future__ import annotations

import os
import sqlite3
import threading

from serving import warehouse


class PredictionTable:
    """The precomputed predictions of one SQLite table, held in memory (read once at start:
    the head of a peaked distribution is small; restart the server after a batch job)."""

    def __init__(self, db_path: str, table: str):
        if not os.path.exists(db_path):
            raise FileNotFoundError(
                f"hybrid serving: no batch predictions at {db_path}; run "
                "`make batch-predict` first or set "
                "PIPELINE_BATCH_PREDICT_SQLITE_PATH"
            )
        warehouse.check_table_name(table)
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
            try:
                rows = connection.execute(
                    f'SELECT key, probability, model_version FROM "{table}"'
                ).fetchall()
            except sqlite3.OperationalError as error:
                raise ValueError(
                    f"hybrid serving: {db_path} has no readable table '{table}': {error}"
                ) from None
        self.path, self.table = db_path, table
        self.predictions = {key: (probability, version) for key, probability, version in rows}
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def lookup(self, keys: list[str]) -> list:
        """(probability, model version) per key, or None where the table lacks it."""
        found = [self.predictions.get(key) for key in keys]
        hits = sum(1 for f in found if f is not None)
        with self._lock:
            self.hits += hits
            self.misses += len(keys) - hits
        return found

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {
            "table": f"{self.path}:{self.table}",
            "keys_in_table": len(self.predictions),
            "table_hits": self.hits,
            "model_requests": self.misses,
            "hit_rate": self.hits / total if total else None,
        }
