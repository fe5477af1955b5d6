"""Continuous training, for real: spans arrive one at a time in a temp data location and the
trigger (`tfx-template watch --once`, what `make watch` does per look) runs the local
pipeline for each.

The pipeline tests run in file order on one pipeline: span 1 (with span 2 still being
copied, no marker), a look with nothing new, span 2 (warm start, progressive validation, a
new version), a span with anomalies, then a good span again.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import ml_metadata as mlmd
import numpy as np
import pytest

from pipeline import spans
from pipeline import watch as trigger
from pipeline.metadata import span_of
from pipeline.names import (
    AUC_PROPERTY,
    DRIFT_CHECK_ID,
    EXAMPLE_GEN_ID,
    MODEL_ID_PROPERTY,
    PROGRESSIVE_VALIDATION_ID,
    SPAN_PROPERTY,
    WINDOW_EXAMPLES_ID,
)
from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete
from tests.pipeline_run import ROOT, PipelineRun, new_run, read_csv, write_csv, write_data_slice

# Runs the pipeline several times: the slow tier (`make test-fast` leaves it out).
pytestmark = pytest.mark.slow

ROWS_PER_SPAN = 300


def _input_ids(run: PipelineRun, execution: mlmd.proto.Execution, key: str) -> list[int]:
    store = run._store()
    return sorted(
        e.artifact_id
        for e in store.get_events_by_execution_ids([execution.id])
        if e.type == mlmd.proto.Event.INPUT and e.path.steps[0].key == key
    )


def _output_ids(run: PipelineRun, execution: mlmd.proto.Execution, key: str) -> list[int]:
    store = run._store()
    return sorted(
        e.artifact_id
        for e in store.get_events_by_execution_ids([execution.id])
        if e.type == mlmd.proto.Event.OUTPUT and e.path.steps[0].key == key
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> PipelineRun:
    tmp_path = tmp_path_factory.mktemp("continuous")
    write_data_slice(tmp_path / "data", [1], ROWS_PER_SPAN)
    write_data_slice(tmp_path / "data", [2], ROWS_PER_SPAN, complete=False)  # still copying
    # No Tuner; any AUC change passes, so that a blessed warm-started model is pushed on
    # a noisy 75-row hold-out (the thresholds themselves are the Evaluator's, tested elsewhere).
    return new_run(
        tmp_path,
        PIPELINE_ENABLE_TUNING="0",
        PIPELINE_MAX_AUC_DROP="1",
        PIPELINE_TRAIN_WINDOW_SPANS="3",
    )


@pytest.fixture(scope="module")
def first_run(pipeline) -> subprocess.CompletedProcess:
    result = pipeline.trigger_once()
    assert result.returncode == 0, result.stderr[-5000:]
    return result


def test_a_span_without_its_marker_is_not_ingested(pipeline, first_run):
    assert "new span 1: running the pipeline" in first_run.stdout
    assert pipeline.ingested_spans() == [1]
    assert len(pipeline.pushed_versions()) == 1
    # The first model had nothing to warm-start from, and no model to validate beforehand.
    (validation,) = pipeline.outputs(PROGRESSIVE_VALIDATION_ID, "ModelEvaluation")
    assert AUC_PROPERTY not in validation.custom_properties
    assert "Warm start" not in first_run.stderr


def test_a_look_with_no_new_span_does_nothing(pipeline, first_run):
    executions = len(pipeline._store().get_executions())
    result = pipeline.trigger_once()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "nothing new: span 1 is the newest complete span and was already ingested; "
        "spans [2] have files but no '_COMPLETE' marker yet"
    ) in result.stdout
    assert len(pipeline._store().get_executions()) == executions


def test_second_span_warm_starts_validates_progressively_and_pushes(pipeline, first_run):
    mark_complete(os.path.join(pipeline.settings.data.data_dir, "span-2"))
    result = pipeline.trigger_once()
    assert result.returncode == 0, result.stderr[-5000:]
    assert "new span 2" in result.stdout
    assert pipeline.ingested_spans() == [1, 2]

    first_trainer, trainer = pipeline.executions("Trainer")
    (first_model,) = _output_ids(pipeline, first_trainer, "model")
    # The window holds both spans.
    merge = pipeline.executions(WINDOW_EXAMPLES_ID)[-1]
    window = pipeline._store().get_artifacts_by_id(_input_ids(pipeline, merge, "window"))
    assert sorted(span_of(a) for a in window) == [1, 2]
    # Warm-started from the first (blessed, pushed) model, with fewer steps.
    assert _input_ids(pipeline, trainer, "base_model") == [first_model]
    assert "Warm start: starting from the weights of" in result.stderr
    # Progressive validation scored that model on span 2 before training, and recorded it.
    validation = pipeline.outputs(PROGRESSIVE_VALIDATION_ID, "ModelEvaluation")[-1]
    assert validation.custom_properties[SPAN_PROPERTY].int_value == 2
    assert validation.custom_properties[MODEL_ID_PROPERTY].int_value == first_model
    auc = validation.custom_properties[AUC_PROPERTY].double_value
    assert 0.5 < auc <= 1.0, auc
    (progressive,) = [e for e in pipeline.executions(PROGRESSIVE_VALIDATION_ID)][-1:]
    transform = pipeline.executions("Transform")[-1]
    assert progressive.id < transform.id  # before the new span was trained on
    # The candidate was compared with that same model and a new version pushed.
    evaluator = pipeline.executions("Evaluator")[-1]
    assert _input_ids(pipeline, evaluator, "baseline_model") == [first_model]
    assert len(pipeline.pushed_versions()) == 2


def _bad_rows() -> list[dict[str, str]]:
    rows = [dict(row) for row in read_csv(ROOT / "data" / "span-3" / "data.csv")[:200]]
    rows[0]["payment_type"] = "Bitcoin"  # a category the schema does not know
    rows[1]["fare"] = "twelve"  # a string in a numeric column
    return rows


def test_a_span_with_anomalies_stops_before_training(pipeline, first_run):
    """The gate stops it with its own message, before progressive validation would parse
    the bad span with the served model."""
    write_csv(Path(pipeline.settings.data.data_dir) / "span-3" / "data.csv", _bad_rows())
    mark_complete(os.path.join(pipeline.settings.data.data_dir, "span-3"))
    trained, versions = len(pipeline.executions("Trainer")), pipeline.pushed_versions()
    result = pipeline.trigger_once()
    assert result.returncode != 0
    assert "DataAnomaliesError" in result.stderr and "span 3" in result.stderr
    assert "feature 'payment_type': Unexpected string values" in result.stderr
    assert "span 3: the run failed" in result.stdout
    assert len(pipeline.executions("Trainer")) == trained
    assert pipeline.pushed_versions() == versions


def test_the_next_good_span_proceeds_without_the_rejected_one(pipeline, first_run):
    write_data_slice(Path(pipeline.settings.data.data_dir), [4], ROWS_PER_SPAN)
    result = pipeline.trigger_once()
    assert result.returncode == 0, result.stderr[-5000:]
    merge = pipeline.executions(WINDOW_EXAMPLES_ID)[-1]
    window = pipeline._store().get_artifacts_by_id(_input_ids(pipeline, merge, "window"))
    # The newest three *accepted* spans: the rejected span 3 is left out and the window
    # reaches back to span 1.
    assert sorted(span_of(a) for a in window) == [1, 2, 4]
    validation = pipeline.outputs(PROGRESSIVE_VALIDATION_ID, "ModelEvaluation")[-1]
    assert validation.custom_properties[SPAN_PROPERTY].int_value == 4
    assert AUC_PROPERTY in validation.custom_properties


def test_a_span_that_drifted_from_the_previous_one_stops_before_training(tmp_path):
    """Whole shipped spans (small slices drift by sampling alone): span 6 arrives with every
    trip paid in cash. The runner first ingests span 5, then the drift check compares the
    two with the schema's comparators and stops the run before Transform."""
    write_data_slice(tmp_path / "data", [5], rows_per_span=10_000)
    rows = read_csv(ROOT / "data" / "span-6" / "data.csv")
    write_csv(
        tmp_path / "data" / "span-6" / "data.csv", [{**row, "payment_type": "Cash"} for row in rows]
    )
    mark_complete(str(tmp_path / "data" / "span-6"))
    run = new_run(tmp_path, PIPELINE_CHECK_DRIFT="1", PIPELINE_ENABLE_TUNING="0")
    result = run.run()
    assert result.returncode != 0
    assert "DataDriftError: span 6 drifted from the previous span" in result.stderr
    assert "feature 'payment_type': High Linfty distance" in result.stderr
    assert not run.executions("Transform") and not run.pushed_versions()
    (drift,) = run.executions(DRIFT_CHECK_ID)
    assert drift.last_known_state == mlmd.proto.Execution.FAILED


# ---- Without a pipeline run ------------------------------------------------------------------


def test_only_marked_spans_count_and_the_runner_reads_the_newest_of_them(tmp_path):
    write_data_slice(tmp_path, [1, 2], 5)
    write_data_slice(tmp_path, [3], 5, complete=False)
    settings = PipelineSettings.load({}, data_dir=str(tmp_path))
    assert spans.available_spans(settings) == [1, 2, 3]
    assert spans.complete_spans(settings) == [1, 2]
    assert spans.newest_complete_span(settings) == 2
    assert spans.new_span(settings, ingested={1}) == 2
    assert spans.new_span(settings, ingested={1, 2}) is None
    unmarked = PipelineSettings.load({}, data_dir=str(tmp_path), span_complete_marker="")
    assert spans.complete_spans(unmarked) == [1, 2, 3]


def test_no_complete_span_is_a_clear_error(tmp_path):
    write_data_slice(tmp_path, [1], 5, complete=False)
    settings = PipelineSettings.load({}, data_dir=str(tmp_path))
    with pytest.raises(
        ValueError,
        match=r"no complete span .*spans \[1\] have files but no "
        r"'_COMPLETE' marker",
    ):
        spans.newest_complete_span(settings)


def test_shipped_spans_are_marked_complete():
    settings = PipelineSettings.load({})
    assert spans.complete_spans(settings) == spans.available_spans(settings) == [1, 2, 3, 4, 5, 6]


def test_trigger_knows_the_example_gen():
    assert trigger.EXAMPLE_GEN_ID == EXAMPLE_GEN_ID


def test_vocabulary_rows_follow_their_tokens():
    from models.warm_start import remap_vocabulary_rows

    old = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)  # a, b, c + 2 OOV rows
    fresh = -np.ones((6, 2), np.float32)
    mapped = remap_vocabulary_rows(old, [b"a", b"b", b"c"], [b"c", b"a", b"b", b"new"], fresh)
    np.testing.assert_array_equal(mapped[:3], old[[2, 0, 1]])
    np.testing.assert_array_equal(mapped[3], fresh[3])  # a new token stays fresh
    np.testing.assert_array_equal(mapped[4:6], old[3:5])  # OOV rows move with the vocab
    # Many new tokens are normal; losing most of the old ones means another vocabulary.
    assert (
        remap_vocabulary_rows(old, [b"a", b"b", b"c"], [b"a", b"b", b"x", b"y", b"z"], fresh)
        is not None
    )
    assert remap_vocabulary_rows(old, [b"a", b"b", b"c"], [b"x", b"y", b"a"], fresh) is None
