"""What the batch job predicts, chosen before any Beam job runs: the newest complete span (by
the pipeline's own rule, pipeline/spans.py), the newest pushed version that loads, and the
warehouse file's staging tables and writer lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import tensorflow as tf

from pipeline.names import KEY_INPUT, PREDICTION_KEY, SERVING_KEYED_SIGNATURE
from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete
from serving import batch_predict, warehouse


def _data(tmp_path: Path, complete: list[int], arriving: list[int]) -> PipelineSettings:
    for span in complete + arriving:
        folder = tmp_path / "data" / f"span-{span}"
        folder.mkdir(parents=True)
        (folder / "data.csv").write_text("a\n1\n")
        if span in complete:
            mark_complete(str(folder))
    return PipelineSettings.load(
        {}, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "outputs")
    )


def test_the_newest_complete_span_is_taken_and_newer_arriving_ones_named(tmp_path):
    settings = _data(tmp_path, complete=[1, 2], arriving=[3, 4])
    assert batch_predict.choose_span(settings, None) == (
        2,
        "span 2: the newest complete span; skipped newer spans 3, 4: files but no "
        "'_COMPLETE' marker yet (still arriving)",
    )
    assert batch_predict.choose_span(settings, 1) == (1, "span 1: as asked")
    with pytest.raises(batch_predict.BatchPredictError, match="span 4 is not complete: no "):
        batch_predict.choose_span(settings, 4)


def test_no_complete_span_is_an_error_naming_the_arriving_ones(tmp_path):
    settings = _data(tmp_path, complete=[], arriving=[1])
    with pytest.raises(batch_predict.BatchPredictError, match=r"spans \[1\] have files but no"):
        batch_predict.choose_span(settings, None)


class _Keyed(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=KEY_INPUT)])
    def keyed(self, key):
        return {KEY_INPUT: key, PREDICTION_KEY: tf.zeros([tf.size(key), 1])}


def _save(path: Path, signature: str = SERVING_KEYED_SIGNATURE) -> None:
    module = _Keyed()
    module.v = tf.Variable(1.0)  # a variables/ folder with something in it
    tf.saved_model.save(module, str(path), signatures={signature: module.keyed})


def test_the_newest_version_that_loads_is_taken_and_the_others_named(tmp_path):
    base = tmp_path / "serving_model"
    _save(base / "5")
    _save(base / "6")
    (base / "6" / "saved_model.pb").unlink()  # half-pushed: variables only
    _save(base / "7")
    (base / "7" / "saved_model.pb").write_bytes(b"not a SavedModel")
    _save(base / "8", signature="other")
    _save(base / ".push-99-1234abcd" / "9")  # a push in progress: not a version
    version, skipped = batch_predict.choose_version(str(base), None)
    assert version == 5
    assert skipped[0] == "skipped model version 8: has no 'serving_keyed' signature"
    assert skipped[1].startswith("skipped model version 7: does not load: ")
    assert skipped[2] == "skipped model version 6: no saved_model.pb file: half-pushed"
    assert len(skipped) == 3
    assert batch_predict.choose_version(str(base), 5) == (5, [])
    with pytest.raises(batch_predict.BatchPredictError, match="model version 6 under .*half"):
        batch_predict.choose_version(str(base), 6)


def test_no_loadable_version_is_an_error_naming_each(tmp_path):
    base = tmp_path / "serving_model"
    (base / "3" / "variables").mkdir(parents=True)
    with pytest.raises(
        batch_predict.BatchPredictError,
        match=r"no loadable model under .*\(skipped model version 3: no saved_model.pb",
    ):
        batch_predict.choose_version(str(base), None)
    with pytest.raises(batch_predict.BatchPredictError, match="no loadable model under"):
        batch_predict.choose_version(str(tmp_path / "nothing"), None)


def _tables(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return sorted(n for (n,) in connection.execute("SELECT name FROM sqlite_master"))


def test_only_the_tables_staging_tables_are_dropped(tmp_path):
    db = tmp_path / "w.db"
    names = ["predictions", "predictions__staging_0a1b2c3d", "predictions_2", "other__staging_x"]
    with warehouse.connect(str(db)) as connection:
        for name in names:
            warehouse.create_table(connection, name)
        warehouse.insert(connection, names[1], [("k", 0.5, "1", 1), ("k", 0.25, "1", 1)])
        # Keyed: the second row with the same key replaced the first.
        assert connection.execute(f'SELECT probability FROM "{names[1]}"').fetchall() == [(0.25,)]
    assert warehouse.drop_staging_tables(str(db), "predictions") == [names[1]]
    assert [n for n in _tables(db) if not n.startswith("sqlite_")] == sorted(
        ["predictions", "predictions_2", "other__staging_x"]
    )
    assert warehouse.drop_staging_tables(str(db), "predictions") == []


def test_the_writer_lock_admits_one_job(tmp_path):
    db = str(tmp_path / "w.db")
    with warehouse.writer_lock(db):
        with pytest.raises(warehouse.WarehouseBusyError, match="another batch-predict job"):
            with warehouse.writer_lock(db):
                pass
    with warehouse.writer_lock(db):  # released
        pass
