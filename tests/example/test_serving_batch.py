"""Static and hybrid serving: the Beam batch job writes one keyed prediction per row of a span
into the SQLite warehouse table, equal to the online server's; a hybrid server answers head
keys from that table and tail keys with the model."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pipeline.settings import PipelineSettings
from serving import batch_predict, process, warehouse
from serving.settings import BatchPredictSettings
from tests.pipeline_run import read_csv, write_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

SPAN = 2
HEAD = 100
SENTINEL = 0.123456


@pytest.fixture(scope="module")
def batch(finished_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    db_path = tmp / "warehouse.db"
    environ = {k: v for k, v in finished_run.env.items() if k.startswith("PIPELINE_")}
    pipeline = PipelineSettings.load(environ)
    settings = BatchPredictSettings.load(environ, sqlite_path=str(db_path))
    # An older table of the same name is replaced whole.
    with warehouse.connect(str(db_path)) as connection:
        warehouse.create_table(connection, settings.table)
        warehouse.insert(connection, settings.table, [("stale", 0.5, "0", 0)])
    result = batch_predict.run(settings, pipeline, span=SPAN)
    csv_rows = read_csv(Path(pipeline.data.data_dir) / f"span-{SPAN}" / "data.csv")
    return {
        "tmp": tmp,
        "settings": settings,
        "result": result,
        "db": db_path,
        "table": warehouse.read_table(str(db_path), settings.table),
        "rows": csv_rows,
        "env": finished_run.env,
        "version": int(finished_run.pushed_versions()[-1]),
    }


def instance(row: dict, key: str) -> dict:
    return {"key": key, **batch_predict.json_instance(batch_predict.raw_values(row, key))}


def test_batch_job_writes_one_keyed_prediction_per_row(batch):
    table, rows = batch["table"], batch["rows"]
    assert batch["result"].rows == len(rows) == len(table) == 400
    assert set(table) == {f"{SPAN}:data.csv:{n}" for n in range(len(rows))}
    assert {r["model_version"] for r in table.values()} == {str(batch["version"])}
    assert {r["span"] for r in table.values()} == {SPAN}
    assert all(0.0 < r["probability"] < 1.0 for r in table.values())
    # No staging table left behind.
    with sqlite3.connect(batch["db"]) as connection:
        names = [
            n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    assert names == [batch["settings"].table]


def test_batch_matches_online_and_hybrid_answers_head_from_table(batch):
    """One hybrid server: its model answers (tail) equal the batch table for every row, and
    keys kept in the table (head) come from the table, shown by a sentinel value there."""
    db = batch["tmp"] / "head.db"
    shutil.copy(batch["db"], db)
    table = batch["settings"].table
    keys = [f"{SPAN}:data.csv:{n}" for n in range(len(batch["rows"]))]
    with warehouse.connect(str(db)) as connection:
        connection.execute(
            f'DELETE FROM "{table}" WHERE key NOT IN ({",".join("?" * HEAD)})', keys[:HEAD]
        )
        connection.execute(
            f'UPDATE "{table}" SET probability = ? WHERE key = ?', (SENTINEL, keys[0])
        )
    env = {
        **batch["env"],
        "PIPELINE_SERVING_HYBRID": "1",
        "PIPELINE_BATCH_PREDICT_SQLITE_PATH": str(db),
    }
    instances = [instance(row, key) for row, key in zip(batch["rows"], keys)]
    with process.running_server(env, str(batch["tmp"] / "server.log")) as url:
        status, body, _ = process.call(
            f"{url}/v1/models/taxi-tips:predict",
            {"signature_name": "serving_keyed", "instances": instances},
        )
        assert status == 200, body
        predictions = body["predictions"]
        assert [p["key"] for p in predictions] == keys
        assert [p["source"] for p in predictions] == ["table"] * HEAD + ["model"] * (
            len(keys) - HEAD
        )
        assert predictions[0]["probabilities"][0] == pytest.approx(SENTINEL, abs=1e-6)
        # Head rows other than the sentinel, and every tail row answered online, equal the
        # batch job's predictions.
        online = np.array([p["probabilities"][0] for p in predictions[1:]])
        batch_values = np.array([batch["table"][k]["probability"] for k in keys[1:]])
        np.testing.assert_allclose(online, batch_values, atol=1e-6)
        # The same rows through serving_raw (no hybrid) agree with the table too.
        status, body, _ = process.call(
            f"{url}/v1/models/taxi-tips:predict",
            {
                "signature_name": "serving_raw",
                "instances": [{k: v for k, v in i.items() if k != "key"} for i in instances[:HEAD]],
            },
        )
        assert status == 200, body
        np.testing.assert_allclose(
            np.array(body["predictions"]).reshape(-1)[1:], batch_values[: HEAD - 1], atol=1e-6
        )

        status, stats, _ = process.call(f"{url}/monitoring/hybrid")
        assert status == 200
        assert (stats["table_hits"], stats["model_requests"]) == (HEAD, len(keys) - HEAD)
        assert stats["hit_rate"] == pytest.approx(HEAD / len(keys))


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("fare", "12.5O", "row 4: column 'fare' = '12.5O' is not a number"),
        ("company", None, "column 'company' is missing"),
    ],
)
def test_a_bad_span_names_the_problem_and_keeps_the_table(batch, tmp_path, column, value, expected):
    """A span the job cannot read fails with the file, row and column; the table written
    before stays as it was (the job writes a staging table and swaps it in only at the end)."""
    rows = [dict(row) for row in batch["rows"]]
    if value is None:
        rows = [{k: v for k, v in row.items() if k != column} for row in rows]
    else:
        rows[3][column] = value
    write_csv(tmp_path / "data" / f"span-{SPAN}" / "data.csv", rows)
    db = tmp_path / "warehouse.db"
    shutil.copy(batch["db"], db)
    environ = {k: v for k, v in batch["env"].items() if k.startswith("PIPELINE_")}
    pipeline = PipelineSettings.load(environ, data_dir=str(tmp_path / "data"))
    settings = BatchPredictSettings.load(environ, sqlite_path=str(db))
    with pytest.raises(Exception, match=expected) as error:
        batch_predict.run(settings, pipeline, span=SPAN)
    assert "data.csv" in str(error.value)
    assert warehouse.read_table(str(db), settings.table) == batch["table"]
    with sqlite3.connect(db) as connection:
        assert [
            n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ] == [settings.table]
