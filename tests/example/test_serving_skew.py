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


@pytest.fixture(scope="module")
def train_split_rows(finished_run) -> list[dict]:
    """The rows the training statistics describe: the newest ExampleGen output's train split."""
    import tensorflow as tf

    from pipeline.pipeline import EXAMPLE_GEN_ID
    from tests.pipeline_run import read_records

    newest = finished_run.outputs(EXAMPLE_GEN_ID, "Examples")[-1]
    rows = []
    for record in read_records(f"{newest.uri}/Split-train/*.gz"):
        example = tf.train.Example.FromString(record)
        row = {}
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            value = values[0] if values else None
            row[key] = value.decode() if isinstance(value, bytes) else value
        rows.append(row)
    return rows


def test_requests_like_the_training_split_are_never_outside_its_range(
    train_split_rows, finished_run, settings_env, tmp_path, capsys
):
    import tensorflow_data_validation as tfdv

    from pipeline.settings import PipelineSettings

    settings = PipelineSettings.load()
    training = tfdv.load_stats_binary(skew.training_statistics_path(settings))
    schema = tfdv.load_schema_text(settings.data.schema_path)
    found = skew.extrapolation(train_split_rows, schema, training)
    assert found and {n: e.rate for n, e in found.items()} == {n: 0.0 for n in found}
    log = tmp_path / "requests.jsonl"
    write_log(log, train_split_rows, finished_run.pushed_versions()[-1])
    skew.run_skew(log=str(log))
    assert "no request outside the training range" in capsys.readouterr().out


def test_fares_beyond_the_maximum_and_unseen_companies_are_reported_as_rates(
    train_split_rows, finished_run, settings_env, tmp_path, capsys
):
    """Tripled fares and a new company on every fourth request: the rates are those counted
    here from the training split itself."""
    import numpy as np

    fares = [r["fare"] for r in train_split_rows if r["fare"] is not None]
    lowest, highest = min(fares), max(fares)
    companies = {r["company"] for r in train_split_rows if r["company"] is not None}
    requests = [
        {**r, "fare": r["fare"] * 3, "company": "Brand New Cab" if i % 4 == 0 else r["company"]}
        for i, r in enumerate(train_split_rows)
    ]
    with_fare = [r for r in requests if r["fare"] is not None]
    above = sum(1 for r in with_fare if np.float32(r["fare"]) > highest)
    with_company = [r for r in requests if r["company"] is not None]
    unseen = sum(1 for r in with_company if r["company"] not in companies)
    assert above > 0 and unseen == len(range(0, len(requests), 4))

    log = tmp_path / "requests.jsonl"
    write_log(log, requests, finished_run.pushed_versions()[-1])
    assert skew.run_skew(log=str(log)) == 1  # the tripled fares are skew too
    out = capsys.readouterr().out
    assert "outside the training range in 2 feature(s)" in out, out
    assert (
        f"  - fare: {above / len(with_fare):.1%} outside [{lowest:g}, {highest:g}] "
        f"(0 below the minimum, {above} above the maximum, of {len(with_fare)})" in out
    ), out
    assert (
        f"  - company: {unseen / len(with_company):.1%} unseen categories ({unseen} of "
        f"{len(with_company)}; training: {len(companies)} categories), e.g. 'Brand New Cab'" in out
    ), out
