"""`make lineage` on a two-run history: the served model is the second run's, trained on the
spans of its window; the first pushed version's lineage names the first run's."""

import subprocess
import sys

import pytest

from analysis import lineage
from pipeline import metadata
from tests.pipeline_run import ROOT, new_run, write_data_slice

# Runs the pipeline several times: the slow tier (`make test-fast` leaves it out).
pytestmark = pytest.mark.slow

# Two spans per training window, so the two runs train on different spans (1-2, then 2-3);
# thresholds any trained model clears, so both runs push.
TWO_RUN_ENV = {
    "PIPELINE_ENABLE_TUNING": "0",
    "PIPELINE_TRAIN_WINDOW_SPANS": "2",
    "PIPELINE_TRAIN_STEPS": "100",
    "PIPELINE_MIN_AUC": "0.5",
    "PIPELINE_MIN_BINARY_ACCURACY": "0.5",
    "PIPELINE_MAX_AUC_DROP": "1.0",
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("two_runs")
    write_data_slice(tmp_path / "data", [1, 2], 300)
    run = new_run(tmp_path, **TWO_RUN_ENV)
    first = run.run()
    assert first.returncode == 0, first.stderr[-5000:]
    write_data_slice(tmp_path / "data", [3], 300)
    second = run.run()
    assert second.returncode == 0, second.stderr[-5000:]
    assert len(run.pushed_versions()) == 2, "both runs should have pushed a model"
    return run


def _lineage_cli(run, *args) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "lineage", *args],
        env=run.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _field(output: str, name: str) -> str:
    return next(
        line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith(name + ":")
    )


def test_served_model_lineage_names_the_second_run(two_runs):
    models = two_runs.outputs("Trainer", "Model")
    evaluations = two_runs.outputs("Evaluator", "ModelEvaluation")
    graphs = two_runs.outputs("Transform", "TransformGraph")
    examples = {metadata.span_of(e): e.uri for e in two_runs.outputs("CsvExampleGen", "Examples")}
    statistics = two_runs.outputs("StatisticsGen", "ExampleStatistics")
    assert len(models) == len(evaluations) == len(graphs) == 2
    # Span 1 was validated when first ingested (before the first full run), 2 and 3 by the runs.
    assert len(statistics) == 3
    served = f"{two_runs.settings.serving_model_dir}/{two_runs.pushed_versions()[-1]}"

    output = _lineage_cli(two_runs)
    assert _field(output, "model") == models[-1].uri
    assert _field(output, "spans") == "2, 3"
    assert [
        line.split(":", 1)[1].strip()
        for line in output.splitlines()
        if line.strip().startswith("examples:")
    ] == [examples[2], examples[3]]
    assert _field(output, "transform graph") == graphs[-1].uri
    assert _field(output, "evaluation") == evaluations[-1].uri
    # Span 3's statistics come from the second run; span 2's from the first.
    assert f"span 3: {statistics[-1].uri}" in _field(output, "statistics")
    assert f"span 2: {statistics[1].uri}" in _field(output, "statistics")
    assert _field(output, "blessing") == f"BLESSED (baseline: {models[0].uri})"
    assert _field(output, "pushed").startswith(served + " at ")
    assert "defaults of models/hyperparameters.py" in _field(output, "hyperparameters")
    # Trained and pushed in the second run, not the first.
    served_lineage = lineage.lineage(two_runs.settings)
    first_version = f"{two_runs.settings.serving_model_dir}/{two_runs.pushed_versions()[0]}"
    assert served_lineage.trained_in_run == served_lineage.pushed_in_run
    assert (
        served_lineage.trained_in_run
        != lineage.lineage(two_runs.settings, first_version).trained_in_run
    )


def test_an_older_pushed_version_names_the_first_run(two_runs):
    first_version = f"{two_runs.settings.serving_model_dir}/{two_runs.pushed_versions()[0]}"
    output = _lineage_cli(two_runs, first_version)
    models = two_runs.outputs("Trainer", "Model")
    assert _field(output, "model") == models[0].uri
    assert _field(output, "spans") == "1, 2"
    # Span 1 was ingested before the first full run, and validated then.
    statistics = two_runs.outputs("StatisticsGen", "ExampleStatistics")
    assert f"span 1: {statistics[0].uri}" in _field(output, "statistics")
    assert _field(output, "blessing") == "BLESSED (no baseline)"
    # A Trainer model path works too.
    assert _field(_lineage_cli(two_runs, models[0].uri), "spans") == "1, 2"


def test_an_unknown_path_is_a_clear_error(two_runs, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "lineage", str(tmp_path)],
        env=two_runs.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert (
        f"error: {tmp_path} is neither a pushed model version nor a Trainer model" in result.stderr
    )


def test_the_second_evaluation_compares_with_the_first_model(two_runs):
    from analysis import artifacts, evaluation

    run = artifacts.latest_run(two_runs.settings, with_node="Evaluator")
    result = evaluation.load(run)
    comparison = evaluation.candidate_vs_baseline(result)
    assert comparison is not None
    thresholds = evaluation.thresholds_table(result).set_index(["metric", "kind"])
    change = thresholds.loc[("auc", "change")]
    assert change["threshold"] == ">= -1 vs baseline" and change["passed"]
    assert change["value"] == pytest.approx(comparison.loc["auc", "difference"])
    assert thresholds.loc[("auc", "value"), "value"] == pytest.approx(
        comparison.loc["auc", "candidate"]
    )
