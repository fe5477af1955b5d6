"""The leakage check on a synthetic dataset built here (no sample data, no sample columns):
hidden leaks it must find (a column present when training but empty in logged serving
requests, a column distributed differently in those requests, a declared known-after-label
column used as an input, a near-copy of the label) and cases it must not report as leaks (a
strong legitimate feature, a slightly different but normal serving distribution, a
known-after-label column that is not an input, too few logged requests). The functions are
tested on in-memory data; the step's core (`run_check`) on real files: Examples TFRecords,
schema, statistics and a request log written by the server's own logger in its format."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features
from pipeline import leakage
from serving import request_log

# The synthetic dataset: hospital visits; the label is a readmission.
LABEL_SOURCE = "readmitted"
INPUTS = ["age", "region", "severity_score", "hospital", "lab_value", "discharge_hour"]
KNOWN_AFTER = ["discharge_hour", "length_of_stay"]  # discharge_hour is wrongly an input
TYPES = {
    "age": schema_pb2.FLOAT,
    "region": schema_pb2.BYTES,
    "severity_score": schema_pb2.FLOAT,
    "hospital": schema_pb2.BYTES,
    "lab_value": schema_pb2.FLOAT,
    "discharge_hour": schema_pb2.INT,
    "length_of_stay": schema_pb2.FLOAT,
    "label_copy": schema_pb2.FLOAT,
    LABEL_SOURCE: schema_pb2.INT,
}
REGIONS = ["north", "south", "east", "west"]
HOSPITALS = ["St Anne", "General", "Riverside"]


@pytest.fixture
def dataset(monkeypatch):
    """models/features.py's facts for the synthetic dataset."""
    monkeypatch.setattr(features, "LABEL", f"{LABEL_SOURCE} == 1")
    monkeypatch.setattr(features, "LABEL_KEY", "readmission")
    monkeypatch.setattr(features, "KNOWN_AFTER_LABEL", list(KNOWN_AFTER))
    monkeypatch.setattr(features, "raw_feature_keys", lambda: list(INPUTS))
    assert features.label_columns() == [LABEL_SOURCE]


def visits(n: int, seed: int, serving: bool = False) -> list[dict]:
    """Rows of the synthetic dataset. When serving: the hospital is an empty string (not known
    when predicting) and the lab value comes from a different measurement (+4 sd)."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.4).astype(int)
    rows = []
    for i in range(n):
        row = {
            "age": float(rng.normal(50, 15)),
            "region": str(rng.choice(REGIONS)),
            # Strong and legitimate: known when predicting, same in training and serving.
            "severity_score": float(2 * label[i] + rng.normal(0, 0.5)),
            "hospital": "" if serving else str(rng.choice(HOSPITALS)),
            "lab_value": float(rng.normal(140 if serving else 100, 10)),
            "discharge_hour": int(rng.integers(0, 24)),
        }
        if not serving:
            row.update(
                {
                    "length_of_stay": float(rng.exponential(4)),
                    "label_copy": float(label[i] + rng.normal(0, 0.3)),
                    LABEL_SOURCE: int(label[i]),
                }
            )
        rows.append(row)
    return rows


def columns_of(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows as load_sample's columns: floats with NaN, strings with None."""
    out = {}
    for key, kind in TYPES.items():
        values = [r.get(key) for r in rows]
        if kind == schema_pb2.BYTES:
            out[key] = np.array([v if v else None for v in values], dtype=object)
        else:
            out[key] = np.array([np.nan if v is None else float(v) for v in values])
    return out


def make_schema() -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    schema.default_environment.extend(["TRAINING", "SERVING"])
    for name, kind in TYPES.items():
        feature = schema.feature.add(name=name, type=kind)
        if name in (LABEL_SOURCE, "length_of_stay"):
            feature.not_in_environment.append("SERVING")
    return schema


# ---- The functions on in-memory data ---------------------------------------------------------


def test_present_when_training_empty_when_serving_is_a_leak(dataset):
    """The hospital-name case: every training row has one; requests send "", null, or leave
    it out (all three count as missing)."""
    train = columns_of(visits(400, 1))
    serving = visits(300, 2, serving=True)
    for i, row in enumerate(serving):
        if i % 3 == 1:
            row["hospital"] = None
        elif i % 3 == 2:
            del row["hospital"]
    measures, found, notes = leakage.compare_with_serving(train, serving, make_schema())
    assert measures["hospital"] == {"training_presence": 1.0, "serving_presence": 0.0}
    (finding,) = [f for f in found if f.feature == "hospital"]
    assert (finding.kind, finding.severity) == ("serving_presence", "leak")
    assert finding.measures == {"training_presence": 1.0, "serving_presence": 0.0}
    assert finding.evidence.startswith(
        "has a value in 100.0% of 400 sampled training rows but in 0.0% of 300 logged serving "
        "rows (a gap above 0.2): present when training, missing when predicting, so the model "
        "learnt from something it will not have"
    )
    assert "distance" not in measures["hospital"]  # no serving value to compare
    assert notes == []


def test_categorical_serving_distribution_differing_strongly_is_a_leak(dataset):
    train = {"region": np.array(["north"] * 100 + ["south"] * 100 + ["east"] * 100, object)}
    serving = [{"region": "north"}] * 270 + [{"region": "south"}] * 15 + [{"region": "east"}] * 15
    measures, (finding,), _ = leakage.compare_with_serving(
        train, serving, make_schema(), inputs=["region"]
    )
    assert measures["region"]["distance"] == pytest.approx(0.9 - 1 / 3, abs=1e-4)
    assert (finding.kind, finding.severity) == ("serving_distribution", "leak")
    assert (
        "L-infinity distance of the value frequencies 0.567 between 300 training and 300 "
        "serving values (threshold 0.25); most different value 'north': 33.3% of training "
        "values, 90.0% of serving values"
    ) in finding.evidence


def test_numeric_serving_distribution_differing_strongly_is_a_leak(dataset):
    """Training 0..999, serving 500..1499: half of the requests beyond the training maximum
    (the bin above the range: 0 -> 0.5), the lower five deciles empty."""
    train = {"lab_value": np.arange(1000, dtype=float)}
    serving = [{"lab_value": float(v)} for v in range(500, 1500)]
    measures, (finding,), _ = leakage.compare_with_serving(
        train, serving, make_schema(), inputs=["lab_value"]
    )
    assert measures["lab_value"] == {
        "training_presence": 1.0,
        "serving_presence": 1.0,
        "distance": 0.5,
        "outside_training_range": 0.5,
    }
    assert finding.kind == "serving_distribution" and finding.severity == "leak"
    assert (
        "50.0% of serving values outside the training range [0, 999]; median 499.5 when "
        "training, 999.5 when serving"
    ) in finding.evidence


def test_slightly_different_normal_serving_distribution_is_not_a_finding(dataset):
    """A mild shift of a number (0.1 sd) and of a category mix (5 points) is normal."""
    rng = np.random.default_rng(3)
    train = {
        "lab_value": rng.normal(100, 10, 2000),
        "region": np.array(["north"] * 700 + ["south"] * 700 + ["east"] * 600, object),
    }
    serving_numbers = rng.normal(101, 10, 1000)
    serving = [
        {"lab_value": float(v), "region": r}
        for v, r in zip(serving_numbers, ["north"] * 400 + ["south"] * 350 + ["east"] * 250)
    ]
    measures, found, notes = leakage.compare_with_serving(
        train, serving, make_schema(), inputs=["lab_value", "region"]
    )
    assert found == [] and notes == []
    assert measures["region"]["distance"] == pytest.approx(0.05, abs=1e-4)
    assert measures["lab_value"]["distance"] == pytest.approx(0.029, abs=1e-4)
    assert measures["lab_value"]["distance"] < leakage.DISTRIBUTION_DISTANCE / 5


def test_too_few_logged_requests_are_not_judged(dataset):
    train = columns_of(visits(400, 1))
    serving = visits(199, 2, serving=True)  # the hospital missing in all of them
    measures, found, notes = leakage.compare_with_serving(
        train, serving, make_schema(), where="requests.jsonl"
    )
    assert measures == {} and found == []
    assert notes == [
        "199 logged serving rows in requests.jsonl, fewer than the 200 needed: "
        "training and serving data not compared"
    ]
    # One more request and the same data is judged.
    _, found, _ = leakage.compare_with_serving(train, visits(200, 2, serving=True), make_schema())
    assert [f.feature for f in found if f.severity == "leak"] == ["hospital", "lab_value"]


def test_known_after_label_input_is_a_leak_and_unused_one_is_fine(dataset):
    train = columns_of(visits(400, 1))
    (finding,) = leakage.known_after_label_inputs(columns=train)
    assert (finding.feature, finding.kind, finding.severity) == (
        "discharge_hour",
        "known_after_label",
        "leak",
    )
    assert finding.measures == {"training_presence": 1.0}
    assert finding.evidence.startswith(
        "is declared known only after the label "
        "(KNOWN_AFTER_LABEL in models/features.py) but is a model "
        "input"
    )
    # length_of_stay is declared too, is in the data and out of SERVING, but is no input:
    # neither this check nor the training-only one reports it.
    stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame(visits(100, 1)))
    assert [f.feature for f in leakage.training_only_features(make_schema(), stats)] == []
    assert leakage.known_after_label_inputs(inputs=["age", "region"]) == []


def test_near_copy_of_label_and_strong_feature_are_warnings(dataset):
    """A label copy with noise (σ 0.3) and the strong legitimate severity score both exceed
    0.98: warnings asking to check, never leaks; weak features stay near 0.5."""
    rows = visits(600, 1)
    columns = columns_of(rows)
    labels = np.array([r[LABEL_SOURCE] for r in rows])
    aucs, found = leakage.strong_features(columns, labels, make_schema(), 0.98)
    assert {(f.feature, f.kind, f.severity) for f in found} == {
        ("label_copy", "strong_relation", "warning"),
        ("severity_score", "strong_relation", "warning"),
    }
    assert aucs["label_copy"] == pytest.approx(0.9879, abs=1e-4)
    assert aucs["severity_score"] == pytest.approx(0.9978, abs=1e-4)
    assert aucs["age"] < 0.6 and aucs["region"] < 0.6 and aucs["hospital"] < 0.6
    assert LABEL_SOURCE not in aucs
    copy = next(f for f in found if f.feature == "label_copy")
    assert copy.evidence == (
        "single-feature AUC 0.988 for the label on 600 sampled training rows (threshold 0.98):"
        " it alone separates the label almost perfectly. Check that its value is known when a "
        "prediction is made (not recorded after the outcome); if it is, this is just a strong "
        "feature"
    )


def test_strong_legitimate_feature_served_alike_is_only_a_warning(dataset):
    """The severity score: strong (AUC warning) but the same in serving requests: no leak."""
    train = columns_of(visits(600, 1))
    measures, found, _ = leakage.compare_with_serving(
        train, visits(600, 5, serving=True), make_schema(), inputs=["severity_score"]
    )
    assert found == []
    assert measures["severity_score"]["serving_presence"] == 1.0
    assert measures["severity_score"]["distance"] == pytest.approx(0.065, abs=1e-4)


# ---- The step's core on real files -----------------------------------------------------------


def write_artifacts(tmp_path, rows: list[dict]) -> tuple[str, str, str]:
    """The layout ExampleGen, ImportSchemaGen and StatisticsGen write: Split-train/*.gz,
    schema.pbtxt, Split-train/FeatureStats.pb."""
    schema = make_schema()
    split = tmp_path / "examples" / "Split-train"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"), "GZIP") as writer:
        for row in rows:
            writer.write(to_example(row).SerializeToString())
    (tmp_path / "schema").mkdir()
    tfdv.write_schema_text(schema, str(tmp_path / "schema" / "schema.pbtxt"))
    stats_dir = tmp_path / "statistics" / "Split-train"
    stats_dir.mkdir(parents=True)
    frame = (
        pd.DataFrame(rows, columns=list(TYPES))
        if rows
        else pd.DataFrame(
            {k: pd.Series(dtype=float if TYPES[k] != schema_pb2.BYTES else object) for k in TYPES}
        )
    )
    stats = tfdv.generate_statistics_from_dataframe(frame)
    (stats_dir / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    return (str(tmp_path / "examples"), str(tmp_path / "schema"), str(tmp_path / "statistics"))


def to_example(row: dict) -> tf.train.Example:
    """A row as CsvExampleGen writes it: an empty value is an empty value list."""
    example = tf.train.Example()
    for key, value in row.items():
        feature = example.features.feature[key]
        if value is None or value == "":
            continue
        if TYPES[key] == schema_pb2.BYTES:
            feature.bytes_list.value.append(str(value).encode())
        elif TYPES[key] == schema_pb2.INT:
            feature.int64_list.value.append(int(value))
        else:
            feature.float_list.value.append(float(value))
    return example


def write_request_log(path, rows: list[dict]) -> None:
    """The log as the model server writes it (serving/server.py: the same logger, the request
    body as received): half the rows as serving_raw instances (JSON values, null for a missing
    number), half as serving_default's b64 tf.Examples, 50 rows a request; then a failed
    request and a torn last line, which are not serving data."""
    logger = request_log.RequestLogger(str(path), sampling_rate=1.0)
    half = len(rows) // 2
    for start in range(0, len(rows), 50):
        part = rows[start : start + 50]
        if start < half:
            body = {"signature_name": "serving_raw", "instances": part}
            signature = "serving_raw"
        else:
            body = {
                "instances": [
                    {"b64": base64.b64encode(to_example(r).SerializeToString()).decode()}
                    for r in part
                ]
            }
            signature = "serving_default"
        logger.log(
            model="visits",
            version=3,
            signature=signature,
            method="predict",
            status=200,
            latency_ms=1.0,
            request=body,
            response={"predictions": [[0.5]] * len(part)},
        )
    logger.log(
        model="visits",
        version=3,
        signature="serving_raw",
        method="predict",
        status=400,
        latency_ms=1.0,
        request={"instances": [{"hospital": 1}]},
        response={"error": "bad"},
    )
    logger.close()
    with open(path, "a") as f:
        f.write('{"time": 1, "request": {"inst')


def test_the_step_finds_every_hidden_leak_from_files(dataset, tmp_path, monkeypatch):
    uris = write_artifacts(tmp_path, visits(600, 1))
    log = tmp_path / "serving_logs" / "requests.jsonl"
    log.parent.mkdir()
    write_request_log(log, visits(300, 2, serving=True))
    lines = log.read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["signature_name"] == "serving_raw"
    assert "b64" in json.loads(lines[-3])["request"]["instances"][0]
    report = leakage.run_check(
        *uris,
        report_uri=str(tmp_path / "report"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=False,
        serving_log=str(log),
    )
    found = {(f.feature, f.kind): f.severity for f in report.findings}
    assert found == {
        ("hospital", "serving_presence"): "leak",
        ("lab_value", "serving_distribution"): "leak",
        ("discharge_hour", "known_after_label"): "leak",
        ("label_copy", "strong_relation"): "warning",
        ("severity_score", "strong_relation"): "warning",
    }
    assert report.serving_rows == 300 and report.sample_rows == 600
    assert report.serving_log == str(log)
    assert report.serving_thresholds == {
        "min_rows": 200,
        "presence_gap": 0.2,
        "distribution_distance": 0.25,
    }
    by_feature = report.serving_by_feature
    assert set(by_feature) == set(INPUTS)
    assert by_feature["hospital"] == {"training_presence": 1.0, "serving_presence": 0.0}
    assert by_feature["lab_value"]["distance"] == pytest.approx(0.7833, abs=1e-4)
    assert by_feature["lab_value"]["outside_training_range"] == pytest.approx(0.7833, abs=1e-4)
    # The others are served as trained: presence 1.0 both sides, distance well below 0.25.
    for name in ("age", "region", "severity_score", "discharge_hour"):
        assert by_feature[name]["serving_presence"] == 1.0
        assert by_feature[name]["distance"] < 0.1, (name, by_feature[name])
    assert report.auc_by_feature["label_copy"] == pytest.approx(0.9879, abs=1e-4)
    assert report.notes == []  # the torn last line and the failed request are skipped quietly
    assert leakage.load_report(str(tmp_path / "report")) == report
    assert_report_section_shows(report, monkeypatch)

    # With fail_on_leak the step stops, naming the leaks, then the warnings.
    with pytest.raises(leakage.DataLeakageError) as error:
        leakage.run_check(
            *uris,
            report_uri=str(tmp_path / "report2"),
            auc_threshold=0.98,
            sample_rows=5000,
            fail_on_leak=True,
            serving_log=str(log),
        )
    message = str(error.value)
    assert "(3 leaks)" in message
    leaks, warnings = message.split("Warnings (these alone would not stop the run):")
    assert all(f"feature '{n}'" in leaks for n in ("hospital", "lab_value", "discharge_hour"))
    assert "feature 'label_copy': single-feature AUC 0.988" in warnings


def assert_report_section_shows(report: leakage.LeakageReport, monkeypatch) -> None:
    """The run report's leakage section: the summary, each finding with its severity and
    measures (leaks first), the serving comparison per input, and the AUC table."""
    from analysis import report as run_report
    from analysis import stats_views

    findings, aucs = stats_views.leakage_tables(report)
    assert list(findings["severity"]) == ["leak"] * 3 + ["warning"] * 2
    hospital = findings.set_index("feature").loc["hospital"]
    assert (hospital["kind"], hospital["training_presence"], hospital["serving_presence"]) == (
        "serving_presence",
        1.0,
        0.0,
    )
    assert findings.set_index("feature").loc["lab_value", "distance"] == pytest.approx(0.7833)
    serving = stats_views.leakage_serving_table(report)
    assert list(serving.columns) == [
        "training_presence",
        "serving_presence",
        "distance",
        "outside_training_range",
    ]
    assert serving.loc["hospital", "serving_presence"] == 0.0
    assert aucs.index[0] == "severity_score"
    monkeypatch.setattr(stats_views, "leakage_report", lambda run: report)
    html = run_report.leakage_section(None)
    assert "3 leak(s) and 2 warning(s)." in html and 'class="bad"' in html
    assert "The training sample against 300 logged serving rows" in html
    assert "serving_distribution" in html and "known_after_label" in html
    assert "above 0.98 is a warning" in html


def test_warnings_alone_never_fail_the_run_and_a_missing_log_is_a_note(
    dataset, tmp_path, monkeypatch
):
    monkeypatch.setattr(features, "KNOWN_AFTER_LABEL", ["length_of_stay"])
    uris = write_artifacts(tmp_path, visits(600, 1))
    log = tmp_path / "requests.jsonl"
    train_like = visits(300, 7)  # the serving rows drawn like the training rows
    write_request_log(log, [{k: r[k] for k in INPUTS} for r in train_like])
    report = leakage.run_check(
        *uris,
        report_uri=str(tmp_path / "report"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=True,
        serving_log=str(log),
    )
    assert {f.severity for f in report.findings} == {"warning"}
    assert report.leaks() == [] and len(report.warnings()) == 2
    assert max(m["distance"] for m in report.serving_by_feature.values()) < 0.1
    from analysis import stats_views

    assert stats_views.leakage_summary(report).startswith("No leak found; 2 warning(s) to check")
    missing = str(tmp_path / "none.jsonl")
    report = leakage.run_check(
        *uris,
        report_uri=str(tmp_path / "report"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=True,
        serving_log=missing,
    )
    assert report.serving_rows == 0 and report.serving_by_feature == {}
    assert report.notes == [
        f"no serving request log at {missing} (the model server logs "
        "requests with PIPELINE_SERVING_LOG_SAMPLING_RATE>0): training data "
        "not compared with serving requests"
    ]


def test_empty_split_constant_label_and_bad_files_are_reported(dataset, tmp_path, monkeypatch):
    empty = write_artifacts(tmp_path / "empty", [])
    report = leakage.run_check(
        *empty,
        report_uri=str(tmp_path / "r1"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=False,
        serving_log=str(tmp_path / "none.jsonl"),
    )
    assert report.sample_rows == 0 and report.label_rate is None
    assert report.notes[0] == (
        f"split 'train' of {empty[0]} has no examples: no AUC screen "
        "and no comparison with serving requests"
    )
    # The declared known-after-label input needs no data: still a leak.
    assert [f.kind for f in report.findings] == ["known_after_label"]
    from analysis import report as run_report
    from analysis import stats_views

    monkeypatch.setattr(stats_views, "leakage_report", lambda run: report)
    html = run_report.leakage_section(None)  # no label rate, no AUC: shown, not a crash
    assert "has no examples" in html and "no single-feature AUC" in html

    rows = visits(300, 1)
    for row in rows:
        row[LABEL_SOURCE] = 0
    constant = write_artifacts(tmp_path / "constant", rows)
    report = leakage.run_check(
        *constant,
        report_uri=str(tmp_path / "r2"),
        auc_threshold=0.98,
        sample_rows=5000,
        fail_on_leak=False,
    )
    assert report.label_rate == 0.0 and report.auc_by_feature == {}
    assert report.notes == [
        "the label (readmission = readmitted == 1) is 0 on all 300 sampled training rows: no "
        "single-feature AUC",
        "no serving request log configured: training data not compared with serving requests",
    ]

    # An unreadable examples file and a missing statistics file are errors naming the file.
    bad = tmp_path / "constant" / "examples" / "Split-train" / "data_tfrecord-00000-of-00001.gz"
    bad.write_bytes(b"not a gzip file")
    with pytest.raises(ValueError, match=f"{bad}: not readable as GZIP-compressed TFRecords"):
        leakage.run_check(
            *constant,
            report_uri=str(tmp_path / "r3"),
            auc_threshold=0.98,
            sample_rows=5000,
            fail_on_leak=False,
        )
    stats = tmp_path / "constant" / "statistics" / "Split-train" / "FeatureStats.pb"
    stats.unlink()
    with pytest.raises(FileNotFoundError, match=f"no statistics of split 'train' at {stats}"):
        leakage.run_check(
            *constant,
            report_uri=str(tmp_path / "r3"),
            auc_threshold=0.98,
            sample_rows=5000,
            fail_on_leak=False,
        )


def test_unreadable_log_lines_are_skipped_and_named(dataset, tmp_path):
    log = tmp_path / "requests.jsonl"
    write_request_log(log, visits(100, 2, serving=True))
    with open(log, "a") as f:  # the torn line, then more records: it is not the last any more
        f.write('\n{"status": 200, "method": "predict", "request": {"instances": [{"b64": 5}]}}\n')
    rows, notes = leakage.load_serving_rows(str(log), max_rows=60)
    assert len(rows) == 60  # the newest 60
    assert notes == [
        f"{log}: skipped 2 unreadable line(s), first line 4: not JSON "
        "(Invalid control character at)"
    ]
