"""The serving-skew command over request logs: requests drawn from the training data show no
skew (exit 0); requests with a shifted fare are reported, naming the feature (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import skew
from pipeline import serving_log
from serving import request_log
from serving.batch_predict import json_instance, raw_values
from tests.pipeline_run import read_csv

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration


def write_log(path: Path, rows: list[dict], version: str) -> None:
    """A request log as the server writes it (same logger), 50 instances per request."""
    logger = request_log.RequestLogger(str(path), sampling_rate=1.0)
    instances = [json_instance(r) for r in rows]
    for start in range(0, len(instances), 50):
        part = instances[start : start + 50]
        logger.log(
            model="taxi-tips",
            version=version,
            signature="serving_raw",
            method="predict",
            status=200,
            latency_ms=1.0,
            request={"signature_name": "serving_raw", "instances": part},
            response={"predictions": [[0.5]] * len(part)},
        )
    # A failed request is not part of the serving data.
    logger.log(
        model="taxi-tips",
        version=version,
        signature="serving_raw",
        method="predict",
        status=400,
        latency_ms=1.0,
        request={"instances": [{"fare": "x"}]},
        response={"error": "..."},
    )
    logger.close()


@pytest.fixture(scope="module")
def training_rows(finished_run) -> list[dict]:
    """The newest span, which StatisticsGen described in the finished run."""
    path = Path(finished_run.settings.data.data_dir) / "span-2" / "data.csv"
    return [raw_values(r, str(path)) for r in read_csv(path)]


@pytest.fixture
def settings_env(finished_run, monkeypatch):
    for key, value in finished_run.env.items():
        if key.startswith("PIPELINE_"):
            monkeypatch.setenv(key, value)


def test_requests_like_training_data_have_no_skew(
    training_rows, finished_run, settings_env, tmp_path, capsys
):
    log = tmp_path / "requests.jsonl"
    write_log(log, training_rows, finished_run.pushed_versions()[-1])
    assert skew.run_skew(log=str(log)) == 0
    out = capsys.readouterr().out
    assert f"{len(training_rows)} logged rows" in out and "no serving skew" in out
    assert "/StatisticsGen/" in out  # the training statistics came from MLMD


def test_shifted_fare_is_reported(training_rows, finished_run, settings_env, tmp_path, capsys):
    log = tmp_path / "requests.jsonl"
    shifted = [{**r, "fare": r["fare"] * 3} for r in training_rows]
    write_log(log, shifted, finished_run.pushed_versions()[-1])
    assert skew.run_skew(log=str(log)) == 1
    out = capsys.readouterr().out
    assert "serving skew in 1 feature(s)" in out
    assert "- fare: COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in out, out


def test_missing_log_is_an_error(settings_env, tmp_path, capsys):
    assert skew.run_skew(log=str(tmp_path / "none.jsonl")) == 2
    assert "no request log at" in capsys.readouterr().err


def test_every_logged_request_format_yields_the_same_rows():
    """Row, columnar, classify (with context) and b64 tf.Example requests of the same two rows
    give the same raw rows to the statistics."""
    import base64

    import tensorflow_data_validation as tfdv

    from pipeline.settings import PipelineSettings

    rows = [
        {"fare": 12.5, "trip_start_hour": 14, "payment_type": "Cash", "company": None},
        {"fare": 3.0, "trip_start_hour": 2, "payment_type": "Cash", "company": "Flash Cab"},
    ]
    schema = tfdv.load_schema_text(PipelineSettings.load({}).data.schema_path)
    examples = [
        {"b64": base64.b64encode(skew.to_example(r, schema).SerializeToString()).decode()}
        for r in rows
    ]
    bodies = [
        ("predict", {"instances": rows}),
        ("predict", {"inputs": {k: [r[k] for r in rows] for k in rows[0]}}),
        (
            "classify",
            {
                "context": {"payment_type": "Cash"},
                "examples": [
                    {k: [v] if v is not None else [] for k, v in r.items() if k != "payment_type"}
                    for r in rows
                ],
            },
        ),
        ("predict", {"instances": examples}),
    ]
    for method, body in bodies:
        got = list(serving_log.logged_rows([{"status": 200, "method": method, "request": body}]))
        typed = [skew.to_example(r, schema) for r in got]
        assert typed == [skew.to_example(r, schema) for r in rows], (method, got)
    assert (
        list(
            serving_log.logged_rows(
                [{"status": 400, "method": "predict", "request": {"instances": rows}}]
            )
        )
        == []
    )
