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
from pipeline.spans import mark_complete
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
        "settings_pipeline": pipeline,
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
    mark_complete(str(tmp_path / "data" / f"span-{SPAN}"))
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


def _settings(
    batch, tmp_path, **pipeline_overrides
) -> tuple[BatchPredictSettings, PipelineSettings]:
    """The batch job's settings on a copy of the fixture's table (tmp_path/warehouse.db)."""
    db = tmp_path / "warehouse.db"
    shutil.copy(batch["db"], db)
    environ = {k: v for k, v in batch["env"].items() if k.startswith("PIPELINE_")}
    return (
        BatchPredictSettings.load(environ, sqlite_path=str(db)),
        PipelineSettings.load(environ, **pipeline_overrides),
    )


def _table_names(db: str) -> list[str]:
    with sqlite3.connect(db) as connection:
        return sorted(
            n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )


def test_a_half_arrived_span_is_not_predicted_and_the_table_kept(batch, tmp_path):
    """Span 3 has files but no _COMPLETE marker (its files are still arriving): the job takes
    span 2, the newest complete one, says why, and the table keeps span 2's predictions; asked
    for span 3 explicitly, it refuses and leaves the table alone."""
    data = tmp_path / "data"
    shutil.copytree(batch["settings_pipeline"].data.data_dir, data)
    write_csv(data / "span-3" / "data.csv", batch["rows"][:99])
    settings, pipeline = _settings(batch, tmp_path, data_dir=str(data))
    result = batch_predict.run(settings, pipeline)
    assert (result.span, result.rows) == (SPAN, 400)
    assert result.notes[0] == (
        "span 2: the newest complete span; skipped newer span 3: files but no '_COMPLETE' "
        "marker yet (still arriving)"
    )
    assert warehouse.read_table(settings.sqlite_path, settings.table) == batch["table"]

    with pytest.raises(batch_predict.BatchPredictError, match="span 3 is not complete"):
        batch_predict.run(settings, pipeline, span=3)
    assert warehouse.read_table(settings.sqlite_path, settings.table) == batch["table"]
    assert _table_names(settings.sqlite_path) == [settings.table]


def test_a_half_pushed_or_broken_newest_version_is_skipped(batch, tmp_path):
    """Two versions newer than the good one: one half-pushed (variables, no saved_model.pb),
    one whose saved_model.pb does not parse. The job predicts with the good one and names
    both; asked for the broken one, it refuses."""
    pipeline = batch["settings_pipeline"]
    outputs = tmp_path / "outputs"
    base = outputs / "serving_model" / pipeline.name
    shutil.copytree(pipeline.serving_model_dir, base)
    good = batch["version"]
    shutil.copytree(base / str(good) / "variables", base / str(good + 1) / "variables")
    shutil.copytree(base / str(good), base / str(good + 2))
    (base / str(good + 2) / "saved_model.pb").write_bytes(b"half a protocol buffer")
    settings, pipeline = _settings(batch, tmp_path, output_dir=str(outputs))
    result = batch_predict.run(settings, pipeline)
    assert result.version == good
    assert result.notes[1] == (
        f"skipped model version {good + 2}: does not load: "
        + result.notes[1].split(": does not load: ")[1]
    )
    assert result.notes[2] == (
        f"skipped model version {good + 1}: no saved_model.pb file: half-pushed"
    )
    assert warehouse.read_table(settings.sqlite_path, settings.table) == batch["table"]

    with pytest.raises(batch_predict.BatchPredictError, match=f"model version {good + 2} under"):
        batch_predict.run(settings, pipeline, version=good + 2)


def test_staging_tables_a_killed_job_left_are_removed(batch, tmp_path):
    """A killed job's staging table (as a kill -9 leaves it: rows, no swap) is dropped when
    the next job starts, and the file's space is given back."""
    settings, pipeline = _settings(batch, tmp_path)
    db = settings.sqlite_path
    leftover = f"{settings.table}__staging_deadbeef"
    with warehouse.connect(db) as connection:
        warehouse.create_table(connection, leftover)
        warehouse.insert(connection, leftover, [(f"x:{n}", 0.5, "1", 1) for n in range(20000)])
    size_with_leftover = Path(db).stat().st_size
    result = batch_predict.run(settings, pipeline, span=SPAN)
    assert result.notes[-1] == f"removed staging tables a killed job left: {leftover}"
    assert _table_names(db) == [settings.table]
    assert Path(db).stat().st_size < size_with_leftover
    assert warehouse.read_table(db, settings.table) == batch["table"]


def test_a_rerun_with_the_same_span_and_version_is_idempotent(batch, tmp_path):
    """Twice the same span and version into the same table: the same keys and rows, no
    duplicates, equal to the fixture's run."""
    settings, pipeline = _settings(batch, tmp_path)
    db = settings.sqlite_path
    for _ in range(2):
        result = batch_predict.run(settings, pipeline, span=SPAN, version=batch["version"])
        assert result.rows == 400
        with warehouse.connect(db) as connection:
            count, keys = connection.execute(
                f'SELECT COUNT(*), COUNT(DISTINCT key) FROM "{settings.table}"'
            ).fetchone()
        assert count == keys == 400
        assert warehouse.read_table(db, settings.table) == batch["table"]


def test_one_job_at_a_time_writes_to_a_file(batch, tmp_path):
    """While a job holds the file's writer lock, a second one stops at once, saying so."""
    settings, pipeline = _settings(batch, tmp_path)
    with warehouse.writer_lock(settings.sqlite_path):
        with pytest.raises(batch_predict.BatchPredictError, match="another batch-predict job"):
            batch_predict.run(settings, pipeline, span=SPAN)
    assert warehouse.read_table(settings.sqlite_path, settings.table) == batch["table"]
