"""Bad spans, for real: an empty span, a too small one and an unparsable CSV each stop the run
with a message naming the span and file, are recorded as rejected (pipeline/rejections.py) and
never block a later span, whose training window reaches back past them; a check that crashes
rejects nothing.

The pipeline tests run in file order on one pipeline (window of three spans): spans 1 and 2,
then the three bad spans 3, 4 and 5, then good spans 6 and 7.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from pathlib import Path

import ml_metadata as mlmd
import pytest

from models import features
from pipeline import input_check, rejections
from pipeline.metadata import span_of
from pipeline.names import WINDOW_EXAMPLES_ID
from pipeline.rejections import SpanRejectedError
from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete
from tests.pipeline_run import ROOT, PipelineRun, new_run, read_csv, write_csv, write_data_slice

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

ROWS_PER_SPAN, WINDOW_SPANS = 300, 3
# The line (1-based, header = line 1) whose field opens a quote that never closes.
BAD_QUOTE_LINE = 101


def _window(run: PipelineRun) -> list[int]:
    """The spans the newest WindowExamples execution read (its input events in MLMD)."""
    store = run._store()
    merge = run.executions(WINDOW_EXAMPLES_ID)[-1]
    ids = [
        e.artifact_id
        for e in store.get_events_by_execution_ids([merge.id])
        if e.type == mlmd.proto.Event.INPUT and e.path.steps[0].key == "window"
    ]
    return sorted(span_of(a) for a in store.get_artifacts_by_id(ids))


def _deliver(run: PipelineRun, span: int, rows: int, quote_line: int = 0) -> Path:
    """The first `rows` rows of a shipped span as span `span`, then its marker; with
    `quote_line`, that line's first field opens a quote that never closes."""
    path = Path(run.settings.data.data_dir) / f"span-{span}" / "data.csv"
    shipped = read_csv(ROOT / "data" / "span-1" / "data.csv")
    write_csv(path, shipped[:rows] or shipped[:1])
    lines = path.read_text().splitlines(keepends=True)
    if not rows:
        lines = lines[:1]  # the header alone
    if quote_line:
        lines[quote_line - 1] = '"' + lines[quote_line - 1]
    path.write_text("".join(lines))
    mark_complete(str(path.parent))
    return path


def _rejected(run: PipelineRun) -> dict[int, rejections.Rejection]:
    return rejections.of_pipeline(run.settings)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> PipelineRun:
    tmp_path = tmp_path_factory.mktemp("bad_data")
    write_data_slice(tmp_path / "data", [1, 2], ROWS_PER_SPAN)
    # No Tuner; low thresholds and any AUC change pass, so each good run pushes a model (a
    # 75-row hold-out is noisy; blessing is tested elsewhere).
    run = new_run(
        tmp_path,
        PIPELINE_ENABLE_TUNING="0",
        PIPELINE_MAX_AUC_DROP="1",
        PIPELINE_MIN_AUC="0.5",
        PIPELINE_MIN_BINARY_ACCURACY="0.5",
        PIPELINE_TRAIN_WINDOW_SPANS=str(WINDOW_SPANS),
    )
    result = run.run()
    assert result.returncode == 0, result.stderr[-5000:]
    assert len(run.pushed_versions()) == 1
    return run


def _assert_rejected_before_example_gen(
    run: PipelineRun, result, span: int, versions: list[str]
) -> None:
    assert result.returncode != 0
    assert f"span {span} was rejected by SpanFilesCheck" in result.stderr
    assert span in _rejected(run) and _rejected(run)[span].check == "SpanFilesCheck"
    assert span not in run.ingested_spans()  # ExampleGen never ran on it
    assert run.pushed_versions() == versions


@pytest.mark.slow
def test_an_empty_span_stops_before_example_gen(pipeline):
    versions = pipeline.pushed_versions()
    path = _deliver(pipeline, 3, rows=0)
    result = pipeline.run()
    _assert_rejected_before_example_gen(pipeline, result, 3, versions)
    assert f"span 3: the span is empty: {path} has a header but no rows" in result.stderr


@pytest.mark.slow
def test_a_span_below_the_minimum_row_count_stops_before_example_gen(pipeline):
    versions = pipeline.pushed_versions()
    path = _deliver(pipeline, 4, rows=20)
    result = pipeline.run()
    _assert_rejected_before_example_gen(pipeline, result, 4, versions)
    assert f"span 4: 20 rows in {path}, fewer than PIPELINE_MIN_SPAN_ROWS=50" in result.stderr


@pytest.fixture(scope="module")
def bad_quote_run(pipeline) -> subprocess.CompletedProcess:
    """Span 5 with an unterminated quote on one line, as the newest span, via the trigger."""
    _deliver(pipeline, 5, rows=ROWS_PER_SPAN, quote_line=BAD_QUOTE_LINE)
    return pipeline.trigger_once()


@pytest.mark.slow
def test_an_unparsable_csv_stops_before_example_gen_naming_file_and_line(pipeline, bad_quote_run):
    path = Path(pipeline.settings.data.data_dir) / "span-5" / "data.csv"
    _assert_rejected_before_example_gen(pipeline, bad_quote_run, 5, pipeline.pushed_versions())
    assert f"span 5: {path}, line {BAD_QUOTE_LINE}: unexpected end of data" in bad_quote_run.stderr
    assert "span 5: the run failed" in bad_quote_run.stdout


@pytest.mark.slow
def test_a_failed_run_ends_with_its_message_and_the_log_file(pipeline, bad_quote_run):
    stderr = bad_quote_run.stderr
    assert "Traceback" not in stderr
    last = stderr.rstrip().splitlines()
    assert last[-1].startswith("Full log: ")
    log = last[-1].removeprefix("Full log: ")
    assert log.startswith(os.path.join(pipeline.settings.data.output_dir, "logs", ""))
    assert last[-3].startswith(
        "error: span 5 was rejected by SpanFilesCheck: SpanRejectedError: span 5: "
    )
    assert last[-2].startswith("Span 5 is recorded as rejected (")
    # The full story, traceback included, is in the log file.
    assert "Traceback" in Path(log).read_text()


@pytest.mark.slow
def test_rejected_spans_block_nothing_and_are_not_retried(pipeline):
    executions = len(pipeline._store().get_executions())
    result = pipeline.trigger_once()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "nothing new: span 2 is the newest complete span and was already ingested; "
        "spans [3, 4, 5] were rejected"
    ) in result.stdout
    assert len(pipeline._store().get_executions()) == executions


@pytest.mark.slow
def test_the_next_good_span_trains_on_the_newest_accepted_spans(pipeline):
    versions = pipeline.pushed_versions()
    write_data_slice(Path(pipeline.settings.data.data_dir), [6], ROWS_PER_SPAN)
    result = pipeline.trigger_once()
    assert result.returncode == 0, result.stderr[-5000:]
    assert "new span 6" in result.stdout
    assert pipeline.ingested_spans() == [1, 2, 6]
    # Window of three: spans 3, 4 and 5 were rejected, so it reaches back to span 1.
    assert _window(pipeline) == [1, 2, 6]
    assert len(pipeline.pushed_versions()) == len(versions) + 1
    assert "Rejected spans (skipped): 3 by SpanFilesCheck" in result.stdout


def _model_files(run: PipelineRun) -> list[str]:
    return sorted(
        glob.glob(
            os.path.join(
                run.settings.pipeline_root,
                "Trainer",
                "model",
                "*",
                "Format-Serving",
                "saved_model.pb",
            )
        )
    )


@pytest.mark.slow
def test_a_crash_inside_a_check_does_not_reject_the_span(pipeline):
    """Progressive validation scores the served model on the new span; with that model's
    files corrupted, the check crashes. That says nothing about span 7: it is not rejected,
    and once the model is repaired the next run trains on it."""
    # Only six spans are shipped: span 7 gets the rows of shipped span 3.
    write_csv(
        Path(pipeline.settings.data.data_dir) / "span-7" / "data.csv",
        read_csv(ROOT / "data" / "span-3" / "data.csv")[:ROWS_PER_SPAN],
    )
    mark_complete(os.path.join(pipeline.settings.data.data_dir, "span-7"))
    versions = pipeline.pushed_versions()
    originals = {path: Path(path).read_bytes() for path in _model_files(pipeline)}
    assert originals
    try:
        for path in originals:
            Path(path).write_bytes(b"not a SavedModel")
        crashed = pipeline.run()
    finally:
        for path, content in originals.items():
            Path(path).write_bytes(content)
    assert crashed.returncode != 0
    assert "error: the check ProgressiveValidation crashed on span 7: " in crashed.stderr
    assert "span 7 is not rejected" in crashed.stderr
    assert "Traceback" not in crashed.stderr
    assert 7 not in _rejected(pipeline)
    assert pipeline.pushed_versions() == versions

    fixed = pipeline.run()
    assert fixed.returncode == 0, fixed.stderr[-5000:]
    assert _window(pipeline) == [2, 6, 7]
    assert len(pipeline.pushed_versions()) == len(versions) + 1


@pytest.mark.slow
def test_a_span_with_an_empty_split_is_rejected_by_the_gate(pipeline):
    """The file check counts rows, not splits: 60 copies of one row all hash into the same
    split, so the other is empty, which the gate finds in StatisticsGen's counts."""
    row = read_csv(ROOT / "data" / "span-2" / "data.csv")[0]
    write_csv(Path(pipeline.settings.data.data_dir) / "span-8" / "data.csv", [row] * 60)
    mark_complete(os.path.join(pipeline.settings.data.data_dir, "span-8"))
    versions = pipeline.pushed_versions()
    result = pipeline.run()
    assert result.returncode != 0
    assert re.search(
        r"error: span 8 was rejected by AnomaliesGate: DataAnomaliesError: span 8 "
        r"has too few rows to train and evaluate on: split '(train|eval)' has no "
        r"rows",
        result.stderr,
    ), result.stderr[-3000:]
    assert _rejected(pipeline)[8].check == "AnomaliesGate"
    assert 8 in pipeline.ingested_spans() and pipeline.pushed_versions() == versions


# ---- Without a pipeline run ------------------------------------------------------------------


def _settings(data_dir: Path, **overrides) -> PipelineSettings:
    return PipelineSettings.load({}, data_dir=str(data_dir), **overrides)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a,b\n1,2\n3\n", "line 3: 1 fields, the header has 2"),
        ('a,b\n1,"x\n2,3\n', "line 2: unexpected end of data"),
        ('a,b\n1,"x\n2",3\n4,5\n', "line 2: a quoted field runs over 2 lines"),
        ("", "is empty: no header line"),
        (b"a,b\n1,\xff\n", "line 2: not UTF-8 text"),
    ],
)
def test_the_file_check_names_file_and_line(tmp_path, text, problem):
    path = tmp_path / "span-1" / "data.csv"
    path.parent.mkdir()
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpanRejectedError, match="span 1: .*" + problem) as error:
        input_check.check_span_files(_settings(tmp_path, min_span_rows=1), 1)
    assert str(path) in str(error.value) and error.value.span == 1


def test_min_span_rows_is_checked():
    with pytest.raises(ValueError, match="PIPELINE_MIN_SPAN_ROWS must be at least 1, got 0"):
        PipelineSettings.load({"PIPELINE_MIN_SPAN_ROWS": "0"})
    assert PipelineSettings.load({"PIPELINE_MIN_SPAN_ROWS": "7"}).data.min_span_rows == 7


def test_the_gate_counts_rows_of_both_splits():
    from pipeline.components.anomalies_gate import row_count_problems

    assert row_count_problems({"train": 40, "eval": 12}, 50) == []
    assert row_count_problems({"train": 30, "eval": 0}, 50) == [
        "split 'eval' has no rows",
        "30 rows in all (eval 0, train 30), fewer than PIPELINE_MIN_SPAN_ROWS=50",
    ]


def test_records_are_read_back_and_a_crash_is_not_a_rejection(tmp_path):
    settings = PipelineSettings.load({}, output_dir=str(tmp_path))
    try:
        raise KeyError("a bug")
    except KeyError as crash:
        assert rejections.record_failure(settings, 3, "AnomaliesGate", crash) is None
    try:
        try:
            raise SpanRejectedError("too few rows", span=4, check="AnomaliesGate")
        except SpanRejectedError as rejection:
            raise RuntimeError("wrapped by the orchestrator") from rejection
    except RuntimeError as wrapped:
        recorded = rejections.record_failure(settings, 9, "CsvExampleGen", wrapped)
    assert (recorded.span, recorded.check) == (4, "AnomaliesGate")
    assert rejections.of_pipeline(settings) == {4: recorded}
    assert (
        json.loads(Path(recorded.path).read_text())["reason"] == "SpanRejectedError: too few rows"
    )
    # A leak the run is told to fail on is a rejection too (of the run's span).
    from pipeline.leakage import DataLeakageError

    leak = rejections.record_failure(settings, 5, "LeakageCheck", DataLeakageError("a leak"))
    assert (leak.span, leak.check) == (5, "LeakageCheck")


@pytest.mark.slow
def test_an_earlier_span_with_anomalies_is_rejected_when_first_ingested(tmp_path):
    """A new pipeline validates each earlier span of its window as it ingests it: one that
    breaks the schema is recorded as rejected, the run goes on, and the window reaches back
    past it (here: spans 1, 3, 4 for a window of three with span 2 bad)."""
    write_data_slice(tmp_path / "data", [1, 2, 3, 4], ROWS_PER_SPAN)
    bad = tmp_path / "data" / "span-2" / "data.csv"
    rows = read_csv(bad)
    number = next(iter(features.NUMERIC_FEATURES))  # whatever the active dataset's columns
    for row in rows[:30]:
        row[number] = "not-a-number"
    write_csv(bad, rows)
    run = new_run(
        tmp_path,
        PIPELINE_ENABLE_TUNING="0",
        PIPELINE_TRAIN_WINDOW_SPANS="3",
        PIPELINE_MIN_AUC="0.5",
        PIPELINE_MIN_BINARY_ACCURACY="0.5",
        PIPELINE_MAX_AUC_DROP="1.0",
    )
    result = run.run()
    assert result.returncode == 0, result.stderr[-3000:]
    rejected = _rejected(run)
    assert list(rejected) == [2] and rejected[2].check == "AnomaliesGate", rejected
    assert f"feature '{number}'" in rejected[2].reason
    assert run.ingested_spans() == [1, 2, 3, 4]  # span 2 was read, then rejected
    assert _window(run) == [1, 3, 4]
    assert run.pushed_versions()
